//! Budget storage: every money movement is one transaction of conditional updates in a fixed
//! lock order (reservation → pool → beneficiary usage), with the ledger entry appended in the
//! same transaction. No read-then-check-then-write: a read after a refused update only explains
//! which condition refused it.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use subsidy_common::db::{Db, DbError};
use subsidy_common::idempotency::{self, Claim};
use subsidy_common::{Money, RequestId};

use crate::domain::{
    BudgetError, Commit, GENESIS_HASH, LedgerEntry, LedgerKind, NewPool, Release, Reserve,
};

/// How pool counters are updated. `Conditional` is the real implementation; `Naive` is a
/// deliberately wrong read-then-check-then-write variant that exists only so that the
/// concurrency tests can prove they detect overspending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accounting {
    /// Conditional `UPDATE … WHERE` in one transaction.
    Conditional,
    /// Test-only: reads the pool, checks in Rust, writes absolute values.
    #[cfg(feature = "test-naive")]
    Naive,
}

/// A pool as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRow {
    /// Identifier.
    pub pool_id: String,
    /// Name.
    pub display_name: String,
    /// Total, fen.
    pub total_fen: i64,
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
    /// Cap per beneficiary, fen.
    pub beneficiary_cap_fen: Option<i64>,
    /// Cap per reservation, fen.
    pub reservation_cap_fen: Option<i64>,
    /// Default hold lifetime.
    pub default_hold_seconds: i64,
    /// Reservations ever made.
    pub reservation_count: i64,
    /// Creation time, µs.
    pub created_us: i64,
}

/// The state of a reservation, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Held.
    Held,
    /// Committed.
    Committed,
    /// Released.
    Released,
    /// Expired.
    Expired,
}

impl ReservationState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "HELD",
            ReservationState::Committed => "COMMITTED",
            ReservationState::Released => "RELEASED",
            ReservationState::Expired => "EXPIRED",
        }
    }

    fn parse(text: &str) -> Result<Self, DbError> {
        match text {
            "HELD" => Ok(ReservationState::Held),
            "COMMITTED" => Ok(ReservationState::Committed),
            "RELEASED" => Ok(ReservationState::Released),
            "EXPIRED" => Ok(ReservationState::Expired),
            other => Err(DbError::Other(sqlx::Error::Decode(
                format!("unknown state {other}").into(),
            ))),
        }
    }
}

/// A reservation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationRow {
    /// Identifier.
    pub reservation_id: String,
    /// Pool.
    pub pool_id: String,
    /// Beneficiary.
    pub beneficiary_uscc: String,
    /// Caller's reference.
    pub reference: String,
    /// State.
    pub state: ReservationState,
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
    /// Returned, fen.
    pub released_fen: i64,
    /// Created, µs.
    pub created_us: i64,
    /// Expires, µs.
    pub expires_us: i64,
    /// Left HELD, µs.
    pub settled_us: Option<i64>,
    /// Release reason.
    pub release_reason: Option<String>,
}

/// A beneficiary's usage as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
    /// The pool's cap, fen.
    pub cap_fen: Option<i64>,
}

/// A stored ledger entry with its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Global write order.
    pub entry_id: i64,
    /// The hashed content.
    pub entry: LedgerEntry,
    /// The stored hash.
    pub entry_hash: String,
}

/// Result of checking the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries_checked: i64,
    /// The first problem: pool, sequence and what is wrong.
    pub first_problem: Option<(String, i64, String)>,
}

/// Filters of a reservation listing.
#[derive(Clone, Debug, Default)]
pub struct ReservationFilter {
    /// Pool (required).
    pub pool_id: String,
    /// Beneficiary, or empty.
    pub beneficiary_uscc: String,
    /// Reference, or empty.
    pub reference: String,
    /// State, or none.
    pub state: Option<ReservationState>,
}

/// What a caller did, for the ledger.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

const RESERVATION_COLUMNS: &str = "reservation_id, pool_id, beneficiary_uscc, reference, state, held_fen, \
     committed_fen, released_fen, created_us, expires_us, settled_us, release_reason";
const POOL_COLUMNS: &str = "pool_id, display_name, total_fen, held_fen, committed_fen, beneficiary_cap_fen, \
     reservation_cap_fen, default_hold_seconds, reservation_count, created_us";
