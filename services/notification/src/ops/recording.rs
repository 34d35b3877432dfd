//! Recording the outcomes of attempts, with group commit: the outcomes of attempts that finish
//! while an earlier recording is being committed are recorded together, in one transaction
//! (one commit, one fsync), instead of one transaction each. An idle recorder records at once:
//! a lone attempt waits for no one.
//!
//! Each outcome is decided exactly as on its own: its delivery's state, its attempt's number
//! and log row, its subscription's slot and failure run, and whether that subscription is now
//! a disable candidate. If a batch's transaction fails, each of its outcomes is recorded again
//! in a transaction of its own, so that one outcome the database refuses fails only itself;
//! each caller gets its own result, and the worker's retries (`RECORD_TRIES_MAX`) apply to it
//! alone. Within a batch, row locks keep the order of every transaction: the deliveries (by
//! id), then the subscriptions (by id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use subsidy_common::db::DbError;
use subsidy_common::group_commit::GroupCommit;

use super::Ops;
use super::attempts::Recorded;
use crate::domain::delivery::{Channel, DeliveryState, Next, Outcome, state_after};
use crate::domain::subscription::{SubscriptionState, is_disable_candidate};
use crate::error::NotificationError;
use crate::storage::{AttemptLog, Claimed, Store, Tx};

/// Most outcomes recorded in one transaction.
pub const RECORD_BATCH_MAX: usize = 64;

/// One finished attempt of a claimed delivery, waiting to be recorded.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The claim the attempt was made under.
    pub claim: Claimed,
    /// How long it took, ms.
    pub latency_ms: i64,
    /// How it went.
    pub outcome: Outcome,
    /// What the retry policy decided.
    pub next: Next,
    /// How long an endpoint may fail before it is disabled, ms.
    pub disable_after_ms: u64,
}

impl Finished {
    fn log(&self) -> AttemptLog<'_> {
        let (status_code, error) = match &self.outcome {
            Outcome::Succeeded { status_code } => (*status_code, ""),
            Outcome::Failed {
                status_code, error, ..
            } => (*status_code, error.as_str()),
        };
        AttemptLog {
            latency_ms: self.latency_ms,
            status_code,
            succeeded: self.outcome.succeeded(),
            error,
        }
    }
}

/// The recorder of one [`Ops`] and its clones: the group-commit writer, started on the first
/// recording (on that caller's runtime), and the count of its transactions.
#[derive(Clone, Debug, Default)]
pub(super) struct Recorder {
    writer: Arc<OnceLock<GroupCommit<Finished, Recorded>>>,
    transactions: Arc<AtomicU64>,
}

impl Ops {
    /// Records an attempt of a claimed delivery and applies `next`: a retry of a webhook whose
    /// subscription is no longer ACTIVE dead-letters instead, and when the claim was lost only
    /// the attempt is logged. A failed webhook whose endpoint has now failed for
    /// `disable_after_ms` makes its subscription a disable candidate. Attempts finishing
    /// together are recorded in one transaction (see the module documentation).
    pub async fn record_attempt(
        &self,
        claim: &Claimed,
        latency_ms: i64,
        outcome: &Outcome,
        next: Next,
        disable_after_ms: u64,
    ) -> Result<Recorded, NotificationError> {
        let finished = Finished {
            claim: claim.clone(),
            latency_ms,
            outcome: outcome.clone(),
            next,
            disable_after_ms,
        };
        let writer = self.recorder.writer.get_or_init(|| {
            let store = self.store.clone();
            let transactions = self.recorder.transactions.clone();
            GroupCommit::spawn(RECORD_BATCH_MAX, move |batch: Vec<Finished>| {
                let store = store.clone();
                let transactions = transactions.clone();
                async move { record_batch(&store, &transactions, &batch).await }
            })
        });
        Ok(writer.submit(finished).await?)
    }

    /// Transactions begun so far to record attempts (by this `Ops` and its clones): fewer
    /// than the attempts recorded when attempts finish together.
    pub fn recording_transactions(&self) -> u64 {
        self.recorder.transactions.load(Ordering::Relaxed)
    }
}

/// Records `batch` in one transaction; if that fails and the batch held more than one
/// outcome, records each in a transaction of its own. One result per outcome, in order.
async fn record_batch(
    store: &Store,
    transactions: &AtomicU64,
    batch: &[Finished],
) -> Vec<Result<Recorded, DbError>> {
    match record_together(store, transactions, batch).await {
        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
        Err(error) if batch.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(
                outcomes = batch.len(),
                %error,
                "recording a batch of attempts failed; recorded one by one"
            );
            let mut results = Vec::with_capacity(batch.len());
            for finished in batch {
                let alone = record_together(store, transactions, std::slice::from_ref(finished));
                results.push(
                    alone.await.map(|mut recorded| {
                        recorded.pop().expect("one result per recorded outcome")
                    }),
                );
            }
            results
        }
    }
}

