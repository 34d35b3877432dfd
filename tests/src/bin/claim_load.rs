//! Load on the claim path (a benchmark tool, not a test): N concurrent clients, each an
//! applicant of its own enterprise on its own HTTP/2 connection, submit compute-voucher
//! claims through the application service for a while; then every accepted claim is checked
//! to hold exactly its reservation in the budget.
//!
//! `scripts/bench-claims` runs it against the four services as their own processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_common::tls::Connector;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use tonic::service::interceptor::InterceptedService;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most clients accepted.
const CLIENTS_MAX: usize = 1024;
/// Longest run accepted, in seconds.
const SECONDS_MAX: u64 = 600;
/// The contract total of every claim, fen (its 5% is 500.00: 60,000 claims fit the pool).
const CONTRACT_FEN: i64 = 1_000_000;
/// The seeded compute-voucher pool.
const POOL: &str = "compute-voucher-2025";

#[derive(Parser, Debug)]
struct Args {
    /// The application service.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    application_url: String,
    /// The budget service (for the check afterwards).
    #[arg(long, default_value = "https://127.0.0.1:50053")]
    budget_url: String,
    /// Concurrent clients, each its own enterprise and connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to submit.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The stack's development credentials (`subsidy dev --data-dir`, or `subsidyctl certs
    /// dev DIR`): its CA is trusted and its key signs the clients' tokens.
    #[arg(long, default_value = "./data")]
    credentials: std::path::PathBuf,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// Adds one bearer token to every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
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

type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

async fn connect(paths: &DevPaths, url: &str, token: &str) -> Result<Channel, BoxError> {
    let channel = tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .connect_with_connector(Connector::anonymous(&paths.ca())?)
        .await?;
    Ok(InterceptedService::new(
        channel,
        Bearer(format!("Bearer {token}").parse()?),
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// One client's results.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted: Vec<(String, i64)>,
    errors: Vec<String>,
}

async fn client(
    paths: Arc<DevPaths>,
    url: String,
    run: String,
    index: usize,
    deadline: Instant,
) -> Result<Tally, BoxError> {
    let enterprise = subsidy_common::uscc::complete(&format!("91370100ML{index:07}"));
    let key = paths.load_signing_key()?;
    let token = dev::mint(
        &key,
        &format!("load-{index}"),
        &[Role::Applicant],
        &[enterprise.to_string()],
        None,
    )?;
    let mut app = ApplicationServiceClient::new(connect(&paths, &url, &token).await?);
    let registered = app
        .register_enterprise(pb::RegisterEnterpriseRequest {
            request_id: format!("{run}-register-{index}"),
            uscc: enterprise.to_string(),
            name: format!("Load test enterprise {index}"),
            contact_email: "load@example.cn".into(),
            contact_phone: String::new(),
            registration_division_code: String::new(),
        })
        .await;
    match registered {
        // An earlier run of the same stack registered it.
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        other => {
            other?;
        }
    }
    let seller = subsidy_common::uscc::complete("91370200MB0000001");
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let number = format!("{run}-{index}-{n}");
        let started = Instant::now();
        let answer = app
            .submit_claim(pb::SubmitClaimRequest {
                request_id: format!("{run}-claim-{index}-{n}"),
                enterprise_uscc: enterprise.to_string(),
                invoices: Vec::new(),
                contract: Some(subsidy_testkit::requests::contract(
                    &number,
                    &seller,
                    CONTRACT_FEN,
                )),
            })
            .await;
        tally.latencies.push(started.elapsed());
        match answer.map(|response| response.into_inner().claim) {
            Ok(Some(claim)) if claim.state() == pb::ClaimState::PendingReview => {
                let reserved = claim
                    .reserved_amount
                    .as_ref()
                    .and_then(|money| subsidy_common::Money::from_proto(money).ok())
                    .map(|money| money.fen())
                    .unwrap_or_default();
                tally.accepted.push((claim.claim_id, reserved));
            }
            Ok(other) => tally.errors.push(format!("not held for review: {other:?}")),
            Err(status) => tally.errors.push(format!(
                "{:?} {}",
                status.code(),
                subsidy_proto::status::reason(&status).unwrap_or_default()
            )),
        }
    }
    Ok(tally)
}

/// Every accepted claim holds exactly one HELD reservation of its amount, referenced by its
/// id; returns the problems found.
async fn check(
    paths: &DevPaths,
    budget_url: &str,
    accepted: &[(String, i64)],
) -> Result<Vec<String>, BoxError> {
    let token = dev::mint(
        &paths.load_signing_key()?,
        "load-auditor",
        &[Role::Auditor],
        &[],
        None,
    )?;
    let mut budget = BudgetServiceClient::new(connect(paths, budget_url, &token).await?);
    let mut held = std::collections::HashMap::<String, Vec<i64>>::new();
    let mut page_token = String::new();
    loop {
        let page = budget
            .list_reservations(bpb::ListReservationsRequest {
                pool_id: POOL.into(),
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for reservation in page.reservations {
            if reservation.state() == bpb::ReservationState::Held {
                let fen = reservation
                    .held_amount
                    .as_ref()
                    .and_then(|money| subsidy_common::Money::from_proto(money).ok())
                    .map(|money| money.fen())
                    .unwrap_or_default();
                held.entry(reservation.reference).or_default().push(fen);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut problems = Vec::new();
    for (claim_id, reserved) in accepted {
        match held.get(claim_id).map(Vec::as_slice) {
            Some([fen]) if fen == reserved => {}
            other => problems.push(format!("{claim_id}: reserved {reserved}, holds {other:?}")),
        }
    }
    Ok(problems)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
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
    let paths = Arc::new(DevPaths::new(&args.credentials));
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|index| {
            tokio::spawn(client(
                paths.clone(),
                args.application_url.clone(),
                run.clone(),
                index,
                deadline,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut accepted = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let tally = task.await??;
        latencies.extend(tally.latencies);
        accepted.extend(tally.accepted);
        errors.extend(tally.errors);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let problems = check(&paths, &args.budget_url, &accepted).await?;
    let per_second = latencies.len() as f64 / elapsed;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients,
                "submissions": latencies.len(),
                "accepted": accepted.len(),
                "submissions_per_second": per_second,
                "p50_ms": percentile(&latencies, 0.50),
                "p95_ms": percentile(&latencies, 0.95),
                "p99_ms": percentile(&latencies, 0.99),
                "errors": errors.len(),
                "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
                "reservations_match": problems.is_empty(),
                "problems": problems.iter().take(3).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{} clients: {} submissions in {elapsed:.1} s ({per_second:.0}/s), {} accepted, \
             p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, {} errors, reservations {}",
            args.clients,
            latencies.len(),
            accepted.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99),
            errors.len(),
            if problems.is_empty() {
                "match".to_owned()
            } else {
                format!("DO NOT MATCH: {:?}", &problems[..problems.len().min(3)])
            }
        );
    }
    if !problems.is_empty() {
        return Err("accepted claims and reservations disagree".into());
    }
    Ok(())
}
