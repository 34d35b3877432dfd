//! The event catalogue in `docs/events` is the webhook contract: a JSON Schema (draft 2020-12)
//! and an example body for every event type that webhooks receive, and the README's table of
//! every type. These tests keep it in step with the service: every webhook type has its files,
//! every example validates against its schema and is exactly what `webhook_body` builds for
//! the event it shows, no file describes a type the service does not deliver, and the table
//! lists every type under its proto name. (The end-to-end checks of real bodies against the
//! schemas are `services/subsidy/tests/crash.rs` and, for every type,
//! `services/subsidy/tests/webhook_events.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;
use subsidy_common::{Money, Uscc};
use subsidy_notification::domain::event::{Event, EventId, EventType, Program, webhook_body};
use subsidy_notification::wire::event_type_to_proto;

/// The catalogue's folder.
fn catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The types webhooks receive.
fn webhook_types() -> impl Iterator<Item = EventType> {
    EventType::ALL
        .into_iter()
        .filter(|kind| !kind.is_internal())
}

/// The schema of `kind`, checked against the draft 2020-12 meta-schema.
fn schema(kind: EventType) -> Value {
    let schema = read_json(&catalogue().join(format!("{}.schema.json", kind.as_str())));
    if let Err(error) = jsonschema::meta::validate(&schema) {
        panic!(
            "{}.schema.json is not a valid schema: {error}",
            kind.as_str()
        );
    }
    schema
}

/// Every way `instance` breaks `schema` (formats such as `date-time` checked too).
fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("the schema compiles");
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

