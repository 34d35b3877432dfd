//! The `claims` table: compute-voucher claims with the recorded intents of their calls to the
//! budget (reserve, commit, release, orphan sweep), their waitlist order and their review.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::{DbError, restricted_to};

use super::{AnyQuery, Payment, Store, Table, Tx, bind_payment, decode_error, flag, payment_of};
use crate::domain::{BenefitRating, ClaimFilter, ClaimState, PendingSteps};

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
    /// The payment, once recorded.
    pub payment: Option<Payment>,
    /// When the current step began, µs; the reconciler leaves younger steps to their caller.
    pub step_us: i64,
    /// Who started the current step (recorded in the history when the step completes).
    pub step_actor: String,
    /// Submitted, µs.
    pub submit_us: i64,
    /// Its place in its pool's acceptance order (1 for the first claim): claims are funded
    /// in this order. 0 until a numbering round numbers it ([`Store::number_claims`]).
    pub accept_seq: i64,
    /// The review deadline, µs: when the money was held plus the review period.
    pub review_due_us: Option<i64>,
    /// When `hold_expires_us` was last set (held or extended), µs by this database's clock.
    pub hold_set_us: Option<i64>,
    /// The number of the next extension of the hold; part of its derived request id.
    pub extend_attempt: i64,
    /// The reviewer's latest request for information, or empty.
    pub information_request: String,
    /// Last changed, µs.
    pub updated_us: i64,
    /// Reviewed, µs.
    pub reviewed_us: Option<i64>,
    /// Number of history entries.
    pub revision: i64,
}

/// Who stands before a claim in its pool's line (see [`Store::line_ahead`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineAhead {
    /// An earlier claim is still SUBMITTED: its funding is decided first.
    pub deciding: bool,
    /// An earlier claim is WAITLISTED: nobody skips it.
    pub waiting: bool,
}

impl ClaimRow {
    /// The steps recorded and not finished.
    pub fn pending(&self) -> PendingSteps {
        PendingSteps {
            reserve_intent: self.reserve_intent_fen.is_some(),
            commit_intent: self.commit_intent_fen.is_some(),
            release_due: self.release_due,
            evaluation_due: self.evaluation_due,
            orphan_check_due: self.orphan_check_due,
            unnumbered: self.accept_seq == 0,
        }
    }
}

const CLAIM_COLUMNS: &str = "claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, \
     contract_total_fen, contract, decision, evaluation_due, entitlement_fen, reserve_attempt, \
     reserve_intent_fen, reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, \
     commit_intent_fen, commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, \
     review_note, rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, \
     disbursed_by, disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision, \
     accept_seq, review_due_us, hold_set_us, extend_attempt, information_request";

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
        payment: payment_of(row)?,
        step_us: row.try_get("step_us")?,
        step_actor: row.try_get("step_actor")?,
        submit_us: row.try_get("submit_us")?,
        updated_us: row.try_get("updated_us")?,
        reviewed_us: row.try_get("reviewed_us")?,
        revision: row.try_get("revision")?,
        accept_seq: row.try_get::<Option<i64>, _>("accept_seq")?.unwrap_or(0),
        review_due_us: row.try_get("review_due_us")?,
        hold_set_us: row.try_get("hold_set_us")?,
        extend_attempt: row.try_get("extend_attempt")?,
        information_request: row.try_get("information_request")?,
    })
}

/// Binds every column of [`CLAIM_COLUMNS`], in order.
fn bind_claim<'q>(query: AnyQuery<'q>, c: &ClaimRow) -> AnyQuery<'q> {
    let query = query
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
        .bind(c.withdrawal_reason.clone());
    bind_payment(query, &c.payment)
        .bind(c.step_us)
        .bind(c.step_actor.clone())
        .bind(c.submit_us)
        .bind(c.updated_us)
        .bind(c.reviewed_us)
        .bind(c.revision)
        // 0: not numbered yet (a new claim is recorded without a number and numbered by a
        // numbering round, see [`Store::number_claims`]).
        .bind((c.accept_seq > 0).then_some(c.accept_seq))
        .bind(c.review_due_us)
        .bind(c.hold_set_us)
        .bind(c.extend_attempt)
        .bind(c.information_request.clone())
}

/// Most claims one statement of [`Store::number_claims`] numbers (three parameters each).
const NUMBERED_PER_UPDATE_MAX: usize = 1_000;

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const CLAIMS: Table<ClaimRow> = Table {
    name: "claims",
    columns: CLAIM_COLUMNS,
    decode: claim_row,
    bind: bind_claim,
};

