//! The registry of compute providers over gRPC: registration with data centers, status changes
//! kept as an append-only history, idempotency by request id, and refusals with stable reasons,
//! on a fresh database per test.

mod support;

use subsidy_proto::rules as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

fn data_center(name: &str, code: &str, capacity: &str) -> pb::DataCenter {
    pb::DataCenter {
        name: name.into(),
        division_code: code.into(),
        capacity_pflops: capacity.into(),
        status: pb::DataCenterStatus::Unspecified as i32,
    }
}

fn registration(request_id: &str, n: usize) -> pb::RegisterProviderRequest {
    pb::RegisterProviderRequest {
        request_id: request_id.into(),
        uscc: shandong(n).to_string(),
        name: "济南超算智算有限公司".into(),
        effective_date: date(2025, 1, 1),
        reason: "省大数据局2025年第1批算力服务商名单".into(),
        data_centers: vec![
            data_center("济南智算中心", "370102", "0120.50"),
            data_center("青岛西海岸算力中心", "370211", "80"),
        ],
    }
}

fn status_change(
    request_id: &str,
    n: usize,
    status: pb::ProviderStatus,
    (y, m, d): (i32, i32, i32),
) -> pb::UpdateProviderStatusRequest {
    pb::UpdateProviderStatusRequest {
        request_id: request_id.into(),
        uscc: shandong(n).to_string(),
        status: status as i32,
        effective_date: date(y, m, d),
        reason: "核查发现问题 (found in an inspection)".into(),
    }
}

#[tokio::test]
async fn a_provider_is_registered_changes_status_and_keeps_every_change() {
    // Proves: a registration answers the provider ADMITTED with canonical capacities and replays
    // by request id; suspend, readmit and revoke each append one change (actor, date, reason)
    // and the listing filters by current status; the history's rows cannot be changed.
    let url = fresh_db("rules_providers").await;
    let store = store(&url, false).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;

    let registered = client
        .register_provider(registration("reg-1", 20))
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(registered.status(), pb::ProviderStatus::Admitted);
    assert_eq!(registered.status_effective_date, date(2025, 1, 1));
    let capacities: Vec<_> = registered
        .data_centers
        .iter()
        .map(|d| (d.capacity_pflops.as_str(), d.status()))
        .collect();
    assert_eq!(
        capacities,
        [
            ("120.5", pb::DataCenterStatus::InService),
            ("80", pb::DataCenterStatus::InService)
        ]
    );
    let replayed = client
        .register_provider(registration("reg-1", 20))
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(replayed, registered);

    let steps = [
        ("s-1", pb::ProviderStatus::Suspended, (2025, 6, 1)),
        ("s-2", pb::ProviderStatus::Admitted, (2025, 9, 1)),
        ("s-3", pb::ProviderStatus::Revoked, (2025, 9, 1)),
    ];
    for (request_id, status, day) in steps {
        let changed = client
            .update_provider_status(status_change(request_id, 20, status, day))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.provider.unwrap().status(), status);
        assert_eq!(changed.change.unwrap().status(), status);
    }
    let shown = client
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(20).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let history: Vec<_> = shown
        .history
        .iter()
        .map(|c| (c.sequence, c.status(), c.effective_date))
        .collect();
    assert_eq!(
        history,
        [
            (1, pb::ProviderStatus::Admitted, date(2025, 1, 1)),
            (2, pb::ProviderStatus::Suspended, date(2025, 6, 1)),
            (3, pb::ProviderStatus::Admitted, date(2025, 9, 1)),
            (4, pb::ProviderStatus::Revoked, date(2025, 9, 1)),
        ]
    );
    assert!(shown.history.iter().all(|c| !c.actor.is_empty()));
    assert_eq!(shown.provider.unwrap().data_centers.len(), 2);

    client
        .register_provider(registration("reg-2", 21))
        .await
        .unwrap();
    let admitted = client
        .list_providers(pb::ListProvidersRequest {
            status: pb::ProviderStatus::Admitted as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = admitted.providers.iter().map(|p| p.uscc.clone()).collect();
    assert_eq!(codes, [shandong(21).to_string()]);
    let first = client
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.providers.len() + second.providers.len(), 2);
    assert!(first.providers[0].uscc < second.providers[0].uscc);

    for statement in [
        "UPDATE provider_status_changes SET reason = 'x'",
        "DELETE FROM provider_status_changes",
    ] {
        sqlx::query(statement)
            .execute(&inspect.pool)
            .await
            .expect_err(statement);
    }
}