const LEDGER_COLUMNS: &str = "entry_id, pool_id, sequence, kind, reservation_id, beneficiary_uscc, actor, request_id, \
     amount_fen, released_fen, held_before_fen, held_after_fen, committed_before_fen, committed_after_fen, \
     created_us, previous_hash, entry_hash";

fn pool_row(row: &AnyRow) -> Result<PoolRow, sqlx::Error> {
    Ok(PoolRow {
        pool_id: row.try_get("pool_id")?,
        display_name: row.try_get("display_name")?,
        total_fen: row.try_get("total_fen")?,
        held_fen: row.try_get("held_fen")?,
        committed_fen: row.try_get("committed_fen")?,
        beneficiary_cap_fen: row.try_get("beneficiary_cap_fen")?,
        reservation_cap_fen: row.try_get("reservation_cap_fen")?,
        default_hold_seconds: row.try_get("default_hold_seconds")?,
        reservation_count: row.try_get("reservation_count")?,
        created_us: row.try_get("created_us")?,
    })
}

fn reservation_row(row: &AnyRow) -> Result<ReservationRow, DbError> {
    let state: String = row.try_get("state")?;
    Ok(ReservationRow {
        reservation_id: row.try_get("reservation_id")?,
        pool_id: row.try_get("pool_id")?,
        beneficiary_uscc: row.try_get("beneficiary_uscc")?,
        reference: row.try_get("reference")?,
        state: ReservationState::parse(&state)?,
        held_fen: row.try_get("held_fen")?,
        committed_fen: row.try_get("committed_fen")?,
        released_fen: row.try_get("released_fen")?,
        created_us: row.try_get("created_us")?,
        expires_us: row.try_get("expires_us")?,
        settled_us: row.try_get("settled_us")?,
        release_reason: row.try_get("release_reason")?,
    })
}

fn ledger_row(row: &AnyRow) -> Result<StoredEntry, sqlx::Error> {
    Ok(StoredEntry {
        entry_id: row.try_get("entry_id")?,
        entry_hash: row.try_get("entry_hash")?,
        entry: LedgerEntry {
            pool_id: row.try_get("pool_id")?,
            sequence: row.try_get("sequence")?,
            kind: row.try_get("kind")?,
            reservation_id: row.try_get("reservation_id")?,
            beneficiary_uscc: row.try_get("beneficiary_uscc")?,
            actor: row.try_get("actor")?,
            request_id: row.try_get("request_id")?,
            amount_fen: row.try_get("amount_fen")?,
            released_fen: row.try_get("released_fen")?,
            held_before_fen: row.try_get("held_before_fen")?,
            held_after_fen: row.try_get("held_after_fen")?,
            committed_before_fen: row.try_get("committed_before_fen")?,
            committed_after_fen: row.try_get("committed_after_fen")?,
            created_us: row.try_get("created_us")?,
            previous_hash: row.try_get("previous_hash")?,
        },
    })
}

/// SQL texts that embed the database clock, built once.
#[derive(Clone, Debug)]
struct Sql {
    now: String,
    reserve_pool: String,
    insert_reservation: String,
    settle_held: String,
    settle_expired: String,
    due_for_expiry: String,
    reservation_expired: String,
    insert_pool: String,
}

