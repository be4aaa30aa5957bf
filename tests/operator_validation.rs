//! What the API server accepts, the operator accepts — on the real
//! kube-apiserver with the CRDs of crds/.
//!
//! - Every refusal of the renderer's validation (`validate.rs`) is paired
//!   with the API server's refusal of the same resource, naming the same
//!   field (or, for a rule on a whole list, the list the renderer's field
//!   is in). The few refusals CEL cannot express are listed apart, and the
//!   test checks they still are renderer-only.
//! - The examples, applied and read back, show no drift in any list: the
//!   API server defaults nothing inside list items (GitOps tools compare
//!   list items whole).

mod operator_support;

use operator_support::*;
use std::time::Duration;

use serde_json::{json, Value};

use sendfleet::core::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet::core::validate;

fn pool(ns: &str) -> Value {
    json!({
        "apiVersion": "sendfleet.io/v1alpha1", "kind": "SendingPool",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {"egressIPs": [{"name": "a", "address": "192.0.2.1", "heloName": "a.example.com"}]}
    })
}

fn policy(ns: &str) -> Value {
    json!({
        "apiVersion": "sendfleet.io/v1alpha1", "kind": "DomainPolicy",
        "metadata": {"name": "dp", "namespace": ns},
        "spec": {"domains": ["example.com"]}
    })
}

fn plan(ns: &str) -> Value {
    json!({
        "apiVersion": "sendfleet.io/v1alpha1", "kind": "WarmupPlan",
        "metadata": {"name": "w", "namespace": ns},
        "spec": {"steps": [{"day": 1, "dailyCap": 50}, {"day": 2, "dailyCap": 100}]}
    })
}

/// Set `value` at the JSON pointer `at` (creating objects on the way).
fn set(v: &mut Value, at: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = at.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            match cur {
                Value::Array(a) => a[p.parse::<usize>().unwrap()] = value,
                _ => {
                    cur[*p] = value;
                }
            }
            return;
        }
        cur = match cur {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => {
                if cur.get(*p).is_none() {
                    cur[*p] = json!({});
                }
                &mut cur[*p]
            }
        };
    }
}

/// The renderer's verdict on `obj`: `Err(message)` naming the fields.
fn renderer(obj: &Value) -> Result<(), String> {
    let r = match obj["kind"].as_str().unwrap() {
        "SendingPool" => {
            let p: SendingPool = serde_json::from_value(obj.clone()).map_err(|e| format!("parse: {e}"))?;
            validate::pool(&p).map(|_| ())
        }
        "DomainPolicy" => {
            let p: DomainPolicy = serde_json::from_value(obj.clone()).map_err(|e| format!("parse: {e}"))?;
            validate::domain_policy(&p).map(|_| ())
        }
        "WarmupPlan" => {
            let p: WarmupPlan = serde_json::from_value(obj.clone()).map_err(|e| format!("parse: {e}"))?;
            validate::warmup_plan(&p)
        }
        k => panic!("kind {k}"),
    };
    r.map_err(|e| e.to_string())
}

