//! Every documented error reason of every service, provoked through the real four services and
//! checked as a caller decodes it: the canonical code, exactly one `ErrorInfo` with the
//! service's domain and the reason, and exactly the `ErrorInfo.metadata` keys the proto
//! documents for it. The reasons are read from the proto headers, so a reason documented but
//! never provoked here (and not named in [`NOT_PROVOKED_HERE`] with where it is tested), or
//! provoked but not documented, fails the test.

use std::collections::BTreeSet;

use subsidy_common::config::ServiceKind;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::google::r#type::Date;
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_testkit::auth::{bearer, token};
use subsidy_testkit::outage::Outage;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::{close, finalize, propose, score};
use subsidy_testkit::*;
use tonic::Code;
use tonic_types::{ErrorDetail, StatusExt};

/// Reasons a proto documents that this test does not provoke, and where each is proved.
const NOT_PROVOKED_HERE: [(&str, &str, &str); 2] = [
    (
        "subsidy.budget",
        "INVARIANT_BACKSTOP",
        "a defect by definition; budget_concurrency.rs provokes it with the naive variant",
    ),
    (
        "subsidy.application",
        "RESERVATION_EXPIRED",
        "provoked by approving_a_claim_whose_hold_lapsed_answers_reservation_expired below (its own stack: one-second holds)",
    ),
];

/// The reasons the proto header of `file` documents (the list after `Reasons:`, or the
/// bullets of the `Errors carry one` paragraph).
fn documented(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/../proto/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("read the proto");
    let header = text.split("\nservice ").next().expect("a header");
    let start = header
        .find("Errors carry one")
        .expect("the errors paragraph");
    let paragraph: Vec<&str> = header[start..]
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("// - "))
        .collect();
    let tokens = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|token| token.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    let joined = paragraph.join(" ");
    if let Some(list) = joined.split("Reasons:").nth(1) {
        let list = list.split("`.").next().expect("a list");
        return tokens(list).into_iter().collect();
    }
    // Bullets, each with its continuation lines.
    let mut bullets: Vec<String> = Vec::new();
    for line in &paragraph {
        let line = line.trim_start_matches("//").trim_start();
        match line.strip_prefix("- ") {
            Some(start) => bullets.push(start.to_owned()),
            None => {
                if let Some(last) = bullets.last_mut() {
                    last.push(' ');
                    last.push_str(line);
                }
            }
        }
    }
    bullets
        .iter()
        .flat_map(|bullet| {
            // The reasons lead the bullet, up to its colon; a parenthesis names a code.
            let mut head = String::new();
            let mut depth = 0;
            for c in bullet.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ':' if depth == 0 => break,
                    _ if depth == 0 => head.push(c),
                    _ => {}
                }
            }
            tokens(&head)
        })
        .collect()
}

/// The reasons seen, with their domains.
#[derive(Default)]
struct Seen(BTreeSet<(String, String)>);

impl Seen {
    /// Checks that `result` is the refusal `code` / `reason` of `domain` carrying exactly the
    /// metadata `keys`.
    #[track_caller]
    fn refused<T: std::fmt::Debug>(
        &mut self,
        result: Result<tonic::Response<T>, tonic::Status>,
        code: Code,
        domain: &str,
        reason: &str,
        keys: &[&str],
    ) -> tonic::Status {
        let status = result.expect_err(reason);
        let infos: Vec<_> = status
            .get_error_details_vec()
            .into_iter()
            .filter_map(|detail| match detail {
                ErrorDetail::ErrorInfo(info) => Some(info),
                _ => None,
            })
            .collect();
        assert_eq!(infos.len(), 1, "{reason}: one ErrorInfo in {status:?}");
        let info = &infos[0];
        assert_eq!(
            (status.code(), info.domain.as_str(), info.reason.as_str()),
            (code, domain, reason),
            "{}",
            status.message()
        );
        let actual: BTreeSet<&str> = info.metadata.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(actual, expected, "{reason}: metadata {:?}", info.metadata);
        self.0.insert((domain.to_owned(), reason.to_owned()));
        status
    }
}

const BUDGET: &str = "subsidy.budget";
const RULES: &str = "subsidy.rules";
const NOTIFICATION: &str = "subsidy.notification";
const APPLICATION: &str = "subsidy.application";

