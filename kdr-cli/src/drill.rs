//! `kdr drill`: prove a backup set restores. Restores it into a temporary dir, serves it with a
//! throwaway etcd on loopback, compares the keys with the manifest and exits 1 on any mismatch.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kdr_core::clock::SystemClock;
use kdr_core::restore::{DrillOptions, DrillReport, SetSelector, drill};

use crate::common::{self, GlobalArgs, Output, human_bytes, out, print_json, print_table};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The store: s3://bucket/prefix, gs://, az://, file:///dir, memory://. Env: KDR_STORE.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The set to drill (default: the newest complete one).
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    snapshot: Option<String>,
    /// Drill the newest set taken at or before TIME (RFC 3339).
    #[arg(long, value_name = "TIME")]
    before: Option<String>,
    /// The age identity file of an encrypted set. Env: KDR_ENCRYPTION_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Where to make the temporary dir (needs about twice the db size; default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The etcd binary to serve the restored dir (default: etcd on PATH). Env: KDR_ETCD_BIN.
    #[arg(long, value_name = "PATH")]
    etcd: Option<PathBuf>,
    /// The etcdutl binary (default: etcdutl on PATH). Env: KDR_ETCDUTL.
    #[arg(long, value_name = "PATH")]
    etcdutl: Option<PathBuf>,
    /// The etcdctl binary, used when there is no etcdutl (etcd 3.4). Env: KDR_ETCDCTL.
    #[arg(long, value_name = "PATH")]
    etcdctl: Option<PathBuf>,
    /// How long the throwaway etcd may take to start, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    start_timeout: u64,
}

pub async fn run(g: &GlobalArgs, a: DrillArgs) -> anyhow::Result<ExitCode> {
    let mut config = common::load_config(g)?;
    if a.store.is_some() {
        config.store.url = a.store;
    }
    if a.encryption_key_file.is_some() {
        config.backup.encryption_key_file = a.encryption_key_file;
    }
    let r = &mut config.restore;
    for (flag, slot) in [(a.etcd, &mut r.etcd), (a.etcdutl, &mut r.etcdutl), (a.etcdctl, &mut r.etcdctl)] {
        if let Some(p) = flag {
            *slot = p;
        }
    }
    if a.work_dir.is_some() {
        r.work_dir = a.work_dir;
    }
    let opts = DrillOptions {
        set: SetSelector::from_flags(a.snapshot.as_deref(), a.before.as_deref())?,
        work_dir: r.work_dir.clone().unwrap_or_else(std::env::temp_dir),
        etcd_binary: r.etcd.clone(),
        encryption_key: config.encryption_key()?,
        start_timeout: Duration::from_secs(a.start_timeout),
    };
    let store = common::open_store(&config)?;
    let restorer = config.restore.restorer();
    let report = drill(store.as_ref(), &restorer, &SystemClock, &opts).await?;
    match g.output {
        Output::Json => print_json(&report)?,
        Output::Table => print_verdict(&report),
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_verdict(r: &DrillReport) {
    out(&format!(
        "drill of backup set {} from {}: {}",
        r.set,
        r.store,
        if r.passed() { "PASSED" } else { "FAILED" }
    ));
    out(&format!(
        "  restored   {} with {} and served it with a throwaway etcd",
        human_bytes(r.snapshot_bytes),
        r.etcd.tool
    ));
    out(&format!(
        "  keys       {} expected, {} found at revision {}{}",
        r.expected_keys,
        r.found_keys,
        r.compared_at,
        if r.compared_at != r.revision {
            format!(" (backup revision {})", r.revision)
        } else {
            String::new()
        }
    ));
    out(&format!("  bundle     {} files verified against the manifest", r.bundle_files));
    out(&format!(
        "  timings    download {:.1}s, restore+verify {:.1}s, start+count {:.1}s",
        r.download_ms as f64 / 1000.0,
        r.restore_ms as f64 / 1000.0,
        r.check_ms as f64 / 1000.0
    ));
    if !r.diffs.is_empty() {
        let mut rows = vec![vec![
            "RESOURCE".into(),
            "EXPECTED".into(),
            "FOUND".into(),
            "MISSED".into(),
            "SURPLUS".into(),
        ]];
        rows.extend(r.diffs.iter().map(|d| {
            vec![
                d.resource.clone(),
                d.expected.to_string(),
                d.found.to_string(),
                d.missed().to_string(),
                d.surplus().to_string(),
            ]
        }));
        print_table(&rows);
    }
    for n in &r.notes {
        out(&format!("  NOTE: {n}"));
    }
}
