//! Identity and access, beyond `access.rs`: tenants kept apart for proposals, enterprises,
//! the budget's reservations and usage, and the notification service's events and stream;
//! `x-subsidy-on-behalf-of` believed only from the application service; the real actor of
//! denylist changes, policy publications and disbursements; tokens without a subject; the
//! token leeway bound; an agency certificate claiming a service identity; and request ids
//! scoped to their caller in the budget, rules and notification services; an agency on the rules
//! port reads its own decisions and cannot evaluate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use subsidy_common::Uscc;
use subsidy_common::auth::ON_BEHALF_OF_METADATA_KEY;
use subsidy_common::config::{Config, ConfigError, ServiceKind};
use subsidy_common::security::{AuthSettings, Security};
use subsidy_common::tls::{Connector, TlsFiles, TlsState};
use subsidy_proto::access::{Role, Service};
use subsidy_proto::application as pb;
use subsidy_proto::audit as apb;
use subsidy_proto::audit::audit_service_client::AuditServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::status::reason;
use subsidy_testkit::auth::{self, Credentials, Transport};
use subsidy_testkit::requests::{self, App, contract, register, submitted, wait_claim_state};
use subsidy_testkit::rounds::{get_proposal, open_round, propose};
use subsidy_testkit::{Channel, Stack, cny, eventually, seller, shandong};
use tonic::Code;

/// The pool the application funds compute vouchers from in a test stack.
const VOUCHER_POOL: &str = "compute-voucher-2025";
/// Longest wait for one message of an event stream (heartbeats come every 30 s).
const STREAM_WAIT: Duration = Duration::from_secs(45);

/// A channel to `kind` presenting `transport`'s certificate and sending `token`, if any.
async fn connect(
    stack: &Stack,
    kind: ServiceKind,
    transport: Transport,
    token: Option<&str>,
) -> Channel {
    let credentials = token.map_or(Credentials::None, |token| Credentials::Token(token.into()));
    stack.channel_as(kind, transport, credentials).await
}

/// A channel to `kind` without a client certificate, sending `token`.
async fn as_token(stack: &Stack, kind: ServiceKind, token: &str) -> Channel {
    connect(stack, kind, Transport::Anonymous, Some(token)).await
}

/// A person's token holding one role.
fn person(subject: &str, role: Role) -> String {
    auth::token(subject, &[role], &[], None)
}

/// An applicant's token bound to `enterprise`.
fn tenant(subject: &str, enterprise: &Uscc) -> String {
    auth::token(subject, &[Role::Applicant], &[enterprise.to_string()], None)
}

/// `message` carrying `x-subsidy-on-behalf-of: <who>`.
fn claiming<T>(message: T, who: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = who.parse().expect("an ASCII value");
    request
        .metadata_mut()
        .insert(ON_BEHALF_OF_METADATA_KEY, value);
    request
}

async fn audit_records(stack: &Stack, kind: ServiceKind, rpc: &str) -> Vec<apb::AuditRecord> {
    let token = person("auditor-1", Role::Auditor);
    AuditServiceClient::new(as_token(stack, kind, &token).await)
        .list_audit_records(apb::ListAuditRecordsRequest {
            rpc: rpc.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("an auditor lists the audit trail")
        .into_inner()
        .records
}

async fn ledger(stack: &Stack) -> Vec<bpb::LedgerEntry> {
    let request = bpb::ListLedgerEntriesRequest {
        page_size: 1000,
        ..Default::default()
    };
    let ledger = stack.budget().await.list_ledger_entries(request).await;
    ledger.expect("the ledger").into_inner().entries
}

fn assert_not_found<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    expected_reason: &str,
    what: &str,
) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
    assert_eq!(reason(&status).as_deref(), Some(expected_reason), "{what}");
}

/// The events `client` may list, only of `enterprise` when it is not empty.
async fn listed_events(
    client: &NotificationServiceClient<Channel>,
    enterprise: &str,
) -> Vec<npb::Event> {
    let request = npb::ListEventsRequest {
        enterprise_uscc: enterprise.into(),
        page_size: 1000,
        ..Default::default()
    };
    let listed = client.clone().list_events(request).await;
    listed
        .expect("an applicant lists events")
        .into_inner()
        .events
}

/// Waits until `client` lists an event of `application_id` of type `kind`.
async fn wait_event(
    client: &NotificationServiceClient<Channel>,
    application_id: &str,
    kind: npb::EventType,
) -> npb::Event {
    eventually(&format!("{kind:?} of {application_id}"), || async move {
        let events = listed_events(client, "").await;
        events
            .into_iter()
            .find(|e| e.application_id == application_id && e.r#type() == kind)
    })
    .await
}

/// Reads `stream` until an event of `application_id` of type `kind` arrives, failing if an
/// event of enterprise `foreign` comes first (bounded by [`STREAM_WAIT`] per message).
async fn read_until(
    stream: &mut tonic::Streaming<npb::StreamEventsResponse>,
    application_id: &str,
    kind: npb::EventType,
    foreign: &Uscc,
) {
    loop {
        let message = tokio::time::timeout(STREAM_WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} of {application_id} on the stream"))
            .expect("the stream stays open")
            .expect("the stream does not end");
        let Some(event) = message.event else { continue };
        assert_ne!(
            event.enterprise_uscc,
            foreign.as_str(),
            "another tenant's event: {event:?}"
        );
        if event.application_id == application_id && event.r#type() == kind {
            return;
        }
    }
}

fn withdrawal(request_id: &str, claim_id: &str) -> pb::WithdrawClaimRequest {
    pb::WithdrawClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        reason: "changed plans".into(),
    }
}

