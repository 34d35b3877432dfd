//! `subsidyctl` as a script sees it, against a fresh `subsidy dev`: `--output json` prints the
//! services' messages (amounts as exact decimal strings, counts as numbers, absent values
//! absent; `watch` one object per line), failures print `CODE REASON: message` with the
//! details and exit with the documented code of their class, and the completions and manual
//! page are generated.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{Dev, args};

/// How long `watch` may take to print the first event.
const WATCH_WAIT_S: u64 = 30;

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The exit code and standard error of a command that must fail.
fn failure(output: &Output) -> (i32, String) {
    assert!(!output.status.success(), "succeeded unexpectedly");
    (
        output.status.code().expect("an exit code, not a signal"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn json_output_is_the_services_messages_and_failures_exit_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();

    // Pools: the Pool messages, money exact and ungrouped, absent values absent.
    let pools = stdout_json(&dev.run(&args(&["--output", "json", "pools"])));
    let voucher = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|pool| pool["poolId"] == "compute-voucher-2025")
        .unwrap_or_else(|| panic!("{pools}"));
    assert_eq!(voucher["total"], "30000000.00", "{voucher}");
    assert_eq!(voucher["available"], "30000000.00", "{voucher}");
    assert_eq!(voucher["beneficiaryCap"], "5000000.00", "{voucher}");
    assert!(voucher.get("reservationCount").is_none(), "{voucher}");

    // A claim: the Claim message; its reservation count shows up as a number in the pool.
    stdout_json(&dev.run(&args(&[
        "-o",
        "json",
        "enterprise",
        "register",
        "--uscc",
        "91370100MA3C00001H",
        "--name",
        "Jinan Medical Imaging AI Co., Ltd.",
        "--email",
        "claims@example.cn",
    ])));
    let claim = stdout_json(&dev.run(&args(&[
        "-o",
        "json",
        "claim",
        "submit",
        "docs/examples/claim.yaml",
    ])));
    assert_eq!(claim["state"], "CLAIM_STATE_PENDING_REVIEW", "{claim}");
    assert_eq!(claim["reservedAmount"], "100000.00", "{claim}");
    assert_eq!(claim["contract"]["total"], "2000000.00", "{claim}");
    let pools = stdout_json(&dev.run(&args(&["-o", "json", "pools"])));
    assert_eq!(pools[0]["reservationCount"], 1, "{pools}");
    assert_eq!(pools[0]["held"], "100000.00", "{pools}");

    // watch: one JSON object per line, the stream message with its cursor.
    let mut watch = dev
        .ctl(&args(&["-o", "json", "watch", "--from-beginning"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(WATCH_WAIT_S))
        .expect("watch prints the submission");
    let _ = watch.kill();
    let _ = watch.wait();
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        event["cursor"].as_str().is_some_and(|c| !c.is_empty()),
        "{event}"
    );
    assert_eq!(
        event["event"]["type"], "EVENT_TYPE_CLAIM_SUBMITTED",
        "{event}"
    );
    assert_eq!(
        event["event"]["enterpriseUscc"], "91370100MA3C00001H",
        "{event}"
    );

    // events: the stored feed, filtered by the dotted type name, as messages or a table.
    let events = stdout_json(&dev.run(&args(&[
        "-o",
        "json",
        "events",
        "list",
        "--type",
        "claim.submitted",
    ])));
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    let event_id = events[0]["eventId"].as_str().unwrap().to_owned();
    assert_eq!(event_id, event["event"]["eventId"].as_str().unwrap());
    let shown = stdout_json(&dev.run(&args(&["-o", "json", "events", "show", &event_id])));
    assert_eq!(shown["type"], "EVENT_TYPE_CLAIM_SUBMITTED", "{shown}");
    let table = dev.run(&args(&["events", "list"]));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("claim.submitted"), "{table}");
    let (code, stderr) = failure(&dev.run(&args(&["events", "list", "--type", "claim-submitted"])));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("claim.submitted"),
        "the accepted names are listed: {stderr}"
    );

    // The ledger exported and verified offline; a changed amount and a deleted line are
    // caught and named, with no service involved.
    let export = dir.path().join("ledger.jsonl");
    let output = dev.run(&args(&[
        "ledger",
        "export",
        "--pool",
        "compute-voucher-2025",
        "--out",
        export.to_str().unwrap(),
    ]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let offline = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
            .args([
                "-o",
                "json",
                "ledger",
                "verify",
                "--file",
                file.to_str().unwrap(),
            ])
            .env("SUBSIDY_APPLICATION_URL", "https://127.0.0.1:1")
            .env("SUBSIDY_BUDGET_URL", "https://127.0.0.1:1")
            .output()
            .unwrap()
    };
    let verified = stdout_json(&offline(&export));
    assert_eq!(verified[0]["poolId"], "compute-voucher-2025", "{verified}");
    assert_eq!(verified[0]["entries"], 2, "{verified}");
    assert_eq!(verified[0]["held"], "100000.00", "{verified}");
    // An auditor's own code, written from docs/LEDGER.md alone, gets the same hashes.
    let independent = std::process::Command::new("python3")
        .arg(support::repo_root().join("docs/ledger/verify_hashes.py"))
        .arg(&export)
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&independent.stdout);
    assert!(independent.status.success(), "{said}");
    assert!(said.contains("2 entries match docs/LEDGER.md"), "{said}");
    let lines: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines[1].contains(r#""amount":"100000.00""#), "{}", lines[1]);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        format!(
            "{}\n{}\n",
            lines[0],
            lines[1].replace(r#""amount":"100000.00""#, r#""amount":"1000.00""#)
        ),
    )
    .unwrap();
    let (code, stderr) = failure(&offline(&tampered));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("BROKEN at pool compute-voucher-2025 sequence 2: entry_hash"),
        "{stderr}"
    );
    let truncated = dir.path().join("truncated.jsonl");
    std::fs::write(&truncated, format!("{}\n", lines[1])).unwrap();
    let (_, stderr) = failure(&offline(&truncated));
    assert!(stderr.contains("sequence 2 follows 0"), "{stderr}");

    // NOT_FOUND: exit 3, `CODE REASON: message` and the id involved.
    let (code, stderr) = failure(&dev.run(&args(&["claim", "show", "claim-none"])));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: NOT_FOUND CLAIM_NOT_FOUND: "),
        "{stderr}"
    );
    assert!(stderr.contains("\n  claim_id=claim-none"), "{stderr}");

    // INVALID_ARGUMENT: exit 4 with the field violation.
    let (code, stderr) = failure(&dev.run(&args(&[
        "enterprise",
        "register",
        "--uscc",
        "91370100MA3C00001X",
        "--name",
        "Bad Check Character Ltd.",
        "--email",
        "x@example.cn",
    ])));
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: INVALID_ARGUMENT "),
        "{stderr}"
    );
    assert!(stderr.contains("\n  uscc: "), "{stderr}");

    // FAILED_PRECONDITION: finalising an open round, exit 5.
    let round = stdout_json(&dev.run(&args(&[
        "-o",
        "json",
        "round",
        "open",
        "--title",
        "cli test",
        "--deadline",
        "+30d",
    ])));
    let round_id = round["roundId"].as_str().unwrap().to_owned();
    let (code, stderr) = failure(&dev.run(&args(&["round", "finalise", &round_id])));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: FAILED_PRECONDITION "),
        "{stderr}"
    );

    // UNAUTHENTICATED: a token that is not one, exit 7.
    let (code, stderr) = failure(&dev.run(&args(&["--token", "not-a-jwt", "pools"])));
    assert_eq!(code, 7, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: UNAUTHENTICATED "),
        "{stderr}"
    );

    // Unreachable: exit 6, so a script retries.
    let closed = support::free_ports()[0];
    let (code, stderr) = failure(&dev.run(&args(&[
        "--budget-url",
        &format!("https://127.0.0.1:{closed}"),
        "pools",
    ])));
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.starts_with("subsidyctl: UNAVAILABLE: cannot reach the budget"),
        "{stderr}"
    );

    // A wrong command line: exit 2, nothing sent.
    let (code, stderr) = failure(&dev.run(&args(&["claim", "frobnicate"])));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    let run = |words: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
            .args(words)
            .output()
            .unwrap();
        assert!(output.status.success(), "{words:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _subsidyctl"), "{bash}");
    assert!(bash.contains("approve"), "every subcommand is completed");
    assert!(run(&["completions", "zsh"]).contains("#compdef subsidyctl"));
    let man = run(&["man"]);
    assert!(man.contains(".TH subsidyctl 1"), "{man}");
    assert!(
        man.contains("Exit codes"),
        "the exit codes are in the manual"
    );
    // A reader that goes away early (`| head -1`) ends the command quietly with exit 0.
    let mut piped = std::process::Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let closed = piped.wait_with_output().unwrap();
    assert_eq!(
        closed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    assert!(
        closed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(dir.path().join("subsidyctl-claim-approve.1").exists());
}

#[test]
fn a_selection_round_runs_from_the_cli_to_the_disbursement() {
    // Proves every step a person does in the data-infrastructure program has a command:
    // open, submit, withdraw, close, score, finalise, list, show and disburse; and the finance
    // office's export of a day with an award and a claim paid: both rows in order with the
    // totals (CSV, both programs by default), the award alone with `--program` (XLSX).
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let json = |words: &[&str]| {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(words);
        stdout_json(&dev.run(&args(&all)))
    };
    let second = subsidy_common::uscc::complete("91370200MA0000001");
    let second = second.as_str();
    for (uscc, name) in [
        ("91370100MA3C00001H", "济南数据空间有限公司"),
        (second, "Qingdao Annotation Base Co., Ltd."),
    ] {
        json(&[
            "enterprise",
            "register",
            "--uscc",
            uscc,
            "--name",
            name,
            "--email",
            "a@example.cn",
        ]);
    }
    let round = json(&[
        "round",
        "open",
        "--title",
        "cli round",
        "--deadline",
        "+30d",
    ]);
    let round_id = round["roundId"].as_str().unwrap().to_owned();
    let attachment = dir.path().join("plan.pdf");
    std::fs::write(&attachment, b"the project plan").unwrap();
    let submit = |applicant: &str, title: &str| {
        json(&[
            "proposal",
            "submit",
            "--round",
            &round_id,
            "--applicant",
            applicant,
            "--category",
            "trusted-data-space",
            "--title",
            title,
            "--amount",
            "8000000.00",
            "--summary",
            "A trusted data space for county hospitals.",
            "--attachment",
            attachment.to_str().unwrap(),
        ])
    };
    let kept = submit("91370100MA3C00001H", "Jinan trusted data space");
    assert_eq!(kept["requestedAmount"], "8000000.00", "{kept}");
    assert_eq!(kept["attachments"][0]["fileName"], "plan.pdf", "{kept}");
    let kept_id = kept["proposalId"].as_str().unwrap().to_owned();
    let dropped = submit(second, "Qingdao annotation base");
    let dropped_id = dropped["proposalId"].as_str().unwrap().to_owned();
    let withdrawn = json(&["proposal", "withdraw", &dropped_id, "--reason", "merged"]);
    assert_eq!(
        withdrawn["state"], "PROPOSAL_STATE_WITHDRAWN",
        "{withdrawn}"
    );

    let closed = json(&["round", "close", &round_id]);
    assert_eq!(closed["state"], "SELECTION_ROUND_STATE_CLOSED", "{closed}");
    let scored = json(&[
        "round",
        "score",
        &kept_id,
        "--expert",
        "expert-1",
        "--organization",
        "91350100M000100Y43",
        "--score",
        "88",
    ]);
    assert_eq!(scored["scoreTotal"], 88, "{scored}");
    let finalised = json(&["round", "finalise", &round_id]);
    assert_eq!(
        finalised["awards"][0]["proposalId"],
        kept_id.as_str(),
        "{finalised}"
    );
    assert_eq!(
        finalised["awards"][0]["awardedAmount"], "8000000.00",
        "{finalised}"
    );

    let rounds = json(&["round", "list", "--state", "finalized"]);
    assert_eq!(rounds[0]["roundId"], round_id.as_str(), "{rounds}");
    let listed = json(&["proposal", "list", "--round", &round_id]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let paid = json(&[
        "proposal",
        "disburse",
        &kept_id,
        "--reference",
        "PAY-2026-0001",
        "--date",
        "2026-12-01",
        "--amount",
        "8000000.00",
    ]);
    assert_eq!(paid["state"], "PROPOSAL_STATE_DISBURSED", "{paid}");
    assert_eq!(paid["disbursedAmount"], "8000000.00", "{paid}");
    let shown = json(&["proposal", "show", &kept_id]);
    assert_eq!(
        shown["disbursement"]["paymentReference"], "PAY-2026-0001",
        "{shown}"
    );

    // A compute-voucher claim of the same enterprise paid the same day: 5% of 1,500,000.00.
    let claim = json(&["claim", "submit", "docs/examples/claim.yaml"]);
    let claim_id = claim["claimId"].as_str().unwrap().to_owned();
    dev.approve(&claim_id, "1500000.00");
    let paid_claim = json(&[
        "claim",
        "disburse",
        &claim_id,
        "--reference",
        "PAY-2026-0002",
        "--date",
        "2026-12-01",
        "--amount",
        "75000.00",
    ]);
    assert_eq!(paid_claim["state"], "CLAIM_STATE_DISBURSED", "{paid_claim}");

    // The finance office's export of the day's payments: both programs as CSV, the award's
    // program alone as XLSX.
    let export = |format: &str, program: &[&str]| {
        let out = dir.path().join(format!("payments.{format}"));
        let mut words = vec!["export", "disbursements"];
        words.extend_from_slice(program);
        let out_text = out.to_str().unwrap().to_owned();
        words.extend_from_slice(&[
            "--from",
            "2026-12-01",
            "--to",
            "2026-12-01",
            "--format",
            format,
            "--out",
            &out_text,
        ]);
        let output = dev.run(&args(&words));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    };
    let csv_file = export("csv", &[]);
    let bytes = std::fs::read(&csv_file).unwrap();
    assert!(
        bytes.starts_with("\u{feff}".as_bytes()),
        "a byte-order mark first"
    );
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "heading, two payments, totals: {text}");
    assert!(
        lines[0].starts_with("项目类型 Program,申请编号 Application ID"),
        "{text}"
    );
    // One payment date: the rows in id order, the claim before the proposal.
    let claim_row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(claim_row[0], "算力券 compute voucher", "{text}");
    assert_eq!(claim_row[1], claim_id, "{text}");
    assert_eq!(claim_row[2], "91370100MA3C00001H", "{text}");
    assert_eq!(claim_row[3], "济南数据空间有限公司", "{text}");
    assert_eq!(claim_row[4], "JNAI-2025-0318", "{text}");
    assert_eq!(claim_row[5], "compute-voucher-2025", "{text}");
    assert_eq!(
        (claim_row[7], claim_row[8]),
        ("75000.00", "75000.00"),
        "{text}"
    );
    assert_eq!(
        (claim_row[9], claim_row[10]),
        ("PAY-2026-0002", "2026-12-01"),
        "{text}"
    );
    assert!(!claim_row[13].is_empty(), "the reviewer is named: {text}");
    assert!(
        claim_row[15].split(' ').count() >= 2,
        "the hold and the commit are named: {text}"
    );
    let row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(row[0], "数据基础设施 data infrastructure", "{text}");
    assert_eq!(row[1], kept_id, "{text}");
    assert_eq!(row[3], "济南数据空间有限公司", "{text}");
    assert_eq!((row[7], row[8]), ("8000000.00", "8000000.00"), "{text}");
    assert_eq!(row[9], "PAY-2026-0001", "{text}");
    assert!(!row[15].is_empty(), "the ledger entries are named: {text}");
    let totals: Vec<&str> = lines[3].split(',').collect();
    assert_eq!(
        (totals[0], totals[1], totals[7], totals[8]),
        ("合计 Total", "2 笔 rows", "8075000.00", "8075000.00"),
        "{text}"
    );
    // Never replaced: the same file again is refused.
    let again = dev.run(&args(&[
        "export",
        "disbursements",
        "--from",
        "2026-12-01",
        "--to",
        "2026-12-01",
        "--out",
        csv_file.to_str().unwrap(),
    ]));
    assert!(!again.status.success());

    use calamine::Reader as _;
    let xlsx_file = export("xlsx", &["--program", "data-infra"]);
    let mut workbook: calamine::Xlsx<_> = calamine::open_workbook(&xlsx_file).unwrap();
    let sheet = workbook.worksheet_range("拨付明细 Disbursements").unwrap();
    assert_eq!(sheet.height(), 3);
    let cell = |row: u32, column: u32| sheet.get_value((row, column)).cloned();
    assert_eq!(
        cell(1, 3),
        Some(calamine::Data::String("济南数据空间有限公司".into()))
    );
    assert_eq!(cell(1, 8), Some(calamine::Data::Float(8_000_000.0)));
    assert_eq!(cell(2, 8), Some(calamine::Data::Float(8_000_000.0)));
}