async fn budget_reasons(stack: &Stack, seen: &mut Seen) {
    let mut budget = stack.budget().await;
    let pool = |request_id: &str, pool_id: &str| bpb::CreatePoolRequest {
        request_id: request_id.into(),
        pool_id: pool_id.into(),
        display_name: "reasons".into(),
        // 1,000.00 with at most 300.00 per beneficiary and 500.00 per reservation.
        total: cny(100_000),
        beneficiary_cap: cny(30_000),
        reservation_cap: cny(50_000),
        default_hold_seconds: LONG_HOLD_SECONDS,
    };
    budget.create_pool(pool("rp-1", "reasons")).await.unwrap();
    seen.refused(
        budget.create_pool(pool("rp-bad", "")).await,
        Code::InvalidArgument,
        BUDGET,
        "INVALID_ARGUMENT",
        &[],
    );
    seen.refused(
        budget.create_pool(pool("rp-2", "reasons")).await,
        Code::AlreadyExists,
        BUDGET,
        "POOL_ALREADY_EXISTS",
        &["pool_id"],
    );
    seen.refused(
        budget
            .get_pool(bpb::GetPoolRequest {
                pool_id: "no-such-pool".into(),
            })
            .await,
        Code::NotFound,
        BUDGET,
        "POOL_NOT_FOUND",
        &["pool_id"],
    );
    seen.refused(
        budget
            .get_reservation(bpb::GetReservationRequest {
                reservation_id: "no-such-reservation".into(),
            })
            .await,
        Code::NotFound,
        BUDGET,
        "RESERVATION_NOT_FOUND",
        &["reservation_id"],
    );
    let reserve = |request_id: &str, who: usize, fen: i64| bpb::ReserveRequest {
        request_id: request_id.into(),
        pool_id: "reasons".into(),
        beneficiary_uscc: shandong(who).to_string(),
        amount: cny(fen),
        reference: request_id.into(),
        hold_seconds: 0,
    };
    seen.refused(
        budget.reserve(reserve("rr-big", 1, 60_000)).await,
        Code::FailedPrecondition,
        BUDGET,
        "RESERVATION_CAP_EXCEEDED",
        &["pool_id", "cap", "requested"],
    );
    let mut held = Vec::new();
    for who in 1..=3 {
        let made = budget
            .reserve(reserve(&format!("rr-{who}"), who, 25_000))
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap();
        held.push(made.reservation_id);
    }
    seen.refused(
        budget.reserve(reserve("rr-cap", 1, 10_000)).await,
        Code::FailedPrecondition,
        BUDGET,
        "BENEFICIARY_CAP_EXCEEDED",
        &[
            "pool_id",
            "beneficiary_uscc",
            "cap",
            "used",
            "remaining",
            "requested",
        ],
    );
    budget.reserve(reserve("rr-4", 4, 25_000)).await.unwrap();
    seen.refused(
        budget.reserve(reserve("rr-none", 5, 1)).await,
        Code::FailedPrecondition,
        BUDGET,
        "POOL_EXHAUSTED",
        &["pool_id", "requested", "available"],
    );
    seen.refused(
        budget
            .commit(bpb::CommitRequest {
                request_id: "rc-over".into(),
                reservation_id: held[0].clone(),
                amount: cny(25_001),
            })
            .await,
        Code::FailedPrecondition,
        BUDGET,
        "COMMIT_EXCEEDS_HOLD",
        &["reservation_id", "held", "requested"],
    );
    budget
        .release(bpb::ReleaseRequest {
            request_id: "rl-1".into(),
            reservation_id: held[1].clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap();
    seen.refused(
        budget
            .commit(bpb::CommitRequest {
                request_id: "rc-released".into(),
                reservation_id: held[1].clone(),
                amount: cny(1),
            })
            .await,
        Code::FailedPrecondition,
        BUDGET,
        "RESERVATION_NOT_HELD",
        &["reservation_id", "state"],
    );
    seen.refused(
        budget.reserve(reserve("rr-1", 1, 24_000)).await,
        Code::AlreadyExists,
        BUDGET,
        "REQUEST_ID_REUSED",
        &["request_id"],
    );
    budget
        .create_pool(pool("rp-closed", "reasons-closed"))
        .await
        .unwrap();
    budget
        .close_pool(bpb::ClosePoolRequest {
            request_id: "rp-close".into(),
            pool_id: "reasons-closed".into(),
            reason: "the program ended".into(),
        })
        .await
        .unwrap();
    let mut closed = reserve("rr-closed", 1, 100);
    closed.pool_id = "reasons-closed".into();
    seen.refused(
        budget.reserve(closed).await,
        Code::FailedPrecondition,
        BUDGET,
        "POOL_CLOSED",
        &["pool_id"],
    );
}

async fn rules_reasons(stack: &Stack, seen: &mut Seen) {
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    seen.refused(
        rules
            .evaluate_compute_voucher(rpb::EvaluateComputeVoucherRequest {
                claim: None,
                policy_version: String::new(),
            })
            .await,
        Code::InvalidArgument,
        RULES,
        "INVALID_ARGUMENT",
        &[],
    );
    seen.refused(
        rules
            .get_policy(rpb::GetPolicyRequest {
                policy_id: "no-such-policy".into(),
                version: String::new(),
            })
            .await,
        Code::NotFound,
        RULES,
        "POLICY_NOT_FOUND",
        &["policy_id"],
    );
    let shipped = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("the shipped compute-voucher policy");
    let publish = |request_id: &str, draft: rpb::PolicyDraft| rpb::PublishPolicyRequest {
        request_id: request_id.into(),
        policy: Some(draft),
        validate_only: false,
    };
    seen.refused(
        rules
            .publish_policy(publish("pp-again", shipped.clone()))
            .await,
        Code::AlreadyExists,
        RULES,
        "POLICY_VERSION_EXISTS",
        &["policy_id", "version"],
    );
    // A later version, in effect only from 2099, so that nothing else here changes.
    let mut later = shipped.clone();
    later.version = "2099.1".into();
    later.effective_start = Some(Date {
        year: 2099,
        month: 1,
        day: 1,
    });
    later.effective_end = Some(Date {
        year: 2099,
        month: 12,
        day: 31,
    });
    let mut invalid = later.clone();
    invalid.document_json = "{\"nodes\": [], \"edges\": []}".into();
    seen.refused(
        rules.publish_policy(publish("pp-invalid", invalid)).await,
        Code::InvalidArgument,
        RULES,
        "POLICY_INVALID",
        &["policy_id", "version"],
    );
    let mut scripted = later.clone();
    let mut graph: serde_json::Value =
        serde_json::from_str(&scripted.document_json).expect("the shipped graph is JSON");
    graph["nodes"]
        .as_array_mut()
        .expect("nodes")
        .push(serde_json::json!({
            "id": "script-1",
            "type": "functionNode",
            "name": "script",
            "position": {"x": 0, "y": 0},
            "content": {"source": "export const handler = async (input) => input;"}
        }));
    scripted.document_json = graph.to_string();
    seen.refused(
        rules.publish_policy(publish("pp-script", scripted)).await,
        Code::InvalidArgument,
        RULES,
        "POLICY_HAS_SCRIPT_NODE",
        &["policy_id", "version", "node_ids"],
    );
    rules
        .publish_policy(publish("pp-later", later.clone()))
        .await
        .expect("publish a later version");
    // A version whose graph computes a negative rate for large contracts: it compiles and
    // publishes, and the engine's answer is refused when a large contract is evaluated.
    let mut negative = later.clone();
    negative.version = "2099.2".into();
    let mut graph: serde_json::Value =
        serde_json::from_str(&negative.document_json).expect("the shipped graph is JSON");
    for node in graph["nodes"].as_array_mut().expect("nodes") {
        if node["id"] == "rate" {
            for rule in node["content"]["rules"].as_array_mut().expect("rules") {
                rule["rate-out"] = "claim.contractTotal > 5000000 ? -0.01 : 0.05".into();
            }
        }
    }
    negative.document_json = graph.to_string();
    rules
        .publish_policy(publish("pp-negative", negative))
        .await
        .expect("publish a version that fails on large contracts");
    let large = rpb::ComputeVoucherClaim {
        buyer_uscc: shandong(1).to_string(),
        seller_uscc: seller(1).to_string(),
        contract_number: "LARGE-1".into(),
        signing_date: Some(Date {
            year: 2025,
            month: 6,
            day: 18,
        }),
        contract_total: cny(600_000_000),
        compute_type: rpb::ComputeType::AiAccelerator as i32,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: rpb::BenefitRating::Unspecified as i32,
        enterprise_usage: cny(0),
        ..rpb::ComputeVoucherClaim::default()
    };
    seen.refused(
        rules
            .evaluate_compute_voucher(rpb::EvaluateComputeVoucherRequest {
                claim: Some(large),
                policy_version: "2099.2".into(),
            })
            .await,
        Code::Internal,
        RULES,
        "POLICY_EVALUATION_FAILED",
        &["policy_id", "version"],
    );
    let mut other = later;
    other.description = "another text under the same request".into();
    seen.refused(
        rules.publish_policy(publish("pp-later", other)).await,
        Code::AlreadyExists,
        RULES,
        "REQUEST_ID_REUSED",
        &["request_id"],
    );
}

async fn notification_reasons(stack: &Stack, seen: &mut Seen) {
    let mut notes: NotificationServiceClient<Channel> = stack.notification().await;
    let subscription =
        |request_id: &str, endpoint: &str, description: &str| npb::CreateSubscriptionRequest {
            request_id: request_id.into(),
            endpoint_url: endpoint.into(),
            description: description.into(),
            ..npb::CreateSubscriptionRequest::default()
        };
    seen.refused(
        notes
            .create_subscription(subscription("", "https://agency.example.cn/hooks", "x"))
            .await,
        Code::InvalidArgument,
        NOTIFICATION,
        "INVALID_ARGUMENT",
        &[],
    );
    seen.refused(
        notes
            .create_subscription(subscription("ns-ftp", "ftp://agency.example.cn/hooks", "x"))
            .await,
        Code::InvalidArgument,
        NOTIFICATION,
        "INVALID_ENDPOINT",
        &[],
    );
    notes
        .create_subscription(subscription("ns-1", "http://127.0.0.1:9/hooks", "first"))
        .await
        .unwrap();
    seen.refused(
        notes
            .create_subscription(subscription("ns-1", "http://127.0.0.1:9/hooks", "second"))
            .await,
        Code::AlreadyExists,
        NOTIFICATION,
        "REQUEST_ID_REUSED",
        &["request_id"],
    );
    seen.refused(
        notes
            .get_subscription(npb::GetSubscriptionRequest {
                subscription_id: "no-such-subscription".into(),
            })
            .await,
        Code::NotFound,
        NOTIFICATION,
        "SUBSCRIPTION_NOT_FOUND",
        &["subscription_id"],
    );
    seen.refused(
        notes
            .get_event(npb::GetEventRequest {
                event_id: "no-such-event".into(),
            })
            .await,
        Code::NotFound,
        NOTIFICATION,
        "EVENT_NOT_FOUND",
        &["event_id"],
    );
    seen.refused(
        notes
            .get_delivery(npb::GetDeliveryRequest {
                delivery_id: "no-such-delivery".into(),
            })
            .await,
        Code::NotFound,
        NOTIFICATION,
        "DELIVERY_NOT_FOUND",
        &["delivery_id"],
    );
    let event = |application_id: &str| npb::Event {
        event_id: "reasons-event-1".into(),
        r#type: npb::EventType::ClaimApproved as i32,
        application_id: application_id.into(),
        enterprise_uscc: shandong(1).to_string(),
        program: npb::Program::ComputeVoucher as i32,
        amount: cny(100),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 0,
        }),
        ..npb::Event::default()
    };
    notes
        .publish_event(npb::PublishEventRequest {
            event: Some(event("claim-1")),
        })
        .await
        .unwrap();
    seen.refused(
        notes
            .publish_event(npb::PublishEventRequest {
                event: Some(event("claim-2")),
            })
            .await,
        Code::AlreadyExists,
        NOTIFICATION,
        "EVENT_ID_REUSED",
        &["event_id"],
    );
    let stream = notes
        .stream_events(npb::StreamEventsRequest {
            cursor: "999999999".into(),
            ..npb::StreamEventsRequest::default()
        })
        .await;
    let status = match stream {
        Ok(mut open) => Err(open
            .get_mut()
            .message()
            .await
            .expect_err("a cursor past the head is refused")),
        Err(status) => Err(status),
    };
    seen.refused::<()>(
        status.map(tonic::Response::new),
        Code::InvalidArgument,
        NOTIFICATION,
        "CURSOR_INVALID",
        &[],
    );
    // Disabled by hand, a subscription refuses redelivery.
    let made = notes
        .create_subscription(subscription("ns-2", "http://127.0.0.1:9/hooks", "paused"))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    notes
        .update_subscription(npb::UpdateSubscriptionRequest {
            request_id: "ns-2-disable".into(),
            subscription_id: made.subscription_id.clone(),
            subscription: Some(npb::Subscription {
                state: npb::SubscriptionState::Disabled as i32,
                ..npb::Subscription::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .expect("disable a subscription");
    seen.refused(
        notes
            .redeliver_dead_letters(npb::RedeliverDeadLettersRequest {
                request_id: "ns-2-redo".into(),
                subscription_id: made.subscription_id,
            })
            .await,
        Code::FailedPrecondition,
        NOTIFICATION,
        "SUBSCRIPTION_DISABLED",
        &["subscription_id"],
    );
    notes
        .create_subscription(subscription("ns-3", "http://127.0.0.1:9/hooks", "third"))
        .await
        .expect("the third subscription fits");
    seen.refused(
        notes
            .create_subscription(subscription("ns-4", "http://127.0.0.1:9/hooks", "fourth"))
            .await,
        Code::ResourceExhausted,
        NOTIFICATION,
        "SUBSCRIPTION_LIMIT_REACHED",
        &["subscriptions_max"],
    );
    // Two streams open; the third is refused while they last.
    let open = || npb::StreamEventsRequest {
        from_beginning: true,
        ..npb::StreamEventsRequest::default()
    };
    let first = notes.stream_events(open()).await.expect("a first stream");
    let second = notes.stream_events(open()).await.expect("a second stream");
    seen.refused(
        notes.stream_events(open()).await,
        Code::ResourceExhausted,
        NOTIFICATION,
        "STREAM_LIMIT_REACHED",
        &["streams_max"],
    );
    drop((first, second));
}

async fn application_reasons(stack: &mut Stack, seen: &mut Seen) {
    let mut app = stack.app().await;
    let (first, second) = (shandong(11), shandong(12));
    register(&mut app, &first).await;
    register(&mut app, &second).await;
    let mut bad = pb::RegisterEnterpriseRequest {
        request_id: "reg-bad".into(),
        uscc: "not a code".into(),
        name: "Bad".into(),
        contact_email: "ops@example.cn".into(),
        ..pb::RegisterEnterpriseRequest::default()
    };
    seen.refused(
        app.register_enterprise(bad.clone()).await,
        Code::InvalidArgument,
        APPLICATION,
        "INVALID_ARGUMENT",
        &[],
    );
    bad.request_id = "reg-again".into();
    bad.uscc = first.to_string();
    seen.refused(
        app.register_enterprise(bad).await,
        Code::AlreadyExists,
        APPLICATION,
        "ENTERPRISE_ALREADY_REGISTERED",
        &["uscc"],
    );
    let stranger = shandong(13);
    subsidy_testkit::auth::named(stranger.as_str());
    seen.refused(
        app.submit_claim(submit(
            "c-stranger",
            &stranger,
            contract("R-0", &seller(1), 100_000_000),
        ))
        .await,
        Code::NotFound,
        APPLICATION,
        "ENTERPRISE_NOT_FOUND",
        &["uscc"],
    );
    seen.refused(
        app.get_claim(pb::GetClaimRequest {
            claim_id: "no-such-claim".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "CLAIM_NOT_FOUND",
        &["claim_id"],
    );
    let claim = submitted(
        &mut app,
        "c-1",
        &first,
        contract("R-1", &seller(1), 100_000_000),
    )
    .await;
    let claim = wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    seen.refused(
        app.submit_claim(submit(
            "c-2",
            &first,
            contract("R-1", &seller(1), 100_000_000),
        ))
        .await,
        Code::AlreadyExists,
        APPLICATION,
        "DUPLICATE_CONTRACT",
        &["seller_uscc", "contract_number"],
    );
    seen.refused(
        app.submit_claim(submit(
            "c-1",
            &first,
            contract("R-9", &seller(1), 100_000_000),
        ))
        .await,
        Code::AlreadyExists,
        APPLICATION,
        "REQUEST_ID_REUSED",
        &["request_id"],
    );
    seen.refused(
        app.approve_claim(approve("a-over", &claim.claim_id, 100_000_001))
            .await,
        Code::InvalidArgument,
        APPLICATION,
        "APPROVED_AMOUNT_EXCEEDS_CONTRACT",
        &["claim_id", "contract_total"],
    );
    seen.refused(
        app.approve_claim(approve("a-tiny", &claim.claim_id, 1))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "NOT_ELIGIBLE_ON_RECHECK",
        &["claim_id"],
    );
    app.reject_claim(reject("rej-1", &claim.claim_id))
        .await
        .unwrap();
    seen.refused(
        app.approve_claim(approve("a-late", &claim.claim_id, 100_000_000))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "TRANSITION_NOT_ALLOWED",
        &["state", "claim_id"],
    );
    // An applicant bound to one enterprise, claiming for another.
    let mut request = tonic::Request::new(submit(
        "c-other",
        &second,
        contract("R-2", &seller(1), 100_000_000),
    ));
    let own = token(
        "applicant-11",
        &[Role::Applicant],
        &[first.to_string()],
        None,
    );
    request.metadata_mut().insert("authorization", bearer(&own));
    seen.refused(
        app.submit_claim(request).await,
        Code::PermissionDenied,
        APPLICATION,
        "ENTERPRISE_NOT_BOUND",
        &["uscc"],
    );

    // Rounds.
    seen.refused(
        app.create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-nopool".into(),
            pool_id: "no-such-pool".into(),
            title: "a round".into(),
            submission_deadline_time: Some(in_seconds(3600)),
        })
        .await,
        Code::InvalidArgument,
        APPLICATION,
        "POOL_NOT_FOUND",
        &["pool_id"],
    );
    seen.refused(
        app.get_selection_round(pb::GetSelectionRoundRequest {
            round_id: "no-such-round".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "ROUND_NOT_FOUND",
        &["round_id"],
    );
    seen.refused(
        app.get_proposal(pb::GetProposalRequest {
            proposal_id: "no-such-proposal".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "PROPOSAL_NOT_FOUND",
        &["proposal_id"],
    );
    let (_, round) = subsidy_testkit::rounds::open_round(stack, 4_000_000_000).await;
    let proposal = propose(&mut app, &round.round_id, &first, "space", 100_000_000).await;
    seen.refused(
        score(&mut app, &proposal.proposal_id, "e1", &first, 80)
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
        APPLICATION,
        "CONFLICT_OF_INTEREST",
        &["proposal_id", "expert_organization_uscc"],
    );
    let mut request = tonic::Request::new(pb::ScoreProposalRequest {
        request_id: "score-as-other".into(),
        proposal_id: proposal.proposal_id.clone(),
        expert_id: "e2".into(),
        expert_organization_uscc: shandong(50).to_string(),
        score: 70,
        comment: String::new(),
    });
    let expert = token("expert-e1", &[Role::Expert], &[], Some("e1"));
    request
        .metadata_mut()
        .insert("authorization", bearer(&expert));
    seen.refused(
        app.score_proposal(request).await,
        Code::PermissionDenied,
        APPLICATION,
        "EXPERT_NOT_BOUND",
        &["expert_id"],
    );
    score(&mut app, &proposal.proposal_id, "e1", &shandong(50), 80)
        .await
        .unwrap();
    close(&mut app, &round.round_id).await;
    seen.refused(
        app.submit_proposal(pb::SubmitProposalRequest {
            request_id: "propose-late".into(),
            round_id: round.round_id.clone(),
            applicant_uscc: second.to_string(),
            category: pb::ProposalCategory::TrustedDataSpace as i32,
            title: "late".into(),
            requested_amount: cny(100_000_000),
            summary: "Too late.".into(),
            attachments: Vec::new(),
        })
        .await,
        Code::FailedPrecondition,
        APPLICATION,
        "ROUND_CLOSED",
        &["round_id"],
    );
    app.finalize_selection_round(finalize("fin-1", &round.round_id))
        .await
        .unwrap();
    seen.refused(
        app.finalize_selection_round(finalize("fin-2", &round.round_id))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "ROUND_ALREADY_FINALIZED",
        &["round_id"],
    );

    // With the rules service gone, a new claim cannot be judged.
    stack.stop(ServiceKind::Rules).await;
    seen.refused(
        app.submit_claim(submit(
            "c-down",
            &second,
            contract("R-3", &seller(1), 100_000_000),
        ))
        .await,
        Code::Unavailable,
        APPLICATION,
        "UPSTREAM_UNAVAILABLE",
        &["service"],
    );
}

/// Each service with its database taken away ([`Outage`]: on PostgreSQL its connections
/// terminated and new ones refused; on SQLite another connection holding the write lock past
/// the busy timeout): a write answers `UNAVAILABLE`/`STORAGE_UNAVAILABLE` and changes nothing,
/// and the same call with the same `request_id` takes effect once the database is back.
async fn storage_reasons(stack: &Stack, seen: &mut Seen) {
    let mut app = stack.app().await;
    let mut budget = stack.budget().await;
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    let mut notes: NotificationServiceClient<Channel> = stack.notification().await;
    let enterprise = shandong(13);
    subsidy_testkit::auth::named(enterprise.as_str());
    let registration = pb::RegisterEnterpriseRequest {
        request_id: "reg-outage".into(),
        uscc: enterprise.to_string(),
        name: "Outage Enterprise".into(),
        contact_email: "ops@example.cn".into(),
        ..pb::RegisterEnterpriseRequest::default()
    };
    let pool = bpb::CreatePoolRequest {
        request_id: "rp-outage".into(),
        pool_id: "outage".into(),
        display_name: "made across an outage".into(),
        total: cny(100_000),
        beneficiary_cap: cny(30_000),
        reservation_cap: cny(50_000),
        default_hold_seconds: LONG_HOLD_SECONDS,
    };
    let mut draft = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("the shipped compute-voucher policy");
    // In effect only in 2098, so that nothing else here changes.
    draft.version = "2098.1".into();
    draft.effective_start = Some(Date {
        year: 2098,
        month: 1,
        day: 1,
    });
    draft.effective_end = Some(Date {
        year: 2098,
        month: 12,
        day: 31,
    });
    let policy = rpb::PublishPolicyRequest {
        request_id: "pp-outage".into(),
        policy: Some(draft),
        validate_only: false,
    };
    let event = npb::PublishEventRequest {
        event: Some(npb::Event {
            event_id: "outage-event-1".into(),
            r#type: npb::EventType::ClaimApproved as i32,
            application_id: "claim-outage".into(),
            enterprise_uscc: enterprise.to_string(),
            program: npb::Program::ComputeVoucher as i32,
            amount: cny(100),
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_750_000_000,
                nanos: 0,
            }),
            ..npb::Event::default()
        }),
    };

    let mut outages = Vec::new();
    for kind in ServiceKind::ALL {
        outages.push(Outage::begin(stack, kind).await);
    }
    let (registered, created, published, sent) = tokio::join!(
        app.register_enterprise(registration.clone()),
        budget.create_pool(pool.clone()),
        rules.publish_policy(policy.clone()),
        notes.publish_event(event.clone()),
    );
    for (domain, result) in [
        (APPLICATION, registered.map(|_| ())),
        (BUDGET, created.map(|_| ())),
        (RULES, published.map(|_| ())),
        (NOTIFICATION, sent.map(|_| ())),
    ] {
        seen.refused(
            result.map(tonic::Response::new),
            Code::Unavailable,
            domain,
            "STORAGE_UNAVAILABLE",
            &[],
        );
    }
    for outage in outages {
        outage.end().await;
    }

    // The retries take effect (the pools reconnect on their own; a first retry may still
    // meet a connection the outage broke, and is told UNAVAILABLE again).
    let registered = retry_unavailable(|| {
        let (mut client, request) = (app.clone(), registration.clone());
        async move { client.register_enterprise(request).await }
    })
    .await;
    assert_eq!(
        registered.enterprise.map(|made| made.uscc),
        Some(enterprise.to_string())
    );
    let created = retry_unavailable(|| {
        let (mut client, request) = (budget.clone(), pool.clone());
        async move { client.create_pool(request).await }
    })
    .await;
    assert_eq!(
        created.pool.map(|made| made.pool_id).as_deref(),
        Some("outage")
    );
    let published = retry_unavailable(|| {
        let (mut client, request) = (rules.clone(), policy.clone());
        async move { client.publish_policy(request).await }
    })
    .await;
    assert_eq!(
        published.policy.map(|made| made.version).as_deref(),
        Some("2098.1")
    );
    retry_unavailable(|| {
        let (mut client, request) = (notes.clone(), event.clone());
        async move { client.publish_event(request).await }
    })
    .await;
}

/// A defect, made for real: the table a write needs is renamed away behind the service's back
/// (as a botched manual migration would), so the database refuses the statement for a reason
/// that is nobody's outage. The write answers `INTERNAL`/`INTERNAL` with no driver text, and
/// changes nothing: with the table back, the same call with the same `request_id` takes effect.
async fn internal_reasons(stack: &Stack, seen: &mut Seen) {
    let mut app = stack.app().await;
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    let mut notes: NotificationServiceClient<Channel> = stack.notification().await;
    let enterprise = shandong(14);
    subsidy_testkit::auth::named(enterprise.as_str());
    let registration = pb::RegisterEnterpriseRequest {
        request_id: "reg-internal".into(),
        uscc: enterprise.to_string(),
        name: "Internal Enterprise".into(),
        contact_email: "ops@example.cn".into(),
        ..pb::RegisterEnterpriseRequest::default()
    };
    let mut draft = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("the shipped compute-voucher policy");
    // In effect only in 2097, so that nothing else here changes.
    draft.version = "2097.1".into();
    draft.effective_start = Some(Date {
        year: 2097,
        month: 1,
        day: 1,
    });
    draft.effective_end = Some(Date {
        year: 2097,
        month: 12,
        day: 31,
    });
    let policy = rpb::PublishPolicyRequest {
        request_id: "pp-internal".into(),
        policy: Some(draft),
        validate_only: false,
    };
    let event = npb::PublishEventRequest {
        event: Some(npb::Event {
            event_id: "internal-event-1".into(),
            r#type: npb::EventType::ClaimApproved as i32,
            application_id: "claim-internal".into(),
            enterprise_uscc: enterprise.to_string(),
            program: npb::Program::ComputeVoucher as i32,
            amount: cny(100),
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_750_000_000,
                nanos: 0,
            }),
            ..npb::Event::default()
        }),
    };
    let tables = [
        (ServiceKind::Application, "enterprises"),
        (ServiceKind::Rules, "policy_versions"),
        (ServiceKind::Notification, "events"),
    ];
    for (kind, table) in tables {
        rename(stack, kind, table, &format!("{table}_gone")).await;
    }
    seen.refused(
        app.register_enterprise(registration.clone()).await,
        Code::Internal,
        APPLICATION,
        "INTERNAL",
        &[],
    );
    seen.refused(
        rules.publish_policy(policy.clone()).await,
        Code::Internal,
        RULES,
        "INTERNAL",
        &[],
    );
    seen.refused(
        notes.publish_event(event.clone()).await,
        Code::Internal,
        NOTIFICATION,
        "INTERNAL",
        &[],
    );
    for (kind, table) in tables {
        rename(stack, kind, &format!("{table}_gone"), table).await;
    }
    let registered = app
        .register_enterprise(registration)
        .await
        .expect("the same registration once the table is back")
        .into_inner();
    assert_eq!(
        registered.enterprise.map(|made| made.uscc),
        Some(enterprise.to_string())
    );
    let published = rules
        .publish_policy(policy)
        .await
        .expect("the same policy once the table is back")
        .into_inner();
    assert_eq!(
        published.policy.map(|made| made.version).as_deref(),
        Some("2097.1")
    );
    notes
        .publish_event(event)
        .await
        .expect("the same event once the table is back");
}

/// Renames a table of a service's database behind the service's back.
async fn rename(stack: &Stack, kind: ServiceKind, from: &str, to: &str) {
    let db = stack.database(kind).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {from} RENAME TO {to}"
    )))
    .execute(&db.pool)
    .await
    .expect("rename the table");
    db.pool.close().await;
}

/// Calls `call` until it answers something else than `UNAVAILABLE` (bounded), and returns the
/// answer, which must be a success.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the retry after the outage failed: {status:?}"),
        }
    }
}

