//! `subsidyctl claim explain` against a fresh `subsidy dev`: a claim approved on a smaller
//! verified amount is explained from the rules service's stored re-evaluation, in English and
//! Chinese for people and as one JSON object for scripts; `claim show` lists the decisions that
//! shaped the claim. Under a policy version with the provider registry switched on, the
//! explanation lists the registry's checks too, passed for an admitted provider's claim and
//! failed for an unregistered seller's.

mod support;

use serde_json::Value;
use support::{Dev, args, succeeded};

#[test]
fn a_claim_is_explained_from_its_stored_decision_in_either_language() {
    // Proves: the example claim (2,000,000.00) approved on 1,500,000.00 verified is explained
    // from its re-evaluation on approval: every check passed, 5 % of 1,500,000.00 rounded down
    // to the fen is 75,000.00, the 5,000,000.00 cap untouched before it, and the approved
    // amount; in English, in Chinese, and as JSON naming both linked decisions.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let claim_id = dev.submit_example_claim();
    dev.approve(&claim_id, "1500000.00");

    let shown: Value = serde_json::from_str(&succeeded(
        &dev.run(&args(&["-o", "json", "claim", "show", &claim_id])),
    ))
    .unwrap();
    let purposes: Vec<&str> = shown["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"))
        .iter()
        .map(|link| link["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(
        purposes,
        [
            "DECISION_PURPOSE_EVALUATION",
            "DECISION_PURPOSE_APPROVAL_RECHECK"
        ]
    );

    let en = succeeded(&dev.run(&args(&["claim", "explain", &claim_id, "--lang", "en"])));
    assert!(en.contains("re-evaluation on approval"), "{en}");
    // The rules service's ten checks of the shipped version: each USCC, the graph's six, the
    // contract total and the enterprise cap (no provider registry).
    assert_eq!(en.matches("[passed]").count(), 10, "{en}");
    assert!(!en.contains("SELLER_NOT_ADMITTED_PROVIDER"), "{en}");
    assert!(
        en.contains("0.05 × 1500000.00 = 75000 → 75,000.00 (rounded down to the fen)"),
        "{en}"
    );
    assert!(
        en.contains("Enterprise cap: 5,000,000.00, already used 0.00, remaining 5,000,000.00"),
        "{en}"
    );
    assert!(
        en.contains("Entitlement: min(75,000.00, 5,000,000.00) = 75,000.00"),
        "{en}"
    );
    assert!(en.contains("Approved: 75,000.00"), "{en}");

    let zh = succeeded(&dev.run(&args(&["claim", "explain", &claim_id, "--lang", "zh"])));
    assert!(zh.contains("审核通过时按核实金额重新评估"), "{zh}");
    assert_eq!(zh.matches("[通过]").count(), 10, "{zh}");
    assert!(zh.contains("（向下取整到分）"), "{zh}");

    let json: Value = serde_json::from_str(&succeeded(
        &dev.run(&args(&["-o", "json", "claim", "explain", &claim_id])),
    ))
    .unwrap();
    assert_eq!(
        json["purpose"], "DECISION_PURPOSE_APPROVAL_RECHECK",
        "{json}"
    );
    assert_eq!(json["decisionId"], shown["decisions"][1]["decisionId"]);
    assert_eq!(json["rate"], "0.05");
    assert_eq!(json["appliedTo"], "1500000.00");
    assert_eq!(json["roundedDown"], "75000.00");
    assert_eq!(json["entitlement"], "75000.00");
    assert_eq!(json["approved"], "75000.00");
    assert_eq!(json["decision"]["decisionId"], json["decisionId"]);
    assert_eq!(json["checks"].as_array().unwrap().len(), 10);
    assert_eq!(json["checksRecorded"], true);
}

