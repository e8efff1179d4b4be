//! [`EtcdutlRestorer`]: `etcdutl snapshot restore` (etcd 3.5+), or `etcdctl snapshot restore`
//! for etcd 3.4, which has no etcdutl.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::{EtcdRestorer, RestorePlan, RestoreSpec, RestoreTool};
use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};

/// How long a restore may take by default: etcd's database is at most 8 GiB (its quota's
/// maximum), which etcdutl rewrites in a few minutes on any disk a control plane runs on.
pub const DEFAULT_RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `<tool> version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The first etcdutl release with `--bump-revision` and `--mark-compacted`.
const BUMP_SINCE: (u32, u32, u32) = (3, 5, 10);

/// Restores with `etcdutl snapshot restore` when etcdutl is installed, with `--bump-revision N
/// --mark-compacted` when the spec asks for a bump (etcdutl 3.5.10+). Without etcdutl (etcd 3.4),
/// falls back to `etcdctl snapshot restore`, which cannot bump: the plan's notes say so.
///
/// Binaries are looked up on `PATH` unless set with [`with_etcdutl`](Self::with_etcdutl),
/// [`with_etcdctl`](Self::with_etcdctl) or [`with_bin_dir`](Self::with_bin_dir).
///
/// The restore may take [`DEFAULT_RESTORE_TIMEOUT`] unless set with
/// [`with_timeout`](Self::with_timeout) (`[restore] etcdutl_timeout`); past it the tool and every
/// process it started are killed, its partial data dir is removed, and the error is
/// [`Error::Timeout`] naming the key to raise.
#[derive(Clone, Debug)]
pub struct EtcdutlRestorer {
    etcdutl: PathBuf,
    etcdctl: PathBuf,
    timeout: Duration,
    /// The tool found by the first [`detect`](Self::detect) (a plan and its restore run it once).
    detected: tokio::sync::OnceCell<RestoreTool>,
}

impl Default for EtcdutlRestorer {
    fn default() -> Self {
        Self {
            etcdutl: PathBuf::from("etcdutl"),
            etcdctl: PathBuf::from("etcdctl"),
            timeout: DEFAULT_RESTORE_TIMEOUT,
            detected: tokio::sync::OnceCell::new(),
        }
    }
}

impl EtcdutlRestorer {
    /// A restorer using `etcdutl` and `etcdctl` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this etcdutl binary.
    pub fn with_etcdutl(mut self, path: impl Into<PathBuf>) -> Self {
        self.etcdutl = path.into();
        self.detected = tokio::sync::OnceCell::new();
        self
    }

    /// Uses this etcdctl binary for the etcd 3.4 fallback.
    pub fn with_etcdctl(mut self, path: impl Into<PathBuf>) -> Self {
        self.etcdctl = path.into();
        self.detected = tokio::sync::OnceCell::new();
        self
    }

