//! Pool status from observations: pure functions of what the reconcile saw
//! (rendered instances, StatefulSets, pods, agent reports) and `now`.
//! Whoever observes a fact sets its condition; this module only derives.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use sendfleet_render::api::{
    DeliveryCounts, InstanceStatus, InstanceWarmup, QueueSummary, SendingPool, SendingPoolStatus,
};
use sendfleet_render::conditions::{self, reasons, types, Observation, FALSE, TRUE, UNKNOWN};
use sendfleet_render::contract::AgentStatus;
use sendfleet_render::objects::{instance_object_name, LABEL_INSTANCE};
use sendfleet_render::render::RenderedPool;

/// What one reconcile observed.
pub struct Observed<'a> {
    pub rendered: Result<&'a RenderedPool, String>,
    pub statefulsets: &'a [StatefulSet],
    pub pods: &'a [Pod],
    /// Each polled instance's agent report (or why it could not be read).
    pub agents: &'a BTreeMap<String, Result<AgentStatus, String>>,
    /// DNSBL and authentication findings, once the pool was swept.
    pub reputation: Option<&'a super::reputation::Findings>,
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

/// An instance's warm-up progress as the pool status shows it; `None` once
/// the IP has finished its plan.
fn instance_warmup(w: &sendfleet_render::contract::WarmupProgress) -> Option<InstanceWarmup> {
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
fn last_exit(cs: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<String> {
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

/// Derive the new status. Returns it and the observations whose status
/// flipped (each worth an Event).
pub fn derive(pool: &SendingPool, obs: &Observed<'_>, now: Timestamp) -> (SendingPoolStatus, Vec<Observation>) {
    let old = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let mut status =
        SendingPoolStatus { observed_generation: generation, conditions: old.conditions.clone(), ..old.clone() };
    let mut observations = vec![];

    match &obs.rendered {
        Err(message) => {
            observations.push(Observation::new(types::READY, FALSE, reasons::INVALID_SPEC, message.clone()));
            observations.push(Observation::new(types::PROGRESSING, FALSE, reasons::INVALID_SPEC, message.clone()));
            observations.push(Observation::new(types::DEGRADED, TRUE, reasons::INVALID_SPEC, message.clone()));
        }
        Ok(rp) => {
            let sts: BTreeMap<&str, &StatefulSet> =
                obs.statefulsets.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s))).collect();
            let pods: BTreeMap<&str, &Pod> = obs
                .pods
                .iter()
                .filter_map(|p| Some((p.metadata.labels.as_ref()?.get(LABEL_INSTANCE)?.as_str(), p)))
                .collect();
            let mut ready = 0;
            let mut rolling = vec![];
            let mut failing = vec![];
            let mut pending_config = vec![];
            let mut instances = vec![];
            let (mut warn, mut critical, mut reported) = (vec![], vec![], 0);
            let mut deferred_total = 0;
            let mut oldest: Option<u64> = None;
            for inst in &rp.instances {
                let name = instance_object_name(&pool_name, &inst.name);
                let s = sts.get(name.as_str());
                let st = s.and_then(|s| s.status.as_ref());
                let is_ready = st.and_then(|st| st.ready_replicas).unwrap_or(0) >= 1;
                let updated = st.is_some_and(|st| {
                    st.observed_generation >= s.and_then(|s| s.metadata.generation)
                        && st.current_revision.is_some()
                        && st.current_revision == st.update_revision
                });
                let agent = obs.agents.get(&inst.name).and_then(|r| r.as_ref().ok());
                let refused = agent
                    .and_then(|a| a.config.refused.as_ref())
                    .filter(|r| r.hash == inst.config_hash)
                    .map(|r| format!("config {} refused by the agent: {}: {}", r.hash, r.reason, r.message));
                let problem = pods.get(inst.name.as_str()).and_then(|p| pod_problem(p)).or(refused);
                let phase = if is_ready {
                    ready += 1;
                    "Ready"
                } else if problem.is_some() {
                    "Failed"
                } else if s.is_none() {
                    "Pending"
                } else {
                    "Starting"
                };
                // A rollout is finished when the instance runs the current
                // template *and* is ready; a pod stuck pending is not done.
                if !updated || !is_ready {
                    rolling.push(inst.name.clone());
                }
                if let Some(p) = &problem {
                    failing.push(format!("{}: {p}", inst.name));
                }
                let prev = old.instances.iter().find(|i| i.name == inst.name);
                let applied = agent
                    .and_then(|a| a.config.loaded_hash.clone())
                    .or_else(|| prev.and_then(|p| p.applied_config_hash.clone()));
                if is_ready && applied.as_deref() != Some(inst.config_hash.as_str()) {
                    pending_config.push(inst.name.clone());
                }
                let queue = agent.map(|a| {
                    let q = &a.queue;
                    QueueSummary {
                        active: q.messages.get("active").copied().unwrap_or(0),
                        deferred: q.messages.get("deferred").copied().unwrap_or(0),
                        older_than_warn: q.older_than_warn,
                        older_than_critical: q.older_than_critical,
                        oldest_age_seconds: q.oldest_age_seconds.unwrap_or(0),
                    }
                });
                if let Some(q) = queue.as_ref().or(prev.and_then(|p| p.queue.as_ref())) {
                    reported += 1;
                    deferred_total += q.deferred;
                    if q.oldest_age_seconds > 0 {
                        oldest = Some(oldest.unwrap_or(0).max(q.oldest_age_seconds));
                    }
                    if q.older_than_critical > 0 {
                        critical.push(format!("{} ({})", inst.name, q.older_than_critical));
                    } else if q.older_than_warn > 0 {
                        warn.push(format!("{} ({})", inst.name, q.older_than_warn));
                    }
                }
                let deliveries = agent.map(|a| {
                    let c = &a.counters.since_start;
                    DeliveryCounts { sent: c.sent, deferred: c.deferred, bounced: c.bounced, expired: c.expired }
                });
                instances.push(InstanceStatus {
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
                    listings: match obs.reputation {
                        Some(r) => r.listings.get(&inst.name).cloned().unwrap_or_default(),
                        None => prev.map(|p| p.listings.clone()).unwrap_or_default(),
                    },
                    quarantine: inst.policy.this_instance().and_then(|i| i.out_of_rotation_reason.clone()),
                    queue: queue.or_else(|| prev.and_then(|p| p.queue.clone())),
                    deliveries: deliveries.or_else(|| prev.and_then(|p| p.deliveries.clone())),
                });
            }
            let total = rp.instances.len();
            status.ready_instances = Some(format!("{ready}/{total}"));
            status.instances = instances;
            failing.sort();
            rolling.sort();
            observations.push(if ready == total {
                Observation::new(
                    types::READY,
                    TRUE,
                    reasons::INSTANCES_READY,
                    format!("{ready}/{total} instances ready"),
                )
            } else {
                Observation::new(
                    types::READY,
                    FALSE,
                    reasons::INSTANCES_NOT_READY,
                    format!("{ready}/{total} instances ready"),
                )
            });
            pending_config.sort();
            observations.push(if !rolling.is_empty() {
                Observation::new(
                    types::PROGRESSING,
                    TRUE,
                    reasons::ROLLING_OUT,
                    format!("rolling out: {}", rolling.join(", ")),
                )
            } else if !pending_config.is_empty() {
                Observation::new(
                    types::PROGRESSING,
                    TRUE,
                    reasons::CONFIG_PENDING,
                    format!("configuration not yet loaded by: {}", pending_config.join(", ")),
                )
            } else {
                Observation::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::CONVERGED,
                    "every instance runs the rendered configuration",
                )
            });
            status.deferred_messages = (reported > 0).then_some(deferred_total);
            status.oldest_queued_age = oldest.map(human_age);
            if reported > 0 {
                let (critical_age, warn_age) = (&pool.spec.backlog.critical_age, &pool.spec.backlog.warn_age);
                observations.push(if !critical.is_empty() {
                    let m = format!("mail older than {critical_age}: {}", critical.join(", "));
                    Observation::new(types::QUEUE_BACKLOG, TRUE, reasons::BACKLOG_CRITICAL, m)
                } else if !warn.is_empty() {
                    let m = format!("mail older than {warn_age}: {}", warn.join(", "));
                    Observation::new(types::QUEUE_BACKLOG, TRUE, reasons::BACKLOG_WARNING, m)
                } else {
                    Observation::new(
                        types::QUEUE_BACKLOG,
                        FALSE,
                        reasons::NO_BACKLOG,
                        format!("no mail older than {warn_age}"),
                    )
                });
            }
            observations.push(if failing.is_empty() {
                Observation::new(types::DEGRADED, FALSE, reasons::AS_EXPECTED, "no instance is failing")
            } else {
                Observation::new(types::DEGRADED, TRUE, reasons::INSTANCE_FAILING, failing.join("; "))
            });
            observations.push(match &pool.spec.warmup_plan_ref {
                None => Observation::new(types::WARMING_UP, FALSE, reasons::NO_PLAN, "the pool has no warm-up plan"),
                Some(plan) => {
                    // The agents know each IP's step; until one reports,
                    // the rendered policy's cap (day 1 for a new IP) says.
                    let warming: Vec<&str> = rp
                        .instances
                        .iter()
                        .filter(|i| match obs.agents.get(&i.name).and_then(|r| r.as_ref().ok()) {
                            Some(a) => a.adaptive.warmup.as_ref().is_some_and(|w| w.daily_cap.is_some()),
                            None => i.policy.this_instance().is_some_and(|p| p.daily_cap.is_some()),
                        })
                        .map(|i| i.name.as_str())
                        .collect();
                    status.warmup = Some(format!("{plan}: {}/{} warming", warming.len(), total));
                    if warming.is_empty() {
                        Observation::new(
                            types::WARMING_UP,
                            FALSE,
                            reasons::WARM,
                            format!("every IP has finished plan {plan}"),
                        )
                    } else {
                        Observation::new(
                            types::WARMING_UP,
                            TRUE,
                            reasons::WARMING,
                            format!("warming under plan {plan}: {}", warming.join(", ")),
                        )
                    }
                }
            });
        }
    }
    if let Some(r) = obs.reputation {
        observations.extend(r.conditions.iter().cloned());
        if obs.rendered.is_ok() {
            status.listed_instances = Some(r.listings.values().filter(|l| !l.is_empty()).count() as u32);
        }
    }
    // Listed, QueueBacklog and AuthenticationValid are set by the checks
    // that observe them; until then they are Unknown.
    for t in [types::LISTED, types::QUEUE_BACKLOG, types::AUTHENTICATION_VALID] {
        if !status.conditions.iter().any(|c| c.type_ == t) && !observations.iter().any(|o| o.type_ == t) {
            observations.push(Observation::new(t, UNKNOWN, reasons::NOT_OBSERVED, "not observed yet"));
        }
    }
    let mut flipped = vec![];
    for o in observations {
        if conditions::set(&mut status.conditions, &o, generation, now) {
            flipped.push(o);
        }
    }
    (status, flipped)
}

