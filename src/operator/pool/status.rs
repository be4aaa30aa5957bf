//! Step 6, status: the pool's conditions and summary, one function per
//! condition, each derived from what was applied (the rendered instances,
//! or why the pipeline stopped) and what was observed (instance rows from
//! `instances.rs`, DNS findings). Then written through
//! `crate::operator::status::write`: patched only when something other than
//! a timestamp changed, an Event per flip.
//!
//! | condition             | function                 | from                                   |
//! |-----------------------|--------------------------|----------------------------------------|
//! | Ready                 | [`ready`]                | instances ready / why the pipeline stopped |
//! | Progressing           | [`progressing`]          | rollout of the template, config loaded |
//! | Degraded              | [`degraded`]             | instance problems / why it stopped     |
//! | QueueBacklog          | [`queue_backlog`]        | the agents' queue reports              |
//! | BacklogForecast       | [`backlog_forecast`]     | the agents' per-domain flow forecasts  |
//! | WarmingUp             | [`warming_up`]           | the agents' warm-up / rendered caps    |
//! | Draining              | [`draining`]             | draining rows, peers, pool deletion    |
//! | Listed                | [`listed`]               | the DNSBL sweep                        |
//! | AuthenticationValid   | [`authentication_valid`] | the PTR/SPF/DKIM/DMARC checks          |
//! | DnsRecordsPublished   | [`dns_records_published`]| the publish step (`publish.rs`)        |
//!
//! `status.dnsRecords` is the record list `crate::dns::records` decided,
//! as the publish step got it (values included, the DKIM one only once the
//! key's public half was read).
//! The derivation is pure (`now` passed in): no client, no clock. The
//! types, reasons and polarity come from `sendfleet_render::conditions`.
//!
//! Adding a condition:
//! 1. `crates/render/src/conditions.rs`: a `ConditionType` variant, its
//!    `as_str()`, its `polarity()` (which decides Warning vs Normal Events
//!    on flips) and its place in `ALL` (sorted by name);
//! 2. its `Reason` variants there, with `as_str()` (PascalCase, stable);
//! 3. what it is derived from: a field of `observe::Observed`, or of the
//!    per-instance row in `instances.rs`;
//! 4. here, one `pub fn` returning the `Observation` (or `None`: leave it as
//!    it was), deciding also what it says when the pipeline `Stopped`;
//! 5. add the call to the list in [`derive()`]; if only its observer may set
//!    it, add the type to `SET_BY_CHECKS` (Unknown until observed);
//! 6. a unit test beside the others here, and the list of types in
//!    `derive_sets_every_condition_and_rederiving_changes_nothing`.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use sendfleet_render::api::{DnsRecordStatus, DomainFlowSummary, QueueSummary, SendingPool, SendingPoolStatus};
use sendfleet_render::conditions::{self, ConditionType, Observation, Reason, Status};

use super::instances::{self, Instance};
use super::observe::Observed;
use super::publish::Published;
use super::render::Rendered;
use crate::dns::records::DnsRecord;
use crate::dns::{authentication_condition, listed_condition};
use crate::operator::context::Context;
use crate::operator::error::Retry;
use crate::operator::reputation::Findings;
use crate::operator::status::PatchError;

/// What the steps before status achieved.
#[derive(Clone, Copy, Debug)]
pub enum Applied<'a> {
    /// A step stopped the pipeline; `message` says why (the error chain).
    Stopped { reason: Reason, message: &'a str },
    /// The rendered instances were applied; here they are as observed.
    Instances(&'a [Instance]),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    PatchStatus(#[from] PatchError),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::PatchStatus(_) => PatchError::CATEGORY,
        }
    }

    pub fn retry(&self) -> Retry {
        Retry::Transient
    }
}

/// `Ready`: every rendered instance is ready.
pub fn ready(applied: Applied<'_>) -> Observation {
    let instances = match applied {
        Applied::Stopped { reason, message } => {
            return Observation::new(ConditionType::Ready, Status::False, reason, message)
        }
        Applied::Instances(i) => i,
    };
    let ready = instances.iter().filter(|i| i.ready).count();
    let total = instances.len();
    let (status, reason) = if ready == total {
        (Status::True, Reason::InstancesReady)
    } else {
        (Status::False, Reason::InstancesNotReady)
    };
    Observation::new(ConditionType::Ready, status, reason, format!("{ready}/{total} instances ready"))
}

/// `Progressing`: some instance does not yet run the current template, or
/// its agent has not loaded the rendered configuration.
pub fn progressing(applied: Applied<'_>) -> Observation {
    let instances = match applied {
        Applied::Stopped { reason, message } => {
            return Observation::new(ConditionType::Progressing, Status::False, reason, message)
        }
        Applied::Instances(i) => i,
    };
    let rolling = sorted_names(instances.iter().filter(|i| !i.rolled_out));
    let pending = sorted_names(instances.iter().filter(|i| i.config_pending()));
    if !rolling.is_empty() {
        let message = format!("rolling out: {}", rolling.join(", "));
        Observation::new(ConditionType::Progressing, Status::True, Reason::RollingOut, message)
    } else if !pending.is_empty() {
        let message = format!("configuration not yet loaded by: {}", pending.join(", "));
        Observation::new(ConditionType::Progressing, Status::True, Reason::ConfigPending, message)
    } else {
        let message = "every instance runs the rendered configuration";
        Observation::new(ConditionType::Progressing, Status::False, Reason::Converged, message)
    }
}

