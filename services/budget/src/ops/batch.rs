//! Applying one batch of a pool's operations in one transaction.
//!
//! 1. Begin (SQLite: `BEGIN IMMEDIATE`) and lock the pool row (`FOR UPDATE`), reading its
//!    counters, its ledger head and the database's time.
//! 2. Read every stored request id among the batch's in one statement. A key stored before is
//!    a replay (same operation and fingerprint) or a reuse (anything else); a second job with
//!    the key of an earlier job of this batch follows that job and gets its answer.
//! 3. Read the reservations and usages the jobs name, and the pool's due holds if a job
//!    expires them.
//! 4. Decide every job in arrival order in the domain (`Batch`): a refusal refuses only its job.
//! 5. Write what was decided in set-based statements: the pool, the usages, the reservations,
//!    the ledger, and the keys of the jobs that succeeded with their responses (each key written
//!    once; a refused job stores nothing). If another transaction (another pool's batch, or
//!    another replica) stored one of those keys after step 2, its `INSERT` waited for that
//!    transaction and found the key: the batch is rolled back and decided again from step 1,
//!    and then sees the key as stored. Commit: one fsync.
//! 6. Answer every job, only now that the batch is durable.
//!
//! A database failure rolls the whole batch back and every job is answered UNAVAILABLE; their
//! retries take effect once. A failure that is not the database being away (a constraint, a
//! bug) is retried job by job, so that one poisonous job fails only itself.

use std::collections::{BTreeSet, HashMap};

use subsidy_common::audit::AuditRecord;
use tokio::sync::oneshot;

use crate::domain::{
    Actor, Batch, ClosePool, Commit, Extend, Pool, Release, Reservation, Reserve, Revoke,
};
use crate::error::BudgetError;
use crate::storage::keys::{self, Key};
use crate::storage::{Store, pools, reservations, usage};

/// What a successful job produced, for its response.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// The reservation made or settled.
    Reservation(&'a Reservation),
    /// The pool changed.
    Pool(&'a Pool),
}

/// Builds the replayable response of a successful job, encoded.
pub type Respond = Box<dyn Fn(Subject<'_>) -> Vec<u8> + Send + Sync>;

/// What a job asks of its pool.
pub enum Op {
    /// Hold money.
    Reserve(Reserve),
    /// Commit a hold.
    Commit(Commit),
    /// Release a hold.
    Release(Release),
    /// Extend a hold.
    Extend(Extend),
    /// Revoke a commitment.
    Revoke(Revoke),
    /// Expire up to this many due holds.
    Expire(i64),
    /// Close the pool to new holds.
    Close(ClosePool),
}

/// What a job is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The encoded response (fresh or replayed).
    Response(Vec<u8>),
    /// The number of holds expired.
    Expired(i64),
}

/// One caller's operation, on its way through the writer.
pub struct Job {
    /// The operation.
    pub op: Op,
    /// Its idempotency key (none for expiry).
    pub key: Option<Key>,
    /// Who asked.
    pub actor: Actor,
    /// The audit record the change writes (a call from outside), its targets filled in here.
    pub audit: Option<AuditRecord>,
    /// How to build the stored response.
    pub respond: Respond,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Answer, BudgetError>>,
}

/// How the pool's counters are read. `Locked` is the real implementation; `Naive` reads them
/// from a snapshot taken before the transaction, without the lock, and exists only so that the
/// concurrency tests can prove they detect the overspending it causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accounting {
    /// Read under the pool's lock.
    Locked,
    /// Test-only: read before the transaction, decided against a stale snapshot.
    #[cfg(feature = "test-naive")]
    Naive,
}

/// Test-only: a reserve with this reference makes its batch panic while deciding.
#[cfg(feature = "test-faults")]
pub const PANIC_REFERENCE: &str = "test-fault:panic-in-batch";

/// How a job's key stands after the claim.
enum Standing {
    /// Decide it (its key is new, or it has none).
    Fresh,
    /// Answer it as the job at this index of the batch is answered.
    Follows(usize),
    /// Answer it now, without deciding.
    Done(Result<Answer, BudgetError>),
}

