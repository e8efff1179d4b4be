//! Taking a backup set in one streaming pass: [`backup`].
//!
//! ```text
//! etcd Snapshot RPC (one member) ─► sha256 + trailer check ─► zstd ─► [age] ─► sha256 ─► multipart upload
//! control-plane files ─► tar ─► sha256 ─► zstd ─► [age] ─► sha256 ─► upload
//! status + key inventory + pod names at the same revision ─► manifest, written last (create-only)
//! ```
//! No temporary file is written and memory stays bounded whatever the db size. The store is
//! checked (bucket, credentials) and the bundle planned before etcd is touched, so the common
//! mistakes fail in a second. Any failure aborts the uploads, deletes what was written
//! (best effort; prune sweeps anything left) and returns the error: a set without a manifest is
//! never listed.
pub mod bundle;

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use self::bundle::{BundleOptions, BundleSpec, KUBEADM_CONFIG_ETCD_KEY};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::etcd::client::{EtcdSource, EtcdSourceOptions};
use crate::snapshot::codec::{self, EncodeOptions};
use crate::snapshot::{
    MANIFEST_SCHEMA_VERSION, MAX_POD_NAMES, Manifest, ObjectEntry, ObjectKind, PodNames, SnapshotId,
    SnapshotSource, SnapshotStore,
};

/// The backup reports to a [`Progress`]; it lives in [`crate::progress`], which downloads use too.
pub use crate::progress::{NoProgress, Progress};

/// Everything a backup needs besides the store.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The cluster's name, recorded in the manifest (`cluster.name`).
    pub cluster_name: String,
    /// The etcd member to snapshot.
    pub etcd: EtcdSourceOptions,
    /// What to bundle.
    pub bundle: BundleOptions,
    /// Compression and encryption.
    pub encode: EncodeOptions,
}

/// Ends `stream` with [`Error::Cancelled`] as soon as `cancel` fires (checked between chunks and
/// while waiting for one).
fn with_cancel(
    stream: crate::snapshot::ByteStream,
    cancel: CancellationToken,
) -> crate::snapshot::ByteStream {
    futures::stream::unfold(Some((stream, cancel)), |state| async move {
        let (mut stream, cancel) = state?;
        tokio::select! {
            biased;
            () = cancel.cancelled() => Some((Err(Error::Cancelled { what: "backup".into() }), None)),
            item = stream.next() => item.map(|i| (i, Some((stream, cancel)))),
        }
    })
    .boxed()
}

/// Takes a backup set: see the [module docs](self). Returns the committed manifest.
///
/// Errors name the input at fault: [`Error::NotFound`] for a missing bucket, bundle path or key
/// file, [`Error::Unavailable`] for an unreachable store or etcd (with the flags to check),
/// [`Error::Integrity`] when etcd's sha256 trailer does not match, [`Error::Config`] for bad
/// options.
pub async fn backup(
    store: &dyn SnapshotStore,
    opts: &BackupOptions,
    clock: &dyn Clock,
    progress: Arc<dyn Progress>,
) -> Result<Manifest> {
    backup_cancellable(store, opts, clock, progress, CancellationToken::new()).await
}

