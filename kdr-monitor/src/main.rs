//! `kdr-monitor`: the long-running failover monitor.
//!
//! Thin: parse arguments, call one kdr-core entry point, map the result to an exit code
//! (0 ok, 1 operation failed, 2 usage or input error).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod replay;
mod service;

#[derive(Debug, Parser)]
#[command(
    name = "kdr-monitor",
    version,
    about = "Watches the primary control plane and fails over to the standby"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the monitor: the primary's backups, drills and self-fence guard and/or the standby's
    /// detector and promotion, with /metrics, /healthz and /status. Stops on SIGTERM.
    Run(service::ConfigArgs),
    /// Validate the configuration and print the effective one (secrets redacted).
    CheckConfig(service::ConfigArgs),
    /// Replay a recorded trace (JSON Lines) through the failover detector and print its decisions.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // `run` sets up logging itself, in the configured format ([monitor] log_format).
        Command::Run(args) => service::run(&args),
        Command::CheckConfig(args) => {
            init_cli_tracing();
            service::check_config(&args)
        }
        Command::Replay(args) => {
            init_cli_tracing();
            replay::run(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `run` with JSON logs has logged it already, as JSON.
            if err.downcast_ref::<service::Reported>().is_none() {
                eprintln!("kdr-monitor: {err:#}");
            }
            exit_code(&err)
        }
    }
}

/// Logs go to stderr (RUST_LOG filters them); stdout carries only command output (replay's JSONL).
fn init_cli_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// 2 for bad input or configuration (a malformed trace), 1 for anything else.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    let usage =
        err.chain().any(|e| e.downcast_ref::<kdr_core::Error>().is_some_and(kdr_core::Error::is_usage));
    if usage { ExitCode::from(2) } else { ExitCode::from(1) }
}
