//! The [`EtcdRestorer`] conformance suite.
//!
//! [`run_all`] checks the trait's guarantees with a real snapshot file (`etcdctl snapshot save`
//! or kdr's backup source, with etcd's sha256 trailer): `plan` changes nothing; `restore` makes
//! a data dir holding the snapshot and returns the plan it carried out; an existing dir is
//! refused as [`Error::AlreadyExists`] and left byte for byte as it was; a snapshot whose
//! trailer does not match is refused and leaves no partial dir; a missing snapshot file is an
//! error naming it and leaves nothing. [`missing_tool_is_not_found`] checks the failure of a
//! restorer with no tool installed.
//!
//! `EtcdutlRestorer` runs it with etcdutl 3.5.16 and with etcdctl 3.4.23 (no etcdutl), each on a
//! snapshot taken from a real etcd of its version (`kdr-core/tests/conformance.rs`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::etcd::{EtcdRestorer, RestoreSpec};

fn spec(dir: PathBuf) -> RestoreSpec {
    RestoreSpec::new("conformance", "https://10.20.30.40:2380", dir)
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Runs every check of the suite: `snapshot` is a real etcd snapshot file, `work` an empty
/// scratch directory. Panics naming the broken guarantee.
pub async fn run_all(restorer: &dyn EtcdRestorer, snapshot: &Path, work: &Path) {
    plan_changes_nothing(restorer, snapshot, work).await;
    restore_makes_a_data_dir(restorer, snapshot, work).await;
    an_existing_dir_is_refused_untouched(restorer, snapshot, work).await;
    a_bad_trailer_is_refused_without_leftovers(restorer, snapshot, work).await;
    a_missing_snapshot_is_named(restorer, work).await;
}

/// `plan` runs nothing and creates nothing; it names the snapshot and the target.
pub async fn plan_changes_nothing(restorer: &dyn EtcdRestorer, snapshot: &Path, work: &Path) {
    let target = work.join("planned");
    let plan = restorer.plan(snapshot, &spec(target.clone())).await.expect("plan");
    assert!(!target.exists(), "plan must not create {}", target.display());
    assert!(
        plan.command.contains(&snapshot.display().to_string()),
        "the plan names the snapshot: {}",
        plan.command
    );
    assert!(
        plan.command.contains(&target.display().to_string()),
        "the plan names the target: {}",
        plan.command
    );
}

/// `restore` makes a member dir with the snapshot's db, and returns the plan it ran.
pub async fn restore_makes_a_data_dir(restorer: &dyn EtcdRestorer, snapshot: &Path, work: &Path) {
    let target = work.join("restored");
    let plan = restorer.restore(snapshot, &spec(target.clone())).await.expect("restore");
    let db = target.join("member/snap/db");
    assert!(db.is_file(), "restore must leave {}", db.display());
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
    assert!(plan.command.contains(&target.display().to_string()), "{}", plan.command);
    if plan.bump_revision.is_none()
        && restorer.plan(snapshot, &spec(work.join("x"))).await.unwrap().bump_revision.is_some()
    {
        panic!("restore and plan disagree about the revision bump");
    }
}

/// An existing dir is never touched: `AlreadyExists`, and every byte stays.
pub async fn an_existing_dir_is_refused_untouched(restorer: &dyn EtcdRestorer, snapshot: &Path, work: &Path) {
    let target = work.join("existing");
    std::fs::create_dir_all(target.join("member/snap")).unwrap();
    std::fs::write(target.join("member/snap/db"), b"the operator's data").unwrap();
    std::fs::write(target.join("notes"), b"keep me").unwrap();
    let before = tree(&target);
    match restorer.restore(snapshot, &spec(target.clone())).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("restoring over an existing dir must be Error::AlreadyExists, got {other:?}"),
    }
    assert_eq!(tree(&target), before, "the existing dir must be left byte for byte");
}

/// A snapshot whose sha256 trailer does not match its content is refused; nothing is left at
/// the target.
pub async fn a_bad_trailer_is_refused_without_leftovers(
    restorer: &dyn EtcdRestorer,
    snapshot: &Path,
    work: &Path,
) {
    let mut bytes = std::fs::read(snapshot).unwrap();
    assert!(bytes.len() > 4096, "the snapshot is too small to tamper with");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    let bad = work.join("tampered.db");
    std::fs::write(&bad, &bytes).unwrap();
    let target = work.join("from-tampered");
    let r = restorer.restore(&bad, &spec(target.clone())).await;
    assert!(r.is_err(), "a snapshot with a wrong trailer must be refused, got {r:?}");
    assert!(!target.exists(), "a failed restore must leave no partial dir at {}", target.display());
}

/// A snapshot file that does not exist: an error naming it; nothing created.
pub async fn a_missing_snapshot_is_named(restorer: &dyn EtcdRestorer, work: &Path) {
    let missing = work.join("no-such-snapshot.db");
    let target = work.join("from-missing");
    let e = restorer.restore(&missing, &spec(target.clone())).await.expect_err("a missing snapshot fails");
    assert!(e.to_string().contains("no-such-snapshot.db"), "the error names the snapshot: {e}");
    assert!(!target.exists(), "nothing created at {}", target.display());
}

/// A restorer without any tool installed: [`Error::NotFound`] with a hint, nothing created.
pub async fn missing_tool_is_not_found(restorer: &dyn EtcdRestorer, snapshot: &Path, work: &Path) {
    let target = work.join("no-tool");
    match restorer.restore(snapshot, &spec(target.clone())).await {
        Err(Error::NotFound { hint: Some(_), .. }) => {}
        other => panic!("no restore tool must be Error::NotFound with a hint, got {other:?}"),
    }
    assert!(!target.exists());
}
