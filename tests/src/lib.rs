//! The cross-service tests' harness: the test kit's in-process stack running the real four
//! services of the `subsidy` umbrella crate.
#![forbid(unsafe_code)]

use futures::FutureExt;
use futures::future::BoxFuture;
use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use subsidy_testkit::{Overrides, Stack};

/// Runs one of the real services (the [`subsidy_testkit::Launch`] of the real stack).
pub fn launch(
    kind: ServiceKind,
    config: Config,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> BoxFuture<'static, Result<(), BoxError>> {
    subsidy::launch::run_service(kind, config, listener, stop).boxed()
}

/// Spawns the four real services with default settings.
pub async fn spawn() -> Stack {
    Stack::spawn(std::sync::Arc::new(launch)).await
}

/// Spawns the four real services; `overrides` adds environment variables to a service's
/// configuration.
pub async fn spawn_with(overrides: Overrides) -> Stack {
    Stack::spawn_with(std::sync::Arc::new(launch), overrides).await
}

/// Spawns the four services with `fakes` in the place of the real ones they name (the kit's
/// scripted rules service, say); `overrides` adds environment variables to a service's
/// configuration.
pub async fn spawn_with_fakes(
    overrides: Overrides,
    fakes: Vec<(ServiceKind, tonic::service::Routes)>,
) -> Stack {
    let launch = subsidy_testkit::fakes::with_fakes(std::sync::Arc::new(launch), fakes);
    Stack::spawn_with(launch, overrides).await
}
