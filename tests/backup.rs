//! Backups against real servers: etcd 3.5.16 over TLS and 3.4.23 in containers, s3s-fs as the
//! S3 store, and the etcdutl/etcdctl binaries to prove the stored snapshot restores. Needs Docker
//! and the local test images (`make test` builds them).
//!
//! Every bad-input case checks two things: a clear error naming the input, and nothing partial
//! listed in the store afterwards.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use kdr_core::Error;
use kdr_core::backup::bundle::{
    BundleOptions, BundleSpec, KUBEADM_CONFIG_BUNDLE_PATH, KUBEADM_CONFIG_ETCD_KEY,
};
use kdr_core::backup::etcd_source::{EtcdSourceOptions, EtcdTlsFiles};
use kdr_core::backup::{BackupOptions, NoProgress, Progress, backup};
use kdr_core::clock::SystemClock;
use kdr_core::snapshot::codec::{EncodeOptions, EncryptionKey};
use kdr_core::snapshot::verify::{download, verify};
use kdr_core::snapshot::{
    Compression, MAX_POD_NAMES, ObjectKind, ObjectStoreSnapshotStore, PodNames, SnapshotStore, StoreOptions,
};
use kdr_core::testing::conformance::snapshot_store;
use kdr_core::testing::containers::{EtcdContainer, EtcdTls, EtcdVersion, S3Container};

fn s3_options(s3: &S3Container) -> StoreOptions {
    StoreOptions {
        endpoint: Some(s3.endpoint()),
        region: Some(s3.region().to_owned()),
        access_key_id: Some(s3.access_key().to_owned()),
        secret_access_key: Some(s3.secret_key().to_owned()),
        allow_http: true,
        retry_timeout: Duration::from_secs(3),
        max_retries: 1,
        ..Default::default()
    }
}

/// A store on the shared S3 server under a fresh prefix.
async fn s3_store(test: &str) -> ObjectStoreSnapshotStore {
    let s3 = S3Container::shared().await.unwrap();
    let url = format!("s3://{}/{test}-{:08x}", s3.bucket(), rand_u32());
    ObjectStoreSnapshotStore::from_url(&url, &s3_options(s3)).unwrap()
}

fn rand_u32() -> u32 {
    // Unique enough per test run without another dependency.
    let t = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_nanos();
    t ^ std::process::id().rotate_left(16)
}

fn tls_files(tls: &EtcdTls) -> EtcdTlsFiles {
    EtcdTlsFiles {
        cacert: Some(tls.ca_cert.clone()),
        cert: Some(tls.client_cert.clone()),
        key: Some(tls.client_key.clone()),
    }
}

fn options(
    endpoint: String,
    tls: EtcdTlsFiles,
    bundle: BundleOptions,
    encode: EncodeOptions,
) -> BackupOptions {
    let mut etcd = EtcdSourceOptions::new(endpoint);
    etcd.tls = tls;
    etcd.request_timeout = Duration::from_secs(5);
    BackupOptions { cluster_name: "test-cluster".into(), etcd, bundle, encode }
}

fn no_bundle() -> BundleOptions {
    BundleOptions { spec: BundleSpec::None, ..Default::default() }
}

/// The kubeadm-config ConfigMap as the API server stores it in etcd (protobuf).
fn kubeadm_configmap_value(yaml: &str) -> Vec<u8> {
    use kdr_core::backup::bundle::k8s_proto::{ConfigMap, Unknown};
    use prost::Message as _;
    let cm = ConfigMap { data: [("ClusterConfiguration".to_owned(), yaml.to_owned())].into() };
    let unknown =
        Unknown { raw: cm.encode_to_vec(), content_type: "application/vnd.kubernetes.protobuf".into() };
    [b"k8s\x00".as_slice(), &unknown.encode_to_vec()].concat()
}

