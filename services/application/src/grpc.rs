//! The edge of `subsidy.application.v1.ApplicationService`: each RPC parses and validates its
//! request with the shared `edge` kit (every violation at once, nothing written), calls one use
//! case of the workflow, and renders the answer through `wire`. List tokens are bound to every
//! filter of their list. Errors become statuses in `error.rs`.

mod documents;
mod exports;
mod fields;
mod invoices;
mod publicity;
mod statistics;

use subsidy_common::audit::AuditRecord;
use subsidy_common::auth::{self, Tenant};
use subsidy_common::edge::{self, PageLimits, PageRequest, Violations, keyset};
use subsidy_common::idempotency::fingerprint;
use subsidy_proto::application as pb;
use tonic::{Request, Response, Status};

use self::fields::{
    attachments, contact, contract, disbursement, division_code, keyset_page, required_enum,
};
use crate::domain::invoices::{InvoiceVerification, is_invoice_identity};
use crate::domain::publicity::OBJECTION_TEXT_CHARS_MAX;
use crate::domain::{
    ApplicationKind, ClaimFilter, DESCRIPTION_LEN_MAX, DIVISION_CODE_LEN, IDENTIFIER_LEN_MAX,
    INFORMATION_DOCUMENTS_MAX, NAME_LEN_MAX, NOTE_LEN_MAX, ProposalFilter, REASON_LEN_MAX,
    RejectionReason, SCORE_MAX, is_pool_id,
};
use crate::error::ApplicationError;
use crate::wire;
use crate::workflow::{
    AddInvoices, ApproveClaim, Caller, ClaimView, CreateRound, DecideObjection, FileObjection,
    ProposalView, ProvideInformation, RegisterEnterprise, RejectClaim, ReopenClaim,
    RequestInformation, ScoreProposal, SubmitClaim, SubmitProposal, VerifyInvoice, Workflow, op,
};

pub use crate::error::DOMAIN;

