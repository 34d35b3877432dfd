//! Policy files: how a policy version is written down outside the service (the shipped 2025
//! policies under `policies/`, and the files `subsidyctl policy publish|simulate` reads).
//!
//! A policy file is a JSON object with `program`, `version`, `effective_start`,
//! `effective_end`, `description`, `parameters` and `document_file`, the path (relative to the
//! policy file) of the JDM decision graph, which is read verbatim so that it can be opened in the
//! GoRules editor. See `policies/README.md`.

use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use subsidy_common::{Money, edge};
use subsidy_proto::google::r#type::Date;
use subsidy_proto::rules as pb;

/// The shipped policies: each policy file with its graph.
const SHIPPED: [(&str, &str, &str); 2] = [
    (
        "compute-voucher-2025.1.policy.json",
        include_str!("../policies/compute-voucher-2025.1.policy.json"),
        include_str!("../policies/compute-voucher-2025.1.jdm.json"),
    ),
    (
        "data-infra-2025.1.policy.json",
        include_str!("../policies/data-infra-2025.1.policy.json"),
        include_str!("../policies/data-infra-2025.1.jdm.json"),
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    program: String,
    version: String,
    effective_start: String,
    effective_end: String,
    #[serde(default)]
    description: String,
    parameters: FileParameters,
    document_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileParameters {
    rate_max: Option<String>,
    enterprise_cap: Option<String>,
    window_start: Option<String>,
    window_end: Option<String>,
    contract_total_max: Option<String>,
    project_cap: Option<String>,
    shortfall_mode: Option<String>,
    provider_registry_required: Option<bool>,
    publicity_working_days: Option<u32>,
}

/// Why a policy file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy file is not of the expected shape.
    #[error("{path} is not a policy file: {why}")]
    Shape {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

fn date(text: &str) -> Result<Date, String> {
    edge::date_text(text).ok_or_else(|| format!("{text:?} is not a date like 2025-01-31"))
}

fn money(text: &str) -> Result<subsidy_proto::google::r#type::Money, String> {
    Money::from_str(text)
        .map(Money::to_proto)
        .map_err(|e| format!("{text:?}: {e}"))
}

fn shortfall(text: &str) -> Result<i32, String> {
    pb::ShortfallMode::from_str_name(&format!("SHORTFALL_MODE_{text}"))
        .map(|mode| mode as i32)
        .ok_or_else(|| format!("shortfall_mode {text:?} is not WAITLIST, PARTIAL or SKIP"))
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("parameters.{name} is required"))
}

/// Builds the draft of a policy file's text, with its graph's text.
pub fn parse(policy_text: &str, document_json: String) -> Result<pb::PolicyDraft, String> {
    let file: PolicyFile = serde_json::from_str(policy_text).map_err(|e| e.to_string())?;
    let p = &file.parameters;
    let (program, parameters) = match file.program.as_str() {
        "compute-voucher" => (
            pb::Program::ComputeVoucher,
            pb::policy_parameters::ProgramParameters::ComputeVoucher(
                pb::ComputeVoucherParameters {
                    rate_max: required(&p.rate_max, "rate_max")?.to_owned(),
                    enterprise_cap: Some(money(required(&p.enterprise_cap, "enterprise_cap")?)?),
                    window_start: Some(date(required(&p.window_start, "window_start")?)?),
                    window_end: Some(date(required(&p.window_end, "window_end")?)?),
                    contract_total_max: Some(money(required(
                        &p.contract_total_max,
                        "contract_total_max",
                    )?)?),
                    shortfall_mode: shortfall(required(&p.shortfall_mode, "shortfall_mode")?)?,
                    provider_registry_required: p.provider_registry_required.unwrap_or(false),
                    publicity_working_days: p.publicity_working_days,
                },
            ),
        ),
        "data-infra" => (
            pb::Program::DataInfra,
            pb::policy_parameters::ProgramParameters::DataInfra(pb::DataInfraParameters {
                project_cap: Some(money(required(&p.project_cap, "project_cap")?)?),
                shortfall_mode: shortfall(required(&p.shortfall_mode, "shortfall_mode")?)?,
                publicity_working_days: p.publicity_working_days,
            }),
        ),
        other => {
            return Err(format!(
                "program {other:?} is not compute-voucher or data-infra"
            ));
        }
    };
    Ok(pb::PolicyDraft {
        program: program as i32,
        version: file.version,
        effective_start: Some(date(&file.effective_start)?),
        effective_end: Some(date(&file.effective_end)?),
        parameters: Some(pb::PolicyParameters {
            program_parameters: Some(parameters),
        }),
        document_json,
        description: file.description,
    })
}

/// Reads a policy file and the graph it names.
pub fn load(path: &Path) -> Result<pb::PolicyDraft, PolicyFileError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let shape = |why: String| PolicyFileError::Shape {
        path: path.display().to_string(),
        why,
    };
    let text = read(path)?;
    let file: PolicyFile = serde_json::from_str(&text).map_err(|e| shape(e.to_string()))?;
    let document_path = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(&file.document_file);
    let document = read(&document_path)?;
    parse(&text, document).map_err(shape)
}

