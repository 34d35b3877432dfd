//! Application storage: plain functions over a connection or a write transaction. A change to
//! a claim, proposal or round loads the row under a lock (`FOR UPDATE` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` already holds the database's write lock), changes it in Rust, and writes
//! it back in the same transaction, together with its history entry, its outbox event and the
//! request's stored response.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use subsidy_common::RequestId;
use subsidy_common::db::{Backend, Db, DbError};
use subsidy_common::idempotency::{self, Claim};

use crate::domain::{
    ApplicationError, BenefitRating, ClaimState, ProposalCategory, ProposalState, RoundState,
};

/// A write transaction.
pub type Tx = Transaction<'static, Any>;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn decode_error(what: &str, value: &str) -> DbError {
    DbError::Other(sqlx::Error::Decode(
        format!("unknown {what} {value:?}").into(),
    ))
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// A registered enterprise as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnterpriseRow {
    /// USCC, upper case.
    pub uscc: String,
    /// Registered name.
    pub name: String,
    /// Contact e-mail.
    pub contact_email: String,
    /// Contact telephone, or empty.
    pub contact_phone: String,
    /// Registration division code.
    pub registration_division_code: String,
    /// Registered, µs.
    pub created_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
}

fn enterprise_row(row: &AnyRow) -> Result<EnterpriseRow, sqlx::Error> {
    Ok(EnterpriseRow {
        uscc: row.try_get("uscc")?,
        name: row.try_get("name")?,
        contact_email: row.try_get("contact_email")?,
        contact_phone: row.try_get("contact_phone")?,
        registration_division_code: row.try_get("registration_division_code")?,
        created_us: row.try_get("created_us")?,
        updated_us: row.try_get("updated_us")?,
    })
}

const ENTERPRISE_COLUMNS: &str =
    "uscc, name, contact_email, contact_phone, registration_division_code, created_us, updated_us";

/// A compute-voucher claim as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRow {
    /// Identifier, `claim-<uuid>`.
    pub claim_id: String,
    /// State.
    pub state: ClaimState,
    /// Buyer.
    pub enterprise_uscc: String,
    /// Pool funding the claim.
    pub pool_id: String,
    /// Seller.
    pub seller_uscc: String,
    /// Contract number.
    pub contract_number: String,
    /// Contract total, fen.
    pub contract_total_fen: i64,
    /// The contract as submitted (encoded `ComputeContract`).
    pub contract: Vec<u8>,
    /// The latest rules decision (encoded `DecisionSummary`).
    pub decision: Option<Vec<u8>>,
    /// Whether the claim must be (re-)evaluated before it can be funded.
    pub evaluation_due: bool,
    /// The entitlement of the latest eligible decision, fen.
    pub entitlement_fen: i64,
    /// The number of the current reservation attempt; part of the derived request id.
    pub reserve_attempt: i64,
    /// The amount of a reserve call whose outcome is not recorded yet, fen.
    pub reserve_intent_fen: Option<i64>,
    /// The budget reservation holding the claim's money.
    pub reservation_id: Option<String>,
    /// Held, fen.
    pub reserved_fen: i64,
    /// When the hold expires, µs (by the budget's clock).
    pub hold_expires_us: Option<i64>,
    /// Whether the recorded reservation must still be released.
    pub release_due: bool,
    /// Whether reservations made by an unrecorded reserve call must be looked for and released.
    pub orphan_check_due: bool,
    /// The amount of a commit call whose outcome is not recorded yet, fen.
    pub commit_intent_fen: Option<i64>,
    /// The approval request that started the commit.
    pub commit_request_id: Option<String>,
    /// The verified amount of the approval, fen.
    pub verified_paid_fen: Option<i64>,
    /// The benefit rating of the approval.
    pub benefit_rating: BenefitRating,
    /// Approved and committed, fen.
    pub approved_fen: i64,
    /// Reviewer.
    pub reviewer_id: String,
    /// Reviewer's note.
    pub review_note: String,
    /// Rejection reason (stored name), or empty.
    pub rejection_reason: String,
    /// Withdrawal reason, or empty.
    pub withdrawal_reason: String,
    /// Payment reference, or empty.
    pub payment_reference: String,
    /// Payment date `YYYY-MM-DD`, or empty.
    pub payment_date: String,
    /// Paid, fen.
    pub disbursed_fen: i64,
    /// Who recorded the payment.
    pub disbursed_by: String,
    /// When the payment was recorded, µs.
    pub disbursed_us: Option<i64>,
    /// When the current step began, µs; the reconciler leaves younger steps to their caller.
    pub step_us: i64,
    /// Who started the current step (recorded in the history when the step completes).
    pub step_actor: String,
    /// Submitted, µs.
    pub submit_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
    /// Reviewed, µs.
    pub reviewed_us: Option<i64>,
    /// Number of history entries.
    pub revision: i64,
}

const CLAIM_COLUMNS: &str = "claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, \
     contract_total_fen, contract, decision, evaluation_due, entitlement_fen, reserve_attempt, \
     reserve_intent_fen, reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, \
     commit_intent_fen, commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, \
     review_note, rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, \
     disbursed_by, disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision";

