//! Email to applicants through a real local SMTP server (Python's `aiosmtpd`).

mod support;

use subsidy_proto::notification as pb;
use support::*;

fn emailed(event_id: &str, language: pb::Language, recipient: &str) -> pb::Event {
    let mut event = event(event_id, pb::EventType::ClaimApproved, "app-42");
    event.language = language as i32;
    event.recipient_email = recipient.into();
    event
}

#[tokio::test]
async fn an_applicant_is_emailed_in_chinese_or_english_through_the_relay() {
    // Proves each email reaches the relay addressed to the event's recipient, written from
    // the template of the event's language, as UTF-8 plain text with a stable Message-ID.
    let db = fresh_db("notify_email").await;
    let mut relay = Python::start("smtp_sink.py", &[]).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", relay.port);
    let service = Service::start(config(&db, |n| {
        n.smtp_url = smtp_url;
        n.smtp_from = "Subsidy Platform <noreply@subsidy.example.cn>".into();
    }))
    .await;
    let mut client = service.client.clone();

    publish(
        &mut client,
        emailed("mail-zh", pb::Language::Zh, "zhang@enterprise.example.cn"),
    )
    .await;
    let zh = relay.next().await;
    publish(
        &mut client,
        emailed("mail-en", pb::Language::En, "li@enterprise.example.cn"),
    )
    .await;
    let en = relay.next().await;

    assert_eq!(
        zh["rcpt_tos"],
        serde_json::json!(["zhang@enterprise.example.cn"])
    );
    assert_eq!(zh["mail_from"], "noreply@subsidy.example.cn");
    assert_eq!(zh["subject"], "【山东省补贴】算力券申请 app-42 已获批准");
    assert_eq!(zh["content_type"], "text/plain");
    assert_eq!(zh["charset"], "utf-8");
    let body = zh["body"].as_str().unwrap();
    assert!(body.contains("恭喜"), "{body}");
    assert!(body.contains("12,345.67 元"), "{body}");
    assert!(body.contains("2026年01月01日 08:00（北京时间）"), "{body}");
    assert!(body.contains(&enterprise(1)), "{body}");

    assert_eq!(
        en["rcpt_tos"],
        serde_json::json!(["li@enterprise.example.cn"])
    );
    assert_eq!(en["subject"], "[Shandong subsidy] Claim app-42 approved");
    let body = en["body"].as_str().unwrap();
    assert!(body.contains("Congratulations"), "{body}");
    assert!(body.contains("CNY 12,345.67"), "{body}");
    assert!(body.contains("Event: mail-en"), "{body}");

    let delivery = delivery_in_state(
        &mut client,
        "mail-zh",
        pb::Channel::Email,
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(delivery.recipient_email, "zhang@enterprise.example.cn");
    assert_eq!(delivery.last_status_code, 250, "the relay's reply code");
    assert_eq!(
        zh["message_id"],
        format!("<{}@notification.subsidy.invalid>", delivery.delivery_id)
    );
    service.stop().await;
}

#[tokio::test]
async fn a_relay_that_refuses_at_first_gets_the_scheduled_retries() {
    // Proves temporary SMTP rejections are retried on the schedule with their reply codes
    // logged, and the email is delivered once the relay accepts it.
    let db = fresh_db("notify_email_retry").await;
    let mut relay = Python::start("smtp_sink.py", &["--fail-first", "2"]).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", relay.port);
    let service = Service::start(config(&db, |n| n.smtp_url = smtp_url)).await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        emailed("mail-retry", pb::Language::Unspecified, "wang@example.cn"),
    )
    .await;
    assert_eq!(relay.next().await["rejected"], 1);
    assert_eq!(relay.next().await["rejected"], 2);
    let accepted = relay.next().await;
    assert!(
        accepted["subject"]
            .as_str()
            .unwrap()
            .starts_with("【山东省补贴】"),
        "the default language is Chinese"
    );
    let delivery = delivery_in_state(
        &mut client,
        "mail-retry",
        pb::Channel::Email,
        pb::DeliveryState::Delivered,
    )
    .await;
    let full = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: delivery.delivery_id,
        })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    let codes: Vec<(i32, i32, bool)> = full
        .attempts
        .iter()
        .map(|a| (a.smtp_reply_code, a.http_status_code, a.succeeded))
        .collect();
    assert_eq!(
        codes,
        vec![(451, 0, false), (451, 0, false), (250, 0, true)]
    );
    assert!(relay.try_next().is_none(), "sent once after being accepted");
    service.stop().await;
}

#[tokio::test]
async fn an_unreachable_relay_dead_letters_the_email_after_the_last_attempt() {
    // Proves email follows the same schedule and dead-letter rule as webhooks.
    let db = fresh_db("notify_email_dead").await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let service = Service::start(config(&db, |n| {
        n.smtp_url = format!("smtp://127.0.0.1:{closed}");
        n.retry_schedule_ms = vec![0, 50, 50];
    }))
    .await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        emailed("mail-dead", pb::Language::En, "zhao@example.cn"),
    )
    .await;
    let dead = delivery_in_state(
        &mut client,
        "mail-dead",
        pb::Channel::Email,
        pb::DeliveryState::DeadLettered,
    )
    .await;
    assert_eq!(dead.attempt_count, 3);
    assert_eq!(dead.last_status_code, 0);
    assert!(!dead.last_error.is_empty());
    assert!(
        !dead.last_error.contains("zhao@"),
        "errors carry no personal data: {}",
        dead.last_error
    );
    service.stop().await;
}
