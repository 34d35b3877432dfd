//! Publishing events and reading the feed.

use std::collections::HashMap;

use subsidy_common::audit::{self, AuditRecord};
use subsidy_common::auth::Tenant;
use subsidy_common::edge::Page;
use subsidy_common::time;

use super::{Listed, Ops, listed};
use crate::domain::delivery::{Channel, fan_out};
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

    /// Stores `events` in their order and schedules their deliveries, as [`Ops::publish`]
    /// does each, in one transaction: the feed head is locked once, the known event ids read
    /// in one statement, the new events and their deliveries written in one statement each
    /// (the deliveries in statements of a bounded size), the subscriptions read once. The new
    /// events take consecutive feed positions in the order given. All or nothing: an event
    /// whose `event_id` is known (or given earlier in `events`) with other content is
    /// `EVENT_ID_REUSED` and nothing is stored. A replay of a stored event, or a repeat of one
    /// given earlier, is answered as a duplicate with the event stored first. One `audit`
    /// record per new event.
    pub async fn publish_all(
        &self,
        events: &[Event],
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<Published>, NotificationError> {
        let mut tx = self.store.db().begin_write().await?;
        // Taken first, as in `publish_in`: the head's row lock serialises publications.
        let head = self.store.lock_feed_head(&mut tx).await?;
        let ids: Vec<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
        let known = self.store.find_events_in(&mut tx, &ids).await?;
        /// Where an event's answer comes from.
        #[derive(Clone, Copy)]
        enum Fate {
            Known,
            Fresh(usize),
        }
        let mut fresh: Vec<(&Event, String)> = Vec::new();
        let mut fresh_ids: HashMap<&str, usize> = HashMap::new();
        let mut fates = Vec::with_capacity(events.len());
        for event in events {
            let id = event.event_id.as_str();
            let hash = event.content_hash();
            let first_hash = match (known.get(id), fresh_ids.get(id)) {
                (Some((_, stored_hash)), _) => Some((stored_hash, Fate::Known)),
                (None, Some(&index)) => Some((&fresh[index].1, Fate::Fresh(index))),
                (None, None) => None,
            };
            match first_hash {
                Some((first_hash, _)) if *first_hash != hash => {
                    return Err(NotificationError::EventIdReused {
                        event_id: id.to_owned(),
                    });
                }
                Some((_, fate)) => fates.push((fate, true)),
                None => {
                    fresh_ids.insert(id, fresh.len());
                    fates.push((Fate::Fresh(fresh.len()), false));
                    fresh.push((event, hash));
                }
            }
        }
        let stored = self.store.insert_events(&mut tx, head + 1, &fresh).await?;
        let mut delivery_counts = vec![0; stored.len()];
        if let Some(last) = stored.last() {
            self.store.advance_feed_head(&mut tx, last.seq).await?;
            let subscriptions = if stored.iter().all(|s| s.event.event_type.is_internal()) {
                Vec::new()
            } else {
                self.store
                    .active_subscriptions_in(&mut tx, SUBSCRIPTIONS_MAX_MAX)
                    .await?
            };
            let mut targets: Vec<(&StoredEvent, Channel, &str)> = Vec::new();
            for (stored, count) in stored.iter().zip(&mut delivery_counts) {
                let fanned = fan_out(
                    &stored.event,
                    subscriptions
                        .iter()
                        .map(|s| (s.subscription_id.as_str(), &s.filters)),
                );
                *count = fanned.len();
                targets.extend(
                    fanned
                        .into_iter()
                        .map(|(channel, subscription)| (stored, channel, subscription)),
                );
            }
            self.store
                .insert_deliveries(&mut tx, &targets, self.first_delay_ms())
                .await?;
            if let Some(record) = audit {
                let records: Vec<AuditRecord> = stored
                    .iter()
                    .map(|s| {
                        record.with_targets(&[
                            s.event.event_id.as_str(),
                            s.event.application_id.as_str(),
                        ])
                    })
                    .collect();
                audit::append(&mut tx, &records, time::now_us()).await?;
            }
            tx.commit().await?;
            self.hub.published(last.seq);
            tracing::info!(
                events = stored.len(),
                duplicates = events.len() - stored.len(),
                deliveries = delivery_counts.iter().sum::<usize>(),
                last_seq = last.seq,
                "events published"
            );
        }
        // Nothing new: the transaction (which changed nothing) is dropped.
        Ok(fates
            .into_iter()
            .zip(events)
            .map(|((fate, duplicate), event)| {
                let stored = match fate {
                    Fate::Fresh(index) => stored[index].clone(),
                    Fate::Known => known[event.event_id.as_str()].0.clone(),
                };
                let delivery_count = match (fate, duplicate) {
                    (Fate::Fresh(index), false) => delivery_counts[index],
                    _ => 0,
                };
                Published {
                    stored,
                    duplicate,
                    delivery_count,
                }
            })
            .collect())
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
        let stored = self
            .store
            .insert_events(tx, seq, &[(event, hash)])
            .await?
            .pop()
            .expect("one event stored");
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
        let targets: Vec<(&StoredEvent, Channel, &str)> = targets
            .into_iter()
            .map(|(channel, subscription_id)| (&stored, channel, subscription_id))
            .collect();
        self.store
            .insert_deliveries(tx, &targets, first_delay_ms)
            .await?;
        let delivery_count = targets.len();
        Ok(Published {
            stored,
            duplicate: false,
            delivery_count,
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
