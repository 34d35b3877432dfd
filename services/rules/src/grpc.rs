//! Wire ↔ domain conversion and error classification for `subsidy.rules.v1.RulesService`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use subsidy_common::db::timestamp_from_us;
use subsidy_common::idempotency::fingerprint;
use subsidy_common::paging::{decode_token, encode_token, page_size};
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::google::r#type::{Date, Money as ProtoMoney};
use subsidy_proto::rules as pb;
use subsidy_proto::status::FieldViolation;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, Snapshot};
use crate::domain::compute_voucher::{self, BenefitRating, Claim, ComputeType};
use crate::domain::data_infra::{self, Category, Proposal};
use crate::domain::decision::Decision;
use crate::domain::denylist::{self, DenylistEntry};
use crate::domain::graph::{EngineFailure, TraceStep};
use crate::domain::policy::{
    self, CompiledPolicy, ComputeVoucherParameters, DESCRIPTION_CHARS_MAX, DataInfraParameters,
    Parameters, PolicyRecord, PolicySpec, PolicyState, PolicyVersion, ShortfallMode,
};
use crate::domain::ranking::{self, Candidate, Mean};
use crate::domain::simulation::{self, Case, SimulationFailure, Subject, Totals};
use crate::domain::{DayRange, Program, shanghai_date};
use crate::error::RulesError;
use crate::storage::{Idempotent, Replacement};

/// Metadata key naming the caller, recorded as the publisher of a policy.
pub const ACTOR_METADATA_KEY: &str = "x-subsidy-actor";
/// Default and largest page of ListPolicies.
const POLICIES_PAGE_DEFAULT: u32 = 50;
const POLICIES_PAGE_MAX: u32 = 200;
/// Default and largest page of ListDenylistEntries.
const DENYLIST_PAGE_DEFAULT: u32 = 100;
const DENYLIST_PAGE_MAX: u32 = 1000;
/// Longest USCC text accepted for a check (longer is malformed input, not an invalid code).
const USCC_TEXT_BYTES_MAX: usize = 64;
/// Longest contract number, in characters.
const CONTRACT_NUMBER_CHARS_MAX: usize = 64;
/// Longest proposal or case identifier, in characters.
const IDENTIFIER_CHARS_MAX: usize = 128;

/// Collects field violations while parsing a request.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn finish(self) -> Result<(), RulesError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RulesError::Invalid(self.0))
        }
    }

    fn request_id(&mut self, text: &str) -> Option<RequestId> {
        RequestId::parse(text)
            .map_err(|e| self.add("request_id", e.to_string()))
            .ok()
    }

    /// Money of at least zero (`positive`: above zero).
    fn money(&mut self, field: &str, value: Option<&ProtoMoney>, positive: bool) -> Option<Money> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        match Money::from_proto(value) {
            Ok(money) if positive && money.is_zero() => {
                self.add(field, "must be positive");
                None
            }
            Ok(money) => Some(money),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    fn date(&mut self, field: &str, value: Option<&Date>) -> Option<NaiveDate> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        let day = (1..=9999)
            .contains(&value.year)
            .then(|| {
                NaiveDate::from_ymd_opt(
                    value.year,
                    u32::try_from(value.month).ok()?,
                    u32::try_from(value.day).ok()?,
                )
            })
            .flatten();
        if day.is_none() {
            self.add(field, "must be a full, valid calendar date");
        }
        day
    }

    fn instant(&mut self, field: &str, value: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        let instant = u32::try_from(value.nanos)
            .ok()
            .filter(|nanos| *nanos < 1_000_000_000)
            .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos));
        if instant.is_none() {
            self.add(field, "is not a valid timestamp");
        }
        instant
    }

    /// A USCC as given, trimmed and upper-cased; an invalid code is for the checks to report.
    fn code_text(&mut self, field: &str, text: &str) -> String {
        if text.len() > USCC_TEXT_BYTES_MAX {
            self.add(
                field,
                format!("must be at most {USCC_TEXT_BYTES_MAX} bytes"),
            );
        }
        text.trim().to_ascii_uppercase()
    }

    fn division_code(&mut self, field: &str, text: &str) -> String {
        if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            self.add(field, "must be a 6-digit administrative division code");
        }
        text.to_owned()
    }

    fn identifier(&mut self, field: &str, text: &str, required: bool) -> String {
        let chars = text.chars().count();
        if required && text.trim().is_empty() {
            self.add(field, "is required");
        } else if chars > IDENTIFIER_CHARS_MAX {
            self.add(
                field,
                format!("must be at most {IDENTIFIER_CHARS_MAX} characters"),
            );
        }
        text.to_owned()
    }

    fn version(&mut self, field: &str, text: &str) -> Option<PolicyVersion> {
        if text.is_empty() {
            return None;
        }
        PolicyVersion::parse(text)
            .map_err(|e| self.add(field, e))
            .ok()
    }
}

fn date_to_proto(day: NaiveDate) -> Date {
    use chrono::Datelike;
    Date {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    }
}

fn now_proto() -> prost_types::Timestamp {
    timestamp_from_us(Utc::now().timestamp_micros())
}

