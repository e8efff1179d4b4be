//! Re-reading sets: [`verify`] checks every hash a manifest records; [`download`] writes an
//! object to a local file (decoded, or as stored), never leaving a partial file under the final
//! name.
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::codec;
use super::keys::{self, EncryptionKey};
use super::trailer::TrailerHasher;
use super::{ByteStream, Encryption, Manifest, ObjectEntry, ObjectKind, SnapshotStore};
use crate::error::{Error, Result};

/// The result of checking one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectCheck {
    /// Object name.
    pub name: String,
    /// Whether every check that ran passed.
    pub ok: bool,
    /// What was checked, or what failed.
    pub detail: String,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The set's id.
    pub id: String,
    /// One entry per object in the manifest.
    pub objects: Vec<ObjectCheck>,
    /// Whether the decoded contents were checked (false for an encrypted set without its key:
    /// then only the stored bytes' hashes were checked).
    pub decoded: bool,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.objects.iter().all(|o| o.ok)
    }
}

/// Re-reads every object of a set and checks it against the manifest: stored size and sha256;
/// and, when the set can be decoded (not encrypted, or `key` given), the decoded size and
/// sha256, etcd's sha256 trailer of the snapshot, and each bundled file's sha256.
///
/// Integrity failures and missing objects are reported in the [`VerifyReport`] (so every object
/// is checked); an unreachable store or a wrong key is an `Err`.
pub async fn verify(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    key: Option<&EncryptionKey>,
) -> Result<VerifyReport> {
    let decoded = manifest.encryption == Encryption::None || key.is_some();
    if decoded {
        keys::check_key(&manifest.encryption, key)?;
    }
    let mut objects = Vec::new();
    for entry in &manifest.objects {
        let stream = match store.get_object(&manifest.id, &entry.name).await {
            Ok(s) => s,
            Err(e @ Error::NotFound { .. }) => {
                objects.push(ObjectCheck { name: entry.name.clone(), ok: false, detail: e.to_string() });
                continue;
            }
            Err(e) => return Err(e),
        };
        let outcome = if decoded {
            // The snapshot's raw bytes are hashed once, by check_decoded (the trailer and the
            // manifest's raw sha256 from one pass), so the decoder skips its own raw hash.
            let opts = codec::DecodeOptions { hash_raw: entry.kind != ObjectKind::EtcdSnapshot };
            let raw =
                codec::decode_with(stream, entry, manifest.compression, &manifest.encryption, key, opts)?;
            check_decoded(raw, entry, manifest).await
        } else {
            check_stored(stream, entry).await.map(|()| {
                "stored size and sha256 match (encrypted: no key given, contents not checked)".to_owned()
            })
        };
        objects.push(match outcome {
            Ok(detail) => ObjectCheck { name: entry.name.clone(), ok: true, detail },
            Err(e @ (Error::Integrity { .. } | Error::NotFound { .. })) => {
                ObjectCheck { name: entry.name.clone(), ok: false, detail: e.to_string() }
            }
            Err(e) => return Err(e),
        });
    }
    Ok(VerifyReport { id: manifest.id.to_string(), objects, decoded })
}

async fn check_stored(mut stream: ByteStream, entry: &ObjectEntry) -> Result<()> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        let c = c?;
        h.update(&c);
        n += c.len() as u64;
    }
    let sha = hex::encode(h.finalize());
    if n != entry.stored_size || sha != entry.stored_sha256 {
        return Err(Error::integrity(
            &entry.name,
            format!(
                "stored {n} bytes with sha256 {sha}; the manifest says {} bytes, {}",
                entry.stored_size, entry.stored_sha256
            ),
        ));
    }
    Ok(())
}

/// Bundles are small (certificates and YAML); more than this is not a kdr bundle.
const MAX_BUNDLE: usize = 256 * 1024 * 1024;

async fn check_decoded(mut raw: ByteStream, entry: &ObjectEntry, manifest: &Manifest) -> Result<String> {
    match entry.kind {
        ObjectKind::EtcdSnapshot => {
            let mut hasher = TrailerHasher::new();
            while let Some(c) = raw.next().await {
                hasher.update(&c?);
            }
            hasher.finish(&entry.name)?.check_against(entry)?;
            Ok("stored and decoded sizes and sha256 match; etcd's sha256 trailer verified".into())
        }
        ObjectKind::Bundle => {
            let mut buf = Vec::new();
            while let Some(c) = raw.next().await {
                buf.extend_from_slice(&c?);
                if buf.len() > MAX_BUNDLE {
                    return Err(Error::integrity(&entry.name, "bundle larger than 256 MiB"));
                }
            }
            let mut archive = tar::Archive::new(buf.as_slice());
            let mut seen = 0usize;
            let entries =
                archive.entries().map_err(|e| Error::integrity(&entry.name, format!("not a tar: {e}")))?;
            for file in entries {
                let mut file =
                    file.map_err(|e| Error::integrity(&entry.name, format!("bad tar entry: {e}")))?;
                let path = format!(
                    "/{}",
                    file.path().map_err(|e| Error::integrity(&entry.name, e.to_string()))?.display()
                );
                let mut h = Sha256::new();
                std::io::copy(&mut file, &mut h).map_err(|e| Error::integrity(&entry.name, e.to_string()))?;
                let sha = hex::encode(h.finalize());
                match manifest.bundle_files.iter().find(|f| f.path == path) {
                    Some(f) if f.sha256 == sha => seen += 1,
                    Some(_) => {
                        return Err(Error::integrity(
                            &entry.name,
                            format!("{path}: sha256 differs from the manifest"),
                        ));
                    }
                    None => {
                        return Err(Error::integrity(&entry.name, format!("{path} is not in the manifest")));
                    }
                }
            }
            if seen != manifest.bundle_files.len() {
                return Err(Error::integrity(
                    &entry.name,
                    format!("{seen} files in the bundle, the manifest lists {}", manifest.bundle_files.len()),
                ));
            }
            Ok(format!("stored and decoded sizes and sha256 match; {seen} bundled files match"))
        }
    }
}

