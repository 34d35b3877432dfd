//! What the application service refuses, and why, and the one place where that becomes a gRPC
//! status.
//!
//! This is the only file of the crate besides `storage/` that knows [`DbError`]: storage
//! returns it, the use cases wrap it here, and [`From<ApplicationError> for Status`] classifies
//! it once, through the shared `edge::storage_failure`. Every other refusal gets a canonical
//! code, a stable reason and an `ErrorInfo` whose metadata names the ids involved (`claim_id`,
//! `proposal_id`, `round_id`, `pool_id`, `uscc`, `state`, …); the keys of each reason are listed
//! in `application_service.proto`.

use subsidy_common::Money;
use subsidy_common::db::DbError;
use subsidy_common::edge;
use subsidy_proto::status::{Failure, FieldViolation};
use tonic::{Code, Status};

use crate::domain::FieldProblem;

/// The `ErrorInfo` domain of every application error.
pub const DOMAIN: &str = "subsidy.application";
/// The service's name in storage failures.
const SERVICE: &str = "application";

/// The claim, proposal or round a refusal is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A compute-voucher claim.
    Claim(String),
    /// A data-infrastructure proposal.
    Proposal(String),
    /// A selection round.
    Round(String),
}

impl Subject {
    /// The `ErrorInfo` metadata key naming it.
    fn key(&self) -> &'static str {
        match self {
            Subject::Claim(_) => "claim_id",
            Subject::Proposal(_) => "proposal_id",
            Subject::Round(_) => "round_id",
        }
    }

    /// Its identifier.
    fn id(&self) -> &str {
        match self {
            Subject::Claim(id) | Subject::Proposal(id) | Subject::Round(id) => id,
        }
    }
}

