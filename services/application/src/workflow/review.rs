//! Review that cannot silently lose a subsidy (issue 16): the hold of a claim in review is
//! extended before it expires; a reviewer may ask the applicant for more information
//! (NEEDS_INFORMATION, the hold kept) and the applicant answers; an EXPIRED claim may be
//! reopened, which asks its pool for money again at its original place in the line.
//!
//! The extension follows the protocol of `workflow/mod.rs`: the budget is called with a
//! request id derived from the claim and the number of the extension (`extend-<attempt>`), so
//! replicas extending the same hold at once make one extension; the new expiry is recorded
//! only while the attempt is still current, and the attempt moves on with it.

use subsidy_common::RequestId;
use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;

use super::funding::hold_gone;
use super::outbox::EventSpec;
use super::translate::hold_expires_us;
use super::{Begun, Caller, Change, Followed, Submission, Workflow, claim_transition, fen, op};
use crate::domain::{ClaimState, hold_extension_due};
use crate::error::ApplicationError;
use crate::upstream::PeerError;

/// A validated request for information.
#[derive(Clone, Debug)]
pub struct RequestInformation {
    /// Claim.
    pub claim_id: String,
    /// What the applicant is asked for.
    pub message: String,
}

/// A validated answer to a request for information.
#[derive(Clone, Debug)]
pub struct ProvideInformation {
    /// Claim.
    pub claim_id: String,
    /// The applicant's answer.
    pub message: String,
    /// Documents of the claim that answer the request.
    pub document_ids: Vec<String>,
}

/// A validated reopening.
#[derive(Clone, Debug)]
pub struct ReopenClaim {
    /// Claim.
    pub claim_id: String,
    /// Why the reviewer reopens it.
    pub reason: String,
}

impl Workflow {
    // ----------------------------------------------------------------------------------------
    // Hold extension
    // ----------------------------------------------------------------------------------------

