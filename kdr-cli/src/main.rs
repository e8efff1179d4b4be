//! `kdr`: ad-hoc disaster-recovery operations for kubeadm clusters.
//!
//! Thin by design: each subcommand (one file each) parses its flags, loads the configuration
//! (file, then `KDR_*` environment, then flags), calls one kdr-core entry point and prints the
//! result. Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kdr_core::monitor::control::ControlRequest;

mod backup;
mod common;
mod control;
mod drill;
mod failover;
mod keygen;
mod rejoin;
mod restore;
mod snapshot;

/// Kubernetes control-plane disaster recovery for kubeadm clusters.
#[derive(Debug, Parser)]
#[command(name = "kdr", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: common::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream a backup set (etcd snapshot + control-plane bundle + manifest) to a store.
    Backup(backup::BackupArgs),
    /// List, inspect, verify, download, prune and delete backup sets.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Generate an age identity file for encrypted backups (mode 0600).
    Keygen(keygen::KeygenArgs),
    /// Restore a backup set into an etcd data dir (verified first; the old dir is moved aside).
    Restore(restore::RestoreArgs),
    /// Prove a backup set restores: restore it into a temp dir, serve it, compare its keys.
    Drill(drill::DrillArgs),
    /// Pause the running monitor's automatic failover (observe and alert only; survives restarts).
    Pause(control::ControlArgs),
    /// Resume automatic failover (evidence collection starts from zero).
    Resume(control::ControlArgs),
    /// Re-arm a latched detector after a promotion (a block period follows).
    Rearm(control::ControlArgs),
    /// Bring workers under the new control plane (rewire or rejoin), in parallel.
    Rejoin(rejoin::RejoinArgs),
    /// Promote this standby: claim the epoch, fence, restore, kubeadm init, workers, checks, hooks.
    Failover(failover::FailoverArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    common::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return common::report(anyhow::Error::new(e).context("failed to start the async runtime")),
    };
    // `kdr backup` aborts its upload on Ctrl-C itself. Any other command stops on SIGINT or
    // SIGTERM (the monitor stopping a `kdr failover` it started) by dropping its work: that stops
    // the process groups of the children it started (kubeadm, etcdutl, hooks), which would
    // otherwise outlive it, since they do not share its group.
    let stops_on_signal = !matches!(cli.command, Command::Backup(_));
    let result = runtime.block_on(async {
        let work = async {
            match cli.command {
                Command::Backup(args) => backup::run(&cli.global, args).await,
                Command::Snapshot(cmd) => snapshot::run(&cli.global, cmd).await,
                Command::Keygen(args) => keygen::run(&cli.global, args),
                Command::Restore(args) => restore::run(&cli.global, args).await,
                Command::Drill(args) => drill::run(&cli.global, args).await,
                Command::Pause(a) => control::run(&cli.global, ControlRequest::Pause, a).await,
                Command::Resume(a) => control::run(&cli.global, ControlRequest::Resume, a).await,
                Command::Rearm(a) => control::run(&cli.global, ControlRequest::Rearm, a).await,
                Command::Rejoin(args) => rejoin::run(&cli.global, args).await.map(|()| ExitCode::SUCCESS),
                Command::Failover(args) => failover::run(&cli.global, args).await,
            }
        };
        if !stops_on_signal {
            return work.await;
        }
        tokio::select! {
            r = work => r,
            signal = kdr_core::shutdown::stop_signal() => {
                eprintln!("kdr: stopped by {signal}; the processes it started were stopped too");
                Ok(ExitCode::from(if signal == "SIGINT" { 130 } else { 143 }))
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => common::report(e),
    }
}
