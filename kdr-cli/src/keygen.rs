//! `kdr keygen --out FILE`: a new age identity for encrypted backups.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::snapshot::keys::EncryptionKey;

use crate::common::{GlobalArgs, Output, print_json};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity (created with mode 0600; never overwritten). Keep a copy
    /// off-cluster: without it, encrypted backups cannot be restored.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(g: &GlobalArgs, args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = EncryptionKey::generate_file(&args.out, SystemClock.utc())?;
    match g.output {
        Output::Json => print_json(&serde_json::json!({ "file": args.out, "recipient": key.recipient() }))?,
        Output::Table => {
            eprintln!("wrote {} (mode 0600); public key (recipient):", args.out.display());
            crate::common::out(&key.recipient());
        }
    }
    Ok(ExitCode::SUCCESS)
}
