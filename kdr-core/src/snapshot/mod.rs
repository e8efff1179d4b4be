//! Backup sets in object storage: the [`SnapshotStore`] trait and its value types.
//!
//! A backup set is an etcd snapshot, a bundle of control-plane files, and a [`Manifest`] that is
//! written last. The manifest is what makes a set exist: a set without one is incomplete, is never
//! listed, and is swept by prune.
//!
//! Layout under the store's prefix:
//! ```text
//! sets/<id>/etcd.db[.zst][.age]      the snapshot as stored (compressed, then encrypted)
//! sets/<id>/bundle.tar[.zst][.age]   the control-plane files (optional)
//! sets/<id>/manifest.json            written last, create-only
//! ```
use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod codec;
pub mod keys;
pub mod object_store;
pub mod retention;
pub mod trailer;
pub mod verify;

pub use self::object_store::{ObjectStoreSnapshotStore, StoreOptions};

/// A stream of bytes, as uploaded to or downloaded from a store.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// The manifest schema this build writes. Readers accept this version and refuse newer ones.
///
/// A new optional field (absent in older manifests, ignored by older readers, which do not deny
/// unknown fields) does not change the version, as [`Manifest::pods`] did not; a change an older
/// reader would misread does.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// The most pod names a manifest records ([`PodNames`]). About 60 bytes each, so at most ~600 KB
/// of manifest; a larger cluster records the first names in key order and says it was truncated.
pub const MAX_POD_NAMES: usize = 10_000;

/// The name of the manifest object inside a set.
pub const MANIFEST_OBJECT: &str = "manifest.json";

/// A backup set's id: `<UTC time as %Y%m%dT%H%M%SZ>-<8 hex>`, so ids sort by creation time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A new id for a set created at `created`, with a random suffix.
    pub fn new(created: DateTime<Utc>) -> Self {
        let suffix: u32 = rand::random();
        Self(format!("{}-{suffix:08x}", created.format("%Y%m%dT%H%M%SZ")))
    }

    /// Parses and validates an id (as given on a command line or found in a store).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "snapshot id",
                format!("{s:?} is not a backup set id (expected e.g. 20261121T051115Z-1a2b3c4d)"),
            )
        };
        let (ts, suffix) = s.split_once('-').ok_or_else(bad)?;
        chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ").map_err(|_| bad())?;
        if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }

    /// The creation time encoded in the id (second precision).
    pub fn created(&self) -> DateTime<Utc> {
        let ts = self.0.split_once('-').map(|(t, _)| t).unwrap_or(&self.0);
        chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ").map(|n| n.and_utc()).unwrap_or_default()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

/// How stored objects are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (the default).
    #[default]
    Zstd,
    /// Stored as is.
    None,
}

/// How stored objects are encrypted on the client before upload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Encryption {
    /// Not encrypted.
    #[default]
    None,
    /// An age stream (X25519 recipient; ChaCha20-Poly1305 STREAM). Only the public recipient is
    /// recorded, so that a wrong key file is named as such before any download.
    AgeX25519 {
        /// The age recipient (public key) the set was encrypted to.
        recipient: String,
    },
}

/// What an object in a set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// The etcd snapshot (bbolt db with etcd's sha256 trailer).
    EtcdSnapshot,
    /// A tar of control-plane files (PKI, static pod manifests, encryption config, kubeadm config).
    Bundle,
}

/// One stored object of a set, as recorded in its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Object name inside the set, e.g. `etcd.db.zst`.
    pub name: String,
    /// What it holds.
    pub kind: ObjectKind,
    /// Size in bytes as stored (after compression and encryption).
    pub stored_size: u64,
    /// Hex sha256 of the bytes as stored.
    pub stored_sha256: String,
    /// Size in bytes before compression and encryption.
    pub raw_size: u64,
    /// Hex sha256 of the bytes before compression and encryption.
    pub raw_sha256: String,
}

/// One file in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Absolute path on the source host, e.g. `/etc/kubernetes/pki/ca.key`.
    pub path: String,
    /// Unix mode bits (e.g. 0o600 for keys).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the content.
    pub sha256: String,
}

/// Where the snapshot came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSource {
    /// The endpoint the snapshot was streamed from.
    pub endpoint: String,
    /// The member's name, if etcd reported it.
    pub member_name: String,
    /// The member's id (hex).
    pub member_id: String,
    /// etcd server version, e.g. `3.5.16`.
    pub etcd_version: String,
    /// The store revision read (from `status()`) just before the snapshot.
    pub revision: i64,
    /// The db size reported by `status()`.
    pub db_size: u64,
}

/// The pods in a snapshot by name, so that the promotion's `snapshot-pods` check can ask for
/// these pods, not just as many.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNames {
    /// `<namespace>/<name>` of each key `/registry/pods/<namespace>/<name>`, in key order (sorted).
    pub names: Vec<String>,
    /// Whether the snapshot has more pods than [`MAX_POD_NAMES`] and only the first are listed
    /// (`key_inventory["pods"]` has the full count).
    pub truncated: bool,
}