/// Records every outcome of `batch` in one write transaction; what each one led to, in order.
async fn record_together(
    store: &Store,
    transactions: &AtomicU64,
    batch: &[Finished],
) -> Result<Vec<Recorded>, DbError> {
    let mut tx = store.db().begin_write().await?;
    transactions.fetch_add(1, Ordering::Relaxed);
    let ids: Vec<&str> = batch.iter().map(|f| f.claim.delivery_id.as_str()).collect();
    let receivers = store.receivers_in(&mut tx, &ids).await?;
    let mut by_delivery: Vec<usize> = (0..batch.len()).collect();
    by_delivery.sort_by(|&a, &b| batch[a].claim.delivery_id.cmp(&batch[b].claim.delivery_id));
    let mut settled: Vec<Option<Settled<'_>>> = vec![None; batch.len()];
    let mut logs = Vec::with_capacity(batch.len());
    // Deliveries first: the lock order of every transaction.
    for index in by_delivery {
        let finished = &batch[index];
        let Some((subscription_id, subscription_state)) =
            receivers.get(&finished.claim.delivery_id)
        else {
            return Err(DbError::Other(sqlx::Error::RowNotFound));
        };
        let receiver_active = match finished.claim.channel {
            Channel::Webhook => *subscription_state == Some(SubscriptionState::Active),
            Channel::Email => true,
        };
        let attempt = finished.log();
        let (state, attempt_number, released) = settle(
            store,
            &mut tx,
            finished,
            &attempt,
            state_after(finished.next, receiver_active),
        )
        .await?;
        logs.push((&finished.claim, attempt_number, attempt));
        settled[index] = Some(Settled {
            state,
            released,
            subscription_id,
        });
    }
    store.log_attempts(&mut tx, &logs).await?;
    // Then the subscriptions, by id (and in the order the attempts began).
    let mut webhooks: Vec<usize> = (0..batch.len())
        .filter(|&index| batch[index].claim.channel == Channel::Webhook)
        .collect();
    webhooks.sort_by_key(|&index| {
        let subscription_id = settled[index].as_ref().map(|s| s.subscription_id);
        (subscription_id, batch[index].claim.start_us)
    });
    let mut candidates: Vec<Option<String>> = vec![None; batch.len()];
    for index in webhooks {
        let finished = &batch[index];
        let Some(settled) = &settled[index] else {
            continue;
        };
        candidates[index] = count_for_subscription(
            store,
            &mut tx,
            finished,
            settled.subscription_id,
            settled.released,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(settled
        .into_iter()
        .zip(candidates)
        .map(|(settled, disable_candidate)| Recorded {
            state: settled.expect("every outcome settled").state,
            disable_candidate,
        })
        .collect())
}

/// What settling one outcome's delivery led to.
#[derive(Clone, Debug)]
struct Settled<'a> {
    state: DeliveryState,
    released: bool,
    subscription_id: &'a str,
}

/// Moves a claimed delivery to `state` (due again after `retry_ms` when retried) and counts
/// the attempt. When the claim was lost, the attempt is counted without touching the state.
/// The state the delivery is in, the attempt's number, and whether the claim held (and so
/// released its subscription's slot).
async fn settle(
    store: &Store,
    tx: &mut Tx,
    finished: &Finished,
    attempt: &AttemptLog<'_>,
    (state, retry_ms): (DeliveryState, u64),
) -> Result<(DeliveryState, i64, bool), sqlx::Error> {
    let claim = &finished.claim;
    let (status_code, error) = (attempt.status_code, attempt.error);
    let finished_attempt = store
        .finish_attempt(tx, claim, status_code, error, state, retry_ms)
        .await?;
    Ok(match finished_attempt {
        Some(attempt_number) => (state, attempt_number, true),
        None => {
            let (attempt_number, state) = store
                .count_lost_attempt(tx, &claim.delivery_id, status_code, error)
                .await?;
            (state, attempt_number, false)
        }
    })
}

/// Counts a webhook attempt against its subscription (its slot and its failure run); the
/// subscription when it is now a disable candidate.
async fn count_for_subscription(
    store: &Store,
    tx: &mut Tx,
    finished: &Finished,
    subscription_id: &str,
    released: bool,
) -> Result<Option<String>, sqlx::Error> {
    let succeeded = finished.outcome.succeeded();
    let run = store
        .count_webhook_attempt(
            tx,
            subscription_id,
            released,
            succeeded,
            finished.claim.start_us,
        )
        .await?;
    Ok(run
        .filter(|run| {
            is_disable_candidate(
                succeeded,
                run.state,
                run.failing_since_us,
                run.now_us,
                finished.disable_after_ms,
            )
        })
        .map(|_| subscription_id.to_owned()))
}
