//! Webhook delivery against real local receivers: retries on the schedule, signatures checked
//! by the `standardwebhooks` package, order per application, the in-flight limit, dead letters
//! and redelivery, disabling a failing endpoint; outbound safety: endpoints no longer allowed
//! are not contacted, redirects are not followed, secrets stored in plaintext by an earlier
//! version are encrypted at start, and a wrong key fails deliveries, not the worker.

mod support;

use std::time::Duration;

use subsidy_proto::notification as pb;
use subsidy_proto::status::reason;
use support::*;
use tonic::Code;

#[tokio::test]
async fn a_failing_receiver_gets_exactly_the_scheduled_retries_then_the_delivery_succeeds() {
    // Proves a receiver failing three times gets exactly four attempts (the schedule has
    // room for them), the last one succeeds, and the log records each status and latency.
    let db = fresh_db("notify_retries").await;
    let receiver = Receiver::start(&[503, 503, 500], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let (subscription, _) = subscribe(&mut client, &receiver.url, |_| {}).await;

    publish(
        &mut client,
        event("evt-retry", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let delivery = delivery_in_state(
        &mut client,
        "evt-retry",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;

    let requests = receiver.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 500, 200],
        "exactly the expected retries, then delivered"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.headers["webhook-id"] == "evt-retry"),
        "every attempt carries the event id as webhook-id"
    );
    assert_eq!(requests[3].body["type"], "claim.approved");
    assert_eq!(requests[3].body["data"]["amount"]["value"], "12345.67");
    assert_eq!(delivery.subscription_id, subscription.subscription_id);
    assert_eq!(delivery.attempt_count, 4);
    assert_eq!(delivery.last_status_code, 200);
    assert!(delivery.next_attempt_time.is_none());
    assert!(delivery.deliver_time.is_some());
    let full = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: delivery.delivery_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let attempts: Vec<(i32, i32, bool)> = full
        .attempts
        .iter()
        .map(|a| (a.attempt_number, a.http_status_code, a.succeeded))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, 503, false),
            (2, 503, false),
            (3, 500, false),
            (4, 200, true)
        ]
    );
    assert!(
        full.attempts
            .iter()
            .all(|a| a.latency_ms >= 0 && a.start_time.is_some())
    );
    assert_eq!(full.attempts[0].error, "HTTP 503");
    let subscription = client
        .get_subscription(pb::GetSubscriptionRequest {
            subscription_id: subscription.subscription_id,
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert!(
        subscription.failing_since_time.is_none(),
        "a success ends the failure run"
    );
    assert_in_flight_counters(&inspect(&db).await).await;
    service.stop().await;
}

#[tokio::test]
async fn signatures_verify_with_the_standardwebhooks_library() {
    // Proves an independent implementation (the `standardwebhooks` package from PyPI) accepts
    // our signatures and rejects a tampered body, and that the trace context is sent on.
    let db = fresh_db("notify_signatures").await;
    let mut verifier = Python::start("verify_webhooks.py", &[]).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let url = format!("http://127.0.0.1:{}/webhook", verifier.port);
    let (_, secret) = subscribe(&mut client, &url, |_| {}).await;
    assert!(secret.starts_with("whsec_"));
    verifier.send_line(&secret).await;
    assert_eq!(verifier.next().await["secrets"], 1);

    let mut traced = event("evt-signed", pb::EventType::ClaimSubmitted, "app-7");
    traced.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    traced
        .payload
        .get_or_insert_with(Default::default)
        .fields
        .insert(
            "note".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("审核中 ✓".into())),
            },
        );
    publish(&mut client, traced).await;
    let report = verifier.next().await;
    assert_eq!(report["webhook_id"], "evt-signed");
    assert_eq!(report["verified_with"], serde_json::json!([0]));
    assert_eq!(report["tamper_rejected"], true);
    assert_eq!(report["payload"]["data"]["payload"]["note"], "审核中 ✓");
    delivery_in_state(
        &mut client,
        "evt-signed",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    service.stop().await;
}

