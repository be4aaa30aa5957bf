//! `sendfleet operator`: the Kubernetes side of sendfleet.
//!
//! Wires the API client, leader election, the metrics/health server, the
//! watch-fed caches ([`cache`]), the agent poller ([`polling`]) and four
//! controllers together, all sharing one [`context::Context`]:
//! - SendingPool: the reconcile pipeline in [`pool`] (its module doc is the
//!   map: dereference -> claim -> observe -> render -> apply -> prune ->
//!   status);
//! - EgressAddressClaim ([`claims`]): releases the address claims of pools
//!   that are gone or dropped the address;
//! - DomainPolicy ([`domain_policy`]) and WarmupPlan ([`warmup_plan`]): their
//!   status, through the generic controller in [`fleet_status`], from the
//!   namespace's pools and the [`fleet`] index the pool pipeline fills.
//!
//! Only the leader runs the controllers, so only the leader writes. The
//! operator never touches Postfix directly: it writes ConfigMaps and the
//! agents in the pods do the rest.

pub mod agent_client;
pub mod apply;
pub mod cache;
pub mod claims;
pub mod context;
pub mod domain_policy;
pub mod error;
pub mod events;
pub mod fleet;
pub mod fleet_status;
pub mod leader;
pub mod limits;
pub mod metrics;
pub mod polling;
pub mod polls;
pub mod pool;
pub mod rbac;
pub mod reputation;
pub mod status;
pub mod warmup_plan;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::Client;
use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::objects::FIELD_MANAGER;
use sendfleet_render::render::Settings;