/// `Degraded`: some instance is failing (its row names the problem), or the
/// pipeline stopped.
pub fn degraded(applied: Applied<'_>) -> Observation {
    let instances = match applied {
        Applied::Stopped { reason, message } => {
            return Observation::new(ConditionType::Degraded, Status::True, reason, message)
        }
        Applied::Instances(i) => i,
    };
    // A draining row's message counts what is left: not a failure.
    let mut failing: Vec<String> = instances
        .iter()
        .filter(|i| i.status.phase.as_deref() != Some(instances::phase::DRAINING))
        .filter_map(|i| Some(format!("{}: {}", i.name(), i.status.message.as_deref()?)))
        .collect();
    failing.sort();
    if failing.is_empty() {
        Observation::new(ConditionType::Degraded, Status::False, Reason::AsExpected, "no instance is failing")
    } else {
        Observation::new(ConditionType::Degraded, Status::True, Reason::InstanceFailing, failing.join("; "))
    }
}

/// `QueueBacklog`: mail older than the pool's warn/critical ages, from the
/// agents' queue reports; `None` until some instance reported.
pub fn queue_backlog(pool: &SendingPool, applied: Applied<'_>) -> Option<Observation> {
    let Applied::Instances(instances) = applied else { return None };
    let queues = queues(instances);
    if queues.is_empty() {
        return None;
    }
    let (warn_age, critical_age) = (&pool.spec.backlog.warn_age, &pool.spec.backlog.critical_age);
    let over = |n: fn(&QueueSummary) -> u64| {
        let mut v: Vec<String> =
            queues.iter().filter(|(_, q)| n(q) > 0).map(|(name, q)| format!("{name} ({})", n(q))).collect();
        v.sort();
        v
    };
    let critical = over(|q| q.older_than_critical);
    // An instance over the critical age is named there, not twice.
    let warn = over(|q| if q.older_than_critical > 0 { 0 } else { q.older_than_warn });
    Some(if !critical.is_empty() {
        let message = format!("mail older than {critical_age}: {}", critical.join(", "));
        Observation::new(ConditionType::QueueBacklog, Status::True, Reason::OlderThanCriticalAge, message)
    } else if !warn.is_empty() {
        let message = format!("mail older than {warn_age}: {}", warn.join(", "));
        Observation::new(ConditionType::QueueBacklog, Status::True, Reason::OlderThanWarnAge, message)
    } else {
        let message = format!("no mail older than {warn_age}");
        Observation::new(ConditionType::QueueBacklog, Status::False, Reason::NoBacklog, message)
    })
}

/// The instances' queue reports; none before any agent reported.
fn queues(instances: &[Instance]) -> Vec<(&str, &QueueSummary)> {
    instances.iter().filter_map(|i| Some((i.name(), i.status.queue.as_ref()?))).collect()
}

/// One domain's flow summed over the instances whose agent forecasts it
/// at risk.
#[derive(Default)]
struct DomainRisk<'a> {
    queued: u64,
    inflow: u64,
    outflow: u64,
    oldest_age: u64,
    /// `None` when some instance's backlog of it is not draining.
    drain: Option<u64>,
    warn_in: u64,
    instances: Vec<&'a str>,
}

