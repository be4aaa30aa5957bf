//! crds/ is generated from the Rust types and must stay in sync; the CRDs
//! must be structural (every field typed) and carry the CEL rules.
//! Regenerate with `make crds`.

use std::path::Path;

use sendfleet::cli::crd::crd_files;

#[test]
fn crds_directory_is_in_sync_with_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = crd_files().unwrap();
    assert_eq!(files.len(), 4);
    for (name, want) in files {
        let have =
            std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|_| panic!("crds/{name} missing: run `make crds`"));
        assert!(have == want, "crds/{name} is out of date with the Rust types: run `make crds` and commit the result");
    }
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert_eq!(on_disk, 4, "crds/ holds a stale extra file");
}

/// Every schema node is typed (or explicitly int-or-string / preserved).
fn assert_structural(path: &str, v: &serde_json::Value) {
    let obj = v.as_object().unwrap_or_else(|| panic!("{path}: not an object"));
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true));
    assert!(typed, "{path} has no type: {v}");
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(key) {
            // Structural schemas allow these only as value validations
            // without types of their own.
            for (i, s) in list.as_array().unwrap().iter().enumerate() {
                assert!(s.get("type").is_none(), "{path}.{key}[{i}] declares a type");
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, s) in props {
            assert_structural(&format!("{path}.{k}"), s);
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        assert_structural(&format!("{path}{{}}"), ap);
    }
}

#[test]
fn crds_are_structural_and_carry_cel_rules() {
    for crd in sendfleet::core::api::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let kind = crd.spec.names.kind.clone();
        assert_eq!(crd.spec.group, "sendfleet.io");
        // The address claim is the one cluster-wide lock: cluster-scoped,
        // no status (its existence is the fact).
        let claim = kind == "EgressAddressClaim";
        assert_eq!(crd.spec.scope, if claim { "Cluster" } else { "Namespaced" }, "{kind}");
        let version = &v["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(claim || version["subresources"]["status"].is_object(), "{kind}: no status subresource");
        assert!(
            version["additionalPrinterColumns"].as_array().is_some_and(|c| !c.is_empty()),
            "{kind}: no printer columns"
        );
        let schema = &version["schema"]["openAPIV3Schema"];
        assert_structural(&kind, schema);
        let text = v.to_string();
        let rules = text.matches("x-kubernetes-validations").count();
        assert!(rules >= 2, "{kind}: expected CEL rules, found {rules}");
    }
    let pool = serde_json::to_string(&sendfleet::core::api::crds()[0]).unwrap();
    for rule in
        ["isIP(self) && ip.isCanonical(self)", "b.address == a.address", "minimalBackoff", "metadata.name.matches"]
    {
        assert!(pool.contains(rule), "SendingPool CRD lacks rule {rule}");
    }
    // An address an EndpointSlice refuses is refused at admission.
    assert!(pool.contains(sendfleet::core::api::CEL_EGRESS_ADDRESS), "SendingPool CRD lacks the egress address rule");
    let claim = serde_json::to_string(&sendfleet::core::api::crds()[3]).unwrap();
    assert!(claim.contains("self == oldSelf"), "a claim's spec must be immutable");
}

/// Every scalar `default` in a schema, with the path and the node's description.
fn defaults_in(path: &str, v: &serde_json::Value, out: &mut Vec<(String, String, String)>) {
    let Some(obj) = v.as_object() else { return };
    if let Some(d) = obj.get("default").filter(|d| d.is_string() || d.is_number()) {
        let text = d.as_str().map_or_else(|| d.to_string(), str::to_string);
        let description = obj.get("description").and_then(|d| d.as_str()).unwrap_or_default().to_string();
        out.push((path.to_string(), text, description));
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, s) in props {
            defaults_in(&format!("{path}.{k}"), s, out);
        }
    }
    if let Some(items) = obj.get("items") {
        defaults_in(&format!("{path}[]"), items, out);
    }
}

/// The defaults come from `api::defaults` through the serde default
/// functions; the descriptions are prose written beside the field. A
/// description that names a default must name the one the schema applies.
#[test]
fn documented_defaults_match_the_schema_defaults() {
    let mut found = vec![];
    for crd in sendfleet::core::api::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        defaults_in(&crd.spec.names.kind, &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"], &mut found);
    }
    let mut checked = 0;
    for (path, default, description) in &found {
        // The last "Default X" of the description ("Default `may`." too).
        let plain = description.replace('`', "");
        if let Some(at) = plain.rfind("Default ") {
            let said = &plain[at + "Default ".len()..];
            assert!(
                said.starts_with(default.as_str()),
                "{path}: description says \"Default {said}\", the schema applies {default:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} documented defaults found: {found:?}");
}

/// Paths of the `default`s inside list items under `path`.
fn defaults_in_list_items(path: &str, v: &serde_json::Value, in_item: bool, out: &mut Vec<String>) {
    let Some(obj) = v.as_object() else { return };
    if in_item && obj.contains_key("default") {
        out.push(path.to_string());
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, s) in props {
            defaults_in_list_items(&format!("{path}.{k}"), s, in_item, out);
        }
    }
    if let Some(items) = obj.get("items") {
        defaults_in_list_items(&format!("{path}[]"), items, true, out);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        defaults_in_list_items(&format!("{path}{{}}"), ap, in_item, out);
    }
}

/// The API server fills a schema default into every list item that lacks
/// the field; GitOps tools compare list items whole, so the live object
/// differs from the file forever (Argo CD: OutOfSync). Defaults inside list
/// items are the operator's (`api::defaults`), never the schema's.
/// `operator_validation::examples_read_back_without_drift` proves it on
/// the real API server.
#[test]
fn no_spec_field_inside_a_list_item_has_a_schema_default() {
    for crd in sendfleet::core::api::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let spec = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut found = vec![];
        defaults_in_list_items(&format!("{}.spec", crd.spec.names.kind), spec, false, &mut found);
        assert!(found.is_empty(), "schema defaults inside list items: {found:?}");
    }
}
