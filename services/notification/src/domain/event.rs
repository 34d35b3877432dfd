//! Events: what a producer tells us happened, validated, with the canonical form whose hash
//! decides whether a replayed `event_id` carries the same content.

use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subsidy_common::{Money, Uscc};

/// Longest event identifier, in bytes.
pub const EVENT_ID_LEN_MAX: usize = 128;
/// Longest application identifier, in bytes.
pub const APPLICATION_ID_LEN_MAX: usize = 128;
/// Longest round identifier, in bytes.
pub const ROUND_ID_LEN_MAX: usize = 128;
/// Longest producer name, in bytes.
pub const SOURCE_LEN_MAX: usize = 128;
/// Largest payload, serialized as JSON, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Most events one `PublishEvents` call stores.
pub const EVENTS_PER_PUBLICATION_MAX: usize = 100;
/// Length of a W3C `traceparent` of version 00, in bytes.
pub const TRACEPARENT_LEN: usize = 55;
/// Longest W3C `tracestate`, in bytes.
pub const TRACESTATE_LEN_MAX: usize = 512;
/// Longest email address, in bytes (RFC 5321 path limit).
pub const EMAIL_LEN_MAX: usize = 254;

/// A producer's event identifier: 1 to 128 printable ASCII characters without spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// Validates an event identifier.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            Err("is required")
        } else if text.len() > EVENT_ID_LEN_MAX {
            Err("must be at most 128 characters")
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            Err("must be printable ASCII without spaces")
        } else {
            Ok(EventId(text.to_owned()))
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of state change an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A compute-voucher claim was submitted.
    ClaimSubmitted,
    /// A claim failed the eligibility rules.
    ClaimIneligible,
    /// Money was reserved for a claim.
    ClaimReserved,
    /// A claim was put on the waiting list.
    ClaimWaitlisted,
    /// A claim was approved.
    ClaimApproved,
    /// A claim was rejected.
    ClaimRejected,
    /// A claim was withdrawn.
    ClaimWithdrawn,
    /// A claim's reservation expired.
    ClaimExpired,
    /// A claim's subsidy was paid out.
    ClaimDisbursed,
    /// A proposal was submitted.
    ProposalSubmitted,
    /// A proposal failed the eligibility rules.
    ProposalIneligible,
    /// A proposal was awarded a grant.
    ProposalAwarded,
    /// A proposal was not selected.
    ProposalNotSelected,
    /// A proposal's grant was paid out.
    ProposalDisbursed,
    /// A round was finalized.
    RoundFinalized,
    /// This service disabled a failing webhook subscription (internal).
    SubscriptionDisabled,
    /// The budget signed the head of a pool's ledger (a checkpoint).
    LedgerCheckpoint,
    /// A reviewer asked the applicant for more information about a claim.
    ClaimNeedsInformation,
    /// A reviewer reopened an expired claim.
    ClaimReopened,
    /// The applicant answered a request for information.
    ClaimInformationProvided,
    /// An approved claim or awarded proposal was published for public notice (公示).
    AwardPublished,
    /// An objection (异议) was filed against a published award.
    ObjectionFiled,
    /// A reviewer upheld an objection (the award is revoked).
    ObjectionUpheld,
    /// A reviewer dismissed an objection (the award stands).
    ObjectionDismissed,
    /// An approved claim was revoked after an objection was upheld.
    ClaimRevoked,
    /// An awarded proposal was revoked after an objection was upheld.
    ProposalRevoked,
}

