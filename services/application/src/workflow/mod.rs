//! The orchestration of claims, proposals and rounds across the rules, budget and notification
//! services.
//!
//! Every transition is one transaction over the application's row, its history and the outbox.
//! A step that calls another service is split so that a crash at any point converges:
//! 1. the intent (amount, attempt) is recorded in the row first;
//! 2. the peer is called with a request id derived from the application and the step, so a
//!    repeated call is answered from the peer's idempotency store instead of acting twice;
//! 3. the outcome is recorded in a transaction that checks the intent is still current; an
//!    outcome that arrives for an application that moved on (a withdrawal raced the call) is
//!    compensated (the hold is released).
//!
//! The reconciler runs the same steps for rows whose step is older than the grace period, so
//! calls that failed with UNAVAILABLE, and processes that died mid-step, are finished.
//!
//! The rooms: [`claims`] (what callers ask of a claim), [`funding`] (a claim's steps with the
//! budget), [`rounds`] (rounds, proposals, scores), [`finalization`] (ranking and awards),
//! [`background`] (the reconciler and the waitlist), [`outbox`] (events and their relay),
//! [`enterprises`], and [`translate`] (the rules and budget request types). This file holds
//! what they share: the request log protocol and the recording of a change.

mod background;
mod claims;
mod documents;
mod enterprises;
mod exports;
mod finalization;
mod funding;
mod invoices;
mod outbox;
mod publicity;
mod review;
mod rounds;
mod statistics;
mod translate;

use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDate;
use prost::Message;
use subsidy_common::audit::AuditRecord;
use subsidy_common::auth::Tenant;
use subsidy_common::idempotency::Claim;
use subsidy_common::time::shanghai_date_of_us;
use subsidy_common::{Money, RequestId};
use subsidy_proto::application as pb;
use tokio::sync::Notify;

pub use background::{PROMOTIONS_PER_PASS_MAX, RECONCILE_BATCH_MAX};
pub use claims::{ApproveClaim, ClaimView, RejectClaim, SubmitClaim};
pub use documents::{DocumentView, Documents, UploadHeader, UploadStart};
pub use enterprises::RegisterEnterprise;
pub use exports::{DisbursementExport, ExportRow, ExportTotals};
pub use funding::CLAIM_STEPS_MAX;
pub use invoices::{AddInvoices, VerifyInvoice, set_invoices};
pub use outbox::{EVENT_SOURCE, RELAY_BACKOFF_MS_MAX, RELAY_BATCH_MAX};
pub use publicity::{DecideObjection, FileObjection, notice_id_of};
pub use review::{ProvideInformation, ReopenClaim, RequestInformation};
pub use rounds::{CreateRound, ProposalView, RoundView, ScoreProposal, SubmitProposal};
pub use statistics::{PoolFigures, ProgramStatistics};

use self::outbox::EventSpec;
use crate::domain::{ApplicationKind, DecisionPurpose, SYSTEM_ACTOR, payment_violations};
use crate::error::ApplicationError;
use crate::storage::{
    ClaimRow, Conn, DecisionLinkRow, HistoryRow, Payment, ProposalRow, RequestStatus, RoundRow,
    Store, Tx,
};
use crate::upstream::Peers;
use crate::wire::{claim_to_proto, decision_links_to_proto, proposal_to_proto, round_to_proto};

