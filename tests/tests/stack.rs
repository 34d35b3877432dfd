//! The foundation: all four services spawn in-process, answer over gRPC, and serve through
//! reflection everything a generic tool needs to decode their errors' details.

use subsidy_common::config::ServiceKind;

#[tokio::test]
async fn all_four_services_serve_health_reflection_and_their_own_api() {
    // Proves: every service is SERVING, lists itself in reflection, and answers its own RPCs.
    let stack = subsidy_tests::spawn().await;
    for kind in ServiceKind::ALL {
        let channel = stack.channel(kind).await;
        let services = reflection_services(channel.clone()).await;
        assert!(
            services.contains(&kind.grpc_name().to_string()),
            "{services:?}"
        );
        assert!(
            services.contains(&"grpc.health.v1.Health".to_string()),
            "{services:?}"
        );
    }

    let mut budget = subsidy_proto::budget::budget_service_client::BudgetServiceClient::new(
        stack.channel(ServiceKind::Budget).await,
    );
    let pools = budget
        .list_pools(subsidy_proto::budget::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = pools.pools.iter().map(|p| p.pool_id.as_str()).collect();
    assert_eq!(ids, ["compute-voucher-2025", "data-infra-2025"]);

    let mut rules = subsidy_proto::rules::rules_service_client::RulesServiceClient::new(
        stack.channel(ServiceKind::Rules).await,
    );
    let policies = rules
        .list_policies(subsidy_proto::rules::ListPoliciesRequest::default())
        .await
        .expect("the rules service lists its policies")
        .into_inner()
        .policies;
    let ids: Vec<_> = policies.iter().map(|p| p.policy_id.as_str()).collect();
    assert_eq!(
        ids,
        ["compute-voucher", "data-infra"],
        "the shipped policies"
    );

    let mut notification =
        subsidy_proto::notification::notification_service_client::NotificationServiceClient::new(
            stack.channel(ServiceKind::Notification).await,
        );
    let subscriptions = notification
        .list_subscriptions(subsidy_proto::notification::ListSubscriptionsRequest::default())
        .await
        .expect("the notification service lists its subscriptions")
        .into_inner();
    assert!(subscriptions.subscriptions.is_empty(), "{subscriptions:?}");

    let mut application =
        subsidy_proto::application::application_service_client::ApplicationServiceClient::new(
            stack.channel(ServiceKind::Application).await,
        );
    let enterprises = application
        .list_enterprises(subsidy_proto::application::ListEnterprisesRequest::default())
        .await
        .expect("the application lists its enterprises")
        .into_inner();
    assert!(enterprises.enterprises.is_empty(), "{enterprises:?}");
    stack.shutdown().await;
}

async fn reflection_services(channel: subsidy_testkit::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn a_generic_tool_decodes_error_details_from_what_reflection_serves_alone() {
    // Proves: every service's reflection serves the `google.rpc` error details and status with
    // their dependencies, and a descriptor pool built from those answers alone (as `buf curl`
    // or grpcurl builds one) decodes a real INVALID_ARGUMENT's `grpc-status-details-bin`: the
    // `Status`, its `ErrorInfo` reason and its `BadRequest` field violation.
    let stack = subsidy_tests::spawn().await;
    let mut application_pool = None;
    for kind in ServiceKind::ALL {
        let pool = reflected_pool(
            stack.channel(kind).await,
            &[
                "google.rpc.Status",
                "google.rpc.ErrorInfo",
                "google.rpc.BadRequest",
                "google.rpc.RetryInfo",
            ],
        )
        .await;
        for detail in ERROR_DETAILS {
            let message = pool
                .get_message_by_name(&format!("google.rpc.{detail}"))
                .unwrap_or_else(|| panic!("{kind:?} reflects google.rpc.{detail}"));
            assert_eq!(
                message.parent_file().name(),
                "google/rpc/error_details.proto"
            );
        }
        if kind == ServiceKind::Application {
            application_pool = Some(pool);
        }
    }
    let pool = application_pool.expect("the application was reflected");

    let refused = stack
        .app()
        .await
        .register_enterprise(subsidy_proto::application::RegisterEnterpriseRequest {
            request_id: "reflected-details".into(),
            uscc: "not a code".into(),
            name: "Reflected".into(),
            contact_email: "ops@example.cn".into(),
            ..Default::default()
        })
        .await
        .expect_err("a malformed USCC is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let status = decode(&pool, "google.rpc.Status", refused.details());
    assert_eq!(
        status.get_field_by_name("code").and_then(|c| c.as_i32()),
        Some(tonic::Code::InvalidArgument as i32)
    );
    let details = status.get_field_by_name("details").expect("details");
    let mut reasons = Vec::new();
    let mut violated_fields = Vec::new();
    for any in details.as_list().expect("a list of Any") {
        let any = any.as_message().expect("an Any");
        let type_url = any.get_field_by_name("type_url").expect("type_url");
        let type_name = type_url
            .as_str()
            .and_then(|url| url.strip_prefix("type.googleapis.com/"))
            .expect("a type.googleapis.com URL")
            .to_owned();
        let value = any.get_field_by_name("value").expect("value");
        let detail = decode(&pool, &type_name, value.as_bytes().expect("bytes"));
        match type_name.as_str() {
            "google.rpc.ErrorInfo" => {
                let text = |field: &str| {
                    let value = detail.get_field_by_name(field).expect(field);
                    value.as_str().expect("a string").to_owned()
                };
                assert_eq!(text("domain"), "subsidy.application");
                reasons.push(text("reason"));
            }
            "google.rpc.BadRequest" => {
                let violations = detail.get_field_by_name("field_violations").expect("list");
                for violation in violations.as_list().expect("a list") {
                    let violation = violation.as_message().expect("a FieldViolation");
                    let field = violation.get_field_by_name("field").expect("field");
                    violated_fields.push(field.as_str().expect("a string").to_owned());
                }
            }
            other => panic!("unexpected detail {other}"),
        }
    }
    assert_eq!(reasons, ["INVALID_ARGUMENT"], "exactly one ErrorInfo");
    assert_eq!(violated_fields, ["uscc"]);
    stack.shutdown().await;
}

/// Every message of googleapis' `google/rpc/error_details.proto`.
const ERROR_DETAILS: [&str; 10] = [
    "ErrorInfo",
    "RetryInfo",
    "DebugInfo",
    "QuotaFailure",
    "PreconditionFailure",
    "BadRequest",
    "RequestInfo",
    "ResourceInfo",
    "Help",
    "LocalizedMessage",
];

/// Decodes `bytes` as the message `name` of `pool`, as a tool without generated code does.
fn decode(
    pool: &prost_reflect::DescriptorPool,
    name: &str,
    bytes: &[u8],
) -> prost_reflect::DynamicMessage {
    let descriptor = pool
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("the reflected pool knows {name}"));
    prost_reflect::DynamicMessage::decode(descriptor, bytes)
        .unwrap_or_else(|error| panic!("{name} decodes: {error}"))
}

/// A descriptor pool built only from what the service's reflection answers: the files that
/// declare `symbols`, then every file they import, by name, as grpcurl walks them.
async fn reflected_pool(
    channel: subsidy_testkit::Channel,
    symbols: &[&str],
) -> prost_reflect::DescriptorPool {
    use prost::Message;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel);
    let mut asks: Vec<MessageRequest> = symbols
        .iter()
        .map(|symbol| MessageRequest::FileContainingSymbol((*symbol).to_owned()))
        .collect();
    let mut files = std::collections::BTreeMap::new();
    while let Some(ask) = asks.pop() {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(ask.clone()),
        };
        let mut stream = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection answers")
            .into_inner();
        let answer = stream.message().await.expect("a response").expect("one");
        let Some(MessageResponse::FileDescriptorResponse(found)) = answer.message_response else {
            panic!("reflection found nothing for {ask:?}: {answer:?}");
        };
        for encoded in found.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(encoded.as_slice())
                .expect("a FileDescriptorProto");
            for import in &file.dependency {
                if !files.contains_key(import) {
                    asks.push(MessageRequest::FileByFilename(import.clone()));
                }
            }
            files.insert(file.name().to_owned(), file);
        }
    }
    prost_reflect::DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
        file: files.into_values().collect(),
    })
    .expect("the reflected files form a complete pool")
}
