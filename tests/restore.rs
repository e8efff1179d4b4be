//! Restores on real etcd and a real S3 server: write keys to an etcd container, back up to the S3
//! container, restore with the real etcdutl (3.5.16) or etcdctl (3.4.23), start that etcd on the
//! restored dir and check every key, value and the revision. Then every way a restore must be
//! refused, each leaving the target untouched, and drills.
//!
//! Needs Docker, the local test images and the etcd binaries (`KDR_ETCD_3_5_DIR`,
//! `KDR_ETCD_3_4_DIR`): `make test` sets all of them up; `. .tools/env` for a single run.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kdr_core::clock::SystemClock;
use kdr_core::etcd::local::{LocalEtcd, LocalEtcdOptions};
use kdr_core::etcd::{EtcdutlRestorer, RestoreSpec};
use kdr_core::restore::{BundleMode, BundleTarget, DrillOptions, Restore, RestoreOptions, SetSelector};
use kdr_core::snapshot::keys::EncryptionKey;
use kdr_core::snapshot::{Manifest, ObjectKind, ObjectStoreSnapshotStore};
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion, S3Container};

mod common;
use common::backup::{BackupRequest, back_up};

/// The etcd 3.5.16 or 3.4.23 bin dir set up by `scripts/setup-test-env.sh`.
fn bin_dir(version: EtcdVersion) -> PathBuf {
    let var = match version {
        EtcdVersion::V3_5_16 => "KDR_ETCD_3_5_DIR",
        EtcdVersion::V3_4_23 => "KDR_ETCD_3_4_DIR",
    };
    let dir = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run `make test`, or `. .tools/env` after scripts/setup-test-env.sh")
    });
    PathBuf::from(dir)
}

/// A store on the shared S3 server under a prefix of its own.
async fn s3_store(prefix: &str) -> Arc<ObjectStoreSnapshotStore> {
    let s3 = S3Container::shared().await.expect("S3 container");
    let inner = s3.object_store(s3.bucket()).unwrap();
    Arc::new(ObjectStoreSnapshotStore::new(inner, prefix, format!("s3://kdr/{prefix} (test)")))
}

/// The host path of a stored object of a set (s3s-fs keeps objects as files).
async fn object_path(prefix: &str, manifest: &Manifest, name: &str) -> PathBuf {
    let s3 = S3Container::shared().await.unwrap();
    s3.data_dir().join("kdr").join(prefix).join("sets").join(manifest.id.as_str()).join(name)
}

/// Kubernetes-like keys with distinct values, across resources, plus a key outside /registry.
async fn write_keys(client: &mut etcd_client::Client, per_resource: usize) -> BTreeMap<String, Vec<u8>> {
    let mut keys = BTreeMap::new();
    for resource in ["pods", "secrets", "configmaps", "deployments", "services", "namespaces"] {
        for i in 0..per_resource {
            let ns = ["default", "kube-system", "prod"][i % 3];
            let key = format!("/registry/{resource}/{ns}/{resource}-{i}");
            let value = format!(
                "{{\"kind\":\"{resource}\",\"name\":\"{resource}-{i}\",\"pad\":\"{}\"}}",
                "x".repeat(i % 97)
            )
            .into_bytes();
            client.put(key.clone(), value.clone(), None).await.unwrap();
            keys.insert(key, value);
        }
    }
    // An overwritten key: the restore must have the last value.
    client.put("/registry/pods/default/pods-0", "second value", None).await.unwrap();
    keys.insert("/registry/pods/default/pods-0".into(), b"second value".to_vec());
    client.put("compact_rev_key_like", "outside registry", None).await.unwrap();
    keys.insert("compact_rev_key_like".into(), b"outside registry".to_vec());
    keys
}

/// Every key and value of an etcd (paged: values can be large).
async fn all_keys(client: &mut etcd_client::Client) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut from = vec![0u8];
    loop {
        let opts = etcd_client::GetOptions::new().with_from_key().with_limit(20);
        let resp = client.get(from.clone(), Some(opts)).await.unwrap();
        for kv in resp.kvs() {
            out.insert(String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec());
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return out,
        }
    }
}

