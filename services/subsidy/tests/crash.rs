//! The four services as real OS processes (`subsidy serve KIND`, this build's binary), each
//! killed with `SIGKILL` at a named point while clients keep calling (see
//! `subsidy_common::crash` for the points), and started again at once as Kubernetes would.
//! Clients retry what failed in transit with the same `request_id`, as every gRPC client with
//! a deadline does. Afterwards: every claim funded and approved exactly once, reservations equal
//! the funded applications (no orphan hold), one award set, the ledger intact, every expected
//! event delivered at least once to a local webhook receiver, and every webhook body received
//! valid under the JSON Schema of its type in `docs/events` (the published contract).
//!
//! Runs on SQLite, and on PostgreSQL when `SUBSIDY_TEST_DATABASE` names a server.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_testkit::processes::Supervisor;
use subsidy_testkit::requests::{
    App, approve, approve_claim, contract, register, submit, verify_invoices_up_to,
};
use subsidy_testkit::rounds::{ROUND_POOL, finalize};
use subsidy_testkit::stack::Environments;
use subsidy_testkit::{LONG_HOLD_SECONDS, Stack, TEST_POOL, cny, fen_of, seller, shandong};
use support::webhooks::{self, Receiver};
use tonic::Code;

/// Claims submitted and approved under the crashes.
const CLAIMS: usize = 12;
/// Each claim's contract total: 2,000,000.00, whose 5% (100,000.00) is the subsidy.
const CONTRACT_FEN: i64 = 200_000_000;
/// Each claim's subsidy.
const SUBSIDY_FEN: i64 = CONTRACT_FEN / 20;
/// Proposals of the round: the pool holds the three best.
const PROPOSALS: usize = 4;
/// Each proposal's request: 5,000,000.00.
const PROPOSAL_FEN: i64 = 500_000_000;
/// Longest a client keeps retrying one call, in seconds.
const RETRY_SECONDS: u64 = 90;

/// What one process is armed with on its successive starts; later starts run unarmed.
const BUDGET_POINTS: [&str; 1] = ["budget.batch.committed@5"];
const APPLICATION_POINTS: [&str; 4] = [
    "application.claim.recorded@3",
    "application.claim.reserved@4",
    "application.claim.committed@3",
    "application.round.awarded@2",
];
const NOTIFICATION_POINTS: [&str; 1] = ["notification.webhook.delivered@3"];

/// Whether a call failed in transit (the process died or is starting), so that the client
/// sends it again; anything else is an answer.
fn in_transit(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Aborted => true,
        Code::DeadlineExceeded => true,
        // A connection reset mid-answer reaches tonic as an HTTP/2 error.
        Code::Internal => {
            let message = status.message();
            message.contains("h2 protocol error") || message.contains("transport error")
        }
        _ => false,
    }
}

/// Sends the call until it is answered, as a retrying client would (the same request each
/// time); the answer's message.
macro_rules! retried {
    ($what:expr, $call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(RETRY_SECONDS);
        loop {
            match $call.await {
                Ok(response) => break response.into_inner(),
                Err(status) if in_transit(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{}: {:?} {}", $what, status.code(), status.message()),
            }
        }
    }};
}

/// Polls `probe` until it returns `Some`, for as long as a client retries.
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(RETRY_SECONDS);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event types this scenario produces, each delivered as webhooks: what the bodies it
/// captures are checked to cover, exactly.
const TYPES_PRODUCED: [&str; 8] = [
    "award.published",
    "claim.approved",
    "claim.reserved",
    "claim.submitted",
    "proposal.awarded",
    "proposal.not_selected",
    "proposal.submitted",
    "round.finalized",
];