impl Sql {
    fn new(now: String) -> Self {
        Sql {
            reserve_pool: format!(
                "UPDATE pools SET held_fen = held_fen + $2, reservation_count = reservation_count + 1, \
                 ledger_sequence = ledger_sequence + 1 \
                 WHERE pool_id = $1 AND total_fen - held_fen - committed_fen >= $2 \
                 AND (reservation_cap_fen IS NULL OR reservation_cap_fen >= $2) \
                 AND (beneficiary_cap_fen IS NULL OR beneficiary_cap_fen >= $2) \
                 RETURNING held_fen, committed_fen, ledger_sequence, ledger_head_hash, beneficiary_cap_fen, \
                 default_hold_seconds, {now} AS now_us"
            ),
            insert_reservation: format!(
                "INSERT INTO reservations ({RESERVATION_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, 'HELD', $5, 0, 0, $6, $7, NULL, NULL) RETURNING {RESERVATION_COLUMNS}"
            ),
            settle_held: format!(
                "UPDATE reservations SET state = $2, committed_fen = $3, released_fen = held_fen - $3, \
                 settled_us = {now}, release_reason = $4 \
                 WHERE reservation_id = $1 AND state = 'HELD' AND held_fen >= $3 AND expires_us > {now} \
                 RETURNING {RESERVATION_COLUMNS}"
            ),
            settle_expired: format!(
                "UPDATE reservations SET state = 'EXPIRED', released_fen = held_fen, settled_us = {now}, \
                 release_reason = 'expired' \
                 WHERE reservation_id = $1 AND state = 'HELD' AND expires_us <= {now} \
                 RETURNING {RESERVATION_COLUMNS}"
            ),
            due_for_expiry: format!(
                "SELECT reservation_id FROM reservations WHERE state = 'HELD' AND expires_us <= {now} \
                 ORDER BY expires_us, reservation_id LIMIT $1"
            ),
            reservation_expired: format!(
                "SELECT state, held_fen, CASE WHEN expires_us <= {now} THEN 1 ELSE 0 END AS past_expiry \
                 FROM reservations WHERE reservation_id = $1"
            ),
            insert_pool: format!(
                "INSERT INTO pools ({POOL_COLUMNS}, ledger_sequence, ledger_head_hash) \
                 VALUES ($1, $2, $3, 0, 0, $4, $5, $6, 0, {now}, 1, '') \
                 ON CONFLICT (pool_id) DO NOTHING RETURNING {POOL_COLUMNS}"
            ),
            now,
        }
    }
}

