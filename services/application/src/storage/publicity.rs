//! The `public_notices` and `objections` tables: the publicity (公示) of each award and the
//! objections (异议) filed against it. A notice is written with its award and read, locked and
//! written back whole like a claim; an objection likewise.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{AnyQuery, Store, Table, Tx, decode_error, flag};
use crate::domain::publicity::ObjectionState;

/// Which kind of application a notice publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A compute-voucher claim.
    Claim,
    /// A data-infrastructure proposal.
    Proposal,
}

impl NoticeKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Claim => "CLAIM",
            NoticeKind::Proposal => "PROPOSAL",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [NoticeKind::Claim, NoticeKind::Proposal]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A public notice as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeRow {
    /// `notice-<application id>`.
    pub notice_id: String,
    /// Claim or proposal.
    pub kind: NoticeKind,
    /// The claim or proposal awarded.
    pub application_id: String,
    /// The enterprise.
    pub enterprise_uscc: String,
    /// Its registered name when the award was made.
    pub enterprise_name: String,
    /// The proposal's title; empty for a claim.
    pub project_title: String,
    /// The proposal's round; empty for a claim.
    pub round_id: String,
    /// The pool the award was committed from.
    pub pool_id: String,
    /// The committed reservation.
    pub reservation_id: String,
    /// The award, fen.
    pub amount_fen: i64,
    /// Published, µs.
    pub start_us: i64,
    /// The period's end (exclusive), µs; `None` until counted.
    pub end_us: Option<i64>,
    /// Working days counted.
    pub working_days: i64,
    /// Whether the calendar covered every day counted.
    pub calendar_covered: bool,
    /// Objections not yet decided.
    pub open_objections: i64,
    /// When the award was revoked, µs.
    pub revoked_us: Option<i64>,
    /// Whether the revocation's RevokeCommitment is still to be made.
    pub revoke_due: bool,
    /// The objection whose upholding revoked the award.
    pub revoke_objection_id: Option<String>,
}

const NOTICE_COLUMNS: &str = "notice_id, application_kind, application_id, enterprise_uscc, \
     enterprise_name, project_title, round_id, pool_id, reservation_id, amount_fen, start_us, \
     end_us, working_days, calendar_covered, open_objections, revoked_us, revoke_due, \
     revoke_objection_id";

fn notice_row(row: &AnyRow) -> Result<NoticeRow, DbError> {
    let kind: String = row.try_get("application_kind")?;
    let covered: i64 = row.try_get("calendar_covered")?;
    let due: i64 = row.try_get("revoke_due")?;
    Ok(NoticeRow {
        notice_id: row.try_get("notice_id")?,
        kind: NoticeKind::parse(&kind).ok_or_else(|| decode_error("notice kind", &kind))?,
        application_id: row.try_get("application_id")?,
        enterprise_uscc: row.try_get("enterprise_uscc")?,
        enterprise_name: row.try_get("enterprise_name")?,
        project_title: row.try_get("project_title")?,
        round_id: row.try_get("round_id")?,
        pool_id: row.try_get("pool_id")?,
        reservation_id: row.try_get("reservation_id")?,
        amount_fen: row.try_get("amount_fen")?,
        start_us: row.try_get("start_us")?,
        end_us: row.try_get("end_us")?,
        working_days: row.try_get("working_days")?,
        calendar_covered: covered == 1,
        open_objections: row.try_get("open_objections")?,
        revoked_us: row.try_get("revoked_us")?,
        revoke_due: due == 1,
        revoke_objection_id: row.try_get("revoke_objection_id")?,
    })
}

fn bind_notice<'q>(query: AnyQuery<'q>, n: &NoticeRow) -> AnyQuery<'q> {
    query
        .bind(n.notice_id.clone())
        .bind(n.kind.as_str())
        .bind(n.application_id.clone())
        .bind(n.enterprise_uscc.clone())
        .bind(n.enterprise_name.clone())
        .bind(n.project_title.clone())
        .bind(n.round_id.clone())
        .bind(n.pool_id.clone())
        .bind(n.reservation_id.clone())
        .bind(n.amount_fen)
        .bind(n.start_us)
        .bind(n.end_us)
        .bind(n.working_days)
        .bind(flag(n.calendar_covered))
        .bind(n.open_objections)
        .bind(n.revoked_us)
        .bind(flag(n.revoke_due))
        .bind(n.revoke_objection_id.clone())
}