fn program_to_proto(program: Program) -> pb::Program {
    match program {
        Program::ComputeVoucher => pb::Program::ComputeVoucher,
        Program::DataInfra => pb::Program::DataInfra,
    }
}

fn shortfall_to_proto(mode: ShortfallMode) -> pb::ShortfallMode {
    match mode {
        ShortfallMode::Waitlist => pb::ShortfallMode::Waitlist,
        ShortfallMode::Partial => pb::ShortfallMode::Partial,
        ShortfallMode::Skip => pb::ShortfallMode::Skip,
    }
}

fn parameters_to_proto(parameters: &Parameters) -> pb::PolicyParameters {
    use pb::policy_parameters::ProgramParameters;
    let program_parameters = match parameters {
        Parameters::ComputeVoucher(p) => {
            ProgramParameters::ComputeVoucher(pb::ComputeVoucherParameters {
                rate_max: p.rate_max.decimal().normalize().to_string(),
                enterprise_cap: Some(p.enterprise_cap.to_proto()),
                window_start: Some(date_to_proto(p.window.start())),
                window_end: Some(date_to_proto(p.window.end())),
                contract_total_max: Some(p.contract_total_max.to_proto()),
                shortfall_mode: shortfall_to_proto(p.shortfall) as i32,
            })
        }
        Parameters::DataInfra(p) => ProgramParameters::DataInfra(pb::DataInfraParameters {
            project_cap: Some(p.project_cap.to_proto()),
            shortfall_mode: shortfall_to_proto(p.shortfall) as i32,
        }),
    };
    pb::PolicyParameters {
        program_parameters: Some(program_parameters),
    }
}

/// The wire form of a policy version; `with_document` includes the graph.
pub fn policy_to_proto(record: &PolicyRecord, with_document: bool) -> pb::Policy {
    let spec = &record.spec;
    pb::Policy {
        policy_id: record.policy_id().to_owned(),
        version: spec.version.to_string(),
        program: program_to_proto(spec.program()) as i32,
        state: match record.state {
            PolicyState::Draft => pb::PolicyState::Draft,
            PolicyState::Published => pb::PolicyState::Published,
        } as i32,
        effective_start: Some(date_to_proto(spec.effective.start())),
        effective_end: Some(date_to_proto(spec.effective.end())),
        content_sha256: record.content_sha256.clone(),
        publish_time: record.published_us.map(timestamp_from_us),
        parameters: Some(parameters_to_proto(&spec.parameters)),
        document_json: if with_document {
            spec.document_json.clone()
        } else {
            String::new()
        },
        description: spec.description.clone(),
        publisher: record.publisher.clone(),
    }
}

fn trace_to_proto(step: &TraceStep) -> pb::TraceStep {
    pb::TraceStep {
        node_id: step.node_id.clone(),
        node_name: step.node_name.clone(),
        node_kind: step.node_kind.clone(),
        input_summary_json: step.input_summary_json.clone(),
        output_summary_json: step.output_summary_json.clone(),
        passed: step.passed,
    }
}

/// The wire form of a decision, with its identifier and time.
pub fn decision_to_proto(decision: &Decision, decision_id: uuid::Uuid) -> pb::Decision {
    pb::Decision {
        decision_id: decision_id.to_string(),
        program: program_to_proto(decision.program) as i32,
        eligible: decision.eligible,
        failed_checks: decision
            .failed_checks
            .iter()
            .map(|check| pb::FailedCheck {
                reason: check.reason.code().to_owned(),
                field: check.field.to_owned(),
                message_zh: check.message_zh.clone(),
                message_en: check.message_en.clone(),
            })
            .collect(),
        rate_applied: decision
            .rate_applied
            .map(|rate| rate.normalize().to_string())
            .unwrap_or_default(),
        entitlement: Some(decision.entitlement.to_proto()),
        enterprise_cap_remaining: decision.enterprise_cap_remaining.map(Money::to_proto),
        enterprise_cap_reached: decision.enterprise_cap_reached,
        trace: decision.trace.iter().map(trace_to_proto).collect(),
        policy_id: decision.policy_id.to_owned(),
        policy_version: decision.policy_version.clone(),
        evaluate_time: Some(now_proto()),
    }
}

/// Gives a decision its identifier and logs it with its inputs under that identifier.
fn record_decision(decision: &Decision, inputs: &dyn std::fmt::Debug) -> pb::Decision {
    let decision_id = uuid::Uuid::now_v7();
    let failed: Vec<&str> = decision
        .failed_checks
        .iter()
        .map(|c| c.reason.code())
        .collect();
    tracing::info!(
        decision_id = %decision_id,
        policy_id = decision.policy_id,
        policy_version = %decision.policy_version,
        eligible = decision.eligible,
        entitlement = %decision.entitlement,
        failed_checks = ?failed,
        inputs = ?inputs,
        "decision"
    );
    decision_to_proto(decision, decision_id)
}

