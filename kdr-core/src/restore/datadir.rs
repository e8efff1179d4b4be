//! The target data dir: names around it, the "is an etcd using it?" check, and the swap that puts a
//! restored dir in place without deleting the one it replaces.
use std::ffi::OsString;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// `<dir><suffix>`, e.g. `/var/lib/etcd.kdr-partial`.
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where a restore builds the new dir: `<dir>.kdr-partial`.
pub fn partial_path(dir: &Path) -> PathBuf {
    sibling(dir, ".kdr-partial")
}

/// Where the downloaded snapshot of set `id` is kept while it is verified and restored:
/// `<dir>.kdr-snapshot-<id>.db`, next to the target (same filesystem, never inside it).
pub fn download_path(dir: &Path, id: &str) -> PathBuf {
    sibling(dir, &format!(".kdr-snapshot-{id}.db"))
}

/// A free name for `<dir><suffix>-<timestamp>` (with `-2`, `-3`... if taken).
pub fn aside_path(dir: &Path, suffix: &str, at: DateTime<Utc>) -> PathBuf {
    let base = format!("{suffix}-{}", at.format("%Y%m%dT%H%M%SZ"));
    let first = sibling(dir, &base);
    if fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (2..)
        .map(|n| sibling(dir, &format!("{base}-{n}")))
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

/// Where an existing dir is moved: `<dir>.kdr-replaced-<timestamp>`.
pub fn replaced_path(dir: &Path, at: DateTime<Utc>) -> PathBuf {
    aside_path(dir, ".kdr-replaced", at)
}

/// The lock on an existing data dir's bbolt db, held while the dir is swapped so that no etcd can
/// open it in between. Released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    _db: Option<File>,
}

/// Refuses (with [`Error::Refused`]) if an etcd is using `dir`, and otherwise returns a lock that
/// keeps one from starting on it while it is held.
///
/// Checks, cheapest first:
/// - bbolt holds an exclusive `flock` on `member/snap/db` while etcd has the db open: a
///   non-blocking `flock` here fails exactly then (also for an etcd in a container whose data dir
///   is a bind mount of `dir`);
/// - a process named `etcd` whose command line has `--data-dir` pointing at `dir` (e.g. one that
///   is starting, or crash-looping under kubelet, and has not opened the db yet).
pub fn check_not_in_use(dir: &Path) -> Result<DataDirLock> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(DataDirLock { _db: None });
    }
    let db = dir.join("member/snap/db");
    let mut held = None;
    match File::open(&db) {
        Ok(file) => match file.try_lock() {
            Ok(()) => held = Some(file),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::refused(format!(
                    "an etcd is using data dir {}: {} is locked by another process (etcd's bbolt holds \
                     an exclusive lock while it runs). Stop that etcd first (kubeadm: move \
                     /etc/kubernetes/manifests/etcd.yaml out of the manifests dir and wait for the \
                     container to exit), then run the restore again",
                    dir.display(),
                    db.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot check whether {} is in use", db.display()), e));
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(format!("cannot open {} to check it is not in use", db.display()), e));
        }
    }
    if let Some(pid) = etcd_process_using(dir) {
        return Err(Error::refused(format!(
            "an etcd is using data dir {}: process {pid} is an etcd whose data dir it is. Stop it \
             first (kubeadm: move /etc/kubernetes/manifests/etcd.yaml out of the manifests dir), then \
             run the restore again",
            dir.display(),
        )));
    }
    Ok(DataDirLock { _db: held })
}

