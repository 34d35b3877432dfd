//! The budget's use cases. Money moves through each pool's writer ([`writer`]), which applies
//! what queued for the pool in one transaction ([`batch`]); creating a pool is its own
//! transaction; reads go straight to storage; [`verify`] checks the ledger; [`checkpoint`]
//! signs the pools' heads and publishes the checkpoints.

pub mod batch;
pub mod checkpoint;
pub mod verify;
pub mod writer;

use std::sync::Arc;

use prost::Message;
use subsidy_common::RequestId;
use subsidy_common::audit::{self, AuditRecord, Changer};
use subsidy_common::idempotency::{self, Claim};

use crate::domain::ReservationFilter;
use crate::domain::{
    Actor, ClosePool, Commit, Extend, GENESIS_HASH, HASH_VERSION_CANONICAL, LedgerEntry,
    LedgerKind, NewPool, Pool, Release, Reservation, Reserve, Revoke, Usage,
};
use crate::error::BudgetError;
use crate::storage::keys::{self, Key};
use crate::storage::ledger::StoredEntry;
use crate::storage::{Store, ledger, pools, reservations, usage};
pub use batch::Accounting;
use batch::{Answer, Job, Op, Respond, Subject};
pub use verify::VerifyReport;
use writer::Writers;

/// The actor recorded for pools created at start-up.
pub const SEED_ACTOR: &str = "system:seed";
/// The idempotency scope of what the service does on its own.
pub const SYSTEM_SCOPE: &str = "system";

/// Who asks for a change: the actor the ledger records, the scope its request ids live in,
/// and the audit record the change writes (with its targets filled in when decided).
#[derive(Clone, Debug)]
pub struct Who {
    /// The actor, as the ledger names it.
    pub actor: Actor,
    /// The idempotency scope (the authenticated principal).
    pub scope: String,
    /// The audit record of the call, for a call from outside.
    pub audit: Option<AuditRecord>,
}

impl Who {
    /// The service itself, acting as `actor`.
    pub fn system(actor: &str) -> Who {
        Who {
            actor: Actor(actor.to_owned()),
            scope: SYSTEM_SCOPE.to_owned(),
            audit: None,
        }
    }
}

impl From<Changer> for Who {
    /// The authenticated caller of a request, as the ledger names it.
    fn from(changer: Changer) -> Who {
        Who {
            actor: Actor(changer.actor),
            scope: changer.scope,
            audit: Some(changer.audit),
        }
    }
}

/// The budget: its store and the writers of its pools.
#[derive(Clone, Debug)]
pub struct Budget {
    store: Store,
    writers: Arc<Writers>,
    /// Held by an `ExpireReservations` request in this process while it runs.
    expiring: Arc<tokio::sync::Mutex<()>>,
    /// The checkpoint key, if any, and the bell of the checkpoint publisher.
    checkpoints: checkpoint::Checkpoints,
    /// The pools of recently made or settled reservations, so that a commit, release,
    /// extension or revocation finds its pool's writer without a query.
    pools_of: Arc<PoolsOf>,
}

/// Most reservations whose pool [`PoolsOf`] remembers.
pub const POOLS_OF_MAX: usize = 100_000;

/// Which pool a reservation belongs to, for the reservations seen last (least recently used
/// forgotten first). A reservation's pool never changes and reservation ids are never
/// reused, so an entry never goes stale; an entry is only added once the reservation is
/// committed to the database (or read from it).
#[derive(Debug)]
struct PoolsOf(std::sync::Mutex<hashlink::LruCache<String, String>>);

impl PoolsOf {
    fn new(capacity: usize) -> Self {
        PoolsOf(std::sync::Mutex::new(hashlink::LruCache::new(capacity)))
    }

    fn get(&self, reservation_id: &str) -> Option<String> {
        self.0
            .lock()
            .expect("the cache is never poisoned")
            .get(reservation_id)
            .cloned()
    }

