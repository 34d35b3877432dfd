//! Group commit seen from callers: concurrent duplicates answered as replays, conflicting
//! reuse refused, a refusal that refuses only itself, a panicking batch that leaves no caller
//! hanging, closing a pool, and the idempotent expiry call.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use futures::future::join_all;
use subsidy_proto::budget as pb;
use subsidy_proto::status::{metadata, reason};
use support::*;
use tonic::Code;

fn reserve(request_id: &str, pool: &str, who: usize, amount_fen: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.into(),
        pool_id: pool.into(),
        beneficiary_uscc: beneficiary(who).to_string(),
        amount: cny(amount_fen),
        reference: format!("ref-{request_id}"),
        hold_seconds: 0,
    }
}

async fn reservations_of(db: &subsidy_common::db::Db, pool: &str) -> i64 {
    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM reservations WHERE pool_id = $1")
        .bind(pool)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_one_request_get_one_effect_and_identical_answers() {
    // Proves: sixteen callers sending the same Reserve (same request_id, same body) at once,
    // some in one batch and some in the next, all get the same reservation, and one hold is
    // made; the same holds for sixteen identical Commits of it.
    let db = fresh_db("budget_dup").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "dup", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let answers = join_all((0..16).map(|_| {
        let mut client = client.clone();
        async move { client.reserve(reserve("same", "dup", 1, 500_00)).await }
    }))
    .await;
    let reservations: Vec<pb::Reservation> = answers
        .into_iter()
        .map(|a| {
            a.expect("every duplicate succeeds")
                .into_inner()
                .reservation
                .unwrap()
        })
        .collect();
    assert!(reservations.iter().all(|r| *r == reservations[0]));
    assert_eq!(reservations_of(&inspect, "dup").await, 1);
    let id = reservations[0].reservation_id.clone();
    let commits = join_all((0..16).map(|_| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            client
                .commit(pb::CommitRequest {
                    request_id: "commit-same".into(),
                    reservation_id: id,
                    amount: cny(300_00),
                })
                .await
        }
    }))
    .await;
    let committed: Vec<pb::Reservation> = commits
        .into_iter()
        .map(|a| {
            a.expect("every duplicate commit succeeds")
                .into_inner()
                .reservation
                .unwrap()
        })
        .collect();
    assert!(committed.iter().all(|r| *r == committed[0]));
    assert_eq!(fen_of(&committed[0].committed_amount), 300_00);
    assert_invariants(&inspect, "dup").await;
    // One POOL_CREATED, one RESERVED, one COMMITTED.
    assert_eq!(count(&inspect, "ledger_entries").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_id_reused_while_the_first_is_in_flight_is_refused_and_acts_once() {
    // Proves: eight callers send one body and eight another under one request_id, all at once:
    // one body takes effect (all its callers get the same reservation), every caller of the
    // other body gets ALREADY_EXISTS/REQUEST_ID_REUSED, and one hold exists.
    let db = fresh_db("budget_reuse").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "reuse", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let answers = join_all((0..16).map(|i| {
        let mut client = client.clone();
        async move {
            let amount = if i % 2 == 0 { 100_00 } else { 200_00 };
            (
                amount,
                client.reserve(reserve("shared", "reuse", 1, amount)).await,
            )
        }
    }))
    .await;
    let winners: Vec<i64> = answers
        .iter()
        .filter(|(_, a)| a.is_ok())
        .map(|(amount, _)| *amount)
        .collect();
    assert_eq!(winners.len(), 8, "exactly the callers of one body succeed");
    assert!(winners.iter().all(|a| *a == winners[0]));
    for (amount, answer) in &answers {
        if *amount != winners[0] {
            let status = answer.as_ref().expect_err("the other body is refused");
            assert_eq!(status.code(), Code::AlreadyExists);
            assert_eq!(reason(status).as_deref(), Some("REQUEST_ID_REUSED"));
        }
    }
    assert_eq!(reservations_of(&inspect, "reuse").await, 1);
    assert_invariants(&inspect, "reuse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_id_sent_to_two_pools_at_once_takes_effect_in_one() {
    // Proves: the keys of a batch are read before deciding and inserted with the responses
    // after, so two pools' batches (separate writers, separate transactions, running at once
    // on PostgreSQL) that both decide a job under one request id cannot both act: for each of
    // forty request ids, sent at once as a Reserve to pool A and a Reserve to pool B (two
    // callers each), exactly one pool holds money for it, both of its callers get the same
    // reservation, the callers of the other pool get REQUEST_ID_REUSED, and every key is
    // stored once with its response.
    let db = fresh_db("budget_two_pools").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "pool-a", 1_000_000_00, None, None).await;
    create_pool(&store, "pool-b", 1_000_000_00, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let ids: Vec<String> = (0..40).map(|i| format!("both-{i}")).collect();
    let calls = ids.iter().enumerate().flat_map(|(i, id)| {
        ["pool-a", "pool-b", "pool-a", "pool-b"].map(|pool| {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let mut request = reserve(&id, pool, i, 100_00);
                request.reference = "same-reference".into();
                (id, pool, client.reserve(request).await)
            }
        })
    });
    let answers = join_all(calls).await;
    for id in &ids {
        let mine: Vec<_> = answers.iter().filter(|(i, ..)| i == id).collect();
        let winners: Vec<_> = mine.iter().filter(|(.., a)| a.is_ok()).collect();
        assert_eq!(
            winners.len(),
            2,
            "{id}: the two callers of one pool succeed"
        );
        assert_eq!(winners[0].1, winners[1].1, "{id}: one pool won");
        let won = |a: &&&(
            String,
            &str,
            Result<tonic::Response<pb::ReserveResponse>, tonic::Status>,
        )| { a.2.as_ref().unwrap().get_ref().reservation.clone().unwrap() };
        assert_eq!(won(&winners[0]), won(&winners[1]), "{id}: one reservation");
        for (_, pool, answer) in mine.iter().filter(|(.., a)| a.is_err()) {
            assert_ne!(*pool, winners[0].1);
            let status = answer.as_ref().unwrap_err();
            assert_eq!(status.code(), Code::AlreadyExists, "{id}: {status:?}");
            assert_eq!(reason(status).as_deref(), Some("REQUEST_ID_REUSED"));
        }
    }
    assert_eq!(
        reservations_of(&inspect, "pool-a").await + reservations_of(&inspect, "pool-b").await,
        40
    );
    let without_response: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys WHERE response IS NULL",
    )
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(without_response, 0, "every key is stored with its response");
    assert_eq!(count(&inspect, "idempotency_keys").await, 2 + 40);
    assert_invariants(&inspect, "pool-a").await;
    assert_invariants(&inspect, "pool-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_one_crowded_pool_each_refusal_refuses_only_itself() {
    // Proves: forty concurrent holds of 1,000.00 against a pool of 10,000.00 — batched together
    // — fund exactly ten; the thirty others are POOL_EXHAUSTED, naming what was available, and
    // store nothing, so their request ids are free for a retry.
    let db = fresh_db("budget_crowd").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "crowd", 10_000_00, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let answers = join_all((0..40).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .reserve(reserve(&format!("c-{i}"), "crowd", i, 1_000_00))
                .await
        }
    }))
    .await;
    let (funded, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(Result::is_ok);
    assert_eq!(funded.len(), 10);
    for status in refused.iter().map(|a| a.as_ref().unwrap_err()) {
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(status).as_deref(), Some("POOL_EXHAUSTED"));
        assert_eq!(
            metadata(status).get("available").map(String::as_str),
            Some("0.00")
        );
        assert_eq!(
            metadata(status).get("pool_id").map(String::as_str),
            Some("crowd")
        );
    }
    assert_eq!(
        count(&inspect, "idempotency_keys").await,
        1 + 10,
        "pool creation and ten holds"
    );
    assert_invariants(&inspect, "crowd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_panics_answers_its_callers_and_the_writer_goes_on() {
    // Proves: a batch whose decision panics answers every caller in it UNAVAILABLE (nobody
    // hangs), stores nothing, and the pool's writer takes the next batch: the same requests
    // retried without the fault take effect once.
    let db = fresh_db("budget_panic").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "panic", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let mut poisoned = reserve("p-0", "panic", 0, 100_00);
    poisoned.reference = subsidy_budget::ops::batch::PANIC_REFERENCE.into();
    let answers = join_all((0..8).map(|i| {
        let mut client = client.clone();
        let request = if i == 0 {
            poisoned.clone()
        } else {
            reserve(&format!("p-{i}"), "panic", i, 100_00)
        };
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(20), client.reserve(request))
                .await
                .expect("no caller hangs")
        }
    }))
    .await;
    let status = answers[0].as_ref().expect_err("the poisoned request fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(status).as_deref(), Some("STORAGE_UNAVAILABLE"));
    for answer in &answers[1..] {
        if let Err(status) = answer {
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "its batch fellows: {status:?}"
            );
        }
    }
    let mut client = client.clone();
    for i in 1..8 {
        client
            .reserve(reserve(&format!("p-{i}"), "panic", i, 100_00))
            .await
            .expect("the writer goes on");
    }
    assert_eq!(reservations_of(&inspect, "panic").await, 7);
    assert_invariants(&inspect, "panic").await;
}

