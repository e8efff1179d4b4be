//! Downloading a set's objects for a restore: the etcd snapshot streamed through the codec's
//! [`decode`](crate::snapshot::codec::decode) into a file next to the target, checking etcd's own
//! sha256 trailer on the way; the bundle into memory.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::snapshot::codec::{self, EncryptionKey};
use crate::snapshot::{Manifest, ObjectEntry, ObjectKind, SnapshotStore};

/// The size of etcd's hash trailer.
const TRAILER: usize = 32;
/// The largest bundle read into memory. A kubeadm control plane's files are a few hundred KiB.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// What a verified snapshot download produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Bytes written (the raw snapshot, trailer included).
    pub size: u64,
    /// Hex sha256 of the whole file.
    pub sha256: String,
    /// Hex sha256 of everything before the trailer, which matched the trailer.
    pub etcd_hash: String,
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
    if written.size != entry.raw_size || written.sha256 != entry.raw_sha256 {
        return Err(Error::integrity(
            &entry.name,
            format!(
                "restored snapshot is {} bytes with sha256 {}, the manifest says {} bytes with sha256 {}",
                written.size, written.sha256, entry.raw_size, entry.raw_sha256
            ),
        ));
    }
    Ok(written)
}

/// Hashes chunks as they come (holding back the last 32 bytes, which should be the trailer),
/// writes them to `file` and checks the trailer. The file is not fsynced: it is a transient copy
/// that the restore tool reads at once (from the page cache), and it is downloaded again after a
/// crash; the restored data dir is what must be durable, and the tool syncs that.
fn write_and_hash(
    mut file: File,
    mut rx: mpsc::Receiver<Bytes>,
    what: &str,
    dest: &str,
) -> Result<SnapshotFile> {
    let mut prefix = Sha256::new();
    let mut held: Vec<u8> = Vec::with_capacity(2 * TRAILER);
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        file.write_all(&chunk).map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
        size += chunk.len() as u64;
        if chunk.len() >= TRAILER {
            prefix.update(&held);
            prefix.update(&chunk[..chunk.len() - TRAILER]);
            held.clear();
            held.extend_from_slice(&chunk[chunk.len() - TRAILER..]);
        } else {
            held.extend_from_slice(&chunk);
            if held.len() > TRAILER {
                let extra = held.len() - TRAILER;
                prefix.update(&held[..extra]);
                held.drain(..extra);
            }
        }
    }
    file.flush().map_err(|e| Error::io(format!("cannot write {dest}"), e))?;
    if held.len() < TRAILER || size % 512 != TRAILER as u64 {
        return Err(Error::integrity(
            what,
            format!(
                "{size} bytes is not a bbolt db followed by etcd's 32-byte sha256 trailer (size % 512 should be 32): \
                 truncated or not an etcd snapshot"
            ),
        ));
    }
    let etcd_hash = prefix.clone().finalize();
    if etcd_hash.as_slice() != held.as_slice() {
        return Err(Error::integrity(
            what,
            format!(
                "etcd's sha256 trailer is {} but the data hashes to {}",
                hex::encode(&held),
                hex::encode(etcd_hash)
            ),
        ));
    }
    prefix.update(&held);
    Ok(SnapshotFile { size, sha256: hex::encode(prefix.finalize()), etcd_hash: hex::encode(etcd_hash) })
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

    /// An etcd-like snapshot: `n` 512-byte pages, then the sha256 of them.
    pub(crate) fn fake_snapshot(pages: usize) -> Vec<u8> {
        let mut db: Vec<u8> = (0..pages * 512).map(|i| (i * 7 % 251) as u8).collect();
        let h = Sha256::digest(&db);
        db.extend_from_slice(&h);
        db
    }

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
    fn trailer_is_checked_whatever_the_chunking() {
        let snap = fake_snapshot(9);
        let whole = hex::encode(Sha256::digest(&snap));
        for chunk in [1, 7, 31, 32, 33, 512, 4096, snap.len()] {
            let got = run(&snap, chunk).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(got.size, snap.len() as u64);
            assert_eq!(got.sha256, whole, "chunk {chunk}");
            assert_eq!(got.etcd_hash, hex::encode(&snap[snap.len() - 32..]));
        }
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_refused() {
        let mut snap = fake_snapshot(4);
        snap[100] ^= 1;
        let e = run(&snap, 1000).unwrap_err().to_string();
        assert!(e.contains("trailer"), "{e}");

        let snap = fake_snapshot(4);
        let e = run(&snap[..snap.len() - 100], 1000).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // Cut on a page boundary, the size looks right but the trailer does not match.
        let e = run(&snap[..snap.len() - 512], 1000).unwrap_err().to_string();
        assert!(e.contains("trailer"), "{e}");
        let e = run(&snap[..10], 3).unwrap_err().to_string();
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
