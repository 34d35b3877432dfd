//! Publicity (公示) of awards and objections (异议) (issue 16), through the four real services:
//! an approved claim is published for the policy's working days and not paid while the period
//! runs or an objection is open; an upheld objection revokes the award, returns its money to
//! the pool and serves the waitlist's head; a dismissed objection leaves an awarded proposal
//! standing, an upheld one revokes it; a period of zero days pays at once and takes no
//! objection.
//!
//! Runs on SQLite, and on PostgreSQL when `SUBSIDY_TEST_DATABASE` names a server.

mod application_support;

use application_support::*;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::{
    ROUND_POOL, close, finalize, get_proposal, open_round, propose, score,
};
use subsidy_testkit::*;
use tonic::Code;

/// A pool of 100,000.00: one claim of [`CONTRACT_FEN`] is held, the next waits.
const POOL_FEN: i64 = 10_000_000;
/// A contract of 1,600,000.00: an entitlement of 80,000.00.
const CONTRACT_FEN: i64 = 160_000_000;
/// The subsidy of [`CONTRACT_FEN`].
const SUBSIDY_FEN: i64 = CONTRACT_FEN / 20;
/// The publicity period of the stacks that keep one open, in working days.
const OPEN_DAYS: &str = "5";

/// The real services with the voucher pool of [`POOL_FEN`] and the rules service counting
/// publicity periods of `working_days`.
async fn stack_with_period(working_days: &str) -> Stack {
    let mut overrides = test_pool_application(&[]);
    overrides.insert(
        ServiceKind::Rules,
        vec![(
            "SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE".into(),
            working_days.into(),
        )],
    );
    with_pool_and(overrides, POOL_FEN, LONG_HOLD_SECONDS).await
}

fn micros(time: &Option<prost_types::Timestamp>) -> i64 {
    let time = time.expect("a time is set");
    time.seconds * 1_000_000 + i64::from(time.nanos) / 1_000
}

/// The claim once the rules service has counted its notice's period.
async fn counted_claim(app: &App, claim_id: &str) -> pb::Claim {
    eventually("the claim's publicity period counted", || {
        let mut app = app.clone();
        let claim_id = claim_id.to_owned();
        async move {
            let claim = get_claim(&mut app, &claim_id).await;
            let counted = claim
                .public_notice
                .as_ref()
                .is_some_and(|notice| notice.end_time.is_some());
            counted.then_some(claim)
        }
    })
    .await
}

fn pay_claim(request_id: &str, claim: &pb::Claim) -> pb::RecordClaimDisbursementRequest {
    pb::RecordClaimDisbursementRequest {
        request_id: request_id.into(),
        claim_id: claim.claim_id.clone(),
        payment_reference: format!("BANK-{request_id}"),
        payment_date: Some(today_shanghai()),
        amount: claim.approved_amount.clone(),
    }
}

fn object(request_id: &str, notice_id: &str) -> pb::FileObjectionRequest {
    pb::FileObjectionRequest {
        request_id: request_id.into(),
        notice_id: notice_id.into(),
        grounds: "the enterprise's compute was not delivered in Shandong".into(),
    }
}

