//! The delivery log and redelivery by hand.

use subsidy_common::edge::{Page, keyset};
use subsidy_proto::notification as pb;

use super::{Idempotency, Listed, Ops, after_keyset, listed};
use crate::domain::delivery::{Channel, DeliveryFilter};
use crate::domain::subscription::SubscriptionState;
use crate::error::NotificationError;
use crate::storage::{AttemptRow, DeliveryRow, SubscriptionRow, Tx};
use crate::wire::delivery_to_proto;

impl Ops {
    /// One delivery with its last attempts (oldest first).
    pub async fn get_delivery(
        &self,
        delivery_id: &str,
    ) -> Result<(DeliveryRow, Vec<AttemptRow>), NotificationError> {
        let delivery = self.store.get_delivery(delivery_id).await?.ok_or_else(|| {
            NotificationError::DeliveryNotFound {
                delivery_id: delivery_id.to_owned(),
            }
        })?;
        let mut attempts = self
            .store
            .attempts_of(std::slice::from_ref(&delivery.delivery_id))
            .await?;
        Ok((delivery, attempts.remove(0)))
    }

    /// A page of the deliveries passing `filter`, newest first, each with its last attempts.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> Result<Listed<(DeliveryRow, Vec<AttemptRow>)>, NotificationError> {
        let rows = self
            .store
            .list_deliveries(filter, after_keyset(page)?, page.fetch_limit())
            .await?;
        let Listed {
            rows,
            next_page_token,
        } = listed(page, rows, |r| keyset(r.created_us, &r.delivery_id));
        let ids: Vec<String> = rows.iter().map(|r| r.delivery_id.clone()).collect();
        let attempts = self.store.attempts_of(&ids).await?;
        Ok(Listed {
            rows: rows.into_iter().zip(attempts).collect(),
            next_page_token,
        })
    }

    /// Delivers an event again: requeues its finished deliveries, all or the one to
    /// `subscription_id`, and creates a delivery to that subscription if it has none and the
    /// event matches its filters. The response lists the deliveries requeued or created.
    pub async fn redeliver_event(
        &self,
        event_id: &str,
        subscription_id: Option<&str>,
        key: &Idempotency,
    ) -> Result<pb::RedeliverEventResponse, NotificationError> {
        let response = self
            .redeliver_event_in(event_id, subscription_id, key)
            .await?;
        self.hub.wake_worker();
        Ok(response)
    }

    async fn redeliver_event_in(
        &self,
        event_id: &str,
        subscription_id: Option<&str>,
        key: &Idempotency,
    ) -> Result<pb::RedeliverEventResponse, NotificationError> {
        let first_delay_ms = self.first_delay_ms();
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        let Some((stored, _)) = self.store.find_event_in(&mut tx, event_id).await? else {
            return Err(NotificationError::EventNotFound {
                event_id: event_id.to_owned(),
            });
        };
        let deliveries = match subscription_id {
            None => {
                self.store
                    .requeue_event_deliveries(&mut tx, event_id, first_delay_ms)
                    .await?
            }
            Some(subscription_id) => {
                let subscription = self.active_subscription(&mut tx, subscription_id).await?;
                if self
                    .store
                    .has_webhook_delivery_in(&mut tx, event_id, subscription_id)
                    .await?
                {
                    self.store
                        .requeue_webhook_delivery(
                            &mut tx,
                            event_id,
                            subscription_id,
                            first_delay_ms,
                        )
                        .await?
                } else if subscription.filters.matches(&stored.event) {
                    vec![
                        self.store
                            .insert_delivery(
                                &mut tx,
                                &stored,
                                Channel::Webhook,
                                subscription_id,
                                first_delay_ms,
                            )
                            .await?,
                    ]
                } else {
                    Vec::new()
                }
            }
        };
        let response = pb::RedeliverEventResponse {
            deliveries: deliveries
                .iter()
                .map(|row| delivery_to_proto(row, &[]))
                .collect(),
        };
        self.answer(tx, key, response).await
    }

    /// Requeues every dead-lettered delivery of an ACTIVE subscription, in their original
    /// order; the response counts them.
    pub async fn redeliver_dead_letters(
        &self,
        subscription_id: &str,
        key: &Idempotency,
    ) -> Result<pb::RedeliverDeadLettersResponse, NotificationError> {
        let response = self.redeliver_dead_letters_in(subscription_id, key).await?;
        self.hub.wake_worker();
        Ok(response)
    }

    async fn redeliver_dead_letters_in(
        &self,
        subscription_id: &str,
        key: &Idempotency,
    ) -> Result<pb::RedeliverDeadLettersResponse, NotificationError> {
        let first_delay_ms = self.first_delay_ms();
        let mut tx = match self.begin(key).await? {
            Ok(tx) => tx,
            Err(replay) => return Ok(replay),
        };
        self.active_subscription(&mut tx, subscription_id).await?;
        let requeued = self
            .store
            .requeue_dead_letters(&mut tx, subscription_id, first_delay_ms)
            .await?;
        let response = pb::RedeliverDeadLettersResponse {
            requeued_count: i64::try_from(requeued.len()).expect("a row count fits i64"),
        };
        self.answer(tx, key, response).await
    }

    /// The subscription redelivered to: it exists and is ACTIVE.
    async fn active_subscription(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
    ) -> Result<SubscriptionRow, NotificationError> {
        let subscription = self
            .store
            .subscription_in(tx, subscription_id)
            .await?
            .ok_or_else(|| NotificationError::SubscriptionNotFound {
                subscription_id: subscription_id.to_owned(),
            })?;
        if subscription.state != SubscriptionState::Active {
            return Err(NotificationError::SubscriptionDisabled {
                subscription_id: subscription_id.to_owned(),
            });
        }
        Ok(subscription)
    }
}
