//! Conversions between the domain (and stored rows) and `subsidy.notification.v1`: used by the
//! edge to render answers and by the use cases to build the responses they store for replay.
//! Nothing here validates; the edge does that while parsing.

use prost_types::{Struct, Value as ProtoValue, value::Kind};
use serde_json::{Map, Number, Value};
use subsidy_common::edge::timestamp;
use subsidy_common::{Money, Uscc};
use subsidy_proto::notification as pb;

use crate::domain::delivery::{Channel, DeliveryState};
use crate::domain::event::{EventType, Language, Program};
use crate::domain::subscription::{DisabledReason, SubscriptionState};
use crate::storage::{AttemptRow, DeliveryRow, StoredEvent, SubscriptionRow};

/// The domain form of a known, specified event type (callers handle UNSPECIFIED first).
pub fn event_type_from_proto(kind: pb::EventType) -> EventType {
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
        pb::EventType::LedgerCheckpoint => EventType::LedgerCheckpoint,
        pb::EventType::ClaimNeedsInformation => EventType::ClaimNeedsInformation,
        pb::EventType::ClaimReopened => EventType::ClaimReopened,
        pb::EventType::ClaimInformationProvided => EventType::ClaimInformationProvided,
        pb::EventType::AwardPublished => EventType::AwardPublished,
        pb::EventType::ObjectionFiled => EventType::ObjectionFiled,
        pb::EventType::ObjectionUpheld => EventType::ObjectionUpheld,
        pb::EventType::ObjectionDismissed => EventType::ObjectionDismissed,
        pb::EventType::ClaimRevoked => EventType::ClaimRevoked,
        pb::EventType::ProposalRevoked => EventType::ProposalRevoked,
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
        EventType::LedgerCheckpoint => pb::EventType::LedgerCheckpoint,
        EventType::ClaimNeedsInformation => pb::EventType::ClaimNeedsInformation,
        EventType::ClaimReopened => pb::EventType::ClaimReopened,
        EventType::ClaimInformationProvided => pb::EventType::ClaimInformationProvided,
        EventType::AwardPublished => pb::EventType::AwardPublished,
        EventType::ObjectionFiled => pb::EventType::ObjectionFiled,
        EventType::ObjectionUpheld => pb::EventType::ObjectionUpheld,
        EventType::ObjectionDismissed => pb::EventType::ObjectionDismissed,
        EventType::ClaimRevoked => pb::EventType::ClaimRevoked,
        EventType::ProposalRevoked => pb::EventType::ProposalRevoked,
    }
}

/// The domain form of a specified program.
pub fn program_from_proto(program: pb::Program) -> Program {
    match program {
        pb::Program::ComputeVoucher => Program::ComputeVoucher,
        pb::Program::DataInfra => Program::DataInfra,
        pb::Program::Unspecified => unreachable!("callers handle UNSPECIFIED first"),
    }
}

/// The wire form of a program, UNSPECIFIED for none.
pub fn program_to_proto(program: Option<Program>) -> pb::Program {
    match program {
        None => pb::Program::Unspecified,
        Some(Program::ComputeVoucher) => pb::Program::ComputeVoucher,
        Some(Program::DataInfra) => pb::Program::DataInfra,
    }
}

/// The domain form of a specified language.
pub fn language_from_proto(language: pb::Language) -> Language {
    match language {
        pb::Language::Zh => Language::Zh,
        pb::Language::En => Language::En,
        pb::Language::Unspecified => unreachable!("callers handle UNSPECIFIED first"),
    }
}

fn language_to_proto(language: Option<Language>) -> pb::Language {
    match language {
        None => pb::Language::Unspecified,
        Some(Language::Zh) => pb::Language::Zh,
        Some(Language::En) => pb::Language::En,
    }
}

/// The domain form of a specified channel.
pub fn channel_from_proto(channel: pb::Channel) -> Channel {
    match channel {
        pb::Channel::Webhook => Channel::Webhook,
        pb::Channel::Email => Channel::Email,
        pb::Channel::Unspecified => unreachable!("callers handle UNSPECIFIED first"),
    }
}

