//! `subsidyctl notice list` and `subsidyctl objection file|decide|list` against a fresh
//! `subsidy dev`: the approved example claim is published as a notice; with the dev stack's
//! publicity of 0 working days the notice has ENDED at once and objections are refused, and with
//! a period of 5 working days (the rules override in the environment) an objection is filed,
//! listed, dismissed, and another upheld, which revokes the claim.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Dev, args, succeeded};

/// How long the application may take to have the rules service count a notice's period.
const COUNT_WAIT_S: u64 = 20;
/// The rules setting that replaces every policy's publicity length.
const PUBLICITY_OVERRIDE_ENV: &str = "SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE";
/// The verified amount the example claim is approved on, in CNY.
const VERIFIED: &str = "1500000.00";

/// The JSON a command printed; it must succeed.
#[track_caller]
fn json_of(output: &Output) -> Value {
    let stdout = succeeded(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The exit code and standard error of a command that must fail.
#[track_caller]
fn failure(output: &Output) -> (i32, String) {
    assert!(
        !output.status.success(),
        "succeeded unexpectedly: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code().expect("an exit code, not a signal"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `subsidyctl -o json words…` and parses what it printed.
fn json(dev: &Dev, words: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(words);
    json_of(&dev.run(&args(&all)))
}

/// The notices `notice list` prints as JSON (every notice of the fresh stack).
fn notices(dev: &Dev) -> Vec<Value> {
    json(dev, &["notice", "list"])
        .as_array()
        .cloned()
        .expect("a JSON array")
}

/// Waits until the notice of `claim_id` has its period counted (an end time), then answers it.
fn counted_notice(dev: &Dev, claim_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(COUNT_WAIT_S);
    loop {
        let found = notices(dev)
            .into_iter()
            .find(|notice| notice["applicationId"] == claim_id);
        if let Some(notice) = found.filter(|notice| notice.get("endTime").is_some()) {
            return notice;
        }
        assert!(
            Instant::now() < deadline,
            "the notice of {claim_id} was not counted: {:?}",
            notices(dev)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a dev stack (with `settings` in its environment), submits and approves the example
/// claim; answers the stack's directory (kept until the stack is stopped), the stack and the
/// claim's id.
fn approved_claim(settings: &[(&str, &str)]) -> (tempfile::TempDir, Dev, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_with_env(&dir.path().join("data"), settings);
    dev.wait_serving();
    let claim_id = dev.submit_example_claim();
    dev.approve(&claim_id, VERIFIED);
    (dir, dev, claim_id)
}

#[test]
fn an_approved_claim_is_listed_as_an_ended_notice_and_objections_to_it_are_refused() {
    // Proves, on the dev stack's 0 working days: the approval is published as
    // `notice-<claim id>` with the claim's approved amount and ENDED state, in the table and as
    // JSON, and in `claim show`; `objection file` on it fails FAILED_PRECONDITION /
    // PUBLICITY_PERIOD_ENDED with exit 5 naming the notice; an unknown notice and an unknown
    // objection are NOT_FOUND (NOTICE_NOT_FOUND, OBJECTION_NOT_FOUND) with exit 3; a decision
    // needs exactly one of --uphold and --dismiss (exit 2); REVOKED parses as a claim state.
    let (_dir, dev, claim_id) = approved_claim(&[]);
    let notice_id = format!("notice-{claim_id}");
    let claim = json(&dev, &["claim", "show", &claim_id]);
    let approved = claim["approvedAmount"]
        .as_str()
        .unwrap_or_else(|| panic!("{claim}"))
        .to_owned();

    let notice = counted_notice(&dev, &claim_id);
    assert_eq!(notice["noticeId"], notice_id.as_str(), "{notice}");
    assert_eq!(notice["amount"], approved.as_str(), "{notice}");
    assert_eq!(notice["state"], "PUBLIC_NOTICE_STATE_ENDED", "{notice}");
    assert_eq!(
        notice["applicationKind"], "APPLICATION_KIND_COMPUTE_VOUCHER_CLAIM",
        "{notice}"
    );
    assert_eq!(
        notice["enterpriseName"], "Jinan Medical Imaging AI Co., Ltd.",
        "{notice}"
    );
    let filtered = json(
        &dev,
        &["notice", "list", "--kind", "claim", "--state", "ended"],
    );
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    let none = json(&dev, &["notice", "list", "--state", "published"]);
    assert_eq!(none, Value::Array(Vec::new()));
    let none = json(&dev, &["notice", "list", "--kind", "proposal"]);
    assert_eq!(none, Value::Array(Vec::new()));

    let table = succeeded(&dev.run(&args(&["notice", "list"])));
    let grouped = {
        let money: subsidy_common::Money = approved.parse().unwrap();
        money.grouped()
    };
    let row = table
        .lines()
        .find(|line| line.starts_with(&notice_id))
        .unwrap_or_else(|| panic!("no row of {notice_id}: {table}"));
    for expected in ["claim", grouped.as_str(), "ENDED"] {
        assert!(row.contains(expected), "{expected} missing: {table}");
    }
    assert!(table.starts_with("NOTICE"), "{table}");
    let shown = succeeded(&dev.run(&args(&["claim", "show", &claim_id])));
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("PUBLIC NOTICE") && line.ends_with(&notice_id)),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("PUBLICITY STATE") && line.ends_with("ENDED")),
        "{shown}"
    );
    assert_eq!(
        claim["publicNotice"]["noticeId"],
        notice_id.as_str(),
        "{claim}"
    );

    let (code, stderr) = failure(&dev.run(&args(&[
        "objection",
        "file",
        &notice_id,
        "--grounds",
        "The contract was signed after the compute was delivered.",
    ])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION PUBLICITY_PERIOD_ENDED: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n  notice_id={notice_id}")),
        "{stderr}"
    );

    let (code, stderr) = failure(&dev.run(&args(&[
        "objection",
        "file",
        "notice-claim-none",
        "--grounds",
        "No such award.",
    ])));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: NOT_FOUND NOTICE_NOT_FOUND: "),
        "{stderr}"
    );

    let (code, stderr) = failure(&dev.run(&args(&[
        "objection",
        "decide",
        "objection-none",
        "--dismiss",
        "--reason",
        "Unfounded.",
        "--reviewer",
        "r.wang",
    ])));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: NOT_FOUND OBJECTION_NOT_FOUND: "),
        "{stderr}"
    );

    for decision in [&[][..], &["--uphold", "--dismiss"][..]] {
        let mut words = vec!["objection", "decide", "objection-none", "--reason", "x"];
        words.extend_from_slice(decision);
        let (code, stderr) = failure(&dev.run(&args(&words)));
        assert_eq!(code, 2, "{decision:?}: {stderr}");
    }

    let objections = json(&dev, &["objection", "list", "--notice", &notice_id]);
    assert_eq!(objections, Value::Array(Vec::new()));
    let revoked = json(&dev, &["claim", "list", "--state", "revoked"]);
    assert_eq!(revoked, Value::Array(Vec::new()));
}

#[test]
fn during_a_period_an_objection_is_filed_listed_dismissed_and_another_upheld() {
    // Proves, with the rules override at 5 working days: the notice is PUBLISHED with a counted
    // end and the claim cannot be paid (PUBLICITY_PERIOD_OPEN, exit 5); `objection file` answers
    // an OPEN objection and the notice counting it (again the same: the derived request id);
    // `objection list` shows it by notice and by state; `objection decide --dismiss` records the
    // reviewer and reasons and leaves the award standing; deciding it again is
    // OBJECTION_ALREADY_DECIDED (exit 5); a second objection upheld revokes the claim (REVOKED,
    // notice REVOKED, both listed by those states).
    let (_dir, dev, claim_id) = approved_claim(&[(PUBLICITY_OVERRIDE_ENV, "5")]);
    let notice_id = format!("notice-{claim_id}");
    let notice = counted_notice(&dev, &claim_id);
    assert_eq!(notice["state"], "PUBLIC_NOTICE_STATE_PUBLISHED", "{notice}");
    assert_eq!(notice["workingDays"], 5, "{notice}");

    let claim = json(&dev, &["claim", "show", &claim_id]);
    let approved = claim["approvedAmount"].as_str().unwrap().to_owned();
    let today = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m-%d")
        .to_string();
    let (code, stderr) = failure(&dev.run(&args(&[
        "claim",
        "disburse",
        &claim_id,
        "--reference",
        "PAY-PUBLICITY-1",
        "--date",
        &today,
        "--amount",
        &approved,
    ])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION PUBLICITY_PERIOD_OPEN: "),
        "{stderr}"
    );

    let file = |grounds: &str| {
        json(
            &dev,
            &["objection", "file", &notice_id, "--grounds", grounds],
        )
    };
    let filed = file("The enterprise is not located in Shandong.");
    let objection = &filed["objection"];
    let objection_id = objection["objectionId"].as_str().unwrap().to_owned();
    assert!(objection_id.starts_with("objection-"), "{filed}");
    assert_eq!(objection["state"], "OBJECTION_STATE_OPEN", "{filed}");
    assert_eq!(objection["noticeId"], notice_id.as_str(), "{filed}");
    assert_eq!(objection["applicationId"], claim_id.as_str(), "{filed}");
    assert_eq!(filed["notice"]["openObjectionCount"], 1, "{filed}");
    assert_eq!(
        file("The enterprise is not located in Shandong."),
        filed,
        "the same filing answers the same objection"
    );

    let listed = json(&dev, &["objection", "list", "--notice", &notice_id]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["objectionId"], objection_id.as_str(), "{listed}");
    let table = succeeded(&dev.run(&args(&["objection", "list", "--state", "open"])));
    assert!(
        table
            .lines()
            .any(|line| line.starts_with(&objection_id) && line.contains("OPEN")),
        "{table}"
    );
    let notice = counted_notice(&dev, &claim_id);
    assert_eq!(notice["openObjectionCount"], 1, "{notice}");

    let dismissed = json(
        &dev,
        &[
            "objection",
            "decide",
            &objection_id,
            "--dismiss",
            "--reason",
            "The registration division is Jinan.",
            "--reviewer",
            "r.wang",
        ],
    );
    let decided = &dismissed["objection"];
    assert_eq!(decided["state"], "OBJECTION_STATE_DISMISSED", "{dismissed}");
    assert_eq!(decided["reviewerId"], "r.wang", "{dismissed}");
    assert_eq!(
        decided["decisionReason"], "The registration division is Jinan.",
        "{dismissed}"
    );
    assert!(
        dismissed["notice"].get("openObjectionCount").is_none(),
        "{dismissed}"
    );
    assert_eq!(
        dismissed["notice"]["state"], "PUBLIC_NOTICE_STATE_PUBLISHED",
        "{dismissed}"
    );
    let (code, stderr) = failure(&dev.run(&args(&[
        "objection",
        "decide",
        &objection_id,
        "--uphold",
        "--reason",
        "Changed my mind.",
        "--reviewer",
        "r.wang",
    ])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION OBJECTION_ALREADY_DECIDED: "),
        "{stderr}"
    );
    let open = json(&dev, &["objection", "list", "--state", "open"]);
    assert_eq!(open, Value::Array(Vec::new()));

    let second = file("The invoice was issued to another buyer.");
    let second_id = second["objection"]["objectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second_id, objection_id);
    let upheld = json(
        &dev,
        &[
            "objection",
            "decide",
            &second_id,
            "--uphold",
            "--reason",
            "The invoice names another buyer.",
            "--reviewer",
            "r.wang",
        ],
    );
    assert_eq!(
        upheld["objection"]["state"], "OBJECTION_STATE_UPHELD",
        "{upheld}"
    );
    assert_eq!(
        upheld["notice"]["state"], "PUBLIC_NOTICE_STATE_REVOKED",
        "{upheld}"
    );
    let claim = json(&dev, &["claim", "show", &claim_id]);
    assert_eq!(claim["state"], "CLAIM_STATE_REVOKED", "{claim}");
    let revoked = json(&dev, &["claim", "list", "--state", "revoked"]);
    assert_eq!(revoked.as_array().map(Vec::len), Some(1), "{revoked}");
    let revoked = json(&dev, &["notice", "list", "--state", "revoked"]);
    assert_eq!(revoked[0]["noticeId"], notice_id.as_str(), "{revoked}");
    let history = succeeded(&dev.run(&args(&["history", &claim_id])));
    assert!(history.contains("REVOKED"), "{history}");
}
