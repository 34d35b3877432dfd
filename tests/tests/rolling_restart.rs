//! A rolling restart under load: one of two application replicas is stopped as Kubernetes
//! stops a pod (SIGTERM: NOT_SERVING, drain, exit) and started again, twice, while clients
//! keep calling. A client that retries `UNAVAILABLE` on the other replica, as a gRPC client
//! with retries does, sees no failed call, and every write takes effect exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use subsidy_common::config::ServiceKind;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::App;
use subsidy_testkit::*;

/// Attempts of one call before the client gives up.
const ATTEMPTS_MAX: usize = 50;
/// Pause before trying again after `UNAVAILABLE`.
const RETRY_PAUSE_MS: u64 = 50;
/// Clients calling at once.
const CLIENTS: usize = 8;

/// Registers `uscc` through `apps`, starting with `apps[first]` and going round on
/// `UNAVAILABLE` (the replica is stopping or gone); returns the retries it took, or the
/// error that ended it.
async fn register_retrying(
    apps: &[App],
    first: usize,
    request: pb::RegisterEnterpriseRequest,
) -> Result<usize, tonic::Status> {
    let mut retries = 0;
    for attempt in 0..ATTEMPTS_MAX {
        let mut app = apps[(first + attempt) % apps.len()].clone();
        match app.register_enterprise(request.clone()).await {
            Ok(_) => return Ok(retries),
            Err(status) if unavailable(&status) => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
            }
            Err(status) => return Err(status),
        }
    }
    Err(tonic::Status::unavailable("every attempt was UNAVAILABLE"))
}

/// Whether a call failed because the replica was not there to take it: `UNAVAILABLE`, or a
/// stream the client's own transport lost to the connection closing (the server's GOAWAY of
/// its drain: such a call never reached the service). grpc-go and grpc-java report the
/// latter as `UNAVAILABLE`; tonic reports it as `CANCELLED` or `INTERNAL` with the transport
/// error as its source, so this client classifies it as they do.
fn unavailable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status.code() == tonic::Code::Unavailable
        || status
            .source()
            .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_call_of_a_retrying_client() {
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let replica = stack.spawn_replica(ServiceKind::Application).await;
    // Lazily connecting channels reconnect by themselves once the replica is back. An
    // administrator registers the enterprises (the kit's operator token would name hundreds).
    let admin = Credentials::Token(
        subsidy_testkit::auth::token("roll-admin", &[Role::Admin], &[], None).into(),
    );
    let apps = Arc::new(vec![
        App::new(subsidy_testkit::auth::connect_lazy_as(
            &stack.urls[&ServiceKind::Application],
            admin.clone(),
        )),
        App::new(subsidy_testkit::auth::connect_lazy_as(&replica.url, admin)),
    ]);
    let done = Arc::new(AtomicBool::new(false));
    let (calls, retries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (apps, done) = (apps.clone(), done.clone());
            let (calls, retries) = (calls.clone(), retries.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut registered = Vec::new();
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    let uscc = subsidy_common::uscc::complete(&format!(
                        "91370100MR{:07}",
                        client * 100_000 + n
                    ));
                    let request = pb::RegisterEnterpriseRequest {
                        request_id: format!("roll-{client}-{n}"),
                        uscc: uscc.to_string(),
                        name: format!("Enterprise {uscc}"),
                        contact_email: "ops@example.cn".into(),
                        ..pb::RegisterEnterpriseRequest::default()
                    };
                    match register_retrying(&apps, client + n, request).await {
                        Ok(count) => {
                            retries.fetch_add(count, Ordering::SeqCst);
                            registered.push(uscc.to_string());
                        }
                        Err(status) => failures.push(format!("{status:?}")),
                    }
                    calls.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
                (registered, failures)
            })
        })
        .collect();

    // Two rounds of: stop the first replica (drain), a moment down, start it again.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.stop(ServiceKind::Application).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.restart(ServiceKind::Application).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);

    let mut registered = Vec::new();
    let mut failures = Vec::new();
    for outcome in join_all(clients).await {
        let (mut ok, mut failed) = outcome.expect("a client task");
        registered.append(&mut ok);
        failures.append(&mut failed);
    }
    eprintln!(
        "{} calls, {} retries after UNAVAILABLE, {} failed",
        calls.load(Ordering::SeqCst),
        retries.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed calls, the first: {:?}",
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        registered.len() >= 50,
        "the load ran: {} calls",
        registered.len()
    );
    let db = stack.database(ServiceKind::Application).await;
    let stored: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM enterprises")
        .fetch_one(&db.pool)
        .await
        .expect("count the enterprises");
    assert_eq!(
        stored,
        registered.len() as i64,
        "every registration took effect exactly once"
    );
    replica.stop().await;
    stack.shutdown().await;
}
