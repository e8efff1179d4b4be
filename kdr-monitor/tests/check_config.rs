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

/// A standby whose promotion is `kdr failover` on this file, with `fence` appended.
fn standby_config(dir: &Path, fence: &str) -> PathBuf {
    let path = dir.join("standby.toml");
    let text = format!(
        "[primary]\nname = \"master-1\"\naddress = \"10.0.0.1\"\n\
         [detector]\nrequire_self_probe = false\n\
         [monitor]\nroles = [\"standby\"]\n\
         [monitor.standby]\napi_url = \"https://10.0.0.1:6443/healthz\"\nhost_tcp = \"10.0.0.1:22\"\n\
         promote_command = [\"/usr/local/bin/kdr\", \"failover\", \"--config\", \"{}\", \"--epoch\", \"{{epoch}}\"]\n{fence}",
        path.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_standby_with_the_default_ssh_fence_exits_2_naming_the_key_the_reason_and_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let o = check_config(&standby_config(dir.path(), ""));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in [
        "invalid fence.kind",
        "an ssh fence needs the machine to answer",
        "kind = \"exec\"",
        "ipmitool",
        "aws ec2 stop-instances",
        "accept_no_automatic_failover_when_primary_is_down = true",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }

    // The exec fence passes.
    let o = check_config(&standby_config(
        dir.path(),
        "[fence]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/fence-ipmi\"]\n",
    ));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    // The opt-out passes, with a warning (the monitor's start runs the same check and logs it).
    let o = check_config(&standby_config(
        dir.path(),
        "[fence]\nkind = \"ssh\"\naccept_no_automatic_failover_when_primary_is_down = true\n",
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("WARN") && err.contains("the automatic failover halts at the fence"), "{err}");
}

#[test]
fn a_standby_naming_its_fence_twice_exits_2_naming_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        standby_config(dir.path(), "[fence]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/fence-ipmi\"]\n");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("promote_command", "fence_command = [\"/usr/local/bin/fence-ipmi\"]\npromote_command");
    let text =
        text.replace("require_self_probe = false\n", "require_self_probe = false\nfencing = \"required\"\n");
    std::fs::write(&path, text).unwrap();
    let o = check_config(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("monitor.standby.fence_command")
            && err.contains("[fence]")
            && err.contains("named twice"),
        "{err}"
    );
}

/// Both binaries find the file the same way: `--config`, else `KDR_CONFIG`, else
/// /etc/kdr/kdr.toml if it exists; with none of them, an exit 2 that names all three.
#[test]
fn the_config_file_is_found_as_kdr_finds_it() {
    let bare = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdr-monitor"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KDR_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("check-config");
        cmd
    };
    let o = bare().env("KDR_CONFIG", example()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("examples/kdr.toml: ok"), "{err}");

    if !Path::new(kdr_core::config::DEFAULT_CONFIG_PATH).exists() {
        let o = bare().output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--config FILE") && err.contains("KDR_CONFIG") && err.contains("/etc/kdr/kdr.toml"),
            "{err}"
        );
    }
}
