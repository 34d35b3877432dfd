//! The reasons of publicity (公示) and objections (异议): on the main stack, whose rules service
//! counts periods of zero working days (a notice ends as it is published), and on a stack of its
//! own whose periods last five working days (a notice stays open for the whole test).

use super::*;

/// Approves a claim of `buyer` on a new contract `number` (giving it a verified invoice first)
/// and returns it once its notice's period has been counted (`end_time` set).
async fn approved_and_published(
    app: &mut App,
    request_id: &str,
    buyer: &subsidy_common::Uscc,
    number: &str,
) -> pb::Claim {
    let claim = submitted(
        app,
        request_id,
        buyer,
        contract(number, &seller(1), 100_000_000),
    )
    .await;
    let claim = wait_claim_state(app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    approve_claim(
        app,
        approve(
            &format!("{request_id}-approve"),
            &claim.claim_id,
            100_000_000,
        ),
    )
    .await
    .expect("approve the claim");
    eventually("the publicity period counted", || {
        let mut app = app.clone();
        let claim_id = claim.claim_id.clone();
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

/// A `FileObjection` request.
fn objection(request_id: &str, notice_id: &str) -> pb::FileObjectionRequest {
    pb::FileObjectionRequest {
        request_id: request_id.into(),
        notice_id: notice_id.into(),
        grounds: "The buyer and the seller belong to one group.".into(),
    }
}

/// A `DecideObjection` request.
fn decision(
    request_id: &str,
    objection_id: &str,
    decision: pb::ObjectionDecision,
) -> pb::DecideObjectionRequest {
    pb::DecideObjectionRequest {
        request_id: request_id.into(),
        objection_id: objection_id.into(),
        decision: decision as i32,
        reason: "The group relation was not declared.".into(),
        reviewer_id: "reviewer-1".into(),
    }
}

/// A `RecordClaimDisbursement` request paying `claim` its approved amount.
fn payment(request_id: &str, claim: &pb::Claim) -> pb::RecordClaimDisbursementRequest {
    pb::RecordClaimDisbursementRequest {
        request_id: request_id.into(),
        claim_id: claim.claim_id.clone(),
        payment_reference: format!("PAY-{request_id}"),
        payment_date: Some(today_shanghai()),
        amount: claim.approved_amount.clone(),
    }
}

/// On the main stack (periods of zero working days): an unknown notice and an unknown
/// objection, and an objection to an award whose period ended as it was published.
pub(crate) async fn ended_publicity_reasons(
    app: &mut App,
    buyer: &subsidy_common::Uscc,
    seen: &mut Seen,
) {
    seen.refused(
        app.file_objection(objection("o-nowhere", "notice-claim-nowhere"))
            .await,
        Code::NotFound,
        APPLICATION,
        "NOTICE_NOT_FOUND",
    );
    seen.refused(
        app.decide_objection(decision(
            "d-nowhere",
            "objection-nowhere",
            pb::ObjectionDecision::Dismiss,
        ))
        .await,
        Code::NotFound,
        APPLICATION,
        "OBJECTION_NOT_FOUND",
    );
    let claim = approved_and_published(app, "c-ended", buyer, "R-P1").await;
    let notice = claim.public_notice.expect("a notice");
    assert_eq!(notice.state(), pb::PublicNoticeState::Ended, "{notice:?}");
    seen.refused(
        app.file_objection(objection("o-late", &notice.notice_id))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "PUBLICITY_PERIOD_ENDED",
    );
}

/// On a stack of its own whose periods last five working days: payment refused while the
/// period runs, then while an objection is open (reported first); the objection upheld, a
/// second decision of it refused, and a further objection to the revoked award refused.
pub(crate) async fn open_publicity_reasons(seen: &mut Seen) {
    let mut overrides = quick_application(&[]);
    overrides.insert(
        ServiceKind::Rules,
        vec![(
            "SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE".into(),
            "5".into(),
        )],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let buyer = shandong(22);
    register(&mut app, &buyer).await;
    let claim = approved_and_published(&mut app, "c-open", &buyer, "P-1").await;
    let notice = claim.public_notice.clone().expect("a notice");
    assert_eq!(
        notice.state(),
        pb::PublicNoticeState::Published,
        "{notice:?}"
    );
    seen.refused_with(
        app.record_claim_disbursement(payment("pay-open", &claim))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "PUBLICITY_PERIOD_OPEN",
        &["end_time"],
    );
    let filed = app
        .file_objection(objection("o-open", &notice.notice_id))
        .await
        .expect("an objection during the period")
        .into_inner()
        .objection
        .expect("the objection");
    seen.refused_with(
        app.record_claim_disbursement(payment("pay-objected", &claim))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "OBJECTION_OPEN",
        &["end_time"],
    );
    app.decide_objection(decision(
        "d-uphold",
        &filed.objection_id,
        pb::ObjectionDecision::Uphold,
    ))
    .await
    .expect("uphold the objection");
    seen.refused(
        app.decide_objection(decision(
            "d-again",
            &filed.objection_id,
            pb::ObjectionDecision::Dismiss,
        ))
        .await,
        Code::FailedPrecondition,
        APPLICATION,
        "OBJECTION_ALREADY_DECIDED",
    );
    seen.refused(
        app.file_objection(objection("o-revoked", &notice.notice_id))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "AWARD_REVOKED",
    );
    stack.shutdown().await;
}
