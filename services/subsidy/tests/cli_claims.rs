//! The steps of a claim and of a webhook subscription that people take with `subsidyctl`, run
//! against a fresh `subsidy dev`: a claim withdrawn, another rejected, a third approved and
//! paid (`claim disburse`); an expired claim reopened (`claim reopen`, on a stack whose holds
//! last seconds); a subscription to a receiver on loopback whose failed delivery is listed
//! (`deliveries`) and sent again (`redeliver --dead-letters`, `redeliver --event`); and a
//! wrong enum value refused with exit 2, listing the valid ones.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use subsidy_proto::application as pb;
use support::{Dev, args, repo_root, succeeded};

/// How long a state the services reach in the background (a counted notice, an expired hold, a
/// delivery) may take.
const SETTLE_WAIT_S: u64 = 30;
/// The verified amount the paid claim is approved on, in CNY: 5% of it is paid.
const VERIFIED: &str = "1500000.00";
/// The amount the paid claim is approved on, in CNY.
const APPROVED: &str = "75000.00";
/// The subsidy of the example claim's contract of 2,000,000.00, held on submission, in CNY.
const HELD: &str = "100000.00";
/// The voucher pool of the dev stack.
const VOUCHER_POOL: &str = "compute-voucher-2025";
/// What the receiver answers while it is failing.
const FAILING_STATUS: u16 = 503;
/// What the receiver answers once it is back.
const OK_STATUS: u16 = 204;

