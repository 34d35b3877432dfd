//! Policy versions: identifiers, typed parameters, the validated content of a version, its
//! content hash, and which published version is in effect on a day. Compiling a version (its
//! graph and the probes that check the graph against the parameters) is the compiler's work.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use subsidy_common::Money;
use subsidy_common::money::Rate;

use super::calendar::{PUBLICITY_WORKING_DAYS_DEFAULT, PUBLICITY_WORKING_DAYS_MAX};
use super::graph::PolicyGraph;
use super::{DayRange, Program, RATE_CEILING};

/// Longest description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 2000;
/// Most decimal places of a rate.
pub const RATE_DECIMAL_PLACES_MAX: u32 = 6;

/// A policy version such as `2025.1`: a four-digit year, a dot and a sequence number from 1 to
/// 9999 without leading zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyVersion {
    year: u16,
    sequence: u16,
}

impl PolicyVersion {
    /// Parses a version.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const WHY: &str = "must be a four-digit year, a dot and a sequence number from 1 to 9999, for example 2025.1";
        let (year, sequence) = text.split_once('.').ok_or(WHY)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || !digits(year) || year.starts_with('0') {
            return Err(WHY);
        }
        if !digits(sequence) || sequence.len() > 4 || sequence.starts_with('0') {
            return Err(WHY);
        }
        Ok(PolicyVersion {
            year: year.parse().map_err(|_| WHY)?,
            sequence: sequence.parse().map_err(|_| WHY)?,
        })
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.year, self.sequence)
    }
}

/// How money is handed out when what is left cannot cover the next entitlement or award.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortfallMode {
    /// The claim waits in submission order (compute vouchers).
    Waitlist,
    /// The claim or proposal receives what is left.
    Partial,
    /// The proposal is passed over (data infrastructure).
    Skip,
}

impl ShortfallMode {
    /// The stored and file name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortfallMode::Waitlist => "WAITLIST",
            ShortfallMode::Partial => "PARTIAL",
            ShortfallMode::Skip => "SKIP",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Waitlist, Self::Partial, Self::Skip]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// The typed parameters of a compute-voucher policy: they bound whatever the graph computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeVoucherParameters {
    /// The highest rate applied; above 0 and at most [`RATE_CEILING`].
    pub rate_max: Rate,
    /// The cumulative cap per enterprise; positive.
    pub enterprise_cap: Money,
    /// The contract signing window.
    pub window: DayRange,
    /// The largest contract total considered; positive.
    pub contract_total_max: Money,
    /// `Waitlist` or `Partial`.
    pub shortfall: ShortfallMode,
    /// Whether claims are checked against the provider registry.
    pub provider_registry_required: bool,
    /// The publicity period of an approved claim, in working days (at most
    /// [`super::calendar::PUBLICITY_WORKING_DAYS_MAX`]).
    pub publicity_working_days: u32,
}

/// The typed parameters of a data-infrastructure policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataInfraParameters {
    /// The cap of one project's award; positive.
    pub project_cap: Money,
    /// `Partial` or `Skip`.
    pub shortfall: ShortfallMode,
    /// The publicity period of an award, in working days (at most
    /// [`super::calendar::PUBLICITY_WORKING_DAYS_MAX`]).
    pub publicity_working_days: u32,
}

/// The typed parameters of a policy, of its program's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parameters {
    /// Compute vouchers.
    ComputeVoucher(ComputeVoucherParameters),
    /// Data infrastructure.
    DataInfra(DataInfraParameters),
}

impl Parameters {
    /// The program the parameters are for.
    pub fn program(&self) -> Program {
        match self {
            Parameters::ComputeVoucher(_) => Program::ComputeVoucher,
            Parameters::DataInfra(_) => Program::DataInfra,
        }
    }

    /// The stored (and hashed) form: a JSON object of strings and integers.
    pub fn to_json(&self) -> Value {
        match self {
            Parameters::ComputeVoucher(p) => {
                let mut value = json!({
                    "rate_max": p.rate_max.decimal().normalize().to_string(),
                    "enterprise_cap_fen": p.enterprise_cap.fen(),
                    "window_start": p.window.start().to_string(),
                    "window_end": p.window.end().to_string(),
                    "contract_total_max_fen": p.contract_total_max.fen(),
                    "shortfall_mode": p.shortfall.as_str(),
                });
                // Only when set, so that versions published before the switch existed keep
                // their stored form and content hash.
                if p.provider_registry_required {
                    value["provider_registry_required"] = Value::Bool(true);
                }
                publicity_to_json(&mut value, p.publicity_working_days);
                value
            }
            Parameters::DataInfra(p) => {
                let mut value = json!({
                    "project_cap_fen": p.project_cap.fen(),
                    "shortfall_mode": p.shortfall.as_str(),
                });
                publicity_to_json(&mut value, p.publicity_working_days);
                value
            }
        }
    }

