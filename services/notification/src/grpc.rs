//! The gRPC edge of `subsidy.notification.v1.NotificationService`. Each RPC parses and
//! validates its request with the shared kit (`requests`: `edge::Violations`; page tokens
//! through `edge::Page`, bound to every filter of the list), calls one use case (`ops`, or
//! `stream` for `StreamEvents`) and renders the answer through `wire`. Refusals become
//! statuses in `error.rs`. No SQL and no business decision here.

mod requests;

use subsidy_common::audit::AuditRecord;
use subsidy_common::auth::Caller;
use subsidy_common::edge::{self, IDENTIFIER_LEN_MAX, Violations};
use subsidy_proto::notification as pb;
use tonic::{Request, Response, Status};

use crate::error::NotificationError;
use crate::ops::Ops;
use crate::settings::Settings;
use crate::stream::{EventStream, Start, Streams, cursor, parse_cursor};
use crate::wire;

/// The gRPC face of the notification service.
#[derive(Clone, Debug)]
pub struct NotificationGrpc {
    ops: Ops,
    streams: Streams,
    allow_http_endpoints: bool,
}

impl NotificationGrpc {
    /// Serves the use cases `ops` and the event streams `streams` under `settings`.
    pub fn new(ops: Ops, streams: Streams, settings: &Settings) -> Self {
        Self {
            ops,
            streams,
            allow_http_endpoints: settings.allow_http_endpoints,
        }
    }
}

