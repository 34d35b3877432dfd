//! The application service's configuration section, `[application]`: defaults, the
//! environment variables that override them, and validation with named bounds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting, check_range};

use crate::domain::{POOL_ID_LEN_MAX, POOL_ID_LEN_MIN};

/// Default pool the application service funds compute-voucher claims from.
pub const COMPUTE_VOUCHER_POOL_ID_DEFAULT: &str = "compute-voucher-2025";
/// Shortest hold lifetime accepted, in seconds: 0, which means the pool's default.
pub const HOLD_SECONDS_MIN: i64 = 0;
/// Longest hold lifetime accepted, in seconds: 366 days.
pub const HOLD_SECONDS_MAX: i64 = 366 * 24 * 3600;
/// Default interval of the reconciler, in milliseconds.
pub const RECONCILE_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Default age a half-done step must reach before the reconciler takes it over from the call
/// that started it, in milliseconds.
pub const RECONCILE_GRACE_MS_DEFAULT: u64 = 10_000;
/// Default interval of the outbox relay when idle, in milliseconds.
pub const RELAY_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default deadline of one call to a peer, in milliseconds.
pub const UPSTREAM_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default review period of a claim, in days: its review deadline is when its money was held
/// plus this.
pub const REVIEW_PERIOD_DAYS_DEFAULT: i64 = 60;
/// Longest review period accepted, in days (0, the shortest, makes every held claim overdue).
pub const REVIEW_PERIOD_DAYS_MAX: i64 = 366;
/// Default margin before its expiry within which the hold of a claim in review is extended, in
/// seconds: 7 days.
pub const HOLD_EXTEND_MARGIN_SECONDS_DEFAULT: i64 = 7 * 24 * 3600;
/// Shortest interval, grace or deadline accepted, in milliseconds.
pub const INTERVAL_MS_MIN: u64 = 10;
/// Longest interval, grace or deadline accepted, in milliseconds: one hour.
pub const INTERVAL_MS_MAX: u64 = 3_600_000;
/// Default document store: a local directory, relative to the working directory (the dev
/// stack puts it under its data directory).
pub const DOCUMENTS_URL_DEFAULT: &str = "data/documents";
/// Default largest document, in bytes: 20 MiB.
pub const DOCUMENT_SIZE_BYTES_MAX_DEFAULT: i64 = 20 * 1024 * 1024;
/// Largest per-document limit accepted, in bytes: 256 MiB (an upload is held in memory while
/// its digest is checked, so this bounds the memory of one upload).
pub const DOCUMENT_SIZE_BYTES_MAX_LIMIT: i64 = 256 * 1024 * 1024;
/// Default total of one application's documents, in bytes: 200 MiB.
pub const APPLICATION_DOCUMENTS_BYTES_MAX_DEFAULT: i64 = 200 * 1024 * 1024;
/// Largest per-application limit accepted, in bytes: 64 GiB.
pub const APPLICATION_DOCUMENTS_BYTES_MAX_LIMIT: i64 = 64 * 1024 * 1024 * 1024;

