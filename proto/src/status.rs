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
    Failure::new(code, domain, reason, message).into()
}

/// A failure on its way to the caller: a canonical code, exactly one `ErrorInfo` whose
/// metadata names the ids and limits involved (AIP-193: e.g. `claim_id`, `pool_id`,
/// `remaining`), and, for invalid input, the `BadRequest` field violations.
#[derive(Clone, Debug)]
pub struct Failure {
    code: Code,
    domain: String,
    reason: String,
    message: String,
    metadata: std::collections::HashMap<String, String>,
    violations: Vec<FieldViolation>,
    retry_delay: Option<std::time::Duration>,
}

impl Failure {
    /// A failure of `code` with `reason` in `domain`.
    pub fn new(code: Code, domain: &str, reason: &str, message: impl Into<String>) -> Self {
        Failure {
            code,
            domain: domain.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            metadata: std::collections::HashMap::new(),
            violations: Vec::new(),
            retry_delay: None,
        }
    }

    /// An `INVALID_ARGUMENT` failure with `reason` and every field violation, its message
    /// listing them; add metadata with [`Failure::with`] (e.g. the id of the object refused).
    pub fn invalid_argument(domain: &str, reason: &str, violations: &[FieldViolation]) -> Self {
        let message = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Failure::new(
            Code::InvalidArgument,
            domain,
            reason,
            format!("invalid request: {message}"),
        )
        .with_violations(violations)
    }

    /// Adds `key` = `value` to the `ErrorInfo` metadata (keys are lower_snake_case).
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// Adds field violations (a `BadRequest` detail).
    pub fn with_violations(mut self, violations: &[FieldViolation]) -> Self {
        self.violations.extend_from_slice(violations);
        self
    }
}

impl Failure {
    /// Adds a `RetryInfo`: the caller may try again after `delay`.
    pub fn with_retry_delay(mut self, delay: std::time::Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Status {
        let mut details =
            ErrorDetails::with_error_info(failure.reason, failure.domain, failure.metadata);
        for violation in &failure.violations {
            details
                .add_bad_request_violation(violation.field.clone(), violation.description.clone());
        }
        if let Some(delay) = failure.retry_delay {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(failure.code, failure.message, details)
    }
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
    Failure::invalid_argument(domain, reason, violations).into()
}

/// Returns the `ErrorInfo.metadata` of a status (empty when it carries none).
pub fn metadata(status: &Status) -> std::collections::HashMap<String, String> {
    status
        .get_details_error_info()
        .map(|info| info.metadata)
        .unwrap_or_default()
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