/// Parses a compute-voucher claim at `prefix` (for example `claim`).
fn parse_claim(
    v: &mut Violations,
    prefix: &str,
    claim: Option<&pb::ComputeVoucherClaim>,
) -> Option<Claim> {
    let Some(c) = claim else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let before = v.0.len();
    let buyer_uscc = v.code_text(&f("buyer_uscc"), &c.buyer_uscc);
    let seller_uscc = v.code_text(&f("seller_uscc"), &c.seller_uscc);
    let contract_number = c.contract_number.trim().to_owned();
    if contract_number.is_empty() {
        v.add(&f("contract_number"), "is required");
    } else if contract_number.chars().count() > CONTRACT_NUMBER_CHARS_MAX {
        v.add(
            &f("contract_number"),
            format!("must be at most {CONTRACT_NUMBER_CHARS_MAX} characters"),
        );
    }
    let signed_on = c
        .signing_time
        .as_ref()
        .and_then(|t| v.instant(&f("signing_time"), t))
        .map(shanghai_date);
    let signing_date = match (&c.signing_date, signed_on) {
        (None, Some(day)) => Some(day),
        // An invalid signing_time is reported as such, not as a missing signing_date.
        (None, None) if c.signing_time.is_some() => None,
        (given, from_time) => {
            let day = v.date(&f("signing_date"), given.as_ref());
            if let (Some(day), Some(from_time)) = (day, from_time)
                && day != from_time
            {
                v.add(
                    &f("signing_time"),
                    format!("falls on {from_time} in Asia/Shanghai, not on signing_date {day}"),
                );
            }
            day
        }
    };
    let contract_total = v.money(&f("contract_total"), c.contract_total.as_ref(), false);
    let compute_type = match pb::ComputeType::try_from(c.compute_type) {
        Ok(pb::ComputeType::AiAccelerator) => Some(ComputeType::AiAccelerator),
        Ok(pb::ComputeType::GeneralPurposeHosting) => Some(ComputeType::GeneralPurposeHosting),
        Ok(pb::ComputeType::Storage) => Some(ComputeType::Storage),
        Ok(pb::ComputeType::Unspecified) | Err(_) => {
            v.add(&f("compute_type"), "must be a known compute type");
            None
        }
    };
    let data_center_division_code = v.division_code(
        &f("data_center_division_code"),
        &c.data_center_division_code,
    );
    let benefit_rating = match pb::BenefitRating::try_from(c.benefit_rating) {
        Ok(pb::BenefitRating::Unspecified) => Some(BenefitRating::Unrated),
        Ok(pb::BenefitRating::High) => Some(BenefitRating::High),
        Ok(pb::BenefitRating::Medium) => Some(BenefitRating::Medium),
        Ok(pb::BenefitRating::Low) => Some(BenefitRating::Low),
        Err(_) => {
            v.add(&f("benefit_rating"), "must be a known rating");
            None
        }
    };
    let enterprise_usage = v.money(&f("enterprise_usage"), c.enterprise_usage.as_ref(), false);
    if v.0.len() > before {
        return None;
    }
    Some(Claim {
        buyer_uscc,
        seller_uscc,
        contract_number,
        signing_date: signing_date?,
        contract_total: contract_total?,
        compute_type: compute_type?,
        data_center_division_code,
        related_party_declared: c.related_party_declared,
        benefit_rating: benefit_rating?,
        enterprise_usage: enterprise_usage?,
    })
}

/// Parses a data-infrastructure proposal at `prefix` (for example `proposal`).
fn parse_proposal(
    v: &mut Violations,
    prefix: &str,
    proposal: Option<&pb::DataInfraProposal>,
) -> Option<Proposal> {
    let Some(p) = proposal else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let before = v.0.len();
    let proposal_id = v.identifier(&f("proposal_id"), &p.proposal_id, false);
    let applicant_uscc = v.code_text(&f("applicant_uscc"), &p.applicant_uscc);
    let region_code = v.division_code(&f("region_code"), &p.region_code);
    let category = match pb::DataInfraCategory::try_from(p.category) {
        Ok(pb::DataInfraCategory::TrustedDataSpace) => Some(Category::TrustedDataSpace),
        Ok(pb::DataInfraCategory::DataField) => Some(Category::DataField),
        Ok(pb::DataInfraCategory::DataAnnotationBase) => Some(Category::DataAnnotationBase),
        Ok(pb::DataInfraCategory::OtherDataInfrastructure) => {
            Some(Category::OtherDataInfrastructure)
        }
        Ok(pb::DataInfraCategory::Unspecified) | Err(_) => {
            v.add(&f("category"), "must be a known category");
            None
        }
    };
    let requested_amount = v.money(&f("requested_amount"), p.requested_amount.as_ref(), false);
    if v.0.len() > before {
        return None;
    }
    Some(Proposal {
        proposal_id,
        applicant_uscc,
        region_code,
        category: category?,
        requested_amount: requested_amount?,
    })
}

