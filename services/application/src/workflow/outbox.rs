//! The outbox: every change an applicant should hear of appends an event in the transaction
//! that makes the change ([`Workflow::append_event`]), and the relay delivers the events to the
//! notification service in order ([`Workflow::relay_once`]). An event is published under its
//! own `event_id`, so a delivery repeated after a crash is recognised by the notification
//! service; an event it will never accept is dead-lettered instead of blocking the rest.

use std::collections::BTreeMap;

use prost::Message;
use subsidy_common::Money;
use subsidy_common::edge::timestamp;
use subsidy_proto::notification as npb;

use super::Workflow;
use crate::error::ApplicationError;
use crate::storage::{ClaimRow, NoticeKind, NoticeRow, OutboxRow, ProposalRow, Tx};
use crate::upstream::PeerError;

/// Most events the relay reads per pass, and sends in one `PublishEvents` call (the most one
/// call takes).
pub const RELAY_BATCH_MAX: i64 = 100;
/// Most bytes of encoded events the relay sends in one `PublishEvents` call, well below the
/// 4 MiB a gRPC message may have (an event's payload alone may have 64 KiB).
pub const RELAY_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Longest pause of the relay after failed deliveries, in milliseconds.
pub const RELAY_BACKOFF_MS_MAX: u64 = 5_000;
/// The producer name in every event.
pub const EVENT_SOURCE: &str = "subsidy.application";

/// An event to append to the outbox.
pub(super) struct EventSpec {
    event_type: npb::EventType,
    program: npb::Program,
    application_id: String,
    enterprise_uscc: String,
    round_id: String,
    amount: Option<Money>,
    details: Vec<(&'static str, String)>,
    /// The enterprise's contact email, when the caller read it already (read with the event
    /// otherwise).
    recipient: Option<String>,
}

impl EventSpec {
    /// An event about `claim` (in its state after the change).
    pub(super) fn claim(
        event_type: npb::EventType,
        claim: &ClaimRow,
        amount: Option<Money>,
    ) -> Self {
        EventSpec {
            event_type,
            program: npb::Program::ComputeVoucher,
            application_id: claim.claim_id.clone(),
            enterprise_uscc: claim.enterprise_uscc.clone(),
            round_id: String::new(),
            amount,
            details: vec![
                ("state", claim.state.as_str().to_owned()),
                ("contract_number", claim.contract_number.clone()),
            ],
            recipient: None,
        }
    }

    /// An event about `proposal` (in its state after the change).
    pub(super) fn proposal(
        event_type: npb::EventType,
        proposal: &ProposalRow,
        amount: Option<Money>,
    ) -> Self {
        EventSpec {
            event_type,
            program: npb::Program::DataInfra,
            application_id: proposal.proposal_id.clone(),
            enterprise_uscc: proposal.applicant_uscc.clone(),
            round_id: proposal.round_id.clone(),
            amount,
            details: vec![
                ("state", proposal.state.as_str().to_owned()),
                ("title", proposal.title.clone()),
            ],
            recipient: None,
        }
    }

    /// The event of a round's finalisation, with what it awarded.
    pub(super) fn round_finalized(round_id: &str, awarded_total: Money) -> Self {
        EventSpec {
            event_type: npb::EventType::RoundFinalized,
            program: npb::Program::DataInfra,
            application_id: String::new(),
            enterprise_uscc: String::new(),
            round_id: round_id.to_owned(),
            amount: Some(awarded_total),
            details: Vec::new(),
            recipient: None,
        }
    }

    /// An event about the public notice of an award (the award's envelope: its application,
    /// enterprise, round and amount), with the notice's id in the payload.
    pub(super) fn notice(event_type: npb::EventType, notice: &NoticeRow) -> Self {
        let program = match notice.kind {
            NoticeKind::Claim => npb::Program::ComputeVoucher,
            NoticeKind::Proposal => npb::Program::DataInfra,
        };
        EventSpec {
            event_type,
            program,
            application_id: notice.application_id.clone(),
            enterprise_uscc: notice.enterprise_uscc.clone(),
            round_id: notice.round_id.clone(),
            amount: Some(super::fen(notice.amount_fen)),
            details: vec![("notice_id", notice.notice_id.clone())],
            recipient: None,
        }
    }

    /// Adds a detail to the payload.
    pub(super) fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.details.push((key, value.into()));
        self
    }

    /// The event with the enterprise's contact email as read by the caller (in the
    /// transaction, or just before it).
    pub(super) fn addressed_to(mut self, email: String) -> Self {
        self.recipient = Some(email);
        self
    }
}

/// The current trace context as W3C header values.
fn trace_context() -> (String, String) {
    let mut metadata = tonic::metadata::MetadataMap::new();
    subsidy_common::telemetry::inject_current(&mut metadata);
    let get = |key: &str| {
        metadata
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (get("traceparent"), get("tracestate"))
}

/// The payload of an event: its details as string values.
fn payload(details: Vec<(&'static str, String)>) -> prost_types::Struct {
    let fields: BTreeMap<String, prost_types::Value> = details
        .into_iter()
        .map(|(key, value)| {
            (
                key.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(value)),
                },
            )
        })
        .collect();
    prost_types::Struct { fields }
}

impl Workflow {
    /// Appends the event of `spec` to the outbox in `tx`, addressed to the enterprise's
    /// contact and carrying the current trace context.
    pub(super) async fn append_event(
        &self,
        tx: &mut Tx,
        spec: EventSpec,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        self.append_events(tx, vec![spec], now_us).await
    }