fn claim_row(row: &AnyRow) -> Result<ClaimRow, DbError> {
    let state: String = row.try_get("state")?;
    let rating: String = row.try_get("benefit_rating")?;
    Ok(ClaimRow {
        claim_id: row.try_get("claim_id")?,
        state: ClaimState::parse(&state).ok_or_else(|| decode_error("claim state", &state))?,
        enterprise_uscc: row.try_get("enterprise_uscc")?,
        pool_id: row.try_get("pool_id")?,
        seller_uscc: row.try_get("seller_uscc")?,
        contract_number: row.try_get("contract_number")?,
        contract_total_fen: row.try_get("contract_total_fen")?,
        contract: row.try_get("contract")?,
        decision: row.try_get("decision")?,
        evaluation_due: row.try_get::<i64, _>("evaluation_due")? == 1,
        entitlement_fen: row.try_get("entitlement_fen")?,
        reserve_attempt: row.try_get("reserve_attempt")?,
        reserve_intent_fen: row.try_get("reserve_intent_fen")?,
        reservation_id: row.try_get("reservation_id")?,
        reserved_fen: row.try_get("reserved_fen")?,
        hold_expires_us: row.try_get("hold_expires_us")?,
        release_due: row.try_get::<i64, _>("release_due")? == 1,
        orphan_check_due: row.try_get::<i64, _>("orphan_check_due")? == 1,
        commit_intent_fen: row.try_get("commit_intent_fen")?,
        commit_request_id: row.try_get("commit_request_id")?,
        verified_paid_fen: row.try_get("verified_paid_fen")?,
        benefit_rating: BenefitRating::parse(&rating)
            .ok_or_else(|| decode_error("benefit rating", &rating))?,
        approved_fen: row.try_get("approved_fen")?,
        reviewer_id: row.try_get("reviewer_id")?,
        review_note: row.try_get("review_note")?,
        rejection_reason: row.try_get("rejection_reason")?,
        withdrawal_reason: row.try_get("withdrawal_reason")?,
        payment_reference: row.try_get("payment_reference")?,
        payment_date: row.try_get("payment_date")?,
        disbursed_fen: row.try_get("disbursed_fen")?,
        disbursed_by: row.try_get("disbursed_by")?,
        disbursed_us: row.try_get("disbursed_us")?,
        step_us: row.try_get("step_us")?,
        step_actor: row.try_get("step_actor")?,
        submit_us: row.try_get("submit_us")?,
        updated_us: row.try_get("updated_us")?,
        reviewed_us: row.try_get("reviewed_us")?,
        revision: row.try_get("revision")?,
    })
}

/// A selection round as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRow {
    /// Identifier, `round-<uuid>`.
    pub round_id: String,
    /// Pool funding the awards.
    pub pool_id: String,
    /// Title.
    pub title: String,
    /// Stored state.
    pub state: RoundState,
    /// Submission deadline, µs.
    pub deadline_us: i64,
    /// Creator.
    pub created_by: String,
    /// Created, µs.
    pub created_us: i64,
    /// Closed early, µs.
    pub closed_us: Option<i64>,
    /// When finalisation began, µs.
    pub finalize_started_us: Option<i64>,
    /// The rules service's ranking (encoded `RankSelectionRoundResponse`), fixed once made.
    pub ranking: Option<Vec<u8>>,
    /// Identifier of the ranking decision.
    pub ranking_decision_id: String,
    /// Finalised, µs.
    pub finalized_us: Option<i64>,
    /// Awards made.
    pub award_count: i64,
    /// Total awarded, fen.
    pub awarded_total_fen: i64,
}

const ROUND_COLUMNS: &str = "round_id, pool_id, title, state, deadline_us, created_by, created_us, closed_us, \
     finalize_started_us, ranking, ranking_decision_id, finalized_us, award_count, awarded_total_fen";

fn round_row(row: &AnyRow) -> Result<RoundRow, DbError> {
    let state: String = row.try_get("state")?;
    Ok(RoundRow {
        round_id: row.try_get("round_id")?,
        pool_id: row.try_get("pool_id")?,
        title: row.try_get("title")?,
        state: RoundState::parse(&state).ok_or_else(|| decode_error("round state", &state))?,
        deadline_us: row.try_get("deadline_us")?,
        created_by: row.try_get("created_by")?,
        created_us: row.try_get("created_us")?,
        closed_us: row.try_get("closed_us")?,
        finalize_started_us: row.try_get("finalize_started_us")?,
        ranking: row.try_get("ranking")?,
        ranking_decision_id: row.try_get("ranking_decision_id")?,
        finalized_us: row.try_get("finalized_us")?,
        award_count: row.try_get("award_count")?,
        awarded_total_fen: row.try_get("awarded_total_fen")?,
    })
}

