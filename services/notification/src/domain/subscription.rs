//! Webhook subscriptions: endpoints, filters, signing secrets and the Standard Webhooks
//! signature.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::CryptoRng;
use subsidy_common::Uscc;

use super::event::{EmailAddress, Event, EventId, EventType, Program, rfc3339};

/// Longest endpoint URL, in bytes.
pub const ENDPOINT_URL_LEN_MAX: usize = 2048;
/// Longest description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 500;
/// Most subscriptions the service holds unless `notification.subscriptions_max` says.
pub const SUBSCRIPTIONS_MAX: i64 = 1000;
/// The highest `notification.subscriptions_max` accepted: an event fans out to at most this
/// many subscriptions, so that lowering the setting never stops deliveries to subscriptions
/// that exist.
pub const SUBSCRIPTIONS_MAX_MAX: i64 = 10_000;
/// Largest per-subscription in-flight limit.
pub const MAX_IN_FLIGHT_MAX: i64 = 64;
/// Random bytes in a signing secret.
pub const SECRET_BYTES: usize = 32;
/// The Standard Webhooks prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Why a plain `http://` endpoint is refused when the service does not allow them; it names
/// the setting that does (`notification.allow_http_endpoints`; the settings' tests check the
/// names against the declared setting).
pub const PLAIN_HTTP_REFUSED: &str = "must use https (plain http is allowed only by the setting \
     notification.allow_http_endpoints, environment variable SUBSIDY_NOTIFICATION_ALLOW_HTTP)";
/// Default grace period of a rotated-out secret, in seconds: 24 hours.
pub const GRACE_SECONDS_DEFAULT: i64 = 24 * 3600;
/// Longest grace period of a rotated-out secret, in seconds: 7 days.
pub const GRACE_SECONDS_MAX: i64 = 7 * 24 * 3600;

/// An endpoint deliveries are POSTed to: an absolute `https` URL (or `http` where allowed),
/// with a host, without user information or fragment, at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// Validates an endpoint URL.
    pub fn parse(text: &str, allow_http: bool) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("is required");
        }
        if text.len() > ENDPOINT_URL_LEN_MAX {
            return Err("must be at most 2048 characters");
        }
        if text.contains('#') || text.chars().any(char::is_whitespace) {
            return Err("must not contain a fragment or spaces");
        }
        let uri: http::Uri = text.parse().map_err(|_| "is not a valid URL")?;
        let authority = uri
            .authority()
            .ok_or("must be an absolute URL with a host")?;
        if authority.as_str().contains('@') {
            return Err("must not contain user information");
        }
        if authority.host().is_empty() {
            return Err("must be an absolute URL with a host");
        }
        match uri.scheme_str() {
            Some("https") => Ok(EndpointUrl(text.to_owned())),
            Some("http") if allow_http => Ok(EndpointUrl(text.to_owned())),
            Some("http") => Err(PLAIN_HTTP_REFUSED),
            _ => Err("must be an https URL"),
        }
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which events a subscription receives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only these types; empty means every type.
    pub event_types: Vec<EventType>,
    /// Only this program.
    pub program: Option<Program>,
    /// Only this enterprise.
    pub enterprise: Option<Uscc>,
}

impl Filters {
    /// Whether a webhook subscription with these filters receives `event`. Internal events
    /// never go to webhooks.
    pub fn matches(&self, event: &Event) -> bool {
        !event.event_type.is_internal()
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self.program.is_none_or(|p| event.program == Some(p))
            && self
                .enterprise
                .as_ref()
                .is_none_or(|u| event.enterprise_uscc.as_ref() == Some(u))
    }

    /// The stored form of the type filter: comma-separated names, empty for every type.
    pub fn event_types_text(&self) -> String {
        self.event_types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses the stored form of the type filter.
    pub fn parse_event_types(text: &str) -> Option<Vec<EventType>> {
        if text.is_empty() {
            return Some(Vec::new());
        }
        text.split(',').map(EventType::parse).collect()
    }
}

/// A signing secret in Standard Webhooks form: `whsec_` and the base64 of 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Generates a secret from `rng`, which must be a CSPRNG (the thread RNG, seeded from the
    /// operating system, in production).
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        SigningSecret(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// Reads a secret in its plain form (as opened by storage); `None` when it is not in
    /// `whsec_<base64>` form.
    pub fn from_stored(text: &str) -> Option<Self> {
        let key = text.strip_prefix(SECRET_PREFIX)?;
        let bytes = BASE64.decode(key).ok()?;
        (!bytes.is_empty()).then(|| SigningSecret(text.to_owned()))
    }

    /// The secret as shown once to the subscriber; storage seals it before it is stored.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    fn key(&self) -> Vec<u8> {
        BASE64
            .decode(&self.0[SECRET_PREFIX.len()..])
            .expect("a SigningSecret holds valid base64")
    }

