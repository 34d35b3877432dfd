//! Publicity of an approval when the rules service cannot count its period at once, through
//! the application service with fake peers: the notice is published uncounted, the award is
//! not paid on a period nobody has counted, and the reconciler counts it (and publishes
//! `award.published`) once the rules service answers again. The scenarios with the real
//! services live in `tests/tests/publicity.rs`.

mod support;

use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use support::*;
use tonic::Code;

/// A contract of 2,000,000.00: a subsidy of 100,000.00.
const CONTRACT_FEN: i64 = 200_000_000;

fn pay(request_id: &str, claim: &pb::Claim) -> pb::RecordClaimDisbursementRequest {
    pb::RecordClaimDisbursementRequest {
        request_id: request_id.into(),
        claim_id: claim.claim_id.clone(),
        payment_reference: format!("BANK-{request_id}"),
        payment_date: Some(today_shanghai()),
        amount: claim.approved_amount.clone(),
    }
}

#[tokio::test]
async fn a_period_the_rules_service_could_not_count_holds_the_payment_until_the_reconciler_counts_it()
 {
    // Proves the uncounted path: approved while GetPublicityPeriod fails, the claim's notice
    // has no end and the payment is refused with PUBLICITY_PERIOD_OPEN (no end_time in the
    // metadata); once the rules service answers, the reconciler counts the period, the notice
    // is published as an event, and the payment goes through.
    let (stack, peers) = with_pool(1_000_000_000, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(70);
    register(&mut app, &buyer).await;
    let held = submitted(
        &mut app,
        "u-1",
        &buyer,
        contract("U-1", &seller(1), CONTRACT_FEN),
    )
    .await;
    assert_eq!(held.state(), pb::ClaimState::PendingReview, "{held:?}");

    peers.rules.set_publicity_down(true);
    let approved = approve_claim(&app, approve("u-approve", &held.claim_id, CONTRACT_FEN))
        .await
        .expect("the approval does not wait for the period")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    let notice = approved.public_notice.clone().expect("published");
    assert_eq!(notice.end_time, None, "{notice:?}");
    assert_eq!(notice.state(), pb::PublicNoticeState::Published);
    let refused = app
        .record_claim_disbursement(pay("u-pay-1", &approved))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("PUBLICITY_PERIOD_OPEN"));
    assert!(
        !String::from_utf8_lossy(refused.details()).contains("end_time"),
        "an uncounted period has no end to report"
    );

    peers.rules.set_publicity_down(false);
    let counted = eventually("the reconciler counting the period", || {
        let mut app = app.clone();
        let claim_id = held.claim_id.clone();
        async move {
            get_claim(&mut app, &claim_id)
                .await
                .public_notice
                .filter(|notice| notice.end_time.is_some())
        }
    })
    .await;
    assert_eq!(counted.state(), pb::PublicNoticeState::Ended);
    assert_eq!(counted.start_time, notice.start_time);
    eventually("award.published relayed", || {
        let peers = peers.clone();
        let claim_id = held.claim_id.clone();
        async move {
            peers
                .notification
                .events()
                .iter()
                .any(|event| {
                    event.r#type() == npb::EventType::AwardPublished
                        && event.application_id == claim_id
                })
                .then_some(())
        }
    })
    .await;
    let paid = app
        .record_claim_disbursement(pay("u-pay-2", &approved))
        .await
        .expect("paid once the period is counted and over")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(paid.state(), pb::ClaimState::Disbursed);
}
