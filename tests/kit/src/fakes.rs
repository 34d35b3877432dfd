//! Fake peers in the stack: a test serves its own implementation of a service's gRPC contract
//! (a scripted rules service, say, whose state the test keeps a handle to) in the place of the
//! real one. The fake is served like a real service (health, reflection, graceful stop), so the
//! stack starts, stops and restarts it like any other; its state lives in the handle and so
//! survives a restart.

use futures::FutureExt;
use futures::future::BoxFuture;
use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::security::Security;
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
        let security = Security::load(kind, &config)?;
        subsidy_common::server::serve(
            kind,
            &config,
            &security,
            None,
            subsidy_common::server::Upkeep::default(),
            routes,
            listener,
            stopped(stop),
        )
        .await?;
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

/// Serves the routes `make` builds from the test configuration of `kind` (the kit's TLS and
/// token settings, otherwise defaults) on a free port of 127.0.0.1, for as long as the test
/// runs, recording refused changes in `audit` when given, and returns the kit's default
/// channel to it: one service under test without the rest of the stack.
pub async fn serve_alone(
    kind: ServiceKind,
    audit: Option<subsidy_common::db::Db>,
    make: impl FnOnce(&Config) -> Routes,
) -> crate::auth::Channel {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut env: std::collections::HashMap<String, String> =
        crate::auth::service_env(kind).into_iter().collect();
    env.insert("SUBSIDY_LISTEN".into(), addr.to_string());
    env.insert("SUBSIDY_METRICS_LISTEN".into(), "127.0.0.1:0".into());
    let config = Config::load(kind, None, &env).expect("the test configuration is valid");
    let routes = make(&config);
    let security = Security::load(kind, &config).expect("the test credentials load");
    tokio::spawn(async move {
        subsidy_common::server::serve(
            kind,
            &config,
            &security,
            audit.as_ref(),
            subsidy_common::server::Upkeep::default(),
            routes,
            listener,
            std::future::pending(),
        )
        .await
    });
    crate::auth::connect(&format!("http://{addr}")).await
}
