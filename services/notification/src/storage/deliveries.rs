//! Deliveries and their attempts: the delivery log, and the changes of state made by RPCs
//! (cancel, dead-letter, requeue). The worker's queue queries are in `queue`.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use subsidy_common::db::{Kind, bind_padding, padded_insert};

use super::{
    Arg, FINISHED, Store, StoredEvent, Tx, UNFINISHED, WAITING, bind_all, corrupt, delay_us,
};
use crate::domain::delivery::{
    ATTEMPTS_SHOWN_MAX, Channel, DeliveryFilter, DeliveryState, ordering_key,
};
use crate::domain::event::{Event, EventType};

pub(super) const DELIVERY_COLUMNS: &str = "delivery_id, event_seq, event_id, event_type, channel, subscription_id, \
     recipient_email, state, attempt_count, run_attempts, next_attempt_us, last_status_code, last_error, \
     redelivery_count, created_us, updated_us, delivered_us";
/// Most deliveries scheduled by one statement (nine values each, well within both databases'
/// limits on bound values).
pub const DELIVERIES_PER_INSERT_MAX: usize = 256;
pub(super) const ATTEMPT_COLUMNS: &str = "delivery_id, attempt_number, start_us, latency_ms, http_status_code, \
     smtp_reply_code, succeeded, error";

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Identifier.
    pub delivery_id: String,
    /// The event's feed position.
    pub event_seq: i64,
    /// The event.
    pub event_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// Channel.
    pub channel: Channel,
    /// Subscription, or empty for email.
    pub subscription_id: String,
    /// Recipient, or empty for webhooks.
    pub recipient_email: String,
    /// State.
    pub state: DeliveryState,
    /// Attempts ever made.
    pub attempt_count: i64,
    /// Attempts since creation or the last requeue.
    pub run_attempts: i64,
    /// When the next attempt is due, µs.
    pub next_attempt_us: Option<i64>,
    /// Status code of the last attempt.
    pub last_status_code: i64,
    /// Error of the last attempt.
    pub last_error: String,
    /// Requeues by hand.
    pub redelivery_count: i64,
    /// Created, µs.
    pub created_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
    /// Delivered, µs.
    pub delivered_us: Option<i64>,
}

/// One attempt as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    /// The delivery.
    pub delivery_id: String,
    /// Position from 1.
    pub attempt_number: i64,
    /// Start, µs.
    pub start_us: i64,
    /// Duration, ms.
    pub latency_ms: i64,
    /// HTTP status, or 0.
    pub http_status_code: i64,
    /// SMTP reply code, or 0.
    pub smtp_reply_code: i64,
    /// Success.
    pub succeeded: bool,
    /// Error text.
    pub error: String,
}

/// A stored delivery state.
pub(super) fn delivery_state(text: &str) -> Result<DeliveryState, sqlx::Error> {
    DeliveryState::parse(text).ok_or_else(|| corrupt(format!("state {text}")))
}

/// A stored channel.
pub(super) fn channel(text: &str) -> Result<Channel, sqlx::Error> {
    Channel::parse(text).ok_or_else(|| corrupt(format!("channel {text}")))
}

/// Where a delivery over `channel` of `event` goes besides its subscription: the event's
/// recipient for email, nobody for webhooks.
fn recipient(event: &Event, channel: Channel) -> String {
    match channel {
        Channel::Email => event
            .recipient_email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        Channel::Webhook => String::new(),
    }
}

pub(super) fn delivery_row(row: &AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    let kind: String = row.try_get("event_type")?;
    Ok(DeliveryRow {
        delivery_id: row.try_get("delivery_id")?,
        event_seq: row.try_get("event_seq")?,
        event_id: row.try_get("event_id")?,
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt(format!("type {kind}")))?,
        channel: channel(&row.try_get::<String, _>("channel")?)?,
        subscription_id: row.try_get("subscription_id")?,
        recipient_email: row.try_get("recipient_email")?,
        state: delivery_state(&row.try_get::<String, _>("state")?)?,
        attempt_count: row.try_get("attempt_count")?,
        run_attempts: row.try_get("run_attempts")?,
        next_attempt_us: row.try_get("next_attempt_us")?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        redelivery_count: row.try_get("redelivery_count")?,
        created_us: row.try_get("created_us")?,
        updated_us: row.try_get("updated_us")?,
        delivered_us: row.try_get("delivered_us")?,
    })
}

fn attempt_row(row: &AnyRow) -> Result<AttemptRow, sqlx::Error> {
    let succeeded: i64 = row.try_get("succeeded")?;
    Ok(AttemptRow {
        delivery_id: row.try_get("delivery_id")?,
        attempt_number: row.try_get("attempt_number")?,
        start_us: row.try_get("start_us")?,
        latency_ms: row.try_get("latency_ms")?,
        http_status_code: row.try_get("http_status_code")?,
        smtp_reply_code: row.try_get("smtp_reply_code")?,
        succeeded: succeeded == 1,
        error: row.try_get("error")?,
    })
}

