//! Publicity (公示) of awards and objections (异议) to them (issue 16).
//!
//! An award (a claim approved, a proposal awarded) is published in the transaction that makes
//! it, as a notice whose period is still uncounted; the rules service then counts the period
//! in working days and the notice is published as the `award.published` event. Until the
//! period has ended with no objection open the award is not paid. Anyone authenticated may
//! object during the period; a reviewer dismisses the objection or upholds it, which revokes
//! the award (REVOKED) and returns its committed money to the pool.
//!
//! The revocation follows the protocol of `workflow/mod.rs`: the state and the duty to return
//! the money (`revoke_due`) are recorded in one transaction; the budget's RevokeCommitment is
//! called with a request id derived from the application (`<id>/revoke`), so a repeat after a
//! crash (by the caller or the reconciler) is a replay; the duty is cleared after it.

use subsidy_common::RequestId;
use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;

use super::outbox::EventSpec;
use super::rounds::proposal_transition;
use super::{Begun, Caller, Change, Workflow, claim_transition, op};
use crate::domain::publicity::{NoticeWindow, ObjectionState, can_decide};
use crate::domain::{ClaimState, ProposalState};
use crate::error::{ApplicationError, rfc3339};
use crate::storage::{
    ClaimRow, Conn, NoticeFilter, NoticeKind, NoticeRow, ObjectionRow, ProposalRow, Tx,
};
use crate::upstream::PeerError;
use crate::wire::{notice_to_proto, objection_to_proto};

/// The prefix of an objection's id.
pub const OBJECTION_ID_PREFIX: &str = "objection-";

/// The notice id of an application's award.
pub fn notice_id_of(application_id: &str) -> String {
    format!("notice-{application_id}")
}

/// A validated objection.
#[derive(Clone, Debug)]
pub struct FileObjection {
    /// The notice objected to.
    pub notice_id: String,
    /// The grounds.
    pub grounds: String,
}

/// A validated decision on an objection.
#[derive(Clone, Debug)]
pub struct DecideObjection {
    /// The objection.
    pub objection_id: String,
    /// Uphold (revoke the award) or dismiss.
    pub uphold: bool,
    /// The reasons.
    pub reason: String,
    /// The deciding reviewer.
    pub reviewer_id: String,
}

/// A publicity period as the rules service counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CountedPeriod {
    /// When it starts (the award), µs.
    pub start_us: i64,
    /// When it ends (exclusive), µs.
    pub end_us: i64,
    /// Working days counted.
    pub working_days: i64,
    /// Whether the calendar covered every day counted.
    pub calendar_covered: bool,
}

impl Workflow {
    // ----------------------------------------------------------------------------------------
    // Publication
    // ----------------------------------------------------------------------------------------

    /// Publishes the notice of a claim approved in `tx`, with its period when it was counted
    /// ahead ([`Workflow::period_ahead`]); `Some(notice id)` when the period is still to count.
    pub(super) async fn publish_claim(
        &self,
        tx: &mut Tx,
        claim: &ClaimRow,
        counted: Option<CountedPeriod>,
        now_us: i64,
    ) -> Result<Option<String>, ApplicationError> {
        let reservation_id = claim
            .reservation_id
            .clone()
            .expect("an approved claim has a reservation");
        let notice = self
            .new_notice(
                tx,
                (NoticeKind::Claim, &claim.claim_id, &claim.enterprise_uscc),
                (String::new(), String::new()),
                (&claim.pool_id, reservation_id, claim.approved_fen),
                now_us,
            )
            .await?;
        self.insert_notice(tx, notice, counted, now_us).await
    }

    /// Publishes the notice of a proposal awarded in `tx` from `pool_id`, like
    /// [`Workflow::publish_claim`].
    pub(super) async fn publish_proposal(
        &self,
        tx: &mut Tx,
        proposal: &ProposalRow,
        pool_id: &str,
        counted: Option<CountedPeriod>,
        now_us: i64,
    ) -> Result<Option<String>, ApplicationError> {
        let reservation_id = proposal
            .reservation_id
            .clone()
            .expect("an awarded proposal has a reservation");
        let notice = self
            .new_notice(
                tx,
                (
                    NoticeKind::Proposal,
                    &proposal.proposal_id,
                    &proposal.applicant_uscc,
                ),
                (proposal.title.clone(), proposal.round_id.clone()),
                (pool_id, reservation_id, proposal.awarded_fen),
                now_us,
            )
            .await?;
        self.insert_notice(tx, notice, counted, now_us).await
    }

