//! Notification domain: validated events and subscriptions, the signature, the retry decision
//! and the email templates. No tonic, no sqlx.

pub mod delivery;
pub mod email;
pub mod event;
pub mod subscription;

use subsidy_common::db::DbError;
use subsidy_proto::status::FieldViolation;

/// What the notification service refuses, and why. Classified into gRPC codes once, in
/// `grpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The endpoint URL is not acceptable.
    #[error("invalid endpoint")]
    InvalidEndpoint(FieldViolation),
    /// The stream cursor was not issued by this service.
    #[error("the cursor was not issued by this service")]
    CursorInvalid,
    /// The event id is known with different content.
    #[error("event_id was published before with different content")]
    EventIdReused,
    /// No such event.
    #[error("event not found")]
    EventNotFound,
    /// No such subscription.
    #[error("subscription not found")]
    SubscriptionNotFound,
    /// No such delivery.
    #[error("delivery not found")]
    DeliveryNotFound,
    /// The subscription is disabled.
    #[error("the subscription is disabled")]
    SubscriptionDisabled,
    /// The service holds its maximum number of subscriptions.
    #[error("the service holds its maximum number of subscriptions")]
    SubscriptionLimitReached,
    /// Too many event streams are open.
    #[error("too many event streams are open; retry later")]
    StreamLimitReached,
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for NotificationError {
    fn from(error: sqlx::Error) -> Self {
        NotificationError::Db(DbError::from(error))
    }
}
