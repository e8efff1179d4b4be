//! `kdr failover --config FILE [--dry-run] [--epoch N]`: promote this standby (claim, fence,
//! restore, kubeadm init, workers, checks, hooks), resuming from the journal after a crash.
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use kdr_core::clock::SystemClock;
use kdr_core::runbook::{EpochRequest, build_runbook};

use crate::common::{self, GlobalArgs, Output};

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Print the whole plan (hosts, commands, paths, the chosen backup set) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The epoch to promote; refused if the store holds a claim of it or a later epoch from
    /// another run. Default: the epoch of a failover the local monitor's detector started and did
    /// not finish (its state file in `[monitor] state_dir`) while it is still this standby's, else
    /// resume an unfinished promotion, else the newest claimed epoch + 1.
    #[arg(long, value_name = "N")]
    epoch: Option<u64>,
}

pub async fn run(g: &GlobalArgs, a: FailoverArgs) -> anyhow::Result<ExitCode> {
    let cfg = common::require_config(g, "kdr failover", "[promotion], [fence], [store], [[workers]], ...")?;
    let runbook = build_runbook(&cfg, Arc::new(SystemClock))?;
    let epoch = match a.epoch {
        Some(n) => EpochRequest::Exact(n),
        None => detector_epoch(&cfg)?.map_or(EpochRequest::Next, EpochRequest::Detector),
    };
    if a.dry_run {
        let plan = runbook.plan_for(epoch).await?;
        match g.output {
            Output::Json => common::print_json(&plan)?,
            Output::Table => common::out(&plan.to_string()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = runbook.run_for(epoch).await?;
    match g.output {
        Output::Json => common::print_json(&report)?,
        Output::Table => common::out(&report.to_string()),
    }
    if report.succeeded() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: workers failed: {}", report.failed_workers().join(", "));
        Ok(ExitCode::from(1))
    }
}

/// The epoch of a failover the local monitor's detector decided but did not see through (latched
/// in progress or halted), from its state file; `None` without one.
fn detector_epoch(cfg: &kdr_core::config::Config) -> anyhow::Result<Option<u64>> {
    use kdr_core::failover::{FileStateStore, Latch, StateStore};
    let path = cfg.monitor.state_file();
    let Some(state) = FileStateStore::new(&path).load()? else { return Ok(None) };
    Ok(match state.latch {
        Latch::InProgress { epoch, .. } | Latch::Halted { epoch, .. } => {
            eprintln!(
                "kdr failover: epoch {epoch}, the failover the monitor's detector started ({}), unless another \
                 run claimed it; pass --epoch to override",
                path.display()
            );
            Some(epoch)
        }
        _ => None,
    })
}
