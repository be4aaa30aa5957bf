//! One row per rendered instance: what its StatefulSet, pod and agent say
//! (phase, the problem if any, the configuration it loaded, its queue,
//! deliveries and warm-up). The pool's conditions are derived from these
//! rows (`status.rs`); `status.instances` shows them.
//!
//! Pure: the observations and the previous status in, rows out. An agent
//! that could not be polled this time keeps what the previous status
//! showed for it (its queue, counters, warm-up), so one failed poll flips
//! nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use sendfleet_render::api::{
    DeliveryCounts, DeliveryLatencySummary, DomainFlowSummary, InstanceStatus, InstanceWarmup, QueueSummary,
    SendingPool,
};
use sendfleet_render::contract::{AgentStatus, DomainFlow, WarmupProgress};
use sendfleet_render::objects::{instance_object_name, LABEL_INSTANCE};
use sendfleet_render::render::{RenderedInstance, RenderedPool};

use super::observe::Observed;

/// Phases of `status.instances[].phase`.
pub mod phase {
    pub const READY: &str = "Ready";
    pub const FAILED: &str = "Failed";
    pub const PENDING: &str = "Pending";
    pub const STARTING: &str = "Starting";
    /// Out of rotation and handing its queue on (a removed or disabled
    /// egress IP, or a pool being deleted); the message counts what is left.
    pub const DRAINING: &str = "Draining";
    /// Running as a spare (`egressIPs[].role: Spare`): checked, not in rotation.
    pub const SPARE: &str = "Spare";
}

/// One rendered instance as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// What `status.instances` shows.
    pub status: InstanceStatus,
    /// Its pod is ready.
    pub ready: bool,
    /// It runs the current template *and* is ready: a pod stuck pending is
    /// not rolled out.
    pub rolled_out: bool,
    /// Still under its warm-up plan's daily cap.
    pub warming: bool,
    /// It drains (its policy says so): messages still queued on it, as
    /// last reported (`None`: never reported).
    pub draining: Option<Option<u64>>,
}

impl Instance {
    pub fn name(&self) -> &str {
        &self.status.name
    }

    /// Ready, but the agent has not (yet) reported loading the rendered
    /// configuration.
    pub fn config_pending(&self) -> bool {
        self.ready && self.status.applied_config_hash != self.status.desired_config_hash
    }
}

/// The rows of every rendered instance, in the render's order.
pub fn instances(pool: &SendingPool, rendered: &RenderedPool, observed: &Observed) -> Vec<Instance> {
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let sts: BTreeMap<&str, &StatefulSet> =
        observed.statefulsets.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s))).collect();
    let pods: BTreeMap<&str, &Pod> = observed
        .pods
        .iter()
        .filter_map(|p| Some((p.metadata.labels.as_ref()?.get(LABEL_INSTANCE)?.as_str(), p)))
        .collect();
    let previous: &[InstanceStatus] = pool.status.as_ref().map_or(&[], |s| &s.instances);
    rendered
        .instances
        .iter()
        .map(|inst| {
            let sts = sts.get(instance_object_name(pool_name, &inst.name).as_str()).copied();
            let agent = observed.agents.get(&inst.name).and_then(|r| r.as_ref().ok());
            let prev = previous.iter().find(|i| i.name == inst.name);
            instance(inst, sts, pods.get(inst.name.as_str()).copied(), agent, prev, observed)
        })
        .collect()
}