/// A data-infrastructure proposal as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalRow {
    /// Identifier, `proposal-<uuid>`.
    pub proposal_id: String,
    /// Round.
    pub round_id: String,
    /// State.
    pub state: ProposalState,
    /// Applicant.
    pub applicant_uscc: String,
    /// Category.
    pub category: ProposalCategory,
    /// Title.
    pub title: String,
    /// Requested, fen.
    pub requested_fen: i64,
    /// Summary.
    pub summary: String,
    /// Attachment digests (length-delimited `AttachmentDigest` messages).
    pub attachments: Vec<u8>,
    /// The screening decision (encoded `DecisionSummary`).
    pub decision: Option<Vec<u8>>,
    /// Rank in the round's ranking, 0 when not ranked.
    pub rank: i64,
    /// The award the ranking gives, fen (0 when none).
    pub planned_award_fen: i64,
    /// The award's reservation.
    pub reservation_id: Option<String>,
    /// Awarded and committed, fen.
    pub awarded_fen: i64,
    /// Withdrawal reason.
    pub withdrawal_reason: String,
    /// Payment reference.
    pub payment_reference: String,
    /// Payment date `YYYY-MM-DD`.
    pub payment_date: String,
    /// Paid, fen.
    pub disbursed_fen: i64,
    /// Who recorded the payment.
    pub disbursed_by: String,
    /// When the payment was recorded, µs.
    pub disbursed_us: Option<i64>,
    /// When the current step began, µs.
    pub step_us: i64,
    /// Submitted, µs.
    pub submit_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
    /// Number of history entries.
    pub revision: i64,
}

const PROPOSAL_COLUMNS: &str = "proposal_id, round_id, state, applicant_uscc, category, title, requested_fen, \
     summary, attachments, decision, rank, planned_award_fen, reservation_id, awarded_fen, withdrawal_reason, \
     payment_reference, payment_date, disbursed_fen, disbursed_by, disbursed_us, step_us, submit_us, \
     updated_us, revision";

fn proposal_row(row: &AnyRow) -> Result<ProposalRow, DbError> {
    let state: String = row.try_get("state")?;
    let category: String = row.try_get("category")?;
    Ok(ProposalRow {
        proposal_id: row.try_get("proposal_id")?,
        round_id: row.try_get("round_id")?,
        state: ProposalState::parse(&state)
            .ok_or_else(|| decode_error("proposal state", &state))?,
        applicant_uscc: row.try_get("applicant_uscc")?,
        category: ProposalCategory::parse(&category)
            .ok_or_else(|| decode_error("category", &category))?,
        title: row.try_get("title")?,
        requested_fen: row.try_get("requested_fen")?,
        summary: row.try_get("summary")?,
        attachments: row.try_get("attachments")?,
        decision: row.try_get("decision")?,
        rank: row.try_get("rank")?,
        planned_award_fen: row.try_get("planned_award_fen")?,
        reservation_id: row.try_get("reservation_id")?,
        awarded_fen: row.try_get("awarded_fen")?,
        withdrawal_reason: row.try_get("withdrawal_reason")?,
        payment_reference: row.try_get("payment_reference")?,
        payment_date: row.try_get("payment_date")?,
        disbursed_fen: row.try_get("disbursed_fen")?,
        disbursed_by: row.try_get("disbursed_by")?,
        disbursed_us: row.try_get("disbursed_us")?,
        step_us: row.try_get("step_us")?,
        submit_us: row.try_get("submit_us")?,
        updated_us: row.try_get("updated_us")?,
        revision: row.try_get("revision")?,
    })
}

/// One expert's score as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreRow {
    /// Expert.
    pub expert_id: String,
    /// Expert's organisation.
    pub expert_organization_uscc: String,
    /// Score 0–100.
    pub score: i64,
    /// Comment.
    pub comment: String,
    /// Given or last replaced, µs.
    pub scored_us: i64,
}

/// One history entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// Claim or proposal.
    pub application_id: String,
    /// Position from 1.
    pub sequence: i64,
    /// State before; `None` for the creating entry.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Which request, or empty.
    pub request_id: String,
    /// When, µs.
    pub created_us: i64,
}

/// One outbox event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Relay order.
    pub outbox_seq: i64,
    /// Event identifier.
    pub event_id: String,
    /// Encoded `subsidy.notification.v1.Event`.
    pub event: Vec<u8>,
    /// Attempts so far.
    pub attempt_count: i64,
}

/// The state of a request id, as far as this service knows it.
#[derive(Debug)]
pub enum RequestStatus<R> {
    /// Never seen.
    New,
    /// Done; here is the original response.
    Replay(R),
    /// Started and not finished; the work concerns this subject.
    InProgress(String),
    /// Used for a different request.
    Reused,
}

/// Filters of a claim listing.
#[derive(Clone, Debug, Default)]
pub struct ClaimFilter {
    /// State, or none.
    pub state: Option<ClaimState>,
    /// Buyer, or empty.
    pub enterprise_uscc: String,
    /// Submitted at or after, µs.
    pub submit_start_us: Option<i64>,
    /// Submitted before, µs.
    pub submit_end_us: Option<i64>,
}

/// Filters of a proposal listing.
#[derive(Clone, Debug, Default)]
pub struct ProposalFilter {
    /// Round, or empty.
    pub round_id: String,
    /// State, or none.
    pub state: Option<ProposalState>,
    /// Applicant, or empty.
    pub applicant_uscc: String,
}

