//! The server's own limits answer like every other refusal, with one `ErrorInfo` of domain
//! `subsidy.server`, and the service keeps serving: a message over the size limit, a call past
//! its deadline, too many calls at once on one connection. The budget service stands for all
//! four (they share the server).

use std::time::{Duration, Instant};

use subsidy_common::config::ServiceKind;
use subsidy_common::db::Db;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::status::{metadata, reason};
use subsidy_testkit::*;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The budget's message limit in these tests (the smallest allowed).
const MESSAGE_LIMIT: usize = 4096;
/// The budget's deadline in these tests, in milliseconds.
const TIMEOUT_MS: u64 = 300;
/// The budget's calls at once per connection in these tests.
const CALLS_PER_CONNECTION: usize = 2;

async fn stack() -> Stack {
    let mut overrides = Overrides::new();
    overrides.insert(
        ServiceKind::Budget,
        vec![
            (
                "SUBSIDY_MESSAGE_SIZE_MAX_BYTES".into(),
                MESSAGE_LIMIT.to_string(),
            ),
            ("SUBSIDY_REQUEST_TIMEOUT_MS".into(), TIMEOUT_MS.to_string()),
            (
                "SUBSIDY_CONCURRENCY_PER_CONNECTION_MAX".into(),
                CALLS_PER_CONNECTION.to_string(),
            ),
        ],
    );
    subsidy_tests::spawn_with(overrides).await
}

fn pool(request_id: &str, display_name: String) -> bpb::CreatePoolRequest {
    bpb::CreatePoolRequest {
        request_id: request_id.into(),
        pool_id: request_id.into(),
        display_name,
        total: cny(100_000),
        beneficiary_cap: None,
        reservation_cap: None,
        default_hold_seconds: 3600,
    }
}

/// Checks `status` carries exactly one `ErrorInfo` of the server's domain with `reason`.
fn server_refusal(status: &Status, code: Code, expected: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details_vec();
    let infos: Vec<_> = details
        .iter()
        .filter_map(|detail| match detail {
            tonic_types::ErrorDetail::ErrorInfo(info) => Some(info),
            _ => None,
        })
        .collect();
    assert_eq!(infos.len(), 1, "exactly one ErrorInfo: {status:?}");
    assert_eq!(infos[0].domain, "subsidy.server");
    assert_eq!(reason(status).as_deref(), Some(expected));
}

/// Holds the budget's pools table: creating a pool waits until the guard is dropped.
async fn hold_pools(db: &Db) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut tx = db.begin_write().await.expect("begin");
    if db.backend == subsidy_common::db::Backend::Postgres {
        sqlx::query("LOCK TABLE pools IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock the pools");
    }
    // On SQLite the write transaction itself excludes every other writer.
    tx
}

#[tokio::test]
async fn a_message_over_the_limit_is_message_too_large_and_the_service_serves_on() {
    // Proves RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE with the limit and size in its metadata,
    // instead of tonic's OUT_OF_RANGE text, and that the next call is served.
    let stack = stack().await;
    let mut budget: BudgetServiceClient<Channel> = stack.budget().await;
    let status = budget
        .create_pool(pool("too-large", "x".repeat(2 * MESSAGE_LIMIT)))
        .await
        .unwrap_err();
    server_refusal(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    let metadata = metadata(&status);
    assert_eq!(metadata["limit_bytes"], MESSAGE_LIMIT.to_string());
    assert!(metadata["size_bytes"].parse::<usize>().unwrap() > 2 * MESSAGE_LIMIT);
    budget
        .create_pool(pool("small-enough", "a pool".into()))
        .await
        .expect("served on");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_with_the_deadline_named() {
    // Proves DEADLINE_EXCEEDED / DEADLINE_EXCEEDED with `timeout_ms`, from the server's own
    // limit and from a shorter deadline of the caller, and that the service serves on.
    let stack = stack().await;
    let mut budget: BudgetServiceClient<Channel> = stack.budget().await;
    let db = stack.database(ServiceKind::Budget).await;
    let guard = hold_pools(&db).await;
    let started = Instant::now();
    let status = budget
        .create_pool(pool("slow", "a pool".into()))
        .await
        .unwrap_err();
    server_refusal(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert_eq!(metadata(&status)["timeout_ms"], TIMEOUT_MS.to_string());
    assert!(started.elapsed() >= Duration::from_millis(TIMEOUT_MS));

    // A caller's deadline longer than the server's does not lengthen it. (A shorter one is
    // honoured too, but then the caller's own client gives up first.)
    let mut request = tonic::Request::new(pool("slower", "a pool".into()));
    request
        .metadata_mut()
        .insert("grpc-timeout", "10S".parse().unwrap());
    let status = budget.create_pool(request).await.unwrap_err();
    server_refusal(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert_eq!(metadata(&status)["timeout_ms"], TIMEOUT_MS.to_string());
    guard.rollback().await.expect("release the pools");
    budget
        .create_pool(pool("in-time", "a pool".into()))
        .await
        .expect("served on");
    stack.shutdown().await;
}

#[tokio::test]
async fn more_calls_at_once_than_a_connection_may_make_are_refused_at_once() {
    // Proves RESOURCE_EXHAUSTED / CONCURRENCY_LIMIT_REACHED with the limit and a RetryInfo,
    // answered at once while the connection's places are taken, and that another connection
    // and the same one afterwards are served.
    let stack = stack().await;
    // A person's connection (the services' own connections are not limited: they carry
    // callers limited at the front door).
    let person = || {
        stack.channel_as(
            ServiceKind::Budget,
            Transport::Anonymous,
            Credentials::Operator,
        )
    };
    let budget = BudgetServiceClient::new(person().await);
    let db = stack.database(ServiceKind::Budget).await;
    let guard = hold_pools(&db).await;
    let waiting: Vec<_> = (0..CALLS_PER_CONNECTION)
        .map(|n| {
            let mut budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .create_pool(pool(&format!("wait-{n}"), "a pool".into()))
                    .await
            })
        })
        .collect();
    // The waiting calls take their places before the next one asks.
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = Instant::now();
        match budget
            .clone()
            .get_pool(bpb::GetPoolRequest {
                pool_id: "none".into(),
            })
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS));
                refused = Some(status);
                break;
            }
            _ => continue,
        }
    }
    let status = refused.expect("a third call at once is refused");
    server_refusal(
        &status,
        Code::ResourceExhausted,
        "CONCURRENCY_LIMIT_REACHED",
    );
    assert_eq!(metadata(&status)["limit"], CALLS_PER_CONNECTION.to_string());
    assert!(status.get_details_retry_info().is_some(), "a RetryInfo");
    // Another connection has places of its own.
    let mut other = BudgetServiceClient::new(person().await);
    let status = other
        .get_pool(bpb::GetPoolRequest {
            pool_id: "none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A service's connection is not limited: more calls at once than the limit all pass.
    let service: BudgetServiceClient<Channel> = stack.budget().await;
    let held: Vec<_> = (0..=CALLS_PER_CONNECTION)
        .map(|n| {
            let mut service = service.clone();
            tokio::spawn(async move {
                service
                    .create_pool(pool(&format!("service-{n}"), "a pool".into()))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = service
        .clone()
        .get_pool(bpb::GetPoolRequest {
            pool_id: "none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    guard.rollback().await.expect("release the pools");
    for call in waiting.into_iter().chain(held) {
        let _ = call.await.expect("the call ran");
    }
    let mut budget = budget;
    let status = budget
        .get_pool(bpb::GetPoolRequest {
            pool_id: "none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "served on: {status:?}");
    stack.shutdown().await;
}