/// The API server's verdict on `obj` (a server-side dry run).
fn api_server(cp: &sendfleet_lab::ControlPlane, obj: &Value) -> Result<(), String> {
    cp.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &obj.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// (what, the resource spoiled, the field the renderer names, the field
/// the API server names: the same, or the list it lies in when the rule is
/// on the whole list and cannot point at one item).
type Case = (&'static str, Value, &'static str, &'static str);

fn with(base: Value, edits: &[(&str, Value)]) -> Value {
    let mut v = base;
    for (at, value) in edits {
        set(&mut v, at, value.clone());
    }
    v
}

fn cases(ns: &str) -> Vec<Case> {
    let ip = |name: &str, address: &str| json!({"name": name, "address": address, "heloName": format!("{name}.example.com")});
    let long = "p".repeat(40);
    vec![
        // SendingPool
        ("no egress IP", with(pool(ns), &[("/spec/egressIPs", json!([]))]), "spec.egressIPs", "spec.egressIPs"),
        (
            "loopback address",
            with(pool(ns), &[("/spec/egressIPs/0/address", json!("127.0.0.2"))]),
            "spec.egressIPs[0].address",
            "spec.egressIPs[0].address",
        ),
        (
            "link-local address",
            with(pool(ns), &[("/spec/egressIPs/0/address", json!("169.254.0.1"))]),
            "spec.egressIPs[0].address",
            "spec.egressIPs[0].address",
        ),
        (
            "address not canonical",
            with(pool(ns), &[("/spec/egressIPs/0/address", json!("2001:DB8::1"))]),
            "spec.egressIPs[0].address",
            "spec.egressIPs[0].address",
        ),
        (
            "address with an option",
            with(pool(ns), &[("/spec/egressIPs/0/address", json!("1.2.3.4 -o x=y"))]),
            "spec.egressIPs[0].address",
            "spec.egressIPs[0].address",
        ),
        (
            "duplicate address",
            with(pool(ns), &[("/spec/egressIPs", json!([ip("a", "192.0.2.1"), ip("b", "192.0.2.1")]))]),
            "spec.egressIPs[1].address",
            "spec.egressIPs",
        ),
        (
            "public address loopback",
            with(pool(ns), &[("/spec/egressIPs/0/publicAddress", json!("127.0.0.1"))]),
            "spec.egressIPs[0].publicAddress",
            "spec.egressIPs[0].publicAddress",
        ),
        (
            "public address not canonical",
            with(pool(ns), &[("/spec/egressIPs/0/publicAddress", json!("2001:DB8::7"))]),
            "spec.egressIPs[0].publicAddress",
            "spec.egressIPs[0].publicAddress",
        ),
        (
            "duplicate public address",
            with(
                pool(ns),
                &[(
                    "/spec/egressIPs",
                    json!([
            {"name": "a", "address": "10.0.0.1", "publicAddress": "203.0.113.1", "heloName": "a.example.com"},
            {"name": "b", "address": "10.0.0.2", "publicAddress": "203.0.113.1", "heloName": "b.example.com"}]),
                )],
            ),
            "spec.egressIPs[1].publicAddress",
            "spec.egressIPs",
        ),
        (
            "duplicate name",
            with(pool(ns), &[("/spec/egressIPs", json!([ip("a", "192.0.2.1"), ip("a", "192.0.2.2")]))]),
            "spec.egressIPs[1].name",
            "spec.egressIPs[1]",
        ),
        (
            "instance name not a label",
            with(pool(ns), &[("/spec/egressIPs/0/name", json!("A_1"))]),
            "spec.egressIPs[0].name",
            "spec.egressIPs[0].name",
        ),
        (
            "StatefulSet name too long",
            with(pool(ns), &[("/metadata/name", json!(long)), ("/spec/egressIPs/0/name", json!("x".repeat(30)))]),
            "spec.egressIPs[0].name",
            "spec.egressIPs",
        ),
        (
            "HELO name not a DNS name",
            with(pool(ns), &[("/spec/egressIPs/0/heloName", json!("a_b.example.com"))]),
            "spec.egressIPs[0].heloName",
            "spec.egressIPs[0].heloName",
        ),
        (
            "HELO name of one label",
            with(pool(ns), &[("/spec/egressIPs/0/heloName", json!("localhost"))]),
            "spec.egressIPs[0].heloName",
            "spec.egressIPs[0].heloName",
        ),
        (
            "node name with an empty label",
            with(pool(ns), &[("/spec/egressIPs/0/nodeName", json!("node..a"))]),
            "spec.egressIPs[0].nodeName",
            "spec.egressIPs[0].nodeName",
        ),
        (
            "Multus without attachment",
            with(pool(ns), &[("/spec/egress", json!({"mode": "Multus"}))]),
            "spec.egress.networkAttachment",
            "spec.egress.networkAttachment",
        ),
        (
            "attachment not a label",
            with(pool(ns), &[("/spec/egress", json!({"mode": "Multus", "networkAttachment": "A.b"}))]),
            "spec.egress.networkAttachment",
            "spec.egress.networkAttachment",
        ),
        ("image with a space", with(pool(ns), &[("/spec/image", json!("evil image"))]), "spec.image", "spec.image"),
        (
            "queue size in GB",
            with(pool(ns), &[("/spec/queue", json!({"size": "10GB"}))]),
            "spec.queue.size",
            "spec.queue.size",
        ),
        (
            "storage class with an empty label",
            with(pool(ns), &[("/spec/queue", json!({"storageClassName": "fast..ssd"}))]),
            "spec.queue.storageClassName",
            "spec.queue.storageClassName",
        ),
        (
            "submission port 0",
            with(pool(ns), &[("/spec/submission", json!({"port": 0}))]),
            "spec.submission.port",
            "spec.submission.port",
        ),
        (
            "CIDR with host bits",
            with(pool(ns), &[("/spec/submission", json!({"allowedCIDRs": ["10.0.0.1/8"]}))]),
            "spec.submission.allowedCIDRs[0]",
            "spec.submission.allowedCIDRs",
        ),
        (
            "open relay",
            with(pool(ns), &[("/spec/submission", json!({"allowedCIDRs": ["0.0.0.0/0"]}))]),
            "spec.submission.allowedCIDRs[0]",
            "spec.submission.allowedCIDRs",
        ),
        (
            "client CA names both",
            with(
                pool(ns),
                &[(
                    "/spec/submission",
                    json!({"clientCertificates": {"trustedCA": {"secretName": "a", "configMapName": "b"}, "serverCertificateSecretName": "tls"}}),
                )],
            ),
            "spec.submission.clientCertificates.trustedCA",
            "spec.submission.clientCertificates.trustedCA",
        ),
        (
            "server certificate Secret with an empty label",
            with(
                pool(ns),
                &[(
                    "/spec/submission",
                    json!({"clientCertificates": {"trustedCA": {"secretName": "a"}, "serverCertificateSecretName": "tls..x"}}),
                )],
            ),
            "spec.submission.clientCertificates.serverCertificateSecretName",
            "spec.submission.clientCertificates.serverCertificateSecretName",
        ),
        (
            "trusted CA names neither",
            with(pool(ns), &[("/spec/tls", json!({"trustedCA": {"key": "ca.crt"}}))]),
            "spec.tls.trustedCA",
            "spec.tls.trustedCA",
        ),
        (
            "trusted CA key of the kubelet",
            with(pool(ns), &[("/spec/tls", json!({"trustedCA": {"secretName": "ca", "key": "..data"}}))]),
            "spec.tls.trustedCA.key",
            "spec.tls.trustedCA.key",
        ),
        (
            "minimal backoff 0",
            with(pool(ns), &[("/spec/retry", json!({"minimalBackoff": "0s"}))]),
            "spec.retry.minimalBackoff",
            "spec.retry.minimalBackoff",
        ),
        (
            "duration without unit",
            with(pool(ns), &[("/spec/retry", json!({"queueRunDelay": "300"}))]),
            "spec.retry.queueRunDelay",
            "spec.retry.queueRunDelay",
        ),
        (
            "backoff order",
            with(pool(ns), &[("/spec/retry", json!({"minimalBackoff": "2h", "maximalBackoff": "1h"}))]),
            "spec.retry.minimalBackoff",
            "spec.retry.minimalBackoff",
        ),
        (
            "backoff beyond lifetime",
            with(
                pool(ns),
                &[(
                    "/spec/retry",
                    json!({"maximalBackoff": "2h", "maximalQueueLifetime": "1h", "bounceQueueLifetime": "1h"}),
                )],
            ),
            "spec.retry.maximalBackoff",
            "spec.retry.maximalBackoff",
        ),
        (
            "bounce lifetime beyond lifetime",
            with(pool(ns), &[("/spec/retry", json!({"maximalQueueLifetime": "1d", "bounceQueueLifetime": "2d"}))]),
            "spec.retry.bounceQueueLifetime",
            "spec.retry.bounceQueueLifetime",
        ),
        (
            "queue run delay beyond backoff",
            with(pool(ns), &[("/spec/retry", json!({"queueRunDelay": "2h", "maximalBackoff": "1h"}))]),
            "spec.retry.queueRunDelay",
            "spec.retry.queueRunDelay",
        ),
        (
            "DKIM Secret with an empty label",
            with(
                pool(ns),
                &[("/spec/dkim", json!({"secretName": "k..x", "selector": "s1", "domains": ["example.com"]}))],
            ),
            "spec.dkim.secretName",
            "spec.dkim.secretName",
        ),
        (
            "DKIM selector upper case",
            with(pool(ns), &[("/spec/dkim", json!({"secretName": "k", "selector": "S1", "domains": ["example.com"]}))]),
            "spec.dkim.selector",
            "spec.dkim.selector",
        ),
        (
            "DKIM domain not a name",
            with(pool(ns), &[("/spec/dkim", json!({"secretName": "k", "selector": "s1", "domains": ["example"]}))]),
            "spec.dkim.domains[0]",
            "spec.dkim.domains",
        ),
        (
            "DKIM without domains",
            with(pool(ns), &[("/spec/dkim", json!({"secretName": "k", "selector": "s1", "domains": []}))]),
            "spec.dkim.domains",
            "spec.dkim.domains",
        ),
        (
            "rate not dividing 60",
            with(pool(ns), &[("/spec/defaultThrottle", json!({"messagesPerMinute": 7}))]),
            "spec.defaultThrottle.messagesPerMinute",
            "spec.defaultThrottle.messagesPerMinute",
        ),
        (
            "no connections",
            with(pool(ns), &[("/spec/defaultThrottle", json!({"connections": 0}))]),
            "spec.defaultThrottle.connections",
            "spec.defaultThrottle.connections",
        ),
        (
            "too many processes",
            with(pool(ns), &[("/spec/defaultThrottle", json!({"processes": 500}))]),
            "spec.defaultThrottle.processes",
            "spec.defaultThrottle.processes",
        ),
        (
            "plan reference not a label",
            with(pool(ns), &[("/spec/warmupPlanRef", json!("New_IP"))]),
            "spec.warmupPlanRef",
            "spec.warmupPlanRef",
        ),
        (
            "DNSBL zone not a name",
            with(pool(ns), &[("/spec/reputation", json!({"zones": ["zen spamhaus org"]}))]),
            "spec.reputation.zones[0]",
            "spec.reputation.zones",
        ),
        (
            "DNSBL every 30s",
            with(pool(ns), &[("/spec/reputation", json!({"interval": "30s"}))]),
            "spec.reputation.interval",
            "spec.reputation.interval",
        ),
        (
            "cool-down without unit",
            with(pool(ns), &[("/spec/reputation", json!({"coolDown": "1"}))]),
            "spec.reputation.coolDown",
            "spec.reputation.coolDown",
        ),
        (
            "warn age after critical",
            with(pool(ns), &[("/spec/backlog", json!({"warnAge": "12h", "criticalAge": "4h"}))]),
            "spec.backlog.warnAge",
            "spec.backlog.warnAge",
        ),
        (
            "spam routed to itself",
            with(pool(ns), &[("/spec/spamRoute", json!({"pool": "p", "header": "X-Spam-Flag", "value": "YES"}))]),
            "spec.spamRoute.pool",
            "spec.spamRoute.pool",
        ),
        (
            "spam header with a space",
            with(pool(ns), &[("/spec/spamRoute", json!({"pool": "spam", "header": "X Spam", "value": "YES"}))]),
            "spec.spamRoute.header",
            "spec.spamRoute.header",
        ),
        (
            "spam value with a colon",
            with(pool(ns), &[("/spec/spamRoute", json!({"pool": "spam", "header": "X-Spam", "value": "a:b"}))]),
            "spec.spamRoute.value",
            "spec.spamRoute.value",
        ),
        (
            "pod label of the operator",
            with(pool(ns), &[("/spec/pod", json!({"labels": {"sendfleet.io/pool": "other"}}))]),
            "spec.pod.labels",
            "spec.pod.labels",
        ),
        (
            "pod annotation of the operator",
            with(pool(ns), &[("/spec/pod", json!({"annotations": {"k8s.v1.cni.cncf.io/networks": "[]"}}))]),
            "spec.pod.annotations",
            "spec.pod.annotations",
        ),
        (
            "priority class with an empty label",
            with(pool(ns), &[("/spec/pod", json!({"priorityClassName": "mail..high"}))]),
            "spec.pod.priorityClassName",
            "spec.pod.priorityClassName",
        ),
        (
            "pool name starting with a digit",
            with(pool(ns), &[("/metadata/name", json!("1p"))]),
            "metadata.name",
            "metadata.name",
        ),
        // DomainPolicy
        ("no domain", with(policy(ns), &[("/spec/domains", json!([]))]), "spec.domains", "spec.domains"),
        (
            "domain upper case",
            with(policy(ns), &[("/spec/domains", json!(["Example.com"]))]),
            "spec.domains[0]",
            "spec.domains",
        ),
        (
            "domain twice",
            with(policy(ns), &[("/spec/domains", json!(["example.com", "example.com"]))]),
            "spec.domains[1]",
            "spec.domains[1]",
        ),
        (
            "policy rate not dividing 60",
            with(policy(ns), &[("/spec/throttle", json!({"messagesPerMinute": 7}))]),
            "spec.throttle.messagesPerMinute",
            "spec.throttle.messagesPerMinute",
        ),
        (
            "slow-down rate not dividing 60",
            with(policy(ns), &[("/spec/slowDown", json!({"deferrals": 5, "messagesPerMinute": 8}))]),
            "spec.slowDown.messagesPerMinute",
            "spec.slowDown.messagesPerMinute",
        ),
        (
            "slow-down without deferrals",
            with(policy(ns), &[("/spec/slowDown", json!({"deferrals": 0, "messagesPerMinute": 10}))]),
            "spec.slowDown.deferrals",
            "spec.slowDown.deferrals",
        ),
        (
            "slow-down window 0",
            with(policy(ns), &[("/spec/slowDown", json!({"deferrals": 5, "messagesPerMinute": 10, "window": "0m"}))]),
            "spec.slowDown.window",
            "spec.slowDown.window",
        ),
        (
            "route to both",
            with(policy(ns), &[("/spec/route", json!({"relayHost": "relay.example.com", "pool": "other"}))]),
            "spec.route",
            "spec.route",
        ),
        (
            "relay host with a port",
            with(policy(ns), &[("/spec/route", json!({"relayHost": "relay.example.com:25"}))]),
            "spec.route.relayHost",
            "spec.route.relayHost",
        ),
        (
            "relay address not canonical",
            with(policy(ns), &[("/spec/route", json!({"relayHost": "2001:DB8::25"}))]),
            "spec.route.relayHost",
            "spec.route.relayHost",
        ),
        (
            "relay port 0",
            with(policy(ns), &[("/spec/route", json!({"relayHost": "relay.example.com", "port": 0}))]),
            "spec.route.port",
            "spec.route.port",
        ),
        (
            "route pool not a label",
            with(policy(ns), &[("/spec/route", json!({"pool": "Other"}))]),
            "spec.route.pool",
            "spec.route.pool",
        ),
        (
            "throttle on a pool route",
            with(
                policy(ns),
                &[("/spec/route", json!({"pool": "other"})), ("/spec/throttle", json!({"connections": 1}))],
            ),
            "spec.throttle",
            "spec.throttle",
        ),
        (
            "excluded IP not a name",
            with(policy(ns), &[("/spec/excludedIPs", json!(["MTA1"]))]),
            "spec.excludedIPs[0]",
            "spec.excludedIPs",
        ),
        (
            "no hard blocks",
            with(policy(ns), &[("/spec/autoExclusion", json!({"hardBlocks": 0}))]),
            "spec.autoExclusion.hardBlocks",
            "spec.autoExclusion.hardBlocks",
        ),
        (
            "exclusion for 0h",
            with(policy(ns), &[("/spec/autoExclusion", json!({"hardBlocks": 3, "duration": "0h"}))]),
            "spec.autoExclusion.duration",
            "spec.autoExclusion.duration",
        ),
        (
            "pause reason with a newline",
            with(policy(ns), &[("/spec/paused", json!("incident\nrelayhost = x"))]),
            "spec.paused",
            "spec.paused",
        ),
        (
            "policy name with a dot",
            with(policy(ns), &[("/metadata/name", json!("gmail.com"))]),
            "metadata.name",
            "metadata.name",
        ),
        // WarmupPlan
        (
            "steps and ramp",
            with(plan(ns), &[("/spec/ramp", json!({"start": 1, "growthPercent": 10, "ceiling": 10}))]),
            "spec",
            "spec",
        ),
        (
            "first step on day 2",
            with(plan(ns), &[("/spec/steps", json!([{"day": 2, "dailyCap": 5}]))]),
            "spec.steps[0].day",
            "spec.steps",
        ),
        (
            "days out of order",
            with(
                plan(ns),
                &[(
                    "/spec/steps",
                    json!([{"day": 1, "dailyCap": 5}, {"day": 3, "dailyCap": 9}, {"day": 2, "dailyCap": 7}]),
                )],
            ),
            "spec.steps[2].day",
            "spec.steps",
        ),
        (
            "the same step twice",
            with(plan(ns), &[("/spec/steps", json!([{"day": 1, "dailyCap": 5}, {"day": 1, "dailyCap": 5}]))]),
            "spec.steps[1].day",
            "spec.steps",
        ),
        (
            "daily cap 0",
            with(plan(ns), &[("/spec/steps/1/dailyCap", json!(0))]),
            "spec.steps[1].dailyCap",
            "spec.steps[1].dailyCap",
        ),
        (
            "ramp start above ceiling",
            with(
                plan(ns),
                &[
                    ("/spec/steps", Value::Null),
                    ("/spec/ramp", json!({"start": 100, "growthPercent": 10, "ceiling": 10})),
                ],
            ),
            "spec.ramp.start",
            "spec.ramp.start",
        ),
        (
            "ramp without growth",
            with(
                plan(ns),
                &[("/spec/steps", Value::Null), ("/spec/ramp", json!({"start": 1, "growthPercent": 0, "ceiling": 10}))],
            ),
            "spec.ramp.growthPercent",
            "spec.ramp.growthPercent",
        ),
        (
            "share over 100%",
            with(plan(ns), &[("/spec/domainShares", json!([{"domains": ["gmail.com"], "maxPercent": 130}]))]),
            "spec.domainShares[0].maxPercent",
            "spec.domainShares[0].maxPercent",
        ),
        (
            "share of a bad domain",
            with(plan(ns), &[("/spec/domainShares", json!([{"domains": ["gmail"], "maxPercent": 30}]))]),
            "spec.domainShares[0].domains[0]",
            "spec.domainShares[0].domains",
        ),
        ("pause on nothing", with(plan(ns), &[("/spec/pause", json!({"window": "1h"}))]), "spec.pause", "spec.pause"),
        (
            "pause window 0",
            with(plan(ns), &[("/spec/pause", json!({"maxBouncePercent": 5, "window": "0h"}))]),
            "spec.pause.window",
            "spec.pause.window",
        ),
    ]
}

/// Refusals CEL cannot express, with the reason; the test checks they are
/// the renderer's alone, so a new CEL rule moves them into [`cases`].
fn renderer_only(ns: &str) -> Vec<(&'static str, Value, &'static str)> {
    vec![
        // Membership in the IANA database the binary embeds (hundreds of
        // names): the pattern keeps every character out that could harm,
        // the operator reports the unknown name (`Accepted=False`).
        ("unknown time zone", with(plan(ns), &[("/spec/timeZone", json!("Asia/Tokio"))]), "spec.timeZone"),
    ]
}

/// `field` named as an error's field: at the start of the message, or
/// after a separator (`; `, ` is invalid: `, a line break).
fn names_field(err: &str, field: &str) -> bool {
    let needle = format!("{field}: ");
    err.match_indices(&needle).any(|(i, _)| i == 0 || matches!(err.as_bytes()[i - 1], b' ' | b'\n' | b'[' | b'"'))
}

#[test]
fn every_renderer_refusal_is_the_api_servers_refusal_of_the_same_field() {
    let cp = control_plane(false);
    let ns = cp.namespace("validation").unwrap();
    // The untouched resources pass both.
    for base in [pool(ns.name()), policy(ns.name()), plan(ns.name())] {
        renderer(&base).unwrap();
        api_server(cp, &base).unwrap();
    }
    let cases = cases(ns.name());
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = vec![];
    for (what, obj, renderer_field, api_field) in cases {
        assert!(renderer_field.starts_with(api_field), "{what}: {api_field} does not contain {renderer_field}");
        match renderer(&obj) {
            Ok(()) => failures.push(format!("{what}: the renderer accepts it")),
            Err(e) if !names_field(&e, renderer_field) => {
                failures.push(format!("{what}: the renderer should name {renderer_field}: {e}"))
            }
            Err(_) => {}
        }
        match api_server(cp, &obj) {
            Ok(()) => failures.push(format!("{what}: the API server accepts it")),
            Err(e) if !names_field(&e, api_field) => {
                failures.push(format!("{what}: the API server should name {api_field}: {e}"))
            }
            Err(_) => {}
        }
    }
    for (what, obj, field) in renderer_only(ns.name()) {
        let e = renderer(&obj).expect_err(what);
        assert!(names_field(&e, field), "{what}: {e}");
        assert_eq!(api_server(cp, &obj), Ok(()), "{what}: now refused by the API server too: move it to the table");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Every list under `path` in `want` equals the one at the same place in
/// `have`; every other field of `want` is in `have` as written (the API
/// server may add fields to objects: GitOps tools ignore those, not
/// changed list items).
fn drift(path: &str, want: &Value, have: &Value, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Array(_), _) if want != have => out.push(format!("{path}: file {want}, live {have}")),
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                match h.get(k) {
                    Some(hv) => drift(&format!("{path}.{k}"), v, hv, out),
                    None => out.push(format!("{path}.{k}: missing from the live object")),
                }
            }
        }
        _ if want != have => out.push(format!("{path}: file {want}, live {have}")),
        _ => {}
    }
}