/// The application service's database and its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: String,
}

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql().to_owned();
        Store { db, now }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The SQL of the database clock in microseconds.
    pub fn now_sql(&self) -> &str {
        &self.now
    }

    /// Applies the application migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        self.db.begin_write().await
    }

    /// A pooled connection for reads.
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Any>, DbError> {
        Ok(self.db.pool.acquire().await?)
    }

    fn for_update(&self) -> &'static str {
        match self.db.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// The database clock, µs.
    pub async fn now_us(&self, conn: &mut AnyConnection) -> Result<i64, DbError> {
        let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {}", self.now)))
            .fetch_one(conn)
            .await?;
        Ok(now)
    }

    // ----------------------------------------------------------------------------------------
    // Requests
    // ----------------------------------------------------------------------------------------

    /// What this service knows of `request_id` for `operation` with `fingerprint`.
    pub async fn request_status<R: prost::Message + Default>(
        &self,
        conn: &mut AnyConnection,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
    ) -> Result<RequestStatus<R>, DbError> {
        let done = sqlx::query(
            "SELECT operation, fingerprint, response FROM idempotency_keys WHERE request_id = $1",
        )
        .bind(request_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = done {
            let stored_operation: String = row.try_get("operation")?;
            let stored_fingerprint: String = row.try_get("fingerprint")?;
            if stored_operation != operation || stored_fingerprint != fingerprint {
                return Ok(RequestStatus::Reused);
            }
            let bytes: Option<Vec<u8>> = row.try_get("response")?;
            let bytes = bytes.expect("a committed idempotency key always has its response");
            let response = R::decode(bytes.as_slice())
                .map_err(|e| DbError::Other(sqlx::Error::Decode(Box::new(e))))?;
            return Ok(RequestStatus::Replay(response));
        }
        let started = sqlx::query(
            "SELECT operation, fingerprint, subject_id FROM request_progress WHERE request_id = $1",
        )
        .bind(request_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = started {
            let stored_operation: String = row.try_get("operation")?;
            let stored_fingerprint: String = row.try_get("fingerprint")?;
            if stored_operation != operation || stored_fingerprint != fingerprint {
                return Ok(RequestStatus::Reused);
            }
            return Ok(RequestStatus::InProgress(row.try_get("subject_id")?));
        }
        Ok(RequestStatus::New)
    }

    /// Records that `request_id` started work on `subject_id` (in the transaction that starts
    /// it). Returns false when the id was recorded already.
    pub async fn record_progress(
        &self,
        tx: &mut Tx,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
        subject_id: &str,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO request_progress (request_id, operation, fingerprint, subject_id, created_us) \
             VALUES ($1, $2, $3, $4, {}) ON CONFLICT (request_id) DO NOTHING",
            self.now
        )))
        .bind(request_id.as_str())
        .bind(operation)
        .bind(fingerprint)
        .bind(subject_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Claims `request_id` in `tx` for a one-transaction request. `Ok(Some(response))` is a
    /// replay to return as it is (the caller rolls back); `Ok(None)` means do the work and
    /// call [`Store::store_response`] before committing.
    pub async fn start_request<R: prost::Message + Default>(
        &self,
        tx: &mut Tx,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
    ) -> Result<Option<R>, ApplicationError> {
        let started: Option<(String, String)> = sqlx::query_as(
            "SELECT operation, fingerprint FROM request_progress WHERE request_id = $1",
        )
        .bind(request_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((stored_operation, stored_fingerprint)) = started
            && (stored_operation != operation || stored_fingerprint != fingerprint)
        {
            return Err(ApplicationError::RequestIdReused);
        }
        match idempotency::claim::<R>(tx, request_id, operation, fingerprint, &self.now).await? {
            Claim::Fresh => Ok(None),
            Claim::Replay(response) => Ok(Some(response)),
            Claim::Reused => Err(ApplicationError::RequestIdReused),
        }
    }

    /// Stores the response of a request claimed with [`Store::start_request`].
    pub async fn store_response<R: prost::Message>(
        &self,
        tx: &mut Tx,
        request_id: &RequestId,
        response: &R,
    ) -> Result<(), DbError> {
        idempotency::store_response(tx, request_id, response).await
    }

    // ----------------------------------------------------------------------------------------
    // Enterprises
    // ----------------------------------------------------------------------------------------

    /// Inserts an enterprise; false when its USCC is registered already.
    pub async fn insert_enterprise(
        &self,
        tx: &mut Tx,
        enterprise: &EnterpriseRow,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO enterprises (uscc, name, contact_email, contact_phone, registration_division_code, \
             created_us, updated_us) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uscc) DO NOTHING",
        )
        .bind(&enterprise.uscc)
        .bind(&enterprise.name)
        .bind(&enterprise.contact_email)
        .bind(&enterprise.contact_phone)
        .bind(&enterprise.registration_division_code)
        .bind(enterprise.created_us)
        .bind(enterprise.updated_us)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// One enterprise.
    pub async fn get_enterprise(
        &self,
        conn: &mut AnyConnection,
        uscc: &str,
    ) -> Result<Option<EnterpriseRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTERPRISE_COLUMNS} FROM enterprises WHERE uscc = $1"
        )))
        .bind(uscc)
        .fetch_optional(conn)
        .await?;
        Ok(row.as_ref().map(enterprise_row).transpose()?)
    }

    /// Replaces an enterprise's contact details; the changed row, or `None` when unknown.
    pub async fn update_enterprise_contact(
        &self,
        tx: &mut Tx,
        uscc: &str,
        email: &str,
        phone: &str,
    ) -> Result<Option<EnterpriseRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE enterprises SET contact_email = $2, contact_phone = $3, updated_us = {} \
             WHERE uscc = $1 RETURNING {ENTERPRISE_COLUMNS}",
            self.now
        )))
        .bind(uscc)
        .bind(email)
        .bind(phone)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(enterprise_row).transpose()?)
    }

    /// Enterprises after `after` in USCC order whose division code starts with `prefix`.
    pub async fn list_enterprises(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<EnterpriseRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTERPRISE_COLUMNS} FROM enterprises \
             WHERE registration_division_code LIKE $1 AND uscc > $2 ORDER BY uscc LIMIT $3"
        )))
        .bind(format!("{prefix}%"))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().map(enterprise_row).collect::<Result<_, _>>()?)
    }

    // ----------------------------------------------------------------------------------------
    // Claims
    // ----------------------------------------------------------------------------------------

    /// Inserts a new claim; false when it conflicts with a live claim on the same contract.
    pub async fn insert_claim(&self, tx: &mut Tx, claim: &ClaimRow) -> Result<bool, DbError> {
        let placeholders = (1..=38)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let query = format!(
            "INSERT INTO claims ({CLAIM_COLUMNS}, row_version) VALUES ({placeholders}, 0) ON CONFLICT DO NOTHING"
        );
        let inserted = bind_claim(sqlx::query(sqlx::AssertSqlSafe(query)), claim)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Whether a claim that was not withdrawn exists for the contract.
    pub async fn contract_claimed(
        &self,
        tx: &mut Tx,
        seller_uscc: &str,
        contract_number: &str,
    ) -> Result<bool, DbError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE seller_uscc = $1 AND contract_number = $2 \
             AND state <> 'WITHDRAWN' LIMIT 1",
        )
        .bind(seller_uscc)
        .bind(contract_number)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(found.is_some())
    }

    /// One claim, read.
    pub async fn get_claim(
        &self,
        conn: &mut AnyConnection,
        claim_id: &str,
    ) -> Result<Option<ClaimRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE claim_id = $1"
        )))
        .bind(claim_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(claim_row).transpose()
    }

    /// One claim, locked for change in `tx`.
    pub async fn lock_claim(
        &self,
        tx: &mut Tx,
        claim_id: &str,
    ) -> Result<Option<ClaimRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE claim_id = $1{}",
            self.for_update()
        )))
        .bind(claim_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(claim_row).transpose()
    }

    /// Writes back a claim locked in `tx`.
    pub async fn save_claim(&self, tx: &mut Tx, claim: &ClaimRow) -> Result<(), DbError> {
        let sets = CLAIM_COLUMNS
            .split(", ")
            .enumerate()
            .skip(1)
            .map(|(i, column)| format!("{} = ${}", column.trim(), i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let query =
            format!("UPDATE claims SET {sets}, row_version = row_version + 1 WHERE claim_id = $1");
        let updated = bind_claim(sqlx::query(sqlx::AssertSqlSafe(query)), claim)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        assert_eq!(updated, 1, "a locked claim is updated exactly once");
        Ok(())
    }

    /// Claims, newest submission first, after the keyset position `(submit_us, claim_id)`.
    pub async fn list_claims(
        &self,
        filter: &ClaimFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ClaimRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE ($1 = '' OR state = $1) \
             AND ($2 = '' OR enterprise_uscc = $2) AND ($3 = 0 OR submit_us >= $4) AND ($5 = 0 OR submit_us < $6) \
             AND ($7 = 0 OR submit_us < $8 OR (submit_us = $8 AND claim_id < $9)) \
             ORDER BY submit_us DESC, claim_id DESC LIMIT $10"
        )))
        .bind(filter.state.map(ClaimState::as_str).unwrap_or(""))
        .bind(&filter.enterprise_uscc)
        .bind(i64::from(filter.submit_start_us.is_some()))
        .bind(filter.submit_start_us.unwrap_or(0))
        .bind(i64::from(filter.submit_end_us.is_some()))
        .bind(filter.submit_end_us.unwrap_or(0))
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(claim_row).collect()
    }

    /// The 1-based position of a WAITLISTED claim in its pool's line; 0 for other states.
    pub async fn waitlist_position(
        &self,
        conn: &mut AnyConnection,
        claim: &ClaimRow,
    ) -> Result<i64, DbError> {
        if claim.state != ClaimState::Waitlisted {
            return Ok(0);
        }
        let ahead: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' \
             AND (submit_us < $2 OR (submit_us = $2 AND claim_id < $3))",
        )
        .bind(&claim.pool_id)
        .bind(claim.submit_us)
        .bind(&claim.claim_id)
        .fetch_one(conn)
        .await?;
        Ok(ahead + 1)
    }

    /// Whether claims submitted before `claim` wait for money in its pool.
    pub async fn waitlisted_before(
        &self,
        conn: &mut AnyConnection,
        claim: &ClaimRow,
    ) -> Result<bool, DbError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' \
             AND (submit_us < $2 OR (submit_us = $2 AND claim_id < $3)) LIMIT 1",
        )
        .bind(&claim.pool_id)
        .bind(claim.submit_us)
        .bind(&claim.claim_id)
        .fetch_optional(conn)
        .await?;
        Ok(found.is_some())
    }

    /// The oldest WAITLISTED claim of a pool.
    pub async fn waitlist_head(&self, pool_id: &str) -> Result<Option<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' \
             ORDER BY submit_us, claim_id LIMIT 1",
        )
        .bind(pool_id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The pools that have a waitlist.
    pub async fn waitlisted_pools(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT pool_id FROM claims WHERE state = 'WAITLISTED' ORDER BY pool_id",
        )
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Claims with a step older than `stale_before_us` left to finish: evaluation or
    /// reservation of a SUBMITTED claim, an unrecorded reserve or commit, a release or an
    /// orphan sweep.
    pub async fn claims_with_unfinished_steps(
        &self,
        stale_before_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE (state = 'SUBMITTED' OR reserve_intent_fen IS NOT NULL \
             OR commit_intent_fen IS NOT NULL OR release_due = 1 OR orphan_check_due = 1) \
             AND step_us <= $1 ORDER BY step_us, claim_id LIMIT $2",
        )
        .bind(stale_before_us)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// PENDING_REVIEW claims whose hold should have expired by `now_us`.
    pub async fn holds_past_expiry(&self, now_us: i64, limit: i64) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE state = 'PENDING_REVIEW' AND hold_expires_us <= $1 \
             ORDER BY hold_expires_us, claim_id LIMIT $2",
        )
        .bind(now_us)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }

    // ----------------------------------------------------------------------------------------
    // Rounds and proposals
    // ----------------------------------------------------------------------------------------

    /// Inserts a round.
    pub async fn insert_round(&self, tx: &mut Tx, round: &RoundRow) -> Result<(), DbError> {
        bind_round(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO selection_rounds ({ROUND_COLUMNS}, row_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0)"
            ))),
            round,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// One round, read.
    pub async fn get_round(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
    ) -> Result<Option<RoundRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM selection_rounds WHERE round_id = $1"
        )))
        .bind(round_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(round_row).transpose()
    }

    /// One round, locked for change in `tx`.
    pub async fn lock_round(
        &self,
        tx: &mut Tx,
        round_id: &str,
    ) -> Result<Option<RoundRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM selection_rounds WHERE round_id = $1{}",
            self.for_update()
        )))
        .bind(round_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(round_row).transpose()
    }

    /// Writes back a round locked in `tx`.
    pub async fn save_round(&self, tx: &mut Tx, round: &RoundRow) -> Result<(), DbError> {
        let updated = bind_round(
            sqlx::query(
                "UPDATE selection_rounds SET pool_id = $2, title = $3, state = $4, deadline_us = $5, \
                 created_by = $6, created_us = $7, closed_us = $8, finalize_started_us = $9, ranking = $10, \
                 ranking_decision_id = $11, finalized_us = $12, award_count = $13, awarded_total_fen = $14, \
                 row_version = row_version + 1 WHERE round_id = $1",
            ),
            round,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        assert_eq!(updated, 1, "a locked round is updated exactly once");
        Ok(())
    }

    /// Rounds, newest first, after `(created_us, round_id)`, by pool and reported state.
    pub async fn list_rounds(
        &self,
        pool_id: &str,
        state: Option<RoundState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<RoundRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        // The reported state: OPEN past its deadline and FINALIZING read as CLOSED.
        let state_filter = match state {
            None => "1 = 1".to_owned(),
            Some(RoundState::Open) => format!("state = 'OPEN' AND deadline_us > {}", self.now),
            Some(RoundState::Closed) | Some(RoundState::Finalizing) => format!(
                "(state IN ('CLOSED', 'FINALIZING') OR (state = 'OPEN' AND deadline_us <= {}))",
                self.now
            ),
            Some(RoundState::Finalized) => "state = 'FINALIZED'".to_owned(),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUND_COLUMNS} FROM selection_rounds WHERE ($1 = '' OR pool_id = $1) AND {state_filter} \
             AND ($2 = 0 OR created_us < $3 OR (created_us = $3 AND round_id < $4)) \
             ORDER BY created_us DESC, round_id DESC LIMIT $5"
        )))
        .bind(pool_id)
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(round_row).collect()
    }

    /// Rounds whose finalisation began before `stale_before_us` and is not finished.
    pub async fn rounds_finalizing(&self, stale_before_us: i64) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT round_id FROM selection_rounds WHERE state = 'FINALIZING' AND finalize_started_us <= $1 \
             ORDER BY finalize_started_us, round_id",
        )
        .bind(stale_before_us)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// The number of proposals submitted into a round.
    pub async fn proposal_count(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
    ) -> Result<i64, DbError> {
        Ok(
            sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM proposals WHERE round_id = $1",
            )
            .bind(round_id)
            .fetch_one(conn)
            .await?,
        )
    }

    /// Inserts a proposal.
    pub async fn insert_proposal(
        &self,
        tx: &mut Tx,
        proposal: &ProposalRow,
    ) -> Result<(), DbError> {
        let placeholders = (1..=24)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        bind_proposal(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO proposals ({PROPOSAL_COLUMNS}, row_version) VALUES ({placeholders}, 0)"
            ))),
            proposal,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// One proposal, read.
    pub async fn get_proposal(
        &self,
        conn: &mut AnyConnection,
        proposal_id: &str,
    ) -> Result<Option<ProposalRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE proposal_id = $1"
        )))
        .bind(proposal_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(proposal_row).transpose()
    }

    /// One proposal, locked for change in `tx`.
    pub async fn lock_proposal(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
    ) -> Result<Option<ProposalRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE proposal_id = $1{}",
            self.for_update()
        )))
        .bind(proposal_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(proposal_row).transpose()
    }

    /// Writes back a proposal locked in `tx`.
    pub async fn save_proposal(&self, tx: &mut Tx, proposal: &ProposalRow) -> Result<(), DbError> {
        let sets = PROPOSAL_COLUMNS
            .split(", ")
            .enumerate()
            .skip(1)
            .map(|(i, column)| format!("{} = ${}", column.trim(), i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let updated = bind_proposal(
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE proposals SET {sets}, row_version = row_version + 1 WHERE proposal_id = $1"
            ))),
            proposal,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        assert_eq!(updated, 1, "a locked proposal is updated exactly once");
        Ok(())
    }

    /// The proposals of a round in submission order, locked when `tx` is a write transaction
    /// of the round's finalisation.
    pub async fn round_proposals(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
        lock: bool,
    ) -> Result<Vec<ProposalRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE round_id = $1 ORDER BY submit_us, proposal_id{}",
            if lock { self.for_update() } else { "" }
        )))
        .bind(round_id)
        .fetch_all(conn)
        .await?;
        rows.iter().map(proposal_row).collect()
    }

    /// Proposals, newest submission first, after `(submit_us, proposal_id)`.
    pub async fn list_proposals(
        &self,
        filter: &ProposalFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ProposalRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE ($1 = '' OR round_id = $1) \
             AND ($2 = '' OR state = $2) AND ($3 = '' OR applicant_uscc = $3) \
             AND ($4 = 0 OR submit_us < $5 OR (submit_us = $5 AND proposal_id < $6)) \
             ORDER BY submit_us DESC, proposal_id DESC LIMIT $7"
        )))
        .bind(&filter.round_id)
        .bind(filter.state.map(ProposalState::as_str).unwrap_or(""))
        .bind(&filter.applicant_uscc)
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(proposal_row).collect()
    }

    /// SUBMITTED proposals whose screening began before `stale_before_us`.
    pub async fn proposals_unscreened(
        &self,
        stale_before_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT proposal_id FROM proposals WHERE state = 'SUBMITTED' AND step_us <= $1 \
             ORDER BY step_us, proposal_id LIMIT $2",
        )
        .bind(stale_before_us)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Records or replaces one expert's score.
    pub async fn upsert_score(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
        score: &ScoreRow,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO proposal_scores (proposal_id, expert_id, expert_organization_uscc, score, comment, scored_us) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (proposal_id, expert_id) DO UPDATE SET \
             expert_organization_uscc = excluded.expert_organization_uscc, score = excluded.score, \
             comment = excluded.comment, scored_us = excluded.scored_us",
        )
        .bind(proposal_id)
        .bind(&score.expert_id)
        .bind(&score.expert_organization_uscc)
        .bind(score.score)
        .bind(&score.comment)
        .bind(score.scored_us)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The scores of a proposal in order of expert.
    pub async fn scores(
        &self,
        conn: &mut AnyConnection,
        proposal_id: &str,
    ) -> Result<Vec<ScoreRow>, DbError> {
        let rows = sqlx::query(
            "SELECT expert_id, expert_organization_uscc, score, comment, scored_us FROM proposal_scores \
             WHERE proposal_id = $1 ORDER BY expert_id",
        )
        .bind(proposal_id)
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ScoreRow {
                    expert_id: row.try_get("expert_id")?,
                    expert_organization_uscc: row.try_get("expert_organization_uscc")?,
                    score: row.try_get("score")?,
                    comment: row.try_get("comment")?,
                    scored_us: row.try_get("scored_us")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    // ----------------------------------------------------------------------------------------
    // History and outbox
    // ----------------------------------------------------------------------------------------

    /// Appends a history entry.
    pub async fn append_history(&self, tx: &mut Tx, entry: &HistoryRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO history (application_id, sequence, from_state, to_state, actor, reason, request_id, \
             created_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&entry.application_id)
        .bind(entry.sequence)
        .bind(&entry.from_state)
        .bind(&entry.to_state)
        .bind(&entry.actor)
        .bind(&entry.reason)
        .bind(&entry.request_id)
        .bind(entry.created_us)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// History entries of an application after `after_sequence`, in order.
    pub async fn history(
        &self,
        application_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, DbError> {
        let rows = sqlx::query(
            "SELECT application_id, sequence, from_state, to_state, actor, reason, request_id, created_us \
             FROM history WHERE application_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(application_id)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HistoryRow {
                    application_id: row.try_get("application_id")?,
                    sequence: row.try_get("sequence")?,
                    from_state: row.try_get("from_state")?,
                    to_state: row.try_get("to_state")?,
                    actor: row.try_get("actor")?,
                    reason: row.try_get("reason")?,
                    request_id: row.try_get("request_id")?,
                    created_us: row.try_get("created_us")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Appends an event to the outbox.
    pub async fn append_event(
        &self,
        tx: &mut Tx,
        event_id: &str,
        event: &[u8],
        created_us: i64,
    ) -> Result<(), DbError> {
        sqlx::query("INSERT INTO outbox (event_id, event, created_us) VALUES ($1, $2, $3)")
            .bind(event_id)
            .bind(event)
            .bind(created_us)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The oldest undelivered events, in order.
    pub async fn undelivered_events(&self, limit: i64) -> Result<Vec<OutboxRow>, DbError> {
        let rows = sqlx::query(
            "SELECT outbox_seq, event_id, event, attempt_count FROM outbox WHERE delivered_us IS NULL \
             ORDER BY outbox_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    outbox_seq: row.try_get("outbox_seq")?,
                    event_id: row.try_get("event_id")?,
                    event: row.try_get("event")?,
                    attempt_count: row.try_get("attempt_count")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Marks an event delivered (or dead-lettered, with the error that made it undeliverable).
    pub async fn mark_event_done(
        &self,
        outbox_seq: i64,
        dead_letter_error: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET delivered_us = {}, attempt_count = attempt_count + 1, \
             dead_lettered = $2, last_error = $3 WHERE outbox_seq = $1",
            self.now
        )))
        .bind(outbox_seq)
        .bind(flag(dead_letter_error.is_some()))
        .bind(dead_letter_error.unwrap_or(""))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records a failed delivery attempt.
    pub async fn mark_event_failed(&self, outbox_seq: i64, error: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE outbox SET attempt_count = attempt_count + 1, last_error = $2 WHERE outbox_seq = $1",
        )
        .bind(outbox_seq)
        .bind(error)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

fn bind_claim<'q>(query: AnyQuery<'q>, c: &ClaimRow) -> AnyQuery<'q> {
    query
        .bind(c.claim_id.clone())
        .bind(c.state.as_str())
        .bind(c.enterprise_uscc.clone())
        .bind(c.pool_id.clone())
        .bind(c.seller_uscc.clone())
        .bind(c.contract_number.clone())
        .bind(c.contract_total_fen)
        .bind(c.contract.clone())
        .bind(c.decision.clone())
        .bind(flag(c.evaluation_due))
        .bind(c.entitlement_fen)
        .bind(c.reserve_attempt)
        .bind(c.reserve_intent_fen)
        .bind(c.reservation_id.clone())
        .bind(c.reserved_fen)
        .bind(c.hold_expires_us)
        .bind(flag(c.release_due))
        .bind(flag(c.orphan_check_due))
        .bind(c.commit_intent_fen)
        .bind(c.commit_request_id.clone())
        .bind(c.verified_paid_fen)
        .bind(c.benefit_rating.as_str())
        .bind(c.approved_fen)
        .bind(c.reviewer_id.clone())
        .bind(c.review_note.clone())
        .bind(c.rejection_reason.clone())
        .bind(c.withdrawal_reason.clone())
        .bind(c.payment_reference.clone())
        .bind(c.payment_date.clone())
        .bind(c.disbursed_fen)
        .bind(c.disbursed_by.clone())
        .bind(c.disbursed_us)
        .bind(c.step_us)
        .bind(c.step_actor.clone())
        .bind(c.submit_us)
        .bind(c.updated_us)
        .bind(c.reviewed_us)
        .bind(c.revision)
}

fn bind_round<'q>(query: AnyQuery<'q>, r: &RoundRow) -> AnyQuery<'q> {
    query
        .bind(r.round_id.clone())
        .bind(r.pool_id.clone())
        .bind(r.title.clone())
        .bind(r.state.as_str())
        .bind(r.deadline_us)
        .bind(r.created_by.clone())
        .bind(r.created_us)
        .bind(r.closed_us)
        .bind(r.finalize_started_us)
        .bind(r.ranking.clone())
        .bind(r.ranking_decision_id.clone())
        .bind(r.finalized_us)
        .bind(r.award_count)
        .bind(r.awarded_total_fen)
}

fn bind_proposal<'q>(query: AnyQuery<'q>, p: &ProposalRow) -> AnyQuery<'q> {
    query
        .bind(p.proposal_id.clone())
        .bind(p.round_id.clone())
        .bind(p.state.as_str())
        .bind(p.applicant_uscc.clone())
        .bind(p.category.as_str())
        .bind(p.title.clone())
        .bind(p.requested_fen)
        .bind(p.summary.clone())
        .bind(p.attachments.clone())
        .bind(p.decision.clone())
        .bind(p.rank)
        .bind(p.planned_award_fen)
        .bind(p.reservation_id.clone())
        .bind(p.awarded_fen)
        .bind(p.withdrawal_reason.clone())
        .bind(p.payment_reference.clone())
        .bind(p.payment_date.clone())
        .bind(p.disbursed_fen)
        .bind(p.disbursed_by.clone())
        .bind(p.disbursed_us)
        .bind(p.step_us)
        .bind(p.submit_us)
        .bind(p.updated_us)
        .bind(p.revision)
}
