//! `GetProgramStatistics` through the four real services, on fixtures whose every figure is
//! known: applications by state, amounts requested / approved / disbursed, each pool's burn
//! rate and projected exhaustion, the compute-voucher multiplier overall and by buyer's city,
//! compute provider and data-center city, and the median time to decision; the same amounts
//! as gauges on the scrape endpoint; bad requests refused with field violations; applicants
//! refused.

mod application_support;

use application_support::*;
use chrono::{Days, NaiveDate};
use subsidy_common::Uscc;
use subsidy_common::config::ServiceKind;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_proto::google::r#type::Date;
use subsidy_proto::status::reason;
use subsidy_testkit::auth::{bearer, token};
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::scrape::{free_port, scrape, value};
use subsidy_testkit::*;
use tonic::Code;
use tonic_types::StatusExt;

const CLAIMS: pb::ApplicationKind = pb::ApplicationKind::ComputeVoucherClaim;
const PROPOSALS: pb::ApplicationKind = pb::ApplicationKind::DataInfrastructureProposal;

fn shanghai_today() -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&subsidy_common::time::shanghai())
        .date_naive()
}

fn date(day: NaiveDate) -> Option<Date> {
    Some(subsidy_common::edge::date(day))
}

fn naive(day: &Option<Date>) -> NaiveDate {
    let day = day.as_ref().expect("a date");
    NaiveDate::from_ymd_opt(day.year, day.month as u32, day.day as u32).expect("a full date")
}

fn request(
    program: pb::ApplicationKind,
    from: NaiveDate,
    to: NaiveDate,
) -> pb::GetProgramStatisticsRequest {
    pb::GetProgramStatisticsRequest {
        program: program as i32,
        from_date: date(from),
        to_date: date(to),
    }
}

async fn statistics(
    app: &mut App,
    program: pb::ApplicationKind,
    from: NaiveDate,
    to: NaiveDate,
) -> pb::GetProgramStatisticsResponse {
    app.get_program_statistics(request(program, from, to))
        .await
        .expect("the statistics")
        .into_inner()
}

/// The response's `as_of_date`, checked to be today in Shanghai (read before or after the call,
/// in case the call straddled midnight).
fn checked_as_of(response: &pb::GetProgramStatisticsResponse, before: NaiveDate) -> NaiveDate {
    let as_of = naive(&response.as_of_date);
    assert!(
        as_of == before || as_of == shanghai_today(),
        "as of {as_of}, today {before}"
    );
    as_of
}

/// The counts of the response by the state's proto name.
fn counts(response: &pb::GetProgramStatisticsResponse) -> Vec<(String, i64)> {
    response
        .state_counts
        .iter()
        .map(|count| {
            let name = match count.state.as_ref().and_then(|s| s.state) {
                Some(pb::application_state::State::ClaimState(v)) => {
                    pb::ClaimState::try_from(v).unwrap().as_str_name()
                }
                Some(pb::application_state::State::ProposalState(v)) => {
                    pb::ProposalState::try_from(v).unwrap().as_str_name()
                }
                None => "none",
            };
            (name.to_owned(), count.count)
        })
        .collect()
}

fn named(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

fn micros(time: &Option<prost_types::Timestamp>) -> i64 {
    let time = time.as_ref().expect("a time");
    time.seconds * 1_000_000 + i64::from(time.nanos / 1_000)
}

fn duration_micros(duration: &Option<prost_types::Duration>) -> i64 {
    let duration = duration.as_ref().expect("a duration");
    duration.seconds * 1_000_000 + i64::from(duration.nanos / 1_000)
}

/// The lower middle of `values` sorted.
fn lower_median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}

/// (key, name, funded claims, contract volume fen, subsidy fen, multiplier) of each group.
fn groups(groups: &[pb::MultiplierGroup]) -> Vec<(String, String, i64, i64, i64, String)> {
    groups
        .iter()
        .map(|group| {
            let figures = group.figures.as_ref().expect("figures");
            let key = if group.seller_uscc.is_empty() {
                group.division_code.clone()
            } else {
                group.seller_uscc.clone()
            };
            (
                key,
                group.seller_name.clone(),
                figures.funded_claim_count,
                fen_of(&figures.contract_volume),
                fen_of(&figures.subsidy),
                figures.multiplier.clone(),
            )
        })
        .collect()
}

