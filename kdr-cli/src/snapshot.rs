//! `kdr snapshot list|show|verify|download|prune|delete`.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::config::Config;
use kdr_core::snapshot::keys::EncryptionKey;
use kdr_core::snapshot::{Encryption, Manifest, ObjectKind, SnapshotId, SnapshotStore, retention, verify};

use crate::common::{self, GlobalArgs, Output, human_bytes, print_json, print_table};

#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store: s3://bucket/prefix, gs://, az://, file:///dir, memory://. Env: KDR_STORE.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyArg {
    /// The age identity file, to check or read encrypted sets. Env: KDR_ENCRYPTION_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Complete backup sets, newest first.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
    /// A set's manifest (the latest by default).
    Show {
        /// Set id, or `latest`.
        id: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Re-read a set (the latest by default) and check every hash; exits 1 on any mismatch.
    Verify {
        /// Set id, or `latest`.
        id: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Download a set's snapshot and bundle into a directory, decoded (etcd.db, bundle.tar).
    Download {
        /// Set id, or `latest`.
        id: Option<String>,
        /// Directory to write into (created if missing; existing files are not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Write the objects as stored (compressed/encrypted) instead of decoded.
        #[arg(long)]
        as_stored: bool,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Apply the retention policy and sweep interrupted backups.
    Prune {
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep the N newest sets.
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest set of each of the last N hours with a set.
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        /// ... days.
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// ... ISO weeks.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// ... months.
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Delete sets by id (complete or incomplete).
    Delete {
        /// Set ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        store: StoreArg,
    },
}

fn config_with(g: &GlobalArgs, store: StoreArg) -> anyhow::Result<Config> {
    let mut c = common::load_config(g)?;
    if store.store.is_some() {
        c.store.url = store.store;
    }
    Ok(c)
}

fn key_of(c: &mut Config, key: KeyArg) -> anyhow::Result<Option<EncryptionKey>> {
    if key.encryption_key_file.is_some() {
        c.backup.encryption_key_file = key.encryption_key_file;
    }
    common::config_err(c.encryption_key())
}

async fn resolve(store: &dyn SnapshotStore, id: Option<&str>) -> anyhow::Result<Manifest> {
    match id {
        None | Some("latest") => store.latest().await?.ok_or_else(|| {
            kdr_core::Error::NotFound { what: format!("any backup set in {}", store.describe()), hint: None }
                .into()
        }),
        Some(id) => Ok(store.manifest(&SnapshotId::parse(id)?).await?),
    }
}

fn encryption_label(m: &Manifest) -> String {
    match &m.encryption {
        Encryption::None => "no".into(),
        Encryption::AgeX25519 { .. } => "age".into(),
        #[allow(unreachable_patterns)]
        _ => "yes".into(),
    }
}

pub async fn run(g: &GlobalArgs, cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::List { store } => {
            let c = config_with(g, store)?;
            let store = common::open_store(&c)?;
            let sets = store.list().await?;
            if g.output == Output::Json {
                print_json(&sets)?;
            } else {
                let mut rows = vec![
                    ["ID", "CREATED", "CLUSTER", "ETCD", "REVISION", "KEYS", "STORED", "ENCRYPTED"]
                        .map(String::from)
                        .to_vec(),
                ];
                for m in &sets {
                    rows.push(vec![
                        m.id.to_string(),
                        m.created_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                        m.cluster_name.clone(),
                        m.source.etcd_version.clone(),
                        m.source.revision.to_string(),
                        m.total_keys.to_string(),
                        human_bytes(m.stored_bytes()),
                        encryption_label(m),
                    ]);
                }
                print_table(&rows);
            }
        }
        SnapshotCommand::Show { id, store } => {
            let c = config_with(g, store)?;
            let store = common::open_store(&c)?;
            let m = resolve(store.as_ref(), id.as_deref()).await?;
            if g.output == Output::Json {
                print_json(&m)?;
            } else {
                show(&m);
            }
        }
        SnapshotCommand::Verify { id, store, key } => {
            let mut c = config_with(g, store)?;
            let key = key_of(&mut c, key)?;
            let store = common::open_store(&c)?;
            let m = resolve(store.as_ref(), id.as_deref()).await?;
            let report = verify::verify(store.as_ref(), &m, key.as_ref()).await?;
            if g.output == Output::Json {
                print_json(&report)?;
            } else {
                let mut rows = vec![vec!["OBJECT".to_owned(), "RESULT".to_owned(), "DETAIL".to_owned()]];
                for o in &report.objects {
                    rows.push(vec![
                        o.name.clone(),
                        if o.ok { "ok" } else { "FAILED" }.to_owned(),
                        o.detail.clone(),
                    ]);
                }
                print_table(&rows);
                eprintln!(
                    "backup set {}: {}",
                    report.id,
                    if report.is_ok() { "verified" } else { "VERIFICATION FAILED" }
                );
            }
            if !report.is_ok() {
                return Ok(ExitCode::from(1));
            }
        }
        SnapshotCommand::Download { id, out, as_stored, store, key } => {
            let mut c = config_with(g, store)?;
            let key = key_of(&mut c, key)?;
            let store = common::open_store(&c)?;
            let m = resolve(store.as_ref(), id.as_deref()).await?;
            std::fs::create_dir_all(&out)
                .map_err(|e| kdr_core::Error::io(format!("failed to create {}", out.display()), e))?;
            let mut written = Vec::new();
            for entry in &m.objects {
                let name = if as_stored {
                    entry.name.clone()
                } else {
                    match entry.kind {
                        ObjectKind::EtcdSnapshot => "etcd.db".to_owned(),
                        ObjectKind::Bundle => "bundle.tar".to_owned(),
                    }
                };
                let dest = out.join(&name);
                let n =
                    verify::download(store.as_ref(), &m, entry.kind, key.as_ref(), &dest, as_stored).await?;
                written.push(serde_json::json!({ "path": dest, "bytes": n }));
            }
            if g.output == Output::Json {
                print_json(&serde_json::json!({ "id": m.id, "files": written }))?;
            } else {
                for w in &written {
                    crate::common::out(w["path"].as_str().unwrap_or_default());
                }
            }
        }
        SnapshotCommand::Prune {
            dry_run,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            store,
        } => {
            let c = config_with(g, store)?;
            let mut policy = c.retention;
            for (slot, v) in [
                (&mut policy.keep_last, keep_last),
                (&mut policy.keep_hourly, keep_hourly),
                (&mut policy.keep_daily, keep_daily),
                (&mut policy.keep_weekly, keep_weekly),
                (&mut policy.keep_monthly, keep_monthly),
            ] {
                if let Some(v) = v {
                    *slot = v;
                }
            }
            let store = common::open_store(&c)?;
            let report = retention::prune(store.as_ref(), &policy, SystemClock.utc(), dry_run).await?;
            if g.output == Output::Json {
                print_json(&report)?;
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                let mut rows = vec![vec!["ID".to_owned(), "ACTION".to_owned(), "WHY".to_owned()]];
                for (id, reasons) in &report.plan.keep {
                    let why: Vec<String> = reasons.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
                    rows.push(vec![id.to_string(), "keep".into(), why.join(",")]);
                }
                for id in &report.plan.delete {
                    rows.push(vec![id.to_string(), verb.into(), "retention".into()]);
                }
                for (id, reason) in &report.incomplete {
                    rows.push(vec![id.clone(), verb.into(), format!("incomplete: {reason}")]);
                }
                print_table(&rows);
            }
        }
        SnapshotCommand::Delete { ids, store } => {
            let c = config_with(g, store)?;
            let store = common::open_store(&c)?;
            for id in &ids {
                // Accept complete and incomplete sets, but only kdr-shaped ids.
                SnapshotId::parse(id)?;
                store.delete(id).await?;
                if g.output == Output::Table {
                    crate::common::out(&format!("deleted {id}"));
                }
            }
            if g.output == Output::Json {
                print_json(&serde_json::json!({ "deleted": ids }))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(m: &Manifest) {
    let rows = vec![
        vec!["id".to_owned(), m.id.to_string()],
        vec!["created".into(), m.created_at.to_rfc3339()],
        vec!["duration".into(), format!("{:.1}s", m.duration_ms as f64 / 1000.0)],
        vec!["cluster".into(), m.cluster_name.clone()],
        vec![
            "source".into(),
            format!("{} ({} {})", m.source.endpoint, m.source.member_name, m.source.member_id),
        ],
        vec!["etcd version".into(), m.source.etcd_version.clone()],
        vec!["revision".into(), m.source.revision.to_string()],
        vec!["db size".into(), human_bytes(m.source.db_size)],
        vec!["etcd hash verified".into(), m.etcd_hash_verified.to_string()],
        vec!["compression".into(), format!("{:?}", m.compression).to_lowercase()],
        vec![
            "encryption".into(),
            match &m.encryption {
                Encryption::AgeX25519 { recipient } => format!("age to {recipient}"),
                _ => "none".into(),
            },
        ],
        vec!["keys".into(), m.total_keys.to_string()],
        vec![
            "pod names".into(),
            match &m.pods {
                Some(p) if p.truncated => format!("{} (truncated)", p.names.len()),
                Some(p) => p.names.len().to_string(),
                None => "not recorded (an older kdr wrote this set)".into(),
            },
        ],
    ];
    print_table(&rows);
    crate::common::out("");
    let mut objs = vec![["OBJECT", "STORED", "RAW", "STORED SHA256"].map(String::from).to_vec()];
    for o in &m.objects {
        objs.push(vec![
            o.name.clone(),
            human_bytes(o.stored_size),
            human_bytes(o.raw_size),
            o.stored_sha256.clone(),
        ]);
    }
    print_table(&objs);
    crate::common::out("");
    let mut inv = vec![vec!["RESOURCE".to_owned(), "KEYS".to_owned()]];
    inv.extend(m.key_inventory.iter().map(|(k, v)| vec![k.clone(), v.to_string()]));
    print_table(&inv);
    if !m.bundle_files.is_empty() {
        crate::common::out("");
        let mut files = vec![vec!["BUNDLED FILE".to_owned(), "MODE".to_owned(), "SIZE".to_owned()]];
        files.extend(
            m.bundle_files.iter().map(|f| vec![f.path.clone(), format!("{:o}", f.mode), f.size.to_string()]),
        );
        print_table(&files);
    }
}
