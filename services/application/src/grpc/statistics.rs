//! `GetProgramStatistics` at the edge: the request's program and period parsed (every
//! violation at once), and the statistics rendered as the proto defines each figure.

use subsidy_common::edge::{self, Violations};
use subsidy_common::metrics::count_of;
use subsidy_proto::application as pb;

use crate::domain::statistics::{Group, Multiplier, Period, Program, Volume};
use crate::domain::{ClaimState, ProposalState};
use crate::wire;
use crate::workflow::{PoolFigures, ProgramStatistics};

/// The program and period of a request; `None` only after recording a violation.
pub(super) fn parse(
    v: &mut Violations,
    request: &pb::GetProgramStatisticsRequest,
) -> Option<(Program, Period)> {
    let program = match pb::ApplicationKind::try_from(request.program) {
        Ok(pb::ApplicationKind::ComputeVoucherClaim) => Some(Program::ComputeVoucher),
        Ok(pb::ApplicationKind::DataInfrastructureProposal) => Some(Program::DataInfrastructure),
        _ => {
            v.add(
                "program",
                "must be APPLICATION_KIND_COMPUTE_VOUCHER_CLAIM or \
                 APPLICATION_KIND_DATA_INFRASTRUCTURE_PROPOSAL",
            );
            None
        }
    };
    let period = super::fields::period(
        v,
        ("from_date", request.from_date.as_ref()),
        ("to_date", request.to_date.as_ref()),
    );
    Some((program?, period?))
}

/// The response for `statistics`.
pub(super) fn render(statistics: &ProgramStatistics) -> pb::GetProgramStatisticsResponse {
    let kind = match statistics.program {
        Program::ComputeVoucher => pb::ApplicationKind::ComputeVoucherClaim,
        Program::DataInfrastructure => pb::ApplicationKind::DataInfrastructureProposal,
    };
    let state_counts = state_counts(statistics.program, &statistics.states);
    pb::GetProgramStatisticsResponse {
        program: kind as i32,
        from_date: Some(edge::date(statistics.period.first_day())),
        to_date: Some(edge::date(statistics.period.last_day())),
        as_of_date: Some(edge::date(statistics.as_of)),
        application_count: state_counts.iter().map(|count| count.count).sum(),
        state_counts,
        requested_amount: edge::money(statistics.amounts.requested_fen),
        approved_amount: edge::money(statistics.amounts.approved_fen),
        disbursed_amount: edge::money(statistics.amounts.disbursed_fen),
        pools: statistics.pools.iter().map(pool).collect(),
        multiplier: statistics.multiplier.as_ref().map(multiplier),
        decided_count: statistics.decided_count,
        decision_time_median: statistics.decision_time_median_us.map(duration),
    }
}

/// One count for every state of the program, in the order of its state enum.
fn state_counts(program: Program, counted: &[(String, i64)]) -> Vec<pb::ProgramStateCount> {
    use pb::application_state::State;
    let count = |state: State, name: &str| pb::ProgramStateCount {
        state: Some(pb::ApplicationState { state: Some(state) }),
        count: count_of(counted, name),
    };
    match program {
        Program::ComputeVoucher => ClaimState::ALL
            .into_iter()
            .map(|state| {
                let wire_state = wire::claim_state_to_proto(state) as i32;
                count(State::ClaimState(wire_state), state.as_str())
            })
            .collect(),
        Program::DataInfrastructure => ProposalState::ALL
            .into_iter()
            .map(|state| {
                let wire_state = wire::proposal_state_to_proto(state) as i32;
                count(State::ProposalState(wire_state), state.as_str())
            })
            .collect(),
    }
}

fn pool(figures: &PoolFigures) -> pb::PoolStatistics {
    pb::PoolStatistics {
        pool_id: figures.pool_id.clone(),
        total: edge::money(figures.total_fen),
        held: edge::money(figures.held_fen),
        committed: edge::money(figures.committed_fen),
        available: edge::money(figures.available_fen),
        period_committed_amount: edge::money(figures.period_committed_fen),
        day_count: figures.day_count,
        burn_rate_per_day: edge::money(figures.burn_rate_fen),
        projected_exhaustion_date: figures.exhaustion_date.map(edge::date),
    }
}

fn multiplier(multiplier: &Multiplier) -> pb::ComputeVoucherMultiplier {
    let cities = |groups: &[Group]| {
        groups
            .iter()
            .map(|group| pb::MultiplierGroup {
                division_code: group.key.clone(),
                figures: Some(figures(&group.volume)),
                ..Default::default()
            })
            .collect()
    };
    pb::ComputeVoucherMultiplier {
        overall: Some(figures(&multiplier.overall)),
        by_buyer_city: cities(&multiplier.by_buyer_city),
        by_compute_provider: multiplier
            .by_compute_provider
            .iter()
            .map(|group| pb::MultiplierGroup {
                seller_uscc: group.key.clone(),
                seller_name: group.name.clone(),
                figures: Some(figures(&group.volume)),
                ..Default::default()
            })
            .collect(),
        by_data_center_city: cities(&multiplier.by_data_center_city),
        omitted_group_count: multiplier.omitted_group_count,
    }
}

fn figures(volume: &Volume) -> pb::MultiplierFigures {
    pb::MultiplierFigures {
        funded_claim_count: volume.claim_count,
        contract_volume: edge::money(volume.contract_volume_fen),
        subsidy: edge::money(volume.subsidy_fen),
        multiplier: volume
            .multiplier()
            .map(|ratio| ratio.to_string())
            .unwrap_or_default(),
    }
}

/// A span of microseconds as a duration.
fn duration(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1_000).expect("below a second"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_every_field_wrong_gets_a_violation_for_each() {
        // Proves the program, partial dates and a reversed period are each named.
        use subsidy_proto::google::r#type::Date;
        let date = |year, month, day| Some(Date { year, month, day });
        let mut v = Violations::new();
        let parsed = parse(
            &mut v,
            &pb::GetProgramStatisticsRequest {
                program: 0,
                from_date: date(2025, 0, 1),
                to_date: None,
            },
        );
        assert_eq!(parsed, None);
        let fields: Vec<String> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["program", "from_date", "to_date"]);
        let mut v = Violations::new();
        let parsed = parse(
            &mut v,
            &pb::GetProgramStatisticsRequest {
                program: pb::ApplicationKind::ComputeVoucherClaim as i32,
                from_date: date(2025, 3, 2),
                to_date: date(2025, 3, 1),
            },
        );
        assert_eq!(parsed, None);
        let fields: Vec<String> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["to_date"]);
    }

    #[test]
    fn a_median_in_microseconds_becomes_seconds_and_nanoseconds() {
        // Proves the conversion keeps every microsecond.
        let d = duration(90_000_123);
        assert_eq!((d.seconds, d.nanos), (90, 123_000));
    }
}
