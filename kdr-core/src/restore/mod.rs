//! Verified restores that never destroy what they replace, and restore drills.
//!
//! [`Restore::run`] does, in this order:
//! 1. pick the set: the newest complete one, `--snapshot ID`, or the newest before `--before TIME`;
//! 2. stream its etcd snapshot through the codec (decrypt, decompress) into a file next to the
//!    target, checking the stored size and sha256 and the decoded size against the manifest,
//!    and the bundle's files against the manifest;
//! 3. refuse if an etcd is using the target data dir ([`datadir::check_not_in_use`]);
//! 4. restore into `<dir>.kdr-partial` with the [`EtcdRestorer`] while checking the file's raw
//!    sha256 against the manifest and etcd's own sha256 trailer
//!    ([`download::restore_verified`]: the check uses the core the tool leaves idle), then, only
//!    if everything passed, swap it into place, moving an existing dir to
//!    `<dir>.kdr-replaced-<timestamp>` ([`datadir::swap_into_place`]). Nothing touches the target
//!    before every check has passed;
//! 5. restore the bundle to its original paths ([`BundleMode`]) or into a dir for inspection;
//! 6. on any failure before the swap, remove the partial output: the target is untouched.
//!
//! [`drill::drill`] restores a set into a temporary dir and checks its keys against the manifest.
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::etcd::{EtcdRestorer, RestorePlan, RestoreSpec};
use crate::snapshot::keys::EncryptionKey;
use crate::snapshot::{MANIFEST_SCHEMA_VERSION, Manifest, ObjectKind, SnapshotId, SnapshotStore};

pub mod bundle;
pub mod config;
pub mod datadir;
pub mod download;
pub mod drill;

pub use bundle::{BundleMode, BundleReport};
pub use drill::{DrillOptions, DrillReport, drill};

/// Which backup set to restore.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SetSelector {
    /// The newest complete set.
    #[default]
    Latest,
    /// This set.
    Id(SnapshotId),
    /// The newest complete set created at or before this time.
    Before(DateTime<Utc>),
}

impl SetSelector {
    /// The selector for `--snapshot ID` / `--before TIME` (at most one; neither means the newest).
    /// TIME is RFC 3339 (`2026-11-21T05:00:00Z`) or a set id's timestamp (`20261121T050000Z`).
    pub fn from_flags(snapshot: Option<&str>, before: Option<&str>) -> Result<Self> {
        match (snapshot, before) {
            (Some(_), Some(_)) => {
                Err(Error::config("--before", "give --snapshot ID or --before TIME, not both"))
            }
            (Some("latest") | None, None) => Ok(Self::Latest),
            (Some(id), None) => Ok(Self::Id(SnapshotId::parse(id)?)),
            (None, Some(t)) => {
                let parsed = DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").map(|n| n.and_utc())
                });
                parsed.map(Self::Before).map_err(|_| {
                    Error::config(
                        "--before",
                        format!(
                            "{t:?} is not a time: use RFC 3339 (2026-11-21T05:00:00Z) or 20261121T050000Z"
                        ),
                    )
                })
            }
        }
    }
}

/// The manifest of the selected set. Errors: [`Error::NotFound`] naming the store and the
/// selection; [`Error::Refused`] for a manifest of a newer schema than this build reads.
pub async fn select_set(store: &dyn SnapshotStore, selector: &SetSelector) -> Result<Manifest> {
    let hint =
        || Some(format!("list the complete sets with `kdr snapshot list --store {}`", store.describe()));
    let manifest = match selector {
        SetSelector::Id(id) => store.manifest(id).await?,
        SetSelector::Latest => store.latest().await?.ok_or_else(|| Error::NotFound {
            what: format!("a complete backup set in {}", store.describe()),
            hint: hint(),
        })?,
        SetSelector::Before(t) => {
            store.list().await?.into_iter().find(|m| m.created_at <= *t).ok_or_else(|| Error::NotFound {
                what: format!(
                    "a complete backup set created at or before {} in {}",
                    t.to_rfc3339(),
                    store.describe()
                ),
                hint: hint(),
            })?
        }
    };
    if manifest.schema_version > MANIFEST_SCHEMA_VERSION {
        return Err(Error::refused(format!(
            "backup set {} has manifest schema {}, newer than this kdr reads ({MANIFEST_SCHEMA_VERSION}); \
             restore it with a newer kdr",
            manifest.id, manifest.schema_version
        )));
    }
    Ok(manifest)
}

