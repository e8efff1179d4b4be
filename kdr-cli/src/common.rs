//! What every subcommand shares: global flags, configuration loading, output, progress, exit
//! codes.
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use kdr_core::config::Config;
use kdr_core::snapshot::{ObjectStoreSnapshotStore, SnapshotStore};

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Default: /etc/kdr/kdr.toml if it exists. Env: KDR_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: human tables or JSON for machines.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// More logging (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// JSON.
    Json,
}

pub fn init_tracing(g: &GlobalArgs) {
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kdr_core={level},kdr={level}")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The config file: `--config`, else `KDR_CONFIG`, else /etc/kdr/kdr.toml if it exists (the one
/// rule both binaries use, [`kdr_core::config::find_config_file`]).
fn config_path(g: &GlobalArgs, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    kdr_core::config::find_config_file(g.config.as_deref(), env)
}

/// Loads the configuration with [`Config::load`]: the file (if any), then the environment. Flags
/// are applied by the caller.
pub fn load_config(g: &GlobalArgs) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    match config_path(g, &env) {
        Some(p) => Ok(Config::load(&p, &env)?),
        None => {
            let mut config = Config::default();
            config.apply_env(&env)?;
            Ok(config)
        }
    }
}

/// Like [`load_config`], for commands that cannot run without a file (`needs` says what from it).
pub fn require_config(g: &GlobalArgs, command: &str, needs: &str) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let path = config_path(g, &env).ok_or_else(|| {
        kdr_core::Error::config(
            "--config",
            format!("{command} needs the config file ({needs}): pass --config FILE"),
        )
    })?;
    Ok(Config::load(&path, &env)?)
}

/// Treats a failure while reading configuration inputs (key files, URLs, options) as a usage or
/// configuration error: exit code 2.
pub fn config_err<T>(r: kdr_core::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        e @ kdr_core::Error::Config { .. } => e.into(),
        other => kdr_core::Error::config("configuration", other.to_string()).into(),
    })
}

/// Opens the store the configuration names.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn SnapshotStore>> {
    let store =
        config_err(ObjectStoreSnapshotStore::from_url(config.store_url()?, &config.store_options()?))?;
    Ok(Arc::new(store))
}

/// Prints an error and returns its exit code: 2 for usage/config errors, 1 otherwise.
pub fn report(e: anyhow::Error) -> ExitCode {
    let usage = e.chain().any(|c| c.downcast_ref::<kdr_core::Error>().is_some_and(|k| k.is_usage()));
    let top = e.to_string();
    let root = e.root_cause().to_string();
    eprintln!("error: {top}");
    if !top.contains(&root) {
        eprintln!("  caused by: {root}");
    }
    ExitCode::from(if usage { 2 } else { 1 })
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Writes a line to stdout; a closed pipe (`kdr ... | head`) is not an error.
pub fn out(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// Human-readable bytes.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Prints rows as an aligned table (first row is the header).
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        out(line.join("  ").trim_end());
    }
}

/// A progress bar on stderr when it is a terminal (and not in JSON mode); silent otherwise.
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    pub fn new(g: &GlobalArgs, what: &str) -> Arc<Self> {
        let bar = if g.output == Output::Table && std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style);
            }
            b.set_message(what.to_owned());
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        Arc::new(Self(bar))
    }
}

impl kdr_core::backup::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        // etcd's db size is an estimate: let the bar grow rather than overflow.
        if self.0.position() + bytes > self.0.length().unwrap_or(0) {
            self.0.set_length(self.0.position() + bytes);
        }
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
