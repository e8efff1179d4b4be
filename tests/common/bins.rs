//! The `kdr` and `kdr-monitor` binaries for tests that run them as processes (or mount them into
//! containers): built once per test binary, in this target dir's debug profile.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds `kdr-monitor` and `kdr` once and returns their dir (target/debug).
pub fn bins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "kdr-monitor", "-p", "kdr-cli"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "building kdr-monitor and kdr");
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().to_owned()
    })
}