/// What to do with the set's bundle of control-plane files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleTarget {
    /// Nothing chosen: fine for a set without a bundle, refused (naming the choices) for a set
    /// with one, since a restore that silently leaves out the CA is a trap.
    Unchosen,
    /// Leave it (`--no-bundle`).
    Skip,
    /// Write every file under this dir, for inspection (`--bundle-to DIR`).
    InspectAt(PathBuf),
    /// Write the files of `mode` to their original paths under `root` (`/` in production).
    /// Existing files that differ are moved under `aside`, mirroring their paths.
    Install {
        /// Same-host (everything) or new-host (the cluster identity only).
        mode: BundleMode,
        /// The root the original paths are under.
        root: PathBuf,
        /// Where replaced files go; `None` for `<root>/var/lib/kdr/replaced-<timestamp>`.
        aside: Option<PathBuf>,
    },
}

/// A restore request.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The set.
    pub set: SetSelector,
    /// The member to restore, with `data_dir` the target data dir.
    pub member: RestoreSpec,
    /// Where the peer URL came from (`--initial-advertise-peer-urls`, or how the default was
    /// found), shown in the plan.
    pub peer_url_source: String,
    /// What to do with the bundle.
    pub bundle: BundleTarget,
    /// The identity for an encrypted set.
    pub encryption_key: Option<EncryptionKey>,
}

/// What a restore will do, for the operator to read first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The set.
    pub set: SnapshotId,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// The store.
    pub store: String,
    /// The source member and its endpoint.
    pub source: String,
    /// The etcd revision and key count at backup time.
    pub revision: i64,
    /// Keys in the set.
    pub total_keys: u64,
    /// Size of the snapshot once decoded.
    pub snapshot_bytes: u64,
    /// The target data dir (symlinks resolved).
    pub data_dir: PathBuf,
    /// Whether it exists (and will be moved aside).
    pub data_dir_exists: bool,
    /// Where the downloaded snapshot is kept until restored.
    pub download_to: PathBuf,
    /// Where the new dir is built.
    pub partial: PathBuf,
    /// The member name.
    pub name: String,
    /// The peer URL the restored member advertises.
    pub peer_url: String,
    /// Where it came from.
    pub peer_url_source: String,
    /// The initial cluster.
    pub initial_cluster: String,
    /// The etcd tool run, its command and any note about the revision bump.
    pub etcd: RestorePlan,
    /// What happens to the bundle, in words.
    pub bundle: String,
    /// Warnings.
    pub notes: Vec<String>,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The plan it carried out.
    pub plan: Plan,
    /// Where the previous data dir went, if there was one.
    pub replaced: Option<PathBuf>,
    /// Whether the swap was one atomic exchange.
    pub atomic_swap: bool,
    /// etcd's own hash of the snapshot (its trailer), verified.
    pub etcd_hash: String,
    /// The bundle restore, if one was done.
    pub bundle: Option<BundleReport>,
    /// Time to download (the stored bytes checked on the way), in ms.
    pub download_ms: u64,
    /// Time to restore the data dir while checking the raw sha256 and etcd's trailer, and to
    /// swap it into place, in ms.
    pub restore_ms: u64,
    /// Time to restore the bundle, in ms.
    pub bundle_ms: u64,
}

/// A restore: a store to read from, a restorer and a clock (for the aside dirs' timestamps).
#[derive(Debug, Clone, Copy)]
pub struct Restore<'a> {
    store: &'a dyn SnapshotStore,
    etcd: &'a dyn EtcdRestorer,
    clock: &'a dyn Clock,
}

impl<'a> Restore<'a> {
    /// A restore from `store` with `etcd`, stamping aside dirs with `clock`.
    pub fn new(store: &'a dyn SnapshotStore, etcd: &'a dyn EtcdRestorer, clock: &'a dyn Clock) -> Self {
        Self { store, etcd, clock }
    }

    /// What [`run`](Self::run) would do, changing nothing.
    pub async fn plan(&self, opts: &RestoreOptions) -> Result<Plan> {
        let manifest = select_set(self.store, &opts.set).await?;
        self.plan_for(&manifest, opts).await
    }

