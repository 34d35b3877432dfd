//! The budget's errors, and the one place where they become gRPC statuses.

use subsidy_common::db::DbError;
use subsidy_common::edge;
use subsidy_proto::status::{self as st, Failure, FieldViolation};
use tonic::{Code, Status};

use crate::domain::Refusal;

/// The `ErrorInfo` domain of every budget error.
pub const DOMAIN: &str = "subsidy.budget";

/// What the budget refuses, and why.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such pool.
    #[error("pool not found")]
    PoolNotFound {
        /// The pool asked for.
        pool_id: String,
    },
    /// A pool with this id exists.
    #[error("pool already exists")]
    PoolAlreadyExists {
        /// The pool.
        pool_id: String,
    },
    /// An operation of a batch was refused (money, caps, state of the reservation).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// No checkpoint signing key is configured (`budget.checkpoint_key_file`).
    #[error(
        "checkpoints are disabled: no signing key is configured (budget.checkpoint_key_file, SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE)"
    )]
    CheckpointsDisabled,
    /// The pool's writer stopped before answering (it is restarted; the call may be retried
    /// with the same request id).
    #[error("the pool's writer stopped before answering")]
    WriterStopped,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for BudgetError {
    fn from(error: sqlx::Error) -> Self {
        BudgetError::Db(DbError::from(error))
    }
}

impl BudgetError {
    /// A stored response that no longer decodes: a bug or a damaged row, never the caller's
    /// fault.
    pub fn corrupt_response(error: prost::DecodeError) -> Self {
        BudgetError::Db(DbError::Other(sqlx::Error::Decode(Box::new(error))))
    }

    /// Whether the whole batch should be answered "retry": the database is away or the writer
    /// stopped, as opposed to a failure of one poisonous job.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BudgetError::Db(DbError::Unavailable(_)) | BudgetError::WriterStopped
        )
    }

    /// The stable reason of the error, as the caller sees it.
    pub fn reason(&self) -> &'static str {
        match self {
            BudgetError::Invalid(_) => "INVALID_ARGUMENT",
            BudgetError::PoolNotFound { .. } => "POOL_NOT_FOUND",
            BudgetError::PoolAlreadyExists { .. } => "POOL_ALREADY_EXISTS",
            BudgetError::Refused(refusal) => match refusal {
                Refusal::PoolExhausted { .. } => "POOL_EXHAUSTED",
                Refusal::BeneficiaryCapExceeded { .. } => "BENEFICIARY_CAP_EXCEEDED",
                Refusal::ReservationCapExceeded { .. } => "RESERVATION_CAP_EXCEEDED",
                Refusal::PoolClosed { .. } => "POOL_CLOSED",
                Refusal::ReservationNotFound { .. } => "RESERVATION_NOT_FOUND",
                Refusal::ReservationNotHeld { .. } => "RESERVATION_NOT_HELD",
                Refusal::ReservationNotCommitted { .. } => "RESERVATION_NOT_COMMITTED",
                Refusal::CommitExceedsHold { .. } => "COMMIT_EXCEEDS_HOLD",
            },
            BudgetError::RequestIdReused { .. } => "REQUEST_ID_REUSED",
            BudgetError::CheckpointsDisabled => "CHECKPOINTS_DISABLED",
            BudgetError::WriterStopped | BudgetError::Db(_) => "STORAGE_UNAVAILABLE",
        }
    }

    /// The same failure for a second caller of the same request in one batch; a database
    /// failure is reported to each as a stopped writer (retry with the same request id).
    pub fn duplicate(&self) -> BudgetError {
        match self {
            BudgetError::Invalid(violations) => BudgetError::Invalid(violations.clone()),
            BudgetError::PoolNotFound { pool_id } => BudgetError::PoolNotFound {
                pool_id: pool_id.clone(),
            },
            BudgetError::PoolAlreadyExists { pool_id } => BudgetError::PoolAlreadyExists {
                pool_id: pool_id.clone(),
            },
            BudgetError::Refused(refusal) => BudgetError::Refused(refusal.clone()),
            BudgetError::RequestIdReused { request_id } => BudgetError::RequestIdReused {
                request_id: request_id.clone(),
            },
            BudgetError::CheckpointsDisabled => BudgetError::CheckpointsDisabled,
            BudgetError::WriterStopped | BudgetError::Db(_) => BudgetError::WriterStopped,
        }
    }
}

