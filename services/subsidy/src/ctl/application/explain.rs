//! `claim explain CLAIM_ID [--lang zh|en]`: why a claim got its amount, in words, from the claim
//! (GetClaim) and the rules service's stored decision that set its amount (GetDecision): each
//! check the decision's policy version ran, passed or failed, with what the rules service found
//! (the decision's own `checks`, so the provider registry's checks or a version's other checks
//! show as they were run), the rate, the contract total it applied to, the
//! enterprise cap in force and what was left of it, and the rounding down to the fen. The
//! decision explained is the claim's latest: the re-evaluation on approval once there is one,
//! otherwise its latest evaluation. With `--output json`, the same account as an object holding
//! the claim and the stored decision as the services sent them.

use clap::ValueEnum;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use subsidy_common::config::ServiceKind;
use subsidy_common::money::Rate;
use subsidy_common::{BoxError, Money};
use subsidy_proto::application as pb;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;

use super::{Client, state_name};
use crate::ctl::{Ctx, Output, json, print_json, write_out};

/// The language of an explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Simplified Chinese.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// The text of `(zh, en)` in this language.
    fn pick<'a>(self, (zh, en): (&'a str, &'a str)) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }
}

/// The decision that set a claim's amount: the latest linked one (the re-evaluation on
/// approval once there is one), or the one its summary names for a claim recorded before
/// decisions were linked; and why it was asked for.
fn decision_of(claim: &pb::Claim) -> Option<(String, pb::DecisionPurpose)> {
    claim
        .decisions
        .last()
        .map(|link| (link.decision_id.clone(), link.purpose()))
        .or_else(|| {
            let summary = claim.decision.as_ref()?;
            Some((summary.decision_id.clone(), pb::DecisionPurpose::Evaluation))
        })
        .filter(|(id, _)| !id.is_empty())
}

fn amount(value: &Option<subsidy_proto::google::r#type::Money>) -> Option<Money> {
    value.as_ref().and_then(|m| Money::from_proto(m).ok())
}

/// The account of one claim and its decision.
#[derive(Debug)]
pub struct Explanation {
    /// The lines for people.
    pub lines: Vec<String>,
    /// The same for scripts.
    pub json: Value,
}

/// One check of the account: its code, whether it passed, and what it found.
type Check = (String, bool, String);

/// The checks of the account, as the rules service recorded them with the decision: every check
/// its policy version ran, in order, passed or failed, in the chosen language; and whether they
/// were recorded. A decision stored before the rules service recorded its checks names only its
/// failed ones: those are listed, and the account says the passed ones are not known.
fn checks(decision: &rpb::Decision, lang: Lang) -> (Vec<Check>, bool) {
    let text = |zh: &str, en: &str| lang.pick((zh, en)).to_owned();
    if !decision.checks.is_empty() {
        let checks = decision
            .checks
            .iter()
            .map(|c| {
                (
                    c.reason.clone(),
                    c.passed,
                    text(&c.message_zh, &c.message_en),
                )
            })
            .collect();
        return (checks, true);
    }
    let failed = decision
        .failed_checks
        .iter()
        .map(|c| (c.reason.clone(), false, text(&c.message_zh, &c.message_en)))
        .collect();
    (failed, false)
}

/// The words of the purpose of a decision.
fn purpose_text(purpose: pb::DecisionPurpose, lang: Lang) -> &'static str {
    let text = match purpose {
        pb::DecisionPurpose::ApprovalRecheck => {
            ("审核通过时按核实金额重新评估", "re-evaluation on approval")
        }
        pb::DecisionPurpose::Reevaluation => (
            "企业用量变化后重新评估",
            "re-evaluation after the enterprise's usage changed",
        ),
        _ => ("提交时的评估", "evaluation on submission"),
    };
    lang.pick(text)
}

