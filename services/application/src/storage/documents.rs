//! The `documents` table: one row per upload of a document for a claim or proposal, appended
//! in the transaction that stores the upload's response (the database refuses to change one).
//! The content itself is in the document store (`crate::documents`).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{Store, Tx, decode_error};
use crate::domain::documents::DocumentKind;

/// One uploaded document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentRow {
    /// `document-…`.
    pub document_id: String,
    /// The claim or proposal.
    pub application_id: String,
    /// What it is.
    pub kind: DocumentKind,
    /// The file name as uploaded.
    pub file_name: String,
    /// The media type as uploaded.
    pub media_type: String,
    /// Its size, bytes.
    pub size_bytes: i64,
    /// Its SHA-256, lower-case hex.
    pub sha256_hex: String,
    /// The key of its content in the document store.
    pub object_key: String,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When, µs.
    pub uploaded_us: i64,
}

const DOCUMENT_COLUMNS: &str = "document_id, application_id, kind, file_name, media_type, \
     size_bytes, sha256_hex, object_key, uploaded_by, uploaded_us";

fn document_row(row: &AnyRow) -> Result<DocumentRow, DbError> {
    let kind: String = row.try_get("kind")?;
    Ok(DocumentRow {
        document_id: row.try_get("document_id")?,
        application_id: row.try_get("application_id")?,
        kind: DocumentKind::parse(&kind).ok_or_else(|| decode_error("document kind", &kind))?,
        file_name: row.try_get("file_name")?,
        media_type: row.try_get("media_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256_hex: row.try_get("sha256_hex")?,
        object_key: row.try_get("object_key")?,
        uploaded_by: row.try_get("uploaded_by")?,
        uploaded_us: row.try_get("uploaded_us")?,
    })
}

impl Store {
    /// Appends a document.
    pub async fn insert_document(
        &self,
        tx: &mut Tx,
        document: &DocumentRow,
    ) -> Result<(), DbError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO documents ({DOCUMENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(&document.document_id)
        .bind(&document.application_id)
        .bind(document.kind.as_str())
        .bind(&document.file_name)
        .bind(&document.media_type)
        .bind(document.size_bytes)
        .bind(&document.sha256_hex)
        .bind(&document.object_key)
        .bind(&document.uploaded_by)
        .bind(document.uploaded_us)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// One document.
    pub async fn get_document(
        &self,
        conn: &mut AnyConnection,
        document_id: &str,
    ) -> Result<Option<DocumentRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE document_id = $1"
        )))
        .bind(document_id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(document_row).transpose()
    }

    /// The documents of an application after `after` (upload time, id), oldest first, at most
    /// `limit`.
    pub async fn list_documents(
        &self,
        conn: &mut AnyConnection,
        application_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<DocumentRow>, DbError> {
        let (after_us, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE application_id = $1 \
             AND (uploaded_us > $2 OR (uploaded_us = $2 AND document_id > $3)) \
             ORDER BY uploaded_us, document_id LIMIT $4"
        )))
        .bind(application_id)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        rows.iter().map(document_row).collect()
    }

    /// The total size of an application's documents, bytes.
    pub async fn documents_size(
        &self,
        conn: &mut AnyConnection,
        application_id: &str,
    ) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS total FROM documents \
             WHERE application_id = $1",
        )
        .bind(application_id)
        .fetch_one(conn)
        .await?;
        Ok(row.try_get("total")?)
    }

    /// The first document of an application uploaded with each of `digests` (SHA-256 in hex),
    /// as (digest, document id), in the order of `digests`; digests without one are left out.
    pub async fn documents_with_digests(
        &self,
        conn: &mut AnyConnection,
        application_id: &str,
        digests: &[String],
    ) -> Result<Vec<(String, String)>, DbError> {
        let mut found = Vec::new();
        for digest in digests {
            let row = sqlx::query(
                "SELECT document_id FROM documents WHERE application_id = $1 AND sha256_hex = $2 \
                 ORDER BY uploaded_us, document_id LIMIT 1",
            )
            .bind(application_id)
            .bind(digest)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = row {
                found.push((digest.clone(), row.try_get("document_id")?));
            }
        }
        Ok(found)
    }
}
