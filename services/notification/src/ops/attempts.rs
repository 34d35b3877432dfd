//! The delivery worker's use cases: claiming due deliveries, loading what an attempt needs,
//! disabling endpoints that keep failing, and the repairs that make the queue survive crashes
//! (expired leases) and races (orphaned deliveries). Recording an attempt's outcome is
//! `recording`'s.

use super::Ops;
use crate::domain::delivery::{Channel, DeliveryState, interleave};
use crate::domain::event::EmailAddress;
use crate::domain::subscription::{DisabledNotice, disabled_notice};
use crate::error::NotificationError;
use crate::storage::{
    Candidate, Claimed, DeliveryRow, StoredEvent, SubscriptionRow, Tx, WebhookTarget,
};

/// How much the worker may claim at once, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Most deliveries claimed.
    pub deliveries_max: i64,
    /// Most emails among them.
    pub emails_max: i64,
    /// In-flight limit of subscriptions that set none.
    pub max_in_flight_default: i64,
    /// Lease of a webhook attempt, ms.
    pub webhook_lease_ms: u64,
    /// Lease of an email attempt, ms.
    pub email_lease_ms: u64,
}

impl ClaimLimits {
    fn lease_ms(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Webhook => self.webhook_lease_ms,
            Channel::Email => self.email_lease_ms,
        }
    }
}

/// Everything an attempt needs.
#[derive(Clone, Debug)]
pub struct AttemptWork {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// The event.
    pub event: StoredEvent,
    /// For webhooks: the endpoint and the secrets to sign with, current first; `None` when the
    /// subscription is gone.
    pub webhook: Option<WebhookTarget>,
}

/// The result of recording an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The state the delivery is now in.
    pub state: DeliveryState,
    /// A subscription whose failure run is now long enough to disable it.
    pub disable_candidate: Option<String>,
}

