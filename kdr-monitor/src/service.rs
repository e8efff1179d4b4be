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
    /// The kdr configuration file (TOML; see examples/kdr.toml). Default: `KDR_CONFIG`, else
    /// /etc/kdr/kdr.toml if it exists (the same rule as `kdr`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn load(path: Option<&Path>) -> anyhow::Result<(PathBuf, Config)> {
    let env = std::env::vars().collect();
    let path = kdr_core::config::find_config_file(path, &env).ok_or_else(|| {
        kdr_core::Error::config(
            "--config",
            format!(
                "kdr-monitor needs a configuration file: pass --config FILE, set KDR_CONFIG, or create {}",
                kdr_core::config::DEFAULT_CONFIG_PATH
            ),
        )
    })?;
    let config = Config::load(&path, &env)?;
    Ok((path, config))
}

/// Logs go to stderr. `json`: one object per line with `timestamp`, `level`, `message`, the
/// event's fields and `target` at the top level (flattened, as log shippers expect).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

/// `kdr-monitor run`. With `log_format = "json"`, a failure after the config was loaded is
/// logged as a JSON line and returned as [`Reported`], so that stderr stays all JSON; an
/// unreadable config is reported as plain text (the format is not known yet).
pub fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let (_, config) = load(args.config.as_deref())?;
    let format = config.monitor.log_format;
    init_tracing(format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            Ok(rt.block_on(kdr_core::monitor::run(config, Arc::new(SystemClock), async {
                kdr_core::shutdown::stop_signal().await;
            }))?)
        });
    match result {
        Err(e) if format == LogFormat::Json => {
            tracing::error!(error = format!("{e:#}"), "kdr-monitor failed");
            Err(Reported(e).into())
        }
        other => other,
    }
}

/// An error already logged (in JSON); `main` maps it to an exit code without printing it again.
#[derive(Debug)]
pub struct Reported(pub anyhow::Error);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Reported {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.chain().next()
    }
}

/// `kdr-monitor check-config`: validates and prints the effective config, secrets redacted.
pub fn check_config(args: &ConfigArgs) -> anyhow::Result<()> {
    let (path, config) = load(args.config.as_deref())?;
    validate(&config)?;
    print!("{}", effective_toml(&config)?);
    eprintln!("{}: ok", path.display());
    Ok(())
}
