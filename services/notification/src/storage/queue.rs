//! The worker's queue: due deliveries, their leases, and the record of each attempt.
//!
//! A delivery is claimed by setting it IN_FLIGHT with a lease and a claim token; only the
//! holder of the token records the attempt. A lease that runs out (the process died or hung)
//! puts the delivery back in the queue.

use std::collections::HashMap;

use sqlx::Row;
use subsidy_common::db::{Kind, bind_padding, padded_in, padded_insert, placeholders};

use super::deliveries::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, channel, delivery_row, delivery_state};
use super::{DeliveryRow, Store, Tx, UNFINISHED, WAITING, corrupt, delay_us};
use crate::domain::delivery::{Channel, DeliveryState};
use crate::domain::subscription::SubscriptionState;

/// Most recorded attempts read or logged by one statement: 8 values each, far below either
/// database's limit on bound parameters.
pub const RECORDED_PER_STATEMENT_MAX: usize = 64;

/// A due delivery found by the worker, before it is leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The delivery.
    pub delivery_id: String,
    /// Its channel.
    pub channel: Channel,
    /// Its subscription, or empty for email.
    pub subscription_id: String,
    /// The waiting state it was found in.
    pub state: DeliveryState,
    /// When it was due, µs.
    pub next_attempt_us: Option<i64>,
}

/// A delivery claimed by the worker for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The delivery.
    pub delivery_id: String,
    /// Its channel.
    pub channel: Channel,
    /// The claim's token; only the holder may record the attempt.
    pub claim_token: String,
    /// When the claim began (the attempt's start), µs.
    pub start_us: i64,
}

/// How one finished attempt went, as it is logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptLog<'a> {
    /// How long it took, ms.
    pub latency_ms: i64,
    /// The HTTP status or SMTP reply code; 0 when there was no answer.
    pub status_code: i64,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// What went wrong, or empty.
    pub error: &'a str,
}

fn candidates(
    rows: Vec<sqlx::any::AnyRow>,
    channel: Channel,
) -> Result<Vec<Candidate>, sqlx::Error> {
    rows.into_iter()
        .map(|row| {
            Ok(Candidate {
                delivery_id: row.try_get("delivery_id")?,
                channel,
                subscription_id: match channel {
                    Channel::Webhook => row.try_get("subscription_id")?,
                    Channel::Email => String::new(),
                },
                state: delivery_state(&row.try_get::<String, _>("state")?)?,
                next_attempt_us: row.try_get("next_attempt_us")?,
            })
        })
        .collect()
}

impl Store {
    /// The condition of a due delivery `d` of `channel`: its time has come and no earlier
    /// delivery with the same order key is unfinished.
    ///
    /// Every query built on it is planned at each execution (`persistent(false)`), never from
    /// a plan cached with a prepared statement: a generic plan made while the table was empty
    /// (a fresh deployment) checks each due delivery against every unfinished one instead of
    /// through `deliveries_unfinished_by_key`, and PostgreSQL keeps that plan until the table
    /// is next analysed. Measured: 150 ms per email poll in a 15 s claim benchmark (14 s of
    /// the notification database's 15 s of statement time), 444 ms with 2,000 waiting
    /// deliveries in a reproduction, against 3.6 ms planned afresh.
    fn due(&self, channel: Channel) -> String {
        format!(
            "d.channel = '{channel}' AND d.state IN {WAITING} AND d.next_attempt_us <= {now} \
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.ordering_key = d.ordering_key \
             AND e.event_seq < d.event_seq AND e.state IN {UNFINISHED})",
            channel = channel.as_str(),
            now = self.now
        )
    }

    /// The query of due webhook deliveries, soonest first, at most `$2`, whose subscription
    /// is ACTIVE and below its in-flight limit (`$1` when it sets none), with `lock`.
    fn due_webhooks_sql(&self, lock: &str) -> String {
        format!(
            "SELECT d.delivery_id, d.subscription_id, d.state, d.next_attempt_us FROM deliveries d \
             JOIN subscriptions s ON s.subscription_id = d.subscription_id \
             WHERE {due} AND s.state = 'ACTIVE' \
             AND s.in_flight < CASE WHEN s.max_in_flight = 0 THEN $1 ELSE s.max_in_flight END \
             ORDER BY d.next_attempt_us, d.event_seq LIMIT $2{lock}",
            due = self.due(Channel::Webhook),
        )
    }

    /// The query of due email deliveries, soonest first, at most `$1`, with `lock`.
    fn due_emails_sql(&self, lock: &str) -> String {
        format!(
            "SELECT d.delivery_id, d.state, d.next_attempt_us FROM deliveries d \
             WHERE {due} ORDER BY d.next_attempt_us, d.event_seq LIMIT $1{lock}",
            due = self.due(Channel::Email),
        )
    }

