//! The foundation: all four services spawn in-process, answer over gRPC, and carry one trace
//! across a call that crosses two services.

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
