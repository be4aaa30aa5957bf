//! `sendfleet agent`: runs beside Postfix in every instance pod.
//!
//! It is the container entrypoint and supervises Postfix (`postfix -c DIR
//! start-fg` as a child, `maillog_file = /dev/stdout` so the mail log arrives
//! on a pipe). It:
//! - installs the rendered config from the mounted ConfigMap atomically and
//!   runs `postfix reload` — never a restart ([`install`]);
//! - answers Postfix's transport lookups over a socketmap ([`socketmap`]);
//! - parses the mail log, counts outcomes, and re-emits every log line on its
//!   own stdout with recipient addresses replaced by a keyed hash ([`log`],
//!   [`redact`]);
//! - scans the queue with `postqueue -j` ([`queue`]), and while the policy
//!   says the instance drains, retries its deferred mail at once ([`drain`]);
//! - runs the DKIM signer, OpenDKIM, with the pool's keys ([`signer`]);
//! - serves /metrics, /status, /healthz, /readyz ([`http`]).
//!
//! Every task shares one [`state::State`], which composes what the agent
//! knows by concern ([`policy_slot`], [`decisions`] with the [`day`] ledger,
//! [`tally`], [`flow`], [`health`], [`report`]) and owns the locking. This
//! file only wires the tasks together; flags are in [`args`].
//!
//! What it must never do: restart Postfix for a config change, let a
//! plaintext recipient address reach its stdout, stderr, metrics or /status,
//! or route mail the policy does not describe.

pub mod adaptive;
pub mod args;
pub mod auth;
pub mod clock;
pub mod counters;
pub mod day;
pub mod decisions;
pub mod drain;
pub mod flow;
pub mod health;
pub mod http;
pub mod install;
pub mod log;
pub mod metrics;
pub mod pipe;
pub mod policy_slot;
pub mod queue;
pub mod redact;
pub mod report;
pub mod signer;
pub mod socketmap;
pub mod state;
pub mod state_file;
pub mod supervise;
pub mod tally;
pub mod warmup;

pub use args::AgentArgs;

use std::sync::Arc;

/// Run the agent until SIGTERM/SIGINT or until Postfix exits unexpectedly.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    // The agent's own log is JSON on stderr (stdout carries the redacted
    // mail log). A subscriber set by the caller wins.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let redactor = redact::Redactor::from_file(&args.hash_key_file)?;
    std::fs::create_dir_all(&args.state_dir)?;
    let counters = counters::Counters::load(&args.state_dir)?;
    let state = Arc::new(state::State::new(args.clone(), counters));

    let access = auth::Access::from_file(args.auth_token_file.as_deref())?;
    if matches!(access, auth::Access::Open) {
        tracing::warn!("no --auth-token-file: /status and /metrics are open to anyone who can connect");
    }
    let http = http::serve(args.listen, state.clone(), access).await?;
    let socket = socketmap::server::Server::bind(&args.policy_socket)?;
    supervise::spawn_task(&state, supervise::TASK_SOCKETMAP, socket.run(state.clone()));

    state.set_live(true);
    // A config must be installed before Postfix can start.
    let installer = install::Installer::new(&args)?;
    installer.install_first(&state).await;
    // The DKIM signer listens before Postfix takes the first submission.
    let mut signer = signer::Signer::new(&args);
    if let Some(s) = signer.as_mut() {
        s.step(&state).await;
    }

    let mut child = if args.no_supervise {
        // The mail log arrives on stdin: its end is the pipeline's end.
        let pipeline = log::pipeline::run(tokio::io::stdin(), tokio::io::stdout(), state.clone(), redactor.clone());
        supervise::spawn_task(&state, supervise::TASK_LOG_PIPELINE, pipeline);
        None
    } else {
        Some(supervise::start(&args.postfix_dir, state.clone(), redactor.clone()).await?)
    };
    supervise::spawn_task(&state, supervise::TASK_CONFIG_WATCH, installer.watch(state.clone()));
    supervise::spawn_task(&state, supervise::TASK_QUEUE_MONITOR, queue::monitor::run(state.clone()));
    supervise::spawn_task(&state, supervise::TASK_STATE_FLUSH, state::flush_loop(state.clone()));
    supervise::spawn_task(&state, supervise::TASK_DRAIN, drain::run(state.clone()));
    if let Some(s) = signer {
        supervise::spawn_task(&state, supervise::TASK_SIGNER, s.run(state.clone()));
    }

    let result = supervise::wait(child.as_mut(), &args.postfix_dir, &state).await;
    state.set_live(false);
    if let Err(e) = state.save_counters() {
        tracing::warn!(error = %e, "saving counters at exit");
    }
    http.abort();
    let _ = std::fs::remove_file(&args.policy_socket);
    result
}
