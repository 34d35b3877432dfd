//! Conversions between the wire (`subsidy.rules.v1`) and the domain, in both directions.
//!
//! Parsing reads one wire message into a domain value and reports every problem as a field
//! violation under the message's prefix (`claim.…`, `cases[3].compute_voucher.…`), returning
//! `None` exactly when it reported one. Rendering turns domain values and stored rows back into
//! wire messages; it reads no clock: decision ids and times are handed in.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use subsidy_common::edge::{self, IDENTIFIER_LEN_MAX, Violations};
use subsidy_common::{Money, Uscc};
use subsidy_proto::rules as pb;

use crate::domain::compute_voucher::{BenefitRating, Claim, ComputeType};
use crate::domain::data_infra::{self, Category, Proposal};
use crate::domain::decision::Decision;
use crate::domain::denylist::{self, DenylistEntry, Replacement};
use crate::domain::graph::TraceStep;
use crate::domain::policy::{
    CompiledPolicy, Parameters, PolicyRecord, PolicyState, PolicyVersion, ShortfallMode,
};
use crate::domain::ranking::{self, Candidate, Mean, RoundResult};
use crate::domain::registry::{
    self, Capacity, DataCenter, DataCenterStatus, DivisionCode, Provider, ProviderStatus,
    RegistryAnswer, StatusChange,
};
use crate::domain::replay::{Inputs, Replayed};
use crate::domain::simulation::{Case, Simulation, Subject, Totals};
use crate::domain::{Program, shanghai_date};
use crate::storage::denylist::DenylistState;

/// Longest USCC text accepted for a check (longer is malformed input, not an invalid code).
const USCC_TEXT_BYTES_MAX: usize = 64;
/// Longest contract number, in characters.
const CONTRACT_NUMBER_CHARS_MAX: usize = 64;
/// Digits of an administrative division code (GB/T 2260).
const DIVISION_CODE_DIGITS: usize = 6;

// ---- fields ----

/// A policy version, or `None` (and no violation) when `text` is empty.
pub fn version(v: &mut Violations, field: &str, text: &str) -> Option<PolicyVersion> {
    if text.is_empty() {
        return None;
    }
    PolicyVersion::parse(text).map_err(|e| v.add(field, e)).ok()
}

/// A USCC as given, trimmed and upper-cased; an invalid code is for the checks to report, so
/// only an absurdly long text is refused here.
fn code_text(v: &mut Violations, field: &str, text: &str) -> Option<String> {
    if text.len() > USCC_TEXT_BYTES_MAX {
        v.add(
            field,
            format!("must be at most {USCC_TEXT_BYTES_MAX} bytes"),
        );
        return None;
    }
    Some(text.trim().to_ascii_uppercase())
}

fn division_code(v: &mut Violations, field: &str, text: &str) -> Option<String> {
    if text.len() != DIVISION_CODE_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        v.add(field, "must be a 6-digit administrative division code");
        return None;
    }
    Some(text.to_owned())
}

/// The program of a known, specified wire value.
pub fn program(value: pb::Program) -> Option<Program> {
    match value {
        pb::Program::ComputeVoucher => Some(Program::ComputeVoucher),
        pb::Program::DataInfra => Some(Program::DataInfra),
        pb::Program::Unspecified => None,
    }
}

// ---- messages in ----

