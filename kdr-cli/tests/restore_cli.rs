//! `kdr restore` and `kdr drill` end to end: a real etcd 3.5.16 (container) backed up with the
//! control-plane bundle to a file:// store, restored with the real etcdutl, drilled with the real
//! etcd; exit codes 0 ok, 1 failed (in use, drill mismatch), 2 usage (missing flags, no bundle
//! choice). Needs Docker, the local test images and `KDR_ETCD_3_5_DIR` (`make test` sets all up).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kdr_core::etcd::local::{LocalEtcd, LocalEtcdOptions};
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};

fn etcd_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("KDR_ETCD_3_5_DIR").expect("KDR_ETCD_3_5_DIR is not set: run `make test`"))
}

fn kdr(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr"));
    cmd.args(args);
    // A clean environment for kdr's own variables, so the host's settings do not leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("KDR_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KDR_ETCDUTL", etcd_dir().join("etcdutl")).env("KDR_ETCD_BIN", etcd_dir().join("etcd"));
    cmd.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kubeadm_dir(root: &Path) -> PathBuf {
    let k = root.join("kubernetes");
    for (p, mode, content) in [
        ("pki/ca.crt", 0o644, "CA"),
        ("pki/ca.key", 0o600, "CA KEY"),
        ("pki/sa.key", 0o600, "SA KEY"),
        ("pki/sa.pub", 0o644, "SA PUB"),
        ("pki/apiserver.crt", 0o644, "LEAF"),
        ("pki/apiserver.key", 0o600, "LEAF KEY"),
        ("manifests/kube-apiserver.yaml", 0o600, "    - kube-apiserver\n"),
    ] {
        let path = k.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(root.join("kubeadm.yaml"), "kind: ClusterConfiguration\n").unwrap();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_drill_with_exit_codes() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for i in 0..20 {
        client.put(format!("/registry/pods/default/p{i}"), format!("v{i}"), None).await.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let kube = kubeadm_dir(tmp.path());
    let store = format!("file://{}", tmp.path().join("store").display());
    let kubeadm_config = tmp.path().join("kubeadm.yaml");
    let o = kdr(&[
        "backup",
        "--etcd-endpoint",
        &etcd.endpoint(),
        "--store",
        &store,
        "--kubernetes-dir",
        kube.to_str().unwrap(),
        "--kubeadm-config",
        kubeadm_config.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();

    let data = tmp.path().join("etcd");
    let data_s = data.to_str().unwrap();
    let base = ["restore", "--store", &store, "--data-dir", data_s];

    // Usage errors (exit 2): no member name; a set with a bundle and no choice for it.
    let o = kdr(&base);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--name"), "{}", text(&o));
    let named =
        [&base[..], &["--name", "m1", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"]].concat();
    let o = kdr(&named);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--bundle-mode") && text(&o).contains(&id), "{}", text(&o));
    assert!(!data.exists(), "a refused restore creates nothing");
    let o = kdr(&[&named[..], &["--snapshot", "not-an-id", "--no-bundle"]].concat());
    assert_eq!(code(&o), 2, "{}", text(&o));

    // A dry run shows the plan (tool, bump, peer URL and where it came from) and changes nothing.
    let o = kdr(&[&named[..], &["--no-bundle", "--dry-run"]].concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(plan.contains(&id) && plan.contains("--bump-revision 1000000000 --mark-compacted"), "{plan}");
    assert!(plan.contains("http://127.0.0.1:2380  (from --initial-advertise-peer-urls)"), "{plan}");
    assert!(!data.exists());

    // A new-host restore: the data dir, and only the identity files under the bundle root.
    let root = tmp.path().join("newhost");
    let o = kdr(&[
        &named[..],
        &["--bundle-mode", "new-host", "--bundle-root", root.to_str().unwrap(), "-o", "json"],
    ]
    .concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["plan"]["set"], id.as_str());
    assert!(report["replaced"].is_null());
    let pki = root.join("etc/kubernetes/pki");
    assert_eq!(std::fs::metadata(pki.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(pki.join("sa.pub").exists());
    assert!(!pki.join("apiserver.crt").exists(), "a leaf cert must not go to a new host");
    assert!(
        !root.join("etc/kubernetes/manifests").exists(),
        "static pod manifests must not go to a new host"
    );
    assert!(data.join("member/snap/db").exists());

    // An etcd serving the dir: refused (exit 1), nothing changed.
    let running = LocalEtcd::start(LocalEtcdOptions::new(&data).binary(etcd_dir().join("etcd")).name("m1"))
        .await
        .unwrap();
    let mut c = running.client().await.unwrap();
    assert_eq!(c.get("/registry/pods/default/p7", None).await.unwrap().kvs()[0].value(), b"v7");
    let o = kdr(&[&named[..], &["--no-bundle"]].concat());
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("an etcd is using data dir"), "{}", text(&o));
    running.stop().await.unwrap();

    // Stopped: restored again, the previous dir moved aside, not deleted.
    let o = kdr(&[&named[..], &["--no-bundle"]].concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    let aside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd.kdr-replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "{}", text(&o));
    assert!(aside[0].path().join("member/snap/db").exists());

    // Drills: pass, then fail (exit 1) once the manifest's inventory disagrees.
    let o = kdr(&["drill", "--store", &store, "--work-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("PASSED") && text(&o).contains("20 expected, 20 found"), "{}", text(&o));
    let manifest = tmp.path().join("store/sets").join(&id).join("manifest.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    json["key_inventory"]["pods"] = 21.into();
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    let o = kdr(&["drill", "--store", &store, "--work-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("FAILED") && out.contains("MISSED") && out.contains("pods"), "{out}");
}

/// Whether `pid` is gone (a zombie runs nothing: in a container an orphan may stay one).
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// `kdr restore` with an etcdutl that hangs (a shell script with a background child): bounded by
/// `[restore] etcdutl_timeout`, and stopped by SIGTERM (as the monitor stops a `kdr failover`),
/// in both cases with every process it started. A real etcd (no Docker) makes the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcdutl_is_bounded_and_stopped_with_kdr() {
    let dir = tempfile::tempdir().unwrap();
    let etcd =
        LocalEtcd::start(LocalEtcdOptions::new(dir.path().join("etcd")).binary(etcd_dir().join("etcd")))
            .await
            .unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let o = kdr(&["backup", "--store", &store, "--etcd-endpoint", etcd.client_url(), "--no-bundle"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    etcd.stop().await.unwrap();

    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let tool = dir.path().join("etcdutl");
    std::fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo \"etcdutl version: 3.5.16\"; exit 0; fi\n\
             sleep 300 & echo $! > {p}/grandchild\necho $$ > {p}/tool\nwait\n",
            p = pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("kdr.toml");
    let restore = |timeout: &str| {
        std::fs::write(&config, format!("[restore]\netcdutl_timeout = \"{timeout}\"\n")).unwrap();
        for f in ["tool", "grandchild"] {
            let _ = std::fs::remove_file(pids.join(f));
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KDR_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KDR_ETCDUTL", &tool)
            .arg("--config")
            .arg(&config)
            .args(["restore", "--store", &store, "--name", "m1", "--bundle-mode", "same-host"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--data-dir"])
            .arg(dir.path().join(format!("restored-{timeout}")))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let started = |what: &str| {
        let read = |f: &str| std::fs::read_to_string(pids.join(f)).map(|s| s.trim().to_owned());
        wait_for(what, || read("tool").is_ok() && read("grandchild").is_ok());
        (read("tool").unwrap(), read("grandchild").unwrap())
    };

    // The timeout: exit 1, the key to raise named, nothing left running.
    let child = restore("1s");
    let (tool_pid, grandchild) = started("the hung etcdutl (timeout)");
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("[restore] etcdutl_timeout") && text(&o).contains("timed out after 1s"),
        "{}",
        text(&o)
    );
    wait_for("the tool and its child to be gone after the timeout", || gone(&tool_pid) && gone(&grandchild));

    // SIGTERM to kdr: exit 143, and the tool's whole group stopped with it.
    let child = restore("10m");
    let (tool_pid, grandchild) = started("the hung etcdutl (SIGTERM)");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 143, "{}", text(&o));
    assert!(text(&o).contains("stopped by SIGTERM"), "{}", text(&o));
    wait_for("the tool and its child to be gone after SIGTERM", || gone(&tool_pid) && gone(&grandchild));
}
