//! Publishing events and reading the feed.

use subsidy_common::audit::{self, AuditRecord};
use subsidy_common::auth::Tenant;
use subsidy_common::edge::Page;
use subsidy_common::time;

use super::{Listed, Ops, listed};
use crate::domain::delivery::fan_out;
use crate::domain::event::{Event, EventFilter};
use crate::domain::subscription::SUBSCRIPTIONS_MAX_MAX;
use crate::error::NotificationError;
use crate::storage::{StoredEvent, Tx};

/// The result of a publication.
#[derive(Clone, Debug)]
pub struct Published {
    /// The stored event (the first one, for a duplicate).
    pub stored: StoredEvent,
    /// Whether the event was stored before with the same content.
    pub duplicate: bool,
    /// Deliveries scheduled.
    pub delivery_count: usize,
}

impl Ops {
    /// Stores `event` and schedules its deliveries. Idempotent by `event_id`: a replay with
    /// the same content is reported as a duplicate and changes nothing; other content under a
    /// known `event_id` is `EVENT_ID_REUSED`.
    /// The call's `audit` record is written with the event.
    pub async fn publish(
        &self,
        event: &Event,
        audit: Option<&AuditRecord>,
    ) -> Result<Published, NotificationError> {
        let mut tx = self.store.db().begin_write().await?;
        let published = self
            .publish_in(&mut tx, event, self.first_delay_ms())
            .await?;
        if published.duplicate {
            // Rolls back the feed head increment.
            drop(tx);
            return Ok(published);
        }
        if let Some(record) = audit {
            let record =
                record.with_targets(&[event.event_id.as_str(), event.application_id.as_str()]);
            audit::append(&mut tx, &[record], time::now_us()).await?;
        }
        tx.commit().await?;
        self.hub.published(published.stored.seq);
        tracing::info!(
            event_id = %event.event_id,
            event_type = event.event_type.as_str(),
            deliveries = published.delivery_count,
            "event published"
        );
        Ok(published)
    }

    /// Publishes `event` in `tx`: takes the next feed position, stores the event unless it is
    /// known, and schedules one delivery per target of the fan-out, each due after
    /// `first_delay_ms`. Also used by the worker for the notice of a disabled subscription.
    pub(super) async fn publish_in(
        &self,
        tx: &mut Tx,
        event: &Event,
        first_delay_ms: u64,
    ) -> Result<Published, NotificationError> {
        // Taken first: the head's row lock serialises publications from here to commit.
        let seq = self.store.next_seq(tx).await?;
        let hash = event.content_hash();
        if let Some((stored, stored_hash)) = self
            .store
            .find_event_in(tx, event.event_id.as_str())
            .await?
        {
            if stored_hash != hash {
                return Err(NotificationError::EventIdReused {
                    event_id: event.event_id.to_string(),
                });
            }
            return Ok(Published {
                stored,
                duplicate: true,
                delivery_count: 0,
            });
        }
        let stored = self.store.insert_event(tx, seq, event, &hash).await?;
        let subscriptions = if event.event_type.is_internal() {
            Vec::new()
        } else {
            self.store
                .active_subscriptions_in(tx, SUBSCRIPTIONS_MAX_MAX)
                .await?
        };
        let targets = fan_out(
            event,
            subscriptions
                .iter()
                .map(|s| (s.subscription_id.as_str(), &s.filters)),
        );
        for (channel, subscription_id) in &targets {
            self.store
                .insert_delivery(tx, &stored, *channel, subscription_id, first_delay_ms)
                .await?;
        }
        Ok(Published {
            stored,
            duplicate: false,
            delivery_count: targets.len(),
        })
    }

    /// One stored event; an event of another tenant's enterprise, or one only staff may read
    /// (`EventType::is_staff_only`) asked for by an applicant, is not found.
    pub async fn get_event(
        &self,
        event_id: &str,
        tenant: &Tenant,
    ) -> Result<StoredEvent, NotificationError> {
        self.store
            .get_event(event_id)
            .await?
            .filter(|stored| match &stored.event.enterprise_uscc {
                Some(uscc) => tenant.sees(uscc.as_str()),
                None => !stored.event.event_type.is_staff_only() || tenant.restriction().is_none(),
            })
            .ok_or_else(|| NotificationError::EventNotFound {
                event_id: event_id.to_owned(),
            })
    }

    /// A page of the events passing `filter`, in feed order.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Listed<StoredEvent>, NotificationError> {
        let after = page
            .after_number()
            .map_err(|violation| NotificationError::Invalid(vec![violation]))?;
        let events = self
            .store
            .list_events(filter, after, i64::MAX, page.fetch_limit())
            .await?;
        Ok(listed(page, events, |e| e.seq.to_string()))
    }
}
