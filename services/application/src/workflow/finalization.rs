//! The finalisation of a selection round, resumable at every step: the round is marked
//! FINALIZING, what was left unscreened is screened, the rules service ranks the scored
//! proposals once (the ranking is stored and never recomputed), each award is reserved and
//! committed in rank order with request ids derived from the proposal (`award-reserve`,
//! `award-commit`), and the rest are NOT_SELECTED when the round becomes FINALIZED. A retry
//! or the reconciler continues where a crash stopped, and no award is made twice.

use subsidy_common::{Money, RequestId};
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;

use super::outbox::EventSpec;
use super::translate::{check_ranking, decode_ranking, rank_request, ranking_decision_id};
use super::{Caller, Change, Known, Workflow, fen, op};
use crate::domain::{DecisionPurpose, ProposalState, RoundState};
use crate::error::{ApplicationError, Subject};
use crate::storage::{NoticeKind, ProposalRow, RoundRow, ScoreRow, Tx};
use crate::upstream::{PeerError, money};
use crate::wire::award_to_proto;

/// What the proposals of a round came to when it was finalised.
struct Settled {
    awards: Vec<pb::Award>,
    not_selected: i64,
}

impl Workflow {
    /// Finalises a CLOSED round: ranking by the rules service, then reserve and commit of
    /// each award in rank order. Resumable: a retry or the reconciler continues where it
    /// stopped, and no award is made twice.
    pub async fn finalize_round(
        &self,
        round_id: &str,
        caller: &Caller,
    ) -> Result<pb::FinalizeSelectionRoundResponse, ApplicationError> {
        let round_id = match self
            .known_request::<pb::FinalizeSelectionRoundResponse>(caller, op::FINALIZE_ROUND)
            .await?
        {
            Known::Replay(response) => return Ok(response),
            Known::InProgress(round_id) => round_id,
            Known::New => self.start_finalization(round_id, caller).await?,
        };
        self.complete_finalization(&round_id).await?;
        match self
            .known_request::<pb::FinalizeSelectionRoundResponse>(caller, op::FINALIZE_ROUND)
            .await?
        {
            Known::Replay(response) => Ok(response),
            Known::InProgress(_) | Known::New => {
                Err(ApplicationError::RoundAlreadyFinalized { round_id })
            }
        }
    }

