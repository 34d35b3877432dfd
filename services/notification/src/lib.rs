//! The notification service. Its RPCs answer UNIMPLEMENTED until its issue lands.
#![forbid(unsafe_code)]

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_proto::notification::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use tokio::net::TcpListener;

/// The gRPC face of the notification service.
#[derive(Clone, Debug, Default)]
pub struct NotificationGrpc;

impl NotificationService for NotificationGrpc {}

/// Applies the notification service's migrations (none yet).
pub async fn migrate(_config: &Config) -> Result<(), BoxError> {
    Ok(())
}

/// The service's gRPC routes with the configured message-size limits.
pub fn routes(config: &Config) -> tonic::service::Routes {
    let service = NotificationServiceServer::new(NotificationGrpc)
        .max_decoding_message_size(config.server.message_size_max_bytes)
        .max_encoding_message_size(config.server.message_size_max_bytes);
    tonic::service::Routes::new(service)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    subsidy_common::server::serve(
        ServiceKind::Notification,
        &config,
        routes(&config),
        listener,
        shutdown,
    )
    .await?;
    Ok(())
}
