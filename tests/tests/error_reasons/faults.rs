//! Reasons that need the database taken away or broken behind a service's back.

use super::*;

/// Each service with its database taken away ([`Outage`]: on PostgreSQL its connections
/// terminated and new ones refused; on SQLite another connection holding the write lock past
/// the busy timeout): a write answers `UNAVAILABLE`/`STORAGE_UNAVAILABLE` and changes nothing,
/// and the same call with the same `request_id` takes effect once the database is back.
pub(crate) async fn storage_reasons(stack: &Stack, seen: &mut Seen) {
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
pub(crate) async fn internal_reasons(stack: &Stack, seen: &mut Seen) {
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
    );
    seen.refused(
        rules.publish_policy(policy.clone()).await,
        Code::Internal,
        RULES,
        "INTERNAL",
    );
    seen.refused(
        notes.publish_event(event.clone()).await,
        Code::Internal,
        NOTIFICATION,
        "INTERNAL",
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
pub(crate) async fn rename(stack: &Stack, kind: ServiceKind, from: &str, to: &str) {
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
pub(crate) async fn retry_unavailable<T, F, Fut>(mut call: F) -> T
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
