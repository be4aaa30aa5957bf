//! Monitoring in the lab: a real Prometheus (and promtool) and a real
//! Alertmanager, built from their Go modules by `hack/build-upstream.sh`,
//! started on 127.0.0.1 in a directory of their own, and a [`Webhook`]
//! receiver served by the test process that records what Alertmanager posts
//! (the stand-in for the chat channel the seeds' teams posted alerts to).
//!
//! ```no_run
//! use sendfleet_lab::monitoring::{Alertmanager, Prometheus, Webhook};
//! use serde_json::json;
//! let hook = Webhook::start().unwrap();
//! let am = Alertmanager::start(&hook).unwrap();
//! let prom = Prometheus::builder()
//!     .scrape(json!({"job_name": "agent", "static_configs": [{"targets": ["198.51.100.1:8080"]}]}))
//!     .rules("agent.yml", "groups: []\n")
//!     .alertmanager(&am)
//!     .start()
//!     .unwrap();
//! let up = prom.query("up").unwrap();
//! # let _ = up;
//! ```
//!
//! Configuration is written as JSON (a subset of YAML, which both read), so
//! a test states a scrape job with `serde_json::json!` and nothing here
//! re-implements their config formats. Only the HTTP APIs are used: neither
//! binary is built with its web UI.
//!
//! Never: listen anywhere but 127.0.0.1 (Alertmanager's cluster port is
//! switched off), scrape or notify anything outside the test's own network
//! namespace, or leave a process behind (children of [`crate::process`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::kit::http::http_get;
use crate::process::{free_port, poll, Proc};
use crate::{Binaries, LabError};

/// How long a start may take before it is reported with the log's tail.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The scrape and rule evaluation interval of a lab Prometheus: short, so a
/// test sees a change within seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// A directory for one component: `<tmp>/sendfleet-<what>-<pid>-<n>`,
/// emptied first (a pid is reused only after its process is gone).
fn own_dir(what: &str) -> Result<PathBuf, LabError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sendfleet-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(LabError::io(path))
}

/// One started binary: its process, directory and port. Prometheus and
/// Alertmanager deref to it. Stopped on drop; a temp directory is removed
/// then too, unless a test is panicking (its log is the evidence).
pub struct Running {
    proc: Proc,
    dir: PathBuf,
    port: u16,
    temp: bool,
}

