//! Downloading a set's objects for a restore: the etcd snapshot streamed through the codec's
//! [`decode`](crate::snapshot::codec::decode) into a file next to the target, checking etcd's own
//! sha256 trailer on the way; the bundle into memory.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::snapshot::codec::{self, EncryptionKey};
use crate::snapshot::trailer::{SnapshotDigest, TrailerHasher};
use crate::snapshot::{Manifest, ObjectEntry, ObjectKind, SnapshotStore};

/// The largest bundle read into memory. A kubeadm control plane's files are a few hundred KiB.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// What a verified snapshot download produced: the bytes written (the raw snapshot, trailer
/// included), the sha256 of the whole file, and etcd's hash, which matched the trailer.
pub type SnapshotFile = SnapshotDigest;

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
/// Secret), decrypting and decompressing on the way. Checks, before returning `Ok`: the stored
/// bytes' size and sha256 (codec), the raw size and sha256, and etcd's trailer: the last 32 bytes
/// must be the sha256 of everything before them (both from one hashing pass, here). On any error
/// `dest` is removed.
pub async fn snapshot_to_file(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    key: Option<&EncryptionKey>,
    dest: &Path,
) -> Result<SnapshotFile> {
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
) -> Result<SnapshotFile> {
    let entry = entry(manifest, ObjectKind::EtcdSnapshot)?;
    // A wrong key is named before anything is downloaded.
    codec::check_key(&manifest.encryption, key)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
    let stored = store.get_object(&manifest.id, &entry.name).await?;
    // The raw bytes are hashed once, here (the trailer check and the manifest's raw sha256 come
    // from the same pass), so the decoder skips its own raw hash.
    let opts = codec::DecodeOptions { hash_raw: false };
    let mut raw = codec::decode_with(stored, entry, manifest.compression, &manifest.encryption, key, opts)?;

    // Hashing and writing run on their own thread, beside the decoder's.
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let what = format!("{} (etcd snapshot)", entry.name);
    let dest_name = dest.display().to_string();
    let writer = tokio::task::spawn_blocking(move || write_and_hash(file, rx, &what, &dest_name));
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
    let written = written??;
    written.check_against(entry)?;
    Ok(written)
}

/// Hashes chunks as they come ([`TrailerHasher`]: the whole file's sha256 and etcd's trailer in
/// one pass), writes them to `file` and checks the trailer. The file is not fsynced: it is a
/// transient copy that the restore tool reads at once (from the page cache), and it is downloaded
/// again after a crash; the restored data dir is what must be durable, and the tool syncs that.
fn write_and_hash(
    mut file: File,
    mut rx: mpsc::Receiver<Bytes>,
    what: &str,
    dest: &str,
) -> Result<SnapshotFile> {
    let mut hasher = TrailerHasher::new();
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk).map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
        hasher.update(&chunk);
    }
    file.flush().map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
    hasher.finish(what)
}

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
        codec::check_key(&manifest.encryption, key)?;
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

    fn run(data: &[u8], chunk: usize) -> Result<SnapshotFile> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let file = File::create(&path).unwrap();
        let (tx, rx) = mpsc::channel(data.len() / chunk.max(1) + 2);
        for c in data.chunks(chunk) {
            tx.try_send(Bytes::copy_from_slice(c)).unwrap();
        }
        drop(tx);
        let r = write_and_hash(file, rx, "etcd.db", "s.db");
        if r.is_ok() {
            assert_eq!(std::fs::read(&path).unwrap(), data);
        }
        r
    }

    #[test]
    fn writes_every_byte_and_hashes_them_once() {
        let snap = fake_snapshot(9);
        for chunk in [7, 33, snap.len()] {
            let got = run(&snap, chunk).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(got.sha256, hex::encode(Sha256::digest(&snap)), "chunk {chunk}");
            assert_eq!(got.etcd_hash, hex::encode(&snap[snap.len() - 32..]));
        }
        let mut bad = snap.clone();
        bad[100] ^= 1;
        let e = run(&bad, 1000).unwrap_err().to_string();
        assert!(e.contains("trailer is"), "{e}");
        let e = run(&snap[..snap.len() - 100], 1000).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
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