/// Application-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The budget pool compute-voucher claims are funded from.
    pub compute_voucher_pool_id: String,
    /// How long a claim's hold lasts, in seconds; 0 means the pool's default.
    pub hold_seconds: i64,
    /// How often the reconciler looks for half-done steps, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// How old a half-done step must be before the reconciler finishes it, in milliseconds.
    pub reconcile_grace_ms: u64,
    /// How often the outbox relay looks for undelivered events when idle, in milliseconds.
    pub relay_interval_ms: u64,
    /// Deadline of one call to the rules, budget or notification service, in milliseconds.
    pub upstream_timeout_ms: u64,
    /// Review period of a claim, in days: its review deadline is when its money was held plus
    /// this.
    pub review_period_days: i64,
    /// The hold of a claim in review is extended (by `hold_seconds` from then) once it expires
    /// within this many seconds, and never before two thirds of its lifetime have passed; 0
    /// turns the extension off.
    pub hold_extend_margin_seconds: i64,
    /// Where documents are stored: a directory (a path or a `file://` URL) or an S3 bucket
    /// with an optional prefix (`s3://bucket/prefix`).
    pub documents_url: String,
    /// The S3 endpoint (an S3-compatible server); empty for AWS itself (or `AWS_ENDPOINT`).
    pub documents_s3_endpoint: String,
    /// The S3 region; empty for `AWS_REGION` or `us-east-1`.
    pub documents_s3_region: String,
    /// The S3 access key id; empty for `AWS_ACCESS_KEY_ID` (or the instance's role).
    pub documents_s3_access_key_id: String,
    /// The S3 secret access key; empty for `AWS_SECRET_ACCESS_KEY`.
    pub documents_s3_secret_access_key: String,
    /// Whether the S3 endpoint may be plain HTTP (a test server on this machine).
    pub documents_s3_allow_http: bool,
    /// The largest document accepted, in bytes.
    pub document_size_bytes_max: i64,
    /// The largest total of one application's documents, in bytes.
    pub application_documents_bytes_max: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            compute_voucher_pool_id: COMPUTE_VOUCHER_POOL_ID_DEFAULT.into(),
            hold_seconds: 0,
            reconcile_interval_ms: RECONCILE_INTERVAL_MS_DEFAULT,
            reconcile_grace_ms: RECONCILE_GRACE_MS_DEFAULT,
            relay_interval_ms: RELAY_INTERVAL_MS_DEFAULT,
            upstream_timeout_ms: UPSTREAM_TIMEOUT_MS_DEFAULT,
            review_period_days: REVIEW_PERIOD_DAYS_DEFAULT,
            hold_extend_margin_seconds: HOLD_EXTEND_MARGIN_SECONDS_DEFAULT,
            documents_url: DOCUMENTS_URL_DEFAULT.into(),
            documents_s3_endpoint: String::new(),
            documents_s3_region: String::new(),
            documents_s3_access_key_id: String::new(),
            documents_s3_secret_access_key: String::new(),
            documents_s3_allow_http: false,
            document_size_bytes_max: DOCUMENT_SIZE_BYTES_MAX_DEFAULT,
            application_documents_bytes_max: APPLICATION_DOCUMENTS_BYTES_MAX_DEFAULT,
        }
    }
}

impl Section for Settings {
    const KEY: &'static str = "application";
    const SETTINGS: &'static [Setting] = &[
        Setting::text(
            "application.compute_voucher_pool_id",
            &["SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID"],
            "pool that funds compute-voucher claims",
        ),
        Setting::scalar(
            "application.hold_seconds",
            &["SUBSIDY_APPLICATION_HOLD_SECONDS"],
            "lifetime of a claim's hold, in seconds; 0 means the pool's default",
        ),
        Setting::scalar(
            "application.reconcile_interval_ms",
            &["SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS"],
            "how often half-done steps, expired holds and waitlists are looked at, in milliseconds",
        ),
        Setting::scalar(
            "application.reconcile_grace_ms",
            &["SUBSIDY_APPLICATION_RECONCILE_GRACE_MS"],
            "age (milliseconds) at which the reconciler takes a step over from the call that started it",
        ),
        Setting::scalar(
            "application.relay_interval_ms",
            &["SUBSIDY_APPLICATION_RELAY_INTERVAL_MS"],
            "outbox relay poll when idle, in milliseconds (it backs off to 5 s while notification is down)",
        ),
        Setting::scalar(
            "application.upstream_timeout_ms",
            &["SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS"],
            "deadline of each call to rules, budget and notification, in milliseconds",
        ),
        Setting::scalar(
            "application.review_period_days",
            &["SUBSIDY_APPLICATION_REVIEW_PERIOD_DAYS"],
            "review period of a claim in days: its review deadline (`review_due_time`) is when its money was held plus this",
        ),
        Setting::scalar(
            "application.hold_extend_margin_seconds",
            &["SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS"],
            "the hold of a claim in review is extended once it expires within this many seconds (never before two thirds of its lifetime); 0 turns the extension off",
        ),
        Setting::text(
            "application.documents_url",
            &["SUBSIDY_APPLICATION_DOCUMENTS_URL"],
            "where uploaded documents are stored: a directory (path or file:// URL) or s3://bucket/prefix",
        ),
        Setting::text(
            "application.documents_s3_endpoint",
            &["SUBSIDY_APPLICATION_DOCUMENTS_S3_ENDPOINT"],
            "S3-compatible endpoint of the document store; empty for AWS (or AWS_ENDPOINT)",
        ),
        Setting::text(
            "application.documents_s3_region",
            &["SUBSIDY_APPLICATION_DOCUMENTS_S3_REGION"],
            "region of the document store's bucket; empty for AWS_REGION or us-east-1",
        ),
        Setting::text(
            "application.documents_s3_access_key_id",
            &["SUBSIDY_APPLICATION_DOCUMENTS_S3_ACCESS_KEY_ID"],
            "access key id of the document store; empty for AWS_ACCESS_KEY_ID or the instance role",
        ),
        Setting::text(
            "application.documents_s3_secret_access_key",
            &["SUBSIDY_APPLICATION_DOCUMENTS_S3_SECRET_ACCESS_KEY"],
            "secret access key of the document store (a Secret); empty for AWS_SECRET_ACCESS_KEY",
        ),
        Setting::scalar(
            "application.documents_s3_allow_http",
            &["SUBSIDY_APPLICATION_DOCUMENTS_S3_ALLOW_HTTP"],
            "allow a plain-HTTP S3 endpoint (a test server on this machine only)",
        ),
        Setting::scalar(
            "application.document_size_bytes_max",
            &["SUBSIDY_APPLICATION_DOCUMENT_SIZE_BYTES_MAX"],
            "largest document accepted, in bytes (at most 256 MiB: an upload is checked in memory)",
        ),
        Setting::scalar(
            "application.application_documents_bytes_max",
            &["SUBSIDY_APPLICATION_APPLICATION_DOCUMENTS_BYTES_MAX"],
            "largest total of one claim's or proposal's documents, in bytes",
        ),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        let pool = &self.compute_voucher_pool_id;
        if !(POOL_ID_LEN_MIN..=POOL_ID_LEN_MAX).contains(&pool.len())
            || !pool
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::invalid(
                "application.compute_voucher_pool_id",
                pool,
                format!(
                    "must be {POOL_ID_LEN_MIN} to {POOL_ID_LEN_MAX} characters of a-z, 0-9 and -"
                ),
            ));
        }
        check_range(
            "application.hold_seconds",
            self.hold_seconds,
            HOLD_SECONDS_MIN,
            HOLD_SECONDS_MAX,
        )?;
        check_range(
            "application.review_period_days",
            self.review_period_days,
            0,
            REVIEW_PERIOD_DAYS_MAX,
        )?;
        check_range(
            "application.hold_extend_margin_seconds",
            self.hold_extend_margin_seconds,
            0,
            HOLD_SECONDS_MAX,
        )?;
        for (key, value) in [
            (
                "application.reconcile_interval_ms",
                self.reconcile_interval_ms,
            ),
            ("application.reconcile_grace_ms", self.reconcile_grace_ms),
            ("application.relay_interval_ms", self.relay_interval_ms),
            ("application.upstream_timeout_ms", self.upstream_timeout_ms),
        ] {
            check_range(key, value, INTERVAL_MS_MIN, INTERVAL_MS_MAX)?;
        }
        check_range(
            "application.document_size_bytes_max",
            self.document_size_bytes_max,
            1,
            DOCUMENT_SIZE_BYTES_MAX_LIMIT,
        )?;
        check_range(
            "application.application_documents_bytes_max",
            self.application_documents_bytes_max,
            1,
            APPLICATION_DOCUMENTS_BYTES_MAX_LIMIT,
        )?;
        Location::parse(&self.documents_url).map_err(|problem| {
            ConfigError::invalid("application.documents_url", &self.documents_url, problem)
        })?;
        Ok(())
    }
}