/// Operation names of the request log.
pub mod op {
    /// RegisterEnterprise.
    pub const REGISTER_ENTERPRISE: &str = "RegisterEnterprise";
    /// UpdateEnterpriseContact.
    pub const UPDATE_CONTACT: &str = "UpdateEnterpriseContact";
    /// SubmitClaim.
    pub const SUBMIT_CLAIM: &str = "SubmitClaim";
    /// ApproveClaim.
    pub const APPROVE_CLAIM: &str = "ApproveClaim";
    /// RejectClaim.
    pub const REJECT_CLAIM: &str = "RejectClaim";
    /// WithdrawClaim.
    pub const WITHDRAW_CLAIM: &str = "WithdrawClaim";
    /// RecordClaimDisbursement.
    pub const DISBURSE_CLAIM: &str = "RecordClaimDisbursement";
    /// RequestClaimInformation.
    pub const REQUEST_CLAIM_INFORMATION: &str = "RequestClaimInformation";
    /// ProvideClaimInformation.
    pub const PROVIDE_CLAIM_INFORMATION: &str = "ProvideClaimInformation";
    /// ReopenClaim.
    pub const REOPEN_CLAIM: &str = "ReopenClaim";
    /// AddClaimInvoices.
    pub const ADD_CLAIM_INVOICES: &str = "AddClaimInvoices";
    /// VerifyClaimInvoice.
    pub const VERIFY_CLAIM_INVOICE: &str = "VerifyClaimInvoice";
    /// CreateSelectionRound.
    pub const CREATE_ROUND: &str = "CreateSelectionRound";
    /// CloseSelectionRound.
    pub const CLOSE_ROUND: &str = "CloseSelectionRound";
    /// SubmitProposal.
    pub const SUBMIT_PROPOSAL: &str = "SubmitProposal";
    /// WithdrawProposal.
    pub const WITHDRAW_PROPOSAL: &str = "WithdrawProposal";
    /// ScoreProposal.
    pub const SCORE_PROPOSAL: &str = "ScoreProposal";
    /// FinalizeSelectionRound.
    pub const FINALIZE_ROUND: &str = "FinalizeSelectionRound";
    /// RecordProposalDisbursement.
    pub const DISBURSE_PROPOSAL: &str = "RecordProposalDisbursement";
    /// UploadDocument.
    pub const UPLOAD_DOCUMENT: &str = "UploadDocument";
    /// FileObjection.
    pub const FILE_OBJECTION: &str = "FileObjection";
    /// DecideObjection.
    pub const DECIDE_OBJECTION: &str = "DecideObjection";
}

/// What the workflow needs of the service's settings, in the units it works in.
#[derive(Clone, Debug)]
pub struct WorkflowSettings {
    /// Pool funding compute-voucher claims.
    pub compute_voucher_pool_id: String,
    /// Hold lifetime of a claim's reservation, seconds; 0 for the pool's default.
    pub hold_seconds: i64,
    /// Age a step must reach before the reconciler takes it over, µs.
    pub reconcile_grace_us: i64,
    /// Longest a submission waits for its turn in its pool's line before answering SUBMITTED
    /// (the reconciler funds it when its turn comes): the time allowed to a peer call.
    pub turn_wait: std::time::Duration,
    /// Review period of a claim, µs.
    pub review_period_us: i64,
    /// Margin before its expiry within which a claim's hold is extended, µs; 0: never.
    pub hold_extend_margin_us: i64,
}

/// Microseconds in a second.
const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl From<&crate::settings::Settings> for WorkflowSettings {
    fn from(section: &crate::settings::Settings) -> Self {
        WorkflowSettings {
            compute_voucher_pool_id: section.compute_voucher_pool_id.clone(),
            hold_seconds: section.hold_seconds,
            reconcile_grace_us: i64::try_from(section.reconcile_grace_ms)
                .expect("validated to at most an hour")
                * 1_000,
            turn_wait: std::time::Duration::from_millis(section.upstream_timeout_ms),
            review_period_us: section.review_period_days * MICROS_PER_DAY,
            hold_extend_margin_us: section.hold_extend_margin_seconds * MICROS_PER_SECOND,
        }
    }
}

/// Who asks, and with which request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The request id as the caller sent it.
    pub request_id: RequestId,
    /// The request id scoped to the authenticated caller: the key of the request log, so two
    /// callers using the same request id never meet.
    pub key: String,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The caller's identity, as histories record it.
    pub actor: String,
    /// The enterprises the caller may see and touch.
    pub tenant: Tenant,
    /// The expert the caller scores as, if it holds that role.
    pub expert_id: Option<String>,
    /// The audit record the change writes.
    pub audit: Option<AuditRecord>,
}

/// A validated payment record.
#[derive(Clone, Debug)]
pub struct Disbursement {
    /// Claim or proposal.
    pub id: String,
    /// Payment reference.
    pub payment_reference: String,
    /// Payment date.
    pub payment_date: NaiveDate,
    /// Amount paid.
    pub amount: Money,
}

/// The orchestrator.
#[derive(Clone, Debug)]
pub struct Workflow {
    store: Store,
    peers: Peers,
    settings: Arc<WorkflowSettings>,
    relay_wake: Arc<Notify>,
    promotion: Arc<tokio::sync::Mutex<()>>,
    /// The submissions of this process waiting for their claim's turn, by claim: told when
    /// the claim leaves its pool's line.
    waiters: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Notify>>>>,
    /// This process's numbering rounds, by pool ([`Workflow::number_line`]).
    numbering: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<funding::Rounds>>>>,
    /// The document store and its limits; `None` until [`Workflow::with_documents`].
    documents: Option<Arc<Documents>>,
}

