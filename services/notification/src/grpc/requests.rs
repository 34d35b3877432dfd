//! Parsing of requests into domain values with the shared kit: every problem of a request is
//! collected with its field path, so that bad input is answered once, with all its problems.

use prost::Message;
use prost_types::Timestamp;
use serde_json::Map;
use subsidy_common::Uscc;
use subsidy_common::edge::{self, IDENTIFIER_LEN_MAX, Page, PageLimits, PageRequest, Violations};
use subsidy_proto::notification as pb;
use subsidy_proto::status::FieldViolation;

use crate::domain::delivery::DeliveryFilter;
use crate::domain::event::{
    APPLICATION_ID_LEN_MAX, EVENTS_PER_PUBLICATION_MAX, EmailAddress, Event, EventFilter, EventId,
    EventType, PAYLOAD_BYTES_MAX, Program, ROUND_ID_LEN_MAX, SOURCE_LEN_MAX, TRACESTATE_LEN_MAX,
    is_traceparent,
};
use crate::domain::subscription::{
    DESCRIPTION_CHARS_MAX, EndpointUrl, Filters, GRACE_SECONDS_DEFAULT, GRACE_SECONDS_MAX,
    MAX_IN_FLIGHT_MAX, NewSubscription, SubscriptionChanges, SubscriptionState,
};
use crate::error::NotificationError;
use crate::ops::Idempotency;
use crate::wire;

