//! `sendfleet render -f FILE... [--out DIR]`: the operator's render, offline.
//!
//! Reads resource YAML (any mix of SendingPool, DomainPolicy, WarmupPlan;
//! other kinds are ignored with a note on stderr), renders every pool and
//! prints the Kubernetes objects. With `--out DIR` it also writes, per
//! instance, `DIR/<namespace>/<pool>/<instance>/` holding the files exactly
//! as the agent installs them, ready for `postconf -c` and `postfix check`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::objects;
use sendfleet_render::render::{self, Observed, PoolInput, Settings};
use serde::Deserialize;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Resource YAML files (multi-document allowed); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Also write objects.yaml and each instance's Postfix files here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Postfix queue directory to render (default: the pod layout's).
    #[arg(long)]
    pub queue_directory: Option<String>,
    /// Postfix data directory to render (default: the pod layout's).
    #[arg(long)]
    pub data_directory: Option<String>,
    /// Agent policy socket path to render.
    #[arg(long)]
    pub policy_socket: Option<String>,
    /// Image for instances whose pool names none.
    #[arg(long, default_value = "sendfleet:dev")]
    pub default_image: String,
    /// Print the DNS records each pool needs published (PTR, SPF, DKIM,
    /// DMARC) as zone-file lines instead of the objects.
    #[arg(long)]
    pub records: bool,
    /// With --records: the selector's private key (PEM, as in the pool's
    /// Secret), to print the DKIM record's value (only the public half is
    /// used; without it the DKIM record is listed by name).
    #[arg(long, requires = "records")]
    pub dkim_key: Option<PathBuf>,
}