    async fn plan_for(&self, manifest: &Manifest, opts: &RestoreOptions) -> Result<Plan> {
        let target = resolve_target(&opts.member.data_dir)?;
        let partial = datadir::partial_path(&target);
        let download_to = datadir::download_path(&target, manifest.id.as_str());
        let spec = RestoreSpec { trailer_verified: true, ..opts.member.with_data_dir(&partial) };
        let etcd = self.etcd.plan(&download_to, &spec).await?;
        let mut notes = Vec::new();
        if !manifest.etcd_hash_verified {
            notes.push(
                "the backup did not verify etcd's hash while streaming; kdr checks the trailer now"
                    .to_owned(),
            );
        }
        let has_bundle = manifest.object(ObjectKind::Bundle).is_some();
        let n = manifest.bundle_files.len();
        let bundle = match (&opts.bundle, has_bundle) {
            (BundleTarget::Unchosen, true) => {
                return Err(Error::config(
                    "--bundle-mode",
                    format!(
                        "backup set {} has a bundle of {n} control-plane files; choose what to do with it: \
                         --bundle-mode same-host (every file to its original path: same IP and hostname), \
                         --bundle-mode new-host (only the cluster identity: CA pairs, service-account keys, \
                         encryption config), --bundle-to DIR (inspect), or --no-bundle",
                        manifest.id
                    ),
                ));
            }
            (BundleTarget::Skip, _) => "not restored (--no-bundle)".to_owned(),
            (_, false) => {
                notes.push("the set has no bundle (it was backed up with --no-bundle)".to_owned());
                "none in the set".to_owned()
            }
            (BundleTarget::InspectAt(dir), true) => {
                format!("all {n} files written under {} for inspection", dir.display())
            }
            (BundleTarget::Install { mode: BundleMode::SameHost, root, .. }, true) => {
                format!("same-host: all {n} files restored to their original paths under {}", root.display())
            }
            (BundleTarget::Install { mode: BundleMode::NewHost, root, .. }, true) => format!(
                "new-host: only the cluster identity (CA pairs, service-account keys, encryption config) of \
                 {n} files restored under {}; leaf certs, kubeconfigs and static pod manifests are left for \
                 kubeadm to regenerate",
                root.display()
            ),
        };
        let kubelet_manifest = Path::new("/etc/kubernetes/manifests/etcd.yaml");
        if let Ok(text) = std::fs::read_to_string(kubelet_manifest)
            && crate::etcd::flag_value(&text, "--data-dir").is_some_and(|d| Path::new(&d) == target)
        {
            notes.push(format!(
                "{} exists and serves {}: kubelet will start etcd on the restored dir as soon as it is in place",
                kubelet_manifest.display(),
                target.display()
            ));
        }
        let snapshot_bytes = manifest.object(ObjectKind::EtcdSnapshot).map(|o| o.raw_size).unwrap_or(0);
        Ok(Plan {
            set: manifest.id.clone(),
            created_at: manifest.created_at,
            store: self.store.describe(),
            source: format!("{} ({})", manifest.source.member_name, manifest.source.endpoint),
            revision: manifest.source.revision,
            total_keys: manifest.total_keys,
            snapshot_bytes,
            data_dir_exists: std::fs::symlink_metadata(&target).is_ok(),
            data_dir: target,
            download_to,
            partial,
            name: opts.member.name.clone(),
            peer_url: opts.member.initial_advertise_peer_urls.clone(),
            peer_url_source: opts.peer_url_source.clone(),
            initial_cluster: opts.member.initial_cluster.clone(),
            etcd,
            bundle,
            notes,
        })
    }

