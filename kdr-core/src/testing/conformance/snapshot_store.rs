//! The [`SnapshotStore`] conformance suite: `run_all(&store).await` panics with a message naming
//! the broken guarantee. The store must be empty (use a fresh prefix on a shared bucket).
//!
//! Run by `memory://` and `file://` stores in kdr-core's unit tests and by the S3 container store
//! in the integration tests.
use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::snapshot::{
    ByteStream, Compression, Encryption, MANIFEST_SCHEMA_VERSION, Manifest, ObjectEntry, ObjectKind,
    PodNames, SnapshotId, SnapshotSource, SnapshotStore,
};

/// A manifest for `id` with plausible values and the given objects, for tests.
pub fn sample_manifest(id: SnapshotId, objects: Vec<ObjectEntry>) -> Manifest {
    let created_at = id.created();
    Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        id,
        created_at,
        duration_ms: 1234,
        cluster_name: "conformance".into(),
        source: SnapshotSource {
            endpoint: "https://127.0.0.1:2379".into(),
            member_name: "cp-1".into(),
            member_id: "8e9e05c52164694d".into(),
            etcd_version: "3.5.16".into(),
            revision: 42,
            db_size: 20480,
        },
        compression: Compression::None,
        encryption: Encryption::None,
        etcd_hash_verified: true,
        objects,
        bundle_files: Vec::new(),
        key_inventory: BTreeMap::from([("pods".to_owned(), 3), ("secrets".to_owned(), 2)]),
        total_keys: 5,
        pods: Some(PodNames {
            names: vec!["default/web-0".into(), "default/web-1".into(), "kube-system/etcd-cp-1".into()],
            truncated: false,
        }),
    }
}

/// A byte stream of `data` in chunks of `chunk` bytes.
pub fn stream_of(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<crate::Result<Bytes>> =
        data.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks).boxed()
}

/// Reads a whole stream (tests only: it buffers).
pub async fn read_all(mut s: ByteStream) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

fn id_at(t: DateTime<Utc>, suffix: &str) -> SnapshotId {
    SnapshotId::parse(&format!("{}-{suffix}", t.format("%Y%m%dT%H%M%SZ"))).expect("valid id")
}

fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn put(store: &dyn SnapshotStore, id: &SnapshotId, name: &str, data: &[u8]) -> ObjectEntry {
    let stored = store
        .put_object(id, name, stream_of(data, 64 * 1024))
        .await
        .unwrap_or_else(|e| panic!("{}: put_object {name} failed: {e}", store.describe()));
    let sha = hex::encode(Sha256::digest(data));
    assert_eq!(stored.size, data.len() as u64, "put_object must report the stored size");
    assert_eq!(stored.sha256, sha, "put_object must report the sha256 of the stored bytes");
    ObjectEntry {
        name: name.into(),
        kind: ObjectKind::EtcdSnapshot,
        stored_size: stored.size,
        stored_sha256: stored.sha256,
        raw_size: stored.size,
        raw_sha256: sha,
    }
}

/// Runs every check. The store must be empty.
pub async fn run_all(store: &dyn SnapshotStore) {
    empty_store(store).await;
    invisible_until_committed_then_listed(store).await;
    large_object_streams_intact(store).await;
    failed_input_leaves_nothing_listed(store).await;
    newest_first(store).await;
    missing_things_are_not_found(store).await;
    delete_is_idempotent_and_manifest_first(store).await;
}

async fn empty_store(store: &dyn SnapshotStore) {
    let d = store.describe();
    store.check().await.unwrap_or_else(|e| panic!("{d}: check on an empty store failed: {e}"));
    assert!(store.list().await.unwrap().is_empty(), "{d}: the suite needs an empty store");
    assert!(store.latest().await.unwrap().is_none(), "{d}: latest of an empty store is None");
    assert!(store.list_incomplete().await.unwrap().is_empty(), "{d}: no incomplete sets in an empty store");
}

async fn invisible_until_committed_then_listed(store: &dyn SnapshotStore) {
    let d = store.describe();
    let id = id_at(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(), "aa000001");
    let data = pseudo_random(100_000, 1);
    let entry = put(store, &id, "etcd.db", &data).await;

    assert!(store.list().await.unwrap().is_empty(), "{d}: a set without a manifest must not be listed");
    assert!(store.latest().await.unwrap().is_none(), "{d}: latest must ignore incomplete sets");
    let incomplete = store.list_incomplete().await.unwrap();
    assert_eq!(incomplete.len(), 1, "{d}: the uncommitted set is incomplete");
    assert_eq!(incomplete[0].id, id.as_str());
    assert_eq!(incomplete[0].objects, vec!["etcd.db".to_owned()]);
    assert!(matches!(store.manifest(&id).await, Err(Error::NotFound { .. })), "{d}: no manifest yet");

    let manifest = sample_manifest(id.clone(), vec![entry]);
    store.commit(&manifest).await.unwrap_or_else(|e| panic!("{d}: commit failed: {e}"));
    let listed = store.list().await.unwrap();
    assert_eq!(listed, vec![manifest.clone()], "{d}: the committed set is listed, manifest round-trips");
    assert_eq!(store.latest().await.unwrap().as_ref(), Some(&manifest));
    assert_eq!(store.manifest(&id).await.unwrap(), manifest);
    assert!(store.list_incomplete().await.unwrap().is_empty(), "{d}: a committed set is not incomplete");

    match store.commit(&manifest).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("{d}: a second commit must fail with AlreadyExists, got {other:?}"),
    }
    let back = read_all(store.get_object(&id, "etcd.db").await.unwrap()).await.unwrap();
    assert!(back == data, "{d}: get_object must return the stored bytes");
    store.delete(id.as_str()).await.unwrap();
}

