//! `WarmupPlan`: daily sending caps for new IPs, so receivers learn to trust
//! them gradually (the seeds' teams did this by hand for two weeks).

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the
// repeated keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::defaults;
use super::limits::*;
use crate::policy::{WarmupRamp, WarmupSchedule, WarmupStepCap};

/// A schedule of daily caps per IP: explicit steps or a ramp. A pool that
/// references the plan starts each new egress IP on day 1.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sendfleet.io",
    version = "v1alpha1",
    kind = "WarmupPlan",
    namespaced,
    status = "WarmupPlanStatus",
    shortname = "wp",
    category = "sendfleet",
    printcolumn(
        name = "Days",
        type_ = "integer",
        json_path = ".status.days",
        description = "Days until the plan's last step"
    ),
    printcolumn(
        name = "Warming",
        type_ = "integer",
        json_path = ".status.warming",
        description = "IPs still warming up under this plan"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    )
)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = Rule::new("has(self.steps) != has(self.ramp)").message("set exactly one of steps or ramp"))]
#[serde(rename_all = "camelCase")]
pub struct WarmupPlanSpec {
    /// Explicit steps: from `day` on (day 1 = the IP's first day), at most
    /// `dailyCap` messages per IP per day. Days strictly increasing, the
    /// first step on day 1.
    #[schemars(length(min = 1, max = 365))]
    #[x_kube(validation = Rule::new("self[0].day == 1").message("steps: the first step must be on day 1"))]
    #[x_kube(validation = Rule::new(CEL_STEPS_INCREASING).message("steps: days must be strictly increasing"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<WarmupStep>>,

    /// Geometric ramp: day 1 allows `start`, each later day `growthPercent`
    /// more, until `ceiling`, after which the IP is warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,

    /// IANA time zone in which days start, e.g. `Asia/Tokyo`. Default UTC.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"))]
    #[serde(default = "defaults::time_zone")]
    pub time_zone: String,

    /// Largest share of an IP's daily cap one provider may take, so a new IP
    /// does not meet a big provider with all its volume at once.
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_shares: Vec<DomainShare>,

    /// Hold an IP on its step (no promotion) while its delivery is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseRules>,
}

/// One step of an explicit schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct WarmupStep {
    /// First day (1-based) on which this cap applies.
    #[schemars(range(min = 1, max = MAX_WARMUP_DAYS))]
    pub day: u32,
    /// Messages per IP per day.
    #[schemars(range(min = 1, max = MAX_DAILY_CAP))]
    pub daily_cap: u64,
}

/// Geometric ramp.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = Rule::new("self.start <= self.ceiling").message("ramp.start must not exceed ramp.ceiling").field_path(".start"))]
#[serde(rename_all = "camelCase")]
pub struct Ramp {
    /// Day-1 cap per IP.
    #[schemars(range(min = 1, max = MAX_DAILY_CAP))]
    pub start: u64,
    /// Daily growth in percent (e.g. 50 = x1.5 per day).
    #[schemars(range(min = 1, max = MAX_GROWTH_PERCENT))]
    pub growth_percent: u32,
    /// Cap at which the IP counts as warm.
    #[schemars(range(min = 1, max = MAX_DAILY_CAP))]
    pub ceiling: u64,
}

/// Share limit for one provider's domains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[serde(rename_all = "camelCase")]
pub struct DomainShare {
    /// Domain patterns of the provider (as in DomainPolicy.domains).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new(cel_all_domain_patterns()).message("domainShares.domains: each entry must be a lowercase domain name, optionally prefixed by '*.'"))]
    pub domains: Vec<String>,
    /// Largest share of the daily cap, in percent.
    #[schemars(range(min = 1, max = 100))]
    pub max_percent: u32,
}

/// Pause rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(crates(kube_core = ::kube_core))]
#[x_kube(validation = Rule::new("has(self.maxDeferralPercent) || has(self.maxBouncePercent)").message("pause: set maxDeferralPercent, maxBouncePercent or both"))]
#[serde(rename_all = "camelCase")]
pub struct PauseRules {
    /// Deferred / attempted above this percentage within `window` holds the IP.
    #[schemars(range(min = 1, max = 100))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deferral_percent: Option<u32>,
    /// Bounced / attempted above this percentage within `window` holds the IP.
    #[schemars(range(min = 1, max = 100))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bounce_percent: Option<u32>,
    /// Window the rates are computed over. Default 1h.
    #[schemars(length(max = MAX_DURATION_LEN), regex(pattern = DURATION_PATTERN))]
    #[serde(default = "defaults::warmup_pause_window")]
    pub window: String,
    /// Fewer attempts than this in the window never pause (too little data).
    #[schemars(range(min = 1, max = 1000000))]
    #[serde(default = "defaults::warmup_pause_min_messages")]
    pub min_messages: u32,
}

/// Observed state of a plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmupPlanStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Days until the last step (or until the ramp reaches its ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Number of IPs (of every pool using the plan) still warming up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warming: Option<u32>,
    /// Progress of every IP of the pools that use this plan, as their
    /// agents report it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<WarmupInstanceStatus>,
}

/// Where one IP of one pool stands in the plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmupInstanceStatus {
    pub pool: String,
    pub instance: String,
    /// 1-based step; held steps do not advance.
    pub step: u32,
    /// Today's cap; absent once the IP has finished the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<u64>,
    pub sent_today: u64,
    /// Why the IP is held on its step (a pause rule fired), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// RFC 3339 time of the next day boundary in the plan's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step_at: Option<String>,
}

impl WarmupPlanSpec {
    /// The schedule as the agent's policy carries it.
    pub fn schedule(&self) -> WarmupSchedule {
        WarmupSchedule {
            steps: self.steps.iter().flatten().map(|s| WarmupStepCap { day: s.day, daily_cap: s.daily_cap }).collect(),
            ramp: self.ramp.as_ref().filter(|_| self.steps.is_none()).map(|r| WarmupRamp {
                start: r.start,
                growth_percent: r.growth_percent,
                ceiling: r.ceiling,
            }),
        }
    }

    /// Daily cap on `day` (1-based), or `None` once the plan is finished
    /// (the IP is warm: the day after the last step, or once the ramp
    /// reaches its ceiling). Pure: day counting is the caller's job. The
    /// computation is [`WarmupSchedule::cap_on_day`], shared with the agent.
    pub fn cap_on_day(&self, day: u32) -> Option<u64> {
        self.schedule().cap_on_day(day)
    }
}