/// A second stack: a rules service whose catalogue holds no policy (the shipped ones not
/// seeded), where evaluation answers `FAILED_PRECONDITION`/`NO_POLICY_PUBLISHED`; and a
/// notification service keeping events for one second, where a stream asked to resume from a
/// pruned position answers `FAILED_PRECONDITION`/`CURSOR_EXPIRED`.
async fn second_stack_reasons(seen: &mut Seen) {
    let mut overrides = Overrides::new();
    overrides.insert(
        ServiceKind::Rules,
        vec![("SUBSIDY_RULES_SEED_SHIPPED_POLICIES".into(), "false".into())],
    );
    overrides.insert(
        ServiceKind::Notification,
        vec![
            (
                "SUBSIDY_NOTIFICATION_DELIVERY_RETENTION_MS".into(),
                "1000".into(),
            ),
            ("SUBSIDY_PRUNE_INTERVAL_MS".into(), "100".into()),
        ],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut notes: NotificationServiceClient<Channel> = stack.notification().await;
    notes
        .publish_event(npb::PublishEventRequest {
            event: Some(npb::Event {
                event_id: "pruned-event-1".into(),
                r#type: npb::EventType::ClaimApproved as i32,
                application_id: "claim-pruned".into(),
                enterprise_uscc: shandong(1).to_string(),
                program: npb::Program::ComputeVoucher as i32,
                amount: cny(100),
                occur_time: Some(prost_types::Timestamp {
                    seconds: 1_750_000_000,
                    nanos: 0,
                }),
                ..npb::Event::default()
            }),
        })
        .await
        .expect("publish an event");
    let feed = stack.database(ServiceKind::Notification).await;
    eventually("the event pruned", || async {
        let pruned: i64 = sqlx::query_scalar("SELECT pruned_through_seq FROM feed_head")
            .fetch_one(&feed.pool)
            .await
            .expect("read the feed");
        (pruned >= 1).then_some(())
    })
    .await;
    seen.refused(
        notes
            .stream_events(npb::StreamEventsRequest {
                cursor: subsidy_notification::stream::cursor(0),
                ..npb::StreamEventsRequest::default()
            })
            .await,
        Code::FailedPrecondition,
        NOTIFICATION,
        "CURSOR_EXPIRED",
        &["oldest_cursor"],
    );
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    let claim = rpb::ComputeVoucherClaim {
        buyer_uscc: shandong(1).to_string(),
        seller_uscc: seller(1).to_string(),
        contract_number: "NO-POLICY-1".into(),
        signing_date: Some(Date {
            year: 2025,
            month: 6,
            day: 18,
        }),
        contract_total: cny(100_000_000),
        compute_type: rpb::ComputeType::AiAccelerator as i32,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: rpb::BenefitRating::Unspecified as i32,
        enterprise_usage: cny(0),
        ..rpb::ComputeVoucherClaim::default()
    };
    seen.refused(
        rules
            .evaluate_compute_voucher(rpb::EvaluateComputeVoucherRequest {
                claim: Some(claim),
                policy_version: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        RULES,
        "NO_POLICY_PUBLISHED",
        &["policy_id"],
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_reason_answers_with_its_code_domain_and_metadata() {
    let mut overrides = quick_application(&[]);
    overrides.insert(
        ServiceKind::Notification,
        // Limits a test reaches: three subscriptions, two streams.
        loopback_webhooks(&[
            ("SUBSIDY_NOTIFICATION_SUBSCRIPTIONS_MAX", "3"),
            ("SUBSIDY_NOTIFICATION_STREAMS_MAX", "2"),
        ]),
    );
    // A SQLite write waits out its busy timeout (10 s) before it fails: the deadline of a
    // call must be longer for the outage below to answer STORAGE_UNAVAILABLE, not a deadline.
    for kind in ServiceKind::ALL {
        overrides
            .entry(kind)
            .or_default()
            .push(("SUBSIDY_REQUEST_TIMEOUT_MS".into(), "30000".into()));
    }
    let mut stack = subsidy_tests::spawn_with(overrides).await;
    let mut seen = Seen::default();
    budget_reasons(&stack, &mut seen).await;
    rules_reasons(&stack, &mut seen).await;
    notification_reasons(&stack, &mut seen).await;
    application_reasons(&mut stack, &mut seen).await;
    // Last: the outage's retries add a pool, a policy version and an event. (The rules
    // service was stopped to make it unreachable above.)
    stack.restart(ServiceKind::Rules).await;
    storage_reasons(&stack, &mut seen).await;
    internal_reasons(&stack, &mut seen).await;
    second_stack_reasons(&mut seen).await;

    let mut documented_reasons = BTreeSet::new();
    for (domain, file) in [
        (
            APPLICATION,
            "subsidy/application/v1/application_service.proto",
        ),
        (RULES, "subsidy/rules/v1/rules_service.proto"),
        (BUDGET, "subsidy/budget/v1/budget_service.proto"),
        (
            NOTIFICATION,
            "subsidy/notification/v1/notification_service.proto",
        ),
    ] {
        let reasons = documented(file);
        assert!(reasons.len() >= 8, "{file}: {reasons:?}");
        documented_reasons.extend(
            reasons
                .into_iter()
                .map(|reason| (domain.to_owned(), reason)),
        );
    }
    let excused: BTreeSet<(String, String)> = NOT_PROVOKED_HERE
        .iter()
        .map(|(domain, reason, _)| ((*domain).to_owned(), (*reason).to_owned()))
        .collect();
    let undocumented: Vec<_> = seen.0.difference(&documented_reasons).collect();
    assert!(
        undocumented.is_empty(),
        "provoked but not documented: {undocumented:?}"
    );
    let unprovoked: Vec<_> = documented_reasons
        .difference(&seen.0)
        .filter(|reason| !excused.contains(*reason))
        .collect();
    assert!(
        unprovoked.is_empty(),
        "documented but not provoked: {unprovoked:?}"
    );
    println!(
        "{} documented reasons: {} provoked here, {} excused",
        documented_reasons.len(),
        seen.0.len(),
        excused.len()
    );
    let stale: Vec<_> = excused.difference(&documented_reasons).collect();
    assert!(stale.is_empty(), "excused but not documented: {stale:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_claim_whose_hold_lapsed_answers_reservation_expired() {
    // Holds of one second that the budget expires quickly, and a reconciler that does not
    // look at the claim first: the approval itself finds the hold gone.
    let mut overrides = quick_application(&[
        ("SUBSIDY_APPLICATION_HOLD_SECONDS", "1"),
        ("SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS", "3600000"),
    ]);
    overrides.insert(
        ServiceKind::Budget,
        vec![("SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS".into(), "100".into())],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let buyer = shandong(21);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "x-1",
        &buyer,
        contract("X-1", &seller(1), 100_000_000),
    )
    .await;
    let claim = wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    let budget = stack.budget().await;
    eventually("the hold to expire", || {
        let mut budget = budget.clone();
        let reservation_id = claim.reservation_id.clone();
        async move {
            let reservation = budget
                .get_reservation(bpb::GetReservationRequest { reservation_id })
                .await
                .expect("read the reservation")
                .into_inner()
                .reservation
                .expect("a reservation");
            (reservation.state() == bpb::ReservationState::Expired).then_some(())
        }
    })
    .await;
    let mut seen = Seen::default();
    seen.refused(
        app.approve_claim(approve("x-approve", &claim.claim_id, 100_000_000))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "RESERVATION_EXPIRED",
        &["claim_id"],
    );
    assert_eq!(
        get_claim(&mut app, &claim.claim_id).await.state(),
        pb::ClaimState::Expired
    );
    stack.shutdown().await;
}