fn instance(
    inst: &RenderedInstance,
    sts: Option<&StatefulSet>,
    pod: Option<&Pod>,
    agent: Option<&AgentStatus>,
    prev: Option<&InstanceStatus>,
    observed: &Observed,
) -> Instance {
    let st = sts.and_then(|s| s.status.as_ref());
    let ready = st.and_then(|st| st.ready_replicas).unwrap_or(0) >= 1;
    let updated = st.is_some_and(|st| {
        st.observed_generation >= sts.and_then(|s| s.metadata.generation)
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision
    });
    let refused = agent
        .and_then(|a| a.config.refused.as_ref())
        .filter(|r| r.hash == inst.config_hash)
        .map(|r| format!("config {} refused by the agent: {}: {}", r.hash, r.reason, r.message));
    // No pod at all: the StatefulSet controller's refusal, if it recorded
    // one (Pod Security admission, a quota), says why.
    let not_created = match (sts, pod) {
        (Some(s), None) => s.metadata.name.as_ref().and_then(|n| observed.failed_creates.get(n)),
        _ => None,
    };
    let not_created = not_created.map(|m| format!("FailedCreate: {m}"));
    let problem = pod.and_then(pod_problem).or(not_created).or(refused);
    let this = inst.policy.this_instance();
    let queued =
        agent.map(super::drain::queued).or_else(|| prev.and_then(|p| p.queue.as_ref()).map(|q| q.active + q.deferred));
    let draining = this.is_some_and(|p| p.draining).then_some(queued);
    let spare = this.and_then(|p| p.out_of_rotation_reason.as_deref()).is_some_and(|r| r.starts_with("Spare"));
    let phase = match () {
        _ if problem.is_some() && !ready => phase::FAILED,
        _ if draining.is_some() && sts.is_some() => phase::DRAINING,
        _ if ready && spare => phase::SPARE,
        _ if ready => phase::READY,
        _ if problem.is_some() => phase::FAILED,
        _ if sts.is_none() => phase::PENDING,
        _ => phase::STARTING,
    };
    // A draining instance's row says what is left; a problem wins.
    let problem = problem.or_else(|| match (phase, draining) {
        (phase::DRAINING, Some(Some(n))) => Some(format!("{n} messages left to hand on")),
        (phase::DRAINING, _) => Some("queue not reported yet".to_string()),
        _ => None,
    });
    let applied =
        agent.and_then(|a| a.config.loaded_hash.clone()).or_else(|| prev.and_then(|p| p.applied_config_hash.clone()));
    let queue = agent.map(|a| {
        let q = &a.queue;
        QueueSummary {
            active: q.messages.get("active").copied().unwrap_or(0),
            deferred: q.messages.get("deferred").copied().unwrap_or(0),
            older_than_warn: q.older_than_warn,
            older_than_critical: q.older_than_critical,
            oldest_age_seconds: q.oldest_age_seconds.unwrap_or(0),
            flows: q.flows.iter().map(flow_summary).collect(),
        }
    });
    let delivery_latency = agent.map(|a| {
        let millis = |s: Option<f64>| s.map(|s| (s * 1000.0).round() as u64);
        DeliveryLatencySummary {
            window_seconds: a.latency.window_seconds,
            samples: a.latency.samples,
            p50_milliseconds: millis(a.latency.p50_seconds),
            p99_milliseconds: millis(a.latency.p99_seconds),
        }
    });
    let deliveries = agent.map(|a| {
        let c = &a.counters.since_start;
        DeliveryCounts { sent: c.sent, deferred: c.deferred, bounced: c.bounced, expired: c.expired }
    });
    // The agents know each IP's step; until one reports, the rendered
    // policy's cap (day 1 for a new IP) says.
    let warming = match agent {
        Some(a) => a.adaptive.warmup.as_ref().is_some_and(|w| w.daily_cap.is_some()),
        None => inst.policy.this_instance().is_some_and(|p| p.daily_cap.is_some()),
    };
    let status = InstanceStatus {
        name: inst.name.clone(),
        address: inst.address.clone(),
        phase: Some(phase.into()),
        message: problem,
        weight: inst.weight,
        desired_config_hash: Some(inst.config_hash.clone()),
        applied_config_hash: applied,
        warmup: match agent {
            Some(a) => a.adaptive.warmup.as_ref().and_then(instance_warmup),
            None => prev.and_then(|p| p.warmup.clone()),
        },
        listings: match &observed.findings.summary {
            Some(_) => observed.findings.listings.get(&inst.name).cloned().unwrap_or_default(),
            None => prev.map(|p| p.listings.clone()).unwrap_or_default(),
        },
        quarantine: inst.policy.this_instance().and_then(|i| i.out_of_rotation_reason.clone()),
        queue: queue.or_else(|| prev.and_then(|p| p.queue.clone())),
        deliveries: deliveries.or_else(|| prev.and_then(|p| p.deliveries.clone())),
        delivery_latency: delivery_latency.or_else(|| prev.and_then(|p| p.delivery_latency.clone())),
        // By address: a new address under an old name starts unchecked.
        checked_since: observed
            .findings
            .checked
            .get(&inst.address)
            .map(|t| t.to_string())
            .or_else(|| prev.filter(|p| p.address == inst.address).and_then(|p| p.checked_since.clone())),
        cool_down_since: observed.findings.cool_down_since.get(&inst.name).map(|t| t.to_string()),
        dkim: agent.and_then(|a| a.dkim.as_ref()).map(signer_summary).or_else(|| prev.and_then(|p| p.dkim.clone())),
    };
    Instance { status, ready, rolled_out: updated && ready, warming, draining }
}