impl Ops {
    /// Claims due deliveries for one attempt each, within `limits`; webhooks and emails
    /// alternate so that neither starves the other. A delivery is due when its time has come,
    /// no earlier delivery with the same order key is unfinished, and (for webhooks) its
    /// subscription is ACTIVE and below its in-flight limit, which the conditional counter
    /// increment enforces exactly. Each claim is leased; an attempt not recorded by then is
    /// made again. When nothing is due, no write transaction is begun: a cheap read finds
    /// that out first (the leases, taken in the transaction, still decide who gets what).
    pub async fn claim_due(&self, limits: &ClaimLimits) -> Result<Vec<Claimed>, NotificationError> {
        if limits.deliveries_max <= 0 {
            return Ok(Vec::new());
        }
        let emails_max = limits.emails_max.min(limits.deliveries_max);
        if !self
            .store
            .any_due(limits.max_in_flight_default, emails_max > 0)
            .await?
        {
            return Ok(Vec::new());
        }
        let mut tx = self.store.db().begin_write().await?;
        let webhooks = self
            .store
            .due_webhooks_in(&mut tx, limits.max_in_flight_default, limits.deliveries_max)
            .await?;
        let emails = if emails_max > 0 {
            self.store.due_emails_in(&mut tx, emails_max).await?
        } else {
            Vec::new()
        };
        let candidates = interleave(
            webhooks,
            emails,
            usize::try_from(limits.deliveries_max).unwrap_or(usize::MAX),
        );
        // Deliveries first, then subscription counters: the lock order of every transaction.
        let leased = self.lease_all(&mut tx, candidates, limits).await?;
        let claimed = self
            .take_webhook_slots(&mut tx, leased, limits.max_in_flight_default)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Leases each candidate that is still waiting, under a fresh claim token.
    async fn lease_all(
        &self,
        tx: &mut Tx,
        candidates: Vec<Candidate>,
        limits: &ClaimLimits,
    ) -> Result<Vec<(Claimed, Candidate)>, NotificationError> {
        let mut leased = Vec::new();
        for candidate in candidates {
            let token = uuid::Uuid::new_v4().to_string();
            let lease_ms = limits.lease_ms(candidate.channel);
            let start = self
                .store
                .lease(tx, &candidate.delivery_id, lease_ms, &token)
                .await?;
            if let Some(start_us) = start {
                let claim = Claimed {
                    delivery_id: candidate.delivery_id.clone(),
                    channel: candidate.channel,
                    claim_token: token,
                    start_us,
                };
                leased.push((claim, candidate));
            }
        }
        Ok(leased)
    }

    /// Counts each leased webhook against its subscription's in-flight limit; one whose
    /// subscription reached the limit within this batch is put back as it was found.
    async fn take_webhook_slots(
        &self,
        tx: &mut Tx,
        leased: Vec<(Claimed, Candidate)>,
        max_in_flight_default: i64,
    ) -> Result<Vec<Claimed>, NotificationError> {
        let mut claimed = Vec::new();
        for (claim, candidate) in leased {
            if claim.channel == Channel::Webhook
                && !self
                    .store
                    .take_in_flight_slot(tx, &candidate.subscription_id, max_in_flight_default)
                    .await?
            {
                self.store.put_back(tx, &candidate).await?;
                continue;
            }
            claimed.push(claim);
        }
        Ok(claimed)
    }

    /// Loads what an attempt of a claimed delivery needs; `None` when the claim was lost (the
    /// delivery was cancelled or its lease expired and it was claimed again).
    pub async fn attempt_work(
        &self,
        claim: &Claimed,
    ) -> Result<Option<AttemptWork>, NotificationError> {
        let Some(delivery) = self.store.claimed_delivery(claim).await? else {
            return Ok(None);
        };
        let event = self.store.event_at(delivery.event_seq).await?;
        let webhook = match delivery.channel {
            Channel::Webhook => self.store.webhook_target(&delivery.subscription_id).await?,
            Channel::Email => None,
        };
        Ok(Some(AttemptWork {
            delivery,
            event,
            webhook,
        }))
    }

    /// Disables a subscription whose endpoint has failed every attempt for at least
    /// `disable_after_ms`, dead-letters its waiting deliveries and, when it has a contact,
    /// publishes the notice emailed to it. The subscription when it was disabled now.
    pub async fn disable_if_failing(
        &self,
        subscription_id: &str,
        disable_after_ms: u64,
    ) -> Result<Option<SubscriptionRow>, NotificationError> {
        let first_delay_ms = self.first_delay_ms();
        let mut tx = self.store.db().begin_write().await?;
        // Deliveries first: the lock order of every transaction.
        self.store
            .dead_letter_waiting(&mut tx, subscription_id)
            .await?;
        let Some(subscription) = self
            .store
            .disable_failing(&mut tx, subscription_id, disable_after_ms)
            .await?
        else {
            // Not (or no longer) failing long enough: dropping the transaction undoes the
            // dead-lettering.
            return Ok(None);
        };
        if let Ok(contact) = EmailAddress::parse(&subscription.contact_email) {
            let notice = disabled_notice(&DisabledNotice {
                subscription_id: subscription.subscription_id.clone(),
                endpoint_url: subscription.endpoint_url.clone(),
                contact,
                failing_since_us: subscription.failing_since_us.unwrap_or_default(),
                disabled_us: subscription.disabled_us.unwrap_or_default(),
            });
            self.publish_in(&mut tx, &notice, first_delay_ms).await?;
        }
        tx.commit().await?;
        Ok(Some(subscription))
    }

    /// Puts deliveries whose attempt outlived its lease (the process died or hung) back in
    /// the queue, at most `limit`, each in its own transaction; they are attempted again at
    /// once. How many.
    pub async fn recover_expired_leases(&self, limit: i64) -> Result<u64, NotificationError> {
        let mut recovered = 0;
        for delivery_id in self.store.expired_leases(limit).await? {
            let mut tx = self.store.db().begin_write().await?;
            let Some((channel, subscription_id)) =
                self.store.recover_lease(&mut tx, &delivery_id).await?
            else {
                continue;
            };
            if channel == Channel::Webhook {
                self.store
                    .release_in_flight_slot(&mut tx, &subscription_id)
                    .await?;
            }
            tx.commit().await?;
            recovered += 1;
        }
        Ok(recovered)
    }

    /// Repairs deliveries left waiting for a subscription that was disabled or deleted while
    /// they were being requeued: they are dead-lettered or cancelled as if they had been
    /// waiting at that moment. How many.
    pub async fn reconcile(&self) -> Result<u64, NotificationError> {
        let mut tx = self.store.db().begin_write().await?;
        let cancelled = self.store.cancel_orphaned(&mut tx).await?;
        let dead = self.store.dead_letter_disabled(&mut tx).await?;
        tx.commit().await?;
        Ok(cancelled + dead)
    }
}
