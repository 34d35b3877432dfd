//! What the rules service refuses, and why, and the one place where that becomes a gRPC status.
//!
//! This is the only file of the crate that knows [`DbError`]: storage returns it, the use cases
//! wrap it here, and [`From<RulesError> for Status`] classifies it once, through the shared
//! `edge::storage_failure`. Every other refusal gets a canonical code, a stable reason and an
//! `ErrorInfo` whose metadata names the policy and version (or request id) involved; the keys
//! of each reason are listed in `rules_service.proto`.

use subsidy_common::db::DbError;
use subsidy_common::edge;
use subsidy_proto::status::{self as st, Failure, FieldViolation};
use tonic::{Code, Status};

use chrono::NaiveDate;

use crate::domain::graph::EngineFailure;
use crate::domain::registry::ProviderStatus;

/// The `ErrorInfo` domain of every rules error.
pub const DOMAIN: &str = "subsidy.rules";

/// What the rules service refuses, and why.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The request is malformed; nothing was evaluated or written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The policy document or its parameters do not validate.
    #[error("the policy is not valid")]
    PolicyInvalid {
        /// The draft's policy id.
        policy_id: &'static str,
        /// The draft's version.
        version: String,
        /// The draft's fields that are wrong.
        violations: Vec<FieldViolation>,
    },
    /// The policy document contains script (JavaScript function) nodes.
    #[error("the policy contains script (function) nodes, which are not allowed")]
    PolicyHasScriptNode {
        /// The draft's policy id.
        policy_id: &'static str,
        /// The draft's version.
        version: String,
        /// The ids of the script nodes.
        node_ids: Vec<String>,
        /// One violation of the document per script node.
        violations: Vec<FieldViolation>,
    },
    /// No published version of that policy id and version.
    #[error("policy version not found")]
    PolicyNotFound {
        /// The policy id asked for.
        policy_id: String,
        /// The version asked for; `None` when the one in effect was asked for.
        version: Option<String>,
    },
    /// The program has no published policy version at all.
    #[error("no policy version of the program is published")]
    NoPolicyPublished {
        /// The program's policy id.
        policy_id: &'static str,
    },
    /// A version with this policy id and version is already published.
    #[error("this policy version is already published; published versions are immutable")]
    PolicyVersionExists {
        /// The policy id.
        policy_id: &'static str,
        /// The version.
        version: String,
    },
    /// The engine failed on a published policy.
    #[error("the policy {policy_id}@{version} could not be evaluated: {failure}")]
    PolicyEvaluationFailed {
        /// The policy id.
        policy_id: &'static str,
        /// The version.
        version: String,
        /// What the engine said (logged, never sent).
        failure: EngineFailure,
    },
    /// No stored decision has that id, or the caller may not read it (an applicant asking for
    /// another enterprise's decision is answered the same way, so existence is not revealed).
    #[error("decision not found")]
    DecisionNotFound {
        /// The decision id asked for.
        decision_id: String,
    },
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// No provider of that USCC is registered.
    #[error("provider not found")]
    ProviderNotFound {
        /// The USCC asked for.
        uscc: String,
    },
    /// A provider of that USCC is registered already.
    #[error("a provider with this USCC is registered already")]
    ProviderExists {
        /// The USCC.
        uscc: String,
    },
    /// The provider has the status asked for already, or is revoked (final).
    #[error("the provider's status is {status}; it cannot change to the status asked for")]
    ProviderStatusUnchanged {
        /// The USCC.
        uscc: String,
        /// Its current status.
        status: ProviderStatus,
    },
    /// The change would take effect before the provider's current status did.
    #[error(
        "the change would take effect before the provider's current status did ({effective_date})"
    )]
    ProviderStatusDateOutOfOrder {
        /// The USCC.
        uscc: String,
        /// The day the current status took effect.
        effective_date: NaiveDate,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RulesError {
    fn from(error: sqlx::Error) -> Self {
        RulesError::Db(DbError::from(error))
    }
}

impl From<RulesError> for Status {
    /// The one place where rules errors become gRPC statuses: invalid input and invalid
    /// policies are `INVALID_ARGUMENT`, an unknown version or decision `NOT_FOUND`, no policy
    /// at all `FAILED_PRECONDITION`, a duplicate `ALREADY_EXISTS`, an engine failure an opaque
    /// `INTERNAL` (logged here), and database failures go through `edge::storage_failure`.
    fn from(error: RulesError) -> Status {
        let message = error.to_string();
        let failure = match error {
            RulesError::Invalid(violations) => return st::invalid_argument(DOMAIN, &violations),
            RulesError::PolicyInvalid {
                policy_id,
                version,
                violations,
            } => Failure::invalid_argument(DOMAIN, "POLICY_INVALID", &violations)
                .with("policy_id", policy_id)
                .with("version", version),
            RulesError::PolicyHasScriptNode {
                policy_id,
                version,
                node_ids,
                violations,
            } => Failure::invalid_argument(DOMAIN, "POLICY_HAS_SCRIPT_NODE", &violations)
                .with("policy_id", policy_id)
                .with("version", version)
                .with("node_ids", node_ids.join(",")),
            RulesError::PolicyNotFound { policy_id, version } => {
                let failure = Failure::new(Code::NotFound, DOMAIN, "POLICY_NOT_FOUND", message)
                    .with("policy_id", policy_id);
                match version {
                    Some(version) => failure.with("version", version),
                    None => failure,
                }
            }
            RulesError::NoPolicyPublished { policy_id } => Failure::new(
                Code::FailedPrecondition,
                DOMAIN,
                "NO_POLICY_PUBLISHED",
                message,
            )
            .with("policy_id", policy_id),
            RulesError::PolicyVersionExists { policy_id, version } => Failure::new(
                Code::AlreadyExists,
                DOMAIN,
                "POLICY_VERSION_EXISTS",
                message,
            )
            .with("policy_id", policy_id)
            .with("version", version),
            RulesError::DecisionNotFound { decision_id } => {
                Failure::new(Code::NotFound, DOMAIN, "DECISION_NOT_FOUND", message)
                    .with("decision_id", decision_id)
            }
            RulesError::RequestIdReused { request_id } => {
                Failure::new(Code::AlreadyExists, DOMAIN, "REQUEST_ID_REUSED", message)
                    .with("request_id", request_id)
            }
            RulesError::ProviderNotFound { uscc } => {
                Failure::new(Code::NotFound, DOMAIN, "PROVIDER_NOT_FOUND", message)
                    .with("uscc", uscc)
            }
            RulesError::ProviderExists { uscc } => {
                Failure::new(Code::AlreadyExists, DOMAIN, "PROVIDER_EXISTS", message)
                    .with("uscc", uscc)
            }
            RulesError::ProviderStatusUnchanged { uscc, status } => Failure::new(
                Code::FailedPrecondition,
                DOMAIN,
                "PROVIDER_STATUS_UNCHANGED",
                message,
            )
            .with("uscc", uscc)
            .with("status", status.as_str()),
            RulesError::ProviderStatusDateOutOfOrder {
                uscc,
                effective_date,
            } => Failure::new(
                Code::FailedPrecondition,
                DOMAIN,
                "PROVIDER_STATUS_DATE_OUT_OF_ORDER",
                message,
            )
            .with("uscc", uscc)
            .with("effective_date", effective_date.to_string()),
            RulesError::PolicyEvaluationFailed {
                policy_id,
                version,
                failure,
            } => {
                tracing::error!(error = %failure, policy_id, policy_version = %version, "policy evaluation failed");
                Failure::new(
                    Code::Internal,
                    DOMAIN,
                    "POLICY_EVALUATION_FAILED",
                    "the policy could not be evaluated",
                )
                .with("policy_id", policy_id)
                .with("version", version)
            }
            RulesError::Db(db) => return edge::storage_failure(DOMAIN, "rules", &db),
        };
        failure.into()
    }
}
