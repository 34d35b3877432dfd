//! `subsidyctl stats` against a fresh `subsidy dev`: with `--output json` the
//! `GetProgramStatisticsResponse` itself (amounts exact decimal strings, the multiplier a
//! decimal string), as tables for people, and bad arguments refused with the documented exit
//! codes.

mod support;

use chrono::Days;
use serde_json::Value;
use support::{Dev, args, succeeded};

#[test]
fn stats_prints_a_programs_figures_as_json_and_as_tables() {
    // Proves one approved claim of 2,000,000.00 (100,000.00 of subsidy) shows as the
    // service computes it: counts, amounts, the pool's burn rate over one day and its
    // exhaustion date, the multiplier 20.00 by city and provider; and that a reversed period
    // exits 4 (invalid) and an unknown program 2 (usage).
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let claim_id = dev.submit_example_claim();
    dev.approve(&claim_id, "2000000.00");

    let today = chrono::Utc::now()
        .with_timezone(&subsidy_common::time::shanghai())
        .date_naive();
    let day = today.to_string();
    let stats: Value = serde_json::from_str(&succeeded(&dev.run(&args(&[
        "-o",
        "json",
        "stats",
        "--program",
        "compute-voucher",
        "--from",
        &day,
        "--to",
        &day,
    ]))))
    .unwrap();
    assert_eq!(stats["program"], "APPLICATION_KIND_COMPUTE_VOUCHER_CLAIM");
    assert_eq!(stats["applicationCount"], 1, "{stats}");
    assert_eq!(stats["requestedAmount"], "100000.00", "{stats}");
    assert_eq!(stats["approvedAmount"], "100000.00", "{stats}");
    assert_eq!(stats["disbursedAmount"], "0.00", "{stats}");
    let approved = stats["stateCounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|count| count["state"]["claimState"] == "CLAIM_STATE_APPROVED")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(approved["count"], 1, "{stats}");
    let pool = &stats["pools"][0];
    assert_eq!(pool["poolId"], "compute-voucher-2025", "{stats}");
    assert_eq!(pool["available"], "29900000.00", "{stats}");
    assert_eq!(pool["dayCount"], 1, "{stats}");
    assert_eq!(pool["burnRatePerDay"], "100000.00", "{stats}");
    // 29,900,000.00 at 100,000.00 a day lasts 299 days from the day computed.
    let as_of: chrono::NaiveDate = {
        let d = &stats["asOfDate"];
        chrono::NaiveDate::from_ymd_opt(
            d["year"].as_i64().unwrap() as i32,
            d["month"].as_u64().unwrap() as u32,
            d["day"].as_u64().unwrap() as u32,
        )
        .unwrap()
    };
    let exhausted = as_of.checked_add_days(Days::new(299)).unwrap();
    let d = &pool["projectedExhaustionDate"];
    assert_eq!(
        (d["year"].as_i64(), d["month"].as_u64(), d["day"].as_u64()),
        (
            Some(i64::from(chrono::Datelike::year(&exhausted))),
            Some(u64::from(chrono::Datelike::month(&exhausted))),
            Some(u64::from(chrono::Datelike::day(&exhausted)))
        ),
        "{stats}"
    );
    let overall = &stats["multiplier"]["overall"];
    assert_eq!(overall["contractVolume"], "2000000.00", "{stats}");
    assert_eq!(overall["subsidy"], "100000.00", "{stats}");
    assert_eq!(overall["multiplier"], "20.00", "{stats}");
    assert_eq!(
        stats["multiplier"]["byBuyerCity"][0]["divisionCode"],
        "370100"
    );
    assert_eq!(
        stats["multiplier"]["byComputeProvider"][0]["sellerUscc"],
        "91370102MA3D000024"
    );
    assert_eq!(
        stats["multiplier"]["byDataCenterCity"][0]["divisionCode"],
        "370100"
    );

    // For people: the summary and the tables.
    let table = succeeded(&dev.run(&args(&[
        "stats",
        "--program",
        "compute-voucher",
        "--from",
        &day,
        "--to",
        &day,
    ])));
    for expected in [
        "REQUESTED",
        "100,000.00",
        "APPROVED",
        "compute-voucher-2025",
        "29,900,000.00",
        "MULTIPLIER",
        "20.00",
        "BUYER CITY",
        "370100",
        "Jinan Intelligent Computing Center Co., Ltd.",
    ] {
        assert!(table.contains(expected), "{expected} missing: {table}");
    }
    let proposals = succeeded(&dev.run(&args(&[
        "stats",
        "--program",
        "data-infra",
        "--from",
        &day,
        "--to",
        &day,
    ])));
    assert!(
        proposals.contains("APPLICATION_KIND_DATA_INFRASTRUCTURE_PROPOSAL"),
        "{proposals}"
    );
    assert!(proposals.contains("NOT_SELECTED"), "{proposals}");
    assert!(!proposals.contains("MULTIPLIER"), "{proposals}");

    // A reversed period: INVALID_ARGUMENT, exit 4, the field named.
    let yesterday = today.checked_sub_days(Days::new(1)).unwrap().to_string();
    let output = dev.run(&args(&[
        "stats",
        "--program",
        "compute-voucher",
        "--from",
        &day,
        "--to",
        &yesterday,
    ]));
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
    assert!(stderr.contains("to_date"), "{stderr}");
    // An unknown program or a malformed date: a usage error, exit 2.
    for bad in [
        ["--program", "rockets", "--from", &day, "--to", &day],
        [
            "--program",
            "data-infra",
            "--from",
            "2025-13-01",
            "--to",
            &day,
        ],
    ] {
        let mut words = vec!["stats"];
        words.extend(bad);
        let output = dev.run(&args(&words));
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
    }
}
