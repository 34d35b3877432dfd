//! GetPublicityPeriod over gRPC: the shipped versions' default of five working days counted on
//! the shipped calendar, a version with its own length, the refusal of a length above the
//! maximum, and of a request without a program or start time.

mod support;

use subsidy_proto::rules as pb;
use subsidy_proto::status::violated_fields;
use support::*;
use tonic::Code;

fn at(text: &str) -> prost_types::Timestamp {
    let instant = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: 0,
    }
}

fn period_request(
    program: pb::Program,
    start: &str,
    version: &str,
) -> pb::GetPublicityPeriodRequest {
    pb::GetPublicityPeriodRequest {
        program: program as i32,
        start_time: Some(at(start)),
        policy_version: version.into(),
    }
}

fn with_publicity(mut draft: pb::PolicyDraft, days: u32) -> pb::PolicyDraft {
    use pb::policy_parameters::ProgramParameters;
    match draft
        .parameters
        .as_mut()
        .and_then(|p| p.program_parameters.as_mut())
    {
        Some(ProgramParameters::ComputeVoucher(p)) => p.publicity_working_days = Some(days),
        Some(ProgramParameters::DataInfra(p)) => p.publicity_working_days = Some(days),
        None => unreachable!("a shipped draft has parameters"),
    }
    draft
}

#[tokio::test]
async fn an_award_before_national_day_ends_its_publicity_after_the_golden_week() {
    // Proves the shipped 2025.1 versions use five working days on the shipped calendar: an
    // award on Friday 2025-09-26 ends at 24:00 Shanghai on 2025-10-10 (09-28, 09-29, 09-30,
    // 10-09, 10-10 counted), for both programs.
    let url = fresh_db("rules_publicity").await;
    let mut client = spawn(store(&url, true).await).await;
    for program in [pb::Program::ComputeVoucher, pb::Program::DataInfra] {
        let period = client
            .get_publicity_period(period_request(program, "2025-09-26T08:00:00Z", ""))
            .await
            .expect("a period")
            .into_inner();
        assert_eq!(period.working_days, 5);
        assert_eq!(period.policy_version, "2025.1");
        assert_eq!(period.end_time, Some(at("2025-10-10T16:00:00Z")));
        assert_eq!(period.last_working_day, date(2025, 10, 10));
        assert_eq!(period.start_time, Some(at("2025-09-26T08:00:00Z")));
        assert!(period.calendar_covered);
    }
}

#[tokio::test]
async fn a_version_with_its_own_length_is_used_when_named_and_a_length_above_thirty_is_refused() {
    // Proves a published version's publicity length is what GetPublicityPeriod counts (0: the
    // period ends at the award) and a draft with 31 working days is refused naming the field.
    let url = fresh_db("rules_publicity_version").await;
    let mut client = spawn(store(&url, true).await).await;
    let zero = with_publicity(draft("compute-voucher", "2025.2", |d| d), 0);
    client
        .publish_policy(publish_request("publish-zero", zero))
        .await
        .expect("published");
    let period = client
        .get_publicity_period(period_request(
            pb::Program::ComputeVoucher,
            "2025-01-24T04:00:00Z",
            "2025.2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(period.working_days, 0);
    assert_eq!(period.end_time, Some(at("2025-01-24T04:00:00Z")));
    assert_eq!(period.last_working_day, None);
    // 2025.1 by name still has five days, across the Spring Festival.
    let shipped = client
        .get_publicity_period(period_request(
            pb::Program::ComputeVoucher,
            "2025-01-24T04:00:00Z",
            "2025.1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.end_time, Some(at("2025-02-07T16:00:00Z")));

    let long = with_publicity(draft("data-infra", "2025.2", |d| d), 31);
    let status = client
        .publish_policy(publish_request("publish-long", long))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        violated_fields(&status)
            .iter()
            .any(|f| f.ends_with("publicity_working_days")),
        "{:?}",
        violated_fields(&status)
    );
}

#[tokio::test]
async fn a_period_request_without_program_or_start_is_refused() {
    // Proves the request's required fields are named in the refusal.
    let url = fresh_db("rules_publicity_invalid").await;
    let mut client = spawn(store(&url, true).await).await;
    let status = client
        .get_publicity_period(pb::GetPublicityPeriodRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(fields.contains(&"program".to_string()) && fields.contains(&"start_time".to_string()));
}