impl Workflow {
    /// A workflow over `store` talking to `peers`.
    pub fn new(store: Store, peers: Peers, settings: WorkflowSettings) -> Self {
        Workflow {
            store,
            peers,
            settings: Arc::new(settings),
            relay_wake: Arc::new(Notify::new()),
            promotion: Arc::new(tokio::sync::Mutex::new(())),
            waiters: Arc::default(),
            numbering: Arc::default(),
            documents: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The peers.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Wakes the relay after events were committed.
    pub fn relay_wake(&self) -> Arc<Notify> {
        self.relay_wake.clone()
    }
}

/// `claim` may not change from its state.
fn claim_transition(claim: &ClaimRow) -> ApplicationError {
    ApplicationError::transition(
        crate::error::Subject::Claim(claim.claim_id.clone()),
        claim.state,
    )
}

fn fen(amount: i64) -> Money {
    Money::from_fen(amount).expect("stored amounts are valid money")
}

// ---------------------------------------------------------------------------------------------
// The request log: one-transaction requests, and requests that take several steps
// ---------------------------------------------------------------------------------------------

/// A one-transaction request after its key was claimed.
enum Begun<R> {
    /// Done before: the original response.
    Replay(R),
    /// New: do the work in this transaction and finish with [`Workflow::finish_request`].
    Fresh(Tx),
}

/// What the request log knows of a multi-step request.
enum Known<R> {
    /// Done: the original response.
    Replay(R),
    /// Started on this claim or round and not finished.
    InProgress(String),
    /// Never seen.
    New,
}

/// A request found in the log after a refusal: a concurrent duplicate's work.
enum Followed<R> {
    /// Done: the original response.
    Replay(R),
    /// Started on this claim or round and not finished.
    InProgress(String),
}

/// The application a submission works on.
enum Submission<R> {
    /// The submission was done before: the original response.
    Replay(R),
    /// The application recorded for the request (now or by an earlier try).
    Recorded(String),
}

impl Workflow {
    fn request_id_reused(caller: &Caller) -> ApplicationError {
        ApplicationError::RequestIdReused {
            request_id: caller.request_id.to_string(),
        }
    }

    /// Begins the transaction of a one-transaction request and claims its key in it.
    async fn begin_request<R: Message + Default>(
        &self,
        caller: &Caller,
        operation: &str,
    ) -> Result<Begun<R>, ApplicationError> {
        let mut tx = self.store.begin().await?;
        match self
            .store
            .start_request(&mut tx, &caller.key, operation, &caller.fingerprint)
            .await?
        {
            Claim::Fresh => Ok(Begun::Fresh(tx)),
            Claim::Replay(response) => Ok(Begun::Replay(response)),
            Claim::Reused => Err(Self::request_id_reused(caller)),
        }
    }

    /// Stores the response of a request begun with [`Workflow::begin_request`] and commits.
    async fn finish_request<R: Message>(
        &self,
        mut tx: Tx,
        caller: &Caller,
        response: R,
    ) -> Result<R, ApplicationError> {
        self.store
            .store_response(&mut tx, &caller.key, &response)
            .await?;
        self.commit(tx).await?;
        Ok(response)
    }

    /// Stores the response of a multi-step request recorded in the request log (by
    /// [`Workflow::submission`]) with its key, in `tx`, and commits; when a concurrent
    /// duplicate of the request stored its response first, that response is the answer.
    async fn finish_recorded<R: Message + Default>(
        &self,
        mut tx: Tx,
        caller: &Caller,
        operation: &str,
        response: R,
    ) -> Result<R, ApplicationError> {
        match self
            .store
            .store_recorded_response(
                &mut tx,
                &caller.key,
                operation,
                &caller.fingerprint,
                &response,
            )
            .await?
        {
            Claim::Fresh => {
                self.commit(tx).await?;
                Ok(response)
            }
            Claim::Replay(stored) => Ok(stored),
            Claim::Reused => Err(Self::request_id_reused(caller)),
        }
    }

    /// What the request log knows of a multi-step request.
    async fn known_request<R: Message + Default>(
        &self,
        caller: &Caller,
        operation: &str,
    ) -> Result<Known<R>, ApplicationError> {
        let mut conn = self.store.read().await?;
        match self
            .store
            .request_status::<R>(&mut conn, &caller.key, operation, &caller.fingerprint)
            .await?
        {
            RequestStatus::Replay(response) => Ok(Known::Replay(response)),
            RequestStatus::InProgress(subject) => Ok(Known::InProgress(subject)),
            RequestStatus::New => Ok(Known::New),
            RequestStatus::Reused => Err(Self::request_id_reused(caller)),
        }
    }

    /// What to answer after `refused`, a refusal met before the request was recorded: a
    /// concurrent duplicate of the same request may have recorded (or finished) it meanwhile,
    /// and its effect may be why this one was refused. Waits for a duplicate still in flight
    /// (the probe enters the key as a one-transaction request would, and rolls back), then
    /// follows it; `REQUEST_ID_REUSED` when the id holds another request; `refused` itself
    /// when the log holds nothing of the id.
    async fn after_refusal<R: Message + Default>(
        &self,
        caller: &Caller,
        operation: &str,
        refused: ApplicationError,
    ) -> Result<Followed<R>, ApplicationError> {
        match self.begin_request::<R>(caller, operation).await? {
            Begun::Replay(response) => return Ok(Followed::Replay(response)),
            Begun::Fresh(tx) => drop(tx),
        }
        match self.known_request::<R>(caller, operation).await? {
            Known::Replay(response) => Ok(Followed::Replay(response)),
            Known::InProgress(subject) => Ok(Followed::InProgress(subject)),
            Known::New => Err(refused),
        }
    }

    /// The application a submission works on: the one recorded for the request, or a new one
    /// recorded by `create` (which answers `None` when a concurrent duplicate of the request
    /// recorded it first).
    async fn submission<R, F, Fut>(
        &self,
        caller: &Caller,
        operation: &str,
        create: F,
    ) -> Result<Submission<R>, ApplicationError>
    where
        R: Message + Default,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<String>, ApplicationError>>,
    {
        // Two rounds at most: the second sees the application a concurrent duplicate recorded.
        for _ in 0..2 {
            let recorded = match self.known_request::<R>(caller, operation).await? {
                Known::Replay(response) => return Ok(Submission::Replay(response)),
                Known::InProgress(id) => Some(id),
                Known::New => create().await?,
            };
            if let Some(id) = recorded {
                return Ok(Submission::Recorded(id));
            }
        }
        Err(Self::request_id_reused(caller))
    }

    /// Stores `response` for a request recorded in the request log (a multi-step request that
    /// the reconciler may finish on the caller's behalf).
    async fn finish_progress<R: Message + Default>(
        &self,
        tx: &mut Tx,
        request_id: &str,
        operation: &str,
        response: &R,
    ) -> Result<(), ApplicationError> {
        let Some(fingerprint) = self
            .store
            .progress_fingerprint(tx, request_id, operation)
            .await?
        else {
            return Ok(());
        };
        match self
            .store
            .start_request::<R>(tx, request_id, operation, &fingerprint)
            .await?
        {
            Claim::Fresh => self.store.store_response(tx, request_id, response).await?,
            Claim::Replay(_) => {}
            Claim::Reused => {
                return Err(ApplicationError::RequestIdReused {
                    request_id: subsidy_common::idempotency::request_id_of(request_id).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Appends the audit record of `caller`'s change, naming `targets`, to `tx` (the change's
    /// own transaction).
    async fn audit(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        targets: &[&str],
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        if let Some(record) = &caller.audit {
            subsidy_common::audit::append(tx, &[record.with_targets(targets)], now_us).await?;
        }
        Ok(())
    }

    /// Commits `tx` and wakes the relay for the events it holds.
    async fn commit(&self, tx: Tx) -> Result<(), ApplicationError> {
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Recording a change: the row, its history entry, its event
// ---------------------------------------------------------------------------------------------

/// One state change to record with a history entry.
struct Change<'a> {
    from: Option<&'static str>,
    to: &'static str,
    actor: &'a str,
    reason: String,
    request_id: &'a str,
}

impl<'a> Change<'a> {
    /// The change as entry `sequence` of an application's history, made at `now_us`.
    fn entry(self, application_id: &str, sequence: i64, now_us: i64) -> HistoryRow {
        HistoryRow {
            application_id: application_id.to_owned(),
            sequence,
            from_state: self.from.map(str::to_owned),
            to_state: self.to.to_owned(),
            actor: self.actor.to_owned(),
            reason: self.reason,
            request_id: self.request_id.to_owned(),
            created_us: now_us,
        }
    }

    /// A change the service makes on its own.
    fn system(from: &'static str, to: &'static str, reason: impl Into<String>) -> Self {
        Change {
            from: Some(from),
            to,
            actor: SYSTEM_ACTOR,
            reason: reason.into(),
            request_id: "",
        }
    }

    /// A change `caller` asked for (`from` is `None` for the creating entry).
    fn by(
        caller: &'a Caller,
        from: Option<&'static str>,
        to: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Change {
            from,
            to,
            actor: &caller.actor,
            reason: reason.into(),
            request_id: caller.request_id.as_str(),
        }
    }
}

/// A claim or a proposal: a row with a history, saved with its change and its event.
trait Application {
    /// Its identifier, and the revision and last-change time a recorded change advances.
    fn stamp(&mut self) -> (&str, &mut i64, &mut i64);

    /// Writes the locked row back.
    fn write(
        &self,
        store: &Store,
        tx: &mut Tx,
    ) -> impl Future<Output = Result<(), ApplicationError>> + Send;
}

impl Application for ClaimRow {
    fn stamp(&mut self) -> (&str, &mut i64, &mut i64) {
        (&self.claim_id, &mut self.revision, &mut self.updated_us)
    }

    async fn write(&self, store: &Store, tx: &mut Tx) -> Result<(), ApplicationError> {
        Ok(store.save_claim(tx, self).await?)
    }
}

impl Application for ProposalRow {
    fn stamp(&mut self) -> (&str, &mut i64, &mut i64) {
        (&self.proposal_id, &mut self.revision, &mut self.updated_us)
    }

    async fn write(&self, store: &Store, tx: &mut Tx) -> Result<(), ApplicationError> {
        Ok(store.save_proposal(tx, self).await?)
    }
}

impl Workflow {
    /// Links an application to the rules service's decision `decision_id` in `tx`, the
    /// transaction recording what the decision did (an empty id, from a rules service that
    /// stores no decisions, links nothing).
    async fn link_decision(
        &self,
        tx: &mut Tx,
        application_id: &str,
        (decision_id, purpose): (&str, DecisionPurpose),
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        if decision_id.is_empty() {
            return Ok(());
        }
        let link = DecisionLinkRow {
            application_id: application_id.to_owned(),
            decision_id: decision_id.to_owned(),
            purpose,
            linked_us: now_us,
        };
        Ok(self.store.link_decision(tx, &link).await?)
    }

    /// Appends entry `sequence` of an application's history.
    async fn append_history(
        &self,
        tx: &mut Tx,
        application_id: &str,
        sequence: i64,
        change: Change<'_>,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        let entry = change.entry(application_id, sequence, now_us);
        Ok(self.store.append_history(tx, &entry).await?)
    }

    /// Saves locked claims as [`Workflow::save_change`] saves each (a history entry for each
    /// change, advancing the claim's revision, and its event), in three statements: the
    /// entries, the rows, the events.
    async fn save_claim_changes(
        &self,
        tx: &mut Tx,
        changes: Vec<(ClaimRow, Option<Change<'_>>, Option<EventSpec>)>,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        let mut entries = Vec::new();
        let mut rows = Vec::with_capacity(changes.len());
        let mut events = Vec::new();
        for (mut row, change, event) in changes {
            if let Some(change) = change {
                row.revision += 1;
                row.updated_us = now_us;
                entries.push(change.entry(&row.claim_id, row.revision, now_us));
            }
            rows.push(row);
            events.extend(event);
        }
        self.store.append_histories(tx, &entries).await?;
        self.store.save_claims(tx, &rows).await?;
        self.append_events(tx, events, now_us).await
    }

    /// Saves a locked claim or proposal, appending a history entry (advancing its revision)
    /// and an event when given.
    async fn save_change<A: Application>(
        &self,
        tx: &mut Tx,
        row: &mut A,
        change: Option<Change<'_>>,
        event: Option<EventSpec>,
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        if let Some(change) = change {
            let (id, revision, updated_us) = row.stamp();
            *revision += 1;
            *updated_us = now_us;
            let (id, sequence) = (id.to_owned(), *revision);
            self.append_history(tx, &id, sequence, change, now_us)
                .await?;
        }
        row.write(&self.store, tx).await?;
        if let Some(event) = event {
            self.append_event(tx, event, now_us).await?;
        }
        Ok(())
    }

    /// Records a payment of `cmd` by `caller` for an application approved or awarded
    /// `expected`: checked against the amount and the Asia/Shanghai calendar at `now_us`.
    /// Returns the payment and its history reason.
    fn payment(
        cmd: &Disbursement,
        expected: Money,
        caller: &Caller,
        now_us: i64,
    ) -> Result<(Payment, String), ApplicationError> {
        let violations = payment_violations(
            cmd.amount,
            expected,
            cmd.payment_date,
            shanghai_date_of_us(now_us),
        );
        if !violations.is_empty() {
            return Err(ApplicationError::invalid_fields(violations));
        }
        let payment = Payment {
            reference: cmd.payment_reference.clone(),
            date: cmd.payment_date.format("%Y-%m-%d").to_string(),
            fen: cmd.amount.fen(),
            by: caller.actor.clone(),
            recorded_us: now_us,
        };
        let reason = format!(
            "{} paid on {} (payment {})",
            cmd.amount, payment.date, cmd.payment_reference
        );
        Ok((payment, reason))
    }
}

// ---------------------------------------------------------------------------------------------
// Responses and reads shared by the rooms
// ---------------------------------------------------------------------------------------------

impl Workflow {
    /// A claim as a response reports it (with its waitlist position).
    async fn claim_response(
        &self,
        conn: &mut Conn,
        claim: &ClaimRow,
    ) -> Result<pb::Claim, ApplicationError> {
        let position = self.store.waitlist_position(conn, claim).await?;
        let links = self.store.decision_links(conn, &claim.claim_id).await?;
        let invoices = self.store.claim_invoices(conn, &claim.claim_id).await?;
        let mut wire = claim_to_proto(claim, position);
        wire.decisions = decision_links_to_proto(&links);
        invoices::set_invoices(&mut wire, &invoices);
        wire.public_notice = self.notice_response(conn, &claim.claim_id).await?;
        Ok(wire)
    }

    /// A proposal as a response reports it (with its scores).
    async fn proposal_response(
        &self,
        conn: &mut Conn,
        proposal: &ProposalRow,
    ) -> Result<pb::Proposal, ApplicationError> {
        let scores = self.store.scores(conn, &proposal.proposal_id).await?;
        let links = self
            .store
            .decision_links(conn, &proposal.proposal_id)
            .await?;
        let mut wire = proposal_to_proto(proposal, &scores);
        wire.decisions = decision_links_to_proto(&links);
        wire.public_notice = self.notice_response(conn, &proposal.proposal_id).await?;
        Ok(wire)
    }

    /// A round as a response reports it now (with its proposal count).
    async fn round_response(
        &self,
        conn: &mut Conn,
        round: &RoundRow,
    ) -> Result<pb::SelectionRound, ApplicationError> {
        let count = self
            .store
            .proposal_count(&mut *conn, &round.round_id)
            .await?;
        let now = self.store.now_us(conn).await?;
        Ok(round_to_proto(round, count, now))
    }

    /// The history of a claim or proposal after entry `after_sequence`, at most `limit`
    /// entries; `NOT_FOUND` when there is no such application.
    pub async fn history(
        &self,
        kind: ApplicationKind,
        application_id: &str,
        after_sequence: i64,
        limit: i64,
        tenant: &Tenant,
    ) -> Result<Vec<HistoryRow>, ApplicationError> {
        let mut conn = self.store.read().await?;
        // Another tenant's application is not found.
        let exists = match kind {
            ApplicationKind::Claim => self
                .store
                .get_claim(&mut conn, application_id)
                .await?
                .is_some_and(|claim| tenant.sees(&claim.enterprise_uscc)),
            ApplicationKind::Proposal => self
                .store
                .get_proposal(&mut conn, application_id)
                .await?
                .is_some_and(|proposal| tenant.sees(&proposal.applicant_uscc)),
        };
        if !exists {
            return Err(match kind {
                ApplicationKind::Claim => ApplicationError::claim_not_found(application_id),
                ApplicationKind::Proposal => ApplicationError::proposal_not_found(application_id),
            });
        }
        Ok(self
            .store
            .history(&mut conn, application_id, after_sequence, limit)
            .await?)
    }
}
