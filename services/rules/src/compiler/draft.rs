//! Step 1 of the compiler: a wire draft's fields parsed into a [`PolicySpec`], every problem
//! reported as a field violation under the draft's prefix (`policy.…` or `draft.…`).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use subsidy_common::edge::Violations;
use subsidy_proto::rules as pb;

use crate::domain::calendar::{PUBLICITY_WORKING_DAYS_DEFAULT, PUBLICITY_WORKING_DAYS_MAX};
use crate::domain::policy::{
    self, ComputeVoucherParameters, DESCRIPTION_CHARS_MAX, DataInfraParameters, Parameters,
    PolicySpec, ShortfallMode,
};
use crate::domain::{DayRange, Program};
use crate::wire;

/// Whether a draft must state its effective period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effective {
    /// Publication: the period is required and checked.
    Required,
    /// Simulation: the period is not read; the draft is in effect on this day only.
    On(NaiveDate),
}

/// Parses a draft at `prefix`; `None` (with violations) when any field is wrong.
pub fn parse(
    v: &mut Violations,
    prefix: &str,
    draft: Option<&pb::PolicyDraft>,
    effective: Effective,
) -> Option<PolicySpec> {
    let Some(d) = draft else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let program = program(v, &f("program"), d.program);
    let version = if d.version.is_empty() {
        v.add(&f("version"), "is required");
        None
    } else {
        wire::version(v, &f("version"), &d.version)
    };
    let effective = match effective {
        Effective::Required => day_range(
            v,
            (&f("effective_start"), d.effective_start.as_ref()),
            (&f("effective_end"), d.effective_end.as_ref()),
            "must not be before effective_start",
        ),
        Effective::On(day) => DayRange::new(day, day),
    };
    let parameters = parameters(v, &f("parameters"), program, d.parameters.as_ref());
    let document_json = if d.document_json.trim().is_empty() {
        v.add(&f("document_json"), "is required");
        None
    } else {
        Some(d.document_json.clone())
    };
    let description = v.optional_text(&f("description"), &d.description, DESCRIPTION_CHARS_MAX);
    Some(PolicySpec {
        version: version?,
        effective: effective?,
        parameters: parameters?,
        document_json: document_json?,
        description: description?,
    })
}

fn program(v: &mut Violations, field: &str, value: i32) -> Option<Program> {
    match pb::Program::try_from(value) {
        Ok(pb::Program::ComputeVoucher) => Some(Program::ComputeVoucher),
        Ok(pb::Program::DataInfra) => Some(Program::DataInfra),
        Ok(pb::Program::Unspecified) | Err(_) => {
            v.add(field, "must be compute voucher or data infrastructure");
            None
        }
    }
}