/// A kubeadm-like /etc/kubernetes with PKI (the etcd certs included), manifests and an
/// encryption-provider config the API server's manifest references.
fn kubeadm_dir(tls: Option<&EtcdTls>) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let k = d.path();
    for sub in ["pki/etcd", "manifests", "enc"] {
        std::fs::create_dir_all(k.join(sub)).unwrap();
    }
    std::fs::write(k.join("pki/ca.crt"), "cluster CA cert").unwrap();
    std::fs::write(k.join("pki/ca.key"), "cluster CA key").unwrap();
    std::fs::set_permissions(k.join("pki/ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(k.join("pki/sa.key"), "service account key").unwrap();
    std::fs::set_permissions(k.join("pki/sa.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(t) = tls {
        std::fs::copy(&t.ca_cert, k.join("pki/etcd/ca.crt")).unwrap();
        std::fs::copy(&t.ca_key, k.join("pki/etcd/ca.key")).unwrap();
    }
    std::fs::write(
        k.join("manifests/kube-apiserver.yaml"),
        "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n",
    )
    .unwrap();
    std::fs::write(k.join("manifests/etcd.yaml"), "kind: Pod\n").unwrap();
    std::fs::write(k.join("enc/enc.yaml"), "kind: EncryptionConfiguration\n").unwrap();
    d
}

async fn put_cluster_keys(client: &mut etcd_client::Client) -> BTreeMap<String, u64> {
    for i in 0..25 {
        client.put(format!("/registry/pods/default/pod-{i}"), format!("pod {i}"), None).await.unwrap();
    }
    for i in 0..7 {
        client.put(format!("/registry/secrets/kube-system/s-{i}"), "secret", None).await.unwrap();
    }
    client
        .put(
            KUBEADM_CONFIG_ETCD_KEY,
            kubeadm_configmap_value("kind: ClusterConfiguration\nclusterName: test\n"),
            None,
        )
        .await
        .unwrap();
    BTreeMap::from([("pods".to_owned(), 25), ("secrets".to_owned(), 7), ("configmaps".to_owned(), 1)])
}

async fn assert_nothing_listed(store: &dyn SnapshotStore) {
    assert!(store.list().await.unwrap().is_empty(), "a failed backup must not be listed");
    assert!(store.latest().await.unwrap().is_none());
}

async fn assert_nothing_left(store: &dyn SnapshotStore) {
    assert_nothing_listed(store).await;
    assert!(store.list_incomplete().await.unwrap().is_empty(), "a failed backup removes its partial objects");
}

fn etcd_bin(dir_var: &str, name: &str) -> PathBuf {
    let dir = std::env::var(dir_var).unwrap_or_else(|_| {
        panic!("{dir_var} is not set: source .tools/env (make test does) for the etcd binaries")
    });
    Path::new(&dir).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_container_store_conforms() {
    let store = s3_store("conformance").await;
    snapshot_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_3_5_tls_backup_to_s3_encrypted_verifies_and_restores_with_etcdutl() {
    let etcd = EtcdContainer::start_tls(EtcdVersion::V3_5_16).await.unwrap();
    let tls = etcd.tls().unwrap().clone();
    let mut client = etcd.client().await.unwrap();
    let expected = put_cluster_keys(&mut client).await;
    let kube = kubeadm_dir(Some(&tls));
    let key_dir = tempfile::tempdir().unwrap();
    let key = EncryptionKey::generate_file(
        &key_dir.path().join("key.txt"),
        kdr_core::clock::Clock::utc(&SystemClock),
    )
    .unwrap();
    let store = s3_store("tls-3-5").await;

    let opts = options(
        etcd.endpoint(),
        tls_files(&tls),
        BundleOptions { kubernetes_dir: kube.path().into(), ..Default::default() },
        EncodeOptions { encryption_key: Some(key.clone()), ..Default::default() },
    );
    let manifest = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap();

    // The manifest says what was taken, from where, at which revision.
    let status = client.status().await.unwrap();
    assert_eq!(manifest.source.etcd_version, "3.5.16");
    assert_eq!(manifest.source.endpoint, etcd.endpoint());
    assert_eq!(manifest.source.member_name, "kdr-test");
    assert_eq!(
        manifest.source.revision,
        status.header().unwrap().revision(),
        "no writes since: same revision"
    );
    assert!(manifest.etcd_hash_verified);
    assert_eq!(manifest.cluster_name, "test-cluster");
    assert_eq!(manifest.key_inventory, expected);
    assert_eq!(manifest.total_keys, 33);
    // The pods by name (`namespace/name`, key order), for the promotion's snapshot-pods check.
    let mut pods: Vec<String> = (0..25).map(|i| format!("default/pod-{i}")).collect();
    pods.sort();
    assert_eq!(manifest.pods, Some(PodNames { names: pods, truncated: false }));
    assert_eq!(manifest.compression, Compression::Zstd);
    assert!(
        matches!(&manifest.encryption, kdr_core::snapshot::Encryption::AgeX25519 { recipient } if *recipient == key.recipient())
    );
    let names: Vec<_> = manifest.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["etcd.db.zst.age", "bundle.tar.zst.age"]);
    let bundled: BTreeMap<_, _> = manifest.bundle_files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
    assert_eq!(bundled["/etc/kubernetes/pki/ca.key"], 0o600);
    for p in [
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/enc/enc.yaml",
        KUBEADM_CONFIG_BUNDLE_PATH,
    ] {
        assert!(bundled.contains_key(p), "{p} bundled: {bundled:?}");
    }
    assert_eq!(store.list().await.unwrap(), vec![manifest.clone()]);

    // verify re-reads every byte: with the key, decoded contents and etcd's trailer too.
    let report = verify(&store, &manifest, Some(&key)).await.unwrap();
    assert!(report.is_ok() && report.decoded, "{report:?}");
    // Without the key only stored hashes can be checked, and it says so.
    let report = verify(&store, &manifest, None).await.unwrap();
    assert!(report.is_ok() && !report.decoded);
    // A wrong key is named before any download.
    let wrong = EncryptionKey::generate();
    let e = verify(&store, &manifest, Some(&wrong)).await.unwrap_err();
    assert!(e.to_string().contains("wrong key"), "{e}");

    // The downloaded snapshot is what etcdutl restores (it checks etcd's trailer itself).
    let out = tempfile::tempdir().unwrap();
    let db = out.path().join("etcd.db");
    download(&store, &manifest, ObjectKind::EtcdSnapshot, Some(&key), &db, false).await.unwrap();
    let restored = out.path().join("restored");
    let o = std::process::Command::new(etcd_bin("KDR_ETCD_3_5_DIR", "etcdutl"))
        .args(["snapshot", "restore"])
        .arg(&db)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(o.status.success(), "etcdutl restore failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(restored.join("member/snap/db").exists());

    // The bundle holds the files with their modes and the kubeadm config from etcd.
    let tar_path = out.path().join("bundle.tar");
    download(&store, &manifest, ObjectKind::Bundle, Some(&key), &tar_path, false).await.unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
        found.insert(path, (mode, content));
    }
    assert_eq!(found["etc/kubernetes/pki/ca.key"], (0o600, "cluster CA key".to_owned()));
    assert!(found["etc/kubernetes/kubeadm-config.yaml"].1.contains("kind: ClusterConfiguration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_3_4_plain_backup_uncompressed_restores_with_etcdctl_3_4() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_4_23).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let expected = put_cluster_keys(&mut client).await;
    let store = s3_store("plain-3-4").await;
    let opts = options(
        etcd.endpoint(),
        EtcdTlsFiles::default(),
        no_bundle(),
        EncodeOptions { compression: Compression::None, ..Default::default() },
    );
    let manifest = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(manifest.source.etcd_version, "3.4.23");
    assert_eq!(manifest.key_inventory, expected);
    assert_eq!(manifest.objects.len(), 1, "--no-bundle: snapshot only");
    assert_eq!(manifest.objects[0].name, "etcd.db");
    assert_eq!(
        manifest.objects[0].raw_sha256, manifest.objects[0].stored_sha256,
        "uncompressed: stored as is"
    );
    assert_eq!(manifest.objects[0].raw_size % 512, 32, "etcd's sha256 trailer kept");
    assert!(verify(&store, &manifest, None).await.unwrap().is_ok());

    let out = tempfile::tempdir().unwrap();
    let db = out.path().join("etcd.db");
    download(&store, &manifest, ObjectKind::EtcdSnapshot, None, &db, false).await.unwrap();
    let o = std::process::Command::new(etcd_bin("KDR_ETCD_3_4_DIR", "etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&db)
        .arg("--data-dir")
        .arg(out.path().join("restored"))
        .output()
        .unwrap();
    assert!(o.status.success(), "etcdctl 3.4 restore failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_object_fails_verify() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    put_cluster_keys(&mut etcd.client().await.unwrap()).await;
    let s3 = S3Container::shared().await.unwrap();
    let prefix = format!("tamper-{:08x}", rand_u32());
    let store = ObjectStoreSnapshotStore::from_url(&format!("s3://kdr/{prefix}"), &s3_options(s3)).unwrap();
    let opts = options(etcd.endpoint(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    let manifest = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap();
    // Flip a byte behind the server's back.
    let on_disk = s3.data_dir().join(format!("kdr/{prefix}/sets/{}/etcd.db.zst", manifest.id));
    let mut bytes = std::fs::read(&on_disk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&on_disk, bytes).unwrap();
    let report = verify(&store, &manifest, None).await.unwrap();
    assert!(!report.is_ok(), "a flipped byte must fail verification");
    assert!(report.objects[0].detail.contains("sha256"), "{report:?}");
}

// ------------------------------------------------------------------------------------------------
// Bad input: each a clear error, nothing partial listed.
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_named() {
    let store = s3_store("unreachable").await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = options(endpoint.clone(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    let e = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. } | Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains(&endpoint), "names the endpoint: {e}");
    assert_nothing_left(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_or_client_cert_is_a_tls_error() {
    let etcd = EtcdContainer::start_tls(EtcdVersion::V3_5_16).await.unwrap();
    let tls = etcd.tls().unwrap().clone();
    let other_dir = tempfile::tempdir().unwrap();
    let other = EtcdTls::generate(other_dir.path()).unwrap();
    let store = s3_store("wrong-tls").await;

    // A CA that did not sign etcd's server cert.
    let wrong_ca = EtcdTlsFiles { cacert: Some(other.ca_cert.clone()), ..tls_files(&tls) };
    let opts = options(etcd.endpoint(), wrong_ca, no_bundle(), EncodeOptions::default());
    let e = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("wrong CA: {msg}");
    assert!(msg.contains("--cacert") && msg.contains(&etcd.endpoint()), "{msg}");

    // A client cert that etcd's CA did not sign.
    let wrong_client = EtcdTlsFiles {
        cert: Some(other.client_cert.clone()),
        key: Some(other.client_key.clone()),
        ..tls_files(&tls)
    };
    let opts = options(etcd.endpoint(), wrong_client, no_bundle(), EncodeOptions::default());
    let e = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    let msg = e.to_string();
    eprintln!("wrong client cert: {msg}");
    assert!(msg.contains("--cert") && msg.contains(&etcd.endpoint()), "{msg}");

    // No client cert at all.
    let none = EtcdTlsFiles { cert: None, key: None, ..tls_files(&tls) };
    let opts = options(etcd.endpoint(), none, no_bundle(), EncodeOptions::default());
    assert!(backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.is_err());
    assert_nothing_left(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_and_denied_access_are_named_before_etcd_is_touched() {
    let s3 = S3Container::shared().await.unwrap();
    // etcd is not even needed: the store is checked first.
    let opts =
        options("http://127.0.0.1:9".into(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());

    let missing = ObjectStoreSnapshotStore::from_url("s3://no-such-bucket/x", &s3_options(s3)).unwrap();
    let e = backup(&missing, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    eprintln!("missing bucket: {e}");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("bucket") && e.to_string().contains("no-such-bucket"), "{e}");

    let denied_opts = StoreOptions { secret_access_key: Some("not-the-secret".into()), ..s3_options(s3) };
    let denied = ObjectStoreSnapshotStore::from_url("s3://kdr/denied", &denied_opts).unwrap();
    let e = backup(&denied, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    eprintln!("denied: {e}");
    assert!(e.to_string().contains("access denied"), "{e}");
    assert!(!e.to_string().contains("not-the-secret"), "the secret never appears in errors");

    // A store endpoint nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead_opts = StoreOptions { endpoint: Some(format!("http://127.0.0.1:{port}")), ..s3_options(s3) };
    let dead = ObjectStoreSnapshotStore::from_url("s3://kdr/x", &dead_opts).unwrap();
    let e = backup(&dead, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_file_and_missing_bundle_defaults_are_named() {
    let e = EncryptionKey::from_file(Path::new("/nonexistent/backup.age")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("/nonexistent/backup.age"), "{e}");

    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let store = s3_store("missing-defaults").await;
    let empty = tempfile::tempdir().unwrap();
    let opts = options(
        etcd.endpoint(),
        EtcdTlsFiles::default(),
        BundleOptions { kubernetes_dir: empty.path().into(), ..Default::default() },
        EncodeOptions::default(),
    );
    let e = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("pki") && msg.contains("manifests") && msg.contains("--no-bundle"), "{msg}");

    // PKI and manifests present, but no kubeadm config anywhere: named too.
    let kube = kubeadm_dir(None);
    let opts = options(
        etcd.endpoint(),
        EtcdTlsFiles::default(),
        BundleOptions { kubernetes_dir: kube.path().into(), ..Default::default() },
        EncodeOptions::default(),
    );
    let e = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap_err();
    assert!(
        e.to_string().contains("ClusterConfiguration") && e.to_string().contains("--kubeadm-config"),
        "{e}"
    );
    assert_nothing_left(&store).await;
}

/// Pauses the snapshot stream once `threshold` bytes have passed, tells the test, and waits for
/// the test's go-ahead: so the test can kill a server at a known point mid-stream.
struct PauseAt {
    threshold: u64,
    seen: Mutex<u64>,
    reached: Mutex<Option<mpsc::Sender<()>>>,
    resume: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Progress for PauseAt {
    fn start(&self, _: u64) {}
    fn advance(&self, bytes: u64) {
        let mut seen = self.seen.lock().unwrap();
        *seen += bytes;
        if *seen >= self.threshold
            && let Some(tx) = self.reached.lock().unwrap().take()
        {
            let _ = tx.send(());
            // Called from the encoder's blocking thread: blocking here pauses the stream.
            if let Some(rx) = self.resume.lock().unwrap().take() {
                let _ = rx.recv_timeout(Duration::from_secs(60));
            }
        }
    }
    fn finish(&self) {}
}

fn pause_at(threshold: u64) -> (Arc<PauseAt>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let p = PauseAt {
        threshold,
        seen: Mutex::new(0),
        reached: Mutex::new(Some(reached_tx)),
        resume: Mutex::new(Some(resume_rx)),
    };
    (Arc::new(p), reached_rx, resume_tx)
}

/// Fills etcd with `mib` MiB of incompressible values.
async fn fill(client: &mut etcd_client::Client, mib: usize) {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..mib {
        let value = common::data::incompressible(&mut x, 1024 * 1024);
        client.put(format!("/registry/configmaps/big/cm-{i}"), value, None).await.unwrap();
    }
}

async fn wait_reached(rx: mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the backup reached the pause point");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_mid_stream_fails_and_leaves_nothing() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    fill(&mut etcd.client().await.unwrap(), 48).await;
    let store = s3_store("etcd-killed").await;
    let opts = options(etcd.endpoint(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    let (progress, reached, resume) = pause_at(12 * 1024 * 1024);
    let task = {
        let store = store.clone();
        tokio::spawn(async move { backup(&store, &opts, &SystemClock, progress).await })
    };
    wait_reached(reached).await;
    etcd.stop().await.unwrap();
    resume.send(()).unwrap();
    let e = task.await.unwrap().unwrap_err();
    let msg = e.to_string();
    eprintln!("etcd killed: {msg}");
    assert!(matches!(e, Error::Unavailable { .. }), "{msg}");
    assert!(msg.contains(&etcd.endpoint()) && msg.contains("snapshot"), "{msg}");
    assert_nothing_left(&store).await;
}

fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A member that stays connected but sends nothing (frozen: `docker pause`, as a member stuck on
/// its disk would be) fails the backup after the idle limit, naming it, well before keep-alives
/// would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen_mid_stream_times_out_naming_it_and_leaves_nothing() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    fill(&mut etcd.client().await.unwrap(), 48).await;
    let store = s3_store("etcd-frozen").await;
    let mut opts = options(etcd.endpoint(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    opts.etcd.snapshot_idle_timeout = Duration::from_secs(2);
    let (progress, reached, resume) = pause_at(12 * 1024 * 1024);
    let task = {
        let store = store.clone();
        tokio::spawn(async move { backup(&store, &opts, &SystemClock, progress).await })
    };
    wait_reached(reached).await;
    docker(&["pause", etcd.id()]);
    resume.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), task).await;
    docker(&["unpause", etcd.id()]);
    let e = r.expect("fails after the idle limit, before keep-alives").unwrap().unwrap_err();
    let msg = e.to_string();
    eprintln!("etcd frozen: {msg}");
    assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(2)), "{msg}");
    assert!(msg.contains(&etcd.endpoint()) && msg.contains("snapshot_idle_timeout_secs"), "{msg}");
    assert_nothing_left(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dying_mid_upload_fails_and_commits_nothing() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    fill(&mut etcd.client().await.unwrap(), 48).await;
    // A server of its own: this test kills it.
    let s3 = S3Container::start().await.unwrap();
    let store = ObjectStoreSnapshotStore::from_url("s3://kdr/dying", &s3_options(&s3)).unwrap();
    let opts = options(etcd.endpoint(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    let (progress, reached, resume) = pause_at(24 * 1024 * 1024);
    let task = {
        let store = store.clone();
        tokio::spawn(async move { backup(&store, &opts, &SystemClock, progress).await })
    };
    wait_reached(reached).await;
    s3.stop().await.unwrap();
    resume.send(()).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("fails in bounded time")
        .unwrap()
        .unwrap_err();
    let msg = e.to_string();
    eprintln!("store died: {msg}");
    assert!(matches!(e, Error::Unavailable { .. }), "{msg}");
    assert!(msg.contains("s3://kdr/dying"), "names the store: {msg}");
    // The server is gone; its directory shows no manifest and no completed snapshot object.
    let set_dirs = s3.data_dir().join("kdr/dying/sets");
    let mut found = Vec::new();
    if set_dirs.exists() {
        for set in std::fs::read_dir(&set_dirs).unwrap() {
            for f in std::fs::read_dir(set.unwrap().path()).unwrap() {
                found.push(f.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(!found.iter().any(|f| f == "manifest.json" || f.starts_with("etcd.db")), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_inventory_skip_scan_matches_a_full_listing_on_3_5_and_3_4() {
    use kdr_core::backup::etcd_source::{EtcdSource, resource_of};
    for version in [EtcdVersion::V3_5_16, EtcdVersion::V3_4_23] {
        let etcd = EtcdContainer::start(version).await.unwrap();
        let mut client = etcd.client().await.unwrap();
        let keys = [
            "compact_rev_key",
            "/registry",
            "/registry/",
            "/registry//odd",
            "/registry/health",
            "/registry/pods",
            "/registry/pods-x/ns/a",
            "/registry/pods.y/ns/a",
            "/registry/pods/ns/a",
            "/registry/pods/ns/b",
            "/registry/pods0/ns/a",
            "/registry/apiregistration.k8s.io/apiservices/v1.",
            "/registry0",
            "/zzz",
        ];
        for k in keys {
            client.put(k, "v", None).await.unwrap();
        }
        let source = EtcdSource::connect(&EtcdSourceOptions::new(etcd.endpoint())).await.unwrap();
        let status = source.status().await.unwrap();
        // Written after the revision: must not be counted.
        client.put("/registry/pods/ns/late", "v", None).await.unwrap();
        client.delete("/registry/pods/ns/a", None).await.unwrap();
        let inv = source.key_inventory(status.revision).await.unwrap();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for k in keys {
            *expected.entry(resource_of(k.as_bytes())).or_default() += 1;
        }
        assert_eq!(inv.by_resource, expected, "etcd {version:?}");
        assert_eq!(inv.total, keys.len() as u64);
        assert_eq!(inv.revision, status.revision);
        // Pod names at the same revision: only /registry/pods/<ns>/<name>, none written after.
        let pods = source.pod_names(status.revision, MAX_POD_NAMES).await.unwrap();
        assert_eq!(
            pods,
            PodNames { names: vec!["ns/a".into(), "ns/b".into()], truncated: false },
            "{version:?}"
        );
        let pods = source.pod_names(status.revision, 1).await.unwrap();
        assert_eq!(pods, PodNames { names: vec!["ns/a".into()], truncated: true }, "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_names_page_through_more_than_one_range_and_stop_at_the_cap() {
    use etcd_client::{Txn, TxnOp};
    use kdr_core::backup::etcd_source::EtcdSource;
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    // More pods than one page of the listing (1000), in etcd's 128-operation transactions.
    let mut names: Vec<String> = (0..1203).map(|i| format!("ns-{}/pod-{i}", i % 3)).collect();
    for chunk in names.chunks(100) {
        let ops: Vec<TxnOp> =
            chunk.iter().map(|n| TxnOp::put(format!("/registry/pods/{n}"), "v", None)).collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    names.sort();
    let source = EtcdSource::connect(&EtcdSourceOptions::new(etcd.endpoint())).await.unwrap();
    let rev = source.status().await.unwrap().revision;
    let all = source.pod_names(rev, MAX_POD_NAMES).await.unwrap();
    assert_eq!(all, PodNames { names: names.clone(), truncated: false });
    assert_eq!(source.pod_names(rev, 1203).await.unwrap(), all, "exactly the cap is not truncated");
    let capped = source.pod_names(rev, 1001).await.unwrap();
    assert_eq!(capped, PodNames { names: names[..1001].to_vec(), truncated: true });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_mid_stream_aborts_and_leaves_nothing() {
    use kdr_core::backup::backup_cancellable;
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    fill(&mut etcd.client().await.unwrap(), 32).await;
    let store = s3_store("cancelled").await;
    let opts = options(etcd.endpoint(), EtcdTlsFiles::default(), no_bundle(), EncodeOptions::default());
    let (progress, reached, resume) = pause_at(16 * 1024 * 1024);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = {
        let (store, cancel) = (store.clone(), cancel.clone());
        tokio::spawn(async move { backup_cancellable(&store, &opts, &SystemClock, progress, cancel).await })
    };
    wait_reached(reached).await;
    cancel.cancel();
    resume.send(()).unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    assert_nothing_left(&store).await;
}
