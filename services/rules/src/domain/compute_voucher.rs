//! Compute-voucher evaluation: typed facts in, the policy's decision graph for the configurable
//! checks and the rate, then the hard money invariants in typed code, whatever the graph said:
//! the rate never above the policy's maximum nor 5 %, the entitlement rounded down to the fen of
//! min(rate × contract total, enterprise cap remaining).
//!
//! The graph receives `{"policy": {...}, "claim": {...}}` and must return
//! `{"checks": {<GRAPH_CHECKS keys>: bool}, "rate": number}` (see `policies/README.md`).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::json;
use subsidy_common::money::Rate;
use subsidy_common::{Money, Uscc};
use zen_expression::variable::Variable;

use super::decision::{Decision, Findings};
use super::graph::{EngineFailure, TraceStep, object, read_bool, read_number, text};
use super::policy::{CompiledPolicy, ComputeVoucherParameters, Parameters};
use super::reasons::{FailedCheck, Reason};
use super::registry::RegistryAnswer;
use super::{Program, RATE_CEILING, day_number};

/// The kind of compute a contract buys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComputeType {
    /// AI (intelligent) compute on GPU or NPU accelerators.
    AiAccelerator,
    /// General-purpose CPU hosting.
    GeneralPurposeHosting,
    /// Storage alone.
    Storage,
}

impl ComputeType {
    /// The name the graph sees.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeType::AiAccelerator => "AI_ACCELERATOR",
            ComputeType::GeneralPurposeHosting => "GENERAL_PURPOSE_HOSTING",
            ComputeType::Storage => "STORAGE",
        }
    }
}

/// The benefit rating given in review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenefitRating {
    /// Not rated.
    Unrated,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

impl BenefitRating {
    /// Every rating.
    pub const ALL: [BenefitRating; 4] = [
        BenefitRating::Unrated,
        BenefitRating::High,
        BenefitRating::Medium,
        BenefitRating::Low,
    ];

    /// The name the graph sees.
    pub fn as_str(self) -> &'static str {
        match self {
            BenefitRating::Unrated => "UNRATED",
            BenefitRating::High => "HIGH",
            BenefitRating::Medium => "MEDIUM",
            BenefitRating::Low => "LOW",
        }
    }
}

/// The facts of one claim, validated at the edge. USCCs are kept as given (trimmed and
/// upper-cased): an invalid code is a failed check, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The buyer's code as given.
    pub buyer_uscc: String,
    /// The seller's code as given.
    pub seller_uscc: String,
    /// The contract number, 1 to 64 characters.
    pub contract_number: String,
    /// The signing day in Asia/Shanghai.
    pub signing_date: NaiveDate,
    /// The contract total.
    pub contract_total: Money,
    /// What the contract buys.
    pub compute_type: ComputeType,
    /// The data center's six-digit division code.
    pub data_center_division_code: String,
    /// Whether buyer and seller are declared related.
    pub related_party_declared: bool,
    /// The benefit rating.
    pub benefit_rating: BenefitRating,
    /// What the buyer holds or has committed against its cap.
    pub enterprise_usage: Money,
}

/// The checks the graph decides: output key, reason when false, request field.
pub const GRAPH_CHECKS: [(&str, Reason, &str); 6] = [
    (
        "buyerIsNotSeller",
        Reason::BuyerIsSeller,
        "claim.seller_uscc",
    ),
    (
        "notRelatedParty",
        Reason::RelatedParty,
        "claim.related_party_declared",
    ),
    ("computeIsAi", Reason::ComputeNotAi, "claim.compute_type"),
    (
        "dataCenterInShandong",
        Reason::DataCenterOutsideShandong,
        "claim.data_center_division_code",
    ),
    (
        "signedInWindow",
        Reason::SignedOutsideWindow,
        "claim.signing_date",
    ),
    (
        "buyerNotOnDenylist",
        Reason::BuyerOnDenylist,
        "claim.buyer_uscc",
    ),
];

/// The parameters of a compute-voucher policy.
pub fn parameters(policy: &CompiledPolicy) -> &ComputeVoucherParameters {
    match &policy.record.spec.parameters {
        Parameters::ComputeVoucher(parameters) => parameters,
        Parameters::DataInfra(_) => {
            panic!("a compute-voucher evaluation was given a data-infra policy")
        }
    }
}

fn money_number(amount: Money) -> Variable {
    Variable::Number(amount.decimal())
}

