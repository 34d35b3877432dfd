//! Data-infrastructure proposal evaluation: the graph decides the configurable checks (applicant
//! in Shandong, category allowed); the typed code checks the codes and the money (amount
//! positive, within the per-project cap).
//!
//! The graph receives `{"policy": {...}, "proposal": {...}}` and must return
//! `{"checks": {<GRAPH_CHECKS keys>: bool}}` (see `policies/README.md`).

use serde_json::json;
use subsidy_common::{Money, Uscc};
use zen_expression::variable::Variable;

use super::Program;
use super::decision::{Decision, Findings};
use super::graph::{EngineFailure, TraceStep, object, read_bool, text};
use super::policy::{CompiledPolicy, DataInfraParameters, Parameters};
use super::reasons::{FailedCheck, Reason};

/// The category of a data-infrastructure project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// A trusted data space (可信数据空间).
    TrustedDataSpace,
    /// A data field (数场).
    DataField,
    /// A data annotation base (数据标注基地).
    DataAnnotationBase,
    /// Other data infrastructure.
    OtherDataInfrastructure,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 4] = [
        Category::TrustedDataSpace,
        Category::DataField,
        Category::DataAnnotationBase,
        Category::OtherDataInfrastructure,
    ];

    /// The name the graph sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::TrustedDataSpace => "TRUSTED_DATA_SPACE",
            Category::DataField => "DATA_FIELD",
            Category::DataAnnotationBase => "DATA_ANNOTATION_BASE",
            Category::OtherDataInfrastructure => "OTHER_DATA_INFRASTRUCTURE",
        }
    }
}

/// The facts of one proposal, validated at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The caller's identifier, 0 to 128 characters.
    pub proposal_id: String,
    /// The applicant's code as given (trimmed, upper-cased).
    pub applicant_uscc: String,
    /// The six-digit division code of the place the infrastructure is built.
    pub region_code: String,
    /// The category.
    pub category: Category,
    /// The amount requested.
    pub requested_amount: Money,
}

/// The checks the graph decides: output key, reason when false, request field.
pub const GRAPH_CHECKS: [(&str, Reason, &str); 2] = [
    (
        "applicantInShandong",
        Reason::ApplicantOutsideShandong,
        "proposal.applicant_uscc",
    ),
    (
        "categoryAllowed",
        Reason::CategoryNotAllowed,
        "proposal.category",
    ),
];

/// The parameters of a data-infrastructure policy.
pub fn parameters(policy: &CompiledPolicy) -> &DataInfraParameters {
    match &policy.record.spec.parameters {
        Parameters::DataInfra(parameters) => parameters,
        Parameters::ComputeVoucher(_) => {
            panic!("a data-infra evaluation was given a compute-voucher policy")
        }
    }
}

fn graph_input(policy: &CompiledPolicy, proposal: &Proposal, applicant: Option<&Uscc>) -> Variable {
    let p = parameters(policy);
    object(vec![
        (
            "policy",
            object(vec![
                ("policyId", text(Program::DataInfra.policy_id())),
                ("version", text(&policy.version())),
                ("projectCap", Variable::Number(p.project_cap.decimal())),
            ]),
        ),
        (
            "proposal",
            object(vec![
                ("proposalId", text(&proposal.proposal_id)),
                ("applicantUscc", text(&proposal.applicant_uscc)),
                ("applicantUsccValid", Variable::Bool(applicant.is_some())),
                // The registration division of an invalid code cannot be trusted.
                (
                    "applicantDivisionCode",
                    text(applicant.map(Uscc::division_code).unwrap_or("")),
                ),
                ("regionCode", text(&proposal.region_code)),
                ("category", text(proposal.category.as_str())),
                (
                    "requestedAmount",
                    Variable::Number(proposal.requested_amount.decimal()),
                ),
            ]),
        ),
    ])
}

/// Runs the graph for `proposal` and reads each check of [`GRAPH_CHECKS`], in order.
pub fn run_graph(
    policy: &CompiledPolicy,
    proposal: &Proposal,
    applicant: Option<&Uscc>,
    trace: bool,
) -> Result<(Vec<bool>, Vec<TraceStep>), EngineFailure> {
    let run = policy
        .graph
        .run(graph_input(policy, proposal, applicant), trace)?;
    let mut checks = Vec::with_capacity(GRAPH_CHECKS.len());
    for (key, _, _) in GRAPH_CHECKS {
        checks.push(read_bool(&run.output, &format!("checks.{key}"))?);
    }
    Ok((checks, run.steps))
}

