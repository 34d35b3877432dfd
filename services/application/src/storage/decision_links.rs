//! The `decision_links` table: the rules service's decisions that shaped each claim and
//! proposal, appended in the transaction that records what the decision did (the database
//! refuses to change a link).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{Store, Tx, decode_error};
use crate::domain::DecisionPurpose;

/// Most decisions read for one application (a claim is evaluated a handful of times; a proposal
/// is screened once and ranked once).
pub const DECISION_LINKS_MAX: i64 = 100;

/// One link of an application to a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionLinkRow {
    /// Claim or proposal.
    pub application_id: String,
    /// The rules service's decision id.
    pub decision_id: String,
    /// Why the decision was asked for.
    pub purpose: DecisionPurpose,
    /// When it was linked, µs.
    pub linked_us: i64,
}

fn link_row(row: &AnyRow) -> Result<DecisionLinkRow, DbError> {
    let purpose: String = row.try_get("purpose")?;
    Ok(DecisionLinkRow {
        application_id: row.try_get("application_id")?,
        decision_id: row.try_get("decision_id")?,
        purpose: DecisionPurpose::parse(&purpose)
            .ok_or_else(|| decode_error("decision purpose", &purpose))?,
        linked_us: row.try_get("linked_us")?,
    })
}

impl Store {
    /// Links an application to a decision (a link made before stays as it was).
    pub async fn link_decision(&self, tx: &mut Tx, link: &DecisionLinkRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO decision_links (application_id, decision_id, purpose, linked_us) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (application_id, decision_id) DO NOTHING",
        )
        .bind(&link.application_id)
        .bind(&link.decision_id)
        .bind(link.purpose.as_str())
        .bind(link.linked_us)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The decisions linked to an application, oldest first, at most [`DECISION_LINKS_MAX`].
    pub async fn decision_links(
        &self,
        conn: &mut AnyConnection,
        application_id: &str,
    ) -> Result<Vec<DecisionLinkRow>, DbError> {
        let rows = sqlx::query(
            "SELECT application_id, decision_id, purpose, linked_us FROM decision_links \
             WHERE application_id = $1 ORDER BY linked_us, decision_id LIMIT $2",
        )
        .bind(application_id)
        .bind(DECISION_LINKS_MAX)
        .fetch_all(conn)
        .await?;
        rows.iter().map(link_row).collect()
    }
}