impl<'a> DomainRisk<'a> {
    fn add(&mut self, instance: &'a str, f: &DomainFlowSummary) {
        let first = self.instances.is_empty();
        self.queued += f.queued;
        self.inflow += f.inflow_per_minute;
        self.outflow += f.outflow_per_minute;
        self.oldest_age = self.oldest_age.max(f.oldest_age_seconds);
        self.drain = match (first, self.drain, f.drain_eta_seconds) {
            (true, _, d) => d,
            (false, Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        self.warn_in = if first { f.warn_in_seconds } else { self.warn_in.min(f.warn_in_seconds) };
        self.instances.push(instance);
    }
}

/// `BacklogForecast`: from the agents' per-domain forecasts, whether some
/// domain's backlog will not drain before its oldest mail reaches
/// `warnAge` — set while nothing is that old yet, which is the point: the
/// message names each such domain with its inflow and outflow per minute
/// (summed over the instances forecasting it), the growth, what is queued,
/// when it drains, and when its oldest mail reaches `warnAge`. `None`
/// until some instance reported a queue.
pub fn backlog_forecast(pool: &SendingPool, applied: Applied<'_>) -> Option<Observation> {
    let Applied::Instances(instances) = applied else { return None };
    let queues = queues(instances);
    if queues.is_empty() {
        return None;
    }
    let warn_age = &pool.spec.backlog.warn_age;
    let mut risks: BTreeMap<&str, DomainRisk<'_>> = BTreeMap::new();
    for (name, q) in &queues {
        for f in q.flows.iter().filter(|f| f.at_risk) {
            risks.entry(f.domain.as_str()).or_default().add(name, f);
        }
    }
    if risks.is_empty() {
        let message = format!("no domain's backlog is forecast to reach warnAge {warn_age}");
        return Some(Observation::new(ConditionType::BacklogForecast, Status::False, Reason::DrainsInTime, message));
    }
    let growing = risks.values().any(|r| r.inflow > r.outflow);
    let reason = if growing { Reason::BacklogGrowing } else { Reason::DrainTooSlow };
    let message: Vec<String> = risks
        .iter_mut()
        .map(|(domain, r)| {
            r.instances.sort();
            let drain = r.drain.map_or_else(|| "not draining".to_string(), |s| format!("drains in {}", human_age(s)));
            format!(
                "{domain}: inflow {}/min, outflow {}/min ({:+}/min), {} queued, {drain}; oldest {}, reaches warnAge {warn_age} in {} (on {})",
                r.inflow,
                r.outflow,
                r.inflow as i64 - r.outflow as i64,
                r.queued,
                human_age(r.oldest_age),
                human_age(r.warn_in),
                r.instances.join(", ")
            )
        })
        .collect();
    Some(Observation::new(ConditionType::BacklogForecast, Status::True, reason, message.join("; ")))
}

/// `WarmingUp`: some instance is still under its warm-up plan's caps;
/// `None` when the pipeline stopped (the plan may be the reason).
pub fn warming_up(pool: &SendingPool, applied: Applied<'_>) -> Option<Observation> {
    let Applied::Instances(instances) = applied else { return None };
    let Some(plan) = &pool.spec.warmup_plan_ref else {
        let message = "the pool has no warm-up plan";
        return Some(Observation::new(ConditionType::WarmingUp, Status::False, Reason::NoWarmupPlan, message));
    };
    let warming = sorted_names(instances.iter().filter(|i| i.warming));
    Some(if warming.is_empty() {
        let message = format!("every IP has finished plan {plan}");
        Observation::new(ConditionType::WarmingUp, Status::False, Reason::Warm, message)
    } else {
        let message = format!("warming under plan {plan}: {}", warming.join(", "));
        Observation::new(ConditionType::WarmingUp, Status::True, Reason::Warming, message)
    })
}

/// `Draining`: instances handing their queues on, what is left, and
/// whether it can go anywhere: a drain out of rotation with no peer in
/// rotation is `DrainBlocked` (the mail stays queued); a pool being
/// deleted is `PoolDeleting` until its queues are empty or the deadline.
pub fn draining(pool: &SendingPool, applied: Applied<'_>) -> Option<Observation> {
    let Applied::Instances(instances) = applied else { return None };
    let left = |i: &Instance| match i.draining {
        Some(Some(n)) => format!("{}: {n} messages", i.name()),
        _ => format!("{}: queue not reported yet", i.name()),
    };
    let mut rows: Vec<&Instance> = instances.iter().filter(|i| i.draining.is_some()).collect();
    rows.sort_by(|a, b| a.name().cmp(b.name()));
    let what: Vec<String> = rows.iter().map(|i| left(i)).collect();
    if pool.metadata.deletion_timestamp.is_some() && super::finalize::drains_deletion(pool) {
        let deadline = super::finalize::deadline(pool).map(|d| d.to_string()).unwrap_or_default();
        let message = format!("pool deleted: delivering queued mail until empty or {deadline}: {}", what.join("; "));
        return Some(Observation::new(ConditionType::Draining, Status::True, Reason::PoolDeleting, message));
    }
    if rows.is_empty() {
        let message = "no instance is draining";
        return Some(Observation::new(ConditionType::Draining, Status::False, Reason::NothingToDrain, message));
    }
    let peer_in_rotation = instances.iter().any(|i| i.status.weight > 0 && i.ready);
    let stuck: Vec<String> =
        rows.iter().filter(|i| i.status.weight == 0 && !matches!(i.draining, Some(Some(0)))).map(|i| left(i)).collect();
    Some(if !peer_in_rotation && !stuck.is_empty() {
        let message = format!("no peer in rotation to take the mail; it stays queued: {}", stuck.join("; "));
        Observation::new(ConditionType::Draining, Status::True, Reason::DrainBlocked, message)
    } else {
        let message = format!("handing queues on: {}", what.join("; "));
        Observation::new(ConditionType::Draining, Status::True, Reason::DrainingQueues, message)
    })
}

/// `Listed`: from the last finished DNSBL sweep; `None` before the first.
pub fn listed(findings: &Findings) -> Option<Observation> {
    findings.summary.as_ref().map(listed_condition)
}

/// `AuthenticationValid`: from the last finished PTR/SPF/DKIM/DMARC checks;
/// `None` before the first.
pub fn authentication_valid(findings: &Findings) -> Option<Observation> {
    findings.summary.as_ref().map(authentication_condition)
}

/// Set only by the checks that observe them: `Unknown` (NotObservedYet)
/// until they have.
const SET_BY_CHECKS: [ConditionType; 4] = [
    ConditionType::Listed,
    ConditionType::QueueBacklog,
    ConditionType::BacklogForecast,
    ConditionType::AuthenticationValid,
];

fn sorted_names<'a>(instances: impl Iterator<Item = &'a Instance>) -> Vec<&'a str> {
    let mut v: Vec<&str> = instances.map(Instance::name).collect();
    v.sort();
    v
}