#[tokio::test]
async fn a_closed_pool_refuses_new_holds_and_lets_earlier_holds_settle() {
    // Proves ClosePool: afterwards a hold is FAILED_PRECONDITION/POOL_CLOSED, while holds made
    // before are committed and released; closing is in the ledger, replayable, and final.
    let db = fresh_db("budget_close").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "year-end", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let first = client
        .reserve(reserve("h-1", "year-end", 1, 100_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let second = client
        .reserve(reserve("h-2", "year-end", 2, 100_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let close = pb::ClosePoolRequest {
        request_id: "close-1".into(),
        pool_id: "year-end".into(),
        reason: "end of the 2025 program year".into(),
    };
    let closed = client.close_pool(close.clone()).await.unwrap().into_inner();
    let pool = closed.pool.clone().unwrap();
    assert_eq!(pool.state(), pb::PoolState::Closed);
    assert!(pool.close_time.is_some());
    assert_eq!(client.close_pool(close).await.unwrap().into_inner(), closed);
    let status = client
        .close_pool(pb::ClosePoolRequest {
            request_id: "close-2".into(),
            pool_id: "year-end".into(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("POOL_CLOSED"));
    let status = client
        .reserve(reserve("h-3", "year-end", 3, 100_00))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("POOL_CLOSED"));
    client
        .commit(pb::CommitRequest {
            request_id: "c-1".into(),
            reservation_id: first.reservation_id,
            amount: cny(100_00),
        })
        .await
        .expect("an earlier hold commits");
    client
        .release(pb::ReleaseRequest {
            request_id: "r-2".into(),
            reservation_id: second.reservation_id,
            reason: "not needed".into(),
        })
        .await
        .expect("an earlier hold releases");
    let kinds: Vec<i32> = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            pool_id: "year-end".into(),
            page_size: 100,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&(pb::LedgerEntryKind::PoolClosed as i32)));
    assert_invariants(&inspect, "year-end").await;
    let verify = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verify.intact, "{verify:?}");
}

#[tokio::test]
async fn expire_reservations_is_idempotent_by_request_id() {
    // Proves: ExpireReservations needs a request_id, and replaying it returns the first count
    // even though nothing is left to expire.
    let db = fresh_db("budget_expire_once").await;
    let store = store(&db.url, 0).await;
    let store_ahead = support::store(&db.url, 5_000_000).await;
    create_pool(&store, "expire", 1_000_000, None, None).await;
    let mut client = spawn(store).await;
    for i in 0..3 {
        let mut request = reserve(&format!("e-{i}"), "expire", i, 100_00);
        request.hold_seconds = 1;
        client.reserve(request).await.unwrap();
    }
    let status = client
        .expire_reservations(pb::ExpireReservationsRequest {
            limit: 0,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A second server whose clock runs five seconds ahead finds the one-second holds due.
    let mut client = spawn(store_ahead).await;
    let request = pb::ExpireReservationsRequest {
        limit: 0,
        request_id: "sweep-1".into(),
    };
    let first = client
        .expire_reservations(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.expired_count, 3);
    let replay = client
        .expire_reservations(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, first);
    let fresh = client
        .expire_reservations(pb::ExpireReservationsRequest {
            limit: 0,
            request_id: "sweep-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.expired_count, 0);
}
