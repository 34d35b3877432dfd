//! Review that cannot silently lose a subsidy (issue 16), through the four real services: a
//! claim kept in review (waiting for the applicant's information) past the lifetime of its
//! original hold still holds its money and is approved; an expired hold reopened gets its
//! money back, or waits at its original place in the line when the pool cannot cover it; the
//! review deadline and the listing of overdue claims.

mod application_support;

use std::time::{SystemTime, UNIX_EPOCH};

use application_support::*;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;
use tonic::Code;

/// The hold lifetime of these tests, in seconds (pool and application).
const HOLD_SECONDS: i64 = 3;
/// How often the budget expires due holds here, in milliseconds.
const EXPIRY_INTERVAL_MS: &str = "100";
/// A pool of 100,000.00.
const POOL_FEN: i64 = 10_000_000;
/// A contract of 1,600,000.00: an entitlement of 80,000.00.
const BIG_CONTRACT_FEN: i64 = 160_000_000;
/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// The real services with a pool whose holds last [`HOLD_SECONDS`], claims held for
/// `hold_seconds`, the budget expiring due holds quickly, and the application settings
/// `app_env`.
async fn stack_with(hold_seconds: i64, app_env: &[(&str, &str)]) -> Stack {
    let hold = hold_seconds.to_string();
    let mut env = vec![("SUBSIDY_APPLICATION_HOLD_SECONDS", hold.as_str())];
    env.extend_from_slice(app_env);
    let mut overrides = test_pool_application(&env);
    overrides.insert(
        ServiceKind::Budget,
        vec![(
            "SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS".into(),
            EXPIRY_INTERVAL_MS.into(),
        )],
    );
    with_pool_and(overrides, POOL_FEN, HOLD_SECONDS).await
}

fn micros(time: &Option<prost_types::Timestamp>) -> i64 {
    let time = time.expect("a time is set");
    time.seconds * 1_000_000 + i64::from(time.nanos) / 1_000
}

fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

async fn reservation(stack: &Stack, reservation_id: &str) -> bpb::Reservation {
    stack
        .budget()
        .await
        .get_reservation(bpb::GetReservationRequest {
            reservation_id: reservation_id.into(),
        })
        .await
        .expect("read the reservation")
        .into_inner()
        .reservation
        .expect("the response carries the reservation")
}

fn request_information(request_id: &str, claim_id: &str) -> pb::RequestClaimInformationRequest {
    pb::RequestClaimInformationRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        message: "Please send the signed acceptance report".into(),
    }
}

