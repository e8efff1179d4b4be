//! Retention: which complete sets to keep, as a pure function ([`plan`]) over manifests and
//! `now`, and [`prune`], which applies it to a store and sweeps incomplete sets.
//!
//! The rules are restic's and borg's: keep the `last` N newest sets; then, for each of
//! hourly/daily/weekly/monthly, keep the newest set of each of the N most recent periods (UTC
//! hours, days, ISO weeks, months) that have a set. A set is kept if any rule keeps it.
//! Whatever the policy, the newest complete set is never deleted, and neither is a set that
//! claims to be from the future (a skewed clock is not a reason to lose data). Applying a plan
//! and planning again deletes nothing more (idempotent).
//!
//! Incomplete sets (objects without a manifest) are swept only once they are older than a grace
//! period, so a backup still uploading is never touched by a concurrent prune.
use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::{Manifest, SnapshotId, SnapshotStore};
use crate::error::Result;

/// How many sets to keep per rule. Zero turns a rule off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The N newest sets (default 7).
    pub keep_last: u32,
    /// The newest set of each of the N most recent hours with a set (default 24).
    pub keep_hourly: u32,
    /// ... days (default 7).
    pub keep_daily: u32,
    /// ... ISO weeks (default 4).
    pub keep_weekly: u32,
    /// ... months (default 6).
    pub keep_monthly: u32,
    /// Incomplete sets younger than this many minutes are left alone (default 360: six hours).
    pub incomplete_grace_minutes: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            keep_last: 7,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            incomplete_grace_minutes: 360,
        }
    }
}

/// Why a set is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepReason {
    /// The newest complete set (always kept).
    Newest,
    /// Among the last N.
    Last,
    /// Newest of its hour.
    Hourly,
    /// Newest of its day.
    Daily,
    /// Newest of its ISO week.
    Weekly,
    /// Newest of its month.
    Monthly,
    /// Created after `now` (clock skew): never deleted.
    Future,
}

/// What [`plan`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// Kept sets, newest first, with every reason that keeps them.
    pub keep: Vec<(SnapshotId, Vec<KeepReason>)>,
    /// Sets to delete, newest first.
    pub delete: Vec<SnapshotId>,
}