use self::context::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Address of the metrics and health server (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Watch only this namespace (empty: every namespace).
    #[arg(long, default_value = "")]
    pub watch_namespace: String,
    /// Namespace of the leader-election Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "sendfleet-operator")]
    pub lease_name: String,
    /// Run without leader election (a single replica, e.g. in tests).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Identity in the Lease (normally the pod name).
    #[arg(long, env = "POD_NAME", default_value = "sendfleet-operator")]
    pub identity: String,
    /// Image of the instances (Postfix + agent) when a pool names none.
    #[arg(long, default_value = "sendfleet:dev")]
    pub instance_image: String,
    /// An image a pool may name in `spec.image` besides --instance-image
    /// (repeatable; compared as written, so pin a tag or digest). A pool
    /// naming any other image is refused (`Ready=False ImageNotAllowed`).
    #[arg(long = "allowed-instance-image")]
    pub allowed_instance_images: Vec<String>,
    /// A node label KEY=VALUE every instance pod requires (repeatable, or
    /// comma-separated), e.g. sendfleet.io/egress=true; an
    /// `egressIPs[].nodeName` naming a node without them is refused
    /// (`NodeNotAllowed`). Empty: any node.
    #[arg(long = "instance-node-selector", value_delimiter = ',', value_parser = limits::parse_label)]
    pub instance_node_selector: Vec<(String, String)>,
    /// Reconcile pools only in namespaces carrying this label KEY=VALUE,
    /// e.g. sendfleet.io/pools=enabled (others: `NamespaceNotAllowed`).
    /// Neither this nor --pool-namespace: every namespace.
    #[arg(long, value_parser = parse_optional_label, default_value = "")]
    pub pool_namespace_label: String,
    /// A namespace that may hold pools whatever its labels (repeatable).
    #[arg(long = "pool-namespace")]
    pub pool_namespaces: Vec<String>,
    /// How often every pool is reconciled again with no event (re-derives
    /// status, repairs anything a dropped event missed; reads only).
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    pub resync_interval: std::time::Duration,
    /// How often the agents of running instances are polled for /status.
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub agent_poll_interval: std::time::Duration,
    /// DNS servers for the reputation checks (ADDR:PORT, repeatable; empty:
    /// the system resolver). DNSBLs refuse queries from big public
    /// resolvers: use your own recursive resolver.
    #[arg(long = "dns-server")]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Sweep every pool at this interval instead of its
    /// `spec.reputation.interval` (tests and demos only).
    #[arg(long, value_parser = parse_interval)]
    pub dnsbl_interval_override: Option<std::time::Duration>,
    /// Failed sweeps in a row before a zone's state becomes Unknown.
    #[arg(long, default_value_t = 3)]
    pub dns_unknown_after: u32,
    /// Time to wait for one DNS answer.
    #[arg(long, default_value = "3s", value_parser = parse_interval)]
    pub dns_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// `KEY=VALUE`, or empty for none (the chart passes the flag always).
fn parse_optional_label(s: &str) -> Result<String, String> {
    if !s.is_empty() {
        limits::parse_label(s)?;
    }
    Ok(s.to_string())
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    sendfleet_render::api::parse_duration(s)
        .filter(|n| *n > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: a duration such as 30s or 5m"))
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn serve_metrics(addr: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let ctx = ctx.clone();
                async move { ctx.metrics.encode() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    let client = Client::try_default().await?;
    let settings = Settings {
        default_image: args.instance_image.clone(),
        node_selector: args.instance_node_selector.iter().cloned().collect(),
        ..Settings::default()
    };
    let limits = limits::Limits {
        allowed_images: args.allowed_instance_images.iter().cloned().collect(),
        namespace_label: limits::parse_label(&args.pool_namespace_label).ok(),
        namespaces: args.pool_namespaces.iter().cloned().collect(),
    };
    let dns = crate::dns::HickoryDns::new(&crate::dns::ResolverSettings {
        nameservers: args.dns_servers.clone(),
        timeout: args.dns_timeout,
        ..Default::default()
    })?;
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(args.identity.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        limits,
        metrics: metrics::Metrics::default(),
        recorder: Recorder::new(client.clone(), reporter),
        reputation: reputation::Reputation::new(dns, args.dnsbl_interval_override, args.dns_unknown_after),
        resync: args.resync_interval,
        agent_poll: args.agent_poll_interval,
        fleet: Default::default(),
        polls: Default::default(),
        caches: Default::default(),
    });
    let server = tokio::spawn(serve_metrics(args.metrics_addr, ctx.clone()));

    let elector = (!args.no_leader_election).then(|| {
        Arc::new(leader::Elector::new(
            client.clone(),
            &args.leader_election_namespace,
            &args.lease_name,
            &args.identity,
        ))
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
    });
    // Lead, reconcile until leadership is lost, then become a candidate
    // again (e.g. after the API server was away longer than the lease);
    // leave the loop only on a shutdown signal.
    loop {
        if let Some(e) = &elector {
            tracing::info!(lease = %args.lease_name, identity = %args.identity, "waiting for leadership");
            let mut rx = shutdown_rx.clone();
            tokio::select! {
                _ = e.acquire() => tracing::info!("leading"),
                _ = rx.wait_for(|s| *s) => break,
            }
        }
        let why = run_controller(&args, &client, ctx.clone(), elector.clone(), shutdown_rx.clone()).await;
        tracing::info!(reason = why, "controller stopped");
        if why != LOST {
            break;
        }
    }
    server.abort();
    if let Some(e) = &elector {
        e.release().await;
    }
    tracing::info!("operator stopped");
    Ok(())
}

const LOST: &str = "leadership lost";

/// Run the four controllers until shutdown or lost leadership; returns
/// which.
async fn run_controller(
    args: &OperatorArgs,
    client: &Client,
    ctx: Arc<Context>,
    elector: Option<Arc<leader::Elector>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> &'static str {
    fn api<K>(client: &Client, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        if ns.is_empty() {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), ns)
        }
    }
    let ns = args.watch_namespace.as_str();
    // The term's caches, synced before any controller runs: a reconcile
    // reads them instead of the API server, and their changes are what
    // wakes the pools, policies and plans they affect (`cache.rs`).
    let (pool_tx, pool_rx) = tokio::sync::mpsc::unbounded_channel();
    let (policy_tx, policy_rx) = tokio::sync::mpsc::unbounded_channel();
    let (plan_tx, plan_rx) = tokio::sync::mpsc::unbounded_channel();
    let triggers = cache::Triggers { pools: pool_tx.clone(), policies: policy_tx, plans: plan_tx };
    let caches = tokio::select! {
        c = cache::Caches::start(client, ns, &ctx.limits, !ctx.settings.node_selector.is_empty(), triggers) => Arc::new(c),
        _ = shutdown.wait_for(|s| *s) => return "shutdown signal",
    };
    *ctx.caches.write().unwrap_or_else(|p| p.into_inner()) = Some(caches.clone());
    let poller = tokio::spawn(polling::run(ctx.clone(), caches.clone(), pool_tx));
    let pools =
        Controller::<SendingPool>::new(api(client, ns), watcher::Config::default()).reconcile_on(receive(pool_rx));
    let releases = claims::controller(client, api(client, ns));
    let release_scope = Arc::new(claims::Scope { ctx: ctx.clone(), namespace: ns.to_string() });
    let policies = fleet_status::controller::<DomainPolicy>(api(client, ns), receive(policy_rx), &ctx);
    let plans = fleet_status::controller::<WarmupPlan>(api(client, ns), receive(plan_rx), &ctx);

    // graceful_shutdown_on wants a Sync future per controller: race the
    // shutdown signal against lost leadership in a task and hand its
    // verdict to each controller over its own oneshot.
    let (stop_txs, stop_rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| tokio::sync::oneshot::channel::<()>()).unzip();
    let (why_tx, why_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let stopper = tokio::spawn(async move {
        let why = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => "shutdown signal",
            _ = async {
                match &elector {
                    Some(e) => e.hold().await,
                    None => std::future::pending().await,
                }
            } => LOST,
        };
        let _ = why_tx.send(why);
        for tx in stop_txs {
            let _ = tx.send(());
        }
    });
    let mut stop = stop_rxs.into_iter().map(|rx| async move {
        let _ = rx.await;
    });
    tokio::join!(
        pools
            .graceful_shutdown_on(stop.next().expect("four"))
            .run(pool::reconcile, pool::error_policy, ctx.clone())
            .for_each(log_event),
        policies
            .graceful_shutdown_on(stop.next().expect("four"))
            .run(fleet_status::reconcile, fleet_status::error_policy, ctx.clone())
            .for_each(log_event),
        plans
            .graceful_shutdown_on(stop.next().expect("four"))
            .run(fleet_status::reconcile, fleet_status::error_policy, ctx.clone())
            .for_each(log_event),
        releases
            .graceful_shutdown_on(stop.next().expect("four"))
            .run(claims::reconcile, claims::error_policy, release_scope)
            .for_each(log_event),
    );
    // All four ended: normally because the stopper fired (it says why
    // before it stops them).
    stopper.abort();
    poller.abort();
    *ctx.caches.write().unwrap_or_else(|p| p.into_inner()) = None;
    drop(caches);
    why_rx.await.unwrap_or("controller stream ended")
}

/// A channel's receiving end as a stream (the controllers' triggers).
fn receive<T: Send + 'static>(rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

async fn log_event<T, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(error) = res {
        tracing::debug!(%error, "controller event");
    }
}
