//! Wire ↔ domain conversion and error classification for
//! `subsidy.notification.v1.NotificationService`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost_types::{Struct, Timestamp, Value as ProtoValue, value::Kind};
use serde_json::{Map, Number, Value};
use subsidy_common::db::timestamp_from_us;
use subsidy_common::idempotency::fingerprint;
use subsidy_common::paging::{decode_token, encode_token, page_size};
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::notification as pb;
use subsidy_proto::status::FieldViolation;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Hub;
use crate::domain::delivery::{Channel, DeliveryState};
use crate::domain::event::{
    APPLICATION_ID_LEN_MAX, EmailAddress, Event, EventId, EventType, Language, PAYLOAD_BYTES_MAX,
    Program, ROUND_ID_LEN_MAX, SOURCE_LEN_MAX, TRACESTATE_LEN_MAX, is_traceparent,
};
use crate::domain::subscription::{
    DESCRIPTION_CHARS_MAX, DisabledReason, EndpointUrl, Filters, GRACE_SECONDS_DEFAULT,
    GRACE_SECONDS_MAX, MAX_IN_FLIGHT_MAX, SigningSecret, SubscriptionState,
};
use crate::error::NotificationError;
use crate::storage::{
    AttemptRow, DeliveryFilter, DeliveryRow, EventFilter, NewSubscription, StoredEvent,
    SubscriptionChanges, SubscriptionRow,
};

/// Default and largest page sizes.
const EVENTS_PAGE_DEFAULT: u32 = 100;
const EVENTS_PAGE_MAX: u32 = 1000;
const SUBSCRIPTIONS_PAGE_DEFAULT: u32 = 50;
const SUBSCRIPTIONS_PAGE_MAX: u32 = 500;
const DELIVERIES_PAGE_DEFAULT: u32 = 50;
const DELIVERIES_PAGE_MAX: u32 = 500;
/// Event streams open at once per process.
pub const STREAMS_MAX: usize = 1000;
/// Messages buffered per stream before the stream waits for its client.
pub const STREAM_BUFFER_LEN: usize = 64;
/// Events read per query while a stream catches up.
pub const STREAM_BATCH_LEN: i64 = 200;
/// Largest accepted Unix time, in seconds (the end of year 9999).
const TIMESTAMP_SECONDS_MAX: i64 = 253_402_300_799;
/// The kind of stream cursors.
const CURSOR_KIND: &str = "feed";

/// Collects field violations while parsing a request.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn request_id(&mut self, text: &str) -> Option<RequestId> {
        RequestId::parse(text)
            .map_err(|e| self.add("request_id", e.to_string()))
            .ok()
    }

    fn required_id(&mut self, field: &str, text: &str) -> Option<String> {
        if text.is_empty() {
            self.add(field, "is required");
            None
        } else {
            self.token(field, text, 128)
        }
    }

    /// Printable ASCII without spaces, at most `max` bytes; may be empty.
    fn token(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.len() > max {
            self.add(field, format!("must be at most {max} characters"));
            None
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            self.add(field, "must be printable ASCII without spaces");
            None
        } else {
            Some(text.to_owned())
        }
    }

    fn uscc(&mut self, field: &str, text: &str) -> Option<Uscc> {
        Uscc::parse(text)
            .map_err(|e| self.add(field, e.to_string()))
            .ok()
    }

    fn email(&mut self, field: &str, text: &str) -> Option<Option<EmailAddress>> {
        if text.is_empty() {
            return Some(None);
        }
        EmailAddress::parse(text)
            .map(Some)
            .map_err(|e| self.add(field, e))
            .ok()
    }

    fn event_type(&mut self, field: &str, value: i32) -> Option<EventType> {
        match pb::EventType::try_from(value) {
            Ok(pb::EventType::Unspecified) => {
                self.add(field, "is required");
                None
            }
            Ok(kind) => Some(event_type_from_proto(kind)),
            Err(_) => {
                self.add(field, "is not a known event type");
                None
            }
        }
    }

    fn event_types(&mut self, field: &str, values: &[i32]) -> Option<Vec<EventType>> {
        let mut types = Vec::new();
        for value in values {
            types.push(self.event_type(field, *value)?);
        }
        types.sort_unstable();
        types.dedup();
        Some(types)
    }

    fn program(&mut self, field: &str, value: i32) -> Option<Option<Program>> {
        match pb::Program::try_from(value) {
            Ok(pb::Program::Unspecified) => Some(None),
            Ok(pb::Program::ComputeVoucher) => Some(Some(Program::ComputeVoucher)),
            Ok(pb::Program::DataInfra) => Some(Some(Program::DataInfra)),
            Err(_) => {
                self.add(field, "is not a known program");
                None
            }
        }
    }

    fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(NotificationError::Invalid(self.0).into())
        }
    }
}

