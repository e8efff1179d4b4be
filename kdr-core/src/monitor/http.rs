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
        .route("/healthz", get(healthz))
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

/// `200 ok` while every loop keeps its heartbeat; `503` naming each stalled loop otherwise. The
/// body lists every loop with the age of its last turn, so a probe's log shows what stopped.
async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (stalled, loops) = shared.health();
    let now = shared.clock.utc();
    let mut body = String::new();
    if stalled.is_empty() {
        body.push_str("ok\n");
    } else {
        for s in &stalled {
            body.push_str(&format!(
                "stalled: the {} loop has not completed a turn for {:.0} s (allowed {:.0} s; it was {})\n",
                s.name,
                s.silent_for.as_secs_f64(),
                s.allowed.as_secs_f64(),
                s.doing
            ));
        }
    }
    for (name, l) in &loops {
        let age = (now - l.last_turn).num_milliseconds() as f64 / 1000.0;
        body.push_str(&format!("loop {name}: last turn {age:.1} s ago, {}\n", l.doing));
    }
    let code = if stalled.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Config;

    /// `/healthz` is 200 while every loop keeps its heartbeat, and 503 naming the stalled loop
    /// once one goes longer than it said it would.
    #[tokio::test]
    async fn healthz_names_a_stalled_loop() {
        let config = Config::from_toml("[monitor]\nroles = [\"standby\"]\n", "test").unwrap();
        let clock =
            Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH, crate::clock::SystemClock.instant()));
        let shared = Arc::new(Shared::new(&config, clock.clone()).unwrap());
        let body = |r: axum::response::Response| async move {
            let status = r.status();
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        };
        let (code, text) = body(healthz(State(shared.clone())).await.into_response()).await;
        assert_eq!((code, text.as_str()), (StatusCode::OK, "ok\n"), "no loop yet: healthy");

        shared.beat("standby", Duration::from_secs(3), "probing every 1s");
        shared.beat("backup", Duration::from_secs(60), "waiting for the next scheduled backup");
        clock.advance(Duration::from_secs(2));
        let (code, text) = body(healthz(State(shared.clone())).await.into_response()).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        assert!(text.contains("loop standby: last turn 2.0 s ago, probing every 1s"), "{text}");

        clock.advance(Duration::from_secs(2));
        let (code, text) = body(healthz(State(shared.clone())).await.into_response()).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(
            text.starts_with("stalled: the standby loop has not completed a turn for 4 s (allowed 3 s; it was probing every 1s)"),
            "{text}"
        );
        assert!(!text.contains("stalled: the backup"), "{text}");
        shared.beat("standby", Duration::from_secs(3), "probing every 1s");
        let (code, _) = body(healthz(State(shared.clone())).await.into_response()).await;
        assert_eq!(code, StatusCode::OK, "a turn makes it healthy again");
        assert!(shared.encode_metrics().contains("kdr_loop_last_turn_timestamp_seconds{loop=\"standby\"} 4"));
    }
}
