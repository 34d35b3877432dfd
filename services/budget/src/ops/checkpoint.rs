//! Signed checkpoints of the pools' ledger heads: made on demand (`CreateCheckpoint`, idempotent
//! by request id like every change) and on a schedule, and published as `ledger.checkpoint`
//! events through an outbox.
//!
//! The protocol, in short:
//! - A checkpoint signs the head read in the transaction that stores it: the pool's last entry
//!   (immutable) and the counters after it. A head already signed by the current key is not
//!   signed again: the latest checkpoint of that key is the answer (`created` false), so the
//!   schedule signs only pools whose head moved.
//! - Two replicas signing one head at once store one checkpoint (unique pool, sequence and key;
//!   the second insert does nothing and reads the first).
//! - Publishing is an outbox: a checkpoint without a `checkpoint_publications` row is sent to
//!   the notification service after each checkpoint and every [`PUBLISH_RETRY_MS`], with an
//!   event id derived from its pool, sequence and key, so that retries and replicas converge
//!   on one event. Money never waits for it: the writers do not know checkpoints exist.

use std::sync::Arc;

use futures::future::BoxFuture;
use prost::Message;
use subsidy_common::RequestId;
use subsidy_common::audit;
use subsidy_common::idempotency;

use super::{Budget, Opened, Who};
use crate::domain::checkpoint::{CheckpointSigner, Head};
use crate::error::BudgetError;
use crate::storage::checkpoints::{self, StoredCheckpoint};

/// How often unpublished checkpoints are sent again, in milliseconds.
pub const PUBLISH_RETRY_MS: u64 = 5_000;
/// Checkpoints published per round.
pub const PUBLISH_BATCH: i64 = 100;

/// Where checkpoints are published: the notification service (a trait because it is an
/// external boundary; tests record instead).
pub trait Publisher: Send + Sync {
    /// Publishes one checkpoint's event; `Err` says why it was not accepted (it is retried).
    fn publish<'a>(&'a self, checkpoint: &'a StoredCheckpoint)
    -> BoxFuture<'a, Result<(), String>>;
}

/// The signing side of the budget: the key, and the bell that wakes the publisher.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    /// The key; `None`: checkpoints are disabled.
    pub signer: Option<Arc<CheckpointSigner>>,
    /// Rung when a checkpoint was made.
    pub made: Arc<tokio::sync::Notify>,
}

impl Budget {
    /// The budget, signing checkpoints with `signer`.
    pub fn with_checkpoint_signer(mut self, signer: CheckpointSigner) -> Self {
        self.checkpoints.signer = Some(Arc::new(signer));
        self
    }

    /// The checkpoint signer, if one is configured.
    pub fn checkpoint_signer(&self) -> Option<&CheckpointSigner> {
        self.checkpoints.signer.as_deref()
    }

    /// Rung whenever a checkpoint is made.
    pub fn checkpoint_made(&self) -> Arc<tokio::sync::Notify> {
        self.checkpoints.made.clone()
    }

    /// Signs `pool_id`'s head unless the current key signed it already (idempotent by
    /// `request_id`); `respond` builds the stored response from the checkpoint and whether it
    /// was made now.
    pub async fn create_checkpoint<R: Message + Default>(
        &self,
        pool_id: &str,
        request_id: &RequestId,
        fingerprint: &str,
        who: &Who,
        respond: impl FnOnce(&StoredCheckpoint, bool) -> R,
    ) -> Result<R, BudgetError> {
        let signer = self
            .checkpoints
            .signer
            .clone()
            .ok_or(BudgetError::CheckpointsDisabled)?;
        let (mut tx, stored_id) = match self
            .open_request::<R>(request_id, "CreateCheckpoint", fingerprint, who)
            .await?
        {
            Opened::Replay(response) => return Ok(response),
            Opened::Fresh(tx, stored_id) => (tx, stored_id),
        };
        let head = checkpoints::head(&mut tx, pool_id, self.store.now_sql())
            .await?
            .ok_or_else(|| BudgetError::PoolNotFound {
                pool_id: pool_id.to_owned(),
            })?;
        let (stored, created) = sign_unless_signed(&mut tx, &signer, head).await?;
        let response = respond(&stored, created);
        idempotency::store_response(&mut tx, &stored_id, &response).await?;
        if let Some(record) = &who.audit {
            let record = record.with_targets(&[pool_id]);
            audit::append(&mut tx, &[record], stored.checkpoint.head.created_us).await?;
        }
        tx.commit().await?;
        if created {
            self.checkpoints.made.notify_one();
        }
        Ok(response)
    }

    /// Signs the head of every pool that moved since the current key last signed it; returns
    /// how many checkpoints were made (0 when checkpoints are disabled).
    pub async fn checkpoint_moved_pools(&self) -> Result<usize, BudgetError> {
        let Some(signer) = self.checkpoints.signer.clone() else {
            return Ok(0);
        };
        let mut made = 0;
        for pool_id in checkpoints::pool_ids(&self.store.db().pool).await? {
            let mut tx = self.store.begin().await?;
            let Some(head) = checkpoints::head(&mut tx, &pool_id, self.store.now_sql()).await?
            else {
                continue;
            };
            let (_, created) = sign_unless_signed(&mut tx, &signer, head).await?;
            tx.commit().await?;
            made += usize::from(created);
        }
        if made > 0 {
            self.checkpoints.made.notify_one();
        }
        Ok(made)
    }

    /// Publishes checkpoints not yet accepted, oldest first, stopping at the first refusal
    /// (retried later); returns how many were published.
    pub async fn publish_checkpoints(
        &self,
        publisher: &dyn Publisher,
    ) -> Result<usize, BudgetError> {
        let pending = checkpoints::unpublished(&self.store.db().pool, PUBLISH_BATCH).await?;
        let mut published = 0;
        for stored in &pending {
            if let Err(why) = publisher.publish(stored).await {
                tracing::warn!(
                    pool_id = %stored.checkpoint.head.pool_id,
                    sequence = stored.checkpoint.head.sequence,
                    error = %why,
                    "a checkpoint was not published; it is sent again later"
                );
                break;
            }
            let mut tx = self.store.begin().await?;
            checkpoints::mark_published(&mut tx, stored.checkpoint_id, self.store.now_sql())
                .await?;
            tx.commit().await?;
            published += 1;
        }
        Ok(published)
    }

    /// Checkpoints after `after_id` in order of creation, optionally of one pool.
    pub async fn list_checkpoints(
        &self,
        pool_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredCheckpoint>, BudgetError> {
        Ok(checkpoints::list_page(&self.store.db().pool, pool_id, after_id, limit).await?)
    }
}

/// The latest checkpoint of `head`'s pool by `signer` when it signed this sequence already,
/// otherwise a new one, stored; and whether it is new.
async fn sign_unless_signed(
    tx: &mut crate::storage::Tx,
    signer: &CheckpointSigner,
    head: Head,
) -> Result<(StoredCheckpoint, bool), BudgetError> {
    let key_id = signer.public_key().key_id();
    if let Some(latest) = checkpoints::latest(tx, &head.pool_id, key_id).await?
        && latest.checkpoint.head.sequence == head.sequence
    {
        return Ok((latest, false));
    }
    let stored = checkpoints::insert(tx, &signer.sign(head)).await?;
    Ok((stored, true))
}
