//! Helpers of the application's cross-service tests: stacks of the real services (or the real
//! ones with the kit's scripted rules), crashes at a fault point, and checks against the rows
//! of the application, the budget's ledger and the notification service's feed.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use subsidy_common::config::ServiceKind;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_testkit::wait::WAIT_MS_MAX;
use subsidy_testkit::{Overrides, ScriptedRules, Stack, eventually, fen_of, test_pool_application};
use tokio::sync::Notify;

/// The seeded compute-voucher pool: 30,000,000.00 with the enterprise cap of 5,000,000.00.
pub const VOUCHER_POOL: &str = "compute-voucher-2025";
/// The four real services with quick application settings plus `app_env`, funding compute
/// vouchers from the kit's `TEST_POOL` of `total_fen` whose holds last `hold_seconds`.
pub async fn with_pool(total_fen: i64, hold_seconds: i64, app_env: &[(&str, &str)]) -> Stack {
    with_pool_and(test_pool_application(app_env), total_fen, hold_seconds).await
}

/// Like [`with_pool`] with the whole `overrides` given (settings of other services, say).
pub async fn with_pool_and(overrides: Overrides, total_fen: i64, hold_seconds: i64) -> Stack {
    let stack = subsidy_tests::spawn_with(overrides).await;
    stack.create_test_pool(total_fen, hold_seconds).await;
    stack
}

/// Like [`with_pool`] with the kit's scripted rules service in the place of the real one.
pub async fn with_pool_and_scripted_rules(
    total_fen: i64,
    hold_seconds: i64,
    app_env: &[(&str, &str)],
) -> (Stack, ScriptedRules) {
    let rules = ScriptedRules::default();
    let stack = subsidy_tests::spawn_with_fakes(
        test_pool_application(app_env),
        vec![(ServiceKind::Rules, rules.routes())],
    )
    .await;
    stack.create_test_pool(total_fen, hold_seconds).await;
    (stack, rules)
}

/// Runs `call` until the application reaches the fault point `reached`, then kills the
/// application there (the call dies with it, as with a crash) and starts it again on its port
/// and database.
pub async fn crash_at<T: Send + 'static>(
    stack: &mut Stack,
    reached: Arc<Notify>,
    call: impl Future<Output = T> + Send + 'static,
) {
    let call = tokio::spawn(call);
    tokio::time::timeout(Duration::from_millis(WAIT_MS_MAX), reached.notified())
        .await
        .expect("the workflow reached the fault point");
    stack.kill(ServiceKind::Application).await;
    call.abort();
    stack.restart(ServiceKind::Application).await;
}

/// Checks the budget's ledger chain and counters.
pub async fn assert_ledger_intact(stack: &Stack) {
    let report = stack
        .budget()
        .await
        .verify_ledger(bpb::VerifyLedgerRequest {})
        .await
        .expect("verify the ledger")
        .into_inner();
    assert!(report.intact, "{report:?}");
}

/// The events the notification service stored for one application (every event when
/// `application_id` is empty), in feed order.
pub async fn events_of(stack: &Stack, application_id: &str) -> Vec<npb::Event> {
    let mut client = stack.notification().await;
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(npb::ListEventsRequest {
                application_id: application_id.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list the events")
            .into_inner();
        events.extend(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            return events;
        }
    }
}

/// The types of `events`, in order.
pub fn types(events: &[npb::Event]) -> Vec<npb::EventType> {
    events.iter().map(|e| e.r#type()).collect()
}

/// Waits until the notification service holds `count` events for an application.
pub async fn wait_event_count(
    stack: &Stack,
    application_id: &str,
    count: usize,
) -> Vec<npb::Event> {
    eventually(
        &format!("{count} events of {application_id}"),
        || async move {
            let events = events_of(stack, application_id).await;
            (events.len() == count).then_some(events)
        },
    )
    .await
}

/// Waits until the notification service holds exactly `types` for an application, in order.
pub async fn wait_events(
    stack: &Stack,
    application_id: &str,
    wanted: &[npb::EventType],
) -> Vec<npb::Event> {
    eventually(&format!("the events of {application_id}"), || async move {
        let events = events_of(stack, application_id).await;
        (types(&events) == wanted).then_some(events)
    })
    .await
}

/// The application's outbox rows not delivered yet.
pub async fn undelivered(db: &subsidy_common::db::Db) -> i64 {
    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE delivered_us IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count the undelivered outbox rows")
}

/// Checks every claim of `pool_id` against its rows and the budget: the revision counts the
/// history entries without gaps, a claim under review owns exactly one HELD reservation of its
/// reserved amount, an approved or paid claim exactly one COMMITTED reservation of its approved
/// amount, any other claim holds nothing, and the pool holds exactly what the claims under
/// review do.
pub async fn assert_claims_consistent(stack: &Stack, pool_id: &str) {
    let db = stack.database(ServiceKind::Application).await;
    let claims: Vec<(String, String, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT claim_id, state, revision, reserved_fen, approved_fen, reservation_id FROM claims \
         WHERE pool_id = $1",
    )
    .bind(pool_id)
    .fetch_all(&db.pool)
    .await
    .expect("read the claims");
    let mut held_by_claims = 0;
    for (claim_id, state, revision, reserved, approved, reservation_id) in claims {
        let sequences: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM history WHERE application_id = $1 ORDER BY sequence",
        )
        .bind(&claim_id)
        .fetch_all(&db.pool)
        .await
        .expect("read the history");
        assert_eq!(
            sequences,
            (1..=revision).collect::<Vec<_>>(),
            "{claim_id}: history"
        );
        let reservations = stack.reservations(pool_id, &claim_id).await;
        let held: Vec<_> = reservations
            .iter()
            .filter(|r| r.state() == bpb::ReservationState::Held)
            .collect();
        let committed: Vec<_> = reservations
            .iter()
            .filter(|r| r.state() == bpb::ReservationState::Committed)
            .collect();
        match state.as_str() {
            "PENDING_REVIEW" | "NEEDS_INFORMATION" => {
                assert_eq!(held.len(), 1, "{claim_id}: one hold");
                assert_eq!(Some(&held[0].reservation_id), reservation_id.as_ref());
                assert_eq!(fen_of(&held[0].held_amount), reserved, "{claim_id}: held");
                held_by_claims += reserved;
            }
            "APPROVED" | "DISBURSED" => {
                assert!(held.is_empty(), "{claim_id}: nothing held");
                assert_eq!(committed.len(), 1, "{claim_id}: one commitment");
                assert_eq!(fen_of(&committed[0].committed_amount), approved);
            }
            _ => {
                assert!(held.is_empty(), "{claim_id} ({state}): nothing held");
                assert!(
                    committed.is_empty(),
                    "{claim_id} ({state}): nothing committed"
                );
            }
        }
    }
    assert_eq!(
        fen_of(&stack.pool(pool_id).await.held),
        held_by_claims,
        "the pool holds exactly what the claims under review hold"
    );
}