    /// Restores a set (see the [module docs](self) for the steps and guarantees).
    ///
    /// Errors name the set and the failed check: [`Error::Integrity`] for a hash, size or trailer
    /// mismatch, truncated or undecryptable data; [`Error::Config`] for a wrong or missing key;
    /// [`Error::Refused`] for a data dir in use or too little disk space. Until the swap, the
    /// target is untouched and the partial output is removed.
    pub async fn run(&self, opts: &RestoreOptions) -> Result<RestoreReport> {
        let manifest = select_set(self.store, &opts.set).await?;
        let plan = self.plan_for(&manifest, opts).await?;
        let id = manifest.id.as_str();
        let target = plan.data_dir.clone();
        let started = self.clock.instant();

        // Fail fast on what can be checked before a long download; all are checked again below.
        crate::snapshot::keys::check_key(&manifest.encryption, opts.encryption_key.as_ref())
            .map_err(|e| download::in_set(e, id))?;
        drop(datadir::check_not_in_use(&target)?);
        self.check_space(&plan)?;
        let mut notes_extra = Vec::new();
        if std::fs::symlink_metadata(&plan.partial).is_ok() {
            // Left by an interrupted restore. It may even be a previous data dir (a crash between
            // the exchange and the rename aside), so it is moved, never deleted.
            let stale = datadir::aside_path(&target, ".kdr-stale-partial", self.clock.utc());
            std::fs::rename(&plan.partial, &stale).map_err(|e| {
                Error::io(
                    format!("cannot move the stale {} aside to {}", plan.partial.display(), stale.display()),
                    e,
                )
            })?;
            notes_extra.push(format!("moved a stale {} to {}", plan.partial.display(), stale.display()));
        }
        // Ours alone (a download of a backup set), so a stale one is simply replaced.
        let _ = std::fs::remove_file(&plan.download_to);
        if let Some(parent) = target.parent() {
            // A fresh host may not have the target's parent yet (e.g. /var/lib/etcd on a new node).
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }

        // 2. Download and verify everything before the target is touched.
        let file = download::snapshot_to_file(
            self.store,
            &manifest,
            opts.encryption_key.as_ref(),
            &plan.download_to,
        )
        .await?;
        let cleanup_download = scopeguard(&plan.download_to);
        let bundle_entries = match &opts.bundle {
            BundleTarget::Skip | BundleTarget::Unchosen => None,
            _ => match download::bundle_bytes(self.store, &manifest, opts.encryption_key.as_ref()).await? {
                Some(tar) => Some(bundle::read_bundle(&tar, &manifest)?),
                None => None,
            },
        };
        let downloaded = self.clock.instant();

        // 3. Refuse if an etcd uses the target; hold its db lock through the swap.
        let lock = datadir::check_not_in_use(&target)?;

        // 4. Restore beside the target while the file's raw sha256 and etcd trailer are checked
        // on the core the tool leaves idle; the new dir is kept only if they pass. Then swap.
        let spec = opts.member.with_data_dir(&plan.partial);
        let (etcd, file) =
            download::restore_verified(&file, self.etcd, &spec).await.map_err(|e| restore_failed(e, id))?;
        if plan.data_dir_exists
            && let Err(e) = datadir::match_owner(&plan.partial, &target)
        {
            let _ = std::fs::remove_dir_all(&plan.partial); // the new dir, ours
            return Err(e);
        }
        let replaced = datadir::replaced_path(&target, self.clock.utc());
        let swapped = match datadir::swap_into_place(&plan.partial, &target, &replaced) {
            Ok(s) => s,
            Err(e) => {
                if e.target_untouched {
                    // `partial` still holds the new dir (ours); the target was not changed.
                    let _ = std::fs::remove_dir_all(&plan.partial);
                }
                return Err(e.error);
            }
        };
        drop(lock);
        drop(cleanup_download);
        let restored = self.clock.instant();

        // 5. The bundle.
        let bundle_report = match (&opts.bundle, bundle_entries) {
            (BundleTarget::InspectAt(dir), Some(entries)) => {
                Some(bundle::extract_to(&entries, dir).map_err(|e| after_swap(e, &target))?)
            }
            (BundleTarget::Install { mode, root, aside }, Some(entries)) => {
                let aside = aside.clone().unwrap_or_else(|| {
                    root.join(format!("var/lib/kdr/replaced-{}", self.clock.utc().format("%Y%m%dT%H%M%SZ")))
                });
                let (keep, skipped) = bundle::select(entries, *mode);
                let mut report = bundle::install(&keep, root, &aside).map_err(|e| after_swap(e, &target))?;
                report.skipped = skipped;
                Some(report)
            }
            _ => None,
        };
        let done = self.clock.instant();
        let mut plan = plan;
        plan.etcd = etcd;
        plan.notes.extend(notes_extra);
        Ok(RestoreReport {
            plan,
            replaced: swapped.replaced,
            atomic_swap: swapped.atomic,
            etcd_hash: file.etcd_hash,
            bundle: bundle_report,
            download_ms: ms(downloaded - started),
            restore_ms: ms(restored - downloaded),
            bundle_ms: ms(done - restored),
        })
    }

