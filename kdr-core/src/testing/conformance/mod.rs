//! Conformance suites: the behaviour every implementation of a trait must show. Each real
//! implementation runs its suite against a real server; each fake runs it too.
use std::collections::BTreeMap;

pub mod control_plane;
pub mod etcd_restorer;
pub mod fencer;
pub mod health_probe;
pub mod node_remote;
pub mod snapshot_store;
pub mod state_store;

/// What a test can see of a node that an implementation acts on (the [`fencer`] and
/// [`control_plane`] suites compare it before and after a call): its files and the side-effecting
/// commands recorded on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Every file the implementation could change, path to a digest of its content.
    pub files: BTreeMap<String, String>,
    /// The side-effecting commands run on the node so far, in order (recording stand-ins' calls,
    /// a fake's events); reads need not appear.
    pub calls: Vec<String>,
}

impl NodeView {
    /// The files of `self` whose content is nowhere in `later`: deleted (or overwritten), not
    /// moved aside.
    pub fn lost_in(&self, later: &NodeView) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, digest)| !later.files.values().any(|d| d == *digest))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

/// The type name at the head of `x`'s `Debug` (`KubeadmInit`, `SshFencer`): what panics name,
/// without the implementation's whole state.
pub(crate) fn short(x: &dyn std::fmt::Debug) -> String {
    let shown = format!("{x:?}");
    shown.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default().to_owned()
}