impl Running {
    /// Start `program` with `args` (log: `dir/<name>.log`) and wait until
    /// `GET /-/ready` on `port` answers 200.
    fn start(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        port: u16,
        temp: bool,
    ) -> Result<Running, LabError> {
        let log = dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, program, args, &log, &[])?;
        let ready = poll(&format!("{name} /-/ready"), START_TIMEOUT, Duration::from_millis(100), || {
            proc.check_running()?;
            Ok(http_get("127.0.0.1", port, "/-/ready").is_ok_and(|(c, _)| c == 200).then_some(()))
        });
        match ready {
            Ok(()) => Ok(Running { proc, dir: dir.to_path_buf(), port, temp }),
            Err(e) => {
                proc.stop(Duration::from_secs(5));
                Err(LabError::Http {
                    url: format!("http://127.0.0.1:{port}/-/ready"),
                    detail: format!("{e}\nlast lines of {}:\n{}", log.display(), crate::process::log_tail(&log, 30)),
                })
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its directory: config, rule files, data, `<name>.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of its log (for assertion messages).
    pub fn log_tail(&self) -> String {
        crate::process::log_tail(&self.proc.log, 30)
    }

    /// `/-/ready` answers 200.
    pub fn ready(&self) -> bool {
        http_get("127.0.0.1", self.port, "/-/ready").is_ok_and(|(c, _)| c == 200)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        if self.temp && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `GET path` on 127.0.0.1:`port`, expecting 200 and a JSON body.
fn get_json(port: u16, path: &str) -> Result<Value, LabError> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (code, body) =
        http_get("127.0.0.1", port, path).map_err(|e| LabError::Http { url: url.clone(), detail: e.to_string() })?;
    if code != 200 {
        return Err(LabError::Http { url, detail: format!("status {code}: {body}") });
    }
    serde_json::from_str(&body).map_err(|e| LabError::Http { url, detail: format!("not JSON ({e}): {body}") })
}

/// Percent-encode a query parameter value (RFC 3986 unreserved kept).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------- Prometheus

/// What [`Prometheus::builder`] collects before the start.
#[derive(Clone, Debug)]
pub struct PrometheusOptions {
    dir: Option<PathBuf>,
    interval: Duration,
    scrape_configs: Vec<Value>,
    rule_files: Vec<(String, String)>,
    alertmanagers: Vec<String>,
    port: Option<u16>,
}

impl PrometheusOptions {
    /// Run in `dir` (created; kept after the stop) instead of a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Listen on 127.0.0.1:`port` instead of a free port (the demo's,
    /// whose instructions name it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Scrape and evaluation interval (default [`DEFAULT_INTERVAL`]).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// One `scrape_configs` entry, as Prometheus' documentation writes it
    /// (`job_name`, `static_configs`, `authorization`, ...).
    pub fn scrape(mut self, job: Value) -> Self {
        self.scrape_configs.push(job);
        self
    }

    /// A job scraping `targets` (`host:port`) at `/metrics` without a
    /// credential.
    pub fn static_job(self, job: &str, targets: &[&str]) -> Self {
        self.scrape(json!({"job_name": job, "static_configs": [{"targets": targets}]}))
    }

    /// A rules file named `name` in the Prometheus directory, with `text`
    /// (YAML, as `promtool check rules` reads it).
    pub fn rules(mut self, name: &str, text: &str) -> Self {
        self.rule_files.push((name.to_string(), text.to_string()));
        self
    }

    /// Send firing and resolved alerts to `am`.
    pub fn alertmanager(mut self, am: &Alertmanager) -> Self {
        self.alertmanagers.push(format!("127.0.0.1:{}", am.port()));
        self
    }

    /// The `prometheus.yml` these options produce (JSON text), with rule
    /// files under `dir`.
    pub fn config(&self, dir: &Path) -> String {
        let secs = |d: Duration| format!("{}ms", d.as_millis().max(1));
        let mut cfg = json!({
            "global": {
                "scrape_interval": secs(self.interval),
                "evaluation_interval": secs(self.interval),
                "scrape_timeout": secs(self.interval),
            },
            "scrape_configs": self.scrape_configs,
            "rule_files": self.rule_files.iter().map(|(n, _)| dir.join(n).display().to_string()).collect::<Vec<_>>(),
        });
        if !self.alertmanagers.is_empty() {
            cfg["alerting"] = json!({"alertmanagers": [{
                "api_version": "v2",
                "static_configs": [{"targets": self.alertmanagers}],
            }]});
        }
        serde_json::to_string_pretty(&cfg).expect("a JSON value serialises")
    }

    /// Write the config and rule files and start Prometheus; returns once
    /// it is ready (`/-/ready`), its config and rules loaded.
    pub fn start(self) -> Result<Prometheus, LabError> {
        let bins = Binaries::get()?;
        let (dir, temp) = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(LabError::io(d))?;
                (d.clone(), false)
            }
            None => (own_dir("prometheus")?, true),
        };
        for (name, text) in &self.rule_files {
            write(&dir.join(name), text)?;
        }
        let config = dir.join("prometheus.yml");
        write(&config, &self.config(&dir))?;
        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // POST /-/reload: a test may rewrite rules and reload them.
            "--web.enable-lifecycle".to_string(),
            // Resend firing alerts every evaluation, not once a minute, so
            // an Alertmanager restarted mid-test hears of them at once.
            format!("--rules.alert.resend-delay={}ms", self.interval.as_millis().max(1)),
        ];
        Ok(Prometheus(Running::start("prometheus", &bins.prometheus, &args, &dir, port, temp)?))
    }
}

/// A running Prometheus on 127.0.0.1 (port, URL, directory and log through
/// [`Running`]); stopped on drop.
pub struct Prometheus(Running);

impl std::ops::Deref for Prometheus {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.0
    }
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query: its labels and how many points it has.
pub type RangeSeries = (BTreeMap<String, String>, usize);

/// One active target of `/api/v1/targets`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub scrape_pool: String,
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub discovered_labels: BTreeMap<String, String>,
}

/// One alert of `/api/v1/alerts`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    #[serde(default)]
    pub value: String,
}

impl Prometheus {
    pub fn builder() -> PrometheusOptions {
        PrometheusOptions {
            dir: None,
            interval: DEFAULT_INTERVAL,
            scrape_configs: vec![],
            rule_files: vec![],
            alertmanagers: vec![],
            port: None,
        }
    }

    /// `GET path` (with its query string) on the HTTP API: the `data` of a
    /// `"status": "success"` answer.
    pub fn api(&self, path: &str) -> Result<Value, LabError> {
        let v = get_json(self.port, path)?;
        if v["status"] != "success" {
            return Err(LabError::Http { url: format!("{}{path}", self.url()), detail: v.to_string() });
        }
        Ok(v["data"].clone())
    }

    /// An instant query (`/api/v1/query`); an instant vector's samples,
    /// a scalar as one sample without labels.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>, LabError> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let value = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    labels: serde_json::from_value(s["metric"].clone()).unwrap_or_default(),
                    value: value(&s["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: value(&data["result"]) }]),
            _ => Err(LabError::Http { url: format!("{}/api/v1/query", self.url()), detail: format!("{expr}: {data}") }),
        }
    }

    /// A range query (`/api/v1/query_range`) over the last `span`, one
    /// point per `step`: each series' labels and its number of points (what
    /// a dashboard panel over that time range would draw).
    pub fn query_range(&self, expr: &str, span: Duration, step: Duration) -> Result<Vec<RangeSeries>, LabError> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = end - span.as_secs_f64();
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            url_encode(expr),
            step.as_secs().max(1)
        );
        let data = self.api(&path)?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).unwrap_or_default();
                (labels, s["values"].as_array().map_or(0, Vec::len))
            })
            .collect())
    }

    /// The active targets (`/api/v1/targets`).
    pub fn targets(&self) -> Result<Vec<Target>, LabError> {
        let data = self.api("/api/v1/targets?state=active")?;
        serde_json::from_value(data["activeTargets"].clone()).map_err(|e| LabError::Http {
            url: format!("{}/api/v1/targets", self.url()),
            detail: format!("{e}: {data}"),
        })
    }

    /// The pending and firing alerts (`/api/v1/alerts`).
    pub fn alerts(&self) -> Result<Vec<PromAlert>, LabError> {
        let data = self.api("/api/v1/alerts")?;
        serde_json::from_value(data["alerts"].clone()).map_err(|e| LabError::Http {
            url: format!("{}/api/v1/alerts", self.url()),
            detail: format!("{e}: {data}"),
        })
    }

    /// Wait until the target of scrape job `job` has been scraped with the
    /// given health (`up` or `down`) and return it.
    pub fn wait_target(&self, job: &str, health: &str, timeout: Duration) -> Result<Target, LabError> {
        poll(&format!("target {job} to be {health}"), timeout, Duration::from_millis(200), || {
            Ok(self.targets()?.into_iter().find(|t| t.scrape_pool == job && t.health == health))
        })
    }

    /// Wait until `expr` returns at least one sample; returns them.
    pub fn wait_query(&self, expr: &str, timeout: Duration) -> Result<Vec<Sample>, LabError> {
        poll(&format!("query {expr} to return data"), timeout, Duration::from_millis(200), || {
            let v = self.query(expr)?;
            Ok((!v.is_empty()).then_some(v))
        })
    }

    /// Re-read the config and rule files (`POST /-/reload`), after a test
    /// rewrote them in [`Prometheus::dir`].
    pub fn reload(&self) -> Result<(), LabError> {
        let url = format!("{}/-/reload", self.url());
        let err = |detail: String| LabError::Http { url: url.clone(), detail };
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| err(e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| err(e.to_string()))?;
        write!(s, "POST /-/reload HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            .map_err(|e| err(e.to_string()))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| err(e.to_string()))?;
        match reply.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            _ => Err(err(reply)),
        }
    }
}

// ------------------------------------------------------------------ promtool

/// Run the built promtool with `args`; its stdout on success, else
/// [`LabError::Command`] with what it printed (it reports problems on both
/// streams).
pub fn promtool(args: &[&str]) -> Result<String, LabError> {
    let bins = Binaries::get()?;
    let out = Command::new(&bins.promtool).args(args).output().map_err(LabError::io(&bins.promtool))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(LabError::Command {
            command: format!("promtool {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// `promtool check rules FILE...`.
pub fn check_rules(files: &[&Path]) -> Result<String, LabError> {
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&args)
}

/// `promtool test rules FILE...` (unit tests of alerting rules).
pub fn test_rules(files: &[&Path]) -> Result<String, LabError> {
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&args)
}

/// The alert rules the chart ships (`charts/sendfleet/files/sendfleet.rules.yaml`),
/// as Prometheus loads them, with every `for:` set to `hold` (e.g. `"2s"`):
/// a test waits seconds, not the production minutes. The shipped file is
/// never edited; only this copy, which the test hands to [`PrometheusOptions::rules`].
pub fn shipped_rules(hold: &str) -> Result<String, LabError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/sendfleet/files/sendfleet.rules.yaml");
    let text = std::fs::read_to_string(&path).map_err(LabError::io(&path))?;
    Ok(text
        .lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: {hold}\n"),
            _ => format!("{l}\n"),
        })
        .collect())
}

/// A scrape job for one agent as the chart's ServiceMonitor scrapes it
/// (docs/MONITORING.md): the pool's bearer token from `token_file`, and the
/// target labels `pool_namespace`, `pool`, `egress_ip` the rules and the
/// dashboard group by.
pub fn agent_job(job: &str, target: &str, token_file: &Path, pool: &str, egress_ip: &str) -> Value {
    let (namespace, name) = pool.split_once('/').unwrap_or(("", pool));
    json!({
        "job_name": job,
        "authorization": {"type": "Bearer", "credentials_file": token_file},
        "static_configs": [{
            "targets": [target],
            "labels": {"pool_namespace": namespace, "pool": name, "egress_ip": egress_ip},
        }],
    })
}

/// The ServiceMonitors the chart ships, rendered by `helm template` (with
/// `helm`, a command ready for arguments) for a release in `release_ns` on
/// Kubernetes `kube_version`: the operator's (`metrics.serviceMonitor`) and
/// one per pool of `pools` (namespace, name) for its agents
/// (`monitoring.agents`). What a cluster with the Prometheus Operator gets.
pub fn chart_servicemonitors(
    mut helm: Command,
    release_ns: &str,
    kube_version: &str,
    pools: &[(&str, &str)],
) -> Result<Vec<Value>, LabError> {
    let chart = crate::binaries::repo_root().join("charts/sendfleet");
    helm.args(["template", "sendfleet", "--kube-version", kube_version, "--namespace", release_ns]).arg(&chart).args([
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "monitoring.agents.enabled=true",
    ]);
    for (i, (ns, name)) in pools.iter().enumerate() {
        helm.args(["--set", &format!("monitoring.agents.pools[{i}].namespace={ns}")]);
        helm.args(["--set", &format!("monitoring.agents.pools[{i}].name={name}")]);
    }
    let out = helm.output().map_err(LabError::io("helm"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: "helm template charts/sendfleet".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .filter_map(|v| serde_json::to_value(v).ok())
        .filter(|v| v["kind"] == "ServiceMonitor")
        .collect())
}

/// The scrape jobs of the chart's ServiceMonitors ([`chart_servicemonitors`]
/// rendered for the server `kubectl version -o json` printed as
/// `version_json`, each through [`servicemonitor_job`]): the operator's, and
/// the agents' of each pool of `pools` with the bearer token in
/// `token_file`. What a lab Prometheus scrapes to scrape as the chart would.
pub fn chart_scrape_jobs(
    helm: Command,
    version_json: &str,
    release_ns: &str,
    pools: &[(&str, &str)],
    kubeconfig: &Path,
    token_file: &Path,
) -> Result<Vec<Value>, LabError> {
    let bad = |detail: String| LabError::Http { url: "kubectl version -o json".into(), detail };
    let version: Value = serde_json::from_str(version_json).map_err(|e| bad(format!("{e}: {version_json}")))?;
    let kube_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .ok_or_else(|| bad(format!("no serverVersion.gitVersion: {version_json}")))?;
    chart_servicemonitors(helm, release_ns, kube_version, pools)?
        .iter()
        .map(|sm| {
            let creds = sm["spec"]["endpoints"][0]["authorization"].is_object().then_some(token_file);
            servicemonitor_job(sm, kubeconfig, creds)
        })
        .collect()
}

/// The scrape job the Prometheus Operator generates from a ServiceMonitor
/// (`monitoring.coreos.com/v1`, as the chart renders it), for a lab
/// Prometheus that discovers targets through the API server itself
/// (`kubernetes_sd_configs`, role `endpointslice`, with `kubeconfig`): keep
/// the Services matching `spec.selector.matchLabels` in the monitor's
/// namespace and the endpoint port named in `endpoints[0].port`, set the
/// target labels `namespace`, `service` and `endpoint` as the operator does,
/// then apply the endpoint's `relabelings` unchanged. `credentials_file`
/// holds the token of `authorization.credentials` (a Secret the operator
/// would read; the test reads it). The scrape interval stays the lab's.
///
/// So a test scrapes through what the chart ships, not a job of its own:
/// a wrong selector, port name or relabeling leaves the target out or its
/// labels wrong.
pub fn servicemonitor_job(sm: &Value, kubeconfig: &Path, credentials_file: Option<&Path>) -> Result<Value, LabError> {
    let bad = |what: &str| LabError::Http { url: "ServiceMonitor".into(), detail: format!("{what}: {sm}") };
    let name = sm["metadata"]["name"].as_str().ok_or_else(|| bad("no metadata.name"))?;
    let namespace = sm["metadata"]["namespace"].as_str().ok_or_else(|| bad("no metadata.namespace"))?;
    let endpoint = &sm["spec"]["endpoints"][0];
    let port = endpoint["port"].as_str().ok_or_else(|| bad("no endpoints[0].port"))?;
    let role = match sm["spec"]["serviceDiscoveryRole"].as_str() {
        Some("Endpoints") => "endpoints",
        _ => "endpointslice",
    };
    let meta = format!("__meta_kubernetes_{role}");
    let mut relabel = Vec::new();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().into_iter().flatten() {
        let label: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        relabel.push(json!({
            "source_labels": [format!("__meta_kubernetes_service_label_{label}")],
            "regex": v.as_str().unwrap_or_default(),
            "action": "keep",
        }));
    }
    relabel.push(json!({"source_labels": [format!("{meta}_port_name")], "regex": port, "action": "keep"}));
    relabel.push(json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}));
    relabel.push(json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}));
    relabel.push(json!({"target_label": "endpoint", "replacement": port}));
    for r in endpoint["relabelings"].as_array().into_iter().flatten() {
        let mut out = serde_json::Map::new();
        for (k, v) in r.as_object().into_iter().flatten() {
            let key = match k.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                "regex" | "replacement" | "action" | "separator" | "modulus" => k.as_str(),
                other => return Err(bad(&format!("relabeling field {other} not translated"))),
            };
            out.insert(key.to_string(), v.clone());
        }
        relabel.push(Value::Object(out));
    }
    let mut job = json!({
        "job_name": format!("serviceMonitor/{namespace}/{name}/0"),
        "kubernetes_sd_configs": [{
            "role": role,
            "kubeconfig_file": kubeconfig,
            "namespaces": {"names": [namespace]},
        }],
        "relabel_configs": relabel,
    });
    if let Some(path) = endpoint["path"].as_str() {
        job["metrics_path"] = json!(path);
    }
    match (&endpoint["authorization"], credentials_file) {
        (Value::Null, _) => {}
        (_, Some(file)) => job["authorization"] = json!({"type": "Bearer", "credentials_file": file}),
        (_, None) => return Err(bad("endpoints[0].authorization needs a credentials file")),
    }
    Ok(job)
}

// -------------------------------------------------------------- Alertmanager

/// A running Alertmanager on 127.0.0.1 whose one receiver is a [`Webhook`]
/// (port, URL, directory and log through [`Running`]); stopped on drop.
pub struct Alertmanager(Running);

impl std::ops::Deref for Alertmanager {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.0
    }
}

impl Alertmanager {
    /// Route every alert to `hook`, one group per alert (`group_by: [...]`,
    /// so each notification names one alert's labels), sent after 1 s,
    /// repeated every hour, resolutions sent too.
    pub fn start(hook: &Webhook) -> Result<Alertmanager, LabError> {
        Self::start_with_route(hook, Self::one_group_per_alert())
    }

    fn one_group_per_alert() -> Value {
        json!({"group_by": ["..."], "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    }

    /// Like [`Alertmanager::start`] with the given `route` (its `receiver`
    /// is set to the webhook).
    pub fn start_with_route(hook: &Webhook, route: Value) -> Result<Alertmanager, LabError> {
        Self::launch(hook, route, own_dir("alertmanager")?, free_port()?, true)
    }

    /// Like [`Alertmanager::start`], in `dir` (kept after the stop) on
    /// 127.0.0.1:`port`: the demo's, whose instructions name the port.
    pub fn start_in(hook: &Webhook, dir: &Path, port: u16) -> Result<Alertmanager, LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
        Self::launch(hook, Self::one_group_per_alert(), dir.to_path_buf(), port, false)
    }

    fn launch(hook: &Webhook, mut route: Value, dir: PathBuf, port: u16, temp: bool) -> Result<Alertmanager, LabError> {
        let bins = Binaries::get()?;
        route["receiver"] = json!("webhook");
        let config = json!({
            "route": route,
            "receivers": [{
                "name": "webhook",
                "webhook_configs": [{"url": hook.url(), "send_resolved": true}],
            }],
        });
        let path = dir.join("alertmanager.yml");
        write(&path, &serde_json::to_string_pretty(&config).expect("a JSON value serialises"))?;
        let args = vec![
            format!("--config.file={}", path.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Empty: no gossip cluster (it would listen on 0.0.0.0:9094).
            "--cluster.listen-address=".to_string(),
        ];
        Ok(Alertmanager(Running::start("alertmanager", &bins.alertmanager, &args, &dir, port, temp)?))
    }

    /// The alerts it holds (`/api/v2/alerts`), as JSON.
    pub fn alerts(&self) -> Result<Value, LabError> {
        get_json(self.port, "/api/v2/alerts")
    }
}

// ------------------------------------------------------------------- Webhook

/// One notification Alertmanager posted (its webhook payload, version 4).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub receiver: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub alerts: Vec<NotifiedAlert>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub group_key: String,
}

/// One alert of a [`Notification`].
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub generator_url: String,
}

#[derive(Default)]
struct Received {
    notifications: Vec<Notification>,
    /// Requests that were not a notification (kept for the failure message).
    errors: Vec<String>,
}

/// An HTTP endpoint on 127.0.0.1 in the test process that records every
/// notification Alertmanager posts to it, in arrival order. Stops on drop.
pub struct Webhook {
    port: u16,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Largest request body accepted (a notification is a few KB).
const MAX_BODY: usize = 4 << 20;

impl Webhook {
    pub fn start() -> Result<Webhook, LabError> {
        Self::launch(None)
    }

    /// Like [`Webhook::start`], also appending one line per alert of each
    /// notification to `log` (`<status> <alertname> <summary>`): the
    /// demo's chat channel, which a person reads with `tail -f`.
    pub fn start_logging(log: &Path) -> Result<Webhook, LabError> {
        Self::launch(Some(log.to_path_buf()))
    }

    fn launch(log: Option<PathBuf>) -> Result<Webhook, LabError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(LabError::io("127.0.0.1:0"))?;
        let port = listener.local_addr().map_err(LabError::io("127.0.0.1:0"))?.port();
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, flag) = (received.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("lab-webhook".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let outcome = serve_one(conn);
                    let Ok(mut r) = rec.lock() else { break };
                    match outcome {
                        Ok(n) => {
                            if let Some(path) = &log {
                                append_alerts(path, &n);
                            }
                            r.notifications.push(n)
                        }
                        Err(e) => r.errors.push(e),
                    }
                }
            })
            .map_err(LabError::io("webhook thread"))?;
        Ok(Webhook { port, received, stop, thread: Some(thread) })
    }

    /// Where Alertmanager posts: `http://127.0.0.1:PORT/alerts`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/alerts", self.port)
    }

    /// Every notification so far, in arrival order.
    pub fn notifications(&self) -> Vec<Notification> {
        self.received.lock().map(|r| r.notifications.clone()).unwrap_or_default()
    }

    /// Requests that could not be read as a notification.
    pub fn errors(&self) -> Vec<String> {
        self.received.lock().map(|r| r.errors.clone()).unwrap_or_default()
    }

    /// Wait for a notification with `status` (`firing`/`resolved`) holding
    /// an alert named `alertname`; returns that alert.
    pub fn wait_alert(&self, alertname: &str, status: &str, timeout: Duration) -> Result<NotifiedAlert, LabError> {
        self.wait_alert_with(alertname, status, &[], timeout)
    }

    /// [`Webhook::wait_alert`] for an alert that also carries each label of
    /// `labels` (a Prometheus that sees other pools' alerts too).
    pub fn wait_alert_with(
        &self,
        alertname: &str,
        status: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<NotifiedAlert, LabError> {
        let wanted = |a: &NotifiedAlert| {
            a.status == status
                && a.labels.get("alertname").map(String::as_str) == Some(alertname)
                && labels.iter().all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        };
        poll(&format!("webhook: {alertname} {status} {labels:?}"), timeout, Duration::from_millis(200), || {
            Ok(self
                .notifications()
                .into_iter()
                .filter(|n| n.status == status)
                .find_map(|n| n.alerts.into_iter().find(|a| wanted(a))))
        })
        .map_err(|e| match e {
            LabError::Timeout { what, after, .. } => LabError::Timeout {
                what,
                after,
                last: format!("received {:?}; unreadable requests {:?}", self.notifications(), self.errors()),
            },
            e => e,
        })
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line per alert of `n`: `<status> <alertname> <summary>`.
fn append_alerts(path: &Path, n: &Notification) {
    let mut text = String::new();
    for a in &n.alerts {
        let name = a.labels.get("alertname").map(String::as_str).unwrap_or("?");
        let summary = a.annotations.get("summary").map(String::as_str).unwrap_or("");
        text.push_str(&format!("{} {name} {summary}\n", a.status.to_uppercase()));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Read one HTTP/1.x POST with a Content-Length body, answer 200 and close.
fn serve_one(conn: TcpStream) -> Result<Notification, String> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    r.read_line(&mut request_line).map_err(|e| e.to_string())?;
    let mut length = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let reply = |mut c: &TcpStream, status: &str| {
        let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let Some(len) = length.filter(|&l| l <= MAX_BODY) else {
        reply(&conn, "411 Length Required");
        return Err(format!("{}: no usable Content-Length", request_line.trim_end()));
    };
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    if !request_line.starts_with("POST ") {
        reply(&conn, "405 Method Not Allowed");
        return Err(format!("{}: not a POST", request_line.trim_end()));
    }
    match serde_json::from_slice::<Notification>(&body) {
        Ok(n) => {
            reply(&conn, "200 OK");
            Ok(n)
        }
        Err(e) => {
            reply(&conn, "400 Bad Request");
            Err(format!("{e}: {}", String::from_utf8_lossy(&body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encode_keeps_unreserved_and_escapes_promql() {
        assert_eq!(url_encode("up{job=\"a b\"} == 1"), "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%201");
        assert_eq!(url_encode("rate(x_total[5m])"), "rate%28x_total%5B5m%5D%29");
        assert_eq!(url_encode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn a_servicemonitor_becomes_the_job_the_prometheus_operator_would_generate() {
        let sm = json!({
            "metadata": {"name": "agents", "namespace": "mail"},
            "spec": {
                "serviceDiscoveryRole": "EndpointSlice",
                "selector": {"matchLabels": {"sendfleet.io/metrics": "agent"}},
                "endpoints": [{
                    "port": "http",
                    "authorization": {"type": "Bearer", "credentials": {"name": "t", "key": "token"}},
                    "relabelings": [{"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "pool_namespace"}],
                }],
            },
        });
        let job = servicemonitor_job(&sm, Path::new("/k"), Some(Path::new("/t"))).unwrap();
        assert_eq!(job["job_name"], "serviceMonitor/mail/agents/0");
        assert_eq!(job["kubernetes_sd_configs"][0]["role"], "endpointslice");
        assert_eq!(job["kubernetes_sd_configs"][0]["namespaces"]["names"], json!(["mail"]));
        let r = job["relabel_configs"].as_array().unwrap();
        assert_eq!(r[0]["source_labels"], json!(["__meta_kubernetes_service_label_sendfleet_io_metrics"]));
        assert_eq!(r[0]["regex"], "agent");
        assert_eq!(r[1]["source_labels"], json!(["__meta_kubernetes_endpointslice_port_name"]));
        assert_eq!(
            r.last().unwrap(),
            &json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "pool_namespace"})
        );
        assert_eq!(job["authorization"]["credentials_file"], "/t");
        assert!(servicemonitor_job(&sm, Path::new("/k"), None).is_err(), "a token is required");
    }

    #[test]
    fn config_names_rule_files_in_the_dir_and_the_alertmanager() {
        let opts = Prometheus::builder().static_job("a", &["127.0.0.1:1"]).rules("r.yml", "groups: []\n");
        let cfg: Value = serde_json::from_str(&opts.config(Path::new("/d"))).unwrap();
        assert_eq!(cfg["rule_files"], json!(["/d/r.yml"]));
        assert_eq!(cfg["scrape_configs"][0]["static_configs"][0]["targets"], json!(["127.0.0.1:1"]));
        assert_eq!(cfg["global"]["scrape_interval"], "1000ms");
        assert!(cfg.get("alerting").is_none());
    }
}
