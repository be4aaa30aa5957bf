//! The agent's HTTP server: /metrics, /status, /healthz, /readyz (paths and
//! port from `sendfleet_render::contract`). Read-only: nothing here changes
//! state.
//!
//! /status and /metrics answer only a request carrying the pool's agent
//! token ([`super::auth`]); anything else gets 401 with `WWW-Authenticate:
//! Bearer` and learns nothing. /healthz and /readyz stay open for the
//! kubelet's probes and answer ok or not, nothing more. It must never serve
//! a guarded route before checking the token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sendfleet_render::contract::{PATH_HEALTHZ, PATH_METRICS, PATH_READYZ, PATH_STATUS};
use tokio::task::JoinHandle;

use super::auth::Access;
use super::state::State;

pub fn router(state: Arc<State>, access: Access) -> Router {
    let guarded = Router::new()
        .route(PATH_METRICS, get(metrics))
        .route(PATH_STATUS, get(status))
        .route_layer(middleware::from_fn_with_state((state.clone(), Arc::new(access)), require_token));
    Router::new().merge(guarded).route(PATH_HEALTHZ, get(healthz)).route(PATH_READYZ, get(readyz)).with_state(state)
}

/// Bind now (so a port conflict fails the start) and serve in the background.
pub async fn serve(addr: SocketAddr, state: Arc<State>, access: Access) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, authenticated = matches!(access, Access::Token(_)), "http listening");
    let app = router(state, access);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    }))
}

async fn require_token(
    AxState((state, access)): AxState<(Arc<State>, Arc<Access>)>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if access.allows(presented) {
        return next.run(request).await;
    }
    state.metrics.http_unauthorized.inc();
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized").into_response()
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn status(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    Json(state.status())
}

/// Healthy: alive and none of the agent's own tasks has ended (a dead log
/// pipeline or queue monitor restarts the pod through the liveness probe).
async fn healthz(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    if state.is_healthy() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ok")
    }
}

async fn readyz(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
