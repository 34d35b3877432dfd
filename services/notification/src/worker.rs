//! The delivery worker: claims due deliveries from the durable queue, makes one attempt each
//! (at most `worker_concurrency_max` at once, at most `email_in_flight_max` emails), records
//! the outcome and schedules the next attempt, dead-letters, and disables endpoints that keep
//! failing.
//!
//! Nothing is held only in memory: a delivery is claimed with a lease in the database, so
//! after a crash or a restart the attempts that were under way are made again (at least
//! once), and pending deliveries are simply found again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::settings::Settings;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use subsidy_common::BoxError;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::address::AllowList;
use crate::domain::delivery::{Channel, Next, Outcome, RetryPolicy};
use crate::domain::email::render;
use crate::domain::event::{Event, webhook_body};
use crate::email::Mailer;
use crate::ops::Ops;
use crate::ops::attempts::{AttemptWork, ClaimLimits};
use crate::storage::Claimed;
use crate::webhook::{WebhookRequest, WebhookSender};

/// Most deliveries claimed in one transaction.
pub const CLAIM_BATCH_MAX: i64 = 100;
/// Time beyond an attempt's own timeout before its claim may be taken over, in milliseconds.
/// It covers recording the outcome; an attempt whose process died is made again after it.
pub const LEASE_MARGIN_MS: u64 = 5_000;
/// Most expired leases recovered per round.
pub const RECOVERY_BATCH_MAX: i64 = 100;
/// Interval of the repair of deliveries orphaned by concurrent disabling or deletion, in
/// milliseconds.
pub const RECONCILE_INTERVAL_MS: u64 = 30_000;
/// Tries to record an attempt's outcome before the lease is left to expire.
pub const RECORD_TRIES_MAX: u32 = 5;
/// Pause between tries to record an outcome, in milliseconds.
pub const RECORD_RETRY_DELAY_MS: u64 = 500;

/// The worker's settings, derived from the configuration.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The retry schedule.
    pub policy: RetryPolicy,
    /// Attempts at once.
    pub concurrency_max: usize,
    /// Emails at once.
    pub email_in_flight_max: usize,
    /// In-flight limit of subscriptions that set none.
    pub max_in_flight_default: i64,
    /// How long an endpoint may fail before it is disabled, ms.
    pub disable_after_ms: u64,
    /// Lease of a webhook attempt, ms.
    pub webhook_lease_ms: u64,
    /// Lease of an email attempt, ms.
    pub email_lease_ms: u64,
    /// Interval of the look for due deliveries.
    pub poll_interval: Duration,
}

impl WorkerSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Settings) -> Self {
        WorkerSettings {
            policy: RetryPolicy::new(
                config.retry_schedule_ms.clone(),
                config.retry_jitter_percent,
            ),
            concurrency_max: config.worker_concurrency_max as usize,
            email_in_flight_max: config.email_in_flight_max as usize,
            max_in_flight_default: i64::from(config.max_in_flight_default),
            disable_after_ms: config.disable_after_ms,
            webhook_lease_ms: config.webhook_timeout_ms + LEASE_MARGIN_MS,
            email_lease_ms: config.smtp_timeout_ms + LEASE_MARGIN_MS,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
        }
    }
}

/// The delivery worker of one process.
#[derive(Clone, Debug)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ops: Ops,
    webhooks: WebhookSender,
    mailer: Mailer,
    settings: WorkerSettings,
    attempts: Arc<Semaphore>,
    emails: Arc<Semaphore>,
}

impl Worker {
    /// A worker over the use cases `ops`, woken early by their hub (new events,
    /// redeliveries).
    pub fn new(ops: Ops, config: &Settings) -> Result<Self, BoxError> {
        let settings = WorkerSettings::from_config(config);
        let webhooks = WebhookSender::new(
            Duration::from_millis(config.webhook_timeout_ms),
            config.allow_http_endpoints,
            AllowList::parse(&config.webhook_allowed_hosts)?,
        )?;
        let mailer = Mailer::new(config)?;
        Ok(Worker {
            inner: Arc::new(Inner {
                attempts: Arc::new(Semaphore::new(settings.concurrency_max)),
                emails: Arc::new(Semaphore::new(settings.email_in_flight_max)),
                ops,
                webhooks,
                mailer,
                settings,
            }),
        })
    }