    /// The publicity period of an award under these parameters, in working days.
    pub fn publicity_working_days(&self) -> u32 {
        match self {
            Parameters::ComputeVoucher(p) => p.publicity_working_days,
            Parameters::DataInfra(p) => p.publicity_working_days,
        }
    }

    /// Reads the stored form back; `None` if it is not one this code wrote.
    pub fn from_json(program: Program, value: &Value) -> Option<Self> {
        let text = |key: &str| value.get(key)?.as_str();
        let fen = |key: &str| Money::from_fen(value.get(key)?.as_i64()?).ok();
        let day = |key: &str| NaiveDate::parse_from_str(text(key)?, "%Y-%m-%d").ok();
        let shortfall = ShortfallMode::parse(text("shortfall_mode")?)?;
        let publicity_working_days = match value.get("publicity_working_days") {
            None => PUBLICITY_WORKING_DAYS_DEFAULT,
            Some(days) => u32::try_from(days.as_u64()?)
                .ok()
                .filter(|days| *days <= PUBLICITY_WORKING_DAYS_MAX)?,
        };
        Some(match program {
            Program::ComputeVoucher => {
                let rate = Decimal::from_str_exact(text("rate_max")?).ok()?;
                Parameters::ComputeVoucher(ComputeVoucherParameters {
                    rate_max: parse_rate_max(rate).ok()?,
                    enterprise_cap: fen("enterprise_cap_fen")?,
                    window: DayRange::new(day("window_start")?, day("window_end")?)?,
                    contract_total_max: fen("contract_total_max_fen")?,
                    shortfall,
                    provider_registry_required: match value.get("provider_registry_required") {
                        None => false,
                        Some(flag) => flag.as_bool()?,
                    },
                    publicity_working_days,
                })
            }
            Program::DataInfra => Parameters::DataInfra(DataInfraParameters {
                project_cap: fen("project_cap_fen")?,
                shortfall,
                publicity_working_days,
            }),
        })
    }
}

/// Adds the publicity length to stored parameters only when it is not the default, so that
/// versions published before it existed keep their stored form and content hash.
fn publicity_to_json(value: &mut Value, working_days: u32) {
    if working_days != PUBLICITY_WORKING_DAYS_DEFAULT {
        value["publicity_working_days"] = Value::from(working_days);
    }
}

/// Checks a rate maximum: above 0, at most [`RATE_CEILING`], at most
/// [`RATE_DECIMAL_PLACES_MAX`] decimal places.
pub fn parse_rate_max(value: Decimal) -> Result<Rate, String> {
    if value <= Decimal::ZERO || value > RATE_CEILING {
        return Err(format!(
            "must be above 0 and at most {}",
            RATE_CEILING.normalize()
        ));
    }
    if value.normalize().scale() > RATE_DECIMAL_PLACES_MAX {
        return Err(format!(
            "must have at most {RATE_DECIMAL_PLACES_MAX} decimal places"
        ));
    }
    Ok(Rate::new(value).expect("0 < rate ≤ 0.05"))
}

/// The validated content of a policy version, before or after publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    /// The version.
    pub version: PolicyVersion,
    /// The days on which the version is in effect.
    pub effective: DayRange,
    /// The typed parameters; their kind gives the program.
    pub parameters: Parameters,
    /// The decision graph, exactly as submitted.
    pub document_json: String,
    /// What the version changes and why.
    pub description: String,
}

impl PolicySpec {
    /// The program.
    pub fn program(&self) -> Program {
        self.parameters.program()
    }

    /// The lower-case hex SHA-256 of the canonical JSON (RFC 8785) of program, version,
    /// effective period, parameters and document (as the exact submitted text).
    pub fn content_sha256(&self) -> String {
        super::canonical::sha256(&json!({
            "policy_id": self.program().policy_id(),
            "version": self.version.to_string(),
            "effective_start": self.effective.start().to_string(),
            "effective_end": self.effective.end().to_string(),
            "parameters": self.parameters.to_json(),
            "document_json": self.document_json,
        }))
    }
}

/// Whether a policy version is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyState {
    /// Validated, not stored.
    Draft,
    /// Published, immutable.
    Published,
}

/// A policy version with what publication added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRecord {
    /// The content.
    pub spec: PolicySpec,
    /// The content hash.
    pub content_sha256: String,
    /// Draft or published.
    pub state: PolicyState,
    /// The global order of publication; 0 for a draft.
    pub publish_sequence: i64,
    /// When it was published, µs since the epoch.
    pub published_us: Option<i64>,
    /// Who published it; empty for a draft.
    pub publisher: String,
}

impl PolicyRecord {
    /// A draft of `spec`.
    pub fn draft(spec: PolicySpec) -> Self {
        PolicyRecord {
            content_sha256: spec.content_sha256(),
            spec,
            state: PolicyState::Draft,
            publish_sequence: 0,
            published_us: None,
            publisher: String::new(),
        }
    }