/// Applies `jobs` of `pool_id` and answers each of them.
pub async fn apply(store: &Store, pool_id: &str, jobs: Vec<Job>, accounting: Accounting) {
    let (replies, jobs): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|job| {
            let Job {
                op,
                key,
                actor,
                audit,
                respond,
                reply,
            } = job;
            (reply, (op, key, actor, respond, audit))
        })
        .unzip();
    let answers = match decide_and_write(store, pool_id, &jobs, accounting).await {
        Ok(answers) => answers,
        Err(error) if error.is_transient() => {
            tracing::warn!(pool = pool_id, jobs = jobs.len(), %error, "batch rolled back");
            jobs.iter()
                .map(|_| Err(BudgetError::WriterStopped))
                .collect()
        }
        Err(error) if jobs.len() > 1 => {
            tracing::error!(pool = pool_id, jobs = jobs.len(), %error, "batch failed; applying its jobs one by one");
            let mut answers = Vec::with_capacity(jobs.len());
            for job in jobs.chunks(1) {
                let answer = decide_and_write(store, pool_id, job, accounting)
                    .await
                    .and_then(|mut one| one.pop().expect("one answer per job"));
                answers.push(answer);
            }
            answers
        }
        Err(error) => vec![Err(error)],
    };
    subsidy_common::crash::point("budget.batch.committed");
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller that gave up (deadline) no longer listens; the effect stands.
        let _ = reply.send(answer);
    }
}

type JobParts = (Op, Option<Key>, Actor, Respond, Option<AuditRecord>);

/// A job's answer, with the encoded response to store under its key and the id it changed
/// (reservation or pool), when it is a fresh job that succeeded.
type Decided = (Result<Answer, BudgetError>, Option<(Vec<u8>, String)>);

/// Most times a batch is decided again because another transaction stored one of its keys
/// meanwhile (each round finds the keys stored in the rounds before, so one more round is
/// the rule); beyond it, the batch is answered "retry".
pub const KEY_RACE_ROUNDS_MAX: usize = 8;

/// Steps 1 to 5 for `jobs`, again while a key races; the answers in job order, or the
/// failure of the whole batch.
async fn decide_and_write(
    store: &Store,
    pool_id: &str,
    jobs: &[JobParts],
    accounting: Accounting,
) -> Result<Vec<Result<Answer, BudgetError>>, BudgetError> {
    for round in 1..=KEY_RACE_ROUNDS_MAX {
        if let Some(answers) = decide_and_write_once(store, pool_id, jobs, accounting).await? {
            return Ok(answers);
        }
        tracing::info!(
            pool = pool_id,
            round,
            "a request id was stored by another transaction meanwhile; deciding the batch again"
        );
    }
    Err(BudgetError::WriterStopped)
}

/// Steps 1 to 5 for `jobs` once; `None` when a key raced (nothing was written).
async fn decide_and_write_once(
    store: &Store,
    pool_id: &str,
    jobs: &[JobParts],
    accounting: Accounting,
) -> Result<Option<Vec<Result<Answer, BudgetError>>>, BudgetError> {
    #[cfg(feature = "test-naive")]
    let snapshot = match accounting {
        Accounting::Naive => naive_snapshot(store, pool_id, jobs).await?,
        Accounting::Locked => None,
    };
    #[cfg(not(feature = "test-naive"))]
    let _ = accounting;
    let mut tx = store.begin().await?;
    let Some(locked) = pools::lock(store, &mut tx, pool_id).await? else {
        return Ok(Some(
            jobs.iter()
                .map(|_| {
                    Err(BudgetError::PoolNotFound {
                        pool_id: pool_id.to_owned(),
                    })
                })
                .collect(),
        ));
    };
    let standings = read_keys(&mut tx, jobs).await?;
    let due = match jobs
        .iter()
        .filter_map(|(op, ..)| match op {
            Op::Expire(limit) => Some(*limit),
            _ => None,
        })
        .max()
    {
        Some(limit) => reservations::due(&mut tx, pool_id, locked.now_us, limit).await?,
        None => Vec::new(),
    };
    let named = named_reservations(jobs, &standings);
    let mut known = reservations::by_ids(&mut tx, &named).await?;
    known.extend(due.iter().cloned());
    let beneficiaries = beneficiaries(jobs, &standings, &known);
    let usages = usage::by_beneficiaries(&mut tx, pool_id, &beneficiaries).await?;
    #[allow(unused_mut)]
    let (mut pool, mut usages) = (locked.pool, usages);
    #[cfg(feature = "test-naive")]
    if let Some((stale_pool, stale_usages)) = snapshot {
        // Deliberately wrong: money as it was before the lock, written back as absolute values.
        pool.held_fen = stale_pool.held_fen;
        pool.committed_fen = stale_pool.committed_fen;
        usages = stale_usages;
    }
    let mut batch = Batch::new(
        pool,
        locked.ledger_sequence,
        locked.ledger_head,
        locked.now_us,
        usages,
        known,
    );
    let answers = decide_all(&mut batch, jobs, standings, &due);
    if !write(store, &mut tx, pool_id, batch, jobs, &answers).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(
        answers.into_iter().map(|(answer, _)| answer).collect(),
    ))
}