#[tokio::test]
async fn refused_registry_calls_carry_stable_reasons_and_change_nothing() {
    // Proves the registry's refusals: a second registration (PROVIDER_EXISTS), an unknown
    // provider (PROVIDER_NOT_FOUND), the status it has or any change after revocation
    // (PROVIDER_STATUS_UNCHANGED), a change dated before the current status
    // (PROVIDER_STATUS_DATE_OUT_OF_ORDER), a request id reused (REQUEST_ID_REUSED), and invalid
    // fields named one by one; afterwards the history holds only the changes that succeeded.
    let url = fresh_db("rules_providers_refused").await;
    let mut client = spawn(store(&url, false).await).await;
    client
        .register_provider(registration("reg-1", 30))
        .await
        .unwrap();

    let status = client
        .register_provider(registration("reg-2", 30))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("PROVIDER_EXISTS"))
    );
    let status = client
        .register_provider(registration("reg-1", 31))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("REQUEST_ID_REUSED"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-1",
            32,
            pb::ProviderStatus::Suspended,
            (2025, 6, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::NotFound, Some("PROVIDER_NOT_FOUND"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-2",
            30,
            pb::ProviderStatus::Admitted,
            (2025, 6, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("PROVIDER_STATUS_UNCHANGED"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-3",
            30,
            pb::ProviderStatus::Suspended,
            (2024, 12, 31),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (
            Code::FailedPrecondition,
            Some("PROVIDER_STATUS_DATE_OUT_OF_ORDER")
        )
    );
    client
        .update_provider_status(status_change(
            "u-4",
            30,
            pb::ProviderStatus::Revoked,
            (2025, 3, 1),
        ))
        .await
        .unwrap();
    let status = client
        .update_provider_status(status_change(
            "u-5",
            30,
            pb::ProviderStatus::Admitted,
            (2025, 4, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("PROVIDER_STATUS_UNCHANGED"))
    );

    let mut invalid = registration("reg-3", 33);
    invalid.uscc.replace_range(17..18, "I");
    invalid.name = String::new();
    invalid.data_centers = vec![
        data_center("A", "37010", "1"),
        data_center("B", "370102", "1.5e3"),
        data_center("B", "370102", "0"),
        data_center("C", "370102", "12.3456"),
    ];
    let status = client.register_provider(invalid).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "uscc",
            "name",
            "data_centers[0].division_code",
            "data_centers[1].capacity_pflops",
            "data_centers[2].name",
            "data_centers[2].capacity_pflops",
            "data_centers[3].capacity_pflops",
        ]
    );
    let mut empty = registration("reg-4", 33);
    empty.data_centers.clear();
    let status = client.register_provider(empty).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["data_centers"]);
    let mut unset = status_change("u-6", 30, pb::ProviderStatus::Unspecified, (2025, 5, 1));
    unset.effective_date = None;
    let status = client.update_provider_status(unset).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["status", "effective_date"]);

    let history = client
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(30).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    assert_eq!(history.len(), 2);
    let listed = client
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_provider_register_it_once() {
    // Proves: eight registrations of one USCC under different request ids at once give one
    // success and seven PROVIDER_EXISTS (never a storage error), and one history row.
    let url = fresh_db("rules_providers_race").await;
    let client = spawn(store(&url, false).await).await;
    let attempts = (0..8).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .register_provider(registration(&format!("race-{i}"), 40))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            reason(status).as_deref(),
            Some("PROVIDER_EXISTS"),
            "{status:?}"
        );
    }
    let history = client
        .clone()
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(40).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    assert_eq!(history.len(), 1);
}