/// The signer's report as the instance row shows it (the reason never
/// holds key material: the agent's `signer` writes only what it looked for).
fn signer_summary(s: &sendfleet_render::contract::SignerStatus) -> String {
    use sendfleet_render::contract::SignerState;
    let reason = s.reason.as_deref().unwrap_or("no usable key");
    match s.state {
        SignerState::Signing if s.reason.is_some() => format!("Signing ({}); {reason}", s.selectors.join(", ")),
        SignerState::Signing => format!("Signing ({})", s.selectors.join(", ")),
        SignerState::Held => format!("Held: {reason}"),
        SignerState::Unsigned => format!("Unsigned: {reason}"),
    }
}

/// A domain's flow as the pool status shows it (rates rounded per minute).
fn flow_summary(f: &DomainFlow) -> DomainFlowSummary {
    DomainFlowSummary {
        domain: f.domain.clone(),
        queued: f.queued,
        inflow_per_minute: f.inflow_per_minute.round() as u64,
        outflow_per_minute: f.outflow_per_minute.round() as u64,
        oldest_age_seconds: f.oldest_age_seconds,
        drain_eta_seconds: f.drain_eta_seconds,
        warn_in_seconds: f.warn_in_seconds,
        at_risk: f.at_risk,
    }
}

/// An instance's warm-up progress as the pool status shows it; `None` once
/// the IP has finished its plan.
fn instance_warmup(w: &WarmupProgress) -> Option<InstanceWarmup> {
    let cap = w.daily_cap?;
    Some(InstanceWarmup {
        step: w.step,
        daily_cap: cap,
        sent_today: w.sent_today,
        paused: w.held.clone(),
        next_step_at: w.next_step_at.and_then(|t| Timestamp::from_second(t as i64).ok()).map(|t| t.to_string()),
    })
}

/// The container's last exit: code, restarts, and the cause from its
/// termination message (the log's tail: the instance container asks for
/// `FallbackToLogsOnError`), else the kubelet's reason.
fn last_exit(cs: &ContainerStatus) -> Option<String> {
    let t = cs.last_state.as_ref()?.terminated.as_ref()?;
    let cause = t.message.as_deref().and_then(termination_cause).or_else(|| t.reason.clone()).unwrap_or_default();
    let restarts = match cs.restart_count {
        1 => "1 restart".to_string(),
        n => format!("{n} restarts"),
    };
    Some(format!("last exit {} after {restarts}: {cause}", t.exit_code).trim_end_matches(": ").to_string())
}

/// The line of a log tail that says why the container ended: the last
/// Postfix `fatal:` line (from `fatal:` on: the rest is log framing), else
/// the last line. Bounded: it ends up in a condition message.
fn termination_cause(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines.iter().rev().find(|l| l.contains("fatal:")).or(lines.last())?;
    let text = line.find("fatal:").map_or(*line, |i| &line[i..]);
    let text = text.trim_end_matches(['"', '}', ',', ' ']);
    Some(text.chars().take(300).collect())
}

/// Why a pod is not running, if Kubernetes says (waiting reason, scheduling).
fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if reason != "ContainerCreating" && reason != "PodInitializing" {
                // A crash loop's own message only says "back-off"; the last
                // exit says why.
                if let Some(why) = last_exit(cs) {
                    return Some(format!("{reason}: {why}"));
                }
                return Some(
                    format!("{reason}: {}", w.message.clone().unwrap_or_default()).trim_end_matches(": ").to_string(),
                );
            }
        }
        if cs.restart_count > 2 {
            if let Some(why) = last_exit(cs) {
                return Some(format!("restarting: {why}"));
            }
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            return Some(format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_names_the_postfix_fatal_line() {
        let tail = "2026-11-23T12:00:00Z INFO agent: config installed\n\
                    postfix/master[7]: fatal: bind 10.250.0.15 port 587: Address already in use\n\
                    2026-11-23T12:00:01Z ERROR agent: postfix master exited unexpectedly (exit status: 1)\n";
        assert_eq!(
            termination_cause(tail).as_deref(),
            Some("fatal: bind 10.250.0.15 port 587: Address already in use")
        );
        assert_eq!(termination_cause("one\nlast words\n").as_deref(), Some("last words"));
        assert_eq!(termination_cause("\n"), None);
        let cs: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "mta", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": tail}}
        }))
        .unwrap();
        let pod = Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                container_statuses: Some(vec![cs]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_problem(&pod).as_deref(),
            Some(
                "CrashLoopBackOff: last exit 1 after 2 restarts: fatal: bind 10.250.0.15 port 587: Address already in use"
            )
        );
    }
}