/// Every reservation of `pool_id`.
async fn reservations(stack: &Stack, pool_id: &str) -> Vec<bpb::Reservation> {
    let mut budget = stack.budget().await;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = retried!("list reservations", {
            budget.list_reservations(bpb::ListReservationsRequest {
                pool_id: pool_id.into(),
                page_size: 100,
                page_token: page_token.clone(),
                ..bpb::ListReservationsRequest::default()
            })
        });
        all.extend(page.reservations);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn pool(stack: &Stack, pool_id: &str) -> bpb::Pool {
    let mut budget = stack.budget().await;
    retried!("read a pool", {
        budget.get_pool(bpb::GetPoolRequest {
            pool_id: pool_id.into(),
        })
    })
    .pool
    .expect("the response carries the pool")
}

async fn claim(app: &App, claim_id: &str) -> pb::Claim {
    let mut app = app.clone();
    retried!("read a claim", {
        app.get_claim(pb::GetClaimRequest {
            claim_id: claim_id.into(),
        })
    })
    .claim
    .expect("the response carries the claim")
}

/// A scored proposal: the score of one expert, `value`.
async fn scored(app: &App, proposal_id: &str, value: u32) {
    let app = app.clone();
    let expert_org = shandong(90);
    let deadline = Instant::now() + Duration::from_secs(RETRY_SECONDS);
    loop {
        match subsidy_testkit::rounds::score(
            &mut app.clone(),
            proposal_id,
            "e1",
            &expert_org,
            value,
        )
        .await
        {
            Ok(_) => return,
            Err(status) if in_transit(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("score: {:?} {}", status.code(), status.message()),
        }
    }
}

async fn start() -> (Stack, Supervisor) {
    let supervisor = Supervisor::new();
    supervisor.arm(ServiceKind::Budget, &BUDGET_POINTS);
    supervisor.arm(ServiceKind::Application, &APPLICATION_POINTS);
    supervisor.arm(ServiceKind::Notification, &NOTIFICATION_POINTS);
    let mut overrides = subsidy_testkit::test_pool_application(&[]);
    overrides.insert(
        ServiceKind::Notification,
        subsidy_testkit::loopback_webhooks(&[
            // A lease of 1 s + the margin: a delivery of a killed process is taken over soon.
            ("SUBSIDY_WEBHOOK_TIMEOUT_MS", "1000"),
            (
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                "100,200,400,800,1000,1000,1000,1000",
            ),
        ]),
    );
    let environments = Environments::default();
    let launch = supervisor.launch(env!("CARGO_BIN_EXE_subsidy").into(), environments.clone());
    let stack = Stack::spawn_into(launch, overrides, environments).await;
    (stack, supervisor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_killed_at_named_points_under_load_keep_every_guarantee() {
    let (stack, supervisor) = start().await;
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut notes = stack.notification().await;
    retried!("subscribe", {
        notes.create_subscription(npb::CreateSubscriptionRequest {
            request_id: "crash-subscribe".into(),
            endpoint_url: endpoint.clone(),
            description: "a local receiver".into(),
            ..npb::CreateSubscriptionRequest::default()
        })
    });
    // Room for every claim: none waits, so each must end APPROVED.
    stack
        .create_test_pool(CLAIMS as i64 * SUBSIDY_FEN * 2, LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let buyers: Vec<_> = (1..=CLAIMS).map(shandong).collect();
    for buyer in &buyers {
        register(&mut app, buyer).await;
    }

    // Submission, with the application killed after a claim was recorded and before it was
    // numbered, the budget killed after a batch committed and the application after a
    // reservation was made and before it was recorded.
    let submissions = buyers.iter().enumerate().map(|(i, buyer)| {
        let mut app = app.clone();
        let request = submit(
            &format!("crash-submit-{i}"),
            buyer,
            contract(&format!("CRASH-{i:03}"), &seller(1), CONTRACT_FEN),
        );
        async move {
            retried!("submit a claim", app.submit_claim(request.clone()))
                .claim
                .expect("the response carries the claim")
                .claim_id
        }
    });
    let claim_ids: Vec<String> = futures::future::join_all(submissions).await;
    assert_eq!(
        claim_ids.iter().collect::<BTreeSet<_>>().len(),
        CLAIMS,
        "one claim per submission"
    );
    for claim_id in &claim_ids {
        until(&format!("{claim_id} to be held"), || {
            let app = app.clone();
            async move {
                (claim(&app, claim_id).await.state() == pb::ClaimState::PendingReview).then_some(())
            }
        })
        .await;
    }

    // Every claim numbered once, without gaps, the one recorded by the killed process too.
    let db = stack.database(ServiceKind::Application).await;
    let numbers: Vec<i64> =
        sqlx::query_scalar("SELECT accept_seq FROM claims WHERE pool_id = $1 ORDER BY accept_seq")
            .bind(TEST_POOL)
            .fetch_all(&db.pool)
            .await
            .expect("read the acceptance numbers");
    assert_eq!(numbers, (1..=CLAIMS as i64).collect::<Vec<_>>());

    // The reviewer's invoice checks, repeated until they stick (a call may meet a service
    // being restarted).
    for claim_id in &claim_ids {
        until(&format!("{claim_id}'s invoices verified"), || {
            let app = app.clone();
            async move {
                verify_invoices_up_to(&app, claim_id, CONTRACT_FEN).await;
                let verified = claim(&app, claim_id).await.verified_invoiced_amount;
                (fen_of(&verified) >= CONTRACT_FEN).then_some(())
            }
        })
        .await;
    }

    // Approval, with the application killed after the budget committed and before it
    // recorded the commit.
    let approvals = claim_ids.iter().enumerate().map(|(i, claim_id)| {
        let app = app.clone();
        let request = approve(&format!("crash-approve-{i}"), claim_id, CONTRACT_FEN);
        async move {
            retried!("approve a claim", approve_claim(&app, request.clone()))
                .claim
                .expect("the response carries the claim")
        }
    });
    for approved in futures::future::join_all(approvals).await {
        assert_eq!(approved.state(), pb::ClaimState::Approved, "{approved:?}");
    }

    // A round finalised, with the application killed after an award was reserved and before
    // it was recorded.
    let mut budget = stack.budget().await;
    retried!("create the round's pool", {
        budget.create_pool(bpb::CreatePoolRequest {
            request_id: "crash-round-pool".into(),
            pool_id: ROUND_POOL.into(),
            display_name: ROUND_POOL.into(),
            total: cny(3 * PROPOSAL_FEN),
            default_hold_seconds: LONG_HOLD_SECONDS,
            ..bpb::CreatePoolRequest::default()
        })
    });
    let round = retried!("open a round", {
        app.create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "crash-round".into(),
            pool_id: ROUND_POOL.into(),
            title: "benchmark projects under crashes".into(),
            submission_deadline_time: Some(subsidy_testkit::requests::in_seconds(3600)),
        })
    })
    .round
    .expect("the response carries the round");
    let mut proposal_ids = Vec::new();
    for (i, applicant) in buyers.iter().take(PROPOSALS).enumerate() {
        let proposal = retried!("propose", {
            app.submit_proposal(pb::SubmitProposalRequest {
                request_id: format!("crash-propose-{i}"),
                round_id: round.round_id.clone(),
                applicant_uscc: applicant.to_string(),
                category: pb::ProposalCategory::TrustedDataSpace as i32,
                title: format!("space {i}"),
                requested_amount: cny(PROPOSAL_FEN),
                summary: "A trusted data space.".into(),
                attachments: Vec::new(),
            })
        })
        .proposal
        .expect("the response carries the proposal");
        // Scores 90, 80, 70, 60: the last does not fit the pool.
        scored(&app, &proposal.proposal_id, 90 - 10 * i as u32).await;
        proposal_ids.push(proposal.proposal_id);
    }
    retried!("close the round", {
        app.close_selection_round(pb::CloseSelectionRoundRequest {
            request_id: "crash-close".into(),
            round_id: round.round_id.clone(),
        })
    });
    let finalized = retried!("finalize the round", {
        app.finalize_selection_round(finalize("crash-finalize", &round.round_id))
    });
    let awarded: Vec<String> = finalized
        .awards
        .iter()
        .map(|award| award.proposal_id.clone())
        .collect();
    assert_eq!(awarded, proposal_ids[..3], "the three best, once each");
    let again = retried!("finalize again", {
        app.finalize_selection_round(finalize("crash-finalize", &round.round_id))
    });
    assert_eq!(again, finalized, "a replay answers the same award set");

    // Every armed point was reached, each killing its process once.
    let deaths = supervisor.deaths();
    let reached: Vec<String> = deaths
        .iter()
        .filter_map(|death| death.armed.clone())
        .collect();
    let mut armed: Vec<&str> = BUDGET_POINTS
        .iter()
        .chain(&APPLICATION_POINTS)
        .chain(&NOTIFICATION_POINTS)
        .copied()
        .collect();
    // The notification point is reached when deliveries flow, which the checks below wait for.
    until("every crash point to be reached", || {
        let supervisor = supervisor.clone();
        async move { supervisor.unreached().is_empty().then_some(()) }
    })
    .await;
    let reached_all: BTreeSet<String> = supervisor
        .deaths()
        .iter()
        .filter_map(|death| death.armed.clone())
        .collect();
    armed.sort_unstable();
    assert_eq!(
        reached_all.iter().map(String::as_str).collect::<Vec<_>>(),
        armed,
        "deaths so far: {reached:?}"
    );

    // Money: the compute-voucher pool holds nothing and committed exactly the subsidies;
    // one reservation per claim, committed.
    let vouchers = pool(&stack, TEST_POOL).await;
    assert_eq!(fen_of(&vouchers.held), 0, "no orphan hold");
    assert_eq!(fen_of(&vouchers.committed), CLAIMS as i64 * SUBSIDY_FEN);
    let made = reservations(&stack, TEST_POOL).await;
    let by_claim: BTreeMap<&str, Vec<&bpb::Reservation>> =
        made.iter().fold(BTreeMap::new(), |mut by, reservation| {
            by.entry(reservation.reference.as_str())
                .or_default()
                .push(reservation);
            by
        });
    assert_eq!(
        made.len(),
        CLAIMS,
        "reservations equal funded claims: {made:?}"
    );
    for claim_id in &claim_ids {
        let mine = &by_claim[claim_id.as_str()];
        assert_eq!(mine.len(), 1, "{claim_id}");
        assert_eq!(mine[0].state(), bpb::ReservationState::Committed);
        assert_eq!(fen_of(&mine[0].committed_amount), SUBSIDY_FEN);
        let read = claim(&app, claim_id).await;
        assert_eq!(read.state(), pb::ClaimState::Approved);
        assert_eq!(read.reservation_id, mine[0].reservation_id);
    }
    // The round's pool: one committed reservation per award, none for the fourth.
    let round_pool = pool(&stack, ROUND_POOL).await;
    assert_eq!(fen_of(&round_pool.held), 0, "no orphan hold");
    assert_eq!(fen_of(&round_pool.committed), 3 * PROPOSAL_FEN);
    let awards = reservations(&stack, ROUND_POOL).await;
    let references: BTreeSet<&str> = awards.iter().map(|r| r.reference.as_str()).collect();
    assert_eq!(awards.len(), 3, "no duplicate award: {awards:?}");
    assert_eq!(
        references,
        proposal_ids[..3]
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    assert!(
        awards
            .iter()
            .all(|r| r.state() == bpb::ReservationState::Committed)
    );
    let ledger = retried!("verify the ledger", {
        budget.verify_ledger(bpb::VerifyLedgerRequest {})
    });
    assert!(ledger.intact, "{ledger:?}");

    // Events: each expected one delivered at least once, under one event id.
    let expected: Vec<(String, String)> = claim_ids
        .iter()
        .flat_map(|id| {
            [
                ("claim.submitted".to_owned(), id.clone()),
                ("claim.reserved".to_owned(), id.clone()),
                ("claim.approved".to_owned(), id.clone()),
                ("award.published".to_owned(), id.clone()),
            ]
        })
        .chain(
            proposal_ids
                .iter()
                .map(|id| ("proposal.submitted".to_owned(), id.clone())),
        )
        .chain(proposal_ids[..3].iter().flat_map(|id| {
            [
                ("proposal.awarded".to_owned(), id.clone()),
                ("award.published".to_owned(), id.clone()),
            ]
        }))
        .chain([("proposal.not_selected".to_owned(), proposal_ids[3].clone())])
        // A round event concerns no application.
        .chain([("round.finalized".to_owned(), String::new())])
        .collect();
    let events = until("every expected event to be delivered", || {
        let receiver = receiver.clone();
        let expected = expected.clone();
        async move {
            let events = receiver.events();
            expected
                .iter()
                .all(|key| events.contains_key(key))
                .then_some(events)
        }
    })
    .await;
    for key in &expected {
        assert_eq!(events[key].len(), 1, "one event id for {key:?}");
    }

    // The contract: every body received is valid under the schema of its type in
    // docs/events, and the types received are exactly those this scenario produces.
    let captured = webhooks::assert_valid_bodies(&receiver.bodies());
    assert_eq!(
        captured.iter().map(String::as_str).collect::<Vec<_>>(),
        TYPES_PRODUCED
    );
    stack.shutdown().await;
}
