//! A claim's steps with the rules and budget services: evaluate, decide the funding, reserve,
//! commit an approval, release a hold, sweep orphaned holds, expire. Each step follows the
//! protocol of the header of `workflow/mod.rs`: the intent is recorded first, the peer is
//! called with a request id derived from the claim and the step (`reserve-<attempt>`,
//! `commit`, `release`, `release-orphan-<reservation>`), and the outcome is recorded only if
//! the intent is still current.

use prost::Message;
use subsidy_common::{Money, RequestId};
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;

use super::outbox::EventSpec;
use super::translate::{
    decision_reason, decision_summary, failed_codes, hold_expires_us, voucher_facts,
};
use super::{Change, Workflow, fen, op};
use crate::domain::funding::next_step;
use crate::domain::{
    BenefitRating, ClaimShortfall, ClaimState, ClaimStep, DecisionPurpose, FundingPlan,
    SYSTEM_ACTOR, plan_funding,
};
use crate::error::ApplicationError;
use crate::storage::{ClaimRow, NoticeKind};
use crate::upstream::{PeerError, money};
use crate::wire::policy_version_of;

/// Most steps one drive of a claim takes (evaluate, fund, reserve, re-evaluate after a
/// concurrent cap change, …) before leaving the rest to the reconciler.
pub const CLAIM_STEPS_MAX: usize = 8;

/// Most claims of a pool's line funded together ([`Workflow::fund_line`]).
pub const FUNDING_BATCH_MAX: usize = 64;

/// The claims of a line (SUBMITTED, in acceptance order) that can be funded together: the
/// prefix whose claims are evaluated with no step under way, cut before a second claim of
/// the same enterprise.
fn ready_prefix(line: Vec<ClaimRow>) -> Vec<ClaimRow> {
    let mut enterprises = std::collections::HashSet::new();
    line.into_iter()
        .take_while(|claim| {
            !claim.evaluation_due
                && claim.reserve_intent_fen.is_none()
                && enterprises.insert(claim.enterprise_uscc.clone())
        })
        .collect()
}

/// The numbering rounds of one pool in this process ([`Workflow::number_line`]): one at a
/// time, and a claim recorded before a round began is numbered by it.
#[derive(Debug, Default)]
pub(super) struct Rounds {
    /// How many rounds have begun.
    begun: std::sync::atomic::AtomicU64,
    /// Held by the round under way; the number of the last round that committed.
    committed: tokio::sync::Mutex<u64>,
}

/// Whether a reservation is gone for good (its money back in the pool).
pub(super) fn hold_gone(reservation: &bpb::Reservation) -> bool {
    matches!(
        bpb::ReservationState::try_from(reservation.state),
        Ok(bpb::ReservationState::Expired | bpb::ReservationState::Released)
    )
}

/// A reservation the budget made for a claim's intent, to be recorded.
struct Made<'a> {
    /// The claim's place among the claims whose reserves were sent together.
    index: usize,
    /// The claim as seen when its reserve was sent.
    seen: &'a ClaimRow,
    /// The amount of its intent.
    amount: Money,
    /// What the budget made.
    reservation: bpb::Reservation,
}

/// Refuses a reservation that is not the one the claim's intent asked for.
fn check_reservation(
    seen: &ClaimRow,
    amount: Money,
    reservation: &bpb::Reservation,
) -> Result<(), ApplicationError> {
    let held = money("budget", &reservation.held_amount)?;
    if held != amount || reservation.reference != seen.claim_id {
        return Err(ApplicationError::UpstreamUnexpected {
            service: "budget",
            code: "Ok".into(),
            reason: "RESERVATION_DIFFERS_FROM_REQUEST".into(),
        });
    }
    Ok(())
}

/// Records an evaluation's decision (`summary`, with its `entitlement`) on a claim awaiting
/// funding at `now_us`: the claim keeps its state with the entitlement, or is INELIGIBLE (no
/// eligible decision, or a zero entitlement). The history change to record, and the event
/// (for an ineligible claim).
pub(super) fn apply_evaluation(
    claim: &mut ClaimRow,
    summary: &pb::DecisionSummary,
    entitlement: Money,
    now_us: i64,
) -> (Change<'static>, Option<EventSpec>) {
    let from = claim.state;
    claim.evaluation_due = false;
    claim.decision = Some(summary.encode_to_vec());
    claim.step_us = now_us;
    let (reason, event) = if summary.eligible && !entitlement.is_zero() {
        claim.entitlement_fen = entitlement.fen();
        let reason = format!(
            "{}: entitlement {entitlement}",
            decision_reason(summary, None)
        );
        (reason, None)
    } else {
        claim.entitlement_fen = 0;
        claim.state = ClaimState::Ineligible;
        let codes = if summary.eligible {
            "ENTITLEMENT_ZERO".to_owned()
        } else {
            failed_codes(summary)
        };
        let event = EventSpec::claim(npb::EventType::ClaimIneligible, claim, None)
            .with("failed_reasons", codes.clone());
        (decision_reason(summary, Some(&codes)), Some(event))
    };
    (
        Change::system(from.as_str(), claim.state.as_str(), reason),
        event,
    )
}

