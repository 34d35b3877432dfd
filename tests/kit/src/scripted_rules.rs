//! The scripted rules service: the 2025 policies of POLICY.md in a few lines, so that the
//! application's orchestration can be tested without the real rules service, with switches for
//! what a test needs (an outage, the partial shortfall policy for claims).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use subsidy_common::Money;
use subsidy_common::money::Rate;
use subsidy_proto::rules as rpb;
use tonic::{Request, Response, Status};

/// The enterprise cap of the scripted compute-voucher policy: 5,000,000 CNY in fen.
pub const ENTERPRISE_CAP_FEN: i64 = 500_000_000;
/// The per-project cap of the scripted data-infrastructure policy: 10,000,000 CNY in fen.
pub const PROJECT_CAP_FEN: i64 = 1_000_000_000;

/// The scripted rules service: rate 5% (4% medium, 3% low), enterprise cap 5,000,000 CNY,
/// AI compute in Shandong signed in 2025, not related; proposals from Shandong up to
/// 10,000,000 CNY; ranking by mean score with partial funding of the first shortfall.
#[derive(Clone, Default)]
pub struct ScriptedRules {
    down: Arc<AtomicBool>,
    partial_claims: Arc<AtomicBool>,
    publicity_ms: Arc<AtomicI64>,
    publicity_down: Arc<AtomicBool>,
    evaluations: Arc<Mutex<u64>>,
}

impl ScriptedRules {
    /// The routes that serve this scripted service (share its state with the handle).
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(rpb::rules_service_server::RulesServiceServer::new(
            self.clone(),
        ))
    }

    /// While `down`, every call fails with UNAVAILABLE.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Switches the compute-voucher policy's shortfall mode to `partial` (or back to the
    /// waitlist).
    pub fn set_partial_claims(&self, partial: bool) {
        self.partial_claims.store(partial, Ordering::SeqCst);
    }

    /// Makes every publicity period last `ms` milliseconds from its start (0, the default:
    /// a period ends when it starts, so that a test pays an award right after approving it).
    pub fn set_publicity_ms(&self, ms: i64) {
        self.publicity_ms.store(ms, Ordering::SeqCst);
    }

    /// While `down`, GetPublicityPeriod alone fails with UNAVAILABLE (the rest answers).
    pub fn set_publicity_down(&self, down: bool) {
        self.publicity_down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) {
            Err(Status::unavailable("scripted outage"))
        } else {
            Ok(())
        }
    }
}

fn failed(reason: &str) -> rpb::FailedCheck {
    rpb::FailedCheck {
        reason: reason.into(),
        field: String::new(),
        message_zh: reason.into(),
        message_en: reason.into(),
    }
}

fn decision(
    program: rpb::Program,
    failed_checks: Vec<rpb::FailedCheck>,
    rate: &str,
    entitlement: Money,
) -> rpb::Decision {
    let eligible = failed_checks.is_empty();
    rpb::Decision {
        decision_id: uuid::Uuid::new_v4().to_string(),
        program: program as i32,
        eligible,
        failed_checks,
        checks: Vec::new(),
        rate_applied: rate.into(),
        entitlement: Some(if eligible { entitlement } else { Money::ZERO }.to_proto()),
        enterprise_cap_remaining: None,
        enterprise_cap_reached: false,
        trace: Vec::new(),
        policy_id: if program == rpb::Program::ComputeVoucher {
            "compute-voucher".into()
        } else {
            "data-infra".into()
        },
        policy_version: "2025.1".into(),
        evaluate_time: None,
    }
}

