//! `subsidyctl claim explain` against a fresh `subsidy dev`: a claim approved on a smaller
//! verified amount is explained from the rules service's stored re-evaluation, in English and
//! Chinese for people and as one JSON object for scripts; `claim show` lists the decisions that
//! shaped the claim.

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
    assert_eq!(en.matches("[passed]").count(), 9, "{en}");
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
    assert_eq!(zh.matches("[通过]").count(), 9, "{zh}");
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
    assert_eq!(json["checks"].as_array().unwrap().len(), 9);
}