/// A listing of a dir tree with file contents, to prove it was not touched.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                out.insert(path.clone(), Vec::new());
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn options(target: &Path, set: SetSelector, key: Option<EncryptionKey>) -> RestoreOptions {
    RestoreOptions {
        set,
        member: RestoreSpec::new("restored", "https://10.20.30.40:2380", target),
        peer_url_source: "--initial-advertise-peer-urls".into(),
        bundle: BundleTarget::Skip,
        encryption_key: key,
    }
}

/// Starts the restored dir with `version`'s etcd and checks keys, values and the revision.
async fn check_restored(
    version: EtcdVersion,
    data_dir: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    manifest: &Manifest,
    bumped: bool,
) {
    let etcd = LocalEtcd::start(
        LocalEtcdOptions::new(data_dir).binary(bin_dir(version).join("etcd")).name("restored"),
    )
    .await
    .unwrap();
    let mut client = etcd.client().await.unwrap();
    let got = all_keys(&mut client).await;
    assert_eq!(got.len(), expected.len(), "key count after restore");
    assert_eq!(&got, expected, "keys and values after restore");
    let status = client.status().await.unwrap();
    let revision = status.header().unwrap().revision();
    let source = manifest.source.revision;
    if bumped {
        assert!(revision >= source + 1_000_000_000, "revision {revision} not bumped past {source} + 1e9");
    } else {
        assert!(revision >= source && revision < source + 1_000, "revision {revision} vs backup's {source}");
    }
    assert_eq!(status.version(), version.as_str());
    etcd.stop().await.unwrap();
}

/// An old etcd data dir with other keys, made by a real etcd, at `dir`.
async fn old_data_dir(dir: &Path) {
    let etcd = LocalEtcd::start(
        LocalEtcdOptions::new(dir).binary(bin_dir(EtcdVersion::V3_5_16).join("etcd")).name("old"),
    )
    .await
    .unwrap();
    let mut c = etcd.client().await.unwrap();
    c.put("/registry/pods/default/old-only", "old", None).await.unwrap();
    etcd.stop().await.unwrap();
}

#[tokio::test]
async fn restore_3_5_16_with_etcdutl_bumps_the_revision_and_keeps_the_old_dir() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let expected = write_keys(&mut client, 40).await;
    let store = s3_store("restore-3-5").await;
    let key = EncryptionKey::generate();
    let manifest =
        back_up(&etcd, store.as_ref(), BackupRequest { key: Some(key.clone()), ..Default::default() }).await;

    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("etcd");
    old_data_dir(&target).await;
    let old = tree(&target);

    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let report = Restore::new(store.as_ref(), &restorer, &SystemClock)
        .run(&options(&target, SetSelector::Latest, Some(key)))
        .await
        .unwrap();
    assert_eq!(report.plan.set, manifest.id);
    assert_eq!(report.plan.etcd.bump_revision, Some(1_000_000_000));
    assert!(report.plan.etcd.command.contains("--bump-revision 1000000000 --mark-compacted"));
    assert!(report.plan.peer_url == "https://10.20.30.40:2380");
    assert!(report.atomic_swap);

    // The old dir is intact beside the target, nothing else is left over.
    let replaced = report.replaced.clone().expect("old dir moved aside");
    assert!(replaced.file_name().unwrap().to_string_lossy().starts_with("etcd.kdr-replaced-"));
    let moved: BTreeMap<_, _> = tree(&replaced)
        .into_iter()
        .map(|(p, c)| (target.join(p.strip_prefix(&replaced).unwrap()), c))
        .collect();
    assert_eq!(moved, old, "the replaced dir is byte-for-byte the old one");
    let siblings: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(siblings.len(), 2, "only the target and the replaced dir: {siblings:?}");

    check_restored(EtcdVersion::V3_5_16, &target, &expected, &manifest, true).await;
}