    /// Runs until `stop` turns true, then waits at most `grace` for the attempts under way.
    /// Attempts still running after that are dropped; their leases bring them back later.
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let inner = &self.inner;
        let wake = inner.ops.hub().worker_wake();
        let mut attempts = JoinSet::new();
        let mut last_recovery: Option<Instant> = None;
        let mut last_reconcile: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            while attempts.try_join_next().is_some() {}
            inner
                .housekeeping(&mut last_recovery, &mut last_reconcile)
                .await;
            inner.claim_and_spawn(&mut attempts).await;
            tokio::select! {
                _ = stop.changed() => {}
                _ = wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = tokio::time::sleep(inner.settings.poll_interval) => {}
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = attempts.len(),
                "attempts still running at shutdown were dropped; they will be made again"
            );
        }
    }
}

impl Inner {
    /// Recovers expired leases at most once per poll interval and repairs orphans at most
    /// once per [`RECONCILE_INTERVAL_MS`], however often the worker is woken.
    async fn housekeeping(
        &self,
        last_recovery: &mut Option<Instant>,
        last_reconcile: &mut Option<Instant>,
    ) {
        if last_recovery.is_none_or(|at| at.elapsed() >= self.settings.poll_interval) {
            *last_recovery = Some(Instant::now());
            match self.ops.recover_expired_leases(RECOVERY_BATCH_MAX).await {
                Ok(0) => {}
                Ok(count) => tracing::warn!(count, "attempts whose lease expired are made again"),
                Err(error) => tracing::warn!(%error, "lease recovery failed"),
            }
        }
        let due = last_reconcile
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(RECONCILE_INTERVAL_MS));
        if due {
            *last_reconcile = Some(Instant::now());
            match self.ops.reconcile().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "orphaned deliveries settled"),
                Err(error) => tracing::warn!(%error, "reconciliation failed"),
            }
        }
    }

    async fn claim_and_spawn(self: &Arc<Self>, attempts: &mut JoinSet<()>) {
        let free = self.attempts.available_permits() as i64;
        if free == 0 {
            return;
        }
        let limits = ClaimLimits {
            deliveries_max: free.min(CLAIM_BATCH_MAX),
            emails_max: self.emails.available_permits() as i64,
            max_in_flight_default: self.settings.max_in_flight_default,
            webhook_lease_ms: self.settings.webhook_lease_ms,
            email_lease_ms: self.settings.email_lease_ms,
        };
        let claims = self.ops.claim_due(&limits).await;
        let claims = match claims {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(%error, "claiming due deliveries failed");
                return;
            }
        };
        for claim in claims {
            // Only this loop takes permits and it claimed no more than were free, so these
            // never fail; a claim without a task would sit until its lease expired.
            let permit = self
                .attempts
                .clone()
                .try_acquire_owned()
                .expect("an attempt slot for every claim");
            let email_permit = (claim.channel == Channel::Email).then(|| {
                self.emails
                    .clone()
                    .try_acquire_owned()
                    .expect("an email slot for every claimed email")
            });
            let inner = Arc::clone(self);
            attempts.spawn(async move {
                inner.attempt(claim).await;
                drop((permit, email_permit));
                inner.ops.hub().wake_worker();
            });
        }
    }

    async fn attempt(&self, claim: Claimed) {
        let work = match self.ops.attempt_work(&claim).await {
            Ok(Some(work)) => work,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, delivery_id = %claim.delivery_id, "loading a delivery failed");
                return;
            }
        };
        let span = delivery_span(&work);
        async {
            let started = Instant::now();
            let outcome = self.send(&work).await;
            if outcome.succeeded() {
                subsidy_common::crash::point("notification.webhook.delivered");
            }
            let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            let run_attempt = usize::try_from(work.delivery.run_attempts + 1).unwrap_or(usize::MAX);
            let next = self
                .settings
                .policy
                .next(&outcome, run_attempt, &mut rand::rng());
            tracing::info!(
                outcome = if outcome.succeeded() {
                    "succeeded"
                } else {
                    "failed"
                },
                ?next,
                latency_ms,
                "delivery attempt"
            );
            self.record(&claim, latency_ms, &outcome, next).await;
        }
        .instrument(span)
        .await;
    }

    async fn send(&self, work: &AttemptWork) -> Outcome {
        let stored = &work.event;
        match work.delivery.channel {
            Channel::Webhook => match &work.webhook {
                Some(target) => match &target.secrets {
                    Ok(secrets) => {
                        self.webhooks
                            .send(WebhookRequest {
                                endpoint: &target.endpoint_url,
                                message_id: stored.event.event_id.as_str(),
                                body: webhook_body(&stored.event, stored.published_us),
                                secrets,
                                extra_headers: outgoing_trace(&stored.event),
                            })
                            .await
                    }
                    Err(error) => {
                        // Nothing is sent unsigned: the attempt fails and is retried, so that
                        // mounting the right key and restarting delivers it.
                        tracing::error!(
                            %error,
                            subscription_id = %work.delivery.subscription_id,
                            "a webhook was not sent: its signing secret does not open"
                        );
                        Outcome::transient(0, error.to_string())
                    }
                },
                None => Outcome::Failed {
                    status_code: 0,
                    error: "the subscription was deleted".into(),
                    permanent: true,
                },
            },
            Channel::Email => {
                let content = render(&stored.event, stored.event.email_language());
                self.mailer
                    .send(
                        &work.delivery.recipient_email,
                        &content,
                        &work.delivery.delivery_id,
                    )
                    .await
            }
        }
    }

    async fn record(&self, claim: &Claimed, latency_ms: i64, outcome: &Outcome, next: Next) {
        for attempt in 1..=RECORD_TRIES_MAX {
            match self
                .ops
                .record_attempt(
                    claim,
                    latency_ms,
                    outcome,
                    next,
                    self.settings.disable_after_ms,
                )
                .await
            {
                Ok(recorded) => {
                    tracing::debug!(state = recorded.state.as_str(), "attempt recorded");
                    if let Some(subscription_id) = recorded.disable_candidate {
                        self.disable(&subscription_id).await;
                    }
                    return;
                }
                Err(error) if attempt < RECORD_TRIES_MAX => {
                    tracing::warn!(%error, attempt, "recording an attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(RECORD_RETRY_DELAY_MS)).await;
                }
                Err(error) => {
                    tracing::error!(%error, "recording an attempt failed; its lease will bring it back");
                }
            }
        }
    }

    async fn disable(&self, subscription_id: &str) {
        match self
            .ops
            .disable_if_failing(subscription_id, self.settings.disable_after_ms)
            .await
        {
            Ok(Some(subscription)) => tracing::warn!(
                subscription_id,
                endpoint = %subscription.endpoint_url,
                contact_told = !subscription.contact_email.is_empty(),
                "disabled a subscription whose endpoint kept failing"
            ),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, subscription_id, "disabling a failing subscription failed")
            }
        }
    }
}

