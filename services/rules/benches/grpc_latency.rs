//! gRPC latency of one EvaluateComputeVoucher call: a real rules server on 127.0.0.1 port 0
//! over a fresh database (SQLite, or PostgreSQL with `SUBSIDY_TEST_DATABASE=postgres://…`),
//! decision logs written as JSON to a sink, a real tonic client. Bounded: a warm-up, then a fixed
//! number of calls one at a time and then from concurrent callers. Run with
//! `cargo bench -p subsidy-rules --bench grpc_latency`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use subsidy_common::Money;
use subsidy_common::config::ServiceKind;
use subsidy_common::db::{Db, testing};
use subsidy_proto::google::r#type::Date;
use subsidy_proto::rules as pb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_rules::{Catalog, Store};

/// Calls before measuring.
const WARM_UP_CALLS: usize = 500;
/// Calls made one at a time.
const SEQUENTIAL_CALLS: usize = 5000;
/// Concurrent callers, and calls each makes.
const CONCURRENT_CALLERS: usize = 16;
const CALLS_PER_CALLER: usize = 500;

fn request() -> pb::EvaluateComputeVoucherRequest {
    pb::EvaluateComputeVoucherRequest {
        claim: Some(pb::ComputeVoucherClaim {
            buyer_uscc: subsidy_common::uscc::complete("91370100MA0000001").to_string(),
            seller_uscc: subsidy_common::uscc::complete("91370100MA0000002").to_string(),
            contract_number: "SD-AI-2025-0001".into(),
            signing_date: Some(Date {
                year: 2025,
                month: 6,
                day: 30,
            }),
            contract_total: Some("12345.67".parse::<Money>().unwrap().to_proto()),
            compute_type: pb::ComputeType::AiAccelerator as i32,
            data_center_division_code: "370102".into(),
            related_party_declared: false,
            benefit_rating: pb::BenefitRating::High as i32,
            enterprise_usage: Some(Money::from_yuan(1_000_000).unwrap().to_proto()),
            signing_time: None,
        }),
        policy_version: String::new(),
    }
}

async fn call(client: &mut RulesServiceClient<subsidy_testkit::Channel>) -> Duration {
    let start = Instant::now();
    let decision = client
        .evaluate_compute_voucher(request())
        .await
        .expect("the evaluation succeeds")
        .into_inner()
        .decision
        .expect("a decision");
    let elapsed = start.elapsed();
    assert!(decision.eligible, "the benchmark claim is eligible");
    elapsed
}

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let index = (sorted.len() * per_mille / 1000).min(sorted.len() - 1);
    sorted[index]
}

fn report(name: &str, mut latencies: Vec<Duration>, wall: Duration) {
    latencies.sort();
    let us = |d: Duration| d.as_micros();
    println!(
        "{name}: calls={} wall={:.2}s throughput={:.0}/s p50={}µs p90={}µs p99={}µs max={}µs",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        us(percentile(&latencies, 500)),
        us(percentile(&latencies, 900)),
        us(percentile(&latencies, 990)),
        us(*latencies.last().expect("calls were made")),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The service logs every decision; write those logs as JSON to a sink so that their cost
    // is part of the measurement.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .init();
    let url = testing::fresh_database("rules_bench").await.url;
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let store = Store::new(
        Db::connect(&url, 16, Duration::from_secs(10))
            .await
            .expect("connect"),
    );
    store.migrate().await.expect("migrate");
    subsidy_rules::seed_shipped_policies(&store)
        .await
        .expect("seed");
    let db = store.db().clone();
    let catalog = Arc::new(Catalog::open(store).await.expect("catalog"));
    // Served as in production: TLS, and the caller authenticated as the application service.
    let channel = subsidy_testkit::fakes::serve_alone(ServiceKind::Rules, Some(db), |config| {
        subsidy_rules::routes(catalog, config)
    })
    .await;
    let mut client = RulesServiceClient::new(channel);

    for _ in 0..WARM_UP_CALLS {
        call(&mut client).await;
    }

    let start = Instant::now();
    let mut latencies = Vec::with_capacity(SEQUENTIAL_CALLS);
    for _ in 0..SEQUENTIAL_CALLS {
        latencies.push(call(&mut client).await);
    }
    report(
        &format!("{backend} sequential (1 caller)"),
        latencies,
        start.elapsed(),
    );

    let start = Instant::now();
    let callers: Vec<_> = (0..CONCURRENT_CALLERS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(CALLS_PER_CALLER);
                for _ in 0..CALLS_PER_CALLER {
                    latencies.push(call(&mut client).await);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(CONCURRENT_CALLERS * CALLS_PER_CALLER);
    for caller in callers {
        latencies.extend(caller.await.expect("caller finished"));
    }
    report(
        &format!("{backend} concurrent ({CONCURRENT_CALLERS} callers, one connection)"),
        latencies,
        start.elapsed(),
    );
}