/// The account of `claim` and `stored`, the decision (asked for `purpose`) that set its amount.
/// Pure: every number comes from the two messages.
pub fn explain(
    claim: &pb::Claim,
    stored: &rpb::StoredDecision,
    purpose: pb::DecisionPurpose,
    lang: Lang,
) -> Result<Explanation, BoxError> {
    let Some(rpb::stored_decision::Result::Decision(decision)) = &stored.result else {
        return Err("the stored decision is not a claim's evaluation".into());
    };
    let Some(rpb::stored_decision::Inputs::ComputeVoucher(inputs)) = &stored.inputs else {
        return Err("the stored decision is not a compute-voucher evaluation".into());
    };
    let facts = inputs.claim.clone().unwrap_or_default();
    let total = amount(&facts.contract_total).ok_or("the stored decision has no contract total")?;
    let usage = amount(&facts.enterprise_usage).unwrap_or(Money::ZERO);
    let cap = match stored
        .policy_parameters
        .as_ref()
        .and_then(|p| p.program_parameters.as_ref())
    {
        Some(rpb::policy_parameters::ProgramParameters::ComputeVoucher(p)) => {
            amount(&p.enterprise_cap)
        }
        _ => None,
    }
    .ok_or("the stored decision has no enterprise cap")?;
    let remaining = amount(&decision.enterprise_cap_remaining).unwrap_or(Money::ZERO);
    let entitlement = amount(&decision.entitlement).unwrap_or(Money::ZERO);
    let rate_value = Decimal::from_str_exact(&decision.rate_applied)
        .ok()
        .and_then(Rate::new)
        .ok_or("the stored decision has no valid rate")?;
    let exact = (rate_value.decimal() * total.decimal()).normalize();
    let gross = rate_value.apply_round_down(total);
    let percent = (rate_value.decimal() * Decimal::ONE_HUNDRED).normalize();
    let (checks, recorded) = checks(decision, lang);

    let t = |zh: &str, en: &str| lang.pick((zh, en)).to_owned();
    let mut lines = vec![
        format!(
            "{} {} ({}) {} {}",
            t("申请", "Claim"),
            claim.claim_id,
            state_name(claim.state().as_str_name(), "CLAIM_STATE_"),
            t("企业", "of enterprise"),
            claim.enterprise_uscc
        ),
        format!(
            "{} {} ({}), {} {} {}",
            t("决定", "Decision"),
            stored.decision_id,
            purpose_text(purpose, lang),
            t("政策", "policy"),
            stored.policy_id,
            stored.policy_version
        ),
        t("检查：", "Checks:"),
    ];
    for (code, passed, reason) in &checks {
        let mark = if *passed {
            t("通过", "passed")
        } else {
            t("未通过", "FAILED")
        };
        lines.push(format!("  [{mark}] {code}: {reason}"));
    }
    if !recorded {
        lines.push(t(
            "  （此决定存储于规则服务记录全部检查之前：仅知未通过的检查，通过的检查见其轨迹）",
            "  (this decision was stored before the rules service recorded every check: only its failed checks are known; its trace shows the rest)",
        ));
    }
    lines.push(format!(
        "{} {}% ({})",
        t("奖补比例：", "Rate:"),
        percent,
        decision.rate_applied
    ));
    lines.push(format!(
        "{} {} {}",
        t("计算基数：", "Applied to:"),
        total.grouped(),
        t("元", "CNY")
    ));
    lines.push(format!(
        "{} {} × {} = {} → {} {}",
        t("比例 × 金额：", "Rate × amount:"),
        decision.rate_applied,
        total,
        exact,
        gross.grouped(),
        t("（向下取整到分）", "(rounded down to the fen)")
    ));
    let comma = t("，", ", ");
    lines.push(format!(
        "{} {}{comma}{} {}{comma}{} {}",
        t("企业累计上限：", "Enterprise cap:"),
        cap.grouped(),
        t("已占用", "already used"),
        usage.grouped(),
        t("剩余", "remaining"),
        remaining.grouped()
    ));
    let entitled = if decision.eligible {
        format!(
            "min({}, {}) = {}{}",
            gross.grouped(),
            remaining.grouped(),
            entitlement.grouped(),
            if decision.enterprise_cap_reached {
                t("（受企业上限限制）", " (limited by the enterprise cap)")
            } else {
                String::new()
            }
        )
    } else {
        format!("0.00 {}", t("（有检查未通过）", "(a check failed)"))
    };
    lines.push(format!("{} {}", t("应得奖补：", "Entitlement:"), entitled));
    let reserved = amount(&claim.reserved_amount).unwrap_or(Money::ZERO);
    let approved = amount(&claim.approved_amount).unwrap_or(Money::ZERO);
    if !reserved.is_zero() {
        lines.push(format!(
            "{} {}",
            t("已预留：", "Reserved:"),
            reserved.grouped()
        ));
    }
    if !approved.is_zero() {
        lines.push(format!(
            "{} {} {}",
            t("核定金额：", "Approved:"),
            approved.grouped(),
            t(
                "（应得奖补与已预留金额中的较小者）",
                "(the smaller of the entitlement and what was held)"
            )
        ));
    }
    let json = json!({
        "claimId": claim.claim_id,
        "decisionId": stored.decision_id,
        "purpose": purpose.as_str_name(),
        "lang": lang.code(),
        "policyId": stored.policy_id,
        "policyVersion": stored.policy_version,
        "eligible": decision.eligible,
        "checks": checks.iter().map(|(code, passed, reason)| json!({"code": code, "passed": passed, "reason": reason})).collect::<Vec<_>>(),
        "checksRecorded": recorded,
        "rate": decision.rate_applied,
        "appliedTo": total.to_string(),
        "rateTimesAmount": exact.to_string(),
        "roundedDown": gross.to_string(),
        "enterpriseCap": cap.to_string(),
        "enterpriseUsage": usage.to_string(),
        "enterpriseCapRemaining": remaining.to_string(),
        "enterpriseCapReached": decision.enterprise_cap_reached,
        "entitlement": entitlement.to_string(),
        "reserved": reserved.to_string(),
        "approved": approved.to_string(),
        "claim": json::message(claim),
        "decision": json::message(stored),
    });
    Ok(Explanation { lines, json })
}

