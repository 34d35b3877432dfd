//! Deliveries: channels, states, the order they are made in, and the retry decision.

use rand::Rng;

use super::event::Event;
use super::subscription::Filters;

/// Attempts returned with a delivery, the most recent ones.
pub const ATTEMPTS_SHOWN_MAX: i64 = 50;
/// Longest error text kept for an attempt, in characters.
pub const ERROR_TEXT_CHARS_MAX: usize = 200;

/// The way a delivery reaches its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// An HTTP POST to a subscription's endpoint.
    Webhook,
    /// An email through the SMTP relay.
    Email,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "WEBHOOK",
            Channel::Email => "EMAIL",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "WEBHOOK" => Some(Channel::Webhook),
            "EMAIL" => Some(Channel::Email),
            _ => None,
        }
    }
}

/// The life-cycle state of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not attempted yet (or waiting for an earlier delivery of the same order key).
    Pending,
    /// An attempt is under way.
    InFlight,
    /// Succeeded.
    Delivered,
    /// Failed; another attempt is scheduled.
    FailedRetrying,
    /// Every attempt failed, or the subscription was disabled.
    DeadLettered,
    /// The subscription was deleted first.
    Cancelled,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::FailedRetrying,
        DeliveryState::DeadLettered,
        DeliveryState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::InFlight => "IN_FLIGHT",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::FailedRetrying => "FAILED_RETRYING",
            DeliveryState::DeadLettered => "DEAD_LETTERED",
            DeliveryState::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether no further attempt will be made unless the delivery is requeued.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::DeadLettered | DeliveryState::Cancelled
        )
    }
}

/// The key that orders deliveries: those with the same key are made one after the other in
/// publication order. Webhooks are ordered per subscription and application, emails per
/// application.
pub fn ordering_key(channel: Channel, subscription_id: &str, application_id: &str) -> String {
    match channel {
        Channel::Webhook => format!("webhook/{subscription_id}/{application_id}"),
        Channel::Email => format!("email/{application_id}"),
    }
}

/// The deliveries an event gets: one webhook per subscription (in the order given) whose
/// filters match it, then one email when it names a recipient. Each is `(channel,
/// subscription_id)`, the subscription empty for email.
pub fn fan_out<'a>(
    event: &Event,
    subscriptions: impl IntoIterator<Item = (&'a str, &'a Filters)>,
) -> Vec<(Channel, &'a str)> {
    let mut targets: Vec<(Channel, &str)> = Vec::new();
    if !event.event_type.is_internal() {
        targets.extend(
            subscriptions
                .into_iter()
                .filter(|(_, filters)| filters.matches(event))
                .map(|(id, _)| (Channel::Webhook, id)),
        );
    }
    if event.recipient_email.is_some() {
        targets.push((Channel::Email, ""));
    }
    targets
}

/// The order in which due deliveries are claimed, at most `limit`: webhooks and emails
/// alternate, each in the order found, so that neither channel starves the other.
pub fn interleave<T>(webhooks: Vec<T>, emails: Vec<T>, limit: usize) -> Vec<T> {
    let mut order = Vec::with_capacity(limit.min(webhooks.len() + emails.len()));
    let (mut webhooks, mut emails) = (webhooks.into_iter(), emails.into_iter());
    while order.len() < limit {
        match (webhooks.next(), emails.next()) {
            (None, None) => break,
            (webhook, email) => order.extend(webhook.into_iter().chain(email)),
        }
    }
    order.truncate(limit);
    order
}

/// How a finished attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer, or the relay accepted the email.
    Succeeded {
        /// The HTTP status or SMTP reply code.
        status_code: i64,
    },
    /// Anything else.
    Failed {
        /// The HTTP status or SMTP reply code; 0 when there was no answer.
        status_code: i64,
        /// What went wrong, without response bodies or personal data.
        error: String,
        /// True when retrying cannot help (an SMTP 5xx rejection); the delivery is
        /// dead-lettered at once.
        permanent: bool,
    },
}