fn event_type_from_proto(kind: pb::EventType) -> EventType {
    match kind {
        pb::EventType::ClaimSubmitted => EventType::ClaimSubmitted,
        pb::EventType::ClaimIneligible => EventType::ClaimIneligible,
        pb::EventType::ClaimReserved => EventType::ClaimReserved,
        pb::EventType::ClaimWaitlisted => EventType::ClaimWaitlisted,
        pb::EventType::ClaimApproved => EventType::ClaimApproved,
        pb::EventType::ClaimRejected => EventType::ClaimRejected,
        pb::EventType::ClaimWithdrawn => EventType::ClaimWithdrawn,
        pb::EventType::ClaimExpired => EventType::ClaimExpired,
        pb::EventType::ClaimDisbursed => EventType::ClaimDisbursed,
        pb::EventType::ProposalSubmitted => EventType::ProposalSubmitted,
        pb::EventType::ProposalIneligible => EventType::ProposalIneligible,
        pb::EventType::ProposalAwarded => EventType::ProposalAwarded,
        pb::EventType::ProposalNotSelected => EventType::ProposalNotSelected,
        pb::EventType::ProposalDisbursed => EventType::ProposalDisbursed,
        pb::EventType::RoundFinalized => EventType::RoundFinalized,
        pb::EventType::SubscriptionDisabled => EventType::SubscriptionDisabled,
        pb::EventType::Unspecified => unreachable!("callers reject UNSPECIFIED first"),
    }
}

/// The wire form of an event type.
pub fn event_type_to_proto(kind: EventType) -> pb::EventType {
    match kind {
        EventType::ClaimSubmitted => pb::EventType::ClaimSubmitted,
        EventType::ClaimIneligible => pb::EventType::ClaimIneligible,
        EventType::ClaimReserved => pb::EventType::ClaimReserved,
        EventType::ClaimWaitlisted => pb::EventType::ClaimWaitlisted,
        EventType::ClaimApproved => pb::EventType::ClaimApproved,
        EventType::ClaimRejected => pb::EventType::ClaimRejected,
        EventType::ClaimWithdrawn => pb::EventType::ClaimWithdrawn,
        EventType::ClaimExpired => pb::EventType::ClaimExpired,
        EventType::ClaimDisbursed => pb::EventType::ClaimDisbursed,
        EventType::ProposalSubmitted => pb::EventType::ProposalSubmitted,
        EventType::ProposalIneligible => pb::EventType::ProposalIneligible,
        EventType::ProposalAwarded => pb::EventType::ProposalAwarded,
        EventType::ProposalNotSelected => pb::EventType::ProposalNotSelected,
        EventType::ProposalDisbursed => pb::EventType::ProposalDisbursed,
        EventType::RoundFinalized => pb::EventType::RoundFinalized,
        EventType::SubscriptionDisabled => pb::EventType::SubscriptionDisabled,
    }
}

fn program_to_proto(program: Option<Program>) -> pb::Program {
    match program {
        None => pb::Program::Unspecified,
        Some(Program::ComputeVoucher) => pb::Program::ComputeVoucher,
        Some(Program::DataInfra) => pb::Program::DataInfra,
    }
}

fn us_from_timestamp(value: &Timestamp) -> Option<i64> {
    ((0..=TIMESTAMP_SECONDS_MAX).contains(&value.seconds)
        && (0..1_000_000_000).contains(&value.nanos))
    .then(|| value.seconds * 1_000_000 + i64::from(value.nanos) / 1000)
}

fn json_from_proto(value: &ProtoValue) -> Result<Value, &'static str> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            Value::Number(Number::from_f64(*n).ok_or("must not contain NaN or infinite numbers")?)
        }
        Some(Kind::StructValue(s)) => Value::Object(map_from_struct(s)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .iter()
                .map(json_from_proto)
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn map_from_struct(value: &Struct) -> Result<Map<String, Value>, &'static str> {
    value
        .fields
        .iter()
        .map(|(key, value)| Ok((key.clone(), json_from_proto(value)?)))
        .collect()
}

fn json_to_proto(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(struct_from_map(map)),
    };
    ProtoValue { kind: Some(kind) }
}

fn struct_from_map(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), json_to_proto(value)))
            .collect(),
    }
}

