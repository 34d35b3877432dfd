//! Work nobody asked for at the moment: the reconciler, which finishes half-done steps once
//! they are older than the grace period and notices expired holds, and the promotion of
//! waitlisted claims when money comes back to a pool.

use super::Workflow;
use super::funding::hold_gone;
use crate::domain::ClaimState;
use crate::error::ApplicationError;

/// Most waitlisted claims served by one promotion pass.
pub const PROMOTIONS_PER_PASS_MAX: usize = 100;
/// Most rows the reconciler takes up per kind and tick.
pub const RECONCILE_BATCH_MAX: i64 = 100;

impl Workflow {
    /// One pass of the reconciler: finishes half-done steps older than the grace period,
    /// notices expired holds, serves waitlists, screens proposals and completes
    /// finalisations. Returns how many items it looked at. Each kind is listed when its turn
    /// comes, so that it sees what the kinds before it changed.
    pub async fn reconcile_once(&self) -> Result<usize, ApplicationError> {
        let now = {
            let mut conn = self.store.read().await?;
            self.store.now_us(&mut conn).await?
        };
        let stale_before = now - self.settings.reconcile_grace_us;
        let store = &self.store;
        let mut visited = 0;
        let claims = {
            let mut conn = store.read().await?;
            store
                .claims_with_unfinished_steps(&mut conn, stale_before, RECONCILE_BATCH_MAX)
                .await?
        };
        for claim_id in claims {
            visited += 1;
            if let Err(error) = self.drive_claim(&claim_id, true).await {
                tracing::warn!(%claim_id, %error, "reconciling a claim failed; will retry");
            }
        }
        // Holds of claims still in review are extended before they expire; only then are the
        // holds past their expiry looked at (one the extension could not save is expired).
        if self.settings.hold_extend_margin_us > 0 {
            let extend = {
                let mut conn = store.read().await?;
                store
                    .holds_to_extend(
                        &mut conn,
                        now,
                        self.settings.hold_extend_margin_us,
                        RECONCILE_BATCH_MAX,
                    )
                    .await?
            };
            for claim_id in extend {
                visited += 1;
                if let Err(error) = self.extend_hold(&claim_id).await {
                    tracing::warn!(%claim_id, %error, "extending a hold failed; will retry");
                }
            }
        }
        let holds = {
            let mut conn = store.read().await?;
            store
                .holds_past_expiry(&mut conn, now, RECONCILE_BATCH_MAX)
                .await?
        };
        for claim_id in holds {
            visited += 1;
            if let Err(error) = self.check_hold(&claim_id).await {
                tracing::warn!(%claim_id, %error, "checking a hold failed; will retry");
            }
        }
        let pools = {
            let mut conn = store.read().await?;
            store.waitlisted_pools(&mut conn).await?
        };
        for pool_id in pools {
            visited += 1;
            if let Err(error) = self.promote(&pool_id).await {
                tracing::warn!(%pool_id, %error, "serving the waitlist failed; will retry");
            }
        }
        // Publicity: periods not yet counted (the rules service was unreachable after the
        // award), then revoked awards whose money is still to return to the pool.
        let uncounted = {
            let mut conn = store.read().await?;
            store
                .notices_uncounted(&mut conn, RECONCILE_BATCH_MAX)
                .await?
        };
        for notice_id in uncounted {
            visited += 1;
            if let Err(error) = self.count_publicity(&notice_id).await {
                tracing::warn!(%notice_id, %error, "counting a publicity period failed; will retry");
            }
        }
        let revocations = {
            let mut conn = store.read().await?;
            store
                .notices_revoke_due(&mut conn, RECONCILE_BATCH_MAX)
                .await?
        };
        for notice_id in revocations {
            visited += 1;
            if let Err(error) = self.finish_revocation(&notice_id).await {
                tracing::warn!(%notice_id, %error, "returning revoked money failed; will retry");
            }
        }
        let proposals = {
            let mut conn = store.read().await?;
            store
                .proposals_unscreened(&mut conn, stale_before, RECONCILE_BATCH_MAX)
                .await?
        };
        for proposal_id in proposals {
            visited += 1;
            if let Err(error) = self.screen_proposal(&proposal_id).await {
                tracing::warn!(%proposal_id, %error, "screening a proposal failed; will retry");
            }
        }
        let rounds = {
            let mut conn = store.read().await?;
            store.rounds_finalizing(&mut conn, stale_before).await?
        };
        for round_id in rounds {
            visited += 1;
            if let Err(error) = self.complete_finalization(&round_id).await {
                tracing::warn!(%round_id, %error, "finalising a round failed; will retry");
            }
        }
        Ok(visited)
    }

    /// Checks with the budget whether a claim's hold has expired and records it.
    pub async fn check_hold(&self, claim_id: &str) -> Result<(), ApplicationError> {
        let claim = {
            let mut conn = self.store.read().await?;
            self.store.get_claim(&mut conn, claim_id).await?
        };
        let Some(claim) = claim else {
            return Ok(());
        };
        let (true, Some(reservation_id), None) = (
            claim.state.in_review(),
            claim.reservation_id.as_deref(),
            claim.commit_intent_fen,
        ) else {
            return Ok(());
        };
        let reservation = self.peers.reservation(reservation_id).await?;
        if hold_gone(&reservation) {
            self.expire_claim(&claim).await?;
        }
        Ok(())
    }

    /// Serves a pool's waitlist, oldest first, the head only when its full entitlement fits
    /// (or partly, when the policy says so). Nobody skips the head.
    pub async fn promote(&self, pool_id: &str) -> Result<(), ApplicationError> {
        let _serialised = self.promotion.lock().await;
        for _ in 0..PROMOTIONS_PER_PASS_MAX {
            let head = {
                let mut conn = self.store.read().await?;
                self.store.waitlist_head(&mut conn, pool_id).await?
            };
            let Some(head) = head else {
                return Ok(());
            };
            let claim = self.read_claim(&head).await?;
            if claim.reserve_intent_fen.is_some() {
                self.resolve_reserve(&claim).await?;
            } else if claim.evaluation_due {
                self.evaluate_claim(&claim).await?;
                continue;
            } else if !self.fund_claim(&claim).await? {
                // An earlier claim's funding is still being decided: it goes first.
                return Ok(());
            }
            let after = self.read_claim(&head).await?;
            if after.state == ClaimState::Waitlisted
                && after.reserve_intent_fen.is_none()
                && !after.evaluation_due
            {
                // The head still does not fit: everyone behind it waits too.
                return Ok(());
            }
        }
        Ok(())
    }
}