impl Outcome {
    /// A failure that may go away.
    pub fn transient(status_code: i64, error: impl Into<String>) -> Self {
        Outcome::Failed {
            status_code,
            error: truncate(error.into()),
            permanent: false,
        }
    }

    /// Whether the attempt succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }
}

fn truncate(text: String) -> String {
    if text.chars().count() <= ERROR_TEXT_CHARS_MAX {
        text
    } else {
        text.chars().take(ERROR_TEXT_CHARS_MAX).collect()
    }
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// It is DELIVERED.
    Delivered,
    /// It is FAILED_RETRYING with the next attempt after this many milliseconds.
    RetryAfterMs(u64),
    /// It is DEAD_LETTERED.
    DeadLetter,
}

/// The state a delivery moves to after an attempt was recorded, and the delay before its next
/// attempt in milliseconds (0 unless it is FAILED_RETRYING). A retry of a webhook whose
/// subscription is no longer ACTIVE (`receiver_active` false) dead-letters instead: nothing is
/// delivered to a disabled subscription.
pub fn state_after(next: Next, receiver_active: bool) -> (DeliveryState, u64) {
    match next {
        Next::Delivered => (DeliveryState::Delivered, 0),
        Next::RetryAfterMs(ms) if receiver_active => (DeliveryState::FailedRetrying, ms),
        Next::RetryAfterMs(_) | Next::DeadLetter => (DeliveryState::DeadLettered, 0),
    }
}

/// The retry schedule: the delay before each attempt and the jitter applied to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    schedule_ms: Vec<u64>,
    jitter_percent: u32,
}

impl RetryPolicy {
    /// A policy; `schedule_ms` must not be empty (configuration validation guarantees it).
    pub fn new(schedule_ms: Vec<u64>, jitter_percent: u32) -> Self {
        assert!(
            !schedule_ms.is_empty(),
            "a retry schedule has at least one attempt"
        );
        RetryPolicy {
            schedule_ms,
            jitter_percent,
        }
    }

    /// The number of attempts before a delivery is dead-lettered.
    pub fn attempts_max(&self) -> usize {
        self.schedule_ms.len()
    }

    /// The delay before the first attempt of a new or requeued delivery, in milliseconds.
    pub fn first_delay_ms(&self, rng: &mut impl Rng) -> u64 {
        self.jittered(self.schedule_ms[0], rng)
    }

    /// What follows an attempt that was attempt number `run_attempt` (from 1) since the
    /// delivery was created or last requeued.
    pub fn next(&self, outcome: &Outcome, run_attempt: usize, rng: &mut impl Rng) -> Next {
        match outcome {
            Outcome::Succeeded { .. } => Next::Delivered,
            Outcome::Failed {
                permanent: true, ..
            } => Next::DeadLetter,
            Outcome::Failed { .. } => match self.schedule_ms.get(run_attempt) {
                Some(delay) => Next::RetryAfterMs(self.jittered(*delay, rng)),
                None => Next::DeadLetter,
            },
        }
    }

