//! Every documented error reason of every service, provoked through the real four services and
//! checked as a caller decodes it: the canonical code, exactly one `ErrorInfo` with the
//! service's domain and the reason, and exactly the `ErrorInfo.metadata` keys the proto
//! documents for it. The reasons, their codes and their keys are read from the proto headers
//! (the services' own, and `access.proto` for the access layer's `subsidy.auth` and the
//! server's `subsidy.server` reasons), so a reason documented but never provoked here (and not
//! named in [`NOT_PROVOKED_HERE`] with where it is tested), provoked but not documented, or
//! answering other keys than its documented ones, fails the test.

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

mod catalogue;
mod faults;
mod front;
mod invoices;
mod publicity;

use catalogue::*;
use faults::*;
use front::*;
use publicity::*;

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
    );
    seen.refused(
        budget.create_pool(pool("rp-2", "reasons")).await,
        Code::AlreadyExists,
        BUDGET,
        "POOL_ALREADY_EXISTS",
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
    );
    budget.reserve(reserve("rr-4", 4, 25_000)).await.unwrap();
    seen.refused(
        budget.reserve(reserve("rr-none", 5, 1)).await,
        Code::FailedPrecondition,
        BUDGET,
        "POOL_EXHAUSTED",
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
    );
    seen.refused(
        budget
            .revoke_commitment(bpb::RevokeCommitmentRequest {
                request_id: "rv-released".into(),
                reservation_id: held[1].clone(),
                reason: "objection upheld".into(),
            })
            .await,
        Code::FailedPrecondition,
        BUDGET,
        "RESERVATION_NOT_COMMITTED",
    );
    seen.refused(
        budget.reserve(reserve("rr-1", 1, 24_000)).await,
        Code::AlreadyExists,
        BUDGET,
        "REQUEST_ID_REUSED",
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
    );
    seen.refused(
        rules
            .get_decision(rpb::GetDecisionRequest {
                decision_id: uuid::Uuid::now_v7().to_string(),
            })
            .await,
        Code::NotFound,
        RULES,
        "DECISION_NOT_FOUND",
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
    );
    let mut other = later;
    other.description = "another text under the same request".into();
    seen.refused(
        rules.publish_policy(publish("pp-later", other)).await,
        Code::AlreadyExists,
        RULES,
        "REQUEST_ID_REUSED",
    );
    provider_reasons(&mut rules, seen).await;
}