fn money_text(fen: i64) -> String {
    subsidy_common::Money::from_fen(fen)
        .map(|money| money.to_string())
        .unwrap_or_else(|_| fen.to_string())
}

/// The ErrorInfo metadata of a refusal (AIP-193): the ids and amounts (CNY, decimal text).
fn refusal_failure(failure: Failure, refusal: &Refusal) -> Failure {
    match refusal {
        Refusal::PoolExhausted {
            pool_id,
            requested_fen,
            available_fen,
        } => failure
            .with("pool_id", pool_id)
            .with("requested", money_text(*requested_fen))
            .with("available", money_text(*available_fen)),
        Refusal::BeneficiaryCapExceeded {
            pool_id,
            beneficiary_uscc,
            cap_fen,
            used_fen,
            requested_fen,
        } => failure
            .with("pool_id", pool_id)
            .with("beneficiary_uscc", beneficiary_uscc)
            .with("cap", money_text(*cap_fen))
            .with("used", money_text(*used_fen))
            .with("remaining", money_text((cap_fen - used_fen).max(0)))
            .with("requested", money_text(*requested_fen)),
        Refusal::ReservationCapExceeded {
            pool_id,
            cap_fen,
            requested_fen,
        } => failure
            .with("pool_id", pool_id)
            .with("cap", money_text(*cap_fen))
            .with("requested", money_text(*requested_fen)),
        Refusal::PoolClosed { pool_id } => failure.with("pool_id", pool_id),
        Refusal::ReservationNotFound { reservation_id } => {
            failure.with("reservation_id", reservation_id)
        }
        Refusal::ReservationNotHeld {
            reservation_id,
            state,
        }
        | Refusal::ReservationNotCommitted {
            reservation_id,
            state,
        } => failure
            .with("reservation_id", reservation_id)
            .with("state", state),
        Refusal::CommitExceedsHold {
            reservation_id,
            held_fen,
            requested_fen,
        } => failure
            .with("reservation_id", reservation_id)
            .with("held", money_text(*held_fen))
            .with("requested", money_text(*requested_fen)),
    }
}

impl From<BudgetError> for Status {
    /// The one place where budget errors become gRPC statuses. Database details are logged
    /// here (by `edge::storage_failure`) and never sent to the caller.
    fn from(error: BudgetError) -> Status {
        let reason = error.reason();
        let code = match &error {
            BudgetError::Invalid(violations) => return st::invalid_argument(DOMAIN, violations),
            BudgetError::Db(db) => return edge::storage_failure(DOMAIN, "budget", db),
            BudgetError::WriterStopped => {
                tracing::error!("a pool writer stopped before answering");
                return Failure::new(
                    Code::Unavailable,
                    DOMAIN,
                    reason,
                    "the budget could not finish the request; retry with the same request_id",
                )
                .into();
            }
            BudgetError::PoolNotFound { .. } => Code::NotFound,
            BudgetError::Refused(Refusal::ReservationNotFound { .. }) => Code::NotFound,
            BudgetError::PoolAlreadyExists { .. } | BudgetError::RequestIdReused { .. } => {
                Code::AlreadyExists
            }
            BudgetError::Refused(_) | BudgetError::CheckpointsDisabled => Code::FailedPrecondition,
        };
        let failure = Failure::new(code, DOMAIN, reason, error.to_string());
        let failure = match &error {
            BudgetError::PoolNotFound { pool_id } | BudgetError::PoolAlreadyExists { pool_id } => {
                failure.with("pool_id", pool_id)
            }
            BudgetError::RequestIdReused { request_id } => failure.with("request_id", request_id),
            BudgetError::Refused(refusal) => refusal_failure(failure, refusal),
            BudgetError::CheckpointsDisabled => failure
                .with("setting", crate::settings::CHECKPOINT_KEY_FILE_KEY)
                .with("env", crate::settings::CHECKPOINT_KEY_FILE_ENV),
            _ => failure,
        };
        failure.into()
    }
}