/// Parses the event of a publication; every problem is reported with its field path.
fn event_from_proto(v: &mut Violations, event: &pb::Event) -> Option<Event> {
    let event_id = EventId::parse(&event.event_id)
        .map_err(|e| v.add("event.event_id", e))
        .ok();
    let event_type = v.event_type("event.type", event.r#type);
    if event_type.is_some_and(EventType::is_internal) {
        v.add("event.type", "is published by this service only");
    }
    let concerns_application = event_type.is_none_or(EventType::concerns_application);
    let application_id = v.token(
        "event.application_id",
        &event.application_id,
        APPLICATION_ID_LEN_MAX,
    );
    if concerns_application && event.application_id.is_empty() {
        v.add(
            "event.application_id",
            "is required for claim and proposal events",
        );
    }
    let enterprise_uscc = if event.enterprise_uscc.is_empty() {
        if concerns_application {
            v.add(
                "event.enterprise_uscc",
                "is required for claim and proposal events",
            );
        }
        Some(None)
    } else {
        v.uscc("event.enterprise_uscc", &event.enterprise_uscc)
            .map(Some)
    };
    let program = match v.program("event.program", event.program) {
        Some(Some(program)) => Some(program),
        Some(None) => {
            v.add("event.program", "is required");
            None
        }
        None => None,
    };
    let amount = match &event.amount {
        None => Some(None),
        Some(value) => match Money::from_proto(value) {
            Ok(money) if money.is_zero() => {
                v.add("event.amount", "must be positive");
                None
            }
            Ok(money) => Some(Some(money)),
            Err(error) => {
                v.add("event.amount", error.to_string());
                None
            }
        },
    };
    let occur_us = match &event.occur_time {
        None => {
            v.add("event.occur_time", "is required");
            None
        }
        Some(time) => us_from_timestamp(time).or_else(|| {
            v.add("event.occur_time", "is not a valid time");
            None
        }),
    };
    if !event.traceparent.is_empty() && !is_traceparent(&event.traceparent) {
        v.add(
            "event.traceparent",
            "must be a W3C traceparent such as 00-<32 hex>-<16 hex>-<2 hex>",
        );
    }
    if !event.tracestate.is_empty() && event.traceparent.is_empty() {
        v.add("event.tracestate", "is only accepted with a traceparent");
    }
    if event.tracestate.len() > TRACESTATE_LEN_MAX
        || !event.tracestate.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        v.add(
            "event.tracestate",
            "must be at most 512 printable ASCII characters",
        );
    }
    let payload = match event.payload.as_ref().map(map_from_struct) {
        None => Some(Map::new()),
        Some(Ok(map)) => {
            if serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len()) > PAYLOAD_BYTES_MAX
            {
                v.add("event.payload", "must be at most 64 KiB as JSON");
                None
            } else {
                Some(map)
            }
        }
        Some(Err(error)) => {
            v.add("event.payload", error);
            None
        }
    };
    let language = match pb::Language::try_from(event.language) {
        Ok(pb::Language::Unspecified) => Some(None),
        Ok(pb::Language::Zh) => Some(Some(Language::Zh)),
        Ok(pb::Language::En) => Some(Some(Language::En)),
        Err(_) => {
            v.add("event.language", "is not a known language");
            None
        }
    };
    let recipient_email = v.email("event.recipient_email", &event.recipient_email);
    let round_id = v.token("event.round_id", &event.round_id, ROUND_ID_LEN_MAX);
    let source = v.token("event.source", &event.source, SOURCE_LEN_MAX);
    Some(Event {
        event_id: event_id?,
        event_type: event_type?,
        application_id: application_id?,
        enterprise_uscc: enterprise_uscc?,
        program: Some(program?),
        amount: amount?,
        occur_us: occur_us?,
        traceparent: event.traceparent.clone(),
        tracestate: event.tracestate.clone(),
        payload: payload?,
        language: language?,
        recipient_email: recipient_email?,
        round_id: round_id?,
        source: source?,
    })
}

/// The wire form of a stored event.
pub fn event_to_proto(stored: &StoredEvent) -> pb::Event {
    let event = &stored.event;
    pb::Event {
        event_id: event.event_id.to_string(),
        r#type: event_type_to_proto(event.event_type) as i32,
        application_id: event.application_id.clone(),
        enterprise_uscc: event
            .enterprise_uscc
            .as_ref()
            .map(Uscc::to_string)
            .unwrap_or_default(),
        program: program_to_proto(event.program) as i32,
        amount: event.amount.map(Money::to_proto),
        occur_time: Some(timestamp_from_us(event.occur_us)),
        traceparent: event.traceparent.clone(),
        tracestate: event.tracestate.clone(),
        payload: (!event.payload.is_empty()).then(|| struct_from_map(&event.payload)),
        language: match event.language {
            None => pb::Language::Unspecified,
            Some(Language::Zh) => pb::Language::Zh,
            Some(Language::En) => pb::Language::En,
        } as i32,
        recipient_email: event
            .recipient_email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        round_id: event.round_id.clone(),
        source: event.source.clone(),
        publish_time: Some(timestamp_from_us(stored.published_us)),
    }
}

/// The opaque stream cursor of a feed position.
pub fn cursor(seq: i64) -> String {
    encode_token(CURSOR_KIND, &seq.to_string())
}