/// `claim explain`.
pub async fn claim_explain(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    lang: Lang,
) -> Result<(), BoxError> {
    let claim = client
        .get_claim(ctx.request(pb::GetClaimRequest { claim_id: id }))
        .await?
        .into_inner()
        .claim
        .ok_or("the service answered without a claim")?;
    let (decision_id, purpose) =
        decision_of(&claim).ok_or("the claim has not been evaluated yet")?;
    let mut rules = RulesServiceClient::new(ctx.channel(ServiceKind::Rules).await?);
    let stored = rules
        .get_decision(ctx.request(rpb::GetDecisionRequest { decision_id }))
        .await?
        .into_inner()
        .decision
        .ok_or("the service answered without a decision")?;
    let explanation = explain(&claim, &stored, purpose, lang)?;
    match ctx.output {
        Output::Json => print_json(&explanation.json),
        Output::Table => write_out(&(explanation.lines.join("\n") + "\n")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(fen: i64) -> Option<subsidy_proto::google::r#type::Money> {
        Some(Money::from_fen(fen).unwrap().to_proto())
    }

    fn passed(reason: &str, zh: &str, en: &str) -> rpb::CheckOutcome {
        rpb::CheckOutcome {
            reason: reason.into(),
            field: String::new(),
            passed: true,
            message_zh: zh.into(),
            message_en: en.into(),
        }
    }

    /// The checks of a version with the provider registry switched on, every one passed, as
    /// the rules service records them (texts shortened but for the registry's).
    fn registry_checks() -> Vec<rpb::CheckOutcome> {
        let mut checks: Vec<rpb::CheckOutcome> = [
            "USCC_INVALID",
            "USCC_INVALID",
            "BUYER_IS_SELLER",
            "RELATED_PARTY",
            "COMPUTE_NOT_AI",
            "DATA_CENTER_OUTSIDE_SHANDONG",
            "SIGNED_OUTSIDE_WINDOW",
            "BUYER_ON_DENYLIST",
        ]
        .iter()
        .map(|code| passed(code, "通过", "passed"))
        .collect();
        checks.push(passed(
            "SELLER_NOT_ADMITTED_PROVIDER",
            "卖方在合同签订日是已准入的算力服务商",
            "the seller was an admitted compute provider on the signing date",
        ));
        checks.push(passed(
            "DATA_CENTER_NOT_REGISTERED",
            "数据中心是卖方已登记、在用的山东省内数据中心",
            "the data center is one of the seller's registered, in-service data centers in Shandong",
        ));
        checks.push(passed("AMOUNT_OUT_OF_RANGE", "通过", "passed"));
        checks.push(passed("ENTERPRISE_CAP_REACHED", "通过", "passed"));
        checks
    }

    /// A claim approved on 800,000.00 verified, and the re-evaluation that set its amount:
    /// 5 % of 800,000.00 with 4,980,000.00 of the 5,000,000.00 cap already used.
    fn approved() -> (pb::Claim, rpb::StoredDecision) {
        let claim = pb::Claim {
            claim_id: "claim-1".into(),
            state: pb::ClaimState::Approved as i32,
            enterprise_uscc: "91370100MA3C00001H".into(),
            reserved_amount: cny(5_000_000),
            approved_amount: cny(2_000_000),
            ..Default::default()
        };
        let decision = rpb::Decision {
            decision_id: "d-1".into(),
            eligible: true,
            rate_applied: "0.05".into(),
            entitlement: cny(2_000_000),
            enterprise_cap_remaining: cny(2_000_000),
            enterprise_cap_reached: true,
            checks: registry_checks(),
            ..Default::default()
        };
        let stored = rpb::StoredDecision {
            decision_id: "d-1".into(),
            policy_id: "compute-voucher".into(),
            policy_version: "2025.1".into(),
            policy_parameters: Some(rpb::PolicyParameters {
                program_parameters: Some(
                    rpb::policy_parameters::ProgramParameters::ComputeVoucher(
                        rpb::ComputeVoucherParameters {
                            enterprise_cap: cny(500_000_000),
                            ..Default::default()
                        },
                    ),
                ),
            }),
            inputs: Some(rpb::stored_decision::Inputs::ComputeVoucher(
                rpb::ComputeVoucherInputs {
                    claim: Some(rpb::ComputeVoucherClaim {
                        contract_total: cny(80_000_001),
                        enterprise_usage: cny(498_000_000),
                        ..Default::default()
                    }),
                    buyer_on_denylist: false,
                    provider_registry: None,
                },
            )),
            result: Some(rpb::stored_decision::Result::Decision(decision)),
            ..Default::default()
        };
        (claim, stored)
    }

    #[test]
    fn an_explanation_shows_the_rate_the_rounding_and_the_cap_that_limited_the_amount() {
        // Proves: 5 % of 800,000.01 is 40,000.0005, rounded down to 40,000.00; the cap had
        // 20,000.00 left, which is the entitlement and the approved amount; every check the
        // decision recorded is listed as passed, in its order, the provider registry's two
        // included; the numbers read the same in both languages and in JSON.
        let (claim, stored) = approved();
        let purpose = pb::DecisionPurpose::ApprovalRecheck;
        let en = explain(&claim, &stored, purpose, Lang::En).unwrap();
        let text = en.lines.join("\n");
        assert!(text.contains("re-evaluation on approval"), "{text}");
        assert!(
            text.contains("0.05 × 800000.01 = 40000.0005 → 40,000.00 (rounded down to the fen)"),
            "{text}"
        );
        assert!(
            text.contains(
                "Enterprise cap: 5,000,000.00, already used 4,980,000.00, remaining 20,000.00"
            ),
            "{text}"
        );
        assert!(
            text.contains("min(40,000.00, 20,000.00) = 20,000.00 (limited by the enterprise cap)"),
            "{text}"
        );
        assert_eq!(text.matches("[passed]").count(), 12, "{text}");
        assert!(
            text.contains(
                "  [passed] BUYER_ON_DENYLIST: passed\n  [passed] SELLER_NOT_ADMITTED_PROVIDER: the seller was an admitted compute provider on the signing date\n  [passed] DATA_CENTER_NOT_REGISTERED: "
            ),
            "{text}"
        );
        assert!(
            !text.contains("before the rules service recorded"),
            "{text}"
        );
        let zh = explain(&claim, &stored, purpose, Lang::Zh)
            .unwrap()
            .lines
            .join("\n");
        assert!(
            zh.contains("（向下取整到分）")
                && zh.contains(
                    "[通过] SELLER_NOT_ADMITTED_PROVIDER: 卖方在合同签订日是已准入的算力服务商"
                ),
            "{zh}"
        );
        assert_eq!(en.json["checks"].as_array().unwrap().len(), 12);
        assert_eq!(en.json["checks"][8]["code"], "SELLER_NOT_ADMITTED_PROVIDER");
        assert_eq!(en.json["checksRecorded"], true);
        assert_eq!(en.json["roundedDown"], "40000.00");
        assert_eq!(en.json["entitlement"], "20000.00");
        assert_eq!(en.json["enterpriseCapRemaining"], "20000.00");
        assert_eq!(en.json["approved"], "20000.00");
    }

    #[test]
    fn a_failed_check_is_shown_with_its_reason_in_the_chosen_language() {
        // Proves: a failed check is marked with the rules service's own explanation, in
        // Chinese or English as asked, and the entitlement is zero because of it.
        let (claim, mut stored) = approved();
        let Some(rpb::stored_decision::Result::Decision(decision)) = stored.result.as_mut() else {
            unreachable!()
        };
        decision.eligible = false;
        decision.entitlement = cny(0);
        decision.failed_checks.push(rpb::FailedCheck {
            reason: "COMPUTE_NOT_AI".into(),
            field: "claim.compute_type".into(),
            message_zh: "合同采购的不是人工智能算力。".into(),
            message_en: "The contract does not buy AI compute.".into(),
        });
        let check = &mut decision.checks[4];
        check.passed = false;
        check.message_zh = "合同采购的不是人工智能算力。".into();
        check.message_en = "The contract does not buy AI compute.".into();
        let purpose = pb::DecisionPurpose::Evaluation;
        let en = explain(&claim, &stored, purpose, Lang::En)
            .unwrap()
            .lines
            .join("\n");
        assert!(
            en.contains("[FAILED] COMPUTE_NOT_AI: The contract does not buy AI compute."),
            "{en}"
        );
        assert!(en.contains("Entitlement: 0.00 (a check failed)"), "{en}");
        assert_eq!(en.matches("[passed]").count(), 11, "{en}");
        let zh = explain(&claim, &stored, purpose, Lang::Zh)
            .unwrap()
            .lines
            .join("\n");
        assert!(
            zh.contains("[未通过] COMPUTE_NOT_AI: 合同采购的不是人工智能算力。"),
            "{zh}"
        );
    }

    #[test]
    fn a_decision_stored_before_checks_were_recorded_lists_its_failed_checks_and_says_so() {
        // Proves: a decision without recorded checks (stored by an older rules service) is not
        // given a list of passed checks from elsewhere: its failed check is shown, no check is
        // claimed as passed, and the account says the passed ones are not known.
        let (claim, mut stored) = approved();
        let Some(rpb::stored_decision::Result::Decision(decision)) = stored.result.as_mut() else {
            unreachable!()
        };
        decision.checks.clear();
        decision.eligible = false;
        decision.entitlement = cny(0);
        decision.failed_checks.push(rpb::FailedCheck {
            reason: "BUYER_ON_DENYLIST".into(),
            field: "claim.buyer_uscc".into(),
            message_zh: "买方列入失信名单，不予奖补。".into(),
            message_en: "The buyer is on the dishonesty denylist and cannot be subsidised.".into(),
        });
        let purpose = pb::DecisionPurpose::Evaluation;
        let en = explain(&claim, &stored, purpose, Lang::En).unwrap();
        let text = en.lines.join("\n");
        assert!(
            text.contains("[FAILED] BUYER_ON_DENYLIST: The buyer is on the dishonesty denylist"),
            "{text}"
        );
        assert_eq!(text.matches("[passed]").count(), 0, "{text}");
        assert!(text.contains("only its failed checks are known"), "{text}");
        assert_eq!(en.json["checksRecorded"], false);
        let zh = explain(&claim, &stored, purpose, Lang::Zh)
            .unwrap()
            .lines
            .join("\n");
        assert!(zh.contains("仅知未通过的检查"), "{zh}");
    }
}