impl Store {
    /// Inserts a new claim; false when it conflicts with a live claim on the same contract.
    pub async fn insert_claim(&self, tx: &mut Tx, claim: &ClaimRow) -> Result<bool, DbError> {
        let inserted = self
            .insert_row(tx, &CLAIMS, claim, " ON CONFLICT DO NOTHING")
            .await?;
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

    /// Whether a claim of `enterprise_uscc` on the seller's contract would be recorded now
    /// (the enterprise is registered and no claim that was not withdrawn holds the contract),
    /// and if so the enterprise's contact email: one statement, read before the transaction
    /// recording the claim, which decides for good.
    pub async fn claimable(
        &self,
        conn: &mut AnyConnection,
        enterprise_uscc: &str,
        seller_uscc: &str,
        contract_number: &str,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT (SELECT contact_email FROM enterprises WHERE uscc = $1) AS contact_email, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM claims WHERE seller_uscc = $2 \
             AND contract_number = $3 AND state <> 'WITHDRAWN') AS claimed",
        )
        .bind(enterprise_uscc)
        .bind(seller_uscc)
        .bind(contract_number)
        .fetch_one(conn)
        .await?;
        let contact_email: Option<String> = row.try_get("contact_email")?;
        let claimed: i64 = row.try_get("claimed")?;
        Ok(contact_email.filter(|_| claimed == 0))
    }

    /// One claim, read.
    pub async fn get_claim(
        &self,
        conn: &mut AnyConnection,
        claim_id: &str,
    ) -> Result<Option<ClaimRow>, DbError> {
        self.fetch_row(conn, &CLAIMS, claim_id, false).await
    }

    /// One claim, locked for change in `tx`.
    pub async fn lock_claim(
        &self,
        tx: &mut Tx,
        claim_id: &str,
    ) -> Result<Option<ClaimRow>, DbError> {
        self.fetch_row(tx, &CLAIMS, claim_id, true).await
    }

    /// Writes back a claim locked in `tx`.
    pub async fn save_claim(&self, tx: &mut Tx, claim: &ClaimRow) -> Result<(), DbError> {
        self.save_row(tx, &CLAIMS, claim).await
    }

    /// Writes back claims locked in `tx`, several to a statement.
    pub async fn save_claims(&self, tx: &mut Tx, claims: &[ClaimRow]) -> Result<(), DbError> {
        self.save_rows(tx, &CLAIMS, claims).await
    }

    /// Claims, newest submission first, after the keyset position `(submit_us, claim_id)`.
    pub async fn list_claims(
        &self,
        conn: &mut AnyConnection,
        filter: &ClaimFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ClaimRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let tenants = restricted_to("enterprise_uscc", filter.tenants.as_deref(), 13);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE ($1 = '' OR state = $1) \
             AND ($2 = '' OR enterprise_uscc = $2) AND ($3 = 0 OR submit_us >= $4) AND ($5 = 0 OR submit_us < $6) \
             AND ($7 = 0 OR submit_us < $8 OR (submit_us = $8 AND claim_id < $9)) \
             AND ($11 = 0 OR (state IN ('PENDING_REVIEW', 'NEEDS_INFORMATION') \
               AND review_due_us <= $12)){tenants} \
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
        .bind(i64::from(filter.review_overdue))
        .bind(filter.overdue_at_us);
        for uscc in filter.tenants.iter().flatten() {
            query = query.bind(uscc.clone());
        }
        let rows = query.fetch_all(conn).await?;
        rows.iter().map(claim_row).collect()
    }

    /// How many WAITLISTED claims of `claim`'s pool were submitted before it.
    async fn waitlisted_ahead(
        &self,
        conn: &mut AnyConnection,
        claim: &ClaimRow,
    ) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' \
             AND accept_seq < $2",
        )
        .bind(&claim.pool_id)
        .bind(claim.accept_seq)
        .fetch_one(conn)
        .await?)
    }

    /// Numbers every committed claim of `pool_id` that has no acceptance number yet, in
    /// order of submission, after the pool's last number; returns how many it numbered.
    ///
    /// The counter's row is locked first (and stays locked until `tx` ends); the claims are
    /// read by the next statement, which on PostgreSQL (READ COMMITTED) sees every claim
    /// committed before it began, including those committed while the lock was awaited, and
    /// on SQLite (`BEGIN IMMEDIATE`) every claim. So two rounds never give one number twice
    /// or leave a gap, and a claim committed after a round read the line gets a later
    /// number than every claim that round numbered: numbers follow the order in which claims
    /// became visible, as the line needs (a claim is funded only once numbered).
    pub async fn number_claims(&self, tx: &mut Tx, pool_id: &str) -> Result<usize, DbError> {
        let accepted: i64 = sqlx::query_scalar(
            "INSERT INTO acceptance_counters (pool_id, accepted) VALUES ($1, 0) \
             ON CONFLICT (pool_id) DO UPDATE SET accepted = acceptance_counters.accepted \
             RETURNING accepted",
        )
        .bind(pool_id)
        .fetch_one(&mut **tx)
        .await?;
        let unnumbered: Vec<String> = sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE pool_id = $1 AND accept_seq IS NULL \
             ORDER BY submit_us, claim_id",
        )
        .bind(pool_id)
        .fetch_all(&mut **tx)
        .await?;
        let mut next = accepted;
        for chunk in unnumbered.chunks(NUMBERED_PER_UPDATE_MAX) {
            let cases: String = (0..chunk.len())
                .map(|i| format!(" WHEN ${} THEN ${}", 1 + 2 * i, 2 + 2 * i))
                .collect();
            let sql = format!(
                "UPDATE claims SET accept_seq = CASE claim_id{cases} END, \
                 row_version = row_version + 1 WHERE claim_id IN ({}) AND accept_seq IS NULL",
                placeholders(1 + 2 * chunk.len(), chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for claim_id in chunk {
                next += 1;
                query = query.bind(claim_id.clone()).bind(next);
            }
            for claim_id in chunk {
                query = query.bind(claim_id.clone());
            }
            let updated = query.execute(&mut **tx).await?.rows_affected();
            assert_eq!(
                updated,
                chunk.len() as u64,
                "the counter's lock keeps every claim read unnumbered unnumbered"
            );
        }
        if next > accepted {
            sqlx::query("UPDATE acceptance_counters SET accepted = $2 WHERE pool_id = $1")
                .bind(pool_id)
                .bind(next)
                .execute(&mut **tx)
                .await?;
        }
        Ok(unnumbered.len())
    }

    /// The first claim of a pool's line: the earliest numbered claim still SUBMITTED.
    pub async fn next_in_line(
        &self,
        conn: &mut AnyConnection,
        pool_id: &str,
    ) -> Result<Option<ClaimRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE pool_id = $1 AND state = 'SUBMITTED' \
             AND accept_seq IS NOT NULL ORDER BY accept_seq LIMIT 1"
        )))
        .bind(pool_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(claim_row).transpose()
    }

    /// The SUBMITTED claims of a pool's line from acceptance sequence `from_seq` on, in
    /// acceptance order, at most `limit`.
    pub async fn line_from(
        &self,
        conn: &mut AnyConnection,
        pool_id: &str,
        from_seq: i64,
        limit: usize,
    ) -> Result<Vec<ClaimRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE pool_id = $1 AND state = 'SUBMITTED' \
             AND accept_seq >= $2 ORDER BY accept_seq LIMIT $3"
        )))
        .bind(pool_id)
        .bind(from_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?;
        rows.iter().map(claim_row).collect()
    }

    /// The claims `claim_ids`, locked for change in `tx`, in acceptance order (the order in
    /// which every caller locks several claims, so two never wait for each other).
    pub async fn lock_claims(
        &self,
        tx: &mut Tx,
        claim_ids: &[&str],
    ) -> Result<Vec<ClaimRow>, DbError> {
        if claim_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE claim_id IN ({}) ORDER BY accept_seq{}",
            placeholders(1, claim_ids.len()),
            self.lock_clause(true)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in claim_ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        rows.iter().map(claim_row).collect()
    }

    /// Records reserve intents (claim, amount in fen) made by the system at `now_us`: the
    /// same change as writing each claim with its intent, in one statement.
    pub async fn record_reserve_intents(
        &self,
        tx: &mut Tx,
        intents: &[(&str, i64)],
        actor: &str,
        now_us: i64,
    ) -> Result<(), DbError> {
        if intents.is_empty() {
            return Ok(());
        }
        let cases: String = (0..intents.len())
            .map(|i| format!(" WHEN ${} THEN ${}", 3 + 2 * i, 4 + 2 * i))
            .collect();
        let first_id = 3 + 2 * intents.len();
        let sql = format!(
            "UPDATE claims SET reserve_intent_fen = CASE claim_id{cases} END, step_us = $1, \
             step_actor = $2 WHERE claim_id IN ({})",
            placeholders(first_id, intents.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_us)
            .bind(actor);
        for (id, fen) in intents {
            query = query.bind(*id).bind(*fen);
        }
        for (id, _) in intents {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }

    /// Who stands before `claim` in its pool's line: claims accepted earlier whose funding is
    /// still being decided (SUBMITTED), or that wait for money (WAITLISTED).
    pub async fn line_ahead(
        &self,
        conn: &mut AnyConnection,
        claim: &ClaimRow,
    ) -> Result<LineAhead, DbError> {
        let row = sqlx::query(
            "SELECT \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 AS one FROM claims \
               WHERE pool_id = $1 AND state = 'SUBMITTED' AND accept_seq < $2 LIMIT 1) AS s) \
               AS deciding, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 AS one FROM claims \
               WHERE pool_id = $1 AND state = 'WAITLISTED' AND accept_seq < $2 LIMIT 1) AS w) \
               AS waiting",
        )
        .bind(&claim.pool_id)
        .bind(claim.accept_seq)
        .fetch_one(conn)
        .await?;
        Ok(LineAhead {
            deciding: row.try_get::<i64, _>("deciding")? > 0,
            waiting: row.try_get::<i64, _>("waiting")? > 0,
        })
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
        Ok(self.waitlisted_ahead(conn, claim).await? + 1)
    }

    /// Whether claims submitted before `claim` wait for money in its pool.
    pub async fn waitlisted_before(
        &self,
        conn: &mut AnyConnection,
        claim: &ClaimRow,
    ) -> Result<bool, DbError> {
        Ok(self.waitlisted_ahead(conn, claim).await? > 0)
    }

    /// The oldest WAITLISTED claim of a pool.
    pub async fn waitlist_head(
        &self,
        conn: &mut AnyConnection,
        pool_id: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' \
             ORDER BY accept_seq LIMIT 1",
        )
        .bind(pool_id)
        .fetch_optional(conn)
        .await?)
    }

    /// The pools that have a waitlist.
    pub async fn waitlisted_pools(&self, conn: &mut AnyConnection) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT pool_id FROM claims WHERE state = 'WAITLISTED' ORDER BY pool_id",
        )
        .fetch_all(conn)
        .await?)
    }

    /// Claims with a step older than `stale_before_us` left to finish: numbering,
    /// evaluation or reservation of a SUBMITTED claim, an unrecorded reserve or commit, a release or an
    /// orphan sweep. In acceptance order, so that the head of a pool's line comes first: the
    /// claims waiting behind it cannot move before it does, and when more of them wait than one
    /// pass takes, ordering by the age of their step starved the head (a head whose step was
    /// taken over recently stayed out of every pass; seen with two replicas, one killed).
    pub async fn claims_with_unfinished_steps(
        &self,
        conn: &mut AnyConnection,
        stale_before_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE (state = 'SUBMITTED' OR reserve_intent_fen IS NOT NULL \
             OR commit_intent_fen IS NOT NULL OR release_due = 1 OR orphan_check_due = 1 \
             OR accept_seq IS NULL) AND step_us <= $1 ORDER BY COALESCE(accept_seq, 0), step_us, claim_id LIMIT $2",
        )
        .bind(stale_before_us)
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }

    /// Claims in review (PENDING_REVIEW, NEEDS_INFORMATION) whose hold should have expired by
    /// `now_us`.
    pub async fn holds_past_expiry(
        &self,
        conn: &mut AnyConnection,
        now_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE state IN ('PENDING_REVIEW', 'NEEDS_INFORMATION') \
             AND hold_expires_us <= $1 ORDER BY hold_expires_us, claim_id LIMIT $2",
        )
        .bind(now_us)
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }
}

impl Store {
    /// Claims in review with no approval under way whose hold is to be extended at `now_us`
    /// under `margin_us` (the condition of [`crate::domain::hold_extension_due`]: it expires
    /// within the margin and two thirds of its lifetime have passed), soonest expiry first.
    pub async fn holds_to_extend(
        &self,
        conn: &mut AnyConnection,
        now_us: i64,
        margin_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT claim_id FROM claims WHERE state IN ('PENDING_REVIEW', 'NEEDS_INFORMATION') \
             AND commit_intent_fen IS NULL AND reservation_id IS NOT NULL \
             AND hold_expires_us <= $1 + $2 \
             AND 3 * $1 >= COALESCE(hold_set_us, 0) + 2 * hold_expires_us \
             ORDER BY hold_expires_us, claim_id LIMIT $3",
        )
        .bind(now_us)
        .bind(margin_us)
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PAYMENT_COLUMNS, columns};
    use super::*;

    #[test]
    fn the_claim_columns_hold_the_shared_payment_columns_in_order() {
        // Proves bind_claim's payment binds line up with the column list.
        assert!(CLAIM_COLUMNS.contains(PAYMENT_COLUMNS));
        assert_eq!(columns(CLAIM_COLUMNS).count(), 43);
    }
}
