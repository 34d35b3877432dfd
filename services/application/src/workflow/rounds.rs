//! Selection rounds and their proposals: open and close a round, submit and screen a
//! proposal, withdraw it, score it, record its payment, read them. A round's finalisation is
//! in `finalization.rs`.
//!
//! Lock order: a round before its proposals, always, so that a finalisation (which locks the
//! round) and a change of one proposal never wait for each other in a cycle.

use subsidy_common::auth::Tenant;
use subsidy_common::{Money, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;

use super::outbox::EventSpec;
use super::translate::{data_infra_facts, decision_reason, decision_summary, failed_codes};
use super::{Begun, Caller, Change, Disbursement, Followed, Known, Submission, Workflow, fen, op};
use crate::domain::{
    DecisionPurpose, PROPOSAL_ID_PREFIX, PROPOSAL_SCORES_MAX, ProposalCategory, ProposalFilter,
    ProposalState, ROUND_ID_PREFIX, ROUND_PROPOSALS_MAX, RoundRefusal, RoundState,
    deadline_violation,
};
use crate::error::{ApplicationError, Subject};
use crate::storage::{DecisionLinkRow, ProposalRow, RoundRow, ScoreRow, Tx};
use crate::upstream::PeerError;
use crate::wire::{encode_attachments, round_to_proto};

/// A validated round creation.
#[derive(Clone, Debug)]
pub struct CreateRound {
    /// Pool.
    pub pool_id: String,
    /// Title.
    pub title: String,
    /// Deadline, µs.
    pub deadline_us: i64,
}

/// A validated proposal submission.
#[derive(Clone, Debug)]
pub struct SubmitProposal {
    /// Round.
    pub round_id: String,
    /// Applicant.
    pub applicant: Uscc,
    /// Category.
    pub category: ProposalCategory,
    /// Title.
    pub title: String,
    /// Requested amount.
    pub requested: Money,
    /// Summary.
    pub summary: String,
    /// Attachment digests.
    pub attachments: Vec<pb::AttachmentDigest>,
}

/// A validated score.
#[derive(Clone, Debug)]
pub struct ScoreProposal {
    /// Proposal.
    pub proposal_id: String,
    /// Expert.
    pub expert_id: String,
    /// Expert's organisation.
    pub expert_organization: Uscc,
    /// Score.
    pub score: u32,
    /// Comment.
    pub comment: String,
}

/// A round as read, with what its report needs.
#[derive(Clone, Debug)]
pub struct RoundView {
    /// The round.
    pub round: RoundRow,
    /// Proposals submitted into it.
    pub proposal_count: i64,
    /// The database clock when it was read, µs (an OPEN round past its deadline is CLOSED).
    pub now_us: i64,
}

/// A proposal as read, with its scores in order of expert.
#[derive(Clone, Debug)]
pub struct ProposalView {
    /// The proposal.
    pub proposal: ProposalRow,
    /// Its scores.
    pub scores: Vec<ScoreRow>,
    /// The rules service's decisions that shaped it, oldest first.
    pub decisions: Vec<DecisionLinkRow>,
}

/// The refusal of a round `round_id` as an error.
pub(super) fn round_refused(round_id: &str, refusal: RoundRefusal) -> ApplicationError {
    let round_id = round_id.to_owned();
    match refusal {
        RoundRefusal::Closed => ApplicationError::RoundClosed { round_id },
        RoundRefusal::AlreadyFinalized => ApplicationError::RoundAlreadyFinalized { round_id },
    }
}

/// `proposal` may not change from its state.
pub(super) fn proposal_transition(proposal: &ProposalRow) -> ApplicationError {
    ApplicationError::transition(
        Subject::Proposal(proposal.proposal_id.clone()),
        proposal.state,
    )
}

/// A new proposal as recorded on submission: SUBMITTED, to be screened.
fn submitted_proposal(proposal_id: String, cmd: &SubmitProposal, now_us: i64) -> ProposalRow {
    ProposalRow {
        proposal_id,
        round_id: cmd.round_id.clone(),
        state: ProposalState::Submitted,
        applicant_uscc: cmd.applicant.as_str().to_owned(),
        category: cmd.category,
        title: cmd.title.clone(),
        requested_fen: cmd.requested.fen(),
        summary: cmd.summary.clone(),
        attachments: encode_attachments(&cmd.attachments),
        decision: None,
        rank: 0,
        planned_award_fen: 0,
        reservation_id: None,
        awarded_fen: 0,
        withdrawal_reason: String::new(),
        payment: None,
        step_us: now_us,
        submit_us: now_us,
        updated_us: now_us,
        revision: 1,
    }
}

impl Workflow {
    /// One round, locked for change in `tx`; `NOT_FOUND` when there is none.
    pub(super) async fn locked_round(
        &self,
        tx: &mut Tx,
        round_id: &str,
    ) -> Result<RoundRow, ApplicationError> {
        self.store
            .lock_round(tx, round_id)
            .await?
            .ok_or_else(|| ApplicationError::round_not_found(round_id))
    }

    /// One proposal, locked for change in `tx`; `NOT_FOUND` when there is none.
    pub(super) async fn locked_proposal(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
    ) -> Result<ProposalRow, ApplicationError> {
        self.store
            .lock_proposal(tx, proposal_id)
            .await?
            .ok_or_else(|| ApplicationError::proposal_not_found(proposal_id))
    }

    /// One round as reported now.
    pub async fn round(&self, round_id: &str) -> Result<RoundView, ApplicationError> {
        let mut conn = self.store.read().await?;
        let round = self
            .store
            .get_round(&mut conn, round_id)
            .await?
            .ok_or_else(|| ApplicationError::round_not_found(round_id))?;
        let proposal_count = self.store.proposal_count(&mut conn, round_id).await?;
        let now_us = self.store.now_us(&mut conn).await?;
        Ok(RoundView {
            round,
            proposal_count,
            now_us,
        })
    }

    /// At most `limit` rounds of `pool_id` (all when empty) reported in `state` (any when
    /// none) after the keyset position `after`, newest first.
    pub async fn rounds(
        &self,
        pool_id: &str,
        state: Option<RoundState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<RoundView>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let rows = self
            .store
            .list_rounds(&mut conn, pool_id, state, after, limit)
            .await?;
        let now_us = self.store.now_us(&mut conn).await?;
        let mut rounds = Vec::with_capacity(rows.len());
        for round in rows {
            let proposal_count = self
                .store
                .proposal_count(&mut conn, &round.round_id)
                .await?;
            rounds.push(RoundView {
                round,
                proposal_count,
                now_us,
            });
        }
        Ok(rounds)
    }

    /// One proposal with its scores; another tenant's proposal is not found.
    pub async fn proposal(
        &self,
        proposal_id: &str,
        tenant: &Tenant,
    ) -> Result<ProposalView, ApplicationError> {
        let mut conn = self.store.read().await?;
        let proposal = self
            .store
            .get_proposal(&mut conn, proposal_id)
            .await?
            .filter(|proposal| tenant.sees(&proposal.applicant_uscc))
            .ok_or_else(|| ApplicationError::proposal_not_found(proposal_id))?;
        let scores = self.store.scores(&mut conn, proposal_id).await?;
        let decisions = self.store.decision_links(&mut conn, proposal_id).await?;
        Ok(ProposalView {
            proposal,
            scores,
            decisions,
        })
    }

    /// At most `limit` proposals matching `filter` after the keyset position `after`, newest
    /// submission first, with their scores.
    pub async fn proposals(
        &self,
        filter: &ProposalFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ProposalView>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let rows = self
            .store
            .list_proposals(&mut conn, filter, after, limit)
            .await?;
        let mut proposals = Vec::with_capacity(rows.len());
        for proposal in rows {
            let scores = self.store.scores(&mut conn, &proposal.proposal_id).await?;
            let decisions = self
                .store
                .decision_links(&mut conn, &proposal.proposal_id)
                .await?;
            proposals.push(ProposalView {
                proposal,
                scores,
                decisions,
            });
        }
        Ok(proposals)
    }

    // ----------------------------------------------------------------------------------------
    // Rounds
    // ----------------------------------------------------------------------------------------

    /// Opens a selection round for a pool that the budget service knows.
    pub async fn create_round(
        &self,
        cmd: CreateRound,
        caller: &Caller,
    ) -> Result<pb::CreateSelectionRoundResponse, ApplicationError> {
        if let Known::Replay(response) = self
            .known_request::<pb::CreateSelectionRoundResponse>(caller, op::CREATE_ROUND)
            .await?
        {
            return Ok(response);
        }
        let known_pool = match self.peers.pool(&cmd.pool_id).await {
            Ok(_) => Ok(()),
            Err(PeerError::Refused { reason, .. }) if reason == "POOL_NOT_FOUND" => {
                Err(ApplicationError::PoolNotFound {
                    pool_id: cmd.pool_id.clone(),
                })
            }
            Err(error) => Err(error.into()),
        };
        if let Err(refused) = known_pool {
            // The same id in flight for another round is REQUEST_ID_REUSED, not this refusal.
            return match self
                .after_refusal::<pb::CreateSelectionRoundResponse>(
                    caller,
                    op::CREATE_ROUND,
                    refused,
                )
                .await?
            {
                Followed::Replay(response) => Ok(response),
                Followed::InProgress(_) => Err(Self::request_id_reused(caller)),
            };
        }
        let mut tx = match self.begin_request(caller, op::CREATE_ROUND).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let now = self.store.now_us(&mut tx).await?;
        if let Some(why) = deadline_violation(cmd.deadline_us, now) {
            return Err(ApplicationError::invalid("submission_deadline_time", why));
        }
        let round = RoundRow {
            round_id: format!("{ROUND_ID_PREFIX}{}", uuid::Uuid::now_v7()),
            pool_id: cmd.pool_id,
            title: cmd.title,
            state: RoundState::Open,
            deadline_us: cmd.deadline_us,
            created_by: caller.actor.clone(),
            created_us: now,
            closed_us: None,
            finalize_started_us: None,
            ranking: None,
            ranking_decision_id: String::new(),
            finalized_us: None,
            award_count: 0,
            awarded_total_fen: 0,
        };
        self.store.insert_round(&mut tx, &round).await?;
        self.audit(&mut tx, caller, &[&round.round_id, &round.pool_id], now)
            .await?;
        let response = pb::CreateSelectionRoundResponse {
            round: Some(round_to_proto(&round, 0, now)),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Closes an OPEN round early.
    pub async fn close_round(
        &self,
        round_id: &str,
        caller: &Caller,
    ) -> Result<pb::CloseSelectionRoundResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::CLOSE_ROUND).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut round = self.locked_round(&mut tx, round_id).await?;
        let now = self.store.now_us(&mut tx).await?;
        round
            .state
            .admission(round.deadline_us, now)
            .map_err(|refusal| round_refused(round_id, refusal))?;
        round.state = RoundState::Closed;
        round.closed_us = Some(now);
        self.store.save_round(&mut tx, &round).await?;
        self.audit(&mut tx, caller, &[round_id], now).await?;
        let response = pb::CloseSelectionRoundResponse {
            round: Some(self.round_response(&mut tx, &round).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    // ----------------------------------------------------------------------------------------
    // Proposals
    // ----------------------------------------------------------------------------------------

    /// Submits a proposal into an OPEN round and screens it.
    pub async fn submit_proposal(
        &self,
        cmd: SubmitProposal,
        caller: &Caller,
    ) -> Result<pb::SubmitProposalResponse, ApplicationError> {
        if !caller.tenant.sees(cmd.applicant.as_str()) {
            return Err(ApplicationError::EnterpriseNotBound {
                uscc: cmd.applicant.as_str().to_owned(),
            });
        }
        let proposal_id = match self
            .submission(caller, op::SUBMIT_PROPOSAL, || {
                self.create_proposal(&cmd, caller)
            })
            .await?
        {
            Submission::Replay(response) => return Ok(response),
            Submission::Recorded(proposal_id) => proposal_id,
        };
        self.screen_proposal(&proposal_id).await?;
        let mut tx = match self.begin_request(caller, op::SUBMIT_PROPOSAL).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let proposal = self.locked_proposal(&mut tx, &proposal_id).await?;
        let response = pb::SubmitProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Refuses a proposal into a round that is not open or full, or by an applicant that is
    /// not registered. Locks the round, and returns the database clock read under its lock.
    async fn check_submittable(
        &self,
        tx: &mut Tx,
        cmd: &SubmitProposal,
    ) -> Result<i64, ApplicationError> {
        let round = self.locked_round(tx, &cmd.round_id).await?;
        let now_us = self.store.now_us(tx).await?;
        round
            .state
            .admission(round.deadline_us, now_us)
            .map_err(|refusal| round_refused(&round.round_id, refusal))?;
        if self.store.proposal_count(tx, &round.round_id).await? >= ROUND_PROPOSALS_MAX {
            return Err(ApplicationError::invalid(
                "round_id",
                format!("the round holds its maximum of {ROUND_PROPOSALS_MAX} proposals"),
            ));
        }
        if self
            .store
            .get_enterprise(tx, cmd.applicant.as_str())
            .await?
            .is_none()
        {
            return Err(ApplicationError::enterprise_not_found(
                cmd.applicant.as_str(),
            ));
        }
        Ok(now_us)
    }

    /// Records a new proposal as SUBMITTED; `None` when a concurrent duplicate of the request
    /// recorded it first.
    async fn create_proposal(
        &self,
        cmd: &SubmitProposal,
        caller: &Caller,
    ) -> Result<Option<String>, ApplicationError> {
        let mut tx = self.store.begin().await?;
        let proposal_id = format!("{PROPOSAL_ID_PREFIX}{}", uuid::Uuid::now_v7());
        // The request is recorded before anything is judged: a concurrent duplicate waits
        // here for the first to commit and then follows it, instead of finding the round
        // full or closed by the first.
        if self
            .store
            .record_progress(
                &mut tx,
                &caller.key,
                op::SUBMIT_PROPOSAL,
                &caller.fingerprint,
                &proposal_id,
            )
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let now = self.check_submittable(&mut tx, cmd).await?;
        let proposal = submitted_proposal(proposal_id, cmd, now);
        self.store.insert_proposal(&mut tx, &proposal).await?;
        let reason = format!("submitted into round {}", proposal.round_id);
        let change = Change::by(caller, None, ProposalState::Submitted.as_str(), reason);
        self.append_history(
            &mut tx,
            &proposal.proposal_id,
            proposal.revision,
            change,
            now,
        )
        .await?;
        let targets = [proposal.proposal_id.as_str(), proposal.round_id.as_str()];
        self.audit(&mut tx, caller, &targets, now).await?;
        let event = EventSpec::proposal(
            npb::EventType::ProposalSubmitted,
            &proposal,
            Some(cmd.requested),
        );
        self.append_event(&mut tx, event, now).await?;
        self.commit(tx).await?;
        Ok(Some(proposal.proposal_id))
    }

    /// Screens a SUBMITTED proposal with the rules service.
    pub async fn screen_proposal(&self, proposal_id: &str) -> Result<(), ApplicationError> {
        let (seen, applicant) = {
            let mut conn = self.store.read().await?;
            let seen = self
                .store
                .get_proposal(&mut conn, proposal_id)
                .await?
                .ok_or_else(|| ApplicationError::proposal_not_found(proposal_id))?;
            let applicant = self
                .store
                .get_enterprise(&mut conn, &seen.applicant_uscc)
                .await?
                .ok_or_else(|| ApplicationError::enterprise_not_found(&seen.applicant_uscc))?;
            (seen, applicant)
        };
        if seen.state != ProposalState::Submitted {
            return Ok(());
        }
        let decision = self
            .peers
            .evaluate_data_infra(data_infra_facts(&seen, &applicant))
            .await?;
        let summary = decision_summary(&decision)?;
        let mut tx = self.store.begin().await?;
        let mut proposal = self.locked_proposal(&mut tx, proposal_id).await?;
        if proposal.state != ProposalState::Submitted {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let link = (summary.decision_id.as_str(), DecisionPurpose::Evaluation);
        self.link_decision(&mut tx, proposal_id, link, now).await?;
        proposal.decision = Some(prost::Message::encode_to_vec(&summary));
        proposal.step_us = now;
        let (reason, event) = if summary.eligible {
            proposal.state = ProposalState::Eligible;
            (decision_reason(&summary, None), None)
        } else {
            proposal.state = ProposalState::Ineligible;
            let codes = failed_codes(&summary);
            let event = EventSpec::proposal(npb::EventType::ProposalIneligible, &proposal, None)
                .with("failed_reasons", codes.clone());
            (decision_reason(&summary, Some(&codes)), Some(event))
        };
        let change = Change::system(
            ProposalState::Submitted.as_str(),
            proposal.state.as_str(),
            reason,
        );
        self.save_change(&mut tx, &mut proposal, Some(change), event, now)
            .await?;
        self.commit(tx).await
    }

    /// Locks a proposal's round, then the proposal (always in that order), refusing changes
    /// once the round's finalisation has begun.
    async fn lock_proposal_and_round(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
    ) -> Result<(RoundRow, ProposalRow), ApplicationError> {
        let round_id = self
            .store
            .get_proposal(tx, proposal_id)
            .await?
            .ok_or_else(|| ApplicationError::proposal_not_found(proposal_id))?
            .round_id;
        let round = self.locked_round(tx, &round_id).await?;
        if round.state.proposals_frozen() {
            return Err(round_refused(&round_id, RoundRefusal::AlreadyFinalized));
        }
        let proposal = self.locked_proposal(tx, proposal_id).await?;
        Ok((round, proposal))
    }

    /// Withdraws a proposal before its round is finalised.
    pub async fn withdraw_proposal(
        &self,
        proposal_id: &str,
        reason: String,
        caller: &Caller,
    ) -> Result<pb::WithdrawProposalResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::WITHDRAW_PROPOSAL).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let (_round, mut proposal) = self.lock_proposal_and_round(&mut tx, proposal_id).await?;
        if !caller.tenant.sees(&proposal.applicant_uscc) {
            return Err(ApplicationError::proposal_not_found(proposal_id));
        }
        if !proposal.state.can_withdraw() {
            return Err(proposal_transition(&proposal));
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = proposal.state;
        proposal.state = ProposalState::Withdrawn;
        proposal.withdrawal_reason = reason.clone();
        proposal.step_us = now;
        let change = Change::by(
            caller,
            Some(from.as_str()),
            ProposalState::Withdrawn.as_str(),
            format!("withdrawn by the applicant: {reason}"),
        );
        self.save_change(&mut tx, &mut proposal, Some(change), None, now)
            .await?;
        self.audit(&mut tx, caller, &[proposal_id], now).await?;
        let response = pb::WithdrawProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Records one expert's score of an ELIGIBLE proposal.
    pub async fn score_proposal(
        &self,
        cmd: ScoreProposal,
        caller: &Caller,
    ) -> Result<pb::ScoreProposalResponse, ApplicationError> {
        if caller.expert_id.as_deref() != Some(cmd.expert_id.as_str()) {
            return Err(ApplicationError::ExpertNotBound {
                expert_id: cmd.expert_id.clone(),
            });
        }
        let mut tx = match self.begin_request(caller, op::SCORE_PROPOSAL).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let (_round, mut proposal) = self
            .lock_proposal_and_round(&mut tx, &cmd.proposal_id)
            .await?;
        if proposal.state != ProposalState::Eligible {
            return Err(proposal_transition(&proposal));
        }
        if cmd.expert_organization.as_str() == proposal.applicant_uscc {
            return Err(ApplicationError::ConflictOfInterest {
                proposal_id: proposal.proposal_id,
                expert_organization_uscc: proposal.applicant_uscc,
            });
        }
        let scores = self.store.scores(&mut tx, &proposal.proposal_id).await?;
        let replacing = scores.iter().any(|s| s.expert_id == cmd.expert_id);
        if !replacing && scores.len() as i64 >= PROPOSAL_SCORES_MAX {
            return Err(ApplicationError::invalid(
                "expert_id",
                format!("the proposal has its maximum of {PROPOSAL_SCORES_MAX} scores"),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        let score = ScoreRow {
            expert_id: cmd.expert_id.clone(),
            expert_organization_uscc: cmd.expert_organization.as_str().to_owned(),
            score: i64::from(cmd.score),
            comment: cmd.comment.clone(),
            scored_us: now,
        };
        self.store
            .upsert_score(&mut tx, &proposal.proposal_id, &score)
            .await?;
        let verb = if replacing {
            "score replaced:"
        } else {
            "scored"
        };
        let reason = format!(
            "{verb} {} by expert {} of {}",
            cmd.score, cmd.expert_id, cmd.expert_organization
        );
        let eligible = ProposalState::Eligible.as_str();
        let change = Change::by(caller, Some(eligible), eligible, reason);
        self.save_change(&mut tx, &mut proposal, Some(change), None, now)
            .await?;
        self.audit(&mut tx, caller, &[&proposal.proposal_id], now)
            .await?;
        let response = pb::ScoreProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Records the payment of an awarded proposal.
    pub async fn disburse_proposal(
        &self,
        cmd: Disbursement,
        caller: &Caller,
    ) -> Result<pb::RecordProposalDisbursementResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::DISBURSE_PROPOSAL).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut proposal = self.locked_proposal(&mut tx, &cmd.id).await?;
        if proposal.state != ProposalState::Awarded {
            return Err(proposal_transition(&proposal));
        }
        let now = self.store.now_us(&mut tx).await?;
        self.payment_gate(&mut tx, &proposal.proposal_id, now)
            .await?;
        let (payment, reason) = Self::payment(&cmd, fen(proposal.awarded_fen), caller, now)?;
        self.audit(&mut tx, caller, &[&proposal.proposal_id], now)
            .await?;
        proposal.state = ProposalState::Disbursed;
        proposal.payment = Some(payment);
        proposal.step_us = now;
        let event = EventSpec::proposal(
            npb::EventType::ProposalDisbursed,
            &proposal,
            Some(cmd.amount),
        )
        .with("payment_reference", cmd.payment_reference.clone());
        let change = Change::by(
            caller,
            Some(ProposalState::Awarded.as_str()),
            ProposalState::Disbursed.as_str(),
            reason,
        );
        self.save_change(&mut tx, &mut proposal, Some(change), Some(event), now)
            .await?;
        let response = pb::RecordProposalDisbursementResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.finish_request(tx, caller, response).await
    }
}