#[tonic::async_trait]
impl rpb::rules_service_server::RulesService for ScriptedRules {
    async fn evaluate_compute_voucher(
        &self,
        request: Request<rpb::EvaluateComputeVoucherRequest>,
    ) -> Result<Response<rpb::EvaluateComputeVoucherResponse>, Status> {
        self.check_up()?;
        *self.evaluations.lock().unwrap() += 1;
        let claim = request.into_inner().claim.unwrap();
        let mut checks = Vec::new();
        if claim.compute_type != rpb::ComputeType::AiAccelerator as i32 {
            checks.push(failed("COMPUTE_NOT_AI"));
        }
        if !claim.data_center_division_code.starts_with("37") {
            checks.push(failed("DATA_CENTER_OUTSIDE_SHANDONG"));
        }
        if claim.signing_date.map(|d| d.year) != Some(2025) {
            checks.push(failed("SIGNED_OUTSIDE_WINDOW"));
        }
        if claim.related_party_declared {
            checks.push(failed("RELATED_PARTY"));
        }
        let rate = match rpb::BenefitRating::try_from(claim.benefit_rating).unwrap() {
            rpb::BenefitRating::Medium => "0.04",
            rpb::BenefitRating::Low => "0.03",
            _ => "0.05",
        };
        let total = Money::from_proto(claim.contract_total.as_ref().unwrap()).unwrap();
        let usage = Money::from_proto(claim.enterprise_usage.as_ref().unwrap()).unwrap();
        let remaining = Money::from_fen(ENTERPRISE_CAP_FEN)
            .unwrap()
            .saturating_sub(usage);
        if remaining.is_zero() {
            checks.push(failed("ENTERPRISE_CAP_REACHED"));
        }
        let entitlement = Rate::new(Decimal::from_str_exact(rate).unwrap())
            .unwrap()
            .apply_round_down(total)
            .min(remaining);
        Ok(Response::new(rpb::EvaluateComputeVoucherResponse {
            decision: Some(decision(
                rpb::Program::ComputeVoucher,
                checks,
                rate,
                entitlement,
            )),
        }))
    }

    async fn evaluate_data_infra_proposal(
        &self,
        request: Request<rpb::EvaluateDataInfraProposalRequest>,
    ) -> Result<Response<rpb::EvaluateDataInfraProposalResponse>, Status> {
        self.check_up()?;
        let proposal = request.into_inner().proposal.unwrap();
        let mut checks = Vec::new();
        if proposal.applicant_uscc.get(2..4) != Some("37") {
            checks.push(failed("APPLICANT_OUTSIDE_SHANDONG"));
        }
        let requested = Money::from_proto(proposal.requested_amount.as_ref().unwrap()).unwrap();
        if requested.fen() > PROJECT_CAP_FEN {
            checks.push(failed("REQUEST_ABOVE_PROJECT_CAP"));
        }
        Ok(Response::new(rpb::EvaluateDataInfraProposalResponse {
            decision: Some(decision(rpb::Program::DataInfra, checks, "", requested)),
        }))
    }

