//! Pool status from observations: pure functions of what the reconcile saw
//! (rendered instances, StatefulSets, pods, agent reports) and `now`.
//! Whoever observes a fact sets its condition; this module only derives.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use sendfleet_render::api::{InstanceStatus, SendingPool, SendingPoolStatus};
use sendfleet_render::conditions::{self, reasons, types, Observation, FALSE, TRUE, UNKNOWN};
use sendfleet_render::objects::{instance_object_name, LABEL_INSTANCE};
use sendfleet_render::render::RenderedPool;

/// What one reconcile observed.
pub struct Observed<'a> {
    pub rendered: Result<&'a RenderedPool, String>,
    pub statefulsets: &'a [StatefulSet],
    pub pods: &'a [Pod],
}

/// Why a pod is not running, if Kubernetes says (waiting reason, scheduling).
fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if reason != "ContainerCreating" && reason != "PodInitializing" {
                return Some(
                    format!("{reason}: {}", w.message.clone().unwrap_or_default()).trim_end_matches(": ").to_string(),
                );
            }
        }
        if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            if cs.restart_count > 2 {
                return Some(format!(
                    "restarting ({} restarts), last exit {}: {}",
                    cs.restart_count,
                    t.exit_code,
                    t.reason.clone().unwrap_or_default()
                ));
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
            let mut instances = vec![];
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
                let problem = pods.get(inst.name.as_str()).and_then(|p| pod_problem(p));
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
                if !updated {
                    rolling.push(inst.name.clone());
                }
                if let Some(p) = &problem {
                    failing.push(format!("{}: {p}", inst.name));
                }
                let prev = old.instances.iter().find(|i| i.name == inst.name);
                instances.push(InstanceStatus {
                    name: inst.name.clone(),
                    address: inst.address.clone(),
                    phase: Some(phase.into()),
                    message: problem,
                    weight: inst.weight,
                    desired_config_hash: Some(inst.config_hash.clone()),
                    applied_config_hash: prev.and_then(|p| p.applied_config_hash.clone()),
                    warmup: prev.and_then(|p| p.warmup.clone()),
                    listings: prev.map(|p| p.listings.clone()).unwrap_or_default(),
                    quarantine: inst.policy.this_instance().and_then(|i| i.out_of_rotation_reason.clone()),
                    queue: prev.and_then(|p| p.queue.clone()),
                    deliveries: prev.and_then(|p| p.deliveries.clone()),
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
            observations.push(if rolling.is_empty() {
                Observation::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::CONVERGED,
                    "every instance runs the current template",
                )
            } else {
                Observation::new(
                    types::PROGRESSING,
                    TRUE,
                    reasons::ROLLING_OUT,
                    format!("rolling out: {}", rolling.join(", ")),
                )
            });
            observations.push(if failing.is_empty() {
                Observation::new(types::DEGRADED, FALSE, reasons::AS_EXPECTED, "no instance is failing")
            } else {
                Observation::new(types::DEGRADED, TRUE, reasons::INSTANCE_FAILING, failing.join("; "))
            });
            observations.push(match &pool.spec.warmup_plan_ref {
                None => Observation::new(types::WARMING_UP, FALSE, reasons::NO_PLAN, "the pool has no warm-up plan"),
                Some(plan) => {
                    let warming: Vec<&str> = rp
                        .instances
                        .iter()
                        .filter(|i| i.policy.this_instance().is_some_and(|p| p.daily_cap.is_some()))
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
    // Listed, QueueBacklog and AuthenticationValid are set by the checks
    // that observe them; until then they are Unknown.
    for t in [types::LISTED, types::QUEUE_BACKLOG, types::AUTHENTICATION_VALID] {
        if !status.conditions.iter().any(|c| c.type_ == t) {
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