fn reopen(request_id: &str, claim_id: &str) -> pb::ReopenClaimRequest {
    pb::ReopenClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        reason: "the hold lapsed while the service was down".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_kept_in_review_past_its_original_hold_lifetime_still_holds_its_money() {
    // Proves the extension: a claim held for 3 s waits for information well past that while
    // the budget expires due holds every 100 ms; its hold is extended (ledger and history), it
    // is still held, and after the applicant's answer it is approved and committed.
    let stack = stack_with(
        HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "2")],
    )
    .await;
    let mut app = stack.app().await;
    let buyer = shandong(40);
    register(&mut app, &buyer).await;
    let held = submitted(
        &mut app,
        "r-1",
        &buyer,
        contract("R-1", &seller(1), BIG_CONTRACT_FEN),
    )
    .await;
    assert_eq!(held.state(), pb::ClaimState::PendingReview, "{held:?}");
    let original_expiry_us = micros(&held.hold_expire_time);
    // The review deadline: held plus the default 60 days.
    let due_us = micros(&held.review_due_time);
    let held_us = micros(&held.update_time);
    assert!(
        (due_us - held_us - 60 * DAY_US).abs() < 60_000_000,
        "{held:?}"
    );

    let asked = app
        .request_claim_information(request_information("r-ask", &held.claim_id))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(asked.state(), pb::ClaimState::NeedsInformation);
    assert_eq!(
        asked.information_request,
        "Please send the signed acceptance report"
    );
    // Waiting for information: it cannot be approved.
    let refused = approve_claim(&app, approve("r-early", &held.claim_id, BIG_CONTRACT_FEN))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("TRANSITION_NOT_ALLOWED"));

    // Well past the original hold's lifetime.
    let past_us = original_expiry_us + 2 * HOLD_SECONDS * 1_000_000;
    let kept = eventually("the original hold's lifetime to be long over", || {
        let mut app = app.clone();
        let claim_id = held.claim_id.clone();
        async move {
            let claim = get_claim(&mut app, &claim_id).await;
            (now_us() > past_us).then_some(claim)
        }
    })
    .await;
    assert_eq!(kept.state(), pb::ClaimState::NeedsInformation, "{kept:?}");
    assert_eq!(kept.reservation_id, held.reservation_id);
    assert!(
        micros(&kept.hold_expire_time) > past_us - 1_000_000,
        "{kept:?}"
    );
    let hold = reservation(&stack, &held.reservation_id).await;
    assert_eq!(hold.state(), bpb::ReservationState::Held, "{hold:?}");
    let extensions = history(&mut app, &held.claim_id)
        .await
        .into_iter()
        .filter(|entry| entry.reason.contains("extended"))
        .count();
    assert!(extensions >= 2, "the hold was extended again and again");

    let answered = app
        .provide_claim_information(pb::ProvideClaimInformationRequest {
            request_id: "r-answer".into(),
            claim_id: held.claim_id.clone(),
            message: "Uploaded the acceptance report".into(),
            document_ids: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(answered.state(), pb::ClaimState::PendingReview);
    let approved = approve_claim(&app, approve("r-approve", &held.claim_id, BIG_CONTRACT_FEN))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.approved_amount), 8_000_000);
    let hold = reservation(&stack, &held.reservation_id).await;
    assert_eq!(hold.state(), bpb::ReservationState::Committed, "{hold:?}");
    let types: Vec<npb::EventType> = eventually("the review's events", || {
        let stack = &stack;
        let claim_id = held.claim_id.clone();
        async move {
            let types: Vec<_> = events_of(stack, &claim_id)
                .await
                .iter()
                .map(npb::Event::r#type)
                .collect();
            types
                .contains(&npb::EventType::ClaimApproved)
                .then_some(types)
        }
    })
    .await;
    assert!(types.contains(&npb::EventType::ClaimNeedsInformation));
    assert!(types.contains(&npb::EventType::ClaimInformationProvided));
    assert!(!types.contains(&npb::EventType::ClaimExpired));
    assert_claims_consistent(&stack, TEST_POOL).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_claim_reopened_is_held_again_or_waits_at_its_place_when_the_pool_is_short() {
    // Proves ReopenClaim: with no extension, a hold lapses (EXPIRED); reopened, the claim is
    // held again (a new reservation, a new review deadline) and can be approved. A second
    // claim that lapses while the pool has too little left is reopened onto the waitlist, and
    // a later claim that would fit waits behind it (the reopened claim keeps its place).
    let stack = stack_with(
        HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "0")],
    )
    .await;
    let mut app = stack.app().await;
    let (first_buyer, second_buyer, third_buyer) = (shandong(41), shandong(42), shandong(43));
    for buyer in [&first_buyer, &second_buyer, &third_buyer] {
        register(&mut app, buyer).await;
    }
    let first = submitted(
        &mut app,
        "o-1",
        &first_buyer,
        contract("O-1", &seller(1), BIG_CONTRACT_FEN),
    )
    .await;
    assert_eq!(first.state(), pb::ClaimState::PendingReview, "{first:?}");
    wait_claim_state(&app, &first.claim_id, pb::ClaimState::Expired).await;
    // Only a reviewer's reopening of an EXPIRED claim is allowed.
    let refused = app
        .request_claim_information(request_information("o-ask", &first.claim_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("TRANSITION_NOT_ALLOWED"));

    let reopened = app
        .reopen_claim(reopen("o-reopen", &first.claim_id))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(
        reopened.state(),
        pb::ClaimState::PendingReview,
        "{reopened:?}"
    );
    assert_ne!(reopened.reservation_id, first.reservation_id);
    assert_eq!(fen_of(&reopened.reserved_amount), 8_000_000);
    assert!(micros(&reopened.review_due_time) > micros(&first.review_due_time));
    // A replay answers the same; a second reopening is refused.
    let replay = app
        .reopen_claim(reopen("o-reopen", &first.claim_id))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(replay, reopened);
    let again = app
        .reopen_claim(reopen("o-reopen-2", &first.claim_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&again).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    let approved = approve_claim(
        &app,
        approve("o-approve", &first.claim_id, BIG_CONTRACT_FEN),
    )
    .await
    .unwrap()
    .into_inner()
    .claim
    .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    let entries = history(&mut app, &first.claim_id).await;
    assert!(
        entries
            .iter()
            .any(|entry| entry.reason.starts_with("reopened:")),
        "{entries:?}"
    );

    // 20,000.00 left. A claim of 15,000.00 lapses; then 10,000.00 are committed to another.
    let second = submitted(
        &mut app,
        "o-2",
        &second_buyer,
        contract("O-2", &seller(1), 30_000_000),
    )
    .await;
    assert_eq!(second.state(), pb::ClaimState::PendingReview, "{second:?}");
    wait_claim_state(&app, &second.claim_id, pb::ClaimState::Expired).await;
    let other = submitted(
        &mut app,
        "o-3",
        &third_buyer,
        contract("O-3", &seller(2), 20_000_000),
    )
    .await;
    assert_eq!(other.state(), pb::ClaimState::PendingReview, "{other:?}");
    approve_claim(&app, approve("o-approve-3", &other.claim_id, 20_000_000))
        .await
        .unwrap();
    // 10,000.00 left: the reopened claim of 15,000.00 waits, first in line.
    let waiting = app
        .reopen_claim(reopen("o-reopen-second", &second.claim_id))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(waiting.state(), pb::ClaimState::Waitlisted, "{waiting:?}");
    assert_eq!(waiting.waitlist_position, 1);
    assert_eq!(waiting.review_due_time, None);
    // A later claim of 5,000.00 would fit, but the reopened claim was accepted before it.
    let later = submitted(
        &mut app,
        "o-4",
        &first_buyer,
        contract("O-4", &seller(3), 10_000_000),
    )
    .await;
    assert_eq!(later.state(), pb::ClaimState::Waitlisted, "{later:?}");
    assert_eq!(later.waitlist_position, 2);
    let events = eventually("the reopening events", || {
        let stack = &stack;
        let claim_id = second.claim_id.clone();
        async move {
            let events = events_of(stack, &claim_id).await;
            (events
                .iter()
                .filter(|event| event.r#type() == npb::EventType::ClaimReopened)
                .count()
                == 1)
                .then_some(events)
        }
    })
    .await;
    let reopened_event = events
        .iter()
        .find(|event| event.r#type() == npb::EventType::ClaimReopened)
        .unwrap();
    assert_eq!(fen_of(&reopened_event.amount), 1_500_000);
    assert_claims_consistent(&stack, TEST_POOL).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_past_their_review_deadline_are_listed_as_overdue() {
    // Proves review_due_time and the review_overdue filter: with a review period of 0 days a
    // claim in review is overdue at once, also while it waits for information; an approved
    // claim is not, and neither is any claim under the default period.
    let stack = stack_with(
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_REVIEW_PERIOD_DAYS", "0")],
    )
    .await;
    let mut app = stack.app().await;
    let buyer = shandong(44);
    register(&mut app, &buyer).await;
    let mut claims = Vec::new();
    for (n, total) in [(1, 20_000_000), (2, 20_000_000), (3, 20_000_000)] {
        let claim = submitted(
            &mut app,
            &format!("d-{n}"),
            &buyer,
            contract(&format!("D-{n}"), &seller(n), total),
        )
        .await;
        assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
        claims.push(claim);
    }
    app.request_claim_information(request_information("d-ask", &claims[1].claim_id))
        .await
        .unwrap();
    approve_claim(&app, approve("d-approve", &claims[2].claim_id, 20_000_000))
        .await
        .unwrap();
    let overdue = |page_size: i32, page_token: String| pb::ListClaimsRequest {
        review_overdue: true,
        page_size,
        page_token,
        ..Default::default()
    };
    let listed = app
        .list_claims(overdue(1, String::new()))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed.claims.iter().map(|c| c.claim_id.clone()).collect();
    let next = app
        .list_claims(overdue(1, listed.next_page_token))
        .await
        .unwrap()
        .into_inner();
    ids.extend(next.claims.iter().map(|c| c.claim_id.clone()));
    assert!(
        next.next_page_token.is_empty() || {
            app.list_claims(overdue(1, next.next_page_token))
                .await
                .unwrap()
                .into_inner()
                .claims
                .is_empty()
        }
    );
    ids.sort();
    let mut expected = vec![claims[0].claim_id.clone(), claims[1].claim_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // A page token of the overdue listing does not serve another filter.
    let token = app
        .list_claims(overdue(1, String::new()))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let mismatched = app
        .list_claims(pb::ListClaimsRequest {
            page_size: 1,
            page_token: token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), Code::InvalidArgument);
    stack.shutdown().await;

    // Under the default period of 60 days nothing is overdue.
    let stack = stack_with(LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "d-5",
        &buyer,
        contract("D-5", &seller(5), 20_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    let listed = app
        .list_claims(overdue(50, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.claims.is_empty(), "{listed:?}");
    stack.shutdown().await;
}