    /// The Standard Webhooks signature `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
    /// computed by the `standardwebhooks` crate (the reference implementation the other
    /// languages' verifiers interoperate with). Bodies are JSON, so always UTF-8.
    pub fn sign(&self, message_id: &str, timestamp_seconds: i64, body: &[u8]) -> String {
        standardwebhooks::Webhook::from_bytes(self.key())
            .expect("any key is accepted")
            .sign(message_id, timestamp_seconds, body)
            .expect("webhook bodies are UTF-8 JSON")
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated, the current
/// secret first.
pub fn signature_header(
    secrets: &[&SigningSecret],
    message_id: &str,
    timestamp_seconds: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(message_id, timestamp_seconds, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The life-cycle state of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Deliveries are made.
    Active,
    /// Nothing is delivered.
    Disabled,
}

impl SubscriptionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "ACTIVE",
            SubscriptionState::Disabled => "DISABLED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(SubscriptionState::Active),
            "DISABLED" => Some(SubscriptionState::Disabled),
            _ => None,
        }
    }
}

/// Why a subscription is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisabledReason {
    /// By an operator.
    Manual,
    /// Its endpoint failed every attempt for the configured period.
    EndpointFailing,
}

impl DisabledReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "MANUAL",
            DisabledReason::EndpointFailing => "ENDPOINT_FAILING",
        }
    }

    /// Parses a stored name; the empty string is no reason.
    pub fn parse(text: &str) -> Option<Option<Self>> {
        match text {
            "" => Some(None),
            "MANUAL" => Some(Some(DisabledReason::Manual)),
            "ENDPOINT_FAILING" => Some(Some(DisabledReason::EndpointFailing)),
            _ => None,
        }
    }
}

/// Microseconds in a millisecond.
const US_PER_MS: i64 = 1_000;

/// Whether a failed attempt makes its subscription a candidate for disabling: it is ACTIVE and
/// its endpoint has failed every attempt since `failing_since_us`, at least
/// `disable_after_ms` before `now_us`.
pub fn is_disable_candidate(
    succeeded: bool,
    state: SubscriptionState,
    failing_since_us: Option<i64>,
    now_us: i64,
    disable_after_ms: u64,
) -> bool {
    let disable_after_us = i64::try_from(disable_after_ms)
        .unwrap_or(i64::MAX / US_PER_MS)
        .saturating_mul(US_PER_MS);
    !succeeded
        && state == SubscriptionState::Active
        && failing_since_us.is_some_and(|since| since <= now_us.saturating_sub(disable_after_us))
}

/// The facts reported when a failing subscription is disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisabledNotice {
    /// The subscription.
    pub subscription_id: String,
    /// Its endpoint.
    pub endpoint_url: String,
    /// Who is told.
    pub contact: EmailAddress,
    /// Start of the failure run, µs.
    pub failing_since_us: i64,
    /// When it was disabled, µs.
    pub disabled_us: i64,
}

/// The internal event that emails a subscription's contact that it was disabled. Its id is
/// derived from the subscription and the time, so each disabling is told once.
pub fn disabled_notice(notice: &DisabledNotice) -> Event {
    let mut payload = serde_json::Map::new();
    payload.insert(
        "subscription_id".into(),
        notice.subscription_id.clone().into(),
    );
    payload.insert(
        "endpoint_url".into(),
        endpoint_origin(&notice.endpoint_url).into(),
    );
    payload.insert(
        "failing_since".into(),
        rfc3339(notice.failing_since_us).into(),
    );
    Event {
        event_id: EventId::parse(&format!(
            "subscription-disabled/{}/{}",
            notice.subscription_id, notice.disabled_us
        ))
        .expect("a UUID and a number make a valid event id"),
        event_type: EventType::SubscriptionDisabled,
        application_id: String::new(),
        enterprise_uscc: None,
        program: None,
        amount: None,
        occur_us: notice.disabled_us,
        traceparent: String::new(),
        tracestate: String::new(),
        payload,
        language: None,
        recipient_email: Some(notice.contact.clone()),
        round_id: String::new(),
        source: NOTICE_SOURCE.into(),
    }
}