#[test]
fn examples_read_back_without_drift() {
    let cp = control_plane(false);
    let ns = cp.namespace("drift").unwrap();
    let mut checked = 0;
    let mut lists = 0;
    for f in std::fs::read_dir(examples_dir()).unwrap() {
        let path = f.unwrap().path();
        let text = read(&path).replace("namespace: mail", &format!("namespace: {}", ns.name()));
        // The file as kubectl sends it (YAML to JSON, nothing defaulted);
        // a file of several documents is a List.
        let sent: Value = serde_json::from_str(
            &cp.kubectl_stdin(&["create", "--dry-run=client", "-o", "json", "-f", "-"], &text).unwrap(),
        )
        .unwrap();
        cp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &text).unwrap();
        let objects = if sent["kind"] == "List" { sent["items"].as_array().unwrap().clone() } else { vec![sent] };
        // sendfleet's kinds (a Namespace in examples/ is the API server's own).
        for want in objects.iter().filter(|o| o["apiVersion"].as_str().is_some_and(|v| v.starts_with("sendfleet.io/")))
        {
            let kind = want["kind"].as_str().unwrap().to_lowercase();
            let name = want["metadata"]["name"].as_str().unwrap();
            let have = get_json(cp, &[&kind, name, "-n", ns.name()]).unwrap();
            let mut found = vec![];
            drift("spec", &want["spec"], &have["spec"], &mut found);
            assert!(found.is_empty(), "{}: drift after apply:\n{}", path.display(), found.join("\n"));
            lists += want["spec"].to_string().matches('[').count();
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} examples");
    // The examples do hold lists of objects (egressIPs, steps, domainShares).
    assert!(lists >= 6, "only {lists} lists in the examples");
}