fn parse_cursor(text: &str) -> Result<i64, NotificationError> {
    decode_token(CURSOR_KIND, text)
        .ok()
        .flatten()
        .and_then(|key| key.parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or(NotificationError::CursorInvalid)
}

/// The wire form of a subscription.
pub fn subscription_to_proto(row: &SubscriptionRow) -> pb::Subscription {
    pb::Subscription {
        subscription_id: row.subscription_id.clone(),
        endpoint_url: row.endpoint_url.clone(),
        event_types: row
            .filters
            .event_types
            .iter()
            .map(|t| event_type_to_proto(*t) as i32)
            .collect(),
        program_filter: program_to_proto(row.filters.program) as i32,
        enterprise_uscc_filter: row
            .filters
            .enterprise
            .as_ref()
            .map(Uscc::to_string)
            .unwrap_or_default(),
        description: row.description.clone(),
        max_in_flight: i32::try_from(row.max_in_flight).expect("stored limits are at most 64"),
        contact_email: row.contact_email.clone(),
        state: match row.state {
            SubscriptionState::Active => pb::SubscriptionState::Active,
            SubscriptionState::Disabled => pb::SubscriptionState::Disabled,
        } as i32,
        disabled_reason: match row.disabled_reason {
            None => pb::DisabledReason::Unspecified,
            Some(DisabledReason::Manual) => pb::DisabledReason::Manual,
            Some(DisabledReason::EndpointFailing) => pb::DisabledReason::EndpointFailing,
        } as i32,
        disable_time: row.disabled_us.map(timestamp_from_us),
        failing_since_time: row.failing_since_us.map(timestamp_from_us),
        previous_secret_expire_time: row.previous_secret_expires_us.map(timestamp_from_us),
        create_time: Some(timestamp_from_us(row.created_us)),
        update_time: Some(timestamp_from_us(row.updated_us)),
    }
}

fn channel_to_proto(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Webhook => pb::Channel::Webhook,
        Channel::Email => pb::Channel::Email,
    }
}

fn delivery_state_to_proto(state: DeliveryState) -> pb::DeliveryState {
    match state {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::InFlight => pb::DeliveryState::InFlight,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::FailedRetrying => pb::DeliveryState::FailedRetrying,
        DeliveryState::DeadLettered => pb::DeliveryState::DeadLettered,
        DeliveryState::Cancelled => pb::DeliveryState::Cancelled,
    }
}

fn attempt_to_proto(row: &AttemptRow) -> pb::DeliveryAttempt {
    let small = |value: i64| i32::try_from(value).unwrap_or_default();
    pb::DeliveryAttempt {
        attempt_number: small(row.attempt_number),
        start_time: Some(timestamp_from_us(row.start_us)),
        latency_ms: row.latency_ms,
        http_status_code: small(row.http_status_code),
        smtp_reply_code: small(row.smtp_reply_code),
        succeeded: row.succeeded,
        error: row.error.clone(),
    }
}

/// The wire form of a delivery with its attempts.
pub fn delivery_to_proto(row: &DeliveryRow, attempts: &[AttemptRow]) -> pb::Delivery {
    let small = |value: i64| i32::try_from(value).unwrap_or(i32::MAX);
    pb::Delivery {
        delivery_id: row.delivery_id.clone(),
        event_id: row.event_id.clone(),
        event_type: event_type_to_proto(row.event_type) as i32,
        channel: channel_to_proto(row.channel) as i32,
        subscription_id: row.subscription_id.clone(),
        recipient_email: row.recipient_email.clone(),
        state: delivery_state_to_proto(row.state) as i32,
        attempt_count: small(row.attempt_count),
        next_attempt_time: row.next_attempt_us.map(timestamp_from_us),
        last_status_code: small(row.last_status_code),
        last_error: row.last_error.clone(),
        attempts: attempts.iter().map(attempt_to_proto).collect(),
        redelivery_count: small(row.redelivery_count),
        create_time: Some(timestamp_from_us(row.created_us)),
        update_time: Some(timestamp_from_us(row.updated_us)),
        deliver_time: row.delivered_us.map(timestamp_from_us),
    }
}

fn page_error(field: &str, error: impl ToString) -> Status {
    NotificationError::Invalid(vec![FieldViolation::new(field, error.to_string())]).into()
}

/// A keyset position `(created_us, id)` from a page token of `kind`.
fn keyset(kind: &str, token: &str) -> Result<Option<(i64, String)>, Status> {
    let invalid = || page_error("page_token", "page_token is not valid");
    match decode_token(kind, token).map_err(|_| invalid())? {
        None => Ok(None),
        Some(key) => key
            .split_once('/')
            .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id.to_owned())))
            .map(Some)
            .ok_or_else(invalid),
    }
}

