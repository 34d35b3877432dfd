//! Notification storage: the feed of events, the subscriptions, and the durable delivery queue.
//!
//! Every change is one transaction of conditional updates. Row locks are always taken in the
//! order deliveries → subscriptions → feed head, so that the worker, the RPCs and several
//! replicas never wait on each other in a cycle. Times are judged by the database clock.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use subsidy_common::db::{Backend, Db, DbError};
use subsidy_common::idempotency::{self, Claim};
use subsidy_common::{Money, RequestId, Uscc};

use crate::domain::delivery::{Channel, DeliveryState, Next, Outcome, ordering_key};
use crate::domain::event::{EmailAddress, Event, EventId, EventType, Language, Program};
use crate::domain::subscription::{
    DisabledReason, EndpointUrl, Filters, SUBSCRIPTIONS_MAX, SigningSecret, SubscriptionState,
};
use crate::error::NotificationError;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const EVENT_COLUMNS: &str = "seq, event_id, event_type, application_id, enterprise_uscc, program, amount_fen, \
     occur_us, traceparent, tracestate, payload_json, language, recipient_email, round_id, source, content_hash, \
     published_us";
const SUBSCRIPTION_COLUMNS: &str = "subscription_id, endpoint_url, event_types, program_filter, \
     enterprise_uscc_filter, description, max_in_flight, contact_email, state, disabled_reason, disabled_us, \
     failing_since_us, previous_secret_expires_us, in_flight, created_us, updated_us";
const DELIVERY_COLUMNS: &str = "delivery_id, event_seq, event_id, event_type, channel, subscription_id, \
     recipient_email, state, attempt_count, run_attempts, next_attempt_us, last_status_code, last_error, \
     redelivery_count, created_us, updated_us, delivered_us";
const ATTEMPT_COLUMNS: &str = "delivery_id, attempt_number, start_us, latency_ms, http_status_code, \
     smtp_reply_code, succeeded, error";
/// The states in which a delivery is not finished.
const UNFINISHED: &str = "('PENDING', 'IN_FLIGHT', 'FAILED_RETRYING')";
/// The states in which a delivery waits for its next attempt.
const WAITING: &str = "('PENDING', 'FAILED_RETRYING')";
/// The states in which a delivery is finished.
const FINISHED: &str = "('DELIVERED', 'DEAD_LETTERED', 'CANCELLED')";
/// Microseconds in a millisecond.
const US_PER_MS: i64 = 1_000;

/// An event as stored, with its feed position.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in the feed, from 1.
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// When it was first stored, µs.
    pub published_us: i64,
}

/// The result of a publication.
#[derive(Clone, Debug)]
pub struct Published {
    /// The stored event (the first one, for a duplicate).
    pub stored: StoredEvent,
    /// Whether the event was stored before with the same content.
    pub duplicate: bool,
    /// Deliveries scheduled.
    pub delivery_count: usize,
}

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

/// A validated new subscription.
#[derive(Clone, Debug)]
pub struct NewSubscription {
    /// Endpoint.
    pub endpoint_url: EndpointUrl,
    /// Filters.
    pub filters: Filters,
    /// Description.
    pub description: String,
    /// In-flight limit, 0 to 64.
    pub max_in_flight: i64,
    /// Contact, if any.
    pub contact_email: Option<EmailAddress>,
}

/// Validated changes of a subscription; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionChanges {
    /// New endpoint.
    pub endpoint_url: Option<EndpointUrl>,
    /// New type filter.
    pub event_types: Option<Vec<EventType>>,
    /// New program filter.
    pub program: Option<Option<Program>>,
    /// New enterprise filter.
    pub enterprise: Option<Option<Uscc>>,
    /// New description.
    pub description: Option<String>,
    /// New in-flight limit.
    pub max_in_flight: Option<i64>,
    /// New contact.
    pub contact_email: Option<Option<EmailAddress>>,
    /// New state.
    pub state: Option<SubscriptionState>,
}

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

/// Filters of event listings and streams.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only these types.
    pub event_types: Vec<EventType>,
    /// Only this program.
    pub program: Option<Program>,
    /// Only this application.
    pub application_id: Option<String>,
    /// Only this enterprise.
    pub enterprise_uscc: Option<Uscc>,
    /// Only events that occurred at or after, µs.
    pub start_us: Option<i64>,
    /// Only events that occurred before, µs.
    pub end_us: Option<i64>,
}

/// Filters of a delivery listing.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    /// Only of this event.
    pub event_id: Option<String>,
    /// Only to this subscription.
    pub subscription_id: Option<String>,
    /// Only over this channel.
    pub channel: Option<Channel>,
    /// Only in this state.
    pub state: Option<DeliveryState>,
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

/// Everything an attempt needs.
#[derive(Clone, Debug)]
pub struct AttemptWork {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// The event.
    pub event: StoredEvent,
    /// For webhooks: the endpoint and the secrets to sign with, current first; `None` when the
    /// subscription is gone.
    pub webhook: Option<(String, Vec<SigningSecret>)>,
}

/// The result of recording an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The state the delivery is now in.
    pub state: DeliveryState,
    /// A subscription whose failure run is now long enough to disable it.
    pub disable_candidate: Option<String>,
}

/// A value bound to a dynamically built query.
enum Arg {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(value) => query.bind(value),
        };
    }
    query
}

fn corrupt(what: String) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