/// Where the documents are stored, as `application.documents_url` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory (created when missing).
    Directory(PathBuf),
    /// An S3 bucket, with a key prefix (possibly empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix of every key, without leading or trailing `/`.
        prefix: String,
    },
}

impl Location {
    /// Parses a directory path, a `file://` URL or `s3://bucket/prefix`.
    pub fn parse(url: &str) -> Result<Location, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err("the bucket must be 3 to 63 characters of a-z, 0-9, - and .".into());
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => {
                return Err("a file:// URL names an absolute path (file:///srv/documents)".into());
            }
            None if url.contains("://") => {
                return Err("must be a directory, a file:// URL or s3://bucket/prefix".into());
            }
            None => url,
        };
        if path.is_empty() {
            return Err("must name a directory, a file:// URL or s3://bucket/prefix".into());
        }
        Ok(Location::Directory(PathBuf::from(path)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use subsidy_common::config::{Config, ServiceKind};

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(ServiceKind::Application, None, &env)?.section()
    }

    #[test]
    fn application_settings_come_from_the_environment_and_are_validated() {
        // Proves the application service's settings are read and bad values refused by key.
        let settings = load(&[
            (
                "SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID",
                "vouchers-small",
            ),
            ("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "500"),
        ])
        .unwrap();
        assert_eq!(settings.compute_voucher_pool_id, "vouchers-small");
        assert_eq!(settings.reconcile_grace_ms, 500);
        assert_eq!(settings.relay_interval_ms, RELAY_INTERVAL_MS_DEFAULT);
        let error =
            load(&[("SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID", "Bad Pool")]).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "application.compute_voucher_pool_id",
                ..
            }
        ));
        let error = load(&[("SUBSIDY_APPLICATION_RELAY_INTERVAL_MS", "0")]).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "application.relay_interval_ms",
                ..
            }
        ));
    }
}
