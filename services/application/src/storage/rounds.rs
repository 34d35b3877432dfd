//! The `selection_rounds` and `proposal_scores` tables: rounds with their fixed ranking and
//! award totals, and each expert's score of a proposal.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{AnyQuery, Store, Table, Tx, decode_error};
use crate::domain::RoundState;

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

/// Binds every column of [`ROUND_COLUMNS`], in order.
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

const ROUNDS: Table<RoundRow> = Table {
    name: "selection_rounds",
    columns: ROUND_COLUMNS,
    decode: round_row,
    bind: bind_round,
};

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

fn score_row(row: &AnyRow) -> Result<ScoreRow, sqlx::Error> {
    Ok(ScoreRow {
        expert_id: row.try_get("expert_id")?,
        expert_organization_uscc: row.try_get("expert_organization_uscc")?,
        score: row.try_get("score")?,
        comment: row.try_get("comment")?,
        scored_us: row.try_get("scored_us")?,
    })
}

impl Store {
    /// Inserts a round.
    pub async fn insert_round(&self, tx: &mut Tx, round: &RoundRow) -> Result<(), DbError> {
        self.insert_row(tx, &ROUNDS, round, "").await?;
        Ok(())
    }

    /// One round, read.
    pub async fn get_round(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
    ) -> Result<Option<RoundRow>, DbError> {
        self.fetch_row(conn, &ROUNDS, round_id, false).await
    }

    /// One round, locked for change in `tx`.
    pub async fn lock_round(
        &self,
        tx: &mut Tx,
        round_id: &str,
    ) -> Result<Option<RoundRow>, DbError> {
        self.fetch_row(tx, &ROUNDS, round_id, true).await
    }

    /// Writes back a round locked in `tx`.
    pub async fn save_round(&self, tx: &mut Tx, round: &RoundRow) -> Result<(), DbError> {
        self.save_row(tx, &ROUNDS, round).await
    }

    /// Rounds, newest first, after `(created_us, round_id)`, by pool and reported state.
    pub async fn list_rounds(
        &self,
        conn: &mut AnyConnection,
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
        .fetch_all(conn)
        .await?;
        rows.iter().map(round_row).collect()
    }

    /// Rounds whose finalisation began before `stale_before_us` and is not finished.
    pub async fn rounds_finalizing(
        &self,
        conn: &mut AnyConnection,
        stale_before_us: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT round_id FROM selection_rounds WHERE state = 'FINALIZING' AND finalize_started_us <= $1 \
             ORDER BY finalize_started_us, round_id",
        )
        .bind(stale_before_us)
        .fetch_all(conn)
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
        Ok(rows.iter().map(score_row).collect::<Result<_, _>>()?)
    }
}