    /// `spec` published by `publisher` as number `publish_sequence` at `published_us`.
    pub fn published(
        spec: PolicySpec,
        publish_sequence: i64,
        published_us: i64,
        publisher: &str,
    ) -> Self {
        PolicyRecord {
            content_sha256: spec.content_sha256(),
            spec,
            state: PolicyState::Published,
            publish_sequence,
            published_us: Some(published_us),
            publisher: publisher.to_owned(),
        }
    }

    /// The policy id.
    pub fn policy_id(&self) -> &'static str {
        self.spec.program().policy_id()
    }
}

/// A policy version ready to evaluate: its record and its compiled graph.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The version.
    pub record: PolicyRecord,
    /// The graph, compiled by the engine.
    pub graph: PolicyGraph,
}

impl CompiledPolicy {
    /// The program.
    pub fn program(&self) -> Program {
        self.record.spec.program()
    }

    /// The version text.
    pub fn version(&self) -> String {
        self.record.spec.version.to_string()
    }
}

/// The published version of `program` in effect on `day`: among the versions whose effective
/// period contains the day, the one published last; when none does, the one whose period is
/// nearest to the day (ties: published last). `None` when the program has no version.
pub fn in_effect(
    policies: &[Arc<CompiledPolicy>],
    program: Program,
    day: NaiveDate,
) -> Option<Arc<CompiledPolicy>> {
    policies
        .iter()
        .filter(|p| p.program() == program)
        .min_by(|a, b| {
            let distance = |p: &CompiledPolicy| p.record.spec.effective.distance_days(day);
            match distance(a).cmp(&distance(b)) {
                Ordering::Equal => b.record.publish_sequence.cmp(&a.record.publish_sequence),
                other => other,
            }
        })
        .cloned()
}

/// The published version of `program` named `version`.
pub fn find(
    policies: &[Arc<CompiledPolicy>],
    program: Program,
    version: PolicyVersion,
) -> Option<Arc<CompiledPolicy>> {
    policies
        .iter()
        .find(|p| p.program() == program && p.record.spec.version == version)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn versions_are_a_year_a_dot_and_a_sequence() {
        // Proves: only `YYYY.N` with N from 1 to 9999 and no leading zeros is a version.
        assert_eq!(
            PolicyVersion::parse("2025.1").unwrap().to_string(),
            "2025.1"
        );
        assert_eq!(
            PolicyVersion::parse("2026.9999").unwrap().to_string(),
            "2026.9999"
        );
        for bad in [
            "",
            "2025",
            "2025.",
            "2025.0",
            "2025.01",
            "25.1",
            "2025.10000",
            "0202.1",
            "2025.1a",
            "2025.1.1",
            " 2025.1",
        ] {
            assert!(PolicyVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_rate_maximum_never_exceeds_five_percent() {
        // Proves: a policy cannot be configured above 5 %, at zero, or with absurd precision.
        assert!(parse_rate_max(dec!(0.05)).is_ok());
        assert!(parse_rate_max(dec!(0.035)).is_ok());
        assert!(parse_rate_max(dec!(0.0501)).is_err());
        assert!(parse_rate_max(dec!(0)).is_err());
        assert!(parse_rate_max(dec!(0.0000001)).is_err());
    }

    #[test]
    fn stored_parameters_read_back_identically() {
        // Proves: the stored form of parameters is lossless for both programs.
        let day = |m, d| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
        for parameters in [
            Parameters::ComputeVoucher(ComputeVoucherParameters {
                rate_max: Rate::new(dec!(0.05)).unwrap(),
                enterprise_cap: Money::from_yuan(5_000_000).unwrap(),
                window: DayRange::new(day(1, 1), day(12, 31)).unwrap(),
                contract_total_max: Money::from_yuan(10_000_000_000).unwrap(),
                shortfall: ShortfallMode::Waitlist,
                provider_registry_required: false,
                publicity_working_days: 5,
            }),
            Parameters::ComputeVoucher(ComputeVoucherParameters {
                rate_max: Rate::new(dec!(0.03)).unwrap(),
                enterprise_cap: Money::from_yuan(5_000_000).unwrap(),
                window: DayRange::new(day(1, 1), day(12, 31)).unwrap(),
                contract_total_max: Money::from_yuan(10_000_000_000).unwrap(),
                shortfall: ShortfallMode::Partial,
                provider_registry_required: true,
                publicity_working_days: 0,
            }),
            Parameters::DataInfra(DataInfraParameters {
                project_cap: Money::from_yuan(10_000_000).unwrap(),
                shortfall: ShortfallMode::Skip,
                publicity_working_days: 30,
            }),
        ] {
            let back = Parameters::from_json(parameters.program(), &parameters.to_json());
            assert_eq!(back, Some(parameters));
        }
    }
}
