//! Restore drills: prove a backup set restores, by restoring it into a temporary dir, serving it
//! with a throwaway etcd and comparing its keys with the manifest's inventory (missed and surplus
//! keys per resource, like seed 002's sync check).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SetSelector, bundle, download, select_set};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::etcd::client::count_keys_at;
use crate::etcd::local::{LocalEtcd, LocalEtcdOptions};
use crate::etcd::{EtcdRestorer, RestorePlan, RestoreSpec};
use crate::snapshot::keys::EncryptionKey;
use crate::snapshot::{SnapshotId, SnapshotStore};

/// The member name of a drill's throwaway etcd.
const DRILL_MEMBER: &str = "kdr-drill";

/// One resource whose key count differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDiff {
    /// The resource (`pods`, `secrets`, ... or `other`).
    pub resource: String,
    /// Keys the manifest recorded.
    pub expected: u64,
    /// Keys found in the restored etcd.
    pub found: u64,
}

impl InventoryDiff {
    /// Keys in the backup's inventory but missing from the restore.
    pub fn missed(&self) -> u64 {
        self.expected.saturating_sub(self.found)
    }

    /// Keys in the restore that the inventory did not have.
    pub fn surplus(&self) -> u64 {
        self.found.saturating_sub(self.expected)
    }
}

/// The resources whose counts differ, in resource order.
pub fn compare_inventory(
    expected: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Vec<InventoryDiff> {
    let mut names: Vec<&String> = expected.keys().chain(found.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|r| {
            let (e, f) = (expected.get(r).copied().unwrap_or(0), found.get(r).copied().unwrap_or(0));
            (e != f).then(|| InventoryDiff { resource: r.clone(), expected: e, found: f })
        })
        .collect()
}

/// How to run a drill.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// The set to drill.
    pub set: SetSelector,
    /// Where the temporary dir is made (it needs about twice the db size).
    pub work_dir: PathBuf,
    /// The etcd binary that serves the restored dir.
    pub etcd_binary: PathBuf,
    /// The identity for an encrypted set.
    pub encryption_key: Option<EncryptionKey>,
    /// How long the throwaway etcd may take to start.
    pub start_timeout: Duration,
}

/// The verdict of a drill.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillReport {
    /// The set drilled.
    pub set: SnapshotId,
    /// The store it came from.
    pub store: String,
    /// The revision the backup took its inventory at.
    pub revision: i64,
    /// The revision the restored keys were counted at (the same unless it had been compacted).
    pub compared_at: i64,
    /// Keys the manifest recorded.
    pub expected_keys: u64,
    /// Keys found in the restored etcd.
    pub found_keys: u64,
    /// Resources whose counts differ; empty when the drill passed.
    pub diffs: Vec<InventoryDiff>,
    /// Bundle files verified against the manifest.
    pub bundle_files: usize,
    /// What the restore ran.
    pub etcd: RestorePlan,
    /// Anything the operator should know.
    pub notes: Vec<String>,
    /// Time to download (the stored bytes checked on the way), in ms.
    pub download_ms: u64,
    /// Time to restore the data dir while checking the raw sha256 and etcd's trailer, in ms.
    pub restore_ms: u64,
    /// Time to start etcd and count its keys, in ms.
    pub check_ms: u64,
    /// Bytes of the restored snapshot.
    pub snapshot_bytes: u64,
}

impl DrillReport {
    /// Whether the restored etcd holds exactly the keys the manifest recorded.
    pub fn passed(&self) -> bool {
        self.diffs.is_empty() && self.found_keys == self.expected_keys
    }
}