/// The scheme, host and port of an endpoint, without path or query: the notice is also in the
/// feed, and some receivers put access tokens in their URL.
pub fn endpoint_origin(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// The `source` of events this service publishes itself.
pub const NOTICE_SOURCE: &str = "subsidy.notification";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_absolute_https_urls_without_credentials() {
        // Proves the endpoint rules of the contract, including the http switch for tests.
        assert!(EndpointUrl::parse("https://agency.example.org/hooks?x=1", false).is_ok());
        assert!(EndpointUrl::parse("http://127.0.0.1:8080/hook", true).is_ok());
        for bad in [
            "",
            "http://127.0.0.1:8080/hook",
            "ftp://example.org/x",
            "/relative/path",
            "https://user:pw@example.org/",
            "https://example.org/#frag",
            "https://exa mple.org/",
        ] {
            assert!(EndpointUrl::parse(bad, false).is_err(), "{bad}");
        }
        let long = format!("https://example.org/{}", "a".repeat(ENDPOINT_URL_LEN_MAX));
        assert!(EndpointUrl::parse(&long, false).is_err());
    }

    #[test]
    fn the_signature_matches_the_standard_webhooks_reference_vector() {
        // Proves our HMAC over "id.timestamp.body" equals the published Standard Webhooks
        // test vector (secret, id, timestamp and body from the specification's test suite).
        let secret = SigningSecret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_disabled_notice_names_the_endpoint_without_its_path_or_query() {
        // Proves a token in an endpoint's URL does not leak into the feed through the notice.
        let notice = disabled_notice(&DisabledNotice {
            subscription_id: "sub-1".into(),
            endpoint_url: "https://agency.example.org:8443/hooks?token=s3cret".into(),
            contact: EmailAddress::parse("ops@agency.example.org").unwrap(),
            failing_since_us: 1,
            disabled_us: 2,
        });
        assert_eq!(
            notice.payload["endpoint_url"],
            "https://agency.example.org:8443"
        );
        assert_eq!(notice.event_id.as_str(), "subscription-disabled/sub-1/2");
        assert!(
            !serde_json::to_string(&notice.payload)
                .unwrap()
                .contains("s3cret")
        );
        assert_eq!(
            notice.recipient_email.as_ref().map(EmailAddress::as_str),
            Some("ops@agency.example.org")
        );
    }

    #[test]
    fn only_an_active_subscription_failing_for_the_whole_period_is_a_candidate() {
        // Proves the disable rule: a failure, an ACTIVE subscription, a run at least as long
        // as the period.
        let active = SubscriptionState::Active;
        assert!(is_disable_candidate(false, active, Some(1_000), 3_000, 2));
        assert!(!is_disable_candidate(false, active, Some(1_001), 3_000, 2));
        assert!(!is_disable_candidate(true, active, Some(1_000), 3_000, 2));
        assert!(!is_disable_candidate(false, active, None, 3_000, 2));
        assert!(!is_disable_candidate(
            false,
            SubscriptionState::Disabled,
            Some(1_000),
            3_000,
            2
        ));
    }

    #[test]
    fn generated_secrets_are_distinct_and_decodable() {
        // Proves secrets are 32 random bytes in whsec_ form and never repeat.
        let a = SigningSecret::generate(&mut rand::rng());
        let b = SigningSecret::generate(&mut rand::rng());
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.key().len(), SECRET_BYTES);
        assert!(SigningSecret::from_stored(a.expose()).is_some());
        assert!(SigningSecret::from_stored("whsec_***").is_none());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn filters_select_by_type_program_and_enterprise_and_never_internal_events() {
        // Proves each filter narrows independently and internal events never match.
        let event = super::super::event::tests_support::sample();
        assert!(Filters::default().matches(&event));
        let only_rejected = Filters {
            event_types: vec![EventType::ClaimRejected],
            ..Filters::default()
        };
        assert!(!only_rejected.matches(&event));
        let other_program = Filters {
            program: Some(Program::DataInfra),
            ..Filters::default()
        };
        assert!(!other_program.matches(&event));
        let other_enterprise = Filters {
            enterprise: Some(subsidy_common::uscc::complete("91370100MA0000002")),
            ..Filters::default()
        };
        assert!(!other_enterprise.matches(&event));
        let same_enterprise = Filters {
            enterprise: event.enterprise_uscc.clone(),
            program: Some(Program::ComputeVoucher),
            event_types: vec![EventType::ClaimApproved],
        };
        assert!(same_enterprise.matches(&event));
        let mut internal = event.clone();
        internal.event_type = EventType::SubscriptionDisabled;
        assert!(!Filters::default().matches(&internal));
        assert_eq!(
            Filters::parse_event_types(&same_enterprise.event_types_text()),
            Some(vec![EventType::ClaimApproved])
        );
    }
}