    /// Appends the events of `specs` to the outbox in `tx`, in their order, as
    /// [`Workflow::append_event`] does each: the contacts not given are read in one
    /// statement, the events written in one.
    pub(super) async fn append_events(
        &self,
        tx: &mut Tx,
        specs: Vec<EventSpec>,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        if specs.is_empty() {
            return Ok(());
        }
        let unknown: Vec<&str> = specs
            .iter()
            .filter(|spec| spec.recipient.is_none() && !spec.enterprise_uscc.is_empty())
            .map(|spec| spec.enterprise_uscc.as_str())
            .collect();
        let emails = if unknown.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.store.contact_emails(tx, &unknown).await?
        };
        let (traceparent, tracestate) = trace_context();
        let events: Vec<(String, Vec<u8>)> = specs
            .into_iter()
            .map(|spec| {
                let recipient_email = match spec.recipient {
                    Some(email) => email,
                    None => emails
                        .get(&spec.enterprise_uscc)
                        .cloned()
                        .unwrap_or_default(),
                };
                let event_id = uuid::Uuid::now_v7().to_string();
                let event = npb::Event {
                    event_id: event_id.clone(),
                    r#type: spec.event_type as i32,
                    application_id: spec.application_id,
                    enterprise_uscc: spec.enterprise_uscc,
                    program: spec.program as i32,
                    amount: spec
                        .amount
                        .filter(|amount| !amount.is_zero())
                        .map(Money::to_proto),
                    occur_time: Some(timestamp(now_us)),
                    traceparent: traceparent.clone(),
                    tracestate: tracestate.clone(),
                    payload: Some(payload(spec.details)),
                    language: npb::Language::Unspecified as i32,
                    recipient_email,
                    round_id: spec.round_id,
                    source: EVENT_SOURCE.to_owned(),
                    publish_time: None,
                };
                (event_id, event.encode_to_vec())
            })
            .collect();
        self.store.append_events(tx, &events, now_us).await?;
        Ok(())
    }

    /// Delivers undelivered outbox events in order until one fails. Returns how many were
    /// delivered and whether a delivery failed (so the relay backs off). No connection is held
    /// while a delivery is under way.
    ///
    /// The events go in batches of one `PublishEvents` call each (at most
    /// [`RELAY_BATCH_BYTES_MAX`] bytes), one notification transaction per batch. A batch the
    /// notification service does not take whole (it refuses an event, is unreachable, or does
    /// not serve `PublishEvents` yet) is delivered again one event at a time with
    /// `PublishEvent`, which dead-letters an event that will never be accepted and stops at
    /// the first that cannot be delivered now.
    pub async fn relay_once(&self) -> Result<(usize, bool), ApplicationError> {
        let events = {
            let mut conn = self.store.read().await?;
            self.store
                .undelivered_events(&mut conn, RELAY_BATCH_MAX)
                .await?
        };
        let decode = |row: &OutboxRow| {
            npb::Event::decode(row.event.as_slice()).expect("the outbox holds encoded events")
        };
        // Published but not yet recorded, recorded together (one statement, not one commit
        // per event); always before anything recorded after them.
        let mut published = Vec::new();
        let mut delivered = 0;
        let mut rest = events.as_slice();
        while rest.len() > 1 {
            let mut bytes = 0;
            let take = rest
                .iter()
                .take_while(|row| {
                    bytes += row.event.len();
                    bytes <= RELAY_BATCH_BYTES_MAX
                })
                .count()
                .max(1);
            let batch = rest[..take].iter().map(decode).collect();
            if self.peers.publish_all(batch).await.is_err() {
                break;
            }
            published.extend(rest[..take].iter().map(|row| row.outbox_seq));
            delivered += take;
            rest = &rest[take..];
        }
        for row in rest {
            let event = decode(row);
            let outcome = self.peers.publish(event).await;
            if outcome.is_ok() {
                published.push(row.outbox_seq);
                delivered += 1;
                continue;
            }
            let mut conn = self.store.read().await?;
            self.store
                .mark_events_delivered(&mut conn, &std::mem::take(&mut published))
                .await?;
            match outcome {
                Ok(()) => unreachable!("a published event was recorded above"),
                Err(PeerError::Refused { code, reason, .. })
                    if matches!(
                        code,
                        tonic::Code::InvalidArgument | tonic::Code::AlreadyExists
                    ) =>
                {
                    // The notification service will never accept this event as it is: keep it
                    // in the outbox as dead-lettered rather than blocking every later event.
                    let error = format!("{code:?} {reason}");
                    tracing::error!(event_id = %row.event_id, %error, "event refused; dead-lettered");
                    self.store
                        .mark_event_done(&mut conn, row.outbox_seq, Some(&error))
                        .await?;
                }
                Err(error) => {
                    let text = match &error {
                        PeerError::Unavailable(service) => format!("{service} unavailable"),
                        PeerError::Refused { code, reason, .. } => format!("{code:?} {reason}"),
                    };
                    self.store
                        .mark_event_failed(&mut conn, row.outbox_seq, &text)
                        .await?;
                    return Ok((delivered, true));
                }
            }
        }
        let mut conn = self.store.read().await?;
        self.store
            .mark_events_delivered(&mut conn, &published)
            .await?;
        Ok((delivered, false))
    }
}
