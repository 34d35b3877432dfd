//! Per-pool group commit: every reserve, commit, release and expiry of one pool goes to that
//! pool's writer, a task that takes everything that queued while its previous batch was in
//! flight (at most [`BATCH_JOBS_MAX`]) and applies it in one transaction. An idle writer takes
//! the first job at once, so a lone caller waits for no one; under load the lock and the fsync
//! are paid once per batch instead of once per call.
//!
//! The writer applies each batch in a task of its own: if that task panics, the callers of the
//! batch are answered (their reply channels close) and the writer goes on with the next batch.
//! Several processes may write one pool: the pool row's lock orders their batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::batch::{self, Accounting, Answer, Job};
use crate::error::BudgetError;
use crate::storage::{Store, pools};

/// Most jobs applied in one batch.
pub const BATCH_JOBS_MAX: usize = 512;
/// Messages of panicked batches kept for [`Writers::panics`].
const PANICS_KEPT_MAX: usize = 100;
/// Most jobs waiting for one pool's writer; further callers wait for room.
pub const QUEUE_JOBS_MAX: usize = 8_192;

/// The writers of the pools this process has written to.
#[derive(Debug)]
pub struct Writers {
    store: Store,
    accounting: Accounting,
    queues: Mutex<HashMap<String, mpsc::Sender<Job>>>,
    panics: Arc<Mutex<Vec<String>>>,
}

impl Writers {
    /// No writer yet; they start on first use.
    pub fn new(store: Store, accounting: Accounting) -> Self {
        Writers {
            store,
            accounting,
            queues: Mutex::new(HashMap::new()),
            panics: Arc::default(),
        }
    }

    /// Sends `job` to the writer of `pool_id` and waits for its answer. A pool that does not
    /// exist gets no writer.
    pub async fn submit(
        self: &Arc<Self>,
        pool_id: &str,
        job: impl FnOnce(oneshot::Sender<Result<Answer, BudgetError>>) -> Job,
    ) -> Result<Answer, BudgetError> {
        let (reply, answer) = oneshot::channel();
        let job = job(reply);
        #[cfg(feature = "test-naive")]
        if self.accounting == Accounting::Naive {
            // The naive variant has no writer: every call is its own batch, racing the others.
            let (store, panics) = (self.store.clone(), self.panics.clone());
            let pool_id = pool_id.to_owned();
            tokio::spawn(async move {
                apply_recording_panics(store, pool_id, vec![job], Accounting::Naive, panics).await
            });
            return answer.await.unwrap_or(Err(BudgetError::WriterStopped));
        }
        let queue = self.queue(pool_id).await?;
        if queue.send(job).await.is_err() {
            return Err(BudgetError::WriterStopped);
        }
        answer.await.unwrap_or(Err(BudgetError::WriterStopped))
    }

    async fn queue(self: &Arc<Self>, pool_id: &str) -> Result<mpsc::Sender<Job>, BudgetError> {
        if let Some(queue) = self.lookup(pool_id) {
            return Ok(queue);
        }
        // Pools are never deleted: once seen, a pool keeps its writer.
        if !pools::exists(&self.store, pool_id).await? {
            return Err(BudgetError::PoolNotFound {
                pool_id: pool_id.to_owned(),
            });
        }
        let mut queues = self
            .queues
            .lock()
            .expect("the writers' map is never poisoned");
        let queue = queues.entry(pool_id.to_owned()).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_JOBS_MAX);
            tokio::spawn(run(
                self.store.clone(),
                pool_id.to_owned(),
                receiver,
                self.accounting,
                self.panics.clone(),
            ));
            sender
        });
        Ok(queue.clone())
    }

    /// The messages of the batches that panicked in this process (a broken invariant
    /// assertion, say), oldest first: operators see them in the log; tests read them here.
    pub fn panics(&self) -> Vec<String> {
        self.panics
            .lock()
            .expect("the panics are never poisoned")
            .clone()
    }

    fn lookup(&self, pool_id: &str) -> Option<mpsc::Sender<Job>> {
        self.queues
            .lock()
            .expect("the writers' map is never poisoned")
            .get(pool_id)
            .cloned()
    }
}

/// The writer of one pool: batch, apply, repeat, until every sender is gone.
async fn run(
    store: Store,
    pool_id: String,
    mut queue: mpsc::Receiver<Job>,
    accounting: Accounting,
    panics: Arc<Mutex<Vec<String>>>,
) {
    let mut sizes = BatchSizes::default();
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < BATCH_JOBS_MAX {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        sizes.record(jobs.len());
        apply_recording_panics(
            store.clone(),
            pool_id.clone(),
            jobs,
            accounting,
            panics.clone(),
        )
        .await;
    }
}

/// Applies one batch in a task of its own; a panic there (a broken invariant assertion, say)
/// is logged and kept, and the batch's callers are answered by their closed reply channels.
async fn apply_recording_panics(
    store: Store,
    pool_id: String,
    jobs: Vec<Job>,
    accounting: Accounting,
    panics: Arc<Mutex<Vec<String>>>,
) {
    let pool = pool_id.clone();
    let applied = tokio::spawn(async move { batch::apply(&store, &pool, jobs, accounting).await });
    if let Err(failure) = applied.await {
        let message = match failure.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned()),
            Err(failure) => failure.to_string(),
        };
        tracing::error!(pool = %pool_id, error = %message, "a batch panicked; the writer goes on");
        let mut panics = panics.lock().expect("the panics are never poisoned");
        if panics.len() < PANICS_KEPT_MAX {
            panics.push(message);
        }
    }
}

/// A tally of batch sizes, logged now and then for operators.
#[derive(Debug, Default)]
struct BatchSizes {
    batches: u64,
    jobs: u64,
}

impl BatchSizes {
    /// Batches between two log lines.
    const LOG_EVERY: u64 = 10_000;

    fn record(&mut self, size: usize) {
        self.batches += 1;
        self.jobs += size as u64;
        if self.batches.is_multiple_of(Self::LOG_EVERY) {
            tracing::debug!(
                batches = self.batches,
                mean_jobs = self.jobs as f64 / self.batches as f64,
                "group commit"
            );
        }
    }
}
