//! Health that tells the truth, as a Kubernetes probe asks it (`grpc.health.v1`, TLS, no client
//! certificate): a service's own name is readiness, NOT_SERVING while its database does not
//! answer and from the moment shutdown begins; the empty name is liveness, which a database
//! outage leaves SERVING (a restart does not bring a database back).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use subsidy_common::config::ServiceKind;
use subsidy_testkit::outage::Outage;
use subsidy_testkit::requests::register;
use subsidy_testkit::shandong;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

/// How long readiness may take to follow the database: the default check interval (1 s) plus
/// the default check timeout (2 s), with room for a loaded machine.
const READINESS_FOLLOWS_MS_MAX: u64 = 8_000;

/// Waits until every service answers `status` for its readiness, and returns how long that
/// took for the slowest one.
async fn wait_readiness(
    stack: &subsidy_testkit::Stack,
    status: ServingStatus,
    since: Instant,
) -> Duration {
    let mut seen: HashMap<ServiceKind, Duration> = HashMap::new();
    let deadline = since + Duration::from_millis(READINESS_FOLLOWS_MS_MAX);
    while seen.len() < ServiceKind::ALL.len() {
        for kind in ServiceKind::ALL {
            if seen.contains_key(&kind) {
                continue;
            }
            if stack.health(kind, kind.grpc_name()).await == Some(status) {
                seen.insert(kind, since.elapsed());
            }
        }
        let missing: Vec<_> = ServiceKind::ALL
            .iter()
            .filter(|kind| !seen.contains_key(kind))
            .map(|kind| kind.name())
            .collect();
        assert!(
            Instant::now() < deadline,
            "readiness of {missing:?} is not {} after {READINESS_FOLLOWS_MS_MAX} ms",
            status.as_str_name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.into_values().max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_liveness_does_not() {
    // Proves: with its PostgreSQL database taken away (connections terminated, CONNECT revoked)
    // every service reports its readiness NOT_SERVING within seconds while liveness stays
    // SERVING, and both SERVING again once the database is back, when calls succeed again.
    // PostgreSQL only: a SQLite file is not a server that goes away (error_reasons.rs covers
    // SQLite's locked-database failure).
    if subsidy_common::db::testing::test_backend().is_none() {
        eprintln!(
            "runs in the PostgreSQL pass: set SUBSIDY_TEST_DATABASE=postgres://… (scripts/test does)"
        );
        return;
    }
    let stack = subsidy_tests::spawn().await;
    let mut outages = Vec::new();
    for kind in ServiceKind::ALL {
        outages.push(Outage::begin(&stack, kind).await);
    }
    let taken = Instant::now();
    let down = wait_readiness(&stack, ServingStatus::NotServing, taken).await;
    for kind in ServiceKind::ALL {
        assert_eq!(
            stack.health(kind, "").await,
            Some(ServingStatus::Serving),
            "{}: liveness stays SERVING while the database is away",
            kind.name()
        );
    }
    // Still not ready a moment later: the status does not flap back on its own.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for kind in ServiceKind::ALL {
        assert_eq!(
            stack.health(kind, kind.grpc_name()).await,
            Some(ServingStatus::NotServing),
            "{}: not ready while the database is away",
            kind.name()
        );
    }

    for outage in outages {
        outage.end().await;
    }
    let given_back = Instant::now();
    let up = wait_readiness(&stack, ServingStatus::Serving, given_back).await;
    eprintln!(
        "readiness NOT_SERVING after {} ms, SERVING again after {} ms",
        down.as_millis(),
        up.as_millis()
    );
    let mut app = stack.app().await;
    register(&mut app, &shandong(41)).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_before_the_drain() {
    // Proves: a probe watching a service sees readiness and liveness turn NOT_SERVING as soon
    // as shutdown begins, while the server still drains (the watch itself is a call in flight
    // that the drain lets finish), so Kubernetes stops routing before the process goes.
    let mut stack = subsidy_tests::spawn().await;
    for kind in ServiceKind::ALL {
        let mut watches = Vec::new();
        for name in [kind.grpc_name(), ""] {
            let mut client = stack
                .health_client(kind)
                .await
                .expect("connect like a probe");
            let mut stream = client
                .watch(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("watch health")
                .into_inner();
            let first = stream.message().await.expect("a first status");
            assert_eq!(
                first.map(|answer| answer.status()),
                Some(ServingStatus::Serving),
                "{} {name:?} is SERVING before shutdown",
                kind.name()
            );
            watches.push((name, stream));
        }
        let started = Instant::now();
        stack.signal_stop(kind);
        for (name, mut stream) in watches {
            let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .unwrap_or_else(|_| panic!("{} {name:?}: no status after shutdown", kind.name()))
                .expect("the status arrives before the drain ends the call");
            assert_eq!(
                next.map(|answer| answer.status()),
                Some(ServingStatus::NotServing),
                "{} {name:?} is NOT_SERVING once shutdown begins",
                kind.name()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}: NOT_SERVING came within the drain",
            kind.name()
        );
        stack.stop(kind).await;
    }
}