/// Pages of `ListEnterprises`.
const ENTERPRISES_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListClaims`.
const CLAIMS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListSelectionRounds`.
const ROUNDS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListProposals`.
const PROPOSALS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListApplicationHistory`.
const HISTORY_PAGE: PageLimits = PageLimits::LONG;
/// Pages of `ListDocuments`.
const DOCUMENTS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListPublicNotices`.
const NOTICES_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of `ListObjections`.
const OBJECTIONS_PAGE: PageLimits = PageLimits::STANDARD;

/// What a parse that returned `Some` for every field guarantees.
const VALIDATED: &str = "a request without violations has every field";

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses a request that changes something: the caller's identity, the request id and the
/// fields `parse` reads (it returns `None` only after recording a violation).
fn mutation<T: prost::Message, C>(
    request: Request<T>,
    operation: &str,
    request_id: fn(&T) -> &str,
    parse: impl FnOnce(&mut Violations, &T) -> Option<C>,
) -> Result<(C, Caller), Status> {
    let authenticated = auth::Caller::of(&request)?.clone();
    let request = request.into_inner();
    let mut v = Violations::new();
    let id = v.request_id(request_id(&request));
    let command = parse(&mut v, &request);
    v.check(ApplicationError::Invalid)?;
    let id = id.expect(VALIDATED);
    let caller = Caller {
        key: authenticated.idempotency_key(id.as_str()),
        fingerprint: fingerprint(operation, &request),
        actor: authenticated.actor(),
        tenant: authenticated.tenant(),
        expert_id: authenticated.principal.expert_id.clone(),
        audit: Some(AuditRecord::change(&authenticated, &[], Some(id.as_str()))),
        request_id: id,
    };
    Ok((command.expect(VALIDATED), caller))
}

/// The reviewer a review records: always the authenticated caller. The request's
/// `reviewer_id` may be left empty or repeat the caller's subject; any other name is refused,
/// so nobody reviews under another reviewer's name.
fn reviewer(v: &mut Violations, given: &str, subject: &str) -> Option<String> {
    if given.is_empty() || given == subject {
        Some(subject.to_owned())
    } else {
        v.add(
            "reviewer_id",
            format!("must be empty or the authenticated reviewer's own subject ({subject})"),
        );
        None
    }
}

/// Parses a request that reads: the fields `parse` reads (it returns `None` only after
/// recording a violation), and which tenants the caller may see.
fn query<T, C>(
    request: Request<T>,
    parse: impl FnOnce(&mut Violations, &T) -> Option<C>,
) -> Result<(C, Tenant), Status> {
    let tenant = auth::Caller::of(&request)?.tenant();
    let request = request.into_inner();
    let mut v = Violations::new();
    let parsed = parse(&mut v, &request);
    v.check(ApplicationError::Invalid)?;
    Ok((parsed.expect(VALIDATED), tenant))
}

/// The wire form of a claim as read, with its decisions.
fn claim_view(view: &ClaimView) -> pb::Claim {
    let mut claim = wire::claim_to_proto(&view.claim, view.waitlist_position);
    claim.decisions = wire::decision_links_to_proto(&view.decisions);
    crate::workflow::set_invoices(&mut claim, &view.invoices);
    claim
}

/// The wire form of a proposal as read, with its scores and decisions.
fn proposal_view(view: &ProposalView) -> pb::Proposal {
    let mut proposal = wire::proposal_to_proto(&view.proposal, &view.scores);
    proposal.decisions = wire::decision_links_to_proto(&view.decisions);
    proposal
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// The gRPC face of the application service.
#[derive(Clone, Debug)]
pub struct ApplicationGrpc {
    workflow: Workflow,
}

impl ApplicationGrpc {
    /// Serves `workflow`.
    pub fn new(workflow: Workflow) -> Self {
        Self { workflow }
    }
}

#[tonic::async_trait]
impl pb::application_service_server::ApplicationService for ApplicationGrpc {
    async fn register_enterprise(
        &self,
        request: Request<pb::RegisterEnterpriseRequest>,
    ) -> Result<Response<pb::RegisterEnterpriseResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::REGISTER_ENTERPRISE,
            |r| &r.request_id,
            |v, r| {
                let uscc = v.uscc("uscc", &r.uscc);
                let name = v.text("name", &r.name, NAME_LEN_MAX);
                let contact = contact(v, &r.contact_email, &r.contact_phone);
                let division = &r.registration_division_code;
                if !division.is_empty() {
                    division_code(v, "registration_division_code", division);
                }
                let (uscc, (contact_email, contact_phone)) = (uscc?, contact?);
                Some(RegisterEnterprise {
                    registration_division_code: if division.is_empty() {
                        uscc.division_code().to_owned()
                    } else {
                        division.clone()
                    },
                    uscc,
                    name: name?,
                    contact_email,
                    contact_phone,
                })
            },
        )?;
        let response = self.workflow.register_enterprise(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn get_enterprise(
        &self,
        request: Request<pb::GetEnterpriseRequest>,
    ) -> Result<Response<pb::GetEnterpriseResponse>, Status> {
        let (uscc, tenant) = query(request, |v, r| v.uscc("uscc", &r.uscc))?;
        let enterprise = self.workflow.enterprise(&uscc, &tenant).await?;
        Ok(Response::new(pb::GetEnterpriseResponse {
            enterprise: Some(wire::enterprise_to_proto(&enterprise)),
        }))
    }

    async fn list_enterprises(
        &self,
        request: Request<pb::ListEnterprisesRequest>,
    ) -> Result<Response<pb::ListEnterprisesResponse>, Status> {
        let ((prefix, page), tenant) = query(request, |v, r| {
            let prefix = &r.registration_division_code_prefix;
            if prefix.len() > DIVISION_CODE_LEN || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                v.add(
                    "registration_division_code_prefix",
                    "must be at most 6 digits",
                );
            }
            let page = v.page(
                PageRequest {
                    kind: "enterprises",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[prefix],
                },
                ENTERPRISES_PAGE,
            );
            Some((prefix.clone(), page?))
        })?;
        let after = page.after.as_deref().unwrap_or_default();
        let mut rows = self
            .workflow
            .enterprises(&prefix, after, page.fetch_limit(), &tenant)
            .await?;
        let next_page_token = page.finish(&mut rows, |row| row.uscc.clone());
        Ok(Response::new(pb::ListEnterprisesResponse {
            enterprises: rows.iter().map(wire::enterprise_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_enterprise_contact(
        &self,
        request: Request<pb::UpdateEnterpriseContactRequest>,
    ) -> Result<Response<pb::UpdateEnterpriseContactResponse>, Status> {
        let ((uscc, email, phone), caller) = mutation(
            request,
            op::UPDATE_CONTACT,
            |r| &r.request_id,
            |v, r| {
                let uscc = v.uscc("uscc", &r.uscc);
                let contact = contact(v, &r.contact_email, &r.contact_phone);
                let (email, phone) = contact?;
                Some((uscc?, email, phone))
            },
        )?;
        let response = self
            .workflow
            .update_enterprise_contact(&uscc, &email, &phone, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn submit_claim(
        &self,
        request: Request<pb::SubmitClaimRequest>,
    ) -> Result<Response<pb::SubmitClaimResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::SUBMIT_CLAIM,
            |r| &r.request_id,
            |v, r| {
                let enterprise = v.uscc("enterprise_uscc", &r.enterprise_uscc);
                let invoices = invoices::invoices(v, "invoices", &r.invoices, false);
                let (seller, total, contract) = contract(v, r.contract.as_ref())?;
                Some(SubmitClaim {
                    enterprise: enterprise?,
                    seller,
                    total,
                    contract,
                    invoices: invoices?,
                })
            },
        )?;
        let response = self.workflow.submit_claim(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn withdraw_claim(
        &self,
        request: Request<pb::WithdrawClaimRequest>,
    ) -> Result<Response<pb::WithdrawClaimResponse>, Status> {
        let ((claim_id, reason), caller) = mutation(
            request,
            op::WITHDRAW_CLAIM,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let reason = v.text("reason", &r.reason, REASON_LEN_MAX);
                Some((claim_id?, reason?))
            },
        )?;
        let response = self
            .workflow
            .withdraw_claim(&claim_id, reason, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn approve_claim(
        &self,
        request: Request<pb::ApproveClaimRequest>,
    ) -> Result<Response<pb::ApproveClaimResponse>, Status> {
        let subject = auth::Caller::of(&request)?.principal.subject.clone();
        let (cmd, caller) = mutation(
            request,
            op::APPROVE_CLAIM,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                // Optional: the verified invoices decide the amount (see the proto).
                let verified = match r.verified_paid_amount.as_ref() {
                    None => Some(None),
                    Some(amount) => v
                        .positive_money("verified_paid_amount", Some(amount))
                        .map(Some),
                };
                let rating = v.enum_value(
                    "benefit_rating",
                    r.benefit_rating,
                    pb::BenefitRating::Unspecified,
                    wire::rating_from_proto,
                );
                let reviewer_id = reviewer(v, &r.reviewer_id, &subject);
                let note = v.optional_text("note", &r.note, NOTE_LEN_MAX);
                Some(ApproveClaim {
                    claim_id: claim_id?,
                    verified: verified?,
                    rating: rating?.unwrap_or_default(),
                    reviewer_id: reviewer_id?,
                    note: note?,
                })
            },
        )?;
        let response = self.workflow.approve_claim(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn add_claim_invoices(
        &self,
        request: Request<pb::AddClaimInvoicesRequest>,
    ) -> Result<Response<pb::AddClaimInvoicesResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::ADD_CLAIM_INVOICES,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let invoices = invoices::invoices(v, "invoices", &r.invoices, true);
                Some(AddInvoices {
                    claim_id: claim_id?,
                    invoices: invoices?,
                })
            },
        )?;
        let response = self.workflow.add_claim_invoices(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn verify_claim_invoice(
        &self,
        request: Request<pb::VerifyClaimInvoiceRequest>,
    ) -> Result<Response<pb::VerifyClaimInvoiceResponse>, Status> {
        let subject = auth::Caller::of(&request)?.principal.subject.clone();
        let (cmd, caller) = mutation(
            request,
            op::VERIFY_CLAIM_INVOICE,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                if !is_invoice_identity(&r.invoice_code, &r.invoice_number) {
                    v.add(
                        "invoice_number",
                        "must be 8 digits with a 10- or 12-digit invoice_code, or 20 digits \
                         without one",
                    );
                }
                let verification = match pb::InvoiceVerificationState::try_from(r.state) {
                    Ok(pb::InvoiceVerificationState::Verified) => {
                        Some(InvoiceVerification::Verified)
                    }
                    Ok(pb::InvoiceVerificationState::Rejected) => {
                        Some(InvoiceVerification::Rejected)
                    }
                    _ => {
                        v.add("state", "must be VERIFIED or REJECTED");
                        None
                    }
                };
                let note = v.optional_text("note", &r.note, NOTE_LEN_MAX);
                Some(VerifyInvoice {
                    claim_id: claim_id?,
                    invoice_code: r.invoice_code.clone(),
                    invoice_number: r.invoice_number.clone(),
                    verification: verification?,
                    note: note?,
                    reviewer_id: subject.clone(),
                })
            },
        )?;
        let response = self.workflow.verify_claim_invoice(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn reject_claim(
        &self,
        request: Request<pb::RejectClaimRequest>,
    ) -> Result<Response<pb::RejectClaimResponse>, Status> {
        let subject = auth::Caller::of(&request)?.principal.subject.clone();
        let (cmd, caller) = mutation(
            request,
            op::REJECT_CLAIM,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let reason = required_enum(
                    v,
                    "reason",
                    r.reason,
                    pb::ClaimRejectionReason::Unspecified,
                    wire::rejection_from_proto,
                    "rejection reasons",
                );
                let note = if reason == Some(RejectionReason::Other) {
                    v.text("note", &r.note, NOTE_LEN_MAX)
                } else {
                    v.optional_text("note", &r.note, NOTE_LEN_MAX)
                };
                let reviewer_id = reviewer(v, &r.reviewer_id, &subject);
                Some(RejectClaim {
                    claim_id: claim_id?,
                    reason: reason?,
                    note: note?,
                    reviewer_id: reviewer_id?,
                })
            },
        )?;
        let response = self.workflow.reject_claim(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn request_claim_information(
        &self,
        request: Request<pb::RequestClaimInformationRequest>,
    ) -> Result<Response<pb::RequestClaimInformationResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::REQUEST_CLAIM_INFORMATION,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let message = v.text("message", &r.message, NOTE_LEN_MAX);
                Some(RequestInformation {
                    claim_id: claim_id?,
                    message: message?,
                })
            },
        )?;
        let response = self
            .workflow
            .request_claim_information(cmd, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn provide_claim_information(
        &self,
        request: Request<pb::ProvideClaimInformationRequest>,
    ) -> Result<Response<pb::ProvideClaimInformationResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::PROVIDE_CLAIM_INFORMATION,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let message = v.text("message", &r.message, NOTE_LEN_MAX);
                if r.document_ids.len() > INFORMATION_DOCUMENTS_MAX {
                    v.add(
                        "document_ids",
                        format!("at most {INFORMATION_DOCUMENTS_MAX} documents"),
                    );
                }
                let mut document_ids = Some(Vec::with_capacity(r.document_ids.len()));
                for (i, id) in r.document_ids.iter().enumerate() {
                    let id = v.id(&format!("document_ids[{i}]"), id, IDENTIFIER_LEN_MAX);
                    match (id, document_ids.as_mut()) {
                        (Some(id), Some(ids)) => ids.push(id),
                        _ => document_ids = None,
                    }
                }
                Some(ProvideInformation {
                    claim_id: claim_id?,
                    message: message?,
                    document_ids: document_ids?,
                })
            },
        )?;
        let response = self
            .workflow
            .provide_claim_information(cmd, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn reopen_claim(
        &self,
        request: Request<pb::ReopenClaimRequest>,
    ) -> Result<Response<pb::ReopenClaimResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::REOPEN_CLAIM,
            |r| &r.request_id,
            |v, r| {
                let claim_id = v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX);
                let reason = v.text("reason", &r.reason, REASON_LEN_MAX);
                Some(ReopenClaim {
                    claim_id: claim_id?,
                    reason: reason?,
                })
            },
        )?;
        let response = self.workflow.reopen_claim(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn record_claim_disbursement(
        &self,
        request: Request<pb::RecordClaimDisbursementRequest>,
    ) -> Result<Response<pb::RecordClaimDisbursementResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::DISBURSE_CLAIM,
            |r| &r.request_id,
            |v, r| {
                disbursement(
                    v,
                    "claim_id",
                    &r.claim_id,
                    &r.payment_reference,
                    r.payment_date.as_ref(),
                    r.amount.as_ref(),
                )
            },
        )?;
        let response = self.workflow.disburse_claim(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn get_claim(
        &self,
        request: Request<pb::GetClaimRequest>,
    ) -> Result<Response<pb::GetClaimResponse>, Status> {
        let (claim_id, tenant) = query(request, |v, r| {
            v.id("claim_id", &r.claim_id, IDENTIFIER_LEN_MAX)
        })?;
        let view = self.workflow.claim(&claim_id, &tenant).await?;
        let mut claim = claim_view(&view);
        let declared: Vec<String> = claim
            .contract
            .iter()
            .flat_map(|contract| contract.attachments.iter())
            .map(|attachment| attachment.sha256_hex.clone())
            .collect();
        claim.attachment_documents = self
            .workflow
            .attachment_documents(&claim_id, &declared)
            .await?;
        claim.public_notice = self.workflow.public_notice_of(&claim_id).await?;
        Ok(Response::new(pb::GetClaimResponse { claim: Some(claim) }))
    }

    async fn list_claims(
        &self,
        request: Request<pb::ListClaimsRequest>,
    ) -> Result<Response<pb::ListClaimsResponse>, Status> {
        let ((mut filter, (page, after)), tenant) = query(request, |v, r| {
            let state = v.enum_value(
                "state",
                r.state,
                pb::ClaimState::Unspecified,
                wire::claim_state_from_proto,
            );
            let enterprise = v.optional_uscc("enterprise_uscc", &r.enterprise_uscc);
            let start = v.optional_timestamp_us("submit_start_time", r.submit_start_time.as_ref());
            let end = v.optional_timestamp_us("submit_end_time", r.submit_end_time.as_ref());
            let state_text = r.state.to_string();
            let overdue_text = r.review_overdue.to_string();
            let (start_text, end_text) = (
                edge::timestamp_filter(r.submit_start_time.as_ref()),
                edge::timestamp_filter(r.submit_end_time.as_ref()),
            );
            let page = keyset_page(
                v,
                PageRequest {
                    kind: "claims",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[
                        &state_text,
                        &r.enterprise_uscc,
                        &start_text,
                        &end_text,
                        &overdue_text,
                    ],
                },
                CLAIMS_PAGE,
            );
            let filter = ClaimFilter {
                state: state?.flatten(),
                enterprise_uscc: enterprise?
                    .map(|u| u.as_str().to_owned())
                    .unwrap_or_default(),
                submit_start_us: start?,
                submit_end_us: end?,
                tenants: None,
                review_overdue: r.review_overdue,
                overdue_at_us: 0,
            };
            Some((filter, page?))
        })?;
        filter.tenants = edge::tenants(&tenant);
        let mut views = self
            .workflow
            .claims(&filter, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut views, |view| {
            keyset(view.claim.submit_us, &view.claim.claim_id)
        });
        Ok(Response::new(pb::ListClaimsResponse {
            claims: views.iter().map(claim_view).collect(),
            next_page_token,
        }))
    }

    async fn create_selection_round(
        &self,
        request: Request<pb::CreateSelectionRoundRequest>,
    ) -> Result<Response<pb::CreateSelectionRoundResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::CREATE_ROUND,
            |r| &r.request_id,
            |v, r| {
                if !is_pool_id(&r.pool_id) {
                    v.add(
                        "pool_id",
                        "must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter",
                    );
                }
                let title = v.text("title", &r.title, NAME_LEN_MAX);
                let deadline = v.instant(
                    "submission_deadline_time",
                    r.submission_deadline_time.as_ref(),
                );
                Some(CreateRound {
                    pool_id: r.pool_id.clone(),
                    title: title?,
                    deadline_us: deadline?.timestamp_micros(),
                })
            },
        )?;
        let response = self.workflow.create_round(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn get_selection_round(
        &self,
        request: Request<pb::GetSelectionRoundRequest>,
    ) -> Result<Response<pb::GetSelectionRoundResponse>, Status> {
        let (round_id, _) = query(request, |v, r| {
            v.id("round_id", &r.round_id, IDENTIFIER_LEN_MAX)
        })?;
        let view = self.workflow.round(&round_id).await?;
        Ok(Response::new(pb::GetSelectionRoundResponse {
            round: Some(wire::round_to_proto(
                &view.round,
                view.proposal_count,
                view.now_us,
            )),
        }))
    }

    async fn list_selection_rounds(
        &self,
        request: Request<pb::ListSelectionRoundsRequest>,
    ) -> Result<Response<pb::ListSelectionRoundsResponse>, Status> {
        let ((pool_id, state, (page, after)), _) = query(request, |v, r| {
            let state = v.enum_value(
                "state",
                r.state,
                pb::SelectionRoundState::Unspecified,
                wire::round_state_from_proto,
            );
            let state_text = r.state.to_string();
            let page = keyset_page(
                v,
                PageRequest {
                    kind: "rounds",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&r.pool_id, &state_text],
                },
                ROUNDS_PAGE,
            );
            Some((r.pool_id.clone(), state?.flatten(), page?))
        })?;
        let mut views = self
            .workflow
            .rounds(&pool_id, state, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut views, |view| {
            keyset(view.round.created_us, &view.round.round_id)
        });
        Ok(Response::new(pb::ListSelectionRoundsResponse {
            rounds: views
                .iter()
                .map(|view| wire::round_to_proto(&view.round, view.proposal_count, view.now_us))
                .collect(),
            next_page_token,
        }))
    }

    async fn close_selection_round(
        &self,
        request: Request<pb::CloseSelectionRoundRequest>,
    ) -> Result<Response<pb::CloseSelectionRoundResponse>, Status> {
        let (round_id, caller) = mutation(
            request,
            op::CLOSE_ROUND,
            |r| &r.request_id,
            |v, r| v.id("round_id", &r.round_id, IDENTIFIER_LEN_MAX),
        )?;
        let response = self.workflow.close_round(&round_id, &caller).await?;
        Ok(Response::new(response))
    }

    async fn submit_proposal(
        &self,
        request: Request<pb::SubmitProposalRequest>,
    ) -> Result<Response<pb::SubmitProposalResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::SUBMIT_PROPOSAL,
            |r| &r.request_id,
            |v, r| {
                let round_id = v.id("round_id", &r.round_id, IDENTIFIER_LEN_MAX);
                let applicant = v.uscc("applicant_uscc", &r.applicant_uscc);
                let category = required_enum(
                    v,
                    "category",
                    r.category,
                    pb::ProposalCategory::Unspecified,
                    wire::category_from_proto,
                    "categories",
                );
                let title = v.text("title", &r.title, NAME_LEN_MAX);
                let requested = v.positive_money("requested_amount", r.requested_amount.as_ref());
                let summary = v.text("summary", &r.summary, DESCRIPTION_LEN_MAX);
                attachments(v, "attachments", &r.attachments);
                Some(SubmitProposal {
                    round_id: round_id?,
                    applicant: applicant?,
                    category: category?,
                    title: title?,
                    requested: requested?,
                    summary: summary?,
                    attachments: r.attachments.clone(),
                })
            },
        )?;
        let response = self.workflow.submit_proposal(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn withdraw_proposal(
        &self,
        request: Request<pb::WithdrawProposalRequest>,
    ) -> Result<Response<pb::WithdrawProposalResponse>, Status> {
        let ((proposal_id, reason), caller) = mutation(
            request,
            op::WITHDRAW_PROPOSAL,
            |r| &r.request_id,
            |v, r| {
                let proposal_id = v.id("proposal_id", &r.proposal_id, IDENTIFIER_LEN_MAX);
                let reason = v.text("reason", &r.reason, REASON_LEN_MAX);
                Some((proposal_id?, reason?))
            },
        )?;
        let response = self
            .workflow
            .withdraw_proposal(&proposal_id, reason, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn score_proposal(
        &self,
        request: Request<pb::ScoreProposalRequest>,
    ) -> Result<Response<pb::ScoreProposalResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::SCORE_PROPOSAL,
            |r| &r.request_id,
            |v, r| {
                let proposal_id = v.id("proposal_id", &r.proposal_id, IDENTIFIER_LEN_MAX);
                let expert_id = v.text("expert_id", &r.expert_id, IDENTIFIER_LEN_MAX);
                let organization = v.uscc("expert_organization_uscc", &r.expert_organization_uscc);
                if r.score > SCORE_MAX {
                    v.add("score", format!("must be 0 to {SCORE_MAX}"));
                }
                let comment = v.optional_text("comment", &r.comment, NOTE_LEN_MAX);
                Some(ScoreProposal {
                    proposal_id: proposal_id?,
                    expert_id: expert_id?,
                    expert_organization: organization?,
                    score: r.score,
                    comment: comment?,
                })
            },
        )?;
        let response = self.workflow.score_proposal(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn finalize_selection_round(
        &self,
        request: Request<pb::FinalizeSelectionRoundRequest>,
    ) -> Result<Response<pb::FinalizeSelectionRoundResponse>, Status> {
        let (round_id, caller) = mutation(
            request,
            op::FINALIZE_ROUND,
            |r| &r.request_id,
            |v, r| v.id("round_id", &r.round_id, IDENTIFIER_LEN_MAX),
        )?;
        let response = self.workflow.finalize_round(&round_id, &caller).await?;
        Ok(Response::new(response))
    }

    async fn record_proposal_disbursement(
        &self,
        request: Request<pb::RecordProposalDisbursementRequest>,
    ) -> Result<Response<pb::RecordProposalDisbursementResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::DISBURSE_PROPOSAL,
            |r| &r.request_id,
            |v, r| {
                disbursement(
                    v,
                    "proposal_id",
                    &r.proposal_id,
                    &r.payment_reference,
                    r.payment_date.as_ref(),
                    r.amount.as_ref(),
                )
            },
        )?;
        let response = self.workflow.disburse_proposal(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn get_proposal(
        &self,
        request: Request<pb::GetProposalRequest>,
    ) -> Result<Response<pb::GetProposalResponse>, Status> {
        let (proposal_id, tenant) = query(request, |v, r| {
            v.id("proposal_id", &r.proposal_id, IDENTIFIER_LEN_MAX)
        })?;
        let view = self.workflow.proposal(&proposal_id, &tenant).await?;
        let mut proposal = proposal_view(&view);
        let declared: Vec<String> = proposal
            .attachments
            .iter()
            .map(|attachment| attachment.sha256_hex.clone())
            .collect();
        proposal.attachment_documents = self
            .workflow
            .attachment_documents(&proposal_id, &declared)
            .await?;
        proposal.public_notice = self.workflow.public_notice_of(&proposal_id).await?;
        Ok(Response::new(pb::GetProposalResponse {
            proposal: Some(proposal),
        }))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        let ((mut filter, (page, after)), tenant) = query(request, |v, r| {
            let state = v.enum_value(
                "state",
                r.state,
                pb::ProposalState::Unspecified,
                wire::proposal_state_from_proto,
            );
            let applicant = v.optional_uscc("applicant_uscc", &r.applicant_uscc);
            let state_text = r.state.to_string();
            let page = keyset_page(
                v,
                PageRequest {
                    kind: "proposals",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&r.round_id, &state_text, &r.applicant_uscc],
                },
                PROPOSALS_PAGE,
            );
            let filter = ProposalFilter {
                round_id: r.round_id.clone(),
                state: state?.flatten(),
                applicant_uscc: applicant?
                    .map(|u| u.as_str().to_owned())
                    .unwrap_or_default(),
                tenants: None,
            };
            Some((filter, page?))
        })?;
        filter.tenants = edge::tenants(&tenant);
        let mut views = self
            .workflow
            .proposals(&filter, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut views, |view| {
            keyset(view.proposal.submit_us, &view.proposal.proposal_id)
        });
        Ok(Response::new(pb::ListProposalsResponse {
            proposals: views.iter().map(proposal_view).collect(),
            next_page_token,
        }))
    }

    async fn list_application_history(
        &self,
        request: Request<pb::ListApplicationHistoryRequest>,
    ) -> Result<Response<pb::ListApplicationHistoryResponse>, Status> {
        let ((application_id, kind, page, after), tenant) = query(request, |v, r| {
            let kind = ApplicationKind::of(&r.application_id);
            if kind.is_none() {
                v.add(
                    "application_id",
                    "must be a claim (claim-…) or proposal (proposal-…) identifier",
                );
            }
            let page = v.page(
                PageRequest {
                    kind: "history",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&r.application_id],
                },
                HISTORY_PAGE,
            )?;
            let after = page
                .after_number()
                .map_err(|violation| v.add(&violation.field, violation.description))
                .ok();
            Some((r.application_id.clone(), kind?, page, after?))
        })?;
        let mut rows = self
            .workflow
            .history(kind, &application_id, after, page.fetch_limit(), &tenant)
            .await?;
        let next_page_token = page.finish(&mut rows, |row| row.sequence.to_string());
        Ok(Response::new(pb::ListApplicationHistoryResponse {
            application_kind: wire::application_kind_to_proto(kind) as i32,
            entries: rows
                .iter()
                .map(|row| wire::history_to_proto(kind, row))
                .collect(),
            next_page_token,
        }))
    }

    async fn export_disbursements(
        &self,
        request: Request<pb::ExportDisbursementsRequest>,
    ) -> Result<Response<exports::DisbursementStream>, Status> {
        // Finance, auditors and admins see every enterprise's payments (the access declaration
        // admits no applicant), so the tenant is not consulted. The rows are streamed as they
        // are read from one snapshot; a failure on the way ends the stream with its status and
        // no totals, so a client never takes half an export for a whole one.
        let ((program, period), _tenant) = query(request, exports::parse)?;
        let export = self.workflow.disbursement_export(program, period).await?;
        Ok(Response::new(exports::stream(export)))
    }

    async fn get_program_statistics(
        &self,
        request: Request<pb::GetProgramStatisticsRequest>,
    ) -> Result<Response<pb::GetProgramStatisticsResponse>, Status> {
        // Reviewers, finance, auditors and admins see every enterprise's figures (the access
        // declaration admits no applicant), so the tenant is not consulted.
        let ((program, period), _tenant) = query(request, statistics::parse)?;
        let figures = self.workflow.program_statistics(program, period).await?;
        Ok(Response::new(statistics::render(&figures)))
    }

    async fn upload_document(
        &self,
        request: Request<tonic::Streaming<pb::UploadDocumentRequest>>,
    ) -> Result<Response<pb::UploadDocumentResponse>, Status> {
        let response = documents::upload(&self.workflow, request).await?;
        Ok(Response::new(response))
    }

    async fn download_document(
        &self,
        request: Request<pb::DownloadDocumentRequest>,
    ) -> Result<Response<documents::DownloadStream>, Status> {
        let (document_id, tenant) = query(request, |v, r| {
            v.id("document_id", &r.document_id, IDENTIFIER_LEN_MAX)
        })?;
        let document = self.workflow.document(&document_id, &tenant).await?;
        let stream = documents::download(&self.workflow, document).await?;
        Ok(Response::new(stream))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let ((application_id, kind, page, after), tenant) = query(request, |v, r| {
            let kind = ApplicationKind::of(&r.application_id);
            if kind.is_none() {
                v.add(
                    "application_id",
                    "must be a claim (claim-…) or proposal (proposal-…) identifier",
                );
            }
            let (page, after) = keyset_page(
                v,
                PageRequest {
                    kind: "documents",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&r.application_id],
                },
                DOCUMENTS_PAGE,
            )?;
            Some((r.application_id.clone(), kind?, page, after))
        })?;
        let mut views = self
            .workflow
            .documents_of(kind, &application_id, after, page.fetch_limit(), &tenant)
            .await?;
        let next_page_token = page.finish(&mut views, |view| {
            keyset(view.row.uploaded_us, &view.row.document_id)
        });
        Ok(Response::new(pb::ListDocumentsResponse {
            documents: views.iter().map(|view| view.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn list_public_notices(
        &self,
        request: Request<pb::ListPublicNoticesRequest>,
    ) -> Result<Response<pb::ListPublicNoticesResponse>, Status> {
        let ((filter, (page, after)), _) = query(request, |v, r| {
            let filter = publicity::notice_filter(v, r);
            let (kind_text, state_text) = (r.application_kind.to_string(), r.state.to_string());
            let page = keyset_page(
                v,
                PageRequest {
                    kind: "public_notices",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&kind_text, &state_text],
                },
                NOTICES_PAGE,
            );
            Some((filter?, page?))
        })?;
        let mut notices = self
            .workflow
            .public_notices(filter, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut notices, |notice| {
            let start = notice.start_time.unwrap_or_default();
            keyset(
                start.seconds * 1_000_000 + i64::from(start.nanos) / 1_000,
                &notice.notice_id,
            )
        });
        Ok(Response::new(pb::ListPublicNoticesResponse {
            notices,
            next_page_token,
        }))
    }

    async fn file_objection(
        &self,
        request: Request<pb::FileObjectionRequest>,
    ) -> Result<Response<pb::FileObjectionResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::FILE_OBJECTION,
            |r| &r.request_id,
            |v, r| {
                let notice_id = v.id("notice_id", &r.notice_id, IDENTIFIER_LEN_MAX);
                let grounds = v.text("grounds", &r.grounds, OBJECTION_TEXT_CHARS_MAX);
                Some(FileObjection {
                    notice_id: notice_id?,
                    grounds: grounds?,
                })
            },
        )?;
        let response = self.workflow.file_objection(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn decide_objection(
        &self,
        request: Request<pb::DecideObjectionRequest>,
    ) -> Result<Response<pb::DecideObjectionResponse>, Status> {
        let (cmd, caller) = mutation(
            request,
            op::DECIDE_OBJECTION,
            |r| &r.request_id,
            |v, r| {
                let objection_id = v.id("objection_id", &r.objection_id, IDENTIFIER_LEN_MAX);
                let decision = publicity::uphold(v, r.decision);
                let reason = v.text("reason", &r.reason, OBJECTION_TEXT_CHARS_MAX);
                let reviewer_id = v.id("reviewer_id", &r.reviewer_id, IDENTIFIER_LEN_MAX);
                Some(DecideObjection {
                    objection_id: objection_id?,
                    uphold: decision?,
                    reason: reason?,
                    reviewer_id: reviewer_id?,
                })
            },
        )?;
        let response = self.workflow.decide_objection(cmd, &caller).await?;
        Ok(Response::new(response))
    }

    async fn list_objections(
        &self,
        request: Request<pb::ListObjectionsRequest>,
    ) -> Result<Response<pb::ListObjectionsResponse>, Status> {
        let ((notice_id, state, (page, after)), _) = query(request, |v, r| {
            if !r.notice_id.is_empty() {
                v.id("notice_id", &r.notice_id, IDENTIFIER_LEN_MAX);
            }
            let state = publicity::objection_state(v, r.state);
            let state_text = r.state.to_string();
            let page = keyset_page(
                v,
                PageRequest {
                    kind: "objections",
                    size: r.page_size,
                    token: &r.page_token,
                    filters: &[&r.notice_id, &state_text],
                },
                OBJECTIONS_PAGE,
            );
            Some((r.notice_id.clone(), state?, page?))
        })?;
        let mut rows = self
            .workflow
            .objections(&notice_id, state, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut rows, |row| keyset(row.filed_us, &row.objection_id));
        Ok(Response::new(pb::ListObjectionsResponse {
            objections: rows.iter().map(wire::objection_to_proto).collect(),
            next_page_token,
        }))
    }
}
