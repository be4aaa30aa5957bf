//! Label selector evaluation (which DomainPolicies apply to which pools).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`, with Kubernetes
/// semantics: every `matchLabels` pair and every `matchExpressions` entry
/// must hold; an empty selector selects everything. An unknown operator
/// selects nothing (fail closed).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "bulk".to_string())].into();
        assert!(matches(&LabelSelector::default(), &labels));
        let ml = LabelSelector {
            match_labels: Some([("tier".to_string(), "bulk".to_string())].into()),
            ..Default::default()
        };
        assert!(matches(&ml, &labels));
        assert!(!matches(&ml, &BTreeMap::new()));
        let expr = |op: &str, vals: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(matches(&expr("In", &["bulk", "tx"]), &labels));
        assert!(!matches(&expr("NotIn", &["bulk"]), &labels));
        assert!(matches(&expr("Exists", &[]), &labels));
        assert!(!matches(&expr("DoesNotExist", &[]), &labels));
        assert!(!matches(&expr("Bogus", &[]), &labels));
    }
}