/// The graph's input for `claim` under `policy`.
pub fn graph_input(
    policy: &CompiledPolicy,
    claim: &Claim,
    buyer: Option<&Uscc>,
    seller: Option<&Uscc>,
    buyer_denylisted: bool,
) -> Variable {
    let p = parameters(policy);
    object(vec![
        (
            "policy",
            object(vec![
                ("policyId", text(Program::ComputeVoucher.policy_id())),
                ("version", text(&policy.version())),
                ("rateMax", Variable::Number(p.rate_max.decimal())),
                ("enterpriseCap", money_number(p.enterprise_cap)),
                (
                    "windowStart",
                    Variable::Number(day_number(p.window.start())),
                ),
                ("windowEnd", Variable::Number(day_number(p.window.end()))),
                ("contractTotalMax", money_number(p.contract_total_max)),
            ]),
        ),
        (
            "claim",
            object(vec![
                ("buyerUscc", text(&claim.buyer_uscc)),
                ("sellerUscc", text(&claim.seller_uscc)),
                ("buyerUsccValid", Variable::Bool(buyer.is_some())),
                ("sellerUsccValid", Variable::Bool(seller.is_some())),
                (
                    "buyerDivisionCode",
                    text(buyer.map(Uscc::division_code).unwrap_or("")),
                ),
                ("contractNumber", text(&claim.contract_number)),
                (
                    "signingDate",
                    Variable::Number(day_number(claim.signing_date)),
                ),
                ("signingDateText", text(&claim.signing_date.to_string())),
                ("contractTotal", money_number(claim.contract_total)),
                ("computeType", text(claim.compute_type.as_str())),
                (
                    "dataCenterDivisionCode",
                    text(&claim.data_center_division_code),
                ),
                (
                    "relatedPartyDeclared",
                    Variable::Bool(claim.related_party_declared),
                ),
                ("benefitRating", text(claim.benefit_rating.as_str())),
                ("enterpriseUsage", money_number(claim.enterprise_usage)),
                ("buyerOnDenylist", Variable::Bool(buyer_denylisted)),
            ]),
        ),
    ])
}