const NOTICES: Table<NoticeRow> = Table {
    name: "public_notices",
    columns: NOTICE_COLUMNS,
    decode: notice_row,
    bind: bind_notice,
};

/// An objection as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectionRow {
    /// `objection-<uuid>`.
    pub objection_id: String,
    /// The notice objected to.
    pub notice_id: String,
    /// The grounds.
    pub grounds: String,
    /// Its state.
    pub state: ObjectionState,
    /// Who filed it (`<role>:<subject>`).
    pub filed_by: String,
    /// Filed, µs.
    pub filed_us: i64,
    /// The deciding reviewer, or empty.
    pub reviewer_id: String,
    /// The reasons of the decision, or empty.
    pub decision_reason: String,
    /// Decided, µs.
    pub decided_us: Option<i64>,
}

const OBJECTION_COLUMNS: &str = "objection_id, notice_id, grounds, state, filed_by, filed_us, \
     reviewer_id, decision_reason, decided_us";

fn objection_row(row: &AnyRow) -> Result<ObjectionRow, DbError> {
    let state: String = row.try_get("state")?;
    Ok(ObjectionRow {
        objection_id: row.try_get("objection_id")?,
        notice_id: row.try_get("notice_id")?,
        grounds: row.try_get("grounds")?,
        state: ObjectionState::parse(&state)
            .ok_or_else(|| decode_error("objection state", &state))?,
        filed_by: row.try_get("filed_by")?,
        filed_us: row.try_get("filed_us")?,
        reviewer_id: row.try_get("reviewer_id")?,
        decision_reason: row.try_get("decision_reason")?,
        decided_us: row.try_get("decided_us")?,
    })
}

fn bind_objection<'q>(query: AnyQuery<'q>, o: &ObjectionRow) -> AnyQuery<'q> {
    query
        .bind(o.objection_id.clone())
        .bind(o.notice_id.clone())
        .bind(o.grounds.clone())
        .bind(o.state.as_str())
        .bind(o.filed_by.clone())
        .bind(o.filed_us)
        .bind(o.reviewer_id.clone())
        .bind(o.decision_reason.clone())
        .bind(o.decided_us)
}

const OBJECTIONS: Table<ObjectionRow> = Table {
    name: "objections",
    columns: OBJECTION_COLUMNS,
    decode: objection_row,
    bind: bind_objection,
};

/// What a list of notices is filtered on.
#[derive(Clone, Debug, Default)]
pub struct NoticeFilter {
    /// Only this kind, when set.
    pub kind: Option<NoticeKind>,
    /// Only notices whose period runs (or is uncounted) at `now_us` and not revoked.
    pub published: bool,
    /// Only notices whose period has ended at `now_us` and not revoked.
    pub ended: bool,
    /// Only revoked notices.
    pub revoked: bool,
    /// The time the state filters judge by, µs.
    pub now_us: i64,
}

impl Store {
    /// Inserts a notice; `false` when the application already has one.
    pub async fn insert_notice(&self, tx: &mut Tx, notice: &NoticeRow) -> Result<bool, DbError> {
        let inserted = self
            .insert_row(tx, &NOTICES, notice, " ON CONFLICT DO NOTHING")
            .await?;
        Ok(inserted == 1)
    }

    /// One notice, read.
    pub async fn get_notice(
        &self,
        conn: &mut AnyConnection,
        notice_id: &str,
    ) -> Result<Option<NoticeRow>, DbError> {
        self.fetch_row(conn, &NOTICES, notice_id, false).await
    }

