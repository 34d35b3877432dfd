//! The invoices of a compute-voucher claim (issue 16): given on submission or added by the
//! applicant while the claim is in review, verified one by one by a reviewer; approval settles
//! on the total of the verified ones.
//!
//! An invoice (code and number) is claimed at most once unless its claim was withdrawn, like
//! the contract: a partial unique index enforces it, so of two concurrent claims with one
//! invoice only one is recorded; the other finds its insert refused and rolls back whole.

use chrono::NaiveDate;
use subsidy_common::Money;
use subsidy_common::time::shanghai_date_of_us;
use subsidy_proto::application as pb;

use super::{Begun, Caller, Change, Workflow, claim_transition, fen, op};
use crate::domain::invoices::{
    INVOICES_PER_CLAIM_MAX, InvoiceProblem, InvoiceTerms, InvoiceVerification, NewInvoice,
    check_invoices,
};
use crate::error::ApplicationError;
use crate::storage::{Conn, InvoiceRow, Tx};
use crate::wire;

/// A validated `AddClaimInvoices`.
#[derive(Clone, Debug)]
pub struct AddInvoices {
    /// Claim.
    pub claim_id: String,
    /// The invoices to add.
    pub invoices: Vec<NewInvoice>,
}

/// A validated `VerifyClaimInvoice`.
#[derive(Clone, Debug)]
pub struct VerifyInvoice {
    /// Claim.
    pub claim_id: String,
    /// The invoice's code (empty for a fully digitalised invoice).
    pub invoice_code: String,
    /// The invoice's number.
    pub invoice_number: String,
    /// VERIFIED or REJECTED.
    pub verification: InvoiceVerification,
    /// The reviewer's note.
    pub note: String,
    /// The reviewer.
    pub reviewer_id: String,
}

/// The claim's contract as invoices are checked against it.
pub(super) struct InvoicedContract<'a> {
    /// The claim (empty in errors while a submission is not recorded).
    pub claim_id: &'a str,
    /// Whether errors name the claim.
    pub recorded: bool,
    /// Seller.
    pub seller: &'a str,
    /// Buyer.
    pub buyer: &'a str,
    /// Signing date.
    pub signing_date: Option<&'a subsidy_proto::google::r#type::Date>,
    /// Contract total, fen.
    pub total_fen: i64,
}

/// The total of `invoices` that are VERIFIED (or of all when `verified_only` is false).
pub(super) fn invoices_total(invoices: &[InvoiceRow], verified_only: bool) -> Money {
    fen(invoices
        .iter()
        .filter(|i| !verified_only || i.verification == InvoiceVerification::Verified)
        .map(|i| i.amount_fen)
        .sum())
}

/// The wire form of a claim's invoices, with its invoiced and verified totals set on `claim`.
pub fn set_invoices(claim: &mut pb::Claim, invoices: &[InvoiceRow]) {
    claim.invoices = invoices.iter().map(wire::invoice_to_proto).collect();
    claim.invoiced_amount = Some(invoices_total(invoices, false).to_proto());
    claim.verified_invoiced_amount = Some(invoices_total(invoices, true).to_proto());
}

/// Checks `new` invoices against the claim's contract and its invoices so far (`existing`) on
/// the Asia/Shanghai date of `now_us`: at most [`INVOICES_PER_CLAIM_MAX`], the contract's
/// parties, dated from its signing to today, none repeated, their total within the contract's.
fn check_new_invoices(
    contract: &InvoicedContract<'_>,
    existing: &[InvoiceRow],
    new: &[NewInvoice],
    now_us: i64,
) -> Result<(), ApplicationError> {
    let claim_id = if contract.recorded {
        contract.claim_id.to_owned()
    } else {
        String::new()
    };
    let contract_total = fen(contract.total_fen);
    let signing_date = contract
        .signing_date
        .and_then(|d| {
            NaiveDate::from_ymd_opt(
                d.year,
                u32::try_from(d.month).ok()?,
                u32::try_from(d.day).ok()?,
            )
        })
        .unwrap_or(NaiveDate::MIN);
    let terms = InvoiceTerms {
        seller: contract.seller,
        buyer: contract.buyer,
        signing_date,
        today: shanghai_date_of_us(now_us),
        contract_total,
    };
    let keys: Vec<(String, String)> = existing
        .iter()
        .map(|i| (i.invoice_code.clone(), i.invoice_number.clone()))
        .collect();
    let claimed = |(invoice_code, invoice_number): (String, String)| {
        ApplicationError::InvoiceAlreadyClaimed {
            claim_id: claim_id.clone(),
            invoice_code,
            invoice_number,
        }
    };
    if existing.len() + new.len() > INVOICES_PER_CLAIM_MAX {
        return Err(ApplicationError::Invalid(vec![
            subsidy_proto::status::FieldViolation::new(
                "invoices",
                format!("a claim carries at most {INVOICES_PER_CLAIM_MAX} invoices"),
            ),
        ]));
    }
    check_invoices(&terms, &keys, invoices_total(existing, false), new).map_err(|problem| {
        match problem {
            InvoiceProblem::PartyMismatch { key } => ApplicationError::InvoicePartyMismatch {
                claim_id: claim_id.clone(),
                invoice_code: key.0,
                invoice_number: key.1,
            },
            InvoiceProblem::DateOutOfRange { key } => ApplicationError::InvoiceDateOutOfRange {
                claim_id: claim_id.clone(),
                invoice_code: key.0,
                invoice_number: key.1,
            },
            InvoiceProblem::Repeated { key } => claimed(key),
            InvoiceProblem::TotalExceedsContract { invoiced } => {
                ApplicationError::InvoiceTotalExceedsContract {
                    claim_id: claim_id.clone(),
                    invoiced,
                    contract_total,
                }
            }
        }
    })?;
    Ok(())
}