fn event_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let event_id: String = row.try_get("event_id")?;
    let kind: String = row.try_get("event_type")?;
    let uscc: String = row.try_get("enterprise_uscc")?;
    let program: String = row.try_get("program")?;
    let amount_fen: Option<i64> = row.try_get("amount_fen")?;
    let payload: String = row.try_get("payload_json")?;
    let language: String = row.try_get("language")?;
    let recipient: String = row.try_get("recipient_email")?;
    let event = Event {
        event_id: EventId::parse(&event_id).map_err(|e| corrupt(format!("event_id: {e}")))?,
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt(format!("type {kind}")))?,
        application_id: row.try_get("application_id")?,
        enterprise_uscc: match uscc.as_str() {
            "" => None,
            text => Some(Uscc::parse(text).map_err(|e| corrupt(format!("uscc: {e}")))?),
        },
        program: match program.as_str() {
            "" => None,
            text => Some(Program::parse(text).ok_or_else(|| corrupt(format!("program {text}")))?),
        },
        amount: amount_fen
            .map(Money::from_fen)
            .transpose()
            .map_err(|e| corrupt(format!("amount: {e}")))?,
        occur_us: row.try_get("occur_us")?,
        traceparent: row.try_get("traceparent")?,
        tracestate: row.try_get("tracestate")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        language: match language.as_str() {
            "" => None,
            text => Some(Language::parse(text).ok_or_else(|| corrupt(format!("language {text}")))?),
        },
        recipient_email: match recipient.as_str() {
            "" => None,
            text => Some(EmailAddress::parse(text).map_err(|e| corrupt(format!("email: {e}")))?),
        },
        round_id: row.try_get("round_id")?,
        source: row.try_get("source")?,
    };
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        event,
        published_us: row.try_get("published_us")?,
    })
}