/// What a parse that returned `Some` for every field guarantees.
const VALIDATED: &str = "a request without violations is parsed whole";

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationGrpc {
    async fn publish_event(
        &self,
        request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let audit = AuditRecord::change(Caller::of(&request)?, &[], None);
        let req = request.into_inner();
        let mut v = Violations::new();
        let event = match &req.event {
            Some(event) => requests::event_from_proto(&mut v, event),
            None => {
                v.add("event", "is required");
                None
            }
        };
        v.check(NotificationError::Invalid)?;
        let event = event.expect(VALIDATED);
        let published = self.ops.publish(&event, Some(&audit)).await?;
        Ok(Response::new(pb::PublishEventResponse {
            event: Some(wire::event_to_proto(&published.stored)),
            duplicate: published.duplicate,
            cursor: cursor(published.stored.seq),
        }))
    }

    async fn publish_events(
        &self,
        request: Request<pb::PublishEventsRequest>,
    ) -> Result<Response<pb::PublishEventsResponse>, Status> {
        let audit = AuditRecord::change(Caller::of(&request)?, &[], None);
        let req = request.into_inner();
        let mut v = Violations::new();
        let events = requests::events_from_proto(&mut v, &req.events);
        v.check(NotificationError::Invalid)?;
        let events = events.expect(VALIDATED);
        let published = self.ops.publish_all(&events, Some(&audit)).await?;
        Ok(Response::new(pb::PublishEventsResponse {
            results: published
                .iter()
                .map(|published| pb::PublishEventResponse {
                    event: Some(wire::event_to_proto(&published.stored)),
                    duplicate: published.duplicate,
                    cursor: cursor(published.stored.seq),
                })
                .collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        let tenant = Caller::of(&request)?.tenant();
        let req = request.into_inner();
        let mut v = Violations::new();
        let event_id = v.id("event_id", &req.event_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let event_id = event_id.expect(VALIDATED);
        let stored = self.ops.get_event(&event_id, &tenant).await?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(wire::event_to_proto(&stored)),
            cursor: cursor(stored.seq),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let tenant = Caller::of(&request)?.tenant();
        let req = request.into_inner();
        let mut v = Violations::new();
        let query = requests::events_query(&mut v, &req);
        v.check(NotificationError::Invalid)?;
        let (mut filter, page) = query.expect(VALIDATED);
        filter.tenants = edge::tenants(&tenant);
        let listed = self.ops.list_events(&filter, &page).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: listed.rows.iter().map(wire::event_to_proto).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let tenant = Caller::of(&request)?.tenant();
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = requests::stream_filter(&mut v, &req);
        v.check(NotificationError::Invalid)?;
        let mut filter = filter.expect(VALIDATED);
        filter.tenants = edge::tenants(&tenant);
        let start = if req.from_beginning {
            Start::Beginning
        } else if req.cursor.is_empty() {
            Start::Head
        } else {
            Start::After(parse_cursor(&req.cursor)?)
        };
        Ok(Response::new(self.streams.open(filter, start).await?))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "CreateSubscription", &req.request_id, &req)
            .map(|key| key.by(&caller, &[]));
        let new = requests::new_subscription(&mut v, &req, self.allow_http_endpoints)?;
        v.check(NotificationError::Invalid)?;
        let (key, new) = key.zip(new).expect(VALIDATED);
        Ok(Response::new(
            self.ops.create_subscription(&new, &key).await?,
        ))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.id("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let id = id.expect(VALIDATED);
        let row = self.ops.get_subscription(&id).await?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(wire::subscription_to_proto(&row)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let query = requests::subscriptions_query(&mut v, &req);
        v.check(NotificationError::Invalid)?;
        let (state, page) = query.expect(VALIDATED);
        let listed = self.ops.list_subscriptions(state, &page).await?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: listed
                .rows
                .iter()
                .map(wire::subscription_to_proto)
                .collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "UpdateSubscription", &req.request_id, &req)
            .map(|key| key.by(&caller, &[req.subscription_id.as_str()]));
        let id = v.id("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        let changes = requests::subscription_changes(&mut v, &req, self.allow_http_endpoints)?;
        v.check(NotificationError::Invalid)?;
        let (key, id) = key.zip(id).expect(VALIDATED);
        Ok(Response::new(
            self.ops.update_subscription(&id, &changes, &key).await?,
        ))
    }

    async fn rotate_subscription_secret(
        &self,
        request: Request<pb::RotateSubscriptionSecretRequest>,
    ) -> Result<Response<pb::RotateSubscriptionSecretResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "RotateSubscriptionSecret", &req.request_id, &req)
            .map(|key| key.by(&caller, &[req.subscription_id.as_str()]));
        let id = v.id("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        let grace_seconds = requests::grace_seconds(&mut v, req.grace_period_seconds);
        v.check(NotificationError::Invalid)?;
        let ((key, id), grace_seconds) = key.zip(id).zip(grace_seconds).expect(VALIDATED);
        Ok(Response::new(
            self.ops.rotate_secret(&id, grace_seconds, &key).await?,
        ))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "DeleteSubscription", &req.request_id, &req)
            .map(|key| key.by(&caller, &[req.subscription_id.as_str()]));
        let id = v.id("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let (key, id) = key.zip(id).expect(VALIDATED);
        Ok(Response::new(
            self.ops.delete_subscription(&id, &key).await?,
        ))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.id("delivery_id", &req.delivery_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let id = id.expect(VALIDATED);
        let (delivery, attempts) = self.ops.get_delivery(&id).await?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(wire::delivery_to_proto(&delivery, &attempts)),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let query = requests::deliveries_query(&mut v, &req);
        v.check(NotificationError::Invalid)?;
        let (filter, page) = query.expect(VALIDATED);
        let listed = self.ops.list_deliveries(&filter, &page).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: listed
                .rows
                .iter()
                .map(|(row, attempts)| wire::delivery_to_proto(row, attempts))
                .collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn redeliver_event(
        &self,
        request: Request<pb::RedeliverEventRequest>,
    ) -> Result<Response<pb::RedeliverEventResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "RedeliverEvent", &req.request_id, &req)
            .map(|key| key.by(&caller, &[req.event_id.as_str()]));
        let event_id = v.id("event_id", &req.event_id, IDENTIFIER_LEN_MAX);
        let subscription_id = v.token("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let ((key, event_id), subscription_id) =
            key.zip(event_id).zip(subscription_id).expect(VALIDATED);
        let subscription_id = Some(subscription_id).filter(|id| !id.is_empty());
        Ok(Response::new(
            self.ops
                .redeliver_event(&event_id, subscription_id.as_deref(), &key)
                .await?,
        ))
    }

    async fn redeliver_dead_letters(
        &self,
        request: Request<pb::RedeliverDeadLettersRequest>,
    ) -> Result<Response<pb::RedeliverDeadLettersResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = requests::key(&mut v, "RedeliverDeadLetters", &req.request_id, &req)
            .map(|key| key.by(&caller, &[req.subscription_id.as_str()]));
        let id = v.id("subscription_id", &req.subscription_id, IDENTIFIER_LEN_MAX);
        v.check(NotificationError::Invalid)?;
        let (key, id) = key.zip(id).expect(VALIDATED);
        Ok(Response::new(
            self.ops.redeliver_dead_letters(&id, &key).await?,
        ))
    }
}