/// Most cases of a cases file (the SimulatePolicy limit).
pub const CASES_MAX: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case_id: String,
    compute_voucher: Option<ClaimFile>,
    data_infra: Option<ProposalFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimFile {
    buyer_uscc: String,
    seller_uscc: String,
    contract_number: String,
    signing_date: Option<String>,
    signing_time: Option<String>,
    contract_total: String,
    compute_type: String,
    data_center_division_code: String,
    #[serde(default)]
    related_party_declared: bool,
    benefit_rating: Option<String>,
    enterprise_usage: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposalFile {
    #[serde(default)]
    proposal_id: String,
    applicant_uscc: String,
    region_code: String,
    category: String,
    requested_amount: String,
}

fn enum_value(
    prefix: &str,
    text: &str,
    from_name: impl Fn(&str) -> Option<i32>,
) -> Result<i32, String> {
    from_name(&format!("{prefix}{text}")).ok_or_else(|| format!("{text:?} is not a known value"))
}

fn claim(file: ClaimFile) -> Result<pb::ComputeVoucherClaim, String> {
    let signing_time = file
        .signing_time
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                })
                .map_err(|_| format!("signing_time {text:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    Ok(pb::ComputeVoucherClaim {
        buyer_uscc: file.buyer_uscc,
        seller_uscc: file.seller_uscc,
        contract_number: file.contract_number,
        signing_date: file.signing_date.as_deref().map(date).transpose()?,
        contract_total: Some(money(&file.contract_total)?),
        compute_type: enum_value("COMPUTE_TYPE_", &file.compute_type, |n| {
            pb::ComputeType::from_str_name(n).map(|v| v as i32)
        })?,
        data_center_division_code: file.data_center_division_code,
        related_party_declared: file.related_party_declared,
        benefit_rating: match file.benefit_rating.as_deref() {
            None | Some("UNRATED") => pb::BenefitRating::Unspecified as i32,
            Some(text) => enum_value("BENEFIT_RATING_", text, |n| {
                pb::BenefitRating::from_str_name(n).map(|v| v as i32)
            })?,
        },
        enterprise_usage: Some(money(&file.enterprise_usage)?),
        signing_time,
    })
}

fn proposal(file: ProposalFile) -> Result<pb::DataInfraProposal, String> {
    Ok(pb::DataInfraProposal {
        proposal_id: file.proposal_id,
        applicant_uscc: file.applicant_uscc,
        region_code: file.region_code,
        category: enum_value("DATA_INFRA_CATEGORY_", &file.category, |n| {
            pb::DataInfraCategory::from_str_name(n).map(|v| v as i32)
        })?,
        requested_amount: Some(money(&file.requested_amount)?),
    })
}

