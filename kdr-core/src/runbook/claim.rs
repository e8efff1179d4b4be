//! Claiming a promotion epoch in the object store.
//!
//! The first step of a promotion writes `<prefix>/claims/epoch-<N>.json` with a conditional
//! create (`PutMode::Create`, S3's `If-None-Match: *`). The store decides: of any number of
//! standbys racing for epoch N, exactly one create succeeds, and every other gets
//! "already exists" and refuses to promote. Nothing home-made (no lease, no lock server) is
//! involved, so this scales to several standbys.
//!
//! The claims also order the epochs: before claiming, the runbook reads the newest claim and
//! refuses an epoch older than it or claimed by another run, and a standby's detector raises its
//! own epoch to [`ClaimStore::newest_epoch`], so a rebuilt standby never asks for an epoch already
//! claimed. The newest claim also tells an old primary that comes back that it has been replaced
//! (its self-fence guard reads [`ClaimStore::newest`]). Where the claims live is derived once,
//! [`claims_prefix`](super::claims_prefix), for the runbook and the monitor alike.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A claim on an epoch: who promotes, from where, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The promotion epoch.
    pub epoch: u64,
    /// Who promotes (the standby's configured holder name, usually its node name).
    pub holder: String,
    /// The host it runs on.
    pub host: String,
    /// The promotion's run id (a resumed run recognises its own claim by it).
    pub run_id: String,
    /// When the claim was made.
    pub claimed_at: DateTime<Utc>,
    /// The backup set the promotion restores.
    pub snapshot: Option<String>,
}

/// How a claim went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This call created the claim.
    Won,
    /// The claim already existed with the same run id: a resumed run.
    AlreadyOurs,
}

/// Claims in an object store, under a prefix. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClaimStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

fn store_err(what: String) -> impl FnOnce(object_store::Error) -> Error {
    move |e| Error::unavailable(what, e)
}

impl ClaimStore {
    /// Claims under `<prefix>/claims/` in `store` (an empty prefix: at the bucket's root).
    /// `describe` names the store in messages (no credentials).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, describe: impl Into<String>) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { "claims".to_owned() } else { format!("{prefix}/claims") };
        Self { store, prefix, describe: describe.into() }
    }

    /// The object path of epoch `epoch`'s claim.
    pub fn path(&self, epoch: u64) -> ObjectPath {
        ObjectPath::from(format!("{}/epoch-{epoch}.json", self.prefix))
    }

    /// Creates the claim for `claim.epoch`, create-only.
    ///
    /// - Created (and read back unchanged): [`ClaimOutcome::Won`].
    /// - Already there with the same `run_id`: [`ClaimOutcome::AlreadyOurs`] (a resumed run).
    /// - Already there from anyone else: [`Error::Refused`] "epoch N already claimed by HOLDER".
    /// - Store unreachable or denied: [`Error::Unavailable`]; nothing was claimed.
    pub async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome> {
        let path = self.path(claim.epoch);
        let body = serde_json::to_vec_pretty(claim).map_err(|e| Error::integrity("claim", e.to_string()))?;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(_) => {
                // Read it back: on a store whose conditional create is not atomic (check, then
                // write), a racing writer may have overwritten ours. Atomic stores always match.
                match self.get(claim.epoch).await? {
                    Some(stored) if stored.run_id == claim.run_id => Ok(ClaimOutcome::Won),
                    Some(stored) => Err(Error::refused(format!(
                        "epoch {} already claimed by {} on {} (it overwrote this claim: {} does not create \
                         atomically; use a store with conditional writes, e.g. AWS S3, MinIO, GCS, Azure)",
                        claim.epoch, stored.holder, stored.host, self.describe
                    ))),
                    None => Err(Error::integrity(
                        format!("claim {path} in {}", self.describe),
                        "created, but not found when read back",
                    )),
                }
            }
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                let existing = self.get(claim.epoch).await?.ok_or_else(|| {
                    Error::refused(format!(
                        "epoch {} is already claimed ({path} exists in {} but could not be read back)",
                        claim.epoch, self.describe
                    ))
                })?;
                if existing.run_id == claim.run_id {
                    return Ok(ClaimOutcome::AlreadyOurs);
                }
                Err(Error::refused(format!(
                    "epoch {} already claimed by {} on {} at {} (run {}): another standby is promoting or has \
                     promoted; this one stops. To promote again, use a newer epoch",
                    claim.epoch,
                    existing.holder,
                    existing.host,
                    existing.claimed_at.to_rfc3339(),
                    existing.run_id
                )))
            }
            Err(e) => {
                Err(store_err(format!("failed to claim epoch {} in {}", claim.epoch, self.describe))(e))
            }
        }
    }

    /// The claim of `epoch`, if any.
    pub async fn get(&self, epoch: u64) -> Result<Option<Claim>> {
        let path = self.path(epoch);
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(format!("failed to read claim {path} in {}", self.describe))(e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(store_err(format!("failed to read claim {path} in {}", self.describe)))?;
        let claim = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(format!("claim {path} in {}", self.describe), e.to_string()))?;
        Ok(Some(claim))
    }

    /// The highest claimed epoch's claim, if any epoch was ever claimed.
    pub async fn newest(&self) -> Result<Option<Claim>> {
        match self.max_epoch().await? {
            Some(epoch) => self.get(epoch).await,
            None => Ok(None),
        }
    }

    /// The highest claimed epoch, 0 if none (one listing, no read): what a standby's monitor
    /// feeds its detector as [`Input::ClaimSeen`](crate::failover::Input::ClaimSeen), at start-up
    /// and periodically, so that it never decides an epoch already claimed.
    pub async fn newest_epoch(&self) -> Result<u64> {
        Ok(self.max_epoch().await?.unwrap_or(0))
    }

    async fn max_epoch(&self) -> Result<Option<u64>> {
        let prefix = ObjectPath::from(self.prefix.as_str());
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err(format!("failed to list claims in {}", self.describe)))?;
        let newest = metas
            .iter()
            .filter_map(|m| {
                m.location.filename()?.strip_prefix("epoch-")?.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .max();
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn claim(epoch: u64, holder: &str, run: &str) -> Claim {
        Claim {
            epoch,
            holder: holder.into(),
            host: format!("{holder}.lan"),
            run_id: run.into(),
            claimed_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            snapshot: None,
        }
    }

    #[tokio::test]
    async fn first_wins_resume_is_ours_others_are_refused() {
        let claims = ClaimStore::new(Arc::new(InMemory::new()), "prod/", "memory://");
        assert_eq!(claims.path(3).as_ref(), "prod/claims/epoch-3.json");
        assert_eq!(claims.newest().await.unwrap(), None);
        assert_eq!(claims.newest_epoch().await.unwrap(), 0);
        assert_eq!(claims.claim(&claim(3, "master-2", "r1")).await.unwrap(), ClaimOutcome::Won);
        assert_eq!(claims.claim(&claim(3, "master-2", "r1")).await.unwrap(), ClaimOutcome::AlreadyOurs);
        let err = claims.claim(&claim(3, "master-3", "r2")).await.unwrap_err().to_string();
        assert!(err.contains("epoch 3 already claimed by master-2"), "{err}");
        claims.claim(&claim(10, "master-3", "r3")).await.unwrap();
        assert_eq!(claims.newest().await.unwrap().unwrap().holder, "master-3");
        assert_eq!(claims.newest_epoch().await.unwrap(), 10);
        assert_eq!(claims.get(4).await.unwrap(), None);
    }
}