/// [`download_with_progress`] without progress reporting.
pub async fn download(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    kind: ObjectKind,
    key: Option<&EncryptionKey>,
    dest: &Path,
    as_stored: bool,
) -> Result<u64> {
    download_with_progress(store, manifest, kind, key, dest, as_stored, &crate::progress::NoProgress).await
}

/// Downloads object `kind` of a set to `dest`: decoded (decrypted and decompressed, e.g. an
/// `etcd.db` that `etcdutl snapshot restore` takes) unless `as_stored`. Every byte is verified
/// against the manifest; the data goes to `<dest>.partial` and is renamed to `dest` only when
/// complete and verified. Refuses to overwrite `dest`. Reports bytes written to `progress`.
/// Returns the bytes written.
pub async fn download_with_progress(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
    kind: ObjectKind,
    key: Option<&EncryptionKey>,
    dest: &Path,
    as_stored: bool,
    progress: &dyn crate::progress::Progress,
) -> Result<u64> {
    let entry = manifest.object(kind).ok_or_else(|| Error::NotFound {
        what: format!("{kind:?} object in backup set {}", manifest.id),
        hint: None,
    })?;
    if dest.exists() {
        return Err(Error::AlreadyExists { what: format!("download destination {}", dest.display()) });
    }
    if !as_stored {
        keys::check_key(&manifest.encryption, key)?;
    }
    let stored = store.get_object(&manifest.id, &entry.name).await?;
    let mut stream: ByteStream = if as_stored {
        let entry = entry.clone();
        verifying_stored(stored, entry)
    } else {
        codec::decode(stored, entry, manifest.compression, &manifest.encryption, key)?
    };
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let io = |e| Error::io(format!("failed to write {}", partial.display()), e);
    let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
    let mut written = 0u64;
    progress.start(if as_stored { entry.stored_size } else { entry.raw_size });
    let result: Result<()> = async {
        while let Some(c) = stream.next().await {
            let c = c?;
            file.write_all(&c).await.map_err(io)?;
            written += c.len() as u64;
            progress.advance(c.len() as u64);
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
    .await;
    progress.finish();
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(|e| Error::io(format!("failed to rename {} to {}", partial.display(), dest.display()), e))?;
    Ok(written)
}

/// Passes stored bytes through, ending with an integrity error if they do not match `entry`.
fn verifying_stored(stream: ByteStream, entry: ObjectEntry) -> ByteStream {
    let state = (stream, Sha256::new(), 0u64, entry, false);
    futures::stream::unfold(state, |(mut s, mut h, mut n, entry, done)| async move {
        if done {
            return None;
        }
        match s.next().await {
            Some(Ok(c)) => {
                h.update(&c);
                n += c.len() as u64;
                Some((Ok(c), (s, h, n, entry, false)))
            }
            Some(Err(e)) => Some((Err(e), (s, h, n, entry, true))),
            None => {
                let sha = hex::encode(h.clone().finalize());
                if n == entry.stored_size && sha == entry.stored_sha256 {
                    None
                } else {
                    let e = Error::integrity(
                        &entry.name,
                        format!("stored bytes ({n}, sha256 {sha}) differ from the manifest"),
                    );
                    Some((Err(e), (s, h, n, entry, true)))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::{manifest, memory, put};
    use crate::snapshot::trailer::tests::fake_snapshot;

    /// A committed set holding `snap` as its etcd snapshot, hashes recorded from what was stored.
    async fn set_with(store: &dyn SnapshotStore, snap: Vec<u8>) -> Manifest {
        let mut m = manifest();
        m.objects.push(put(store, &m.id, ObjectKind::EtcdSnapshot, snap).await);
        store.commit(&m).await.unwrap();
        m
    }

    #[tokio::test]
    async fn the_snapshot_is_checked_against_its_trailer_and_the_manifest() {
        let store = memory();
        let good = set_with(store.as_ref(), fake_snapshot(16)).await;
        let report = verify(store.as_ref(), &good, None).await.unwrap();
        assert!(report.is_ok() && report.decoded, "{report:?}");
        assert!(report.objects[0].detail.contains("trailer verified"), "{report:?}");

        // The manifest's raw sha256 disagrees with what the stored bytes decode to.
        let mut wrong = good.clone();
        wrong.objects[0].raw_sha256 = "00".repeat(32);
        let report = verify(store.as_ref(), &wrong, None).await.unwrap();
        assert!(!report.is_ok(), "{report:?}");
        assert!(report.objects[0].detail.contains("the manifest says"), "{report:?}");

        // Stored and recorded consistently, but not an etcd snapshot: its trailer does not match.
        let store = memory();
        let mut bad = fake_snapshot(16);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let m = set_with(store.as_ref(), bad).await;
        let report = verify(store.as_ref(), &m, None).await.unwrap();
        assert!(!report.is_ok(), "{report:?}");
        assert!(report.objects[0].detail.contains("sha256 trailer is"), "{report:?}");
    }
}
