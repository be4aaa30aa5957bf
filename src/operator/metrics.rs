//! The operator's own metrics (not the fleet's: those come from agents),
//! and what only the operator knows about an instance: its DNSBL listings
//! and whether it runs the configuration rendered for it.
//! One registry per process, owned by the context — no global state.
//!
//! Label names never collide with the target labels Prometheus adds
//! (`namespace`, `instance`, `pod`, `job`, `service`): a pool's namespace is
//! `pool_namespace`, an instance is `egress_ip` (the `egressIPs[].name`,
//! as in the agents' target labels, docs/MONITORING.md), so the alert
//! rules can join the two.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Fixed error category (see `Error::category`).
    pub category: &'static str,
}

/// One egress IP in one DNSBL zone. Bounded by configuration: pools x IPs x
/// zones, all from specs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListingLabels {
    pub pool_namespace: String,
    pub pool: String,
    pub egress_ip: String,
    pub zone: String,
}

/// One instance (egress IP) of one pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub pool_namespace: String,
    pub pool: String,
    pub egress_ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub listed: Family<ListingLabels, Gauge>,
    pub instance_ready: Family<InstanceLabels, Gauge>,
    pub instance_config_current: Family<InstanceLabels, Gauge>,
    pub registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sendfleet_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        let writes = Family::<WriteLabels, Counter>::default();
        let listed = Family::<ListingLabels, Gauge>::default();
        registry.register("reconciles", "SendingPool reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed (any controller), by error category",
            errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time from reconcile start to end",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register("api_writes", "Mutating API requests made, by object kind", writes.clone());
        registry.register(
            "dnsbl_listed",
            "1 while the egress IP is listed in the DNSBL zone, 0 once seen clean there",
            listed.clone(),
        );
        let instance_ready = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "instance_ready",
            "1 while the instance's pod is Ready (as of the pool's last reconcile)",
            instance_ready.clone(),
        );
        let instance_config_current = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "instance_config_current",
            "1 when the instance's agent reports the configuration hash rendered for it, 0 when it runs another or has not reported",
            instance_config_current.clone(),
        );
        Metrics { reconciles, errors, duration, writes, listed, instance_ready, instance_config_current, registry }
    }
}

impl Metrics {
    /// A finished SendingPool reconcile: its duration, and its error's
    /// category if it failed.
    pub fn observe(&self, took: Duration, error: Option<&'static str>) {
        self.duration.observe(took.as_secs_f64());
        if let Some(category) = error {
            self.failed(category);
        }
    }

    /// A failed reconcile of any controller, by error category.
    pub fn failed(&self, category: &'static str) {
        self.errors.get_or_create(&ErrorLabels { category }).inc();
    }

    /// Set the listing gauge of every egress IP of `pool` in every zone the
    /// last sweep checked.
    pub fn record_listings(
        &self,
        namespace: &str,
        name: &str,
        pool: &sendfleet_render::api::SendingPool,
        findings: &super::reputation::Findings,
    ) {
        for ip in &pool.spec.egress_ips {
            let listed = findings.listings.get(&ip.name);
            for zone in &findings.zones {
                let labels = ListingLabels {
                    pool_namespace: namespace.into(),
                    pool: name.into(),
                    egress_ip: ip.name.clone(),
                    zone: zone.clone(),
                };
                let in_zone = listed.is_some_and(|l| l.iter().any(|x| &x.zone == zone));
                self.listed.get_or_create(&labels).set(i64::from(in_zone));
            }
        }
    }

    /// Set each instance's readiness and whether it runs its rendered
    /// configuration, from the pool's instance rows.
    pub fn record_instances<'a>(
        &self,
        namespace: &str,
        name: &str,
        rows: impl IntoIterator<Item = (&'a sendfleet_render::api::InstanceStatus, bool)>,
    ) {
        for (row, ready) in rows {
            let labels =
                InstanceLabels { pool_namespace: namespace.into(), pool: name.into(), egress_ip: row.name.clone() };
            let current = row.applied_config_hash.is_some() && row.applied_config_hash == row.desired_config_hash;
            self.instance_ready.get_or_create(&labels).set(i64::from(ready));
            self.instance_config_current.get_or_create(&labels).set(i64::from(current));
        }
    }

    pub fn wrote(&self, kind: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind }).inc();
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("metrics encode");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_their_names() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.wrote("ConfigMap");
        let text = m.encode();
        assert!(text.contains("sendfleet_operator_reconciles_total 1"), "{text}");
        assert!(text.contains("sendfleet_operator_api_writes_total{kind=\"ConfigMap\"} 1"), "{text}");
    }

    #[test]
    fn instance_labels_do_not_collide_with_target_labels() {
        let m = Metrics::default();
        let row = |name: &str, applied: Option<&str>| sendfleet_render::api::InstanceStatus {
            name: name.into(),
            desired_config_hash: Some("h1".into()),
            applied_config_hash: applied.map(str::to_string),
            ..Default::default()
        };
        let rows = [row("a", Some("h1")), row("b", Some("h0")), row("c", None)];
        m.record_instances("mail", "bulk", rows.iter().map(|r| (r, r.name != "c")));
        let text = m.encode();
        for want in [
            "sendfleet_operator_instance_config_current{pool_namespace=\"mail\",pool=\"bulk\",egress_ip=\"a\"} 1",
            "sendfleet_operator_instance_config_current{pool_namespace=\"mail\",pool=\"bulk\",egress_ip=\"b\"} 0",
            "sendfleet_operator_instance_config_current{pool_namespace=\"mail\",pool=\"bulk\",egress_ip=\"c\"} 0",
            "sendfleet_operator_instance_ready{pool_namespace=\"mail\",pool=\"bulk\",egress_ip=\"a\"} 1",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
        for target_label in ["namespace=", "instance=", "{pod=", "job="] {
            assert!(!text.contains(&format!("{{{target_label}")), "{target_label} would be renamed exported_*\n{text}");
            assert!(!text.contains(&format!(",{target_label}")), "{target_label} would be renamed exported_*\n{text}");
        }
    }
}