/// The shipped compute-voucher policy as version 2025.2 with the provider registry switched on,
/// written to `dir` beside a copy of its decision graph; the policy file's path.
fn registry_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = support::repo_root().join("services/rules/policies");
    std::fs::copy(
        shipped.join("compute-voucher-2025.1.jdm.json"),
        dir.join("compute-voucher-2025.2.jdm.json"),
    )
    .unwrap();
    let mut policy: Value = serde_json::from_str(
        &std::fs::read_to_string(shipped.join("compute-voucher-2025.1.policy.json")).unwrap(),
    )
    .unwrap();
    policy["version"] = "2025.2".into();
    policy["description"] = "2025.1 with the provider registry check".into();
    policy["parameters"]["provider_registry_required"] = true.into();
    policy["document_file"] = "compute-voucher-2025.2.jdm.json".into();
    let file = dir.join("compute-voucher-2025.2.policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    file
}

#[test]
fn with_the_provider_registry_on_its_checks_are_explained_passed_or_failed() {
    // Proves: under 2025.2 (provider_registry_required), the example claim of an admitted
    // provider's registered data center is explained with the twelve checks the rules service
    // ran, the registry's two passed with their own words; a claim from a seller not in the
    // registry is INELIGIBLE and explained with those two checks failed and nothing entitled.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let policy = registry_policy(dir.path());
    succeeded(&dev.run(&args(&["policy", "publish", policy.to_str().unwrap()])));
    let providers = dir.path().join("providers.csv");
    std::fs::write(
        &providers,
        "uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,data_center_status\n\
         91370102MA3D000024,Jinan Intelligent Computing Center Co.,2025-01-01,第1批,Jinan AI Computing Center,370102,120,\n",
    )
    .unwrap();
    succeeded(&dev.run(&args(&[
        "provider",
        "import",
        "--file",
        providers.to_str().unwrap(),
    ])));

    let claim_id = dev.submit_example_claim();
    let en = succeeded(&dev.run(&args(&["claim", "explain", &claim_id, "--lang", "en"])));
    assert!(en.contains("policy compute-voucher 2025.2"), "{en}");
    assert_eq!(en.matches("[passed]").count(), 12, "{en}");
    assert!(
        en.contains(
            "[passed] SELLER_NOT_ADMITTED_PROVIDER: the seller was an admitted compute provider on the signing date"
        ),
        "{en}"
    );
    assert!(
        en.contains("[passed] DATA_CENTER_NOT_REGISTERED: the data center is one of the seller's registered, in-service data centers in Shandong"),
        "{en}"
    );
    let zh = succeeded(&dev.run(&args(&["claim", "explain", &claim_id, "--lang", "zh"])));
    assert!(
        zh.contains("[通过] SELLER_NOT_ADMITTED_PROVIDER: 卖方在合同签订日是已准入的算力服务商"),
        "{zh}"
    );

    // The same claim sold by an enterprise the registry does not know.
    let example = std::fs::read_to_string(support::repo_root().join("docs/examples/claim.yaml"))
        .unwrap()
        .replace("JNAI-2025-0318", "JNAI-2025-0319")
        .replace(
            "91370102MA3D000024",
            &subsidy_testkit::seller(7).to_string(),
        );
    let other = dir.path().join("claim-unregistered.yaml");
    std::fs::write(&other, example).unwrap();
    let refused: Value = serde_json::from_str(&succeeded(&dev.run(&args(&[
        "-o",
        "json",
        "claim",
        "submit",
        other.to_str().unwrap(),
    ]))))
    .unwrap();
    assert_eq!(refused["state"], "CLAIM_STATE_INELIGIBLE", "{refused}");
    let refused_id = refused["claimId"].as_str().unwrap();
    let en = succeeded(&dev.run(&args(&["claim", "explain", refused_id, "--lang", "en"])));
    assert_eq!(en.matches("[passed]").count(), 10, "{en}");
    assert!(
        en.contains("[FAILED] SELLER_NOT_ADMITTED_PROVIDER: The seller (USCC"),
        "{en}"
    );
    assert!(en.contains("[FAILED] DATA_CENTER_NOT_REGISTERED: "), "{en}");
    assert!(en.contains("Entitlement: 0.00 (a check failed)"), "{en}");
    let json: Value = serde_json::from_str(&succeeded(
        &dev.run(&args(&["-o", "json", "claim", "explain", refused_id])),
    ))
    .unwrap();
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["passed"] == false)
        .map(|check| check["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["SELLER_NOT_ADMITTED_PROVIDER", "DATA_CENTER_NOT_REGISTERED"]
    );
}