/// What the application service refuses, and why. Classified into gRPC codes once, below.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The verified amount is above the contract total.
    #[error("the verified amount exceeds the contract total")]
    ApprovedAmountExceedsContract {
        /// The claim.
        claim_id: String,
        /// Its contract total.
        contract_total: Money,
    },
    /// The pool named does not exist in the budget service.
    #[error("no such pool")]
    PoolNotFound {
        /// The pool asked for.
        pool_id: String,
    },
    /// No such enterprise.
    #[error("enterprise not found")]
    EnterpriseNotFound {
        /// The USCC asked for.
        uscc: String,
    },
    /// The enterprise is registered already.
    #[error("enterprise already registered")]
    EnterpriseAlreadyRegistered {
        /// Its USCC.
        uscc: String,
    },
    /// No such claim.
    #[error("claim not found")]
    ClaimNotFound {
        /// The claim asked for.
        claim_id: String,
    },
    /// The contract was claimed before by a claim that was not withdrawn.
    #[error("this contract was already claimed")]
    DuplicateContract {
        /// The contract's seller.
        seller_uscc: String,
        /// The contract's number.
        contract_number: String,
    },
    /// An invoice is claimed by a claim that was not withdrawn (or twice in one request).
    #[error("the invoice is already claimed")]
    InvoiceAlreadyClaimed {
        /// The claim the invoice was given for; empty for a submission not recorded.
        claim_id: String,
        /// The invoice's code.
        invoice_code: String,
        /// The invoice's number.
        invoice_number: String,
    },
    /// An invoice's seller is not the contract's or its buyer not the claiming enterprise.
    #[error("the invoice's parties are not the contract's")]
    InvoicePartyMismatch {
        /// The claim; empty for a submission not recorded.
        claim_id: String,
        /// The invoice's code.
        invoice_code: String,
        /// The invoice's number.
        invoice_number: String,
    },
    /// An invoice was issued before the contract was signed or is dated in the future.
    #[error("the invoice's issue date is before the contract's signing or in the future")]
    InvoiceDateOutOfRange {
        /// The claim; empty for a submission not recorded.
        claim_id: String,
        /// The invoice's code.
        invoice_code: String,
        /// The invoice's number.
        invoice_number: String,
    },
    /// A claim's invoiced total would exceed its contract total.
    #[error("the invoiced total exceeds the contract total")]
    InvoiceTotalExceedsContract {
        /// The claim; empty for a submission not recorded.
        claim_id: String,
        /// The invoiced total the claim would have.
        invoiced: Money,
        /// The contract total.
        contract_total: Money,
    },
    /// The claim has no such invoice.
    #[error("no such invoice on the claim")]
    InvoiceNotFound {
        /// The claim.
        claim_id: String,
        /// The invoice's code.
        invoice_code: String,
        /// The invoice's number.
        invoice_number: String,
    },
    /// An approval of a claim none of whose invoices was verified.
    #[error("no invoice of the claim is verified")]
    NoVerifiedInvoice {
        /// The claim.
        claim_id: String,
    },
    /// The approval's `verified_paid_amount` differs from the verified invoiced total.
    #[error("the verified amount differs from the verified invoiced total")]
    VerifiedAmountMismatch {
        /// The claim.
        claim_id: String,
        /// The verified invoiced total.
        verified_invoiced: Money,
    },
    /// The transition is not allowed from the current state.
    #[error("the transition is not allowed from state {state}")]
    TransitionNotAllowed {
        /// The application or round.
        subject: Subject,
        /// Its current state.
        state: String,
    },
    /// The hold expired before the approval; the claim is now EXPIRED.
    #[error("the reservation expired before approval")]
    ReservationExpired {
        /// The claim.
        claim_id: String,
    },
    /// The rules service no longer finds the claim eligible.
    #[error("the claim is no longer eligible with the verified amount")]
    NotEligibleOnRecheck {
        /// The claim.
        claim_id: String,
    },
    /// No such round.
    #[error("selection round not found")]
    RoundNotFound {
        /// The round asked for.
        round_id: String,
    },
    /// The round no longer accepts submissions.
    #[error("the selection round is closed")]
    RoundClosed {
        /// The round.
        round_id: String,
    },
    /// The round was finalised.
    #[error("the selection round is already finalised")]
    RoundAlreadyFinalized {
        /// The round.
        round_id: String,
    },
    /// No such proposal.
    #[error("proposal not found")]
    ProposalNotFound {
        /// The proposal asked for.
        proposal_id: String,
    },
    /// The expert belongs to the applicant.
    #[error("an expert may not score a proposal of their own organisation")]
    ConflictOfInterest {
        /// The proposal.
        proposal_id: String,
        /// The expert's organisation, which is the applicant.
        expert_organization_uscc: String,
    },
    /// The caller's credentials do not bind it to the enterprise it acts for.
    #[error("the caller's credentials do not name this enterprise")]
    EnterpriseNotBound {
        /// The enterprise asked for.
        uscc: String,
    },
    /// An expert may score only as the expert its credentials name.
    #[error("the caller's credentials do not name this expert")]
    ExpertNotBound {
        /// The expert asked for.
        expert_id: String,
    },
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// A peer service could not be reached; what was recorded stays recorded.
    #[error("the {0} service is unavailable")]
    UpstreamUnavailable(&'static str),
    /// A peer service answered something this service does not expect (a bug on one side).
    #[error("unexpected answer from the {service} service: {code} {reason}")]
    UpstreamUnexpected {
        /// The peer.
        service: &'static str,
        /// Its status code, by name.
        code: String,
        /// Its `ErrorInfo` reason.
        reason: String,
    },
    /// An upload's content is not as long as its header declared; nothing was stored.
    #[error("the document's content is not of the declared size")]
    DocumentSizeMismatch,
    /// An upload's content does not have the SHA-256 its header declared; nothing was stored.
    #[error("the document's content does not have the declared SHA-256")]
    DocumentDigestMismatch,
    /// The document is larger than a document may be.
    #[error("the document is larger than allowed")]
    DocumentTooLarge {
        /// The limit, bytes.
        size_bytes_max: i64,
    },
    /// The application's documents would together exceed their limit.
    #[error("the application's documents would exceed their total size limit")]
    ApplicationDocumentsTooLarge {
        /// The claim or proposal.
        application_id: String,
        /// The limit, bytes.
        documents_bytes_max: i64,
    },
    /// No such document (or not one the caller may see).
    #[error("document not found")]
    DocumentNotFound {
        /// The document asked for.
        document_id: String,
    },
    /// A document's stored content is missing or is not what was uploaded.
    #[error("the stored content of a document is missing or altered")]
    DocumentCorrupted {
        /// The document.
        document_id: String,
    },
    /// The document store failed.
    #[error(transparent)]
    DocumentStore(#[from] crate::documents::DocumentStoreError),
    /// No public notice with this id.
    #[error("public notice not found")]
    NoticeNotFound {
        /// The notice asked for.
        notice_id: String,
    },
    /// The publicity period of the notice has ended: no more objections.
    #[error("the publicity period has ended")]
    PublicityPeriodEnded {
        /// The notice.
        notice_id: String,
        /// When the period ended, µs.
        end_us: i64,
    },
    /// The award of the notice was revoked.
    #[error("the award was revoked")]
    AwardRevoked {
        /// The notice.
        notice_id: String,
    },
    /// No objection with this id.
    #[error("objection not found")]
    ObjectionNotFound {
        /// The objection asked for.
        objection_id: String,
    },
    /// The objection was decided already.
    #[error("the objection was decided already")]
    ObjectionAlreadyDecided {
        /// The objection.
        objection_id: String,
        /// Its state.
        state: &'static str,
    },
    /// The award may not be paid yet: its publicity period runs or an objection is open.
    #[error("the award may not be paid yet")]
    PaymentHeld {
        /// The award's notice.
        notice_id: String,
        /// Why.
        hold: crate::domain::publicity::PaymentHold,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ApplicationError {
    fn from(error: sqlx::Error) -> Self {
        ApplicationError::Db(DbError::from(error))
    }
}

impl ApplicationError {
    /// A single field violation.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        ApplicationError::Invalid(vec![FieldViolation::new(field, description)])
    }

    /// The problems the domain found in an input, as field violations.
    pub fn invalid_fields(problems: Vec<FieldProblem>) -> Self {
        ApplicationError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldViolation::new(p.field, p.description))
                .collect(),
        )
    }

    /// No claim `claim_id`.
    pub fn claim_not_found(claim_id: &str) -> Self {
        ApplicationError::ClaimNotFound {
            claim_id: claim_id.to_owned(),
        }
    }

    /// No proposal `proposal_id`.
    pub fn proposal_not_found(proposal_id: &str) -> Self {
        ApplicationError::ProposalNotFound {
            proposal_id: proposal_id.to_owned(),
        }
    }

    /// No round `round_id`.
    pub fn round_not_found(round_id: &str) -> Self {
        ApplicationError::RoundNotFound {
            round_id: round_id.to_owned(),
        }
    }

    /// No enterprise `uscc`.
    pub fn enterprise_not_found(uscc: &str) -> Self {
        ApplicationError::EnterpriseNotFound {
            uscc: uscc.to_owned(),
        }
    }

    /// `subject` may not change from `state`.
    pub fn transition(subject: Subject, state: impl ToString) -> Self {
        ApplicationError::TransitionNotAllowed {
            subject,
            state: state.to_string(),
        }
    }
}