    /// Inserts a new notice, with its counted period and its `award.published` event when
    /// `counted`; `Some(notice id)` when the period is still to count. A notice the award
    /// already has (a repeated recording) is left as it is.
    async fn insert_notice(
        &self,
        tx: &mut Tx,
        mut notice: NoticeRow,
        counted: Option<CountedPeriod>,
        now_us: i64,
    ) -> Result<Option<String>, ApplicationError> {
        if let Some(period) = counted {
            notice.start_us = period.start_us.min(now_us);
            set_period(&mut notice, period);
        }
        if !self.store.insert_notice(tx, &notice).await? {
            return Ok(None);
        }
        if notice.end_us.is_none() {
            return Ok(Some(notice.notice_id));
        }
        self.append_event(tx, published_event(&notice), now_us)
            .await?;
        Ok(None)
    }

    /// The period of an award of `kind` made about now, counted by the rules service before
    /// the award's transaction, so that the award's answer shows it; `None` when the rules
    /// service could not answer (the notice is then counted after the transaction, or by the
    /// reconciler).
    pub(super) async fn period_ahead(&self, kind: NoticeKind) -> Option<CountedPeriod> {
        let start_us = {
            let mut conn = self.store.read().await.ok()?;
            self.store.now_us(&mut conn).await.ok()?
        };
        match self.period_of(kind, start_us).await {
            Ok(period) => Some(period),
            Err(error) => {
                tracing::warn!(%error, "publicity period not counted ahead of the award");
                None
            }
        }
    }

