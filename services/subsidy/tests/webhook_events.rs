//! Every webhook type of the event catalogue (`docs/events`), produced by real RPCs through the
//! four services running as `subsidy serve` processes (this build's binary) and delivered to a
//! local HTTP endpoint: claims found ineligible, waitlisted, rejected, withdrawn, expired,
//! approved and paid; proposals found ineligible, awarded, not selected and paid; a round
//! finalised; awards published for public notice (公示) and objected to (异议): with the rules
//! service restarted on a publicity period of five working days, one claim's objection
//! dismissed, another claim's and a proposal's upheld (both revoked); the voucher pool's ledger
//! head signed by the budget (a checkpoint, whose body verifies offline with the budget's
//! public key alone). Every body received is valid under the JSON Schema of its type, and the
//! types received are exactly the catalogue's (so a type added to the catalogue fails here
//! until the scenario produces it).
//!
//! Runs on SQLite, and on PostgreSQL when `SUBSIDY_TEST_DATABASE` names a server.

mod support;

use std::collections::BTreeSet;

use subsidy::ctl::ledger_file::parse_checkpoint;
use subsidy_budget::checkpoint_key::{DEV_PUBLIC_KEY_FILE, ensure_dev_key};
use subsidy_budget::domain::checkpoint::PublicKey;
use subsidy_budget::settings::CHECKPOINT_KEY_FILE_ENV;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_rules::settings::PUBLICITY_OVERRIDE_ENV;
use subsidy_testkit::processes::Supervisor;
use subsidy_testkit::requests::{
    App, approve, approve_claim, contract, get_claim, in_seconds, register, reject, submitted,
    today_shanghai, wait_claim_state,
};
use subsidy_testkit::rounds::{
    DEADLINE_SECONDS, close, finalize, get_proposal, open_round, propose, score,
};
use subsidy_testkit::stack::Environments;
use subsidy_testkit::{LONG_HOLD_SECONDS, Stack, TEST_POOL, cny, eventually, seller, shandong};
use support::webhooks::{self, Receiver};

/// Each claim's contract total: 2,000,000.00, whose 5% (100,000.00) is the subsidy.
const CONTRACT_FEN: i64 = 200_000_000;
/// Each claim's subsidy.
const SUBSIDY_FEN: i64 = CONTRACT_FEN / 20;
/// The compute-voucher pool: room for two holds, so that a third claim waits.
const VOUCHER_POOL_FEN: i64 = 2 * SUBSIDY_FEN;
/// The contract of the claim left to expire: 1,000,000.00 (50,000.00 held).
const EXPIRING_CONTRACT_FEN: i64 = 100_000_000;
/// The hold of the claim left to expire, in seconds (the application's `hold_seconds`).
const SHORT_HOLD_SECONDS: &str = "1";
/// How often the budget expires due holds, in milliseconds.
const EXPIRY_INTERVAL_MS: &str = "100";
/// A data center in Beijing (Chaoyang district), outside Shandong.
const BEIJING_DIVISION: &str = "110105";
/// Ledger entries read in one page: more than the scenario writes to the voucher pool.
const LEDGER_PAGE_SIZE: i32 = 1000;
/// Each proposal's request, and the round's pool: 5,000,000.00 (one award).
const PROPOSAL_FEN: i64 = 500_000_000;
/// One fen above the per-project cap of 10,000,000.00.
const ABOVE_PROJECT_CAP_FEN: i64 = 1_000_000_001;
/// The rules service's publicity period while the claim and the award that are paid are
/// approved, in working days: none, so that they may be paid at once.
const NO_PUBLICITY_DAYS: &str = "0";
/// The rules service's publicity period while the awards objected to are approved, in working
/// days: their periods outlast the test, so objections are accepted.
const OPEN_PUBLICITY_DAYS: &str = "5";
/// The contract of each claim objected to: 400,000.00 (20,000.00 subsidy), so that both fit in
/// the voucher pool beside the paid claim and leave room for the claim left to expire.
const OBJECTED_CONTRACT_FEN: i64 = 40_000_000;
/// The pool of the second round, whose award is objected to and revoked.
const OBJECTED_ROUND_POOL: &str = "data-infra-objected";