impl EventType {
    /// Every type, in contract order.
    pub const ALL: [EventType; 26] = [
        EventType::ClaimSubmitted,
        EventType::ClaimIneligible,
        EventType::ClaimReserved,
        EventType::ClaimWaitlisted,
        EventType::ClaimApproved,
        EventType::ClaimRejected,
        EventType::ClaimWithdrawn,
        EventType::ClaimExpired,
        EventType::ClaimDisbursed,
        EventType::ProposalSubmitted,
        EventType::ProposalIneligible,
        EventType::ProposalAwarded,
        EventType::ProposalNotSelected,
        EventType::ProposalDisbursed,
        EventType::RoundFinalized,
        EventType::SubscriptionDisabled,
        EventType::LedgerCheckpoint,
        EventType::ClaimNeedsInformation,
        EventType::ClaimReopened,
        EventType::ClaimInformationProvided,
        EventType::AwardPublished,
        EventType::ObjectionFiled,
        EventType::ObjectionUpheld,
        EventType::ObjectionDismissed,
        EventType::ClaimRevoked,
        EventType::ProposalRevoked,
    ];

    /// The stored name, also the `type` of webhook bodies, e.g. `claim.approved`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ClaimSubmitted => "claim.submitted",
            EventType::ClaimIneligible => "claim.ineligible",
            EventType::ClaimReserved => "claim.reserved",
            EventType::ClaimWaitlisted => "claim.waitlisted",
            EventType::ClaimApproved => "claim.approved",
            EventType::ClaimRejected => "claim.rejected",
            EventType::ClaimWithdrawn => "claim.withdrawn",
            EventType::ClaimExpired => "claim.expired",
            EventType::ClaimDisbursed => "claim.disbursed",
            EventType::ProposalSubmitted => "proposal.submitted",
            EventType::ProposalIneligible => "proposal.ineligible",
            EventType::ProposalAwarded => "proposal.awarded",
            EventType::ProposalNotSelected => "proposal.not_selected",
            EventType::ProposalDisbursed => "proposal.disbursed",
            EventType::RoundFinalized => "round.finalized",
            EventType::SubscriptionDisabled => "subscription.disabled",
            EventType::LedgerCheckpoint => "ledger.checkpoint",
            EventType::ClaimNeedsInformation => "claim.needs_information",
            EventType::ClaimReopened => "claim.reopened",
            EventType::ClaimInformationProvided => "claim.information_provided",
            EventType::AwardPublished => "award.published",
            EventType::ObjectionFiled => "objection.filed",
            EventType::ObjectionUpheld => "objection.upheld",
            EventType::ObjectionDismissed => "objection.dismissed",
            EventType::ClaimRevoked => "claim.revoked",
            EventType::ProposalRevoked => "proposal.revoked",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether the event concerns one claim or proposal (and so one applicant).
    pub fn concerns_application(self) -> bool {
        !matches!(
            self,
            EventType::RoundFinalized
                | EventType::SubscriptionDisabled
                | EventType::LedgerCheckpoint
        )
    }

    /// Whether the event belongs to a program: all but the internal type and ledger
    /// checkpoints (which concern a pool).
    pub fn has_program(self) -> bool {
        !matches!(
            self,
            EventType::SubscriptionDisabled | EventType::LedgerCheckpoint
        )
    }

    /// Whether only callers that see every enterprise (auditors, admins) may read the type:
    /// a ledger checkpoint carries a pool's counters, which the budget shows applicants
    /// nowhere else.
    pub fn is_staff_only(self) -> bool {
        self == EventType::LedgerCheckpoint
    }

    /// Whether only this service publishes the type; producers may not, and webhooks never
    /// receive it.
    pub fn is_internal(self) -> bool {
        self == EventType::SubscriptionDisabled
    }
}

/// A subsidy program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// The compute-voucher program.
    ComputeVoucher,
    /// The data-infrastructure grant program.
    DataInfra,
}

impl Program {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Program::ComputeVoucher => "compute_voucher",
            Program::DataInfra => "data_infra",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Program::ComputeVoucher, Program::DataInfra]
            .into_iter()
            .find(|program| program.as_str() == text)
    }
}

/// The language of an email.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// Simplified Chinese, the default.
    #[default]
    Zh,
    /// English.
    En,
}

