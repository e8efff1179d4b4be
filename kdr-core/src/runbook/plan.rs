//! The whole promotion as data: what `kdr failover --dry-run` prints.
//!
//! A [`Plan`] is built without changing anything (no claim, no journal, no lock, no command that
//! writes): it reads the journal dir, the newest claim, the chosen backup set's manifest and what
//! each step says it would do.
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journal::{StepKind, StepStatus};
use crate::control_plane::NodeIdentity;

/// The backup set a promotion restores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Its id.
    pub id: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// The cluster it came from.
    pub cluster_name: String,
    /// The etcd member and version it was taken from.
    pub source: String,
    /// Keys in it.
    pub total_keys: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
}

/// What the runbook will do with a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepAction {
    /// Run it.
    Run,
    /// Skip it: the journal records it finished.
    SkipDone,
    /// It was interrupted or failed: run its safety check, then resume it.
    Resume,
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Which step.
    pub step: StepKind,
    /// Whether it is destructive (never repeated once finished).
    pub destructive: bool,
    /// What the journal says about it, if it was started before.
    pub journal_status: Option<StepStatus>,
    /// What the runbook will do with it.
    pub action: StepAction,
    /// Hosts, commands, paths: one line each.
    pub details: Vec<String>,
}

/// The whole promotion. `Display` renders it for humans; it serialises to JSON for tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The epoch that will be claimed.
    pub epoch: u64,
    /// Why this epoch (resumed journal, `--epoch`, or the newest claim + 1).
    pub epoch_source: String,
    /// Who claims it.
    pub holder: String,
    /// The node being promoted.
    pub this_node: NodeIdentity,
    /// The node it replaces.
    pub old_primary: NodeIdentity,
    /// The backup set to restore.
    pub snapshot: SnapshotSummary,
    /// The journal file.
    pub journal: String,
    /// The steps, in order.
    pub steps: Vec<PlannedStep>,
    /// Things the operator should read.
    pub notes: Vec<String>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Promotion plan (dry run: nothing was changed)")?;
        writeln!(f, "  epoch:       {} ({})", self.epoch, self.epoch_source)?;
        writeln!(f, "  holder:      {}", self.holder)?;
        writeln!(f, "  new primary: {} ({})", self.this_node.name, self.this_node.address)?;
        writeln!(f, "  old primary: {} ({})", self.old_primary.name, self.old_primary.address)?;
        let s = &self.snapshot;
        writeln!(
            f,
            "  snapshot:    {} (taken {}, cluster {}, {}, {} keys, {} bytes stored)",
            s.id,
            s.created_at.to_rfc3339(),
            s.cluster_name,
            s.source,
            s.total_keys,
            s.stored_bytes
        )?;
        writeln!(f, "  journal:     {}", self.journal)?;
        for (i, step) in self.steps.iter().enumerate() {
            let action = match step.action {
                StepAction::Run => "run",
                StepAction::SkipDone => "skip: done",
                StepAction::Resume => "resume after its safety check",
            };
            writeln!(
                f,
                "\n{}. {} [{}]{} — {action}",
                i + 1,
                step.step.title(),
                step.step.name(),
                if step.destructive { " (destructive)" } else { "" }
            )?;
            for d in &step.details {
                writeln!(f, "     {d}")?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "\nNotes:")?;
            for n in &self.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}
