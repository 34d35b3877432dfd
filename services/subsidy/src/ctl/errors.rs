//! How `subsidyctl` reports a failure: `CODE REASON: message` on the first line, then the
//! field violations and the ids the service named (`google.rpc` details), and an exit code by
//! class, so that scripts can branch on it without reading the text.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The exit codes, documented in `subsidyctl --help` and the README.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// Another failure (an internal error, a broken ledger, a service not serving).
    pub const FAILURE: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// `NOT_FOUND`.
    pub const NOT_FOUND: u8 = 3;
    /// `INVALID_ARGUMENT`, `OUT_OF_RANGE`.
    pub const INVALID: u8 = 4;
    /// `FAILED_PRECONDITION`, `ALREADY_EXISTS`, `ABORTED`: the state forbids it.
    pub const CONFLICT: u8 = 5;
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, or no connection: try again.
    pub const UNAVAILABLE: u8 = 6;
    /// `UNAUTHENTICATED`, `PERMISSION_DENIED`.
    pub const DENIED: u8 = 7;
}

/// The exit codes as `subsidyctl --help` lists them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other failure (internal error, broken ledger, a service not serving)
  2  usage (wrong command line)
  3  not found
  4  invalid argument (the field violations are printed)
  5  failed precondition or conflict (the state forbids it)
  6  unavailable, deadline exceeded, rate limited or unreachable: try again
  7  unauthenticated or permission denied

Errors are printed as `CODE REASON: message`, then one line per field violation.";

/// The exit code of a gRPC status code.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => exit::OK,
        Code::NotFound => exit::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => exit::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => exit::UNAVAILABLE,
        Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
        Code::Cancelled | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            exit::FAILURE
        }
    }
}

/// The canonical name of a gRPC status code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status as people and scripts read it: `CODE REASON: message`, then `  field: why` per
/// violation, the `ErrorInfo` metadata as `  key=value` (sorted) and the retry delay.
pub fn describe(status: &Status) -> String {
    let details = status.get_error_details();
    let mut out = code_name(status.code()).to_owned();
    if let Some(info) = details.error_info() {
        out.push(' ');
        out.push_str(&info.reason);
    }
    out.push_str(": ");
    out.push_str(status.message());
    if let Some(bad) = details.bad_request() {
        for violation in &bad.field_violations {
            out.push_str(&format!(
                "\n  {}: {}",
                violation.field, violation.description
            ));
        }
    }
    if let Some(precondition) = details.precondition_failure() {
        for violation in &precondition.violations {
            out.push_str(&format!(
                "\n  {} {}: {}",
                violation.r#type, violation.subject, violation.description
            ));
        }
    }
    if let Some(info) = details.error_info() {
        let mut metadata: Vec<_> = info.metadata.iter().collect();
        metadata.sort();
        for (key, value) in metadata {
            out.push_str(&format!("\n  {key}={value}"));
        }
    }
    if let Some(delay) = details.retry_info().and_then(|retry| retry.retry_delay) {
        out.push_str(&format!("\n  retry after {} ms", delay.as_millis()));
    }
    out
}

/// What to print and the exit code for an error a command returned: a gRPC status is
/// described by class; any other error (a file that cannot be read, an amount that does not
/// parse, a broken ledger) is printed as it is, with exit code 1.
pub fn report(error: &(dyn std::error::Error + 'static)) -> (String, u8) {
    match error.downcast_ref::<Status>() {
        Some(status) => (describe(status), exit_code(status.code())),
        None => (error.to_string(), exit::FAILURE),
    }
}

/// The error of a service that cannot be reached: `UNAVAILABLE`, so scripts retry.
pub fn unreachable(what: String) -> Status {
    Status::unavailable(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use subsidy_proto::status::{Failure, FieldViolation};

    #[test]
    fn a_status_is_described_by_code_reason_message_and_details() {
        // Proves the first line is `CODE REASON: message` and every detail follows.
        let status: Status = Failure::invalid_argument(
            "subsidy.application",
            "INVALID_ARGUMENT",
            &[FieldViolation::new(
                "enterprise_uscc",
                "is not a valid USCC",
            )],
        )
        .with("claim_id", "claim-1")
        .into();
        let text = describe(&status);
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("INVALID_ARGUMENT INVALID_ARGUMENT: "),
            "{text}"
        );
        assert!(
            text.contains("\n  enterprise_uscc: is not a valid USCC"),
            "{text}"
        );
        assert!(text.contains("\n  claim_id=claim-1"), "{text}");
        assert_eq!(report(&status).1, exit::INVALID);
    }

    #[test]
    fn exit_codes_follow_the_documented_classes() {
        // Proves each class has the documented code and that the help lists each code.
        for (code, exit) in [
            (Code::NotFound, 3),
            (Code::InvalidArgument, 4),
            (Code::OutOfRange, 4),
            (Code::FailedPrecondition, 5),
            (Code::AlreadyExists, 5),
            (Code::Aborted, 5),
            (Code::Unavailable, 6),
            (Code::DeadlineExceeded, 6),
            (Code::ResourceExhausted, 6),
            (Code::Unauthenticated, 7),
            (Code::PermissionDenied, 7),
            (Code::Internal, 1),
        ] {
            assert_eq!(exit_code(code), exit, "{code:?}");
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {exit}  ")), "{exit}");
        }
        let plain: Box<dyn std::error::Error> = "the ledger is broken".into();
        assert_eq!(report(plain.as_ref()), ("the ledger is broken".into(), 1));
        let unreachable = unreachable("cannot reach the budget service".into());
        assert_eq!(
            report(&unreachable),
            (
                "UNAVAILABLE: cannot reach the budget service".to_owned(),
                exit::UNAVAILABLE
            )
        );
    }
}