/// [`backup`] that stops when `cancel` is cancelled (e.g. on Ctrl-C): the snapshot stream ends
/// with [`Error::Cancelled`], so the upload in progress is aborted like any other failure, the
/// partial objects are removed, and nothing is listed. Returns [`Error::Cancelled`].
pub async fn backup_cancellable(
    store: &dyn SnapshotStore,
    opts: &BackupOptions,
    clock: &dyn Clock,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    let cancelled = || Error::Cancelled { what: "backup".into() };
    let started_at = clock.utc();
    let started = clock.instant();
    // Cheap checks first: the store, the files. etcd is touched only when both are fine.
    store.check().await?;
    let mut plan = bundle::plan(&opts.bundle)?;

    let source = EtcdSource::connect(&opts.etcd).await?;
    let status = source.status().await?;
    let inventory = source.key_inventory(status.revision).await?;
    // The pods by name, for the promotion's post-check; skipped when the inventory counts none.
    let pods = match inventory.by_resource.get("pods") {
        Some(&n) if n > 0 => source.pod_names(inventory.revision, MAX_POD_NAMES).await?,
        _ => PodNames::default(),
    };
    if pods.truncated {
        tracing::warn!(
            recorded = pods.names.len(),
            "more pods than the manifest records by name; the post-check will look for these only"
        );
    }
    if opts.bundle.spec != BundleSpec::None && !plan.has_kubeadm_config {
        match source.get(KUBEADM_CONFIG_ETCD_KEY, status.revision).await? {
            Some(value) => match bundle::kubeadm_config_from_etcd_value(&value) {
                Ok(yaml) => plan.add_kubeadm_config(yaml),
                Err(e) if opts.bundle.spec == BundleSpec::Defaults => return Err(e),
                Err(e) => tracing::warn!(error = %e, "kubeadm ClusterConfiguration not bundled"),
            },
            None if opts.bundle.spec == BundleSpec::Defaults => {
                return Err(Error::NotFound {
                    what: format!(
                        "the kubeadm ClusterConfiguration (etcd key {KUBEADM_CONFIG_ETCD_KEY} at {})",
                        source.endpoint()
                    ),
                    hint: Some(
                        "pass --kubeadm-config FILE, or choose files with --bundle PATH, or --no-bundle"
                            .into(),
                    ),
                });
            }
            None => {}
        }
    }

    if cancel.is_cancelled() {
        return Err(cancelled());
    }
    let id = SnapshotId::new(started_at);
    tracing::info!(%id, endpoint = source.endpoint(), revision = status.revision, db_size = status.db_size, "backup started");
    let result = async {
        let mut objects = Vec::new();
        let mut bundle_files = Vec::new();
        if !plan.is_empty() {
            let plan = plan.clone();
            let (tar, files) = codec::spawn_writer(move |w| bundle::write_tar(&plan, w));
            let enc = codec::encode(tar, &opts.encode);
            let name = opts.encode.object_name(ObjectKind::Bundle);
            let stored = store.put_object(&id, &name, enc.stream).await?;
            let raw = enc.raw.digest().await?;
            bundle_files = files.await.map_err(|_| Error::Cancelled { what: "bundling".into() })??;
            objects.push(ObjectEntry {
                name,
                kind: ObjectKind::Bundle,
                stored_size: stored.size,
                stored_sha256: stored.sha256,
                raw_size: raw.size,
                raw_sha256: raw.sha256.unwrap_or_default(),
            });
        }

        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let snap = source.snapshot().await?;
        progress.start(status.db_size);
        let p = progress.clone();
        let stream = with_cancel(snap.stream, cancel.clone())
            .inspect(move |c| match c {
                Ok(c) => p.advance(c.len() as u64),
                Err(e) => tracing::debug!(error = %e, "snapshot stream failed"),
            })
            .boxed();
        // The source hashes the raw stream (it must, to check etcd's trailer): no second pass.
        let enc_opts = EncodeOptions { hash_raw: false, ..opts.encode.clone() };
        let enc = codec::encode(stream, &enc_opts);
        let name = opts.encode.object_name(ObjectKind::EtcdSnapshot);
        let stored = store.put_object(&id, &name, enc.stream).await;
        tracing::debug!(%id, "snapshot object stored");
        progress.finish();
        let stored = stored?;
        enc.raw.digest().await?;
        let digest = snap.digest.await.map_err(|_| {
            Error::integrity(
                format!("etcd snapshot from {}", source.endpoint()),
                "the stream ended without etcd's trailer",
            )
        })?;
        objects.push(ObjectEntry {
            name,
            kind: ObjectKind::EtcdSnapshot,
            stored_size: stored.size,
            stored_sha256: stored.sha256,
            raw_size: digest.size,
            raw_sha256: digest.sha256,
        });
        objects.reverse(); // snapshot first

        let manifest = Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            id: id.clone(),
            created_at: started_at,
            duration_ms: clock.instant().saturating_duration_since(started).as_millis() as u64,
            cluster_name: opts.cluster_name.clone(),
            source: SnapshotSource {
                endpoint: source.endpoint().to_owned(),
                member_name: status.name.clone(),
                member_id: status.id.clone(),
                etcd_version: status.version.clone(),
                revision: inventory.revision,
                db_size: status.db_size,
            },
            compression: opts.encode.compression,
            encryption: opts.encode.encryption(),
            etcd_hash_verified: true, // the digest only comes once the trailer matched
            objects,
            bundle_files,
            key_inventory: inventory.by_resource.clone(),
            total_keys: inventory.total,
            pods: Some(pods),
        };
        store.commit(&manifest).await?;
        Ok(manifest)
    }
    .await;
    match result {
        Ok(m) => {
            tracing::info!(id = %m.id, stored = m.stored_bytes(), "backup committed");
            Ok(m)
        }
        Err(e) => {
            tracing::warn!(%id, error = %e, "backup failed; removing its partial objects");
            if let Err(cleanup) = store.delete(id.as_str()).await {
                tracing::warn!(%id, error = %cleanup, "could not remove the partial set; `kdr snapshot prune` sweeps it");
            }
            Err(e)
        }
    }
}