    /// Refuses when the target's filesystem cannot hold the download and the restored db.
    fn check_space(&self, plan: &Plan) -> Result<()> {
        let parent = plan.data_dir.parent().filter(|p| p.exists()).unwrap_or(Path::new("/"));
        // The snapshot file, plus the restored db (about the same size), plus 5% slack.
        let need = plan.snapshot_bytes.saturating_mul(2).saturating_add(plan.snapshot_bytes / 20);
        match datadir::available_bytes(parent) {
            Some(free) if free < need => Err(Error::refused(format!(
                "not enough space to restore backup set {} next to {}: it needs about {} MiB, {} has {} MiB free",
                plan.set,
                plan.data_dir.display(),
                need >> 20,
                parent.display(),
                free >> 20
            ))),
            _ => Ok(()),
        }
    }
}

/// The target with a symlinked final component resolved, so that the swap happens where the data
/// lives (a symlinked `/var/lib/etcd` stays a symlink).
fn resolve_target(dir: &Path) -> Result<PathBuf> {
    let dir = if dir.is_relative() {
        std::env::current_dir().map_err(|e| Error::io("cannot read the current dir", e))?.join(dir)
    } else {
        dir.to_owned()
    };
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&dir)
            .map_err(|e| Error::io(format!("cannot resolve the symlink {}", dir.display()), e)),
        Ok(m) if !m.is_dir() => {
            Err(Error::config("--data-dir", format!("{} exists and is not a directory", dir.display())))
        }
        _ => Ok(dir),
    }
}

fn restore_failed(e: Error, id: &str) -> Error {
    match e {
        Error::CommandFailed { host, command, exit_code, stderr } => Error::CommandFailed {
            host,
            command,
            exit_code,
            stderr: format!("{stderr}\n(restoring backup set {id}; the target data dir was not changed)"),
        },
        other => download::in_set(other, id),
    }
}

fn after_swap(e: Error, target: &Path) -> Error {
    Error::refused(format!(
        "the etcd data dir {} was restored, but restoring the bundle failed: {e}. Fix the cause and \
         restore the bundle again (the data dir is done; nothing was deleted)",
        target.display()
    ))
}