#[tokio::test]
async fn restore_3_4_23_with_etcdctl_says_it_does_not_bump() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_4_23).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let expected = write_keys(&mut client, 25).await;
    let store = s3_store("restore-3-4").await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest::default()).await;
    assert_eq!(manifest.source.etcd_version, "3.4.23");

    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("var/lib/etcd"); // no such dir yet: a fresh host
    // etcd 3.4 has no etcdutl: the restorer falls back to its etcdctl.
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_4_23));
    let restore = Restore::new(store.as_ref(), &restorer, &SystemClock);
    let opts = options(&target, SetSelector::Id(manifest.id.clone()), None);
    let plan = restore.plan(&opts).await.unwrap();
    assert!(plan.etcd.command.contains("etcdctl snapshot restore"), "{}", plan.etcd.command);
    assert!(!plan.data_dir_exists);
    let report = restore.run(&opts).await.unwrap();
    assert_eq!(report.plan.etcd.bump_revision, None);
    assert!(
        report
            .plan
            .etcd
            .notes
            .iter()
            .any(|n| n.contains("etcdctl 3.4.23") && n.contains("WITHOUT --bump-revision")),
        "{:?}",
        report.plan.etcd.notes
    );
    assert_eq!(report.replaced, None);

    check_restored(EtcdVersion::V3_4_23, &target, &expected, &manifest, false).await;
}

#[tokio::test]
async fn a_large_set_restores_through_ranged_reads() {
    // ~40 MB of incompressible values: the stored object is far above the size from which the
    // store reads in parallel ranges, so the restore reassembles many ranges in order.
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let mut expected = BTreeMap::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..400 {
        let value = common::data::incompressible(&mut x, 100 * 1024);
        let key = format!("/registry/configmaps/big/cm-{i:04}");
        client.put(key.clone(), value.clone(), None).await.unwrap();
        expected.insert(key, value);
    }
    let store = s3_store("restore-large").await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest::default()).await;
    let stored = manifest.object(ObjectKind::EtcdSnapshot).unwrap().stored_size;
    assert!(stored > 32 << 20, "stored {stored} bytes: too small to exercise ranged reads");

    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("etcd");
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    Restore::new(store.as_ref(), &restorer, &SystemClock)
        .run(&options(&target, SetSelector::Latest, None))
        .await
        .unwrap();
    check_restored(EtcdVersion::V3_5_16, &target, &expected, &manifest, true).await;
}

#[tokio::test]
async fn bundle_restores_same_host_everything_and_new_host_the_identity_only() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    write_keys(&mut client, 3).await;
    let store = s3_store("restore-bundle").await;
    let source = tempfile::tempdir().unwrap();
    let files = common::backup::kubeadm_like_files(source.path());
    let manifest = back_up(
        &etcd,
        store.as_ref(),
        BackupRequest { bundle_root: Some(source.path().to_owned()), ..Default::default() },
    )
    .await;
    // The kubeadm defaults, plus the ClusterConfiguration the backup adds.
    assert_eq!(manifest.bundle_files.len(), files.len() + 1);
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let restore = Restore::new(store.as_ref(), &restorer, &SystemClock);

    // New host: only CA pairs, SA keys and the encryption config.
    let host = tempfile::tempdir().unwrap();
    let mut opts = options(&host.path().join("var/lib/etcd"), SetSelector::Latest, None);
    opts.bundle =
        BundleTarget::Install { mode: BundleMode::NewHost, root: host.path().to_owned(), aside: None };
    let report = restore.run(&opts).await.unwrap();
    let bundle = report.bundle.unwrap();
    let written: Vec<String> = bundle
        .written
        .iter()
        .map(|p| format!("/{}", p.strip_prefix(host.path()).unwrap().display()))
        .collect();
    for f in [
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/etcd/ca.key",
        "/etc/kubernetes/enc/enc.yaml",
    ] {
        assert!(written.iter().any(|w| w.ends_with(f)), "{f} not restored: {written:?}");
    }
    for f in [
        "/etc/kubernetes/pki/apiserver.crt",
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/kubeadm-config.yaml",
    ] {
        assert!(!written.iter().any(|w| w.ends_with(f)), "{f} must not be restored on a new host");
        assert!(bundle.skipped.iter().any(|s| s.ends_with(f)), "{f} not reported as skipped");
    }
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(host.path().join(p)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode("etc/kubernetes/pki/ca.key"), 0o600);
    assert_eq!(mode("etc/kubernetes/pki/ca.crt"), 0o644);
    assert_eq!(mode("etc/kubernetes/enc/enc.yaml"), 0o600);

    // Same host, with a changed CA key on disk: everything restored, the changed key moved aside.
    let same = tempfile::tempdir().unwrap();
    let pki = same.path().join("etc/kubernetes/pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::write(pki.join("ca.key"), "a different key").unwrap();
    let aside = same.path().join("aside");
    let mut opts = options(&same.path().join("var/lib/etcd"), SetSelector::Latest, None);
    opts.bundle = BundleTarget::Install {
        mode: BundleMode::SameHost,
        root: same.path().to_owned(),
        aside: Some(aside.clone()),
    };
    let report = restore.run(&opts).await.unwrap();
    let bundle = report.bundle.unwrap();
    assert_eq!(bundle.written.len(), files.len() + 1);
    assert!(bundle.skipped.is_empty());
    for (path, content) in &files {
        assert_eq!(
            &std::fs::read(same.path().join(path.trim_start_matches('/'))).unwrap(),
            content,
            "{path}"
        );
    }
    assert_eq!(std::fs::read_to_string(aside.join("etc/kubernetes/pki/ca.key")).unwrap(), "a different key");

    // Inspection: every file under a dir, nothing at the original paths.
    let inspect = tempfile::tempdir().unwrap();
    let out = inspect.path().join("bundle");
    let mut opts = options(&inspect.path().join("etcd"), SetSelector::Latest, None);
    opts.bundle = BundleTarget::InspectAt(out.clone());
    let report = restore.run(&opts).await.unwrap();
    assert_eq!(report.bundle.unwrap().written.len(), files.len() + 1);
    assert!(out.join("etc/kubernetes/pki/sa.key").exists());
}