    /// `delay_ms` spread uniformly by ±`jitter_percent`, so that deliveries that failed
    /// together do not retry together.
    fn jittered(&self, delay_ms: u64, rng: &mut impl Rng) -> u64 {
        let spread = delay_ms.saturating_mul(u64::from(self.jitter_percent)) / 100;
        if spread == 0 {
            return delay_ms;
        }
        rng.random_range(delay_ms - spread..=delay_ms.saturating_add(spread))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Outcome {
        Outcome::transient(503, "HTTP 503")
    }

    #[test]
    fn the_default_schedule_makes_eight_attempts_then_dead_letters() {
        // Proves the schedule's length is the number of attempts and its delays are used in
        // order after each failure.
        let schedule: Vec<u64> = crate::settings::RETRY_SCHEDULE_MS_DEFAULT.to_vec();
        let policy = RetryPolicy::new(schedule.clone(), 0);
        let mut rng = rand::rng();
        assert_eq!(policy.first_delay_ms(&mut rng), 0);
        for (attempt, delay) in schedule.iter().enumerate().skip(1) {
            assert_eq!(
                policy.next(&failed(), attempt, &mut rng),
                Next::RetryAfterMs(*delay)
            );
        }
        assert_eq!(
            policy.next(&failed(), schedule.len(), &mut rng),
            Next::DeadLetter
        );
        assert_eq!(
            policy.next(&Outcome::Succeeded { status_code: 200 }, 3, &mut rng),
            Next::Delivered
        );
    }

    #[test]
    fn a_permanent_failure_dead_letters_at_once() {
        // Proves a 5xx SMTP rejection is not retried for hours.
        let policy = RetryPolicy::new(vec![0, 1000, 1000], 0);
        let permanent = Outcome::Failed {
            status_code: 550,
            error: "mailbox unavailable".into(),
            permanent: true,
        };
        assert_eq!(
            policy.next(&permanent, 1, &mut rand::rng()),
            Next::DeadLetter
        );
    }

    proptest::proptest! {
        #[test]
        fn jitter_stays_within_its_percentage(delay in 0u64..=36_000_000, percent in 0u32..=50) {
            // Proves every jittered delay is within ±percent of the scheduled one.
            let policy = RetryPolicy::new(vec![0, delay], percent);
            let spread = delay * u64::from(percent) / 100;
            match policy.next(&failed(), 1, &mut rand::rng()) {
                Next::RetryAfterMs(actual) => {
                    proptest::prop_assert!(actual >= delay - spread && actual <= delay + spread);
                }
                other => proptest::prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn an_event_goes_to_every_matching_webhook_and_to_its_recipient() {
        // Proves the fan-out: matching subscriptions in order, then the email; internal
        // events never go to webhooks.
        let mut event = super::super::event::tests_support::sample();
        let every = Filters::default();
        let other = Filters {
            event_types: vec![super::super::event::EventType::ClaimRejected],
            ..Filters::default()
        };
        let subscriptions = [("a", &every), ("b", &other), ("c", &every)];
        assert_eq!(
            fan_out(&event, subscriptions),
            vec![(Channel::Webhook, "a"), (Channel::Webhook, "c")]
        );
        event.recipient_email =
            Some(super::super::event::EmailAddress::parse("x@example.org").unwrap());
        event.event_type = super::super::event::EventType::SubscriptionDisabled;
        assert_eq!(fan_out(&event, subscriptions), vec![(Channel::Email, "")]);
    }

    #[test]
    fn webhooks_and_emails_alternate_up_to_the_limit() {
        // Proves neither channel starves the other when both have due deliveries.
        assert_eq!(
            interleave(vec![1, 3, 5, 7], vec![2, 4], 5),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(interleave(vec![1], vec![2, 4, 6], 10), vec![1, 2, 4, 6]);
        assert_eq!(interleave::<i32>(vec![], vec![], 3), Vec::<i32>::new());
    }

    #[test]
    fn a_retry_for_a_disabled_subscription_dead_letters() {
        // Proves nothing is retried towards a subscription that is no longer ACTIVE.
        assert_eq!(
            state_after(Next::RetryAfterMs(500), true),
            (DeliveryState::FailedRetrying, 500)
        );
        assert_eq!(
            state_after(Next::RetryAfterMs(500), false),
            (DeliveryState::DeadLettered, 0)
        );
        assert_eq!(
            state_after(Next::Delivered, false),
            (DeliveryState::Delivered, 0)
        );
    }

    #[test]
    fn error_texts_are_bounded() {
        // Proves an attempt never stores an unbounded error text.
        match Outcome::transient(0, "x".repeat(10_000)) {
            Outcome::Failed { error, .. } => {
                assert_eq!(error.chars().count(), ERROR_TEXT_CHARS_MAX)
            }
            other => panic!("{other:?}"),
        }
    }
}
