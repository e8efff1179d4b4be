//! `kdr pause|resume|rearm`: act on the running monitor's detector (through its state dir).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kdr_core::clock::SystemClock;
use kdr_core::monitor::control::{ControlRequest, request};

use crate::common::{self, GlobalArgs};

/// `[monitor] state_dir` of the config file (the default when there is none).
fn state_dir_from_config(g: &GlobalArgs) -> anyhow::Result<PathBuf> {
    Ok(common::load_config(g)?.monitor.state_dir)
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The monitor's state dir (default: [monitor] state_dir of the config).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long to wait for the running monitor to apply it, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    wait: u64,
}

pub async fn run(g: &GlobalArgs, req: ControlRequest, a: ControlArgs) -> anyhow::Result<ExitCode> {
    let dir = match a.state_dir {
        Some(d) => d,
        None => state_dir_from_config(g)?,
    };
    let by = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "kdr".into());
    let out =
        request(&dir, req, &format!("{by} (kdr cli)"), &SystemClock, Duration::from_secs(a.wait)).await?;
    let state = out.state.map(|s| format!("epoch {}, latch {:?}, paused {}", s.epoch, s.latch, s.paused));
    let state = state.unwrap_or_else(|| "no state file yet".into());
    if out.applied {
        println!("{req:?} applied by the running monitor ({}): {state}", dir.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{req:?} queued in {}, but no running monitor picked it up within {} s; it applies when the \
             monitor next starts. Current state: {state}",
            dir.display(),
            a.wait
        );
        Ok(ExitCode::from(1))
    }
}