#[tokio::test]
async fn another_tenants_proposals_enterprises_money_and_events_are_not_found_or_filtered() {
    // Proves tenant isolation beyond claims: applicant B gets NOT_FOUND (never
    // PERMISSION_DENIED) for A's enterprise (read and contact update), A's proposal (read,
    // withdrawal, history), A's beneficiary usage and A's event; B's lists of enterprises,
    // proposals, reservations and events hold only B's own, also when B filters for A; B's
    // event stream never carries A's events (from the beginning, and live). A sees its own
    // in each case (positive controls), and nothing B tried changed A's objects.
    let stack = subsidy_tests::spawn_with(subsidy_testkit::quick_application(&[])).await;
    let (a_ent, b_ent) = (shandong(970), shandong(971));
    let mut operator = stack.app().await;
    register(&mut operator, &a_ent).await;
    register(&mut operator, &b_ent).await;
    let (a_token, b_token) = (tenant("tenant-a", &a_ent), tenant("tenant-b", &b_ent));
    let mut a = App::new(as_token(&stack, ServiceKind::Application, &a_token).await);
    let mut b = App::new(as_token(&stack, ServiceKind::Application, &b_token).await);

    // Enterprises.
    let get = |uscc: &Uscc| pb::GetEnterpriseRequest {
        uscc: uscc.to_string(),
    };
    a.get_enterprise(get(&a_ent))
        .await
        .expect("A reads its own");
    let hidden = b.get_enterprise(get(&a_ent)).await;
    assert_not_found(hidden, "ENTERPRISE_NOT_FOUND", "B reads A's enterprise");
    let update = |request_id: &str, email: &str| pb::UpdateEnterpriseContactRequest {
        request_id: request_id.into(),
        uscc: a_ent.to_string(),
        contact_email: email.into(),
        contact_phone: String::new(),
    };
    let hidden = b
        .update_enterprise_contact(update("b-updates-a", "b@example.cn"))
        .await;
    assert_not_found(hidden, "ENTERPRISE_NOT_FOUND", "B updates A's contact");
    let unchanged = operator.get_enterprise(get(&a_ent)).await.unwrap();
    let unchanged = unchanged.into_inner().enterprise.unwrap();
    assert_eq!(unchanged.contact_email, "ops@example.cn");
    a.update_enterprise_contact(update("a-updates-a", "a@example.cn"))
        .await
        .expect("A updates its own contact");
    let listed = b
        .list_enterprises(pb::ListEnterprisesRequest::default())
        .await;
    let listed = listed
        .expect("B lists enterprises")
        .into_inner()
        .enterprises;
    let codes: Vec<&str> = listed.iter().map(|e| e.uscc.as_str()).collect();
    assert_eq!(codes, [b_ent.as_str()]);

    // Proposals.
    let (_, round) = open_round(&stack, 4_000_000_000).await;
    let a_prop = propose(&mut a, &round.round_id, &a_ent, "tenant-a", 100_000_000).await;
    let b_prop = propose(&mut b, &round.round_id, &b_ent, "tenant-b", 100_000_000).await;
    let proposal_id = a_prop.proposal_id.clone();
    let hidden = b
        .get_proposal(pb::GetProposalRequest {
            proposal_id: proposal_id.clone(),
        })
        .await;
    assert_not_found(hidden, "PROPOSAL_NOT_FOUND", "B reads A's proposal");
    let hidden = b
        .withdraw_proposal(pb::WithdrawProposalRequest {
            request_id: "b-withdraws-a".into(),
            proposal_id: proposal_id.clone(),
            reason: "not mine".into(),
        })
        .await;
    assert_not_found(hidden, "PROPOSAL_NOT_FOUND", "B withdraws A's proposal");
    let hidden = b
        .list_application_history(pb::ListApplicationHistoryRequest {
            application_id: proposal_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await;
    assert_not_found(hidden, "PROPOSAL_NOT_FOUND", "B reads A's history");
    let proposals = |round_id: &str, applicant: &str| pb::ListProposalsRequest {
        round_id: round_id.into(),
        applicant_uscc: applicant.into(),
        ..Default::default()
    };
    for (filter, expected) in [
        (proposals("", ""), vec![b_prop.proposal_id.clone()]),
        (
            proposals(&round.round_id, ""),
            vec![b_prop.proposal_id.clone()],
        ),
        (proposals("", a_ent.as_str()), Vec::new()),
    ] {
        let seen = b.list_proposals(filter.clone()).await.expect("B lists");
        let seen = seen
            .into_inner()
            .proposals
            .into_iter()
            .map(|p| p.proposal_id);
        assert_eq!(seen.collect::<Vec<_>>(), expected, "{filter:?}");
    }
    let still = get_proposal(&mut a, &proposal_id).await;
    assert_eq!(still.state(), a_prop.state(), "B's attempt changed nothing");
    let mine = a.list_proposals(proposals("", "")).await.unwrap();
    assert_eq!(mine.into_inner().proposals.len(), 1);

    // Money: a held claim each; B's event stream opened between them.
    let claim = contract("T-A", &seller(1), 10_000_000);
    let a_claim = submitted(&mut a, "a-claim", &a_ent, claim).await;
    let held = pb::ClaimState::PendingReview;
    let a_claim = wait_claim_state(&operator, &a_claim.claim_id, held).await;
    let a_events =
        NotificationServiceClient::new(as_token(&stack, ServiceKind::Notification, &a_token).await);
    let mut b_events =
        NotificationServiceClient::new(as_token(&stack, ServiceKind::Notification, &b_token).await);
    // Positive control: A sees its own claim's event.
    let a_event = wait_event(&a_events, &a_claim.claim_id, npb::EventType::ClaimSubmitted).await;
    let from_beginning = npb::StreamEventsRequest {
        from_beginning: true,
        ..Default::default()
    };
    let stream = b_events.stream_events(from_beginning).await;
    let mut stream = stream.expect("B streams").into_inner();
    let claim = contract("T-B", &seller(1), 10_000_000);
    let b_claim = submitted(&mut b, "b-claim", &b_ent, claim).await;
    let b_claim = wait_claim_state(&operator, &b_claim.claim_id, held).await;

    let mut a_budget =
        BudgetServiceClient::new(as_token(&stack, ServiceKind::Budget, &a_token).await);
    let mut b_budget =
        BudgetServiceClient::new(as_token(&stack, ServiceKind::Budget, &b_token).await);
    let reservations = |beneficiary: &str| bpb::ListReservationsRequest {
        pool_id: VOUCHER_POOL.into(),
        beneficiary_uscc: beneficiary.into(),
        ..Default::default()
    };
    for (mut client, filter, expected) in [
        (a_budget.clone(), "", vec![a_claim.reservation_id.clone()]),
        (b_budget.clone(), "", vec![b_claim.reservation_id.clone()]),
        (b_budget.clone(), a_ent.as_str(), Vec::new()),
    ] {
        let listed = client.list_reservations(reservations(filter)).await;
        let listed = listed
            .expect("filtered, not refused")
            .into_inner()
            .reservations;
        let ids: Vec<String> = listed.into_iter().map(|r| r.reservation_id).collect();
        assert_eq!(ids, expected, "filter {filter:?}");
    }
    let usage = |uscc: &Uscc| bpb::GetBeneficiaryUsageRequest {
        pool_id: VOUCHER_POOL.into(),
        beneficiary_uscc: uscc.to_string(),
    };
    let own = a_budget.get_beneficiary_usage(usage(&a_ent)).await.unwrap();
    let own = own.into_inner().usage.unwrap();
    assert_eq!(own.held, a_claim.reserved_amount, "{own:?}");
    let hidden = b_budget.get_beneficiary_usage(usage(&a_ent)).await;
    assert_not_found(hidden, "POOL_NOT_FOUND", "B reads A's usage");

    // Events.
    let get = || npb::GetEventRequest {
        event_id: a_event.event_id.clone(),
    };
    a_events
        .clone()
        .get_event(get())
        .await
        .expect("A reads its own event");
    let hidden = b_events.get_event(get()).await;
    assert_not_found(hidden, "EVENT_NOT_FOUND", "B reads A's event");
    wait_event(&b_events, &b_claim.claim_id, npb::EventType::ClaimSubmitted).await;
    let b_seen = listed_events(&b_events, "").await;
    assert!(
        b_seen.iter().all(|e| e.enterprise_uscc != a_ent.as_str()),
        "{b_seen:?}"
    );
    assert!(listed_events(&b_events, a_ent.as_str()).await.is_empty());
    // The stream from the beginning reaches B's event without A's before it.
    let submitted_event = npb::EventType::ClaimSubmitted;
    read_until(&mut stream, &b_claim.claim_id, submitted_event, &a_ent).await;
    // Live: A's withdrawal is published first, then B's; B's stream carries only B's.
    let withdrawn = npb::EventType::ClaimWithdrawn;
    a.withdraw_claim(withdrawal("a-withdraws", &a_claim.claim_id))
        .await
        .expect("A withdraws");
    wait_event(&a_events, &a_claim.claim_id, withdrawn).await;
    b.withdraw_claim(withdrawal("b-withdraws", &b_claim.claim_id))
        .await
        .expect("B withdraws");
    read_until(&mut stream, &b_claim.claim_id, withdrawn, &a_ent).await;
    stack.shutdown().await;
}

/// A budget client presenting `transport`'s certificate and sending `token`, if any.
async fn budget_as(
    stack: &Stack,
    transport: Transport,
    token: Option<&str>,
) -> BudgetServiceClient<Channel> {
    BudgetServiceClient::new(connect(stack, ServiceKind::Budget, transport, token).await)
}

#[tokio::test]
async fn on_behalf_of_is_believed_only_when_the_application_service_calls() {
    // Proves the on-behalf-of trust rule: the application's certificate with
    // `x-subsidy-on-behalf-of: reviewer:r.zhou` holds money recorded as the application acting
    // for r.zhou (ledger and audit trail); the rules, notification and budget services'
    // certificates with the same header are refused and hold nothing; a person's token sent
    // with the header (over no certificate, the rules' or even the application's) acts as that
    // person alone, with no on-behalf-of anywhere in the ledger or the audit trail.
    let stack = subsidy_tests::spawn().await;
    let hold = subsidy_testkit::LONG_HOLD_SECONDS;
    stack.create_pool("obo-pool", 100_000_000, None, hold).await;
    let beneficiary = shandong(975);
    let reserve = |request_id: &str| {
        let request = bpb::ReserveRequest {
            request_id: request_id.into(),
            pool_id: "obo-pool".into(),
            beneficiary_uscc: beneficiary.to_string(),
            amount: cny(1_000_000),
            reference: request_id.into(),
            hold_seconds: 600,
        };
        claiming(request, "reviewer:r.zhou")
    };
    let application = Transport::Service(Service::Application);
    let held = budget_as(&stack, application, None)
        .await
        .reserve(reserve("obo-app"))
        .await;
    let held = held
        .expect("the application reserves")
        .into_inner()
        .reservation
        .unwrap();
    for service in [Service::Rules, Service::Notification, Service::Budget] {
        let name = service.short_name();
        let mut client = budget_as(&stack, Transport::Service(service), None).await;
        let refused = client
            .reserve(reserve(&format!("obo-{name}")))
            .await
            .unwrap_err();
        assert_refused(refused, Code::PermissionDenied, "PERMISSION_DENIED");
    }
    let transports = [
        Transport::Anonymous,
        Transport::Service(Service::Rules),
        application,
    ];
    for (n, transport) in transports.into_iter().enumerate() {
        let admin = person(&format!("obo-admin-{n}"), Role::Admin);
        let request = bpb::CreatePoolRequest {
            request_id: format!("obo-create-{n}"),
            pool_id: format!("obo-pool-{n}"),
            display_name: "on behalf of".into(),
            total: cny(1_000_000),
            default_hold_seconds: 600,
            ..Default::default()
        };
        let mut client = budget_as(&stack, transport, Some(&admin)).await;
        let created = client
            .create_pool(claiming(request, "reviewer:r.zhou"))
            .await;
        created.unwrap_or_else(|e| panic!("an admin creates a pool over {transport:?}: {e:?}"));
    }

    let entries = ledger(&stack).await;
    let named: Vec<&bpb::LedgerEntry> = entries
        .iter()
        .filter(|e| e.actor.contains("r.zhou"))
        .collect();
    assert_eq!(
        named.len(),
        1,
        "only the application's hold names r.zhou: {entries:?}"
    );
    assert_eq!(named[0].kind(), bpb::LedgerEntryKind::Reserved);
    assert_eq!(named[0].reservation_id, held.reservation_id);
    assert_eq!(named[0].actor, "service:application for reviewer:r.zhou");
    let holds = entries
        .iter()
        .filter(|e| e.kind() == bpb::LedgerEntryKind::Reserved);
    assert_eq!(
        holds.filter(|e| e.pool_id == "obo-pool").count(),
        1,
        "{entries:?}"
    );
    for n in 0..transports.len() {
        let created = entries
            .iter()
            .find(|e| e.pool_id == format!("obo-pool-{n}"))
            .expect("the pool's creation is in the ledger");
        assert_eq!(created.kind(), bpb::LedgerEntryKind::PoolCreated);
        assert_eq!(created.actor, format!("admin:obo-admin-{n}"), "{created:?}");
    }
    let rpc = "/subsidy.budget.v1.BudgetService/Reserve";
    let records = audit_records(&stack, ServiceKind::Budget, rpc).await;
    let ok: Vec<&apb::AuditRecord> = records.iter().filter(|r| r.outcome == "OK").collect();
    assert_eq!(ok.len(), 1, "{records:?}");
    assert_eq!(ok[0].actor, "service:application for reviewer:r.zhou");
    assert_eq!(ok[0].principal, "service:application");
    assert_eq!(ok[0].on_behalf_of, "reviewer:r.zhou");
    for service in ["rules", "notification", "budget"] {
        let refusal = records
            .iter()
            .find(|r| r.principal == format!("service:{service}"))
            .unwrap_or_else(|| panic!("the {service} service's attempt is audited: {records:?}"));
        assert_eq!(refusal.outcome, "PermissionDenied PERMISSION_DENIED");
        assert_eq!(refusal.actor, format!("service:{service}"));
        assert_eq!(refusal.on_behalf_of, "", "{refusal:?}");
    }
    let rpc = "/subsidy.budget.v1.BudgetService/CreatePool";
    let creations = audit_records(&stack, ServiceKind::Budget, rpc).await;
    for n in 0..transports.len() {
        let record = creations
            .iter()
            .find(|r| r.request_id == format!("obo-create-{n}"))
            .unwrap_or_else(|| panic!("creation {n} is audited: {creations:?}"));
        assert_eq!(record.actor, format!("admin:obo-admin-{n}"));
        assert_eq!(record.principal, format!("user:obo-admin-{n}"));
        assert_eq!(record.role, "admin");
        assert_eq!(record.on_behalf_of, "", "{record:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn denylist_changes_and_disbursements_name_the_authenticated_principal() {
    // Proves the actor of a denylist replacement and of a disbursement is the authenticated
    // principal, whatever the call claims in `x-subsidy-on-behalf-of`: the rules' audit trail
    // names admin admin.zhao (and a reviewer's refused attempt as that reviewer); the claim's
    // disbursement `recorded_by`, its history and the application's audit trail name finance
    // f.chen.
    let stack = subsidy_tests::spawn_with(subsidy_testkit::quick_application(&[])).await;
    let replace = |request_id: &str, who: &str| {
        let request = rpb::ReplaceDenylistRequest {
            request_id: request_id.into(),
            entries: vec![rpb::DenylistEntry {
                uscc: shandong(979).to_string(),
                reason: "listed for a false declaration".into(),
                source: "Credit China".into(),
                listed_date: None,
            }],
        };
        claiming(request, who)
    };
    let admin = person("admin.zhao", Role::Admin);
    let mut rules = RulesServiceClient::new(as_token(&stack, ServiceKind::Rules, &admin).await);
    let replaced = rules
        .replace_denylist(replace("deny-1", "admin:mallory"))
        .await;
    assert_eq!(replaced.expect("replaced").into_inner().entry_count, 1);
    let reviewer = person("r.li", Role::Reviewer);
    let mut rules = RulesServiceClient::new(as_token(&stack, ServiceKind::Rules, &reviewer).await);
    let refused = rules
        .replace_denylist(replace("deny-2", "admin:admin.zhao"))
        .await;
    assert_refused(
        refused.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let rpc = "/subsidy.rules.v1.RulesService/ReplaceDenylist";
    let records = audit_records(&stack, ServiceKind::Rules, rpc).await;
    let change = records
        .iter()
        .find(|r| r.outcome == "OK")
        .unwrap_or_else(|| panic!("the replacement is audited: {records:?}"));
    assert_eq!(change.actor, "admin:admin.zhao");
    assert_eq!(change.principal, "user:admin.zhao");
    assert_eq!(change.role, "admin");
    assert_eq!(change.on_behalf_of, "");
    assert_eq!(change.request_id, "deny-1");
    assert!(
        change.targets.contains(&"denylist".to_owned()),
        "{change:?}"
    );
    let refusal = records
        .iter()
        .find(|r| r.outcome != "OK")
        .unwrap_or_else(|| panic!("the refusal is audited: {records:?}"));
    assert_eq!(refusal.principal, "user:r.li");
    assert!(!refusal.actor.contains("admin.zhao"), "{refusal:?}");
    assert_eq!(refusal.outcome, "PermissionDenied PERMISSION_DENIED");

    // A disbursement recorded by finance f.chen.
    let buyer = shandong(978);
    let mut operator = stack.app().await;
    register(&mut operator, &buyer).await;
    let claim = contract("PAY-1", &seller(1), 10_000_000);
    let claim = submitted(&mut operator, "pay-claim", &buyer, claim).await;
    let claim_id = claim.claim_id.clone();
    wait_claim_state(&operator, &claim_id, pb::ClaimState::PendingReview).await;
    let approval = requests::approve("pay-approve", &claim_id, 10_000_000);
    let approved = requests::approve_claim(&operator, approval)
        .await
        .expect("approved");
    let approved = approved.into_inner().claim.unwrap();
    let finance = person("f.chen", Role::Finance);
    let mut paying = App::new(as_token(&stack, ServiceKind::Application, &finance).await);
    let payment = pb::RecordClaimDisbursementRequest {
        request_id: "pay-1".into(),
        claim_id: claim_id.clone(),
        payment_reference: "BANK-0001".into(),
        payment_date: Some(requests::today_shanghai()),
        amount: approved.approved_amount.clone(),
    };
    let paid = paying
        .record_claim_disbursement(claiming(payment, "finance:mallory"))
        .await;
    let paid = paid
        .expect("finance records the payment")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(paid.state(), pb::ClaimState::Disbursed);
    assert_eq!(paid.disbursement.unwrap().recorded_by, "finance:f.chen");
    let read = requests::get_claim(&mut operator, &claim_id).await;
    assert_eq!(read.disbursement.unwrap().recorded_by, "finance:f.chen");
    let entries = requests::history(&mut operator, &claim_id).await;
    let last = entries.last().expect("a history");
    assert_eq!(last.actor, "finance:f.chen", "{entries:?}");
    assert_eq!(last.request_id, "pay-1");
    assert!(entries.iter().all(|e| !e.actor.contains("mallory")));
    let rpc = "/subsidy.application.v1.ApplicationService/RecordClaimDisbursement";
    let records = audit_records(&stack, ServiceKind::Application, rpc).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].actor, "finance:f.chen");
    assert_eq!(records[0].principal, "user:f.chen");
    assert_eq!(records[0].on_behalf_of, "");
    assert!(records[0].targets.contains(&claim_id), "{records:?}");
    stack.shutdown().await;
}

/// Writes an agencies' CA and a certificate of it with `names` (DNS) and `uris` (URI SANs)
/// under `dir`; returns the (CA, certificate, key) paths.
fn agency_pki(dir: &Path, names: &[String], uris: &[String]) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = subsidy_common::auth::dev::certificate_authority("impostor agencies CA").unwrap();
    let (chain, key) = subsidy_common::auth::dev::leaf(&ca, "impostor", names, uris).unwrap();
    let paths = (
        dir.join("ca.crt"),
        dir.join("agency.crt"),
        dir.join("agency.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, chain).unwrap();
    std::fs::write(&paths.2, key).unwrap();
    paths
}

/// A budget client over a connection presenting the certificate `cert` with `key`.
async fn budget_with_certificate(
    stack: &Stack,
    cert: PathBuf,
    key: PathBuf,
) -> BudgetServiceClient<Channel> {
    let ca = auth::files().dev.ca();
    let tls = TlsState::load(TlsFiles {
        cert,
        key,
        ca,
        agency_ca: None,
    })
    .unwrap();
    let url = stack.urls[&ServiceKind::Budget].clone();
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap();
    let channel = channel.connect_with_connector(Connector::new(tls)).await;
    let channel = channel.expect("the agencies' CA is trusted");
    BudgetServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        Credentials::None,
    ))
}

#[tokio::test]
async fn tokens_without_a_subject_and_agency_certificates_naming_a_service_are_refused() {
    // Proves two credentials that must not make a caller: a well-signed token without `sub`
    // (or with an empty one) is UNAUTHENTICATED while the same token with a subject is
    // admitted; and a certificate of the agencies' CA carrying the application's SPIFFE URI
    // does not act as the application: beside the known agency's name it is that agency (an
    // applicant: reads reservations, PERMISSION_DENIED for Reserve, audited as the agency),
    // and with the URI alone it names no configured agency (UNAUTHENTICATED/UNKNOWN_AGENCY).
    let dir = std::env::temp_dir().join(format!("subsidy-impostor-{}", uuid::Uuid::new_v4()));
    let spiffe = vec![Service::Application.spiffe_id()];
    let both = agency_pki(&dir.join("both"), &[auth::AGENCY.to_owned()], &spiffe);
    let uri_only = agency_pki(&dir.join("uri"), &[], &spiffe);
    // One agencies' CA file trusting both issuers.
    let bundle = dir.join("agency-cas.crt");
    let cas = [&both.0, &uri_only.0].map(|path| std::fs::read_to_string(path).unwrap());
    std::fs::write(&bundle, cas.concat()).unwrap();
    let mut overrides = subsidy_testkit::Overrides::new();
    let agency_ca = (
        "SUBSIDY_TLS_AGENCY_CA_FILE".into(),
        bundle.display().to_string(),
    );
    overrides.insert(ServiceKind::Budget, vec![agency_ca]);
    let stack = subsidy_tests::spawn_with(overrides).await;

    // Tokens, signed by the test key, with claims written by hand.
    let key = std::fs::read(auth::files().dev.signing_key()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(subsidy_common::auth::dev::DEV_KID.into());
    let now = subsidy_common::auth::token::now_seconds();
    let mut claims = serde_json::json!({
        "iss": subsidy_common::auth::dev::DEV_ISSUER,
        "aud": subsidy_common::auth::dev::DEV_AUDIENCE,
        "exp": now + 600,
        "nbf": now - 1,
        "iat": now,
        "roles": ["auditor"],
    });
    let list_pools = |claims: &serde_json::Value| {
        let token = jsonwebtoken::encode(&header, claims, &key).unwrap();
        let stack = &stack;
        async move {
            let mut client = budget_as(stack, Transport::Anonymous, Some(&token)).await;
            client.list_pools(bpb::ListPoolsRequest::default()).await
        }
    };
    let status = list_pools(&claims).await.expect_err("no subject");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    claims["sub"] = "".into();
    let status = list_pools(&claims).await.expect_err("an empty subject");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    claims["sub"] = "auditor-with-a-subject".into();
    list_pools(&claims)
        .await
        .expect("the same token with a subject");

    // Agency certificates carrying the application's identity.
    let mut agency = budget_with_certificate(&stack, both.1, both.2).await;
    let reservations = bpb::ListReservationsRequest {
        pool_id: VOUCHER_POOL.into(),
        ..Default::default()
    };
    let read = agency.list_reservations(reservations).await;
    read.expect("the agency reads as an applicant");
    let reserve = bpb::ReserveRequest {
        request_id: "impostor".into(),
        pool_id: VOUCHER_POOL.into(),
        beneficiary_uscc: shandong(0).to_string(),
        amount: cny(1_000_000),
        reference: "impostor".into(),
        hold_seconds: 600,
    };
    let refused = agency.reserve(reserve.clone()).await.unwrap_err();
    assert_refused(refused, Code::PermissionDenied, "PERMISSION_DENIED");
    let mut unnamed = budget_with_certificate(&stack, uri_only.1, uri_only.2).await;
    let refused = unnamed.reserve(reserve).await.unwrap_err();
    assert_refused(refused, Code::Unauthenticated, "UNKNOWN_AGENCY");
    let rpc = "/subsidy.budget.v1.BudgetService/Reserve";
    let records = audit_records(&stack, ServiceKind::Budget, rpc).await;
    assert!(records.iter().all(|r| r.outcome != "OK"), "{records:?}");
    let agency = format!("agency:{}", auth::AGENCY);
    assert!(records.iter().any(|r| r.principal == agency), "{records:?}");
    let pool = stack.pool(VOUCHER_POOL).await;
    assert_eq!(subsidy_testkit::fen_of(&pool.held), 0, "nothing was held");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_token_leeway_above_thirty_seconds_is_refused_by_the_configuration() {
    // Proves the leeway bound: `auth.leeway_seconds` of 0 and 30 loads and the service's
    // security (what `run` loads before serving) starts with it; 31 from the environment, or
    // 45 from a config file, is refused as an invalid `auth.leeway_seconds`, and the service's
    // security refuses to load with it.
    let env_with = |leeway: Option<&str>| {
        let mut env: std::collections::HashMap<String, String> =
            auth::service_env(ServiceKind::Budget).into_iter().collect();
        env.insert("SUBSIDY_LISTEN".into(), "127.0.0.1:0".into());
        if let Some(leeway) = leeway {
            env.insert("SUBSIDY_AUTH_LEEWAY_SECONDS".into(), leeway.into());
        }
        env
    };
    let refused = |config: &Config| match config.section::<AuthSettings>() {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "auth.leeway_seconds"),
        other => panic!("a leeway above 30 s must be refused: {other:?}"),
    };
    for accepted in ["0", "30"] {
        let config = Config::load(ServiceKind::Budget, None, &env_with(Some(accepted))).unwrap();
        let auth: AuthSettings = config.section().expect("a leeway within the bound");
        assert_eq!(auth.leeway_seconds.to_string(), accepted);
        Security::load(ServiceKind::Budget, &config).expect("the security loads");
    }
    let config = Config::load(ServiceKind::Budget, None, &env_with(Some("31"))).unwrap();
    refused(&config);
    let error = Security::load(ServiceKind::Budget, &config).expect_err("not started");
    assert!(error.to_string().contains("auth.leeway_seconds"), "{error}");
    let file = std::env::temp_dir().join(format!("subsidy-leeway-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&file, "[auth]\nleeway_seconds = 45\n").unwrap();
    refused(&Config::load(ServiceKind::Budget, Some(&file), &env_with(None)).unwrap());
}

/// CreatePool of `pool_id` under the request id `same-id`: the pool made.
async fn create_pool(
    client: &mut BudgetServiceClient<Channel>,
    pool_id: &str,
) -> Result<String, tonic::Status> {
    let request = bpb::CreatePoolRequest {
        request_id: "same-id".into(),
        pool_id: pool_id.into(),
        display_name: pool_id.into(),
        total: cny(1_000_000),
        beneficiary_cap: None,
        reservation_cap: None,
        default_hold_seconds: 600,
    };
    Ok(client
        .create_pool(request)
        .await?
        .into_inner()
        .pool
        .unwrap()
        .pool_id)
}

/// PublishPolicy of the shipped compute-voucher policy as `version`, in effect only in 2099,
/// under the request id `same-id`: the version and publisher published.
async fn publish(
    client: &mut RulesServiceClient<Channel>,
    version: &str,
) -> Result<(String, String), tonic::Status> {
    let shipped = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("the shipped compute-voucher policy");
    let day = |month, day| {
        Some(subsidy_proto::google::r#type::Date {
            year: 2099,
            month,
            day,
        })
    };
    let request = rpb::PublishPolicyRequest {
        request_id: "same-id".into(),
        policy: Some(rpb::PolicyDraft {
            version: version.into(),
            effective_start: day(1, 1),
            effective_end: day(12, 31),
            ..shipped
        }),
        validate_only: false,
    };
    let policy = client
        .publish_policy(request)
        .await?
        .into_inner()
        .policy
        .unwrap();
    Ok((policy.version, policy.publisher))
}

/// CreateSubscription to `http://127.0.0.1:9/<path>` under the request id `same-id`: the
/// subscription id, its endpoint and the secret shown.
async fn subscribe(
    client: &mut NotificationServiceClient<Channel>,
    path: &str,
) -> Result<(String, String, String), tonic::Status> {
    let request = npb::CreateSubscriptionRequest {
        request_id: "same-id".into(),
        endpoint_url: format!("http://127.0.0.1:9/{path}"),
        description: path.into(),
        ..Default::default()
    };
    let response = client.create_subscription(request).await?.into_inner();
    let subscription = response.subscription.unwrap();
    Ok((
        subscription.subscription_id,
        subscription.endpoint_url,
        response.signing_secret,
    ))
}

fn assert_refused(status: tonic::Status, code: Code, expected_reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        reason(&status).as_deref(),
        Some(expected_reason),
        "{status:?}"
    );
}

#[tokio::test]
async fn request_ids_are_scoped_to_the_caller_in_budget_rules_and_notification() {
    // Proves idempotency keys are the caller's own in the three other services: admins one
    // and two use the same request_id for different pools, policy versions and subscriptions
    // and each gets its own effect (its own name as the ledger's actor and the publisher);
    // one's replay returns one's response; two reusing the id with one's body is
    // REQUEST_ID_REUSED (its own key); admin three sending one's exact request makes a fresh
    // request (the pool or version exists: refused; a new subscription with a new secret),
    // never reading one's stored response.
    let mut overrides = subsidy_testkit::Overrides::new();
    overrides.insert(
        ServiceKind::Notification,
        subsidy_testkit::loopback_webhooks(&[]),
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut budget = Vec::new();
    let mut rules = Vec::new();
    let mut notes = Vec::new();
    for subject in ["admin-one", "admin-two", "admin-three"] {
        let token = person(subject, Role::Admin);
        budget.push(BudgetServiceClient::new(
            as_token(&stack, ServiceKind::Budget, &token).await,
        ));
        rules.push(RulesServiceClient::new(
            as_token(&stack, ServiceKind::Rules, &token).await,
        ));
        notes.push(NotificationServiceClient::new(
            as_token(&stack, ServiceKind::Notification, &token).await,
        ));
    }
    const EXISTS: Code = Code::AlreadyExists;

    assert_eq!(
        create_pool(&mut budget[0], "idem-one").await.unwrap(),
        "idem-one"
    );
    assert_eq!(
        create_pool(&mut budget[1], "idem-two").await.unwrap(),
        "idem-two"
    );
    assert_eq!(
        create_pool(&mut budget[0], "idem-one").await.unwrap(),
        "idem-one"
    );
    let reused = create_pool(&mut budget[1], "idem-one").await.unwrap_err();
    assert_refused(reused, EXISTS, "REQUEST_ID_REUSED");
    let fresh = create_pool(&mut budget[2], "idem-one").await.unwrap_err();
    assert_refused(fresh, EXISTS, "POOL_ALREADY_EXISTS");
    let entries = ledger(&stack).await;
    for (pool_id, actor) in [
        ("idem-one", "admin:admin-one"),
        ("idem-two", "admin:admin-two"),
    ] {
        let actors: Vec<&str> = entries
            .iter()
            .filter(|e| e.pool_id == pool_id)
            .map(|e| e.actor.as_str())
            .collect();
        assert_eq!(actors, [actor], "{entries:?}");
    }

    let one = publish(&mut rules[0], "2099.1").await.unwrap();
    assert_eq!(one, ("2099.1".into(), "admin:admin-one".into()));
    let two = publish(&mut rules[1], "2099.2").await.unwrap();
    assert_eq!(two, ("2099.2".into(), "admin:admin-two".into()));
    assert_eq!(publish(&mut rules[0], "2099.1").await.unwrap(), one);
    let reused = publish(&mut rules[1], "2099.1").await.unwrap_err();
    assert_refused(reused, EXISTS, "REQUEST_ID_REUSED");
    let fresh = publish(&mut rules[2], "2099.1").await.unwrap_err();
    assert_refused(fresh, EXISTS, "POLICY_VERSION_EXISTS");

    let one = subscribe(&mut notes[0], "one").await.unwrap();
    let two = subscribe(&mut notes[1], "two").await.unwrap();
    assert_ne!(one.0, two.0);
    assert!(two.1.ends_with("/two"), "{two:?}");
    assert!(!one.2.is_empty() && !two.2.is_empty());
    let replay = subscribe(&mut notes[0], "one").await.unwrap();
    assert_eq!((&replay.0, &replay.1), (&one.0, &one.1));
    assert!(replay.2.is_empty(), "a replay shows no secret");
    let reused = subscribe(&mut notes[1], "one").await.unwrap_err();
    assert_refused(reused, EXISTS, "REQUEST_ID_REUSED");
    let three = subscribe(&mut notes[2], "one").await.unwrap();
    assert_ne!(three.0, one.0, "admin three made its own subscription");
    assert!(!three.2.is_empty() && three.2 != one.2);
    let listed = notes[0]
        .list_subscriptions(npb::ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 3, "{listed:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn applicants_never_read_ledger_checkpoints_which_auditors_do() {
    // Proves a `ledger.checkpoint` event, which carries a pool's counters (not readable by
    // applicants at the budget), is listed and read by an auditor but neither listed for nor
    // read by an applicant, who still lists its own enterprise's events.
    let keys = tempfile::tempdir().expect("a key directory").keep();
    let key = subsidy_budget::checkpoint_key::ensure_dev_key(&keys).expect("a checkpoint key");
    let mut overrides = subsidy_testkit::Overrides::default();
    overrides.insert(
        ServiceKind::Budget,
        vec![(
            "SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE".into(),
            key.display().to_string(),
        )],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let buyer = shandong(950);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "checkpoint-claim",
        &buyer,
        contract("CKPT-1", &seller(1), 100_000_000),
    )
    .await;
    stack
        .budget()
        .await
        .create_checkpoint(bpb::CreateCheckpointRequest {
            request_id: "checkpoint-1".into(),
            pool_id: VOUCHER_POOL.into(),
        })
        .await
        .expect("an admin signs the pool's head");

    let auditor = NotificationServiceClient::new(
        as_token(
            &stack,
            ServiceKind::Notification,
            &person("auditor-ck", Role::Auditor),
        )
        .await,
    );
    let checkpoint = eventually("the checkpoint published", || {
        let auditor = auditor.clone();
        async move {
            listed_events(&auditor, "")
                .await
                .into_iter()
                .find(|event| event.r#type() == npb::EventType::LedgerCheckpoint)
        }
    })
    .await;
    auditor
        .clone()
        .get_event(npb::GetEventRequest {
            event_id: checkpoint.event_id.clone(),
        })
        .await
        .expect("an auditor reads the checkpoint");

    let applicant = NotificationServiceClient::new(
        as_token(
            &stack,
            ServiceKind::Notification,
            &tenant("applicant-ck", &buyer),
        )
        .await,
    );
    wait_event(&applicant, &claim.claim_id, npb::EventType::ClaimSubmitted).await;
    let listed = listed_events(&applicant, "").await;
    assert!(
        listed
            .iter()
            .all(|event| event.r#type() != npb::EventType::LedgerCheckpoint),
        "{listed:?}"
    );
    let status = applicant
        .clone()
        .get_event(npb::GetEventRequest {
            event_id: checkpoint.event_id.clone(),
        })
        .await
        .expect_err("an applicant is not shown the checkpoint");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("EVENT_NOT_FOUND"));
    stack.shutdown().await;
}

#[tokio::test]
async fn an_agency_on_the_rules_port_reads_its_own_decisions_and_cannot_evaluate() {
    // Proves what opening the rules port to agency namespaces exposes (deploy/README section
    // 7): an agency system known by its certificate (an applicant for its enterprises) reads
    // the stored decision on its enterprise's claim, gets NOT_FOUND for another enterprise's,
    // and is refused ReplayDecision, the evaluations and the ranking (PERMISSION_DENIED), as
    // is a person's token of every role.
    let stack = subsidy_tests::spawn().await;
    let mut operator = stack.app().await;
    let (own, other) = (shandong(1), shandong(970));
    register(&mut operator, &own).await;
    register(&mut operator, &other).await;
    let mut decision_of = async |number: &str, buyer: &Uscc| {
        let claim = submitted(
            &mut operator,
            number,
            buyer,
            contract(number, &seller(4), 20_000_000),
        )
        .await;
        let claim = requests::get_claim(&mut operator, &claim.claim_id).await;
        claim
            .decisions
            .first()
            .unwrap_or_else(|| panic!("the claim's evaluation is linked: {claim:?}"))
            .decision_id
            .clone()
    };
    let mine = decision_of("RULES-PORT-1", &own).await;
    let theirs = decision_of("RULES-PORT-2", &other).await;

    let mut agency =
        RulesServiceClient::new(connect(&stack, ServiceKind::Rules, Transport::Agency, None).await);
    let read = agency
        .get_decision(rpb::GetDecisionRequest {
            decision_id: mine.clone(),
        })
        .await
        .expect("the agency reads its enterprise's decision")
        .into_inner()
        .decision
        .expect("the stored decision");
    assert_eq!(read.subject_uscc, own.as_str());
    let hidden = agency
        .get_decision(rpb::GetDecisionRequest {
            decision_id: theirs,
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let replay = agency
        .replay_decision(rpb::ReplayDecisionRequest { decision_id: mine })
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::PermissionDenied, "{replay:?}");

    let mut callers = vec![("the agency".to_owned(), agency)];
    for role in Role::ALL {
        let channel = as_token(&stack, ServiceKind::Rules, &person("rules-port", role)).await;
        callers.push((
            role.claim_name().to_owned(),
            RulesServiceClient::new(channel),
        ));
    }
    for (who, mut rules) in callers {
        let refusals = [
            rules
                .evaluate_compute_voucher(rpb::EvaluateComputeVoucherRequest::default())
                .await
                .map(drop),
            rules
                .evaluate_data_infra_proposal(rpb::EvaluateDataInfraProposalRequest::default())
                .await
                .map(drop),
            rules
                .rank_selection_round(rpb::RankSelectionRoundRequest::default())
                .await
                .map(drop),
        ];
        for refused in refusals {
            let status = refused.expect_err("evaluations admit the application alone");
            assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
            assert_eq!(
                reason(&status).as_deref(),
                Some("PERMISSION_DENIED"),
                "{who}"
            );
        }
    }
    stack.shutdown().await;
}
