//! `sendfleet crd`: the CRDs, generated from the Rust types.

use sendfleet_render::api::crds;

/// Every CRD as a multi-document YAML stream, in a stable order.
pub fn all_crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, crd) in crds().iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// Each CRD as (file name, YAML), for the files in `crds/`.
pub fn crd_files() -> anyhow::Result<Vec<(String, String)>> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            // Each file opens its own document: `helm show crds` joins the
            // chart's crds/ files without separators, and kubectl would read
            // the joined stream as one CRD.
            Ok((format!("{name}.yaml"), format!("---\n{}", serde_yaml::to_string(crd)?)))
        })
        .collect()
}