impl Workflow {
    /// Checks `new` invoices against the claim's contract and its invoices so far, and records
    /// them; an invoice claimed elsewhere (found, or colliding on insert with a concurrent
    /// claim) refuses them all (the caller's transaction rolls back).
    pub(super) async fn record_invoices(
        &self,
        tx: &mut Tx,
        contract: &InvoicedContract<'_>,
        new: &[NewInvoice],
        now_us: i64,
    ) -> Result<(), ApplicationError> {
        if new.is_empty() {
            return Ok(());
        }
        let claim_id = if contract.recorded {
            contract.claim_id.to_owned()
        } else {
            String::new()
        };
        let existing = self.store.claim_invoices(tx, contract.claim_id).await?;
        check_new_invoices(contract, &existing, new, now_us)?;
        let first = i64::try_from(existing.len()).expect("at most INVOICES_PER_CLAIM_MAX");
        for (offset, invoice) in (0_i64..).zip(new) {
            let row = InvoiceRow {
                claim_id: contract.claim_id.to_owned(),
                invoice_code: invoice.code.clone(),
                invoice_number: invoice.number.clone(),
                position: first + offset,
                issue_date: invoice.issue_date.format("%Y-%m-%d").to_string(),
                amount_fen: invoice.amount.fen(),
                seller_uscc: invoice.seller.as_str().to_owned(),
                buyer_uscc: invoice.buyer.as_str().to_owned(),
                verification: InvoiceVerification::Unverified,
                reviewer_id: String::new(),
                review_note: String::new(),
                verified_us: None,
                added_us: now_us,
            };
            if !self.store.insert_invoice(tx, &row).await? {
                return Err(ApplicationError::InvoiceAlreadyClaimed {
                    claim_id,
                    invoice_code: row.invoice_code,
                    invoice_number: row.invoice_number,
                });
            }
        }
        Ok(())
    }