    /// Allows the restore tool `timeout` (default [`DEFAULT_RESTORE_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses `dir/etcdutl` and `dir/etcdctl` (e.g. an unpacked etcd release).
    pub fn with_bin_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        self.with_etcdutl(dir.join("etcdutl")).with_etcdctl(dir.join("etcdctl"))
    }

    /// Which tool is installed: etcdutl if it runs, else etcdctl. Found once, then remembered.
    pub async fn detect(&self) -> Result<RestoreTool> {
        self.detected.get_or_try_init(|| self.find_tool()).await.cloned()
    }

    async fn find_tool(&self) -> Result<RestoreTool> {
        if let Some(version) = tool_version(&self.etcdutl, "etcdutl").await? {
            return Ok(RestoreTool::Etcdutl { path: self.etcdutl.clone(), version });
        }
        if let Some(version) = tool_version(&self.etcdctl, "etcdctl").await? {
            return Ok(RestoreTool::Etcdctl { path: self.etcdctl.clone(), version });
        }
        Err(Error::NotFound {
            what: format!(
                "an etcd restore tool (tried {} and {})",
                self.etcdutl.display(),
                self.etcdctl.display()
            ),
            hint: Some(
                "install etcd's client tools (etcdutl, from etcd 3.5+, or etcdctl) or set their paths \
                 (etcd.etcdutl / etcd.etcdctl in the config)"
                    .into(),
            ),
        })
    }

    fn plan_for(tool: RestoreTool, snapshot: &Path, spec: &RestoreSpec) -> (RestorePlan, Vec<String>) {
        let mut args: Vec<String> = vec![
            "snapshot".into(),
            "restore".into(),
            snapshot.display().to_string(),
            "--data-dir".into(),
            spec.data_dir.display().to_string(),
            "--name".into(),
            spec.name.clone(),
            "--initial-cluster".into(),
            spec.initial_cluster.clone(),
            "--initial-cluster-token".into(),
            spec.initial_cluster_token.clone(),
            "--initial-advertise-peer-urls".into(),
            spec.initial_advertise_peer_urls.clone(),
        ];
        if spec.trailer_verified {
            // Checked by the caller beside the tool; the tool still strips it.
            args.push("--skip-hash-check".into());
        }
        let mut notes = Vec::new();
        let mut bump = None;
        let program = match &tool {
            RestoreTool::Etcdutl { path, version } => {
                if spec.bump_revision > 0 {
                    if parse_version(version).is_some_and(|v| v >= BUMP_SINCE) {
                        args.extend([
                            "--bump-revision".into(),
                            spec.bump_revision.to_string(),
                            "--mark-compacted".into(),
                        ]);
                        bump = Some(spec.bump_revision);
                    } else {
                        notes.push(format!(
                            "etcdutl {version} cannot bump the revision (needs 3.5.10+): restoring \
                             WITHOUT --bump-revision; Kubernetes watch caches may miss changes until \
                             every API server restarts (kubernetes#118501)"
                        ));
                    }
                }
                path
            }
            RestoreTool::Etcdctl { path, version } => {
                if spec.bump_revision > 0 {
                    notes.push(format!(
                        "etcdutl not found, using etcdctl {version}: restoring WITHOUT --bump-revision \
                         (etcd 3.4 cannot bump); Kubernetes watch caches may miss changes until every \
                         API server restarts (kubernetes#118501)"
                    ));
                }
                path
            }
        };
        let command = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .map(|a| crate::remote::shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        (RestorePlan { tool, command, bump_revision: bump, notes }, args)
    }
}

