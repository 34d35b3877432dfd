//! The `enterprises` table: registered applicants and their contacts.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::{DbError, restricted_to};

use super::{Store, Tx};

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

const ENTERPRISE_COLUMNS: &str =
    "uscc, name, contact_email, contact_phone, registration_division_code, created_us, updated_us";

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

impl Store {
    /// Inserts an enterprise; false when its USCC is registered already.
    pub async fn insert_enterprise(
        &self,
        tx: &mut Tx,
        enterprise: &EnterpriseRow,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO enterprises ({ENTERPRISE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (uscc) DO NOTHING"
        )))
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

    /// The contact emails of the registered enterprises among `usccs`, by USCC.
    pub async fn contact_emails(
        &self,
        conn: &mut AnyConnection,
        usccs: &[&str],
    ) -> Result<std::collections::HashMap<String, String>, DbError> {
        let mut emails = std::collections::HashMap::new();
        for chunk in usccs.chunks(256) {
            let placeholders = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT uscc, contact_email FROM enterprises WHERE uscc IN ({placeholders})"
            )));
            for uscc in chunk {
                query = query.bind(*uscc);
            }
            for row in query.fetch_all(&mut *conn).await? {
                emails.insert(row.try_get("uscc")?, row.try_get("contact_email")?);
            }
        }
        Ok(emails)
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
        conn: &mut AnyConnection,
        prefix: &str,
        after: &str,
        limit: i64,
        tenants: Option<&[String]>,
    ) -> Result<Vec<EnterpriseRow>, DbError> {
        let only = restricted_to("uscc", tenants, 4);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTERPRISE_COLUMNS} FROM enterprises \
             WHERE registration_division_code LIKE $1 AND uscc > $2{only} ORDER BY uscc LIMIT $3"
        )))
        .bind(format!("{prefix}%"))
        .bind(after)
        .bind(limit);
        for uscc in tenants.unwrap_or_default() {
            query = query.bind(uscc.clone());
        }
        let rows = query.fetch_all(conn).await?;
        Ok(rows.iter().map(enterprise_row).collect::<Result<_, _>>()?)
    }
}