/// `2h13m`-style age for `kubectl get`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `DkimSigning` (with `spec.dkim`): `False` while some instance has no
/// usable key (`KeyUnusable`: it holds new mail; `SendingUnsigned`: the
/// pool opted out), naming each with the agent's reason; `None` until an
/// agent reported its signer.
pub fn dkim_signing(pool: &SendingPool, applied: Applied<'_>) -> Option<Observation> {
    pool.spec.dkim.as_ref()?;
    let Applied::Instances(instances) = applied else { return None };
    let rows: Vec<(&str, &str)> =
        instances.iter().filter_map(|i| Some((i.name(), i.status.dkim.as_deref()?))).collect();
    if rows.is_empty() {
        return None;
    }
    let not = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> =
            rows.iter().filter(|(_, d)| d.starts_with(prefix)).map(|(n, d)| format!("{n}: {d}")).collect();
        v.sort();
        v
    };
    let (held, unsigned) = (not("Held"), not("Unsigned"));
    let t = ConditionType::DkimSigning;
    Some(if !held.is_empty() {
        let message = format!("holding new mail (submissions get 4xx): {}", [held, unsigned].concat().join("; "));
        Observation::new(t, Status::False, Reason::KeyUnusable, message)
    } else if !unsigned.is_empty() {
        Observation::new(
            t,
            Status::False,
            Reason::SendingUnsigned,
            format!("sending unsigned: {}", unsigned.join("; ")),
        )
    } else {
        let mut all: Vec<String> = rows.iter().map(|(n, d)| format!("{n}: {d}")).collect();
        all.sort();
        Observation::new(t, Status::True, Reason::Signing, all.join("; "))
    })
}

/// The pool's DNS records and what publishing them achieved.
#[derive(Clone, Copy, Debug)]
pub struct Dns<'a> {
    pub records: &'a [DnsRecord],
    pub published: &'a Published,
}

/// `DnsRecordsPublished` (with `spec.dnsRecords`): `True` once the
/// `DNSEndpoint` holds every record with a known value (the message names
/// those left out), `False` with `DNSEndpointNotInstalled` while the CRD is
/// missing; `None` when the pool does not ask.
pub fn dns_records_published(pool: &SendingPool, published: &Published) -> Option<Observation> {
    let t = ConditionType::DnsRecordsPublished;
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    Some(match published {
        Published::NotAsked => return None,
        Published::Written { records, left_out } => {
            let mut message = format!("DNSEndpoint {name} lists {records} records");
            if !left_out.is_empty() {
                message.push_str(&format!("; left out until their value is known: {}", left_out.join(", ")));
            }
            Observation::new(t, Status::True, Reason::Published, message)
        }
        Published::NotInstalled => Observation::new(
            t,
            Status::False,
            Reason::DNSEndpointNotInstalled,
            "spec.dnsRecords asks for a DNSEndpoint, but the API server does not serve \
             dnsendpoints.externaldns.k8s.io/v1alpha1 (install external-dns's CRD); looked for again every minute",
        ),
    })
}

/// `status.dnsRecords` from the record list.
fn dns_record_rows(records: &[DnsRecord]) -> Vec<DnsRecordStatus> {
    records
        .iter()
        .map(|r| DnsRecordStatus { name: r.name.clone(), type_: r.record_type.into(), value: r.value.clone() })
        .collect()
}

/// The summary fields (`kubectl get` columns and `status.instances`).
fn summarize(status: &mut SendingPoolStatus, pool: &SendingPool, instances: &[Instance], findings: &Findings) {
    let ready = instances.iter().filter(|i| i.ready).count();
    status.ready_instances = Some(format!("{ready}/{}", instances.len()));
    status.instances = instances.iter().map(|i| i.status.clone()).collect();
    let queues: Vec<&QueueSummary> = instances.iter().filter_map(|i| i.status.queue.as_ref()).collect();
    status.deferred_messages = (!queues.is_empty()).then(|| queues.iter().map(|q| q.deferred).sum());
    status.oldest_queued_age = queues.iter().map(|q| q.oldest_age_seconds).filter(|a| *a > 0).max().map(human_age);
    status.warmup = pool.spec.warmup_plan_ref.as_ref().map(|plan| {
        let warming = instances.iter().filter(|i| i.warming).count();
        format!("{plan}: {warming}/{} warming", instances.len())
    });
    if findings.summary.is_some() {
        status.listed_instances = Some(findings.listings.values().filter(|l| !l.is_empty()).count() as u32);
    }
}

