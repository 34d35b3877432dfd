//! Load tool for the budget service (a benchmark, not a test): N concurrent gRPC clients each
//! doing reserve → commit against running budget services (one or several replicas sharing a
//! database) for a fixed duration, then a check of the invariants. Prints operations/s (each
//! Reserve and each Commit counts one), p50/p99/p999 latency per operation, and the sizes of
//! the batches the group commit made — read back from the ledger, where the entries of one
//! batch share their database time.
//!
//! `cargo run --release -p subsidy-tests --bin budget_load -- --url http://127.0.0.1:50053 --clients 16 --seconds 20`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use subsidy_common::Money;
use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_common::tls::{Connector, TlsState};
use subsidy_proto::access::{Role, Service};
use subsidy_proto::budget as pb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;

/// Largest number of clients accepted.
const CLIENTS_MAX: usize = 1024;
/// Longest run accepted, in seconds.
const SECONDS_MAX: u64 = 600;

#[derive(Parser, Debug)]
struct Args {
    /// The budget service; several comma-separated URLs spread the clients over replicas.
    #[arg(long, default_value = "http://127.0.0.1:50053", value_delimiter = ',')]
    url: Vec<String>,
    /// Concurrent clients (each its own HTTP/2 connection).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// The development credentials the budget serves with (`subsidyctl certs dev DIR`): the
    /// clients present the application's certificate, as the application does, and the pool
    /// is created and checked with an admin and auditor token from the dev key.
    #[arg(long, default_value = "./data")]
    credentials: std::path::PathBuf,
}

/// A channel to `url` over mutual TLS as the application service.
async fn as_application(
    paths: &DevPaths,
    url: &str,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error + Send + Sync>> {
    let state = TlsState::load(paths.tls_files(Service::Application))?;
    Ok(
        tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?
            .tcp_nodelay(true)
            .connect_with_connector(Connector::new(state))
            .await?,
    )
}

/// Adds an admin and auditor development token to each call.
#[derive(Clone)]
struct Operator(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Operator {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The sizes of the pool's batches, from its ledger: consecutive entries with the same database
/// time were written by one batch. Returns the mean, the 99th percentile and the count.
async fn batch_sizes(
    admin: &mut BudgetServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Operator>,
    >,
    pool_id: &str,
) -> Result<(f64, u64, usize), Box<dyn std::error::Error + Send + Sync>> {
    let mut sizes: Vec<u64> = Vec::new();
    let mut last: Option<prost_types::Timestamp> = None;
    let mut token = String::new();
    loop {
        let page = admin
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                pool_id: pool_id.to_owned(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for entry in page.entries {
            if entry.kind == pb::LedgerEntryKind::PoolCreated as i32 {
                continue;
            }
            if entry.create_time.is_some() && entry.create_time == last {
                *sizes.last_mut().expect("a batch is open") += 1;
            } else {
                sizes.push(1);
                last = entry.create_time;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if sizes.is_empty() {
        return Ok((0.0, 0, 0));
    }
    let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    let p99 = sorted[((sorted.len() as f64 - 1.0) * 0.99).round() as usize];
    Ok((mean, p99, sizes.len()))
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
    let paths = Arc::new(DevPaths::new(&args.credentials));
    let token = dev::mint(
        &paths.load_signing_key()?,
        "budget-load",
        &[Role::Admin, Role::Auditor],
        &[],
        None,
    )?;
    let channel = as_application(&paths, &args.url[0]).await?;
    let mut admin = BudgetServiceClient::with_interceptor(
        channel,
        Operator(format!("Bearer {token}").parse()?),
    );
    admin
        .create_pool(pb::CreatePoolRequest {
            request_id: format!("{pool_id}/create"),
            pool_id: pool_id.clone(),
            display_name: "load test".into(),
            total: cny(Money::FEN_MAX),
            beneficiary_cap: None,
            reservation_cap: None,
            default_hold_seconds: 3600,
        })
        .await?;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let pool_id = Arc::new(pool_id);
    let mut tasks = Vec::new();
    for client_index in 0..args.clients {
        let url = args.url[client_index % args.url.len()].clone();
        let pool_id = pool_id.clone();
        let run = run.clone();
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let channel = as_application(&paths, &url)
                .await
                .expect("connect as the application");
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

    let batches = batch_sizes(&mut admin, &pool_id).await?;
    let operations = (reserve.len() + commit.len()) as f64;
    let rate = operations / elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = serde_json::json!({
        "clients": args.clients, "replicas": args.url.len(), "seconds": args.seconds,
        "pairs": pair.len(), "errors": errors,
        "operations_per_second": rate,
        "reserve_p50_ms": ms(percentile(&reserve, 0.50)), "reserve_p99_ms": ms(percentile(&reserve, 0.99)),
        "reserve_p999_ms": ms(percentile(&reserve, 0.999)),
        "commit_p50_ms": ms(percentile(&commit, 0.50)), "commit_p99_ms": ms(percentile(&commit, 0.99)),
        "commit_p999_ms": ms(percentile(&commit, 0.999)),
        "batch_mean": batches.0, "batch_p99": batches.1, "batches": batches.2,
        "invariants_hold": invariants_hold, "ledger_entries_checked": verify.entries_checked,
        "held_fen": held, "committed_fen": committed, "expected_committed_fen": expected_committed,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !invariants_hold {
        return Err("invariants violated after the load".into());
    }
    Ok(())
}