fn channel_to_proto(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Webhook => pb::Channel::Webhook,
        Channel::Email => pb::Channel::Email,
    }
}

/// The domain form of a specified delivery state.
pub fn delivery_state_from_proto(state: pb::DeliveryState) -> DeliveryState {
    match state {
        pb::DeliveryState::Pending => DeliveryState::Pending,
        pb::DeliveryState::InFlight => DeliveryState::InFlight,
        pb::DeliveryState::Delivered => DeliveryState::Delivered,
        pb::DeliveryState::FailedRetrying => DeliveryState::FailedRetrying,
        pb::DeliveryState::DeadLettered => DeliveryState::DeadLettered,
        pb::DeliveryState::Cancelled => DeliveryState::Cancelled,
        pb::DeliveryState::Unspecified => unreachable!("callers handle UNSPECIFIED first"),
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

/// The domain form of a specified subscription state.
pub fn subscription_state_from_proto(state: pb::SubscriptionState) -> SubscriptionState {
    match state {
        pb::SubscriptionState::Active => SubscriptionState::Active,
        pb::SubscriptionState::Disabled => SubscriptionState::Disabled,
        pb::SubscriptionState::Unspecified => unreachable!("callers handle UNSPECIFIED first"),
    }
}

fn subscription_state_to_proto(state: SubscriptionState) -> pb::SubscriptionState {
    match state {
        SubscriptionState::Active => pb::SubscriptionState::Active,
        SubscriptionState::Disabled => pb::SubscriptionState::Disabled,
    }
}

fn disabled_reason_to_proto(reason: Option<DisabledReason>) -> pb::DisabledReason {
    match reason {
        None => pb::DisabledReason::Unspecified,
        Some(DisabledReason::Manual) => pb::DisabledReason::Manual,
        Some(DisabledReason::EndpointFailing) => pb::DisabledReason::EndpointFailing,
    }
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

/// A `google.protobuf.Struct` as a JSON object; `Err` names what JSON cannot hold.
pub fn map_from_struct(value: &Struct) -> Result<Map<String, Value>, &'static str> {
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
        occur_time: Some(timestamp(event.occur_us)),
        traceparent: event.traceparent.clone(),
        tracestate: event.tracestate.clone(),
        payload: (!event.payload.is_empty()).then(|| struct_from_map(&event.payload)),
        language: language_to_proto(event.language) as i32,
        recipient_email: event
            .recipient_email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        round_id: event.round_id.clone(),
        source: event.source.clone(),
        publish_time: Some(timestamp(stored.published_us)),
    }
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
        state: subscription_state_to_proto(row.state) as i32,
        disabled_reason: disabled_reason_to_proto(row.disabled_reason) as i32,
        disable_time: row.disabled_us.map(timestamp),
        failing_since_time: row.failing_since_us.map(timestamp),
        previous_secret_expire_time: row.previous_secret_expires_us.map(timestamp),
        create_time: Some(timestamp(row.created_us)),
        update_time: Some(timestamp(row.updated_us)),
    }
}

fn attempt_to_proto(row: &AttemptRow) -> pb::DeliveryAttempt {
    let small = |value: i64| i32::try_from(value).unwrap_or_default();
    pb::DeliveryAttempt {
        attempt_number: small(row.attempt_number),
        start_time: Some(timestamp(row.start_us)),
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
        next_attempt_time: row.next_attempt_us.map(timestamp),
        last_status_code: small(row.last_status_code),
        last_error: row.last_error.clone(),
        attempts: attempts.iter().map(attempt_to_proto).collect(),
        redelivery_count: small(row.redelivery_count),
        create_time: Some(timestamp(row.created_us)),
        update_time: Some(timestamp(row.updated_us)),
        deliver_time: row.delivered_us.map(timestamp),
    }
}