impl Store {
    /// Schedules a PENDING delivery of `stored` over `channel` (to `subscription_id` for
    /// webhooks, to the event's recipient for email), due after `first_delay_ms`.
    pub async fn insert_delivery(
        &self,
        tx: &mut Tx,
        stored: &StoredEvent,
        channel: Channel,
        subscription_id: &str,
        first_delay_ms: u64,
    ) -> Result<DeliveryRow, sqlx::Error> {
        let event = &stored.event;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO deliveries (delivery_id, event_seq, event_id, event_type, channel, subscription_id, \
             recipient_email, ordering_key, state, next_attempt_us, created_us, updated_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', {now} + $9, {now}, {now}) \
             RETURNING {DELIVERY_COLUMNS}",
            now = self.now
        )))
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(stored.seq)
        .bind(event.event_id.as_str())
        .bind(event.event_type.as_str())
        .bind(channel.as_str())
        .bind(subscription_id)
        .bind(recipient(&stored.event, channel))
        .bind(ordering_key(channel, subscription_id, &event.application_id))
        .bind(delay_us(first_delay_ms))
        .fetch_one(&mut **tx)
        .await?;
        delivery_row(&row)
    }

    /// Schedules the PENDING deliveries `targets` (each an event as stored, its channel and,
    /// for webhooks, its subscription), as [`Store::insert_delivery`] does each, due after
    /// `first_delay_ms`, in statements of at most [`DELIVERIES_PER_INSERT_MAX`] rows.
    pub async fn insert_deliveries(
        &self,
        tx: &mut Tx,
        targets: &[(&StoredEvent, Channel, &str)],
        first_delay_ms: u64,
    ) -> Result<(), sqlx::Error> {
        const KINDS: [Kind; 9] = [
            Kind::Text,
            Kind::Int,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Int,
        ];
        for chunk in targets.chunks(DELIVERIES_PER_INSERT_MAX) {
            let sql = padded_insert(
                "INSERT INTO deliveries (delivery_id, event_seq, event_id, event_type, channel, \
                 subscription_id, recipient_email, ordering_key, state, next_attempt_us, created_us, \
                 updated_us)",
                &format!(
                    "v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
                     v.column8, 'PENDING', {now} + v.column9, {now}, {now}",
                    now = self.now
                ),
                chunk.len(),
                &KINDS,
                "",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (stored, channel, subscription_id) in chunk {
                let event = &stored.event;
                query = query
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(stored.seq)
                    .bind(event.event_id.as_str().to_owned())
                    .bind(event.event_type.as_str())
                    .bind(channel.as_str())
                    .bind(subscription_id.to_string())
                    .bind(recipient(event, *channel))
                    .bind(ordering_key(
                        *channel,
                        subscription_id,
                        &event.application_id,
                    ))
                    .bind(delay_us(first_delay_ms));
            }
            bind_padding(query, &KINDS, chunk.len())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Dead-letters the waiting deliveries of a subscription being disabled; how many. Called
    /// before the subscription row is locked (lock order: deliveries first).
    pub async fn dead_letter_waiting(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'DEAD_LETTERED', next_attempt_us = NULL, updated_us = {now} \
             WHERE subscription_id = $1 AND state IN {WAITING}",
            now = self.now
        )))
        .bind(subscription_id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }

    /// Cancels the unfinished deliveries of a subscription being deleted; how many.
    pub async fn cancel_unfinished(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'CANCELLED', next_attempt_us = NULL, lease_until_us = NULL, \
             claim_token = NULL, updated_us = {now} WHERE subscription_id = $1 AND state IN {UNFINISHED}",
            now = self.now
        )))
        .bind(subscription_id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }

    /// One delivery.
    pub async fn get_delivery(
        &self,
        delivery_id: &str,
    ) -> Result<Option<DeliveryRow>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = $1"
        )))
        .bind(delivery_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    /// The last attempts of each delivery (oldest first), in the order of `delivery_ids`.
    pub async fn attempts_of(
        &self,
        delivery_ids: &[String],
    ) -> Result<Vec<Vec<AttemptRow>>, sqlx::Error> {
        if delivery_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=delivery_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM (SELECT {ATTEMPT_COLUMNS}, ROW_NUMBER() OVER \
             (PARTITION BY delivery_id ORDER BY attempt_number DESC) AS recent \
             FROM delivery_attempts WHERE delivery_id IN ({})) ranked \
             WHERE recent <= {ATTEMPTS_SHOWN_MAX} ORDER BY delivery_id, attempt_number",
            placeholders.join(", "),
        );
        let args = delivery_ids.iter().cloned().map(Arg::Text).collect();
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_all(&self.db.pool)
            .await?;
        let mut by_id: HashMap<String, Vec<AttemptRow>> = HashMap::new();
        for row in &rows {
            let attempt = attempt_row(row)?;
            by_id
                .entry(attempt.delivery_id.clone())
                .or_default()
                .push(attempt);
        }
        Ok(delivery_ids
            .iter()
            .map(|id| by_id.remove(id).unwrap_or_default())
            .collect())
    }

    /// Deliveries newest first before the keyset position `(created_us, id)`.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let has_before = i64::from(before.is_some());
        let (before_us, before_id) = before.unwrap_or((0, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1 = '' OR event_id = $1) \
             AND ($2 = '' OR subscription_id = $2) AND ($3 = '' OR channel = $3) AND ($4 = '' OR state = $4) \
             AND ($5 = 0 OR created_us < $6 OR (created_us = $6 AND delivery_id < $7)) \
             ORDER BY created_us DESC, delivery_id DESC LIMIT $8"
        )))
        .bind(filter.event_id.clone().unwrap_or_default())
        .bind(filter.subscription_id.clone().unwrap_or_default())
        .bind(filter.channel.map(Channel::as_str).unwrap_or_default())
        .bind(filter.state.map(DeliveryState::as_str).unwrap_or_default())
        .bind(has_before)
        .bind(before_us)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    /// Whether `event_id` has a webhook delivery to `subscription_id`, read in `tx`.
    pub async fn has_webhook_delivery_in(
        &self,
        tx: &mut Tx,
        event_id: &str,
        subscription_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT state FROM deliveries WHERE event_id = $1 AND channel = 'WEBHOOK' \
             AND subscription_id = $2",
        )
        .bind(event_id)
        .bind(subscription_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(existing.is_some())
    }

    /// Requeues the finished webhook delivery of `event_id` to `subscription_id`.
    pub async fn requeue_webhook_delivery(
        &self,
        tx: &mut Tx,
        event_id: &str,
        subscription_id: &str,
        first_delay_ms: u64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let condition = format!(
            "event_id = $1 AND channel = 'WEBHOOK' AND subscription_id = $3 AND state IN {FINISHED}"
        );
        self.requeue(
            tx,
            &condition,
            event_id,
            Some(subscription_id),
            first_delay_ms,
        )
        .await
    }

    /// Requeues the finished deliveries of `event_id`: its email and its webhooks to ACTIVE
    /// subscriptions.
    pub async fn requeue_event_deliveries(
        &self,
        tx: &mut Tx,
        event_id: &str,
        first_delay_ms: u64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let condition = format!(
            "event_id = $1 AND state IN {FINISHED} AND (channel = 'EMAIL' OR EXISTS \
             (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id \
             AND s.state = 'ACTIVE'))"
        );
        self.requeue(tx, &condition, event_id, None, first_delay_ms)
            .await
    }

    /// Requeues the dead-lettered deliveries of a subscription.
    pub async fn requeue_dead_letters(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        first_delay_ms: u64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        self.requeue(
            tx,
            "subscription_id = $1 AND state = 'DEAD_LETTERED'",
            subscription_id,
            None,
            first_delay_ms,
        )
        .await
    }

    /// Requeues finished deliveries matched by `condition`, in which `$1` is `key` and `$3`
    /// (when given) is `second_key`: each starts the retry schedule anew after
    /// `first_delay_ms`. Returned in their original order.
    async fn requeue(
        &self,
        tx: &mut Tx,
        condition: &str,
        key: &str,
        second_key: Option<&str>,
        first_delay_ms: u64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'PENDING', next_attempt_us = {now} + $2, run_attempts = 0, \
             redelivery_count = redelivery_count + 1, delivered_us = NULL, updated_us = {now} \
             WHERE {condition} RETURNING {DELIVERY_COLUMNS}",
            now = self.now
        )))
        .bind(key)
        .bind(delay_us(first_delay_ms));
        if let Some(second_key) = second_key {
            query = query.bind(second_key);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        let mut deliveries: Vec<DeliveryRow> =
            rows.iter().map(delivery_row).collect::<Result<_, _>>()?;
        deliveries.sort_by_key(|d| (d.event_seq, d.delivery_id.clone()));
        Ok(deliveries)
    }

    /// Cancels waiting webhook deliveries whose subscription is gone; how many.
    pub async fn cancel_orphaned(&self, tx: &mut Tx) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'CANCELLED', next_attempt_us = NULL, updated_us = {now} \
             WHERE channel = 'WEBHOOK' AND state IN {WAITING} AND NOT EXISTS \
             (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id)",
            now = self.now
        )))
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }

    /// Dead-letters waiting webhook deliveries whose subscription is DISABLED; how many.
    pub async fn dead_letter_disabled(&self, tx: &mut Tx) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'DEAD_LETTERED', next_attempt_us = NULL, updated_us = {now} \
             WHERE channel = 'WEBHOOK' AND state IN {WAITING} AND EXISTS \
             (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id \
             AND s.state = 'DISABLED')",
            now = self.now
        )))
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }
}