fn decide(request_id: &str, objection_id: &str, uphold: bool) -> pb::DecideObjectionRequest {
    let decision = if uphold {
        pb::ObjectionDecision::Uphold
    } else {
        pb::ObjectionDecision::Dismiss
    };
    pb::DecideObjectionRequest {
        request_id: request_id.into(),
        objection_id: objection_id.into(),
        decision: decision as i32,
        reason: "checked against the data center's records".into(),
        reviewer_id: "reviewer-7".into(),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upheld_objection_revokes_the_award_returns_its_money_and_serves_the_waitlist() {
    // Proves the claim's publicity: the approval is published with a counted period of five
    // working days; payment is refused while it runs and while an objection is open; the
    // objection upheld revokes the claim, the budget's commitment is revoked and the waiting
    // claim is held with the money; a revoked award takes no objection, a decided objection is
    // not decided again, and a repeated decision is a replay.
    let stack = stack_with_period(OPEN_DAYS).await;
    let mut app = stack.app().await;
    let (first_buyer, second_buyer) = (shandong(61), shandong(62));
    register(&mut app, &first_buyer).await;
    register(&mut app, &second_buyer).await;
    let held = submitted(
        &mut app,
        "p-1",
        &first_buyer,
        contract("P-1", &seller(1), CONTRACT_FEN),
    )
    .await;
    assert_eq!(held.state(), pb::ClaimState::PendingReview, "{held:?}");
    let waiting = submitted(
        &mut app,
        "p-2",
        &second_buyer,
        contract("P-2", &seller(2), CONTRACT_FEN),
    )
    .await;
    assert_eq!(waiting.state(), pb::ClaimState::Waitlisted, "{waiting:?}");

    let approved = approve_claim(&app, approve("p-approve", &held.claim_id, CONTRACT_FEN))
        .await
        .expect("approve")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    let published = approved.public_notice.expect("the approval is published");
    assert_eq!(published.notice_id, format!("notice-{}", held.claim_id));
    assert_eq!(published.state(), pb::PublicNoticeState::Published);

    let claim = counted_claim(&app, &held.claim_id).await;
    let notice = claim.public_notice.clone().unwrap();
    assert_eq!(notice.working_days, 5, "{notice:?}");
    assert!(
        micros(&notice.end_time) - micros(&notice.start_time) >= 5 * 86_400_000_000,
        "five working days last at least five days: {notice:?}"
    );
    assert_eq!(notice.state(), pb::PublicNoticeState::Published);
    assert_eq!(fen_of(&notice.amount), SUBSIDY_FEN);
    assert_eq!(notice.enterprise_uscc, first_buyer.to_string());
    assert!(!notice.enterprise_name.is_empty());
    assert_eq!(
        notice.application_kind(),
        pb::ApplicationKind::ComputeVoucherClaim
    );

    // The public list shows it (the waiting claim has no notice).
    let listed = app
        .list_public_notices(pb::ListPublicNoticesRequest {
            state: pb::PublicNoticeState::Published as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notices, vec![notice.clone()]);

    // Not paid while the period runs.
    let refused = app
        .record_claim_disbursement(pay_claim("p-pay-1", &claim))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("PUBLICITY_PERIOD_OPEN"));

    let filed = app
        .file_objection(object("p-object", &notice.notice_id))
        .await
        .expect("object during the period")
        .into_inner();
    let objection = filed.objection.unwrap();
    assert_eq!(objection.state(), pb::ObjectionState::Open);
    assert_eq!(objection.application_id, held.claim_id);
    assert!(!objection.filed_by.is_empty());
    assert_eq!(filed.notice.unwrap().open_objection_count, 1);
    let refused = app
        .record_claim_disbursement(pay_claim("p-pay-2", &claim))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("OBJECTION_OPEN"));

    let decided = app
        .decide_objection(decide("p-uphold", &objection.objection_id, true))
        .await
        .expect("uphold")
        .into_inner();
    assert_eq!(
        decided.objection.as_ref().unwrap().state(),
        pb::ObjectionState::Upheld
    );
    assert_eq!(
        decided.notice.as_ref().unwrap().state(),
        pb::PublicNoticeState::Revoked
    );
    let replayed = app
        .decide_objection(decide("p-uphold", &objection.objection_id, true))
        .await
        .expect("a replay")
        .into_inner();
    assert_eq!(replayed, decided);

    // The award is revoked, its money returned, and the waiting claim held with it.
    let revoked = get_claim(&mut app, &held.claim_id).await;
    assert_eq!(revoked.state(), pb::ClaimState::Revoked);
    let reservation_id = revoked.reservation_id.clone();
    eventually("the commitment revoked", || {
        let stack = &stack;
        let reservation_id = reservation_id.clone();
        async move {
            (reservation(stack, &reservation_id).await.state() == bpb::ReservationState::Revoked)
                .then_some(())
        }
    })
    .await;
    wait_claim_state(&app, &waiting.claim_id, pb::ClaimState::PendingReview).await;
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(fen_of(&pool.committed), 0, "{pool:?}");
    assert_eq!(fen_of(&pool.held), SUBSIDY_FEN, "{pool:?}");

    let refused = app
        .record_claim_disbursement(pay_claim("p-pay-3", &claim))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    let refused = app
        .file_objection(object("p-object-2", &notice.notice_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("AWARD_REVOKED"));
    let refused = app
        .decide_objection(decide("p-dismiss", &objection.objection_id, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        reason(&refused).as_deref(),
        Some("OBJECTION_ALREADY_DECIDED")
    );
    let refused = app
        .file_objection(object("p-object-3", "notice-claim-none"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(reason(&refused).as_deref(), Some("NOTICE_NOT_FOUND"));

    let listed = app
        .list_objections(pb::ListObjectionsRequest {
            notice_id: notice.notice_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.objections.len(), 1);
    assert_eq!(listed.objections[0].state(), pb::ObjectionState::Upheld);
    assert_eq!(listed.objections[0].reviewer_id, "reviewer-7");

    let entries = history(&mut app, &held.claim_id).await;
    let last = entries.last().unwrap();
    assert!(last.reason.contains("revoked"), "{last:?}");
    eventually("the revocation's events", || {
        let stack = &stack;
        let claim_id = held.claim_id.clone();
        async move {
            let seen = types(&events_of(stack, &claim_id).await);
            [
                npb::EventType::AwardPublished,
                npb::EventType::ObjectionFiled,
                npb::EventType::ObjectionUpheld,
                npb::EventType::ClaimRevoked,
            ]
            .iter()
            .all(|wanted| seen.contains(wanted))
            .then_some(())
        }
    })
    .await;
    assert_ledger_intact(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dismissed_objection_leaves_an_award_standing_and_an_upheld_one_revokes_a_proposal() {
    // Proves the proposal's publicity: an awarded proposal is published with its title and
    // round; an objection dismissed leaves it AWARDED (still not payable while the period
    // runs); a second objection upheld revokes it and its pool's commitment falls to zero.
    let stack = stack_with_period(OPEN_DAYS).await;
    let (mut app, round) = open_round(&stack, 1_000_000_000).await;
    let applicant = shandong(63);
    register(&mut app, &applicant).await;
    let proposal = propose(
        &mut app,
        &round.round_id,
        &applicant,
        "Qilu-data-space",
        500_000_000,
    )
    .await;
    wait_proposal_eligible(&mut app, &proposal.proposal_id).await;
    score(&mut app, &proposal.proposal_id, "e-1", &shandong(64), 90)
        .await
        .expect("score");
    close(&mut app, &round.round_id).await;
    app.finalize_selection_round(finalize("p-final", &round.round_id))
        .await
        .expect("finalise");
    let notice = eventually("the award's period counted", || {
        let mut app = app.clone();
        let proposal_id = proposal.proposal_id.clone();
        async move {
            get_proposal(&mut app, &proposal_id)
                .await
                .public_notice
                .filter(|notice| notice.end_time.is_some())
        }
    })
    .await;
    assert_eq!(notice.project_title, "Qilu-data-space");
    assert_eq!(notice.round_id, round.round_id);
    assert_eq!(
        notice.application_kind(),
        pb::ApplicationKind::DataInfrastructureProposal
    );
    assert_eq!(fen_of(&notice.amount), 500_000_000);

    let first = app
        .file_objection(object("p-o-1", &notice.notice_id))
        .await
        .unwrap()
        .into_inner()
        .objection
        .unwrap();
    let dismissed = app
        .decide_objection(decide("p-d-1", &first.objection_id, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        dismissed.objection.unwrap().state(),
        pb::ObjectionState::Dismissed
    );
    let standing = dismissed.notice.unwrap();
    assert_eq!(standing.state(), pb::PublicNoticeState::Published);
    assert_eq!(standing.open_objection_count, 0);
    assert_eq!(
        get_proposal(&mut app, &proposal.proposal_id).await.state(),
        pb::ProposalState::Awarded
    );
    let refused = app
        .record_proposal_disbursement(pb::RecordProposalDisbursementRequest {
            request_id: "p-pay".into(),
            proposal_id: proposal.proposal_id.clone(),
            payment_reference: "PAY-DI-1".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(500_000_000),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("PUBLICITY_PERIOD_OPEN"));

    let second = app
        .file_objection(object("p-o-2", &notice.notice_id))
        .await
        .unwrap()
        .into_inner()
        .objection
        .unwrap();
    app.decide_objection(decide("p-d-2", &second.objection_id, true))
        .await
        .expect("uphold");
    assert_eq!(
        get_proposal(&mut app, &proposal.proposal_id).await.state(),
        pb::ProposalState::Revoked
    );
    eventually("the award's money back in its pool", || {
        let stack = &stack;
        async move { (fen_of(&stack.pool(ROUND_POOL).await.committed) == 0).then_some(()) }
    })
    .await;
    wait_events(
        &stack,
        &proposal.proposal_id,
        &[
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalAwarded,
            npb::EventType::AwardPublished,
            npb::EventType::ObjectionFiled,
            npb::EventType::ObjectionDismissed,
            npb::EventType::ObjectionFiled,
            npb::EventType::ProposalRevoked,
            npb::EventType::ObjectionUpheld,
        ],
    )
    .await;
    assert_ledger_intact(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_of_zero_days_pays_at_once_and_takes_no_objection() {
    // Proves the other end: with no working days the period ends when it starts, so the
    // approval is paid at once and an objection is refused with the period's end.
    let stack = stack_with_period("0").await;
    let mut app = stack.app().await;
    let buyer = shandong(65);
    register(&mut app, &buyer).await;
    let held = submitted(
        &mut app,
        "z-1",
        &buyer,
        contract("Z-1", &seller(3), CONTRACT_FEN),
    )
    .await;
    approve_claim(&app, approve("z-approve", &held.claim_id, CONTRACT_FEN))
        .await
        .expect("approve");
    let claim = counted_claim(&app, &held.claim_id).await;
    let notice = claim.public_notice.clone().unwrap();
    assert_eq!(notice.state(), pb::PublicNoticeState::Ended);
    assert_eq!(notice.working_days, 0);
    let refused = app
        .file_objection(object("z-object", &notice.notice_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("PUBLICITY_PERIOD_ENDED"));
    let paid = app
        .record_claim_disbursement(pay_claim("z-pay", &claim))
        .await
        .expect("paid after the period")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(paid.state(), pb::ClaimState::Disbursed);
    let ended = app
        .list_public_notices(pb::ListPublicNoticesRequest {
            state: pb::PublicNoticeState::Ended as i32,
            application_kind: pb::ApplicationKind::ComputeVoucherClaim as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.notices.len(), 1);
    assert_eq!(ended.notices[0].notice_id, notice.notice_id);
    let published = app
        .list_public_notices(pb::ListPublicNoticesRequest {
            state: pb::PublicNoticeState::Published as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(published.notices.is_empty(), "{published:?}");
}

/// Waits until the rules service has screened a proposal eligible.
async fn wait_proposal_eligible(app: &mut App, proposal_id: &str) {
    eventually("the proposal screened eligible", || {
        let mut app = app.clone();
        let proposal_id = proposal_id.to_owned();
        async move {
            (get_proposal(&mut app, &proposal_id).await.state() == pb::ProposalState::Eligible)
                .then_some(())
        }
    })
    .await;
}