    fn remember(&self, reservation_id: String, pool_id: String) {
        self.0
            .lock()
            .expect("the cache is never poisoned")
            .insert(reservation_id, pool_id);
    }
}

/// What opening a request's transaction found.
enum Opened<R> {
    /// The request was answered before: its stored answer.
    Replay(R),
    /// A new request: the write transaction to act in, with the request's stored id claimed in
    /// it (the answer is stored under that id before the commit).
    Fresh(crate::storage::Tx, String),
}

impl Budget {
    /// Opens the write transaction of `operation` for `request_id` of `who` and claims the
    /// request in it: a replay answers with the stored response, a reuse for another request
    /// is `REQUEST_ID_REUSED`.
    async fn open_request<R: Message + Default>(
        &self,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
        who: &Who,
    ) -> Result<Opened<R>, BudgetError> {
        let stored_id = idempotency::scoped(&who.scope, request_id.as_str());
        let mut tx = self.store.begin().await?;
        match idempotency::claim::<R>(
            &mut tx,
            &stored_id,
            operation,
            fingerprint,
            self.store.now_sql(),
        )
        .await?
        {
            Claim::Replay(response) => Ok(Opened::Replay(response)),
            Claim::Reused => Err(BudgetError::RequestIdReused {
                request_id: request_id.to_string(),
            }),
            Claim::Fresh => Ok(Opened::Fresh(tx, stored_id)),
        }
    }

    /// The budget over `store`.
    pub fn new(store: Store) -> Self {
        Self::with_accounting(store, Accounting::Locked)
    }