/// The manifest of a complete backup set. Written last, create-only; its presence is what makes
/// the set complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version ([`MANIFEST_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The set's id.
    pub id: SnapshotId,
    /// When the backup started (UTC).
    pub created_at: DateTime<Utc>,
    /// How long the backup took, in milliseconds.
    pub duration_ms: u64,
    /// The cluster name from configuration (`cluster.name`).
    pub cluster_name: String,
    /// The etcd member the snapshot was taken from.
    pub source: SnapshotSource,
    /// Compression of every stored object.
    pub compression: Compression,
    /// Encryption of every stored object.
    pub encryption: Encryption,
    /// Whether etcd's own sha256 trailer matched the streamed bytes.
    pub etcd_hash_verified: bool,
    /// The stored objects with their hashes.
    pub objects: Vec<ObjectEntry>,
    /// The files in the bundle (empty when backed up with `--no-bundle`).
    pub bundle_files: Vec<BundleFile>,
    /// Count of keys per `/registry/<resource>/` prefix (other keys under `other`), for verifying
    /// restores.
    pub key_inventory: BTreeMap<String, u64>,
    /// Total number of keys at `source.revision`.
    pub total_keys: u64,
    /// The pods at `source.revision` by name. `None` in manifests written before kdr recorded
    /// them (schema 1 either way: see [`MANIFEST_SCHEMA_VERSION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodNames>,
}

impl Manifest {
    /// The entry of the object of `kind`, if the set has one.
    pub fn object(&self, kind: ObjectKind) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.kind == kind)
    }

    /// Total bytes stored for this set (excluding the manifest).
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_size).sum()
    }
}

/// The result of uploading one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Bytes stored.
    pub size: u64,
    /// Hex sha256 of the bytes stored.
    pub sha256: String,
}

/// A set that has objects but no readable manifest: an interrupted backup, or a corrupt manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompleteSet {
    /// The set's id (as found in the store's paths).
    pub id: String,
    /// The object names found.
    pub objects: Vec<String>,
    /// Why it is incomplete (no manifest, or why the manifest could not be read).
    pub reason: String,
}

/// Where backup sets live.
///
/// Guarantees every implementation gives (checked by
/// `testing::conformance::snapshot_store::run_all`):
/// - **Invisible until committed.** Objects written by [`put_object`](Self::put_object) are not a
///   set until [`commit`](Self::commit) writes its manifest; [`list`](Self::list) and
///   [`latest`](Self::latest) return complete sets only.
/// - **Atomic, create-only commit.** `commit` writes the manifest atomically and fails with
///   [`Error::AlreadyExists`] if the set already has one.
/// - **Abort on failure.** If `put_object`'s input stream yields an error, or the store fails,
///   the partial upload is aborted (no object, or only an incomplete-set object that prune
///   sweeps) and the error is returned.
/// - **Streaming, bounded memory.** Neither `put_object` nor `get_object` buffers a whole object.
/// - **Errors:** a missing set or object is [`Error::NotFound`]; a store that cannot be reached,
///   a missing bucket or denied access is [`Error::Unavailable`] naming the store and the fix.
#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug {
    /// A description of the store for messages, with no credentials (e.g. `s3://kdr/prod`).
    fn describe(&self) -> String;

    /// Checks that the store is reachable and usable (bucket exists, credentials accepted) before
    /// a long operation starts. The default lists the sets.
    async fn check(&self) -> Result<()> {
        self.list().await.map(|_| ())
    }

    /// Uploads object `name` of set `id` from `data`. Returns its stored size and sha256.
    async fn put_object(&self, id: &SnapshotId, name: &str, data: ByteStream) -> Result<StoredObject>;

    /// Makes the set complete by writing its manifest, create-only.
    async fn commit(&self, manifest: &Manifest) -> Result<()>;

    /// Complete sets, newest first.
    async fn list(&self) -> Result<Vec<Manifest>>;

    /// The newest complete set, if any.
    async fn latest(&self) -> Result<Option<Manifest>> {
        Ok(self.list().await?.into_iter().next())
    }

    /// The manifest of a complete set.
    async fn manifest(&self, id: &SnapshotId) -> Result<Manifest>;

    /// Streams an object of a set as stored.
    async fn get_object(&self, id: &SnapshotId, name: &str) -> Result<ByteStream>;

    /// Deletes a set: its manifest first (so it stops being listed), then its objects.
    /// Idempotent: deleting a missing set is not an error.
    async fn delete(&self, id: &str) -> Result<()>;

    /// Sets with objects but no readable manifest, for prune to sweep.
    async fn list_incomplete(&self) -> Result<Vec<IncompleteSet>>;
}