impl Workflow {
    /// Takes a claim through its pending steps. `reconciling` allows steps that are only
    /// safe once the calls that started them are surely over (the orphan sweep). A claim that
    /// leaves its pool's line (funded, waitlisted, found ineligible) gives the turn to the
    /// next claim of the line.
    pub async fn drive_claim(
        &self,
        claim_id: &str,
        reconciling: bool,
    ) -> Result<ClaimRow, ApplicationError> {
        self.drive(claim_id, reconciling, false).await
    }

    /// [`Workflow::drive_claim`]; with `leave_reserving`, a SUBMITTED claim found with its
    /// reserve intent recorded is left as it is: the drive that funds the line recorded it
    /// and is making that reserve, with the claims before it, and tells the claim's waiting
    /// submission when it is done (no second reserve call, no second record waiting for the
    /// first's locks).
    pub(super) async fn drive(
        &self,
        claim_id: &str,
        reconciling: bool,
        leave_reserving: bool,
    ) -> Result<ClaimRow, ApplicationError> {
        let (claim, was_in_line) = self
            .drive_steps(claim_id, reconciling, leave_reserving)
            .await?;
        if was_in_line && claim.state != ClaimState::Submitted {
            self.left_line(&claim);
        }
        Ok(claim)
    }

    /// The steps of [`Workflow::drive`]; also whether the claim stood in its pool's line
    /// (SUBMITTED) when they began.
    async fn drive_steps(
        &self,
        claim_id: &str,
        reconciling: bool,
        leave_reserving: bool,
    ) -> Result<(ClaimRow, bool), ApplicationError> {
        let mut was_in_line = None;
        // Whether a step that may have recorded a reserve intent was taken (numbering does not).
        let mut acted = false;
        for _ in 0..CLAIM_STEPS_MAX {
            let claim = self.read_claim(claim_id).await?;
            let in_line = *was_in_line.get_or_insert(claim.state == ClaimState::Submitted);
            let Some(step) = next_step(claim.state, claim.pending(), reconciling) else {
                return Ok((claim, in_line));
            };
            if leave_reserving
                && !acted
                && step == ClaimStep::ResolveReserve
                && claim.state == ClaimState::Submitted
            {
                return Ok((claim, in_line));
            }
            acted |= step != ClaimStep::Number;
            match step {
                ClaimStep::Number => self.number_line(&claim).await?,
                ClaimStep::ResolveReserve => self.resolve_reserve(&claim).await?,
                ClaimStep::Commit => match self.commit_claim(&claim).await {
                    Err(ApplicationError::ReservationExpired { .. }) => {}
                    other => other?,
                },
                ClaimStep::Release => self.release_claim(&claim).await?,
                ClaimStep::Evaluate => self.evaluate_claim(&claim).await?,
                ClaimStep::Fund => {
                    if !self.fund_claim(&claim).await? {
                        // Not its turn: an earlier claim of the pool is still being decided.
                        return Ok((claim, in_line));
                    }
                }
                ClaimStep::SweepOrphans => self.sweep_orphans(&claim).await?,
            }
        }
        let claim = self.read_claim(claim_id).await?;
        Ok((claim, was_in_line.unwrap_or(false)))
    }