    /// One notice, locked for change in `tx`.
    pub async fn lock_notice(
        &self,
        tx: &mut Tx,
        notice_id: &str,
    ) -> Result<Option<NoticeRow>, DbError> {
        self.fetch_row(tx, &NOTICES, notice_id, true).await
    }

    /// Writes back a notice locked in `tx`.
    pub async fn save_notice(&self, tx: &mut Tx, notice: &NoticeRow) -> Result<(), DbError> {
        self.save_row(tx, &NOTICES, notice).await
    }

    /// Notices, newest first, after the keyset position `(start_us, notice_id)`.
    pub async fn list_notices(
        &self,
        conn: &mut AnyConnection,
        filter: &NoticeFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<NoticeRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTICE_COLUMNS} FROM public_notices WHERE ($1 = '' OR application_kind = $1) \
             AND ($2 = 0 OR (revoked_us IS NULL AND (end_us IS NULL OR end_us > $5))) \
             AND ($3 = 0 OR (revoked_us IS NULL AND end_us <= $5)) \
             AND ($4 = 0 OR revoked_us IS NOT NULL) \
             AND ($6 = 0 OR start_us < $7 OR (start_us = $7 AND notice_id < $8)) \
             ORDER BY start_us DESC, notice_id DESC LIMIT $9"
        )))
        .bind(filter.kind.map(NoticeKind::as_str).unwrap_or(""))
        .bind(flag(filter.published))
        .bind(flag(filter.ended))
        .bind(flag(filter.revoked))
        .bind(filter.now_us)
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter().map(notice_row).collect()
    }

    /// Notices whose period the rules service has not counted yet, oldest first.
    pub async fn notices_uncounted(
        &self,
        conn: &mut AnyConnection,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT notice_id FROM public_notices WHERE end_us IS NULL ORDER BY start_us LIMIT $1",
        )
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }

    /// Revoked notices whose money is still to be returned to the pool, oldest first.
    pub async fn notices_revoke_due(
        &self,
        conn: &mut AnyConnection,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT notice_id FROM public_notices WHERE revoke_due = 1 ORDER BY revoked_us LIMIT $1",
        )
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }

    /// Inserts an objection.
    pub async fn insert_objection(
        &self,
        tx: &mut Tx,
        objection: &ObjectionRow,
    ) -> Result<(), DbError> {
        self.insert_row(tx, &OBJECTIONS, objection, "").await?;
        Ok(())
    }

    /// One objection, read.
    pub async fn get_objection(
        &self,
        conn: &mut AnyConnection,
        objection_id: &str,
    ) -> Result<Option<ObjectionRow>, DbError> {
        self.fetch_row(conn, &OBJECTIONS, objection_id, false).await
    }

    /// One objection, locked for change in `tx`.
    pub async fn lock_objection(
        &self,
        tx: &mut Tx,
        objection_id: &str,
    ) -> Result<Option<ObjectionRow>, DbError> {
        self.fetch_row(tx, &OBJECTIONS, objection_id, true).await
    }

    /// Writes back an objection locked in `tx`.
    pub async fn save_objection(
        &self,
        tx: &mut Tx,
        objection: &ObjectionRow,
    ) -> Result<(), DbError> {
        self.save_row(tx, &OBJECTIONS, objection).await
    }

    /// Objections, oldest filing first, after the keyset position `(filed_us, objection_id)`,
    /// of one notice (when `notice_id` is not empty) and in one state (when given).
    pub async fn list_objections(
        &self,
        conn: &mut AnyConnection,
        notice_id: &str,
        state: Option<ObjectionState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ObjectionRow>, DbError> {
        let (after_us, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OBJECTION_COLUMNS} FROM objections WHERE ($1 = '' OR notice_id = $1) \
             AND ($2 = '' OR state = $2) \
             AND (filed_us > $3 OR (filed_us = $3 AND objection_id > $4)) \
             ORDER BY filed_us, objection_id LIMIT $5"
        )))
        .bind(notice_id)
        .bind(state.map(ObjectionState::as_str).unwrap_or(""))
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter().map(objection_row).collect()
    }
}
