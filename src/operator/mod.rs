//! `sendfleet operator`: the Kubernetes side of sendfleet.
//!
//! Wires the API client, leader election, the metrics/health server and
//! three controllers together, all sharing one [`context::Context`]:
//! - SendingPool: the reconcile pipeline in [`pool`] (its module doc is the
//!   map: dereference -> observe -> render -> apply -> prune -> status);
//! - DomainPolicy ([`domain_policy`]) and WarmupPlan ([`warmup_plan`]): their
//!   status, through the generic controller in [`fleet_status`], from the
//!   namespace's pools and the [`fleet`] index the pool pipeline fills.
//!
//! Only the leader runs the controllers, so only the leader writes. The
//! operator never touches Postfix directly: it writes ConfigMaps and the
//! agents in the pods do the rest.

pub mod agent_client;
pub mod apply;
pub mod context;
pub mod domain_policy;
pub mod error;
pub mod events;
pub mod fleet;
pub mod fleet_status;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod rbac;
pub mod reputation;
pub mod status;
pub mod warmup_plan;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use sendfleet_render::api::{DomainPolicy, SendingPool, WarmupPlan};
use sendfleet_render::objects::{FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_POOL};
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
    let settings = Settings { default_image: args.instance_image.clone(), ..Settings::default() };
    let dns = crate::dns::HickoryDns::new(&crate::dns::ResolverSettings {
        nameservers: args.dns_servers.clone(),
        timeout: args.dns_timeout,
        ..Default::default()
    })?;
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(args.identity.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics: metrics::Metrics::default(),
        recorder: Recorder::new(client.clone(), reporter),
        reputation: reputation::Reputation::new(dns, args.dnsbl_interval_override, args.dns_unknown_after),
        resync: args.resync_interval,
        agent_poll: args.agent_poll_interval,
        fleet: Default::default(),
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

/// Run the three controllers until shutdown or lost leadership; returns
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
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    let controller = Controller::<SendingPool>::new(api(client, ns), watcher::Config::default());
    let store = controller.store();
    let store_for_plans = store.clone();
    // A DomainPolicy change may select or unselect any pool of its
    // namespace (labels can change on either side), so it reconciles them
    // all; pools it does not affect render identically and write nothing.
    let by_namespace = move |ns: Option<String>| {
        store.state().into_iter().filter(|p| p.namespace() == ns).map(|p| ObjectRef::from_obj(&*p)).collect::<Vec<_>>()
    };
    let pools = controller
        .owns::<StatefulSet>(api(client, ns), owned.clone())
        .owns::<ConfigMap>(api(client, ns), owned.clone())
        .watches::<DomainPolicy, _>(api(client, ns), watcher::Config::default(), move |p| by_namespace(p.namespace()))
        .watches::<WarmupPlan, _>(api(client, ns), watcher::Config::default(), move |plan| {
            store_for_plans
                .state()
                .into_iter()
                .filter(|p| {
                    p.namespace() == plan.namespace()
                        && p.spec.warmup_plan_ref.as_deref() == Some(plan.name_any().as_str())
                })
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .watches::<Pod, _>(api(client, ns), owned, |pod| {
            let pool = pod.labels().get(LABEL_POOL)?.clone();
            Some(ObjectRef::new(&pool).within(&pod.namespace()?))
        });
    let policies = fleet_status::controller::<DomainPolicy>(api(client, ns), api(client, ns), &ctx);
    let plans = fleet_status::controller::<WarmupPlan>(api(client, ns), api(client, ns), &ctx);

    // graceful_shutdown_on wants a Sync future per controller: race the
    // shutdown signal against lost leadership in a task and hand its
    // verdict to each controller over its own oneshot.
    let (stop_txs, stop_rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| tokio::sync::oneshot::channel::<()>()).unzip();
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
            .graceful_shutdown_on(stop.next().expect("three"))
            .run(pool::reconcile, pool::error_policy, ctx.clone())
            .for_each(log_event),
        policies
            .graceful_shutdown_on(stop.next().expect("three"))
            .run(fleet_status::reconcile, fleet_status::error_policy, ctx.clone())
            .for_each(log_event),
        plans
            .graceful_shutdown_on(stop.next().expect("three"))
            .run(fleet_status::reconcile, fleet_status::error_policy, ctx)
            .for_each(log_event),
    );
    // All three ended: normally because the stopper fired (it says why
    // before it stops them).
    stopper.abort();
    why_rx.await.unwrap_or("controller stream ended")
}

async fn log_event<T, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(error) = res {
        tracing::debug!(%error, "controller event");
    }
}
