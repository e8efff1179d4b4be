//! The documented `examples/kdr.toml`, whole, as a user passes it to `kdr`: a real backup against
//! etcd 3.5.16 over TLS (the endpoint, certificates and store from `KDR_*`, as on a host whose file
//! names other paths), then listing it; and an unknown section refused with exit 2, named.
//! Needs Docker and the local test images.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kdr.toml")
}

fn kdr(args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KDR_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_file_drives_kdr_backup_and_unknown_sections_exit_2() {
    let etcd = EtcdContainer::start_tls(EtcdVersion::V3_5_16).await.unwrap();
    let tls = etcd.tls().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let env = [
        ("KDR_STORE", store.clone()),
        ("KDR_ETCD_ENDPOINT", etcd.endpoint()),
        ("KDR_ETCD_CACERT", tls.ca_cert.display().to_string()),
        ("KDR_ETCD_CERT", tls.client_cert.display().to_string()),
        ("KDR_ETCD_KEY", tls.client_key.display().to_string()),
    ];
    let config = example();
    let config = config.to_str().unwrap();

    let o = kdr(&["--config", config, "backup", "--no-bundle"], &env);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {err}");
    let id = out.trim().to_owned();
    assert!(!id.is_empty(), "kdr backup prints the new set's id");
    let o = kdr(&["--config", config, "snapshot", "list", "-o", "json"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].to_string().contains(&id), "{listed:?}");
    // The cluster name came from the file's [cluster].
    assert!(listed[0].to_string().contains("\"kubernetes\""), "{listed:?}");

    let bad = dir.path().join("kdr.toml");
    let text = std::fs::read_to_string(example()).unwrap();
    std::fs::write(&bad, format!("{text}\n[promotoin]\nnode_name = \"master-2\"\n")).unwrap();
    let o = kdr(&["--config", bad.to_str().unwrap(), "backup", "--no-bundle"], &env);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("promotoin in config file") && err.contains("unknown section"), "{err}");
}
