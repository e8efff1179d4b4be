//! The signals that stop the binaries: both `kdr` and `kdr-monitor` stop on the first of SIGINT
//! (Ctrl-C) and SIGTERM (systemd, kubelet, the monitor stopping a child).

/// Resolves with the name of the first of SIGINT and SIGTERM to arrive. If SIGTERM cannot be
/// watched, only SIGINT stops.
pub async fn stop_signal() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = term => "SIGTERM",
    }
}