fn group(
    key: &str,
    name: &str,
    count: i64,
    volume_fen: i64,
    subsidy_fen: i64,
    multiplier: &str,
) -> (String, String, i64, i64, i64, String) {
    (
        key.into(),
        name.into(),
        count,
        volume_fen,
        subsidy_fen,
        multiplier.into(),
    )
}

/// A contract of `seller` named `seller_name` for compute in the data center of `division`.
fn contract_at(
    number: &str,
    seller: &Uscc,
    seller_name: &str,
    division: &str,
    total_fen: i64,
) -> pb::ComputeContract {
    let mut contract = contract(number, seller, total_fen);
    contract.seller_name = seller_name.into();
    contract.data_center_division_code = division.into();
    contract
}

async fn disburse_claim(app: &mut App, claim_id: &str, fen: i64) {
    app.record_claim_disbursement(pb::RecordClaimDisbursementRequest {
        request_id: format!("pay-{claim_id}"),
        claim_id: claim_id.into(),
        payment_reference: format!("PAY-{claim_id}"),
        payment_date: Some(today_shanghai()),
        amount: cny(fen),
    })
    .await
    .expect("record the payment");
}

async fn approved(app: &mut App, claim_id: &str, verified_fen: i64) -> pb::Claim {
    approve_claim(
        app,
        approve(&format!("approve-{claim_id}"), claim_id, verified_fen),
    )
    .await
    .expect("approve")
    .into_inner()
    .claim
    .expect("the claim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_voucher_statistics_give_every_figure_of_a_known_fixture_exactly() {
    // Proves each compute-voucher figure on seven claims whose outcomes are known: counts by
    // state, requested (entitlements of evaluated claims), approved, disbursed, the pool's
    // amounts, burn rate and exhaustion date, the multiplier (rounded down: 23.636… is 23.63)
    // by buyer's city, provider (with its latest name) and data-center city, the lower-middle
    // median of four review times, and the same amounts as gauges.
    let metrics_port = free_port();
    let mut overrides = test_pool_application(&[]);
    overrides
        .entry(ServiceKind::Application)
        .or_default()
        .push((
            "SUBSIDY_METRICS_LISTEN".into(),
            format!("127.0.0.1:{metrics_port}"),
        ));
    // A pool of 1,000,000.00.
    let stack = with_pool_and(overrides, 100_000_000, LONG_HOLD_SECONDS).await;
    let mut app = stack.app().await;
    let jinan = shandong(61);
    let jinan_too = shandong(62);
    let beijing_buyer = beijing(63);
    // Registered in Qingdao's Shinan district (370202): its city is 370200.
    let qingdao = subsidy_common::uscc::complete("91370202MA0000064");
    for buyer in [&jinan, &jinan_too, &beijing_buyer, &qingdao] {
        register(&mut app, buyer).await;
    }
    let (one, two, three) = (seller(61), seller(62), seller(63));

    // A: 1,000,000.00 in Jinan (370102); 50,000.00 held; 800,000.00 verified: 40,000.00; paid.
    let a = submitted(
        &mut app,
        "st-a",
        &jinan,
        contract_at("ST-A", &one, "Provider One", "370102", 100_000_000),
    )
    .await;
    // B: 2,000,000.00 in Qingdao (370211); 100,000.00 held and approved in full.
    let b = submitted(
        &mut app,
        "st-b",
        &beijing_buyer,
        contract_at("ST-B", &two, "Provider Two", "370211", 200_000_000),
    )
    .await;
    // C: 300,000.00 in Qingdao (370203) from provider one under its new name; 15,000.00.
    let c = submitted(
        &mut app,
        "st-c",
        &qingdao,
        contract_at("ST-C", &one, "Provider One Renamed", "370203", 30_000_000),
    )
    .await;
    // D: 500,000.00; 25,000.00 held, then rejected.
    let d = submitted(
        &mut app,
        "st-d",
        &jinan,
        contract_at("ST-D", &two, "Provider Two", "370102", 50_000_000),
    )
    .await;
    // E: 100,000.00; 5,000.00 held, then withdrawn.
    let e = submitted(
        &mut app,
        "st-e",
        &jinan_too,
        contract_at("ST-E", &three, "Provider Three", "370102", 10_000_000),
    )
    .await;
    // F: general-purpose hosting: ineligible, no entitlement.
    let mut hosting = contract_at("ST-F", &three, "Provider Three", "370102", 10_000_000);
    hosting.compute_type = pb::ComputeType::GeneralPurposeHosting as i32;
    let f = submitted(&mut app, "st-f", &jinan_too, hosting).await;
    // G: 400,000.00; 20,000.00 held, awaiting review.
    let g = submitted(
        &mut app,
        "st-g",
        &beijing_buyer,
        contract_at("ST-G", &one, "Provider One", "370102", 40_000_000),
    )
    .await;
    for claim in [&a, &b, &c, &d, &e, &g] {
        assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    }
    assert_eq!(f.state(), pb::ClaimState::Ineligible, "{f:?}");

    assert_eq!(
        fen_of(
            &approved(&mut app, &a.claim_id, 80_000_000)
                .await
                .approved_amount
        ),
        4_000_000
    );
    assert_eq!(
        fen_of(
            &approved(&mut app, &b.claim_id, 200_000_000)
                .await
                .approved_amount
        ),
        10_000_000
    );
    assert_eq!(
        fen_of(
            &approved(&mut app, &c.claim_id, 30_000_000)
                .await
                .approved_amount
        ),
        1_500_000
    );
    app.reject_claim(reject("st-reject-d", &d.claim_id))
        .await
        .unwrap();
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "st-withdraw-e".into(),
        claim_id: e.claim_id.clone(),
        reason: "contract cancelled".into(),
    })
    .await
    .unwrap();
    disburse_claim(&mut app, &a.claim_id, 4_000_000).await;

    // The period: nine days ago to twenty days ahead; ten of its days have passed.
    let today = shanghai_today();
    let from = today.checked_sub_days(Days::new(9)).unwrap();
    let to = today.checked_add_days(Days::new(20)).unwrap();
    let response = statistics(&mut app, CLAIMS, from, to).await;
    let as_of = checked_as_of(&response, today);
    assert_eq!(response.program(), CLAIMS);
    assert_eq!(
        (naive(&response.from_date), naive(&response.to_date)),
        (from, to)
    );
    assert_eq!(response.application_count, 7);
    assert_eq!(
        counts(&response),
        named(&[
            ("CLAIM_STATE_SUBMITTED", 0),
            ("CLAIM_STATE_INELIGIBLE", 1),
            ("CLAIM_STATE_WAITLISTED", 0),
            ("CLAIM_STATE_PENDING_REVIEW", 1),
            ("CLAIM_STATE_APPROVED", 2),
            ("CLAIM_STATE_REJECTED", 1),
            ("CLAIM_STATE_WITHDRAWN", 1),
            ("CLAIM_STATE_EXPIRED", 0),
            ("CLAIM_STATE_DISBURSED", 1),
            ("CLAIM_STATE_NEEDS_INFORMATION", 0),
            ("CLAIM_STATE_REVOKED", 0),
        ])
    );
    // Entitlements A 50,000 + B 100,000 + C 15,000 + D 25,000 + E 5,000 + G 20,000; F none.
    assert_eq!(fen_of(&response.requested_amount), 21_500_000);
    // A 40,000 + B 100,000 + C 15,000.
    assert_eq!(fen_of(&response.approved_amount), 15_500_000);
    assert_eq!(fen_of(&response.disbursed_amount), 4_000_000);

    // The pool: G's 20,000.00 held, 155,000.00 committed, 825,000.00 left; 155,000.00 over
    // the days passed of the period is the burn rate, ceil(825,000 / rate) days to run out.
    assert_eq!(response.pools.len(), 1);
    let pool = &response.pools[0];
    assert_eq!(pool.pool_id, TEST_POOL);
    assert_eq!(fen_of(&pool.total), 100_000_000);
    assert_eq!(fen_of(&pool.held), 2_000_000);
    assert_eq!(fen_of(&pool.committed), 15_500_000);
    assert_eq!(fen_of(&pool.available), 82_500_000);
    assert_eq!(fen_of(&pool.period_committed_amount), 15_500_000);
    let days = (as_of - from).num_days() + 1;
    assert_eq!(pool.day_count, days);
    let rate = 15_500_000 / days;
    assert_eq!(fen_of(&pool.burn_rate_per_day), rate);
    let lasting = (82_500_000 + rate - 1) / rate;
    assert_eq!(
        naive(&pool.projected_exhaustion_date),
        as_of.checked_add_days(Days::new(lasting as u64)).unwrap()
    );
    if as_of == today {
        // 1,550,000 fen a day lasts 53.2 days: 54.
        assert_eq!((days, rate, lasting), (10, 1_550_000, 54));
    }

    // The multiplier: 3,300,000.00 of contracts for 155,000.00 of subsidy is 21.29.
    let multiplier = response
        .multiplier
        .as_ref()
        .expect("compute vouchers have one");
    let overall = multiplier.overall.as_ref().unwrap();
    assert_eq!(overall.funded_claim_count, 3);
    assert_eq!(fen_of(&overall.contract_volume), 330_000_000);
    assert_eq!(fen_of(&overall.subsidy), 15_500_000);
    assert_eq!(overall.multiplier, "21.29");
    assert_eq!(
        groups(&multiplier.by_buyer_city),
        [
            group("110100", "", 1, 200_000_000, 10_000_000, "20.00"),
            group("370100", "", 1, 100_000_000, 4_000_000, "25.00"),
            group("370200", "", 1, 30_000_000, 1_500_000, "20.00"),
        ]
    );
    assert_eq!(
        groups(&multiplier.by_compute_provider),
        [
            group(
                two.as_str(),
                "Provider Two",
                1,
                200_000_000,
                10_000_000,
                "20.00"
            ),
            // 130,000,000 / 5,500,000 = 23.636…: rounded down.
            group(
                one.as_str(),
                "Provider One Renamed",
                2,
                130_000_000,
                5_500_000,
                "23.63"
            ),
        ]
    );
    assert_eq!(
        groups(&multiplier.by_data_center_city),
        [
            group("370200", "", 2, 230_000_000, 11_500_000, "20.00"),
            group("370100", "", 1, 100_000_000, 4_000_000, "25.00"),
        ]
    );
    assert_eq!(multiplier.omitted_group_count, 0);

    // The median time to decision: of A, B, C (approved) and D (rejected), the lower middle.
    let mut review_times = Vec::new();
    for claim in [&a, &b, &c, &d] {
        let claim = get_claim(&mut app, &claim.claim_id).await;
        review_times.push(micros(&claim.review_time) - micros(&claim.submit_time));
    }
    assert_eq!(response.decided_count, 4);
    assert_eq!(
        duration_micros(&response.decision_time_median),
        lower_median(review_times)
    );

    // One day, today, holds the same applications; a period that ended yesterday none.
    let today_only = statistics(&mut app, CLAIMS, as_of, as_of).await;
    assert_eq!(today_only.application_count, 7);
    assert_eq!(today_only.pools[0].day_count, 1);
    assert_eq!(fen_of(&today_only.pools[0].burn_rate_per_day), 15_500_000);
    let yesterday = as_of.checked_sub_days(Days::new(1)).unwrap();
    let before = statistics(&mut app, CLAIMS, from, yesterday).await;
    assert_eq!(before.application_count, 0);
    assert!(before.state_counts.iter().all(|count| count.count == 0));
    assert_eq!(before.state_counts.len(), 11);
    assert_eq!(fen_of(&before.requested_amount), 0);
    assert!(before.pools.is_empty());
    let nothing = before
        .multiplier
        .as_ref()
        .unwrap()
        .overall
        .as_ref()
        .unwrap();
    assert_eq!(
        (nothing.funded_claim_count, nothing.multiplier.as_str()),
        (0, "")
    );
    assert_eq!(before.decided_count, 0);
    assert_eq!(before.decision_time_median, None);

    // The gauges: the same amounts over all time (every claim of this database is in the
    // period), in fen.
    let samples = scrape(metrics_port).await;
    let amount = |name: &'static str| {
        value(
            &samples,
            "subsidy_application_amount",
            &[("program", "compute_voucher"), ("amount", name)],
        )
    };
    assert_eq!(amount("requested"), Some(21_500_000.0));
    assert_eq!(amount("approved"), Some(15_500_000.0));
    assert_eq!(amount("disbursed"), Some(4_000_000.0));
    assert_eq!(amount("funded_contract_volume"), Some(330_000_000.0));
    assert_eq!(
        value(
            &samples,
            "subsidy_application_decision_seconds_median",
            &[("program", "compute_voucher")]
        ),
        Some((duration_micros(&response.decision_time_median) / 1_000_000) as f64)
    );
    assert_eq!(
        value(
            &samples,
            "subsidy_application_amount",
            &[("program", "data_infrastructure"), ("amount", "requested")]
        ),
        Some(0.0)
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_infrastructure_statistics_give_every_figure_of_a_known_round_exactly() {
    // Proves each proposal figure on a finalised round: counts by state, requested (every
    // proposal's request), awarded, paid, the round's pool with its burn rate and exhaustion,
    // no multiplier, and the median time from submission to the round's finalisation.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    // 4,500,000.00 for the round.
    let (mut app, round) = open_round(&stack, 450_000_000).await;
    let (a, b, c, far, gone) = (
        shandong(71),
        shandong(72),
        shandong(73),
        beijing(74),
        shandong(75),
    );
    let expert_org = seller(79);
    for who in [&a, &b, &c, &far, &gone] {
        register(&mut app, who).await;
    }
    let first = propose(&mut app, &round.round_id, &a, "st-first", 300_000_000).await;
    let second = propose(&mut app, &round.round_id, &b, "st-second", 100_000_000).await;
    let unscored = propose(&mut app, &round.round_id, &c, "st-unscored", 100_000_000).await;
    let outside = propose(&mut app, &round.round_id, &far, "st-outside", 50_000_000).await;
    let withdrawn = propose(&mut app, &round.round_id, &gone, "st-withdrawn", 70_000_000).await;
    assert_eq!(outside.state(), pb::ProposalState::Ineligible);
    app.withdraw_proposal(pb::WithdrawProposalRequest {
        request_id: "st-withdraw".into(),
        proposal_id: withdrawn.proposal_id.clone(),
        reason: "merged into another project".into(),
    })
    .await
    .unwrap();
    score(&mut app, &first.proposal_id, "e1", &expert_org, 90)
        .await
        .unwrap();
    score(&mut app, &second.proposal_id, "e1", &expert_org, 80)
        .await
        .unwrap();
    close(&mut app, &round.round_id).await;
    let result = app
        .finalize_selection_round(finalize("st-finalize", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.awards.len(), 2);
    app.record_proposal_disbursement(pb::RecordProposalDisbursementRequest {
        request_id: "st-pay".into(),
        proposal_id: first.proposal_id.clone(),
        payment_reference: "PAY-ST-1".into(),
        payment_date: Some(today_shanghai()),
        amount: cny(300_000_000),
    })
    .await
    .unwrap();

    let today = shanghai_today();
    let from = today.checked_sub_days(Days::new(3)).unwrap();
    let response = statistics(&mut app, PROPOSALS, from, today).await;
    let as_of = checked_as_of(&response, today);
    assert_eq!(response.application_count, 5);
    assert_eq!(
        counts(&response),
        named(&[
            ("PROPOSAL_STATE_SUBMITTED", 0),
            ("PROPOSAL_STATE_INELIGIBLE", 1),
            ("PROPOSAL_STATE_ELIGIBLE", 0),
            ("PROPOSAL_STATE_AWARDED", 1),
            ("PROPOSAL_STATE_NOT_SELECTED", 1),
            ("PROPOSAL_STATE_WITHDRAWN", 1),
            ("PROPOSAL_STATE_DISBURSED", 1),
            ("PROPOSAL_STATE_REVOKED", 0),
        ])
    );
    // 3,000,000 + 1,000,000 + 1,000,000 + 500,000 + 700,000: every request, 6,200,000.00.
    assert_eq!(fen_of(&response.requested_amount), 620_000_000);
    assert_eq!(fen_of(&response.approved_amount), 400_000_000);
    assert_eq!(fen_of(&response.disbursed_amount), 300_000_000);
    assert_eq!(response.multiplier, None);

    // The round's pool: 4,000,000.00 committed, 500,000.00 left; over the four days of the
    // period (to today) 1,000,000.00 a day, which the rest lasts one day.
    assert_eq!(response.pools.len(), 1);
    let pool = &response.pools[0];
    assert_eq!(pool.pool_id, ROUND_POOL);
    assert_eq!(fen_of(&pool.total), 450_000_000);
    assert_eq!(fen_of(&pool.held), 0);
    assert_eq!(fen_of(&pool.committed), 400_000_000);
    assert_eq!(fen_of(&pool.available), 50_000_000);
    assert_eq!(fen_of(&pool.period_committed_amount), 400_000_000);
    let days = (as_of.min(today) - from).num_days() + 1;
    assert_eq!(pool.day_count, days);
    let rate = 400_000_000 / days;
    assert_eq!(fen_of(&pool.burn_rate_per_day), rate);
    let lasting = (50_000_000 + rate - 1) / rate;
    assert_eq!(
        naive(&pool.projected_exhaustion_date),
        as_of.checked_add_days(Days::new(lasting as u64)).unwrap()
    );
    if as_of == today {
        assert_eq!((days, rate, lasting), (4, 100_000_000, 1));
    }

    // Decided by the finalisation: the awarded, the paid and the one not selected.
    let finalized = micros(&result.round.as_ref().unwrap().finalize_time);
    let mut times = Vec::new();
    for proposal in [&first, &second, &unscored] {
        times.push(finalized - micros(&proposal.submit_time));
    }
    assert_eq!(response.decided_count, 3);
    assert_eq!(
        duration_micros(&response.decision_time_median),
        lower_median(times)
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_bad_statistics_request_is_refused_with_a_violation_for_each_field() {
    // Proves the program, full dates and the order of the period are checked, each named as
    // a field violation under INVALID_ARGUMENT, and that an applicant may not read statistics.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
    let fields = |status: &tonic::Status| -> Vec<String> {
        status
            .get_details_bad_request()
            .expect("a BadRequest")
            .field_violations
            .into_iter()
            .map(|violation| violation.field)
            .collect()
    };
    let status = app
        .get_program_statistics(pb::GetProgramStatisticsRequest {
            program: 0,
            from_date: Some(Date {
                year: 2025,
                month: 1,
                day: 0,
            }),
            to_date: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(fields(&status), ["program", "from_date", "to_date"]);
    let day = |text: &str| text.parse::<NaiveDate>().unwrap();
    let status = app
        .get_program_statistics(request(CLAIMS, day("2025-03-02"), day("2025-03-01")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["to_date"]);
    let status = app
        .get_program_statistics(request(PROPOSALS, day("2015-01-01"), day("2025-12-31")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["to_date"]);

    // An applicant is refused by the access declaration, whatever it asks.
    let applicant = shandong(81);
    let mut call = tonic::Request::new(request(CLAIMS, day("2025-01-01"), day("2025-12-31")));
    call.metadata_mut().insert(
        "authorization",
        bearer(&token(
            "applicant-81",
            &[Role::Applicant],
            &[applicant.to_string()],
            None,
        )),
    );
    let status = app.get_program_statistics(call).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // An auditor may.
    let mut call = tonic::Request::new(request(CLAIMS, day("2025-01-01"), day("2025-12-31")));
    call.metadata_mut().insert(
        "authorization",
        bearer(&token("auditor-1", &[Role::Auditor], &[], None)),
    );
    let answered = app.get_program_statistics(call).await.unwrap().into_inner();
    assert_eq!(answered.application_count, 0);
    stack.shutdown().await;
}