/// Every webhook type of the catalogue, each produced by this scenario.
const TYPES_PRODUCED: [&str; 25] = [
    "award.published",
    "claim.approved",
    "claim.disbursed",
    "claim.expired",
    "claim.ineligible",
    "claim.information_provided",
    "claim.needs_information",
    "claim.rejected",
    "claim.reopened",
    "claim.reserved",
    "claim.revoked",
    "claim.submitted",
    "claim.waitlisted",
    "claim.withdrawn",
    "ledger.checkpoint",
    "objection.dismissed",
    "objection.filed",
    "objection.upheld",
    "proposal.awarded",
    "proposal.disbursed",
    "proposal.ineligible",
    "proposal.not_selected",
    "proposal.revoked",
    "proposal.submitted",
    "round.finalized",
];

/// The four services as processes, nothing armed; their environments, which a restart reads
/// again. The budget expires due holds every [`EXPIRY_INTERVAL_MS`] and signs checkpoints with
/// the key in `key_file`; the notification service delivers to plain HTTP on loopback; the
/// rules service counts no publicity period ([`NO_PUBLICITY_DAYS`]).
async fn start(key_file: &std::path::Path) -> (Stack, Environments) {
    let mut overrides = subsidy_testkit::test_pool_application(&[]);
    overrides.insert(
        ServiceKind::Rules,
        vec![(PUBLICITY_OVERRIDE_ENV.into(), NO_PUBLICITY_DAYS.into())],
    );
    overrides.insert(
        ServiceKind::Budget,
        vec![
            (
                "SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS".into(),
                EXPIRY_INTERVAL_MS.into(),
            ),
            (
                CHECKPOINT_KEY_FILE_ENV.into(),
                key_file.display().to_string(),
            ),
        ],
    );
    overrides.insert(
        ServiceKind::Notification,
        subsidy_testkit::loopback_webhooks(&[]),
    );
    let environments = Environments::default();
    let launch =
        Supervisor::new().launch(env!("CARGO_BIN_EXE_subsidy").into(), environments.clone());
    let stack = Stack::spawn_into(launch, overrides, environments.clone()).await;
    (stack, environments)
}

/// Stops the service `kind`, sets `settings` in its environment and starts it again (a
/// process reads its environment anew when it starts).
async fn restart_with(
    stack: &mut Stack,
    environments: &Environments,
    kind: ServiceKind,
    settings: &[(&str, &str)],
) {
    stack.stop(kind).await;
    {
        let mut environments = environments
            .lock()
            .expect("the environments lock is never poisoned");
        let environment = environments
            .get_mut(&kind)
            .expect("the service's environment");
        for (key, value) in settings {
            environment.insert((*key).into(), (*value).into());
        }
    }
    stack.restart(kind).await;
}

/// The public notice of a claim, once the rules service has counted its period.
async fn counted_claim_notice(app: &App, claim_id: &str) -> pb::PublicNotice {
    eventually(&format!("the period of {claim_id}'s notice"), || {
        let mut app = app.clone();
        async move {
            get_claim(&mut app, claim_id)
                .await
                .public_notice
                .filter(|notice| notice.end_time.is_some())
        }
    })
    .await
}

/// The public notice of a proposal, once the rules service has counted its period.
async fn counted_proposal_notice(app: &App, proposal_id: &str) -> pb::PublicNotice {
    eventually(&format!("the period of {proposal_id}'s notice"), || {
        let mut app = app.clone();
        async move {
            get_proposal(&mut app, proposal_id)
                .await
                .public_notice
                .filter(|notice| notice.end_time.is_some())
        }
    })
    .await
}

/// Files an objection to `notice` and returns it (OPEN).
async fn object(app: &mut App, request_id: &str, notice: &pb::PublicNotice) -> pb::Objection {
    app.file_objection(pb::FileObjectionRequest {
        request_id: request_id.into(),
        notice_id: notice.notice_id.clone(),
        grounds: format!(
            "The award {} went to a related party",
            notice.application_id
        ),
    })
    .await
    .expect("file an objection")
    .into_inner()
    .objection
    .expect("the response carries the objection")
}

