//! ExtendReservation and RevokeCommitment: a hold kept alive past its first expiry, refusals
//! that change nothing, idempotency by request id (also within one batch), money revoked back
//! to the pool and the beneficiary's cap, and a ledger that still verifies.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use futures::future::join_all;
use subsidy_common::db::Db;
use subsidy_proto::budget as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

/// Two minutes ahead, in µs: the clock of the "later" store.
const LATER_US: i64 = 120_000_000;

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
        hold_seconds: 60,
    }
}

fn extend(
    request_id: &str,
    reservation_id: &str,
    hold_seconds: i64,
) -> pb::ExtendReservationRequest {
    pb::ExtendReservationRequest {
        request_id: request_id.into(),
        reservation_id: reservation_id.into(),
        hold_seconds,
    }
}

fn revoke(request_id: &str, reservation_id: &str) -> pb::RevokeCommitmentRequest {
    pb::RevokeCommitmentRequest {
        request_id: request_id.into(),
        reservation_id: reservation_id.into(),
        reason: "publicity objection upheld".into(),
    }
}

fn refusal(status: &tonic::Status) -> (Code, Option<String>) {
    (status.code(), reason(status))
}

fn micros(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    let t = timestamp.as_ref().expect("a timestamp");
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}

/// The kinds of a pool's ledger entries, in order.
async fn kinds(db: &Db, pool_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM ledger_entries WHERE pool_id = $1 ORDER BY sequence")
        .bind(pool_id)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn intact(
    client: &mut pb::budget_service_client::BudgetServiceClient<subsidy_testkit::Channel>,
) {
    let verdict = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.intact, "{verdict:?}");
}

#[tokio::test]
async fn an_extended_hold_outlives_its_first_expiry_and_can_still_be_committed() {
    // Proves: a hold of 60 s extended to 600 s is not expired by a sweep two minutes later
    // (by the database clock) while an unextended one beside it is, and the extended one is
    // committed then; the extension is one EXTENDED entry with the new expiry.
    let db = fresh_db("budget_extend").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "extend", 1_000_00, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let hold = |id: &str, who| {
        let (mut client, request) = (client.clone(), reserve_request(id, "extend", who, 100_00));
        async move { client.reserve(request).await }
    };
    let kept = hold("r1", 1)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let lapsed = hold("r2", 2)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();

    let extended = client
        .extend_reservation(extend("e1", &kept.reservation_id, 600))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(extended.state, pb::ReservationState::Held as i32);
    let added = micros(&extended.expire_time) - micros(&kept.expire_time);
    assert!(
        (539_000_000..=600_000_000).contains(&added),
        "the expiry moved by about 540 s: {added}"
    );

    let later = support::store(&db.url, LATER_US).await;
    assert_eq!(
        later.expire_due(1000).await.unwrap(),
        1,
        "only the unextended hold"
    );
    let mut later_client = spawn(later).await;
    let lapsed = later_client
        .get_reservation(pb::GetReservationRequest {
            reservation_id: lapsed.reservation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(lapsed.state, pb::ReservationState::Expired as i32);
    let committed = later_client
        .commit(pb::CommitRequest {
            request_id: "c1".into(),
            reservation_id: kept.reservation_id.clone(),
            amount: cny(100_00),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);

    let entry = later_client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            pool_id: "extend".into(),
            page_size: 100,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .find(|e| e.kind() == pb::LedgerEntryKind::Extended)
        .expect("an EXTENDED entry");
    assert_eq!(entry.reservation_id, kept.reservation_id);
    assert_eq!(micros(&entry.expire_time), micros(&extended.expire_time));
    assert_eq!(fen_of(&entry.amount), 0);
    assert_eq!(
        entry.held_before, entry.held_after,
        "an extension moves no money"
    );
    assert_eq!(
        kinds(&inspect, "extend").await,
        [
            "POOL_CREATED",
            "RESERVED",
            "RESERVED",
            "EXTENDED",
            "EXPIRED",
            "COMMITTED"
        ]
    );
    intact(&mut later_client).await;
    assert_invariants(&inspect, "extend").await;
}

#[tokio::test]
async fn an_extension_is_idempotent_never_shortens_and_refuses_what_is_not_held() {
    // Proves: a replay answers the first response; the same id for another extension is
    // REQUEST_ID_REUSED; a shorter extension leaves the hold (and the ledger) as it is; a
    // committed, an unknown and a badly asked reservation are refused and nothing changes.
    let db = fresh_db("budget_extend_refusals").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "extend-no", 1_000_00, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let held = client
        .reserve(reserve_request("r1", "extend-no", 1, 100_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let first = client
        .extend_reservation(extend("e1", &held.reservation_id, 900))
        .await
        .unwrap()
        .into_inner();
    let replay = client
        .extend_reservation(extend("e1", &held.reservation_id, 900))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replay, "a replay answers the first response");
    let status = client
        .extend_reservation(extend("e1", &held.reservation_id, 1800))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::AlreadyExists, Some("REQUEST_ID_REUSED".into()))
    );
    let shorter = client
        .extend_reservation(extend("e2", &held.reservation_id, 120))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shorter.reservation.as_ref().unwrap().expire_time,
        first.reservation.as_ref().unwrap().expire_time,
        "an extension never shortens a hold"
    );
    assert_eq!(
        kinds(&inspect, "extend-no").await,
        ["POOL_CREATED", "RESERVED", "EXTENDED"]
    );

    client
        .commit(pb::CommitRequest {
            request_id: "c1".into(),
            reservation_id: held.reservation_id.clone(),
            amount: cny(100_00),
        })
        .await
        .unwrap();
    let status = client
        .extend_reservation(extend("e3", &held.reservation_id, 900))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            Some("RESERVATION_NOT_HELD".into())
        )
    );
    let status = client
        .extend_reservation(extend("e4", "no-such-reservation", 900))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::NotFound, Some("RESERVATION_NOT_FOUND".into()))
    );
    let status = client
        .extend_reservation(extend("e5", &held.reservation_id, -1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["hold_seconds"]);
    assert_eq!(
        kinds(&inspect, "extend-no").await,
        ["POOL_CREATED", "RESERVED", "EXTENDED", "COMMITTED"],
        "the refusals wrote nothing"
    );
    intact(&mut client).await;
    assert_invariants(&inspect, "extend-no").await;
}