/// Removes a file of ours when dropped (the downloaded snapshot), on success and failure alike.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scopeguard(path: &Path) -> RemoveOnDrop {
    RemoveOnDrop(path.to_owned())
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;
    use chrono::TimeZone;
    use futures::StreamExt;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::etcd::RestoreTool;
    use crate::snapshot::codec::{self, EncodeOptions};
    use crate::snapshot::{Compression, Encryption, ObjectEntry, ObjectStoreSnapshotStore, SnapshotSource};

    /// A restorer that "restores" by copying the snapshot to `<dir>/member/snap/db`, or fails.
    #[derive(Debug)]
    struct CopyRestorer {
        fail: bool,
    }

    #[async_trait]
    impl EtcdRestorer for CopyRestorer {
        async fn plan(&self, _: &Path, _: &RestoreSpec) -> Result<RestorePlan> {
            Ok(RestorePlan {
                tool: RestoreTool::Etcdutl { path: "copy".into(), version: "0.0.0".into() },
                command: "copy".into(),
                bump_revision: None,
                notes: vec![],
            })
        }
        async fn restore(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan> {
            std::fs::create_dir_all(spec.data_dir.join("member/snap")).unwrap();
            if self.fail {
                std::fs::remove_dir_all(&spec.data_dir).unwrap();
                return Err(Error::CommandFailed {
                    host: "localhost".into(),
                    command: "copy".into(),
                    exit_code: Some(1),
                    stderr: "boom".into(),
                });
            }
            std::fs::copy(snapshot, spec.data_dir.join("member/snap/db")).unwrap();
            self.plan(snapshot, spec).await
        }
    }

    pub(crate) async fn put(
        store: &dyn SnapshotStore,
        id: &SnapshotId,
        kind: ObjectKind,
        raw: Vec<u8>,
    ) -> ObjectEntry {
        let opts = EncodeOptions::default();
        let name = opts.object_name(kind);
        let enc = codec::encode(futures::stream::once(async move { Ok(Bytes::from(raw)) }).boxed(), &opts);
        let stored = store.put_object(id, &name, enc.stream).await.unwrap();
        let raw = enc.raw.digest().await.unwrap();
        ObjectEntry {
            name,
            kind,
            stored_size: stored.size,
            stored_sha256: stored.sha256,
            raw_size: raw.size,
            raw_sha256: raw.sha256.unwrap(),
        }
    }

    /// Commits a set created at `at` with a fake etcd snapshot and, optionally, a bundle.
    async fn put_set(store: &dyn SnapshotStore, at: DateTime<Utc>, bundle: bool) -> (Manifest, Vec<u8>) {
        let mut m = manifest();
        m.id = SnapshotId::new(at);
        m.created_at = at;
        let snap = crate::snapshot::trailer::tests::fake_snapshot(8);
        m.objects.push(put(store, &m.id, ObjectKind::EtcdSnapshot, snap.clone()).await);
        if bundle {
            let (tar, files) = bundle::tests::tar_and_files(bundle::tests::FILES);
            m.objects.push(put(store, &m.id, ObjectKind::Bundle, tar).await);
            m.bundle_files = files;
        }
        store.commit(&m).await.unwrap();
        (m, snap)
    }

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, 0, 0).unwrap()
    }

    fn opts(target: &Path, set: SetSelector, bundle: BundleTarget) -> RestoreOptions {
        RestoreOptions {
            set,
            member: RestoreSpec::new("m1", "https://10.0.0.5:2380", target),
            peer_url_source: "test".into(),
            bundle,
            encryption_key: None,
        }
    }

    pub(crate) fn memory() -> Arc<dyn SnapshotStore> {
        Arc::new(ObjectStoreSnapshotStore::from_url("memory://", &Default::default()).unwrap())
    }

    #[tokio::test]
    async fn restores_the_chosen_set_and_moves_the_old_dir_aside() {
        let store = memory();
        let (old_set, _) = put_set(store.as_ref(), at(3), false).await;
        let (_, snap) = put_set(store.as_ref(), at(5), false).await;
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etcd");
        std::fs::create_dir_all(target.join("member/snap")).unwrap();
        std::fs::write(target.join("member/snap/db"), "old db").unwrap();
        let clock = ManualClock::new(at(9), crate::clock::SystemClock.instant());
        let restorer = CopyRestorer { fail: false };
        let restore = Restore::new(store.as_ref(), &restorer, &clock);

        let report = restore.run(&opts(&target, SetSelector::Latest, BundleTarget::Unchosen)).await.unwrap();
        assert_eq!(std::fs::read(target.join("member/snap/db")).unwrap(), snap);
        let aside = tmp.path().join("etcd.kdr-replaced-20261121T090000Z");
        assert_eq!(report.replaced.as_deref(), Some(aside.as_path()));
        assert_eq!(std::fs::read_to_string(aside.join("member/snap/db")).unwrap(), "old db");
        assert_eq!(report.etcd_hash, hex::encode(&snap[snap.len() - 32..]));
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names.len(), 2, "no download or partial left: {names:?}");

        // --before picks the older set.
        let before = SetSelector::Before(at(4));
        let plan = restore.plan(&opts(&target, before, BundleTarget::Skip)).await.unwrap();
        assert_eq!(plan.set, old_set.id);
        let e =
            restore.plan(&opts(&target, SetSelector::Before(at(1)), BundleTarget::Skip)).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_failed_restore_leaves_the_target_and_nothing_else() {
        let store = memory();
        put_set(store.as_ref(), at(5), false).await;
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etcd");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("keep"), "old").unwrap();
        let restorer = CopyRestorer { fail: true };
        let e = Restore::new(store.as_ref(), &restorer, &crate::clock::SystemClock)
            .run(&opts(&target, SetSelector::Latest, BundleTarget::Skip))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("boom") && msg.contains("was not changed"), "{msg}");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("etcd")]);
        assert_eq!(std::fs::read_to_string(target.join("keep")).unwrap(), "old");
    }

    #[tokio::test]
    async fn a_stale_partial_dir_is_moved_aside_never_deleted() {
        let store = memory();
        let (_, snap) = put_set(store.as_ref(), at(5), false).await;
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etcd");
        // An interrupted restore's leftover: it may even be the previous data dir.
        let partial = datadir::partial_path(&target);
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("precious"), "maybe the old data").unwrap();
        let clock = ManualClock::new(at(9), crate::clock::SystemClock.instant());
        let restorer = CopyRestorer { fail: false };
        let report = Restore::new(store.as_ref(), &restorer, &clock)
            .run(&opts(&target, SetSelector::Latest, BundleTarget::Skip))
            .await
            .unwrap();
        let stale = tmp.path().join("etcd.kdr-stale-partial-20261121T090000Z");
        assert_eq!(std::fs::read_to_string(stale.join("precious")).unwrap(), "maybe the old data");
        assert!(report.plan.notes.iter().any(|n| n.contains("stale")), "{:?}", report.plan.notes);
        assert_eq!(std::fs::read(target.join("member/snap/db")).unwrap(), snap);
        assert!(!partial.exists());
    }

    #[tokio::test]
    async fn a_set_with_a_bundle_needs_an_explicit_choice() {
        let store = memory();
        let (m, _) = put_set(store.as_ref(), at(5), true).await;
        let tmp = tempfile::tempdir().unwrap();
        let restorer = CopyRestorer { fail: false };
        let restore = Restore::new(store.as_ref(), &restorer, &crate::clock::SystemClock);
        let target = tmp.path().join("etcd");
        let e = restore.run(&opts(&target, SetSelector::Latest, BundleTarget::Unchosen)).await.unwrap_err();
        let msg = e.to_string();
        assert!(e.is_usage(), "{msg}");
        assert!(msg.contains(m.id.as_str()) && msg.contains("--bundle-mode new-host"), "{msg}");
        assert!(!target.exists());

        let root = tmp.path().join("root");
        let bundle = BundleTarget::Install { mode: BundleMode::NewHost, root: root.clone(), aside: None };
        let report = restore.run(&opts(&target, SetSelector::Latest, bundle)).await.unwrap();
        let b = report.bundle.unwrap();
        assert_eq!(b.written.len(), 9);
        assert!(root.join("etc/kubernetes/pki/ca.key").exists());
        assert!(!root.join("etc/kubernetes/admin.conf").exists());
    }

    /// A plausible manifest, for unit tests.
    #[test]
    fn set_selectors_from_flags() {
        assert_eq!(SetSelector::from_flags(None, None).unwrap(), SetSelector::Latest);
        assert_eq!(SetSelector::from_flags(Some("latest"), None).unwrap(), SetSelector::Latest);
        let id = "20261121T051115Z-1a2b3c4d";
        assert_eq!(
            SetSelector::from_flags(Some(id), None).unwrap(),
            SetSelector::Id(SnapshotId::parse(id).unwrap())
        );
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 5, 0, 0).unwrap();
        assert_eq!(
            SetSelector::from_flags(None, Some("2026-11-21T05:00:00Z")).unwrap(),
            SetSelector::Before(t)
        );
        assert_eq!(
            SetSelector::from_flags(None, Some("2026-11-21T06:00:00+01:00")).unwrap(),
            SetSelector::Before(t)
        );
        assert_eq!(SetSelector::from_flags(None, Some("20261121T050000Z")).unwrap(), SetSelector::Before(t));
        assert!(
            SetSelector::from_flags(None, Some("yesterday")).unwrap_err().to_string().contains("--before")
        );
        assert!(SetSelector::from_flags(Some(id), Some("20261121T050000Z")).is_err());
        assert!(SetSelector::from_flags(Some("nope"), None).is_err());
    }

    /// A plausible manifest, for unit tests.
    pub(crate) fn manifest() -> Manifest {
        Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            id: SnapshotId::parse("20261121T051115Z-1a2b3c4d").unwrap(),
            created_at: Utc.with_ymd_and_hms(2026, 11, 21, 5, 11, 15).unwrap(),
            duration_ms: 1000,
            cluster_name: "prod".into(),
            source: SnapshotSource {
                endpoint: "https://10.0.0.1:2379".into(),
                member_name: "master-1".into(),
                member_id: "8e9e05c52164694d".into(),
                etcd_version: "3.5.16".into(),
                revision: 42,
                db_size: 1 << 20,
            },
            compression: Compression::Zstd,
            encryption: Encryption::None,
            etcd_hash_verified: true,
            objects: vec![],
            bundle_files: vec![],
            key_inventory: BTreeMap::new(),
            total_keys: 0,
            pods: None,
        }
    }
}