fn parse_shortfall(
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

/// Parses the typed parameters of a draft at `prefix` (for example `policy.parameters`).
fn parse_parameters(
    v: &mut Violations,
    prefix: &str,
    program: Option<Program>,
    parameters: Option<&pb::PolicyParameters>,
) -> Option<Parameters> {
    use pb::policy_parameters::ProgramParameters;
    let f = |name: &str| format!("{prefix}.{name}");
    let Some(kind) = parameters.and_then(|p| p.program_parameters.as_ref()) else {
        v.add(prefix, "is required");
        return None;
    };
    let before = v.0.len();
    let parameters = match kind {
        ProgramParameters::ComputeVoucher(p) => {
            let f = |name: &str| f(&format!("compute_voucher.{name}"));
            let rate_max = Decimal::from_str_exact(&p.rate_max)
                .map_err(|_| "must be a plain decimal such as 0.05".to_owned())
                .and_then(policy::parse_rate_max)
                .map_err(|why| v.add(&f("rate_max"), why))
                .ok();
            let enterprise_cap = v.money(&f("enterprise_cap"), p.enterprise_cap.as_ref(), true);
            let start = v.date(&f("window_start"), p.window_start.as_ref());
            let end = v.date(&f("window_end"), p.window_end.as_ref());
            let window = match (start, end) {
                (Some(start), Some(end)) => {
                    let window = DayRange::new(start, end);
                    if window.is_none() {
                        v.add(&f("window_end"), "must not be before window_start");
                    }
                    window
                }
                _ => None,
            };
            let contract_total_max = v.money(
                &f("contract_total_max"),
                p.contract_total_max.as_ref(),
                true,
            );
            let shortfall = parse_shortfall(
                v,
                &f("shortfall_mode"),
                p.shortfall_mode,
                &[ShortfallMode::Waitlist, ShortfallMode::Partial],
            );
            match (
                rate_max,
                enterprise_cap,
                window,
                contract_total_max,
                shortfall,
            ) {
                (
                    Some(rate_max),
                    Some(enterprise_cap),
                    Some(window),
                    Some(contract_total_max),
                    Some(shortfall),
                ) => Some(Parameters::ComputeVoucher(ComputeVoucherParameters {
                    rate_max,
                    enterprise_cap,
                    window,
                    contract_total_max,
                    shortfall,
                })),
                _ => None,
            }
        }
        ProgramParameters::DataInfra(p) => {
            let f = |name: &str| f(&format!("data_infra.{name}"));
            let project_cap = v.money(&f("project_cap"), p.project_cap.as_ref(), true);
            let shortfall = parse_shortfall(
                v,
                &f("shortfall_mode"),
                p.shortfall_mode,
                &[ShortfallMode::Partial, ShortfallMode::Skip],
            );
            match (project_cap, shortfall) {
                (Some(project_cap), Some(shortfall)) => {
                    Some(Parameters::DataInfra(DataInfraParameters {
                        project_cap,
                        shortfall,
                    }))
                }
                _ => None,
            }
        }
    };
    if let (Some(parameters), Some(program)) = (&parameters, program)
        && parameters.program() != program
    {
        v.add(prefix, format!("must be the parameters of {program}"));
        return None;
    }
    if v.0.len() > before { None } else { parameters }
}

fn parse_program(v: &mut Violations, field: &str, value: i32) -> Option<Program> {
    match pb::Program::try_from(value) {
        Ok(pb::Program::ComputeVoucher) => Some(Program::ComputeVoucher),
        Ok(pb::Program::DataInfra) => Some(Program::DataInfra),
        Ok(pb::Program::Unspecified) | Err(_) => {
            v.add(field, "must be compute voucher or data infrastructure");
            None
        }
    }
}

/// Parses a draft at `prefix`. With `effective_required` false (simulation) the effective
/// period is not checked and defaults to today.
fn parse_draft(
    v: &mut Violations,
    prefix: &str,
    draft: Option<&pb::PolicyDraft>,
    effective_required: bool,
) -> Option<PolicySpec> {
    let Some(d) = draft else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let before = v.0.len();
    let program = parse_program(v, &f("program"), d.program);
    let version = if d.version.is_empty() {
        v.add(&f("version"), "is required");
        None
    } else {
        v.version(&f("version"), &d.version)
    };
    let effective = if effective_required {
        let start = v.date(&f("effective_start"), d.effective_start.as_ref());
        let end = v.date(&f("effective_end"), d.effective_end.as_ref());
        match (start, end) {
            (Some(start), Some(end)) => {
                let range = DayRange::new(start, end);
                if range.is_none() {
                    v.add(&f("effective_end"), "must not be before effective_start");
                }
                range
            }
            _ => None,
        }
    } else {
        let today = today();
        DayRange::new(today, today)
    };
    let parameters = parse_parameters(v, &f("parameters"), program, d.parameters.as_ref());
    if d.document_json.trim().is_empty() {
        v.add(&f("document_json"), "is required");
    }
    if d.description.chars().count() > DESCRIPTION_CHARS_MAX {
        v.add(
            &f("description"),
            format!("must be at most {DESCRIPTION_CHARS_MAX} characters"),
        );
    }
    if v.0.len() > before {
        return None;
    }
    Some(PolicySpec {
        version: version?,
        effective: effective?,
        parameters: parameters?,
        document_json: d.document_json.clone(),
        description: d.description.clone(),
    })
}

/// Validates a draft as PublishPolicy does (fields at `prefix`) and compiles it.
pub fn validate_draft(prefix: &str, draft: &pb::PolicyDraft) -> Result<CompiledPolicy, RulesError> {
    let mut v = Violations::default();
    let spec = parse_draft(&mut v, prefix, Some(draft), true);
    v.finish()?;
    crate::compiler::compile_draft(prefix, spec.expect("validated"))
}

/// The version of `program` to use: `version` when given, otherwise the one in effect on `day`.
/// Today in Asia/Shanghai: the edge reads the clock, the domain is handed the day.
fn today() -> NaiveDate {
    shanghai_date(Utc::now())
}

fn select(
    snapshot: &Snapshot,
    program: Program,
    version: Option<PolicyVersion>,
    day: NaiveDate,
) -> Result<Arc<CompiledPolicy>, RulesError> {
    match version {
        Some(version) => policy::find(&snapshot.policies, program, version).ok_or_else(|| {
            RulesError::PolicyNotFound {
                policy_id: program.policy_id().to_owned(),
                version: Some(version.to_string()),
            }
        }),
        None => policy::in_effect(&snapshot.policies, program, day).ok_or(
            RulesError::NoPolicyPublished {
                policy_id: program.policy_id(),
            },
        ),
    }
}

fn evaluation_failed(policy: &CompiledPolicy, failure: EngineFailure) -> RulesError {
    RulesError::PolicyEvaluationFailed {
        policy_id: policy.record.policy_id(),
        version: policy.version(),
        failure,
    }
}

fn actor<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(ACTOR_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .unwrap_or("anonymous")
        .to_owned()
}

fn totals_to_proto(totals: &Totals) -> pb::SimulationTotals {
    pb::SimulationTotals {
        case_count: totals.case_count,
        eligible_count: totals.eligible_count,
        total_subsidy: Some(totals.total_subsidy.to_proto()),
        enterprise_cap_reached_count: totals.enterprise_cap_reached_count,
    }
}

fn denylist_entry_to_proto(entry: &DenylistEntry) -> pb::DenylistEntry {
    pb::DenylistEntry {
        uscc: entry.uscc.as_str().to_owned(),
        reason: entry.reason.clone(),
        source: entry.source.clone(),
        listed_date: entry.listed_date.map(date_to_proto),
    }
}

/// Trims a page fetched with one extra item and returns the token of the next page.
fn next_token<T>(rows: &mut Vec<T>, size: u32, token: impl Fn(&T) -> String) -> String {
    if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

/// The gRPC face of the rules service.
#[derive(Clone, Debug)]
pub struct RulesGrpc {
    catalog: Arc<Catalog>,
}

impl RulesGrpc {
    /// Serves `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl pb::rules_service_server::RulesService for RulesGrpc {
    async fn evaluate_compute_voucher(
        &self,
        request: Request<pb::EvaluateComputeVoucherRequest>,
    ) -> Result<Response<pb::EvaluateComputeVoucherResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let claim = parse_claim(&mut v, "claim", req.claim.as_ref());
        let version = v.version("policy_version", &req.policy_version);
        v.finish()?;
        let claim = claim.expect("validated");
        let snapshot = self.catalog.current().await?;
        let policy = select(
            &snapshot,
            Program::ComputeVoucher,
            version,
            claim.signing_date,
        )?;
        let denylisted = snapshot.denylisted(&claim.buyer_uscc);
        let decision = compute_voucher::evaluate(&policy, &claim, denylisted, true)
            .map_err(|failure| evaluation_failed(&policy, failure))?;
        Ok(Response::new(pb::EvaluateComputeVoucherResponse {
            decision: Some(record_decision(&decision, &claim)),
        }))
    }

    async fn evaluate_data_infra_proposal(
        &self,
        request: Request<pb::EvaluateDataInfraProposalRequest>,
    ) -> Result<Response<pb::EvaluateDataInfraProposalResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let proposal = parse_proposal(&mut v, "proposal", req.proposal.as_ref());
        let version = v.version("policy_version", &req.policy_version);
        v.finish()?;
        let proposal = proposal.expect("validated");
        let snapshot = self.catalog.current().await?;
        let policy = select(&snapshot, Program::DataInfra, version, today())?;
        let decision = data_infra::evaluate(&policy, &proposal, true)
            .map_err(|failure| evaluation_failed(&policy, failure))?;
        Ok(Response::new(pb::EvaluateDataInfraProposalResponse {
            decision: Some(record_decision(&decision, &proposal)),
        }))
    }

    async fn rank_selection_round(
        &self,
        request: Request<pb::RankSelectionRoundRequest>,
    ) -> Result<Response<pb::RankSelectionRoundResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let pool = v.money("pool_available", req.pool_available.as_ref(), false);
        let version = v.version("policy_version", &req.policy_version);
        if req.candidates.is_empty() || req.candidates.len() > ranking::CANDIDATES_MAX {
            v.add(
                "candidates",
                format!("must have 1 to {} candidates", ranking::CANDIDATES_MAX),
            );
        }
        let mut seen = HashSet::new();
        let mut candidates = Vec::with_capacity(req.candidates.len());
        for (i, c) in req
            .candidates
            .iter()
            .take(ranking::CANDIDATES_MAX)
            .enumerate()
        {
            let f = |name: &str| format!("candidates[{i}].{name}");
            let before = v.0.len();
            let proposal_id = v.identifier(&f("proposal_id"), &c.proposal_id, true);
            if !proposal_id.is_empty() && !seen.insert(proposal_id.clone()) {
                v.add(&f("proposal_id"), "appears more than once in the round");
            }
            let requested = v.money(&f("requested_amount"), c.requested_amount.as_ref(), true);
            let mean = match (c.expert_scores.is_empty(), c.mean_score.is_empty()) {
                (false, true) => Mean::of_scores(&c.expert_scores)
                    .map_err(|why| v.add(&f("expert_scores"), why))
                    .ok(),
                (true, false) => Decimal::from_str_exact(&c.mean_score)
                    .map_err(|_| "must be a plain decimal such as 87.5".to_owned())
                    .and_then(Mean::of_decimal)
                    .map_err(|why| v.add(&f("mean_score"), why))
                    .ok(),
                _ => {
                    v.add(
                        &f("expert_scores"),
                        "exactly one of expert_scores and mean_score is required",
                    );
                    None
                }
            };
            let submitted = match &c.submit_time {
                Some(time) => v
                    .instant(&f("submit_time"), time)
                    .map(|_| (time.seconds, time.nanos)),
                None => {
                    v.add(&f("submit_time"), "is required");
                    None
                }
            };
            if v.0.len() == before
                && let (Some(requested), Some(mean), Some(submitted)) = (requested, mean, submitted)
            {
                candidates.push(Candidate {
                    proposal_id,
                    requested,
                    mean,
                    submitted,
                });
            }
        }
        v.finish()?;
        let pool = pool.expect("validated");
        let snapshot = self.catalog.current().await?;
        let policy = select(&snapshot, Program::DataInfra, version, today())?;
        let parameters = data_infra::parameters(&policy);
        let result = ranking::rank(
            pool,
            &candidates,
            parameters.project_cap,
            parameters.shortfall,
        );
        assert!(
            result.total_awarded <= pool,
            "a round never awards more than the pool"
        );
        Ok(Response::new(pb::RankSelectionRoundResponse {
            awards: result
                .awards
                .iter()
                .map(|award| pb::Award {
                    rank: award.rank,
                    proposal_id: award.proposal_id.clone(),
                    mean_score: award.mean_score.clone(),
                    awarded: Some(award.awarded.to_proto()),
                    outcome: match award.outcome {
                        ranking::Outcome::Awarded => pb::AwardOutcome::Awarded,
                        ranking::Outcome::PartiallyAwarded => pb::AwardOutcome::PartiallyAwarded,
                        ranking::Outcome::NotSelected => pb::AwardOutcome::NotSelected,
                    } as i32,
                    reason: award.reason.code().to_owned(),
                })
                .collect(),
            total_awarded: Some(result.total_awarded.to_proto()),
            pool_remaining: Some(result.pool_remaining.to_proto()),
            shortfall_mode: shortfall_to_proto(parameters.shortfall) as i32,
            policy_id: Program::DataInfra.policy_id().to_owned(),
            policy_version: policy.version(),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.policy_id.is_empty() {
            v.add("policy_id", "is required");
        }
        let version = v.version("version", &req.version);
        v.finish()?;
        let program =
            Program::from_policy_id(&req.policy_id).ok_or_else(|| RulesError::PolicyNotFound {
                policy_id: req.policy_id.clone(),
                version: None,
            })?;
        let snapshot = self.catalog.current().await?;
        let policy = select(&snapshot, program, version, today()).map_err(|e| match e {
            RulesError::NoPolicyPublished { policy_id } => RulesError::PolicyNotFound {
                policy_id: policy_id.to_owned(),
                version: None,
            },
            other => other,
        })?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy_to_proto(&policy.record, true)),
        }))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let program = match pb::Program::try_from(req.program) {
            Ok(pb::Program::Unspecified) => None,
            Ok(pb::Program::ComputeVoucher) => Some(Program::ComputeVoucher),
            Ok(pb::Program::DataInfra) => Some(Program::DataInfra),
            Err(_) => {
                v.add("program", "unknown program");
                None
            }
        };
        let size = page_size(req.page_size, POLICIES_PAGE_DEFAULT, POLICIES_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        let after = match decode_token("policies", &req.page_token) {
            Ok(None) => Some(None),
            Ok(Some(key)) => key
                .split_once('/')
                .and_then(|(id, seq)| Some(Some((id.to_owned(), seq.parse::<i64>().ok()?))))
                .or_else(|| {
                    v.add("page_token", "page_token is not valid");
                    None
                }),
            Err(e) => {
                v.add("page_token", e.to_string());
                None
            }
        };
        v.finish()?;
        let (size, after) = (size.expect("validated"), after.expect("validated"));
        let snapshot = self.catalog.current().await?;
        let key = |p: &CompiledPolicy| {
            (
                p.record.policy_id(),
                std::cmp::Reverse(p.record.publish_sequence),
            )
        };
        let mut policies: Vec<&Arc<CompiledPolicy>> = snapshot
            .policies
            .iter()
            .filter(|p| program.is_none_or(|program| p.program() == program))
            .filter(|p| match &after {
                None => true,
                Some((id, seq)) => key(p) > (id.as_str(), std::cmp::Reverse(*seq)),
            })
            .collect();
        policies.sort_by(|a, b| key(a).cmp(&key(b)));
        policies.truncate(size as usize + 1);
        let next_page_token = next_token(&mut policies, size, |p| {
            encode_token(
                "policies",
                &format!("{}/{}", p.record.policy_id(), p.record.publish_sequence),
            )
        });
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: policies
                .iter()
                .map(|p| policy_to_proto(&p.record, false))
                .collect(),
            next_page_token,
        }))
    }

    async fn publish_policy(
        &self,
        request: Request<pb::PublishPolicyRequest>,
    ) -> Result<Response<pb::PublishPolicyResponse>, Status> {
        let publisher = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = if req.validate_only && req.request_id.is_empty() {
            None
        } else {
            v.request_id(&req.request_id)
        };
        let spec = parse_draft(&mut v, "policy", req.policy.as_ref(), true);
        v.finish()?;
        let spec = spec.expect("validated");
        let compiled = crate::compiler::compile_draft("policy", spec)?;
        if req.validate_only {
            return Ok(Response::new(pb::PublishPolicyResponse {
                policy: Some(policy_to_proto(&compiled.record, true)),
            }));
        }
        let request_id = request_id.expect("required unless validate_only");
        let response = self
            .catalog
            .store()
            .publish(
                &compiled.record.spec,
                &publisher,
                Idempotent::Keyed(&request_id, &fingerprint("PublishPolicy", &req)),
                |record| pb::PublishPolicyResponse {
                    policy: Some(policy_to_proto(record, true)),
                },
            )
            .await?;
        if let Some(policy) = &response.policy {
            tracing::info!(
                policy_id = %policy.policy_id,
                policy_version = %policy.version,
                content_sha256 = %policy.content_sha256,
                publisher = %policy.publisher,
                "policy publication answered"
            );
        }
        Ok(Response::new(response))
    }

    async fn simulate_policy(
        &self,
        request: Request<pb::SimulatePolicyRequest>,
    ) -> Result<Response<pb::SimulatePolicyResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let spec = parse_draft(&mut v, "draft", req.draft.as_ref(), false);
        let program = spec.as_ref().map(PolicySpec::program);
        let baseline_version = v.version("baseline_version", &req.baseline_version);
        if req.cases.is_empty() || req.cases.len() > simulation::CASES_MAX {
            v.add(
                "cases",
                format!("must have 1 to {} cases", simulation::CASES_MAX),
            );
        }
        let mut seen = HashSet::new();
        let mut cases = Vec::with_capacity(req.cases.len());
        for (i, case) in req.cases.iter().take(simulation::CASES_MAX).enumerate() {
            let prefix = format!("cases[{i}]");
            let case_id = v.identifier(&format!("{prefix}.case_id"), &case.case_id, true);
            if !case_id.is_empty() && !seen.insert(case_id.clone()) {
                v.add(&format!("{prefix}.case_id"), "appears more than once");
            }
            use pb::simulation_case::Subject as WireSubject;
            let subject = match &case.subject {
                Some(WireSubject::ComputeVoucher(claim)) => {
                    parse_claim(&mut v, &format!("{prefix}.compute_voucher"), Some(claim))
                        .map(Subject::ComputeVoucher)
                }
                Some(WireSubject::DataInfra(proposal)) => {
                    parse_proposal(&mut v, &format!("{prefix}.data_infra"), Some(proposal))
                        .map(Subject::DataInfra)
                }
                None => {
                    v.add(&format!("{prefix}.subject"), "is required");
                    None
                }
            };
            if let (Some(subject), Some(program)) = (&subject, program)
                && subject.program() != program
            {
                v.add(
                    &format!("{prefix}.subject"),
                    format!("must be a case of the draft's program {program}"),
                );
            }
            if let Some(subject) = subject {
                cases.push(Case { case_id, subject });
            }
        }
        v.finish()?;
        let spec = spec.expect("validated");
        let program = spec.program();
        let draft = crate::compiler::compile_draft("draft", spec)?;
        let snapshot = self.catalog.current().await?;
        let baseline = select(&snapshot, program, baseline_version, today())?;
        let denylisted = |code: &str| snapshot.denylisted(code);
        let result =
            simulation::simulate(&draft, &baseline, &cases, &denylisted, req.include_trace)
                .map_err(|failure| match failure {
                    SimulationFailure::Draft(case_id, failure) => RulesError::PolicyInvalid {
                        policy_id: draft.record.policy_id(),
                        version: draft.version(),
                        violations: vec![FieldViolation::new(
                            "draft.document_json",
                            format!("the engine failed on case {case_id:?}: {failure}"),
                        )],
                    },
                    SimulationFailure::Baseline(failure) => evaluation_failed(&baseline, failure),
                })?;
        let mut draft_proto = policy_to_proto(&draft.record, false);
        let wire_draft = req.draft.as_ref().expect("validated");
        draft_proto.effective_start = wire_draft.effective_start;
        draft_proto.effective_end = wire_draft.effective_end;
        let decision = |d: &Decision| decision_to_proto(d, uuid::Uuid::now_v7());
        Ok(Response::new(pb::SimulatePolicyResponse {
            draft: Some(draft_proto),
            baseline: Some(policy_to_proto(&baseline.record, false)),
            results: result
                .results
                .iter()
                .map(|r| pb::SimulationCaseResult {
                    case_id: r.case_id.clone(),
                    draft_decision: Some(decision(&r.draft)),
                    baseline_decision: Some(decision(&r.baseline)),
                    changed: r.changed,
                })
                .collect(),
            draft_totals: Some(totals_to_proto(&result.draft_totals)),
            baseline_totals: Some(totals_to_proto(&result.baseline_totals)),
        }))
    }

    async fn list_denylist_entries(
        &self,
        request: Request<pb::ListDenylistEntriesRequest>,
    ) -> Result<Response<pb::ListDenylistEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let only = if req.uscc.is_empty() {
            String::new()
        } else {
            Uscc::parse(&req.uscc)
                .map(|code| code.as_str().to_owned())
                .map_err(|e| v.add("uscc", e.to_string()))
                .unwrap_or_default()
        };
        let size = page_size(req.page_size, DENYLIST_PAGE_DEFAULT, DENYLIST_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        let after = decode_token("denylist", &req.page_token)
            .map_err(|e| v.add("page_token", e.to_string()))
            .ok();
        v.finish()?;
        let (size, after) = (size.expect("validated"), after.expect("validated"));
        let (mut entries, state) = self
            .catalog
            .store()
            .denylist_page(&only, &after.unwrap_or_default(), i64::from(size) + 1)
            .await
            .map_err(RulesError::from)?;
        let next_page_token = next_token(&mut entries, size, |e| {
            encode_token("denylist", e.uscc.as_str())
        });
        Ok(Response::new(pb::ListDenylistEntriesResponse {
            entries: entries.iter().map(denylist_entry_to_proto).collect(),
            next_page_token,
            content_sha256: state.content_sha256,
            replace_time: state.replaced_us.map(timestamp_from_us),
        }))
    }

    async fn replace_denylist(
        &self,
        request: Request<pb::ReplaceDenylistRequest>,
    ) -> Result<Response<pb::ReplaceDenylistResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        if req.entries.len() > denylist::ENTRIES_MAX {
            v.add(
                "entries",
                format!("must have at most {} entries", denylist::ENTRIES_MAX),
            );
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(req.entries.len());
        for (i, e) in req.entries.iter().take(denylist::ENTRIES_MAX).enumerate() {
            let f = |name: &str| format!("entries[{i}].{name}");
            let uscc = Uscc::parse(&e.uscc)
                .map_err(|err| v.add(&f("uscc"), err.to_string()))
                .ok();
            if let Some(code) = &uscc
                && !seen.insert(code.clone())
            {
                v.add(&f("uscc"), "appears more than once");
            }
            let text = |v: &mut Violations, name: &str, value: &str, max: usize| {
                let chars = value.chars().count();
                if value.trim().is_empty() || chars > max {
                    v.add(&f(name), format!("must be 1 to {max} characters"));
                }
            };
            text(&mut v, "reason", &e.reason, denylist::REASON_CHARS_MAX);
            text(&mut v, "source", &e.source, denylist::SOURCE_CHARS_MAX);
            let listed_date = e
                .listed_date
                .as_ref()
                .and_then(|d| v.date(&f("listed_date"), Some(d)));
            if let Some(uscc) = uscc {
                entries.push(DenylistEntry {
                    uscc,
                    reason: e.reason.clone(),
                    source: e.source.clone(),
                    listed_date,
                });
            }
        }
        v.finish()?;
        let request_id = request_id.expect("validated");
        let content_sha256 = denylist::content_sha256(&entries);
        let response = self
            .catalog
            .store()
            .replace_denylist(
                &entries,
                &content_sha256,
                &request_id,
                &fingerprint("ReplaceDenylist", &req),
                |r: &Replacement| pb::ReplaceDenylistResponse {
                    entry_count: r.entry_count,
                    added_count: r.added_count,
                    removed_count: r.removed_count,
                    content_sha256: r.content_sha256.clone(),
                    replace_time: Some(timestamp_from_us(r.replaced_us)),
                },
            )
            .await?;
        tracing::info!(
            entry_count = response.entry_count,
            content_sha256 = %response.content_sha256,
            "denylist replaced"
        );
        Ok(Response::new(response))
    }
}
