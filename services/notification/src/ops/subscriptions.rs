//! Creating, reading, changing and deleting webhook subscriptions.

use subsidy_common::edge::{Page, keyset};
use subsidy_proto::notification as pb;

use super::{Idempotency, Listed, Ops, after_keyset, listed};
use crate::domain::subscription::{
    NewSubscription, SUBSCRIPTIONS_MAX, SigningSecret, SubscriptionChanges, SubscriptionState,
};
use crate::error::NotificationError;
use crate::storage::SubscriptionRow;
use crate::wire::subscription_to_proto;

fn not_found(subscription_id: &str) -> NotificationError {
    NotificationError::SubscriptionNotFound {
        subscription_id: subscription_id.to_owned(),
    }
}

impl Ops {
    /// Creates an ACTIVE subscription with a new signing secret, shown once in the response;
    /// `SUBSCRIPTION_LIMIT_REACHED` when the service holds [`SUBSCRIPTIONS_MAX`].
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
        key: &Idempotency,
    ) -> Result<pb::CreateSubscriptionResponse, NotificationError> {
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        if self.store.count_subscriptions_in(&mut tx).await? >= SUBSCRIPTIONS_MAX {
            return Err(NotificationError::SubscriptionLimitReached {
                subscriptions_max: SUBSCRIPTIONS_MAX,
            });
        }
        let secret = SigningSecret::generate(&mut rand::rng());
        let row = self
            .store
            .insert_subscription(&mut tx, new, &secret)
            .await?;
        let response = pb::CreateSubscriptionResponse {
            subscription: Some(subscription_to_proto(&row)),
            signing_secret: secret.expose().to_owned(),
        };
        self.answer(tx, key, response).await
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

    /// Changes the fields named in `changes`. Disabling dead-letters the subscription's
    /// waiting deliveries (they can be requeued once it is enabled again).
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
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
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

    /// Replaces the signing secret with a new one, shown once in the response; the current
    /// one stays valid for `grace_seconds`.
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
        let response = pb::RotateSubscriptionSecretResponse {
            subscription: Some(subscription_to_proto(&row)),
            signing_secret: secret.expose().to_owned(),
        };
        self.answer(tx, key, response).await
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
