//! The edge kit of the rules service over gRPC: page tokens bound to the list and filters they
//! came from, and the ErrorInfo metadata of each refusal, on a fresh database per test.

mod support;

use subsidy_proto::rules as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

#[tokio::test]
async fn a_page_token_only_continues_the_list_and_filter_it_came_from() {
    // Proves: a ListPolicies or ListDenylistEntries token reused with another filter is
    // INVALID_ARGUMENT on page_token, while the same filter continues the list.
    let url = fresh_db("rules_page_binding").await;
    let mut client = spawn(store(&url, true).await).await;
    let first = client
        .list_policies(pb::ListPoliciesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.policies.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let next = client
        .list_policies(pb::ListPoliciesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.policies[0].policy_id, "data-infra");
    let status = client
        .list_policies(pb::ListPoliciesRequest {
            page_size: 1,
            page_token: first.next_page_token,
            program: pb::Program::DataInfra as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);

    client
        .replace_denylist(pb::ReplaceDenylistRequest {
            request_id: "deny-binding".into(),
            entries: vec![entry(1, "a"), entry(2, "b")],
        })
        .await
        .unwrap();
    let page = client
        .list_denylist_entries(pb::ListDenylistEntriesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = client
        .list_denylist_entries(pb::ListDenylistEntriesRequest {
            page_size: 1,
            page_token: page.next_page_token,
            uscc: shandong(2).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);
}

#[tokio::test]
async fn refusals_name_the_policy_version_and_request_in_their_error_info() {
    // Proves: the ErrorInfo metadata of each refusal carries the keys the proto documents
    // (policy_id, version, node_ids, request_id).
    use subsidy_proto::status::metadata;
    let url = fresh_db("rules_error_info").await;
    let mut empty = spawn(store(&url, false).await).await;
    let status = empty
        .evaluate_compute_voucher(evaluate_request(wire_claim()))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("NO_POLICY_PUBLISHED"));
    assert_eq!(metadata(&status)["policy_id"], "compute-voucher");

    let url = fresh_db("rules_error_info_seeded").await;
    let mut client = spawn(store(&url, true).await).await;
    let status = client
        .evaluate_compute_voucher(pb::EvaluateComputeVoucherRequest {
            claim: Some(wire_claim()),
            policy_version: "2031.7".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("POLICY_NOT_FOUND"));
    let info = metadata(&status);
    assert_eq!(
        (info["policy_id"].as_str(), info["version"].as_str()),
        ("compute-voucher", "2031.7")
    );

    let status = client
        .publish_policy(publish_request("again-2025.1", shipped_draft("data-infra")))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("POLICY_VERSION_EXISTS"));
    let info = metadata(&status);
    assert_eq!(
        (info["policy_id"].as_str(), info["version"].as_str()),
        ("data-infra", "2025.1")
    );

    client
        .publish_policy(publish_request(
            "info-2025.2",
            draft("data-infra", "2025.2", |d| d),
        ))
        .await
        .unwrap();
    let status = client
        .publish_policy(publish_request(
            "info-2025.2",
            draft("data-infra", "2025.3", |d| d),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    assert_eq!(metadata(&status)["request_id"], "info-2025.2");

    let scripted = draft("compute-voucher", "2025.2", |document| {
        document.replacen(
            r#""nodes": ["#,
            r#""nodes": [{"id": "js", "type": "functionNode", "name": "random rate",
              "content": {"source": "export const handler = async () => ({});"}},"#,
            1,
        )
    });
    let status = client
        .publish_policy(publish_request("script-info", scripted))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("POLICY_HAS_SCRIPT_NODE"));
    let info = metadata(&status);
    assert_eq!(
        (
            info["policy_id"].as_str(),
            info["version"].as_str(),
            info["node_ids"].as_str()
        ),
        ("compute-voucher", "2025.2", "js")
    );
}