/// `spec.pod` reaches the StatefulSet the API server stores (so the API
/// server validated the pod template with the author's tolerations and
/// affinity), the operator's labels and the administrator's node selector
/// win, and an author's node selector that would replace the
/// administrator's is refused with `NodeNotAllowed`.
#[test]
fn pod_placement_fields_reach_the_stored_stateful_set_within_the_administrators_limits() {
    let cp = control_plane(false);
    let _op = Operator::start_with(
        cp,
        "op-pod-fields",
        &["--instance-node-selector", "sendfleet.io/egress=true", "--no-leader-election"],
    );
    let ns = cp.namespace("pod-fields").unwrap();
    let mut placed = pool(ns.name());
    set(&mut placed, "/metadata/name", json!("placed"));
    set(&mut placed, "/spec/egressIPs/0/address", json!("192.0.2.50"));
    set(
        &mut placed,
        "/spec/pod",
        json!({
            "labels": {"team": "mail"},
            "annotations": {"example.com/owner": "mail-team"},
            "nodeSelector": {"topology.kubernetes.io/zone": "a"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mail", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"sendfleet.io/pool": "placed"}}}}]}},
            "priorityClassName": "mail-high",
            "imagePullSecrets": [{"name": "registry"}],
        }),
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &placed.to_string()).unwrap();
    let sts = wait_for("the StatefulSet", Duration::from_secs(60), || {
        get_json(cp, &["statefulset", "placed-a", "-n", ns.name()])
    });
    let t = &sts["spec"]["template"];
    assert_eq!(t["metadata"]["labels"]["team"], "mail");
    assert_eq!(t["metadata"]["labels"]["sendfleet.io/instance"], "a");
    assert_eq!(t["metadata"]["annotations"]["example.com/owner"], "mail-team");
    let spec = &t["spec"];
    assert_eq!(spec["nodeSelector"]["sendfleet.io/egress"], "true", "{spec}");
    assert_eq!(spec["nodeSelector"]["topology.kubernetes.io/zone"], "a", "{spec}");
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert_eq!(spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"], 10);
    assert_eq!(spec["priorityClassName"], "mail-high");
    assert_eq!(spec["imagePullSecrets"][0]["name"], "registry");
    let requests = &spec["containers"][0]["resources"]["requests"];
    assert_eq!((requests["cpu"].as_str(), requests["memory"].as_str()), (Some("100m"), Some("256Mi")), "{spec}");

    let mut widening = pool(ns.name());
    set(&mut widening, "/metadata/name", json!("widening"));
    set(&mut widening, "/spec/egressIPs/0/address", json!("192.0.2.51"));
    set(&mut widening, "/spec/pod", json!({"nodeSelector": {"sendfleet.io/egress": "false"}}));
    cp.kubectl_stdin(&["apply", "-f", "-"], &widening.to_string()).unwrap();
    let (status, message) = wait_for("NodeNotAllowed", Duration::from_secs(60), || {
        let c = condition(cp, "sendingpool", "widening", ns.name(), "Ready")?;
        (c.1 == "NodeNotAllowed").then_some((c.0, c.2))
    });
    assert_eq!(status, "False");
    assert!(message.contains("spec.pod.nodeSelector") && message.contains("sendfleet.io/egress=true"), "{message}");
    assert!(get_json(cp, &["statefulset", "widening-a", "-n", ns.name()]).is_none(), "applied despite the refusal");
}
