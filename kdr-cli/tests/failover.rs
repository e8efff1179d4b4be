//! `kdr failover` end to end through the real binary: configuration errors exit 2 naming the key;
//! `--dry-run` over a real backup set (taken from a real etcd into a `file://` store) prints the
//! whole plan and changes nothing. The promotion itself is tested against real etcd, S3 and sshd
//! nodes in the workspace's tests/promotion/runbook.rs.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kdr_core::backup::bundle::{BundleOptions, BundleSpec};
use kdr_core::backup::etcd_source::EtcdSourceOptions;
use kdr_core::backup::{BackupOptions, NoProgress, backup};
use kdr_core::clock::SystemClock;
use kdr_core::failover::{FileStateStore, Latch, PersistedState, StateStore};
use kdr_core::runbook::{Claim, ClaimStore};
use kdr_core::snapshot::ObjectStoreSnapshotStore;
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};

fn kdr(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kdr")).args(args).env("RUST_LOG", "warn").output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

fn config(dir: &Path, store: &str, etcd_bin: &Path) -> String {
    for f in ["id_ed25519", "known_hosts"] {
        std::fs::write(dir.join(f), "placeholder\n").unwrap();
    }
    format!(
        r#"
[store]
url = "{store}"
[restore]
etcdutl = "{etcdutl}"
etcdctl = "{etcdctl}"
[ssh]
user = "kube"
key_file = "{dir}/id_ed25519"
known_hosts = "{dir}/known_hosts"
[[workers]]
name = "worker-1"
host = "192.168.30.201"
[promotion]
node_name = "master-2"
advertise_address = "192.168.30.202"
old_primary_name = "master-1"
old_primary_address = "192.168.30.200"
state_dir = "{dir}/state"
bundle_dir = "{dir}/bundle"
[kubeadm]
etcd_data_dir = "{dir}/etcd-data"
[fence]
kind = "exec"
command = ["/usr/local/bin/fence-primary"]
"#,
        etcdutl = etcd_bin.join("etcdutl").display(),
        etcdctl = etcd_bin.join("etcdctl").display(),
        dir = dir.display()
    )
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = kdr(&["failover", "--config", "/nonexistent/kdr.toml", "--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/kdr.toml"), "{err}");

    let base = config(dir.path(), "file:///nonexistent", Path::new("/usr/bin"));
    let cases = [
        (format!("{base}\n[fencing]\nkind = \"ssh\"\n"), "fencing"),
        (base.replace("kind = \"exec\"", "kind = \"none\""), "fence.i_accept_split_brain_risk"),
        (base.replace("old_primary_name = \"master-1\"", ""), "promotion.old_primary_name"),
        (
            base.replace("[fence]", "[[hooks.pre]]\nexec = [\"a\"]\nwebhook = \"http://x\"\n[fence]"),
            "hooks.pre[0]",
        ),
    ];
    for (text, key) in cases {
        let f = dir.path().join("kdr.toml");
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = kdr(&["failover", "--config", f.to_str().unwrap(), "--dry-run"]);
        assert_eq!(code, 2, "{key}: {err}");
        assert!(err.contains(key), "the error must name {key}: {err}");
    }
}

#[tokio::test]
async fn dry_run_prints_the_whole_plan_and_changes_nothing() {
    let etcd_bin = std::path::PathBuf::from(
        std::env::var_os("KDR_ETCD_3_5_DIR").expect("KDR_ETCD_3_5_DIR: run `make test` or `. .tools/env`"),
    );
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let url = format!("file://{}", store_dir.display());

    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client.put("/registry/pods/default/web-1", "v", None).await.unwrap();
    let store = ObjectStoreSnapshotStore::from_url(&url, &Default::default()).unwrap();
    let opts = BackupOptions {
        cluster_name: "prod".into(),
        etcd: EtcdSourceOptions::new(etcd.endpoint()),
        bundle: BundleOptions { spec: BundleSpec::None, ..Default::default() },
        encode: Default::default(),
    };
    let manifest = backup(&store, &opts, &SystemClock, Arc::new(NoProgress)).await.unwrap();

    let f = dir.path().join("kdr.toml");
    std::fs::write(&f, config(dir.path(), &url, &etcd_bin)).unwrap();
    let listing = || {
        let mut v: Vec<String> = walk(&store_dir);
        v.sort();
        v
    };
    let before = listing();
    let (code, out, err) = kdr(&["failover", "--config", f.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "Promotion plan (dry run: nothing was changed)",
        manifest.id.as_str(),
        "claims/epoch-1.json",
        "run `/usr/local/bin/fence-primary` with KDR_FENCE_NODE=master-1 KDR_FENCE_HOST=192.168.30.200",
        "kubeadm init --config /etc/kubernetes/kdr-kubeadm-init.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd",
        "worker-1 (worker-1): rewire",
        "delete node master-1",
    ] {
        assert!(out.contains(expected), "plan lacks {expected:?}:\n{out}");
    }
    assert_eq!(listing(), before, "the store is unchanged (no claim)");
    assert!(!dir.path().join("state").exists(), "no journal, no lock");
    assert!(!dir.path().join("etcd-data").exists() && !dir.path().join("bundle").exists());

    let (code, out, err) = kdr(&["failover", "--config", f.to_str().unwrap(), "--dry-run", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["epoch"], 1);
    assert_eq!(plan["snapshot"]["id"], manifest.id.as_str());
    assert_eq!(plan["steps"].as_array().unwrap().len(), 8);

    // The monitor's detector halted at epoch 1, which another standby has claimed since: without
    // --epoch, kdr failover does not re-pick it but takes the newest claim + 1, and says why.
    let monitor_dir = dir.path().join("monitor");
    std::fs::create_dir_all(&monitor_dir).unwrap();
    let halted = PersistedState {
        epoch: 1,
        latch: Latch::Halted { epoch: 1, reason: "promotion failed".into() },
        ..Default::default()
    };
    FileStateStore::new(monitor_dir.join("detector-state.json")).save(&halted).unwrap();
    let claims = ClaimStore::new(store.inner().clone(), "", "file");
    let other = Claim {
        epoch: 1,
        holder: "master-3".into(),
        host: "192.168.30.203".into(),
        run_id: "run-of-master-3".into(),
        claimed_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        snapshot: None,
    };
    claims.claim(&other).await.unwrap();
    let with_monitor = dir.path().join("kdr-monitor.toml");
    let text = format!(
        "{}[monitor]\nstate_dir = \"{}\"\n",
        config(dir.path(), &url, &etcd_bin),
        monitor_dir.display()
    );
    std::fs::write(&with_monitor, text).unwrap();
    let (code, out, err) =
        kdr(&["failover", "--config", with_monitor.to_str().unwrap(), "--dry-run", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["epoch"], 2, "{plan}");
    let notes = plan["notes"].to_string();
    assert!(notes.contains("detector epoch 1 is not used") && notes.contains("master-3"), "{notes}");
    // Asked for explicitly, epoch 1 stays epoch 1: the plan says the claim step will refuse it,
    // naming the claim and what to do.
    let (code, out, err) =
        kdr(&["failover", "--config", with_monitor.to_str().unwrap(), "--dry-run", "--epoch", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("epoch:       1 (requested)"), "{out}");
    assert!(
        out.contains("the claim step will refuse: epoch 1 cannot be promoted by this standby: epoch 1 already claimed by master-3")
            && out.contains("it takes epoch 2"),
        "{out}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                out.extend(walk(&p));
            }
        }
    }
    out
}
