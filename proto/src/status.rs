//! Builders for `tonic::Status` carrying exactly one `google.rpc.ErrorInfo` with a stable reason,
//! plus `google.rpc.BadRequest` field violations for invalid input (AIP-193).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field that failed validation: the field path in the request and a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The path of the field, for example `amount.nanos`.
    pub field: String,
    /// Why the value is not accepted.
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation for `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Builds a status with `code`, a message, and an `ErrorInfo` of `domain` and `reason`.
pub fn with_reason(code: Code, domain: &str, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, domain, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// Builds an `INVALID_ARGUMENT` status with reason `INVALID_ARGUMENT` and every field violation.
pub fn invalid_argument(domain: &str, violations: &[FieldViolation]) -> Status {
    invalid_argument_with_reason(domain, "INVALID_ARGUMENT", violations)
}

/// Builds an `INVALID_ARGUMENT` status with a specific reason (such as `POOL_NOT_FOUND` for a
/// request naming a pool that does not exist) and every field violation.
pub fn invalid_argument_with_reason(
    domain: &str,
    reason: &str,
    violations: &[FieldViolation],
) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason, domain, std::collections::HashMap::new());
    for violation in violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {message}"),
        details,
    )
}

/// Returns the `ErrorInfo.reason` of a status, if it carries one.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Returns the field paths of the `BadRequest` violations of a status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