/// Reads the stored keys among those of `jobs` and says how each job stands. Nothing is
/// claimed here: the keys of the jobs that succeed are inserted with their responses in
/// step 5, and a key that another transaction stored in between sends the batch round again.
async fn read_keys(
    tx: &mut crate::storage::Tx,
    jobs: &[JobParts],
) -> Result<Vec<Standing>, BudgetError> {
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<&Key> = Vec::new();
    for (index, (_, key, ..)) in jobs.iter().enumerate() {
        if let Some(key) = key
            && !first_of.contains_key(key.request_id.as_str())
        {
            first_of.insert(&key.request_id, index);
            distinct.push(key);
        }
    }
    let ids: Vec<&str> = distinct.iter().map(|key| key.request_id.as_str()).collect();
    let stored: HashMap<String, keys::StoredKey> = keys::stored(tx, &ids)
        .await?
        .into_iter()
        .map(|key| (key.request_id.clone(), key))
        .collect();
    Ok(jobs
        .iter()
        .enumerate()
        .map(|(index, (_, key, ..))| {
            let Some(key) = key else {
                return Standing::Fresh;
            };
            let reused = || {
                Standing::Done(Err(BudgetError::RequestIdReused {
                    request_id: key.shown.clone(),
                }))
            };
            if let Some(earlier) = stored.get(&key.request_id) {
                return if earlier.operation == key.operation
                    && earlier.fingerprint == key.fingerprint
                {
                    let response = earlier
                        .response
                        .clone()
                        .expect("a committed idempotency key always has its response");
                    Standing::Done(Ok(Answer::Response(response)))
                } else {
                    reused()
                };
            }
            let first = first_of[key.request_id.as_str()];
            if first == index {
                Standing::Fresh
            } else if jobs[first].1.as_ref() == Some(key) {
                Standing::Follows(first)
            } else {
                reused()
            }
        })
        .collect())
}

/// The reservations that fresh commits, releases, extensions and revocations name.
fn named_reservations<'a>(jobs: &'a [JobParts], standings: &[Standing]) -> Vec<&'a str> {
    let ids: BTreeSet<&str> = jobs
        .iter()
        .zip(standings)
        .filter(|(_, standing)| matches!(standing, Standing::Fresh))
        .filter_map(|((op, ..), _)| match op {
            Op::Commit(cmd) => Some(cmd.reservation_id.as_str()),
            Op::Release(cmd) => Some(cmd.reservation_id.as_str()),
            Op::Extend(cmd) => Some(cmd.reservation_id.as_str()),
            Op::Revoke(cmd) => Some(cmd.reservation_id.as_str()),
            _ => None,
        })
        .collect();
    ids.into_iter().collect()
}

/// The beneficiaries whose usage the batch may change.
fn beneficiaries<'a>(
    jobs: &'a [JobParts],
    standings: &[Standing],
    known: &'a [Reservation],
) -> Vec<&'a str> {
    let mut who: BTreeSet<&str> = known.iter().map(|r| r.beneficiary_uscc.as_str()).collect();
    for ((op, ..), standing) in jobs.iter().zip(standings) {
        if let (Op::Reserve(cmd), Standing::Fresh) = (op, standing) {
            who.insert(cmd.beneficiary.as_str());
        }
    }
    who.into_iter().collect()
}

