//! Polling with a deadline, and Prometheus text read with prometheus_parse: for tests that drive
//! the binaries and watch their files or `/metrics`.
use std::time::Duration;

use kdr_core::clock::{Clock, SystemClock};

/// Polls `f` every 200 ms until it gives a value; panics naming `what` after `limit`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = SystemClock.instant();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(SystemClock.instant() - start < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Parses a `/metrics` body.
pub fn parse_metrics(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parseable metrics")
}

/// The first sample named `name` whose labels include `labels` (counters as scraped, `_total`).
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}