#[async_trait]
impl EtcdRestorer for EtcdutlRestorer {
    async fn plan(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan> {
        Ok(Self::plan_for(self.detect().await?, snapshot, spec).0)
    }

    async fn restore(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan> {
        if tokio::fs::symlink_metadata(&spec.data_dir).await.is_ok() {
            return Err(Error::AlreadyExists {
                what: format!(
                    "restore target {} (a restore only creates a new data dir)",
                    spec.data_dir.display()
                ),
            });
        }
        tokio::fs::metadata(snapshot)
            .await
            .map_err(|e| Error::io(format!("cannot read snapshot file {}", snapshot.display()), e))?;
        let (plan, args) = Self::plan_for(self.detect().await?, snapshot, spec);
        let program = match &plan.tool {
            RestoreTool::Etcdutl { path, .. } | RestoreTool::Etcdctl { path, .. } => path.clone(),
        };
        tracing::info!(command = %plan.command, timeout = ?self.timeout, "restoring etcd snapshot");
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = match GroupChild::spawn(&mut cmd) {
            Ok(child) => child.output(None, self.timeout).await,
            Err(e) => Ok(Err(e)),
        };
        let failure = match output {
            Ok(Ok(out)) if out.status.success() => return Ok(plan),
            Ok(Ok(out)) => Error::CommandFailed {
                host: "localhost".into(),
                command: plan.command.clone(),
                exit_code: out.status.code(),
                stderr: tail(&out.stderr, &out.stdout),
            },
            Ok(Err(e)) => Error::io(format!("cannot run {}", program.display()), e),
            Err(TimedOut) => Error::Timeout {
                what: format!(
                    "restoring with `{}` (killed with every process it started; for a large snapshot or a \
                     slow disk raise [restore] etcdutl_timeout)",
                    plan.command
                ),
                after: self.timeout,
            },
        };
        // The dir did not exist before this call: whatever is there now is the tool's partial output.
        if tokio::fs::symlink_metadata(&spec.data_dir).await.is_ok()
            && let Err(e) = tokio::fs::remove_dir_all(&spec.data_dir).await
        {
            tracing::warn!(dir = %spec.data_dir.display(), error = %e, "cannot remove a failed restore's output");
        }
        Err(failure)
    }
}

/// Runs `<bin> version` and reads `<name> version: X.Y.Z`; `None` if the binary is not there.
async fn tool_version(bin: &Path, name: &str) -> Result<Option<String>> {
    let mut cmd = Command::new(bin);
    cmd.arg("version")
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match GroupChild::spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot run {} version", bin.display()), e)),
    };
    let out = match child.output(None, VERSION_TIMEOUT).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(Error::io(format!("cannot run {} version", bin.display()), e)),
        Err(TimedOut) => {
            return Err(Error::Timeout {
                what: format!("`{} version`", bin.display()),
                after: VERSION_TIMEOUT,
            });
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{name} version:");
    let version = text.lines().find_map(|l| l.trim().strip_prefix(&prefix)).map(|v| v.trim().to_owned());
    match version {
        Some(v) if out.status.success() => Ok(Some(v)),
        _ => Err(Error::CommandFailed {
            host: "localhost".into(),
            command: format!("{} version", bin.display()),
            exit_code: out.status.code(),
            stderr: format!("expected `{prefix} X.Y.Z`, got: {}", tail(&out.stderr, &out.stdout)),
        }),
    }
}

/// `3.5.16` → (3, 5, 16); pre-release suffixes are ignored.
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The last lines of a command's stderr (or stdout if stderr is empty), at most 4 KiB.
pub(crate) fn tail(stderr: &[u8], stdout: &[u8]) -> String {
    let raw = if stderr.iter().all(u8::is_ascii_whitespace) { stdout } else { stderr };
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = lines[lines.len().saturating_sub(12)..].join("\n");
    if out.len() > 4096 {
        let mut cut = out.len() - 4096;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RestoreSpec {
        RestoreSpec::new("m1", "https://10.0.0.5:2380", "/var/lib/etcd.kdr-partial")
    }

    #[test]
    fn etcdutl_3_5_16_bumps_and_marks_compacted() {
        let tool = RestoreTool::Etcdutl { path: "etcdutl".into(), version: "3.5.16".into() };
        let (plan, args) = EtcdutlRestorer::plan_for(tool, Path::new("/tmp/s.db"), &spec());
        assert_eq!(plan.bump_revision, Some(1_000_000_000));
        assert!(plan.notes.is_empty());
        let joined = args.join(" ");
        assert!(joined.contains("--bump-revision 1000000000 --mark-compacted"), "{joined}");
        assert!(joined.contains("--initial-advertise-peer-urls https://10.0.0.5:2380"), "{joined}");
        assert!(joined.contains("--initial-cluster m1=https://10.0.0.5:2380"), "{joined}");
        assert!(plan.command.starts_with("etcdutl snapshot restore /tmp/s.db"), "{}", plan.command);
    }

    #[test]
    fn a_verified_trailer_is_not_hashed_again() {
        let tool = RestoreTool::Etcdctl { path: "etcdctl".into(), version: "3.4.23".into() };
        let (_, args) = EtcdutlRestorer::plan_for(tool.clone(), Path::new("/s.db"), &spec());
        assert!(!args.contains(&"--skip-hash-check".to_owned()));
        let verified = RestoreSpec { trailer_verified: true, ..spec() };
        let (_, args) = EtcdutlRestorer::plan_for(tool, Path::new("/s.db"), &verified);
        assert!(args.contains(&"--skip-hash-check".to_owned()));
    }

    #[test]
    fn no_bump_requested_means_no_flags_and_no_note() {
        let tool = RestoreTool::Etcdutl { path: "etcdutl".into(), version: "3.5.16".into() };
        let spec = RestoreSpec { bump_revision: 0, ..spec() };
        let (plan, args) = EtcdutlRestorer::plan_for(tool, Path::new("/tmp/s.db"), &spec);
        assert_eq!(plan.bump_revision, None);
        assert!(plan.notes.is_empty());
        assert!(!args.iter().any(|a| a.contains("bump") || a.contains("compacted")));
    }

    #[test]
    fn old_etcdutl_and_etcdctl_say_they_do_not_bump() {
        let old = RestoreTool::Etcdutl { path: "etcdutl".into(), version: "3.5.9".into() };
        let (plan, args) = EtcdutlRestorer::plan_for(old, Path::new("/s.db"), &spec());
        assert_eq!(plan.bump_revision, None);
        assert!(plan.notes[0].contains("WITHOUT --bump-revision"), "{:?}", plan.notes);
        assert!(!args.iter().any(|a| a.contains("bump")));

        let ctl = RestoreTool::Etcdctl { path: "/opt/etcd-3.4/etcdctl".into(), version: "3.4.23".into() };
        let (plan, args) = EtcdutlRestorer::plan_for(ctl, Path::new("/s.db"), &spec());
        assert_eq!(plan.bump_revision, None);
        assert!(plan.notes[0].contains("etcdctl 3.4.23"), "{:?}", plan.notes);
        assert!(plan.command.starts_with("/opt/etcd-3.4/etcdctl snapshot restore"), "{}", plan.command);
        assert!(!args.iter().any(|a| a.contains("bump")));
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("3.5.16"), Some((3, 5, 16)));
        assert_eq!(parse_version("v3.6.0-rc.1"), Some((3, 6, 0)));
        assert_eq!(parse_version("3.5"), None);
        assert!(parse_version("3.5.9").unwrap() < BUMP_SINCE);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let err: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let t = tail(err.as_bytes(), b"");
        assert!(t.starts_with("line 38") && t.ends_with("line 49"), "{t}");
        assert_eq!(tail(b"  \n", b"from stdout\n"), "from stdout");
    }

    #[tokio::test]
    async fn missing_tools_are_named() {
        let r = EtcdutlRestorer::new().with_bin_dir("/nonexistent-kdr-dir");
        let e = r.detect().await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::NotFound { .. }), "{msg}");
        assert!(msg.contains("/nonexistent-kdr-dir/etcdutl") && msg.contains("etcdctl"), "{msg}");
    }