    /// Whether `new` invoices of a claim not recorded yet would be accepted with it now, as
    /// read before the transaction recording it (which decides for good): none refused by
    /// the checks of [`Workflow::record_invoices`] on the database's date, none claimed by
    /// another claim.
    pub(super) async fn new_invoices_acceptable(
        &self,
        conn: &mut Conn,
        contract: &InvoicedContract<'_>,
        new: &[NewInvoice],
    ) -> Result<bool, ApplicationError> {
        if new.is_empty() {
            return Ok(true);
        }
        let now = self.store.now_us(conn).await?;
        if check_new_invoices(contract, &[], new, now).is_err() {
            return Ok(false);
        }
        for invoice in new {
            if self
                .store
                .invoice_claimed(conn, &invoice.code, &invoice.number)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The invoices of a claim.
    pub(super) async fn invoices_of(
        &self,
        conn: &mut Conn,
        claim_id: &str,
    ) -> Result<Vec<InvoiceRow>, ApplicationError> {
        Ok(self.store.claim_invoices(conn, claim_id).await?)
    }

    /// Adds invoices to a claim in review of the caller's enterprise.
    pub async fn add_claim_invoices(
        &self,
        cmd: AddInvoices,
        caller: &Caller,
    ) -> Result<pb::AddClaimInvoicesResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::ADD_CLAIM_INVOICES).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if !caller.tenant.sees(&claim.enterprise_uscc) {
            return Err(ApplicationError::claim_not_found(&cmd.claim_id));
        }
        if !claim.state.in_review() || claim.commit_intent_fen.is_some() {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        let stored = wire::contract_of(&claim);
        let contract = InvoicedContract {
            claim_id: &claim.claim_id,
            recorded: true,
            seller: &claim.seller_uscc,
            buyer: &claim.enterprise_uscc,
            signing_date: stored.signing_date.as_ref(),
            total_fen: claim.contract_total_fen,
        };
        self.record_invoices(&mut tx, &contract, &cmd.invoices, now)
            .await?;
        let numbers: Vec<String> = cmd.invoices.iter().map(invoice_label).collect();
        let state = claim.state.as_str();
        let change = Change::by(
            caller,
            Some(state),
            state,
            format!("invoices added: {}", numbers.join(", ")),
        );
        claim.step_us = now;
        self.save_change(&mut tx, &mut claim, Some(change), None, now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        let response = pb::AddClaimInvoicesResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// Records a reviewer's verification of one invoice of a claim in review.
    pub async fn verify_claim_invoice(
        &self,
        cmd: VerifyInvoice,
        caller: &Caller,
    ) -> Result<pb::VerifyClaimInvoiceResponse, ApplicationError> {
        let mut tx = match self.begin_request(caller, op::VERIFY_CLAIM_INVOICE).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(response) => return Ok(response),
        };
        let mut claim = self.locked_claim(&mut tx, &cmd.claim_id).await?;
        if !claim.state.in_review() || claim.commit_intent_fen.is_some() {
            return Err(claim_transition(&claim));
        }
        let now = self.store.now_us(&mut tx).await?;
        let row = InvoiceRow {
            claim_id: claim.claim_id.clone(),
            invoice_code: cmd.invoice_code.clone(),
            invoice_number: cmd.invoice_number.clone(),
            position: 0,
            issue_date: String::new(),
            amount_fen: 0,
            seller_uscc: String::new(),
            buyer_uscc: String::new(),
            verification: cmd.verification,
            reviewer_id: cmd.reviewer_id.clone(),
            review_note: cmd.note.clone(),
            verified_us: Some(now),
            added_us: now,
        };
        if !self.store.verify_invoice(&mut tx, &row).await? {
            return Err(ApplicationError::InvoiceNotFound {
                claim_id: claim.claim_id.clone(),
                invoice_code: cmd.invoice_code,
                invoice_number: cmd.invoice_number,
            });
        }
        let state = claim.state.as_str();
        let note = if cmd.note.is_empty() {
            String::new()
        } else {
            format!(": {}", cmd.note)
        };
        let change = Change::by(
            caller,
            Some(state),
            state,
            format!(
                "invoice {} {} by {}{note}",
                label(&cmd.invoice_code, &cmd.invoice_number),
                cmd.verification.as_str().to_lowercase(),
                cmd.reviewer_id
            ),
        );
        claim.step_us = now;
        self.save_change(&mut tx, &mut claim, Some(change), None, now)
            .await?;
        self.audit(&mut tx, caller, &[&claim.claim_id], now).await?;
        let response = pb::VerifyClaimInvoiceResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.finish_request(tx, caller, response).await
    }

    /// The amount an approval of the claim settles on: the total of its VERIFIED invoices,
    /// checked against the amount the reviewer sent, if any.
    pub(super) async fn verified_amount(
        &self,
        conn: &mut Conn,
        claim_id: &str,
        sent: Option<Money>,
    ) -> Result<Money, ApplicationError> {
        let invoices = self.invoices_of(conn, claim_id).await?;
        let verified = invoices_total(&invoices, true);
        if verified.is_zero() {
            return Err(ApplicationError::NoVerifiedInvoice {
                claim_id: claim_id.to_owned(),
            });
        }
        if sent.is_some_and(|sent| sent != verified) {
            return Err(ApplicationError::VerifiedAmountMismatch {
                claim_id: claim_id.to_owned(),
                verified_invoiced: verified,
            });
        }
        Ok(verified)
    }
}

/// An invoice as histories name it: `code/number`, or the number alone.
fn label(code: &str, number: &str) -> String {
    if code.is_empty() {
        number.to_owned()
    } else {
        format!("{code}/{number}")
    }
}

fn invoice_label(invoice: &NewInvoice) -> String {
    label(&invoice.code, &invoice.number)
}