/// The JSON a command printed; it must succeed.
#[track_caller]
fn json_of(output: &Output) -> Value {
    let stdout = succeeded(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Runs `subsidyctl -o json words…` and parses what it printed.
#[track_caller]
fn json(dev: &Dev, words: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(words);
    json_of(&dev.run(&args(&all)))
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

/// Asks `probe` until it answers `Some`, for at most [`SETTLE_WAIT_S`].
#[track_caller]
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(SETTLE_WAIT_S);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Today in Asia/Shanghai, the payment date of a payment made now.
fn today_shanghai() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m-%d")
        .to_string()
}

/// Writes the README's example claim with another contract number into `dir`; its path.
fn claim_file(dir: &std::path::Path, contract_number: &str) -> String {
    let example = std::fs::read_to_string(repo_root().join("docs/examples/claim.yaml"))
        .expect("docs/examples/claim.yaml");
    let changed = example.replace(
        "contract_number: JNAI-2025-0318",
        &format!("contract_number: {contract_number}"),
    );
    assert_ne!(changed, example, "the example names its contract number");
    let path = dir.join(format!("{contract_number}.yaml"));
    std::fs::write(&path, changed).unwrap();
    path.display().to_string()
}

/// The CLI names of the values of a proto enum (`CLAIM_STATE_PENDING_REVIEW` is
/// `pending-review`), from the generated code: what a wrong value's error must list.
fn cli_names(prefix: &str, name: impl Fn(i32) -> Option<&'static str>) -> Vec<String> {
    (1..=64)
        .filter_map(name)
        .map(|proto| {
            proto
                .strip_prefix(prefix)
                .unwrap_or(proto)
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .collect()
}

#[test]
fn a_claim_is_withdrawn_another_rejected_and_a_third_paid_from_the_cli() {
    // Proves: `claim withdraw` answers the WITHDRAWN claim with its reason and releases its
    // hold (the pool's held amount back to the other claims'); run again it answers the same;
    // `claim reject` answers REJECTED with the reason and reviewer (a wrong `--reason` is exit 2
    // naming the valid reasons); `claim disburse` of the approved claim answers DISBURSED with
    // the payment recorded, the same again when repeated; reopening the paid claim and
    // finalising an OPEN round are FAILED_PRECONDITION / TRANSITION_NOT_ALLOWED (exit 5).
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let paid = dev.submit_example_claim();
    let withdrawn = json(
        &dev,
        &["claim", "submit", &claim_file(dir.path(), "JNAI-2025-0401")],
    )["claimId"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = json(
        &dev,
        &["claim", "submit", &claim_file(dir.path(), "JNAI-2025-0402")],
    )["claimId"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool = |dev: &Dev| {
        json(dev, &["pools"])
            .as_array()
            .unwrap()
            .iter()
            .find(|pool| pool["poolId"] == VOUCHER_POOL)
            .cloned()
            .expect("the voucher pool")
    };
    assert_eq!(
        pool(&dev)["held"],
        "300000.00",
        "three claims hold their subsidy"
    );

    let withdraw = [
        "claim",
        "withdraw",
        &withdrawn,
        "--reason",
        "The project was cancelled.",
    ];
    let claim = json(&dev, &withdraw);
    assert_eq!(claim["state"], "CLAIM_STATE_WITHDRAWN", "{claim}");
    assert_eq!(
        claim["withdrawalReason"], "The project was cancelled.",
        "{claim}"
    );
    assert_eq!(
        json(&dev, &withdraw),
        claim,
        "the same withdrawal answers the same"
    );
    // The hold is released in the call (by the reconciler if the budget did not answer).
    eventually("the withdrawn claim's hold released", || {
        (pool(&dev)["held"] == "200000.00").then_some(())
    });

    let (code, stderr) = failure(&dev.run(&args(&[
        "claim", "reject", &rejected, "--reason", "too-late",
    ])));
    assert_eq!(code, 2, "{stderr}");
    for reason in cli_names("CLAIM_REJECTION_REASON_", |n| {
        pb::ClaimRejectionReason::try_from(n)
            .ok()
            .filter(|reason| *reason != pb::ClaimRejectionReason::Unspecified)
            .map(|reason| reason.as_str_name())
    }) {
        assert!(stderr.contains(&reason), "{reason} not listed: {stderr}");
    }
    let claim = json(
        &dev,
        &[
            "claim",
            "reject",
            &rejected,
            "--reason",
            "compute-not-eligible",
            "--note",
            "The GPU hours were used outside Shandong.",
            "--reviewer",
            "r.wang",
        ],
    );
    assert_eq!(claim["state"], "CLAIM_STATE_REJECTED", "{claim}");
    assert_eq!(
        claim["rejectionReason"], "CLAIM_REJECTION_REASON_COMPUTE_NOT_ELIGIBLE",
        "{claim}"
    );
    assert_eq!(claim["reviewerId"], "r.wang", "{claim}");
    eventually("the rejected claim's hold released", || {
        (pool(&dev)["held"] == HELD).then_some(())
    });

    dev.approve(&paid, VERIFIED);
    // The dev stack's publicity period is 0 working days: the claim may be paid once the rules
    // service has counted it.
    eventually("the paid claim's notice counted", || {
        json(&dev, &["notice", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|notice| {
                notice["applicationId"] == paid.as_str() && notice.get("endTime").is_some()
            })
            .then_some(())
    });
    let today = today_shanghai();
    let disburse = [
        "claim",
        "disburse",
        &paid,
        "--reference",
        "PAY-2025-0001",
        "--date",
        &today,
        "--amount",
        APPROVED,
    ];
    let claim = json(&dev, &disburse);
    assert_eq!(claim["state"], "CLAIM_STATE_DISBURSED", "{claim}");
    assert_eq!(claim["disbursedAmount"], APPROVED, "{claim}");
    let payment = &claim["disbursement"];
    assert_eq!(payment["paymentReference"], "PAY-2025-0001", "{claim}");
    assert_eq!(payment["amount"], APPROVED, "{claim}");
    assert_eq!(
        json(&dev, &disburse),
        claim,
        "the same payment answers the same"
    );
    let shown = succeeded(&dev.run(&args(&["claim", "show", &paid])));
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("STATE") && line.ends_with("DISBURSED")),
        "{shown}"
    );

    let (code, stderr) = failure(&dev.run(&args(&[
        "claim",
        "reopen",
        &paid,
        "--reason",
        "Paid already.",
        "--reviewer",
        "r.wang",
    ])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION TRANSITION_NOT_ALLOWED: "),
        "{stderr}"
    );

    // The README: only a CLOSED round is finalised.
    let round = json(
        &dev,
        &[
            "round",
            "open",
            "--title",
            "still open",
            "--deadline",
            "+30d",
        ],
    );
    let round_id = round["roundId"].as_str().unwrap();
    let (code, stderr) = failure(&dev.run(&args(&["round", "finalise", round_id])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION TRANSITION_NOT_ALLOWED: "),
        "{stderr}"
    );
}

#[test]
fn an_expired_claim_is_reopened_from_the_cli() {
    // Proves, on a stack whose holds last 3 seconds and are never extended: the example claim's
    // hold lapses (EXPIRED); `claim reopen` asks the pool again and answers the claim in review
    // with a new hold of the same amount, and its history records the reopening.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_with_env(
        &dir.path().join("data"),
        &[
            ("SUBSIDY_APPLICATION_HOLD_SECONDS", "3"),
            ("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "0"),
            ("SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS", "100"),
        ],
    );
    dev.wait_serving();
    let claim_id = dev.submit_example_claim();
    let expired = eventually("the claim's hold lapsed", || {
        let claim = json(&dev, &["claim", "show", &claim_id]);
        (claim["state"] == "CLAIM_STATE_EXPIRED").then_some(claim)
    });

    let reopened = json(
        &dev,
        &[
            "claim",
            "reopen",
            &claim_id,
            "--reason",
            "The hold lapsed while the application was down.",
            "--reviewer",
            "r.wang",
        ],
    );
    assert_eq!(
        reopened["state"], "CLAIM_STATE_PENDING_REVIEW",
        "{reopened}"
    );
    assert_eq!(reopened["reservedAmount"], HELD, "{reopened}");
    assert_ne!(
        reopened["reservationId"], expired["reservationId"],
        "a new hold: {reopened}"
    );
    let history = succeeded(&dev.run(&args(&["history", &claim_id])));
    assert!(history.contains("EXPIRED"), "{history}");
    assert!(history.contains("reopened"), "{history}");
}

/// A webhook endpoint on loopback (plain HTTP) answering every request with the status set,
/// keeping each body.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Serves on a free port of 127.0.0.1, answering `status`.
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            status: Arc::new(AtomicU16::new(status)),
            bodies: Arc::default(),
        };
        let (status, bodies) = (receiver.status.clone(), receiver.bodies.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (status, bodies) = (status.clone(), bodies.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, &status, &bodies);
                });
            }
        });
        receiver
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request from `stream`, keeps its body, answers the status and closes.
fn answer(
    stream: std::net::TcpStream,
    status: &AtomicU16,
    bodies: &Mutex<Vec<Value>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let code = status.load(Ordering::SeqCst);
    if code < 300 {
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into());
        bodies.lock().unwrap().push(value);
    }
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    stream.flush()
}

/// The deliveries of `subscription` in `state` (`delivered`, `dead-lettered`, …) as JSON.
fn deliveries(dev: &Dev, subscription: &str, state: &str) -> Vec<Value> {
    json(
        dev,
        &[
            "deliveries",
            "--subscription",
            subscription,
            "--state",
            state,
        ],
    )
    .as_array()
    .cloned()
    .expect("a JSON array")
}

#[test]
fn webhook_deliveries_are_listed_and_dead_letters_redelivered_from_the_cli() {
    // Proves, with one attempt per delivery and plain http allowed on loopback: a subscription
    // to a failing receiver dead-letters the claim's event, and `deliveries --subscription S
    // --state dead-lettered` shows it (type, channel, one attempt, the receiver's 503), also as
    // a table; with the receiver back, `redeliver --dead-letters` requeues it and it is
    // DELIVERED; `redeliver --event E --subscription S` delivers it once more; `redeliver`
    // with neither an event nor `--dead-letters`, and a wrong `--state`, are exit 2 (the
    // latter listing the delivery states).
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_with_env(
        &dir.path().join("data"),
        &[
            ("SUBSIDY_NOTIFICATION_ALLOW_HTTP", "true"),
            ("SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS", "0"),
            ("SUBSIDY_NOTIFICATION_POLL_INTERVAL_MS", "100"),
        ],
    );
    dev.wait_serving();
    let receiver = Receiver::start(FAILING_STATUS);
    let created = json(
        &dev,
        &[
            "subscription",
            "create",
            "--url",
            &receiver.url,
            "--type",
            "claim.submitted",
            "--description",
            "cli test receiver",
        ],
    );
    let subscription = created["subscription"]["subscriptionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    assert!(
        created["signingSecret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    let claim_id = dev.submit_example_claim();

    let dead = eventually("the delivery dead-lettered", || {
        deliveries(&dev, &subscription, "dead-lettered").pop()
    });
    assert_eq!(dead["eventType"], "EVENT_TYPE_CLAIM_SUBMITTED", "{dead}");
    assert_eq!(dead["channel"], "CHANNEL_WEBHOOK", "{dead}");
    assert_eq!(dead["attemptCount"], 1, "{dead}");
    assert_eq!(dead["lastStatusCode"], i64::from(FAILING_STATUS), "{dead}");
    let event_id = dead["eventId"].as_str().unwrap().to_owned();
    let delivery_id = dead["deliveryId"].as_str().unwrap().to_owned();
    let table = succeeded(&dev.run(&args(&["deliveries", "--subscription", &subscription])));
    let row = table
        .lines()
        .find(|line| line.starts_with(&delivery_id))
        .unwrap_or_else(|| panic!("no row of {delivery_id}: {table}"));
    for expected in ["claim.submitted", "webhook", "dead_lettered", "503"] {
        assert!(row.contains(expected), "{expected} missing: {table}");
    }
    assert!(receiver.bodies().is_empty(), "nothing accepted yet");

    receiver.answer_with(OK_STATUS);
    let requeued = json(
        &dev,
        &[
            "redeliver",
            "--dead-letters",
            "--subscription",
            &subscription,
        ],
    );
    assert_eq!(requeued["requeuedCount"], 1, "{requeued}");
    let delivered = eventually("the dead letter delivered", || {
        deliveries(&dev, &subscription, "delivered").pop()
    });
    assert_eq!(delivered["deliveryId"], delivery_id.as_str(), "{delivered}");
    assert_eq!(
        delivered["lastStatusCode"],
        i64::from(OK_STATUS),
        "{delivered}"
    );
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["type"], "claim.submitted", "{bodies:?}");
    assert_eq!(
        bodies[0]["data"]["application_id"],
        claim_id.as_str(),
        "{bodies:?}"
    );

    let again = json(
        &dev,
        &[
            "redeliver",
            "--event",
            &event_id,
            "--subscription",
            &subscription,
        ],
    );
    let again = again.as_array().expect("the deliveries requeued");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["deliveryId"], delivery_id.as_str(), "{again:?}");
    eventually("the event delivered once more", || {
        (receiver.bodies().len() == 2).then_some(())
    });
    let bodies = receiver.bodies();
    assert_eq!(bodies[1]["type"], "claim.submitted", "{bodies:?}");

    let (code, stderr) = failure(&dev.run(&args(&["redeliver", "--subscription", &subscription])));
    assert_eq!(code, 2, "{stderr}");
    let (code, stderr) = failure(&dev.run(&args(&["deliveries", "--state", "lost"])));
    assert_eq!(code, 2, "{stderr}");
    for state in [
        "pending",
        "in-flight",
        "delivered",
        "failed-retrying",
        "dead-lettered",
        "cancelled",
    ] {
        assert!(stderr.contains(state), "{state} not listed: {stderr}");
    }
}

#[test]
fn a_wrong_state_is_refused_with_exit_2_listing_every_valid_state() {
    // Proves: `claim list --state` with a value that is no claim state fails before anything is
    // sent, with exit 2, naming the value and every claim state by its CLI name.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
        .args(["claim", "list", "--state", "pending"])
        .env("SUBSIDY_APPLICATION_URL", "https://127.0.0.1:9")
        .output()
        .expect("run subsidyctl");
    let (code, stderr) = failure(&output);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("'pending'"), "{stderr}");
    let states = cli_names("CLAIM_STATE_", |n| {
        pb::ClaimState::try_from(n)
            .ok()
            .filter(|state| *state != pb::ClaimState::Unspecified)
            .map(|state| state.as_str_name())
    });
    assert!(states.len() >= 11, "{states:?}");
    for state in states {
        assert!(stderr.contains(&state), "{state} not listed: {stderr}");
    }
}