impl Language {
    /// The stored name (`zh`, `en`).
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Zh => "zh",
            Language::En => "en",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Language::Zh, Language::En]
            .into_iter()
            .find(|language| language.as_str() == text)
    }
}

/// An email address that the SMTP relay can be given: at most 254 bytes and in the syntax the
/// mail library accepts (see [`is_mail_address`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates an address.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > EMAIL_LEN_MAX {
            return Err("must be at most 254 characters");
        }
        if is_mail_address(text) {
            Ok(EmailAddress(text.to_owned()))
        } else {
            Err("must be an email address such as name@example.org")
        }
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` is an address in the syntax of the mail library the email adapter sends with, so that
/// every address accepted here can be handed to the relay: the part before the last `@` is a
/// valid local part, the part after it a domain name (internationalized names allowed) or an
/// IP address, bracketed or not. The email adapter's tests check that both agree.
pub fn is_mail_address(text: &str) -> bool {
    let Some((user, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let ascii_domain = |domain: &str| {
        let ip = domain
            .strip_prefix('[')
            .and_then(|ip| ip.strip_suffix(']'))
            .unwrap_or(domain);
        email_address::EmailAddress::is_valid_domain(domain) || ip.parse::<IpAddr>().is_ok()
    };
    email_address::EmailAddress::is_valid_local_part(user)
        && (ascii_domain(domain)
            || idna::domain_to_ascii(domain).is_ok_and(|ascii| ascii_domain(&ascii)))
}

/// Whether `text` is a W3C `traceparent` of version 00 with non-zero trace and span ids.
pub fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    text.len() == TRACEPARENT_LEN
        && parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// A validated event. Every field except the publication time is the producer's and part of
/// the content compared when the same `event_id` is published again.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The producer's identifier.
    pub event_id: EventId,
    /// The kind of change.
    pub event_type: EventType,
    /// The claim or proposal; empty for round and internal events.
    pub application_id: String,
    /// The applicant; `None` for round and internal events.
    pub enterprise_uscc: Option<Uscc>,
    /// The program; `None` only for internal events and ledger checkpoints.
    pub program: Option<Program>,
    /// The amount concerned.
    pub amount: Option<Money>,
    /// When the change happened, µs since the epoch.
    pub occur_us: i64,
    /// W3C trace context of the causing call, or empty.
    pub traceparent: String,
    /// W3C trace state, or empty.
    pub tracestate: String,
    /// Type-specific details, a JSON object of at most 64 KiB.
    pub payload: Map<String, Value>,
    /// The email's language; `None` means the default.
    pub language: Option<Language>,
    /// The applicant contact to email, if any.
    pub recipient_email: Option<EmailAddress>,
    /// The round, or empty.
    pub round_id: String,
    /// The producing service.
    pub source: String,
}

impl Event {
    /// The payload as stored: compact JSON with keys in sorted order.
    pub fn payload_json(&self) -> String {
        serde_json::to_string(&self.payload).expect("a JSON map serializes")
    }

    /// The SHA-256 (lower-case hex) of the canonical form of every producer field. Two
    /// publications of one `event_id` are the same event exactly when their hashes are equal.
    pub fn content_hash(&self) -> String {
        let canonical = json!({
            "v": 1,
            "event_id": self.event_id.as_str(),
            "type": self.event_type.as_str(),
            "application_id": self.application_id,
            "enterprise_uscc": self.enterprise_uscc.as_ref().map(Uscc::as_str),
            "program": self.program.map(Program::as_str),
            "amount_fen": self.amount.map(Money::fen),
            "occur_us": self.occur_us,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
            "payload": self.payload,
            "language": self.language.map(Language::as_str),
            "recipient_email": self.recipient_email.as_ref().map(EmailAddress::as_str),
            "round_id": self.round_id,
            "source": self.source,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// The language the applicant's email is written in.
    pub fn email_language(&self) -> Language {
        self.language.unwrap_or_default()
    }
}

/// Formats µs since the epoch as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The JSON body POSTed to webhook endpoints, in the Standard Webhooks shape
/// `{"type", "timestamp", "data"}`. Amounts are decimal strings, never JSON numbers; the
/// applicant's email address is personal data and is not sent.
pub fn webhook_body(event: &Event, published_us: i64) -> Vec<u8> {
    let body = json!({
        "type": event.event_type.as_str(),
        "timestamp": rfc3339(event.occur_us),
        "data": {
            "event_id": event.event_id.as_str(),
            "type": event.event_type.as_str(),
            "application_id": event.application_id,
            "enterprise_uscc": event.enterprise_uscc.as_ref().map(Uscc::as_str).unwrap_or_default(),
            "program": event.program.map(Program::as_str).unwrap_or_default(),
            "amount": event.amount.map(|amount| json!({
                "currency": subsidy_common::money::CURRENCY_CODE,
                "value": amount.to_string(),
            })),
            "occur_time": rfc3339(event.occur_us),
            "publish_time": rfc3339(published_us),
            "round_id": event.round_id,
            "source": event.source,
            "payload": event.payload,
        },
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
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
    /// Only events of these enterprises, and events of no enterprise (rounds): what an
    /// applicant may see. `None`: every event.
    pub tenants: Option<Vec<String>>,
}

/// Events for unit tests of other modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A claim approval of 12,345.67 CNY.
    pub(crate) fn sample() -> Event {
        Event {
            event_id: EventId::parse("evt-1").unwrap(),
            event_type: EventType::ClaimApproved,
            application_id: "app-1".into(),
            enterprise_uscc: Some(subsidy_common::uscc::complete("91370100MA0000001")),
            program: Some(Program::ComputeVoucher),
            amount: Some(Money::from_fen(1_234_567).unwrap()),
            occur_us: 1_700_000_000_000_000,
            traceparent: String::new(),
            tracestate: String::new(),
            payload: Map::new(),
            language: None,
            recipient_email: None,
            round_id: String::new(),
            source: "subsidy.application".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn type_names_round_trip_and_are_unique() {
        // Proves every event type has its own stored name that parses back to it.
        let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
    }

    #[test]
    fn the_content_hash_changes_with_every_producer_field() {
        // Proves a replay with any field changed is detected as different content.
        let base = sample();
        let hash = base.content_hash();
        assert_eq!(sample().content_hash(), hash);
        let mut changed = sample();
        changed.amount = Some(Money::from_fen(1_234_568).unwrap());
        assert_ne!(changed.content_hash(), hash);
        let mut changed = sample();
        changed.payload.insert("reason".into(), json!("late"));
        assert_ne!(changed.content_hash(), hash);
        let mut changed = sample();
        changed.language = Some(Language::Zh);
        assert_ne!(changed.content_hash(), hash);
        let mut changed = sample();
        changed.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        assert_ne!(changed.content_hash(), hash);
    }

    #[test]
    fn traceparents_are_checked_for_shape() {
        // Proves only well-formed version-00 trace contexts are accepted.
        assert!(is_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent(
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent(""));
    }

    #[test]
    fn the_webhook_body_carries_amounts_as_decimal_strings_and_no_email() {
        // Proves receivers never get a float amount or the applicant's address.
        let mut event = sample();
        event.recipient_email = Some(EmailAddress::parse("boss@example.org").unwrap());
        let body: Value = serde_json::from_slice(&webhook_body(&event, 1)).unwrap();
        assert_eq!(body["type"], "claim.approved");
        assert_eq!(body["data"]["amount"]["value"], "12345.67");
        assert_eq!(body["data"]["amount"]["currency"], "CNY");
        assert!(
            !String::from_utf8(webhook_body(&event, 1))
                .unwrap()
                .contains("boss@")
        );
    }
}
