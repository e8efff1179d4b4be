//! `kdr-monitor check-config` on the documented `examples/kdr.toml` (the whole shared file,
//! sections of `kdr failover` included) and on a file with an unknown section.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kdr.toml")
}

fn check_config(path: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr-monitor"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KDR_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("check-config").arg("--config").arg(path).output().unwrap()
}

#[test]
fn the_example_file_checks_ok_and_an_unknown_section_exits_2_named() {
    let o = check_config(&example());
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "stdout: {out}\nstderr: {err}");
    // The effective configuration covers every section, the failover ones too.
    for section in
        ["[monitor]", "[detector]", "[store]", "[promotion]", "[fence]", "[ssh]", "[worker_recovery]"]
    {
        assert!(out.contains(section), "{section} missing from the effective config:\n{out}");
    }

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("kdr.toml");
    let text = std::fs::read_to_string(example()).unwrap();
    std::fs::write(&bad, format!("{text}\n[monitr]\nlisten = \"127.0.0.1:1\"\n")).unwrap();
    let o = check_config(&bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("monitr in config file") && err.contains("unknown section"), "{err}");
}