/// The new status and the observations whose status flipped (each worth an
/// Event). Conditions nobody observed this time keep what they said.
pub fn derive(
    pool: &SendingPool,
    applied: Applied<'_>,
    findings: Option<&Findings>,
    dns: Option<Dns<'_>>,
    now: Timestamp,
) -> (SendingPoolStatus, Vec<Observation>) {
    let generation = pool.metadata.generation;
    let mut status = SendingPoolStatus { observed_generation: generation, ..pool.status.clone().unwrap_or_default() };
    if let (Applied::Instances(instances), Some(findings)) = (applied, findings) {
        summarize(&mut status, pool, instances, findings);
    }
    if let Some(dns) = dns {
        status.dns_records = dns_record_rows(dns.records);
    }
    // Only a pool that asks to publish has the condition.
    if pool.spec.dns_records.is_none() {
        status.conditions.retain(|c| c.type_ != ConditionType::DnsRecordsPublished.as_str());
    }
    let mut observations: Vec<Observation> = [
        Some(ready(applied)),
        Some(progressing(applied)),
        Some(degraded(applied)),
        queue_backlog(pool, applied),
        backlog_forecast(pool, applied),
        warming_up(pool, applied),
        draining(pool, applied),
        findings.and_then(listed),
        findings.and_then(authentication_valid),
        dkim_signing(pool, applied),
        dns.and_then(|d| dns_records_published(pool, d.published)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for t in SET_BY_CHECKS {
        if !conditions::has(&status.conditions, t) && !observations.iter().any(|o| o.type_ == t) {
            observations.push(Observation::not_observed(t));
        }
    }
    let flipped =
        observations.into_iter().filter(|o| conditions::set(&mut status.conditions, o, generation, now)).collect();
    (status, flipped)
}

/// Derive the status of an applied pool and write it if it changed.
pub async fn status(
    ctx: &Context,
    pool: &SendingPool,
    rendered: &Rendered,
    observed: &Observed,
    dns: Dns<'_>,
    now: Timestamp,
) -> Result<(), Error> {
    let rows = instances::instances(pool, &rendered.pool, observed);
    let (ns, name) =
        (pool.metadata.namespace.as_deref().unwrap_or_default(), pool.metadata.name.as_deref().unwrap_or_default());
    ctx.metrics.record_instances(ns, name, rows.iter().map(|r| (&r.status, r.ready)));
    let (new, flipped) = derive(pool, Applied::Instances(&rows), Some(&observed.findings), Some(dns), now);
    write(ctx, pool, &new, &flipped).await
}

/// Say in the status why the pipeline stopped (`Ready=False` with the
/// reason), leaving the instance rows as they were.
pub async fn stopped(
    ctx: &Context,
    pool: &SendingPool,
    reason: Reason,
    message: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let (new, flipped) = derive(pool, Applied::Stopped { reason, message }, None, None, now);
    write(ctx, pool, &new, &flipped).await
}

async fn write(
    ctx: &Context,
    pool: &SendingPool,
    new: &SendingPoolStatus,
    flipped: &[Observation],
) -> Result<(), Error> {
    crate::operator::status::write(ctx, pool, new, flipped).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfleet_render::api::InstanceStatus;

    fn pool(plan: Option<&str>) -> SendingPool {
        let plan = plan.map(|p| format!("  warmupPlanRef: {p}\n")).unwrap_or_default();
        serde_yaml::from_str(&format!(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {{name: p, namespace: ns, generation: 3}}\nspec:\n{plan}  backlog: {{warnAge: 4h, criticalAge: 12h}}\n  egressIPs:\n    - {{name: a, address: 192.0.2.1, heloName: a.example.com}}\n    - {{name: b, address: 192.0.2.2, heloName: b.example.com}}\n",
        ))
        .unwrap()
    }

    /// A row as `instances.rs` builds it: ready, rolled out, config loaded,
    /// nothing failing; tests change what they look at.
    fn row(name: &str) -> Instance {
        Instance {
            status: InstanceStatus {
                name: name.into(),
                desired_config_hash: Some("h".into()),
                applied_config_hash: Some("h".into()),
                ..Default::default()
            },
            ready: true,
            rolled_out: true,
            warming: false,
            draining: None,
        }
    }

    fn queue(warn: u64, critical: u64) -> Option<QueueSummary> {
        Some(QueueSummary { older_than_warn: warn, older_than_critical: critical, ..Default::default() })
    }

    const STOPPED: Applied<'static> = Applied::Stopped {
        reason: Reason::MissingReference,
        message: "spec.warmupPlanRef: WarmupPlan \"later\" not found in namespace ns",
    };

    fn said(o: &Observation) -> (Status, Reason, &str) {
        (o.status, o.reason, o.message.as_str())
    }

    #[test]
    fn dkim_signing_names_instances_holding_or_unsigned_and_needs_spec_dkim() {
        let mut p = pool(None);
        let (mut a, mut b) = (row("a"), row("b"));
        assert_eq!(dkim_signing(&p, Applied::Instances(&[a.clone(), b.clone()])), None, "no spec.dkim");
        p.spec.dkim = Some(Default::default());
        assert_eq!(dkim_signing(&p, Applied::Instances(&[a.clone(), b.clone()])), None, "no report yet");
        a.status.dkim = Some("Signing (s1)".into());
        b.status.dkim = Some("Held: selector s1: unusable key: no PEM block found".into());
        let o = dkim_signing(&p, Applied::Instances(&[a.clone(), b.clone()])).unwrap();
        assert_eq!(
            said(&o),
            (
                Status::False,
                Reason::KeyUnusable,
                "holding new mail (submissions get 4xx): b: Held: selector s1: unusable key: no PEM block found"
            )
        );
        b.status.dkim = Some("Unsigned: selector s1: the Secret has no key".into());
        let o = dkim_signing(&p, Applied::Instances(&[a.clone(), b.clone()])).unwrap();
        assert_eq!((o.status, o.reason), (Status::False, Reason::SendingUnsigned));
        b.status.dkim = Some("Signing (s1)".into());
        let o = dkim_signing(&p, Applied::Instances(&[a, b])).unwrap();
        assert_eq!(said(&o), (Status::True, Reason::Signing, "a: Signing (s1); b: Signing (s1)"));
    }

    #[test]
    fn ready_counts_ready_instances_or_says_why_the_pipeline_stopped() {
        let mut b = row("b");
        b.ready = false;
        let rows = [row("a"), b];
        assert_eq!(
            said(&ready(Applied::Instances(&rows))),
            (Status::False, Reason::InstancesNotReady, "1/2 instances ready")
        );
        assert_eq!(
            said(&ready(Applied::Instances(&rows[..1]))),
            (Status::True, Reason::InstancesReady, "1/1 instances ready")
        );
        let o = ready(STOPPED);
        assert_eq!((o.status, o.reason), (Status::False, Reason::MissingReference));
        assert!(o.message.contains("warmupPlanRef") && o.message.contains("later"), "{}", o.message);
        let o = ready(Applied::Stopped { reason: Reason::ApplyFailed, message: "applying ConfigMap p-a: refused" });
        assert_eq!((o.status, o.reason), (Status::False, Reason::ApplyFailed));
    }

    #[test]
    fn progressing_names_instances_rolling_out_before_those_loading_config() {
        let converged = [row("a"), row("b")];
        assert_eq!(progressing(Applied::Instances(&converged)).reason, Reason::Converged);
        assert_eq!(progressing(Applied::Instances(&converged)).status, Status::False);

        let mut stale = row("b");
        stale.status.applied_config_hash = Some("old".into());
        let rows = [row("a"), stale.clone()];
        assert_eq!(
            said(&progressing(Applied::Instances(&rows))),
            (Status::True, Reason::ConfigPending, "configuration not yet loaded by: b")
        );
        let mut rolling = row("a");
        rolling.rolled_out = false;
        let rows = [stale, rolling];
        assert_eq!(said(&progressing(Applied::Instances(&rows))), (Status::True, Reason::RollingOut, "rolling out: a"));
        assert_eq!(progressing(STOPPED).status, Status::False);
        assert_eq!(progressing(STOPPED).reason, Reason::MissingReference);
    }

    #[test]
    fn degraded_lists_failing_instances_sorted_with_their_problem() {
        assert_eq!(
            said(&degraded(Applied::Instances(&[row("a")]))),
            (Status::False, Reason::AsExpected, "no instance is failing")
        );
        let mut a = row("a");
        a.status.message = Some("CrashLoopBackOff: last exit 1".into());
        let mut b = row("b");
        b.status.message = Some("Unschedulable: 0/3 nodes".into());
        let rows = [b, a];
        assert_eq!(
            said(&degraded(Applied::Instances(&rows))),
            (Status::True, Reason::InstanceFailing, "a: CrashLoopBackOff: last exit 1; b: Unschedulable: 0/3 nodes")
        );
        assert_eq!((degraded(STOPPED).status, degraded(STOPPED).reason), (Status::True, Reason::MissingReference));
    }

    #[test]
    fn queue_backlog_from_the_agents_reports_worst_first_and_none_before_any() {
        let p = pool(None);
        assert_eq!(queue_backlog(&p, Applied::Instances(&[row("a")])), None, "no agent reported a queue");
        assert_eq!(queue_backlog(&p, STOPPED), None);
        let mut a = row("a");
        a.status.queue = queue(0, 0);
        assert_eq!(
            said(&queue_backlog(&p, Applied::Instances(&[a.clone()])).unwrap()),
            (Status::False, Reason::NoBacklog, "no mail older than 4h")
        );
        let mut b = row("b");
        b.status.queue = queue(2, 0);
        assert_eq!(
            said(&queue_backlog(&p, Applied::Instances(&[a.clone(), b.clone()])).unwrap()),
            (Status::True, Reason::OlderThanWarnAge, "mail older than 4h: b (2)")
        );
        a.status.queue = queue(3, 1);
        assert_eq!(
            said(&queue_backlog(&p, Applied::Instances(&[b, a])).unwrap()),
            (Status::True, Reason::OlderThanCriticalAge, "mail older than 12h: a (1)")
        );
    }

    fn flow(domain: &str, queued: u64, rates: (u64, u64), drain: Option<u64>, at_risk: bool) -> DomainFlowSummary {
        DomainFlowSummary {
            domain: domain.into(),
            queued,
            inflow_per_minute: rates.0,
            outflow_per_minute: rates.1,
            oldest_age_seconds: 90,
            drain_eta_seconds: drain,
            warn_in_seconds: 4 * 3600 - 90,
            at_risk,
        }
    }

    #[test]
    fn backlog_forecast_names_each_domain_at_risk_with_its_flow_before_any_mail_is_old() {
        let p = pool(None);
        assert_eq!(backlog_forecast(&p, Applied::Instances(&[row("a")])), None, "no agent reported a queue");
        assert_eq!(backlog_forecast(&p, STOPPED), None);
        let mut a = row("a");
        let mut b = row("b");
        a.status.queue = Some(QueueSummary {
            flows: vec![flow("quick.test", 40, (10, 200), Some(12), false)],
            ..Default::default()
        });
        b.status.queue = Some(QueueSummary::default());
        assert_eq!(
            said(&backlog_forecast(&p, Applied::Instances(&[a.clone(), b.clone()])).unwrap()),
            (Status::False, Reason::DrainsInTime, "no domain's backlog is forecast to reach warnAge 4h")
        );
        // bigmail.test grows on both instances: summed, named once.
        a.status.queue.as_mut().unwrap().flows.push(flow("bigmail.test", 30, (60, 12), None, true));
        b.status.queue.as_mut().unwrap().flows.push(flow("bigmail.test", 20, (30, 12), None, true));
        let o = backlog_forecast(&p, Applied::Instances(&[b.clone(), a.clone()])).unwrap();
        assert_eq!(
            said(&o),
            (
                Status::True,
                Reason::BacklogGrowing,
                "bigmail.test: inflow 90/min, outflow 24/min (+66/min), 50 queued, not draining; oldest 1m30s, reaches warnAge 4h in 3h58m (on a, b)"
            )
        );
        assert_eq!(o.event(), Some(conditions::EventKind::Warning));
        // Draining, but only after the warn age.
        a.status.queue.as_mut().unwrap().flows = vec![flow("slow.test", 9000, (10, 12), Some(270_000), true)];
        b.status.queue = None;
        assert_eq!(
            said(&backlog_forecast(&p, Applied::Instances(&[a, b])).unwrap()),
            (
                Status::True,
                Reason::DrainTooSlow,
                "slow.test: inflow 10/min, outflow 12/min (-2/min), 9000 queued, drains in 3d3h; oldest 1m30s, reaches warnAge 4h in 3h58m (on a)"
            )
        );
    }

    #[test]
    fn warming_up_follows_the_plan_and_the_instances() {
        let mut b = row("b");
        b.warming = true;
        let rows = [row("a"), b];
        assert_eq!(
            said(&warming_up(&pool(None), Applied::Instances(&rows)).unwrap()),
            (Status::False, Reason::NoWarmupPlan, "the pool has no warm-up plan")
        );
        let p = pool(Some("ramp"));
        assert_eq!(
            said(&warming_up(&p, Applied::Instances(&rows)).unwrap()),
            (Status::True, Reason::Warming, "warming under plan ramp: b")
        );
        assert_eq!(
            said(&warming_up(&p, Applied::Instances(&rows[..1])).unwrap()),
            (Status::False, Reason::Warm, "every IP has finished plan ramp")
        );
        assert_eq!(warming_up(&p, STOPPED), None, "a stopped pipeline leaves WarmingUp as it was");
    }

    #[test]
    fn listed_and_authentication_come_from_the_sweep_once_it_ran() {
        let mut f = Findings::default();
        assert_eq!(listed(&f), None);
        assert_eq!(authentication_valid(&f), None);
        f.summary = Some(Default::default());
        let l = listed(&f).unwrap();
        assert_eq!((l.type_, l.status, l.reason), (ConditionType::Listed, Status::False, Reason::NotListed));
        let a = authentication_valid(&f).unwrap();
        assert_eq!((a.type_, a.status), (ConditionType::AuthenticationValid, Status::True));
    }

    #[test]
    fn derive_sets_every_condition_and_rederiving_changes_nothing() {
        let p = pool(Some("ramp"));
        let mut a = row("a");
        a.status.queue =
            Some(QueueSummary { deferred: 7, oldest_age_seconds: 5 * 3600, older_than_warn: 2, ..Default::default() });
        a.warming = true;
        let mut b = row("b");
        b.ready = false;
        b.status.queue = Some(QueueSummary { oldest_age_seconds: 13 * 3600, ..Default::default() });
        let rows = [a, b];
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let (status, flipped) = derive(&p, Applied::Instances(&rows), Some(&Findings::default()), None, now);
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "AuthenticationValid",
                "BacklogForecast",
                "Degraded",
                "Draining",
                "Listed",
                "Progressing",
                "QueueBacklog",
                "Ready",
                "WarmingUp"
            ]
        );
        let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(cond("Listed").reason, "NotObservedYet", "no sweep yet");
        assert_eq!(cond("Ready").observed_generation, Some(3));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.ready_instances.as_deref(), Some("1/2"));
        assert_eq!(status.deferred_messages, Some(7));
        assert_eq!(status.oldest_queued_age.as_deref(), Some("13h0m"));
        assert_eq!(status.warmup.as_deref(), Some("ramp: 1/2 warming"));
        assert_eq!(cond("BacklogForecast").reason, "DrainsInTime");
        assert_eq!(flipped.len(), 9, "every condition is new");
        let written = SendingPool { status: Some(status.clone()), ..p.clone() };
        let later: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let (again, flipped) = derive(&written, Applied::Instances(&rows), Some(&Findings::default()), None, later);
        assert!(crate::operator::status::unchanged(Some(&status), &again));
        assert!(flipped.is_empty());
    }

    #[test]
    fn a_stopped_pipeline_flips_ready_and_keeps_the_instance_rows() {
        let p = pool(Some("later"));
        let now = Timestamp::UNIX_EPOCH;
        let (status, _) = derive(&p, Applied::Instances(&[row("a"), row("b")]), Some(&Findings::default()), None, now);
        let p = SendingPool { status: Some(status), ..p };
        let (status, flipped) = derive(&p, STOPPED, None, None, now);
        let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!((cond("Ready").status.as_str(), cond("Ready").reason.as_str()), ("False", "MissingReference"));
        assert_eq!(cond("WarmingUp").reason, "Warm", "left as it was");
        assert_eq!(status.instances.len(), 2);
        let types: Vec<ConditionType> = flipped.iter().map(|o| o.type_).collect();
        assert_eq!(types, [ConditionType::Ready, ConditionType::Degraded]);
        assert!(flipped.iter().all(|o| o.event() == Some(conditions::EventKind::Warning)));
    }

    #[test]
    fn dns_records_are_listed_and_the_publish_condition_follows_spec_dns_records() {
        let records = [
            DnsRecord {
                name: "1.2.0.192.in-addr.arpa".into(),
                record_type: "PTR",
                value: Some("a.example.com".into()),
            },
            DnsRecord { name: "s1._domainkey.example.com".into(), record_type: "TXT", value: None },
        ];
        let now = Timestamp::UNIX_EPOCH;
        let mut p = pool(None);
        let rows = [row("a")];
        let written = Published::Written { records: 1, left_out: vec!["TXT s1._domainkey.example.com".into()] };
        // Not asked: the records are listed all the same, no condition.
        let dns = Dns { records: &records, published: &Published::NotAsked };
        let (status, _) = derive(&p, Applied::Instances(&rows), Some(&Findings::default()), Some(dns), now);
        assert_eq!(status.dns_records.len(), 2);
        assert_eq!(status.dns_records[0].type_, "PTR");
        assert_eq!(status.dns_records[1].value, None, "no key: no value");
        assert!(!conditions::has(&status.conditions, ConditionType::DnsRecordsPublished));
        p.spec.dns_records = Some(Default::default());
        let dns = Dns { records: &records, published: &Published::NotInstalled };
        let (status, _) = derive(&p, Applied::Instances(&rows), Some(&Findings::default()), Some(dns), now);
        let c = status.conditions.iter().find(|c| c.type_ == "DnsRecordsPublished").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "DNSEndpointNotInstalled"), "{}", c.message);
        assert!(c.message.contains("dnsendpoints.externaldns.k8s.io"), "{}", c.message);
        let p = SendingPool { status: Some(status), ..p };
        let dns = Dns { records: &records, published: &written };
        let (status, flipped) = derive(&p, Applied::Instances(&rows), Some(&Findings::default()), Some(dns), now);
        let c = status.conditions.iter().find(|c| c.type_ == "DnsRecordsPublished").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Published"));
        assert!(
            c.message.contains("left out until their value is known: TXT s1._domainkey.example.com"),
            "{}",
            c.message
        );
        assert!(flipped.iter().any(|o| o.type_ == ConditionType::DnsRecordsPublished));
        // Asking no more: the condition goes.
        let mut p = SendingPool { status: Some(status), ..p };
        p.spec.dns_records = None;
        let dns = Dns { records: &records, published: &Published::NotAsked };
        let (status, _) = derive(&p, Applied::Instances(&rows), Some(&Findings::default()), Some(dns), now);
        assert!(!conditions::has(&status.conditions, ConditionType::DnsRecordsPublished));
    }

    #[test]
    fn draining_counts_what_is_left_and_says_when_no_peer_can_take_it() {
        let p = pool(None);
        let a = row("a");
        let mut d = row("d");
        d.draining = Some(Some(12));
        d.status.phase = Some(instances::phase::DRAINING.into());
        d.status.message = Some("12 messages left to hand on".into());
        let mut a_in = a.clone();
        a_in.status.weight = 1;
        let o = draining(&p, Applied::Instances(&[a_in, d.clone()])).unwrap();
        assert_eq!((o.status, o.reason), (Status::True, Reason::DrainingQueues), "{}", o.message);
        assert!(o.message.contains("d: 12 messages"), "{}", o.message);
        let o = draining(&p, Applied::Instances(&[a.clone(), d.clone()])).unwrap();
        assert_eq!(o.reason, Reason::DrainBlocked, "a is not in rotation: {}", o.message);
        let o = draining(&p, Applied::Instances(std::slice::from_ref(&a))).unwrap();
        assert_eq!((o.status, o.reason), (Status::False, Reason::NothingToDrain));
        // A draining row is not a failing one.
        assert_eq!(degraded(Applied::Instances(&[a, d])).status, Status::False);
    }

    #[test]
    fn human_age_reads_like_kubectl() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m1s");
        assert_eq!(human_age(13 * 3600), "13h0m");
        assert_eq!(human_age(2 * 86_400 + 3600), "2d1h");
    }
}