/// The pid of a running `etcd` whose data dir (`--data-dir` or `ETCD_DATA_DIR`) is `dir`, from
/// `/proc`. The process's path is looked up through `/proc/<pid>/root` (or `cwd` if relative), so
/// an etcd in a container counts only if its data dir is really this dir (a hostPath mount, as
/// kubeadm's static pod has), not merely a dir with the same name in its own filesystem.
fn etcd_process_using(dir: &Path) -> Option<u32> {
    let want = fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()));
    let want_path = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let entries = fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let proc = entry.path();
        let Ok(cmdline) = fs::read(proc.join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.first().map(|a| a.rsplit(|b| *b == b'/').next().unwrap_or(a)) != Some(b"etcd".as_slice()) {
            continue;
        }
        let environ = fs::read(proc.join("environ")).unwrap_or_default();
        let Some(d) = data_dir_of(&args, &environ) else { continue };
        let d = PathBuf::from(d);
        let seen = if d.is_absolute() {
            proc.join("root").join(d.strip_prefix("/").unwrap_or(&d))
        } else {
            proc.join("cwd").join(&d)
        };
        let same = match (fs::metadata(&seen), want) {
            (Ok(m), Some(w)) => (m.dev(), m.ino()) == w,
            // Its filesystem is not visible to us (permissions): compare the paths.
            _ => d.is_absolute() && fs::canonicalize(&d).unwrap_or(d) == want_path,
        };
        if same {
            return Some(pid);
        }
    }
    None
}

