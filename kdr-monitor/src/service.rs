//! `kdr-monitor run|check-config --config FILE`: load the configuration (file, then `KDR_*`
//! environment), then call `kdr_core::monitor`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdr_core::clock::SystemClock;
use kdr_core::config::Config;
use kdr_core::monitor::config::{LogFormat, effective_toml, validate};

/// Arguments of `run` and `check-config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The kdr configuration file (TOML; see examples/kdr.toml).
    #[arg(long, value_name = "FILE", env = "KDR_CONFIG")]
    config: PathBuf,
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, &std::env::vars().collect())?)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM (systemd, kubelet) or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `kdr-monitor run`.
pub fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    init_tracing(config.monitor.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(kdr_core::monitor::run(config, Arc::new(SystemClock), shutdown_signal()))?;
    Ok(())
}

/// `kdr-monitor check-config`: validates and prints the effective config, secrets redacted.
pub fn check_config(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    validate(&config)?;
    print!("{}", effective_toml(&config)?);
    eprintln!("{}: ok", args.config.display());
    Ok(())
}
