//! Webhook subscriptions: their filters, secrets, state, failure run and in-flight counter.
//! Secrets are sealed here on the way in and opened on the way out (`secrets`); no other
//! query reads them.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use subsidy_common::Uscc;

use super::secrets::SecretError;
use super::{Arg, Store, Tx, bind_all, corrupt, delay_us, optional};
use crate::domain::event::Program;
use crate::domain::subscription::{
    DisabledReason, Filters, NewSubscription, SigningSecret, SubscriptionChanges, SubscriptionState,
};

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, endpoint_url, event_types, program_filter, \
     enterprise_uscc_filter, description, max_in_flight, contact_email, state, disabled_reason, disabled_us, \
     failing_since_us, previous_secret_expires_us, in_flight, created_us, updated_us";

/// A subscription as stored, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Identifier.
    pub subscription_id: String,
    /// Endpoint.
    pub endpoint_url: String,
    /// Filters.
    pub filters: Filters,
    /// Description.
    pub description: String,
    /// Its own in-flight limit; 0 means the service default.
    pub max_in_flight: i64,
    /// Who is told when it is disabled, or empty.
    pub contact_email: String,
    /// State.
    pub state: SubscriptionState,
    /// Why it is disabled.
    pub disabled_reason: Option<DisabledReason>,
    /// When it was disabled, µs.
    pub disabled_us: Option<i64>,
    /// Start of the current run of failures, µs.
    pub failing_since_us: Option<i64>,
    /// End of the previous secret's grace period, µs.
    pub previous_secret_expires_us: Option<i64>,
    /// Deliveries now in flight.
    pub in_flight: i64,
    /// Created, µs.
    pub created_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
}

/// Where a webhook attempt goes and how it is signed.
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    /// The endpoint.
    pub endpoint_url: String,
    /// The secrets to sign with: the current one, then the previous one while its grace
    /// period lasts; `Err` when a stored secret does not open (a wrong key), which fails the
    /// attempt instead of the worker.
    pub secrets: Result<Vec<SigningSecret>, SecretError>,
}

/// A seal or open failure as the driver's error: the use case classifies it like any other
/// storage failure (logged, never sent to a caller).
fn secret_failure(error: SecretError) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(error))
}

/// A subscription's failure run after an attempt was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRun {
    /// The subscription's state.
    pub state: SubscriptionState,
    /// Start of the current run of failures, µs; `None` after a success.
    pub failing_since_us: Option<i64>,
    /// The database clock when the attempt was counted, µs.
    pub now_us: i64,
}

fn filters(row: &AnyRow) -> Result<Filters, sqlx::Error> {
    let types: String = row.try_get("event_types")?;
    Ok(Filters {
        event_types: Filters::parse_event_types(&types)
            .ok_or_else(|| corrupt(format!("event types {types}")))?,
        program: optional(&row.try_get::<String, _>("program_filter")?, |text| {
            Program::parse(text).ok_or_else(|| format!("program {text}"))
        })?,
        enterprise: optional(
            &row.try_get::<String, _>("enterprise_uscc_filter")?,
            |text| Uscc::parse(text).map_err(|e| format!("uscc: {e}")),
        )?,
    })
}

fn state(text: &str) -> Result<SubscriptionState, sqlx::Error> {
    SubscriptionState::parse(text).ok_or_else(|| corrupt(format!("state {text}")))
}

fn subscription_row(row: &AnyRow) -> Result<SubscriptionRow, sqlx::Error> {
    let reason: String = row.try_get("disabled_reason")?;
    Ok(SubscriptionRow {
        subscription_id: row.try_get("subscription_id")?,
        endpoint_url: row.try_get("endpoint_url")?,
        filters: filters(row)?,
        description: row.try_get("description")?,
        max_in_flight: row.try_get("max_in_flight")?,
        contact_email: row.try_get("contact_email")?,
        state: state(&row.try_get::<String, _>("state")?)?,
        disabled_reason: DisabledReason::parse(&reason)
            .ok_or_else(|| corrupt(format!("disabled reason {reason}")))?,
        disabled_us: row.try_get("disabled_us")?,
        failing_since_us: row.try_get("failing_since_us")?,
        previous_secret_expires_us: row.try_get("previous_secret_expires_us")?,
        in_flight: row.try_get("in_flight")?,
        created_us: row.try_get("created_us")?,
        updated_us: row.try_get("updated_us")?,
    })
}

fn optional_row(row: Option<AnyRow>) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    row.as_ref().map(subscription_row).transpose()
}

async fn subscription_by_id<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    subscription_id: &str,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = $1"
    )))
    .bind(subscription_id)
    .fetch_optional(executor)
    .await?;
    optional_row(row)
}

/// The `(set?, value)` pair of one optional text change.
fn text_change(value: Option<String>) -> Vec<Arg> {
    vec![
        Arg::Int(i64::from(value.is_some())),
        Arg::Text(value.unwrap_or_default()),
    ]
}

