//! Downloading a set's objects for a restore: the etcd snapshot streamed through the codec's
//! [`decode`](crate::snapshot::codec::decode) into a file next to the target, then verified
//! (etcd's own sha256 trailer and the manifest's raw sha256) while the restore tool reads it;
//! the bundle into memory.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::etcd::{EtcdRestorer, RestorePlan, RestoreSpec};
use crate::snapshot::codec;
use crate::snapshot::keys::{self, EncryptionKey};
use crate::snapshot::trailer::{SnapshotDigest, TrailerHasher};
use crate::snapshot::{Manifest, ObjectEntry, ObjectKind, SnapshotStore};

/// The largest bundle read into memory. A kubeadm control plane's files are a few hundred KiB.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// What a verified snapshot produced: its size (the raw snapshot, trailer included), the sha256
/// of the whole file, and etcd's hash, which matched the trailer.
pub type SnapshotFile = SnapshotDigest;

/// A decoded etcd snapshot on disk, downloaded by [`snapshot_to_file`]. Its stored size and
/// sha256 and its decoded size were checked while downloading; its raw sha256 and etcd's trailer
/// are checked by [`verify`](Self::verify), which reads it back (from the page cache).
///
/// The split is for speed without giving up a check: the download is CPU-bound (the decoder, the
/// stored hash and the S3 server share the cores), while the restore tool that reads the file
/// next leaves a core idle. [`restore_verified`] runs the two at once and uses the tool's output
/// only if the file verifies. Until then the file is untrusted.
#[derive(Debug)]
pub struct DownloadedSnapshot {
    path: PathBuf,
    entry: ObjectEntry,
    set: String,
    /// Bytes written.
    pub size: u64,
}

impl DownloadedSnapshot {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file back and checks etcd's trailer and the manifest's raw size and sha256 (one
    /// hashing pass). An [`Error::Integrity`] naming the set and the failed check otherwise.
    pub async fn verify(&self) -> Result<SnapshotFile> {
        let path = self.path.clone();
        let what = format!("{} (etcd snapshot)", self.entry.name);
        let digest = tokio::task::spawn_blocking(move || hash_file(&path, &what))
            .await
            .map_err(|e| Error::io("snapshot hashing thread failed", std::io::Error::other(e)))
            .and_then(|r| r)
            .and_then(|d| d.check_against(&self.entry).map(|()| d));
        digest.map_err(|e| in_set(e, &self.set))
    }
}

/// Restores `file` with `restorer` into `spec.data_dir` (which must not exist) while verifying
/// the file ([`DownloadedSnapshot::verify`]) on another core. The tool is told the trailer is
/// checked (`--skip-hash-check`): it is, here, and if the check fails the tool's output is removed
/// and the check's error returned (it outranks whatever the tool made of a bad file). Nothing but
/// `spec.data_dir`, the tool's own new dir, is written before the file has verified.
pub async fn restore_verified(
    file: &DownloadedSnapshot,
    restorer: &dyn EtcdRestorer,
    spec: &RestoreSpec,
) -> Result<(RestorePlan, SnapshotFile)> {
    let spec = RestoreSpec { trailer_verified: true, ..spec.clone() };
    let (verified, restored) = tokio::join!(file.verify(), restorer.restore(&file.path, &spec));
    match verified {
        Ok(digest) => Ok((restored?, digest)),
        Err(e) => {
            if restored.is_ok()
                && let Err(rm) = std::fs::remove_dir_all(&spec.data_dir)
            {
                tracing::warn!(dir = %spec.data_dir.display(), error = %rm,
                    "cannot remove the restore built from a snapshot that failed verification");
            }
            Err(e)
        }
    }
}

/// `err` with the set named, if it does not name it already (the codec names the object only).
pub(crate) fn in_set(err: Error, id: &str) -> Error {
    match err {
        Error::Integrity { what, detail } if !what.contains(id) => {
            Error::Integrity { what: format!("{what} of backup set {id}"), detail }
        }
        Error::Config { key, reason } if !reason.contains(id) => {
            Error::Config { key, reason: format!("{reason} (backup set {id})") }
        }
        other => other,
    }
}

/// The entry of `kind` in the manifest, or an integrity error naming the set.
pub(crate) fn entry(manifest: &Manifest, kind: ObjectKind) -> Result<&ObjectEntry> {
    manifest.object(kind).ok_or_else(|| {
        Error::integrity(
            format!("backup set {}", manifest.id),
            format!("its manifest lists no {kind:?} object"),
        )
    })
}

/// Streams the set's etcd snapshot into a new file `dest` (mode 0600: the snapshot holds every
/// Secret), decrypting and decompressing on the way, and checks the stored bytes' size and sha256
/// and the decoded size against the manifest. The raw sha256 and etcd's trailer are left to
/// [`DownloadedSnapshot::verify`] (or [`restore_verified`]): the file is not to be trusted before.
/// On any error `dest` is removed.
pub async fn snapshot_to_file(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    key: Option<&EncryptionKey>,
    dest: &Path,
) -> Result<DownloadedSnapshot> {
    let result = snapshot_to_file_inner(store, manifest, key, dest).await;
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result.map_err(|e| in_set(e, manifest.id.as_str()))
}

async fn snapshot_to_file_inner(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    key: Option<&EncryptionKey>,
    dest: &Path,
) -> Result<DownloadedSnapshot> {
    let entry = entry(manifest, ObjectKind::EtcdSnapshot)?;
    // A wrong key is named before anything is downloaded.
    keys::check_key(&manifest.encryption, key)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
    let stored = store.get_object(&manifest.id, &entry.name).await?;
    // The raw bytes are hashed once, by `verify` (the trailer check and the manifest's raw sha256
    // come from the same pass), so the decoder skips its own raw hash.
    let opts = codec::DecodeOptions { hash_raw: false };
    let mut raw = codec::decode_with(stored, entry, manifest.compression, &manifest.encryption, key, opts)?;

    // Writing runs on its own thread, beside the decoder's.
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let dest_name = dest.display().to_string();
    let writer = tokio::task::spawn_blocking(move || write_chunks(file, rx, &dest_name));
    let mut failed = None;
    while let Some(chunk) = raw.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written =
        writer.await.map_err(|e| Error::io("snapshot writer thread failed", std::io::Error::other(e)));
    if let Some(e) = failed {
        return Err(e);
    }
    let size = written??;
    Ok(DownloadedSnapshot { path: dest.to_owned(), entry: entry.clone(), set: manifest.id.to_string(), size })
}

/// Writes chunks to `file` as they come; returns the bytes written. The file is not fsynced: it
/// is a transient copy that the restore tool reads at once (from the page cache), and it is
/// downloaded again after a crash; the restored data dir is what must be durable, and the tool
/// syncs that.
fn write_chunks(mut file: File, mut rx: mpsc::Receiver<Bytes>, dest: &str) -> Result<u64> {
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk).map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
        size += chunk.len() as u64;
    }
    file.flush().map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
    Ok(size)
}

