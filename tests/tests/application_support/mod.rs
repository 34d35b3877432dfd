//! Helpers of the application's cross-service tests: requests, waits and checks against the
//! four real services of [`subsidy_tests::Stack`].
#![allow(dead_code)]

use std::time::Duration;

use subsidy_common::config::ServiceKind;
use subsidy_common::{Money, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::google::r#type::{Date, Money as ProtoMoney};
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_tests::{Overrides, Stack};
use tonic::transport::Channel;

/// Longest wait for an asynchronous outcome, in milliseconds.
pub const WAIT_MS_MAX: u64 = 60_000;
/// Pause between two looks at an asynchronous outcome, in milliseconds.
pub const POLL_MS: u64 = 50;
/// The seeded compute-voucher pool.
pub const VOUCHER_POOL: &str = "compute-voucher-2025";
/// The enterprise cap of the 2025 compute-voucher policy: 5,000,000.00 in fen.
pub const ENTERPRISE_CAP_FEN: i64 = 500_000_000;

/// Settings that make the application's background work quick enough for a test.
pub fn quick_application(extra: &[(&str, &str)]) -> Overrides {
    let mut env = vec![
        ("SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS", "100"),
        ("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "500"),
        ("SUBSIDY_APPLICATION_RELAY_INTERVAL_MS", "50"),
        ("SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS", "3000"),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key, value));
    }
    let mut overrides = Overrides::new();
    overrides.insert(
        ServiceKind::Application,
        env.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    overrides
}

pub fn cny(fen: i64) -> Option<ProtoMoney> {
    Some(Money::from_fen(fen).unwrap().to_proto())
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

/// The `n`-th test seller.
pub fn seller(n: usize) -> Uscc {
    subsidy_common::uscc::complete(&format!("91370200MB{n:07}"))
}

pub async fn app(stack: &Stack) -> ApplicationServiceClient<Channel> {
    ApplicationServiceClient::new(stack.channel(ServiceKind::Application).await)
}

pub async fn budget(stack: &Stack) -> BudgetServiceClient<Channel> {
    BudgetServiceClient::new(stack.channel(ServiceKind::Budget).await)
}

pub async fn notification(stack: &Stack) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(stack.channel(ServiceKind::Notification).await)
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

pub async fn register(app: &mut ApplicationServiceClient<Channel>, uscc: &Uscc) {
    app.register_enterprise(pb::RegisterEnterpriseRequest {
        request_id: format!("register-{uscc}"),
        uscc: uscc.to_string(),
        name: format!("Enterprise {uscc}"),
        contact_email: "ops@example.cn".into(),
        contact_phone: String::new(),
        registration_division_code: String::new(),
    })
    .await
    .expect("register an enterprise");
}

/// A contract the 2025 compute-voucher policy finds eligible.
pub fn contract(number: &str, seller_uscc: &Uscc, total_fen: i64) -> pb::ComputeContract {
    pb::ComputeContract {
        contract_number: number.into(),
        seller_uscc: seller_uscc.to_string(),
        seller_name: "Jinan Intelligent Computing Center Co., Ltd.".into(),
        signing_date: Some(Date {
            year: 2025,
            month: 6,
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

pub async fn submitted(
    app: &mut ApplicationServiceClient<Channel>,
    request_id: &str,
    buyer: &Uscc,
    contract: pb::ComputeContract,
) -> pb::Claim {
    app.submit_claim(submit(request_id, buyer, contract))
        .await
        .expect("submit a claim")
        .into_inner()
        .claim
        .unwrap()
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

pub fn approve(request_id: &str, claim_id: &str, verified_fen: i64) -> pb::ApproveClaimRequest {
    pb::ApproveClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        verified_paid_amount: cny(verified_fen),
        benefit_rating: pb::BenefitRating::High as i32,
        reviewer_id: "reviewer-1".into(),
        note: "invoices and payments verified".into(),
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
    prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + seconds,
        nanos: 0,
    }
}

/// Creates a pool in the budget service.
pub async fn create_pool(
    stack: &Stack,
    pool_id: &str,
    total_fen: i64,
    beneficiary_cap_fen: Option<i64>,
) {
    budget(stack)
        .await
        .create_pool(bpb::CreatePoolRequest {
            request_id: format!("create-{pool_id}"),
            pool_id: pool_id.into(),
            display_name: pool_id.into(),
            total: cny(total_fen),
            beneficiary_cap: beneficiary_cap_fen.and_then(cny),
            reservation_cap: None,
            default_hold_seconds: 0,
        })
        .await
        .expect("create a pool");
}

pub async fn pool(stack: &Stack, pool_id: &str) -> bpb::Pool {
    budget(stack)
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

/// Every reservation made under `reference` in `pool_id`.
pub async fn reservations(stack: &Stack, pool_id: &str, reference: &str) -> Vec<bpb::Reservation> {
    budget(stack)
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

/// Checks the budget's ledger chain and counters.
pub async fn assert_ledger_intact(stack: &Stack) {
    let report = budget(stack)
        .await
        .verify_ledger(bpb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
}

/// The events the notification service stored for one application, in feed order.
pub async fn events_of(stack: &Stack, application_id: &str) -> Vec<npb::Event> {
    let mut client = notification(stack).await;
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(npb::ListEventsRequest {
                application_id: application_id.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            return events;
        }
    }
}

/// Waits until the notification service holds exactly `types` for an application, in order.
pub async fn wait_events(
    stack: &Stack,
    application_id: &str,
    types: &[npb::EventType],
) -> Vec<npb::Event> {
    eventually(&format!("the events of {application_id}"), || async move {
        let events = events_of(stack, application_id).await;
        let got: Vec<_> = events.iter().map(|e| e.r#type()).collect();
        (got == types).then_some(events)
    })
    .await
}

/// A connection to the application's own database, for checks against its rows.
pub async fn application_db(stack: &Stack) -> subsidy_common::db::Db {
    subsidy_common::db::Db::connect(
        &stack.configs[&ServiceKind::Application].database.url,
        2,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}
