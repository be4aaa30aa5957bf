//! The agent's HTTP server: /metrics, /status, /healthz, /readyz (paths and
//! port from `sendfleet_render::contract`). Read-only: nothing here changes
//! state, so the routes are open to probes and the operator alike.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use sendfleet_render::contract::{PATH_HEALTHZ, PATH_METRICS, PATH_READYZ, PATH_STATUS};
use tokio::task::JoinHandle;

use super::state::State;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(PATH_METRICS, get(metrics))
        .route(PATH_STATUS, get(status))
        .route(PATH_HEALTHZ, get(healthz))
        .route(PATH_READYZ, get(readyz))
        .with_state(state)
}

/// Bind now (so a port conflict fails the start) and serve in the background.
pub async fn serve(addr: SocketAddr, state: Arc<State>) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "http listening");
    let app = router(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    }))
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn status(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    Json(state.status())
}

async fn healthz(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    if state.is_live() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn readyz(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