/// Reads the past cases of a simulation from a cases file's text: a JSON array of
/// `{"case_id": …, "compute_voucher": {…}}` or `{"case_id": …, "data_infra": {…}}`, with
/// amounts as decimal strings, dates as `2025-06-30` and enums by their short names.
pub fn parse_cases(text: &str) -> Result<Vec<pb::SimulationCase>, String> {
    let files: Vec<CaseFile> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if files.is_empty() || files.len() > CASES_MAX {
        return Err(format!("a cases file has 1 to {CASES_MAX} cases"));
    }
    files
        .into_iter()
        .map(|file| {
            let subject = match (file.compute_voucher, file.data_infra) {
                (Some(claim_file), None) => {
                    pb::simulation_case::Subject::ComputeVoucher(claim(claim_file)?)
                }
                (None, Some(proposal_file)) => {
                    pb::simulation_case::Subject::DataInfra(proposal(proposal_file)?)
                }
                _ => {
                    return Err(format!(
                        "case {:?} needs exactly one of compute_voucher and data_infra",
                        file.case_id
                    ));
                }
            };
            Ok(pb::SimulationCase {
                case_id: file.case_id,
                subject: Some(subject),
            })
        })
        .collect()
}

/// Reads a cases file.
pub fn load_cases(path: &Path) -> Result<Vec<pb::SimulationCase>, PolicyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_cases(&text).map_err(|why| PolicyFileError::Shape {
        path: path.display().to_string(),
        why,
    })
}

/// The drafts of the policies shipped with the service (the 2025 policies of both programs).
pub fn shipped() -> Vec<pb::PolicyDraft> {
    SHIPPED
        .iter()
        .map(|(name, policy, document)| {
            parse(policy, (*document).to_owned())
                .unwrap_or_else(|why| panic!("shipped policy {name} is broken: {why}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_files_parse() {
        // Proves: both shipped 2025 policies read into drafts of their programs.
        let drafts = shipped();
        assert_eq!(drafts.len(), 2);
        assert_eq!(drafts[0].program(), pb::Program::ComputeVoucher);
        assert_eq!(drafts[0].version, "2025.1");
        assert_eq!(drafts[1].program(), pb::Program::DataInfra);
        assert!(drafts.iter().all(|d| d.document_json.contains("nodes")));
    }

    #[test]
    fn the_example_cases_file_reads_into_cases_of_both_kinds() {
        // Proves: the example cases file shipped for `subsidyctl policy simulate` is valid.
        let cases = parse_cases(include_str!(
            "../policies/examples/compute-voucher-cases.json"
        ))
        .unwrap();
        assert!(cases.len() >= 4);
        assert!(cases.iter().all(|c| matches!(
            c.subject,
            Some(pb::simulation_case::Subject::ComputeVoucher(_))
        )));
        let wrong = r#"[{"case_id": "x", "data_infra": {"applicant_uscc": "a", "region_code": "370102",
            "category": "NOT_A_CATEGORY", "requested_amount": "1.00"}}]"#;
        assert!(parse_cases(wrong).unwrap_err().contains("NOT_A_CATEGORY"));
        assert!(parse_cases("[]").is_err());
    }

    #[test]
    fn a_policy_file_with_a_missing_parameter_or_unknown_key_is_refused() {
        // Proves: typos in a policy file are reported, not silently defaulted.
        let missing = r#"{"program": "data-infra", "version": "2026.1", "effective_start": "2026-01-01",
            "effective_end": "2026-12-31", "parameters": {"shortfall_mode": "SKIP"}, "document_file": "x"}"#;
        assert!(
            parse(missing, String::new())
                .unwrap_err()
                .contains("project_cap")
        );
        let unknown = r#"{"program": "data-infra", "version": "2026.1", "effective_start": "2026-01-01",
            "effective_end": "2026-12-31", "parameters": {"project_cap": "1.00", "shortfall_mode": "SKIP", "rate": "1"},
            "document_file": "x"}"#;
        assert!(parse(unknown, String::new()).is_err());
    }
}