    /// The budget over `store` with an accounting strategy (only the test-only naive variant
    /// differs).
    pub fn with_accounting(store: Store, accounting: Accounting) -> Self {
        Budget {
            writers: Arc::new(Writers::new(store.clone(), accounting)),
            store,
            expiring: Arc::new(tokio::sync::Mutex::new(())),
            checkpoints: checkpoint::Checkpoints {
                signer: None,
                made: Arc::new(tokio::sync::Notify::new()),
            },
            pools_of: Arc::new(PoolsOf::new(POOLS_OF_MAX)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The messages of batches that panicked in this process (see [`Writers::panics`]).
    pub fn batch_panics(&self) -> Vec<String> {
        self.writers.panics()
    }

    /// The database.
    pub fn db(&self) -> &subsidy_common::db::Db {
        self.store.db()
    }

    /// Creates a pool (idempotent by `request_id`); `respond` builds the stored response.
    pub async fn create_pool<R: Message + Default>(
        &self,
        new: &NewPool,
        request_id: &RequestId,
        fingerprint: &str,
        who: &Who,
        respond: impl FnOnce(&Pool) -> R,
    ) -> Result<R, BudgetError> {
        let (mut tx, stored_id) = match self
            .open_request::<R>(request_id, "CreatePool", fingerprint, who)
            .await?
        {
            Opened::Replay(response) => return Ok(response),
            Opened::Fresh(tx, stored_id) => (tx, stored_id),
        };
        let genesis = |pool: &Pool| LedgerEntry {
            pool_id: pool.pool_id.clone(),
            sequence: 1,
            kind: LedgerKind::PoolCreated.as_str().into(),
            reservation_id: String::new(),
            beneficiary_uscc: String::new(),
            actor: who.actor.0.clone(),
            request_id: request_id.as_str().into(),
            amount_fen: pool.total_fen,
            released_fen: 0,
            held_before_fen: 0,
            held_after_fen: 0,
            committed_before_fen: 0,
            committed_after_fen: 0,
            created_us: pool.created_us,
            previous_hash: GENESIS_HASH.into(),
            hash_version: HASH_VERSION_CANONICAL,
            expires_us: None,
        };
        let mut first = None;
        let Some(pool) = pools::insert(&self.store, &mut tx, new, |pool| {
            let entry = genesis(pool);
            let hash = entry.seal();
            first = Some((entry, hash.clone()));
            hash
        })
        .await?
        else {
            return Err(BudgetError::PoolAlreadyExists {
                pool_id: new.pool_id.to_string(),
            });
        };
        ledger::append(&mut tx, &[first.expect("the entry was made")]).await?;
        let response = respond(&pool);
        idempotency::store_response(&mut tx, &stored_id, &response).await?;
        if let Some(record) = &who.audit {
            let record = record.with_targets(&[new.pool_id.as_str()]);
            audit::append(&mut tx, &[record], pool.created_us).await?;
        }
        tx.commit().await?;
        Ok(response)
    }

    /// Creates the pool unless one with its id exists (for seeding at start-up).
    pub async fn ensure_pool(&self, new: &NewPool) -> Result<(), BudgetError> {
        let request_id = RequestId::derived("seed", new.pool_id.as_str());
        let fingerprint = format!("seed:{}:{}", new.pool_id, new.total.fen());
        match self
            .create_pool(
                new,
                &request_id,
                &fingerprint,
                &Who::system(SEED_ACTOR),
                |_| (),
            )
            .await
        {
            Ok(()) | Err(BudgetError::PoolAlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Holds money; `respond` builds the response that is stored and replayed.
    pub async fn reserve<R: Message + Default>(
        &self,
        cmd: &Reserve,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "Reserve", fingerprint);
        let op = Op::Reserve(cmd.clone());
        // The id of the hold made, remembered once its batch has committed (a replay makes
        // none: a commit of it finds its pool in the database).
        let made = Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = made.clone();
        let respond = for_reservation(move |reservation: &Reservation| {
            *seen.lock().expect("never poisoned") = Some(reservation.reservation_id.clone());
            respond(reservation)
        });
        let response = self
            .through_writer(cmd.pool_id.as_str(), op, Some(key), who, respond)
            .await?;
        if let Some(reservation_id) = made.lock().expect("never poisoned").take() {
            self.pools_of
                .remember(reservation_id, cmd.pool_id.as_str().to_owned());
        }
        Ok(response)
    }

    /// Commits a held reservation for `cmd.amount`; the remainder returns to the pool.
    pub async fn commit<R: Message + Default>(
        &self,
        cmd: &Commit,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "Commit", fingerprint);
        let pool_id = self.pool_of(&cmd.reservation_id).await?;
        let respond = for_reservation(respond);
        self.through_writer(&pool_id, Op::Commit(cmd.clone()), Some(key), who, respond)
            .await
    }

    /// Releases a held reservation.
    pub async fn release<R: Message + Default>(
        &self,
        cmd: &Release,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "Release", fingerprint);
        let pool_id = self.pool_of(&cmd.reservation_id).await?;
        let respond = for_reservation(respond);
        let op = Op::Release(cmd.clone());
        self.through_writer(&pool_id, op, Some(key), who, respond)
            .await
    }

    /// Extends a held reservation (never shortening it).
    pub async fn extend<R: Message + Default>(
        &self,
        cmd: &Extend,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "ExtendReservation", fingerprint);
        let pool_id = self.pool_of(&cmd.reservation_id).await?;
        let respond = for_reservation(respond);
        let op = Op::Extend(cmd.clone());
        self.through_writer(&pool_id, op, Some(key), who, respond)
            .await
    }

    /// Revokes a committed reservation; its commitment returns to the pool.
    pub async fn revoke<R: Message + Default>(
        &self,
        cmd: &Revoke,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "RevokeCommitment", fingerprint);
        let pool_id = self.pool_of(&cmd.reservation_id).await?;
        let respond = for_reservation(respond);
        let op = Op::Revoke(cmd.clone());
        self.through_writer(&pool_id, op, Some(key), who, respond)
            .await
    }

    /// Closes a pool to new holds.
    pub async fn close_pool<R: Message + Default>(
        &self,
        cmd: &ClosePool,
        fingerprint: &str,
        who: &Who,
        respond: impl Fn(&Pool) -> R + Send + Sync + 'static,
    ) -> Result<R, BudgetError> {
        let key = key(who, &cmd.request_id, "ClosePool", fingerprint);
        let respond: Respond = Box::new(move |subject| match subject {
            Subject::Pool(pool) => respond(pool).encode_to_vec(),
            Subject::Reservation(_) => unreachable!("closing answers with the pool"),
        });
        let op = Op::Close(cmd.clone());
        self.through_writer(cmd.pool_id.as_str(), op, Some(key), who, respond)
            .await
    }

    /// Expires up to `limit` due holds of every pool, each pool through its writer; returns
    /// how many expired.
    pub async fn expire_due(&self, limit: i64) -> Result<i64, BudgetError> {
        let mut expired = 0;
        for pool_id in reservations::pools_with_due_holds(&self.store).await? {
            let answer = self
                .writers
                .submit(&pool_id, |reply| Job {
                    op: Op::Expire(limit),
                    key: None,
                    actor: Actor(crate::domain::decide::EXPIRY_ACTOR.into()),
                    audit: None,
                    respond: Box::new(|_: Subject<'_>| Vec::new()),
                    reply,
                })
                .await?;
            match answer {
                Answer::Expired(count) => expired += count,
                Answer::Response(_) => unreachable!("an expiry is answered with a count"),
            }
        }
        Ok(expired)
    }

    /// Expires due holds as [`Budget::expire_due`], once per `request_id`: a replay, or a
    /// duplicate arriving while the first runs, gets the first call's count. Requests run one
    /// at a time in a process, and on PostgreSQL one at a time per request id across
    /// processes (a transaction-scoped advisory lock on the key, held while the holds expire
    /// in the writers' own transactions), so the count stored is that of the call that
    /// expired the holds.
    pub async fn expire_once<R: Message + Default>(
        &self,
        request_id: &RequestId,
        fingerprint: &str,
        who: &Who,
        limit: i64,
        respond: impl FnOnce(i64) -> R,
    ) -> Result<R, BudgetError> {
        let key = key(who, request_id, "ExpireReservations", fingerprint);
        let _one_at_a_time = self.expiring.lock().await;
        let _key_lock = if self.store.locks_rows() {
            let mut lock = self.store.begin().await?;
            keys::lock_request(&mut lock, &key.request_id).await?;
            Some(lock)
        } else {
            None
        };
        if let Some(stored) = keys::find(&self.store, &key.request_id).await? {
            return replay(&key, &stored);
        }
        let expired = self.expire_due(limit).await?;
        let response = respond(expired).encode_to_vec();
        let mut tx = self.store.begin().await?;
        let (stored, first) = keys::store_once(&self.store, &mut tx, &key, &response).await?;
        // Only the call whose answer stands is recorded: a concurrent duplicate is a replay.
        if let Some(record) = &who.audit
            && first
        {
            audit::append(
                &mut tx,
                std::slice::from_ref(record),
                subsidy_common::time::now_us(),
            )
            .await?;
        }
        tx.commit().await?;
        replay(&key, &stored)
    }

    /// The pool of a reservation, remembered or read.
    async fn pool_of(&self, reservation_id: &str) -> Result<String, BudgetError> {
        if let Some(pool_id) = self.pools_of.get(reservation_id) {
            return Ok(pool_id);
        }
        let pool_id = reservations::pool_of(&self.store, reservation_id)
            .await?
            .ok_or_else(|| crate::domain::Refusal::ReservationNotFound {
                reservation_id: reservation_id.to_owned(),
            })?;
        self.pools_of
            .remember(reservation_id.to_owned(), pool_id.clone());
        Ok(pool_id)
    }

    async fn through_writer<R: Message + Default>(
        &self,
        pool_id: &str,
        op: Op,
        key: Option<Key>,
        who: &Who,
        respond: Respond,
    ) -> Result<R, BudgetError> {
        let (actor, audit) = (who.actor.clone(), who.audit.clone());
        let answer = self
            .writers
            .submit(pool_id, move |reply| Job {
                op,
                key,
                actor,
                audit,
                respond,
                reply,
            })
            .await?;
        match answer {
            Answer::Response(bytes) => decode(&bytes),
            Answer::Expired(_) => unreachable!("only expiries are answered with a count"),
        }
    }

    /// One pool.
    pub async fn get_pool(&self, pool_id: &str) -> Result<Option<Pool>, BudgetError> {
        Ok(pools::get(&self.store, pool_id).await?)
    }

    /// Pools after `after` in id order.
    pub async fn list_pools(&self, after: &str, limit: i64) -> Result<Vec<Pool>, BudgetError> {
        Ok(pools::list(&self.store.db().pool, after, limit).await?)
    }

    /// One reservation.
    pub async fn get_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<Reservation>, BudgetError> {
        Ok(reservations::get(&self.store, reservation_id).await?)
    }

    /// Reservations of a pool, newest first, after the keyset position `(created_us, id)`.
    pub async fn list_reservations(
        &self,
        filter: &ReservationFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Reservation>, BudgetError> {
        Ok(reservations::list_page(&self.store, filter, after, limit).await?)
    }

    /// A beneficiary's usage of a pool with the pool's cap; `None` when the pool is unknown.
    pub async fn usage(
        &self,
        pool_id: &str,
        uscc: &str,
    ) -> Result<Option<(Usage, Option<i64>)>, BudgetError> {
        Ok(usage::with_cap(&self.store, pool_id, uscc).await?)
    }

    /// Ledger entries after `after_entry_id` in write order, optionally of one pool.
    pub async fn list_ledger(
        &self,
        pool_id: &str,
        after_entry_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEntry>, BudgetError> {
        Ok(ledger::list_page(&self.store.db().pool, pool_id, after_entry_id, limit).await?)
    }

    /// The ledger entries of reservation `reservation_id` after `after_entry_id` in write
    /// order, only in `pool_id` when that is not empty.
    pub async fn list_reservation_ledger(
        &self,
        pool_id: &str,
        reservation_id: &str,
        after_entry_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEntry>, BudgetError> {
        Ok(ledger::reservation_page(
            &self.store.db().pool,
            (pool_id, reservation_id),
            after_entry_id,
            limit,
        )
        .await?)
    }

    /// Recomputes every pool's hash chain and checks its counters against its reservations.
    pub async fn verify_ledger(&self) -> Result<VerifyReport, BudgetError> {
        verify::verify(&self.store).await
    }
}

/// A response builder over a reservation, encoded.
fn for_reservation<R: Message>(
    respond: impl Fn(&Reservation) -> R + Send + Sync + 'static,
) -> Respond {
    Box::new(move |subject| match subject {
        Subject::Reservation(reservation) => respond(reservation).encode_to_vec(),
        Subject::Pool(_) => unreachable!("money movements answer with their reservation"),
    })
}

fn key(who: &Who, request_id: &RequestId, operation: &'static str, fingerprint: &str) -> Key {
    Key {
        request_id: idempotency::scoped(&who.scope, request_id.as_str()),
        shown: request_id.as_str().to_owned(),
        operation,
        fingerprint: fingerprint.to_owned(),
    }
}

fn decode<R: Message + Default>(bytes: &[u8]) -> Result<R, BudgetError> {
    R::decode(bytes).map_err(BudgetError::corrupt_response)
}

fn replay<R: Message + Default>(key: &Key, stored: &keys::StoredKey) -> Result<R, BudgetError> {
    if stored.operation != key.operation || stored.fingerprint != key.fingerprint {
        return Err(BudgetError::RequestIdReused {
            request_id: key.shown.clone(),
        });
    }
    decode(
        stored
            .response
            .as_deref()
            .expect("a committed idempotency key always has its response"),
    )
}