/// Trims a page fetched with one extra row and returns the token of the next page.
fn next_token<T>(rows: &mut Vec<T>, size: u32, token: impl Fn(&T) -> String) -> String {
    if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

/// The gRPC face of the notification service.
#[derive(Clone, Debug)]
pub struct NotificationGrpc {
    hub: Hub,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl NotificationGrpc {
    /// Serves `hub`; open streams end when `stop` turns true.
    pub fn new(hub: Hub, stop: watch::Receiver<bool>) -> Self {
        Self {
            hub,
            streams: Arc::new(Semaphore::new(STREAMS_MAX)),
            stop,
        }
    }

    fn first_delay_ms(&self) -> u64 {
        self.hub.policy.first_delay_ms(&mut rand::rng())
    }
}

/// Reports an unacceptable endpoint: with its own reason `INVALID_ENDPOINT` when it is the
/// only problem of the request, otherwise among the other violations.
fn check_endpoint(
    v: &mut Violations,
    field: &str,
    endpoint: &Result<EndpointUrl, &'static str>,
) -> Result<(), Status> {
    if let Err(why) = endpoint {
        if v.0.is_empty() {
            return Err(
                NotificationError::InvalidEndpoint(FieldViolation::new(field, *why)).into(),
            );
        }
        v.add(field, *why);
    }
    Ok(())
}

/// The event stream, as the generated service trait names it (`tonic::codegen::BoxStream`).
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationGrpc {
    async fn publish_event(
        &self,
        request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let event = match &req.event {
            Some(event) => event_from_proto(&mut v, event),
            None => {
                v.add("event", "is required");
                None
            }
        };
        v.finish()?;
        let event = event.expect("finish() returned the violations of a missing event");
        let published = self
            .hub
            .store
            .publish(&event, self.first_delay_ms())
            .await?;
        if !published.duplicate {
            self.hub.published(published.stored.seq);
            tracing::info!(
                event_id = %event.event_id,
                event_type = event.event_type.as_str(),
                deliveries = published.delivery_count,
                "event published"
            );
        }
        Ok(Response::new(pb::PublishEventResponse {
            event: Some(event_to_proto(&published.stored)),
            duplicate: published.duplicate,
            cursor: cursor(published.stored.seq),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let event_id = v.required_id("event_id", &req.event_id);
        v.finish()?;
        let event_id = event_id.expect("validated");
        let stored = self
            .hub
            .store
            .get_event(&event_id)
            .await?
            .ok_or(NotificationError::EventNotFound { event_id })?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(event_to_proto(&stored)),
            cursor: cursor(stored.seq),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let event_types = v.event_types("event_types", &req.event_types);
        let program = v.program("program", req.program);
        let application_id = v.token(
            "application_id",
            &req.application_id,
            APPLICATION_ID_LEN_MAX,
        );
        let enterprise = if req.enterprise_uscc.is_empty() {
            Some(None)
        } else {
            v.uscc("enterprise_uscc", &req.enterprise_uscc).map(Some)
        };
        let mut time = |field: &str, value: &Option<Timestamp>| match value {
            None => Some(None),
            Some(t) => us_from_timestamp(t).map(Some).or_else(|| {
                v.add(field, "is not a valid time");
                None
            }),
        };
        let start_us = time("start_time", &req.start_time);
        let end_us = time("end_time", &req.end_time);
        let size = page_size(req.page_size, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        let after = match decode_token("events", &req.page_token) {
            Ok(None) => Some(0),
            Ok(Some(key)) => key
                .parse::<i64>()
                .map_err(|_| v.add("page_token", "page_token is not valid"))
                .ok(),
            Err(e) => {
                v.add("page_token", e.to_string());
                None
            }
        };
        v.finish()?;
        let (
            Some(event_types),
            Some(program),
            Some(application_id),
            Some(enterprise),
            Some(start_us),
            Some(end_us),
            Some(size),
            Some(after),
        ) = (
            event_types,
            program,
            application_id,
            enterprise,
            start_us,
            end_us,
            size,
            after,
        )
        else {
            unreachable!("finish() returned every violation");
        };
        let filter = EventFilter {
            event_types,
            program,
            application_id: (!application_id.is_empty()).then_some(application_id),
            enterprise_uscc: enterprise,
            start_us,
            end_us,
        };
        let mut events = self
            .hub
            .store
            .list_events(&filter, after, i64::MAX, i64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut events, size, |e| {
            encode_token("events", &e.seq.to_string())
        });
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let event_types = v.event_types("event_types", &req.event_types);
        let program = v.program("program", req.program);
        let enterprise = if req.enterprise_uscc.is_empty() {
            Some(None)
        } else {
            v.uscc("enterprise_uscc", &req.enterprise_uscc).map(Some)
        };
        if req.from_beginning && !req.cursor.is_empty() {
            v.add("from_beginning", "must not be combined with cursor");
        }
        v.finish()?;
        let filter = EventFilter {
            event_types: event_types.expect("validated"),
            program: program.expect("validated"),
            enterprise_uscc: enterprise.expect("validated"),
            ..EventFilter::default()
        };
        let head = self.hub.store.feed_head().await?;
        let start = if req.from_beginning {
            0
        } else if req.cursor.is_empty() {
            head
        } else {
            let seq = parse_cursor(&req.cursor)?;
            if seq > head {
                return Err(NotificationError::CursorInvalid.into());
            }
            seq
        };
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            NotificationError::StreamLimitReached {
                streams_max: STREAMS_MAX,
            }
        })?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_LEN);
        let follower = Follower {
            hub: self.hub.clone(),
            filter,
            after: start,
            tx,
            stop: self.stop.clone(),
            heartbeat: Duration::from_millis(self.hub.config.stream_heartbeat_ms),
            poll: Duration::from_millis(self.hub.config.poll_interval_ms),
        };
        tokio::spawn(async move {
            follower.run().await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let event_types = v.event_types("event_types", &req.event_types);
        if event_types
            .as_ref()
            .is_some_and(|types| types.iter().any(|t| t.is_internal()))
        {
            v.add(
                "event_types",
                "internal event types are not delivered to webhooks",
            );
        }
        let program = v.program("program_filter", req.program_filter);
        let enterprise = if req.enterprise_uscc_filter.is_empty() {
            Some(None)
        } else {
            v.uscc("enterprise_uscc_filter", &req.enterprise_uscc_filter)
                .map(Some)
        };
        let contact = v.email("contact_email", &req.contact_email);
        let description = if req.description.chars().count() > DESCRIPTION_CHARS_MAX {
            v.add("description", "must be at most 500 characters");
            None
        } else {
            Some(req.description.clone())
        };
        let max_in_flight = if (0..=MAX_IN_FLIGHT_MAX).contains(&i64::from(req.max_in_flight)) {
            Some(i64::from(req.max_in_flight))
        } else {
            v.add("max_in_flight", "must be 0 to 64");
            None
        };
        let endpoint = EndpointUrl::parse(&req.endpoint_url, self.hub.config.allow_http_endpoints);
        check_endpoint(&mut v, "endpoint_url", &endpoint)?;
        v.finish()?;
        let endpoint = endpoint.ok();
        let (
            Some(request_id),
            Some(event_types),
            Some(program),
            Some(enterprise),
            Some(contact),
            Some(endpoint),
            Some(description),
            Some(max_in_flight),
        ) = (
            request_id,
            event_types,
            program,
            enterprise,
            contact,
            endpoint,
            description,
            max_in_flight,
        )
        else {
            unreachable!("finish() returned every violation");
        };
        let new = NewSubscription {
            endpoint_url: endpoint,
            filters: Filters {
                event_types,
                program,
                enterprise,
            },
            description,
            max_in_flight,
            contact_email: contact,
        };
        let secret = SigningSecret::generate(&mut rand::rng());
        let response = self
            .hub
            .store
            .create_subscription(
                &new,
                &secret,
                &request_id,
                &fingerprint("CreateSubscription", &req),
                |row, secret| pb::CreateSubscriptionResponse {
                    subscription: Some(subscription_to_proto(row)),
                    signing_secret: secret.expose().to_owned(),
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.required_id("subscription_id", &req.subscription_id);
        v.finish()?;
        let subscription_id = id.expect("validated");
        let row = self
            .hub
            .store
            .get_subscription(&subscription_id)
            .await?
            .ok_or(NotificationError::SubscriptionNotFound { subscription_id })?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(subscription_to_proto(&row)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let req = request.into_inner();
        let state = match pb::SubscriptionState::try_from(req.state) {
            Ok(pb::SubscriptionState::Unspecified) => None,
            Ok(pb::SubscriptionState::Active) => Some(SubscriptionState::Active),
            Ok(pb::SubscriptionState::Disabled) => Some(SubscriptionState::Disabled),
            Err(_) => return Err(page_error("state", "is not a known state")),
        };
        let size = page_size(
            req.page_size,
            SUBSCRIPTIONS_PAGE_DEFAULT,
            SUBSCRIPTIONS_PAGE_MAX,
        )
        .map_err(|e| page_error("page_size", e))?;
        let after = keyset("subscriptions", &req.page_token)?;
        let mut rows = self
            .hub
            .store
            .list_subscriptions(state, after, i64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut rows, size, |r| {
            encode_token(
                "subscriptions",
                &format!("{}/{}", r.created_us, r.subscription_id),
            )
        });
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: rows.iter().map(subscription_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let id = v.required_id("subscription_id", &req.subscription_id);
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "is required");
        }
        let values = req.subscription.clone().unwrap_or_default();
        let mut changes = SubscriptionChanges::default();
        let mut endpoint = Ok(None);
        for path in &paths {
            let field = format!("subscription.{path}");
            match path.as_str() {
                "endpoint_url" => {
                    endpoint = EndpointUrl::parse(
                        &values.endpoint_url,
                        self.hub.config.allow_http_endpoints,
                    )
                    .map(Some)
                }
                "event_types" => {
                    changes.event_types = v.event_types(&field, &values.event_types);
                    if changes
                        .event_types
                        .as_ref()
                        .is_some_and(|types| types.iter().any(|t| t.is_internal()))
                    {
                        v.add(&field, "internal event types are not delivered to webhooks");
                    }
                }
                "program_filter" => changes.program = v.program(&field, values.program_filter),
                "enterprise_uscc_filter" => {
                    changes.enterprise = if values.enterprise_uscc_filter.is_empty() {
                        Some(None)
                    } else {
                        v.uscc(&field, &values.enterprise_uscc_filter).map(Some)
                    }
                }
                "description" => {
                    if values.description.chars().count() > DESCRIPTION_CHARS_MAX {
                        v.add(&field, "must be at most 500 characters");
                    } else {
                        changes.description = Some(values.description.clone());
                    }
                }
                "max_in_flight" => {
                    if (0..=MAX_IN_FLIGHT_MAX).contains(&i64::from(values.max_in_flight)) {
                        changes.max_in_flight = Some(i64::from(values.max_in_flight));
                    } else {
                        v.add(&field, "must be 0 to 64");
                    }
                }
                "contact_email" => changes.contact_email = v.email(&field, &values.contact_email),
                "state" => match pb::SubscriptionState::try_from(values.state) {
                    Ok(pb::SubscriptionState::Active) => {
                        changes.state = Some(SubscriptionState::Active)
                    }
                    Ok(pb::SubscriptionState::Disabled) => {
                        changes.state = Some(SubscriptionState::Disabled)
                    }
                    _ => v.add(&field, "must be ACTIVE or DISABLED"),
                },
                _ => v.add("update_mask", format!("path {path} cannot be updated")),
            }
        }
        if let Err(why) = &endpoint {
            check_endpoint(&mut v, "subscription.endpoint_url", &Err(*why))?;
        }
        v.finish()?;
        changes.endpoint_url = endpoint.ok().flatten();
        let response = self
            .hub
            .store
            .update_subscription(
                &id.expect("validated"),
                &changes,
                &request_id.expect("validated"),
                &fingerprint("UpdateSubscription", &req),
                |row| pb::UpdateSubscriptionResponse {
                    subscription: Some(subscription_to_proto(row)),
                },
            )
            .await?;
        self.hub.wake.notify_one();
        Ok(Response::new(response))
    }

    async fn rotate_subscription_secret(
        &self,
        request: Request<pb::RotateSubscriptionSecretRequest>,
    ) -> Result<Response<pb::RotateSubscriptionSecretResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let id = v.required_id("subscription_id", &req.subscription_id);
        let grace_seconds = match req.grace_period_seconds {
            0 => Some(GRACE_SECONDS_DEFAULT),
            n if (1..=GRACE_SECONDS_MAX).contains(&n) => Some(n),
            _ => {
                v.add("grace_period_seconds", "must be 0 to 604800");
                None
            }
        };
        v.finish()?;
        let secret = SigningSecret::generate(&mut rand::rng());
        let response = self
            .hub
            .store
            .rotate_secret(
                &id.expect("validated"),
                &secret,
                grace_seconds.expect("validated"),
                &request_id.expect("validated"),
                &fingerprint("RotateSubscriptionSecret", &req),
                |row, secret| pb::RotateSubscriptionSecretResponse {
                    subscription: Some(subscription_to_proto(row)),
                    signing_secret: secret.expose().to_owned(),
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let id = v.required_id("subscription_id", &req.subscription_id);
        v.finish()?;
        let response = self
            .hub
            .store
            .delete_subscription(
                &id.expect("validated"),
                &request_id.expect("validated"),
                &fingerprint("DeleteSubscription", &req),
                |row, cancelled| pb::DeleteSubscriptionResponse {
                    subscription: Some(subscription_to_proto(row)),
                    cancelled_delivery_count: cancelled,
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.required_id("delivery_id", &req.delivery_id);
        v.finish()?;
        let delivery_id = id.expect("validated");
        let (delivery, attempts) = self
            .hub
            .store
            .get_delivery(&delivery_id)
            .await?
            .ok_or(NotificationError::DeliveryNotFound { delivery_id })?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(delivery_to_proto(&delivery, &attempts)),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let event_id = v.token("event_id", &req.event_id, 128);
        let subscription_id = v.token("subscription_id", &req.subscription_id, 128);
        let channel = match pb::Channel::try_from(req.channel) {
            Ok(pb::Channel::Unspecified) => None,
            Ok(pb::Channel::Webhook) => Some(Channel::Webhook),
            Ok(pb::Channel::Email) => Some(Channel::Email),
            Err(_) => {
                v.add("channel", "is not a known channel");
                None
            }
        };
        let state = match pb::DeliveryState::try_from(req.state) {
            Ok(pb::DeliveryState::Unspecified) => None,
            Ok(state) => {
                DeliveryState::parse(state.as_str_name().trim_start_matches("DELIVERY_STATE_"))
            }
            Err(_) => {
                v.add("state", "is not a known state");
                None
            }
        };
        let size = page_size(req.page_size, DELIVERIES_PAGE_DEFAULT, DELIVERIES_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        v.finish()?;
        let before = keyset("deliveries", &req.page_token)?;
        let size = size.expect("validated");
        let filter = DeliveryFilter {
            event_id: event_id.filter(|id| !id.is_empty()),
            subscription_id: subscription_id.filter(|id| !id.is_empty()),
            channel,
            state,
        };
        let mut rows = self
            .hub
            .store
            .list_deliveries(&filter, before, i64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut rows, size, |r| {
            encode_token("deliveries", &format!("{}/{}", r.created_us, r.delivery_id))
        });
        let ids: Vec<String> = rows.iter().map(|r| r.delivery_id.clone()).collect();
        let attempts = self.hub.store.attempts_of(&ids).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows
                .iter()
                .zip(attempts.iter())
                .map(|(row, attempts)| delivery_to_proto(row, attempts))
                .collect(),
            next_page_token,
        }))
    }

    async fn redeliver_event(
        &self,
        request: Request<pb::RedeliverEventRequest>,
    ) -> Result<Response<pb::RedeliverEventResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let event_id = v.required_id("event_id", &req.event_id);
        let subscription_id = v.token("subscription_id", &req.subscription_id, 128);
        v.finish()?;
        let subscription_id = subscription_id.filter(|id| !id.is_empty());
        let response = self
            .hub
            .store
            .redeliver_event(
                &event_id.expect("validated"),
                subscription_id.as_deref(),
                self.first_delay_ms(),
                &request_id.expect("validated"),
                &fingerprint("RedeliverEvent", &req),
                |rows| pb::RedeliverEventResponse {
                    deliveries: rows.iter().map(|row| delivery_to_proto(row, &[])).collect(),
                },
            )
            .await?;
        self.hub.wake.notify_one();
        Ok(Response::new(response))
    }

    async fn redeliver_dead_letters(
        &self,
        request: Request<pb::RedeliverDeadLettersRequest>,
    ) -> Result<Response<pb::RedeliverDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let id = v.required_id("subscription_id", &req.subscription_id);
        v.finish()?;
        let response = self
            .hub
            .store
            .redeliver_dead_letters(
                &id.expect("validated"),
                self.first_delay_ms(),
                &request_id.expect("validated"),
                &fingerprint("RedeliverDeadLetters", &req),
                |count| pb::RedeliverDeadLettersResponse {
                    requeued_count: count,
                },
            )
            .await?;
        self.hub.wake.notify_one();
        Ok(Response::new(response))
    }
}

/// Follows the feed for one stream: sends every matching event after `after` in feed order,
/// then waits for new ones, with a heartbeat after a silence.
struct Follower {
    hub: Hub,
    filter: EventFilter,
    after: i64,
    tx: mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
    poll: Duration,
}

impl Follower {
    async fn run(mut self) {
        let mut feed = self.hub.feed.subscribe();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            if *self.stop.borrow() {
                return;
            }
            // Reading the head first is what makes the scan gap-free: every event at or
            // before it is committed (publications commit in feed order).
            let scanned = match self.catch_up().await {
                Ok(sent) => sent,
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            };
            match scanned {
                Scan::Closed => return,
                Scan::More => {
                    last_sent = tokio::time::Instant::now();
                    continue;
                }
                Scan::Sent => last_sent = tokio::time::Instant::now(),
                Scan::Nothing => {}
            }
            let heartbeat_at = last_sent + self.heartbeat;
            tokio::select! {
                _ = self.stop.changed() => return,
                _ = self.tx.closed() => return,
                _ = feed.changed() => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = tokio::time::sleep_until(heartbeat_at) => {
                    let beat = pb::StreamEventsResponse { event: None, cursor: cursor(self.after) };
                    if self.tx.send(Ok(beat)).await.is_err() {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
    }

    async fn catch_up(&mut self) -> Result<Scan, Status> {
        let head = self.hub.store.feed_head().await?;
        if head <= self.after {
            return Ok(Scan::Nothing);
        }
        let events = self
            .hub
            .store
            .list_events(&self.filter, self.after, head, STREAM_BATCH_LEN)
            .await?;
        let full = events.len() as i64 == STREAM_BATCH_LEN;
        let sent_any = !events.is_empty();
        for stored in &events {
            let message = pb::StreamEventsResponse {
                event: Some(event_to_proto(stored)),
                cursor: cursor(stored.seq),
            };
            if self.tx.send(Ok(message)).await.is_err() {
                return Ok(Scan::Closed);
            }
            self.after = stored.seq;
        }
        if full {
            return Ok(Scan::More);
        }
        // Every matching event up to the head was sent; the rest were filtered out.
        self.after = head;
        Ok(if sent_any { Scan::Sent } else { Scan::Nothing })
    }
}

enum Scan {
    /// Events were sent and more may be waiting.
    More,
    /// Events were sent; the stream is at the head.
    Sent,
    /// Nothing new matched.
    Nothing,
    /// The client went away.
    Closed,
}