/// Runs a drill: restores the set into a temporary dir under `opts.work_dir` (no revision bump),
/// starts a throwaway etcd on free loopback ports, compares its key inventory at the backup's
/// revision with the manifest's, stops etcd and removes the dir.
///
/// A set that fails to download, verify, restore or serve is an `Err`; a set that restores but
/// holds other keys than recorded is an `Ok` report that did not [pass](DrillReport::passed).
pub async fn drill(
    store: &dyn SnapshotStore,
    restorer: &dyn EtcdRestorer,
    clock: &dyn Clock,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let manifest = select_set(store, &opts.set).await?;
    let id = manifest.id.as_str();
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| Error::io(format!("cannot create drill work dir {}", opts.work_dir.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("kdr-drill-{id}-"))
        .tempdir_in(&opts.work_dir)
        .map_err(|e| Error::io(format!("cannot create a temporary dir in {}", opts.work_dir.display()), e))?;
    let mut notes = Vec::new();

    let started = clock.instant();
    let snapshot_path = tmp.path().join("snapshot.db");
    let file =
        download::snapshot_to_file(store, &manifest, opts.encryption_key.as_ref(), &snapshot_path).await?;
    let bundle_files = match download::bundle_bytes(store, &manifest, opts.encryption_key.as_ref()).await? {
        Some(tar) => bundle::read_bundle(&tar, &manifest)?.len(),
        None => {
            notes.push("the set has no bundle (backed up with --no-bundle)".to_owned());
            0
        }
    };
    let downloaded = clock.instant();

    let data_dir = tmp.path().join("etcd");
    let spec = RestoreSpec {
        bump_revision: 0,
        ..RestoreSpec::new(DRILL_MEMBER, "http://127.0.0.1:2380", &data_dir)
    };
    let (etcd, file) = download::restore_verified(&file, restorer, &spec).await?;
    let _ = std::fs::remove_file(&snapshot_path); // halve the disk use while etcd runs
    let restored = clock.instant();

    let local = LocalEtcd::start(LocalEtcdOptions {
        binary: opts.etcd_binary.clone(),
        data_dir: data_dir.clone(),
        name: DRILL_MEMBER.to_owned(),
        start_timeout: opts.start_timeout,
    })
    .await
    .map_err(|e| {
        Error::integrity(format!("backup set {id}"), format!("the restored data dir does not start: {e}"))
    })?;
    let counted = count_keys_at(local.client_url(), manifest.source.revision).await;
    let stopped = local.stop().await;
    let (found, compared_at, note) = counted?;
    stopped?;
    notes.extend(note);
    let checked = clock.instant();

    let found_keys = found.values().sum();
    let diffs = compare_inventory(&manifest.key_inventory, &found);
    let report = DrillReport {
        set: manifest.id.clone(),
        store: store.describe(),
        revision: manifest.source.revision,
        compared_at,
        expected_keys: manifest.total_keys,
        found_keys,
        diffs,
        bundle_files,
        etcd,
        notes,
        download_ms: ms(downloaded - started),
        restore_ms: ms(restored - downloaded),
        check_ms: ms(checked - restored),
        snapshot_bytes: file.size,
    };
    tmp.close().map_err(|e| Error::io("cannot remove the drill's temporary dir", e))?;
    Ok(report)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_missed_and_surplus_per_resource() {
        let expected =
            BTreeMap::from([("pods".to_owned(), 10), ("secrets".to_owned(), 3), ("other".to_owned(), 1)]);
        let found =
            BTreeMap::from([("pods".to_owned(), 8), ("secrets".to_owned(), 3), ("configmaps".to_owned(), 2)]);
        let diffs = compare_inventory(&expected, &found);
        assert_eq!(
            diffs,
            vec![
                InventoryDiff { resource: "configmaps".into(), expected: 0, found: 2 },
                InventoryDiff { resource: "other".into(), expected: 1, found: 0 },
                InventoryDiff { resource: "pods".into(), expected: 10, found: 8 },
            ]
        );
        assert_eq!((diffs[0].missed(), diffs[0].surplus()), (0, 2));
        assert_eq!((diffs[2].missed(), diffs[2].surplus()), (2, 0));
        assert!(compare_inventory(&expected, &expected).is_empty());
    }
}