/// Pages of `ListEvents`.
const EVENTS_PAGE: PageLimits = PageLimits::LONG;
/// Pages of `ListSubscriptions`.
const SUBSCRIPTIONS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListDeliveries`.
const DELIVERIES_PAGE: PageLimits = PageLimits::STANDARD;
/// Largest accepted Unix time, in seconds (the end of year 9999).
const TIMESTAMP_SECONDS_MAX: i64 = 253_402_300_799;

/// The idempotency key of a mutating request sent to `operation` with `request_id`.
pub(super) fn key<M: Message>(
    v: &mut Violations,
    operation: &'static str,
    request_id: &str,
    req: &M,
) -> Option<Idempotency> {
    v.request_id(request_id)
        .map(|request_id| Idempotency::of(operation, request_id, req))
}

/// The grace period of a rotated-out secret: 0 means the default, at most
/// [`GRACE_SECONDS_MAX`].
pub(super) fn grace_seconds(v: &mut Violations, value: i64) -> Option<i64> {
    match value {
        0 => Some(GRACE_SECONDS_DEFAULT),
        n if (1..=GRACE_SECONDS_MAX).contains(&n) => Some(n),
        _ => {
            v.add(
                "grace_period_seconds",
                format!("must be 0 to {GRACE_SECONDS_MAX}"),
            );
            None
        }
    }
}

/// A required, known event type.
fn event_type(v: &mut Violations, field: &str, value: i32) -> Option<EventType> {
    match pb::EventType::try_from(value) {
        Ok(pb::EventType::Unspecified) => {
            v.add(field, "is required");
            None
        }
        Ok(kind) => Some(wire::event_type_from_proto(kind)),
        Err(_) => {
            v.add(field, "is not a known event type");
            None
        }
    }
}

/// A filter of event types, sorted and without repeats; empty means every type.
fn event_types(v: &mut Violations, field: &str, values: &[i32]) -> Option<Vec<EventType>> {
    let mut types = values
        .iter()
        .map(|value| event_type(v, field, *value))
        .collect::<Option<Vec<_>>>()?;
    types.sort_unstable();
    types.dedup();
    Some(types)
}

/// A filter of event types for a webhook subscription, which never receives internal ones.
fn webhook_event_types(v: &mut Violations, field: &str, values: &[i32]) -> Option<Vec<EventType>> {
    let types = event_types(v, field, values);
    if types
        .as_ref()
        .is_some_and(|types| types.iter().any(|t| t.is_internal()))
    {
        v.add(field, "internal event types are not delivered to webhooks");
    }
    types
}

/// A program, `None` when unspecified.
fn program(v: &mut Violations, field: &str, value: i32) -> Option<Option<Program>> {
    v.enum_value(
        field,
        value,
        pb::Program::Unspecified,
        wire::program_from_proto,
    )
}

/// An email address that may be left empty.
fn email(v: &mut Violations, field: &str, text: &str) -> Option<Option<EmailAddress>> {
    if text.is_empty() {
        return Some(None);
    }
    EmailAddress::parse(text)
        .map(Some)
        .map_err(|why| v.add(field, why))
        .ok()
}

/// An instant between 1970 and the end of 9999, in microseconds since the epoch.
fn instant_us(v: &mut Violations, field: &str, value: &Timestamp) -> Option<i64> {
    let valid = (0..=TIMESTAMP_SECONDS_MAX).contains(&value.seconds)
        && (0..1_000_000_000).contains(&value.nanos);
    if !valid {
        v.add(field, "is not a valid time");
        return None;
    }
    Some(value.seconds * 1_000_000 + i64::from(value.nanos) / 1000)
}

/// An optional instant (`Some(None)` when absent).
fn optional_instant_us(
    v: &mut Violations,
    field: &str,
    value: Option<&Timestamp>,
) -> Option<Option<i64>> {
    match value {
        None => Some(None),
        Some(value) => instant_us(v, field, value).map(Some),
    }
}

/// A subscription's description: at most [`DESCRIPTION_CHARS_MAX`] characters.
fn description(v: &mut Violations, field: &str, text: &str) -> Option<String> {
    if text.chars().count() > DESCRIPTION_CHARS_MAX {
        v.add(
            field,
            format!("must be at most {DESCRIPTION_CHARS_MAX} characters"),
        );
        return None;
    }
    Some(text.to_owned())
}

/// A subscription's in-flight limit: 0 (the service default) to [`MAX_IN_FLIGHT_MAX`].
fn max_in_flight(v: &mut Violations, field: &str, value: i32) -> Option<i64> {
    let value = i64::from(value);
    if !(0..=MAX_IN_FLIGHT_MAX).contains(&value) {
        v.add(field, format!("must be 0 to {MAX_IN_FLIGHT_MAX}"));
        return None;
    }
    Some(value)
}

/// Reports an unacceptable endpoint: with its own reason `INVALID_ENDPOINT` when it is the
/// only problem of the request, otherwise among the other violations.
fn check_endpoint(
    v: &mut Violations,
    field: &str,
    endpoint: &Result<impl Sized, &'static str>,
) -> Result<(), NotificationError> {
    if let Err(why) = endpoint {
        if v.is_empty() {
            return Err(NotificationError::InvalidEndpoint(FieldViolation::new(
                field, *why,
            )));
        }
        v.add(field, *why);
    }
    Ok(())
}

/// The type of a published event: known, and not one only this service publishes.
fn published_type(v: &mut Violations, event: &pb::Event) -> Option<EventType> {
    let event_type = event_type(v, "event.type", event.r#type);
    if event_type.is_some_and(EventType::is_internal) {
        v.add("event.type", "is published by this service only");
    }
    event_type
}

/// The application and applicant of an event, required when it concerns one.
fn applicant(
    v: &mut Violations,
    event: &pb::Event,
    concerns_application: bool,
) -> (Option<String>, Option<Option<Uscc>>) {
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
    if concerns_application && event.enterprise_uscc.is_empty() {
        v.add(
            "event.enterprise_uscc",
            "is required for claim and proposal events",
        );
    }
    let enterprise = v.optional_uscc("event.enterprise_uscc", &event.enterprise_uscc);
    (application_id, enterprise)
}

/// Checks the W3C trace context of an event.
fn check_trace_context(v: &mut Violations, event: &pb::Event) {
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
}

/// The payload of an event: a JSON object of at most [`PAYLOAD_BYTES_MAX`].
fn payload(v: &mut Violations, event: &pb::Event) -> Option<Map<String, serde_json::Value>> {
    let Some(value) = &event.payload else {
        return Some(Map::new());
    };
    match wire::map_from_struct(value) {
        Err(why) => {
            v.add("event.payload", why);
            None
        }
        Ok(map) => {
            let bytes = serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len());
            if bytes > PAYLOAD_BYTES_MAX {
                v.add("event.payload", "must be at most 64 KiB as JSON");
                return None;
            }
            Some(map)
        }
    }
}

/// Parses the event of a publication; every problem is reported with its field path.
pub(super) fn event_from_proto(v: &mut Violations, event: &pb::Event) -> Option<Event> {
    let event_id = EventId::parse(&event.event_id)
        .map_err(|why| v.add("event.event_id", why))
        .ok();
    let event_type = published_type(v, event);
    let concerns_application = event_type.is_none_or(EventType::concerns_application);
    let (application_id, enterprise_uscc) = applicant(v, event, concerns_application);
    let program = program(v, "event.program", event.program);
    let has_program = event_type.is_none_or(EventType::has_program);
    if has_program && program == Some(None) {
        v.add("event.program", "is required");
    }
    if !has_program && matches!(program, Some(Some(_))) {
        v.add("event.program", "must be unspecified for ledger.checkpoint");
    }
    let amount = v.optional_positive_money("event.amount", event.amount.as_ref());
    let occur_us = match &event.occur_time {
        None => {
            v.add("event.occur_time", "is required");
            None
        }
        Some(time) => instant_us(v, "event.occur_time", time),
    };
    check_trace_context(v, event);
    let payload = payload(v, event);
    let language = v.enum_value(
        "event.language",
        event.language,
        pb::Language::Unspecified,
        wire::language_from_proto,
    );
    let recipient_email = email(v, "event.recipient_email", &event.recipient_email);
    let round_id = v.token("event.round_id", &event.round_id, ROUND_ID_LEN_MAX);
    let source = v.token("event.source", &event.source, SOURCE_LEN_MAX);
    Some(Event {
        event_id: event_id?,
        event_type: event_type?,
        application_id: application_id?,
        enterprise_uscc: enterprise_uscc?,
        program: program?,
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

/// Parses the events of a `PublishEvents` request, each as [`event_from_proto`] does, its
/// fields named `events[i].…`.
pub(super) fn events_from_proto(v: &mut Violations, events: &[pb::Event]) -> Option<Vec<Event>> {
    if events.is_empty() {
        v.add("events", "must hold at least one event");
        return None;
    }
    if events.len() > EVENTS_PER_PUBLICATION_MAX {
        v.add(
            "events",
            format!("must hold at most {EVENTS_PER_PUBLICATION_MAX} events"),
        );
        return None;
    }
    let parsed: Vec<Option<Event>> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let mut inner = Violations::new();
            let parsed = event_from_proto(&mut inner, event);
            v.nest(inner, "event", &format!("events[{index}]"));
            parsed
        })
        .collect();
    parsed.into_iter().collect()
}

/// Parses a new subscription; the endpoint is checked last, by [`check_endpoint`].
pub(super) fn new_subscription(
    v: &mut Violations,
    req: &pb::CreateSubscriptionRequest,
    allow_http: bool,
) -> Result<Option<NewSubscription>, NotificationError> {
    let event_types = webhook_event_types(v, "event_types", &req.event_types);
    let program = program(v, "program_filter", req.program_filter);
    let enterprise = v.optional_uscc("enterprise_uscc_filter", &req.enterprise_uscc_filter);
    let contact_email = email(v, "contact_email", &req.contact_email);
    let description = description(v, "description", &req.description);
    let max_in_flight = max_in_flight(v, "max_in_flight", req.max_in_flight);
    let endpoint = EndpointUrl::parse(&req.endpoint_url, allow_http);
    check_endpoint(v, "endpoint_url", &endpoint)?;
    let (
        Ok(endpoint_url),
        Some(event_types),
        Some(program),
        Some(enterprise),
        Some(description),
        Some(max_in_flight),
        Some(contact_email),
    ) = (
        endpoint,
        event_types,
        program,
        enterprise,
        description,
        max_in_flight,
        contact_email,
    )
    else {
        return Ok(None);
    };
    Ok(Some(NewSubscription {
        endpoint_url,
        filters: Filters {
            event_types,
            program,
            enterprise,
        },
        description,
        max_in_flight,
        contact_email,
    }))
}

/// Parses the changes named by an update mask; the endpoint is checked last, by
/// [`check_endpoint`].
pub(super) fn subscription_changes(
    v: &mut Violations,
    req: &pb::UpdateSubscriptionRequest,
    allow_http: bool,
) -> Result<SubscriptionChanges, NotificationError> {
    let paths = req
        .update_mask
        .as_ref()
        .map(|mask| mask.paths.as_slice())
        .unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "is required");
    }
    let values = req.subscription.clone().unwrap_or_default();
    let mut changes = SubscriptionChanges::default();
    let mut endpoint = Ok(None);
    for path in paths {
        let field = format!("subscription.{path}");
        match path.as_str() {
            "endpoint_url" => {
                endpoint = EndpointUrl::parse(&values.endpoint_url, allow_http).map(Some)
            }
            "event_types" => {
                changes.event_types = webhook_event_types(v, &field, &values.event_types)
            }
            "program_filter" => changes.program = program(v, &field, values.program_filter),
            "enterprise_uscc_filter" => {
                changes.enterprise = v.optional_uscc(&field, &values.enterprise_uscc_filter)
            }
            "description" => changes.description = description(v, &field, &values.description),
            "max_in_flight" => {
                changes.max_in_flight = max_in_flight(v, &field, values.max_in_flight)
            }
            "contact_email" => changes.contact_email = email(v, &field, &values.contact_email),
            "state" => match pb::SubscriptionState::try_from(values.state) {
                Ok(state @ (pb::SubscriptionState::Active | pb::SubscriptionState::Disabled)) => {
                    changes.state = Some(wire::subscription_state_from_proto(state))
                }
                _ => v.add(&field, "must be ACTIVE or DISABLED"),
            },
            _ => v.add("update_mask", format!("path {path} cannot be updated")),
        }
    }
    check_endpoint(v, "subscription.endpoint_url", &endpoint)?;
    changes.endpoint_url = endpoint.ok().flatten();
    Ok(changes)
}

/// The filters of `ListEvents`, and its page.
pub(super) fn events_query(
    v: &mut Violations,
    req: &pb::ListEventsRequest,
) -> Option<(EventFilter, Page)> {
    let event_types = event_types(v, "event_types", &req.event_types);
    let program = program(v, "program", req.program);
    let application_id = v.token(
        "application_id",
        &req.application_id,
        APPLICATION_ID_LEN_MAX,
    );
    let enterprise = v.optional_uscc("enterprise_uscc", &req.enterprise_uscc);
    let start_us = optional_instant_us(v, "start_time", req.start_time.as_ref());
    let end_us = optional_instant_us(v, "end_time", req.end_time.as_ref());
    let page_request = PageRequest {
        kind: "events",
        size: req.page_size,
        token: &req.page_token,
        filters: &[
            &format!("{:?}", req.event_types),
            &req.program.to_string(),
            &req.application_id,
            &req.enterprise_uscc,
            &edge::timestamp_filter(req.start_time.as_ref()),
            &edge::timestamp_filter(req.end_time.as_ref()),
        ],
    };
    let page = v.page(page_request, EVENTS_PAGE);
    let filter = EventFilter {
        event_types: event_types?,
        program: program?,
        application_id: application_id.filter(|id| !id.is_empty()),
        enterprise_uscc: enterprise?,
        start_us: start_us?,
        end_us: end_us?,
        tenants: None,
    };
    Some((filter, page?))
}

/// The filters of `ListDeliveries`, and its page.
pub(super) fn deliveries_query(
    v: &mut Violations,
    req: &pb::ListDeliveriesRequest,
) -> Option<(DeliveryFilter, Page)> {
    let event_id = v.token("event_id", &req.event_id, IDENTIFIER_LEN_MAX);
    let subscription_id = v.token("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
    let channel = v.enum_value(
        "channel",
        req.channel,
        pb::Channel::Unspecified,
        wire::channel_from_proto,
    );
    let state = v.enum_value(
        "state",
        req.state,
        pb::DeliveryState::Unspecified,
        wire::delivery_state_from_proto,
    );
    let page_request = PageRequest {
        kind: "deliveries",
        size: req.page_size,
        token: &req.page_token,
        filters: &[
            &req.event_id,
            &req.subscription_id,
            &req.channel.to_string(),
            &req.state.to_string(),
        ],
    };
    let page = v.page(page_request, DELIVERIES_PAGE);
    let filter = DeliveryFilter {
        event_id: event_id.filter(|id| !id.is_empty()),
        subscription_id: subscription_id.filter(|id| !id.is_empty()),
        channel: channel?,
        state: state?,
    };
    Some((filter, page?))
}

/// The filters of `StreamEvents`.
pub(super) fn stream_filter(
    v: &mut Violations,
    req: &pb::StreamEventsRequest,
) -> Option<EventFilter> {
    let event_types = event_types(v, "event_types", &req.event_types);
    let program = program(v, "program", req.program);
    let enterprise = v.optional_uscc("enterprise_uscc", &req.enterprise_uscc);
    if req.from_beginning && !req.cursor.is_empty() {
        v.add("from_beginning", "must not be combined with cursor");
    }
    Some(EventFilter {
        event_types: event_types?,
        program: program?,
        enterprise_uscc: enterprise?,
        ..EventFilter::default()
    })
}

/// The state filter of `ListSubscriptions`, and its page.
pub(super) fn subscriptions_query(
    v: &mut Violations,
    req: &pb::ListSubscriptionsRequest,
) -> Option<(Option<SubscriptionState>, Page)> {
    let state = v.enum_value(
        "state",
        req.state,
        pb::SubscriptionState::Unspecified,
        wire::subscription_state_from_proto,
    );
    let page_request = PageRequest {
        kind: "subscriptions",
        size: req.page_size,
        token: &req.page_token,
        filters: &[&req.state.to_string()],
    };
    let page = v.page(page_request, SUBSCRIPTIONS_PAGE);
    Some((state?, page?))
}