/// Decides which complete sets to keep (see the [module docs](self)). Pure: no I/O, no clock.
pub fn plan(manifests: &[Manifest], policy: &RetentionPolicy, now: DateTime<Utc>) -> RetentionPlan {
    let mut sets: Vec<(DateTime<Utc>, &SnapshotId)> =
        manifests.iter().map(|m| (m.created_at, &m.id)).collect();
    sets.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(a.1)));
    sets.dedup_by(|a, b| a.1 == b.1);
    let mut reasons: BTreeMap<usize, Vec<KeepReason>> = BTreeMap::new();
    let mut keep = |i: usize, r: KeepReason| reasons.entry(i).or_default().push(r);
    if !sets.is_empty() {
        keep(0, KeepReason::Newest);
    }
    for (i, (t, _)) in sets.iter().enumerate() {
        if *t > now {
            keep(i, KeepReason::Future);
        }
    }
    for i in 0..sets.len().min(policy.keep_last as usize) {
        keep(i, KeepReason::Last);
    }
    type PeriodFn = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);
    let rules: [(u32, KeepReason, PeriodFn); 4] = [
        (policy.keep_hourly, KeepReason::Hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
        (policy.keep_daily, KeepReason::Daily, |t| (t.year(), t.ordinal(), 0, 0)),
        (policy.keep_weekly, KeepReason::Weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        (policy.keep_monthly, KeepReason::Monthly, |t| (t.year(), t.month(), 0, 0)),
    ];
    for (count, reason, period) in rules {
        let mut seen = HashSet::new();
        for (i, (t, _)) in sets.iter().enumerate() {
            if seen.len() >= count as usize {
                break;
            }
            // Newest first: the first set met in a period is that period's newest.
            if seen.insert(period(t)) {
                keep(i, reason);
            }
        }
    }
    let mut out = RetentionPlan::default();
    for (i, (_, id)) in sets.iter().enumerate() {
        match reasons.remove(&i) {
            Some(mut r) => {
                r.sort();
                r.dedup();
                out.keep.push(((*id).clone(), r));
            }
            None => out.delete.push((*id).clone()),
        }
    }
    out
}

/// What [`prune`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The retention decision for complete sets.
    pub plan: RetentionPlan,
    /// Incomplete sets swept (older than the grace period), with why they are incomplete.
    pub incomplete: Vec<(String, String)>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

/// Applies `policy` to `store`: deletes the sets [`plan`] does not keep and sweeps incomplete
/// sets older than the grace period. With `dry_run`, only reports.
pub async fn prune(
    store: &dyn SnapshotStore,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport> {
    let manifests = store.list().await?;
    let decided = plan(&manifests, policy, now);
    let grace = Duration::minutes(i64::from(policy.incomplete_grace_minutes));
    let incomplete: Vec<(String, String)> = store
        .list_incomplete()
        .await?
        .into_iter()
        // Only kdr-shaped ids, only when old enough: never an upload in progress.
        .filter(|s| SnapshotId::parse(&s.id).map(|id| id.created() + grace < now).unwrap_or(false))
        .map(|s| (s.id, s.reason))
        .collect();
    if !dry_run {
        for id in &decided.delete {
            tracing::info!(%id, "pruning backup set");
            store.delete(id.as_str()).await?;
        }
        for (id, reason) in &incomplete {
            tracing::info!(%id, %reason, "sweeping incomplete backup set");
            store.delete(id).await?;
        }
    }
    Ok(PruneReport { plan: decided, incomplete, dry_run })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::testing::conformance::snapshot_store::sample_manifest;

    fn at(t: DateTime<Utc>, n: usize) -> Manifest {
        let id = SnapshotId::parse(&format!("{}-{n:08x}", t.format("%Y%m%dT%H%M%SZ"))).unwrap();
        sample_manifest(id, vec![])
    }

    fn none() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            incomplete_grace_minutes: 0,
        }
    }

    #[test]
    fn newest_is_kept_even_with_an_empty_policy() {
        let base = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let sets: Vec<_> = (0..5).map(|i| at(base + Duration::hours(i), i as usize)).collect();
        let p = plan(&sets, &none(), base + Duration::days(1));
        assert_eq!(p.keep, vec![(sets[4].id.clone(), vec![KeepReason::Newest])]);
        assert_eq!(p.delete.len(), 4);
        assert_eq!(p.delete[0], sets[3].id, "newest first");
    }

    #[test]
    fn buckets_keep_the_newest_of_each_period() {
        // Every 6 hours for 10 days.
        let base = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let sets: Vec<_> = (0..40).map(|i| at(base + Duration::hours(6 * i), i as usize)).collect();
        let policy = RetentionPolicy { keep_last: 2, keep_daily: 3, ..none() };
        let p = plan(&sets, &policy, base + Duration::days(11));
        let kept: Vec<_> = p.keep.iter().map(|(id, _)| id.clone()).collect();
        // Newest two (day 10, 18:00 and 12:00), plus the newest of days 10, 9 and 8 (18:00 each).
        assert_eq!(
            kept,
            vec![sets[39].id.clone(), sets[38].id.clone(), sets[35].id.clone(), sets[31].id.clone()]
        );
        assert_eq!(p.keep[0].1, vec![KeepReason::Newest, KeepReason::Last, KeepReason::Daily]);
        assert_eq!(p.keep[2].1, vec![KeepReason::Daily]);
        assert_eq!(p.delete.len(), 36);
    }

    #[test]
    fn future_sets_are_never_deleted() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
        let sets = vec![
            at(now + Duration::days(2), 1),
            at(now + Duration::days(1), 2),
            at(now - Duration::days(1), 3),
        ];
        let p = plan(&sets, &none(), now);
        assert_eq!(p.keep.len(), 2);
        assert_eq!(p.delete, vec![sets[2].id.clone()]);
    }

    #[tokio::test]
    async fn prune_deletes_and_sweeps_only_old_incomplete_sets() {
        use crate::snapshot::{ObjectStoreSnapshotStore, StoreOptions};
        use crate::testing::conformance::snapshot_store::stream_of;
        let store = ObjectStoreSnapshotStore::from_url("memory://", &StoreOptions::default()).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 5, 10, 12, 0, 0).unwrap();
        for i in 0..3 {
            store.commit(&at(now - Duration::days(3 - i), i as usize)).await.unwrap();
        }
        let old = SnapshotId::new(now - Duration::days(1));
        let fresh = SnapshotId::new(now - Duration::minutes(5));
        store.put_object(&old, "etcd.db", stream_of(b"partial", 4)).await.unwrap();
        store.put_object(&fresh, "etcd.db", stream_of(b"uploading", 4)).await.unwrap();
        let policy = RetentionPolicy { keep_last: 1, ..none() };
        let policy = RetentionPolicy { incomplete_grace_minutes: 60, ..policy };

        let dry = prune(&store, &policy, now, true).await.unwrap();
        assert_eq!(dry.plan.delete.len(), 2);
        assert_eq!(dry.incomplete.len(), 1);
        assert_eq!(store.list().await.unwrap().len(), 3, "dry run deletes nothing");

        let done = prune(&store, &policy, now, false).await.unwrap();
        assert_eq!(done.incomplete[0].0, old.as_str());
        assert_eq!(store.list().await.unwrap().len(), 1);
        let left: Vec<_> = store.list_incomplete().await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(left, vec![fresh.to_string()], "an upload in progress is left alone");
    }

    proptest! {
        #[test]
        fn retention_invariants(
            offsets in proptest::collection::vec(0i64..(90 * 24 * 60), 0..60),
            last in 0u32..5, hourly in 0u32..6, daily in 0u32..6, weekly in 0u32..4, monthly in 0u32..4,
        ) {
            let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let sets: Vec<_> = offsets.iter().enumerate().map(|(i, m)| at(base + Duration::minutes(*m), i)).collect();
            let policy = RetentionPolicy { keep_last: last, keep_hourly: hourly, keep_daily: daily, keep_weekly: weekly, keep_monthly: monthly, incomplete_grace_minutes: 0 };
            let now = base + Duration::days(100);
            let p = plan(&sets, &policy, now);
            // Partition: every set exactly once.
            let kept: HashSet<_> = p.keep.iter().map(|(id, _)| id.clone()).collect();
            let deleted: HashSet<_> = p.delete.iter().cloned().collect();
            prop_assert!(kept.is_disjoint(&deleted));
            prop_assert_eq!(kept.len() + deleted.len(), sets.len());
            // The newest is never deleted.
            if let Some(newest) = sets.iter().max_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id))) {
                prop_assert!(kept.contains(&newest.id));
            }
            // keep_last keeps the N newest.
            let mut by_time = sets.clone();
            by_time.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
            for m in by_time.iter().take(last as usize) {
                prop_assert!(kept.contains(&m.id));
            }
            // At most the sum of the rules (+1 for the newest).
            prop_assert!(kept.len() as u32 <= 1 + last + hourly + daily + weekly + monthly);
            // Idempotent: planning over what is kept deletes nothing.
            let survivors: Vec<_> = sets.iter().filter(|m| kept.contains(&m.id)).cloned().collect();
            prop_assert!(plan(&survivors, &policy, now).delete.is_empty());
        }
    }
}