/// Whether writing `new` would change anything beyond timestamps.
pub fn changed(old: Option<&SendingPoolStatus>, new: &SendingPoolStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &SendingPoolStatus| SendingPoolStatus { conditions: vec![], ..s.clone() };
    strip(old) != strip(new) || !conditions::eq_ignoring_time(&old.conditions, &new.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use kube::api::ObjectMeta;
    use sendfleet_render::render::{render_pool, Observed as RenderObserved, PoolInput, Settings};

    fn pool() -> SendingPool {
        serde_yaml::from_str(
            "apiVersion: sendfleet.io/v1alpha1\nkind: SendingPool\nmetadata: {name: p, namespace: ns, generation: 3}\nspec:\n  egressIPs:\n    - {name: a, address: 192.0.2.1, heloName: a.example.com}\n    - {name: b, address: 192.0.2.2, heloName: b.example.com}\n",
        )
        .unwrap()
    }

    fn ready_sts(name: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta { name: Some(name.into()), generation: Some(1), ..Default::default() },
            status: Some(StatefulSetStatus {
                ready_replicas: Some(1),
                observed_generation: Some(1),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

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
        let cs: k8s_openapi::api::core::v1::ContainerStatus = serde_json::from_value(serde_json::json!({
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

    #[test]
    fn agent_reports_drive_progressing_and_backlog() {
        let pool = pool();
        let pools = vec![pool.clone()];
        let obs = RenderObserved::default();
        let input = PoolInput { pool: &pool, policies: &[], plan: None, pools: &pools, observed: &obs };
        let rp = render_pool(input, &Settings::default()).unwrap();
        let sts = vec![ready_sts("p-a"), ready_sts("p-b")];
        let mut a = AgentStatus::default();
        a.config.loaded_hash = Some(rp.instances[0].config_hash.clone());
        a.queue.messages.insert("deferred".into(), 7);
        a.queue.older_than_warn = 2;
        a.queue.oldest_age_seconds = Some(5 * 3600);
        a.counters.since_start.sent = 40;
        let mut b = AgentStatus::default();
        b.config.loaded_hash = Some("stale".into());
        b.queue.older_than_warn = 1;
        b.queue.older_than_critical = 1;
        b.queue.oldest_age_seconds = Some(13 * 3600);
        let agents: BTreeMap<String, Result<AgentStatus, String>> =
            [("a".to_string(), Ok(a)), ("b".to_string(), Ok(b))].into();
        let o = Observed { rendered: Ok(&rp), statefulsets: &sts, pods: &[], agents: &agents, reputation: None };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let (status, flipped) = derive(&pool, &o, now);
        let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(cond(types::READY).status, TRUE);
        assert_eq!(cond(types::PROGRESSING).reason, reasons::CONFIG_PENDING);
        assert!(cond(types::PROGRESSING).message.contains('b') && !cond(types::PROGRESSING).message.contains("a,"));
        assert_eq!(cond(types::QUEUE_BACKLOG).reason, reasons::BACKLOG_CRITICAL);
        assert!(cond(types::QUEUE_BACKLOG).message.contains("b (1)"), "{}", cond(types::QUEUE_BACKLOG).message);
        assert_eq!(status.deferred_messages, Some(7));
        assert_eq!(status.oldest_queued_age.as_deref(), Some("13h0m"));
        assert_eq!(status.instances[0].deliveries.as_ref().unwrap().sent, 40);
        assert_eq!(cond(types::READY).observed_generation, Some(3));
        assert!(!flipped.is_empty());
        // Re-deriving from the written status changes nothing: no write.
        let written = SendingPool { status: Some(status.clone()), ..pool.clone() };
        let later: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let (again, flipped) = derive(&written, &o, later);
        assert!(!changed(Some(&status), &again));
        assert!(flipped.is_empty());
    }
}