/// Hashes the snapshot file at `path` ([`TrailerHasher`]: the whole file's sha256 and etcd's
/// trailer in one pass) and checks the trailer.
fn hash_file(path: &Path, what: &str) -> Result<SnapshotFile> {
    let cannot_read = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut file = File::open(path).map_err(cannot_read)?;
    let mut hasher = TrailerHasher::new();
    let mut buf = vec![0u8; HASH_READ];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(cannot_read(e)),
        }
    }
    hasher.finish(what)
}

/// The read size of [`hash_file`].
const HASH_READ: usize = 256 << 10;

/// Downloads and decodes the set's bundle into memory (verified by the codec against the
/// manifest). `None` if the set has no bundle.
pub async fn bundle_bytes(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    key: Option<&EncryptionKey>,
) -> Result<Option<Vec<u8>>> {
    let Some(entry) = manifest.object(ObjectKind::Bundle) else { return Ok(None) };
    let id = manifest.id.as_str();
    if entry.raw_size > MAX_BUNDLE_BYTES {
        return Err(Error::refused(format!(
            "the bundle of backup set {id} is {} bytes, more than the {} kdr reads; a control-plane \
             bundle is normally a few hundred KiB",
            entry.raw_size, MAX_BUNDLE_BYTES
        )));
    }
    let run = async {
        keys::check_key(&manifest.encryption, key)?;
        let stored = store.get_object(&manifest.id, &entry.name).await?;
        let mut raw = codec::decode(stored, entry, manifest.compression, &manifest.encryption, key)?;
        let mut out = Vec::with_capacity(entry.raw_size as usize);
        while let Some(chunk) = raw.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Some(out))
    };
    run.await.map_err(|e| in_set(e, id))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use sha2::{Digest, Sha256};

    use crate::snapshot::trailer::tests::fake_snapshot;

    const SET: &str = "20261121T051115Z-1a2b3c4d";

    /// Writes `data` in chunks of `chunk` bytes as the download does; the file's path.
    fn write(dir: &Path, data: &[u8], chunk: usize) -> PathBuf {
        let path = dir.join(format!("s-{chunk}.db"));
        let file = File::create(&path).unwrap();
        let (tx, rx) = mpsc::channel(data.len() / chunk.max(1) + 2);
        for c in data.chunks(chunk) {
            tx.try_send(Bytes::copy_from_slice(c)).unwrap();
        }
        drop(tx);
        assert_eq!(write_chunks(file, rx, "s.db").unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data, "chunk {chunk}");
        path
    }

    /// A downloaded snapshot of `data` whose manifest entry records `recorded`.
    fn downloaded(dir: &Path, data: &[u8], recorded: &[u8]) -> DownloadedSnapshot {
        let entry = ObjectEntry {
            name: "etcd.db.zst".into(),
            kind: ObjectKind::EtcdSnapshot,
            raw_size: recorded.len() as u64,
            raw_sha256: hex::encode(Sha256::digest(recorded)),
            stored_size: 0, // checked by the download, not by `verify`
            stored_sha256: String::new(),
        };
        let path = dir.join("downloaded.db");
        std::fs::write(&path, data).unwrap();
        DownloadedSnapshot { path, entry, set: SET.into(), size: data.len() as u64 }
    }

    #[test]
    fn writes_every_byte_and_hashes_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        // Bigger than one read of `hash_file`, so the trailer comes in a later read.
        let snap = fake_snapshot(2100);
        for chunk in [7, 33, snap.len()] {
            let path = write(dir.path(), &snap, chunk);
            let got = hash_file(&path, "etcd.db").unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(got.size, snap.len() as u64);
            assert_eq!(got.sha256, hex::encode(Sha256::digest(&snap)), "chunk {chunk}");
            assert_eq!(got.etcd_hash, hex::encode(&snap[snap.len() - 32..]));
        }
        let mut bad = snap.clone();
        bad[100] ^= 1;
        let e = hash_file(&write(dir.path(), &bad, 1000), "etcd.db").unwrap_err().to_string();
        assert!(e.contains("trailer is"), "{e}");
        let e =
            hash_file(&write(dir.path(), &snap[..snap.len() - 100], 999), "etcd.db").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[tokio::test]
    async fn verify_checks_the_trailer_and_the_manifest_and_names_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let snap = fake_snapshot(9);
        let good = downloaded(dir.path(), &snap, &snap).verify().await.unwrap();
        assert_eq!(good.etcd_hash, hex::encode(&snap[snap.len() - 32..]));

        let mut flipped = snap.clone();
        flipped[7] ^= 1;
        let e = downloaded(dir.path(), &flipped, &flipped).verify().await.unwrap_err();
        assert!(matches!(e, Error::Integrity { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("trailer is") && msg.contains(SET), "{msg}");

        // A valid snapshot, but not the one the manifest records.
        let other = fake_snapshot(10);
        let e = downloaded(dir.path(), &other, &snap).verify().await.unwrap_err().to_string();
        assert!(e.contains("the manifest says") && e.contains(SET), "{e}");
    }

    /// Creates `spec.data_dir` with a file in it, or fails like a tool would; records what it
    /// was told.
    #[derive(Debug, Default)]
    struct DirRestorer {
        fail: bool,
        told_verified: std::sync::Mutex<Vec<bool>>,
    }

    #[async_trait::async_trait]
    impl EtcdRestorer for DirRestorer {
        async fn plan(&self, _: &Path, _: &RestoreSpec) -> Result<RestorePlan> {
            Ok(RestorePlan {
                tool: crate::etcd::RestoreTool::Etcdutl { path: "dir".into(), version: "3.5.16".into() },
                command: "dir".into(),
                bump_revision: None,
                notes: vec![],
            })
        }
        async fn restore(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan> {
            self.told_verified.lock().unwrap().push(spec.trailer_verified);
            if self.fail {
                return Err(Error::CommandFailed {
                    host: "localhost".into(),
                    command: "dir".into(),
                    exit_code: Some(1),
                    stderr: "boom".into(),
                });
            }
            std::fs::create_dir_all(spec.data_dir.join("member/snap")).unwrap();
            std::fs::copy(snapshot, spec.data_dir.join("member/snap/db")).unwrap();
            self.plan(snapshot, spec).await
        }
    }

    #[tokio::test]
    async fn restore_verified_keeps_the_tools_output_only_if_the_file_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let snap = fake_snapshot(9);
        let spec = RestoreSpec::new("m", "http://127.0.0.1:2380", dir.path().join("new"));

        let tool = DirRestorer::default();
        let (_, digest) =
            restore_verified(&downloaded(dir.path(), &snap, &snap), &tool, &spec).await.unwrap();
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(&snap)));
        assert_eq!(std::fs::read(spec.data_dir.join("member/snap/db")).unwrap(), snap);
        assert_eq!(*tool.told_verified.lock().unwrap(), [true], "the tool skips its own hash check");
        std::fs::remove_dir_all(&spec.data_dir).unwrap();

        // The tool restores a tampered file (it was told not to check): its output goes.
        let mut tampered = snap.clone();
        tampered[600] ^= 1;
        let e =
            restore_verified(&downloaded(dir.path(), &tampered, &tampered), &tool, &spec).await.unwrap_err();
        assert!(e.to_string().contains("trailer is"), "{e}");
        assert!(!spec.data_dir.exists(), "a restore of an unverified file was left behind");

        // The check's error outranks the tool's.
        let failing = DirRestorer { fail: true, ..Default::default() };
        let e = restore_verified(&downloaded(dir.path(), &tampered, &tampered), &failing, &spec)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Integrity { .. }), "{e}");
        // A good file and a failing tool: the tool's error.
        let e = restore_verified(&downloaded(dir.path(), &snap, &snap), &failing, &spec).await.unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[test]
    fn errors_name_the_set_once() {
        let id = "20261121T051115Z-1a2b3c4d";
        let e = in_set(Error::integrity("etcd.db.zst", "stored sha256 is x"), id);
        assert_eq!(
            e.to_string(),
            format!("integrity check failed for etcd.db.zst of backup set {id}: stored sha256 is x")
        );
        let again = in_set(e, id).to_string();
        assert_eq!(again.matches(id).count(), 1, "{again}");
    }
}