/// The budget's database: a pool of connections, its clock, and how it accounts.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    sql: Sql,
    accounting: Accounting,
}

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        Self::with_clock_offset(db, 0)
    }

    /// A store whose clock is the database clock plus `offset_us`. Tests use this to move time
    /// forward without waiting; the service itself always uses offset 0.
    pub fn with_clock_offset(db: Db, offset_us: i64) -> Self {
        let now = format!("({} + {offset_us})", db.now_us_sql());
        Store {
            db,
            sql: Sql::new(now),
            accounting: Accounting::Conditional,
        }
    }

    /// Switches the accounting strategy (only the test-only naive variant differs).
    pub fn with_accounting(mut self, accounting: Accounting) -> Self {
        self.accounting = accounting;
        self
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Applies the budget migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    async fn append_ledger(
        &self,
        tx: &mut Transaction<'static, Any>,
        mut entry: LedgerEntry,
        previous_hash: String,
    ) -> Result<(), BudgetError> {
        entry.previous_hash = previous_hash;
        let hash = entry.hash();
        sqlx::query(
            "INSERT INTO ledger_entries (pool_id, sequence, kind, reservation_id, beneficiary_uscc, actor, \
             request_id, amount_fen, released_fen, held_before_fen, held_after_fen, committed_before_fen, \
             committed_after_fen, created_us, previous_hash, entry_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&entry.pool_id)
        .bind(entry.sequence)
        .bind(&entry.kind)
        .bind(&entry.reservation_id)
        .bind(&entry.beneficiary_uscc)
        .bind(&entry.actor)
        .bind(&entry.request_id)
        .bind(entry.amount_fen)
        .bind(entry.released_fen)
        .bind(entry.held_before_fen)
        .bind(entry.held_after_fen)
        .bind(entry.committed_before_fen)
        .bind(entry.committed_after_fen)
        .bind(entry.created_us)
        .bind(&entry.previous_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE pools SET ledger_head_hash = $2 WHERE pool_id = $1 AND ledger_sequence = $3",
        )
        .bind(&entry.pool_id)
        .bind(&hash)
        .bind(entry.sequence)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Creates a pool (idempotent by `request_id`); `Ok(None)` means the request was a replay
    /// and the stored response is returned by the caller through `claim`.
    pub async fn create_pool<R: prost::Message + Default>(
        &self,
        new: &NewPool,
        request_id: &RequestId,
        fingerprint: &str,
        actor: &Actor,
        respond: impl FnOnce(&PoolRow) -> R,
    ) -> Result<R, BudgetError> {
        let mut tx = self.db.begin_write().await?;
        match idempotency::claim::<R>(
            &mut tx,
            request_id,
            "CreatePool",
            fingerprint,
            &self.sql.now,
        )
        .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Reused => return Err(BudgetError::RequestIdReused),
            Claim::Fresh => {}
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(self.sql.insert_pool.clone()))
            .bind(new.pool_id.as_str())
            .bind(&new.display_name)
            .bind(new.total.fen())
            .bind(new.beneficiary_cap.map(Money::fen))
            .bind(new.reservation_cap.map(Money::fen))
            .bind(new.default_hold_seconds)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(BudgetError::PoolAlreadyExists);
        };
        let pool = pool_row(&row)?;
        let entry = LedgerEntry {
            pool_id: pool.pool_id.clone(),
            sequence: 1,
            kind: LedgerKind::PoolCreated.as_str().into(),
            reservation_id: String::new(),
            beneficiary_uscc: String::new(),
            actor: actor.0.clone(),
            request_id: request_id.as_str().into(),
            amount_fen: pool.total_fen,
            released_fen: 0,
            held_before_fen: 0,
            held_after_fen: 0,
            committed_before_fen: 0,
            committed_after_fen: 0,
            created_us: pool.created_us,
            previous_hash: String::new(),
        };
        self.append_ledger(&mut tx, entry, GENESIS_HASH.into())
            .await?;
        let response = respond(&pool);
        idempotency::store_response(&mut tx, request_id, &response).await?;
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
                &Actor("system:seed".into()),
                |_| (),
            )
            .await
        {
            Ok(()) | Err(BudgetError::PoolAlreadyExists) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Reserves money. The whole decision is made by the conditional updates.
    pub async fn reserve<R: prost::Message + Default>(
        &self,
        cmd: &Reserve,
        fingerprint: &str,
        actor: &Actor,
        respond: impl FnOnce(&ReservationRow) -> R,
    ) -> Result<R, BudgetError> {
        #[cfg(feature = "test-naive")]
        let snapshot = match self.accounting {
            Accounting::Naive => Some((
                self.get_pool(cmd.pool_id.as_str()).await?,
                self.usage(cmd.pool_id.as_str(), cmd.beneficiary.as_str())
                    .await?,
            )),
            Accounting::Conditional => None,
        };
        let mut tx = self.db.begin_write().await?;
        match idempotency::claim::<R>(
            &mut tx,
            &cmd.request_id,
            "Reserve",
            fingerprint,
            &self.sql.now,
        )
        .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Reused => return Err(BudgetError::RequestIdReused),
            Claim::Fresh => {}
        }
        let amount = cmd.amount.fen();
        let pool = match self.accounting {
            Accounting::Conditional => {
                sqlx::query(sqlx::AssertSqlSafe(self.sql.reserve_pool.clone()))
                    .bind(cmd.pool_id.as_str())
                    .bind(amount)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            #[cfg(feature = "test-naive")]
            Accounting::Naive => {
                self.naive_reserve_pool(&mut tx, cmd, snapshot.as_ref().and_then(|s| s.0.clone()))
                    .await?
            }
        };
        let Some(pool) = pool else {
            return Err(self.explain_refused_reserve(&mut tx, cmd).await?);
        };
        let held_after: i64 = pool.try_get("held_fen")?;
        let committed: i64 = pool.try_get("committed_fen")?;
        let sequence: i64 = pool.try_get("ledger_sequence")?;
        let previous_hash: String = pool.try_get("ledger_head_hash")?;
        let cap: Option<i64> = pool.try_get("beneficiary_cap_fen")?;
        let default_hold_seconds: i64 = pool.try_get("default_hold_seconds")?;
        let now_us: i64 = pool.try_get("now_us")?;
        debug_assert!(held_after + committed > 0);

        let usage = match self.accounting {
            Accounting::Conditional => sqlx::query(
                "INSERT INTO beneficiary_usage (pool_id, beneficiary_uscc, held_fen, committed_fen) \
                 VALUES ($1, $2, $3, 0) \
                 ON CONFLICT (pool_id, beneficiary_uscc) DO UPDATE \
                 SET held_fen = beneficiary_usage.held_fen + excluded.held_fen \
                 WHERE beneficiary_usage.held_fen + beneficiary_usage.committed_fen + excluded.held_fen <= $4 \
                 RETURNING held_fen",
            )
            .bind(cmd.pool_id.as_str())
            .bind(cmd.beneficiary.as_str())
            .bind(amount)
            .bind(cap.unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| ()),
            #[cfg(feature = "test-naive")]
            Accounting::Naive => self.naive_reserve_usage(&mut tx, cmd, cap, snapshot.as_ref().and_then(|s| s.1.clone())).await?,
        };
        if usage.is_none() {
            return Err(BudgetError::BeneficiaryCapExceeded);
        }

        let hold_seconds = cmd.hold_seconds.unwrap_or(default_hold_seconds);
        let reservation_id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(sqlx::AssertSqlSafe(self.sql.insert_reservation.clone()))
            .bind(&reservation_id)
            .bind(cmd.pool_id.as_str())
            .bind(cmd.beneficiary.as_str())
            .bind(&cmd.reference)
            .bind(amount)
            .bind(now_us)
            .bind(now_us + hold_seconds * 1_000_000)
            .fetch_one(&mut *tx)
            .await?;
        let reservation = reservation_row(&row)?;
        let entry = LedgerEntry {
            pool_id: cmd.pool_id.as_str().into(),
            sequence,
            kind: LedgerKind::Reserved.as_str().into(),
            reservation_id: reservation_id.clone(),
            beneficiary_uscc: cmd.beneficiary.as_str().into(),
            actor: actor.0.clone(),
            request_id: cmd.request_id.as_str().into(),
            amount_fen: amount,
            released_fen: 0,
            held_before_fen: held_after - amount,
            held_after_fen: held_after,
            committed_before_fen: committed,
            committed_after_fen: committed,
            created_us: now_us,
            previous_hash: String::new(),
        };
        self.append_ledger(&mut tx, entry, previous_hash).await?;
        let response = respond(&reservation);
        idempotency::store_response(&mut tx, &cmd.request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn explain_refused_reserve(
        &self,
        tx: &mut Transaction<'static, Any>,
        cmd: &Reserve,
    ) -> Result<BudgetError, BudgetError> {
        let Some(pool) = self.get_pool_in(tx, cmd.pool_id.as_str()).await? else {
            return Ok(BudgetError::PoolNotFound);
        };
        let amount = cmd.amount.fen();
        Ok(
            if pool.reservation_cap_fen.is_some_and(|cap| amount > cap) {
                BudgetError::ReservationCapExceeded
            } else if pool.beneficiary_cap_fen.is_some_and(|cap| amount > cap) {
                BudgetError::BeneficiaryCapExceeded
            } else {
                BudgetError::PoolExhausted
            },
        )
    }

    #[cfg(feature = "test-naive")]
    async fn naive_reserve_pool(
        &self,
        tx: &mut Transaction<'static, Any>,
        cmd: &Reserve,
        snapshot: Option<PoolRow>,
    ) -> Result<Option<AnyRow>, BudgetError> {
        // Deliberately wrong: the balance was read before the transaction (a snapshot that
        // other writers may already have changed), is checked in Rust, and is written back as an
        // absolute value. Concurrent reservations overwrite each other and overspend.
        let Some(pool) = snapshot else {
            return Ok(None);
        };
        let amount = cmd.amount.fen();
        if pool.total_fen - pool.held_fen - pool.committed_fen < amount {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE pools SET held_fen = $2, reservation_count = reservation_count + 1, \
             ledger_sequence = ledger_sequence + 1 WHERE pool_id = $1 \
             RETURNING held_fen, committed_fen, ledger_sequence, ledger_head_hash, beneficiary_cap_fen, \
             default_hold_seconds, {} AS now_us",
            self.sql.now
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cmd.pool_id.as_str())
            .bind((pool.held_fen + amount).min(pool.total_fen - pool.committed_fen))
            .fetch_optional(&mut **tx)
            .await?)
    }

    #[cfg(feature = "test-naive")]
    async fn naive_reserve_usage(
        &self,
        tx: &mut Transaction<'static, Any>,
        cmd: &Reserve,
        cap: Option<i64>,
        usage: Option<UsageRow>,
    ) -> Result<Option<()>, BudgetError> {
        let (held, committed) = usage
            .map(|u| (u.held_fen, u.committed_fen))
            .unwrap_or((0, 0));
        if cap.is_some_and(|cap| held + committed + cmd.amount.fen() > cap) {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO beneficiary_usage (pool_id, beneficiary_uscc, held_fen, committed_fen) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (pool_id, beneficiary_uscc) DO UPDATE SET held_fen = excluded.held_fen",
        )
        .bind(cmd.pool_id.as_str())
        .bind(cmd.beneficiary.as_str())
        .bind(held + cmd.amount.fen())
        .execute(&mut **tx)
        .await?;
        Ok(Some(()))
    }

    /// Commits a held reservation for `cmd.amount`; the remainder returns to the pool.
    pub async fn commit<R: prost::Message + Default>(
        &self,
        cmd: &Commit,
        fingerprint: &str,
        actor: &Actor,
        respond: impl FnOnce(&ReservationRow) -> R,
    ) -> Result<R, BudgetError> {
        self.settle(
            &cmd.request_id,
            "Commit",
            fingerprint,
            &cmd.reservation_id,
            Settlement::Commit(cmd.amount.fen()),
            actor,
            respond,
        )
        .await
    }

    /// Releases a held reservation.
    pub async fn release<R: prost::Message + Default>(
        &self,
        cmd: &Release,
        fingerprint: &str,
        actor: &Actor,
        respond: impl FnOnce(&ReservationRow) -> R,
    ) -> Result<R, BudgetError> {
        self.settle(
            &cmd.request_id,
            "Release",
            fingerprint,
            &cmd.reservation_id,
            Settlement::Release(cmd.reason.clone()),
            actor,
            respond,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle<R: prost::Message + Default>(
        &self,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
        reservation_id: &str,
        settlement: Settlement,
        actor: &Actor,
        respond: impl FnOnce(&ReservationRow) -> R,
    ) -> Result<R, BudgetError> {
        let mut tx = self.db.begin_write().await?;
        match idempotency::claim::<R>(&mut tx, request_id, operation, fingerprint, &self.sql.now)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Reused => return Err(BudgetError::RequestIdReused),
            Claim::Fresh => {}
        }
        let (state, commit_fen, reason) = match &settlement {
            Settlement::Commit(amount) => (ReservationState::Committed, *amount, None),
            Settlement::Release(reason) => (ReservationState::Released, 0, Some(reason.clone())),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(self.sql.settle_held.clone()))
            .bind(reservation_id)
            .bind(state.as_str())
            .bind(commit_fen)
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(self
                .explain_refused_settle(&mut tx, reservation_id, commit_fen)
                .await?);
        };
        let reservation = reservation_row(&row)?;
        let kind = if state == ReservationState::Committed {
            LedgerKind::Committed
        } else {
            LedgerKind::Released
        };
        self.move_settled_money(&mut tx, &reservation, kind, actor, request_id.as_str())
            .await?;
        let response = respond(&reservation);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn explain_refused_settle(
        &self,
        tx: &mut Transaction<'static, Any>,
        reservation_id: &str,
        commit_fen: i64,
    ) -> Result<BudgetError, BudgetError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(self.sql.reservation_expired.clone()))
            .bind(reservation_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Ok(BudgetError::ReservationNotFound);
        };
        let state: String = row.try_get("state")?;
        let held: i64 = row.try_get("held_fen")?;
        let past_expiry: i64 = row.try_get("past_expiry")?;
        Ok(if state != "HELD" || past_expiry == 1 {
            BudgetError::ReservationNotHeld
        } else if commit_fen > held {
            BudgetError::CommitExceedsHold
        } else {
            BudgetError::ReservationNotHeld
        })
    }

    /// Moves the money of a reservation that just left HELD: the pool's and the beneficiary's
    /// held amounts go down by the hold, committed goes up by the committed part; then the
    /// ledger entry is appended.
    async fn move_settled_money(
        &self,
        tx: &mut Transaction<'static, Any>,
        reservation: &ReservationRow,
        kind: LedgerKind,
        actor: &Actor,
        request_id: &str,
    ) -> Result<(), BudgetError> {
        let pool = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE pools SET held_fen = held_fen - $2, committed_fen = committed_fen + $3, \
             ledger_sequence = ledger_sequence + 1 WHERE pool_id = $1 \
             RETURNING held_fen, committed_fen, ledger_sequence, ledger_head_hash, {} AS now_us",
            self.sql.now
        )))
        .bind(&reservation.pool_id)
        .bind(reservation.held_fen)
        .bind(reservation.committed_fen)
        .fetch_one(&mut **tx)
        .await?;
        let held_after: i64 = pool.try_get("held_fen")?;
        let committed_after: i64 = pool.try_get("committed_fen")?;
        let sequence: i64 = pool.try_get("ledger_sequence")?;
        let previous_hash: String = pool.try_get("ledger_head_hash")?;
        let now_us: i64 = pool.try_get("now_us")?;
        let updated = sqlx::query(
            "UPDATE beneficiary_usage SET held_fen = held_fen - $3, committed_fen = committed_fen + $4 \
             WHERE pool_id = $1 AND beneficiary_uscc = $2",
        )
        .bind(&reservation.pool_id)
        .bind(&reservation.beneficiary_uscc)
        .bind(reservation.held_fen)
        .bind(reservation.committed_fen)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        assert_eq!(
            updated, 1,
            "every reservation has its beneficiary's usage row"
        );
        let (amount_fen, released_fen) = match kind {
            LedgerKind::Committed => (reservation.committed_fen, reservation.released_fen),
            _ => (reservation.released_fen, 0),
        };
        let entry = LedgerEntry {
            pool_id: reservation.pool_id.clone(),
            sequence,
            kind: kind.as_str().into(),
            reservation_id: reservation.reservation_id.clone(),
            beneficiary_uscc: reservation.beneficiary_uscc.clone(),
            actor: actor.0.clone(),
            request_id: request_id.into(),
            amount_fen,
            released_fen,
            held_before_fen: held_after + reservation.held_fen,
            held_after_fen: held_after,
            committed_before_fen: committed_after - reservation.committed_fen,
            committed_after_fen: committed_after,
            created_us: now_us,
            previous_hash: String::new(),
        };
        self.append_ledger(tx, entry, previous_hash).await
    }

    /// Expires up to `limit` held reservations past their expiry by the database clock, each
    /// in its own transaction. Returns how many expired.
    pub async fn expire_due(&self, limit: i64) -> Result<i64, BudgetError> {
        let ids: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql.due_for_expiry.clone()))
                .bind(limit)
                .fetch_all(&self.db.pool)
                .await?;
        let mut expired = 0;
        for id in ids {
            if self.expire_one(&id).await? {
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Expires one reservation if it is still HELD and past its expiry.
    pub async fn expire_one(&self, reservation_id: &str) -> Result<bool, BudgetError> {
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(self.sql.settle_expired.clone()))
            .bind(reservation_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let reservation = reservation_row(&row)?;
        self.move_settled_money(
            &mut tx,
            &reservation,
            LedgerKind::Expired,
            &Actor("system:expiry".into()),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_pool_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        pool_id: &str,
    ) -> Result<Option<PoolRow>, BudgetError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = $1"
        )))
        .bind(pool_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(pool_row).transpose()?)
    }

    /// One pool, read in a single statement (a consistent snapshot of its counters).
    pub async fn get_pool(&self, pool_id: &str) -> Result<Option<PoolRow>, BudgetError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = $1"
        )))
        .bind(pool_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let pool = row.as_ref().map(pool_row).transpose()?;
        if let Some(pool) = &pool {
            assert!(
                pool.held_fen + pool.committed_fen <= pool.total_fen,
                "pool {} overspent",
                pool.pool_id
            );
        }
        Ok(pool)
    }

    /// Pools after `after` in id order.
    pub async fn list_pools(&self, after: &str, limit: i64) -> Result<Vec<PoolRow>, BudgetError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POOL_COLUMNS} FROM pools WHERE pool_id > $1 ORDER BY pool_id LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().map(pool_row).collect::<Result<_, _>>()?)
    }

    /// One reservation.
    pub async fn get_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<ReservationRow>, BudgetError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE reservation_id = $1"
        )))
        .bind(reservation_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.as_ref().map(reservation_row).transpose()?)
    }

    /// Reservations of a pool, newest first, after the keyset position `(created_us, id)`.
    pub async fn list_reservations(
        &self,
        filter: &ReservationFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ReservationRow>, BudgetError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE pool_id = $1 \
             AND ($2 = '' OR beneficiary_uscc = $2) AND ($3 = '' OR reference = $3) AND ($4 = '' OR state = $4) \
             AND ($5 = 0 OR created_us < $6 OR (created_us = $6 AND reservation_id < $7)) \
             ORDER BY created_us DESC, reservation_id DESC LIMIT $8"
        )))
        .bind(&filter.pool_id)
        .bind(&filter.beneficiary_uscc)
        .bind(&filter.reference)
        .bind(filter.state.map(ReservationState::as_str).unwrap_or(""))
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| reservation_row(r).map_err(BudgetError::from))
            .collect()
    }

    /// A beneficiary's usage of a pool, with the pool's cap; `None` when the pool is unknown.
    pub async fn usage(&self, pool_id: &str, uscc: &str) -> Result<Option<UsageRow>, BudgetError> {
        let row = sqlx::query(
            "SELECT p.beneficiary_cap_fen, COALESCE(u.held_fen, 0) AS held_fen, \
             COALESCE(u.committed_fen, 0) AS committed_fen \
             FROM pools p LEFT JOIN beneficiary_usage u ON u.pool_id = p.pool_id AND u.beneficiary_uscc = $2 \
             WHERE p.pool_id = $1",
        )
        .bind(pool_id)
        .bind(uscc)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(UsageRow {
            held_fen: row.try_get("held_fen")?,
            committed_fen: row.try_get("committed_fen")?,
            cap_fen: row.try_get("beneficiary_cap_fen")?,
        }))
    }

    /// Ledger entries after `after_entry_id` in write order, optionally of one pool.
    pub async fn list_ledger(
        &self,
        pool_id: &str,
        after_entry_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEntry>, BudgetError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE ($1 = '' OR pool_id = $1) AND entry_id > $2 \
             ORDER BY entry_id LIMIT $3"
        )))
        .bind(pool_id)
        .bind(after_entry_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().map(ledger_row).collect::<Result<_, _>>()?)
    }

    /// Recomputes every pool's hash chain and checks its counters against its reservations.
    pub async fn verify_ledger(&self) -> Result<VerifyReport, BudgetError> {
        const BATCH: i64 = 1000;
        let mut report = VerifyReport::default();
        let mut heads: std::collections::HashMap<String, (i64, String)> = Default::default();
        let mut after = 0;
        loop {
            let entries = self.list_ledger("", after, BATCH).await?;
            for stored in &entries {
                after = stored.entry_id;
                report.entries_checked += 1;
                let entry = &stored.entry;
                let (last_sequence, last_hash) = heads
                    .get(&entry.pool_id)
                    .cloned()
                    .unwrap_or((0, GENESIS_HASH.to_owned()));
                let problem = if entry.sequence != last_sequence + 1 {
                    Some(format!(
                        "sequence {} follows {}",
                        entry.sequence, last_sequence
                    ))
                } else if entry.previous_hash != last_hash {
                    Some("previous_hash does not match the preceding entry".to_owned())
                } else if entry.hash() != stored.entry_hash {
                    Some("entry_hash does not match the entry's content".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    report.first_problem = Some((entry.pool_id.clone(), entry.sequence, problem));
                    return Ok(report);
                }
                heads.insert(
                    entry.pool_id.clone(),
                    (entry.sequence, stored.entry_hash.clone()),
                );
            }
            if (entries.len() as i64) < BATCH {
                break;
            }
        }
        for pool in self.list_pools("", i64::MAX).await? {
            let sums = sqlx::query(
                "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'HELD' THEN held_fen ELSE 0 END), 0) AS BIGINT) AS held, \
                 CAST(COALESCE(SUM(committed_fen), 0) AS BIGINT) AS committed FROM reservations WHERE pool_id = $1",
            )
            .bind(&pool.pool_id)
            .fetch_one(&self.db.pool)
            .await?;
            let held: i64 = sums.try_get("held")?;
            let committed: i64 = sums.try_get("committed")?;
            let (sequence, head) = heads
                .get(&pool.pool_id)
                .cloned()
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let stored_head: (i64, String) = sqlx::query_as(
                "SELECT ledger_sequence, ledger_head_hash FROM pools WHERE pool_id = $1",
            )
            .bind(&pool.pool_id)
            .fetch_one(&self.db.pool)
            .await?;
            let problem = if held != pool.held_fen || committed != pool.committed_fen {
                Some(format!(
                    "pool counters held={} committed={} differ from reservations held={held} committed={committed}",
                    pool.held_fen, pool.committed_fen
                ))
            } else if stored_head != (sequence, head) {
                Some(
                    "the pool's ledger head does not match its last entry (entries missing)"
                        .to_owned(),
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                report.first_problem = Some((pool.pool_id.clone(), sequence, problem));
                return Ok(report);
            }
        }
        Ok(report)
    }
}

/// How a held reservation is settled by a caller.
enum Settlement {
    Commit(i64),
    Release(String),
}
