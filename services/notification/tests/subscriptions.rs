//! Webhook subscriptions: creation with a secret shown once (and stored encrypted), listing,
//! updates, idempotency by request id, endpoint rules (internal addresses refused unless
//! allowed) and filters.

mod support;

use base64::Engine as _;
use sqlx::Row;
use subsidy_notification::domain::subscription::PLAIN_HTTP_REFUSED;
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
    // the same subscription without the secret, a different request under the same id is
    // refused, and updates, manual disabling and paging work.
    let db = fresh_db("notify_subscriptions").await;
    // The agencies' hosts do not resolve here: the operator lists them (a listed name is not
    // looked up).
    let service = Service::start(config(&db, |n| {
        n.webhook_allowed_hosts.extend(
            [
                "agency.example.gov.cn",
                "agency0.example.gov.cn",
                "agency1.example.gov.cn",
            ]
            .map(String::from),
        )
    }))
    .await;
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
    assert_eq!(
        replay,
        pb::CreateSubscriptionResponse {
            signing_secret: String::new(),
            ..created.clone()
        },
        "a replay returns the original response without the secret, which is shown once"
    );
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
    // Proves the endpoint rules: INVALID_ENDPOINT when the URL is the only problem (naming the
    // setting that allows plain http when that is the problem), ordinary field violations when
    // there are others.
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
        if url.starts_with("http://") {
            // The caller is told which setting allows plain http (its names are checked
            // against the setting's declaration in the settings' unit tests).
            assert!(status.message().contains(PLAIN_HTTP_REFUSED), "{status:?}");
        }
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

#[tokio::test]
async fn internal_endpoints_are_refused_unless_the_operator_allows_them() {
    // Proves an endpoint that is, or resolves to, a loopback, link-local (metadata), shared
    // (Alibaba Cloud metadata), private or unique-local address, also inside IPv6 (mapped,
    // NAT64), or a host that does not resolve, is INVALID_ENDPOINT on the URL field with the
    // setting that allows it named, at creation and when an update changes the endpoint; and
    // that the allow-list naming 127.0.0.1 lets the same endpoint in.
    let db = fresh_db("notify_internal_endpoints").await;
    let receiver = Receiver::start(&[], 200).await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let loopback = format!("https://127.0.0.1:{port}/hooks/subsidy");
    let service = Service::start(config(&db, |n| n.webhook_allowed_hosts.clear())).await;
    let mut client = service.client.clone();
    for url in [
        loopback.as_str(),
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "https://10.0.0.8/hooks",
        "https://[::1]:8443/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://[64:ff9b::a9fe:a9fe]/hooks",
        "https://[fd00:ec2::254]/hooks",
        "http://localhost:8080/hooks",
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
        assert!(
            status.message().contains("not allowed")
                && status
                    .message()
                    .contains("notification.webhook_allowed_hosts"),
            "{url}: {}",
            status.message()
        );
    }
    let status = client
        .create_subscription(pb::CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            endpoint_url: "https://no-such-host.invalid/hooks".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ENDPOINT"));
    assert_eq!(violated_fields(&status), vec!["endpoint_url".to_string()]);
    assert!(
        status.message().contains("does not resolve"),
        "{}",
        status.message()
    );
    assert_eq!(count(&inspect(&db).await, "subscriptions").await, 0);
    service.stop().await;

    // The operator lists the receiver's address: the same endpoint is accepted.
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let (subscription, secret) = subscribe(&mut client, &loopback, |_| {}).await;
    assert_eq!(subscription.endpoint_url, loopback);
    assert!(secret.starts_with("whsec_"));
    let status = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            request_id: "to-metadata".into(),
            subscription_id: subscription.subscription_id.clone(),
            subscription: Some(pb::Subscription {
                endpoint_url: "http://169.254.169.254/latest/meta-data/".into(),
                ..Default::default()
            }),
            update_mask: mask(&["endpoint_url"]),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ENDPOINT"));
    assert_eq!(
        violated_fields(&status),
        vec!["subscription.endpoint_url".to_string()]
    );
    assert!(
        status.message().contains("not allowed"),
        "{}",
        status.message()
    );
    let unchanged = client
        .get_subscription(pb::GetSubscriptionRequest {
            subscription_id: subscription.subscription_id,
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(unchanged.endpoint_url, loopback);
    service.stop().await;
}

#[tokio::test]
async fn signing_secrets_are_stored_encrypted_and_shown_once() {
    // Proves the row holds each secret sealed (`v1:`, no plaintext), that neither the row nor
    // the stored replies of CreateSubscription and RotateSubscriptionSecret hold a secret, and
    // that a replay of either answers the subscription without the secret.
    let db = fresh_db("notify_sealed_secrets").await;
    let receiver = Receiver::start(&[], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let create = pb::CreateSubscriptionRequest {
        request_id: "create-sealed".into(),
        endpoint_url: receiver.url.clone(),
        ..Default::default()
    };
    let created = client
        .create_subscription(create.clone())
        .await
        .unwrap()
        .into_inner();
    let first = created.signing_secret.clone();
    assert!(first.starts_with("whsec_"));
    let replay = client
        .create_subscription(create)
        .await
        .unwrap()
        .into_inner();
    assert!(replay.signing_secret.is_empty(), "the secret is shown once");
    assert_eq!(replay.subscription, created.subscription);
    let subscription_id = created.subscription.unwrap().subscription_id;

    let rotate = pb::RotateSubscriptionSecretRequest {
        request_id: "rotate-sealed".into(),
        subscription_id: subscription_id.clone(),
        grace_period_seconds: 0,
    };
    let rotated = client
        .rotate_subscription_secret(rotate.clone())
        .await
        .unwrap()
        .into_inner();
    let second = rotated.signing_secret.clone();
    assert!(second.starts_with("whsec_"));
    let replay = client
        .rotate_subscription_secret(rotate)
        .await
        .unwrap()
        .into_inner();
    assert!(replay.signing_secret.is_empty(), "the secret is shown once");
    assert_eq!(replay.subscription, rotated.subscription);

    let observer = inspect(&db).await;
    let (current, previous) = stored_secrets(&observer, &subscription_id).await;
    let previous = previous.expect("the previous secret is kept for its grace period");
    for stored in [&current, &previous] {
        assert!(stored.starts_with("v1:"), "sealed: {stored}");
        for secret in [&first, &second] {
            let key = secret.trim_start_matches("whsec_");
            assert!(!stored.contains(key), "no plaintext in the row");
        }
    }
    assert_ne!(current, previous);
    let replies =
        subsidy_testkit::query_rows(&observer, "SELECT response FROM idempotency_keys", &[]).await;
    assert!(replies.len() >= 2);
    for row in replies {
        let reply: Option<Vec<u8>> = row.get("response");
        let reply = reply.unwrap_or_default();
        for secret in [&first, &second] {
            let key = secret.trim_start_matches("whsec_").as_bytes();
            assert!(
                !reply.windows(key.len()).any(|window| window == key),
                "no secret in a stored reply"
            );
        }
    }
    service.stop().await;
}
