//! `subsidyctl stats --program compute-voucher|data-infra --from YYYY-MM-DD --to YYYY-MM-DD`:
//! a program's statistics over a period of submission dates (`GetProgramStatistics`), as a
//! summary followed by tables of states, pools and, for compute vouchers, the multiplier by
//! buyer's city, compute provider and data-center city. `--output json` prints the response
//! message itself.

use chrono::NaiveDate;
use clap::Args;
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::{Client, history_state};
use crate::ctl::{
    Ctx, Output, Program, date_text, json, money, print_json, print_record, proto_date, table,
    write_out,
};

/// The arguments of `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The program.
    #[arg(long, value_enum)]
    pub program: Program,
    /// The first day of the period of submission (inclusive, Asia/Shanghai), YYYY-MM-DD.
    #[arg(long)]
    pub from: NaiveDate,
    /// The last day of the period of submission (inclusive, Asia/Shanghai), YYYY-MM-DD.
    #[arg(long)]
    pub to: NaiveDate,
}

/// A duration as `[Nd ]HH:MM:SS.ffffff`.
fn duration_text(value: &Option<prost_types::Duration>) -> String {
    let Some(value) = value else {
        return "-".to_owned();
    };
    let micros = value.nanos / 1_000;
    let (days, rest) = (value.seconds / 86_400, value.seconds % 86_400);
    let clock = format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}d {clock}")
    } else {
        clock
    }
}

/// `stats`: prints the statistics.
pub(super) async fn stats(ctx: &Ctx, client: &mut Client, args: StatsArgs) -> Result<(), BoxError> {
    let statistics = client
        .get_program_statistics(ctx.request(pb::GetProgramStatisticsRequest {
            program: args.program.kind() as i32,
            from_date: Some(proto_date(args.from)),
            to_date: Some(proto_date(args.to)),
        }))
        .await?
        .into_inner();
    if ctx.output == Output::Json {
        print_json(&json::message(&statistics));
        return Ok(());
    }
    print_record(ctx, &summary(&statistics), || json::message(&statistics));
    write_out("\n");
    let states: Vec<Vec<String>> = statistics
        .state_counts
        .iter()
        .map(|count| vec![history_state(&count.state), count.count.to_string()])
        .collect();
    write_out(&table(&["STATE", "APPLICATIONS"], &states));
    if !statistics.pools.is_empty() {
        write_out("\n");
        write_out(&table(
            &[
                "POOL",
                "TOTAL",
                "HELD",
                "COMMITTED",
                "AVAILABLE",
                "PERIOD COMMITTED",
                "DAYS",
                "BURN/DAY",
                "EXHAUSTED BY",
            ],
            &statistics.pools.iter().map(pool_row).collect::<Vec<_>>(),
        ));
    }
    if let Some(multiplier) = &statistics.multiplier {
        print_multiplier(multiplier);
    }
    Ok(())
}

fn summary(statistics: &pb::GetProgramStatisticsResponse) -> Vec<(&'static str, String)> {
    vec![
        (
            "PROGRAM",
            pb::ApplicationKind::try_from(statistics.program)
                .map(|kind| kind.as_str_name().to_owned())
                .unwrap_or_default(),
        ),
        (
            "PERIOD",
            format!(
                "{} to {}",
                date_text(&statistics.from_date),
                date_text(&statistics.to_date)
            ),
        ),
        ("AS OF", date_text(&statistics.as_of_date)),
        ("APPLICATIONS", statistics.application_count.to_string()),
        ("REQUESTED", money(&statistics.requested_amount)),
        ("APPROVED", money(&statistics.approved_amount)),
        ("DISBURSED", money(&statistics.disbursed_amount)),
        ("DECIDED", statistics.decided_count.to_string()),
        (
            "MEDIAN TO DECISION",
            duration_text(&statistics.decision_time_median),
        ),
    ]
}

fn pool_row(pool: &pb::PoolStatistics) -> Vec<String> {
    vec![
        pool.pool_id.clone(),
        money(&pool.total),
        money(&pool.held),
        money(&pool.committed),
        money(&pool.available),
        money(&pool.period_committed_amount),
        pool.day_count.to_string(),
        money(&pool.burn_rate_per_day),
        date_text(&pool.projected_exhaustion_date),
    ]
}

fn figures_cells(figures: &Option<pb::MultiplierFigures>) -> Vec<String> {
    let figures = figures.clone().unwrap_or_default();
    let multiplier = if figures.multiplier.is_empty() {
        "-".to_owned()
    } else {
        figures.multiplier.clone()
    };
    vec![
        figures.funded_claim_count.to_string(),
        money(&figures.contract_volume),
        money(&figures.subsidy),
        multiplier,
    ]
}

fn print_multiplier(multiplier: &pb::ComputeVoucherMultiplier) {
    let headers = ["FUNDED", "CONTRACT VOLUME", "SUBSIDY", "MULTIPLIER"];
    let with_key =
        |key: &str, groups: &[pb::MultiplierGroup], cell: fn(&pb::MultiplierGroup) -> String| {
            let mut all = vec![key];
            all.extend(headers);
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|group| {
                    let mut row = vec![cell(group)];
                    row.extend(figures_cells(&group.figures));
                    row
                })
                .collect();
            table(&all, &rows)
        };
    write_out("\n");
    let mut overall = vec!["ALL".to_owned()];
    overall.extend(figures_cells(&multiplier.overall));
    let mut all = vec!["MULTIPLIER"];
    all.extend(headers);
    write_out(&table(&all, &[overall]));
    write_out("\n");
    write_out(&with_key("BUYER CITY", &multiplier.by_buyer_city, |g| {
        g.division_code.clone()
    }));
    write_out("\n");
    write_out(&with_key(
        "COMPUTE PROVIDER",
        &multiplier.by_compute_provider,
        |g| format!("{} {}", g.seller_uscc, g.seller_name),
    ));
    write_out("\n");
    write_out(&with_key(
        "DATA CENTER CITY",
        &multiplier.by_data_center_city,
        |g| g.division_code.clone(),
    ));
    if multiplier.omitted_group_count > 0 {
        write_out(&format!(
            "\n{} groups left out (each list shows at most 500)\n",
            multiplier.omitted_group_count
        ));
    }
}