    /// The publicity period of an award of `kind` made at `start_us`, as the rules service
    /// counts it.
    async fn period_of(
        &self,
        kind: NoticeKind,
        start_us: i64,
    ) -> Result<CountedPeriod, ApplicationError> {
        let program = match kind {
            NoticeKind::Claim => rpb::Program::ComputeVoucher,
            NoticeKind::Proposal => rpb::Program::DataInfra,
        };
        let period = self.peers.publicity_period(program, start_us, "").await?;
        let end_us = period
            .end_time
            .as_ref()
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000_000)
                    .saturating_add(i64::from(t.nanos) / 1_000)
            })
            .ok_or_else(|| ApplicationError::UpstreamUnexpected {
                service: "rules",
                code: "Ok".into(),
                reason: "publicity period without an end".into(),
            })?;
        Ok(CountedPeriod {
            start_us,
            end_us: end_us.max(start_us),
            working_days: i64::from(period.working_days),
            calendar_covered: period.calendar_covered,
        })
    }

    /// A new notice, its period uncounted, naming the enterprise as registered now.
    async fn new_notice(
        &self,
        tx: &mut Tx,
        (kind, application_id, uscc): (NoticeKind, &str, &str),
        (project_title, round_id): (String, String),
        (pool_id, reservation_id, amount_fen): (&str, String, i64),
        now_us: i64,
    ) -> Result<NoticeRow, ApplicationError> {
        let enterprise_name = self
            .store
            .get_enterprise(tx, uscc)
            .await?
            .map(|enterprise| enterprise.name)
            .unwrap_or_default();
        Ok(NoticeRow {
            notice_id: notice_id_of(application_id),
            kind,
            application_id: application_id.to_owned(),
            enterprise_uscc: uscc.to_owned(),
            enterprise_name,
            project_title,
            round_id,
            pool_id: pool_id.to_owned(),
            reservation_id,
            amount_fen,
            start_us: now_us,
            end_us: None,
            working_days: 0,
            calendar_covered: false,
            open_objections: 0,
            revoked_us: None,
            revoke_due: false,
            revoke_objection_id: None,
        })
    }

    /// Counts the period of a notice published uncounted, after its award's transaction; a
    /// failure is left to the reconciler (the notice holds the payment until counted).
    pub(super) async fn after_publish(&self, uncounted: Option<String>) {
        let Some(notice_id) = uncounted else {
            return;
        };
        if let Err(error) = self.count_publicity(&notice_id).await {
            tracing::warn!(%notice_id, %error, "counting a publicity period left to the reconciler");
        }
    }

    /// Asks the rules service for the period of a notice not yet counted, records its end and
    /// publishes the notice (`award.published`). Nothing when already counted.
    pub async fn count_publicity(&self, notice_id: &str) -> Result<(), ApplicationError> {
        let seen = {
            let mut conn = self.store.read().await?;
            self.store.get_notice(&mut conn, notice_id).await?
        };
        let Some(seen) = seen else {
            return Ok(());
        };
        if seen.end_us.is_some() {
            return Ok(());
        }
        let period = self.period_of(seen.kind, seen.start_us).await?;
        let mut tx = self.store.begin().await?;
        let Some(mut notice) = self.store.lock_notice(&mut tx, notice_id).await? else {
            return Ok(());
        };
        if notice.end_us.is_some() {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        set_period(&mut notice, period);
        self.store.save_notice(&mut tx, &notice).await?;
        self.append_event(&mut tx, published_event(&notice), now)
            .await?;
        self.commit(tx).await
    }

    // ----------------------------------------------------------------------------------------
    // Reading
    // ----------------------------------------------------------------------------------------

    /// Notices after `after`, at most `limit`, as the wire shows them now.
    pub async fn public_notices(
        &self,
        mut filter: NoticeFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<pb::PublicNotice>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let now = self.store.now_us(&mut conn).await?;
        filter.now_us = now;
        let rows = self
            .store
            .list_notices(&mut conn, &filter, after, limit)
            .await?;
        Ok(rows.iter().map(|row| notice_to_proto(row, now)).collect())
    }

    /// Objections after `after`, at most `limit`.
    pub async fn objections(
        &self,
        notice_id: &str,
        state: Option<ObjectionState>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ObjectionRow>, ApplicationError> {
        let mut conn = self.store.read().await?;
        Ok(self
            .store
            .list_objections(&mut conn, notice_id, state, after, limit)
            .await?)
    }

    /// The notice of an application's award as the wire shows it now, if it has one (read on
    /// a connection of its own).
    pub async fn public_notice_of(
        &self,
        application_id: &str,
    ) -> Result<Option<pb::PublicNotice>, ApplicationError> {
        let mut conn = self.store.read().await?;
        self.notice_response(&mut conn, application_id).await
    }

    /// The notice of an application's award as the wire shows it now, if it has one.
    pub(super) async fn notice_response(
        &self,
        conn: &mut Conn,
        application_id: &str,
    ) -> Result<Option<pb::PublicNotice>, ApplicationError> {
        let Some(notice) = self
            .store
            .get_notice(&mut *conn, &notice_id_of(application_id))
            .await?
        else {
            return Ok(None);
        };
        let now = self.store.now_us(conn).await?;
        Ok(Some(notice_to_proto(&notice, now)))
    }

    /// Refuses the payment of an award whose period has not ended or that has an objection
    /// open; an award without a notice (none is made without one) is not paid either.
    pub(super) async fn payment_gate(
        &self,
        tx: &mut Tx,
        application_id: &str,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        let notice_id = notice_id_of(application_id);
        let window = match self.store.lock_notice(tx, &notice_id).await? {
            Some(notice) => window(&notice),
            None => NoticeWindow {
                end_us: None,
                open_objections: 0,
                revoked: false,
            },
        };
        window
            .payment(now_us)
            .map_err(|hold| ApplicationError::PaymentHeld { notice_id, hold })
    }

    // ----------------------------------------------------------------------------------------
    // Objections
    // ----------------------------------------------------------------------------------------

    /// Files an objection to an award during its publicity period.
    pub async fn file_objection(
        &self,
        cmd: FileObjection,
        caller: &Caller,
    ) -> Result<pb::FileObjectionResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::FILE_OBJECTION).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut notice = self
            .store
            .lock_notice(&mut tx, &cmd.notice_id)
            .await?
            .ok_or_else(|| ApplicationError::NoticeNotFound {
                notice_id: cmd.notice_id.clone(),
            })?;
        let now = self.store.now_us(&mut tx).await?;
        if notice.revoked_us.is_some() {
            return Err(ApplicationError::AwardRevoked {
                notice_id: notice.notice_id,
            });
        }
        if !window(&notice).accepts_objections(now) {
            return Err(ApplicationError::PublicityPeriodEnded {
                notice_id: notice.notice_id,
                end_us: notice.end_us.unwrap_or(now),
            });
        }
        let objection = ObjectionRow {
            objection_id: format!("{OBJECTION_ID_PREFIX}{}", uuid::Uuid::now_v7()),
            notice_id: notice.notice_id.clone(),
            grounds: cmd.grounds,
            state: ObjectionState::Open,
            filed_by: caller.actor.clone(),
            filed_us: now,
            reviewer_id: String::new(),
            decision_reason: String::new(),
            decided_us: None,
        };
        self.store.insert_objection(&mut tx, &objection).await?;
        notice.open_objections += 1;
        self.store.save_notice(&mut tx, &notice).await?;
        let event = EventSpec::notice(npb::EventType::ObjectionFiled, &notice)
            .with("objection_id", objection.objection_id.clone())
            .with("grounds", objection.grounds.clone());
        self.append_event(&mut tx, event, now).await?;
        self.audit(
            &mut tx,
            caller,
            &[&notice.application_id, &objection.objection_id],
            now,
        )
        .await?;
        let response = pb::FileObjectionResponse {
            objection: Some(objection_to_proto(&objection)),
            notice: Some(notice_to_proto(&notice, now)),
        };
        self.finish_request(tx, caller, response).await
    }

    /// A reviewer decides an open objection; upholding it revokes the award and returns its
    /// money to the pool.
    pub async fn decide_objection(
        &self,
        cmd: DecideObjection,
        caller: &Caller,
    ) -> Result<pb::DecideObjectionResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::DECIDE_OBJECTION).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut objection = self
            .store
            .lock_objection(&mut tx, &cmd.objection_id)
            .await?
            .ok_or_else(|| ApplicationError::ObjectionNotFound {
                objection_id: cmd.objection_id.clone(),
            })?;
        if !can_decide(objection.state) {
            return Err(ApplicationError::ObjectionAlreadyDecided {
                objection_id: objection.objection_id,
                state: objection.state.as_str(),
            });
        }
        let mut notice = self
            .store
            .lock_notice(&mut tx, &objection.notice_id)
            .await?
            .ok_or_else(|| ApplicationError::NoticeNotFound {
                notice_id: objection.notice_id.clone(),
            })?;
        let now = self.store.now_us(&mut tx).await?;
        objection.state = if cmd.uphold {
            ObjectionState::Upheld
        } else {
            ObjectionState::Dismissed
        };
        objection.reviewer_id = cmd.reviewer_id.clone();
        objection.decision_reason = cmd.reason.clone();
        objection.decided_us = Some(now);
        self.store.save_objection(&mut tx, &objection).await?;
        notice.open_objections = (notice.open_objections - 1).max(0);
        let revokes = cmd.uphold && notice.revoked_us.is_none();
        if revokes {
            self.revoke_award(&mut tx, &notice, &objection, caller, now)
                .await?;
            notice.revoked_us = Some(now);
            notice.revoke_due = true;
            notice.revoke_objection_id = Some(objection.objection_id.clone());
        }
        self.store.save_notice(&mut tx, &notice).await?;
        let event_type = if cmd.uphold {
            npb::EventType::ObjectionUpheld
        } else {
            npb::EventType::ObjectionDismissed
        };
        let event = EventSpec::notice(event_type, &notice)
            .with("objection_id", objection.objection_id.clone())
            .with("reviewer_id", cmd.reviewer_id.clone())
            .with("reason", cmd.reason.clone());
        self.append_event(&mut tx, event, now).await?;
        self.audit(
            &mut tx,
            caller,
            &[&notice.application_id, &objection.objection_id],
            now,
        )
        .await?;
        let response = pb::DecideObjectionResponse {
            objection: Some(objection_to_proto(&objection)),
            notice: Some(notice_to_proto(&notice, now)),
        };
        let response = self.finish_request(tx, caller, response).await?;
        if revokes && let Err(error) = self.finish_revocation(&notice.notice_id).await {
            tracing::warn!(notice_id = %notice.notice_id, %error, "returning revoked money left to the reconciler");
        }
        Ok(response)
    }

    /// Moves the award of `notice` to REVOKED in `tx`, with its history and event.
    async fn revoke_award(
        &self,
        tx: &mut Tx,
        notice: &NoticeRow,
        objection: &ObjectionRow,
        caller: &Caller,
        now: i64,
    ) -> Result<(), ApplicationError> {
        let reason = format!(
            "award revoked: objection {} upheld by {}: {}",
            objection.objection_id, objection.reviewer_id, objection.decision_reason
        );
        match notice.kind {
            NoticeKind::Claim => {
                let mut claim = self.locked_claim(tx, &notice.application_id).await?;
                if claim.state != ClaimState::Approved {
                    return Err(claim_transition(&claim));
                }
                claim.state = ClaimState::Revoked;
                claim.step_us = now;
                let event = EventSpec::claim(
                    npb::EventType::ClaimRevoked,
                    &claim,
                    Some(super::fen(claim.approved_fen)),
                )
                .with("objection_id", objection.objection_id.clone())
                .with("reason", objection.decision_reason.clone())
                .with("reservation_id", notice.reservation_id.clone());
                let change = Change::by(
                    caller,
                    Some(ClaimState::Approved.as_str()),
                    ClaimState::Revoked.as_str(),
                    reason,
                );
                self.save_change(tx, &mut claim, Some(change), Some(event), now)
                    .await
            }
            NoticeKind::Proposal => {
                let mut proposal = self.locked_proposal(tx, &notice.application_id).await?;
                if proposal.state != ProposalState::Awarded {
                    return Err(proposal_transition(&proposal));
                }
                proposal.state = ProposalState::Revoked;
                proposal.step_us = now;
                let event = EventSpec::proposal(
                    npb::EventType::ProposalRevoked,
                    &proposal,
                    Some(super::fen(proposal.awarded_fen)),
                )
                .with("objection_id", objection.objection_id.clone())
                .with("reason", objection.decision_reason.clone())
                .with("reservation_id", notice.reservation_id.clone());
                let change = Change::by(
                    caller,
                    Some(ProposalState::Awarded.as_str()),
                    ProposalState::Revoked.as_str(),
                    reason,
                );
                self.save_change(tx, &mut proposal, Some(change), Some(event), now)
                    .await
            }
        }
    }

    /// Returns the committed money of a revoked award to its pool (the budget's
    /// RevokeCommitment, replayed by its derived request id), clears the duty, and serves the
    /// pool's waitlist. Nothing when the money was returned already.
    pub async fn finish_revocation(&self, notice_id: &str) -> Result<(), ApplicationError> {
        let seen = {
            let mut conn = self.store.read().await?;
            self.store.get_notice(&mut conn, notice_id).await?
        };
        let Some(seen) = seen.filter(|notice| notice.revoke_due) else {
            return Ok(());
        };
        let reason = format!(
            "award {} revoked: objection {} upheld during its publicity period",
            seen.application_id,
            seen.revoke_objection_id.as_deref().unwrap_or_default()
        );
        let request_id = RequestId::derived(&seen.application_id, "revoke");
        match self
            .peers
            .revoke_commitment(&request_id, &seen.reservation_id, &reason)
            .await
        {
            Ok(_) => {}
            Err(PeerError::Refused { reason, .. }) => {
                return Err(ApplicationError::UpstreamUnexpected {
                    service: "budget",
                    code: "FailedPrecondition".into(),
                    reason,
                });
            }
            Err(error) => return Err(error.into()),
        }
        subsidy_common::crash::point("application.award.revoked");
        let mut tx = self.store.begin().await?;
        if let Some(mut notice) = self.store.lock_notice(&mut tx, notice_id).await?
            && notice.revoke_due
        {
            notice.revoke_due = false;
            self.store.save_notice(&mut tx, &notice).await?;
        }
        self.commit(tx).await?;
        if seen.kind == NoticeKind::Claim {
            self.promote(&seen.pool_id).await?;
        }
        Ok(())
    }
}