    /// `claim` left its pool's line: its waiting submission (in this process) is told, and the
    /// next claim of the line is funded if it is ready, in a task of its own, which passes the
    /// turn on in the same way. (A next claim not evaluated yet is funded by its own
    /// submission or the reconciler; on other replicas waiting submissions look again
    /// every [`TURN_POLL_MS`](super::claims::TURN_POLL_MS).)
    pub(super) fn left_line(&self, claim: &ClaimRow) {
        if let Some(waiter) = self
            .waiters
            .lock()
            .expect("never poisoned")
            .get(&claim.claim_id)
        {
            waiter.notify_one();
        }
        let workflow = self.clone();
        let pool_id = claim.pool_id.clone();
        let pass: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let next = async {
                let mut conn = workflow.store.read().await?;
                workflow.store.next_in_line(&mut conn, &pool_id).await
            }
            .await;
            let Ok(Some(next)) = next else { return };
            if next_step(next.state, next.pending(), false) == Some(ClaimStep::Fund)
                && let Err(error) = workflow.drive_claim(&next.claim_id, false).await
            {
                tracing::warn!(claim_id = %next.claim_id, %error, "funding the next claim in line failed; left to the reconciler");
            }
        });
        tokio::spawn(pass);
    }

    // ----------------------------------------------------------------------------------------
    // Evaluation and the funding decision
    // ----------------------------------------------------------------------------------------

    /// The rules service's decision on `claim` for `total` with `rating`, given the
    /// enterprise's usage of the pool less `held_by_claim` (what the claim itself holds),
    /// under the policy version of the claim's latest decision (the one in effect at first).
    pub(super) async fn decide(
        &self,
        claim: &ClaimRow,
        total: Money,
        rating: BenefitRating,
        held_by_claim: Money,
    ) -> Result<rpb::Decision, ApplicationError> {
        let usage = self
            .peers
            .usage(&claim.pool_id, &claim.enterprise_uscc)
            .await?;
        let facts = voucher_facts(claim, total, rating, usage.saturating_sub(held_by_claim));
        Ok(self
            .peers
            .evaluate_compute_voucher(facts, &policy_version_of(&claim.decision))
            .await?)
    }

    /// The rules service's first-round decision on a claim awaiting funding (no rating, on the
    /// enterprise's usage now), summarised, with its entitlement.
    pub(super) async fn evaluation(
        &self,
        claim: &ClaimRow,
    ) -> Result<(pb::DecisionSummary, Money), ApplicationError> {
        let total = fen(claim.contract_total_fen);
        let decision = self
            .decide(claim, total, BenefitRating::Unspecified, Money::ZERO)
            .await?;
        let summary = decision_summary(&decision)?;
        let entitlement = money("rules", &summary.entitlement)?;
        Ok((summary, entitlement))
    }

    /// Asks the rules service for a decision on a claim awaiting funding and records it.
    pub(super) async fn evaluate_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let (summary, entitlement) = self.evaluation(seen).await?;
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if claim.state != seen.state || !claim.evaluation_due || claim.reserve_intent_fen.is_some()
        {
            // Another caller progressed the claim meanwhile; its record stands.
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let purpose = if claim.decision.is_some() {
            DecisionPurpose::Reevaluation
        } else {
            DecisionPurpose::Evaluation
        };
        self.link_decision(
            &mut tx,
            &claim.claim_id,
            (&summary.decision_id, purpose),
            now,
        )
        .await?;
        let (change, event) = apply_evaluation(&mut claim, &summary, entitlement, now);
        self.save_change(&mut tx, &mut claim, Some(change), event, now)
            .await?;
        self.commit(tx).await
    }

    /// Numbers `seen` (recorded without a number) and every other committed claim of its
    /// pool still without one, in one transaction ([`Store::number_claims`]). Submissions
    /// arriving together share a round: one round of the pool runs at a time in this process;
    /// a claim that arrives while a round is under way waits for it and then needs a round of
    /// its own only when no round began after it arrived (a round that began later read the
    /// line after the claim was committed, and numbered it). Other replicas' rounds wait for
    /// the counter's lock and number what is left.
    ///
    /// [`Store::number_claims`]: crate::storage::Store::number_claims
    pub(super) async fn number_line(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        use std::sync::atomic::Ordering;
        let rounds = self
            .numbering
            .lock()
            .expect("never poisoned")
            .entry(seen.pool_id.clone())
            .or_default()
            .clone();
        let arrived = rounds.begun.load(Ordering::SeqCst);
        let mut committed = rounds.committed.lock().await;
        if *committed > arrived {
            // A round that began after `seen` was read (so after it was committed) committed.
            return Ok(());
        }
        let round = rounds.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let mut tx = self.store.begin().await?;
        let numbered = self.store.number_claims(&mut tx, &seen.pool_id).await?;
        self.commit(tx).await?;
        *committed = round;
        tracing::debug!(pool_id = %seen.pool_id, numbered, "claims numbered");
        Ok(())
    }

    /// How the head of a pool's waitlist is to be funded now (SUBMITTED claims are planned
    /// together by [`Workflow::fund_line`]).
    async fn funding_plan(&self, seen: &ClaimRow) -> Result<FundingPlan, ApplicationError> {
        let entitlement = fen(seen.entitlement_fen);
        let available = self.peers.available(&seen.pool_id).await?;
        let shortfall = if available < entitlement {
            self.peers
                .claim_shortfall(&policy_version_of(&seen.decision))
                .await?
        } else {
            ClaimShortfall::Waitlist
        };
        Ok(plan_funding(entitlement, available, shortfall, false))
    }

    /// Decides how an eligible claim is funded (reserve now or wait) and starts the reserve.
    /// Claims are funded in the order the service accepted them: while an earlier claim of
    /// the pool is still being decided this one's turn has not come, and the answer is
    /// `Ok(false)` with nothing changed. A SUBMITTED claim at the head of the line is funded
    /// together with the ready claims behind it ([`Workflow::fund_line`]); a WAITLISTED one
    /// (the waitlist's head, promoted) on its own, here.
    pub(super) async fn fund_claim(&self, seen: &ClaimRow) -> Result<bool, ApplicationError> {
        if seen.state == ClaimState::Submitted {
            return self.fund_line(seen).await;
        }
        let line = {
            let mut conn = self.store.read().await?;
            self.store.line_ahead(&mut conn, seen).await?
        };
        if line.deciding {
            return Ok(false);
        }
        let plan = self.funding_plan(seen).await?;
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if claim.state != seen.state
            || claim.evaluation_due
            || claim.reserve_intent_fen.is_some()
            || claim.reserve_attempt != seen.reserve_attempt
        {
            return Ok(true);
        }
        // Read again under the claim's lock: the plan holds only for the line it was made for.
        if self.store.line_ahead(&mut tx, &claim).await? != line {
            return Ok(false);
        }
        let now = self.store.now_us(&mut tx).await?;
        match plan {
            // It still does not fit: it keeps its place.
            FundingPlan::Wait => Ok(true),
            FundingPlan::Reserve(amount) => {
                claim.reserve_intent_fen = Some(amount.fen());
                claim.step_us = now;
                claim.step_actor = SYSTEM_ACTOR.to_owned();
                self.save_change(&mut tx, &mut claim, None, None, now)
                    .await?;
                self.commit(tx).await?;
                // Claims are never deleted; the intent may have been resolved meanwhile.
                let claim = self.read_claim(&seen.claim_id).await?;
                if claim.reserve_intent_fen.is_some() {
                    self.resolve_reserve(&claim).await?;
                }
                Ok(true)
            }
        }
    }

    /// Funds the head of a pool's line, `seen`, together with the claims behind it that are
    /// ready (evaluated, no step under way), at most [`FUNDING_BATCH_MAX`] and one per
    /// enterprise (a second claim of the same enterprise was decided on a usage the first one
    /// changes): one balance read, each claim planned in acceptance order against what the
    /// claims before it take (once one waits, everyone behind it waits), one transaction
    /// recording every intent and waitlisting, then the reserves sent at once (the budget
    /// applies them in one batch). Every claim's intent is its own, so a crash anywhere leaves
    /// each to the reconciler exactly as for one claim, and the next batch starts only when
    /// every claim of this one has left the line.
    async fn fund_line(&self, seen: &ClaimRow) -> Result<bool, ApplicationError> {
        let (line, batch) = {
            let mut conn = self.store.read().await?;
            let line = self.store.line_ahead(&mut conn, seen).await?;
            if line.deciding {
                return Ok(false);
            }
            let batch = self
                .store
                .line_from(&mut conn, &seen.pool_id, seen.accept_seq, FUNDING_BATCH_MAX)
                .await?;
            (line, ready_prefix(batch))
        };
        if batch.first().map(|head| head.claim_id.as_str()) != Some(seen.claim_id.as_str())
            || batch[0].reserve_attempt != seen.reserve_attempt
        {
            // The claim progressed meanwhile (another caller recorded its step).
            return Ok(true);
        }
        let mut plans = Vec::with_capacity(batch.len());
        let mut waiting = line.waiting;
        let mut available = if waiting {
            Money::ZERO
        } else {
            self.peers.available(&seen.pool_id).await?
        };
        for claim in &batch {
            let entitlement = fen(claim.entitlement_fen);
            let shortfall = if !waiting && available < entitlement {
                self.peers
                    .claim_shortfall(&policy_version_of(&claim.decision))
                    .await?
            } else {
                ClaimShortfall::Waitlist
            };
            let plan = plan_funding(entitlement, available, shortfall, waiting);
            match plan {
                FundingPlan::Reserve(amount) => available = available.saturating_sub(amount),
                FundingPlan::Wait => waiting = true,
            }
            plans.push(plan);
        }

        let mut tx = self.store.begin().await?;
        let ids: Vec<&str> = batch.iter().map(|claim| claim.claim_id.as_str()).collect();
        let mut locked = self.store.lock_claims(&mut tx, &ids).await?.into_iter();
        let now = self.store.now_us(&mut tx).await?;
        let mut reserving = Vec::new();
        let mut decided = Vec::new();
        for (index, (planned, plan)) in batch.iter().zip(plans).enumerate() {
            // Locked in acceptance order, the batch's order; claims are never deleted.
            let mut claim = match locked.next() {
                Some(claim) if claim.claim_id == planned.claim_id => claim,
                _ => break,
            };
            if claim.state != ClaimState::Submitted
                || claim.evaluation_due
                || claim.reserve_intent_fen.is_some()
                || claim.reserve_attempt != planned.reserve_attempt
            {
                if index == 0 {
                    return Ok(true);
                }
                // Changed meanwhile: it and everyone behind it wait for the next turn.
                break;
            }
            // Read again under the head's lock: the plan holds only for the line it was made for.
            if index == 0 && self.store.line_ahead(&mut tx, &claim).await? != line {
                return Ok(false);
            }
            match plan {
                FundingPlan::Wait => {
                    let entitlement = fen(claim.entitlement_fen);
                    claim.state = ClaimState::Waitlisted;
                    claim.step_us = now;
                    let event = EventSpec::claim(
                        npb::EventType::ClaimWaitlisted,
                        &claim,
                        Some(entitlement),
                    );
                    let reason = if index > 0 || line.waiting {
                        "older claims wait for money; waiting in acceptance order".to_owned()
                    } else {
                        format!(
                            "the pool cannot cover the entitlement {entitlement} now; waiting in acceptance order"
                        )
                    };
                    let change = Change::system(
                        ClaimState::Submitted.as_str(),
                        ClaimState::Waitlisted.as_str(),
                        reason,
                    );
                    self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
                        .await?;
                }
                FundingPlan::Reserve(amount) => {
                    claim.reserve_intent_fen = Some(amount.fen());
                    claim.step_us = now;
                    claim.step_actor = SYSTEM_ACTOR.to_owned();
                    reserving.push(claim.clone());
                }
            }
            decided.push(claim.claim_id);
        }
        let intents: Vec<(&str, i64)> = reserving
            .iter()
            .map(|claim| {
                let fen = claim.reserve_intent_fen.expect("set above");
                (claim.claim_id.as_str(), fen)
            })
            .collect();
        self.store
            .record_reserve_intents(&mut tx, &intents, SYSTEM_ACTOR, now)
            .await?;
        self.commit(tx).await?;

        let outcomes = self.resolve_reserves(&reserving).await;
        let mut head_outcome = Ok(());
        for (claim, outcome) in reserving.iter().zip(outcomes) {
            match outcome {
                Err(error) if claim.claim_id == seen.claim_id => head_outcome = Err(error),
                Err(error) => {
                    tracing::warn!(claim_id = %claim.claim_id, %error, "reserving for a claim of the line failed; left to the reconciler");
                }
                Ok(()) => {}
            }
        }
        // The head's own drive passes the turn on; the others' waiting submissions are told.
        let waiters = self.waiters.lock().expect("never poisoned");
        for claim_id in decided.iter().skip(1) {
            if let Some(waiter) = waiters.get(claim_id) {
                waiter.notify_one();
            }
        }
        drop(waiters);
        head_outcome.map(|()| true)
    }

    // ----------------------------------------------------------------------------------------
    // Reserve
    // ----------------------------------------------------------------------------------------

    /// Makes (or replays) the reserve call of a recorded intent and records its outcome.
    pub(super) async fn resolve_reserve(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        self.resolve_reserves(std::slice::from_ref(seen))
            .await
            .pop()
            .expect("one outcome per claim")
    }

    /// Makes (or replays) the reserve calls of recorded intents at once, and records their
    /// outcomes: the reservations made in one transaction ([`Workflow::record_reservations`]),
    /// each refusal on its own. The outcome for each claim of `seen`, in its order.
    pub(super) async fn resolve_reserves(
        &self,
        seen: &[ClaimRow],
    ) -> Vec<Result<(), ApplicationError>> {
        let calls =
            futures::future::join_all(seen.iter().map(|claim| self.reserve_call(claim))).await;
        let mut outcomes = Vec::with_capacity(seen.len());
        let mut made = Vec::new();
        for (claim, call) in seen.iter().zip(calls) {
            let amount = fen(claim.reserve_intent_fen.expect("called with an intent"));
            outcomes.push(match call {
                Ok(reservation) => match check_reservation(claim, amount, &reservation) {
                    Ok(()) => {
                        made.push(Made {
                            index: outcomes.len(),
                            seen: claim,
                            amount,
                            reservation,
                        });
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
                Err(PeerError::Refused { reason, .. })
                    if reason == "POOL_EXHAUSTED" || reason == "BENEFICIARY_CAP_EXCEEDED" =>
                {
                    self.record_reserve_refused(claim, amount, &reason).await
                }
                Err(error) => Err(error.into()),
            });
        }
        match self.record_reservations(&made).await {
            Ok(recorded) => {
                for (made, outcome) in made.iter().zip(recorded) {
                    outcomes[made.index] = outcome;
                }
            }
            // The batch's transaction failed: each is recorded on its own, with its own
            // outcome (a claim whose record fails is left to the reconciler, its intent kept).
            Err(error) if made.len() > 1 => {
                tracing::warn!(%error, claims = made.len(), "recording a batch of reservations failed; recording them one by one");
                for made in &made {
                    outcomes[made.index] = match self
                        .record_reservations(std::slice::from_ref(made))
                        .await
                    {
                        Ok(mut recorded) => recorded.pop().expect("one outcome per reservation"),
                        Err(error) => Err(error),
                    };
                }
            }
            Err(error) => {
                if let Some(made) = made.first() {
                    outcomes[made.index] = Err(error);
                }
            }
        }
        outcomes
    }

    /// The reserve call of a claim's recorded intent (replayed by its derived request id).
    async fn reserve_call(&self, seen: &ClaimRow) -> Result<bpb::Reservation, PeerError> {
        let amount = fen(seen.reserve_intent_fen.expect("called with an intent"));
        let request_id =
            RequestId::derived(&seen.claim_id, &format!("reserve-{}", seen.reserve_attempt));
        // Funding is the application's own decision (its history names the system), whoever's
        // request happens to drive the line: the budget's ledger names the service alone.
        let reservation = subsidy_common::auth::acting_for(
            None,
            self.peers.reserve(
                &request_id,
                &seen.pool_id,
                &seen.enterprise_uscc,
                amount,
                &seen.claim_id,
                self.settings.hold_seconds,
            ),
        )
        .await?;
        #[cfg(feature = "test-faults")]
        crate::faults::reached(crate::faults::Point::AfterReserve, &seen.contract_number).await;
        subsidy_common::crash::point("application.claim.reserved");
        Ok(reservation)
    }

    /// Records a reserve the budget refused: the claim is decided again when the enterprise
    /// cap no longer covers it (a concurrent claim used it), and waits otherwise.
    async fn record_reserve_refused(
        &self,
        seen: &ClaimRow,
        amount: Money,
        refusal: &str,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if claim.reserve_intent_fen != seen.reserve_intent_fen
            || claim.reserve_attempt != seen.reserve_attempt
        {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.reserve_intent_fen = None;
        claim.reserve_attempt += 1;
        claim.step_us = now;
        let from = claim.state;
        let (change, event) = if refusal == "BENEFICIARY_CAP_EXCEEDED" {
            // The enterprise's usage changed since the decision (a concurrent claim): the
            // entitlement is decided again on the current usage.
            claim.evaluation_due = true;
            let reason = "the enterprise cap no longer covers the entitlement; deciding again";
            (
                Some(Change::system(from.as_str(), from.as_str(), reason)),
                None,
            )
        } else if from == ClaimState::Submitted {
            claim.state = ClaimState::Waitlisted;
            let event = EventSpec::claim(
                npb::EventType::ClaimWaitlisted,
                &claim,
                Some(fen(claim.entitlement_fen)),
            );
            let reason = format!("the pool cannot cover {amount} now; waiting in acceptance order");
            (
                Some(Change::system(
                    from.as_str(),
                    ClaimState::Waitlisted.as_str(),
                    reason,
                )),
                Some(event),
            )
        } else {
            (None, None)
        };
        self.save_change(&mut tx, &mut claim, change, event, now)
            .await?;
        self.commit(tx).await
    }

    /// Records reservations made for claims' intents in one transaction (the claims locked in
    /// acceptance order), or releases each whose claim moved on meanwhile (after the commit).
    /// Each claim's outcome, in the order of `made`; an error of the transaction itself is
    /// the `Err`, with nothing recorded.
    async fn record_reservations(
        &self,
        made: &[Made<'_>],
    ) -> Result<Vec<Result<(), ApplicationError>>, ApplicationError> {
        if made.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.store.begin().await?;
        let ids: Vec<&str> = made
            .iter()
            .map(|made| made.seen.claim_id.as_str())
            .collect();
        let mut locked: std::collections::HashMap<String, ClaimRow> = self
            .store
            .lock_claims(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|claim| (claim.claim_id.clone(), claim))
            .collect();
        let now = self.store.now_us(&mut tx).await?;
        let mut orphans = Vec::new();
        let mut changes = Vec::with_capacity(made.len());
        for made in made {
            let Made {
                seen,
                amount,
                reservation,
                ..
            } = made;
            let mut claim = locked
                .remove(&seen.claim_id)
                .ok_or_else(|| ApplicationError::claim_not_found(&seen.claim_id))?;
            let current = claim.reserve_intent_fen == Some(amount.fen())
                && claim.reserve_attempt == seen.reserve_attempt
                && claim.state.awaits_funding();
            if !current {
                if claim.reservation_id.as_deref() != Some(reservation.reservation_id.as_str()) {
                    // The claim moved on (withdrawn or rejected) while the call was under
                    // way: the hold must not outlive it.
                    orphans.push(made);
                }
                // Otherwise recorded by a concurrent caller of the same step.
                continue;
            }
            let from = claim.state;
            claim.state = ClaimState::PendingReview;
            claim.reservation_id = Some(reservation.reservation_id.clone());
            claim.reserved_fen = amount.fen();
            claim.hold_expires_us = hold_expires_us(reservation);
            claim.hold_set_us = Some(now);
            claim.review_due_us = Some(now.saturating_add(self.settings.review_period_us));
            claim.reserve_intent_fen = None;
            claim.step_us = now;
            let mut reason = if from == ClaimState::Waitlisted {
                format!("promoted from the waitlist: {amount} held")
            } else {
                format!("{amount} held for review")
            };
            if amount.fen() < claim.entitlement_fen {
                reason.push_str(&format!(
                    " (partly funded: the pool could not cover the entitlement {})",
                    fen(claim.entitlement_fen)
                ));
            }
            let event = EventSpec::claim(npb::EventType::ClaimReserved, &claim, Some(*amount))
                .with("reservation_id", reservation.reservation_id.clone());
            let change = Change::system(from.as_str(), ClaimState::PendingReview.as_str(), reason);
            changes.push((claim, Some(change), Some(event)));
        }
        self.save_claim_changes(&mut tx, changes, now).await?;
        self.commit(tx).await?;
        let mut outcomes: Vec<Result<(), ApplicationError>> = made.iter().map(|_| Ok(())).collect();
        for orphan in orphans {
            let index = made
                .iter()
                .position(|made| std::ptr::eq(made, orphan))
                .expect("an orphan is one of the batch");
            outcomes[index] = self
                .release_orphan(&orphan.seen.claim_id, &orphan.reservation.reservation_id)
                .await;
        }
        Ok(outcomes)
    }

    // ----------------------------------------------------------------------------------------
    // Release
    // ----------------------------------------------------------------------------------------

    /// Releases a hold made under a claim's reference that the claim does not own; when the
    /// budget cannot be reached, the claim is marked for the reconciler's orphan sweep.
    async fn release_orphan(
        &self,
        claim_id: &str,
        reservation_id: &str,
    ) -> Result<(), ApplicationError> {
        let request_id = RequestId::derived(claim_id, &format!("release-orphan-{reservation_id}"));
        let released = subsidy_common::auth::acting_for(
            None,
            self.peers.release(
                &request_id,
                reservation_id,
                "the claim moved on before the reservation was recorded",
            ),
        )
        .await;
        let error = match released {
            Ok(_) => return Ok(()),
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {
                return Ok(());
            }
            Err(error) => error,
        };
        // Leave it to the reconciler's sweep.
        let mut tx = self.store.begin().await?;
        if let Some(mut claim) = self.store.lock_claim(&mut tx, claim_id).await? {
            let now = self.store.now_us(&mut tx).await?;
            claim.orphan_check_due = true;
            claim.step_us = now;
            self.save_change(&mut tx, &mut claim, None, None, now)
                .await?;
            tx.commit().await?;
        }
        Err(error.into())
    }

    /// Releases the recorded hold of a claim that was rejected or withdrawn.
    pub(super) async fn release_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let reservation_id = seen
            .reservation_id
            .clone()
            .expect("a release is due only for a recorded reservation");
        let request_id = RequestId::derived(&seen.claim_id, "release");
        let reason = format!("claim {} is {}", seen.claim_id, seen.state);
        // The ledger names whoever rejected or withdrew the claim, also when the reconciler
        // finishes the release.
        let released = subsidy_common::auth::acting_for(
            step_person(seen),
            self.peers.release(&request_id, &reservation_id, &reason),
        )
        .await;
        match released {
            Ok(_) => {}
            // Already expired: the money is back in the pool either way.
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {}
            Err(error) => return Err(error.into()),
        }
        let mut tx = self.store.begin().await?;
        if let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await?
            && claim.release_due
        {
            let now = self.store.now_us(&mut tx).await?;
            claim.release_due = false;
            claim.step_us = now;
            self.save_change(&mut tx, &mut claim, None, None, now)
                .await?;
        }
        tx.commit().await?;
        self.promote(&seen.pool_id).await
    }

    /// Releases holds made under a claim's reference that the claim does not own (a reserve
    /// whose outcome was never recorded before the claim moved on).
    async fn sweep_orphans(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let held = self
            .peers
            .held_by_reference(&seen.pool_id, &seen.claim_id)
            .await?;
        let owns_hold = seen.state.in_review();
        let mut released = false;
        for reservation in held {
            if owns_hold && seen.reservation_id.as_deref() == Some(&reservation.reservation_id) {
                continue;
            }
            self.release_orphan(&seen.claim_id, &reservation.reservation_id)
                .await?;
            released = true;
        }
        let mut tx = self.store.begin().await?;
        if let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? {
            let now = self.store.now_us(&mut tx).await?;
            claim.orphan_check_due = false;
            claim.step_us = now;
            self.save_change(&mut tx, &mut claim, None, None, now)
                .await?;
        }
        tx.commit().await?;
        if released {
            self.promote(&seen.pool_id).await?;
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Commit and expiry
    // ----------------------------------------------------------------------------------------

    /// Commits the approval intent of a claim and records it (or the expiry of its hold).
    pub(super) async fn commit_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let amount = fen(seen.commit_intent_fen.expect("called with an intent"));
        let reservation_id = seen
            .reservation_id
            .clone()
            .expect("a claim under review has a reservation");
        let request_id = RequestId::derived(&seen.claim_id, "commit");
        // The budget's ledger names the reviewer who approved, also when the reconciler
        // finishes the commit (`step_actor` is `<role>:<subject>`, the on-behalf-of form).
        let committed = subsidy_common::auth::acting_for(
            step_person(seen),
            self.peers.commit(&request_id, &reservation_id, amount),
        )
        .await;
        match committed {
            Ok(reservation) => {
                #[cfg(feature = "test-faults")]
                crate::faults::reached(crate::faults::Point::AfterCommit, &seen.contract_number)
                    .await;
                subsidy_common::crash::point("application.claim.committed");
                let committed = money("budget", &reservation.committed_amount)?;
                self.record_commit(seen, amount, committed).await
            }
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {
                let reservation = self.peers.reservation(&reservation_id).await?;
                if !hold_gone(&reservation) {
                    return Err(ApplicationError::UpstreamUnexpected {
                        service: "budget",
                        code: "FailedPrecondition".into(),
                        reason: "RESERVATION_NOT_HELD".into(),
                    });
                }
                self.expire_claim(seen).await?;
                Err(ApplicationError::ReservationExpired {
                    claim_id: seen.claim_id.clone(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Records a committed approval, stores the approval request's response, and serves the
    /// waitlist with what the commit returned to the pool.
    async fn record_commit(
        &self,
        seen: &ClaimRow,
        amount: Money,
        committed: Money,
    ) -> Result<(), ApplicationError> {
        // The publicity period is counted before the transaction, so that the approval's
        // answer shows it.
        let counted = self.period_ahead(NoticeKind::Claim).await;
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if claim.commit_intent_fen != Some(amount.fen()) || claim.state != ClaimState::PendingReview
        {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.state = ClaimState::Approved;
        claim.approved_fen = committed.fen();
        claim.commit_intent_fen = None;
        claim.reviewed_us = Some(now);
        claim.step_us = now;
        let returned = fen(claim.reserved_fen).saturating_sub(committed);
        let request = claim.commit_request_id.clone().unwrap_or_default();
        let actor = claim.step_actor.clone();
        // The history names the request id the reviewer sent (the log keeps it scoped).
        let request_id = subsidy_common::idempotency::request_id_of(&request).to_owned();
        let event = EventSpec::claim(npb::EventType::ClaimApproved, &claim, Some(committed))
            .with("reviewer_id", claim.reviewer_id.clone());
        let change = Change {
            from: Some(ClaimState::PendingReview.as_str()),
            to: ClaimState::Approved.as_str(),
            actor: &actor,
            reason: format!(
                "approved by {} on verified {}: {} committed, {} returned to the pool",
                claim.reviewer_id,
                fen(claim.verified_paid_fen.unwrap_or_default()),
                committed,
                returned
            ),
            request_id: &request_id,
        };
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        let uncounted = self.publish_claim(&mut tx, &claim, counted, now).await?;
        let response = pb::ApproveClaimResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_progress(&mut tx, &request, op::APPROVE_CLAIM, &response)
            .await?;
        self.commit(tx).await?;
        self.after_publish(uncounted).await;
        if !returned.is_zero() {
            self.promote(&claim.pool_id).await?;
        }
        Ok(())
    }

    /// Records that a claim's hold expired (found by the reconciler or by a refused commit).
    pub(super) async fn expire_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if !claim.state.in_review() || claim.reservation_id != seen.reservation_id {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = claim.state;
        claim.state = ClaimState::Expired;
        claim.commit_intent_fen = None;
        claim.step_us = now;
        let event = EventSpec::claim(
            npb::EventType::ClaimExpired,
            &claim,
            Some(fen(claim.reserved_fen)),
        );
        let change = Change::system(
            from.as_str(),
            ClaimState::Expired.as_str(),
            "the hold expired before review; its money returned to the pool (a reviewer may reopen the claim)",
        );
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        self.commit(tx).await?;
        self.promote(&seen.pool_id).await
    }
}

/// The person whose step a claim's pending call finishes (`step_actor`, the `<role>:<subject>`
/// on-behalf-of form), or `None` when the step was the system's own.
fn step_person(claim: &ClaimRow) -> Option<String> {
    Some(claim.step_actor.clone()).filter(|actor| !actor.is_empty() && actor != SYSTEM_ACTOR)
}
