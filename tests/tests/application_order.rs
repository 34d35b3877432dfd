//! Claims are funded in the order the application service accepted them: under a burst of
//! simultaneous submissions against a nearly exhausted pool, the claims that got money are
//! exactly the first ones accepted (the rest wait on the waitlist in the same order), also
//! when the application is killed in the middle of the burst and started again, also as a
//! real process killed with `SIGKILL` while a second replica serves beside it (PostgreSQL).

mod application_support;

use std::time::Duration;

use application_support::*;
use futures::future::join_all;
use subsidy_common::Uscc;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;
use tonic::Code;

/// Claims submitted at once.
const CLAIMS: usize = 200;

/// The contract total of the `n`-th claim, in fen: entitlements (5%) from 1,000.00 to
/// 20,900.00, so that a later small claim would often fit where an earlier large one does not.
fn contract_total_fen(n: usize) -> i64 {
    let yuan = 20_000 + ((n * 7_919) % 400) as i64 * 1_000;
    yuan * 100
}

/// The entitlement of the `n`-th claim, in fen.
fn entitlement_fen(n: usize) -> i64 {
    contract_total_fen(n) / 20
}

/// Submits the `n`-th claim (one enterprise each, so no enterprise cap interferes),
/// retrying with the same request id while the application is away, as a client would.
async fn submit_until_answered(app: App, buyer: Uscc, n: usize) -> pb::Claim {
    let request = submit(&format!("order-{n}"), &buyer, requests_contract(n));
    loop {
        let mut app = app.clone();
        match app.submit_claim(request.clone()).await {
            Ok(response) => return response.into_inner().claim.expect("a claim"),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) || (status.code() == Code::Internal
                    && status.message().contains("h2 protocol error")) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("claim {n}: {status:?}"),
        }
    }
}

fn requests_contract(n: usize) -> pb::ComputeContract {
    contract(&format!("ORDER-{n}"), &seller(1), contract_total_fen(n))
}

/// Registers one enterprise per claim.
async fn buyers(app: &mut App) -> Vec<Uscc> {
    let buyers: Vec<Uscc> = (0..CLAIMS).map(|n| shandong(100 + n)).collect();
    for buyer in &buyers {
        register(app, buyer).await;
    }
    buyers
}

/// The claims of the pool in acceptance order: (acceptance number, state, reserved fen,
/// entitlement fen); a claim recorded and not numbered yet has no acceptance number.
async fn line(stack: &Stack) -> Vec<(Option<i64>, String, i64, i64)> {
    let db = stack.database(ServiceKind::Application).await;
    sqlx::query_as(
        "SELECT accept_seq, state, reserved_fen, entitlement_fen FROM claims WHERE pool_id = $1 \
         ORDER BY accept_seq",
    )
    .bind(TEST_POOL)
    .fetch_all(&db.pool)
    .await
    .expect("read the claims")
}

