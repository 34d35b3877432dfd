//! Fake peers in the stack: a test serves its own implementation of a service's gRPC contract
//! (a scripted rules service, say, whose state the test keeps a handle to) in the place of the
//! real one. The fake is served like a real service (health, reflection, graceful stop), so the
//! stack starts, stops and restarts it like any other; its state lives in the handle and so
//! survives a restart.

use futures::FutureExt;
use futures::future::BoxFuture;
use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;

use crate::stack::Launch;

/// Completes once `stop` turns true (or its sender is gone): the shutdown future of a service.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `routes` as the service `kind` on `listener` until `stop` turns true.
pub fn serve(
    kind: ServiceKind,
    config: Config,
    routes: Routes,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> BoxFuture<'static, Result<(), BoxError>> {
    async move {
        subsidy_common::server::serve(kind, &config, routes, listener, stopped(stop)).await?;
        Ok(())
    }
    .boxed()
}

/// A launch that serves `fakes` for the services they name and hands every other service to
/// `real`.
pub fn with_fakes(real: Launch, fakes: Vec<(ServiceKind, Routes)>) -> Launch {
    std::sync::Arc::new(move |kind, config, listener, stop| {
        match fakes.iter().find(|(faked, _)| *faked == kind) {
            Some((_, routes)) => serve(kind, config, routes.clone(), listener, stop),
            None => real(kind, config, listener, stop),
        }
    })
}

/// Serves the routes `make` builds from the default configuration of `kind` on a free port of
/// 127.0.0.1, for as long as the test runs, and returns a connected channel: one service
/// under test without the rest of the stack.
pub async fn serve_alone(
    kind: ServiceKind,
    make: impl FnOnce(&Config) -> Routes,
) -> tonic::transport::Channel {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let config = Config::load(kind, None, &std::collections::HashMap::new())
        .expect("the default configuration is valid");
    let routes = make(&config);
    tokio::spawn(async move {
        subsidy_common::server::serve(kind, &config, routes, listener, std::future::pending()).await
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URL")
        .connect()
        .await
        .expect("connect to the service just started")
}
