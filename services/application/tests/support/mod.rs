//! Test support: the application service against the real budget service and scripted rules
//! and notification services, each on its own port 0 listener, with a fresh database per test
//! (SQLite by default, PostgreSQL when `SUBSIDY_TEST_DATABASE` is set). The scripted peers
//! implement the 2025 policies of POLICY.md in a few lines so that the application's
//! orchestration is tested on its own; the cross-service tests in `tests/` use the real ones.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::testing::fresh_database;
use subsidy_common::money::Rate;
use subsidy_common::{Money, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::google::r#type::{Date, Money as ProtoMoney};
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Longest wait for an asynchronous outcome.
pub const WAIT_MS_MAX: u64 = 30_000;
/// Pause between two looks at an asynchronous outcome.
pub const POLL_MS: u64 = 25;
/// The enterprise cap of the scripted compute-voucher policy: 5,000,000 CNY in fen.
pub const ENTERPRISE_CAP_FEN: i64 = 500_000_000;
/// The per-project cap of the scripted data-infrastructure policy: 10,000,000 CNY in fen.
pub const PROJECT_CAP_FEN: i64 = 1_000_000_000;

pub fn cny(fen: i64) -> Option<ProtoMoney> {
    Some(Money::from_fen(fen).unwrap().to_proto())
}

pub fn yuan(n: i64) -> Option<ProtoMoney> {
    cny(n * 100)
}

pub fn fen_of(money: &Option<ProtoMoney>) -> i64 {
    Money::from_proto(money.as_ref().expect("money present"))
        .expect("valid money")
        .fen()
}

/// The `n`-th test enterprise registered in Shandong.
pub fn shandong(n: usize) -> Uscc {
    subsidy_common::uscc::complete(&format!("91370100MA{n:07}"))
}

/// The `n`-th test enterprise registered in Beijing.
pub fn beijing(n: usize) -> Uscc {
    subsidy_common::uscc::complete(&format!("91110100MA{n:07}"))
}

/// The `n`-th test seller.
pub fn seller(n: usize) -> Uscc {
    subsidy_common::uscc::complete(&format!("91370200MB{n:07}"))
}

// ---------------------------------------------------------------------------------------------
// Scripted rules service
// ---------------------------------------------------------------------------------------------

/// The scripted rules service: rate 5% (4% medium, 3% low), enterprise cap 5,000,000 CNY,
/// AI compute in Shandong signed in 2025, not related; proposals from Shandong up to
/// 10,000,000 CNY; ranking by mean score with partial funding of the first shortfall.
#[derive(Clone, Default)]
pub struct ScriptedRules {
    down: Arc<AtomicBool>,
    partial_claims: Arc<AtomicBool>,
    evaluations: Arc<Mutex<u64>>,
}

impl ScriptedRules {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn set_partial_claims(&self, partial: bool) {
        self.partial_claims.store(partial, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) {
            Err(Status::unavailable("scripted outage"))
        } else {
            Ok(())
        }
    }
}

fn failed(reason: &str) -> rpb::FailedCheck {
    rpb::FailedCheck {
        reason: reason.into(),
        field: String::new(),
        message_zh: reason.into(),
        message_en: reason.into(),
    }
}

fn decision(
    program: rpb::Program,
    failed_checks: Vec<rpb::FailedCheck>,
    rate: &str,
    entitlement: Money,
) -> rpb::Decision {
    let eligible = failed_checks.is_empty();
    rpb::Decision {
        decision_id: uuid::Uuid::new_v4().to_string(),
        program: program as i32,
        eligible,
        failed_checks,
        rate_applied: rate.into(),
        entitlement: Some(if eligible { entitlement } else { Money::ZERO }.to_proto()),
        enterprise_cap_remaining: None,
        enterprise_cap_reached: false,
        trace: Vec::new(),
        policy_id: if program == rpb::Program::ComputeVoucher {
            "compute-voucher".into()
        } else {
            "data-infra".into()
        },
        policy_version: "2025.1".into(),
        evaluate_time: None,
    }
}

#[tonic::async_trait]
impl rpb::rules_service_server::RulesService for ScriptedRules {
    async fn evaluate_compute_voucher(
        &self,
        request: Request<rpb::EvaluateComputeVoucherRequest>,
    ) -> Result<Response<rpb::EvaluateComputeVoucherResponse>, Status> {
        self.check_up()?;
        *self.evaluations.lock().unwrap() += 1;
        let claim = request.into_inner().claim.unwrap();
        let mut checks = Vec::new();
        if claim.compute_type != rpb::ComputeType::AiAccelerator as i32 {
            checks.push(failed("COMPUTE_NOT_AI"));
        }
        if !claim.data_center_division_code.starts_with("37") {
            checks.push(failed("DATA_CENTER_OUTSIDE_SHANDONG"));
        }
        if claim.signing_date.map(|d| d.year) != Some(2025) {
            checks.push(failed("SIGNED_OUTSIDE_WINDOW"));
        }
        if claim.related_party_declared {
            checks.push(failed("RELATED_PARTY"));
        }
        let rate = match rpb::BenefitRating::try_from(claim.benefit_rating).unwrap() {
            rpb::BenefitRating::Medium => "0.04",
            rpb::BenefitRating::Low => "0.03",
            _ => "0.05",
        };
        let total = Money::from_proto(claim.contract_total.as_ref().unwrap()).unwrap();
        let usage = Money::from_proto(claim.enterprise_usage.as_ref().unwrap()).unwrap();
        let remaining = Money::from_fen(ENTERPRISE_CAP_FEN)
            .unwrap()
            .saturating_sub(usage);
        if remaining.is_zero() {
            checks.push(failed("ENTERPRISE_CAP_REACHED"));
        }
        let entitlement = Rate::new(Decimal::from_str_exact(rate).unwrap())
            .unwrap()
            .apply_round_down(total)
            .min(remaining);
        Ok(Response::new(rpb::EvaluateComputeVoucherResponse {
            decision: Some(decision(
                rpb::Program::ComputeVoucher,
                checks,
                rate,
                entitlement,
            )),
        }))
    }

    async fn evaluate_data_infra_proposal(
        &self,
        request: Request<rpb::EvaluateDataInfraProposalRequest>,
    ) -> Result<Response<rpb::EvaluateDataInfraProposalResponse>, Status> {
        self.check_up()?;
        let proposal = request.into_inner().proposal.unwrap();
        let mut checks = Vec::new();
        if proposal.applicant_uscc.get(2..4) != Some("37") {
            checks.push(failed("APPLICANT_OUTSIDE_SHANDONG"));
        }
        let requested = Money::from_proto(proposal.requested_amount.as_ref().unwrap()).unwrap();
        if requested.fen() > PROJECT_CAP_FEN {
            checks.push(failed("REQUEST_ABOVE_PROJECT_CAP"));
        }
        Ok(Response::new(rpb::EvaluateDataInfraProposalResponse {
            decision: Some(decision(rpb::Program::DataInfra, checks, "", requested)),
        }))
    }

    async fn rank_selection_round(
        &self,
        request: Request<rpb::RankSelectionRoundRequest>,
    ) -> Result<Response<rpb::RankSelectionRoundResponse>, Status> {
        self.check_up()?;
        let request = request.into_inner();
        let pool = Money::from_proto(request.pool_available.as_ref().unwrap()).unwrap();
        let mut candidates = request.candidates;
        let total = |c: &rpb::SelectionCandidate| -> i64 {
            c.expert_scores.iter().map(|s| i64::from(*s)).sum()
        };
        candidates.sort_by(|a, b| {
            let (ta, ca) = (total(a), a.expert_scores.len() as i64);
            let (tb, cb) = (total(b), b.expert_scores.len() as i64);
            (tb * ca)
                .cmp(&(ta * cb))
                .then(
                    a.submit_time
                        .map(|t| (t.seconds, t.nanos))
                        .cmp(&b.submit_time.map(|t| (t.seconds, t.nanos))),
                )
                .then(a.proposal_id.cmp(&b.proposal_id))
        });
        let mut remaining = pool;
        let mut ended = false;
        let mut awards = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            let requested =
                Money::from_proto(candidate.requested_amount.as_ref().unwrap()).unwrap();
            let (awarded, outcome, reason) = if requested.fen() > PROJECT_CAP_FEN {
                (
                    Money::ZERO,
                    rpb::AwardOutcome::NotSelected,
                    "REQUEST_ABOVE_PROJECT_CAP",
                )
            } else if ended || remaining.is_zero() {
                (
                    Money::ZERO,
                    rpb::AwardOutcome::NotSelected,
                    "POOL_EXHAUSTED",
                )
            } else if requested <= remaining {
                (requested, rpb::AwardOutcome::Awarded, "FULLY_FUNDED")
            } else {
                ended = true;
                (
                    remaining,
                    rpb::AwardOutcome::PartiallyAwarded,
                    "POOL_SHORTFALL_PARTIAL",
                )
            };
            remaining = remaining.checked_sub(awarded).unwrap();
            awards.push(rpb::Award {
                rank: i as u32 + 1,
                proposal_id: candidate.proposal_id.clone(),
                mean_score: String::new(),
                awarded: Some(awarded.to_proto()),
                outcome: outcome as i32,
                reason: reason.into(),
            });
        }
        Ok(Response::new(rpb::RankSelectionRoundResponse {
            awards,
            total_awarded: Some(pool.checked_sub(remaining).unwrap().to_proto()),
            pool_remaining: Some(remaining.to_proto()),
            shortfall_mode: rpb::ShortfallMode::Partial as i32,
            policy_id: "data-infra".into(),
            policy_version: "2025.1".into(),
        }))
    }

    async fn get_policy(
        &self,
        _request: Request<rpb::GetPolicyRequest>,
    ) -> Result<Response<rpb::GetPolicyResponse>, Status> {
        self.check_up()?;
        let mode = if self.partial_claims.load(Ordering::SeqCst) {
            rpb::ShortfallMode::Partial
        } else {
            rpb::ShortfallMode::Waitlist
        };
        Ok(Response::new(rpb::GetPolicyResponse {
            policy: Some(rpb::Policy {
                policy_id: "compute-voucher".into(),
                version: "2025.1".into(),
                parameters: Some(rpb::PolicyParameters {
                    program_parameters: Some(
                        rpb::policy_parameters::ProgramParameters::ComputeVoucher(
                            rpb::ComputeVoucherParameters {
                                shortfall_mode: mode as i32,
                                ..Default::default()
                            },
                        ),
                    ),
                }),
                ..Default::default()
            }),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Recording notification service
// ---------------------------------------------------------------------------------------------

/// A notification service that records what it is given, or refuses while down.
#[derive(Clone, Default)]
pub struct RecordingNotification {
    down: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<npb::Event>>>,
}

impl RecordingNotification {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The events received, first delivery of each event id only.
    pub fn events(&self) -> Vec<npb::Event> {
        let mut seen = std::collections::HashSet::new();
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| seen.insert(e.event_id.clone()))
            .cloned()
            .collect()
    }

    /// The event types received for one application, in order.
    pub fn types_for(&self, application_id: &str) -> Vec<npb::EventType> {
        self.events()
            .iter()
            .filter(|e| e.application_id == application_id)
            .map(|e| e.r#type())
            .collect()
    }
}

#[tonic::async_trait]
impl npb::notification_service_server::NotificationService for RecordingNotification {
    async fn publish_event(
        &self,
        request: Request<npb::PublishEventRequest>,
    ) -> Result<Response<npb::PublishEventResponse>, Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("scripted outage"));
        }
        let event = request.into_inner().event.unwrap();
        self.events.lock().unwrap().push(event.clone());
        Ok(Response::new(npb::PublishEventResponse {
            event: Some(event),
            duplicate: false,
            cursor: String::new(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------------

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The application service with a real budget and scripted rules and notification.
pub struct System {
    pub rules: ScriptedRules,
    pub notification: RecordingNotification,
    pub app_config: Config,
    pub budget_url: String,
    budget_addr: String,
    budget_config: Config,
    app: Option<Running>,
    budget: Option<Running>,
    scripted: Vec<Running>,
}

async fn serve_task(
    kind: ServiceKind,
    config: Config,
    routes: tonic::service::Routes,
    listener: TcpListener,
) -> Running {
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = subsidy_common::server::serve(kind, &config, routes, listener, shutdown).await;
    });
    Running { stop, task }
}

fn config(kind: ServiceKind, pairs: &[(&str, String)]) -> Config {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Config::load(kind, None, &env).expect("valid test configuration")
}

/// The pool the tests fund claims from (created by [`System::create_pool`]).
pub const TEST_POOL: &str = "test-vouchers";

impl System {
    /// Starts the system with a compute-voucher pool of `total_fen` whose holds last
    /// `hold_seconds`.
    pub async fn with_pool(total_fen: i64, hold_seconds: i64, app_env: &[(&str, &str)]) -> System {
        let mut env = vec![("SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID", TEST_POOL)];
        env.extend_from_slice(app_env);
        let system = System::start(&env).await;
        system.create_pool(TEST_POOL, total_fen, hold_seconds).await;
        system
    }

    /// Starts the system; `app_env` adds settings of the application service.
    pub async fn start(app_env: &[(&str, &str)]) -> System {
        let rules = ScriptedRules::default();
        let notification = RecordingNotification::default();
        let budget_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let budget_addr = budget_listener.local_addr().unwrap().to_string();
        let budget_config = config(
            ServiceKind::Budget,
            &[
                ("SUBSIDY_LISTEN", budget_addr.clone()),
                (
                    "SUBSIDY_DATABASE_URL",
                    fresh_database("appbudget").await.url,
                ),
                ("SUBSIDY_SHUTDOWN_GRACE_MS", "1000".into()),
            ],
        );
        let mut system = System {
            rules: rules.clone(),
            notification: notification.clone(),
            app_config: config(ServiceKind::Application, &[]),
            budget_url: format!("http://{budget_addr}"),
            budget_addr,
            budget_config,
            app: None,
            budget: None,
            scripted: Vec::new(),
        };
        system.start_budget(budget_listener).await;

        let peer = |service| async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            (listener, url, service)
        };
        let (rules_listener, rules_url, ()) = peer(()).await;
        let (notification_listener, notification_url, ()) = peer(()).await;
        let peer_config = config(
            ServiceKind::Rules,
            &[("SUBSIDY_LISTEN", "127.0.0.1:0".to_owned())],
        );
        let rules_task = serve_task(
            ServiceKind::Rules,
            peer_config.clone(),
            tonic::service::Routes::new(rpb::rules_service_server::RulesServiceServer::new(rules)),
            rules_listener,
        )
        .await;
        let notification_task = serve_task(
            ServiceKind::Notification,
            peer_config,
            tonic::service::Routes::new(
                npb::notification_service_server::NotificationServiceServer::new(notification),
            ),
            notification_listener,
        )
        .await;
        system.scripted = vec![rules_task, notification_task];

        let app_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app_listener.local_addr().unwrap().to_string();
        let mut pairs: Vec<(&str, String)> = vec![
            ("SUBSIDY_LISTEN", app_addr.clone()),
            (
                "SUBSIDY_DATABASE_URL",
                fresh_database("application").await.url,
            ),
            ("SUBSIDY_DATABASE_MAX_CONNECTIONS", "8".into()),
            ("SUBSIDY_RULES_URL", rules_url),
            ("SUBSIDY_BUDGET_URL", system.budget_url.clone()),
            ("SUBSIDY_NOTIFICATION_URL", notification_url),
            ("SUBSIDY_SHUTDOWN_GRACE_MS", "1000".into()),
            ("SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS", "100".into()),
            ("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "500".into()),
            ("SUBSIDY_APPLICATION_RELAY_INTERVAL_MS", "50".into()),
            ("SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS", "2000".into()),
        ];
        for (key, value) in app_env {
            pairs.retain(|(k, _)| k != key);
            pairs.push((key, (*value).to_owned()));
        }
        system.app_config = config(ServiceKind::Application, &pairs);
        system.start_app(app_listener).await;
        system
    }

    async fn start_budget(&mut self, listener: TcpListener) {
        let store = subsidy_budget::open(&self.budget_config).await.unwrap();
        // No background expiry: a test expires holds explicitly with ExpireReservations.
        let routes = subsidy_budget::routes(store, &self.budget_config);
        self.budget = Some(
            serve_task(
                ServiceKind::Budget,
                self.budget_config.clone(),
                routes,
                listener,
            )
            .await,
        );
    }

    async fn start_app(&mut self, listener: TcpListener) {
        let (stop, mut stop_rx) = watch::channel(false);
        let config = self.app_config.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                while !*stop_rx.borrow() {
                    if stop_rx.changed().await.is_err() {
                        return;
                    }
                }
            };
            subsidy_application::run(config, listener, shutdown)
                .await
                .expect("the application service runs");
        });
        self.app = Some(Running { stop, task });
        wait_serving(&self.app_url()).await;
    }

    pub fn app_url(&self) -> String {
        format!("http://{}", self.app_config.listen)
    }

    /// Aborts the application service mid-flight, as a crash would.
    pub async fn kill_app(&mut self) {
        if let Some(running) = self.app.take() {
            running.task.abort();
            let _ = running.task.await;
        }
    }

    /// Starts the application service again on its port and database.
    pub async fn restart_app(&mut self) {
        let listener = rebind(&self.app_config.listen).await;
        self.start_app(listener).await;
    }

    /// Stops the budget service.
    pub async fn stop_budget(&mut self) {
        if let Some(running) = self.budget.take() {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// Starts the budget service again on its port and database.
    pub async fn restart_budget(&mut self) {
        let listener = rebind(&self.budget_addr).await;
        self.start_budget(listener).await;
    }

    pub async fn app(&self) -> ApplicationServiceClient<Channel> {
        ApplicationServiceClient::new(connect(&self.app_url()).await)
    }

    pub async fn budget(&self) -> BudgetServiceClient<Channel> {
        BudgetServiceClient::new(connect(&self.budget_url).await)
    }

    /// Creates a pool in the budget with the enterprise cap of compute vouchers.
    pub async fn create_pool(&self, pool_id: &str, total_fen: i64, hold_seconds: i64) {
        self.create_pool_capped(pool_id, total_fen, hold_seconds, Some(ENTERPRISE_CAP_FEN))
            .await;
    }

    /// Creates a pool in the budget with an optional cap per beneficiary.
    pub async fn create_pool_capped(
        &self,
        pool_id: &str,
        total_fen: i64,
        hold_seconds: i64,
        beneficiary_cap_fen: Option<i64>,
    ) {
        self.budget()
            .await
            .create_pool(bpb::CreatePoolRequest {
                request_id: format!("create-{pool_id}"),
                pool_id: pool_id.into(),
                display_name: pool_id.into(),
                total: cny(total_fen),
                beneficiary_cap: beneficiary_cap_fen.and_then(cny),
                reservation_cap: None,
                default_hold_seconds: hold_seconds,
            })
            .await
            .expect("create a pool");
    }

    /// The reservations made under a reference.
    pub async fn reservations(&self, pool_id: &str, reference: &str) -> Vec<bpb::Reservation> {
        self.budget()
            .await
            .list_reservations(bpb::ListReservationsRequest {
                pool_id: pool_id.into(),
                reference: reference.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reservations
    }

    pub async fn pool(&self, pool_id: &str) -> bpb::Pool {
        self.budget()
            .await
            .get_pool(bpb::GetPoolRequest {
                pool_id: pool_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pool
            .unwrap()
    }

    /// A direct connection to the application's database, for checks against the rows.
    pub async fn app_db(&self) -> subsidy_common::db::Db {
        subsidy_common::db::Db::connect(&self.app_config.database.url, 2, Duration::from_secs(10))
            .await
            .unwrap()
    }
}

async fn rebind(addr: &str) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot rebind {addr}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        }
    }
}

pub async fn connect(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

async fn wait_serving(url: &str) {
    use tonic_health::pb::health_client::HealthClient;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            && HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: ServiceKind::Application.grpc_name().into(),
                })
                .await
                .is_ok()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the application service did not start"
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Polls `probe` until it returns `Some`, failing after [`WAIT_MS_MAX`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

pub async fn register(app: &mut ApplicationServiceClient<Channel>, uscc: &Uscc) {
    app.register_enterprise(pb::RegisterEnterpriseRequest {
        request_id: format!("register-{uscc}"),
        uscc: uscc.to_string(),
        name: format!("Enterprise {uscc}"),
        contact_email: "ops@example.cn".into(),
        contact_phone: "+86 531 0000 0000".into(),
        registration_division_code: String::new(),
    })
    .await
    .expect("register an enterprise");
}

/// A contract that the scripted 2025 policy finds eligible.
pub fn contract(number: &str, seller_uscc: &Uscc, total_fen: i64) -> pb::ComputeContract {
    pb::ComputeContract {
        contract_number: number.into(),
        seller_uscc: seller_uscc.to_string(),
        seller_name: "Jinan Intelligent Computing Center Co., Ltd.".into(),
        signing_date: Some(Date {
            year: 2025,
            month: 3,
            day: 18,
        }),
        total: cny(total_fen),
        compute_type: pb::ComputeType::AiAccelerator as i32,
        data_center_division_code: "370102".into(),
        data_center_name: "Jinan AI Computing Center".into(),
        related_party: Some(pb::RelatedPartyDeclaration {
            related: false,
            relationship_description: String::new(),
        }),
        scenario_description: "Training a medical imaging model.".into(),
        attachments: vec![pb::AttachmentDigest {
            file_name: "contract.pdf".into(),
            sha256_hex: "ab".repeat(32),
            size_bytes: 1024,
        }],
    }
}

pub fn submit(
    request_id: &str,
    buyer: &Uscc,
    contract: pb::ComputeContract,
) -> pb::SubmitClaimRequest {
    pb::SubmitClaimRequest {
        request_id: request_id.into(),
        enterprise_uscc: buyer.to_string(),
        contract: Some(contract),
    }
}

pub async fn get_claim(app: &mut ApplicationServiceClient<Channel>, claim_id: &str) -> pb::Claim {
    app.get_claim(pb::GetClaimRequest {
        claim_id: claim_id.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .claim
    .unwrap()
}

pub async fn history(
    app: &mut ApplicationServiceClient<Channel>,
    id: &str,
) -> Vec<pb::HistoryEntry> {
    app.list_application_history(pb::ListApplicationHistoryRequest {
        application_id: id.into(),
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .entries
}

/// Waits until a claim reaches `state`.
pub async fn wait_claim_state(
    app: &ApplicationServiceClient<Channel>,
    claim_id: &str,
    state: pb::ClaimState,
) -> pb::Claim {
    eventually(&format!("{claim_id} to become {state:?}"), || {
        let mut app = app.clone();
        async move {
            let claim = get_claim(&mut app, claim_id).await;
            (claim.state() == state).then_some(claim)
        }
    })
    .await
}

pub fn approve(request_id: &str, claim_id: &str, verified_fen: i64) -> pb::ApproveClaimRequest {
    pb::ApproveClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        verified_paid_amount: cny(verified_fen),
        benefit_rating: pb::BenefitRating::Unspecified as i32,
        reviewer_id: "reviewer-1".into(),
        note: String::new(),
    }
}

pub fn reject(request_id: &str, claim_id: &str) -> pb::RejectClaimRequest {
    pb::RejectClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        reason: pb::ClaimRejectionReason::PaymentNotVerified as i32,
        note: "invoices missing".into(),
        reviewer_id: "reviewer-1".into(),
    }
}

pub fn today_shanghai() -> Date {
    use chrono::Datelike;
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    Date {
        year: today.year(),
        month: today.month() as i32,
        day: today.day() as i32,
    }
}

pub fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    let now = chrono::Utc::now().timestamp();
    prost_types::Timestamp {
        seconds: now + seconds,
        nanos: 0,
    }
}

/// Counts rows of a table in a database.
pub async fn count(db: &subsidy_common::db::Db, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Checks every claim against its rows and the budget: the revision counts the history
/// entries without gaps, a claim under review owns exactly one HELD reservation of its reserved
/// amount, an approved or paid claim exactly one COMMITTED reservation of its approved amount,
/// any other claim holds nothing, and the pool holds exactly what the claims under review do.
pub async fn assert_claims_consistent(system: &System) {
    let db = system.app_db().await;
    let claims: Vec<(String, String, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT claim_id, state, revision, reserved_fen, approved_fen, reservation_id FROM claims \
         WHERE pool_id = $1",
    )
    .bind(TEST_POOL)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut held_by_claims = 0;
    for (claim_id, state, revision, reserved, approved, reservation_id) in claims {
        let sequences: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM history WHERE application_id = $1 ORDER BY sequence",
        )
        .bind(&claim_id)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            sequences,
            (1..=revision).collect::<Vec<_>>(),
            "{claim_id}: history"
        );
        let reservations = system.reservations(TEST_POOL, &claim_id).await;
        let held: Vec<_> = reservations
            .iter()
            .filter(|r| r.state() == bpb::ReservationState::Held)
            .collect();
        let committed: Vec<_> = reservations
            .iter()
            .filter(|r| r.state() == bpb::ReservationState::Committed)
            .collect();
        match state.as_str() {
            "PENDING_REVIEW" => {
                assert_eq!(held.len(), 1, "{claim_id}: one hold");
                assert_eq!(Some(&held[0].reservation_id), reservation_id.as_ref());
                assert_eq!(fen_of(&held[0].held_amount), reserved, "{claim_id}: held");
                held_by_claims += reserved;
            }
            "APPROVED" | "DISBURSED" => {
                assert!(held.is_empty(), "{claim_id}: nothing held");
                assert_eq!(committed.len(), 1, "{claim_id}: one commitment");
                assert_eq!(fen_of(&committed[0].committed_amount), approved);
            }
            _ => {
                assert!(held.is_empty(), "{claim_id} ({state}): nothing held");
                assert!(
                    committed.is_empty(),
                    "{claim_id} ({state}): nothing committed"
                );
            }
        }
    }
    assert_eq!(
        fen_of(&system.pool(TEST_POOL).await.held),
        held_by_claims,
        "the pool holds exactly what the claims under review hold"
    );
}
