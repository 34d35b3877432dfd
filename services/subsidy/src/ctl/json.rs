//! `--output json`: the services' own messages in proto3 JSON (field names in lowerCamelCase,
//! enums by name, timestamps in RFC 3339, absent and default values left out), with two
//! choices made for scripts: 64-bit counts are JSON numbers, and every `google.type.Money` is
//! its exact decimal string in CNY without grouping (`"30000000.00"`), never a float.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// The full name of the money message rendered as a decimal string.
const MONEY: &str = "google.type.Money";

/// The descriptors of every subsidy message, decoded once.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(subsidy_proto::FILE_DESCRIPTOR_SET)
            .expect("the build writes a valid descriptor set")
    })
}

/// A message as JSON.
pub fn message<M: prost::Message + prost::Name>(message: &M) -> Value {
    let descriptor = pool()
        .get_message_by_name(&M::full_name())
        .expect("every generated message is in the descriptor set");
    let dynamic = DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice())
        .expect("a message decodes under its own descriptor");
    let options = SerializeOptions::new().stringify_64_bit_integers(false);
    let mut value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a message serializes to a JSON value");
    amounts_as_decimals(&descriptor, &mut value);
    value
}

/// Messages as a JSON array.
pub fn messages<M: prost::Message + prost::Name>(items: &[M]) -> Value {
    Value::Array(items.iter().map(message).collect())
}

/// Replaces every `google.type.Money` under `value` (of type `descriptor`) by its decimal
/// string.
fn amounts_as_decimals(descriptor: &MessageDescriptor, value: &mut Value) {
    let Value::Object(object) = value else {
        return;
    };
    for field in descriptor.fields() {
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        let Some(value) = object.get_mut(field.json_name()) else {
            continue;
        };
        if field.is_map() {
            let entry_value = inner.map_entry_value_field();
            if let (Kind::Message(inner), Value::Object(entries)) = (entry_value.kind(), value) {
                entries
                    .values_mut()
                    .for_each(|item| one_message(&inner, item));
            }
        } else if let Value::Array(items) = value {
            items.iter_mut().for_each(|item| one_message(&inner, item));
        } else {
            one_message(&inner, value);
        }
    }
}

fn one_message(descriptor: &MessageDescriptor, value: &mut Value) {
    if descriptor.full_name() == MONEY {
        if let Some(decimal) = decimal(value) {
            *value = Value::String(decimal);
        }
    } else {
        amounts_as_decimals(descriptor, value);
    }
}

/// `{"currencyCode":"CNY","units":"12","nanos":340000000}` as `"12.34"`; `None` for anything
/// that is not a valid CNY amount (then printed as the service sent it).
fn decimal(value: &Value) -> Option<String> {
    let integer = |key: &str| match value.get(key) {
        None => Some(0),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    let money = subsidy_proto::google::r#type::Money {
        currency_code: value.get("currencyCode")?.as_str()?.to_owned(),
        units: integer("units")?,
        nanos: i32::try_from(integer("nanos")?).ok()?,
    };
    subsidy_common::Money::from_proto(&money)
        .ok()
        .map(|money| money.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use subsidy_proto::budget as bpb;

    fn cny(fen: i64) -> Option<subsidy_proto::google::r#type::Money> {
        Some(subsidy_common::Money::from_fen(fen).unwrap().to_proto())
    }

    #[test]
    fn amounts_are_decimal_strings_counts_numbers_and_absent_values_absent() {
        // Proves the JSON is the message itself, with money exact and ungrouped.
        let pool = bpb::Pool {
            pool_id: "compute-voucher-2025".into(),
            total: cny(3_000_000_000),
            held: cny(0),
            committed: cny(12_345),
            reservation_count: 3,
            ..Default::default()
        };
        let value = message(&pool);
        assert_eq!(value["poolId"], "compute-voucher-2025");
        assert_eq!(value["total"], "30000000.00");
        assert_eq!(value["held"], "0.00");
        assert_eq!(value["committed"], "123.45");
        assert_eq!(value["reservationCount"], 3);
        assert!(value.get("beneficiaryCap").is_none(), "{value}");
        assert!(value.get("available").is_none(), "{value}");
    }

    #[test]
    fn nested_and_repeated_amounts_are_decimal_strings_and_enums_names() {
        // Proves the walk reaches money inside repeated messages and keeps enum names.
        let page = bpb::ListReservationsResponse {
            reservations: vec![bpb::Reservation {
                reservation_id: "r-1".into(),
                held_amount: cny(150_000_000),
                state: bpb::ReservationState::Held as i32,
                ..Default::default()
            }],
            next_page_token: String::new(),
        };
        let value = message(&page);
        let reservation = &value["reservations"][0];
        assert_eq!(reservation["heldAmount"], "1500000.00");
        assert_eq!(reservation["state"], "RESERVATION_STATE_HELD");
    }

    #[test]
    fn money_that_is_not_cny_is_printed_as_sent() {
        // Proves an amount the CLI cannot read exactly is shown, not guessed.
        let pool = bpb::Pool {
            total: Some(subsidy_proto::google::r#type::Money {
                currency_code: "USD".into(),
                units: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(message(&pool)["total"]["currencyCode"], "USD");
    }
}