fn subscription_row(row: &AnyRow) -> Result<SubscriptionRow, sqlx::Error> {
    let types: String = row.try_get("event_types")?;
    let program: String = row.try_get("program_filter")?;
    let uscc: String = row.try_get("enterprise_uscc_filter")?;
    let state: String = row.try_get("state")?;
    let reason: String = row.try_get("disabled_reason")?;
    Ok(SubscriptionRow {
        subscription_id: row.try_get("subscription_id")?,
        endpoint_url: row.try_get("endpoint_url")?,
        filters: Filters {
            event_types: Filters::parse_event_types(&types)
                .ok_or_else(|| corrupt(format!("event types {types}")))?,
            program: match program.as_str() {
                "" => None,
                text => {
                    Some(Program::parse(text).ok_or_else(|| corrupt(format!("program {text}")))?)
                }
            },
            enterprise: match uscc.as_str() {
                "" => None,
                text => Some(Uscc::parse(text).map_err(|e| corrupt(format!("uscc: {e}")))?),
            },
        },
        description: row.try_get("description")?,
        max_in_flight: row.try_get("max_in_flight")?,
        contact_email: row.try_get("contact_email")?,
        state: SubscriptionState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
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

fn delivery_row(row: &AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    let kind: String = row.try_get("event_type")?;
    let channel: String = row.try_get("channel")?;
    let state: String = row.try_get("state")?;
    Ok(DeliveryRow {
        delivery_id: row.try_get("delivery_id")?,
        event_seq: row.try_get("event_seq")?,
        event_id: row.try_get("event_id")?,
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt(format!("type {kind}")))?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt(format!("channel {channel}")))?,
        subscription_id: row.try_get("subscription_id")?,
        recipient_email: row.try_get("recipient_email")?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
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

/// The notification database: a pool of connections and its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: String,
}

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql().to_owned();
        Store { db, now }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Applies the notification migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    /// The lock clause that lets several workers claim disjoint deliveries on PostgreSQL;
    /// SQLite's single writer needs none.
    fn skip_locked(&self) -> &'static str {
        match self.db.backend {
            Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    async fn claim_key<R: prost::Message + Default>(
        &self,
        tx: &mut Transaction<'static, Any>,
        request_id: &RequestId,
        operation: &str,
        fingerprint: &str,
    ) -> Result<Option<R>, NotificationError> {
        match idempotency::claim::<R>(tx, request_id, operation, fingerprint, &self.now).await? {
            Claim::Fresh => Ok(None),
            Claim::Replay(response) => Ok(Some(response)),
            Claim::Reused => Err(NotificationError::RequestIdReused {
                request_id: request_id.as_str().to_owned(),
            }),
        }
    }

    // ----- Events -------------------------------------------------------------------------

    /// Stores `event` and schedules its deliveries, the first attempt after `first_delay_ms`;
    /// a replay of a stored event is reported as a duplicate and changes nothing.
    pub async fn publish(
        &self,
        event: &Event,
        first_delay_ms: u64,
    ) -> Result<Published, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        let published = self.publish_in(&mut tx, event, first_delay_ms).await?;
        if published.duplicate {
            // Rolls back the feed head increment.
            drop(tx);
        } else {
            tx.commit().await?;
        }
        Ok(published)
    }

    async fn publish_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &Event,
        first_delay_ms: u64,
    ) -> Result<Published, NotificationError> {
        // The head's row lock serialises publications from here to commit.
        let seq: i64 = sqlx::query_scalar(
            "UPDATE feed_head SET last_seq = last_seq + 1 WHERE singleton = 1 RETURNING last_seq",
        )
        .fetch_one(&mut **tx)
        .await?;
        let hash = event.content_hash();
        if let Some(existing) = self.find_event_in(tx, event.event_id.as_str()).await? {
            let stored_hash: String =
                sqlx::query_scalar("SELECT content_hash FROM events WHERE event_id = $1")
                    .bind(event.event_id.as_str())
                    .fetch_one(&mut **tx)
                    .await?;
            return if stored_hash == hash {
                Ok(Published {
                    stored: existing,
                    duplicate: true,
                    delivery_count: 0,
                })
            } else {
                Err(NotificationError::EventIdReused {
                    event_id: event.event_id.to_string(),
                })
            };
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events ({EVENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, {now}) \
             RETURNING {EVENT_COLUMNS}",
            now = self.now
        )))
        .bind(seq)
        .bind(event.event_id.as_str())
        .bind(event.event_type.as_str())
        .bind(&event.application_id)
        .bind(
            event
                .enterprise_uscc
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(event.program.map(Program::as_str).unwrap_or_default())
        .bind(event.amount.map(Money::fen))
        .bind(event.occur_us)
        .bind(&event.traceparent)
        .bind(&event.tracestate)
        .bind(event.payload_json())
        .bind(event.language.map(Language::as_str).unwrap_or_default())
        .bind(
            event
                .recipient_email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(&event.round_id)
        .bind(&event.source)
        .bind(&hash)
        .fetch_one(&mut **tx)
        .await?;
        let stored = event_row(&row)?;
        let mut delivery_count = 0;
        if !event.event_type.is_internal() {
            let subscriptions = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE state = 'ACTIVE' \
                 ORDER BY created_us, subscription_id LIMIT $1"
            )))
            .bind(SUBSCRIPTIONS_MAX)
            .fetch_all(&mut **tx)
            .await?;
            for row in &subscriptions {
                let subscription = subscription_row(row)?;
                if subscription.filters.matches(event) {
                    self.insert_delivery(
                        tx,
                        &stored,
                        Channel::Webhook,
                        &subscription.subscription_id,
                        first_delay_ms,
                    )
                    .await?;
                    delivery_count += 1;
                }
            }
        }
        if event.recipient_email.is_some() {
            self.insert_delivery(tx, &stored, Channel::Email, "", first_delay_ms)
                .await?;
            delivery_count += 1;
        }
        Ok(Published {
            stored,
            duplicate: false,
            delivery_count,
        })
    }

    async fn insert_delivery(
        &self,
        tx: &mut Transaction<'static, Any>,
        stored: &StoredEvent,
        channel: Channel,
        subscription_id: &str,
        first_delay_ms: u64,
    ) -> Result<DeliveryRow, NotificationError> {
        let event = &stored.event;
        let recipient = match channel {
            Channel::Email => event
                .recipient_email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            Channel::Webhook => String::new(),
        };
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
        .bind(recipient)
        .bind(ordering_key(channel, subscription_id, &event.application_id))
        .bind(delay_us(first_delay_ms))
        .fetch_one(&mut **tx)
        .await?;
        Ok(delivery_row(&row)?)
    }

    async fn find_event_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        event_id: &str,
    ) -> Result<Option<StoredEvent>, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(event_row).transpose()?)
    }

    /// One event.
    pub async fn get_event(
        &self,
        event_id: &str,
    ) -> Result<Option<StoredEvent>, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        )))
        .bind(event_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.as_ref().map(event_row).transpose()?)
    }

    /// The position of the last stored event (0 when there is none). Every event at or
    /// before it is committed and visible.
    pub async fn feed_head(&self) -> Result<i64, NotificationError> {
        Ok(
            sqlx::query_scalar("SELECT last_seq FROM feed_head WHERE singleton = 1")
                .fetch_one(&self.db.pool)
                .await?,
        )
    }

    /// Events in feed order with `after < seq <= up_to` that pass `filter`, at most `limit`.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, NotificationError> {
        let mut conditions = vec!["seq > $1".to_owned(), "seq <= $2".to_owned()];
        let mut args = vec![Arg::Int(after), Arg::Int(up_to)];
        // Binds `arg` and returns its placeholder.
        let mut bind = |arg: Arg| {
            args.push(arg);
            format!("${}", args.len())
        };
        if !filter.event_types.is_empty() {
            let names: Vec<String> = filter
                .event_types
                .iter()
                .map(|kind| bind(Arg::Text(kind.as_str().into())))
                .collect();
            conditions.push(format!("event_type IN ({})", names.join(", ")));
        }
        if let Some(program) = filter.program {
            conditions.push(format!(
                "program = {}",
                bind(Arg::Text(program.as_str().into()))
            ));
        }
        if let Some(application_id) = &filter.application_id {
            conditions.push(format!(
                "application_id = {}",
                bind(Arg::Text(application_id.clone()))
            ));
        }
        if let Some(uscc) = &filter.enterprise_uscc {
            conditions.push(format!(
                "enterprise_uscc = {}",
                bind(Arg::Text(uscc.as_str().into()))
            ));
        }
        if let Some(start_us) = filter.start_us {
            conditions.push(format!("occur_us >= {}", bind(Arg::Int(start_us))));
        }
        if let Some(end_us) = filter.end_us {
            conditions.push(format!("occur_us < {}", bind(Arg::Int(end_us))));
        }
        args.push(Arg::Int(limit));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY seq LIMIT ${}",
            conditions.join(" AND "),
            args.len()
        );
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(event_row).collect::<Result<_, _>>()?)
    }

    // ----- Subscriptions ------------------------------------------------------------------

    /// Creates a subscription with `secret` (idempotent by `request_id`).
    pub async fn create_subscription<R: prost::Message + Default>(
        &self,
        new: &NewSubscription,
        secret: &SigningSecret,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&SubscriptionRow, &SigningSecret) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "CreateSubscription", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        let count: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM subscriptions")
            .fetch_one(&mut *tx)
            .await?;
        if count >= SUBSCRIPTIONS_MAX {
            return Err(NotificationError::SubscriptionLimitReached {
                subscriptions_max: SUBSCRIPTIONS_MAX,
            });
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO subscriptions (subscription_id, endpoint_url, event_types, program_filter, \
             enterprise_uscc_filter, description, max_in_flight, contact_email, state, disabled_reason, secret, \
             created_us, updated_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ACTIVE', '', $9, {now}, {now}) \
             RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(uuid::Uuid::now_v7().to_string())
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
        .bind(secret.expose())
        .fetch_one(&mut *tx)
        .await?;
        let response = respond(&subscription_row(&row)?, secret);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRow>, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = $1"
        )))
        .bind(subscription_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.as_ref().map(subscription_row).transpose()?)
    }

    /// Subscriptions oldest first after the keyset position `(created_us, id)`.
    pub async fn list_subscriptions(
        &self,
        state: Option<SubscriptionState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>, NotificationError> {
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
        Ok(rows
            .iter()
            .map(subscription_row)
            .collect::<Result<_, _>>()?)
    }

    /// Dead-letters the waiting deliveries of a subscription being disabled. Called before the
    /// subscription row is locked (lock order: deliveries first).
    async fn dead_letter_waiting(
        &self,
        tx: &mut Transaction<'static, Any>,
        subscription_id: &str,
    ) -> Result<u64, NotificationError> {
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

    /// Changes the fields named in `changes` (idempotent by `request_id`).
    pub async fn update_subscription<R: prost::Message + Default>(
        &self,
        subscription_id: &str,
        changes: &SubscriptionChanges,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&SubscriptionRow) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "UpdateSubscription", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        if changes.state == Some(SubscriptionState::Disabled) {
            self.dead_letter_waiting(&mut tx, subscription_id).await?;
        }
        let flag = |set: bool| i64::from(set);
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
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
        )))
        .bind(subscription_id)
        .bind(flag(changes.endpoint_url.is_some()))
        .bind(
            changes
                .endpoint_url
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(flag(changes.event_types.is_some()))
        .bind(
            changes
                .event_types
                .clone()
                .map(|event_types| {
                    Filters {
                        event_types,
                        ..Filters::default()
                    }
                    .event_types_text()
                })
                .unwrap_or_default(),
        )
        .bind(flag(changes.program.is_some()))
        .bind(
            changes
                .program
                .flatten()
                .map(Program::as_str)
                .unwrap_or_default(),
        )
        .bind(flag(changes.enterprise.is_some()))
        .bind(
            changes
                .enterprise
                .clone()
                .flatten()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(flag(changes.description.is_some()))
        .bind(changes.description.clone().unwrap_or_default())
        .bind(flag(changes.max_in_flight.is_some()))
        .bind(changes.max_in_flight.unwrap_or_default())
        .bind(flag(changes.contact_email.is_some()))
        .bind(
            changes
                .contact_email
                .clone()
                .flatten()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        )
        .bind(flag(changes.state.is_some()))
        .bind(
            changes
                .state
                .map(SubscriptionState::as_str)
                .unwrap_or_default(),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(NotificationError::SubscriptionNotFound {
                subscription_id: subscription_id.to_owned(),
            });
        };
        let response = respond(&subscription_row(&row)?);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Replaces the signing secret; the current one stays valid for `grace_seconds`
    /// (idempotent by `request_id`).
    pub async fn rotate_secret<R: prost::Message + Default>(
        &self,
        subscription_id: &str,
        secret: &SigningSecret,
        grace_seconds: i64,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&SubscriptionRow, &SigningSecret) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "RotateSubscriptionSecret", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET previous_secret = secret, previous_secret_expires_us = {now} + $3, \
             secret = $2, updated_us = {now} WHERE subscription_id = $1 RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(subscription_id)
        .bind(secret.expose())
        .bind(grace_seconds * 1_000_000)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(NotificationError::SubscriptionNotFound {
                subscription_id: subscription_id.to_owned(),
            });
        };
        let response = respond(&subscription_row(&row)?, secret);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Deletes a subscription and cancels its unfinished deliveries (idempotent by
    /// `request_id`); `respond` gets the subscription as it was and the number cancelled.
    pub async fn delete_subscription<R: prost::Message + Default>(
        &self,
        subscription_id: &str,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&SubscriptionRow, i64) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "DeleteSubscription", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        let cancelled = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'CANCELLED', next_attempt_us = NULL, lease_until_us = NULL, \
             claim_token = NULL, updated_us = {now} WHERE subscription_id = $1 AND state IN {UNFINISHED}",
            now = self.now
        )))
        .bind(subscription_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM subscriptions WHERE subscription_id = $1 RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(subscription_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(NotificationError::SubscriptionNotFound {
                subscription_id: subscription_id.to_owned(),
            });
        };
        let cancelled = i64::try_from(cancelled).expect("a row count fits i64");
        let response = respond(&subscription_row(&row)?, cancelled);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    // ----- Delivery log and redelivery ----------------------------------------------------

    /// One delivery with its last attempts (oldest first).
    pub async fn get_delivery(
        &self,
        delivery_id: &str,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = $1"
        )))
        .bind(delivery_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_row(&row)?;
        let mut attempts = self
            .attempts_of(std::slice::from_ref(&delivery.delivery_id))
            .await?;
        Ok(Some((delivery, attempts.remove(0))))
    }

    /// The last attempts of each delivery (oldest first), in the order of `delivery_ids`.
    pub async fn attempts_of(
        &self,
        delivery_ids: &[String],
    ) -> Result<Vec<Vec<AttemptRow>>, NotificationError> {
        if delivery_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=delivery_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM (SELECT {ATTEMPT_COLUMNS}, ROW_NUMBER() OVER \
             (PARTITION BY delivery_id ORDER BY attempt_number DESC) AS recent \
             FROM delivery_attempts WHERE delivery_id IN ({})) ranked \
             WHERE recent <= {} ORDER BY delivery_id, attempt_number",
            placeholders.join(", "),
            crate::domain::delivery::ATTEMPTS_SHOWN_MAX
        );
        let args = delivery_ids.iter().cloned().map(Arg::Text).collect();
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_all(&self.db.pool)
            .await?;
        let mut by_id: std::collections::HashMap<String, Vec<AttemptRow>> = Default::default();
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
    ) -> Result<Vec<DeliveryRow>, NotificationError> {
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
        Ok(rows.iter().map(delivery_row).collect::<Result<_, _>>()?)
    }

    /// Requeues finished deliveries matched by `condition`, in which `$1` is `key` and `$3`
    /// (when given) is `second_key`: each starts the retry schedule anew after
    /// `first_delay_ms`.
    async fn requeue(
        &self,
        tx: &mut Transaction<'static, Any>,
        condition: &str,
        key: &str,
        second_key: Option<&str>,
        first_delay_ms: u64,
    ) -> Result<Vec<DeliveryRow>, NotificationError> {
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

    async fn active_subscription_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        subscription_id: &str,
    ) -> Result<SubscriptionRow, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = $1"
        )))
        .bind(subscription_id)
        .fetch_optional(&mut **tx)
        .await?;
        let subscription = row
            .as_ref()
            .map(subscription_row)
            .transpose()?
            .ok_or_else(|| NotificationError::SubscriptionNotFound {
                subscription_id: subscription_id.to_owned(),
            })?;
        if subscription.state != SubscriptionState::Active {
            return Err(NotificationError::SubscriptionDisabled {
                subscription_id: subscription_id.to_owned(),
            });
        }
        Ok(subscription)
    }

    /// Delivers an event again (idempotent by `request_id`): requeues its finished deliveries,
    /// all or the one to `subscription_id`, and creates a delivery to that subscription if it
    /// has none and the event matches its filters. `respond` gets the deliveries requeued or
    /// created.
    pub async fn redeliver_event<R: prost::Message + Default>(
        &self,
        event_id: &str,
        subscription_id: Option<&str>,
        first_delay_ms: u64,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&[DeliveryRow]) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "RedeliverEvent", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        let stored = self
            .find_event_in(&mut tx, event_id)
            .await?
            .ok_or_else(|| NotificationError::EventNotFound {
                event_id: event_id.to_owned(),
            })?;
        let deliveries = match subscription_id {
            Some(subscription_id) => {
                let subscription = self
                    .active_subscription_in(&mut tx, subscription_id)
                    .await?;
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT state FROM deliveries WHERE event_id = $1 AND channel = 'WEBHOOK' \
                     AND subscription_id = $2",
                )
                .bind(event_id)
                .bind(subscription_id)
                .fetch_optional(&mut *tx)
                .await?;
                match existing {
                    Some(_) => {
                        let condition = format!(
                            "event_id = $1 AND channel = 'WEBHOOK' AND subscription_id = $3 \
                             AND state IN {FINISHED}"
                        );
                        self.requeue(
                            &mut tx,
                            &condition,
                            event_id,
                            Some(subscription_id),
                            first_delay_ms,
                        )
                        .await?
                    }
                    None if subscription.filters.matches(&stored.event) => {
                        vec![
                            self.insert_delivery(
                                &mut tx,
                                &stored,
                                Channel::Webhook,
                                subscription_id,
                                first_delay_ms,
                            )
                            .await?,
                        ]
                    }
                    None => Vec::new(),
                }
            }
            None => {
                let condition = format!(
                    "event_id = $1 AND state IN {FINISHED} AND (channel = 'EMAIL' OR EXISTS \
                     (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id \
                     AND s.state = 'ACTIVE'))"
                );
                self.requeue(&mut tx, &condition, event_id, None, first_delay_ms)
                    .await?
            }
        };
        let response = respond(&deliveries);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Requeues every dead-lettered delivery of a subscription (idempotent by `request_id`);
    /// `respond` gets how many.
    pub async fn redeliver_dead_letters<R: prost::Message + Default>(
        &self,
        subscription_id: &str,
        first_delay_ms: u64,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(i64) -> R,
    ) -> Result<R, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        if let Some(replay) = self
            .claim_key(&mut tx, request_id, "RedeliverDeadLetters", fingerprint)
            .await?
        {
            return Ok(replay);
        }
        self.active_subscription_in(&mut tx, subscription_id)
            .await?;
        let requeued = self
            .requeue(
                &mut tx,
                "subscription_id = $1 AND state = 'DEAD_LETTERED'",
                subscription_id,
                None,
                first_delay_ms,
            )
            .await?;
        let count = i64::try_from(requeued.len()).expect("a row count fits i64");
        let response = respond(count);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    // ----- The worker's queue -------------------------------------------------------------

    /// Claims up to `limit` due deliveries, of which at most `email_limit` emails, for one
    /// attempt each; webhooks and emails alternate so that neither starves the other. A delivery is due when its time has come, no earlier delivery with the
    /// same order key is unfinished, and (for webhooks) its subscription is ACTIVE and below
    /// its in-flight limit, which the conditional counter increment enforces exactly. Each
    /// claim is leased for `lease_ms_*`; an attempt not recorded by then is made again.
    pub async fn claim_due(
        &self,
        limit: i64,
        email_limit: i64,
        max_in_flight_default: i64,
        lease_ms_webhook: u64,
        lease_ms_email: u64,
    ) -> Result<Vec<Claimed>, NotificationError> {
        let mut claimed = Vec::new();
        if limit <= 0 {
            return Ok(claimed);
        }
        let email_limit = email_limit.min(limit);
        let mut tx = self.db.begin_write().await?;
        let not_blocked = format!(
            "NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.ordering_key = d.ordering_key \
             AND e.event_seq < d.event_seq AND e.state IN {UNFINISHED})"
        );
        let mut webhooks: Vec<(String, Channel, String, String, Option<i64>)> = Vec::new();
        let mut emails = Vec::new();
        {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.delivery_id, d.subscription_id, d.state, d.next_attempt_us FROM deliveries d \
                 JOIN subscriptions s ON s.subscription_id = d.subscription_id \
                 WHERE d.channel = 'WEBHOOK' AND d.state IN {WAITING} AND d.next_attempt_us <= {now} \
                 AND s.state = 'ACTIVE' \
                 AND s.in_flight < CASE WHEN s.max_in_flight = 0 THEN $1 ELSE s.max_in_flight END \
                 AND {not_blocked} ORDER BY d.next_attempt_us, d.event_seq LIMIT $2{lock}",
                now = self.now,
                lock = self.skip_locked()
            )))
            .bind(max_in_flight_default)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                webhooks.push((
                    row.try_get("delivery_id")?,
                    Channel::Webhook,
                    row.try_get("subscription_id")?,
                    row.try_get("state")?,
                    row.try_get("next_attempt_us")?,
                ));
            }
        }
        if email_limit > 0 {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.delivery_id, d.state, d.next_attempt_us FROM deliveries d \
                 WHERE d.channel = 'EMAIL' AND d.state IN {WAITING} AND d.next_attempt_us <= {now} \
                 AND {not_blocked} ORDER BY d.next_attempt_us, d.event_seq LIMIT $1{lock}",
                now = self.now,
                lock = self.skip_locked()
            )))
            .bind(email_limit)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                emails.push((
                    row.try_get("delivery_id")?,
                    Channel::Email,
                    String::new(),
                    row.try_get("state")?,
                    row.try_get("next_attempt_us")?,
                ));
            }
        }
        let mut candidates = Vec::new();
        let (mut webhooks, mut emails) = (webhooks.into_iter(), emails.into_iter());
        while (candidates.len() as i64) < limit {
            match (webhooks.next(), emails.next()) {
                (None, None) => break,
                (webhook, email) => candidates.extend(webhook.into_iter().chain(email)),
            }
        }
        candidates.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        // Deliveries first, then subscription counters: the lock order of every transaction.
        let mut taken = Vec::new();
        for (delivery_id, channel, subscription_id, state, next_attempt_us) in candidates {
            let lease_ms = match channel {
                Channel::Webhook => lease_ms_webhook,
                Channel::Email => lease_ms_email,
            };
            let token = uuid::Uuid::new_v4().to_string();
            let start_us: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = 'IN_FLIGHT', next_attempt_us = NULL, \
                 lease_until_us = {now} + $2, claim_token = $3, updated_us = {now} \
                 WHERE delivery_id = $1 AND state IN {WAITING} RETURNING {now} AS start_us",
                now = self.now
            )))
            .bind(&delivery_id)
            .bind(delay_us(lease_ms))
            .bind(&token)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(start_us) = start_us {
                taken.push((
                    Claimed {
                        delivery_id,
                        channel,
                        claim_token: token,
                        start_us,
                    },
                    subscription_id,
                    state,
                    next_attempt_us,
                ));
            }
        }
        for (claim, subscription_id, state, next_attempt_us) in taken {
            if claim.channel == Channel::Webhook {
                let counted = sqlx::query(
                    "UPDATE subscriptions SET in_flight = in_flight + 1 WHERE subscription_id = $1 \
                     AND state = 'ACTIVE' \
                     AND in_flight < CASE WHEN max_in_flight = 0 THEN $2 ELSE max_in_flight END",
                )
                .bind(&subscription_id)
                .bind(max_in_flight_default)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if counted == 0 {
                    // The subscription reached its limit within this batch: put it back.
                    sqlx::query(
                        "UPDATE deliveries SET state = $2, next_attempt_us = $3, lease_until_us = NULL, \
                         claim_token = NULL WHERE delivery_id = $1",
                    )
                    .bind(&claim.delivery_id)
                    .bind(state)
                    .bind(next_attempt_us)
                    .execute(&mut *tx)
                    .await?;
                    continue;
                }
            }
            claimed.push(claim);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Loads what an attempt of a claimed delivery needs; `None` when the claim was lost (the
    /// delivery was cancelled or its lease expired and it was claimed again).
    pub async fn attempt_work(
        &self,
        claim: &Claimed,
    ) -> Result<Option<AttemptWork>, NotificationError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = $1 AND claim_token = $2"
        )))
        .bind(&claim.delivery_id)
        .bind(&claim.claim_token)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_row(&row)?;
        let event = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = $1"
        )))
        .bind(delivery.event_seq)
        .fetch_one(&self.db.pool)
        .await?;
        let event = event_row(&event)?;
        let webhook = if delivery.channel == Channel::Webhook {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT endpoint_url, secret, CASE WHEN previous_secret_expires_us > {now} \
                 THEN previous_secret ELSE NULL END AS live_previous_secret \
                 FROM subscriptions WHERE subscription_id = $1",
                now = self.now
            )))
            .bind(&delivery.subscription_id)
            .fetch_optional(&self.db.pool)
            .await?;
            match row {
                Some(row) => {
                    let endpoint: String = row.try_get("endpoint_url")?;
                    let current: String = row.try_get("secret")?;
                    let previous: Option<String> = row.try_get("live_previous_secret")?;
                    let mut secrets = Vec::new();
                    for text in std::iter::once(current).chain(previous) {
                        secrets.push(
                            SigningSecret::from_stored(&text)
                                .ok_or_else(|| corrupt("a stored secret is malformed".into()))?,
                        );
                    }
                    Some((endpoint, secrets))
                }
                None => None,
            }
        } else {
            None
        };
        Ok(Some(AttemptWork {
            delivery,
            event,
            webhook,
        }))
    }

    /// Records an attempt of a claimed delivery and applies `next`. A retry of a webhook whose
    /// subscription is no longer ACTIVE dead-letters instead. When the claim was lost, only the
    /// attempt is logged.
    pub async fn record_attempt(
        &self,
        claim: &Claimed,
        latency_ms: i64,
        outcome: &Outcome,
        next: Next,
        disable_after_ms: u64,
    ) -> Result<Recorded, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        let (status_code, error) = match outcome {
            Outcome::Succeeded { status_code } => (*status_code, String::new()),
            Outcome::Failed {
                status_code, error, ..
            } => (*status_code, error.clone()),
        };
        let subscription_id: String =
            sqlx::query_scalar("SELECT subscription_id FROM deliveries WHERE delivery_id = $1")
                .bind(&claim.delivery_id)
                .fetch_one(&mut *tx)
                .await?;
        let subscription_active = if claim.channel == Channel::Webhook {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM subscriptions WHERE subscription_id = $1")
                    .bind(&subscription_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            state.as_deref() == Some(SubscriptionState::Active.as_str())
        } else {
            true
        };
        let (state, retry_us) = match next {
            Next::Delivered => (DeliveryState::Delivered, 0),
            Next::RetryAfterMs(ms) if subscription_active => {
                (DeliveryState::FailedRetrying, delay_us(ms))
            }
            Next::RetryAfterMs(_) | Next::DeadLetter => (DeliveryState::DeadLettered, 0),
        };
        let finished = sqlx::query(sqlx::AssertSqlSafe(format!(
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
        .bind(&error)
        .bind(state.as_str())
        .bind(retry_us)
        .fetch_optional(&mut *tx)
        .await?;
        let released = i64::from(finished.is_some());
        let (attempt_number, state) = match finished {
            Some(row) => (row.try_get::<i64, _>("attempt_count")?, state),
            None => {
                // The claim was lost: keep the log complete without touching the state.
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE deliveries SET attempt_count = attempt_count + 1, last_status_code = $2, \
                     last_error = $3, updated_us = {now} WHERE delivery_id = $1 \
                     RETURNING attempt_count, state",
                    now = self.now
                )))
                .bind(&claim.delivery_id)
                .bind(status_code)
                .bind(&error)
                .fetch_one(&mut *tx)
                .await?;
                let stored: String = row.try_get("state")?;
                (
                    row.try_get::<i64, _>("attempt_count")?,
                    DeliveryState::parse(&stored)
                        .ok_or_else(|| corrupt(format!("state {stored}")))?,
                )
            }
        };
        let (http_status, smtp_code) = match claim.channel {
            Channel::Webhook => (status_code, 0),
            Channel::Email => (0, status_code),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(&claim.delivery_id)
        .bind(attempt_number)
        .bind(claim.start_us)
        .bind(latency_ms.max(0))
        .bind(http_status)
        .bind(smtp_code)
        .bind(i64::from(outcome.succeeded()))
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        let mut disable_candidate = None;
        if claim.channel == Channel::Webhook {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE subscriptions SET in_flight = in_flight - $2, \
                 failing_since_us = CASE WHEN $3 = 1 THEN NULL ELSE COALESCE(failing_since_us, $4) END \
                 WHERE subscription_id = $1 RETURNING state, failing_since_us, in_flight, {now} AS now_us",
                now = self.now
            )))
            .bind(&subscription_id)
            .bind(released)
            .bind(i64::from(outcome.succeeded()))
            .bind(claim.start_us)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let in_flight: i64 = row.try_get("in_flight")?;
                assert!(in_flight >= 0, "the in-flight counter never goes negative");
                let state: String = row.try_get("state")?;
                let failing_since: Option<i64> = row.try_get("failing_since_us")?;
                let now_us: i64 = row.try_get("now_us")?;
                if !outcome.succeeded()
                    && state == SubscriptionState::Active.as_str()
                    && failing_since
                        .is_some_and(|since| since <= now_us - delay_us(disable_after_ms))
                {
                    disable_candidate = Some(subscription_id);
                }
            }
        }
        tx.commit().await?;
        Ok(Recorded {
            state,
            disable_candidate,
        })
    }

    /// Disables a subscription whose endpoint has failed every attempt for at least
    /// `disable_after_ms`, dead-letters its waiting deliveries and, when it has a contact,
    /// publishes the notice emailed to it. Returns the subscription when it was disabled now.
    pub async fn disable_if_failing(
        &self,
        subscription_id: &str,
        disable_after_ms: u64,
        first_delay_ms: u64,
    ) -> Result<Option<SubscriptionRow>, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        self.dead_letter_waiting(&mut tx, subscription_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET state = 'DISABLED', disabled_reason = 'ENDPOINT_FAILING', \
             disabled_us = {now}, updated_us = {now} WHERE subscription_id = $1 AND state = 'ACTIVE' \
             AND failing_since_us IS NOT NULL AND failing_since_us <= {now} - $2 \
             RETURNING {SUBSCRIPTION_COLUMNS}",
            now = self.now
        )))
        .bind(subscription_id)
        .bind(delay_us(disable_after_ms))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Not (or no longer) failing long enough: undo the dead-lettering.
            return Ok(None);
        };
        let subscription = subscription_row(&row)?;
        if let Ok(contact) = EmailAddress::parse(&subscription.contact_email) {
            let notice = crate::domain::subscription::disabled_notice(&subscription_notice(
                &subscription,
                contact,
            ));
            self.publish_in(&mut tx, &notice, first_delay_ms).await?;
        }
        tx.commit().await?;
        Ok(Some(subscription))
    }

    /// Puts deliveries whose attempt outlived its lease (the process died or hung) back in
    /// the queue, at most `limit`; they are attempted again at once. Returns how many.
    pub async fn recover_expired_leases(&self, limit: i64) -> Result<u64, NotificationError> {
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT delivery_id FROM deliveries WHERE state = 'IN_FLIGHT' AND lease_until_us < {now} \
             ORDER BY lease_until_us LIMIT $1",
            now = self.now
        )))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let mut recovered = 0;
        for delivery_id in ids {
            let mut tx = self.db.begin_write().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = CASE WHEN attempt_count = 0 THEN 'PENDING' \
                 ELSE 'FAILED_RETRYING' END, next_attempt_us = {now}, lease_until_us = NULL, \
                 claim_token = NULL, updated_us = {now} \
                 WHERE delivery_id = $1 AND state = 'IN_FLIGHT' AND lease_until_us < {now} \
                 RETURNING channel, subscription_id",
                now = self.now
            )))
            .bind(&delivery_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let channel: String = row.try_get("channel")?;
            if channel == Channel::Webhook.as_str() {
                let subscription_id: String = row.try_get("subscription_id")?;
                sqlx::query(
                    "UPDATE subscriptions SET in_flight = in_flight - 1 WHERE subscription_id = $1",
                )
                .bind(subscription_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            recovered += 1;
        }
        Ok(recovered)
    }

    /// Repairs deliveries left waiting for a subscription that was disabled or deleted while
    /// they were being requeued: they are dead-lettered or cancelled as if they had been
    /// waiting at that moment. Returns how many.
    pub async fn reconcile(&self) -> Result<u64, NotificationError> {
        let mut tx = self.db.begin_write().await?;
        let cancelled = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'CANCELLED', next_attempt_us = NULL, updated_us = {now} \
             WHERE channel = 'WEBHOOK' AND state IN {WAITING} AND NOT EXISTS \
             (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id)",
            now = self.now
        )))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let dead = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'DEAD_LETTERED', next_attempt_us = NULL, updated_us = {now} \
             WHERE channel = 'WEBHOOK' AND state IN {WAITING} AND EXISTS \
             (SELECT 1 FROM subscriptions s WHERE s.subscription_id = deliveries.subscription_id \
             AND s.state = 'DISABLED')",
            now = self.now
        )))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(cancelled + dead)
    }
}

/// The facts of a disabled subscription that its notice reports.
fn subscription_notice(
    subscription: &SubscriptionRow,
    contact: EmailAddress,
) -> crate::domain::subscription::DisabledNotice {
    crate::domain::subscription::DisabledNotice {
        subscription_id: subscription.subscription_id.clone(),
        endpoint_url: subscription.endpoint_url.clone(),
        contact,
        failing_since_us: subscription.failing_since_us.unwrap_or_default(),
        disabled_us: subscription.disabled_us.unwrap_or_default(),
    }
}

/// A delay in milliseconds as microseconds for the database clock.
fn delay_us(delay_ms: u64) -> i64 {
    i64::try_from(delay_ms)
        .unwrap_or(i64::MAX / US_PER_MS)
        .saturating_mul(US_PER_MS)
}
