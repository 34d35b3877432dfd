//! What callers ask of a compute-voucher claim: submit it, approve, reject or withdraw it,
//! record its payment, read it. The money steps these start (evaluate, reserve, commit,
//! release) are in `funding.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message;
use subsidy_common::auth::Tenant;
use subsidy_common::{Money, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;
use tokio::sync::Notify;

use super::funding::apply_evaluation;
use super::invoices::InvoicedContract;
use super::outbox::EventSpec;
use super::{
    Begun, Caller, Change, Disbursement, Followed, Known, Submission, Workflow, claim_transition,
    fen, op,
};
use crate::domain::funding::next_step;
use crate::domain::invoices::NewInvoice;
use crate::domain::{
    BenefitRating, CLAIM_ID_PREFIX, ClaimFilter, ClaimState, DecisionPurpose, RejectionReason,
    approved_amount,
};
use crate::error::ApplicationError;
use crate::storage::{ClaimRow, DecisionLinkRow, InvoiceRow, Tx};
use crate::upstream::money;

/// How often a submission waiting for its turn looks again whether its turn came (when
/// nobody in this process told it: the claim before it was finished on another replica, or
/// its funding failed), in milliseconds.
pub const TURN_POLL_MS: u64 = 250;

/// How long a waiting submission leaves its claim's reserve, recorded by the drive funding
/// its pool's line, to that drive before making (replaying) the reserve itself, in
/// milliseconds: the drive tells it when the reserve is recorded, unless that drive was
/// cancelled (its caller gone) or runs on another replica.
pub const RESERVE_PATIENCE_MS: u64 = 2_000;

/// A submission's registration in the waiters of its claim, removed when dropped (also when
/// the caller goes away mid-wait), unless another submission of the claim replaced it.
struct Waiter<'a> {
    waiters: &'a Mutex<HashMap<String, Arc<Notify>>>,
    claim_id: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    fn register(waiters: &'a Mutex<HashMap<String, Arc<Notify>>>, claim_id: &'a str) -> Self {
        let notify = Arc::new(Notify::new());
        waiters
            .lock()
            .expect("never poisoned")
            .insert(claim_id.to_owned(), notify.clone());
        Waiter {
            waiters,
            claim_id,
            notify,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("never poisoned");
        if waiters
            .get(self.claim_id)
            .is_some_and(|registered| Arc::ptr_eq(registered, &self.notify))
        {
            waiters.remove(self.claim_id);
        }
    }
}

/// A validated claim submission.
#[derive(Clone, Debug)]
pub struct SubmitClaim {
    /// The buyer.
    pub enterprise: Uscc,
    /// The seller.
    pub seller: Uscc,
    /// The contract total.
    pub total: Money,
    /// The contract as it will be stored (USCC upper-cased).
    pub contract: pb::ComputeContract,
    /// The invoices issued under the contract.
    pub invoices: Vec<NewInvoice>,
}

/// A validated approval.
#[derive(Clone, Debug)]
pub struct ApproveClaim {
    /// Claim.
    pub claim_id: String,
    /// The verified amount the reviewer sent, if any: it must equal the total of the claim's
    /// VERIFIED invoices, which is what the approval settles on.
    pub verified: Option<Money>,
    /// Rating.
    pub rating: BenefitRating,
    /// Reviewer.
    pub reviewer_id: String,
    /// Note.
    pub note: String,
}

/// A validated rejection.
#[derive(Clone, Debug)]
pub struct RejectClaim {
    /// Claim.
    pub claim_id: String,
    /// Reason.
    pub reason: RejectionReason,
    /// Note.
    pub note: String,
    /// Reviewer.
    pub reviewer_id: String,
}

/// A claim as read, with its place on the waitlist (0 unless WAITLISTED).
#[derive(Clone, Debug)]
pub struct ClaimView {
    /// The claim.
    pub claim: ClaimRow,
    /// Its 1-based waitlist position, or 0.
    pub waitlist_position: i64,
    /// The rules service's decisions that shaped it, oldest first.
    pub decisions: Vec<DecisionLinkRow>,
    /// Its invoices, in the order they were given.
    pub invoices: Vec<InvoiceRow>,
}

/// A new claim as recorded on submission: SUBMITTED, to be evaluated.
fn submitted_claim(
    claim_id: String,
    cmd: &SubmitClaim,
    pool_id: &str,
    actor: &str,
    now_us: i64,
    accept_seq: i64,
) -> ClaimRow {
    ClaimRow {
        claim_id,
        state: ClaimState::Submitted,
        enterprise_uscc: cmd.enterprise.as_str().to_owned(),
        pool_id: pool_id.to_owned(),
        seller_uscc: cmd.seller.as_str().to_owned(),
        contract_number: cmd.contract.contract_number.clone(),
        contract_total_fen: cmd.total.fen(),
        contract: cmd.contract.encode_to_vec(),
        decision: None,
        evaluation_due: true,
        entitlement_fen: 0,
        reserve_attempt: 0,
        reserve_intent_fen: None,
        reservation_id: None,
        reserved_fen: 0,
        hold_expires_us: None,
        release_due: false,
        orphan_check_due: false,
        commit_intent_fen: None,
        commit_request_id: None,
        verified_paid_fen: None,
        benefit_rating: BenefitRating::Unspecified,
        approved_fen: 0,
        reviewer_id: String::new(),
        review_note: String::new(),
        rejection_reason: String::new(),
        withdrawal_reason: String::new(),
        payment: None,
        step_us: now_us,
        step_actor: actor.to_owned(),
        submit_us: now_us,
        updated_us: now_us,
        reviewed_us: None,
        revision: 1,
        accept_seq,
        review_due_us: None,
        hold_set_us: None,
        extend_attempt: 0,
        information_request: String::new(),
    }
}

fn duplicate_contract(cmd: &SubmitClaim) -> ApplicationError {
    ApplicationError::DuplicateContract {
        seller_uscc: cmd.seller.as_str().to_owned(),
        contract_number: cmd.contract.contract_number.clone(),
    }
}

impl Workflow {
    /// One claim, read; `NOT_FOUND` when there is none.
    pub(super) async fn read_claim(&self, claim_id: &str) -> Result<ClaimRow, ApplicationError> {
        let mut conn = self.store.read().await?;
        self.store
            .get_claim(&mut conn, claim_id)
            .await?
            .ok_or_else(|| ApplicationError::claim_not_found(claim_id))
    }

    /// One claim, locked for change in `tx`; `NOT_FOUND` when there is none.
    pub(super) async fn locked_claim(
        &self,
        tx: &mut Tx,
        claim_id: &str,
    ) -> Result<ClaimRow, ApplicationError> {
        self.store
            .lock_claim(tx, claim_id)
            .await?
            .ok_or_else(|| ApplicationError::claim_not_found(claim_id))
    }

    /// One claim with its waitlist position; another tenant's claim is not found.
    pub async fn claim(
        &self,
        claim_id: &str,
        tenant: &Tenant,
    ) -> Result<ClaimView, ApplicationError> {
        let mut conn = self.store.read().await?;
        let claim = self
            .store
            .get_claim(&mut conn, claim_id)
            .await?
            .filter(|claim| tenant.sees(&claim.enterprise_uscc))
            .ok_or_else(|| ApplicationError::claim_not_found(claim_id))?;
        let waitlist_position = self.store.waitlist_position(&mut conn, &claim).await?;
        let decisions = self
            .store
            .decision_links(&mut conn, &claim.claim_id)
            .await?;
        let invoices = self.invoices_of(&mut conn, &claim.claim_id).await?;
        Ok(ClaimView {
            claim,
            waitlist_position,
            decisions,
            invoices,
        })
    }

    /// At most `limit` claims matching `filter` after the keyset position `after`, newest
    /// submission first, with their waitlist positions.
    pub async fn claims(
        &self,
        filter: &ClaimFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ClaimView>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let mut filter = filter.clone();
        if filter.review_overdue {
            filter.overdue_at_us = self.store.now_us(&mut conn).await?;
        }
        let rows = self
            .store
            .list_claims(&mut conn, &filter, after, limit)
            .await?;
        let mut claims = Vec::with_capacity(rows.len());
        for claim in rows {
            let waitlist_position = self.store.waitlist_position(&mut conn, &claim).await?;
            let decisions = self
                .store
                .decision_links(&mut conn, &claim.claim_id)
                .await?;
            let invoices = self.invoices_of(&mut conn, &claim.claim_id).await?;
            claims.push(ClaimView {
                claim,
                waitlist_position,
                decisions,
                invoices,
            });
        }
        Ok(claims)
    }

    // ----------------------------------------------------------------------------------------
    // Submission
    // ----------------------------------------------------------------------------------------

    /// Submits a claim: records it, then evaluates and funds it as far as the peers allow.
    pub async fn submit_claim(
        &self,
        cmd: SubmitClaim,
        caller: &Caller,
    ) -> Result<pb::SubmitClaimResponse, ApplicationError> {
        if !caller.tenant.sees(cmd.enterprise.as_str()) {
            return Err(ApplicationError::EnterpriseNotBound {
                uscc: cmd.enterprise.as_str().to_owned(),
            });
        }
        let failed = Mutex::new(None);
        let claim_id = match self
            .submission(caller, op::SUBMIT_CLAIM, || {
                self.create_claim(&cmd, caller, &failed)
            })
            .await?
        {
            Submission::Replay(response) => return Ok(response),
            Submission::Recorded(claim_id) => claim_id,
        };
        subsidy_common::crash::point("application.claim.recorded");
        if let Some(error) = failed.into_inner().expect("never poisoned") {
            // Recorded, to be evaluated: the caller hears why now (as a drive would have told
            // it), without the same calls being made again at once.
            return Err(error);
        }
        // Registered before the claim is first looked at: whoever moves the line after that
        // look tells this submission (a permit kept until it waits).
        let waiter = Waiter::register(&self.waiters, &claim_id);
        // A claim the line's drive has taken already (its reserve under way) is left to it.
        let claim = self.drive(&claim_id, false, true).await?;
        self.await_turn(claim, &waiter.notify).await?;
        drop(waiter);
        let mut tx = self.store.begin().await?;
        let claim = self.locked_claim(&mut tx, &claim_id).await?;
        let response = pb::SubmitClaimResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_recorded(tx, caller, op::SUBMIT_CLAIM, response)
            .await
    }

    /// Waits while `claim` waits for its turn in its pool's line (an earlier claim still being
    /// decided) for at most [`WorkflowSettings::turn_wait`]: the claim is funded by whoever
    /// finishes the claim before it ([`Workflow::left_line`]), who tells `waiter` (registered
    /// for the claim before `claim` was read), or by this wait when it looks again every
    /// [`TURN_POLL_MS`]. After that the claim stays SUBMITTED and the reconciler funds it in
    /// its turn.
    async fn await_turn(
        &self,
        mut claim: ClaimRow,
        waiter: &Notify,
    ) -> Result<(), ApplicationError> {
        // Still in its pool's line: its turn has not come, or it is being funded with the
        // claims before it (its reserve intent recorded by another drive).
        let in_line = |claim: &ClaimRow| {
            claim.state == ClaimState::Submitted
                && next_step(claim.state, claim.pending(), false).is_some()
        };
        let began = tokio::time::Instant::now();
        let until = began + self.settings.turn_wait;
        let waited = async {
            while in_line(&claim) {
                let poll = tokio::time::sleep(std::time::Duration::from_millis(TURN_POLL_MS));
                let told = tokio::select! {
                    // Funded with the claims before it, or its turn passed to it; a step the
                    // funding left due (deciding again on a changed usage) is taken here.
                    () = waiter.notified() => true,
                    () = poll => false,
                };
                // Looking again untold, a reserve under way in the line's drive is left to
                // it for RESERVE_PATIENCE_MS (that drive may have been cancelled since).
                let leave_reserving = !told
                    && began.elapsed() < std::time::Duration::from_millis(RESERVE_PATIENCE_MS);
                claim = self.drive(&claim.claim_id, false, leave_reserving).await?;
            }
            Ok::<(), ApplicationError>(())
        };
        tokio::time::timeout_at(until, waited)
            .await
            .unwrap_or(Ok(()))
    }

    /// Refuses a claim whose buyer is not registered or whose contract was claimed before.
    async fn check_claimable(
        &self,
        tx: &mut Tx,
        cmd: &SubmitClaim,
    ) -> Result<(), ApplicationError> {
        if self
            .store
            .get_enterprise(tx, cmd.enterprise.as_str())
            .await?
            .is_none()
        {
            return Err(ApplicationError::enterprise_not_found(
                cmd.enterprise.as_str(),
            ));
        }
        if self
            .store
            .contract_claimed(tx, cmd.seller.as_str(), &cmd.contract.contract_number)
            .await?
        {
            return Err(duplicate_contract(cmd));
        }
        Ok(())
    }

    /// Records a new claim as SUBMITTED; `None` when a concurrent duplicate of the request
    /// recorded it first.
    ///
    /// A claim that can be recorded (its enterprise registered, its contract not claimed, its
    /// invoices acceptable, as read just before) is evaluated first and recorded together
    /// with the decision, in one transaction: SUBMITTED and ready to be funded, or
    /// INELIGIBLE. When that evaluation fails (the rules or budget service unreachable, say),
    /// the claim is recorded to be evaluated (by the reconciler, or a retry of the request)
    /// and the failure is left in `failed` for the caller. A submission about to be refused
    /// is not evaluated, so that no decision is stored for a claim that is not recorded
    /// (except when a concurrent duplicate of the request, of the contract or of an invoice
    /// records first).
    async fn create_claim(
        &self,
        cmd: &SubmitClaim,
        caller: &Caller,
        failed: &Mutex<Option<ApplicationError>>,
    ) -> Result<Option<String>, ApplicationError> {
        let claim_id = format!("{CLAIM_ID_PREFIX}{}", uuid::Uuid::now_v7());
        let pool_id = &self.settings.compute_voucher_pool_id;
        // Timestamps set below, by the database clock in the recording transaction.
        let draft = submitted_claim(claim_id, cmd, pool_id, &caller.actor, 0, 0);
        let invoiced = InvoicedContract {
            claim_id: &draft.claim_id,
            recorded: false,
            seller: &draft.seller_uscc,
            buyer: &draft.enterprise_uscc,
            signing_date: cmd.contract.signing_date.as_ref(),
            total_fen: draft.contract_total_fen,
        };
        let claimable = {
            let mut conn = self.store.read().await?;
            match self
                .store
                .claimable(
                    &mut conn,
                    cmd.enterprise.as_str(),
                    cmd.seller.as_str(),
                    &cmd.contract.contract_number,
                )
                .await?
            {
                Some(email)
                    if self
                        .new_invoices_acceptable(&mut conn, &invoiced, &cmd.invoices)
                        .await? =>
                {
                    Some(email)
                }
                _ => None,
            }
        };
        let evaluation = if claimable.is_some() {
            match self.evaluation(&draft).await {
                Ok(evaluation) => Some(evaluation),
                Err(error) => {
                    *failed.lock().expect("never poisoned") = Some(error);
                    None
                }
            }
        } else {
            None
        };
        let mut tx = self.store.begin().await?;
        // The request is recorded before anything is judged: a concurrent duplicate waits
        // here for the first to commit and then follows it, instead of finding its contract
        // claimed by itself.
        let Some(now) = self
            .store
            .record_progress(
                &mut tx,
                &caller.key,
                op::SUBMIT_CLAIM,
                &caller.fingerprint,
                &draft.claim_id,
            )
            .await?
        else {
            // Recorded by a concurrent duplicate: this call follows it.
            *failed.lock().expect("never poisoned") = None;
            return Ok(None);
        };
        if claimable.is_none() {
            // Refused here, as read under the request's key (or recorded after all).
            self.check_claimable(&mut tx, cmd).await?;
        }
        let mut claim = ClaimRow {
            step_us: now,
            submit_us: now,
            updated_us: now,
            ..draft
        };
        let reason = format!(
            "submitted for contract {} of seller {}",
            claim.contract_number, claim.seller_uscc
        );
        let submitted = Change::by(caller, None, ClaimState::Submitted.as_str(), reason);
        let addressed_to = |event: EventSpec| match &claimable {
            Some(email) => event.addressed_to(email.clone()),
            None => event,
        };
        let submitted_event = addressed_to(
            EventSpec::claim(npb::EventType::ClaimSubmitted, &claim, None)
                .with("contract_total", cmd.total.to_string()),
        );
        let evaluated = evaluation.map(|(summary, entitlement)| {
            // The decision's entry follows the submission's, as a drive would record it.
            claim.revision += 1;
            let (change, event) = apply_evaluation(&mut claim, &summary, entitlement, now);
            (summary.decision_id, change, event.map(addressed_to))
        });
        // Recorded without its acceptance number: the submission's drive numbers it with the
        // other claims recorded meanwhile, in a round ([`Workflow::number_line`]), so that
        // this transaction does not hold the pool's counter until it commits.
        if !self.store.insert_claim(&mut tx, &claim).await? {
            // The only unique key a fresh claim can collide on is its contract's.
            return Err(duplicate_contract(cmd));
        }
        // Recorded with the claim, in its transaction: a refused invoice leaves no claim.
        let contract = InvoicedContract {
            claim_id: &claim.claim_id,
            recorded: false,
            seller: &claim.seller_uscc,
            buyer: &claim.enterprise_uscc,
            signing_date: cmd.contract.signing_date.as_ref(),
            total_fen: claim.contract_total_fen,
        };
        self.record_invoices(&mut tx, &contract, &cmd.invoices, now)
            .await?;
        let mut entries = vec![submitted.entry(&claim.claim_id, 1, now)];
        let mut events = vec![submitted_event];
        self.audit(
            &mut tx,
            caller,
            &[&claim.claim_id, &claim.enterprise_uscc],
            now,
        )
        .await?;
        if let Some((decision_id, change, event)) = evaluated {
            self.link_decision(
                &mut tx,
                &claim.claim_id,
                (&decision_id, DecisionPurpose::Evaluation),
                now,
            )
            .await?;
            entries.push(change.entry(&claim.claim_id, 2, now));
            events.extend(event);
        }
        self.store.append_histories(&mut tx, &entries).await?;
        self.append_events(&mut tx, events, now).await?;
        self.commit(tx).await?;
        Ok(Some(claim.claim_id))
    }

    // ----------------------------------------------------------------------------------------
    // Review
    // ----------------------------------------------------------------------------------------

    /// Approves a claim with the verified amount: recomputes the subsidy, commits it.
    pub async fn approve_claim(
        &self,
        cmd: ApproveClaim,
        caller: &Caller,
    ) -> Result<pb::ApproveClaimResponse, ApplicationError> {
        match self
            .known_request::<pb::ApproveClaimResponse>(caller, op::APPROVE_CLAIM)
            .await?
        {
            Known::Replay(response) => return Ok(response),
            Known::InProgress(claim_id) => return self.finish_approval(&claim_id, caller).await,
            Known::New => {}
        }
        let claim_id = cmd.claim_id.clone();
        if let Err(refused) = self.start_approval(cmd, caller).await {
            // A concurrent duplicate's approval is a reason to refuse this one: follow it.
            return match self
                .after_refusal::<pb::ApproveClaimResponse>(caller, op::APPROVE_CLAIM, refused)
                .await?
            {
                Followed::Replay(response) => Ok(response),
                Followed::InProgress(claim_id) => self.finish_approval(&claim_id, caller).await,
            };
        }
        self.finish_approval(&claim_id, caller).await
    }

    /// Judges an approval and records its commit intent (or finds it recorded by a concurrent
    /// duplicate).
    async fn start_approval(
        &self,
        mut cmd: ApproveClaim,
        caller: &Caller,
    ) -> Result<(), ApplicationError> {
        let seen = self.read_claim(&cmd.claim_id).await?;
        if !seen.state.can_approve() || seen.commit_intent_fen.is_some() {
            return Err(claim_transition(&seen));
        }
        let verified = {
            let mut conn = self.store.read().await?;
            self.verified_amount(&mut conn, &seen.claim_id, cmd.verified)
                .await?
        };
        cmd.verified = Some(verified);
        if verified.fen() > seen.contract_total_fen {
            return Err(ApplicationError::ApprovedAmountExceedsContract {
                claim_id: seen.claim_id,
                contract_total: fen(seen.contract_total_fen),
            });
        }
        let (approved, decision_id) = self.recheck_entitlement(&seen, verified, &cmd).await?;
        self.record_commit_intent(cmd, (approved, &decision_id), caller)
            .await
    }

    /// The amount an approval commits: the subsidy decided again on what was actually
    /// invoiced and paid, under the policy version of the original decision, with the
    /// enterprise's usage by others, and never more than is held; and the id of that decision.
    /// A decision that refuses the approval is linked to the claim before the refusal.
    async fn recheck_entitlement(
        &self,
        seen: &ClaimRow,
        verified: Money,
        cmd: &ApproveClaim,
    ) -> Result<(Money, String), ApplicationError> {
        let reserved = fen(seen.reserved_fen);
        let decision = self.decide(seen, verified, cmd.rating, reserved).await?;
        let recomputed = money("rules", &decision.entitlement)?;
        let approved = approved_amount(recomputed, reserved);
        if !decision.eligible || approved.is_zero() {
            let mut tx = self.store.begin().await?;
            let now = self.store.now_us(&mut tx).await?;
            let link = (
                decision.decision_id.as_str(),
                DecisionPurpose::ApprovalRecheck,
            );
            self.link_decision(&mut tx, &seen.claim_id, link, now)
                .await?;
            tx.commit().await?;
            return Err(ApplicationError::NotEligibleOnRecheck {
                claim_id: seen.claim_id.clone(),
            });
        }
        Ok((approved, decision.decision_id))
    }

    /// Records the approval's commit intent and the request that started it. A concurrent
    /// duplicate of the request that recorded it first is left to finish it.
    async fn record_commit_intent(
        &self,
        cmd: ApproveClaim,
        (approved, decision_id): (Money, &str),
        caller: &Caller,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if self
            .store
            .record_progress(
                &mut tx,
                &caller.key,
                op::APPROVE_CLAIM,
                &caller.fingerprint,
                &claim.claim_id,
            )
            .await?
            .is_none()
        {
            // A concurrent duplicate of this request started the approval: finish it.
            return Ok(());
        }
        // Judged only now, so that a duplicate is told apart from a second approval.
        if !claim.state.can_approve() || claim.commit_intent_fen.is_some() {
            return Err(claim_transition(&claim));
        }
        // An invoice verified or rejected since the amount was decided: decide again.
        let verified = self
            .verified_amount(&mut tx, &claim.claim_id, cmd.verified)
            .await?;
        let now = self.store.now_us(&mut tx).await?;
        let link = (decision_id, DecisionPurpose::ApprovalRecheck);
        self.link_decision(&mut tx, &claim.claim_id, link, now)
            .await?;
        claim.commit_intent_fen = Some(approved.fen());
        claim.commit_request_id = Some(caller.key.clone());
        claim.verified_paid_fen = Some(verified.fen());
        claim.benefit_rating = cmd.rating;
        claim.reviewer_id = cmd.reviewer_id;
        claim.review_note = cmd.note;
        claim.step_us = now;
        claim.step_actor = caller.actor.clone();
        self.save_change(&mut tx, &mut claim, None, None, now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Commits an approval recorded for `caller`'s request (if it is still to commit) and
    /// answers with the stored response, or with why there is none.
    async fn finish_approval(
        &self,
        claim_id: &str,
        caller: &Caller,
    ) -> Result<pb::ApproveClaimResponse, ApplicationError> {
        let claim = self.read_claim(claim_id).await?;
        if claim.commit_intent_fen.is_some()
            && claim.commit_request_id.as_deref() == Some(caller.key.as_str())
        {
            self.commit_claim(&claim).await?;
        }
        match self
            .known_request::<pb::ApproveClaimResponse>(caller, op::APPROVE_CLAIM)
            .await?
        {
            Known::Replay(response) => Ok(response),
            Known::InProgress(_) | Known::New => {
                let claim = self.read_claim(claim_id).await?;
                if claim.state == ClaimState::Expired {
                    Err(ApplicationError::ReservationExpired {
                        claim_id: claim.claim_id,
                    })
                } else {
                    Err(claim_transition(&claim))
                }
            }
        }
    }

    /// Rejects a claim.
    pub async fn reject_claim(
        &self,
        cmd: RejectClaim,
        caller: &Caller,
    ) -> Result<pb::RejectClaimResponse, ApplicationError> {
        let note = if cmd.note.is_empty() {
            String::new()
        } else {
            format!(": {}", cmd.note)
        };
        let reason_text = format!(
            "rejected by {}: {}{note}",
            cmd.reviewer_id,
            cmd.reason.as_str()
        );
        self.end_claim(
            &cmd.claim_id.clone(),
            caller,
            ClaimState::Rejected,
            reason_text,
            move |claim, now| {
                claim.rejection_reason = cmd.reason.as_str().to_owned();
                claim.review_note = cmd.note;
                claim.reviewer_id = cmd.reviewer_id;
                claim.reviewed_us = Some(now);
            },
            |claim| pb::RejectClaimResponse { claim: Some(claim) },
        )
        .await
    }

    /// Withdraws a claim on the applicant's request.
    pub async fn withdraw_claim(
        &self,
        claim_id: &str,
        reason: String,
        caller: &Caller,
    ) -> Result<pb::WithdrawClaimResponse, ApplicationError> {
        let reason_text = format!("withdrawn by the applicant: {reason}");
        self.end_claim(
            claim_id,
            caller,
            ClaimState::Withdrawn,
            reason_text,
            move |claim, _now| claim.withdrawal_reason = reason,
            |claim| pb::WithdrawClaimResponse { claim: Some(claim) },
        )
        .await
    }

    /// Moves a claim to REJECTED or WITHDRAWN (`to`) in one transaction, marking its hold for
    /// release (and a reserve still under way for the orphan sweep), then returns its money
    /// and serves the waitlist.
    async fn end_claim<R: Message + Default>(
        &self,
        claim_id: &str,
        caller: &Caller,
        to: ClaimState,
        reason: String,
        apply: impl FnOnce(&mut ClaimRow, i64),
        respond: impl FnOnce(pb::Claim) -> R,
    ) -> Result<R, ApplicationError> {
        let operation = match to {
            ClaimState::Rejected => op::REJECT_CLAIM,
            _ => op::WITHDRAW_CLAIM,
        };
        let mut tx = match self.begin_request(caller, operation).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, claim_id).await?;
        if !caller.tenant.sees(&claim.enterprise_uscc) {
            return Err(ApplicationError::claim_not_found(claim_id));
        }
        if !claim.state.can_end_as(to) || claim.commit_intent_fen.is_some() {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = claim.state;
        claim.state = to;
        claim.release_due = claim.reservation_id.is_some();
        if claim.reserve_intent_fen.take().is_some() {
            claim.orphan_check_due = true;
        }
        claim.step_us = now;
        claim.step_actor = caller.actor.clone();
        apply(&mut claim, now);
        if to == ClaimState::Withdrawn {
            // Like its contract, a withdrawn claim's invoices may be claimed again.
            self.store
                .release_invoices(&mut tx, &claim.claim_id)
                .await?;
        }
        let event = match to {
            ClaimState::Rejected => EventSpec::claim(npb::EventType::ClaimRejected, &claim, None)
                .with("rejection_reason", claim.rejection_reason.clone()),
            _ => EventSpec::claim(npb::EventType::ClaimWithdrawn, &claim, None)
                .with("withdrawal_reason", claim.withdrawal_reason.clone()),
        };
        let change = Change::by(caller, Some(from.as_str()), to.as_str(), reason);
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        let response = respond(self.claim_response(&mut tx, &claim).await?);
        let response = self.finish_request(tx, caller, response).await?;
        if from == ClaimState::Submitted {
            self.left_line(&claim);
        }
        self.after_end(&claim).await;
        Ok(response)
    }

    /// Returns the money of a claim that ended and serves the waitlist; failures are left to
    /// the reconciler (the claim's state is already recorded).
    async fn after_end(&self, claim: &ClaimRow) {
        let result = if claim.release_due {
            self.release_claim(claim).await
        } else {
            self.promote(&claim.pool_id).await
        };
        if let Err(error) = result {
            tracing::warn!(claim_id = %claim.claim_id, %error, "follow-up left to the reconciler");
        }
    }

    /// Records the payment of an approved claim.
    pub async fn disburse_claim(
        &self,
        cmd: Disbursement,
        caller: &Caller,
    ) -> Result<pb::RecordClaimDisbursementResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::DISBURSE_CLAIM).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, &cmd.id).await?;
        if !claim.state.can_disburse() {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        self.payment_gate(&mut tx, &claim.claim_id, now).await?;
        let (payment, reason) = Self::payment(&cmd, fen(claim.approved_fen), caller, now)?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        claim.state = ClaimState::Disbursed;
        claim.payment = Some(payment);
        claim.step_us = now;
        let event = EventSpec::claim(npb::EventType::ClaimDisbursed, &claim, Some(cmd.amount))
            .with("payment_reference", cmd.payment_reference.clone());
        let change = Change::by(
            caller,
            Some(ClaimState::Approved.as_str()),
            ClaimState::Disbursed.as_str(),
            reason,
        );
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        let response = pb::RecordClaimDisbursementResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }
}
