//! Checkpoints as `ledger.checkpoint` events, sent to the notification service
//! (`PublishEvent`) over the budget's peer channel. The event is built from the stored
//! checkpoint alone, so every attempt (and every replica) sends the same content under the same
//! event id, which the notification service stores once.

use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use prost_types::value::Kind;
use subsidy_common::BoxError;
use subsidy_common::Money;
use subsidy_common::config::Config;
use subsidy_common::edge::timestamp;
use subsidy_common::security::{PeerChannel, Security};
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;

use crate::ops::checkpoint::Publisher;
use crate::storage::checkpoints::StoredCheckpoint;

/// The producer name of the budget's events.
pub const SOURCE: &str = "subsidy.budget";
/// Time one `PublishEvent` call may take, in milliseconds.
pub const PUBLISH_TIMEOUT_MS: u64 = 5_000;

/// The event id of a checkpoint: its key (first 16 hex digits), pool and sequence, at most
/// 18 + 16 + 1 + 63 + 1 + 19 = 118 characters.
pub fn event_id(stored: &StoredCheckpoint) -> String {
    let checkpoint = &stored.checkpoint;
    let key = &checkpoint.key_id[..checkpoint.key_id.len().min(16)];
    format!(
        "ledger-checkpoint-{key}-{}-{}",
        checkpoint.head.pool_id, checkpoint.head.sequence
    )
}

/// The payload of a checkpoint's event: every signed field and the signature, as text (amounts
/// as CNY decimal strings, the time as RFC 3339 with microseconds, the signature in standard
/// base64), so that a receiver can verify it with the public key alone (docs/LEDGER.md).
pub fn payload(stored: &StoredCheckpoint) -> Vec<(&'static str, String)> {
    let checkpoint = &stored.checkpoint;
    let head = &checkpoint.head;
    let cny = |fen: i64| {
        Money::from_fen(fen)
            .map(|money| money.to_string())
            .expect("pool counters are money")
    };
    let time = chrono::DateTime::from_timestamp_micros(head.created_us)
        .expect("a database time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    vec![
        ("pool_id", head.pool_id.clone()),
        ("sequence", head.sequence.to_string()),
        ("head_hash", head.head_hash.clone()),
        ("total", cny(head.total_fen)),
        ("held", cny(head.held_fen)),
        ("committed", cny(head.committed_fen)),
        ("create_time", time),
        ("algorithm", checkpoint.algorithm.as_str().to_owned()),
        ("key_id", checkpoint.key_id.clone()),
        (
            "signature",
            base64::engine::general_purpose::STANDARD.encode(&checkpoint.signature),
        ),
    ]
}

/// The `ledger.checkpoint` event of a stored checkpoint.
pub fn event(stored: &StoredCheckpoint) -> npb::Event {
    let fields = payload(stored)
        .into_iter()
        .map(|(key, value)| {
            (
                key.to_owned(),
                prost_types::Value {
                    kind: Some(Kind::StringValue(value)),
                },
            )
        })
        .collect();
    npb::Event {
        event_id: event_id(stored),
        r#type: npb::EventType::LedgerCheckpoint as i32,
        occur_time: Some(timestamp(stored.checkpoint.head.created_us)),
        payload: Some(prost_types::Struct { fields }),
        source: SOURCE.to_owned(),
        ..npb::Event::default()
    }
}

/// The notification service, reached over the budget's peer channel (`peers.notification_url`).
#[derive(Clone, Debug)]
pub struct NotificationPublisher {
    client: NotificationServiceClient<PeerChannel>,
}

impl NotificationPublisher {
    /// A lazily connecting client of the configured notification service.
    pub fn connect(config: &Config, security: &Security) -> Result<Self, BoxError> {
        let resolve = (config.peers.resolve_interval_ms > 0)
            .then(|| Duration::from_millis(config.peers.resolve_interval_ms));
        let channel = security.peer_channel(
            &config.peers.notification_url,
            Duration::from_millis(PUBLISH_TIMEOUT_MS),
            resolve,
        )?;
        Ok(NotificationPublisher {
            client: NotificationServiceClient::new(channel)
                .max_decoding_message_size(config.server.message_size_max_bytes),
        })
    }
}

impl Publisher for NotificationPublisher {
    fn publish<'a>(
        &'a self,
        checkpoint: &'a StoredCheckpoint,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.client
                .clone()
                .publish_event(npb::PublishEventRequest {
                    event: Some(event(checkpoint)),
                })
                .await
                .map(|_| ())
                .map_err(|status| {
                    let reason = subsidy_proto::status::reason(&status).unwrap_or_default();
                    format!("{:?} {reason}", status.code())
                })
        })
    }
}
