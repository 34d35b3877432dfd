//! Creating, reading, changing and deleting webhook subscriptions.
//!
//! An endpoint is checked against the addresses webhooks may reach when a subscription names
//! it (the delivery worker checks again on every connection). The host is looked up before
//! the write transaction begins, so that no lock waits on DNS; the verdict is applied after
//! the request id is claimed, so that a replay still answers its stored response.
//!
//! A signing secret is shown once: the response stored for replays has it cleared, so a
//! replay answers the subscription without it (rotate to get a new one), and no secret stays
//! in the idempotency table.

use subsidy_common::edge::{Page, keyset};
use subsidy_proto::notification as pb;
use subsidy_proto::status::FieldViolation;

use super::{Idempotency, Listed, Ops, after_keyset, listed};
use crate::domain::subscription::{
    EndpointUrl, NewSubscription, SigningSecret, SubscriptionChanges, SubscriptionState,
};
use crate::error::NotificationError;
use crate::storage::SubscriptionRow;
use crate::webhook::check_endpoint;
use crate::wire::subscription_to_proto;

fn not_found(subscription_id: &str) -> NotificationError {
    NotificationError::SubscriptionNotFound {
        subscription_id: subscription_id.to_owned(),
    }
}

impl Ops {
    /// The refusal of `endpoint`, named by the request's `field`, when it is or resolves to
    /// an address webhooks may not reach (or does not resolve); `None` when it may be used.
    async fn endpoint_refusal(
        &self,
        endpoint: &EndpointUrl,
        field: &str,
    ) -> Option<NotificationError> {
        let refused = check_endpoint(endpoint.as_str(), self.store.allow_list())
            .await
            .err()?;
        Some(NotificationError::InvalidEndpoint(FieldViolation::new(
            field,
            refused.to_string(),
        )))
    }

    /// Creates an ACTIVE subscription with a new signing secret, shown once in the response
    /// (a replay answers without it); `INVALID_ENDPOINT` when the endpoint may not be
    /// reached; `SUBSCRIPTION_LIMIT_REACHED` when the service holds `notification.subscriptions_max`.
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
        key: &Idempotency,
    ) -> Result<pb::CreateSubscriptionResponse, NotificationError> {
        let refusal = self
            .endpoint_refusal(&new.endpoint_url, "endpoint_url")
            .await;
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        if self.store.count_subscriptions_in(&mut tx).await? >= self.subscriptions_max {
            return Err(NotificationError::SubscriptionLimitReached {
                subscriptions_max: self.subscriptions_max,
            });
        }
        let secret = SigningSecret::generate(&mut rand::rng());
        let row = self
            .store
            .insert_subscription(&mut tx, new, &secret)
            .await?;
        let stored = pb::CreateSubscriptionResponse {
            subscription: Some(subscription_to_proto(&row)),
            signing_secret: String::new(),
        };
        let stored = self.answer(tx, key, stored).await?;
        Ok(pb::CreateSubscriptionResponse {
            signing_secret: secret.expose().to_owned(),
            ..stored
        })
    }

    /// One subscription.
    pub async fn get_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<SubscriptionRow, NotificationError> {
        self.store
            .get_subscription(subscription_id)
            .await?
            .ok_or_else(|| not_found(subscription_id))
    }

    /// A page of subscriptions, oldest first, in `state` when given.
    pub async fn list_subscriptions(
        &self,
        state: Option<SubscriptionState>,
        page: &Page,
    ) -> Result<Listed<SubscriptionRow>, NotificationError> {
        let rows = self
            .store
            .list_subscriptions(state, after_keyset(page)?, page.fetch_limit())
            .await?;
        Ok(listed(page, rows, |r| {
            keyset(r.created_us, &r.subscription_id)
        }))
    }

    /// Changes the fields named in `changes`; `INVALID_ENDPOINT` when a new endpoint may not
    /// be reached. Disabling dead-letters the subscription's waiting deliveries (they can be
    /// requeued once it is enabled again).
    pub async fn update_subscription(
        &self,
        subscription_id: &str,
        changes: &SubscriptionChanges,
        key: &Idempotency,
    ) -> Result<pb::UpdateSubscriptionResponse, NotificationError> {
        let response = self
            .update_subscription_in(subscription_id, changes, key)
            .await?;
        // The endpoint or the state may have changed what is due.
        self.hub.wake_worker();
        Ok(response)
    }

    async fn update_subscription_in(
        &self,
        subscription_id: &str,
        changes: &SubscriptionChanges,
        key: &Idempotency,
    ) -> Result<pb::UpdateSubscriptionResponse, NotificationError> {
        let refusal = match &changes.endpoint_url {
            Some(endpoint) => {
                self.endpoint_refusal(endpoint, "subscription.endpoint_url")
                    .await
            }
            None => None,
        };
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        if changes.state == Some(SubscriptionState::Disabled) {
            // Deliveries first: the lock order of every transaction.
            self.store
                .dead_letter_waiting(&mut tx, subscription_id)
                .await?;
        }
        let row = self
            .store
            .update_subscription(&mut tx, subscription_id, changes)
            .await?
            .ok_or_else(|| not_found(subscription_id))?;
        let response = pb::UpdateSubscriptionResponse {
            subscription: Some(subscription_to_proto(&row)),
        };
        self.answer(tx, key, response).await
    }

    /// Replaces the signing secret with a new one, shown once in the response (a replay
    /// answers without it); the current one stays valid for `grace_seconds`.
    pub async fn rotate_secret(
        &self,
        subscription_id: &str,
        grace_seconds: i64,
        key: &Idempotency,
    ) -> Result<pb::RotateSubscriptionSecretResponse, NotificationError> {
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        let secret = SigningSecret::generate(&mut rand::rng());
        let row = self
            .store
            .rotate_secret(&mut tx, subscription_id, &secret, grace_seconds)
            .await?
            .ok_or_else(|| not_found(subscription_id))?;
        let stored = pb::RotateSubscriptionSecretResponse {
            subscription: Some(subscription_to_proto(&row)),
            signing_secret: String::new(),
        };
        let stored = self.answer(tx, key, stored).await?;
        Ok(pb::RotateSubscriptionSecretResponse {
            signing_secret: secret.expose().to_owned(),
            ..stored
        })
    }

    /// Deletes a subscription and cancels its unfinished deliveries; its delivery log stays.
    pub async fn delete_subscription(
        &self,
        subscription_id: &str,
        key: &Idempotency,
    ) -> Result<pb::DeleteSubscriptionResponse, NotificationError> {
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        let cancelled = self
            .store
            .cancel_unfinished(&mut tx, subscription_id)
            .await?;
        let row = self
            .store
            .delete_subscription(&mut tx, subscription_id)
            .await?
            .ok_or_else(|| not_found(subscription_id))?;
        let response = pb::DeleteSubscriptionResponse {
            subscription: Some(subscription_to_proto(&row)),
            cancelled_delivery_count: i64::try_from(cancelled).expect("a row count fits i64"),
        };
        self.answer(tx, key, response).await
    }
}
