//! Backs up a real etcd with kdr's backup pipeline, for the restore tests.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdr_core::backup::bundle::{BundleOptions, BundleSpec};
use kdr_core::backup::{BackupOptions, NoProgress, backup};
use kdr_core::clock::SystemClock;
use kdr_core::etcd::client::EtcdSourceOptions;
use kdr_core::snapshot::codec::EncodeOptions;
use kdr_core::snapshot::keys::EncryptionKey;
use kdr_core::snapshot::{Manifest, SnapshotStore};
use kdr_core::testing::containers::EtcdContainer;

/// What to back up.
#[derive(Default)]
pub struct BackupRequest {
    /// Encrypt to this key.
    pub key: Option<EncryptionKey>,
    /// Bundle the kubeadm defaults under `<root>/etc/kubernetes` (recorded as `/etc/kubernetes`).
    pub bundle_root: Option<PathBuf>,
}

/// The files kdr's backup bundles by default (pki, manifests, the encryption config), laid out
/// as kubeadm does, under `root`. Returns (path as on the host, content); the
/// backup adds `/etc/kubernetes/kubeadm-config.yaml`.
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

/// Backs up `etcd` into `store` with kdr's backup pipeline and returns the committed manifest.
pub async fn back_up(etcd: &EtcdContainer, store: &dyn SnapshotStore, req: BackupRequest) -> Manifest {
    let bundle = match &req.bundle_root {
        None => BundleOptions { spec: BundleSpec::None, ..Default::default() },
        Some(root) => {
            let kubeadm_config = root.join("kubeadm-config.yaml");
            std::fs::write(&kubeadm_config, "kind: ClusterConfiguration\nclusterName: test\n").unwrap();
            BundleOptions {
                spec: BundleSpec::Defaults,
                kubernetes_dir: root.join("etc/kubernetes"),
                kubeadm_config: Some(kubeadm_config),
            }
        }
    };
    let opts = BackupOptions {
        cluster_name: "test".into(),
        etcd: EtcdSourceOptions::new(etcd.endpoint()),
        bundle,
        encode: EncodeOptions { encryption_key: req.key, ..Default::default() },
    };
    backup(store, &opts, &SystemClock, Arc::new(NoProgress)).await.expect("backup")
}
