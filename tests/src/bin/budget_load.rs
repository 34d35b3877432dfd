//! Load tool for the budget service (a benchmark, not a test): N concurrent gRPC clients each
//! doing reserve → commit against a running budget service for a fixed duration, then a check
//! of the invariants. Prints reservations/s and p50/p99 latencies.
//!
//! `cargo run --release -p subsidy-tests --bin budget_load -- --url http://127.0.0.1:50053 --clients 16 --seconds 20`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use subsidy_common::Money;
use subsidy_proto::budget as pb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;

/// Largest number of clients accepted.
const CLIENTS_MAX: usize = 1024;
/// Longest run accepted, in seconds.
const SECONDS_MAX: u64 = 600;

#[derive(Parser, Debug)]
struct Args {
    /// The budget service.
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    url: String,
    /// Concurrent clients (each its own HTTP/2 connection).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn cny(fen: i64) -> Option<subsidy_proto::google::r#type::Money> {
    Some(Money::from_fen(fen).expect("small amounts").to_proto())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    if args.clients == 0
        || args.clients > CLIENTS_MAX
        || args.seconds == 0
        || args.seconds > SECONDS_MAX
    {
        return Err(
            format!("--clients must be 1..={CLIENTS_MAX} and --seconds 1..={SECONDS_MAX}").into(),
        );
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let pool_id = format!("load-{}", &run[..12]);
    let channel = tonic::transport::Endpoint::from_shared(args.url.clone())?
        .connect()
        .await?;
    let mut admin = BudgetServiceClient::new(channel);
    admin
        .create_pool(pb::CreatePoolRequest {
            request_id: format!("{pool_id}/create"),
            pool_id: pool_id.clone(),
            display_name: "load test".into(),
            total: cny(Money::MAX_FEN),
            beneficiary_cap: None,
            reservation_cap: None,
            default_hold_seconds: 3600,
        })
        .await?;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let pool_id = Arc::new(pool_id);
    let mut tasks = Vec::new();
    for client_index in 0..args.clients {
        let url = args.url.clone();
        let pool_id = pool_id.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = BudgetServiceClient::new(channel);
            let beneficiary =
                subsidy_common::uscc::complete(&format!("91370100MA{:07}", client_index))
                    .to_string();
            let (mut reserve_latency, mut commit_latency, mut pair_latency) =
                (Vec::new(), Vec::new(), Vec::new());
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let key = format!("{run}-{client_index}-{n}");
                let start = Instant::now();
                let reserved = client
                    .reserve(pb::ReserveRequest {
                        request_id: format!("{key}/r"),
                        pool_id: pool_id.to_string(),
                        beneficiary_uscc: beneficiary.clone(),
                        amount: cny(12_345),
                        reference: key.clone(),
                        hold_seconds: 0,
                    })
                    .await;
                let after_reserve = Instant::now();
                let Ok(reserved) = reserved else {
                    errors += 1;
                    continue;
                };
                let reservation_id = reserved.into_inner().reservation.unwrap().reservation_id;
                let committed = client
                    .commit(pb::CommitRequest {
                        request_id: format!("{key}/c"),
                        reservation_id,
                        amount: cny(10_000),
                    })
                    .await;
                let end = Instant::now();
                if committed.is_err() {
                    errors += 1;
                    continue;
                }
                reserve_latency.push(after_reserve - start);
                commit_latency.push(end - after_reserve);
                pair_latency.push(end - start);
            }
            (reserve_latency, commit_latency, pair_latency, errors)
        }));
    }
    let started = Instant::now();
    let (mut reserve, mut commit, mut pair, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for task in tasks {
        let (r, c, p, e) = task.await?;
        reserve.extend(r);
        commit.extend(c);
        pair.extend(p);
        errors += e;
    }
    let elapsed = started.elapsed().max(Duration::from_secs(args.seconds));
    reserve.sort();
    commit.sort();
    pair.sort();

    // Invariants afterwards: the pool's counters, the hash chain and the counters' agreement with
    // the reservation rows (VerifyLedger checks both).
    let pool = admin
        .get_pool(pb::GetPoolRequest {
            pool_id: pool_id.to_string(),
        })
        .await?
        .into_inner()
        .pool
        .unwrap();
    let fen = |m: &Option<subsidy_proto::google::r#type::Money>| {
        Money::from_proto(m.as_ref().unwrap()).unwrap().fen()
    };
    let (held, committed, total) = (fen(&pool.held), fen(&pool.committed), fen(&pool.total));
    let expected_committed = pair.len() as i64 * 10_000;
    let verify = admin
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await?
        .into_inner();
    let invariants_hold =
        held + committed <= total && held == 0 && committed == expected_committed && verify.intact;

    let rate = pair.len() as f64 / elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients, "seconds": args.seconds, "pairs": pair.len(), "errors": errors,
                "reservations_per_second": rate,
                "reserve_p50_ms": ms(percentile(&reserve, 0.50)), "reserve_p99_ms": ms(percentile(&reserve, 0.99)),
                "commit_p50_ms": ms(percentile(&commit, 0.50)), "commit_p99_ms": ms(percentile(&commit, 0.99)),
                "pair_p50_ms": ms(percentile(&pair, 0.50)), "pair_p99_ms": ms(percentile(&pair, 0.99)),
                "invariants_hold": invariants_hold, "ledger_entries_checked": verify.entries_checked,
            })
        );
    } else {
        println!(
            "clients {}  duration {} s  reserve→commit pairs {}  errors {errors}",
            args.clients,
            args.seconds,
            pair.len()
        );
        println!("reservations/s {rate:.0}");
        println!(
            "reserve p50 {:.2} ms p99 {:.2} ms | commit p50 {:.2} ms p99 {:.2} ms | pair p50 {:.2} ms p99 {:.2} ms",
            ms(percentile(&reserve, 0.50)),
            ms(percentile(&reserve, 0.99)),
            ms(percentile(&commit, 0.50)),
            ms(percentile(&commit, 0.99)),
            ms(percentile(&pair, 0.50)),
            ms(percentile(&pair, 0.99)),
        );
        println!(
            "invariants hold: {invariants_hold} (held {held}, committed {committed} of {total} fen; ledger {} entries intact={})",
            verify.entries_checked, verify.intact
        );
    }
    if !invariants_hold {
        return Err("invariants violated after the load".into());
    }
    Ok(())
}
