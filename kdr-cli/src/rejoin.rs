//! `kdr rejoin --config FILE [--worker NAME]...`: one-off worker recovery, run on the new
//! control plane.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kdr_core::clock::SystemClock;
use kdr_core::workers::{JoinSource, RecoveryMode, RecoveryRequest, recover_from_config};

use crate::common::{self, GlobalArgs};

#[derive(Debug, Args)]
pub struct RejoinArgs {
    /// Recover only this worker (repeatable); default: every [[workers]] entry.
    #[arg(long = "worker", value_name = "NAME")]
    workers: Vec<String>,
    /// Override worker_recovery.mode.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// rewire: the new API server URL (overrides worker_recovery.endpoint).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// rejoin: read the join command from this root-only file instead of creating a token
    /// with `kubeadm token create --print-join-command`. Never pass it on the command line.
    #[arg(long, value_name = "FILE")]
    join_command_file: Option<PathBuf>,
    /// rejoin: the kubeadm binary used to create the token.
    #[arg(long, default_value = "kubeadm")]
    kubeadm: String,
    /// rejoin: how long the created token stays valid (e.g. 30m, 2h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    token_ttl: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Rewire,
    Rejoin,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 30m or 2h ({e})"))
}

pub async fn run(g: &GlobalArgs, args: RejoinArgs) -> anyhow::Result<()> {
    let cfg = common::require_config(g, "kdr rejoin", "[ssh], [[workers]], [worker_recovery]")?;
    let join = match args.join_command_file {
        Some(f) => JoinSource::File(f),
        None => JoinSource::CreateToken {
            kubeadm: args.kubeadm,
            kubeconfig: cfg.worker_recovery.admin_kubeconfig.clone(),
            ttl: args.token_ttl,
        },
    };
    let req = RecoveryRequest {
        workers: args.workers,
        mode: args.mode.map(|m| match m {
            Mode::Rewire => RecoveryMode::Rewire,
            Mode::Rejoin => RecoveryMode::Rejoin,
        }),
        endpoint: args.endpoint,
        join,
    };
    let report = recover_from_config(&cfg, &req, &SystemClock).await.context("kdr rejoin")?;
    print!("{report}");
    report.check()?;
    Ok(())
}