    /// Whether any delivery may be due now: a waiting delivery whose time has come (for a
    /// webhook, of an ACTIVE subscription below its in-flight limit; emails only when
    /// `emails`). Read on the pool, without a transaction or a lock, so that a worker with
    /// nothing to claim writes nothing. It leaves out the order-key condition of
    /// [`Store::due_webhooks_in`] and [`Store::due_emails_in`], the costly part (it looks at
    /// the unfinished deliveries of the same key): "no" is exact, "yes" may still find
    /// nothing to claim. A delivery found here may be claimed by another worker before this
    /// one leases it: only the lease decides.
    pub async fn any_due(
        &self,
        max_in_flight_default: i64,
        emails: bool,
    ) -> Result<bool, sqlx::Error> {
        let webhook = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM deliveries d JOIN subscriptions s ON s.subscription_id = d.subscription_id \
             WHERE d.channel = 'WEBHOOK' AND d.state IN {WAITING} AND d.next_attempt_us <= {now} \
             AND s.state = 'ACTIVE' \
             AND s.in_flight < CASE WHEN s.max_in_flight = 0 THEN $1 ELSE s.max_in_flight END LIMIT 1",
            now = self.now
        )))
        .persistent(false)
        .bind(max_in_flight_default)
        .fetch_optional(&self.db.pool)
        .await?;
        if webhook.is_some() || !emails {
            return Ok(webhook.is_some());
        }
        let email = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM deliveries d WHERE d.channel = 'EMAIL' AND d.state IN {WAITING} \
             AND d.next_attempt_us <= {now} LIMIT 1",
            now = self.now
        )))
        .persistent(false)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(email.is_some())
    }

    /// Due webhook deliveries, soonest first, at most `limit`, whose subscription is ACTIVE
    /// and below its in-flight limit (`max_in_flight_default` when it sets none). On
    /// PostgreSQL rows another worker is claiming are skipped.
    pub async fn due_webhooks_in(
        &self,
        tx: &mut Tx,
        max_in_flight_default: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let sql = self.due_webhooks_sql(self.skip_locked());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(max_in_flight_default)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        candidates(rows, Channel::Webhook)
    }

    /// Due email deliveries, soonest first, at most `limit`.
    pub async fn due_emails_in(
        &self,
        tx: &mut Tx,
        limit: i64,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let sql = self.due_emails_sql(self.skip_locked());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        candidates(rows, Channel::Email)
    }

    /// Leases a waiting delivery for `lease_ms` under `claim_token`; the start of the lease,
    /// or `None` when the delivery is no longer waiting.
    pub async fn lease(
        &self,
        tx: &mut Tx,
        delivery_id: &str,
        lease_ms: u64,
        claim_token: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'IN_FLIGHT', next_attempt_us = NULL, \
             lease_until_us = {now} + $2, claim_token = $3, updated_us = {now} \
             WHERE delivery_id = $1 AND state IN {WAITING} RETURNING {now} AS start_us",
            now = self.now
        )))
        .bind(delivery_id)
        .bind(delay_us(lease_ms))
        .bind(claim_token)
        .fetch_optional(&mut **tx)
        .await
    }

    /// Puts a leased candidate back as it was found, without a lease.
    pub async fn put_back(&self, tx: &mut Tx, candidate: &Candidate) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE deliveries SET state = $2, next_attempt_us = $3, lease_until_us = NULL, \
             claim_token = NULL WHERE delivery_id = $1",
        )
        .bind(&candidate.delivery_id)
        .bind(candidate.state.as_str())
        .bind(candidate.next_attempt_us)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The delivery of a claim while the claim holds; `None` when it was lost (the delivery
    /// was cancelled, or its lease expired and it was claimed again).
    pub async fn claimed_delivery(
        &self,
        claim: &Claimed,
    ) -> Result<Option<DeliveryRow>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = $1 AND claim_token = $2"
        )))
        .bind(&claim.delivery_id)
        .bind(&claim.claim_token)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    /// Counts an attempt of a delivery whose claim still holds and moves it to `state`, due
    /// again after `retry_ms` when that is FAILED_RETRYING; releases the lease. The attempt's
    /// number, or `None` when the claim was lost.
    pub async fn finish_attempt(
        &self,
        tx: &mut Tx,
        claim: &Claimed,
        status_code: i64,
        error: &str,
        state: DeliveryState,
        retry_ms: u64,
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET attempt_count = attempt_count + 1, run_attempts = run_attempts + 1, \
             last_status_code = $3, last_error = $4, state = $5, \
             next_attempt_us = CASE WHEN $5 = 'FAILED_RETRYING' THEN {now} + $6 ELSE NULL END, \
             delivered_us = CASE WHEN $5 = 'DELIVERED' THEN {now} ELSE NULL END, \
             lease_until_us = NULL, claim_token = NULL, updated_us = {now} \
             WHERE delivery_id = $1 AND state = 'IN_FLIGHT' AND claim_token = $2 \
             RETURNING attempt_count",
            now = self.now
        )))
        .bind(&claim.delivery_id)
        .bind(&claim.claim_token)
        .bind(status_code)
        .bind(error)
        .bind(state.as_str())
        .bind(delay_us(retry_ms))
        .fetch_optional(&mut **tx)
        .await
    }

    /// Counts an attempt of a delivery whose claim was lost, without touching its state, so
    /// that the log stays complete. The attempt's number and the delivery's state.
    pub async fn count_lost_attempt(
        &self,
        tx: &mut Tx,
        delivery_id: &str,
        status_code: i64,
        error: &str,
    ) -> Result<(i64, DeliveryState), sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET attempt_count = attempt_count + 1, last_status_code = $2, \
             last_error = $3, updated_us = {now} WHERE delivery_id = $1 \
             RETURNING attempt_count, state",
            now = self.now
        )))
        .bind(delivery_id)
        .bind(status_code)
        .bind(error)
        .fetch_one(&mut **tx)
        .await?;
        Ok((
            row.try_get("attempt_count")?,
            delivery_state(&row.try_get::<String, _>("state")?)?,
        ))
    }

    /// The receiver of each of `delivery_ids`, read in `tx`: its subscription (empty for
    /// email) and that subscription's state (`None` for email or when it is gone). A delivery
    /// that does not exist is left out.
    pub async fn receivers_in(
        &self,
        tx: &mut Tx,
        delivery_ids: &[&str],
    ) -> Result<HashMap<String, (String, Option<SubscriptionState>)>, sqlx::Error> {
        let mut receivers = HashMap::with_capacity(delivery_ids.len());
        for chunk in delivery_ids.chunks(RECORDED_PER_STATEMENT_MAX) {
            let ids = padded_in(chunk);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.delivery_id, d.subscription_id, s.state FROM deliveries d \
                 LEFT JOIN subscriptions s ON d.channel = 'WEBHOOK' \
                 AND s.subscription_id = d.subscription_id \
                 WHERE d.delivery_id IN ({})",
                placeholders(ids.len(), 1, 1)
            )));
            for id in ids {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let state: Option<String> = row.try_get("state")?;
                let state = state
                    .map(|text| SubscriptionState::parse(&text).ok_or_else(|| corrupt(text)))
                    .transpose()?;
                receivers.insert(
                    row.try_get("delivery_id")?,
                    (row.try_get("subscription_id")?, state),
                );
            }
        }
        Ok(receivers)
    }

    /// Logs finished attempts, each under its number, in one statement per
    /// [`RECORDED_PER_STATEMENT_MAX`]; a status code is filed as HTTP or SMTP by the claim's
    /// channel.
    pub async fn log_attempts(
        &self,
        tx: &mut Tx,
        attempts: &[(&Claimed, i64, AttemptLog<'_>)],
    ) -> Result<(), sqlx::Error> {
        const KINDS: [Kind; 8] = [
            Kind::Text,
            Kind::Int,
            Kind::Int,
            Kind::Int,
            Kind::Int,
            Kind::Int,
            Kind::Int,
            Kind::Text,
        ];
        for chunk in attempts.chunks(RECORDED_PER_STATEMENT_MAX) {
            let sql = padded_insert(
                &format!("INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS})"),
                "*",
                chunk.len(),
                &KINDS,
                "",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (claim, attempt_number, attempt) in chunk {
                let (http_status, smtp_code) = match claim.channel {
                    Channel::Webhook => (attempt.status_code, 0),
                    Channel::Email => (0, attempt.status_code),
                };
                query = query
                    .bind(claim.delivery_id.clone())
                    .bind(*attempt_number)
                    .bind(claim.start_us)
                    .bind(attempt.latency_ms.max(0))
                    .bind(http_status)
                    .bind(smtp_code)
                    .bind(i64::from(attempt.succeeded))
                    .bind(attempt.error.to_owned());
            }
            bind_padding(query, &KINDS, chunk.len())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Deliveries whose lease has run out, oldest lease first, at most `limit`.
    pub async fn expired_leases(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT delivery_id FROM deliveries WHERE state = 'IN_FLIGHT' AND lease_until_us < {now} \
             ORDER BY lease_until_us LIMIT $1",
            now = self.now
        )))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await
    }

    /// Puts a delivery whose lease ran out back in the queue, due at once; its channel and
    /// subscription, or `None` when its lease no longer runs out (it was recorded meanwhile).
    pub async fn recover_lease(
        &self,
        tx: &mut Tx,
        delivery_id: &str,
    ) -> Result<Option<(Channel, String)>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = CASE WHEN attempt_count = 0 THEN 'PENDING' \
             ELSE 'FAILED_RETRYING' END, next_attempt_us = {now}, lease_until_us = NULL, \
             claim_token = NULL, updated_us = {now} \
             WHERE delivery_id = $1 AND state = 'IN_FLIGHT' AND lease_until_us < {now} \
             RETURNING channel, subscription_id",
            now = self.now
        )))
        .bind(delivery_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|row| {
            Ok((
                channel(&row.try_get::<String, _>("channel")?)?,
                row.try_get("subscription_id")?,
            ))
        })
        .transpose()
    }
}
