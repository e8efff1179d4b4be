//! Makes a backup set of a real etcd in a store, for the restore tests.
//!
//! TODO(restore↔backup): this stands in for the backup pipeline (issue 3) until it lands; it uses
//! the same codec and store, and the etcd Snapshot RPC, and writes the same manifest.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::snapshot::codec::{self, EncodeOptions, EncryptionKey};
use kdr_core::snapshot::{
    BundleFile, Compression, MANIFEST_SCHEMA_VERSION, Manifest, ObjectEntry, ObjectKind, SnapshotId,
    SnapshotSource, SnapshotStore,
};
use kdr_core::testing::containers::EtcdContainer;
use sha2::{Digest, Sha256};

/// What to back up.
#[derive(Default)]
pub struct BackupRequest {
    /// Encrypt to this key.
    pub key: Option<EncryptionKey>,
    /// Bundle every file under this root (as paths relative to it, like `/` on a real host).
    pub bundle_root: Option<PathBuf>,
}

/// Files laid out as kubeadm does, under `root`. Returns (path as on the host, content).
pub fn kubeadm_like_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let files: &[(&str, u32, &str)] = &[
        ("/etc/kubernetes/pki/ca.crt", 0o644, "-----BEGIN CERTIFICATE-----\nCA\n"),
        ("/etc/kubernetes/pki/ca.key", 0o600, "-----BEGIN PRIVATE KEY-----\nCA KEY\n"),
        ("/etc/kubernetes/pki/sa.key", 0o600, "-----BEGIN PRIVATE KEY-----\nSA\n"),
        ("/etc/kubernetes/pki/sa.pub", 0o644, "-----BEGIN PUBLIC KEY-----\nSA\n"),
        ("/etc/kubernetes/pki/front-proxy-ca.crt", 0o644, "FP CA\n"),
        ("/etc/kubernetes/pki/front-proxy-ca.key", 0o600, "FP CA KEY\n"),
        ("/etc/kubernetes/pki/etcd/ca.crt", 0o644, "ETCD CA\n"),
        ("/etc/kubernetes/pki/etcd/ca.key", 0o600, "ETCD CA KEY\n"),
        ("/etc/kubernetes/pki/apiserver.crt", 0o644, "APISERVER for 10.0.0.1\n"),
        ("/etc/kubernetes/pki/apiserver.key", 0o600, "APISERVER KEY\n"),
        ("/etc/kubernetes/admin.conf", 0o600, "server: https://10.0.0.1:6443\n"),
        (
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            0o600,
            "    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n",
        ),
        (
            "/etc/kubernetes/enc/enc.yaml",
            0o600,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n",
        ),
    ];
    files
        .iter()
        .map(|(path, mode, content)| {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            ((*path).to_owned(), content.as_bytes().to_vec())
        })
        .collect()
}

fn bundle_tar(root: &Path) -> (Vec<u8>, Vec<BundleFile>) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut tar = tar::Builder::new(Vec::new());
    let mut listed = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &rel, data.as_slice()).unwrap();
        listed.push(BundleFile {
            path: format!("/{rel}"),
            mode,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
        });
    }
    (tar.into_inner().unwrap(), listed)
}

async fn put(
    store: &dyn SnapshotStore,
    id: &SnapshotId,
    kind: ObjectKind,
    raw: Vec<u8>,
    opts: &EncodeOptions,
) -> ObjectEntry {
    let name = opts.object_name(kind);
    let enc = codec::encode(futures::stream::once(async move { Ok(Bytes::from(raw)) }).boxed(), opts);
    let stored = store.put_object(id, &name, enc.stream).await.unwrap();
    let digest = enc.raw.digest().await.unwrap();
    ObjectEntry {
        name,
        kind,
        stored_size: stored.size,
        stored_sha256: stored.sha256,
        raw_size: digest.size,
        raw_sha256: digest.sha256.unwrap(),
    }
}

/// Backs up `etcd` into `store` and returns the committed manifest.
pub async fn back_up(etcd: &EtcdContainer, store: &dyn SnapshotStore, req: BackupRequest) -> Manifest {
    let started = SystemClock.utc();
    let mut client = etcd.client().await.unwrap();
    let status = client.status().await.unwrap();
    let revision = status.header().unwrap().revision();
    let inventory: BTreeMap<String, u64> =
        kdr_core::restore::drill::scan_inventory(&mut client, revision).await.unwrap();
    let mut snap = client.snapshot().await.unwrap();
    let mut raw = Vec::new();
    while let Some(msg) = snap.message().await.unwrap() {
        raw.extend_from_slice(msg.blob());
    }
    let id = SnapshotId::new(started);
    let opts =
        EncodeOptions { compression: Compression::Zstd, encryption_key: req.key, ..Default::default() };
    let mut objects = vec![put(store, &id, ObjectKind::EtcdSnapshot, raw, &opts).await];
    let mut bundle_files = Vec::new();
    if let Some(root) = &req.bundle_root {
        let (tar, files) = bundle_tar(root);
        objects.push(put(store, &id, ObjectKind::Bundle, tar, &opts).await);
        bundle_files = files;
    }
    let manifest = Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        id,
        created_at: started,
        duration_ms: 0,
        cluster_name: "test".into(),
        source: SnapshotSource {
            endpoint: etcd.endpoint(),
            member_name: "kdr-test".into(),
            member_id: format!("{:x}", status.header().unwrap().member_id()),
            etcd_version: status.version().to_owned(),
            revision,
            db_size: status.db_size() as u64,
        },
        compression: Compression::Zstd,
        encryption: opts.encryption(),
        etcd_hash_verified: true,
        objects,
        bundle_files,
        total_keys: inventory.values().sum(),
        key_inventory: inventory,
    };
    store.commit(&manifest).await.unwrap();
    manifest
}
