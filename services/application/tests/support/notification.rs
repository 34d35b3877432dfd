//! The recording notification service: accepts and keeps every event it is given, so that the
//! application's outbox relay has a peer and a test can read what was published.

use std::sync::{Arc, Mutex};

use subsidy_proto::notification as npb;
use tonic::{Request, Response, Status};

/// A notification service that records what it is given.
#[derive(Clone, Default)]
pub struct RecordingNotification {
    events: Arc<Mutex<Vec<npb::Event>>>,
}

impl RecordingNotification {
    /// The routes that serve this recording service (share its state with the handle).
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(
            npb::notification_service_server::NotificationServiceServer::new(self.clone()),
        )
    }

    /// The events received, first delivery of each event id only.
    pub fn events(&self) -> Vec<npb::Event> {
        let mut seen = std::collections::HashSet::new();
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| seen.insert(e.event_id.clone()))
            .cloned()
            .collect()
    }
}

#[tonic::async_trait]
impl npb::notification_service_server::NotificationService for RecordingNotification {
    async fn publish_event(
        &self,
        request: Request<npb::PublishEventRequest>,
    ) -> Result<Response<npb::PublishEventResponse>, Status> {
        let event = request.into_inner().event.unwrap();
        self.events.lock().unwrap().push(event.clone());
        Ok(Response::new(npb::PublishEventResponse {
            event: Some(event),
            duplicate: false,
            cursor: String::new(),
        }))
    }
}
