//! Webhook subscriptions: creation with a secret shown once, listing, updates, idempotency by
//! request id, endpoint rules and filters.

mod support;

use base64::Engine as _;
use subsidy_proto::notification as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn subscriptions_are_created_listed_updated_and_replayed_by_request_id() {
    // Proves the secret is a Standard Webhooks secret shown only at creation, a replay returns
    // the same subscription and secret, a different request under the same id is refused, and
    // updates, manual disabling and paging work.
    let db = fresh_db("notify_subscriptions").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let request = pb::CreateSubscriptionRequest {
        request_id: "create-1".into(),
        endpoint_url: "https://agency.example.gov.cn/hooks".into(),
        event_types: vec![pb::EventType::ClaimApproved as i32],
        program_filter: pb::Program::ComputeVoucher as i32,
        description: "济南市工信局".into(),
        max_in_flight: 4,
        contact_email: "ops@agency.example.gov.cn".into(),
        ..Default::default()
    };
    let created = client
        .create_subscription(request.clone())
        .await
        .unwrap()
        .into_inner();
    let key = created
        .signing_secret
        .strip_prefix("whsec_")
        .expect("whsec_ prefix");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap()
            .len(),
        32
    );
    let subscription = created.subscription.clone().unwrap();
    assert_eq!(subscription.state(), pb::SubscriptionState::Active);
    assert_eq!(subscription.max_in_flight, 4);
    let replay = client
        .create_subscription(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, created, "a replay returns the original response");
    let status = client
        .create_subscription(pb::CreateSubscriptionRequest {
            description: "another".into(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));

    for i in 0..2 {
        subscribe(
            &mut client,
            &format!("https://agency{i}.example.gov.cn/h"),
            |_| {},
        )
        .await;
    }
    let first_page = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.subscriptions.len(), 2);
    assert_eq!(first_page.subscriptions[0], subscription, "oldest first");
    let second_page = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            page_size: 2,
            page_token: first_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.subscriptions.len(), 1);
    assert!(second_page.next_page_token.is_empty());

    let updated = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            request_id: "update-1".into(),
            subscription_id: subscription.subscription_id.clone(),
            subscription: Some(pb::Subscription {
                description: "青岛市工信局".into(),
                state: pb::SubscriptionState::Disabled as i32,
                endpoint_url: "https://ignored.example.org/".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description", "state"]),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(updated.description, "青岛市工信局");
    assert_eq!(updated.state(), pb::SubscriptionState::Disabled);
    assert_eq!(updated.disabled_reason(), pb::DisabledReason::Manual);
    assert_eq!(
        updated.endpoint_url, subscription.endpoint_url,
        "not in the mask"
    );
    let disabled = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            state: pb::SubscriptionState::Disabled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(disabled.len(), 1);
    let status = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            request_id: "update-2".into(),
            subscription_id: subscription.subscription_id.clone(),
            subscription: Some(pb::Subscription::default()),
            update_mask: mask(&["in_flight"]),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), vec!["update_mask".to_string()]);
    let status = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            request_id: "update-3".into(),
            subscription_id: "no-such-subscription".into(),
            subscription: Some(pb::Subscription::default()),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("SUBSCRIPTION_NOT_FOUND"));
    service.stop().await;
}

#[tokio::test]
async fn endpoints_must_be_https_unless_plain_http_is_allowed() {
    // Proves the endpoint rules: INVALID_ENDPOINT when the URL is the only problem, ordinary
    // field violations when there are others.
    let db = fresh_db("notify_endpoints").await;
    let service = Service::start(config(&db, |n| n.allow_http_endpoints = false)).await;
    let mut client = service.client.clone();
    for url in [
        "http://agency.example.org/hooks",
        "https://user:secret@agency.example.org/",
        "agency.example.org/hooks",
        "",
    ] {
        let status = client
            .create_subscription(pb::CreateSubscriptionRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                endpoint_url: url.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
        assert_eq!(
            reason(&status).as_deref(),
            Some("INVALID_ENDPOINT"),
            "{url}"
        );
        assert_eq!(violated_fields(&status), vec!["endpoint_url".to_string()]);
    }
    let status = client
        .create_subscription(pb::CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            endpoint_url: "http://agency.example.org/hooks".into(),
            max_in_flight: 65,
            contact_email: "not an address".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        vec!["contact_email", "endpoint_url", "max_in_flight"]
    );
    assert_eq!(count(&inspect(&db).await, "subscriptions").await, 0);
    service.stop().await;
}

#[tokio::test]
async fn only_events_matching_a_subscriptions_filters_are_delivered_to_it() {
    // Proves the type, program and enterprise filters decide which events get a delivery.
    let db = fresh_db("notify_filters").await;
    let receiver = Receiver::start(&[], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |r| {
        r.event_types = vec![pb::EventType::ClaimApproved as i32];
        r.program_filter = pb::Program::ComputeVoucher as i32;
        r.enterprise_uscc_filter = enterprise(1);
    })
    .await;
    publish(
        &mut client,
        event("match", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    publish(
        &mut client,
        event("other-type", pb::EventType::ClaimRejected, "app-1"),
    )
    .await;
    let mut other_enterprise = event("other-enterprise", pb::EventType::ClaimApproved, "app-2");
    other_enterprise.enterprise_uscc = enterprise(2);
    publish(&mut client, other_enterprise).await;
    let mut other_program = event("other-program", pb::EventType::ClaimApproved, "app-3");
    other_program.program = pb::Program::DataInfra as i32;
    publish(&mut client, other_program).await;
    delivery_in_state(
        &mut client,
        "match",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    for id in ["other-type", "other-enterprise", "other-program"] {
        assert!(deliveries_of(&mut client, id).await.is_empty(), "{id}");
    }
    assert_eq!(receiver.requests().len(), 1);
    let status = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: "no-such-delivery".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("DELIVERY_NOT_FOUND"));
    service.stop().await;
}
