//! The budget's gRPC behaviour: validation, caps, commits, idempotency, ledger.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use futures::future::join_all;
use subsidy_proto::budget as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

fn reserve_request(
    request_id: &str,
    pool: &str,
    who: usize,
    amount_fen: i64,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.into(),
        pool_id: pool.into(),
        beneficiary_uscc: beneficiary(who).to_string(),
        amount: cny(amount_fen),
        reference: format!("app-{request_id}"),
        hold_seconds: 0,
    }
}

#[tokio::test]
async fn invalid_requests_are_refused_with_field_violations_and_write_nothing() {
    let db = fresh_db("budget_bad_input").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "pool-a", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let ledger_before = count(&inspect, "ledger_entries").await;
    let keys_before = count(&inspect, "idempotency_keys").await;
    let mut client = spawn(store).await;

    let mut cases: Vec<(pb::ReserveRequest, &str, &str)> = Vec::new();
    let base = reserve_request("r-1", "pool-a", 1, 100);
    cases.push((
        pb::ReserveRequest {
            amount: cny(0),
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            amount: Some(subsidy_proto::google::r#type::Money {
                currency_code: "CNY".into(),
                units: -5,
                nanos: 0,
            }),
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            amount: Some(subsidy_proto::google::r#type::Money {
                currency_code: "CNY".into(),
                units: 1,
                nanos: 5_000_000,
            }),
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            amount: Some(subsidy_proto::google::r#type::Money {
                currency_code: "CNY".into(),
                units: i64::MAX,
                nanos: 0,
            }),
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            amount: None,
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            amount: Some(subsidy_proto::google::r#type::Money {
                currency_code: "USD".into(),
                units: 1,
                nanos: 0,
            }),
            ..base.clone()
        },
        "amount",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            beneficiary_uscc: "91350100M000100Y44".into(),
            ..base.clone()
        },
        "beneficiary_uscc",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            beneficiary_uscc: "not-a-code".into(),
            ..base.clone()
        },
        "beneficiary_uscc",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            request_id: String::new(),
            ..base.clone()
        },
        "request_id",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            request_id: "x".repeat(129),
            ..base.clone()
        },
        "request_id",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            reference: String::new(),
            ..base.clone()
        },
        "reference",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            hold_seconds: -1,
            ..base.clone()
        },
        "hold_seconds",
        "INVALID_ARGUMENT",
    ));
    cases.push((
        pb::ReserveRequest {
            pool_id: "Bad Pool".into(),
            ..base.clone()
        },
        "pool_id",
        "INVALID_ARGUMENT",
    ));

    for (request, field, expected_reason) in cases {
        let status = client
            .reserve(request.clone())
            .await
            .expect_err("bad input is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(
            reason(&status).as_deref(),
            Some(expected_reason),
            "{request:?}"
        );
        assert!(
            violated_fields(&status).contains(&field.to_string()),
            "{field} in {:?}",
            violated_fields(&status)
        );
    }
    let status = client
        .commit(pb::CommitRequest {
            request_id: "c".into(),
            reservation_id: "r".into(),
            amount: cny(-1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // The proto: a hold in a pool that does not exist is NOT_FOUND/POOL_NOT_FOUND, naming it.
    let status = client
        .reserve(pb::ReserveRequest {
            pool_id: "no-such-pool".into(),
            ..base.clone()
        })
        .await
        .expect_err("no such pool");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("POOL_NOT_FOUND"));
    assert_eq!(
        subsidy_proto::status::metadata(&status)
            .get("pool_id")
            .map(String::as_str),
        Some("no-such-pool")
    );

    assert_eq!(
        count(&inspect, "ledger_entries").await,
        ledger_before,
        "nothing written to the ledger"
    );
    assert_eq!(
        count(&inspect, "idempotency_keys").await,
        keys_before,
        "no request id stored"
    );
    assert_eq!(count(&inspect, "reservations").await, 0);
}

#[tokio::test]
async fn caps_and_pool_exhaustion_are_refused_with_stable_reasons() {
    let db = fresh_db("budget_caps").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "capped", 1_000_00, Some(600_00), Some(500_00)).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;

    let status = client
        .reserve(reserve_request("over-res-cap", "capped", 1, 500_01))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("RESERVATION_CAP_EXCEEDED"))
    );

    client
        .reserve(reserve_request("a1", "capped", 1, 400_00))
        .await
        .unwrap();
    let status = client
        .reserve(reserve_request("a2", "capped", 1, 200_01))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("BENEFICIARY_CAP_EXCEEDED"));
    client
        .reserve(reserve_request("a3", "capped", 1, 200_00))
        .await
        .expect("exactly up to the cap");

    client
        .reserve(reserve_request("b1", "capped", 2, 400_00))
        .await
        .unwrap();
    let status = client
        .reserve(reserve_request("b2", "capped", 2, 1))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("POOL_EXHAUSTED"))
    );

    let usage = client
        .get_beneficiary_usage(pb::GetBeneficiaryUsageRequest {
            pool_id: "capped".into(),
            beneficiary_uscc: beneficiary(1).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    assert_eq!(fen_of(&usage.held), 600_00);
    assert_eq!(fen_of(&usage.remaining), 0);
    let pool = client
        .get_pool(pb::GetPoolRequest {
            pool_id: "capped".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pool
        .unwrap();
    assert_eq!((fen_of(&pool.held), fen_of(&pool.available)), (1_000_00, 0));
    assert_invariants(&inspect, "capped").await;
}

#[tokio::test]
async fn a_partial_commit_releases_the_remainder_in_the_same_step() {
    let db = fresh_db("budget_partial").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "partial", 1_000_00, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;

    let held = client
        .reserve(reserve_request("p1", "partial", 1, 300_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(held.state, pb::ReservationState::Held as i32);
    let status = client
        .commit(pb::CommitRequest {
            request_id: "c0".into(),
            reservation_id: held.reservation_id.clone(),
            amount: cny(300_01),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("COMMIT_EXCEEDS_HOLD"));
    let committed = client
        .commit(pb::CommitRequest {
            request_id: "c1".into(),
            reservation_id: held.reservation_id.clone(),
            amount: cny(123_45),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);
    assert_eq!(
        (
            fen_of(&committed.committed_amount),
            fen_of(&committed.released_amount)
        ),
        (123_45, 176_55)
    );
    let pool = client
        .get_pool(pb::GetPoolRequest {
            pool_id: "partial".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pool
        .unwrap();
    assert_eq!(
        (
            fen_of(&pool.held),
            fen_of(&pool.committed),
            fen_of(&pool.available)
        ),
        (0, 123_45, 876_55)
    );

    let status = client
        .release(pb::ReleaseRequest {
            request_id: "rel".into(),
            reservation_id: held.reservation_id.clone(),
            reason: "late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("RESERVATION_NOT_HELD"))
    );
    let status = client
        .release(pb::ReleaseRequest {
            request_id: "rel2".into(),
            reservation_id: "nope".into(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::NotFound, Some("RESERVATION_NOT_FOUND"))
    );
    assert_invariants(&inspect, "partial").await;
}

#[tokio::test]
async fn sixteen_concurrent_callers_with_fifty_request_ids_make_exactly_fifty_reservations() {
    let db = fresh_db("budget_idem").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "idem", 100_000_00, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;

    let callers = (0..16).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let response = client
                    .reserve(reserve_request(
                        &format!("idem-{i}"),
                        "idem",
                        i % 7,
                        10_00 + i as i64,
                    ))
                    .await;
                ids.push(
                    response
                        .expect("every call succeeds")
                        .into_inner()
                        .reservation
                        .unwrap()
                        .reservation_id,
                );
            }
            ids
        })
    });
    let results: Vec<Vec<String>> = join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for other in &results[1..] {
        assert_eq!(
            other, &results[0],
            "every caller sees the same reservation per request id"
        );
    }
    assert_eq!(count(&inspect, "reservations").await, 50);
    assert_invariants(&inspect, "idem").await;
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_refused() {
    let db = fresh_db("budget_reuse").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "reuse", 1_000_00, None, None).await;
    let mut client = spawn(store).await;
    client
        .reserve(reserve_request("same", "reuse", 1, 10_00))
        .await
        .unwrap();
    let status = client
        .reserve(reserve_request("same", "reuse", 1, 20_00))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("REQUEST_ID_REUSED"))
    );
}

#[tokio::test]
async fn a_replay_after_a_restart_returns_the_original_response() {
    let db = fresh_db("budget_restart").await;
    let first = store(&db.url, 0).await;
    create_pool(&first, "restart", 1_000_00, None, None).await;
    let mut client = spawn(first.clone()).await;
    let original = client
        .reserve(reserve_request("once", "restart", 1, 10_00))
        .await
        .unwrap()
        .into_inner();
    let reservation_id = original
        .reservation
        .as_ref()
        .unwrap()
        .reservation_id
        .clone();
    client
        .commit(pb::CommitRequest {
            request_id: "commit-once".into(),
            reservation_id: reservation_id.clone(),
            amount: cny(10_00),
        })
        .await
        .unwrap();
    first.db().pool.close().await;

    let second = store(&db.url, 0).await;
    let inspect = second.db().clone();
    let mut client = spawn(second).await;
    let replayed = client
        .reserve(reserve_request("once", "restart", 1, 10_00))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replayed, original,
        "the stored response, state HELD as it was then"
    );
    let commit_again = client
        .commit(pb::CommitRequest {
            request_id: "commit-once".into(),
            reservation_id,
            amount: cny(10_00),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        commit_again.reservation.unwrap().state,
        pb::ReservationState::Committed as i32
    );
    assert_eq!(count(&inspect, "reservations").await, 1);
    assert_invariants(&inspect, "restart").await;
}

#[tokio::test]
async fn the_ledger_pages_through_every_entry_and_verification_finds_tampering() {
    let db = fresh_db("budget_ledger").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "ledger", 1_000_000_00, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    for i in 0..12 {
        let held = client
            .reserve(reserve_request(&format!("l{i}"), "ledger", i, 1_00))
            .await
            .unwrap()
            .into_inner();
        if i % 2 == 0 {
            let id = held.reservation.unwrap().reservation_id;
            client
                .release(pb::ReleaseRequest {
                    request_id: format!("rel{i}"),
                    reservation_id: id,
                    reason: "test".into(),
                })
                .await
                .unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                pool_id: "ledger".into(),
                page_size: 5,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 5);
        seen.extend(page.entries.iter().map(|e| e.sequence));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=19).collect::<Vec<i64>>(),
        "1 creation + 12 holds + 6 releases, in order, no gaps"
    );
    let verdict = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.intact, "{verdict:?}");
    assert_eq!(verdict.entries_checked, 19);

    // The database refuses to change an entry...
    let refused = sqlx::query("UPDATE ledger_entries SET amount_fen = 1 WHERE sequence = 7")
        .execute(&inspect.pool)
        .await;
    assert!(refused.is_err(), "ledger entries are append-only");
    // ...so an attacker with schema rights has to switch the guard off first.
    match inspect.backend {
        subsidy_common::db::Backend::Postgres => {
            sqlx::query("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update")
                .execute(&inspect.pool)
                .await
                .unwrap();
        }
        subsidy_common::db::Backend::Sqlite => {
            sqlx::query("DROP TRIGGER ledger_entries_no_update")
                .execute(&inspect.pool)
                .await
                .unwrap();
        }
    }
    sqlx::query("UPDATE ledger_entries SET amount_fen = amount_fen + 100 WHERE pool_id = 'ledger' AND sequence = 7")
        .execute(&inspect.pool)
        .await
        .unwrap();
    let verdict = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!verdict.intact);
    assert_eq!(
        (
            verdict.first_broken_pool_id.as_str(),
            verdict.first_broken_sequence
        ),
        ("ledger", 7)
    );
}

#[tokio::test]
async fn entries_written_before_the_canonical_encoding_still_verify_in_one_chain() {
    // Proves an upgraded database verifies: an entry stored under hash version 1 (the `|`
    // text of earlier releases, inserted here as the old code wrote it: the pool's closing,
    // which moves no money) sits in the chain between canonical entries, and VerifyLedger
    // checks each under its version and replays the chain across them.
    use subsidy_budget::domain::{HASH_VERSION_PIPES, LedgerEntry};
    let db = fresh_db("budget_ledger_versions").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "mixed", 1_000_000, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let held = client
        .reserve(pb::ReserveRequest {
            request_id: "before-legacy".into(),
            pool_id: "mixed".into(),
            beneficiary_uscc: beneficiary(0).to_string(),
            amount: cny(500_00),
            reference: "claim-1".into(),
            hold_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let entries =
        |client: &mut subsidy_proto::budget::budget_service_client::BudgetServiceClient<_>| {
            let mut client = client.clone();
            async move {
                client
                    .list_ledger_entries(pb::ListLedgerEntriesRequest {
                        pool_id: "mixed".into(),
                        page_size: 10,
                        page_token: String::new(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .entries
            }
        };
    let before = entries(&mut client).await;
    assert_eq!(before[1].hash_version, 2, "new entries are canonical");
    let legacy = LedgerEntry {
        pool_id: "mixed".into(),
        sequence: 3,
        kind: "POOL_CLOSED".into(),
        reservation_id: String::new(),
        beneficiary_uscc: String::new(),
        actor: "admin|legacy".into(),
        request_id: "legacy-1".into(),
        amount_fen: 0,
        released_fen: 0,
        held_before_fen: 500_00,
        held_after_fen: 500_00,
        committed_before_fen: 0,
        committed_after_fen: 0,
        created_us: 1_700_000_000_000_000,
        previous_hash: before[1].entry_hash.clone(),
        hash_version: HASH_VERSION_PIPES,
        expires_us: None,
    };
    let hash = legacy.hash().unwrap();
    sqlx::query(
        "INSERT INTO ledger_entries (pool_id, sequence, kind, reservation_id, beneficiary_uscc, \
         actor, request_id, amount_fen, released_fen, held_before_fen, held_after_fen, \
         committed_before_fen, committed_after_fen, created_us, previous_hash, entry_hash, \
         hash_version) VALUES ($1, 3, $2, '', '', $3, $4, 0, 0, $5, $5, 0, 0, $6, $7, $8, 1)",
    )
    .bind(&legacy.pool_id)
    .bind(&legacy.kind)
    .bind(&legacy.actor)
    .bind(&legacy.request_id)
    .bind(legacy.held_before_fen)
    .bind(legacy.created_us)
    .bind(&legacy.previous_hash)
    .bind(&hash)
    .execute(&inspect.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE pools SET ledger_sequence = 3, ledger_head_hash = $1 WHERE pool_id = 'mixed'",
    )
    .bind(&hash)
    .execute(&inspect.pool)
    .await
    .unwrap();
    // Holds made before a pool closes may still settle: the commit chains onto the old entry.
    client
        .commit(pb::CommitRequest {
            request_id: "after-legacy".into(),
            reservation_id: held.reservation_id,
            amount: cny(400_00),
        })
        .await
        .unwrap();
    let after = entries(&mut client).await;
    assert_eq!(
        after.iter().map(|e| e.hash_version).collect::<Vec<_>>(),
        [2, 2, 1, 2]
    );
    assert_eq!(after[3].previous_hash, hash);
    let verdict = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.intact, "{verdict:?}");
    assert_eq!(verdict.entries_checked, 4);
}

#[tokio::test]
async fn pools_are_created_by_an_admin_call_and_listed_in_pages() {
    let db = fresh_db("budget_pools").await;
    let store = store(&db.url, 0).await;
    let mut client = spawn(store).await;
    for i in 0..3 {
        let pool = client
            .create_pool(pb::CreatePoolRequest {
                request_id: format!("create-{i}"),
                pool_id: format!("program-2026-{i}"),
                display_name: "2026 program".into(),
                total: cny(1_000_000_00),
                beneficiary_cap: cny(10_000_00),
                reservation_cap: None,
                default_hold_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .pool
            .unwrap();
        assert_eq!(fen_of(&pool.available), 1_000_000_00);
    }
    let status = client
        .create_pool(pb::CreatePoolRequest {
            request_id: "create-again".into(),
            pool_id: "program-2026-0".into(),
            display_name: "dup".into(),
            total: cny(1_00),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("POOL_ALREADY_EXISTS"));
    let first = client
        .list_pools(pb::ListPoolsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.pools.len(), 2);
    let second = client
        .list_pools(pb::ListPoolsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.pools.len(), 1);
    assert!(second.next_page_token.is_empty());
    let status = client
        .list_pools(pb::ListPoolsRequest {
            page_size: 2,
            page_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_reservations_ledger_entries_are_listed_alone_page_by_page() {
    // Proves the `reservation_id` filter of ListLedgerEntries: exactly the entries naming the
    // reservation, in sequence order, across pages; narrowed by its pool (another pool gives
    // none); a page token is bound to its reservation; an over-long id is refused.
    let db = fresh_db("budget_ledger_by_reservation").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "by-res-a", 1_000_000_00, None, None).await;
    create_pool(&store, "by-res-b", 1_000_000_00, None, None).await;
    let mut client = spawn(store).await;
    let mut ids = Vec::new();
    for (i, pool) in ["by-res-a", "by-res-b", "by-res-a"].into_iter().enumerate() {
        let held = client
            .reserve(reserve_request(&format!("br{i}"), pool, i, 10_00))
            .await
            .unwrap()
            .into_inner();
        ids.push(held.reservation.unwrap().reservation_id);
    }
    client
        .commit(pb::CommitRequest {
            request_id: "br-commit".into(),
            reservation_id: ids[0].clone(),
            amount: cny(6_00),
        })
        .await
        .unwrap();
    client
        .release(pb::ReleaseRequest {
            request_id: "br-release".into(),
            reservation_id: ids[2].clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();

    let list = |pool: &str, reservation: &str, size: i32, token: String| {
        let mut client = client.clone();
        let request = pb::ListLedgerEntriesRequest {
            pool_id: pool.into(),
            page_size: size,
            page_token: token,
            reservation_id: reservation.into(),
        };
        async move { client.list_ledger_entries(request).await }
    };
    // Pool a: 1 creation, hold 0, hold 2, commit of 0 (a partial commit releases the rest in
    // the same entry), release of 2.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list("", &ids[0], 1, token).await.unwrap().into_inner();
        assert!(page.entries.len() <= 1);
        seen.extend(page.entries.iter().map(|e| {
            (
                e.pool_id.clone(),
                e.sequence,
                e.kind(),
                e.reservation_id.clone(),
            )
        }));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            (
                "by-res-a".to_owned(),
                2,
                pb::LedgerEntryKind::Reserved,
                ids[0].clone()
            ),
            (
                "by-res-a".to_owned(),
                4,
                pb::LedgerEntryKind::Committed,
                ids[0].clone()
            ),
        ]
    );
    let of_two = list("by-res-a", &ids[2], 100, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        of_two
            .entries
            .iter()
            .map(|e| (e.sequence, e.kind()))
            .collect::<Vec<_>>(),
        [
            (3, pb::LedgerEntryKind::Reserved),
            (5, pb::LedgerEntryKind::Released)
        ]
    );
    let of_one = list("by-res-b", &ids[1], 100, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_one.entries.len(), 1, "{of_one:?}");
    assert!(
        list("by-res-b", &ids[0], 100, String::new())
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty(),
        "the reservation is in the other pool"
    );
    assert!(
        list("", "no-such-reservation", 100, String::new())
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty()
    );

    // A token of one reservation's listing is refused for another's.
    let first = list("", &ids[0], 1, String::new())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let status = list("", &ids[2], 1, first.next_page_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["page_token"]);
    let status = list("", &"r".repeat(1_000), 1, String::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["reservation_id"]);
}
