//! The [`StateStore`] conformance suite.
//!
//! [`run_all`] checks what every store guarantees: nothing saved reads as `None`; what was saved
//! reads back equal, every latch variant included; a save replaces the previous state whole.
//! [`file_crash_safety`] checks what a store on disk guarantees besides: a save interrupted
//! before its rename (a leftover temporary file) leaves the previous state readable; a corrupt
//! or truncated file is refused as [`Error::Integrity`], never read as "not latched"; a failed
//! save keeps the previous state.
//!
//! `InMemoryStateStore` and `FileStateStore` run [`run_all`]; `FileStateStore` also runs
//! [`file_crash_safety`].
use std::path::Path;

use crate::error::Error;
use crate::failover::{Latch, PersistedState, Phase, StateStore};

/// One state per latch variant, with the other fields varied.
pub fn samples() -> Vec<PersistedState> {
    vec![
        PersistedState::default(),
        PersistedState {
            epoch: 3,
            latch: Latch::InProgress { epoch: 3, phase: Phase::Fence },
            ..Default::default()
        },
        PersistedState {
            epoch: 4,
            latch: Latch::InProgress { epoch: 4, phase: Phase::Promote },
            paused: true,
            block_pending: false,
        },
        PersistedState { epoch: 4, latch: Latch::Promoted { epoch: 4 }, paused: false, block_pending: true },
        PersistedState {
            epoch: u64::MAX,
            latch: Latch::Halted {
                epoch: u64::MAX,
                reason: "fence failed: \"ipmi\" said 'no'\nline two".into(),
            },
            paused: true,
            block_pending: true,
        },
    ]
}

/// Runs every check of the suite on an empty store; panics naming the broken guarantee.
pub fn run_all(store: &mut dyn StateStore) {
    assert_eq!(store.load().expect("an empty store loads"), None, "nothing saved reads as None");
    for state in samples() {
        store.save(&state).expect("save");
        assert_eq!(
            store.load().expect("load after save").as_ref(),
            Some(&state),
            "a saved state reads back equal"
        );
        assert_eq!(
            store.load().expect("a second load").as_ref(),
            Some(&state),
            "loading does not consume the state"
        );
    }
    // A save replaces the state whole (a pause cleared is cleared, not merged).
    let first = PersistedState { epoch: 7, paused: true, ..Default::default() };
    let second = PersistedState { epoch: 7, ..Default::default() };
    store.save(&first).unwrap();
    store.save(&second).unwrap();
    assert_eq!(store.load().unwrap(), Some(second), "the last save wins whole");
}

/// What a store at `path` (in a directory of its own) guarantees across crashes. `open` makes
/// a store at that path (called again to stand in for a restart).
pub fn file_crash_safety(path: &Path, open: &dyn Fn(&Path) -> Box<dyn StateStore>) {
    let dir = path.parent().expect("the state file has a directory");
    let saved = PersistedState { epoch: 2, latch: Latch::Promoted { epoch: 2 }, ..Default::default() };
    open(path).save(&saved).expect("save");

    // A crash between writing the temporary file and the rename: every other file in the
    // directory is a leftover; the state file still reads as the last complete save.
    for leftover in [format!("{}.tmp", path.display()), format!("{}.partial", path.display())] {
        std::fs::write(&leftover, b"{\"format\": \"kdr-detector-st").unwrap();
    }
    assert_eq!(
        open(path).load().expect("leftovers do not matter"),
        Some(saved.clone()),
        "restart after a crash mid-save"
    );
    let next = PersistedState {
        epoch: 3,
        latch: Latch::InProgress { epoch: 3, phase: Phase::Fence },
        ..Default::default()
    };
    open(path).save(&next).expect("a save after a crashed one");
    assert_eq!(open(path).load().unwrap(), Some(next.clone()));

    // A corrupt file (a flipped byte, a truncation, garbage) is refused, never read as armed.
    let good = std::fs::read(path).unwrap();
    let digit = good.iter().position(|b| *b == b'3').expect("the epoch is in the file");
    let mut flipped = good.clone();
    flipped[digit] = b'4';
    for (what, bytes) in [
        ("a flipped digit", flipped),
        ("a truncated file", good[..good.len() / 2].to_vec()),
        ("garbage", b"\x00\x01not json".to_vec()),
        ("an empty file", Vec::new()),
    ] {
        std::fs::write(path, &bytes).unwrap();
        match open(path).load() {
            Err(Error::Integrity { .. }) => {}
            other => panic!("{what} must be refused as Error::Integrity, got {other:?}"),
        }
    }

    // A save that cannot complete (its directory is read-only) fails and keeps the state.
    std::fs::write(path, &good).unwrap();
    if is_root() {
        // Root writes into read-only directories: check with a directory that is gone instead.
        let gone = dir.join("gone/state.json");
        assert!(open(&gone).save(&next).is_err(), "a save into a missing directory fails");
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        let r = open(path).save(&saved);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(r.is_err(), "a save into a read-only directory fails");
    }
    assert_eq!(open(path).load().unwrap(), Some(next), "a failed save keeps the previous state");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