/// A required range of days; `backwards` says why an end before the start is refused.
fn day_range(
    v: &mut Violations,
    (start_field, start): (&str, Option<&subsidy_proto::google::r#type::Date>),
    (end_field, end): (&str, Option<&subsidy_proto::google::r#type::Date>),
    backwards: &str,
) -> Option<DayRange> {
    let start = v.date(start_field, start);
    let end = v.date(end_field, end);
    let range = DayRange::new(start?, end?);
    if range.is_none() {
        v.add(end_field, backwards);
    }
    range
}

fn shortfall(
    v: &mut Violations,
    field: &str,
    value: i32,
    allowed: &[ShortfallMode],
) -> Option<ShortfallMode> {
    let mode = match pb::ShortfallMode::try_from(value) {
        Ok(pb::ShortfallMode::Waitlist) => Some(ShortfallMode::Waitlist),
        Ok(pb::ShortfallMode::Partial) => Some(ShortfallMode::Partial),
        Ok(pb::ShortfallMode::Skip) => Some(ShortfallMode::Skip),
        Ok(pb::ShortfallMode::Unspecified) | Err(_) => None,
    }
    .filter(|mode| allowed.contains(mode));
    if mode.is_none() {
        let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        v.add(field, format!("must be {}", names.join(" or ")));
    }
    mode
}

/// Parses the typed parameters of a draft at `prefix` (for example `policy.parameters`); they
/// must be of `program` when it is known.
fn parameters(
    v: &mut Violations,
    prefix: &str,
    program: Option<Program>,
    parameters: Option<&pb::PolicyParameters>,
) -> Option<Parameters> {
    use pb::policy_parameters::ProgramParameters;
    let Some(kind) = parameters.and_then(|p| p.program_parameters.as_ref()) else {
        v.add(prefix, "is required");
        return None;
    };
    let parameters = match kind {
        ProgramParameters::ComputeVoucher(p) => {
            compute_voucher(v, &format!("{prefix}.compute_voucher"), p)
                .map(Parameters::ComputeVoucher)
        }
        ProgramParameters::DataInfra(p) => {
            data_infra(v, &format!("{prefix}.data_infra"), p).map(Parameters::DataInfra)
        }
    };
    if let (Some(parameters), Some(program)) = (&parameters, program)
        && parameters.program() != program
    {
        v.add(prefix, format!("must be the parameters of {program}"));
        return None;
    }
    parameters
}

fn compute_voucher(
    v: &mut Violations,
    prefix: &str,
    p: &pb::ComputeVoucherParameters,
) -> Option<ComputeVoucherParameters> {
    let f = |name: &str| format!("{prefix}.{name}");
    let rate_max = Decimal::from_str_exact(&p.rate_max)
        .map_err(|_| "must be a plain decimal such as 0.05".to_owned())
        .and_then(policy::parse_rate_max)
        .map_err(|why| v.add(&f("rate_max"), why))
        .ok();
    let enterprise_cap = v.positive_money(&f("enterprise_cap"), p.enterprise_cap.as_ref());
    let window = day_range(
        v,
        (&f("window_start"), p.window_start.as_ref()),
        (&f("window_end"), p.window_end.as_ref()),
        "must not be before window_start",
    );
    let contract_total_max =
        v.positive_money(&f("contract_total_max"), p.contract_total_max.as_ref());
    let shortfall = shortfall(
        v,
        &f("shortfall_mode"),
        p.shortfall_mode,
        &[ShortfallMode::Waitlist, ShortfallMode::Partial],
    );
    Some(ComputeVoucherParameters {
        rate_max: rate_max?,
        enterprise_cap: enterprise_cap?,
        window: window?,
        contract_total_max: contract_total_max?,
        shortfall: shortfall?,
        provider_registry_required: p.provider_registry_required,
        publicity_working_days: publicity(
            v,
            &f("publicity_working_days"),
            p.publicity_working_days,
        )?,
    })
}

fn data_infra(
    v: &mut Violations,
    prefix: &str,
    p: &pb::DataInfraParameters,
) -> Option<DataInfraParameters> {
    let f = |name: &str| format!("{prefix}.{name}");
    let project_cap = v.positive_money(&f("project_cap"), p.project_cap.as_ref());
    let shortfall = shortfall(
        v,
        &f("shortfall_mode"),
        p.shortfall_mode,
        &[ShortfallMode::Partial, ShortfallMode::Skip],
    );
    let publicity_working_days =
        publicity(v, &f("publicity_working_days"), p.publicity_working_days);
    Some(DataInfraParameters {
        project_cap: project_cap?,
        shortfall: shortfall?,
        publicity_working_days: publicity_working_days?,
    })
}

/// The publicity length: unset is the default, at most the maximum.
fn publicity(v: &mut Violations, field: &str, days: Option<u32>) -> Option<u32> {
    let days = days.unwrap_or(PUBLICITY_WORKING_DAYS_DEFAULT);
    if days > PUBLICITY_WORKING_DAYS_MAX {
        v.add(
            field,
            format!("must be at most {PUBLICITY_WORKING_DAYS_MAX} working days"),
        );
        return None;
    }
    Some(days)
}
