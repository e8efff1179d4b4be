//! `kdr-monitor replay` as a user runs it: the built binary on a sample trace, and on a
//! malformed one.
use std::path::PathBuf;
use std::process::Command;

/// A sample trace from the repository's fixtures (`tests/fixtures/detector-traces/`).
fn sample(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/detector-traces").join(name);
    assert!(path.is_file(), "sample trace {} is missing", path.display());
    path
}

fn replay(trace: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kdr-monitor")).arg("replay").arg("--trace").arg(trace).output().unwrap()
}

#[test]
fn replays_a_sample_trace_to_the_documented_jsonl() {
    let out = replay(&sample("p01_primary_dead_no_witnesses.jsonl"));
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The primary's API server and machine fail from t = 100 on; no fencer is configured.
    assert_eq!(
        stdout,
        [
            r#"{"t": 0.0, "state": "warmup"}"#,
            r#"{"t": 0.1, "state": "healthy"}"#,
            r#"{"t": 100.0, "state": "suspect"}"#,
            r#"{"t": 400.0, "action": "promote", "epoch": 1}"#,
            r#"{"t": 400.0, "state": "promoted"}"#,
            "",
        ]
        .join("\n")
    );
}

#[test]
fn every_sample_trace_replays_to_valid_jsonl() {
    let dir = sample("expected.json").parent().unwrap().to_path_buf();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            n += 1;
            let out = replay(&path);
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            for line in String::from_utf8(out.stdout).unwrap().lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                assert!(v["t"].is_number(), "{line}");
            }
        }
    }
    assert!(n >= 8, "found only {n} sample traces in {}", dir.display());
}

#[test]
fn a_malformed_line_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(sample("p02_api_down_host_up.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[6] = r#"{"t": 20.0, "probe": "api", "ok": "yes"}"#;
    let path = dir.path().join("broken.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = replay(&path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{} line 7:", path.display())), "{stderr}");
    assert!(stderr.contains("invalid type: string \"yes\", expected a boolean"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is printed for a malformed trace");

    // An unknown config key, and a missing file.
    std::fs::write(&path, "{\"config\": {\"interval_s\": 10, \"dead_afterr_s\": 300}}\n").unwrap();
    let out = replay(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: config: unknown field `dead_afterr_s`"));
    let out = replay(&dir.path().join("missing.jsonl"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --trace: failed to read trace"));
}