/// The span of one attempt, continuing the trace of the call that caused the event: the
/// notification's work (`subsidy.service`), whoever's trace it continues.
fn delivery_span(work: &AttemptWork) -> tracing::Span {
    let event = &work.event.event;
    let span = tracing::info_span!(
        "notification.deliver",
        otel.name = "notification.deliver",
        otel.kind = "client",
        subsidy.service = subsidy_common::config::ServiceKind::Notification.name(),
        delivery_id = %work.delivery.delivery_id,
        event_id = %event.event_id,
        event_type = event.event_type.as_str(),
        channel = work.delivery.channel.as_str(),
    );
    if !event.traceparent.is_empty() {
        let parent = TraceContextPropagator::new().extract(&event_trace(event));
        let _ = span.set_parent(parent);
    }
    span
}

fn event_trace(event: &Event) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    if !event.traceparent.is_empty() {
        carrier.insert("traceparent".to_owned(), event.traceparent.clone());
        if !event.tracestate.is_empty() {
            carrier.insert("tracestate".to_owned(), event.tracestate.clone());
        }
    }
    carrier
}

/// The trace headers of a webhook request: the attempt's own span as a child of the event's
/// trace when tracing is set up, otherwise the event's trace context as published.
fn outgoing_trace(event: &Event) -> Vec<(String, String)> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    if !carrier.contains_key("traceparent") {
        carrier = event_trace(event);
    }
    let mut headers: Vec<(String, String)> = carrier.into_iter().collect();
    headers.sort();
    headers
}