/// Parses a compute-voucher claim at `prefix` (for example `claim`).
pub fn claim(
    v: &mut Violations,
    prefix: &str,
    claim: Option<&pb::ComputeVoucherClaim>,
) -> Option<Claim> {
    let Some(c) = claim else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let buyer_uscc = code_text(v, &f("buyer_uscc"), &c.buyer_uscc);
    let seller_uscc = code_text(v, &f("seller_uscc"), &c.seller_uscc);
    let contract_number = v.text(
        &f("contract_number"),
        c.contract_number.trim(),
        CONTRACT_NUMBER_CHARS_MAX,
    );
    let signing_date = signing_date(v, prefix, c);
    let contract_total = v.money(&f("contract_total"), c.contract_total.as_ref());
    let compute_type = match pb::ComputeType::try_from(c.compute_type) {
        Ok(pb::ComputeType::AiAccelerator) => Some(ComputeType::AiAccelerator),
        Ok(pb::ComputeType::GeneralPurposeHosting) => Some(ComputeType::GeneralPurposeHosting),
        Ok(pb::ComputeType::Storage) => Some(ComputeType::Storage),
        Ok(pb::ComputeType::Unspecified) | Err(_) => {
            v.add(&f("compute_type"), "must be a known compute type");
            None
        }
    };
    let data_center_division_code = division_code(
        v,
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
    let enterprise_usage = v.money(&f("enterprise_usage"), c.enterprise_usage.as_ref());
    Some(Claim {
        buyer_uscc: buyer_uscc?,
        seller_uscc: seller_uscc?,
        contract_number: contract_number?,
        signing_date: signing_date?,
        contract_total: contract_total?,
        compute_type: compute_type?,
        data_center_division_code: data_center_division_code?,
        related_party_declared: c.related_party_declared,
        benefit_rating: benefit_rating?,
        enterprise_usage: enterprise_usage?,
    })
}

/// The signing day: `signing_date`, or the Asia/Shanghai day of `signing_time`; when both are
/// given they must agree.
fn signing_date(
    v: &mut Violations,
    prefix: &str,
    c: &pb::ComputeVoucherClaim,
) -> Option<NaiveDate> {
    let (date_field, time_field) = (
        format!("{prefix}.signing_date"),
        format!("{prefix}.signing_time"),
    );
    // Some(None): no time given; None: an invalid time (reported).
    let from_time = match &c.signing_time {
        None => Some(None),
        Some(time) => v
            .instant(&time_field, Some(time))
            .map(|instant| Some(shanghai_date(instant))),
    };
    match (&c.signing_date, from_time) {
        (None, Some(Some(day))) => Some(day),
        // An invalid signing_time is reported as such, not as a missing signing_date.
        (None, None) => None,
        (given, from_time) => {
            let day = v.date(&date_field, given.as_ref());
            if let (Some(day), Some(Some(from_time))) = (day, from_time)
                && day != from_time
            {
                v.add(
                    &time_field,
                    format!("falls on {from_time} in Asia/Shanghai, not on signing_date {day}"),
                );
                return None;
            }
            from_time?;
            day
        }
    }
}

/// Parses a data-infrastructure proposal at `prefix` (for example `proposal`).
pub fn proposal(
    v: &mut Violations,
    prefix: &str,
    proposal: Option<&pb::DataInfraProposal>,
) -> Option<Proposal> {
    let Some(p) = proposal else {
        v.add(prefix, "is required");
        return None;
    };
    let f = |name: &str| format!("{prefix}.{name}");
    let proposal_id = v.optional_text(&f("proposal_id"), &p.proposal_id, IDENTIFIER_LEN_MAX);
    let applicant_uscc = code_text(v, &f("applicant_uscc"), &p.applicant_uscc);
    let region_code = division_code(v, &f("region_code"), &p.region_code);
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
    let requested_amount = v.money(&f("requested_amount"), p.requested_amount.as_ref());
    Some(Proposal {
        proposal_id: proposal_id?,
        applicant_uscc: applicant_uscc?,
        region_code: region_code?,
        category: category?,
        requested_amount: requested_amount?,
    })
}

/// Parses a past case of a simulation at `prefix` (for example `cases[0]`); `seen` holds the
/// case ids so far, which must be unique, and the case must be of the draft's `program` when
/// that is known.
pub fn case(
    v: &mut Violations,
    prefix: &str,
    case: &pb::SimulationCase,
    seen: &mut HashSet<String>,
    program: Option<Program>,
) -> Option<Case> {
    let id_field = format!("{prefix}.case_id");
    let mut case_id = v.text(&id_field, &case.case_id, IDENTIFIER_LEN_MAX);
    if !case.case_id.is_empty() && !seen.insert(case.case_id.clone()) {
        v.add(&id_field, "appears more than once");
        case_id = None;
    }
    let subject = subject(v, prefix, case.subject.as_ref());
    if let (Some(subject), Some(program)) = (&subject, program)
        && subject.program() != program
    {
        v.add(
            &format!("{prefix}.subject"),
            format!("must be a case of the draft's program {program}"),
        );
        return None;
    }
    Some(Case {
        case_id: case_id?,
        subject: subject?,
    })
}

fn subject(
    v: &mut Violations,
    prefix: &str,
    subject: Option<&pb::simulation_case::Subject>,
) -> Option<Subject> {
    use pb::simulation_case::Subject as WireSubject;
    match subject {
        Some(WireSubject::ComputeVoucher(c)) => {
            claim(v, &format!("{prefix}.compute_voucher"), Some(c)).map(Subject::ComputeVoucher)
        }
        Some(WireSubject::DataInfra(p)) => {
            proposal(v, &format!("{prefix}.data_infra"), Some(p)).map(Subject::DataInfra)
        }
        None => {
            v.add(&format!("{prefix}.subject"), "is required");
            None
        }
    }
}

/// Parses one candidate of a selection round at `prefix` (for example `candidates[0]`);
/// `seen` holds the proposal ids of the round so far, which must be unique.
pub fn candidate(
    v: &mut Violations,
    prefix: &str,
    c: &pb::SelectionCandidate,
    seen: &mut HashSet<String>,
) -> Option<Candidate> {
    let f = |name: &str| format!("{prefix}.{name}");
    let mut proposal_id = v.text(&f("proposal_id"), &c.proposal_id, IDENTIFIER_LEN_MAX);
    if !c.proposal_id.is_empty() && !seen.insert(c.proposal_id.clone()) {
        v.add(&f("proposal_id"), "appears more than once in the round");
        proposal_id = None;
    }
    let requested = v.positive_money(&f("requested_amount"), c.requested_amount.as_ref());
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
    let submitted = v
        .instant(&f("submit_time"), c.submit_time.as_ref())
        .and(c.submit_time.as_ref())
        .map(|time| (time.seconds, time.nanos));
    Some(Candidate {
        proposal_id: proposal_id?,
        requested: requested?,
        mean: mean?,
        submitted: submitted?,
    })
}

/// Parses one denylist entry at `prefix` (for example `entries[0]`); `seen` holds the codes
/// of the list so far, which must be unique.
pub fn denylist_entry(
    v: &mut Violations,
    prefix: &str,
    e: &pb::DenylistEntry,
    seen: &mut HashSet<Uscc>,
) -> Option<DenylistEntry> {
    let f = |name: &str| format!("{prefix}.{name}");
    let mut uscc = v.uscc(&f("uscc"), &e.uscc);
    if let Some(code) = &uscc
        && !seen.insert(code.clone())
    {
        v.add(&f("uscc"), "appears more than once");
        uscc = None;
    }
    let reason = v.text(&f("reason"), &e.reason, denylist::REASON_CHARS_MAX);
    let source = v.text(&f("source"), &e.source, denylist::SOURCE_CHARS_MAX);
    let listed_date = match &e.listed_date {
        None => Some(None),
        Some(day) => v.date(&f("listed_date"), Some(day)).map(Some),
    };
    Some(DenylistEntry {
        uscc: uscc?,
        reason: reason?,
        source: source?,
        listed_date: listed_date?,
    })
}

// ---- messages out ----

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
                window_start: Some(edge::date(p.window.start())),
                window_end: Some(edge::date(p.window.end())),
                contract_total_max: Some(p.contract_total_max.to_proto()),
                shortfall_mode: shortfall_to_proto(p.shortfall) as i32,
                provider_registry_required: p.provider_registry_required,
                publicity_working_days: Some(p.publicity_working_days),
            })
        }
        Parameters::DataInfra(p) => ProgramParameters::DataInfra(pb::DataInfraParameters {
            project_cap: Some(p.project_cap.to_proto()),
            shortfall_mode: shortfall_to_proto(p.shortfall) as i32,
            publicity_working_days: Some(p.publicity_working_days),
        }),
    };
    pb::PolicyParameters {
        program_parameters: Some(program_parameters),
    }
}