    /// A stand-in for `tool` (etcdutl or etcdctl) in `dir`: answers `version`, and on `snapshot
    /// restore SNAP --data-dir DIR ...` starts writing DIR, backgrounds a child (its pid in
    /// `DIR.pid`) and hangs, as a restore stuck on a slow disk would.
    fn slow_tool(dir: &Path, tool: &str, version: &str) {
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo \"{tool} version: {version}\"; exit 0; fi\n\
             mkdir -p \"$5/member\"; echo partial > \"$5/member/db\"\n\
             sleep 300 & echo $! > \"$5.pid\"\nsleep 300\n"
        );
        let path = dir.join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn a_hung_restore_is_killed_with_its_children_and_its_output_removed() {
        for (tool, version) in [("etcdutl", "3.5.16"), ("etcdctl", "3.4.23")] {
            let bin = tempfile::tempdir().unwrap();
            slow_tool(bin.path(), tool, version);
            let work = tempfile::tempdir().unwrap();
            let snapshot = work.path().join("s.db");
            std::fs::write(&snapshot, b"db").unwrap();
            let target = work.path().join("etcd");
            let r = EtcdutlRestorer::new().with_bin_dir(bin.path()).with_timeout(Duration::from_secs(1));
            let e = r
                .restore(&snapshot, &RestoreSpec::new("m1", "http://127.0.0.1:2380", &target))
                .await
                .unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Timeout { .. }), "{tool}: {msg}");
            assert!(msg.contains("[restore] etcdutl_timeout") && msg.contains("timed out after 1s"), "{msg}");
            assert!(msg.contains(&format!("{} snapshot restore", bin.path().join(tool).display())), "{msg}");
            let pid = crate::process::tests::pid_in(&work.path().join("etcd.pid")).await;
            assert!(crate::process::tests::wait_gone(pid).await, "{tool}'s child {pid} outlived the timeout");
            assert!(!target.exists(), "{tool}: the partial data dir was left behind");
        }
    }

    #[tokio::test]
    async fn an_existing_target_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), b"x").unwrap();
        let spec = RestoreSpec::new("m1", "http://127.0.0.1:2380", dir.path());
        let e = EtcdutlRestorer::new().restore(Path::new("/nonexistent.db"), &spec).await.unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        assert_eq!(std::fs::read(dir.path().join("keep")).unwrap(), b"x");
    }
}