/// Waits until no claim is still being decided, then checks that the funded claims are a
/// prefix of the acceptance order and the waitlist is the rest, in order.
async fn assert_funded_in_acceptance_order(stack: &Stack, pool_total_fen: i64) {
    let claims = eventually("every claim decided", || async {
        let claims = line(stack).await;
        (claims.len() == CLAIMS
            && claims
                .iter()
                .all(|(seq, state, _, _)| seq.is_some() && state != "SUBMITTED"))
        .then_some(claims)
    })
    .await;
    let numbers: Vec<i64> = claims.iter().filter_map(|(seq, ..)| *seq).collect();
    assert_eq!(
        numbers,
        (1..=CLAIMS as i64).collect::<Vec<_>>(),
        "one acceptance number per claim, without gaps"
    );
    let funded = claims
        .iter()
        .take_while(|(_, state, ..)| state == "PENDING_REVIEW")
        .count();
    let waiting = &claims[funded..];
    assert!(
        waiting.iter().all(|(_, state, ..)| state == "WAITLISTED"),
        "after the first claim without money ({}), every later one waits; funded later: {:?}",
        funded + 1,
        waiting
            .iter()
            .filter(|(_, state, ..)| state != "WAITLISTED")
            .map(|(seq, ..)| seq)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(
        funded > 0 && funded < CLAIMS,
        "the pool ran out: {funded} funded"
    );
    let reserved: i64 = claims[..funded].iter().map(|(_, _, r, _)| r).sum();
    for (_, _, held, entitlement) in &claims[..funded] {
        assert_eq!(held, entitlement, "held in full");
    }
    assert!(reserved <= pool_total_fen);
    let head = waiting[0].3;
    assert!(
        reserved + head > pool_total_fen,
        "the head of the waitlist does not fit what is left"
    );
    assert_eq!(fen_of(&stack.pool(TEST_POOL).await.held), reserved);
    // The waitlist positions follow the acceptance order.
    let db = stack.database(ServiceKind::Application).await;
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT claim_id FROM claims WHERE pool_id = $1 AND state = 'WAITLISTED' ORDER BY accept_seq",
    )
    .bind(TEST_POOL)
    .fetch_all(&db.pool)
    .await
    .expect("read the waitlist");
    let mut app = stack.app().await;
    let mut listed = app
        .list_claims(pb::ListClaimsRequest {
            state: pb::ClaimState::Waitlisted as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list the waitlist")
        .into_inner()
        .claims;
    listed.sort_by_key(|claim| claim.waitlist_position);
    let positions: Vec<i64> = listed.iter().map(|claim| claim.waitlist_position).collect();
    assert_eq!(positions, (1..=order.len() as i64).collect::<Vec<_>>());
    let by_position: Vec<String> = listed.into_iter().map(|claim| claim.claim_id).collect();
    assert_eq!(by_position, order, "waitlist positions in acceptance order");
    assert_claims_consistent(stack, TEST_POOL).await;
    assert_ledger_intact(stack).await;
}

/// A pool that covers about 60% of the claims' entitlements.
fn pool_total() -> i64 {
    (0..CLAIMS).map(entitlement_fen).sum::<i64>() * 3 / 5
}

#[tokio::test]
async fn a_burst_of_claims_near_exhaustion_is_funded_in_acceptance_order() {
    // Proves the funded claims are exactly the first accepted, under 200 simultaneous
    // submissions that race for the last of a pool.
    let total = pool_total();
    let stack = with_pool(total, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyers = buyers(&mut app).await;
    join_all(
        buyers
            .into_iter()
            .enumerate()
            .map(|(n, buyer)| submit_until_answered(app.clone(), buyer, n)),
    )
    .await;
    assert_funded_in_acceptance_order(&stack, total).await;
    // The line is funded in batches, not one claim per budget transaction: the budget's
    // ledger shows reserves written together (a batch's entries share its database time).
    let largest = largest_reserve_batch(&stack).await;
    assert!(
        largest > 1,
        "200 claims at once were reserved one at a time"
    );
    // The application records the line's holds in batches too: the "held" history entries of
    // several claims share one transaction's time; and every claim's history stays whole (one
    // entry per revision, the last one the hold for a funded claim).
    let db = stack.database(ServiceKind::Application).await;
    let held_together: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n FROM history \
         WHERE to_state = 'PENDING_REVIEW' GROUP BY created_us) AS held",
    )
    .fetch_one(&db.pool)
    .await
    .expect("read the holds' history");
    assert!(
        held_together > 1,
        "the holds were recorded one claim per transaction"
    );
    let torn: Vec<String> = sqlx::query_scalar(
        "SELECT claim_id FROM claims c WHERE c.revision <> (SELECT COUNT(*) FROM history h \
         WHERE h.application_id = c.claim_id) OR (c.state = 'PENDING_REVIEW' AND NOT EXISTS \
         (SELECT 1 FROM history h WHERE h.application_id = c.claim_id \
         AND h.sequence = c.revision AND h.to_state = 'PENDING_REVIEW'))",
    )
    .fetch_all(&db.pool)
    .await
    .expect("read the histories");
    assert!(
        torn.is_empty(),
        "claims whose history is not whole: {torn:?}"
    );
    stack.shutdown().await;
}

/// The most RESERVED entries of the test pool's ledger written by one budget transaction.
async fn largest_reserve_batch(stack: &Stack) -> usize {
    use subsidy_proto::budget as bpb;
    let entries = stack
        .budget()
        .await
        .list_ledger_entries(bpb::ListLedgerEntriesRequest {
            pool_id: TEST_POOL.into(),
            page_size: 1000,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .expect("read the ledger")
        .into_inner()
        .entries;
    let mut largest = 0;
    let mut run = 0;
    let mut last = None;
    for entry in entries
        .iter()
        .filter(|entry| entry.kind == bpb::LedgerEntryKind::Reserved as i32)
    {
        run = if entry.create_time.is_some() && entry.create_time == last {
            run + 1
        } else {
            1
        };
        last = entry.create_time;
        largest = largest.max(run);
    }
    largest
}

#[tokio::test]
async fn acceptance_order_holds_across_a_kill_and_restart_in_the_middle_of_a_burst() {
    // Proves the same when the application dies in the middle of the burst (its in-flight
    // submissions cut off, as by kill -9) and starts again: clients retry, and the claims
    // left half-done are funded in their turn by the restarted service.
    let total = pool_total();
    let mut stack = with_pool(total, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyers = buyers(&mut app).await;
    let lazy = App::new(stack.lazy_channel(ServiceKind::Application));
    let burst =
        tokio::spawn(join_all(buyers.into_iter().enumerate().map(
            move |(n, buyer)| submit_until_answered(lazy.clone(), buyer, n),
        )));
    eventually("a third of the claims accepted", || async {
        (line(&stack).await.len() >= CLAIMS / 3).then_some(())
    })
    .await;
    stack.kill(ServiceKind::Application).await;
    stack.restart(ServiceKind::Application).await;
    burst.await.expect("every claim answered");
    assert_funded_in_acceptance_order(&stack, total).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acceptance_order_holds_across_application_processes_one_killed_mid_burst() {
    // Proves the same with the services as real processes: the application is killed with
    // SIGKILL after the budget made its 10th reservation for it and before it recorded it, and
    // restarted; on PostgreSQL a second application replica (another process on the same
    // database) takes every other client, so the order is kept across replicas.
    use subsidy_testkit::processes::{Supervisor, start_replica, subsidy_binary};
    use subsidy_testkit::stack::Environments;

    let total = pool_total();
    let supervisor = Supervisor::new();
    supervisor.arm(ServiceKind::Application, &["application.claim.reserved@10"]);
    let environments = Environments::default();
    let launch = supervisor.launch(subsidy_binary(), environments.clone());
    let stack = Stack::spawn_into(launch, test_pool_application(&[]), environments.clone()).await;
    stack.create_test_pool(total, LONG_HOLD_SECONDS).await;
    let mut app = stack.app().await;
    let buyers = buyers(&mut app).await;

    let on_postgres = stack.configs[&ServiceKind::Application]
        .database
        .url
        .starts_with("postgres");
    let first = App::new(stack.lazy_channel(ServiceKind::Application));
    let (second, _replica) = if on_postgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let environment =
            environments.lock().expect("not poisoned")[&ServiceKind::Application].clone();
        let replica = start_replica(
            ServiceKind::Application,
            &subsidy_binary(),
            &environment,
            &format!("127.0.0.1:{port}"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let second = App::new(subsidy_testkit::auth::connect_lazy(&url));
        eventually("the second replica to serve", || {
            let mut second = second.clone();
            async move {
                second
                    .list_claims(pb::ListClaimsRequest::default())
                    .await
                    .ok()
                    .map(drop)
            }
        })
        .await;
        (second, Some(replica))
    } else {
        // SQLite is one process's database: one replica.
        (first.clone(), None)
    };
    // The first process's clients start the burst, so that the head of the line (whose
    // process makes the reserves of a batch) is in the first process until its 10th
    // reservation; the second replica's clients join once 30 claims are in.
    let (early, late): (Vec<_>, Vec<_>) = buyers
        .into_iter()
        .enumerate()
        .partition(|(n, _)| n % 2 == 0);
    let early = join_all(
        early
            .into_iter()
            .map(|(n, buyer)| submit_until_answered(first.clone(), buyer, n)),
    );
    let late = async {
        eventually("the first 30 claims in", || async {
            (line(&stack).await.len() >= 30).then_some(())
        })
        .await;
        join_all(
            late.into_iter()
                .map(|(n, buyer)| submit_until_answered(second.clone(), buyer, n)),
        )
        .await
    };
    futures::join!(early, late);
    assert_funded_in_acceptance_order(&stack, total).await;
    supervisor.assert_all_reached();
    let deaths = supervisor.deaths();
    assert_eq!(deaths.len(), 1, "killed once mid-burst: {deaths:?}");
    stack.shutdown().await;
}