#[tokio::test]
async fn after_a_rotation_deliveries_are_signed_with_both_secrets_until_the_next_rotation() {
    // Proves the previous secret keeps verifying during its grace period, and that a second
    // rotation drops the secret still in grace at once.
    let db = fresh_db("notify_rotation").await;
    let mut verifier = Python::start("verify_webhooks.py", &[]).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let url = format!("http://127.0.0.1:{}/webhook", verifier.port);
    let (subscription, first) = subscribe(&mut client, &url, |_| {}).await;
    let rotate = |request_id: &str| pb::RotateSubscriptionSecretRequest {
        request_id: request_id.into(),
        subscription_id: subscription.subscription_id.clone(),
        grace_period_seconds: 0,
    };
    let rotated = client
        .rotate_subscription_secret(rotate("rot-1"))
        .await
        .unwrap()
        .into_inner();
    let second = rotated.signing_secret.clone();
    assert_ne!(second, first);
    let expires = rotated
        .subscription
        .clone()
        .unwrap()
        .previous_secret_expire_time
        .expect("the previous secret has a grace period");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (expires.seconds - now - 24 * 3600).abs() < 120,
        "24 hours by default"
    );
    let replay = client
        .rotate_subscription_secret(rotate("rot-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay,
        pb::RotateSubscriptionSecretResponse {
            signing_secret: String::new(),
            ..rotated
        },
        "a replay returns the original response without the secret, which is shown once"
    );
    for secret in [&first, &second] {
        verifier.send_line(secret).await;
        verifier.next().await;
    }
    publish(
        &mut client,
        event("evt-both", pb::EventType::ClaimReserved, "app-1"),
    )
    .await;
    let report = verifier.next().await;
    assert_eq!(report["webhook_id"], "evt-both");
    assert_eq!(report["verified_with"], serde_json::json!([0, 1]));

    let third = client
        .rotate_subscription_secret(rotate("rot-2"))
        .await
        .unwrap()
        .into_inner()
        .signing_secret;
    verifier.send_line(&third).await;
    verifier.next().await;
    publish(
        &mut client,
        event("evt-after", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let report = verifier.next().await;
    assert_eq!(report["webhook_id"], "evt-after");
    assert_eq!(
        report["verified_with"],
        serde_json::json!([1, 2]),
        "the first secret no longer verifies; the second (in grace) and the third do"
    );
    service.stop().await;
}

#[tokio::test]
async fn deliveries_for_one_application_arrive_in_publication_order() {
    // Proves a retried delivery holds back the later deliveries of its application (and only
    // those): the receiver sees A1, A1 again, A2, A3 in that order, while B1 goes through
    // during A1's retry delay.
    let db = fresh_db("notify_order").await;
    let receiver = Receiver::start(&[503], 200).await;
    let service = Service::start(config(&db, |n| n.retry_schedule_ms = vec![0, 2_000])).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;

    publish(
        &mut client,
        event("a1", pb::EventType::ClaimSubmitted, "app-a"),
    )
    .await;
    eventually("the first attempt of a1", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    publish(
        &mut client,
        event("a2", pb::EventType::ClaimReserved, "app-a"),
    )
    .await;
    publish(
        &mut client,
        event("a3", pb::EventType::ClaimApproved, "app-a"),
    )
    .await;
    publish(
        &mut client,
        event("b1", pb::EventType::ClaimSubmitted, "app-b"),
    )
    .await;
    for id in ["a1", "a2", "a3", "b1"] {
        delivery_in_state(
            &mut client,
            id,
            pb::Channel::Webhook,
            pb::DeliveryState::Delivered,
        )
        .await;
    }
    let order: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    let app_a: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|id| id.starts_with('a'))
        .collect();
    assert_eq!(app_a, vec!["a1", "a1", "a2", "a3"], "{order:?}");
    let b1 = order.iter().position(|id| id == "b1").unwrap();
    let a1_retry = order.iter().rposition(|id| id == "a1").unwrap();
    assert!(
        b1 < a1_retry,
        "another application is not held back by a1's retry: {order:?}"
    );
    service.stop().await;
}

#[tokio::test]
async fn at_most_max_in_flight_deliveries_are_attempted_at_once_and_a_slow_endpoint_starves_no_other()
 {
    // Proves the per-subscription limit holds under load (the receiver never sees more than
    // two requests at once) and that a fast subscription is served in full while the slow
    // one still works through its queue.
    let db = fresh_db("notify_in_flight").await;
    let slow = Receiver::start(&[], 200).await;
    slow.hold(Some(Duration::from_millis(400)));
    let fast = Receiver::start(&[], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let (slow_subscription, _) = subscribe(&mut client, &slow.url, |r| r.max_in_flight = 2).await;
    subscribe(&mut client, &fast.url, |_| {}).await;
    const EVENTS: usize = 8;
    for i in 0..EVENTS {
        publish(
            &mut client,
            event(
                &format!("load-{i}"),
                pb::EventType::ClaimSubmitted,
                &format!("app-{i}"),
            ),
        )
        .await;
    }
    eventually("the fast receiver got every event", || async {
        (fast.requests().len() == EVENTS).then_some(())
    })
    .await;
    assert!(
        slow.requests().len() < EVENTS,
        "the slow endpoint is still working through its queue"
    );
    let observer = inspect(&db).await;
    eventually("the slow receiver got every event", || async {
        assert_in_flight_counters(&observer).await;
        (slow.requests().len() == EVENTS).then_some(())
    })
    .await;
    assert_eq!(slow.max_in_flight(), 2, "two at once, never more");
    let delivered = client
        .list_deliveries(pb::ListDeliveriesRequest {
            subscription_id: slow_subscription.subscription_id.clone(),
            state: pb::DeliveryState::Delivered as i32,
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        delivered.deliveries.len(),
        3,
        "pages hold page_size deliveries"
    );
    assert!(!delivered.next_page_token.is_empty());
    service.stop().await;
}

#[tokio::test]
async fn after_the_last_attempt_a_delivery_is_dead_lettered_and_can_be_redelivered() {
    // Proves the schedule ends in a dead letter, that RedeliverDeadLetters (idempotently)
    // requeues it with a fresh schedule, and that RedeliverEvent delivers a delivered event
    // again.
    let db = fresh_db("notify_dead_letter").await;
    let receiver = Receiver::start(&[], 500).await;
    let service = Service::start(config(&db, |n| n.retry_schedule_ms = vec![0, 50, 50])).await;
    let mut client = service.client.clone();
    let (subscription, _) = subscribe(&mut client, &receiver.url, |_| {}).await;
    publish(
        &mut client,
        event("evt-dead", pb::EventType::ClaimRejected, "app-1"),
    )
    .await;
    let dead = delivery_in_state(
        &mut client,
        "evt-dead",
        pb::Channel::Webhook,
        pb::DeliveryState::DeadLettered,
    )
    .await;
    assert_eq!(dead.attempt_count, 3);
    assert_eq!(receiver.requests().len(), 3, "no attempt after the last");
    assert_eq!(dead.last_error, "HTTP 500");

    receiver.answer(200);
    let request = pb::RedeliverDeadLettersRequest {
        request_id: "redo-1".into(),
        subscription_id: subscription.subscription_id.clone(),
    };
    let requeued = client
        .redeliver_dead_letters(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(requeued.requeued_count, 1);
    let delivered = delivery_in_state(
        &mut client,
        "evt-dead",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(delivered.attempt_count, 4);
    assert_eq!(delivered.redelivery_count, 1);
    let replay = client
        .redeliver_dead_letters(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replay.requeued_count, 1,
        "a replay answers as the first time"
    );

    let again = client
        .redeliver_event(pb::RedeliverEventRequest {
            request_id: "redo-2".into(),
            event_id: "evt-dead".into(),
            subscription_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.deliveries.len(), 1);
    assert_eq!(again.deliveries[0].state(), pb::DeliveryState::Pending);
    eventually("the redelivered event arrives", || async {
        (receiver.requests().len() == 5).then_some(())
    })
    .await;
    let delivered = delivery_in_state(
        &mut client,
        "evt-dead",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(delivered.redelivery_count, 2);

    let status = client
        .redeliver_event(pb::RedeliverEventRequest {
            request_id: "redo-3".into(),
            event_id: "no-such-event".into(),
            subscription_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("EVENT_NOT_FOUND"));
    service.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_the_configured_period_is_disabled_and_its_owner_emailed() {
    // Proves a subscription whose endpoint fails every attempt for longer than the configured
    // period is disabled with reason ENDPOINT_FAILING, its delivery dead-lettered, its contact
    // told through the relay, and that it receives nothing more until redelivered.
    let db = fresh_db("notify_disable").await;
    let mut relay = Python::start("smtp_sink.py", &[]).await;
    let receiver = Receiver::start(&[], 503).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", relay.port);
    let service = Service::start(config(&db, |n| {
        n.retry_schedule_ms = vec![0, 400, 400, 400, 400, 400, 400, 400];
        n.disable_after_ms = 1_000;
        n.smtp_url = smtp_url;
    }))
    .await;
    let mut client = service.client.clone();
    let (subscription, _) = subscribe(&mut client, &receiver.url, |r| {
        r.contact_email = "ops@agency.example.org".into();
    })
    .await;
    publish(
        &mut client,
        event("evt-down", pb::EventType::ClaimSubmitted, "app-1"),
    )
    .await;

    let disabled = eventually("the subscription is disabled", || {
        let mut client = client.clone();
        let id = subscription.subscription_id.clone();
        async move {
            let s = client
                .get_subscription(pb::GetSubscriptionRequest {
                    subscription_id: id,
                })
                .await
                .unwrap()
                .into_inner()
                .subscription
                .unwrap();
            (s.state() == pb::SubscriptionState::Disabled).then_some(s)
        }
    })
    .await;
    assert_eq!(
        disabled.disabled_reason(),
        pb::DisabledReason::EndpointFailing
    );
    assert!(disabled.disable_time.is_some());
    let dead = delivery_in_state(
        &mut client,
        "evt-down",
        pb::Channel::Webhook,
        pb::DeliveryState::DeadLettered,
    )
    .await;
    assert!(
        (3..8).contains(&dead.attempt_count),
        "disabled before the schedule ran out: {}",
        dead.attempt_count
    );
    let mail = relay.next().await;
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["ops@agency.example.org"])
    );
    let subject = mail["subject"].as_str().unwrap();
    assert!(subject.contains(&subscription.subscription_id), "{subject}");
    assert!(subject.contains("已停用"), "{subject}");
    let origin = receiver.url.trim_end_matches("/hooks/subsidy");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains(origin), "{body}");
    assert!(
        !body.contains("/hooks/subsidy"),
        "no path or query in the notice: {body}"
    );

    let attempts_before = receiver.requests().len();
    publish(
        &mut client,
        event("evt-later", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let later = deliveries_of(&mut client, "evt-later").await;
    assert!(
        later.is_empty(),
        "a disabled subscription gets no new deliveries"
    );
    let status = client
        .redeliver_dead_letters(pb::RedeliverDeadLettersRequest {
            request_id: "redo-disabled".into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("SUBSCRIPTION_DISABLED"));

    // Enabled again: the dead letter and the missed event are delivered by hand.
    receiver.answer(200);
    client
        .update_subscription(pb::UpdateSubscriptionRequest {
            request_id: "enable".into(),
            subscription_id: subscription.subscription_id.clone(),
            subscription: Some(pb::Subscription {
                state: pb::SubscriptionState::Active as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap();
    client
        .redeliver_dead_letters(pb::RedeliverDeadLettersRequest {
            request_id: "redo-enabled".into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .unwrap();
    let created = client
        .redeliver_event(pb::RedeliverEventRequest {
            request_id: "redo-missed".into(),
            event_id: "evt-later".into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.deliveries.len(),
        1,
        "a delivery is created for the missed event"
    );
    for id in ["evt-down", "evt-later"] {
        delivery_in_state(
            &mut client,
            id,
            pb::Channel::Webhook,
            pb::DeliveryState::Delivered,
        )
        .await;
    }
    assert_eq!(receiver.requests().len(), attempts_before + 2);
    service.stop().await;
}

#[tokio::test]
async fn deleting_a_subscription_cancels_its_unfinished_deliveries_and_keeps_the_log() {
    // Proves a delete cancels what is still to be delivered, is idempotent, and leaves the
    // delivery log readable.
    let db = fresh_db("notify_delete").await;
    let receiver = Receiver::start(&[], 503).await;
    let service = Service::start(config(&db, |n| n.retry_schedule_ms = vec![0, 60_000])).await;
    let mut client = service.client.clone();
    let (subscription, _) = subscribe(&mut client, &receiver.url, |_| {}).await;
    publish(
        &mut client,
        event("evt-cancel", pb::EventType::ClaimSubmitted, "app-1"),
    )
    .await;
    delivery_in_state(
        &mut client,
        "evt-cancel",
        pb::Channel::Webhook,
        pb::DeliveryState::FailedRetrying,
    )
    .await;
    let request = pb::DeleteSubscriptionRequest {
        request_id: "delete-1".into(),
        subscription_id: subscription.subscription_id.clone(),
    };
    let deleted = client
        .delete_subscription(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.cancelled_delivery_count, 1);
    let replay = client
        .delete_subscription(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.cancelled_delivery_count, 1);
    let cancelled = delivery_in_state(
        &mut client,
        "evt-cancel",
        pb::Channel::Webhook,
        pb::DeliveryState::Cancelled,
    )
    .await;
    assert_eq!(cancelled.attempt_count, 1, "the log is kept");
    let status = client
        .get_subscription(pb::GetSubscriptionRequest {
            subscription_id: subscription.subscription_id,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("SUBSCRIPTION_NOT_FOUND"));
    service.stop().await;
}

#[tokio::test]
async fn an_endpoint_no_longer_allowed_is_not_contacted_at_delivery_time() {
    // Proves the address is checked again when a delivery connects: subscriptions made while
    // the operator allowed 127.0.0.1 and `localhost` get nothing once the allow-list is
    // emptied, both for an IP address (checked before the request) and for a name (refused by
    // the resolver); each attempt fails like an unreachable endpoint, with the refusal
    // recorded, and the delivery is dead-lettered on the schedule.
    let db = fresh_db("notify_refused_at_delivery").await;
    let receiver = Receiver::start(&[], 200).await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let service = Service::start(config(&db, |n| {
        n.webhook_allowed_hosts.push("localhost".into())
    }))
    .await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    subscribe(&mut client, &by_name, |_| {}).await;
    service.stop().await;

    let service = Service::start(config(&db, |n| {
        n.webhook_allowed_hosts.clear();
        n.retry_schedule_ms = vec![0, 50];
    }))
    .await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        event("evt-refused", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let dead = eventually("both deliveries are dead-lettered", || {
        let mut client = client.clone();
        async move {
            let deliveries = deliveries_of(&mut client, "evt-refused").await;
            (deliveries.len() == 2
                && deliveries
                    .iter()
                    .all(|d| d.state() == pb::DeliveryState::DeadLettered))
            .then_some(deliveries)
        }
    })
    .await;
    for delivery in &dead {
        assert_eq!(delivery.attempt_count, 2);
        assert_eq!(delivery.last_status_code, 0);
        assert!(
            delivery.last_error.contains("not allowed")
                && delivery
                    .last_error
                    .contains("notification.webhook_allowed_hosts"),
            "{}",
            delivery.last_error
        );
    }
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the receiver"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_its_location_is_not_fetched() {
    // Proves the client does not follow redirects: a 302 is recorded as a failure with its
    // status, and the receiver never sees a request for the Location it named.
    let db = fresh_db("notify_redirect").await;
    let receiver = Receiver::start(&[302], 200).await;
    let service = Service::start(config(&db, |n| n.retry_schedule_ms = vec![0])).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    publish(
        &mut client,
        event("evt-redirect", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let dead = delivery_in_state(
        &mut client,
        "evt-redirect",
        pb::Channel::Webhook,
        pb::DeliveryState::DeadLettered,
    )
    .await;
    assert_eq!(dead.attempt_count, 1);
    assert_eq!(dead.last_status_code, 302);
    assert_eq!(dead.last_error, "HTTP 302");
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        1,
        "one attempt, no request for the Location"
    );
    assert_eq!(requests[0].path, "/hooks/subsidy");
    assert!(requests.iter().all(|r| r.path != REDIRECT_PATH));
    service.stop().await;
}

#[tokio::test]
async fn plaintext_secrets_are_encrypted_at_start_and_a_wrong_key_fails_deliveries_only() {
    // Proves the start-up pass seals a secret an earlier version stored in plaintext, in
    // place, and deliveries are still signed with it (checked by `standardwebhooks`); and that
    // with another key the secret does not open: the attempt fails with that reason and is
    // retried on the schedule, nothing is sent, and the service keeps running.
    let db = fresh_db("notify_seal_at_start").await;
    let mut verifier = Python::start("verify_webhooks.py", &[]).await;
    let url = format!("http://127.0.0.1:{}/webhook", verifier.port);
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let (subscription, _) = subscribe(&mut client, &url, |_| {}).await;
    service.stop().await;

    let legacy = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let observer = inspect(&db).await;
    plant_plaintext_secret(&observer, &subscription.subscription_id, legacy).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    // Serving means the start-up pass is done.
    client
        .get_subscription(pb::GetSubscriptionRequest {
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .unwrap();
    let (sealed, _) = stored_secrets(&observer, &subscription.subscription_id).await;
    assert!(sealed.starts_with("v1:"), "sealed at start: {sealed}");
    assert!(!sealed.contains(legacy.trim_start_matches("whsec_")));
    verifier.send_line(legacy).await;
    assert_eq!(verifier.next().await["secrets"], 1);
    publish(
        &mut client,
        event("evt-legacy", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let report = verifier.next().await;
    assert_eq!(report["webhook_id"], "evt-legacy");
    assert_eq!(report["verified_with"], serde_json::json!([0]));
    delivery_in_state(
        &mut client,
        "evt-legacy",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    service.stop().await;
    let (again, _) = stored_secrets(&observer, &subscription.subscription_id).await;
    assert_eq!(again, sealed, "a sealed secret is left as it is");

    let other_key = std::env::temp_dir()
        .join("subsidy-tests")
        .join(format!("other-{}.key", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(other_key.parent().unwrap()).unwrap();
    std::fs::write(&other_key, "ff".repeat(32)).unwrap();
    let service = Service::start(config(&db, |n| {
        n.secret_key_file = other_key.display().to_string();
        n.retry_schedule_ms = vec![0, 50];
    }))
    .await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        event("evt-wrong-key", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let dead = delivery_in_state(
        &mut client,
        "evt-wrong-key",
        pb::Channel::Webhook,
        pb::DeliveryState::DeadLettered,
    )
    .await;
    assert_eq!(dead.attempt_count, 2);
    assert!(
        dead.last_error.contains("cannot be decrypted"),
        "{}",
        dead.last_error
    );
    assert!(verifier.try_next().is_none(), "nothing was sent");
    service.stop().await;
    let _ = std::fs::remove_file(&other_key);
}
