//! The `claim_invoices` table: the VAT invoices of claims with their verification. An invoice
//! (code and number) is claimed at most once unless its claim was withdrawn (`released`); a
//! partial unique index enforces it, so an insert that collides inserts nothing.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{Store, Tx, decode_error};
use crate::domain::invoices::InvoiceVerification;

/// An invoice of a claim as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRow {
    /// The claim.
    pub claim_id: String,
    /// The invoice code; empty for a fully digitalised invoice.
    pub invoice_code: String,
    /// The invoice number.
    pub invoice_number: String,
    /// Its place among the claim's invoices, from 0.
    pub position: i64,
    /// Issue date, `YYYY-MM-DD`.
    pub issue_date: String,
    /// Tax-inclusive total, fen.
    pub amount_fen: i64,
    /// Seller.
    pub seller_uscc: String,
    /// Buyer.
    pub buyer_uscc: String,
    /// The reviewer's verification.
    pub verification: InvoiceVerification,
    /// The reviewer who verified it, or empty.
    pub reviewer_id: String,
    /// The reviewer's note, or empty.
    pub review_note: String,
    /// When it was verified, µs.
    pub verified_us: Option<i64>,
    /// When it was added, µs.
    pub added_us: i64,
}

const INVOICE_COLUMNS: &str = "claim_id, invoice_code, invoice_number, position, issue_date, \
     amount_fen, seller_uscc, buyer_uscc, verification, reviewer_id, review_note, verified_us, \
     added_us";

fn invoice_row(row: &AnyRow) -> Result<InvoiceRow, DbError> {
    let verification: String = row.try_get("verification")?;
    Ok(InvoiceRow {
        claim_id: row.try_get("claim_id")?,
        invoice_code: row.try_get("invoice_code")?,
        invoice_number: row.try_get("invoice_number")?,
        position: row.try_get("position")?,
        issue_date: row.try_get("issue_date")?,
        amount_fen: row.try_get("amount_fen")?,
        seller_uscc: row.try_get("seller_uscc")?,
        buyer_uscc: row.try_get("buyer_uscc")?,
        verification: InvoiceVerification::parse(&verification)
            .ok_or_else(|| decode_error("invoice verification", &verification))?,
        reviewer_id: row.try_get("reviewer_id")?,
        review_note: row.try_get("review_note")?,
        verified_us: row.try_get("verified_us")?,
        added_us: row.try_get("added_us")?,
    })
}

impl Store {
    /// Inserts an invoice; `false` when the invoice is claimed already (by a claim that was not
    /// withdrawn, this one included), in which case nothing was inserted.
    pub async fn insert_invoice(&self, tx: &mut Tx, invoice: &InvoiceRow) -> Result<bool, DbError> {
        let sql = format!(
            "INSERT INTO claim_invoices ({INVOICE_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(invoice.claim_id.clone())
            .bind(invoice.invoice_code.clone())
            .bind(invoice.invoice_number.clone())
            .bind(invoice.position)
            .bind(invoice.issue_date.clone())
            .bind(invoice.amount_fen)
            .bind(invoice.seller_uscc.clone())
            .bind(invoice.buyer_uscc.clone())
            .bind(invoice.verification.as_str())
            .bind(invoice.reviewer_id.clone())
            .bind(invoice.review_note.clone())
            .bind(invoice.verified_us)
            .bind(invoice.added_us)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Whether the invoice is claimed by a claim that was not withdrawn.
    pub async fn invoice_claimed(
        &self,
        conn: &mut AnyConnection,
        invoice_code: &str,
        invoice_number: &str,
    ) -> Result<bool, DbError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT claim_id FROM claim_invoices WHERE invoice_code = $1 AND invoice_number = $2 \
             AND released = 0 LIMIT 1",
        )
        .bind(invoice_code)
        .bind(invoice_number)
        .fetch_optional(conn)
        .await?;
        Ok(found.is_some())
    }

    /// The invoices of a claim, in the order they were given.
    pub async fn claim_invoices(
        &self,
        conn: &mut AnyConnection,
        claim_id: &str,
    ) -> Result<Vec<InvoiceRow>, DbError> {
        let sql = format!(
            "SELECT {INVOICE_COLUMNS} FROM claim_invoices WHERE claim_id = $1 ORDER BY position"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(claim_id)
            .fetch_all(conn)
            .await?;
        rows.iter().map(invoice_row).collect()
    }

    /// Records a reviewer's verification of an invoice of a claim; `false` when the claim has
    /// no such invoice.
    pub async fn verify_invoice(&self, tx: &mut Tx, invoice: &InvoiceRow) -> Result<bool, DbError> {
        let updated = sqlx::query(
            "UPDATE claim_invoices SET verification = $1, reviewer_id = $2, review_note = $3, \
             verified_us = $4 WHERE claim_id = $5 AND invoice_code = $6 AND invoice_number = $7",
        )
        .bind(invoice.verification.as_str())
        .bind(invoice.reviewer_id.clone())
        .bind(invoice.review_note.clone())
        .bind(invoice.verified_us)
        .bind(invoice.claim_id.clone())
        .bind(invoice.invoice_code.clone())
        .bind(invoice.invoice_number.clone())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Frees the invoices of a withdrawn claim: they may be claimed again.
    pub async fn release_invoices(&self, tx: &mut Tx, claim_id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE claim_invoices SET released = 1 WHERE claim_id = $1")
            .bind(claim_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