/// Backs up, breaks the set with `tamper`, restores over an existing dir and checks the refusal
/// names the set and `check`, and that nothing next to the target changed.
async fn refused(
    prefix: &str,
    key: Option<EncryptionKey>,
    restore_key: Option<EncryptionKey>,
    check: &[&str],
    tamper: impl AsyncFnOnce(&Manifest),
) {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    write_keys(&mut client, 10).await;
    let store = s3_store(prefix).await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest { key, ..Default::default() }).await;
    tamper(&manifest).await;

    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("etcd");
    old_data_dir(&target).await;
    let before = tree(tmp.path());
    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let err = Restore::new(store.as_ref(), &restorer, &SystemClock)
        .run(&options(&target, SetSelector::Latest, restore_key))
        .await
        .expect_err("the restore must be refused");
    let msg = err.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(msg.contains(manifest.id.as_str()), "the error must name the set: {msg}");
    for c in check {
        assert!(msg.contains(c), "the error must name the failed check ({c}): {msg}");
    }
    assert_eq!(tree(tmp.path()), before, "the target and its parent must be untouched: {msg}");
}

async fn rewrite(path: PathBuf, f: impl FnOnce(&mut Vec<u8>)) {
    let mut data = std::fs::read(&path).unwrap();
    f(&mut data);
    std::fs::write(&path, data).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_the_stored_snapshot_is_refused() {
    refused("refuse-flip", None, None, &["integrity check failed", "etcd.db.zst"], async |m: &Manifest| {
        let path = object_path("refuse-flip", m, &m.object(ObjectKind::EtcdSnapshot).unwrap().name).await;
        rewrite(path, |d| {
            let i = d.len() / 2;
            d[i] ^= 0x40;
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_truncated_stored_snapshot_is_refused() {
    refused("refuse-cut", None, None, &["integrity check failed", "etcd.db.zst"], async |m: &Manifest| {
        let path = object_path("refuse-cut", m, &m.object(ObjectKind::EtcdSnapshot).unwrap().name).await;
        rewrite(path, |d| d.truncate(d.len() * 2 / 3)).await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_encryption_key_is_refused() {
    let right = EncryptionKey::generate();
    let wrong = EncryptionKey::generate();
    refused(
        "refuse-key",
        Some(right),
        Some(wrong),
        &["--encryption-key-file", "wrong key"],
        async |_: &Manifest| {},
    )
    .await;
}

#[tokio::test]
async fn a_manifest_whose_hash_disagrees_is_refused() {
    refused("refuse-manifest", None, None, &["stored sha256", "the manifest says"], async |m: &Manifest| {
        let path = object_path("refuse-manifest", m, "manifest.json").await;
        rewrite(path, |d| {
            let mut json: serde_json::Value = serde_json::from_slice(d).unwrap();
            let objects = json["objects"].as_array_mut().unwrap();
            let snap = objects.iter_mut().find(|o| o["kind"] == "etcd-snapshot").unwrap();
            snap["stored_sha256"] = serde_json::Value::String("0".repeat(64));
            *d = serde_json::to_vec(&json).unwrap();
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    write_keys(&mut client, 5).await;
    let store = s3_store("refuse-in-use").await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest::default()).await;

    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("etcd");
    let running = LocalEtcd::start(
        LocalEtcdOptions::new(&target).binary(bin_dir(EtcdVersion::V3_5_16).join("etcd")).name("live"),
    )
    .await
    .unwrap();
    let mut live = running.client().await.unwrap();
    live.put("/registry/pods/default/live", "still here", None).await.unwrap();
    let siblings_before: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();

    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let err = Restore::new(store.as_ref(), &restorer, &SystemClock)
        .run(&options(&target, SetSelector::Latest, None))
        .await
        .expect_err("a restore over a running etcd must be refused");
    let msg = err.to_string();
    assert!(matches!(err, kdr_core::Error::Refused { .. }), "{msg}");
    assert!(
        msg.contains("an etcd is using data dir") && msg.contains(&target.display().to_string()),
        "{msg}"
    );
    let _ = manifest;
    // Nothing was added beside it, and the running etcd still has its data.
    let siblings_after: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(siblings_after, siblings_before);
    let v = live.get("/registry/pods/default/live", None).await.unwrap();
    assert_eq!(v.kvs()[0].value(), b"still here");
    running.stop().await.unwrap();
}

fn drill_options(set: SetSelector) -> DrillOptions {
    DrillOptions {
        set,
        work_dir: std::env::temp_dir(),
        etcd_binary: bin_dir(EtcdVersion::V3_5_16).join("etcd"),
        encryption_key: None,
        start_timeout: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn drill_passes_on_a_good_set() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let keys = write_keys(&mut client, 30).await;
    let store = s3_store("drill-pass").await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest::default()).await;
    // Writes after the backup's revision are not in the set's inventory, and must not matter.
    client.put("/registry/pods/default/after-backup", "x", None).await.unwrap();

    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let report = kdr_core::restore::drill(
        store.as_ref(),
        &restorer,
        &SystemClock,
        &drill_options(SetSelector::Latest),
    )
    .await
    .unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.set, manifest.id);
    assert_eq!(report.found_keys, keys.len() as u64);
    assert_eq!(report.compared_at, manifest.source.revision);
    assert_eq!(report.etcd.bump_revision, None, "a drill does not bump");
    // The temporary dir is gone.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("kdr-drill-{}", manifest.id)))
        .collect();
    assert!(left.is_empty(), "drill left {left:?}");
}

#[tokio::test]
async fn drill_reports_missed_and_surplus_keys_per_resource() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    write_keys(&mut client, 10).await;
    let store = s3_store("drill-mismatch").await;
    let manifest = back_up(&etcd, store.as_ref(), BackupRequest::default()).await;
    // A manifest whose inventory disagrees with the snapshot: 2 pods more, no configmaps.
    let path = object_path("drill-mismatch", &manifest, "manifest.json").await;
    rewrite(path, |d| {
        let mut json: serde_json::Value = serde_json::from_slice(d).unwrap();
        let inv = json["key_inventory"].as_object_mut().unwrap();
        let pods = inv["pods"].as_u64().unwrap();
        inv.insert("pods".into(), (pods + 2).into());
        inv.remove("configmaps");
        *d = serde_json::to_vec(&json).unwrap();
    })
    .await;

    let restorer = EtcdutlRestorer::new().with_bin_dir(bin_dir(EtcdVersion::V3_5_16));
    let report = kdr_core::restore::drill(
        store.as_ref(),
        &restorer,
        &SystemClock,
        &drill_options(SetSelector::Latest),
    )
    .await
    .unwrap();
    assert!(!report.passed());
    let pods = report.diffs.iter().find(|d| d.resource == "pods").expect("pods differ");
    assert_eq!((pods.missed(), pods.surplus()), (2, 0));
    let cms = report.diffs.iter().find(|d| d.resource == "configmaps").expect("configmaps differ");
    assert_eq!((cms.missed(), cms.surplus()), (0, 10));
    assert_eq!(report.diffs.len(), 2, "{:?}", report.diffs);
}