/// Resources read from files, with namespaces defaulted.
#[derive(Default, Debug)]
pub struct Resources {
    pub pools: Vec<SendingPool>,
    pub policies: Vec<DomainPolicy>,
    pub plans: Vec<WarmupPlan>,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parse a multi-document YAML stream into sendfleet resources.
pub fn parse_resources(text: &str, origin: &str, into: &mut Resources) -> anyhow::Result<()> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).with_context(|| format!("{origin}: document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let tm: TypeMeta =
            serde_yaml::from_value(value.clone()).with_context(|| format!("{origin}: document {}", i + 1))?;
        if !tm.api_version.starts_with("sendfleet.io/") {
            eprintln!("note: {origin}: ignoring {} {}", tm.api_version, tm.kind);
            continue;
        }
        let ctx = || format!("{origin}: document {} ({})", i + 1, tm.kind);
        match tm.kind.as_str() {
            "SendingPool" => {
                let mut p: SendingPool = serde_yaml::from_value(value).with_context(ctx)?;
                p.metadata.namespace.get_or_insert_with(|| "default".into());
                into.pools.push(p);
            }
            "DomainPolicy" => {
                let mut p: DomainPolicy = serde_yaml::from_value(value).with_context(ctx)?;
                p.metadata.namespace.get_or_insert_with(|| "default".into());
                into.policies.push(p);
            }
            "WarmupPlan" => {
                let mut p: WarmupPlan = serde_yaml::from_value(value).with_context(ctx)?;
                p.metadata.namespace.get_or_insert_with(|| "default".into());
                into.plans.push(p);
            }
            other => anyhow::bail!("{origin}: document {}: unknown sendfleet kind {other:?}", i + 1),
        }
    }
    Ok(())
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let mut res = Resources::default();
    for f in &args.files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        parse_resources(&text, &f.display().to_string(), &mut res)?;
    }
    let mut settings = Settings { default_image: args.default_image.clone(), ..Settings::default() };
    if let Some(q) = &args.queue_directory {
        settings.queue_directory = q.clone();
    }
    if let Some(d) = &args.data_directory {
        settings.data_directory = d.clone();
    }
    if let Some(s) = &args.policy_socket {
        settings.policy_socket = s.clone();
    }
    let out = render_all(&res, &settings)?;
    if args.records {
        let key = match &args.dkim_key {
            Some(f) => {
                let pem = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                Some(crate::dns::public_key_from_pem(&pem).with_context(|| format!("{}", f.display()))?)
            }
            None => None,
        };
        print!("{}", records(&res, key.as_ref()));
        return Ok(());
    }
    match &args.out {
        None => print!("{}", out.objects_yaml),
        Some(dir) => {
            write_out(dir, &out)?;
            eprintln!(
                "wrote {} objects and {} instance directories to {}",
                out.object_count,
                out.instance_dirs.len(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Everything `render` produces.
pub struct Output {
    pub objects_yaml: String,
    pub object_count: usize,
    /// (relative dir, file name, content)
    pub instance_dirs: Vec<(PathBuf, Vec<(String, String)>)>,
}

/// Render every pool in `res`. Fails on the first invalid resource, naming it
/// and its fields.
pub fn render_all(res: &Resources, settings: &Settings) -> anyhow::Result<Output> {
    let observed = Observed::default();
    let mut docs = vec![];
    let mut dirs = vec![];
    for pool in &res.pools {
        let ns = pool.metadata.namespace.as_deref().unwrap_or("default");
        let plan = match &pool.spec.warmup_plan_ref {
            Some(name) => Some(
                res.plans
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref() == Some(ns))
                    .with_context(|| {
                        format!(
                            "SendingPool {ns}/{}: spec.warmupPlanRef: WarmupPlan {name:?} not found in the input",
                            pool.metadata.name.as_deref().unwrap_or("")
                        )
                    })?,
            ),
            None => None,
        };
        let input = PoolInput { pool, policies: &res.policies, plan, pools: &res.pools, observed: &observed };
        let rp = render::render_pool(input, settings)?;
        for e in &rp.invalid_policies {
            eprintln!("warning: {e} (skipped)");
        }
        for (pattern, winner, loser) in &rp.conflicts {
            eprintln!("warning: domain {pattern:?} is claimed by DomainPolicies {winner} and {loser}; {winner} wins");
        }
        for obj in objects::build(pool, &rp, settings) {
            docs.push(obj.to_json());
        }
        for inst in &rp.instances {
            let dir = Path::new(&rp.namespace).join(&rp.name).join(&inst.name);
            dirs.push((dir, inst.files.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
        }
    }
    let mut yaml = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&serde_yaml::to_string(d)?);
    }
    Ok(Output { objects_yaml: yaml, object_count: docs.len(), instance_dirs: dirs })
}

/// The records every pool needs, as zone-file lines under a comment naming
/// the pool (`--records`).
pub fn records(res: &Resources, dkim_key: Option<&crate::dns::PublicKey>) -> String {
    use crate::dns::records::{pool_records, zone_lines};
    let mut out = String::new();
    for pool in &res.pools {
        let ns = pool.metadata.namespace.as_deref().unwrap_or("default");
        out.push_str(&format!("; SendingPool {ns}/{}\n", pool.metadata.name.as_deref().unwrap_or("")));
        let missing = match &pool.spec.dkim {
            Some(d) => format!(
                "the public half of Secret {:?} key {:?} or {:?}: sendfleet render --records --dkim-key FILE",
                d.secret_name,
                sendfleet_render::dkim::secret_key_for(&d.selector),
                sendfleet_render::dkim::SECRET_DEFAULT_KEY
            ),
            None => String::new(),
        };
        out.push_str(&zone_lines(&pool_records(pool, dkim_key), &missing));
    }
    out
}

fn write_out(dir: &Path, out: &Output) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("objects.yaml"), &out.objects_yaml)?;
    for (rel, files) in &out.instance_dirs {
        let d = dir.join(rel);
        std::fs::create_dir_all(&d)?;
        for (name, content) in files {
            std::fs::write(d.join(name), content)?;
        }
    }
    Ok(())
}