#[tokio::test]
async fn a_hold_past_its_expiry_is_not_extended() {
    // Proves: a hold whose expiry has passed by the database clock, not yet swept, is refused
    // (RESERVATION_NOT_HELD, state HELD) and then expires as usual.
    let db = fresh_db("budget_extend_late").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "extend-late", 1_000_00, None, None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let held = client
        .reserve(reserve_request("r1", "extend-late", 1, 100_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let later = support::store(&db.url, LATER_US).await;
    let mut later_client = spawn(later.clone()).await;
    let status = later_client
        .extend_reservation(extend("e1", &held.reservation_id, 900))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            Some("RESERVATION_NOT_HELD".into())
        )
    );
    assert_eq!(later.expire_due(1000).await.unwrap(), 1);
    assert_invariants(&inspect, "extend-late").await;
}

#[tokio::test]
async fn a_revoked_commitment_returns_to_the_pool_and_the_beneficiarys_cap() {
    // Proves: revoking a committed reservation lowers the pool's committed and the
    // beneficiary's usage by the commitment, so a hold refused for the cap before is made
    // after; the reservation is REVOKED with amount, time and reason; held, released and
    // revoked reservations are refused; a replay answers the first response.
    let db = fresh_db("budget_revoke").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "revoke", 1_000_00, Some(500_00), None).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let held = client
        .reserve(reserve_request("r1", "revoke", 1, 500_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let status = client
        .revoke_commitment(revoke("v0", &held.reservation_id))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            Some("RESERVATION_NOT_COMMITTED".into())
        )
    );
    client
        .commit(pb::CommitRequest {
            request_id: "c1".into(),
            reservation_id: held.reservation_id.clone(),
            amount: cny(400_00),
        })
        .await
        .unwrap();
    let status = client
        .reserve(reserve_request("r2", "revoke", 1, 200_00))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("BENEFICIARY_CAP_EXCEEDED"));

    let revoked = client
        .revoke_commitment(revoke("v1", &held.reservation_id))
        .await
        .unwrap()
        .into_inner();
    let row = revoked.reservation.clone().unwrap();
    assert_eq!(row.state, pb::ReservationState::Revoked as i32);
    assert_eq!(
        (
            fen_of(&row.revoked_amount),
            fen_of(&row.committed_amount),
            fen_of(&row.released_amount)
        ),
        (400_00, 0, 500_00)
    );
    assert!(row.revoke_time.is_some());
    assert_eq!(row.revoke_reason, "publicity objection upheld");
    let replay = client
        .revoke_commitment(revoke("v1", &held.reservation_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, revoked, "a replay answers the first response");
    let status = client
        .revoke_commitment(revoke("v2", &held.reservation_id))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            Some("RESERVATION_NOT_COMMITTED".into())
        )
    );

    let pool = client
        .get_pool(pb::GetPoolRequest {
            pool_id: "revoke".into(),
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
        (0, 0, 1_000_00)
    );
    let usage = client
        .get_beneficiary_usage(pb::GetBeneficiaryUsageRequest {
            pool_id: "revoke".into(),
            beneficiary_uscc: beneficiary(1).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    assert_eq!((fen_of(&usage.held), fen_of(&usage.committed)), (0, 0));
    let again = client
        .reserve(reserve_request("r3", "revoke", 1, 500_00))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    client
        .release(pb::ReleaseRequest {
            request_id: "rel".into(),
            reservation_id: again.reservation_id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap();
    let status = client
        .revoke_commitment(revoke("v3", &again.reservation_id))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (
            Code::FailedPrecondition,
            Some("RESERVATION_NOT_COMMITTED".into())
        )
    );
    let status = client
        .revoke_commitment(revoke("v4", "no-such-reservation"))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(&status),
        (Code::NotFound, Some("RESERVATION_NOT_FOUND".into()))
    );
    let status = client
        .revoke_commitment(pb::RevokeCommitmentRequest {
            reason: String::new(),
            ..revoke("v5", &held.reservation_id)
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["reason"]);
    assert_eq!(
        kinds(&inspect, "revoke").await,
        [
            "POOL_CREATED",
            "RESERVED",
            "COMMITTED",
            "REVOKED",
            "RESERVED",
            "RELEASED"
        ]
    );
    let listed = client
        .list_reservations(pb::ListReservationsRequest {
            pool_id: "revoke".into(),
            state: pb::ReservationState::Revoked as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(listed.len(), 1);
    intact(&mut client).await;
    assert_invariants(&inspect, "revoke").await;
}

#[tokio::test]
async fn the_same_revocation_and_extension_sent_together_take_effect_once() {
    // Proves: sixteen copies of one revocation and sixteen of one extension, sent at once
    // (so that copies share batches), each get the same answer and write one entry each.
    let db = fresh_db("budget_revoke_batch").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "revoke-batch", 1_000_00, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let reserve = |id: &str| {
        let (mut client, request) = (
            client.clone(),
            reserve_request(id, "revoke-batch", 1, 100_00),
        );
        async move { client.reserve(request).await }
    };
    let committed = reserve("r1")
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let held = reserve("r2")
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    client
        .clone()
        .commit(pb::CommitRequest {
            request_id: "c1".into(),
            reservation_id: committed.reservation_id.clone(),
            amount: cny(100_00),
        })
        .await
        .unwrap();
    let revocations = join_all((0..16).map(|_| {
        let mut client = client.clone();
        let request = revoke("v1", &committed.reservation_id);
        async move {
            client
                .revoke_commitment(request)
                .await
                .map(|r| r.into_inner())
        }
    }));
    let extensions = join_all((0..16).map(|_| {
        let mut client = client.clone();
        let request = extend("e1", &held.reservation_id, 3000);
        async move {
            client
                .extend_reservation(request)
                .await
                .map(|r| r.into_inner())
        }
    }));
    let (revocations, extensions) = futures::join!(revocations, extensions);
    let revocations: Vec<_> = revocations.into_iter().map(Result::unwrap).collect();
    let extensions: Vec<_> = extensions.into_iter().map(Result::unwrap).collect();
    assert!(revocations.iter().all(|r| *r == revocations[0]));
    assert!(extensions.iter().all(|r| *r == extensions[0]));
    let kinds = kinds(&inspect, "revoke-batch").await;
    assert_eq!(kinds.iter().filter(|k| *k == "REVOKED").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "EXTENDED").count(), 1);
    intact(&mut client.clone()).await;
    assert_invariants(&inspect, "revoke-batch").await;
}