    /// Extends the hold of a claim in review when it is due ([`hold_extension_due`]) and
    /// records the new expiry; a hold the budget no longer holds is checked and, when gone,
    /// the claim expires.
    pub async fn extend_hold(&self, claim_id: &str) -> Result<(), ApplicationError> {
        let (seen, now) = {
            let mut conn = self.store.read().await?;
            let now = self.store.now_us(&mut conn).await?;
            let Some(claim) = self.store.get_claim(&mut conn, claim_id).await? else {
                return Ok(());
            };
            (claim, now)
        };
        let (true, None, Some(reservation_id), Some(expires_us)) = (
            seen.state.in_review(),
            seen.commit_intent_fen,
            seen.reservation_id.clone(),
            seen.hold_expires_us,
        ) else {
            return Ok(());
        };
        if !hold_extension_due(
            seen.hold_set_us,
            expires_us,
            now,
            self.settings.hold_extend_margin_us,
        ) {
            return Ok(());
        }
        let request_id =
            RequestId::derived(&seen.claim_id, &format!("extend-{}", seen.extend_attempt));
        let extended = subsidy_common::auth::acting_for(
            None,
            self.peers
                .extend_reservation(&request_id, &reservation_id, self.settings.hold_seconds),
        )
        .await;
        let reservation = match extended {
            Ok(reservation) => reservation,
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {
                let reservation = self.peers.reservation(&reservation_id).await?;
                if hold_gone(&reservation) {
                    self.expire_claim(&seen).await?;
                }
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &seen.claim_id).await?;
        if claim.extend_attempt != seen.extend_attempt
            || claim.reservation_id != seen.reservation_id
            || !claim.state.in_review()
        {
            // Recorded by another replica, or the claim moved on meanwhile.
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let new_expiry = hold_expires_us(&reservation);
        claim.hold_expires_us = new_expiry.or(claim.hold_expires_us);
        claim.hold_set_us = Some(now);
        claim.extend_attempt += 1;
        let expiry_text = new_expiry
            .map(|us| subsidy_common::edge::timestamp(us).to_string())
            .unwrap_or_default();
        let state = claim.state.as_str();
        let change = Change::system(
            state,
            state,
            format!("hold {reservation_id} extended to {expiry_text} while the claim is in review"),
        );
        self.save_change(&mut tx, &mut claim, Some(change), None, now)
            .await?;
        self.commit(tx).await
    }

    // ----------------------------------------------------------------------------------------
    // Information
    // ----------------------------------------------------------------------------------------

    /// A reviewer asks the applicant for more information: PENDING_REVIEW to
    /// NEEDS_INFORMATION, the hold kept.
    pub async fn request_claim_information(
        &self,
        cmd: RequestInformation,
        caller: &Caller,
    ) -> Result<pb::RequestClaimInformationResponse, ApplicationError> {
        let mut tx = match self
            .begin_request(caller, op::REQUEST_CLAIM_INFORMATION)
            .await?
        {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if claim.state != ClaimState::PendingReview || claim.commit_intent_fen.is_some() {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.state = ClaimState::NeedsInformation;
        claim.information_request = cmd.message.clone();
        claim.step_us = now;
        let event = EventSpec::claim(npb::EventType::ClaimNeedsInformation, &claim, None)
            .with("message", cmd.message.clone());
        let change = Change::by(
            caller,
            Some(ClaimState::PendingReview.as_str()),
            ClaimState::NeedsInformation.as_str(),
            format!("information requested: {}", cmd.message),
        );
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        let response = pb::RequestClaimInformationResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// The applicant that owns a claim answers a request for information, with documents of
    /// the claim: NEEDS_INFORMATION to PENDING_REVIEW.
    pub async fn provide_claim_information(
        &self,
        cmd: ProvideInformation,
        caller: &Caller,
    ) -> Result<pb::ProvideClaimInformationResponse, ApplicationError> {
        let mut tx = match self
            .begin_request(caller, op::PROVIDE_CLAIM_INFORMATION)
            .await?
        {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if !caller.tenant.sees(&claim.enterprise_uscc) {
            return Err(ApplicationError::claim_not_found(&cmd.claim_id));
        }
        if claim.state != ClaimState::NeedsInformation {
            return Err(claim_transition(&claim));
        }
        for document_id in &cmd.document_ids {
            let document = self.store.get_document(&mut tx, document_id).await?;
            if document.is_none_or(|document| document.application_id != claim.claim_id) {
                return Err(ApplicationError::DocumentNotFound {
                    document_id: document_id.clone(),
                });
            }
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.state = ClaimState::PendingReview;
        claim.step_us = now;
        let documents = cmd.document_ids.join(",");
        let event = EventSpec::claim(npb::EventType::ClaimInformationProvided, &claim, None)
            .with("document_ids", documents.clone());
        let attached = if cmd.document_ids.is_empty() {
            String::new()
        } else {
            format!(" (documents {documents})")
        };
        let change = Change::by(
            caller,
            Some(ClaimState::NeedsInformation.as_str()),
            ClaimState::PendingReview.as_str(),
            format!("information provided: {}{attached}", cmd.message),
        );
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        let response = pb::ProvideClaimInformationResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    // ----------------------------------------------------------------------------------------
    // Reopening
    // ----------------------------------------------------------------------------------------

    /// Reopens an EXPIRED claim: it becomes WAITLISTED at its original place in its pool's
    /// acceptance order and the waitlist is served, which funds it at once when it is the
    /// head and the pool covers it. Answers with the state it reached (stored for replay).
    pub async fn reopen_claim(
        &self,
        cmd: ReopenClaim,
        caller: &Caller,
    ) -> Result<pb::ReopenClaimResponse, ApplicationError> {
        let recorded = self
            .submission::<pb::ReopenClaimResponse, _, _>(caller, op::REOPEN_CLAIM, || {
                self.start_reopen(&cmd, caller)
            })
            .await;
        let claim_id = match recorded {
            Ok(Submission::Replay(response)) => return Ok(response),
            Ok(Submission::Recorded(claim_id)) => claim_id,
            Err(refused @ ApplicationError::TransitionNotAllowed { .. }) => {
                // A concurrent duplicate's reopening is a reason to refuse this one: follow it.
                match self
                    .after_refusal::<pb::ReopenClaimResponse>(caller, op::REOPEN_CLAIM, refused)
                    .await?
                {
                    Followed::Replay(response) => return Ok(response),
                    Followed::InProgress(claim_id) => claim_id,
                }
            }
            Err(error) => return Err(error),
        };
        let pool_id = self.read_claim(&claim_id).await?.pool_id;
        if let Err(error) = self.promote(&pool_id).await {
            tracing::warn!(%claim_id, %error, "serving the waitlist after a reopening left to the reconciler");
        }
        let mut tx = match self.begin_request(caller, op::REOPEN_CLAIM).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let claim = self.locked_claim(&mut tx, &claim_id).await?;
        let response = pb::ReopenClaimResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Records a reopening (EXPIRED to WAITLISTED) with the request that asked for it; `None`
    /// when a concurrent duplicate of the request recorded it first.
    async fn start_reopen(
        &self,
        cmd: &ReopenClaim,
        caller: &Caller,
    ) -> Result<Option<String>, ApplicationError> {
        let mut tx = self.store.begin().await?;
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if self
            .store
            .record_progress(
                &mut tx,
                &caller.key,
                op::REOPEN_CLAIM,
                &caller.fingerprint,
                &claim.claim_id,
            )
            .await?
            .is_none()
        {
            return Ok(None);
        }
        if claim.state != ClaimState::Expired {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        let expired_hold = claim.reservation_id.take().unwrap_or_default();
        claim.state = ClaimState::Waitlisted;
        claim.reserved_fen = 0;
        claim.hold_expires_us = None;
        claim.hold_set_us = None;
        claim.review_due_us = None;
        claim.commit_intent_fen = None;
        // A new reserve: the derived request id of the expired one must not be replayed.
        claim.reserve_attempt += 1;
        claim.step_us = now;
        claim.step_actor = caller.actor.clone();
        let entitlement = fen(claim.entitlement_fen);
        let event = EventSpec::claim(npb::EventType::ClaimReopened, &claim, Some(entitlement))
            .with("reason", cmd.reason.clone())
            .with("expired_reservation_id", expired_hold);
        let change = Change::by(
            caller,
            Some(ClaimState::Expired.as_str()),
            ClaimState::Waitlisted.as_str(),
            format!(
                "reopened: {}; asks for {entitlement} again at its place in the acceptance order",
                cmd.reason
            ),
        );
        self.save_change(&mut tx, &mut claim, Some(change), Some(event), now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        self.commit(tx).await?;
        Ok(Some(claim.claim_id))
    }
}