/// An instant in RFC 3339, UTC, with milliseconds (as events and error metadata print them).
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn invalid_argument(reason: &str, violations: &[FieldViolation]) -> Failure {
    Failure::invalid_argument(DOMAIN, reason, violations)
}

/// `failure` with the claim's id, unless the claim was not recorded (a refused submission).
fn with_claim(failure: Failure, claim_id: &str) -> Failure {
    if claim_id.is_empty() {
        failure
    } else {
        failure.with("claim_id", claim_id)
    }
}

impl From<ApplicationError> for Status {
    /// The one place where application errors become gRPC statuses: invalid input is
    /// `INVALID_ARGUMENT`, a missing record `NOT_FOUND`, a duplicate `ALREADY_EXISTS`, a rule or
    /// state violated `FAILED_PRECONDITION`, a peer down `UNAVAILABLE` (logged here), an
    /// unexpected peer answer an opaque `INTERNAL` (logged here), and database failures go
    /// through `edge::storage_failure`. Database and peer details never reach the caller.
    fn from(error: ApplicationError) -> Status {
        let message = error.to_string();
        let failure = |code, reason| Failure::new(code, DOMAIN, reason, message.clone());
        let failure = match &error {
            ApplicationError::Invalid(violations) => {
                invalid_argument("INVALID_ARGUMENT", violations)
            }
            ApplicationError::ApprovedAmountExceedsContract {
                claim_id,
                contract_total,
            } => invalid_argument(
                "APPROVED_AMOUNT_EXCEEDS_CONTRACT",
                &[FieldViolation::new(
                    "verified_paid_amount",
                    "must not exceed the contract total",
                )],
            )
            .with("claim_id", claim_id)
            .with("contract_total", contract_total),
            ApplicationError::PoolNotFound { pool_id } => invalid_argument(
                "POOL_NOT_FOUND",
                &[FieldViolation::new("pool_id", "no such pool")],
            )
            .with("pool_id", pool_id),
            ApplicationError::EnterpriseNotFound { uscc } => {
                failure(Code::NotFound, "ENTERPRISE_NOT_FOUND").with("uscc", uscc)
            }
            ApplicationError::EnterpriseAlreadyRegistered { uscc } => {
                failure(Code::AlreadyExists, "ENTERPRISE_ALREADY_REGISTERED").with("uscc", uscc)
            }
            ApplicationError::ClaimNotFound { claim_id } => {
                failure(Code::NotFound, "CLAIM_NOT_FOUND").with("claim_id", claim_id)
            }
            ApplicationError::DuplicateContract {
                seller_uscc,
                contract_number,
            } => failure(Code::AlreadyExists, "DUPLICATE_CONTRACT")
                .with("seller_uscc", seller_uscc)
                .with("contract_number", contract_number),
            ApplicationError::InvoiceAlreadyClaimed {
                claim_id,
                invoice_code,
                invoice_number,
            } => with_claim(
                failure(Code::AlreadyExists, "INVOICE_ALREADY_CLAIMED"),
                claim_id,
            )
            .with("invoice_code", invoice_code)
            .with("invoice_number", invoice_number),
            ApplicationError::InvoicePartyMismatch {
                claim_id,
                invoice_code,
                invoice_number,
            } => with_claim(
                invalid_argument(
                    "INVOICE_PARTY_MISMATCH",
                    &[FieldViolation::new(
                        "invoices",
                        "the seller must be the contract's and the buyer the claiming enterprise",
                    )],
                ),
                claim_id,
            )
            .with("invoice_code", invoice_code)
            .with("invoice_number", invoice_number),
            ApplicationError::InvoiceDateOutOfRange {
                claim_id,
                invoice_code,
                invoice_number,
            } => with_claim(
                invalid_argument(
                    "INVOICE_DATE_OUT_OF_RANGE",
                    &[FieldViolation::new(
                        "invoices",
                        "the issue date must be from the contract's signing date to today",
                    )],
                ),
                claim_id,
            )
            .with("invoice_code", invoice_code)
            .with("invoice_number", invoice_number),
            ApplicationError::InvoiceTotalExceedsContract {
                claim_id,
                invoiced,
                contract_total,
            } => with_claim(
                invalid_argument(
                    "INVOICE_TOTAL_EXCEEDS_CONTRACT",
                    &[FieldViolation::new(
                        "invoices",
                        "the invoiced total must not exceed the contract total",
                    )],
                ),
                claim_id,
            )
            .with("invoiced_amount", invoiced)
            .with("contract_total", contract_total),
            ApplicationError::InvoiceNotFound {
                claim_id,
                invoice_code,
                invoice_number,
            } => failure(Code::NotFound, "INVOICE_NOT_FOUND")
                .with("claim_id", claim_id)
                .with("invoice_code", invoice_code)
                .with("invoice_number", invoice_number),
            ApplicationError::NoVerifiedInvoice { claim_id } => {
                failure(Code::FailedPrecondition, "NO_VERIFIED_INVOICE").with("claim_id", claim_id)
            }
            ApplicationError::VerifiedAmountMismatch {
                claim_id,
                verified_invoiced,
            } => invalid_argument(
                "VERIFIED_AMOUNT_MISMATCH",
                &[FieldViolation::new(
                    "verified_paid_amount",
                    "must be empty or equal the total of the verified invoices",
                )],
            )
            .with("claim_id", claim_id)
            .with("verified_invoiced_amount", verified_invoiced),
            ApplicationError::TransitionNotAllowed { subject, state } => {
                failure(Code::FailedPrecondition, "TRANSITION_NOT_ALLOWED")
                    .with(subject.key(), subject.id())
                    .with("state", state)
            }
            ApplicationError::ReservationExpired { claim_id } => {
                failure(Code::FailedPrecondition, "RESERVATION_EXPIRED").with("claim_id", claim_id)
            }
            ApplicationError::NotEligibleOnRecheck { claim_id } => {
                failure(Code::FailedPrecondition, "NOT_ELIGIBLE_ON_RECHECK")
                    .with("claim_id", claim_id)
            }
            ApplicationError::RoundNotFound { round_id } => {
                failure(Code::NotFound, "ROUND_NOT_FOUND").with("round_id", round_id)
            }
            ApplicationError::RoundClosed { round_id } => {
                failure(Code::FailedPrecondition, "ROUND_CLOSED").with("round_id", round_id)
            }
            ApplicationError::RoundAlreadyFinalized { round_id } => {
                failure(Code::FailedPrecondition, "ROUND_ALREADY_FINALIZED")
                    .with("round_id", round_id)
            }
            ApplicationError::ProposalNotFound { proposal_id } => {
                failure(Code::NotFound, "PROPOSAL_NOT_FOUND").with("proposal_id", proposal_id)
            }
            ApplicationError::ConflictOfInterest {
                proposal_id,
                expert_organization_uscc,
            } => failure(Code::FailedPrecondition, "CONFLICT_OF_INTEREST")
                .with("proposal_id", proposal_id)
                .with("expert_organization_uscc", expert_organization_uscc),
            ApplicationError::RequestIdReused { request_id } => {
                failure(Code::AlreadyExists, "REQUEST_ID_REUSED").with("request_id", request_id)
            }
            ApplicationError::EnterpriseNotBound { uscc } => {
                failure(Code::PermissionDenied, "ENTERPRISE_NOT_BOUND").with("uscc", uscc)
            }
            ApplicationError::ExpertNotBound { expert_id } => {
                failure(Code::PermissionDenied, "EXPERT_NOT_BOUND").with("expert_id", expert_id)
            }
            ApplicationError::UpstreamUnavailable(service) => {
                tracing::warn!(service, "peer unavailable");
                Failure::new(
                    Code::Unavailable,
                    DOMAIN,
                    "UPSTREAM_UNAVAILABLE",
                    format!(
                        "the {service} service is unavailable; what was recorded stays recorded, \
                         retry with the same request_id"
                    ),
                )
                .with("service", service)
            }
            ApplicationError::UpstreamUnexpected { .. } => {
                tracing::error!(%error, "unexpected answer from a peer");
                return edge::internal(DOMAIN);
            }
            ApplicationError::DocumentSizeMismatch => invalid_argument(
                "DOCUMENT_SIZE_MISMATCH",
                &[FieldViolation::new(
                    "header.size_bytes",
                    "the content streamed is not of this size",
                )],
            ),
            ApplicationError::DocumentDigestMismatch => invalid_argument(
                "DOCUMENT_DIGEST_MISMATCH",
                &[FieldViolation::new(
                    "header.sha256_hex",
                    "the content streamed does not have this SHA-256",
                )],
            ),
            ApplicationError::DocumentTooLarge { size_bytes_max } => {
                failure(Code::ResourceExhausted, "DOCUMENT_TOO_LARGE")
                    .with("size_bytes_max", size_bytes_max)
            }
            ApplicationError::ApplicationDocumentsTooLarge {
                application_id,
                documents_bytes_max,
            } => failure(Code::ResourceExhausted, "APPLICATION_DOCUMENTS_TOO_LARGE")
                .with("application_id", application_id)
                .with("documents_bytes_max", documents_bytes_max),
            ApplicationError::DocumentNotFound { document_id } => {
                failure(Code::NotFound, "DOCUMENT_NOT_FOUND").with("document_id", document_id)
            }
            ApplicationError::DocumentCorrupted { document_id } => {
                tracing::error!(document_id, "a stored document is missing or altered");
                failure(Code::DataLoss, "DOCUMENT_CORRUPTED").with("document_id", document_id)
            }
            ApplicationError::DocumentStore(store) => {
                use crate::documents::DocumentStoreError;
                match store {
                    DocumentStoreError::Unavailable(source) => {
                        tracing::warn!(error = %source, "document store unavailable");
                        Failure::new(
                            Code::Unavailable,
                            DOMAIN,
                            "STORAGE_UNAVAILABLE",
                            "the document store is unavailable; retry with the same request_id"
                                .to_owned(),
                        )
                    }
                    DocumentStoreError::Open(_) | DocumentStoreError::Missing(_) => {
                        tracing::error!(%error, "document store failure");
                        return edge::internal(DOMAIN);
                    }
                }
            }
            ApplicationError::NoticeNotFound { notice_id } => {
                failure(Code::NotFound, "NOTICE_NOT_FOUND").with("notice_id", notice_id)
            }
            ApplicationError::PublicityPeriodEnded { notice_id, end_us } => {
                failure(Code::FailedPrecondition, "PUBLICITY_PERIOD_ENDED")
                    .with("notice_id", notice_id)
                    .with("end_time", rfc3339(*end_us))
            }
            ApplicationError::AwardRevoked { notice_id } => {
                failure(Code::FailedPrecondition, "AWARD_REVOKED").with("notice_id", notice_id)
            }
            ApplicationError::ObjectionNotFound { objection_id } => {
                failure(Code::NotFound, "OBJECTION_NOT_FOUND").with("objection_id", objection_id)
            }
            ApplicationError::ObjectionAlreadyDecided {
                objection_id,
                state,
            } => failure(Code::FailedPrecondition, "OBJECTION_ALREADY_DECIDED")
                .with("objection_id", objection_id)
                .with("state", state),
            ApplicationError::PaymentHeld { notice_id, hold } => {
                use crate::domain::publicity::PaymentHold;
                let end_us = match hold {
                    PaymentHold::PeriodOpen { end_us } | PaymentHold::ObjectionOpen { end_us } => {
                        end_us
                    }
                };
                let held =
                    failure(Code::FailedPrecondition, hold.reason()).with("notice_id", notice_id);
                match end_us {
                    Some(end_us) => held.with("end_time", rfc3339(*end_us)),
                    None => held,
                }
            }
            ApplicationError::Db(db) => return edge::storage_failure(DOMAIN, SERVICE, db),
        };
        failure.into()
    }
}