/// Decides every job in order. Each answer comes with the encoded response to store under the
/// job's key, for fresh jobs that succeeded.
fn decide_all(
    batch: &mut Batch,
    jobs: &[JobParts],
    standings: Vec<Standing>,
    due: &[Reservation],
) -> Vec<Decided> {
    let mut answers: Vec<Decided> = Vec::with_capacity(jobs.len());
    for ((op, _, actor, respond, _), standing) in jobs.iter().zip(standings) {
        let answer = match standing {
            Standing::Done(answer) => (answer, None),
            Standing::Follows(first) => {
                let answer = match &answers[first].0 {
                    Ok(answer) => Ok(answer.clone()),
                    Err(error) => Err(error.duplicate()),
                };
                (answer, None)
            }
            Standing::Fresh => {
                #[cfg(feature = "test-faults")]
                if let Op::Reserve(cmd) = op
                    && cmd.reference == PANIC_REFERENCE
                {
                    panic!("test fault: a batch panics while deciding");
                }
                let reservation =
                    |r: Reservation| (respond(Subject::Reservation(&r)), r.reservation_id.clone());
                let decided = match op {
                    Op::Reserve(cmd) => {
                        let id = uuid::Uuid::now_v7().to_string();
                        batch.reserve(cmd, actor, id).map(reservation)
                    }
                    Op::Commit(cmd) => batch.commit(cmd, actor).map(reservation),
                    Op::Release(cmd) => batch.release(cmd, actor).map(reservation),
                    Op::Extend(cmd) => batch.extend(cmd, actor).map(reservation),
                    Op::Revoke(cmd) => batch.revoke(cmd, actor).map(reservation),
                    Op::Close(cmd) => batch
                        .close(cmd, actor)
                        .map(|p| (respond(Subject::Pool(&p)), p.pool_id.clone())),
                    Op::Expire(limit) => {
                        let expired = due
                            .iter()
                            .take(usize::try_from(*limit).unwrap_or(usize::MAX))
                            .filter(|r| batch.expire(&r.reservation_id).is_some())
                            .count();
                        answers.push((Ok(Answer::Expired(expired as i64)), None));
                        continue;
                    }
                };
                match decided {
                    Ok((response, id)) => {
                        (Ok(Answer::Response(response.clone())), Some((response, id)))
                    }
                    Err(refusal) => (Err(BudgetError::from(refusal)), None),
                }
            }
        };
        answers.push(answer);
    }
    answers
}

/// Step 5: writes what the batch decided and stores the keys of the jobs that succeeded with
/// their responses. `false` when another transaction stored one of those keys after step 2
/// (the caller rolls back and decides the batch again).
async fn write(
    store: &Store,
    tx: &mut crate::storage::Tx,
    pool_id: &str,
    batch: Batch,
    jobs: &[JobParts],
    answers: &[Decided],
) -> Result<bool, BudgetError> {
    let now_us = batch.now_us();
    let effect = batch.finish();
    if !effect.entries.is_empty() {
        pools::update(
            tx,
            &effect.pool,
            effect.ledger_sequence,
            &effect.ledger_head,
        )
        .await?;
        usage::upsert(tx, pool_id, &effect.usages).await?;
        let rows: Vec<&Reservation> = effect.created.iter().chain(&effect.settled).collect();
        reservations::upsert(tx, &rows).await?;
        crate::storage::ledger::append(tx, &effect.entries).await?;
    }
    let mut stored: Vec<(&Key, &[u8])> = Vec::new();
    let mut records = Vec::new();
    for ((_, key, _, _, audit), (_, response)) in jobs.iter().zip(answers) {
        if let (Some(record), Some((_, id))) = (audit, response) {
            records.push(record.with_targets(&[pool_id, id.as_str()]));
        }
        if let (Some(key), Some((response, _))) = (key, response) {
            stored.push((key, response));
        }
    }
    // A refused job stores nothing, so its retry is decided afresh; a replay's key stands.
    let inserted = keys::insert_with_responses(store, tx, &stored).await?;
    if inserted < stored.len() {
        // Another transaction stored one of these keys after this batch read them: the batch
        // is rolled back and decided again, and then finds that key stored.
        return Ok(false);
    }
    subsidy_common::audit::append(tx, &records, now_us).await?;
    Ok(true)
}

#[cfg(feature = "test-naive")]
async fn naive_snapshot(
    store: &Store,
    pool_id: &str,
    jobs: &[JobParts],
) -> Result<Option<(crate::domain::Pool, HashMap<String, crate::domain::Usage>)>, BudgetError> {
    let Some(pool) = pools::get(store, pool_id).await? else {
        return Ok(None);
    };
    let mut usages = HashMap::new();
    for (op, ..) in jobs {
        let who = match op {
            Op::Reserve(cmd) => Some(cmd.beneficiary.as_str().to_owned()),
            Op::Commit(Commit { reservation_id, .. })
            | Op::Release(Release { reservation_id, .. })
            | Op::Extend(Extend { reservation_id, .. })
            | Op::Revoke(Revoke { reservation_id, .. }) => reservations::get(store, reservation_id)
                .await?
                .map(|r| r.beneficiary_uscc),
            Op::Expire(_) | Op::Close(_) => None,
        };
        if let Some(who) = who
            && let Some((found, _)) = usage::with_cap(store, pool_id, &who).await?
        {
            usages.insert(who, found);
        }
    }
    Ok(Some((pool, usages)))
}