/// Records a counted period on a notice (its start stays the notice's own).
fn set_period(notice: &mut NoticeRow, period: CountedPeriod) {
    notice.end_us = Some(period.end_us.max(notice.start_us));
    notice.working_days = period.working_days;
    notice.calendar_covered = period.calendar_covered;
}

/// The `award.published` event of a counted notice.
fn published_event(notice: &NoticeRow) -> EventSpec {
    let end_us = notice.end_us.expect("published once counted");
    let event = EventSpec::notice(npb::EventType::AwardPublished, notice)
        .with("enterprise_name", notice.enterprise_name.clone())
        .with("start_time", rfc3339(notice.start_us))
        .with("end_time", rfc3339(end_us))
        .with("working_days", notice.working_days.to_string())
        .with("calendar_covered", notice.calendar_covered.to_string());
    match notice.kind {
        NoticeKind::Proposal => event.with("project_title", notice.project_title.clone()),
        NoticeKind::Claim => event,
    }
}

/// The payment and objection window of a notice.
fn window(notice: &NoticeRow) -> NoticeWindow {
    NoticeWindow {
        end_us: notice.end_us,
        open_objections: u32::try_from(notice.open_objections).unwrap_or(u32::MAX),
        revoked: notice.revoked_us.is_some(),
    }
}