/// The data dir an etcd command line (or, failing that, its environment) names.
fn data_dir_of(args: &[&[u8]], environ: &[u8]) -> Option<String> {
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        let arg = String::from_utf8_lossy(arg);
        for flag in ["--data-dir", "-data-dir"] {
            if let Some(v) = arg.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) {
                found = Some(v.to_owned());
            } else if arg == flag {
                found = args.get(i + 1).map(|v| String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    found.or_else(|| {
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"ETCD_DATA_DIR="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// What [`swap_into_place`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swapped {
    /// Where the previous dir went (`None` if there was none).
    pub replaced: Option<PathBuf>,
    /// Whether the swap was a single atomic exchange (`renameat2(RENAME_EXCHANGE)`), so that the
    /// target path always held either the old or the new dir.
    pub atomic: bool,
}

/// Why [`swap_into_place`] failed, and whether anything had moved.
#[derive(Debug)]
pub struct SwapError {
    /// What failed.
    pub error: Error,
    /// `true` when nothing was renamed: `target` is as it was and `partial` still holds the new
    /// dir. `false` when the new dir is in place and only moving the old one aside failed (the old
    /// one is then still at `partial`; the error says so).
    pub target_untouched: bool,
}

/// Puts the finished `partial` dir at `target`, moving an existing `target` to `replaced`.
/// Nothing is deleted.
///
/// With an existing target, the two are exchanged atomically (`renameat2(RENAME_EXCHANGE)`): at
/// every instant `target` holds the old dir or the new one, never neither, never a mix. Then
/// `partial` (now the old dir) is renamed to `replaced`. On filesystems without exchange, the old
/// dir is renamed aside first, then the new one into place (a crash in between leaves `target`
/// missing with both dirs intact beside it). Parent dirs are fsynced.
pub fn swap_into_place(
    partial: &Path,
    target: &Path,
    replaced: &Path,
) -> std::result::Result<Swapped, SwapError> {
    let untouched = |error| SwapError { error, target_untouched: true };
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if fs::symlink_metadata(target).is_err() {
        fs::create_dir_all(parent)
            .map_err(|e| untouched(Error::io(format!("cannot create {}", parent.display()), e)))?;
        fs::rename(partial, target).map_err(|e| {
            untouched(Error::io(format!("cannot rename {} to {}", partial.display(), target.display()), e))
        })?;
        sync_dir(parent);
        return Ok(Swapped { replaced: None, atomic: true });
    }
    if fs::symlink_metadata(replaced).is_ok() {
        return Err(untouched(Error::AlreadyExists {
            what: format!("{} (where the old data dir would go)", replaced.display()),
        }));
    }
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        partial,
        rustix::fs::CWD,
        target,
        rustix::fs::RenameFlags::EXCHANGE,
    ) {
        Ok(()) => {
            sync_dir(parent);
            // `partial` now holds the old dir.
            fs::rename(partial, replaced).map_err(|e| SwapError {
                error: Error::io(
                    format!(
                        "the restored data dir is in place at {}, but the previous one could not be \
                         renamed from {} to {} (it is intact; move it aside by hand)",
                        target.display(),
                        partial.display(),
                        replaced.display()
                    ),
                    e,
                ),
                target_untouched: false,
            })?;
            sync_dir(parent);
            Ok(Swapped { replaced: Some(replaced.to_owned()), atomic: true })
        }
        Err(e)
            if matches!(
                e,
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP
            ) =>
        {
            tracing::warn!(error = %e, "atomic exchange unsupported here; swapping with two renames");
            fs::rename(target, replaced).map_err(|e| {
                untouched(Error::io(
                    format!("cannot move {} aside to {}", target.display(), replaced.display()),
                    e,
                ))
            })?;
            if let Err(e) = fs::rename(partial, target) {
                // Put the old dir back: the target must not be left empty.
                let back = fs::rename(replaced, target).is_ok();
                let where_old =
                    if back { "put back".to_owned() } else { format!("left at {}", replaced.display()) };
                return Err(SwapError {
                    error: Error::io(
                        format!(
                            "cannot rename {} to {} (previous data dir {where_old})",
                            partial.display(),
                            target.display()
                        ),
                        e,
                    ),
                    target_untouched: back,
                });
            }
            sync_dir(parent);
            Ok(Swapped { replaced: Some(replaced.to_owned()), atomic: false })
        }
        Err(e) => Err(untouched(Error::io(
            format!("cannot exchange {} with {}", partial.display(), target.display()),
            e.into(),
        ))),
    }
}

/// Gives every file under `dir` the owner of `like` (when they differ and we may), so that an etcd
/// running as a dedicated user can open a dir restored by root.
pub fn match_owner(dir: &Path, like: &Path) -> Result<()> {
    let want = fs::metadata(like).map_err(|e| Error::io(format!("cannot stat {}", like.display()), e))?;
    let have = fs::metadata(dir).map_err(|e| Error::io(format!("cannot stat {}", dir.display()), e))?;
    if (want.uid(), want.gid()) == (have.uid(), have.gid()) {
        return Ok(());
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(want.uid()), Some(want.gid())).map_err(|e| {
            Error::io(format!("cannot chown {} to {}:{}", path.display(), want.uid(), want.gid()), e)
        })?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            let entries =
                fs::read_dir(&path).map_err(|e| Error::io(format!("cannot list {}", path.display()), e))?;
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    Ok(())
}

/// Bytes free for an unprivileged user on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// fsyncs a directory so that renames in it survive a crash (best effort: some filesystems refuse).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 5, 11, 15).unwrap()
    }

    fn write(p: &Path, content: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn names_sit_next_to_the_target() {
        let d = Path::new("/var/lib/etcd");
        assert_eq!(partial_path(d), Path::new("/var/lib/etcd.kdr-partial"));
        assert_eq!(download_path(d, "X-1"), Path::new("/var/lib/etcd.kdr-snapshot-X-1.db"));
        assert_eq!(replaced_path(d, at()), Path::new("/var/lib/etcd.kdr-replaced-20261121T051115Z"));
    }

    #[test]
    fn aside_names_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("etcd");
        let first = replaced_path(&d, at());
        fs::create_dir(&first).unwrap();
        let second = replaced_path(&d, at());
        assert_eq!(second, sibling(&d, ".kdr-replaced-20261121T051115Z-2"));
    }

    #[test]
    fn swap_exchanges_and_keeps_the_old_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etcd");
        let partial = partial_path(&target);
        write(&target.join("member/snap/db"), "old");
        write(&partial.join("member/snap/db"), "new");
        let replaced = replaced_path(&target, at());
        let s = swap_into_place(&partial, &target, &replaced).unwrap();
        assert_eq!(s.replaced.as_deref(), Some(replaced.as_path()));
        assert_eq!(fs::read_to_string(target.join("member/snap/db")).unwrap(), "new");
        assert_eq!(fs::read_to_string(replaced.join("member/snap/db")).unwrap(), "old");
        assert!(!partial.exists());
    }

    #[test]
    fn swap_into_a_missing_target_creates_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/etcd");
        let partial = tmp.path().join("p");
        write(&partial.join("member/snap/db"), "new");
        let s = swap_into_place(&partial, &target, &replaced_path(&target, at())).unwrap();
        assert_eq!(s.replaced, None);
        assert_eq!(fs::read_to_string(target.join("member/snap/db")).unwrap(), "new");
    }

    #[test]
    fn swap_refuses_to_overwrite_an_aside_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("etcd");
        let partial = partial_path(&target);
        let replaced = tmp.path().join("taken");
        write(&target.join("f"), "old");
        write(&partial.join("f"), "new");
        write(&replaced.join("f"), "keep");
        let e = swap_into_place(&partial, &target, &replaced).unwrap_err();
        assert!(e.target_untouched);
        assert!(matches!(e.error, Error::AlreadyExists { .. }), "{}", e.error);
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "old");
        assert_eq!(fs::read_to_string(replaced.join("f")).unwrap(), "keep");
    }

    #[test]
    fn a_locked_db_is_refused_and_a_free_one_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etcd");
        let db = dir.join("member/snap/db");
        write(&db, "bbolt");
        // Hold the lock the way bbolt does (flock on another open file description).
        let holder = File::open(&db).unwrap();
        holder.lock().unwrap();
        let e = check_not_in_use(&dir).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Refused { .. }), "{msg}");
        assert!(msg.contains(&dir.display().to_string()) && msg.contains("locked"), "{msg}");
        holder.unlock().unwrap();

        let lock = check_not_in_use(&dir).unwrap();
        // While kdr holds it, a would-be etcd cannot take the lock.
        let other = File::open(&db).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(lock);
        other.try_lock().unwrap();
    }

    #[test]
    fn data_dir_comes_from_flags_then_environment() {
        let args = |a: &[&'static str]| a.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        assert_eq!(
            data_dir_of(&args(&["etcd", "--data-dir=/var/lib/etcd"]), b"").as_deref(),
            Some("/var/lib/etcd")
        );
        assert_eq!(data_dir_of(&args(&["etcd", "--data-dir", "/d"]), b"").as_deref(), Some("/d"));
        assert_eq!(data_dir_of(&args(&["etcd", "-data-dir=/d"]), b"").as_deref(), Some("/d"));
        assert_eq!(data_dir_of(&args(&["etcd", "--data-dir-x=/d"]), b""), None);
        assert_eq!(data_dir_of(&args(&["etcd"]), b"A=1\0ETCD_DATA_DIR=/e\0").as_deref(), Some("/e"));
        assert_eq!(data_dir_of(&args(&["etcd"]), b"A=1"), None);
    }

    #[test]
    fn an_etcd_process_naming_the_dir_is_refused_even_without_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etcd");
        fs::create_dir_all(&dir).unwrap();
        // A process named etcd whose environment names the dir (as kubelet restarting a
        // crash-looping etcd would have), that has not opened the db.
        let mut child = std::process::Command::new("bash")
            .args(["-c", "exec -a etcd sleep 30"])
            .env("ETCD_DATA_DIR", &dir)
            .spawn()
            .unwrap();
        let mut refused = None;
        for _ in 0..50 {
            if let Err(e) = check_not_in_use(&dir) {
                refused = Some(e);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let e = refused.expect("refused while the etcd process runs").to_string();
        assert!(e.contains(&format!("process {}", child.id())), "{e}");
        check_not_in_use(&dir).unwrap();
    }

    #[test]
    fn missing_and_empty_dirs_are_not_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        check_not_in_use(&tmp.path().join("none")).unwrap();
        check_not_in_use(tmp.path()).unwrap();
    }

    #[test]
    fn match_owner_is_a_no_op_for_the_same_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        write(&a.join("member/x"), "x");
        match_owner(&a, tmp.path()).unwrap();
        assert!(available_bytes(tmp.path()).unwrap() > 0);
    }
}