    async fn rank_selection_round(
        &self,
        request: Request<rpb::RankSelectionRoundRequest>,
    ) -> Result<Response<rpb::RankSelectionRoundResponse>, Status> {
        self.check_up()?;
        let request = request.into_inner();
        let pool = Money::from_proto(request.pool_available.as_ref().unwrap()).unwrap();
        let mut candidates = request.candidates;
        let total = |c: &rpb::SelectionCandidate| -> i64 {
            c.expert_scores.iter().map(|s| i64::from(*s)).sum()
        };
        candidates.sort_by(|a, b| {
            let (ta, ca) = (total(a), a.expert_scores.len() as i64);
            let (tb, cb) = (total(b), b.expert_scores.len() as i64);
            (tb * ca)
                .cmp(&(ta * cb))
                .then(
                    a.submit_time
                        .map(|t| (t.seconds, t.nanos))
                        .cmp(&b.submit_time.map(|t| (t.seconds, t.nanos))),
                )
                .then(a.proposal_id.cmp(&b.proposal_id))
        });
        let mut remaining = pool;
        let mut ended = false;
        let mut awards = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            let requested =
                Money::from_proto(candidate.requested_amount.as_ref().unwrap()).unwrap();
            let (awarded, outcome, reason) = if requested.fen() > PROJECT_CAP_FEN {
                (
                    Money::ZERO,
                    rpb::AwardOutcome::NotSelected,
                    "REQUEST_ABOVE_PROJECT_CAP",
                )
            } else if ended || remaining.is_zero() {
                (
                    Money::ZERO,
                    rpb::AwardOutcome::NotSelected,
                    "POOL_EXHAUSTED",
                )
            } else if requested <= remaining {
                (requested, rpb::AwardOutcome::Awarded, "FULLY_FUNDED")
            } else {
                ended = true;
                (
                    remaining,
                    rpb::AwardOutcome::PartiallyAwarded,
                    "POOL_SHORTFALL_PARTIAL",
                )
            };
            remaining = remaining.checked_sub(awarded).unwrap();
            awards.push(rpb::Award {
                rank: i as u32 + 1,
                proposal_id: candidate.proposal_id.clone(),
                mean_score: String::new(),
                awarded: Some(awarded.to_proto()),
                outcome: outcome as i32,
                reason: reason.into(),
            });
        }
        Ok(Response::new(rpb::RankSelectionRoundResponse {
            awards,
            total_awarded: Some(pool.checked_sub(remaining).unwrap().to_proto()),
            pool_remaining: Some(remaining.to_proto()),
            shortfall_mode: rpb::ShortfallMode::Partial as i32,
            policy_id: "data-infra".into(),
            policy_version: "2025.1".into(),
            decision_id: uuid::Uuid::now_v7().to_string(),
        }))
    }

    async fn get_publicity_period(
        &self,
        request: tonic::Request<rpb::GetPublicityPeriodRequest>,
    ) -> Result<Response<rpb::GetPublicityPeriodResponse>, Status> {
        self.check_up()?;
        if self.publicity_down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("scripted outage of publicity periods"));
        }
        let req = request.into_inner();
        let start = req
            .start_time
            .ok_or_else(|| Status::invalid_argument("start_time is required"))?;
        let ms = self.publicity_ms.load(Ordering::SeqCst);
        let end_ns = i128::from(start.seconds) * 1_000_000_000
            + i128::from(start.nanos)
            + i128::from(ms) * 1_000_000;
        let end = prost_types::Timestamp {
            seconds: i64::try_from(end_ns.div_euclid(1_000_000_000)).expect("in range"),
            nanos: i32::try_from(end_ns.rem_euclid(1_000_000_000)).expect("below a second"),
        };
        let policy_id = if req.program == rpb::Program::DataInfra as i32 {
            "data-infra"
        } else {
            "compute-voucher"
        };
        Ok(Response::new(rpb::GetPublicityPeriodResponse {
            start_time: Some(start),
            end_time: Some(end),
            last_working_day: None,
            working_days: 0,
            policy_id: policy_id.into(),
            policy_version: "2025.1".into(),
            calendar_covered: true,
        }))
    }

    async fn get_policy(
        &self,
        _request: Request<rpb::GetPolicyRequest>,
    ) -> Result<Response<rpb::GetPolicyResponse>, Status> {
        self.check_up()?;
        let mode = if self.partial_claims.load(Ordering::SeqCst) {
            rpb::ShortfallMode::Partial
        } else {
            rpb::ShortfallMode::Waitlist
        };
        Ok(Response::new(rpb::GetPolicyResponse {
            policy: Some(rpb::Policy {
                policy_id: "compute-voucher".into(),
                version: "2025.1".into(),
                parameters: Some(rpb::PolicyParameters {
                    program_parameters: Some(
                        rpb::policy_parameters::ProgramParameters::ComputeVoucher(
                            rpb::ComputeVoucherParameters {
                                shortfall_mode: mode as i32,
                                ..Default::default()
                            },
                        ),
                    ),
                }),
                ..Default::default()
            }),
        }))
    }
}