/// A reviewer decides `objection` with `decision`.
async fn decide(
    app: &mut App,
    request_id: &str,
    objection: &pb::Objection,
    decision: pb::ObjectionDecision,
) {
    app.decide_objection(pb::DecideObjectionRequest {
        request_id: request_id.into(),
        objection_id: objection.objection_id.clone(),
        decision: decision as i32,
        reason: format!("{decision:?}: the registry was checked"),
        reviewer_id: "r.objections".into(),
    })
    .await
    .expect("decide the objection");
}

/// Submits a claim of `buyer` and waits until it is `state`.
async fn claim_in(
    app: &mut App,
    name: &str,
    buyer: &subsidy_common::Uscc,
    contract: pb::ComputeContract,
    state: pb::ClaimState,
) -> pb::Claim {
    let claim = submitted(app, name, buyer, contract).await;
    wait_claim_state(app, &claim.claim_id, state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_type_of_the_catalogue_reaches_a_real_endpoint_valid_under_its_schema() {
    // Proves: real RPCs produce every webhook type of docs/events, each delivered to a local
    // HTTP endpoint as the application→notification path sends it, every body valid under
    // the schema of its type, and no type beyond the catalogue received; the checkpoint's body
    // verifies with the budget's public key alone and names the head the budget signed.
    // The budget's key, made as `subsidy dev` makes it (the public key beside it).
    let keys = tempfile::tempdir().expect("a directory for the checkpoint key");
    let key_file = ensure_dev_key(keys.path()).expect("make a checkpoint key");
    let (mut stack, environments) = start(&key_file).await;
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    stack
        .notification()
        .await
        .create_subscription(npb::CreateSubscriptionRequest {
            request_id: "events-subscribe".into(),
            endpoint_url: endpoint,
            description: "a local receiver of every type".into(),
            ..npb::CreateSubscriptionRequest::default()
        })
        .await
        .expect("subscribe the receiver");
    stack
        .create_test_pool(VOUCHER_POOL_FEN, LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let buyers: Vec<_> = (1..=7).map(shandong).collect();
    for buyer in &buyers {
        register(&mut app, buyer).await;
    }

    // Claims: two holds fill the pool, so a third waits; one is refused by the rules.
    let paid = claim_in(
        &mut app,
        "events-paid",
        &buyers[0],
        contract("EVENTS-PAID", &seller(1), CONTRACT_FEN),
        pb::ClaimState::PendingReview,
    )
    .await;
    let withdrawn = claim_in(
        &mut app,
        "events-withdrawn",
        &buyers[1],
        contract("EVENTS-WITHDRAWN", &seller(1), CONTRACT_FEN),
        pb::ClaimState::PendingReview,
    )
    .await;
    let rejected = claim_in(
        &mut app,
        "events-rejected",
        &buyers[2],
        contract("EVENTS-REJECTED", &seller(1), CONTRACT_FEN),
        pb::ClaimState::Waitlisted,
    )
    .await;
    let mut far = contract("EVENTS-FAR", &seller(1), CONTRACT_FEN);
    far.data_center_division_code = BEIJING_DIVISION.into();
    far.data_center_name = "Beijing Chaoyang Computing Center".into();
    let ineligible = claim_in(
        &mut app,
        "events-ineligible",
        &buyers[3],
        far,
        pb::ClaimState::Ineligible,
    )
    .await;
    // The waiting claim rejected (before the withdrawal's money could fund it), the second
    // hold withdrawn, the first approved and paid in full.
    app.reject_claim(reject("events-reject", &rejected.claim_id))
        .await
        .expect("reject the waiting claim");
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "events-withdraw".into(),
        claim_id: withdrawn.claim_id.clone(),
        reason: "the contract was cancelled".into(),
    })
    .await
    .expect("withdraw the held claim");
    // The reviewer asks for more before approving; the applicant answers.
    app.request_claim_information(pb::RequestClaimInformationRequest {
        request_id: "events-ask".into(),
        claim_id: paid.claim_id.clone(),
        message: "Please send the signed acceptance report".into(),
    })
    .await
    .expect("ask for information");
    app.provide_claim_information(pb::ProvideClaimInformationRequest {
        request_id: "events-answer".into(),
        claim_id: paid.claim_id.clone(),
        message: "The acceptance report is uploaded".into(),
        document_ids: Vec::new(),
    })
    .await
    .expect("answer the request");
    approve_claim(
        &app,
        approve("events-approve", &paid.claim_id, CONTRACT_FEN),
    )
    .await
    .expect("approve the claim");
    // Published, on a period of no working days: paid at once.
    let paid_notice = counted_claim_notice(&app, &paid.claim_id).await;
    assert_eq!(paid_notice.working_days, 0, "{paid_notice:?}");
    app.record_claim_disbursement(pb::RecordClaimDisbursementRequest {
        request_id: "events-pay-claim".into(),
        claim_id: paid.claim_id.clone(),
        payment_reference: "PAY-EVENTS-CLAIM".into(),
        payment_date: Some(today_shanghai()),
        amount: cny(SUBSIDY_FEN),
    })
    .await
    .expect("record the claim's payment");

    // A round with room for one award: one proposal scored and awarded then paid, one not
    // scored (not selected), one above the project cap (ineligible).
    let (mut app, round) = open_round(&stack, PROPOSAL_FEN).await;
    let awarded = propose(
        &mut app,
        &round.round_id,
        &buyers[0],
        "events-awarded",
        PROPOSAL_FEN,
    )
    .await;
    let unscored = propose(
        &mut app,
        &round.round_id,
        &buyers[1],
        "events-unscored",
        PROPOSAL_FEN,
    )
    .await;
    let too_big = propose(
        &mut app,
        &round.round_id,
        &buyers[2],
        "events-too-big",
        ABOVE_PROJECT_CAP_FEN,
    )
    .await;
    assert_eq!(
        too_big.state(),
        pb::ProposalState::Ineligible,
        "{too_big:?}"
    );
    score(&mut app, &awarded.proposal_id, "e1", &shandong(90), 90)
        .await
        .expect("score the proposal");
    close(&mut app, &round.round_id).await;
    let finalized = app
        .finalize_selection_round(finalize("events-finalize", &round.round_id))
        .await
        .expect("finalize the round")
        .into_inner();
    let awards: Vec<&str> = finalized
        .awards
        .iter()
        .map(|award| award.proposal_id.as_str())
        .collect();
    assert_eq!(awards, [awarded.proposal_id.as_str()]);
    let awarded_notice = counted_proposal_notice(&app, &awarded.proposal_id).await;
    assert_eq!(awarded_notice.working_days, 0, "{awarded_notice:?}");
    app.record_proposal_disbursement(pb::RecordProposalDisbursementRequest {
        request_id: "events-pay-proposal".into(),
        proposal_id: awarded.proposal_id.clone(),
        payment_reference: "PAY-EVENTS-PROPOSAL".into(),
        payment_date: Some(today_shanghai()),
        amount: cny(PROPOSAL_FEN),
    })
    .await
    .expect("record the award's payment");

    // Publicity: the rules service restarted with a period of five working days, so that the
    // awards made from now on may be objected to. Two claims approved: one objection
    // dismissed (the approval stands), one upheld (the claim revoked, its money back in the
    // pool).
    restart_with(
        &mut stack,
        &environments,
        ServiceKind::Rules,
        &[(PUBLICITY_OVERRIDE_ENV, OPEN_PUBLICITY_DAYS)],
    )
    .await;
    let dismissed = claim_in(
        &mut app,
        "events-objection-dismissed",
        &buyers[5],
        contract("EVENTS-DISMISSED", &seller(1), OBJECTED_CONTRACT_FEN),
        pb::ClaimState::PendingReview,
    )
    .await;
    let revoked = claim_in(
        &mut app,
        "events-objection-upheld",
        &buyers[6],
        contract("EVENTS-REVOKED", &seller(1), OBJECTED_CONTRACT_FEN),
        pb::ClaimState::PendingReview,
    )
    .await;
    for claim in [&dismissed, &revoked] {
        approve_claim(
            &app,
            approve(
                &format!("events-approve-{}", claim.claim_id),
                &claim.claim_id,
                OBJECTED_CONTRACT_FEN,
            ),
        )
        .await
        .expect("approve the claim objected to");
    }
    let notice = counted_claim_notice(&app, &dismissed.claim_id).await;
    assert_eq!(notice.working_days, 5, "{notice:?}");
    let objection = object(&mut app, "events-object-dismissed", &notice).await;
    decide(
        &mut app,
        "events-dismiss",
        &objection,
        pb::ObjectionDecision::Dismiss,
    )
    .await;
    let notice = counted_claim_notice(&app, &revoked.claim_id).await;
    let upheld_claim_objection = object(&mut app, "events-object-claim", &notice).await;
    decide(
        &mut app,
        "events-uphold-claim",
        &upheld_claim_objection,
        pb::ObjectionDecision::Uphold,
    )
    .await;
    wait_claim_state(&app, &revoked.claim_id, pb::ClaimState::Revoked).await;
    assert_eq!(
        get_claim(&mut app, &dismissed.claim_id).await.state(),
        pb::ClaimState::Approved,
        "the approval objected to in vain stands"
    );
    // A second round, on a pool of its own, whose one award is objected to and revoked.
    stack
        .create_pool(OBJECTED_ROUND_POOL, PROPOSAL_FEN, None, LONG_HOLD_SECONDS)
        .await;
    let objected_round = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "events-round-objected".into(),
            pool_id: OBJECTED_ROUND_POOL.into(),
            title: "2025 benchmark projects, second round".into(),
            submission_deadline_time: Some(in_seconds(DEADLINE_SECONDS)),
        })
        .await
        .expect("open the second round")
        .into_inner()
        .round
        .expect("the response carries the round");
    let revoked_award = propose(
        &mut app,
        &objected_round.round_id,
        &buyers[3],
        "events-objected",
        PROPOSAL_FEN,
    )
    .await;
    score(
        &mut app,
        &revoked_award.proposal_id,
        "e1",
        &shandong(90),
        90,
    )
    .await
    .expect("score the proposal objected to");
    close(&mut app, &objected_round.round_id).await;
    app.finalize_selection_round(finalize(
        "events-finalize-objected",
        &objected_round.round_id,
    ))
    .await
    .expect("finalize the second round");
    let notice = counted_proposal_notice(&app, &revoked_award.proposal_id).await;
    assert_eq!(notice.working_days, 5, "{notice:?}");
    let upheld_proposal_objection = object(&mut app, "events-object-proposal", &notice).await;
    decide(
        &mut app,
        "events-uphold-proposal",
        &upheld_proposal_objection,
        pb::ObjectionDecision::Uphold,
    )
    .await;
    eventually("the proposal objected to to be revoked", || {
        let mut app = app.clone();
        let proposal_id = revoked_award.proposal_id.clone();
        async move {
            (get_proposal(&mut app, &proposal_id).await.state() == pb::ProposalState::Revoked)
                .then_some(())
        }
    })
    .await;

    // A hold that expires: the operator shortens the application's holds, turns their
    // extension off and restarts it; the budget's sweep expires the hold and the application's
    // reconciler notices.
    stack.stop(ServiceKind::Application).await;
    {
        let mut environments = environments
            .lock()
            .expect("the environments lock is never poisoned");
        let application = environments
            .get_mut(&ServiceKind::Application)
            .expect("the application's environment");
        application.insert(
            "SUBSIDY_APPLICATION_HOLD_SECONDS".into(),
            SHORT_HOLD_SECONDS.into(),
        );
        application.insert(
            "SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS".into(),
            "0".into(),
        );
    }
    stack.restart(ServiceKind::Application).await;
    let mut app = stack.app().await;
    let expired = claim_in(
        &mut app,
        "events-expired",
        &buyers[4],
        contract("EVENTS-EXPIRED", &seller(1), EXPIRING_CONTRACT_FEN),
        pb::ClaimState::Expired,
    )
    .await;
    // A reviewer reopens it (its new hold lapses again: the extension is off).
    app.reopen_claim(pb::ReopenClaimRequest {
        request_id: "events-reopen".into(),
        claim_id: expired.claim_id.clone(),
        reason: "the hold lapsed before the review".into(),
    })
    .await
    .expect("reopen the expired claim");

    // The voucher pool's head, moved by the claims, signed on demand by an administrator (the
    // kit's operator): one checkpoint, published as a `ledger.checkpoint` event.
    let signed = stack
        .budget()
        .await
        .create_checkpoint(bpb::CreateCheckpointRequest {
            request_id: "events-checkpoint".into(),
            pool_id: TEST_POOL.into(),
        })
        .await
        .expect("sign the voucher pool's head")
        .into_inner();
    assert!(signed.created, "{signed:?}");
    let signed = signed
        .checkpoint
        .expect("the response carries the checkpoint");
    let entries = stack
        .budget()
        .await
        .list_ledger_entries(bpb::ListLedgerEntriesRequest {
            pool_id: TEST_POOL.into(),
            page_size: LEDGER_PAGE_SIZE,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .expect("read the voucher pool's ledger")
        .into_inner();
    assert!(
        entries.next_page_token.is_empty(),
        "one page holds the pool's ledger"
    );
    let last = entries.entries.last().expect("the pool's entries");
    assert_eq!(
        (signed.sequence, &signed.head_hash),
        (last.sequence, &last.entry_hash),
        "the checkpoint signs the pool's last entry"
    );

    // Deliveries: each expected (type, application) once, under one event id, and nothing else.
    let claims: [(&pb::Claim, &[&str]); 7] = [
        (
            &paid,
            &[
                "submitted",
                "reserved",
                "needs_information",
                "information_provided",
                "approved",
                "disbursed",
            ],
        ),
        (&withdrawn, &["submitted", "reserved", "withdrawn"]),
        (&rejected, &["submitted", "waitlisted", "rejected"]),
        (&ineligible, &["submitted", "ineligible"]),
        (&expired, &["submitted", "reserved", "expired", "reopened"]),
        (&dismissed, &["submitted", "reserved", "approved"]),
        (&revoked, &["submitted", "reserved", "approved", "revoked"]),
    ];
    let proposals: [(&pb::Proposal, &[&str]); 4] = [
        (&awarded, &["submitted", "awarded", "disbursed"]),
        (&revoked_award, &["submitted", "awarded", "revoked"]),
        (&unscored, &["submitted", "not_selected"]),
        (&too_big, &["submitted", "ineligible"]),
    ];
    let expected: BTreeSet<(String, String)> = claims
        .iter()
        .flat_map(|(claim, kinds)| {
            kinds
                .iter()
                .map(|kind| (format!("claim.{kind}"), claim.claim_id.clone()))
        })
        .chain(proposals.iter().flat_map(|(proposal, kinds)| {
            kinds
                .iter()
                .map(|kind| (format!("proposal.{kind}"), proposal.proposal_id.clone()))
        }))
        // Every award published; the objections, under the award's application.
        .chain(
            [
                (paid.claim_id.as_str(), &["award.published"][..]),
                (awarded.proposal_id.as_str(), &["award.published"][..]),
                (
                    dismissed.claim_id.as_str(),
                    &["award.published", "objection.filed", "objection.dismissed"][..],
                ),
                (
                    revoked.claim_id.as_str(),
                    &["award.published", "objection.filed", "objection.upheld"][..],
                ),
                (
                    revoked_award.proposal_id.as_str(),
                    &["award.published", "objection.filed", "objection.upheld"][..],
                ),
            ]
            .into_iter()
            .flat_map(|(id, kinds)| {
                kinds
                    .iter()
                    .map(move |kind| ((*kind).to_owned(), id.to_owned()))
            }),
        )
        // Round events (two rounds) and a checkpoint concern no application.
        .chain([
            ("round.finalized".to_owned(), String::new()),
            ("ledger.checkpoint".to_owned(), String::new()),
        ])
        .collect();
    let events = eventually("every expected event to be delivered", || {
        let receiver = receiver.clone();
        let expected = &expected;
        async move {
            let events = receiver.events();
            expected
                .iter()
                .all(|key| events.contains_key(key))
                .then_some(events)
        }
    })
    .await;
    let received: BTreeSet<(String, String)> = events.keys().cloned().collect();
    assert_eq!(received, expected, "the events delivered");
    for (key, ids) in &events {
        // The reopened claim may be held, and its hold lapse, a second time: a second event
        // of those types, under its own id.
        let again = key.1 == expired.claim_id
            && ["claim.reserved", "claim.expired"].contains(&key.0.as_str());
        if key.0 == "round.finalized" {
            assert_eq!(ids.len(), 2, "one event id for each round: {ids:?}");
        } else if again {
            assert!(
                (1..=2).contains(&ids.len()),
                "one or two event ids for {key:?}: {ids:?}"
            );
        } else {
            assert_eq!(ids.len(), 1, "one event id for {key:?}: {ids:?}");
        }
    }
    // The refusals are the rules the scenario meant to break.
    let reasons = |kind: &str, id: &str| -> String {
        let body = receiver
            .bodies()
            .into_iter()
            .find(|body| body["type"] == kind && body["data"]["application_id"] == id)
            .expect("a body of the event");
        body["data"]["payload"]["failed_reasons"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        reasons("claim.ineligible", &ineligible.claim_id).contains("DATA_CENTER_OUTSIDE_SHANDONG")
    );
    assert!(
        reasons("proposal.ineligible", &too_big.proposal_id).contains("REQUEST_ABOVE_PROJECT_CAP")
    );
    // The publicity bodies carry the period counted and the decisions taken.
    let payload = |kind: &str, id: &str| -> serde_json::Value {
        receiver
            .bodies()
            .into_iter()
            .find(|body| body["type"] == kind && body["data"]["application_id"] == id)
            .map(|body| body["data"]["payload"].clone())
            .expect("a body of the event")
    };
    assert_eq!(
        payload("award.published", &paid.claim_id)["working_days"],
        "0"
    );
    let published = payload("award.published", &revoked_award.proposal_id);
    assert_eq!(published["working_days"], "5", "{published}");
    assert_eq!(published["project_title"], "events-objected", "{published}");
    assert_eq!(
        payload("objection.dismissed", &dismissed.claim_id)["objection_id"],
        objection.objection_id.as_str()
    );
    let claim_revoked = payload("claim.revoked", &revoked.claim_id);
    assert_eq!(
        claim_revoked["objection_id"],
        upheld_claim_objection.objection_id.as_str(),
        "{claim_revoked}"
    );
    let proposal_revoked = payload("proposal.revoked", &revoked_award.proposal_id);
    assert_eq!(
        proposal_revoked["objection_id"],
        upheld_proposal_objection.objection_id.as_str(),
        "{proposal_revoked}"
    );
    assert_checkpoint_verifies(&receiver, &keys.path().join(DEV_PUBLIC_KEY_FILE), &signed);

    // The contract: every body valid under the schema of its type; the types received exactly
    // those produced, which are every type of the catalogue.
    let captured = webhooks::assert_valid_bodies(&receiver.bodies());
    assert_eq!(
        captured.iter().map(String::as_str).collect::<Vec<_>>(),
        TYPES_PRODUCED
    );
    assert_eq!(
        webhooks::catalogue_types()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        TYPES_PRODUCED,
        "the catalogue's webhook types"
    );
    stack.shutdown().await;
}

/// Checks the `ledger.checkpoint` body received as an auditor would, offline: read as
/// `subsidyctl ledger verify --checkpoint` reads a webhook body, its signature verifies with
/// the public key in `public_key_file`, it names the head `signed` names, and a changed
/// counter no longer verifies.
#[track_caller]
fn assert_checkpoint_verifies(
    receiver: &Receiver,
    public_key_file: &std::path::Path,
    signed: &bpb::LedgerCheckpoint,
) {
    let body = receiver
        .bodies()
        .into_iter()
        .find(|body| body["type"] == "ledger.checkpoint")
        .expect("a checkpoint body");
    let pem = std::fs::read_to_string(public_key_file).expect("read the public key");
    let public = PublicKey::from_pem(&pem).expect("the budget's public key");
    let checkpoint = parse_checkpoint(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(public.verify(&checkpoint), Ok(()), "{body}");
    assert_eq!(checkpoint.key_id, signed.key_id, "{body}");
    assert_eq!(checkpoint.signature, signed.signature, "{body}");
    assert_eq!(
        (
            checkpoint.head.pool_id.as_str(),
            checkpoint.head.sequence,
            checkpoint.head.head_hash.as_str()
        ),
        (
            signed.pool_id.as_str(),
            signed.sequence,
            signed.head_hash.as_str()
        ),
        "{body}"
    );
    let mut changed = checkpoint.clone();
    changed.head.held_fen += 1;
    assert!(
        public.verify(&changed).is_err(),
        "a changed counter verifies"
    );
}