    /// Marks a CLOSED (or OPEN past its deadline) round FINALIZING and records `caller`'s
    /// request on it; a concurrent duplicate of the request that recorded it first is left
    /// to finish it.
    async fn start_finalization(
        &self,
        round_id: &str,
        caller: &Caller,
    ) -> Result<String, ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut round = self.locked_round(&mut tx, round_id).await?;
        // The request is recorded before the round's state is judged: a concurrent duplicate
        // waits here for the first to commit and then follows it, instead of finding the
        // round finalised by the first.
        if self
            .store
            .record_progress(
                &mut tx,
                &caller.key,
                op::FINALIZE_ROUND,
                &caller.fingerprint,
                &round.round_id,
            )
            .await?
            .is_none()
        {
            return Ok(round.round_id);
        }
        let now = self.store.now_us(&mut tx).await?;
        match round.state.effective(round.deadline_us, now) {
            RoundState::Open => {
                return Err(ApplicationError::transition(
                    Subject::Round(round.round_id),
                    RoundState::Open.as_str(),
                ));
            }
            RoundState::Finalized => {
                return Err(ApplicationError::RoundAlreadyFinalized {
                    round_id: round.round_id,
                });
            }
            RoundState::Closed | RoundState::Finalizing => {}
        }
        if round.state != RoundState::Finalizing {
            if round.state == RoundState::Open {
                round.closed_us = Some(round.deadline_us);
            }
            round.state = RoundState::Finalizing;
            round.finalize_started_us = Some(now);
            self.store.save_round(&mut tx, &round).await?;
        }
        self.audit(&mut tx, caller, &[&round.round_id], now).await?;
        tx.commit().await?;
        Ok(round.round_id)
    }

    /// Runs the remaining steps of a round's finalisation.
    pub async fn complete_finalization(&self, round_id: &str) -> Result<(), ApplicationError> {
        let round = {
            let mut conn = self.store.read().await?;
            self.store
                .get_round(&mut conn, round_id)
                .await?
                .ok_or_else(|| ApplicationError::round_not_found(round_id))?
        };
        if round.state != RoundState::Finalizing {
            return Ok(());
        }
        // 1. Screen what was left unscreened.
        for proposal in self.proposals_of(round_id).await? {
            if proposal.state == ProposalState::Submitted {
                self.screen_proposal(&proposal.proposal_id).await?;
            }
        }
        // 2. Rank once; the ranking is stored and never recomputed.
        let ranking = match &round.ranking {
            Some(bytes) => decode_ranking(bytes),
            None => self.rank_round(&round).await?,
        };
        // 3. Award in rank order.
        let mut planned = self.proposals_of(round_id).await?;
        planned.retain(|p| p.state == ProposalState::Eligible && p.planned_award_fen > 0);
        planned.sort_by_key(|p| p.rank);
        for proposal in planned {
            self.award(&round, &proposal).await?;
        }
        // 4. Everyone else is not selected; the round is final.
        self.close_finalization(round_id, &ranking).await
    }

    /// The proposals of a round in submission order, read.
    async fn proposals_of(&self, round_id: &str) -> Result<Vec<ProposalRow>, ApplicationError> {
        let mut conn = self.store.read().await?;
        Ok(self
            .store
            .round_proposals(&mut conn, round_id, false)
            .await?)
    }

    // ----------------------------------------------------------------------------------------
    // Ranking
    // ----------------------------------------------------------------------------------------

    /// The ELIGIBLE proposals of a round that experts scored, with their scores.
    async fn scored_candidates(
        &self,
        round_id: &str,
    ) -> Result<Vec<(ProposalRow, Vec<ScoreRow>)>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let mut scored = Vec::new();
        for proposal in self
            .store
            .round_proposals(&mut conn, round_id, false)
            .await?
        {
            if proposal.state != ProposalState::Eligible {
                continue;
            }
            let scores = self.store.scores(&mut conn, &proposal.proposal_id).await?;
            if !scores.is_empty() {
                scored.push((proposal, scores));
            }
        }
        Ok(scored)
    }

    /// Asks the rules service to rank a round's scored proposals against the pool, checks the
    /// answer, and stores it (a ranking stored first by a concurrent finaliser stands).
    async fn rank_round(
        &self,
        round: &RoundRow,
    ) -> Result<rpb::RankSelectionRoundResponse, ApplicationError> {
        let candidates = self.scored_candidates(&round.round_id).await?;
        let ranking = if candidates.is_empty() {
            rpb::RankSelectionRoundResponse::default()
        } else {
            let available = self.peers.available(&round.pool_id).await?;
            let ranking = self
                .peers
                .rank(rank_request(available, &candidates))
                .await?;
            check_ranking(&ranking, &candidates, available)?;
            ranking
        };
        self.record_ranking(&round.round_id, ranking).await
    }

    /// Stores a round's ranking and each ranked proposal's rank and planned award.
    async fn record_ranking(
        &self,
        round_id: &str,
        ranking: rpb::RankSelectionRoundResponse,
    ) -> Result<rpb::RankSelectionRoundResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut round = self.locked_round(&mut tx, round_id).await?;
        if let Some(bytes) = &round.ranking {
            // A concurrent finaliser ranked first; its ranking stands.
            return Ok(decode_ranking(bytes));
        }
        round.ranking = Some(prost::Message::encode_to_vec(&ranking));
        round.ranking_decision_id = ranking_decision_id(&ranking);
        self.store.save_round(&mut tx, &round).await?;
        let now = self.store.now_us(&mut tx).await?;
        for award in &ranking.awards {
            if let Some(mut proposal) = self
                .store
                .lock_proposal(&mut tx, &award.proposal_id)
                .await?
            {
                let link = (ranking.decision_id.as_str(), DecisionPurpose::Ranking);
                self.link_decision(&mut tx, &proposal.proposal_id, link, now)
                    .await?;
                proposal.rank = i64::from(award.rank);
                proposal.planned_award_fen = money("rules", &award.awarded)?.fen();
                proposal.step_us = now;
                self.save_change(&mut tx, &mut proposal, None, None, now)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(ranking)
    }

    // ----------------------------------------------------------------------------------------
    // Awards
    // ----------------------------------------------------------------------------------------

    /// Reserves and commits one planned award (replaying both calls after a crash) and
    /// records it; a pool that cannot hold it leaves the proposal NOT_SELECTED.
    async fn award(&self, round: &RoundRow, seen: &ProposalRow) -> Result<(), ApplicationError> {
        let amount = fen(seen.planned_award_fen);
        let reserved = self
            .peers
            .reserve(
                &RequestId::derived(&seen.proposal_id, "award-reserve"),
                &round.pool_id,
                &seen.applicant_uscc,
                amount,
                &seen.proposal_id,
                0,
            )
            .await;
        let reservation = match reserved {
            Ok(reservation) => reservation,
            Err(PeerError::Refused { reason, .. })
                if matches!(
                    reason.as_str(),
                    "POOL_EXHAUSTED" | "BENEFICIARY_CAP_EXCEEDED" | "RESERVATION_CAP_EXCEEDED"
                ) =>
            {
                let why = format!("the pool could not hold the award ({reason})");
                return self.not_selected_at_award(round, seen, &why).await;
            }
            Err(error) => return Err(error.into()),
        };
        subsidy_common::crash::point("application.round.awarded");
        let committed = self
            .peers
            .commit(
                &RequestId::derived(&seen.proposal_id, "award-commit"),
                &reservation.reservation_id,
                amount,
            )
            .await?;
        let committed = money("budget", &committed.committed_amount)?;
        self.record_award(round, seen, &reservation, committed)
            .await
    }

    /// Records a committed award on the proposal and in the round's totals.
    async fn record_award(
        &self,
        round: &RoundRow,
        seen: &ProposalRow,
        reservation: &bpb::Reservation,
        committed: Money,
    ) -> Result<(), ApplicationError> {
        let counted = self.period_ahead(NoticeKind::Proposal).await;
        let mut tx = self.store.begin().await?;
        let mut locked_round = self.locked_round(&mut tx, &round.round_id).await?;
        let mut proposal = self.locked_proposal(&mut tx, &seen.proposal_id).await?;
        if proposal.state != ProposalState::Eligible {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        proposal.state = ProposalState::Awarded;
        proposal.reservation_id = Some(reservation.reservation_id.clone());
        proposal.awarded_fen = committed.fen();
        proposal.step_us = now;
        locked_round.award_count += 1;
        locked_round.awarded_total_fen += committed.fen();
        self.store.save_round(&mut tx, &locked_round).await?;
        let partly = if committed.fen() < proposal.requested_fen {
            format!(" (partly: {} requested)", fen(proposal.requested_fen))
        } else {
            String::new()
        };
        let event =
            EventSpec::proposal(npb::EventType::ProposalAwarded, &proposal, Some(committed))
                .with("rank", proposal.rank.to_string())
                .with("reservation_id", reservation.reservation_id.clone());
        let change = Change::system(
            ProposalState::Eligible.as_str(),
            ProposalState::Awarded.as_str(),
            format!(
                "awarded {committed} at rank {}{partly} in round {}",
                seen.rank, round.round_id
            ),
        );
        self.save_change(&mut tx, &mut proposal, Some(change), Some(event), now)
            .await?;
        let uncounted = self
            .publish_proposal(&mut tx, &proposal, &round.pool_id, counted, now)
            .await?;
        self.commit(tx).await?;
        self.after_publish(uncounted).await;
        Ok(())
    }

    /// Marks a locked SUBMITTED or ELIGIBLE proposal NOT_SELECTED because of `why`, with
    /// `history_reason` in its history.
    async fn mark_not_selected(
        &self,
        tx: &mut Tx,
        proposal: &mut ProposalRow,
        why: &str,
        history_reason: String,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        let from = proposal.state;
        proposal.state = ProposalState::NotSelected;
        proposal.step_us = now_us;
        let event = EventSpec::proposal(npb::EventType::ProposalNotSelected, proposal, None)
            .with("reason", why.to_owned());
        let change = Change::system(
            from.as_str(),
            ProposalState::NotSelected.as_str(),
            history_reason,
        );
        self.save_change(tx, proposal, Some(change), Some(event), now_us)
            .await
    }

    /// Records that the pool could not hold a proposal's planned award.
    async fn not_selected_at_award(
        &self,
        round: &RoundRow,
        seen: &ProposalRow,
        why: &str,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let _round = self.locked_round(&mut tx, &round.round_id).await?;
        let mut proposal = self.locked_proposal(&mut tx, &seen.proposal_id).await?;
        if proposal.state != ProposalState::Eligible {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        proposal.planned_award_fen = 0;
        let reason = format!("not selected at rank {}: {why}", seen.rank);
        self.mark_not_selected(&mut tx, &mut proposal, why, reason, now)
            .await?;
        self.commit(tx).await
    }

    // ----------------------------------------------------------------------------------------
    // The end
    // ----------------------------------------------------------------------------------------

    /// Marks every proposal not awarded NOT_SELECTED, the round FINALIZED, and stores the
    /// response of every finalisation request recorded on the round.
    async fn close_finalization(
        &self,
        round_id: &str,
        ranking: &rpb::RankSelectionRoundResponse,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut round = self.locked_round(&mut tx, round_id).await?;
        if round.state != RoundState::Finalizing {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let settled = self
            .settle_proposals(&mut tx, round_id, ranking, now)
            .await?;
        assert_eq!(
            settled.awards.len() as i64,
            round.award_count,
            "the round counts exactly its awarded proposals"
        );
        round.state = RoundState::Finalized;
        round.finalized_us = Some(now);
        self.store.save_round(&mut tx, &round).await?;
        let event = EventSpec::round_finalized(round_id, fen(round.awarded_total_fen))
            .with("award_count", round.award_count.to_string())
            .with("ranking_decision_id", round.ranking_decision_id.clone());
        self.append_event(&mut tx, event, now).await?;
        let response = pb::FinalizeSelectionRoundResponse {
            round: Some(self.round_response(&mut tx, &round).await?),
            awards: settled.awards,
            not_selected_count: settled.not_selected,
        };
        for request_id in self
            .store
            .requests_in_progress(&mut tx, op::FINALIZE_ROUND, round_id)
            .await?
        {
            self.finish_progress(&mut tx, &request_id, op::FINALIZE_ROUND, &response)
                .await?;
        }
        self.commit(tx).await
    }

    /// Marks the proposals of a finalised round that were not awarded NOT_SELECTED (with
    /// their place in the ranking) and collects the awards in rank order.
    async fn settle_proposals(
        &self,
        tx: &mut Tx,
        round_id: &str,
        ranking: &rpb::RankSelectionRoundResponse,
        now_us: i64,
    ) -> Result<Settled, ApplicationError> {
        let mut settled = Settled {
            awards: Vec::new(),
            not_selected: 0,
        };
        for mut proposal in self.store.round_proposals(tx, round_id, true).await? {
            match proposal.state {
                ProposalState::Eligible | ProposalState::Submitted => {
                    let why = ranking
                        .awards
                        .iter()
                        .find(|award| award.proposal_id == proposal.proposal_id)
                        .map(|award| format!("ranked {}: {}", award.rank, award.reason))
                        .unwrap_or_else(|| "not ranked: no expert scored it".to_owned());
                    let reason = format!("not selected when round {round_id} was finalised: {why}");
                    self.mark_not_selected(tx, &mut proposal, &why, reason, now_us)
                        .await?;
                    settled.not_selected += 1;
                }
                ProposalState::NotSelected => settled.not_selected += 1,
                // An award revoked since (an objection upheld while the finalisation completed)
                // was still made by this round.
                ProposalState::Awarded | ProposalState::Disbursed | ProposalState::Revoked => {
                    let scores = self.store.scores(tx, &proposal.proposal_id).await?;
                    settled.awards.push(award_to_proto(&proposal, &scores));
                }
                ProposalState::Ineligible | ProposalState::Withdrawn => {}
            }
        }
        settled.awards.sort_by_key(|award| award.rank);
        Ok(settled)
    }
}