#[test]
fn every_webhook_event_type_has_a_schema_and_an_example_that_validates() {
    // Proves each type webhooks receive has its schema, naming that type, and an example body
    // that the schema accepts.
    for kind in webhook_types() {
        let name = kind.as_str();
        let schema = schema(kind);
        assert_eq!(schema["properties"]["type"]["const"], name, "{name}");
        assert_eq!(
            schema["properties"]["data"]["properties"]["type"]["const"], name,
            "{name}"
        );
        let example = read_json(&catalogue().join(format!("{name}.example.json")));
        assert_eq!(example["type"], name);
        assert_eq!(
            violations(&schema, &example),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

/// A change that breaks a body, and what it is.
type Breakage = (&'static str, fn(&mut Value));

#[test]
fn the_schemas_refuse_bodies_that_break_the_contract() {
    // Proves the schemas are closed and strict where the shape is fixed: an unknown key in the
    // body, the data or the payload, a missing payload key, another type, and an amount as a
    // JSON number are each refused.
    let schema = schema(EventType::ClaimApproved);
    let example = read_json(&catalogue().join("claim.approved.example.json"));
    let broken: [Breakage; 6] = [
        ("an extra top-level key", |body| body["extra"] = "x".into()),
        ("an extra data key", |body| {
            body["data"]["recipient_email"] = "boss@example.org".into()
        }),
        ("an extra payload key", |body| {
            body["data"]["payload"]["note"] = "x".into()
        }),
        ("a missing payload key", |body| {
            body["data"]["payload"]
                .as_object_mut()
                .unwrap()
                .remove("reviewer_id");
        }),
        ("another type", |body| {
            body["type"] = "claim.rejected".into()
        }),
        ("an amount as a number", |body| {
            body["data"]["amount"]["value"] = serde_json::json!(75000.0)
        }),
    ];
    for (what, change) in broken {
        let mut body = example.clone();
        change(&mut body);
        assert!(
            !violations(&schema, &body).is_empty(),
            "{what} was accepted"
        );
    }
    // Every type's schema is closed the same way: its example with an extra key at the top,
    // in `data` or in the payload is refused.
    let extras: [Breakage; 3] = [
        ("an extra top-level key", |body| body["extra"] = "x".into()),
        ("an extra data key", |body| {
            body["data"]["extra"] = "x".into()
        }),
        ("an extra payload key", |body| {
            body["data"]["payload"]["extra"] = "x".into()
        }),
    ];
    for kind in webhook_types() {
        let closed = self::schema(kind);
        let example = read_json(&catalogue().join(format!("{}.example.json", kind.as_str())));
        for (what, change) in extras {
            let mut body = example.clone();
            change(&mut body);
            assert!(
                !violations(&closed, &body).is_empty(),
                "{}: {what} was accepted",
                kind.as_str()
            );
        }
    }
}

#[test]
fn every_example_is_the_body_the_service_builds_for_its_event() {
    // Proves the examples show the real envelope: the event each example describes, given to
    // `webhook_body`, yields exactly the example (keys, amounts as decimal strings, timestamps
    // with milliseconds), and the applicant's email address is left out.
    let us = |text: &Value| {
        chrono::DateTime::parse_from_rfc3339(text.as_str().expect("a timestamp"))
            .expect("RFC 3339")
            .timestamp_micros()
    };
    for kind in webhook_types() {
        let name = kind.as_str();
        let example = read_json(&catalogue().join(format!("{name}.example.json")));
        let data = &example["data"];
        let text = |key: &str| data[key].as_str().expect("a string").to_owned();
        let event = Event {
            event_id: EventId::parse(&text("event_id")).expect("an event id"),
            event_type: kind,
            application_id: text("application_id"),
            enterprise_uscc: Some(text("enterprise_uscc"))
                .filter(|uscc| !uscc.is_empty())
                .map(|uscc| Uscc::parse(&uscc).expect("a valid USCC")),
            // Empty for a type of no program (ledger.checkpoint).
            program: Program::parse(&text("program")),
            amount: data["amount"]["value"]
                .as_str()
                .map(|value| Money::from_str(value).expect("money")),
            occur_us: us(&data["occur_time"]),
            traceparent: String::new(),
            tracestate: String::new(),
            payload: data["payload"].as_object().expect("an object").clone(),
            language: None,
            recipient_email: Some(
                subsidy_notification::domain::event::EmailAddress::parse("boss@example.org")
                    .unwrap(),
            ),
            round_id: text("round_id"),
            source: text("source"),
        };
        let built: Value =
            serde_json::from_slice(&webhook_body(&event, us(&data["publish_time"]))).unwrap();
        assert_eq!(built, example, "{name}");
    }
}

#[test]
fn no_file_describes_a_type_the_service_does_not_deliver_to_webhooks() {
    // Proves the folder holds nothing but the README and the schema and example of known
    // webhook types: a renamed or removed type leaves no stale file behind, and the internal
    // type has none.
    let expected: BTreeSet<String> = webhook_types()
        .flat_map(|kind| {
            [
                format!("{}.schema.json", kind.as_str()),
                format!("{}.example.json", kind.as_str()),
            ]
        })
        .chain(["README.md".to_owned()])
        .collect();
    let found: BTreeSet<String> = std::fs::read_dir(catalogue())
        .expect("docs/events exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let unknown: Vec<&String> = found.difference(&expected).collect();
    let missing: Vec<&String> = expected.difference(&found).collect();
    assert!(unknown.is_empty(), "files for no webhook type: {unknown:?}");
    assert!(missing.is_empty(), "missing: {missing:?}");
}

#[test]
fn the_schemas_share_one_set_of_definitions() {
    // Proves a shared shape (money, timestamps, USCC, event id) is defined the same way in
    // every schema, so a correction cannot reach only some of them.
    let first = schema(EventType::ClaimSubmitted)["$defs"].clone();
    assert!(first.is_object());
    for kind in webhook_types() {
        assert_eq!(schema(kind)["$defs"], first, "{}", kind.as_str());
    }
}

#[test]
fn the_catalogue_lists_every_event_type_under_its_proto_name() {
    // Proves the README's table has a row for each type, the internal one included, pairing
    // the dotted name with the proto enum value.
    let readme = std::fs::read_to_string(catalogue().join("README.md")).unwrap();
    for kind in EventType::ALL {
        let row = format!(
            "| `{}` | `{}` |",
            kind.as_str(),
            event_type_to_proto(kind).as_str_name()
        );
        assert!(readme.contains(&row), "no row {row}");
    }
}