async fn large_object_streams_intact(store: &dyn SnapshotStore) {
    let d = store.describe();
    // Bigger than one 8 MiB part, with an odd tail: exercises the multipart path.
    let id = id_at(Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap(), "bb000001");
    let data = pseudo_random(17 * 1024 * 1024 + 333, 2);
    let entry = put(store, &id, "etcd.db.zst", &data).await;
    store.commit(&sample_manifest(id.clone(), vec![entry.clone()])).await.unwrap();
    let mut stream = store.get_object(&id, "etcd.db.zst").await.unwrap();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("{d}: download failed: {e}"));
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(size, entry.stored_size, "{d}: large object size");
    assert_eq!(hex::encode(hasher.finalize()), entry.stored_sha256, "{d}: large object hash");
    store.delete(id.as_str()).await.unwrap();
}

async fn failed_input_leaves_nothing_listed(store: &dyn SnapshotStore) {
    let d = store.describe();
    let id = id_at(Utc.with_ymd_and_hms(2026, 1, 4, 0, 0, 0).unwrap(), "cc000001");
    for (name, before_failure) in [("small.db", 10_000usize), ("big.db", 12 * 1024 * 1024)] {
        let head = pseudo_random(before_failure, 3);
        let failing: ByteStream = stream_of(&head, 1024 * 1024)
            .chain(futures::stream::once(async {
                Err(Error::unavailable("test input", std::io::Error::other("etcd went away")))
            }))
            .boxed();
        match store.put_object(&id, name, failing).await {
            Err(e) => {
                assert!(e.to_string().contains("etcd went away"), "{d}: the input's error is returned: {e}")
            }
            Ok(_) => panic!("{d}: put_object must fail when its input fails"),
        }
        match store.get_object(&id, name).await {
            Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("{d}: a failed upload of {name} must leave no object, got {e}"),
            Ok(_) => panic!("{d}: a failed upload of {name} must leave no object"),
        }
    }
    assert!(store.list().await.unwrap().is_empty(), "{d}: nothing listed after failed uploads");
    store.delete(id.as_str()).await.unwrap();
}

async fn newest_first(store: &dyn SnapshotStore) {
    let d = store.describe();
    let base = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let mut ids = Vec::new();
    // Committed out of order.
    for (i, hours) in [(1, 5i64), (2, 1), (3, 9)] {
        let id = id_at(base + Duration::hours(hours), &format!("dd00000{i}"));
        let entry = put(store, &id, "etcd.db", format!("set {i}").as_bytes()).await;
        store.commit(&sample_manifest(id.clone(), vec![entry])).await.unwrap();
        ids.push(id);
    }
    let listed: Vec<_> = store.list().await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[0].clone(), ids[1].clone()], "{d}: list is newest first");
    assert_eq!(store.latest().await.unwrap().map(|m| m.id), Some(ids[2].clone()), "{d}: latest is newest");
    for id in ids {
        store.delete(id.as_str()).await.unwrap();
    }
}

async fn missing_things_are_not_found(store: &dyn SnapshotStore) {
    let d = store.describe();
    let id = id_at(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(), "ee000001");
    assert!(matches!(store.manifest(&id).await, Err(Error::NotFound { .. })), "{d}: missing set is NotFound");
    assert!(
        matches!(store.get_object(&id, "etcd.db").await, Err(Error::NotFound { .. })),
        "{d}: missing object is NotFound"
    );
}

async fn delete_is_idempotent_and_manifest_first(store: &dyn SnapshotStore) {
    let d = store.describe();
    let id = id_at(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(), "ff000001");
    let a = put(store, &id, "etcd.db", b"snapshot").await;
    let b = put(store, &id, "bundle.tar", b"bundle").await;
    store.commit(&sample_manifest(id.clone(), vec![a, b])).await.unwrap();
    store.delete(id.as_str()).await.unwrap_or_else(|e| panic!("{d}: delete failed: {e}"));
    assert!(store.list().await.unwrap().is_empty(), "{d}: a deleted set is not listed");
    assert!(store.list_incomplete().await.unwrap().is_empty(), "{d}: delete removes every object");
    assert!(matches!(store.get_object(&id, "etcd.db").await, Err(Error::NotFound { .. })));
    store
        .delete(id.as_str())
        .await
        .unwrap_or_else(|e| panic!("{d}: deleting a missing set must succeed: {e}"));
    // An incomplete set is deleted the same way (prune's sweep).
    put(store, &id, "etcd.db", b"partial").await;
    assert_eq!(store.list_incomplete().await.unwrap().len(), 1);
    store.delete(id.as_str()).await.unwrap();
    assert!(store.list_incomplete().await.unwrap().is_empty(), "{d}: sweeping an incomplete set");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ObjectStoreSnapshotStore, StoreOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        let store = ObjectStoreSnapshotStore::from_url("memory://", &StoreOptions::default()).unwrap();
        run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_with_prefix_conforms() {
        let store =
            ObjectStoreSnapshotStore::from_url("memory:///some/prefix", &StoreOptions::default()).unwrap();
        run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let store = ObjectStoreSnapshotStore::from_url(&url, &StoreOptions::default()).unwrap();
        run_all(&store).await;
    }
}