/// Evaluates `proposal` under `policy`. Deterministic.
pub fn evaluate(
    policy: &CompiledPolicy,
    proposal: &Proposal,
    trace: bool,
) -> Result<Decision, EngineFailure> {
    let p = parameters(policy);
    let applicant = Uscc::parse(&proposal.applicant_uscc).ok();
    let mut findings = Findings::new(trace);
    check_code(&mut findings, proposal, applicant.is_some());
    let (checks, graph_steps) = run_graph(policy, proposal, applicant.as_ref(), trace)?;
    findings.steps.extend(graph_steps);
    for (passed, (_, reason, field)) in checks.into_iter().zip(GRAPH_CHECKS) {
        if passed {
            findings.pass(reason, field, graph_pass(reason));
        } else {
            findings.fail(graph_failure(reason, field));
        }
    }
    check_amount(&mut findings, proposal.requested_amount, p);
    let eligible = findings.eligible();
    let entitlement = if eligible {
        proposal.requested_amount
    } else {
        Money::ZERO
    };
    assert!(
        entitlement <= p.project_cap,
        "an award never exceeds the project cap"
    );
    Ok(Decision {
        program: Program::DataInfra,
        eligible,
        failed_checks: findings.failed,
        checks: findings.checks,
        rate_applied: None,
        entitlement,
        enterprise_cap_remaining: None,
        enterprise_cap_reached: false,
        trace: findings.steps,
        policy_id: Program::DataInfra.policy_id(),
        policy_version: policy.version(),
    })
}

/// The applicant's code must be a valid USCC (GB 32100-2015).
fn check_code(findings: &mut Findings, proposal: &Proposal, valid: bool) {
    if valid {
        findings.pass(
            Reason::UsccInvalid,
            "proposal.applicant_uscc",
            (
                "申报单位统一社会信用代码有效（GB 32100-2015）",
                "the applicant's USCC is valid (GB 32100-2015)",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::UsccInvalid,
            "proposal.applicant_uscc",
            format!(
                "申报单位统一社会信用代码 {} 无效（不符合 GB 32100-2015 的格式或校验码）。",
                proposal.applicant_uscc
            ),
            format!(
                "The applicant's Unified Social Credit Code {} is invalid (format or check character under GB 32100-2015).",
                proposal.applicant_uscc
            ),
        ));
    }
    findings.typed(
        "uscc",
        "USCC valid under GB 32100-2015",
        || {
            (
                json!({"applicant_uscc": proposal.applicant_uscc}),
                json!({"applicant_valid": valid}),
            )
        },
        valid,
    );
}

/// What passing a check of the graph means, in Chinese and English.
fn graph_pass(reason: Reason) -> (&'static str, &'static str) {
    match reason {
        Reason::ApplicantOutsideShandong => (
            "申报单位在山东省内登记",
            "the applicant is registered in Shandong",
        ),
        _ => (
            "项目类别在本政策支持的范围内",
            "the project's category is one this policy supports",
        ),
    }
}

fn graph_failure(reason: Reason, field: &'static str) -> FailedCheck {
    let (zh, en) = match reason {
        Reason::ApplicantOutsideShandong => (
            "申报单位不是在山东省内登记的企事业单位（统一社会信用代码第 3 至 8 位不以 37 开头）。",
            "The applicant is not registered in Shandong (characters 3 to 8 of its USCC do not start with 37).",
        ),
        _ => (
            "项目类别不在本政策支持的范围内。",
            "The project's category is not one this policy supports.",
        ),
    };
    FailedCheck::new(reason, field, zh, en)
}

/// The requested amount must be positive and within the per-project cap.
fn check_amount(findings: &mut Findings, amount: Money, p: &DataInfraParameters) {
    if !amount.is_zero() {
        findings.pass(
            Reason::AmountOutOfRange,
            "proposal.requested_amount",
            ("申请金额大于零", "the requested amount is positive"),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::AmountOutOfRange,
            "proposal.requested_amount",
            "申请金额须大于零。",
            "The requested amount must be positive.",
        ));
    }
    let within_cap = amount <= p.project_cap;
    if within_cap {
        findings.pass(
            Reason::RequestAboveProjectCap,
            "proposal.requested_amount",
            (
                "申请金额不超过单个项目奖补上限",
                "the requested amount is within the per-project cap",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::RequestAboveProjectCap,
            "proposal.requested_amount",
            format!(
                "申请金额 {} 元超过单个项目奖补上限 {} 元，请调减后重新申报。",
                amount.grouped(),
                p.project_cap.grouped()
            ),
            format!(
                "The requested {} CNY exceeds the per-project cap of {} CNY; reduce the request and apply again.",
                amount.grouped(),
                p.project_cap.grouped()
            ),
        ));
    }
    findings.typed(
        "project_cap",
        "requested amount positive and within the per-project cap",
        || {
            (
                json!({"requested_amount": amount.to_string(), "project_cap": p.project_cap.to_string()}),
                json!({"positive": !amount.is_zero(), "within_cap": within_cap}),
            )
        },
        !amount.is_zero() && within_cap,
    );
}
