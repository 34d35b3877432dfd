//! What the notification service refuses, and the one place where that becomes a gRPC status.
//!
//! Every use case answers a [`NotificationError`]; the edge turns it into a status through
//! the single `From<NotificationError> for Status` below: a canonical code, exactly one
//! `ErrorInfo` (domain [`DOMAIN`], a stable reason, metadata naming the ids and limits
//! involved) and, for invalid input, the field violations. Database failures go through the
//! shared `edge::storage_failure`, which logs them once and never sends driver text. This is
//! the only module that knows `DbError`.

use subsidy_common::db::DbError;
use subsidy_common::edge;
use subsidy_proto::status::{self as st, Failure, FieldViolation};
use tonic::{Code, Status};

/// The `ErrorInfo` domain of every notification error.
pub const DOMAIN: &str = "subsidy.notification";
/// The service's name in storage-failure messages and logs.
const SERVICE: &str = "notification";

/// What the notification service refuses, and why.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The endpoint URL is not acceptable (and nothing else was wrong with the request).
    #[error("invalid endpoint")]
    InvalidEndpoint(FieldViolation),
    /// The stream cursor was not issued by this service.
    #[error("the cursor was not issued by this service")]
    CursorInvalid,
    /// The stream cursor is older than the feed keeps: events after it were pruned.
    #[error(
        "events after this cursor were pruned (notification.delivery_retention_ms); resume from the oldest cursor kept, knowing events were missed"
    )]
    CursorExpired {
        /// The oldest cursor a stream can resume from.
        oldest_cursor: String,
    },
    /// The event id is known with different content.
    #[error("event_id was published before with different content")]
    EventIdReused {
        /// The event.
        event_id: String,
    },
    /// No such event.
    #[error("event not found")]
    EventNotFound {
        /// The event asked for.
        event_id: String,
    },
    /// No such subscription.
    #[error("subscription not found")]
    SubscriptionNotFound {
        /// The subscription asked for.
        subscription_id: String,
    },
    /// No such delivery.
    #[error("delivery not found")]
    DeliveryNotFound {
        /// The delivery asked for.
        delivery_id: String,
    },
    /// The subscription is disabled.
    #[error("the subscription is disabled")]
    SubscriptionDisabled {
        /// The subscription.
        subscription_id: String,
    },
    /// The service holds its maximum number of subscriptions.
    #[error("the service holds its maximum number of subscriptions")]
    SubscriptionLimitReached {
        /// The maximum.
        subscriptions_max: i64,
    },
    /// Too many event streams are open.
    #[error("too many event streams are open; retry later")]
    StreamLimitReached {
        /// Streams open at once per process.
        streams_max: usize,
    },
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for NotificationError {
    fn from(error: sqlx::Error) -> Self {
        NotificationError::Db(DbError::from(error))
    }
}

impl From<NotificationError> for Status {
    /// The one place where notification errors become gRPC statuses (the reasons and the
    /// metadata keys of each are listed in the proto). Database details are logged here and
    /// never sent to the caller.
    fn from(error: NotificationError) -> Status {
        use NotificationError as E;
        let failure = |code, reason| Failure::new(code, DOMAIN, reason, error.to_string());
        match &error {
            E::Invalid(violations) => st::invalid_argument(DOMAIN, violations),
            E::InvalidEndpoint(violation) => st::invalid_argument_with_reason(
                DOMAIN,
                "INVALID_ENDPOINT",
                std::slice::from_ref(violation),
            ),
            E::CursorInvalid => st::invalid_argument_with_reason(
                DOMAIN,
                "CURSOR_INVALID",
                &[FieldViolation::new(
                    "cursor",
                    "was not issued by this service",
                )],
            ),
            E::CursorExpired { oldest_cursor } => {
                failure(Code::FailedPrecondition, "CURSOR_EXPIRED")
                    .with("oldest_cursor", oldest_cursor)
                    .into()
            }
            E::EventIdReused { event_id } => failure(Code::AlreadyExists, "EVENT_ID_REUSED")
                .with("event_id", event_id)
                .into(),
            E::EventNotFound { event_id } => failure(Code::NotFound, "EVENT_NOT_FOUND")
                .with("event_id", event_id)
                .into(),
            E::SubscriptionNotFound { subscription_id } => {
                failure(Code::NotFound, "SUBSCRIPTION_NOT_FOUND")
                    .with("subscription_id", subscription_id)
                    .into()
            }
            E::DeliveryNotFound { delivery_id } => failure(Code::NotFound, "DELIVERY_NOT_FOUND")
                .with("delivery_id", delivery_id)
                .into(),
            E::SubscriptionDisabled { subscription_id } => {
                failure(Code::FailedPrecondition, "SUBSCRIPTION_DISABLED")
                    .with("subscription_id", subscription_id)
                    .into()
            }
            E::SubscriptionLimitReached { subscriptions_max } => {
                failure(Code::ResourceExhausted, "SUBSCRIPTION_LIMIT_REACHED")
                    .with("subscriptions_max", subscriptions_max)
                    .into()
            }
            E::StreamLimitReached { streams_max } => {
                failure(Code::ResourceExhausted, "STREAM_LIMIT_REACHED")
                    .with("streams_max", streams_max)
                    .into()
            }
            E::RequestIdReused { request_id } => failure(Code::AlreadyExists, "REQUEST_ID_REUSED")
                .with("request_id", request_id)
                .into(),
            E::Db(db) => edge::storage_failure(DOMAIN, SERVICE, db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subsidy_proto::status::{metadata, reason};

    #[test]
    fn refusals_name_the_ids_and_limits_involved() {
        // Proves the ErrorInfo of each refusal carries its stable reason and the ids or
        // limits a caller can act on (AIP-193).
        let cases = [
            (
                NotificationError::SubscriptionNotFound {
                    subscription_id: "sub-1".into(),
                },
                Code::NotFound,
                "SUBSCRIPTION_NOT_FOUND",
                ("subscription_id", "sub-1"),
            ),
            (
                NotificationError::EventIdReused {
                    event_id: "evt-1".into(),
                },
                Code::AlreadyExists,
                "EVENT_ID_REUSED",
                ("event_id", "evt-1"),
            ),
            (
                NotificationError::DeliveryNotFound {
                    delivery_id: "d-1".into(),
                },
                Code::NotFound,
                "DELIVERY_NOT_FOUND",
                ("delivery_id", "d-1"),
            ),
            (
                NotificationError::SubscriptionLimitReached {
                    subscriptions_max: 1000,
                },
                Code::ResourceExhausted,
                "SUBSCRIPTION_LIMIT_REACHED",
                ("subscriptions_max", "1000"),
            ),
        ];
        for (error, code, expected_reason, (key, value)) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(reason(&status).as_deref(), Some(expected_reason));
            assert_eq!(metadata(&status).get(key).map(String::as_str), Some(value));
        }
    }

    #[test]
    fn a_database_failure_is_unavailable_or_an_opaque_internal_error() {
        // Proves driver text never reaches the caller.
        let down = Status::from(NotificationError::Db(DbError::Unavailable(
            sqlx::Error::PoolTimedOut,
        )));
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(reason(&down).as_deref(), Some("STORAGE_UNAVAILABLE"));
        let broken = Status::from(NotificationError::Db(DbError::Other(
            sqlx::Error::RowNotFound,
        )));
        assert_eq!(broken.code(), Code::Internal);
        assert_eq!(broken.message(), "internal error");
    }
}