/// The registry's refusals: a provider registered twice, unknown, changed to the status it has,
/// or changed with a date before its current status.
async fn provider_reasons(rules: &mut RulesServiceClient<Channel>, seen: &mut Seen) {
    let day = |month: i32, day: i32| {
        Some(Date {
            year: 2025,
            month,
            day,
        })
    };
    let registration = |request_id: &str| rpb::RegisterProviderRequest {
        request_id: request_id.into(),
        uscc: seller(60).to_string(),
        name: "reasons provider".into(),
        effective_date: day(3, 1),
        reason: "admitted".into(),
        data_centers: vec![rpb::DataCenter {
            name: "济南智算中心".into(),
            division_code: "370102".into(),
            capacity_pflops: "10".into(),
            status: rpb::DataCenterStatus::InService as i32,
        }],
    };
    rules
        .register_provider(registration("prov-1"))
        .await
        .expect("register a provider");
    seen.refused(
        rules.register_provider(registration("prov-2")).await,
        Code::AlreadyExists,
        RULES,
        "PROVIDER_EXISTS",
    );
    seen.refused(
        rules
            .get_provider(rpb::GetProviderRequest {
                uscc: seller(61).to_string(),
            })
            .await,
        Code::NotFound,
        RULES,
        "PROVIDER_NOT_FOUND",
    );
    let change = |request_id: &str, status: rpb::ProviderStatus, month: i32| {
        rpb::UpdateProviderStatusRequest {
            request_id: request_id.into(),
            uscc: seller(60).to_string(),
            status: status as i32,
            effective_date: day(month, 1),
            reason: "inspection".into(),
        }
    };
    seen.refused(
        rules
            .update_provider_status(change("prov-3", rpb::ProviderStatus::Admitted, 6))
            .await,
        Code::FailedPrecondition,
        RULES,
        "PROVIDER_STATUS_UNCHANGED",
    );
    seen.refused(
        rules
            .update_provider_status(change("prov-4", rpb::ProviderStatus::Suspended, 1))
            .await,
        Code::FailedPrecondition,
        RULES,
        "PROVIDER_STATUS_DATE_OUT_OF_ORDER",
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
    );
    seen.refused(
        notes
            .create_subscription(subscription("ns-ftp", "ftp://agency.example.cn/hooks", "x"))
            .await,
        Code::InvalidArgument,
        NOTIFICATION,
        "INVALID_ENDPOINT",
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
    );
    bad.request_id = "reg-again".into();
    bad.uscc = first.to_string();
    seen.refused(
        app.register_enterprise(bad).await,
        Code::AlreadyExists,
        APPLICATION,
        "ENTERPRISE_ALREADY_REGISTERED",
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
    );
    seen.refused(
        app.get_claim(pb::GetClaimRequest {
            claim_id: "no-such-claim".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "CLAIM_NOT_FOUND",
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
    );
    invoices::invoice_reasons(&mut app, &claim, &first, seen).await;
    seen.refused(
        approve_claim(&app, approve("a-tiny", &claim.claim_id, 1)).await,
        Code::FailedPrecondition,
        APPLICATION,
        "NOT_ELIGIBLE_ON_RECHECK",
    );
    seen.refused(
        approve_claim(&app, approve("a-over", &claim.claim_id, 100_000_001)).await,
        Code::InvalidArgument,
        APPLICATION,
        "VERIFIED_AMOUNT_MISMATCH",
    );
    app.reject_claim(reject("rej-1", &claim.claim_id))
        .await
        .unwrap();
    seen.refused_with(
        approve_claim(&app, approve("a-late", &claim.claim_id, 100_000_000)).await,
        Code::FailedPrecondition,
        APPLICATION,
        "TRANSITION_NOT_ALLOWED",
        &["claim_id"],
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
    );
    seen.refused(
        app.get_selection_round(pb::GetSelectionRoundRequest {
            round_id: "no-such-round".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "ROUND_NOT_FOUND",
    );
    seen.refused(
        app.get_proposal(pb::GetProposalRequest {
            proposal_id: "no-such-proposal".into(),
        })
        .await,
        Code::NotFound,
        APPLICATION,
        "PROPOSAL_NOT_FOUND",
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
    );

    ended_publicity_reasons(&mut app, &first, seen).await;

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
    );
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
    let certificates = tempfile::tempdir().expect("a directory for certificates");
    second_stack_front_overrides(&mut overrides, certificates.path());
    let stack = subsidy_tests::spawn_with(overrides).await;
    second_stack_front_reasons(&stack, certificates.path(), seen).await;
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
    front_reasons(&stack, &mut seen).await;
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
    open_publicity_reasons(&mut seen).await;

    let documented_reasons: BTreeSet<(String, String)> = catalogue().keys().cloned().collect();
    for domain in [APPLICATION, RULES, BUDGET, NOTIFICATION, AUTH, SERVER] {
        let count = documented_reasons
            .iter()
            .filter(|(of, _)| of == domain)
            .count();
        assert!(count >= 4, "{domain}: {count} reasons documented");
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
        // No extension: the hold is to lapse.
        ("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "0"),
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
        approve_claim(&app, approve("x-approve", &claim.claim_id, 100_000_000)).await,
        Code::FailedPrecondition,
        APPLICATION,
        "RESERVATION_EXPIRED",
    );
    assert_eq!(
        get_claim(&mut app, &claim.claim_id).await.state(),
        pb::ClaimState::Expired
    );
    stack.shutdown().await;
}
