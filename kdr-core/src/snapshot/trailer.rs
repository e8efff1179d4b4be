//! etcd's snapshot trailer: a snapshot file is a bbolt db followed by 32 bytes, the sha256 of
//! the db. [`TrailerHasher`] checks the trailer and computes the sha256 of the whole file in one
//! pass over chunks of any size (the trailer may straddle chunks), so a reader of a snapshot
//! hashes it once, not once per check: the backup's Snapshot RPC stream, `snapshot verify` and
//! the restore's downloaded file.
use sha2::{Digest, Sha256};

use super::ObjectEntry;
use crate::error::{Error, Result};

/// The size of etcd's hash trailer.
pub const TRAILER: usize = 32;

/// What a snapshot hashed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDigest {
    /// Bytes seen (the db and its trailer).
    pub size: u64,
    /// Hex sha256 of the whole file (what a manifest records as the raw sha256).
    pub sha256: String,
    /// Hex sha256 of the db, which matched the trailer.
    pub etcd_hash: String,
}

impl SnapshotDigest {
    /// Checks the size and sha256 against what the manifest records for the decoded object.
    pub fn check_against(&self, entry: &ObjectEntry) -> Result<()> {
        if self.size != entry.raw_size || self.sha256 != entry.raw_sha256 {
            return Err(Error::integrity(
                &entry.name,
                format!(
                    "the decoded snapshot is {} bytes with sha256 {}, the manifest says {} bytes with sha256 {}",
                    self.size, self.sha256, entry.raw_size, entry.raw_sha256
                ),
            ));
        }
        Ok(())
    }
}

/// Hashes a snapshot chunk by chunk, holding back the last 32 bytes seen (the trailer, if the
/// stream ends there).
#[derive(Clone, Debug, Default)]
pub struct TrailerHasher {
    prefix: Sha256,
    held: Vec<u8>,
    size: u64,
}

impl TrailerHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feeds the next chunk of the snapshot.
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if chunk.len() >= TRAILER {
            self.prefix.update(&self.held);
            self.prefix.update(&chunk[..chunk.len() - TRAILER]);
            self.held.clear();
            self.held.extend_from_slice(&chunk[chunk.len() - TRAILER..]);
        } else {
            self.held.extend_from_slice(chunk);
            if self.held.len() > TRAILER {
                let extra = self.held.len() - TRAILER;
                self.prefix.update(&self.held[..extra]);
                self.held.drain(..extra);
            }
        }
    }

    /// Checks that the stream was a bbolt db (a whole number of 512-byte units) followed by the
    /// sha256 of it; an integrity error naming `what` otherwise.
    pub fn finish(self, what: &str) -> Result<SnapshotDigest> {
        let Self { mut prefix, held, size } = self;
        if held.len() < TRAILER || size % 512 != TRAILER as u64 {
            return Err(Error::integrity(
                what,
                format!(
                    "{size} bytes is not a bbolt db followed by etcd's 32-byte sha256 trailer (size % 512 should \
                     be 32): truncated or not an etcd snapshot"
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
        Ok(SnapshotDigest { size, sha256: hex::encode(prefix.finalize()), etcd_hash: hex::encode(etcd_hash) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake snapshot: `pages` 512-byte units of a pattern, then the sha256 trailer.
    pub(crate) fn fake_snapshot(pages: usize) -> Vec<u8> {
        let mut db: Vec<u8> = (0..pages * 512).map(|i| (i % 251) as u8).collect();
        let h = Sha256::digest(&db);
        db.extend_from_slice(&h);
        db
    }

    fn hash(data: &[u8], chunk: usize) -> Result<SnapshotDigest> {
        let mut h = TrailerHasher::new();
        data.chunks(chunk.max(1)).for_each(|c| h.update(c));
        h.finish("etcd.db")
    }

    #[test]
    fn trailer_is_checked_whatever_the_chunking() {
        let snap = fake_snapshot(9);
        let whole = hex::encode(Sha256::digest(&snap));
        for chunk in [1, 7, 31, 32, 33, 512, 4096, snap.len()] {
            let got = hash(&snap, chunk).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(got.size, snap.len() as u64);
            assert_eq!(got.sha256, whole, "chunk {chunk}");
            assert_eq!(got.etcd_hash, hex::encode(&snap[snap.len() - 32..]));
        }
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_refused() {
        let mut snap = fake_snapshot(4);
        snap[100] ^= 1;
        let e = hash(&snap, 1000).unwrap_err().to_string();
        assert!(e.contains("trailer is"), "{e}");

        let snap = fake_snapshot(4);
        let e = hash(&snap[..snap.len() - 100], 1000).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // Cut on a page boundary, the size looks right but the trailer does not match.
        let e = hash(&snap[..snap.len() - 512], 1000).unwrap_err().to_string();
        assert!(e.contains("trailer is"), "{e}");
        let e = hash(&snap[..10], 3).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = hash(&[], 3).unwrap_err().to_string();
        assert!(e.contains("0 bytes"), "{e}");
    }
}
