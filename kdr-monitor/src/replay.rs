//! `kdr-monitor replay --trace FILE`: what would the detector have done with these observations?
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use kdr_core::failover::trace::{Trace, replay_default};

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recorded trace (JSON Lines, first line `{"config": {...}}`).
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
}

/// Parses the trace, replays it with the default policy and prints one JSON object per line.
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    // A trace that cannot be read is bad input (exit 2), like a malformed one.
    let text = std::fs::read_to_string(&args.trace).map_err(|e| {
        kdr_core::Error::config("--trace", format!("failed to read trace {}: {e}", args.trace.display()))
    })?;
    let trace = Trace::parse(&text, &args.trace.display().to_string())?;
    let lines =
        replay_default(&trace).with_context(|| format!("failed to replay {}", args.trace.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in lines {
        writeln!(out, "{}", line.to_json_line())?;
    }
    out.flush()?;
    Ok(())
}