#[cfg(test)]
mod tests {
    use subsidy_proto::status::{metadata, reason, violated_fields};

    use super::*;

    #[test]
    fn a_refusal_names_the_ids_involved_in_its_error_info() {
        // Proves the ErrorInfo of a refusal carries its stable reason and the ids involved.
        let status = Status::from(ApplicationError::transition(
            Subject::Proposal("proposal-1".into()),
            "AWARDED",
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
        let keys = metadata(&status);
        assert_eq!(keys["proposal_id"], "proposal-1");
        assert_eq!(keys["state"], "AWARDED");
        let status = Status::from(ApplicationError::ApprovedAmountExceedsContract {
            claim_id: "claim-1".into(),
            contract_total: Money::from_yuan(10).unwrap(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["verified_paid_amount"]);
        assert_eq!(metadata(&status)["claim_id"], "claim-1");
        assert_eq!(metadata(&status)["contract_total"], "10.00");
    }

    #[test]
    fn peer_and_database_failures_tell_the_caller_nothing_of_their_cause() {
        // Proves unexpected peer answers and database bugs are an opaque INTERNAL, and a peer
        // that is down is UNAVAILABLE naming only the peer.
        let status = Status::from(ApplicationError::UpstreamUnexpected {
            service: "budget",
            code: "Internal".into(),
            reason: "SECRET_DETAIL".into(),
        });
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SECRET_DETAIL"));
        let status = Status::from(ApplicationError::Db(DbError::Other(
            sqlx::Error::RowNotFound,
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(reason(&status).as_deref(), Some("INTERNAL"));
        let status = Status::from(ApplicationError::UpstreamUnavailable("rules"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(metadata(&status)["service"], "rules");
    }
}