impl Store {
    /// The ACTIVE subscriptions, oldest first, at most `limit`, read in `tx`.
    pub async fn active_subscriptions_in(
        &self,
        tx: &mut Tx,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE state = 'ACTIVE' \
             ORDER BY created_us, subscription_id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// How many subscriptions there are, counted in `tx`.
    pub async fn count_subscriptions_in(&self, tx: &mut Tx) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM subscriptions")
            .fetch_one(&mut **tx)
            .await
    }

    /// Stores a new ACTIVE subscription with `secret`.
    pub async fn insert_subscription(
        &self,
        tx: &mut Tx,
        new: &NewSubscription,
        secret: &SigningSecret,
    ) -> Result<SubscriptionRow, sqlx::Error> {
        let subscription_id = uuid::Uuid::now_v7().to_string();
        let sealed = self
            .secret_key()
            .and_then(|key| key.seal(&subscription_id, secret))
            .map_err(secret_failure)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO subscriptions (subscription_id, endpoint_url, event_types, program_filter, \
             enterprise_uscc_filter, description, max_in_flight, contact_email, state, disabled_reason, secret, \
             created_us, updated_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ACTIVE', '', $9, {now}, {now}) \
             RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(&subscription_id)
        .bind(new.endpoint_url.as_str())
        .bind(new.filters.event_types_text())
        .bind(new.filters.program.map(Program::as_str).unwrap_or_default())
        .bind(
            new.filters
                .enterprise
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(&new.description)
        .bind(new.max_in_flight)
        .bind(
            new.contact_email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(sealed)
        .fetch_one(&mut **tx)
        .await?;
        subscription_row(&row)
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        subscription_by_id(&self.db.pool, subscription_id).await
    }

    /// One subscription, read in `tx`.
    pub async fn subscription_in(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        subscription_by_id(&mut **tx, subscription_id).await
    }

    /// Subscriptions oldest first after the keyset position `(created_us, id)`.
    pub async fn list_subscriptions(
        &self,
        state: Option<SubscriptionState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE ($1 = '' OR state = $1) \
             AND ($2 = 0 OR created_us > $3 OR (created_us = $3 AND subscription_id > $4)) \
             ORDER BY created_us, subscription_id LIMIT $5"
        )))
        .bind(state.map(SubscriptionState::as_str).unwrap_or_default())
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// Changes the fields named in `changes`; a change of state also sets or clears the
    /// disabled reason (MANUAL), the disable time and, when enabled, the failure run. `None`
    /// when there is no such subscription.
    pub async fn update_subscription(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        changes: &SubscriptionChanges,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        let event_types = changes.event_types.clone().map(|event_types| {
            Filters {
                event_types,
                ..Filters::default()
            }
            .event_types_text()
        });
        let args: Vec<Arg> = [
            vec![Arg::Text(subscription_id.to_owned())],
            text_change(changes.endpoint_url.as_ref().map(|u| u.as_str().to_owned())),
            text_change(event_types),
            text_change(
                changes
                    .program
                    .map(|p| p.map(Program::as_str).unwrap_or_default().to_owned()),
            ),
            text_change(changes.enterprise.as_ref().map(|u| {
                u.as_ref()
                    .map(|u| u.as_str().to_owned())
                    .unwrap_or_default()
            })),
            text_change(changes.description.clone()),
            vec![
                Arg::Int(i64::from(changes.max_in_flight.is_some())),
                Arg::Int(changes.max_in_flight.unwrap_or_default()),
            ],
            text_change(changes.contact_email.as_ref().map(|e| {
                e.as_ref()
                    .map(|e| e.as_str().to_owned())
                    .unwrap_or_default()
            })),
            text_change(changes.state.map(|s| s.as_str().to_owned())),
        ]
        .into_iter()
        .flatten()
        .collect();
        let sql = format!(
            "UPDATE subscriptions SET \
             endpoint_url = CASE WHEN $2 = 1 THEN $3 ELSE endpoint_url END, \
             event_types = CASE WHEN $4 = 1 THEN $5 ELSE event_types END, \
             program_filter = CASE WHEN $6 = 1 THEN $7 ELSE program_filter END, \
             enterprise_uscc_filter = CASE WHEN $8 = 1 THEN $9 ELSE enterprise_uscc_filter END, \
             description = CASE WHEN $10 = 1 THEN $11 ELSE description END, \
             max_in_flight = CASE WHEN $12 = 1 THEN $13 ELSE max_in_flight END, \
             contact_email = CASE WHEN $14 = 1 THEN $15 ELSE contact_email END, \
             state = CASE WHEN $16 = 1 THEN $17 ELSE state END, \
             disabled_reason = CASE WHEN $16 = 1 AND $17 = 'DISABLED' THEN 'MANUAL' \
                                    WHEN $16 = 1 THEN '' ELSE disabled_reason END, \
             disabled_us = CASE WHEN $16 = 1 AND $17 = 'DISABLED' THEN COALESCE(disabled_us, {now}) \
                                WHEN $16 = 1 THEN NULL ELSE disabled_us END, \
             failing_since_us = CASE WHEN $16 = 1 AND $17 = 'ACTIVE' THEN NULL ELSE failing_since_us END, \
             updated_us = {now} \
             WHERE subscription_id = $1 RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        );
        let row = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_optional(&mut **tx)
            .await?;
        optional_row(row)
    }

    /// Replaces the signing secret with `secret`; the current one stays valid for
    /// `grace_seconds`. `None` when there is no such subscription.
    pub async fn rotate_secret(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        secret: &SigningSecret,
        grace_seconds: i64,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        let sealed = self
            .secret_key()
            .and_then(|key| key.seal(subscription_id, secret))
            .map_err(secret_failure)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET previous_secret = secret, previous_secret_expires_us = {now} + $3, \
             secret = $2, updated_us = {now} WHERE subscription_id = $1 RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(subscription_id)
        .bind(sealed)
        .bind(grace_seconds * 1_000_000)
        .fetch_optional(&mut **tx)
        .await?;
        optional_row(row)
    }

    /// Deletes a subscription and returns it as it was; `None` when there is none.
    pub async fn delete_subscription(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM subscriptions WHERE subscription_id = $1 RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(subscription_id)
        .fetch_optional(&mut **tx)
        .await?;
        optional_row(row)
    }

    /// Disables a subscription for ENDPOINT_FAILING when it is ACTIVE and has failed every
    /// attempt for at least `disable_after_ms` by the database clock; `None` otherwise.
    pub async fn disable_failing(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        disable_after_ms: u64,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET state = 'DISABLED', disabled_reason = 'ENDPOINT_FAILING', \
             disabled_us = {now}, updated_us = {now} WHERE subscription_id = $1 AND state = 'ACTIVE' \
             AND failing_since_us IS NOT NULL AND failing_since_us <= {now} - $2 \
             RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(subscription_id)
        .bind(delay_us(disable_after_ms))
        .fetch_optional(&mut **tx)
        .await?;
        optional_row(row)
    }

    /// Where a webhook of `subscription_id` goes and its live secrets, opened; `None` when
    /// the subscription is gone.
    pub async fn webhook_target(
        &self,
        subscription_id: &str,
    ) -> Result<Option<WebhookTarget>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT endpoint_url, secret, CASE WHEN previous_secret_expires_us > {now} \
             THEN previous_secret ELSE NULL END AS live_previous_secret \
             FROM subscriptions WHERE subscription_id = $1",
            now = self.now
        )))
        .bind(subscription_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let current: String = row.try_get("secret")?;
        let previous: Option<String> = row.try_get("live_previous_secret")?;
        // The current secret must open; a previous one that does not (only a hand-edited
        // row can hold one) is left out rather than failing every delivery of its grace.
        let secrets = self.secret_key().and_then(|key| {
            let mut secrets = vec![key.open(subscription_id, &current)?];
            if let Some(previous) = previous {
                match key.open(subscription_id, &previous) {
                    Ok(secret) => secrets.push(secret),
                    Err(error) => tracing::warn!(
                        subscription_id,
                        %error,
                        "the previous signing secret does not open and is not used"
                    ),
                }
            }
            Ok(secrets)
        });
        Ok(Some(WebhookTarget {
            endpoint_url: row.try_get("endpoint_url")?,
            secrets,
        }))
    }

    /// Takes one of the subscription's in-flight slots when it is ACTIVE and below its limit
    /// (`max_in_flight_default` when it sets none); whether a slot was taken.
    pub async fn take_in_flight_slot(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        max_in_flight_default: i64,
    ) -> Result<bool, sqlx::Error> {
        let counted = sqlx::query(
            "UPDATE subscriptions SET in_flight = in_flight + 1 WHERE subscription_id = $1 \
             AND state = 'ACTIVE' \
             AND in_flight < CASE WHEN max_in_flight = 0 THEN $2 ELSE max_in_flight END",
        )
        .bind(subscription_id)
        .bind(max_in_flight_default)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(counted == 1)
    }

    /// Gives back one in-flight slot of a subscription.
    pub async fn release_in_flight_slot(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE subscriptions SET in_flight = in_flight - 1 WHERE subscription_id = $1",
        )
        .bind(subscription_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Counts a finished webhook attempt: gives back its in-flight slot when `released`, and
    /// ends the failure run on success or starts it at `start_us` on a failure. `None` when
    /// the subscription is gone.
    pub async fn count_webhook_attempt(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        released: bool,
        succeeded: bool,
        start_us: i64,
    ) -> Result<Option<FailureRun>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET in_flight = in_flight - $2, \
             failing_since_us = CASE WHEN $3 = 1 THEN NULL ELSE COALESCE(failing_since_us, $4) END \
             WHERE subscription_id = $1 RETURNING state, failing_since_us, in_flight, {now} AS now_us",
            now = self.now
        )))
        .bind(subscription_id)
        .bind(i64::from(released))
        .bind(i64::from(succeeded))
        .bind(start_us)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let in_flight: i64 = row.try_get("in_flight")?;
        assert!(in_flight >= 0, "the in-flight counter never goes negative");
        Ok(Some(FailureRun {
            state: state(&row.try_get::<String, _>("state")?)?,
            failing_since_us: row.try_get("failing_since_us")?,
            now_us: row.try_get("now_us")?,
        }))
    }
}
