//! Concurrent duplicates of the review and publicity RPCs that need a stack of their own: the
//! reopening of a claim whose hold lapsed, and the filing and deciding of an objection during
//! an open publicity period.

use super::*;

#[tokio::test]
async fn an_expired_claim_reopened_answers_concurrent_duplicates_as_replays() {
    // Proves it for ReopenClaim: a claim whose hold lapsed is reopened by every copy alike and
    // held again once (one new reservation).
    let stack = stack_with(
        &[
            ("SUBSIDY_APPLICATION_HOLD_SECONDS", "1"),
            // No extension: the hold is to lapse.
            ("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "0"),
        ],
        &[],
    )
    .await;
    let mut app = stack.app().await;
    let mut budget: BudgetServiceClient<Channel> = stack.budget().await;
    let buyer = shandong(7);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "submit-REOPEN-1",
        &buyer,
        contract("REOPEN-1", &seller(1), 10_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    budget
        .expire_reservations(bpb::ExpireReservationsRequest {
            limit: 100,
            request_id: "expire-REOPEN-1".into(),
        })
        .await
        .expect("expire the hold");
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::Expired).await;

    let reopening = pb::ReopenClaimRequest {
        request_id: "dup-reopen".into(),
        claim_id: claim.claim_id.clone(),
        reason: "the hold lapsed while the service was down".into(),
    };
    let path = app_path("ReopenClaim");
    let reopened = done(&path, copy!(app, reopen_claim, reopening))
        .await
        .claim
        .expect("a claim");
    assert_eq!(
        reopened.state(),
        pb::ClaimState::PendingReview,
        "{reopened:?}"
    );
    assert_ne!(reopened.reservation_id, claim.reservation_id);
    once(&stack, ServiceKind::Application, &path, "dup-reopen").await;
    let holds = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(
        holds.len(),
        2,
        "the lapsed hold and one new hold: {holds:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn objections_answer_concurrent_duplicates_as_replays() {
    // Proves it for FileObjection and DecideObjection, during a publicity period of five
    // working days: one objection filed, and its upholding revokes the award once (one
    // revocation of the commitment in the budget, the money back in the pool).
    let stack = stack_with(
        &[],
        &[("SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE", "5")],
    )
    .await;
    let mut app = stack.app().await;
    let buyer = shandong(6);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "submit-OBJ-1",
        &buyer,
        contract("OBJ-1", &seller(1), 100_000_000),
    )
    .await;
    let approved = approve_claim(&app, approve("approve-OBJ-1", &claim.claim_id, 80_000_000))
        .await
        .expect("approve the claim")
        .into_inner()
        .claim
        .expect("a claim");
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    let committed_before = fen_of(&stack.pool(VOUCHER_POOL).await.committed);

    let notice_id = format!("notice-{}", claim.claim_id);
    let filing = pb::FileObjectionRequest {
        request_id: "dup-object".into(),
        notice_id: notice_id.clone(),
        grounds: "The buyer and the seller belong to one group.".into(),
    };
    let path = app_path("FileObjection");
    let filed = done(&path, copy!(app, file_objection, filing)).await;
    let objection = filed.objection.expect("an objection");
    assert_eq!(objection.state(), pb::ObjectionState::Open);
    assert_eq!(filed.notice.expect("the notice").open_objection_count, 1);
    once(&stack, ServiceKind::Application, &path, "dup-object").await;
    let db = stack.database(ServiceKind::Application).await;
    let objections = query_rows(
        &db,
        "SELECT objection_id FROM objections WHERE notice_id = $1",
        &[notice_id.as_str()],
    )
    .await;
    assert_eq!(objections.len(), 1);

    let deciding = pb::DecideObjectionRequest {
        request_id: "dup-decide".into(),
        objection_id: objection.objection_id.clone(),
        decision: pb::ObjectionDecision::Uphold as i32,
        reason: "The group relation was not declared.".into(),
        reviewer_id: "reviewer-1".into(),
    };
    let path = app_path("DecideObjection");
    let decided = done(&path, copy!(app, decide_objection, deciding)).await;
    assert_eq!(
        decided.objection.expect("the objection").state(),
        pb::ObjectionState::Upheld
    );
    assert_eq!(
        decided.notice.expect("the notice").state(),
        pb::PublicNoticeState::Revoked
    );
    once(&stack, ServiceKind::Application, &path, "dup-decide").await;
    assert_eq!(
        get_claim(&mut app, &claim.claim_id).await.state(),
        pb::ClaimState::Revoked
    );
    // The committed 40,000.00 returns to the pool once.
    eventually("the commitment revoked", || async {
        let pool = stack.pool(VOUCHER_POOL).await;
        (fen_of(&pool.committed) == committed_before - 4_000_000).then_some(())
    })
    .await;
    let budget_db = stack.database(ServiceKind::Budget).await;
    let revoke = format!("{BUDGET}RevokeCommitment");
    let revocations = query_rows(
        &budget_db,
        "SELECT request_id FROM audit_log WHERE rpc = $1 AND outcome = 'OK'",
        &[revoke.as_str()],
    )
    .await;
    assert_eq!(revocations.len(), 1);
    stack.shutdown().await;
}