/// What the graph decided for one claim.
pub struct GraphVerdict {
    /// Each graph check's key and whether it passed, in [`GRAPH_CHECKS`] order.
    pub checks: Vec<(&'static str, bool)>,
    /// The rate the graph computed, before the typed ceiling.
    pub rate: Decimal,
    /// The graph's trace.
    pub steps: Vec<TraceStep>,
}

/// Runs the graph for `claim` and reads its verdict.
pub fn run_graph(
    policy: &CompiledPolicy,
    claim: &Claim,
    buyer: Option<&Uscc>,
    seller: Option<&Uscc>,
    buyer_denylisted: bool,
    trace: bool,
) -> Result<GraphVerdict, EngineFailure> {
    let input = graph_input(policy, claim, buyer, seller, buyer_denylisted);
    let run = policy.graph.run(input, trace)?;
    let mut checks = Vec::with_capacity(GRAPH_CHECKS.len());
    for (key, _, _) in GRAPH_CHECKS {
        checks.push((key, read_bool(&run.output, &format!("checks.{key}"))?));
    }
    let rate = read_number(&run.output, "rate")?;
    if rate.is_sign_negative() && !rate.is_zero() {
        return Err(EngineFailure::NegativeRate(rate));
    }
    Ok(GraphVerdict {
        checks,
        rate,
        steps: run.steps,
    })
}

fn graph_failure(
    reason: Reason,
    field: &'static str,
    claim: &Claim,
    p: &ComputeVoucherParameters,
) -> FailedCheck {
    let (zh, en) = match reason {
        Reason::BuyerIsSeller => (
            "买方与卖方为同一企业，自买自卖的合同不予奖补。".to_owned(),
            "The buyer and the seller are the same enterprise; such a contract is not subsidised."
                .to_owned(),
        ),
        Reason::RelatedParty => (
            "买方声明与卖方存在关联关系，关联交易不予奖补。".to_owned(),
            "The buyer declared that it is a related party of the seller; related-party contracts are not subsidised.".to_owned(),
        ),
        Reason::ComputeNotAi => (
            "合同采购的不是人工智能算力（智算）；通用计算托管或单纯存储不在奖补范围内。".to_owned(),
            "The contract does not buy AI (intelligent) compute; general-purpose hosting or storage alone is not eligible.".to_owned(),
        ),
        Reason::DataCenterOutsideShandong => (
            format!(
                "提供算力的数据中心所在地（行政区划代码 {}）不在山东省内。",
                claim.data_center_division_code
            ),
            format!(
                "The data center serving the compute (division code {}) is not in Shandong.",
                claim.data_center_division_code
            ),
        ),
        Reason::SignedOutsideWindow => (
            format!(
                "合同签订日期 {} 不在政策规定的签订期间 {} 至 {}（北京时间）内。",
                claim.signing_date,
                p.window.start(),
                p.window.end()
            ),
            format!(
                "The contract was signed on {}, outside the policy's signing window {} to {} (Asia/Shanghai).",
                claim.signing_date,
                p.window.start(),
                p.window.end()
            ),
        ),
        Reason::BuyerOnDenylist => (
            "买方列入失信名单，不予奖补。".to_owned(),
            "The buyer is on the dishonesty denylist and cannot be subsidised.".to_owned(),
        ),
        other => (
            format!("未通过政策检查 {other}。"),
            format!("The policy check {other} failed."),
        ),
    };
    FailedCheck::new(reason, field, zh, en)
}

/// What passing a check of the graph means, in Chinese and English.
fn graph_pass(reason: Reason) -> (&'static str, &'static str) {
    match reason {
        Reason::BuyerIsSeller => (
            "买方与卖方不是同一企业",
            "the buyer and the seller are different enterprises",
        ),
        Reason::RelatedParty => (
            "买卖双方未声明关联关系",
            "the buyer declared no relation to the seller",
        ),
        Reason::ComputeNotAi => (
            "合同采购的是人工智能算力（智算）",
            "the contract buys AI (intelligent) compute",
        ),
        Reason::DataCenterOutsideShandong => (
            "提供算力的数据中心位于山东省内",
            "the data center serving the compute is in Shandong",
        ),
        Reason::SignedOutsideWindow => (
            "合同在政策规定的签订期间内签订",
            "the contract was signed within the policy's signing window",
        ),
        Reason::BuyerOnDenylist => (
            "买方未列入失信名单",
            "the buyer is not on the dishonesty denylist",
        ),
        _ => ("通过政策检查", "the policy's check passed"),
    }
}

/// Evaluates `claim` under `policy` without a registry answer; see
/// [`evaluate_with_registry`].
pub fn evaluate(
    policy: &CompiledPolicy,
    claim: &Claim,
    buyer_denylisted: bool,
    trace: bool,
) -> Result<Decision, EngineFailure> {
    evaluate_with_registry(policy, claim, buyer_denylisted, None, trace)
}

/// Evaluates `claim` under `policy`. `buyer_denylisted` says whether the buyer's code is on the
/// denylist; `registry` what the provider registry said about the seller and the data center
/// (consulted only when the policy's `provider_registry_required` is set; `None` then counts
/// as neither admitted nor registered, so that a missing answer never funds a claim); `trace`
/// whether to record the rules evaluated. Deterministic.
pub fn evaluate_with_registry(
    policy: &CompiledPolicy,
    claim: &Claim,
    buyer_denylisted: bool,
    registry: Option<RegistryAnswer>,
    trace: bool,
) -> Result<Decision, EngineFailure> {
    let p = parameters(policy);
    let buyer = Uscc::parse(&claim.buyer_uscc).ok();
    let seller = Uscc::parse(&claim.seller_uscc).ok();
    let mut findings = Findings::new(trace);
    // Identity first: the enterprise cap is kept per buyer code, so the codes must be real.
    check_codes(&mut findings, claim, buyer.is_some(), seller.is_some());
    let verdict = run_graph(
        policy,
        claim,
        buyer.as_ref(),
        seller.as_ref(),
        buyer_denylisted,
        trace,
    )?;
    findings.steps.extend(verdict.steps);
    for ((_, passed), (_, reason, field)) in verdict.checks.iter().zip(GRAPH_CHECKS) {
        if *passed {
            findings.pass(reason, field, graph_pass(reason));
        } else {
            findings.fail(graph_failure(reason, field, claim, p));
        }
    }
    if p.provider_registry_required {
        check_provider_registry(&mut findings, claim, registry.unwrap_or_default());
    }
    check_contract_total(&mut findings, claim.contract_total, p);
    let rate = rate_ceiling(&mut findings, verdict.rate, p);
    let cap_remaining = check_enterprise_cap(&mut findings, claim.enterprise_usage, p);
    let (entitlement, enterprise_cap_reached) =
        entitlement(&mut findings, rate, claim.contract_total, cap_remaining);
    Ok(Decision {
        program: Program::ComputeVoucher,
        eligible: findings.eligible(),
        failed_checks: findings.failed,
        checks: findings.checks,
        rate_applied: Some(rate.decimal()),
        entitlement,
        enterprise_cap_remaining: Some(cap_remaining),
        enterprise_cap_reached,
        trace: findings.steps,
        policy_id: Program::ComputeVoucher.policy_id(),
        policy_version: policy.version(),
    })
}

/// The buyer's and seller's codes must be valid USCCs (GB 32100-2015).
fn check_codes(findings: &mut Findings, claim: &Claim, buyer_valid: bool, seller_valid: bool) {
    for (code, valid, field, role_zh, role_en) in [
        (
            &claim.buyer_uscc,
            buyer_valid,
            "claim.buyer_uscc",
            "买方",
            "buyer",
        ),
        (
            &claim.seller_uscc,
            seller_valid,
            "claim.seller_uscc",
            "卖方",
            "seller",
        ),
    ] {
        if valid {
            findings.pass(
                Reason::UsccInvalid,
                field,
                (
                    &format!("{role_zh}统一社会信用代码有效（GB 32100-2015）"),
                    &format!("the {role_en}'s USCC is valid (GB 32100-2015)"),
                ),
            );
        } else {
            findings.fail(FailedCheck::new(
                Reason::UsccInvalid,
                field,
                format!("{role_zh}统一社会信用代码 {code} 无效（不符合 GB 32100-2015 的格式或校验码）。"),
                format!("The {role_en}'s Unified Social Credit Code {code} is invalid (format or check character under GB 32100-2015)."),
            ));
        }
    }
    findings.typed(
        "uscc",
        "USCCs valid under GB 32100-2015",
        || {
            (
                json!({"buyer_uscc": claim.buyer_uscc, "seller_uscc": claim.seller_uscc}),
                json!({"buyer_valid": buyer_valid, "seller_valid": seller_valid}),
            )
        },
        buyer_valid && seller_valid,
    );
}

/// The registry check, when the policy requires it: the seller was an admitted provider on the
/// signing date, and the data center is one of its in-service Shandong data centers.
fn check_provider_registry(findings: &mut Findings, claim: &Claim, answer: RegistryAnswer) {
    if answer.seller_admitted {
        findings.pass(
            Reason::SellerNotAdmittedProvider,
            "claim.seller_uscc",
            (
                "卖方在合同签订日是已准入的算力服务商",
                "the seller was an admitted compute provider on the signing date",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::SellerNotAdmittedProvider,
            "claim.seller_uscc",
            format!(
                "卖方（统一社会信用代码 {}）在合同签订日 {} 不是已准入的算力服务商。",
                claim.seller_uscc, claim.signing_date
            ),
            format!(
                "The seller (USCC {}) was not an admitted compute provider on the signing date {}.",
                claim.seller_uscc, claim.signing_date
            ),
        ));
    }
    if answer.data_center_registered {
        findings.pass(
            Reason::DataCenterNotRegistered,
            "claim.data_center_division_code",
            (
                "数据中心是卖方已登记、在用的山东省内数据中心",
                "the data center is one of the seller's registered, in-service data centers in Shandong",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::DataCenterNotRegistered,
            "claim.data_center_division_code",
            format!(
                "行政区划代码 {} 不是卖方已登记、在用的山东省内数据中心所在地。",
                claim.data_center_division_code
            ),
            format!(
                "The division code {} is not that of one of the seller's registered, in-service data centers in Shandong.",
                claim.data_center_division_code
            ),
        ));
    }
    findings.typed(
        "provider_registry",
        "seller an admitted provider on the signing date, data center registered in Shandong",
        || {
            (
                json!({
                    "seller_uscc": claim.seller_uscc,
                    "signing_date": claim.signing_date.to_string(),
                    "data_center_division_code": claim.data_center_division_code,
                }),
                json!({
                    "seller_admitted": answer.seller_admitted,
                    "data_center_registered": answer.data_center_registered,
                }),
            )
        },
        answer.seller_admitted && answer.data_center_registered,
    );
}

/// The contract total must be positive and at most the policy's maximum.
fn check_contract_total(findings: &mut Findings, total: Money, p: &ComputeVoucherParameters) {
    let in_range = !total.is_zero() && total <= p.contract_total_max;
    if in_range {
        findings.pass(
            Reason::AmountOutOfRange,
            "claim.contract_total",
            (
                "合同总金额大于零且不超过政策上限",
                "the contract total is positive and within the policy's maximum",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::AmountOutOfRange,
            "claim.contract_total",
            format!(
                "合同总金额 {} 元须大于零且不超过 {} 元。",
                total.grouped(),
                p.contract_total_max.grouped()
            ),
            format!(
                "The contract total of {} CNY must be positive and at most {} CNY.",
                total.grouped(),
                p.contract_total_max.grouped()
            ),
        ));
    }
    findings.typed(
        "contract_total",
        "contract total positive and within the policy's maximum",
        || {
            (
                json!({"contract_total": total.to_string(), "contract_total_max": p.contract_total_max.to_string()}),
                json!({"in_range": in_range}),
            )
        },
        in_range,
    );
}

/// The hard ceiling: whatever the graph computed, the rate applied is never above the policy's
/// maximum or 5 %.
fn rate_ceiling(
    findings: &mut Findings,
    graph_rate: Decimal,
    p: &ComputeVoucherParameters,
) -> Rate {
    let rate_value = graph_rate.min(p.rate_max.decimal()).min(RATE_CEILING);
    findings.typed(
        "rate_ceiling",
        "rate at most the policy's rate_max and 5 %",
        || {
            (
                json!({"graph_rate": graph_rate.normalize().to_string(), "rate_max": p.rate_max.decimal().normalize().to_string()}),
                json!({"rate_applied": rate_value.normalize().to_string()}),
            )
        },
        true,
    );
    Rate::new(rate_value).expect("0 ≤ rate ≤ 0.05")
}

/// Something of the enterprise cap must remain; returns what remains, never negative.
fn check_enterprise_cap(
    findings: &mut Findings,
    usage: Money,
    p: &ComputeVoucherParameters,
) -> Money {
    let cap_remaining = p.enterprise_cap.saturating_sub(usage);
    if !cap_remaining.is_zero() {
        findings.pass(
            Reason::EnterpriseCapReached,
            "claim.enterprise_usage",
            (
                "企业累计奖补上限尚有余额",
                "something of the enterprise's cumulative cap remains",
            ),
        );
    } else {
        findings.fail(FailedCheck::new(
            Reason::EnterpriseCapReached,
            "claim.enterprise_usage",
            format!(
                "该企业累计奖补已达到上限 {} 元。",
                p.enterprise_cap.grouped()
            ),
            format!(
                "The enterprise has reached its cumulative subsidy cap of {} CNY.",
                p.enterprise_cap.grouped()
            ),
        ));
    }
    findings.typed(
        "enterprise_cap",
        "enterprise cap remaining",
        || {
            (
                json!({"enterprise_cap": p.enterprise_cap.to_string(), "enterprise_usage": usage.to_string()}),
                json!({"enterprise_cap_remaining": cap_remaining.to_string()}),
            )
        },
        !cap_remaining.is_zero(),
    );
    cap_remaining
}

/// The entitlement, rounded down to the fen, of min(rate × contract total, cap remaining) when
/// every check passed, otherwise zero; and whether the enterprise cap limited it.
fn entitlement(
    findings: &mut Findings,
    rate: Rate,
    total: Money,
    cap_remaining: Money,
) -> (Money, bool) {
    let eligible = findings.eligible();
    let gross = rate.apply_round_down(total);
    let entitlement = if eligible {
        gross.min(cap_remaining)
    } else {
        Money::ZERO
    };
    let enterprise_cap_reached = cap_remaining.is_zero() || (eligible && cap_remaining < gross);
    findings.typed(
        "entitlement",
        "round down to the fen of min(rate × contract total, cap remaining)",
        || {
            (
                json!({"eligible": eligible, "rate": rate.decimal().normalize().to_string(), "contract_total": total.to_string(), "enterprise_cap_remaining": cap_remaining.to_string()}),
                json!({"entitlement": entitlement.to_string(), "enterprise_cap_reached": enterprise_cap_reached}),
            )
        },
        true,
    );
    // The invariants every caller relies on.
    assert!(
        entitlement <= cap_remaining,
        "entitlement within the cap remaining"
    );
    assert!(
        entitlement.decimal() <= RATE_CEILING * total.decimal(),
        "entitlement at most 5 % of the total"
    );
    assert_eq!(
        entitlement.decimal().scale(),
        2,
        "entitlement exact to the fen"
    );
    (entitlement, enterprise_cap_reached)
}