/// The wire form of a policy version; `with_document` includes the graph.
pub fn policy(record: &PolicyRecord, with_document: bool) -> pb::Policy {
    let spec = &record.spec;
    pb::Policy {
        policy_id: record.policy_id().to_owned(),
        version: spec.version.to_string(),
        program: program_to_proto(spec.program()) as i32,
        state: match record.state {
            PolicyState::Draft => pb::PolicyState::Draft,
            PolicyState::Published => pb::PolicyState::Published,
        } as i32,
        effective_start: Some(edge::date(spec.effective.start())),
        effective_end: Some(edge::date(spec.effective.end())),
        content_sha256: record.content_sha256.clone(),
        publish_time: record.published_us.map(edge::timestamp),
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

/// The wire form of a decision, with the identifier and time the use case gave it.
pub fn decision(
    decision: &Decision,
    decision_id: uuid::Uuid,
    evaluated_at: DateTime<Utc>,
) -> pb::Decision {
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
        checks: decision
            .checks
            .iter()
            .map(|check| pb::CheckOutcome {
                reason: check.reason.code().to_owned(),
                field: check.field.to_owned(),
                passed: check.passed,
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
        evaluate_time: Some(edge::timestamp(evaluated_at.timestamp_micros())),
    }
}

/// The wire form of round `decision_id` ranked under `policy`.
pub fn round(
    result: &RoundResult,
    policy: &CompiledPolicy,
    decision_id: uuid::Uuid,
) -> pb::RankSelectionRoundResponse {
    let shortfall = data_infra::parameters(policy).shortfall;
    pb::RankSelectionRoundResponse {
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
        shortfall_mode: shortfall_to_proto(shortfall) as i32,
        policy_id: policy.record.policy_id().to_owned(),
        policy_version: policy.version(),
        decision_id: decision_id.to_string(),
    }
}

/// The wire form of a simulation of `draft` (already rendered) next to `baseline`; `decision`
/// renders each decision with its id and time.
pub fn simulation(
    draft: pb::Policy,
    baseline: &PolicyRecord,
    simulation: &Simulation,
    decision: impl Fn(&Decision) -> pb::Decision,
) -> pb::SimulatePolicyResponse {
    pb::SimulatePolicyResponse {
        draft: Some(draft),
        baseline: Some(policy(baseline, false)),
        results: simulation
            .results
            .iter()
            .map(|r| pb::SimulationCaseResult {
                case_id: r.case_id.clone(),
                draft_decision: Some(decision(&r.draft)),
                baseline_decision: Some(decision(&r.baseline)),
                changed: r.changed,
            })
            .collect(),
        draft_totals: Some(totals(&simulation.draft_totals)),
        baseline_totals: Some(totals(&simulation.baseline_totals)),
    }
}

fn totals(totals: &Totals) -> pb::SimulationTotals {
    pb::SimulationTotals {
        case_count: totals.case_count,
        eligible_count: totals.eligible_count,
        total_subsidy: Some(totals.total_subsidy.to_proto()),
        enterprise_cap_reached_count: totals.enterprise_cap_reached_count,
    }
}

/// The wire form of a denylist entry.
pub fn denylist_entry_to_proto(entry: &DenylistEntry) -> pb::DenylistEntry {
    pb::DenylistEntry {
        uscc: entry.uscc.as_str().to_owned(),
        reason: entry.reason.clone(),
        source: entry.source.clone(),
        listed_date: entry.listed_date.map(edge::date),
    }
}

/// The wire form of a page of the denylist with the list's identity.
pub fn denylist_page(
    entries: &[DenylistEntry],
    state: &DenylistState,
    next_page_token: String,
) -> pb::ListDenylistEntriesResponse {
    pb::ListDenylistEntriesResponse {
        entries: entries.iter().map(denylist_entry_to_proto).collect(),
        next_page_token,
        content_sha256: state.content_sha256.clone(),
        replace_time: state.replaced_us.map(edge::timestamp),
    }
}

/// The wire form of what a replacement of the denylist did (also the stored replay).
pub fn replacement(r: &Replacement) -> pb::ReplaceDenylistResponse {
    pb::ReplaceDenylistResponse {
        entry_count: r.entry_count,
        added_count: r.added_count,
        removed_count: r.removed_count,
        content_sha256: r.content_sha256.clone(),
        replace_time: Some(edge::timestamp(r.replaced_us)),
    }
}

// ---- stored decisions ----

/// The stored record of decision `decision_id`, made at `evaluated_at` under `policy` about
/// `subject_uscc` (empty for a ranking): `inputs` as received and `result` as answered.
pub fn stored_decision(
    policy: &PolicyRecord,
    (decision_id, evaluated_at): (uuid::Uuid, DateTime<Utc>),
    (kind, subject_uscc): (pb::DecisionKind, &str),
    inputs: pb::stored_decision::Inputs,
    result: pb::stored_decision::Result,
) -> pb::StoredDecision {
    pb::StoredDecision {
        decision_id: decision_id.to_string(),
        kind: kind as i32,
        policy_id: policy.policy_id().to_owned(),
        policy_version: policy.spec.version.to_string(),
        policy_content_sha256: policy.content_sha256.clone(),
        policy_parameters: Some(parameters_to_proto(&policy.spec.parameters)),
        subject_uscc: subject_uscc.to_owned(),
        evaluate_time: Some(edge::timestamp(evaluated_at.timestamp_micros())),
        inputs: Some(inputs),
        result: Some(result),
    }
}

/// A stored record, decoded (this service wrote it: one that does not decode is a damaged
/// database).
pub fn decode_stored(record: &[u8]) -> pb::StoredDecision {
    <pb::StoredDecision as prost::Message>::decode(record).expect("a stored decision decodes")
}

/// The policy id, version and domain inputs of a stored decision, parsed exactly as the
/// evaluation parsed them; `Err` with what no longer parses.
pub fn replay_inputs(
    stored: &pb::StoredDecision,
) -> Result<(String, PolicyVersion, Inputs), String> {
    use pb::stored_decision::Inputs as Stored;
    let version = PolicyVersion::parse(&stored.policy_version).map_err(str::to_owned)?;
    let mut v = Violations::new();
    let inputs = match &stored.inputs {
        Some(Stored::ComputeVoucher(inputs)) => {
            claim(&mut v, "claim", inputs.claim.as_ref()).map(|claim| Inputs::ComputeVoucher {
                claim,
                buyer_on_denylist: inputs.buyer_on_denylist,
                provider_registry: inputs.provider_registry.as_ref().map(registry_answer),
            })
        }
        Some(Stored::DataInfra(p)) => proposal(&mut v, "proposal", Some(p)).map(Inputs::DataInfra),
        Some(Stored::SelectionRound(request)) => {
            let pool = v.money("pool_available", request.pool_available.as_ref());
            let mut seen = HashSet::new();
            let candidates: Vec<Candidate> = request
                .candidates
                .iter()
                .enumerate()
                .filter_map(|(i, c)| candidate(&mut v, &format!("candidates[{i}]"), c, &mut seen))
                .collect();
            pool.map(|pool| Inputs::SelectionRound { pool, candidates })
        }
        None => None,
    };
    match (v.finish(), inputs) {
        (Ok(()), Some(inputs)) => Ok((stored.policy_id.clone(), version, inputs)),
        (Err(problems), _) => {
            let fields: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.description))
                .collect();
            Err(format!(
                "the stored inputs no longer parse ({})",
                fields.join("; ")
            ))
        }
        (Ok(()), None) => Err("the record holds no inputs".to_owned()),
    }
}

/// The wire form of a replayed result, with the stored decision's id and time.
pub fn replayed(
    stored: &pb::StoredDecision,
    replayed: &Replayed,
    policy: &CompiledPolicy,
) -> Option<pb::replay_decision_response::Replayed> {
    use pb::replay_decision_response::Replayed as Wire;
    let id = uuid::Uuid::parse_str(&stored.decision_id).unwrap_or_default();
    let time = stored
        .evaluate_time
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default();
    match replayed {
        Replayed::Decision(d) => Some(Wire::Decision(decision(d, id, time))),
        Replayed::Ranking(r) => Some(Wire::Ranking(round(r, policy, id))),
        Replayed::EngineFailed(_) => None,
    }
}

/// Collects the fields whose replayed value differs from the stored one.
#[derive(Debug, Default)]
struct Differences(Vec<pb::DecisionDifference>);

/// How an absent element or value reads.
const NONE: &str = "(none)";

impl Differences {
    fn field(&mut self, field: &str, stored: impl ToString, replayed: impl ToString) {
        let (stored, replayed) = (stored.to_string(), replayed.to_string());
        if stored != replayed {
            self.0.push(pb::DecisionDifference {
                field: field.to_owned(),
                stored,
                replayed,
            });
        }
    }

    /// The elements of two lists pairwise; an element only one side has is named whole.
    fn list<T>(
        &mut self,
        field: &str,
        (stored, replayed): (&[T], &[T]),
        label: impl Fn(&T) -> String,
        each: impl Fn(&mut Self, &str, &T, &T),
    ) {
        for i in 0..stored.len().max(replayed.len()) {
            let name = format!("{field}[{i}]");
            match (stored.get(i), replayed.get(i)) {
                (Some(a), Some(b)) => each(self, &name, a, b),
                (a, b) => self.field(
                    &name,
                    a.map(&label).unwrap_or_else(|| NONE.into()),
                    b.map(&label).unwrap_or_else(|| NONE.into()),
                ),
            }
        }
    }
}

/// An amount as text: decimal CNY, `(none)` when absent.
fn money_text(value: &Option<subsidy_proto::google::r#type::Money>) -> String {
    match value.as_ref().map(Money::from_proto) {
        Some(Ok(money)) => money.to_string(),
        Some(Err(_)) => "(invalid)".into(),
        None => NONE.into(),
    }
}

/// Every compared field of two decisions (all but `decision_id` and `evaluate_time`; `checks`
/// only when the stored decision recorded them).
fn decision_differences(d: &mut Differences, stored: &pb::Decision, replayed: &pb::Decision) {
    d.field("program", stored.program, replayed.program);
    d.field("eligible", stored.eligible, replayed.eligible);
    d.list(
        "failed_checks",
        (&stored.failed_checks, &replayed.failed_checks),
        |c| c.reason.clone(),
        |d, name, a, b| {
            d.field(&format!("{name}.reason"), &a.reason, &b.reason);
            d.field(&format!("{name}.field"), &a.field, &b.field);
            d.field(&format!("{name}.message_zh"), &a.message_zh, &b.message_zh);
            d.field(&format!("{name}.message_en"), &a.message_en, &b.message_en);
        },
    );
    // Decisions stored before checks were recorded have none: theirs are not compared.
    if !stored.checks.is_empty() {
        d.list(
            "checks",
            (&stored.checks, &replayed.checks),
            |c| c.reason.clone(),
            |d, name, a, b| {
                d.field(&format!("{name}.reason"), &a.reason, &b.reason);
                d.field(&format!("{name}.field"), &a.field, &b.field);
                d.field(&format!("{name}.passed"), a.passed, b.passed);
                d.field(&format!("{name}.message_zh"), &a.message_zh, &b.message_zh);
                d.field(&format!("{name}.message_en"), &a.message_en, &b.message_en);
            },
        );
    }
    d.field("rate_applied", &stored.rate_applied, &replayed.rate_applied);
    d.field(
        "entitlement",
        money_text(&stored.entitlement),
        money_text(&replayed.entitlement),
    );
    d.field(
        "enterprise_cap_remaining",
        money_text(&stored.enterprise_cap_remaining),
        money_text(&replayed.enterprise_cap_remaining),
    );
    d.field(
        "enterprise_cap_reached",
        stored.enterprise_cap_reached,
        replayed.enterprise_cap_reached,
    );
    d.list(
        "trace",
        (&stored.trace, &replayed.trace),
        |step| step.node_id.clone(),
        |d, name, a, b| {
            d.field(&format!("{name}.node_id"), &a.node_id, &b.node_id);
            d.field(&format!("{name}.node_name"), &a.node_name, &b.node_name);
            d.field(&format!("{name}.node_kind"), &a.node_kind, &b.node_kind);
            d.field(
                &format!("{name}.input_summary_json"),
                &a.input_summary_json,
                &b.input_summary_json,
            );
            d.field(
                &format!("{name}.output_summary_json"),
                &a.output_summary_json,
                &b.output_summary_json,
            );
            d.field(&format!("{name}.passed"), a.passed, b.passed);
        },
    );
    d.field("policy_id", &stored.policy_id, &replayed.policy_id);
    d.field(
        "policy_version",
        &stored.policy_version,
        &replayed.policy_version,
    );
}

/// Every compared field of two rankings (all but `decision_id`).
fn ranking_differences(
    d: &mut Differences,
    stored: &pb::RankSelectionRoundResponse,
    replayed: &pb::RankSelectionRoundResponse,
) {
    d.list(
        "awards",
        (&stored.awards, &replayed.awards),
        |a| a.proposal_id.clone(),
        |d, name, a, b| {
            d.field(&format!("{name}.rank"), a.rank, b.rank);
            d.field(
                &format!("{name}.proposal_id"),
                &a.proposal_id,
                &b.proposal_id,
            );
            d.field(&format!("{name}.mean_score"), &a.mean_score, &b.mean_score);
            d.field(
                &format!("{name}.awarded"),
                money_text(&a.awarded),
                money_text(&b.awarded),
            );
            d.field(&format!("{name}.outcome"), a.outcome, b.outcome);
            d.field(&format!("{name}.reason"), &a.reason, &b.reason);
        },
    );
    d.field(
        "total_awarded",
        money_text(&stored.total_awarded),
        money_text(&replayed.total_awarded),
    );
    d.field(
        "pool_remaining",
        money_text(&stored.pool_remaining),
        money_text(&replayed.pool_remaining),
    );
    d.field(
        "shortfall_mode",
        stored.shortfall_mode,
        replayed.shortfall_mode,
    );
    d.field("policy_id", &stored.policy_id, &replayed.policy_id);
    d.field(
        "policy_version",
        &stored.policy_version,
        &replayed.policy_version,
    );
}

/// The answer of a replay: what differs between the stored decision and its replay (`None`
/// when the engine failed on the inputs), and the content hash of the version used now.
pub fn replay_response(
    stored: &pb::StoredDecision,
    replayed: Option<pb::replay_decision_response::Replayed>,
    content_sha256_now: &str,
) -> pb::ReplayDecisionResponse {
    use pb::replay_decision_response::Replayed as Wire;
    use pb::stored_decision::Result as Stored;
    let mut d = Differences::default();
    d.field(
        "policy_content_sha256",
        &stored.policy_content_sha256,
        content_sha256_now,
    );
    match (&stored.result, &replayed) {
        (Some(Stored::Decision(a)), Some(Wire::Decision(b))) => decision_differences(&mut d, a, b),
        (Some(Stored::Ranking(a)), Some(Wire::Ranking(b))) => ranking_differences(&mut d, a, b),
        (_, None) => d.field("result", "answered", "the engine failed"),
        _ => d.field("result", "stored", "of another kind"),
    }
    pb::ReplayDecisionResponse {
        decision_id: stored.decision_id.clone(),
        policy_version: stored.policy_version.clone(),
        identical: d.0.is_empty(),
        differences: d.0,
        replayed,
    }
}

/// The answer of a replay whose stored inputs no longer parse: not identical, because of them.
pub fn unreplayable(stored: &pb::StoredDecision, why: String) -> pb::ReplayDecisionResponse {
    pb::ReplayDecisionResponse {
        decision_id: stored.decision_id.clone(),
        policy_version: stored.policy_version.clone(),
        identical: false,
        differences: vec![pb::DecisionDifference {
            field: "inputs".into(),
            stored: "parsed when evaluated".into(),
            replayed: why,
        }],
        replayed: None,
    }
}

// ---- the provider registry ----

/// A provider status asked for: ADMITTED, SUSPENDED or REVOKED (unset is a violation when
/// `required`).
pub fn provider_status(
    v: &mut Violations,
    field: &str,
    value: i32,
    required: bool,
) -> Option<Option<ProviderStatus>> {
    let status = v.enum_value(
        field,
        value,
        pb::ProviderStatus::Unspecified,
        |status| match status {
            pb::ProviderStatus::Admitted => ProviderStatus::Admitted,
            pb::ProviderStatus::Suspended => ProviderStatus::Suspended,
            // Unspecified is answered as `None` before this closure runs.
            pb::ProviderStatus::Revoked | pb::ProviderStatus::Unspecified => {
                ProviderStatus::Revoked
            }
        },
    )?;
    if required && status.is_none() {
        v.add(field, "is required");
        return None;
    }
    Some(status)
}

/// One data center of a registration; its name unique among `seen`.
pub fn data_center(
    v: &mut Violations,
    prefix: &str,
    d: &pb::DataCenter,
    seen: &mut HashSet<String>,
) -> Option<DataCenter> {
    let f = |name: &str| format!("{prefix}.{name}");
    let mut name = v.text(&f("name"), &d.name, registry::NAME_CHARS_MAX);
    if let Some(text) = &name
        && !seen.insert(text.clone())
    {
        v.add(&f("name"), "appears more than once");
        name = None;
    }
    let division_code = DivisionCode::parse(&d.division_code);
    if division_code.is_none() {
        v.add(&f("division_code"), "must be 6 digits");
    }
    let capacity = Capacity::parse(&d.capacity_pflops);
    if capacity.is_none() {
        v.add(
            &f("capacity_pflops"),
            "must be a decimal greater than 0 and below 10000000 with at most 3 decimal places",
        );
    }
    let status = v.enum_value(
        &f("status"),
        d.status,
        pb::DataCenterStatus::Unspecified,
        |status| match status {
            pb::DataCenterStatus::Retired => DataCenterStatus::Retired,
            pb::DataCenterStatus::InService | pb::DataCenterStatus::Unspecified => {
                DataCenterStatus::InService
            }
        },
    );
    Some(DataCenter {
        name: name?,
        division_code: division_code?,
        capacity: capacity?,
        status: status?.unwrap_or(DataCenterStatus::InService),
    })
}

fn provider_status_to_proto(status: ProviderStatus) -> pb::ProviderStatus {
    match status {
        ProviderStatus::Admitted => pb::ProviderStatus::Admitted,
        ProviderStatus::Suspended => pb::ProviderStatus::Suspended,
        ProviderStatus::Revoked => pb::ProviderStatus::Revoked,
    }
}

/// The wire form of a provider.
pub fn provider(p: &Provider) -> pb::Provider {
    pb::Provider {
        uscc: p.uscc.as_str().to_owned(),
        name: p.name.clone(),
        status: provider_status_to_proto(p.status) as i32,
        status_effective_date: Some(edge::date(p.effective_date)),
        status_reason: p.reason.clone(),
        data_centers: p
            .data_centers
            .iter()
            .map(|d| pb::DataCenter {
                name: d.name.clone(),
                division_code: d.division_code.as_str().to_owned(),
                capacity_pflops: d.capacity.as_str().to_owned(),
                status: match d.status {
                    DataCenterStatus::InService => pb::DataCenterStatus::InService,
                    DataCenterStatus::Retired => pb::DataCenterStatus::Retired,
                } as i32,
            })
            .collect(),
        register_time: Some(edge::timestamp(p.registered_us)),
        update_time: Some(edge::timestamp(p.updated_us)),
    }
}

/// The wire form of a recorded status change.
pub fn status_change(c: &StatusChange) -> pb::ProviderStatusChange {
    pb::ProviderStatusChange {
        sequence: c.sequence,
        status: provider_status_to_proto(c.status) as i32,
        effective_date: Some(edge::date(c.effective_date)),
        reason: c.reason.clone(),
        actor: c.actor.clone(),
        record_time: Some(edge::timestamp(c.recorded_us)),
    }
}

/// The registry's stored answer as the domain reads it.
pub fn registry_answer(answer: &pb::ProviderRegistryAnswer) -> RegistryAnswer {
    RegistryAnswer {
        seller_admitted: answer.seller_admitted,
        data_center_registered: answer.data_center_registered,
    }
}

/// The registry's answer as stored with a decision.
pub fn registry_answer_to_proto(answer: &RegistryAnswer) -> pb::ProviderRegistryAnswer {
    pb::ProviderRegistryAnswer {
        seller_admitted: answer.seller_admitted,
        data_center_registered: answer.data_center_registered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reason: &str, passed: bool) -> pb::CheckOutcome {
        pb::CheckOutcome {
            reason: reason.into(),
            passed,
            ..Default::default()
        }
    }

    /// A stored decision with `checks`, and its replay with `replayed_checks`.
    fn replay_of(
        checks: Vec<pb::CheckOutcome>,
        replayed_checks: Vec<pb::CheckOutcome>,
    ) -> pb::ReplayDecisionResponse {
        let decision = pb::Decision {
            eligible: true,
            checks,
            ..Default::default()
        };
        let replayed = pb::Decision {
            checks: replayed_checks,
            ..decision.clone()
        };
        let stored = pb::StoredDecision {
            policy_content_sha256: "ab".into(),
            result: Some(pb::stored_decision::Result::Decision(decision)),
            ..Default::default()
        };
        let replayed = pb::replay_decision_response::Replayed::Decision(replayed);
        replay_response(&stored, Some(replayed), "ab")
    }

    #[test]
    fn the_checks_are_compared_only_when_the_stored_decision_recorded_them() {
        // Proves: a decision stored before checks were recorded replays identically although
        // its replay lists them; a recorded check that replays otherwise is named.
        let now = vec![
            check("USCC_INVALID", true),
            check("BUYER_ON_DENYLIST", true),
        ];
        assert!(replay_of(Vec::new(), now.clone()).identical);
        assert!(replay_of(now.clone(), now.clone()).identical);
        let mut changed = now.clone();
        changed[1].passed = false;
        let response = replay_of(now, changed);
        assert!(!response.identical);
        let fields: Vec<&str> = response
            .differences
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert_eq!(fields, ["checks[1].passed"]);
    }
}
