//! The HTTP endpoint (axum): `/metrics` (Prometheus text format), `/healthz`, `/status` (JSON).
//! Read-only: nothing served here changes the monitor (see [`super::control`] for that).
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Shared, stopped};
use crate::error::{Error, Result};

/// The router, for tests and embedding.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.encode_metrics(),
    )
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(shared.status())
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { stopped(&mut stop).await })
        .await
        .map_err(|e| Error::io("the HTTP endpoint failed", e))
}
