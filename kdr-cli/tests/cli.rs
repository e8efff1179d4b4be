//! The `kdr` binary end to end against a real etcd (3.5.16, TLS, in a container): flags, config
//! file and `KDR_*` environment, `-o json`, and exit codes (0 ok, 1 failed, 2 usage/config).
//! Needs Docker and the local test images (`make test` builds them).
use std::path::Path;
use std::process::{Command, Output};

use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};

fn kdr(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr"));
    cmd.args(args);
    // A clean environment for kdr's own variables, so the host's settings do not leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("KDR_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_show_verify_download_prune_delete_with_exit_codes() {
    let etcd = EtcdContainer::start_tls(EtcdVersion::V3_5_16).await.unwrap();
    let tls = etcd.tls().unwrap().clone();
    let mut client = etcd.client().await.unwrap();
    for i in 0..10 {
        client.put(format!("/registry/pods/default/p{i}"), "x", None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store_url = format!("file://{}", store_dir.display());
    // The store and cluster name come from the config file, the endpoint from the environment,
    // the TLS files from flags.
    let config = dir.path().join("kdr.toml");
    std::fs::write(&config, format!("[cluster]\nname = \"cli-test\"\n[store]\nurl = \"{store_url}\"\n"))
        .unwrap();
    let config = config.to_str().unwrap();
    let key = dir.path().join("key.age");
    let endpoint = etcd.endpoint();
    let env = [("KDR_ETCD_ENDPOINT", endpoint.as_str())];

    let o = kdr(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("age1"), "keygen prints the public key: {}", stdout(&o));
    let o = kdr(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 1, "never overwrites a key: {}", stderr(&o));

    let tls_args = [
        "--cacert",
        tls.ca_cert.to_str().unwrap(),
        "--cert",
        tls.client_cert.to_str().unwrap(),
        "--key",
        tls.client_key.to_str().unwrap(),
    ];
    let mut args =
        vec!["--config", config, "backup", "--no-bundle", "--encryption-key-file", key.to_str().unwrap()];
    args.extend(tls_args);
    let o = kdr(&args, &env);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert!(kdr_core::snapshot::SnapshotId::parse(&id).is_ok(), "prints the new set's id: {id:?}");
    assert!(!stderr(&o).contains("AGE-SECRET-KEY"), "the key never reaches the output");

    let o = kdr(&["--config", config, "snapshot", "list", "-o", "json"], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sets: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(sets[0]["id"], id.as_str());
    assert_eq!(sets[0]["cluster_name"], "cli-test");
    assert_eq!(sets[0]["key_inventory"]["pods"], 10);
    assert_eq!(sets[0]["pods"]["names"][0], "default/p0");
    assert_eq!(sets[0]["pods"]["names"].as_array().map(Vec::len), Some(10));
    let o = kdr(&["--config", config, "snapshot", "list"], &[]);
    assert!(stdout(&o).lines().next().unwrap().starts_with("ID"), "a table for humans");

    let o = kdr(&["--config", config, "snapshot", "show", &id], &[]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("pods") && stdout(&o).contains("age to age1"), "{}", stdout(&o));
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("pod names") && l.trim_end().ends_with(" 10")),
        "{}",
        stdout(&o)
    );

    // verify (latest by default) with and without the key; a missing key file is a config error.
    let o =
        kdr(&["--config", config, "snapshot", "verify", "--encryption-key-file", key.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o =
        kdr(&["--config", config, "snapshot", "verify", "--encryption-key-file", "/nonexistent.age"], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent.age"));

    let out = dir.path().join("dl");
    let o = kdr(
        &[
            "--config",
            config,
            "snapshot",
            "download",
            &id,
            "--out",
            out.to_str().unwrap(),
            "--encryption-key-file",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(out.join("etcd.db")).unwrap().len() % 512,
        32,
        "a plain etcd snapshot with its trailer"
    );

    // Tamper with the stored snapshot: verify exits 1 and says which object.
    let stored = store_dir.join(format!("sets/{id}/etcd.db.zst.age"));
    let mut bytes = std::fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let o = kdr(&["--config", config, "snapshot", "verify", &id, "-o", "json"], &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["objects"][0]["ok"], false);

    // Usage and configuration errors exit 2; operations that fail exit 1.
    assert_eq!(code(&kdr(&["backup", "--bogus"], &[])), 2);
    assert_eq!(code(&kdr(&["--config", config, "snapshot", "show", "not-an-id"], &[])), 2);
    let o = kdr(&["backup", "--store", &store_url, "--no-bundle"], &[]);
    assert_eq!(code(&o), 2, "no etcd endpoint: {}", stderr(&o));
    assert!(stderr(&o).contains("--etcd-endpoint"));
    let o = kdr(&["backup", "--store", "ftp://x", "--no-bundle"], &env);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o =
        kdr(&["--config", config, "backup", "--no-bundle"], &[("KDR_ETCD_ENDPOINT", "http://127.0.0.1:1")]);
    assert_eq!(code(&o), 1, "etcd unreachable: {}", stderr(&o));
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, "[stroe]\n").unwrap();
    assert_eq!(code(&kdr(&["--config", bad_config.to_str().unwrap(), "snapshot", "list"], &[])), 2);

    // prune --dry-run deletes nothing; delete removes the set.
    let o =
        kdr(&["--config", config, "snapshot", "prune", "--dry-run", "--keep-last", "0", "-o", "json"], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let pruned: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(pruned["dry_run"], true);
    assert_eq!(pruned["plan"]["keep"][0][1][0], "newest", "the newest set is always kept");
    let o = kdr(&["--config", config, "snapshot", "delete", &id], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = kdr(&["--config", config, "snapshot", "list", "-o", "json"], &[]);
    assert_eq!(stdout(&o).trim(), "[]");
    assert!(!Path::new(&store_dir.join(format!("sets/{id}"))).join("etcd.db.zst.age").exists());
}
