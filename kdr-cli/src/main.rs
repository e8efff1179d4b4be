//! `kdr`: ad-hoc disaster-recovery operations. Parsing and composition only; the logic is in
//! kdr-core. Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod rejoin;

#[derive(Debug, Parser)]
#[command(name = "kdr", version, about = "Kubernetes control-plane disaster recovery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring workers under the new control plane (rewire or rejoin), in parallel.
    Rejoin(rejoin::RejoinArgs),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let result = match tokio::runtime::Runtime::new() {
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
        Ok(rt) => rt.block_on(async {
            match cli.command {
                Command::Rejoin(args) => rejoin::run(args).await,
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // kdr-core's errors already carry their cause in their message: print each cause once.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !msg.contains(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            eprintln!("error: {msg}");
            let usage = e.chain().any(|c| c.downcast_ref::<kdr_core::Error>().is_some_and(|k| k.is_usage()));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
