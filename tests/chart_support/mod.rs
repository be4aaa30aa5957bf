//! Chart packages for the install and upgrade tests (tests/chart.rs,
//! tests/e2e_install.rs): the chart as `helm package` ships it, an older
//! release of it taken from git history, and a later one whose CRDs differ,
//! so an upgrade has something to upgrade.
//!
//! Never: modify charts/ in the repository (everything is built in the
//! caller's temp dir).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first released chart (0.1.0 from the commit that added it): CRDs
/// without the `EgressAddressClaim` kind and with older schemas; its
/// examples are resources written against those CRDs.
pub const OLD_CHART_COMMIT: &str = "8cefe52";

/// The printer column the "changed" chart's SendingPool CRD adds; an
/// upgraded CRD shows it.
pub const ADDED_COLUMN: &str = "EgressMode";

/// Run to success; stdout (panics with stderr).
#[track_caller]
pub fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `helm package <chart_dir> -d <out>`: the `.tgz` it wrote.
pub fn package(helm: &mut Command, chart_dir: &Path, out: &Path) -> PathBuf {
    let stdout = run_ok(helm.arg("package").arg(chart_dir).arg("-d").arg(out));
    // "Successfully packaged chart and saved it to: /x/sendfleet-0.1.0.tgz"
    let path = stdout.trim().rsplit(": ").next().unwrap_or_default();
    let p = PathBuf::from(path);
    assert!(p.is_file(), "helm package wrote no file: {stdout}");
    p
}

/// `git archive OLD_CHART_COMMIT charts/sendfleet examples` into `dir`:
/// (the old chart's directory, its examples directory).
pub fn old_release(dir: &Path) -> (PathBuf, PathBuf) {
    let repo = sendfleet_lab::kit::repo_root();
    let tar = dir.join("old.tar");
    run_ok(Command::new("git").arg("-C").arg(&repo).args(["archive", "-o"]).arg(&tar).args([
        OLD_CHART_COMMIT,
        "charts/sendfleet",
        "examples",
    ]));
    let root = dir.join("old");
    std::fs::create_dir_all(&root).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&root));
    (root.join("charts/sendfleet"), root.join("examples"))
}

/// A copy of charts/sendfleet as release `version`, its SendingPool CRD
/// with one more printer column ([`ADDED_COLUMN`]): a chart upgrade that
/// changes a CRD.
pub fn changed_chart(dir: &Path, version: &str) -> PathBuf {
    let repo = sendfleet_lab::kit::repo_root();
    let out = dir.join(format!("changed-{version}"));
    std::fs::create_dir_all(&out).unwrap();
    run_ok(Command::new("cp").arg("-rL").arg(repo.join("charts/sendfleet")).arg(&out));
    let chart = out.join("sendfleet");
    let meta = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&meta).unwrap();
    let bumped: String = text
        .lines()
        .map(|l| if l.starts_with("version:") { format!("version: {version}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&meta, bumped + "\n").unwrap();
    let crd = chart.join("crds/sendingpools.sendfleet.io.yaml");
    let text = std::fs::read_to_string(&crd).unwrap();
    let anchor = "  - additionalPrinterColumns:\n";
    assert!(text.contains(anchor), "the SendingPool CRD has no printer columns to extend");
    let column = format!(
        "{anchor}    - description: Egress mode (added by the upgrade test)\n      jsonPath: .spec.egress.mode\n      name: {ADDED_COLUMN}\n      type: string\n"
    );
    std::fs::write(&crd, text.replacen(anchor, &column, 1)).unwrap();
    chart
}

/// Names of the printer columns of CRD `name`'s first version, as installed.
pub fn printer_columns(crd: &serde_json::Value) -> Vec<String> {
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}
