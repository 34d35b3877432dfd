//! Configuration: built-in defaults, then a TOML file, then environment variables; validated
//! once at start-up so that a service refuses to start on bad configuration with a clear message.
//!
//! Environment variables (each overrides the file):
//! `SUBSIDY_LISTEN`, `SUBSIDY_DATABASE_URL` (or `DATABASE_URL`), `SUBSIDY_DATABASE_MAX_CONNECTIONS`,
//! `SUBSIDY_REQUEST_TIMEOUT_MS`, `SUBSIDY_SHUTDOWN_GRACE_MS`, `SUBSIDY_MESSAGE_SIZE_MAX_BYTES`,
//! `SUBSIDY_LOG_FORMAT` (`json` or `text`), `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `SUBSIDY_RULES_URL`, `SUBSIDY_BUDGET_URL`, `SUBSIDY_NOTIFICATION_URL`,
//! `SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS`, and for the notification service `SUBSIDY_SMTP_URL`,
//! `SUBSIDY_SMTP_FROM`, `SUBSIDY_SMTP_TIMEOUT_MS`, `SUBSIDY_WEBHOOK_TIMEOUT_MS`,
//! `SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS` (comma-separated), `SUBSIDY_NOTIFICATION_RETRY_JITTER_PERCENT`,
//! `SUBSIDY_NOTIFICATION_MAX_IN_FLIGHT`, `SUBSIDY_NOTIFICATION_DISABLE_AFTER_MS`,
//! `SUBSIDY_NOTIFICATION_ALLOW_HTTP` (`true` or `false`), `SUBSIDY_NOTIFICATION_POLL_INTERVAL_MS`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Default request timeout of every RPC, in milliseconds.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time granted to in-flight calls after SIGTERM, in milliseconds.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 20_000;
/// Default largest accepted or sent gRPC message, in bytes.
pub const MESSAGE_SIZE_MAX_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Default size of a service's database pool.
pub const DATABASE_MAX_CONNECTIONS_DEFAULT: u32 = 16;
/// Default wait for a database connection, in milliseconds.
pub const DATABASE_ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default interval of the budget's expiry sweep, in milliseconds.
pub const BUDGET_EXPIRY_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Default pool the application service funds compute-voucher claims from.
pub const APPLICATION_COMPUTE_VOUCHER_POOL_ID_DEFAULT: &str = "compute-voucher-2025";
/// Default interval of the application service's reconciler, in milliseconds.
pub const APPLICATION_RECONCILE_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Default age a half-done step must reach before the reconciler takes it over from the call
/// that started it, in milliseconds.
pub const APPLICATION_RECONCILE_GRACE_MS_DEFAULT: u64 = 10_000;
/// Default interval of the application service's outbox relay when idle, in milliseconds.
pub const APPLICATION_RELAY_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default deadline of one call from the application service to a peer, in milliseconds.
pub const APPLICATION_UPSTREAM_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default SMTP relay of the notification service: a local relay without TLS.
pub const SMTP_URL_DEFAULT: &str = "smtp://127.0.0.1:25";
/// Default sender of the notification service's emails.
pub const SMTP_FROM_DEFAULT: &str = "Shandong Subsidy Notifications <noreply@subsidy.invalid>";
/// Default time one SMTP conversation may take, in milliseconds.
pub const SMTP_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time a webhook endpoint has to answer, in milliseconds.
pub const WEBHOOK_TIMEOUT_MS_DEFAULT: u64 = 15_000;
/// Default delays before each attempt of a delivery, in milliseconds: immediately, 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h. Its length is the number of attempts.
pub const RETRY_SCHEDULE_MS_DEFAULT: [u64; 8] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];
/// Most attempts a retry schedule may have.
pub const RETRY_SCHEDULE_LEN_MAX: usize = 20;
/// Longest delay of one retry step, in milliseconds: 7 days.
pub const RETRY_DELAY_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Default jitter of each retry delay, in percent of the delay (either way).
pub const RETRY_JITTER_PERCENT_DEFAULT: u32 = 10;
/// Largest jitter accepted, in percent.
pub const RETRY_JITTER_PERCENT_MAX: u32 = 50;
/// Default deliveries attempted at once per webhook subscription.
pub const MAX_IN_FLIGHT_DEFAULT: u32 = 8;
/// Largest number of deliveries attempted at once per webhook subscription.
pub const MAX_IN_FLIGHT_MAX: u32 = 64;
/// Default emails sent at once by one notification process.
pub const EMAIL_IN_FLIGHT_MAX_DEFAULT: u32 = 4;
/// Default attempts (webhook and email together) made at once by one notification process.
pub const WORKER_CONCURRENCY_MAX_DEFAULT: u32 = 64;
/// Default time an endpoint may fail every attempt before its subscription is disabled, in
/// milliseconds: 5 days.
pub const DISABLE_AFTER_MS_DEFAULT: u64 = 5 * 24 * 3_600_000;
/// Default interval at which the delivery worker looks for due deliveries when nothing woke it,
/// in milliseconds.
pub const NOTIFICATION_POLL_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Default silence after which an event stream gets a heartbeat, in milliseconds.
pub const STREAM_HEARTBEAT_MS_DEFAULT: u64 = 30_000;

/// The four services and their default ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// The front door, port 50051.
    Application,
    /// Policy evaluation, port 50052.
    Rules,
    /// The pools, port 50053.
    Budget,
    /// Delivery of events, port 50054.
    Notification,
}

impl ServiceKind {
    /// All four, in port order.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Application,
        ServiceKind::Rules,
        ServiceKind::Budget,
        ServiceKind::Notification,
    ];

    /// The short name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Application => "application",
            ServiceKind::Rules => "rules",
            ServiceKind::Budget => "budget",
            ServiceKind::Notification => "notification",
        }
    }

    /// The default port.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceKind::Application => 50051,
            ServiceKind::Rules => 50052,
            ServiceKind::Budget => 50053,
            ServiceKind::Notification => 50054,
        }
    }

    /// The fully-qualified gRPC service name.
    pub fn grpc_name(self) -> &'static str {
        match self {
            ServiceKind::Application => "subsidy.application.v1.ApplicationService",
            ServiceKind::Rules => "subsidy.rules.v1.RulesService",
            ServiceKind::Budget => "subsidy.budget.v1.BudgetService",
            ServiceKind::Notification => "subsidy.notification.v1.NotificationService",
        }
    }

    /// Parses a short name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or malformed.
    #[error("invalid configuration: {key} = {value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The settings of one service process.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address to listen on.
    pub listen: String,
    /// Database settings.
    pub database: DatabaseConfig,
    /// Limits of the gRPC server.
    pub server: ServerConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Where the other services are.
    pub peers: PeersConfig,
    /// Budget-service settings.
    pub budget: BudgetConfig,
    /// Notification-service settings.
    pub notification: NotificationConfig,
    /// Application-service settings.
    pub application: ApplicationConfig,
}

/// Database settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite:…`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Wait for a connection, in milliseconds.
    pub acquire_timeout_ms: u64,
}

/// Limits of the gRPC server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Deadline of every call handled, in milliseconds.
    pub request_timeout_ms: u64,
    /// Time granted to in-flight calls after SIGTERM/SIGINT, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Largest message accepted or sent, in bytes.
    pub message_size_max_bytes: usize,
    /// Concurrent calls per connection.
    pub concurrency_per_connection_max: usize,
}

/// Logs and traces.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (default) or `text`.
    pub log_format: String,
    /// A `tracing` filter such as `info` or `subsidy_budget=debug,info`.
    pub log_filter: String,
    /// OTLP/gRPC endpoint; traces and metrics are exported only when set.
    pub otlp_endpoint: Option<String>,
}

/// Where the other services are (used by the application service and the CLI).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// The application service.
    pub application_url: String,
    /// The rules service.
    pub rules_url: String,
    /// The budget service.
    pub budget_url: String,
    /// The notification service.
    pub notification_url: String,
}

/// Budget-service settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// How often held reservations past their expiry are expired, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Whether to create the two 2025 pools when they do not exist.
    pub seed_2025_pools: bool,
}

/// Notification-service settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationConfig {
    /// The SMTP relay: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:password@host:465`.
    pub smtp_url: String,
    /// The sender of every email, e.g. `Name <noreply@example.org>`.
    pub smtp_from: String,
    /// Time one SMTP conversation may take, in milliseconds.
    pub smtp_timeout_ms: u64,
    /// Time a webhook endpoint has to answer with a status, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Delay before each attempt of a delivery, in milliseconds, the first counted from the
    /// publication and each later one from the previous failure; its length is the number of
    /// attempts before the delivery is dead-lettered.
    pub retry_schedule_ms: Vec<u64>,
    /// Random spread of each retry delay, in percent of the delay, either way.
    pub retry_jitter_percent: u32,
    /// Deliveries attempted at once for a subscription that does not set its own limit.
    pub max_in_flight_default: u32,
    /// Emails sent at once by one process.
    pub email_in_flight_max: u32,
    /// Attempts made at once by one process.
    pub worker_concurrency_max: u32,
    /// Time an endpoint may fail every attempt before its subscription is disabled, in
    /// milliseconds.
    pub disable_after_ms: u64,
    /// Whether plain `http://` webhook endpoints are accepted (tests, closed networks).
    pub allow_http_endpoints: bool,
    /// Interval of the delivery worker's look for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Silence after which an event stream gets a heartbeat, in milliseconds.
    pub stream_heartbeat_ms: u64,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            smtp_url: SMTP_URL_DEFAULT.into(),
            smtp_from: SMTP_FROM_DEFAULT.into(),
            smtp_timeout_ms: SMTP_TIMEOUT_MS_DEFAULT,
            webhook_timeout_ms: WEBHOOK_TIMEOUT_MS_DEFAULT,
            retry_schedule_ms: RETRY_SCHEDULE_MS_DEFAULT.to_vec(),
            retry_jitter_percent: RETRY_JITTER_PERCENT_DEFAULT,
            max_in_flight_default: MAX_IN_FLIGHT_DEFAULT,
            email_in_flight_max: EMAIL_IN_FLIGHT_MAX_DEFAULT,
            worker_concurrency_max: WORKER_CONCURRENCY_MAX_DEFAULT,
            disable_after_ms: DISABLE_AFTER_MS_DEFAULT,
            allow_http_endpoints: false,
            poll_interval_ms: NOTIFICATION_POLL_INTERVAL_MS_DEFAULT,
            stream_heartbeat_ms: STREAM_HEARTBEAT_MS_DEFAULT,
        }
    }
}

/// Application-service settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicationConfig {
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
}

impl Default for ApplicationConfig {
    fn default() -> Self {
        Self {
            compute_voucher_pool_id: APPLICATION_COMPUTE_VOUCHER_POOL_ID_DEFAULT.into(),
            hold_seconds: 0,
            reconcile_interval_ms: APPLICATION_RECONCILE_INTERVAL_MS_DEFAULT,
            reconcile_grace_ms: APPLICATION_RECONCILE_GRACE_MS_DEFAULT,
            relay_interval_ms: APPLICATION_RELAY_INTERVAL_MS_DEFAULT,
            upstream_timeout_ms: APPLICATION_UPSTREAM_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: DATABASE_MAX_CONNECTIONS_DEFAULT,
            acquire_timeout_ms: DATABASE_ACQUIRE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES_DEFAULT,
            concurrency_per_connection_max: 256,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "json".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl Default for PeersConfig {
    fn default() -> Self {
        let url = |kind: ServiceKind| format!("http://127.0.0.1:{}", kind.default_port());
        Self {
            application_url: url(ServiceKind::Application),
            rules_url: url(ServiceKind::Rules),
            budget_url: url(ServiceKind::Budget),
            notification_url: url(ServiceKind::Notification),
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            expiry_interval_ms: BUDGET_EXPIRY_INTERVAL_MS_DEFAULT,
            seed_2025_pools: true,
        }
    }
}

/// A source of environment variables (the process environment, or a map in tests).
pub trait Env {
    /// The value of `key`, if set and not empty.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

fn parse_env<T: std::str::FromStr>(
    env: &dyn Env,
    key: &'static str,
    target: &mut T,
) -> Result<(), ConfigError> {
    if let Some(value) = env.get(key) {
        *target = value.parse().map_err(|_| ConfigError::Invalid {
            key,
            value,
            why: "not a number",
        })?;
    }
    Ok(())
}

impl Config {
    /// Loads the configuration of `kind`: defaults, then `file` if given, then `env`.
    pub fn load(
        kind: ServiceKind,
        file: Option<&Path>,
        env: &dyn Env,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str::<Config>(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source: Box::new(source),
                })?
            }
            None => Config::default(),
        };
        if config.listen.is_empty() {
            config.listen = format!("0.0.0.0:{}", kind.default_port());
        }
        if let Some(value) = env.get("SUBSIDY_LISTEN") {
            config.listen = value;
        }
        if let Some(value) = env
            .get("SUBSIDY_DATABASE_URL")
            .or_else(|| env.get("DATABASE_URL"))
        {
            config.database.url = value;
        }
        if config.database.url.is_empty() {
            config.database.url = format!("sqlite:data/{}.db", kind.name());
        }
        parse_env(
            env,
            "SUBSIDY_DATABASE_MAX_CONNECTIONS",
            &mut config.database.max_connections,
        )?;
        parse_env(
            env,
            "SUBSIDY_REQUEST_TIMEOUT_MS",
            &mut config.server.request_timeout_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_SHUTDOWN_GRACE_MS",
            &mut config.server.shutdown_grace_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_MESSAGE_SIZE_MAX_BYTES",
            &mut config.server.message_size_max_bytes,
        )?;
        parse_env(
            env,
            "SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS",
            &mut config.budget.expiry_interval_ms,
        )?;
        let notification = &mut config.notification;
        if let Some(value) = env.get("SUBSIDY_SMTP_URL") {
            notification.smtp_url = value;
        }
        if let Some(value) = env.get("SUBSIDY_SMTP_FROM") {
            notification.smtp_from = value;
        }
        parse_env(
            env,
            "SUBSIDY_SMTP_TIMEOUT_MS",
            &mut notification.smtp_timeout_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_WEBHOOK_TIMEOUT_MS",
            &mut notification.webhook_timeout_ms,
        )?;
        if let Some(value) = env.get("SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS") {
            notification.retry_schedule_ms = value
                .split(',')
                .map(|step| step.trim().parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| ConfigError::Invalid {
                    key: "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                    value,
                    why: "not a comma-separated list of milliseconds",
                })?;
        }
        parse_env(
            env,
            "SUBSIDY_NOTIFICATION_RETRY_JITTER_PERCENT",
            &mut notification.retry_jitter_percent,
        )?;
        parse_env(
            env,
            "SUBSIDY_NOTIFICATION_MAX_IN_FLIGHT",
            &mut notification.max_in_flight_default,
        )?;
        parse_env(
            env,
            "SUBSIDY_NOTIFICATION_DISABLE_AFTER_MS",
            &mut notification.disable_after_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_NOTIFICATION_POLL_INTERVAL_MS",
            &mut notification.poll_interval_ms,
        )?;
        if let Some(value) = env.get("SUBSIDY_NOTIFICATION_ALLOW_HTTP") {
            notification.allow_http_endpoints = match value.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "SUBSIDY_NOTIFICATION_ALLOW_HTTP",
                        value,
                        why: "must be true or false",
                    });
                }
            };
        }
        if let Some(value) = env.get("SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID") {
            config.application.compute_voucher_pool_id = value;
        }
        parse_env(
            env,
            "SUBSIDY_APPLICATION_HOLD_SECONDS",
            &mut config.application.hold_seconds,
        )?;
        parse_env(
            env,
            "SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS",
            &mut config.application.reconcile_interval_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_APPLICATION_RECONCILE_GRACE_MS",
            &mut config.application.reconcile_grace_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_APPLICATION_RELAY_INTERVAL_MS",
            &mut config.application.relay_interval_ms,
        )?;
        parse_env(
            env,
            "SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS",
            &mut config.application.upstream_timeout_ms,
        )?;
        if let Some(value) = env.get("SUBSIDY_LOG_FORMAT") {
            config.telemetry.log_format = value;
        }
        if let Some(value) = env.get("RUST_LOG") {
            config.telemetry.log_filter = value;
        }
        if let Some(value) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            config.telemetry.otlp_endpoint = Some(value);
        }
        for (key, target) in [
            ("SUBSIDY_APPLICATION_URL", &mut config.peers.application_url),
            ("SUBSIDY_RULES_URL", &mut config.peers.rules_url),
            ("SUBSIDY_BUDGET_URL", &mut config.peers.budget_url),
            (
                "SUBSIDY_NOTIFICATION_URL",
                &mut config.peers.notification_url,
            ),
        ] {
            if let Some(value) = env.get(key) {
                *target = value;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: &dyn std::fmt::Display, why| {
            Err(ConfigError::Invalid {
                key,
                value: value.to_string(),
                why,
            })
        };
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "listen",
                &self.listen,
                "must be an IP address and port, e.g. 0.0.0.0:50053",
            );
        }
        let url = &self.database.url;
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return invalid(
                "database.url",
                url,
                "must start with postgres:// or sqlite:",
            );
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            return invalid(
                "database.max_connections",
                &self.database.max_connections,
                "must be 1 to 1000",
            );
        }
        if !(100..=600_000).contains(&self.database.acquire_timeout_ms) {
            return invalid(
                "database.acquire_timeout_ms",
                &self.database.acquire_timeout_ms,
                "must be 100 to 600000",
            );
        }
        if !(100..=600_000).contains(&self.server.request_timeout_ms) {
            return invalid(
                "server.request_timeout_ms",
                &self.server.request_timeout_ms,
                "must be 100 to 600000",
            );
        }
        if self.server.shutdown_grace_ms > 600_000 {
            return invalid(
                "server.shutdown_grace_ms",
                &self.server.shutdown_grace_ms,
                "must be at most 600000",
            );
        }
        if !(4096..=64 * 1024 * 1024).contains(&self.server.message_size_max_bytes) {
            return invalid(
                "server.message_size_max_bytes",
                &self.server.message_size_max_bytes,
                "must be 4096 to 67108864",
            );
        }
        if !(1..=100_000).contains(&self.server.concurrency_per_connection_max) {
            return invalid(
                "server.concurrency_per_connection_max",
                &self.server.concurrency_per_connection_max,
                "must be 1 to 100000",
            );
        }
        if !matches!(self.telemetry.log_format.as_str(), "json" | "text") {
            return invalid(
                "telemetry.log_format",
                &self.telemetry.log_format,
                "must be json or text",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter).is_err() {
            return invalid(
                "telemetry.log_filter",
                &self.telemetry.log_filter,
                "is not a valid tracing filter",
            );
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid(
                "telemetry.otlp_endpoint",
                endpoint,
                "must be an http:// or https:// URL",
            );
        }
        for (key, url) in [
            ("peers.application_url", &self.peers.application_url),
            ("peers.rules_url", &self.peers.rules_url),
            ("peers.budget_url", &self.peers.budget_url),
            ("peers.notification_url", &self.peers.notification_url),
        ] {
            if url
                .parse::<http::Uri>()
                .map(|uri| uri.scheme().is_none() || uri.host().is_none())
                .unwrap_or(true)
            {
                return invalid(
                    key,
                    url,
                    "must be an absolute URL such as http://127.0.0.1:50053",
                );
            }
        }
        if !(10..=3_600_000).contains(&self.budget.expiry_interval_ms) {
            return invalid(
                "budget.expiry_interval_ms",
                &self.budget.expiry_interval_ms,
                "must be 10 to 3600000",
            );
        }
        self.notification.validate()?;
        let application = &self.application;
        let pool = &application.compute_voucher_pool_id;
        if !(3..=63).contains(&pool.len())
            || !pool
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid(
                "application.compute_voucher_pool_id",
                pool,
                "must be 3 to 63 characters of a-z, 0-9 and -",
            );
        }
        if !(0..=366 * 24 * 3600).contains(&application.hold_seconds) {
            return invalid(
                "application.hold_seconds",
                &application.hold_seconds,
                "must be 0 to 31622400",
            );
        }
        for (key, value) in [
            (
                "application.reconcile_interval_ms",
                application.reconcile_interval_ms,
            ),
            (
                "application.reconcile_grace_ms",
                application.reconcile_grace_ms,
            ),
            (
                "application.relay_interval_ms",
                application.relay_interval_ms,
            ),
            (
                "application.upstream_timeout_ms",
                application.upstream_timeout_ms,
            ),
        ] {
            if !(10..=3_600_000).contains(&value) {
                return invalid(key, &value, "must be 10 to 3600000");
            }
        }
        Ok(())
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_grace_ms)
    }
}

impl NotificationConfig {
    /// Checks every notification setting; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: &dyn std::fmt::Display, why| {
            Err(ConfigError::Invalid {
                key,
                value: value.to_string(),
                why,
            })
        };
        let smtp_host = self
            .smtp_url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "smtp" | "smtps"))
            .map(|(_, rest)| rest.rsplit('@').next().unwrap_or_default());
        if smtp_host.is_none_or(|host| host.is_empty() || host.starts_with([':', '/', '?'])) {
            return invalid(
                "notification.smtp_url",
                &"(hidden: it may hold a password)",
                "must be smtp://host[:port][?tls=required|opportunistic] or smtps://host[:port]",
            );
        }
        let from = self.smtp_from.trim();
        if from.is_empty() || !from.contains('@') || from.contains(['\r', '\n']) {
            return invalid(
                "notification.smtp_from",
                &self.smtp_from,
                "must be an email address, optionally with a name: Name <user@example.org>",
            );
        }
        if !(100..=600_000).contains(&self.smtp_timeout_ms) {
            return invalid(
                "notification.smtp_timeout_ms",
                &self.smtp_timeout_ms,
                "must be 100 to 600000",
            );
        }
        if !(100..=600_000).contains(&self.webhook_timeout_ms) {
            return invalid(
                "notification.webhook_timeout_ms",
                &self.webhook_timeout_ms,
                "must be 100 to 600000",
            );
        }
        let schedule = &self.retry_schedule_ms;
        if schedule.is_empty()
            || schedule.len() > RETRY_SCHEDULE_LEN_MAX
            || schedule.iter().any(|delay| *delay > RETRY_DELAY_MS_MAX)
        {
            return invalid(
                "notification.retry_schedule_ms",
                &format!("{schedule:?}"),
                "must be 1 to 20 delays of at most 604800000 ms each",
            );
        }
        if self.retry_jitter_percent > RETRY_JITTER_PERCENT_MAX {
            return invalid(
                "notification.retry_jitter_percent",
                &self.retry_jitter_percent,
                "must be 0 to 50",
            );
        }
        if !(1..=MAX_IN_FLIGHT_MAX).contains(&self.max_in_flight_default) {
            return invalid(
                "notification.max_in_flight_default",
                &self.max_in_flight_default,
                "must be 1 to 64",
            );
        }
        if !(1..=1_000).contains(&self.email_in_flight_max) {
            return invalid(
                "notification.email_in_flight_max",
                &self.email_in_flight_max,
                "must be 1 to 1000",
            );
        }
        if !(1..=10_000).contains(&self.worker_concurrency_max) {
            return invalid(
                "notification.worker_concurrency_max",
                &self.worker_concurrency_max,
                "must be 1 to 10000",
            );
        }
        if !(1_000..=365 * 24 * 3_600_000).contains(&self.disable_after_ms) {
            return invalid(
                "notification.disable_after_ms",
                &self.disable_after_ms,
                "must be 1000 to 31536000000",
            );
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return invalid(
                "notification.poll_interval_ms",
                &self.poll_interval_ms,
                "must be 10 to 60000",
            );
        }
        if !(100..=3_600_000).contains(&self.stream_heartbeat_ms) {
            return invalid(
                "notification.stream_heartbeat_ms",
                &self.stream_heartbeat_ms,
                "must be 100 to 3600000",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_the_service_port_and_an_embedded_database() {
        let config = Config::load(ServiceKind::Budget, None, &env(&[])).unwrap();
        assert_eq!(config.listen, "0.0.0.0:50053");
        assert_eq!(config.database.url, "sqlite:data/budget.db");
    }

    #[test]
    fn environment_overrides_and_bad_values_are_refused_with_the_key() {
        let config = Config::load(
            ServiceKind::Rules,
            None,
            &env(&[("DATABASE_URL", "postgres://x/y")]),
        )
        .unwrap();
        assert_eq!(config.database.url, "postgres://x/y");
        let error = Config::load(
            ServiceKind::Rules,
            None,
            &env(&[("SUBSIDY_DATABASE_URL", "mysql://x")]),
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    key: "database.url",
                    ..
                }
            ),
            "{error}"
        );
        let error = Config::load(
            ServiceKind::Rules,
            None,
            &env(&[("SUBSIDY_REQUEST_TIMEOUT_MS", "ten")]),
        )
        .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "SUBSIDY_REQUEST_TIMEOUT_MS",
                ..
            }
        ));
        let error = Config::load(
            ServiceKind::Rules,
            None,
            &env(&[("SUBSIDY_LISTEN", "nowhere")]),
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { key: "listen", .. }));
    }

    #[test]
    fn notification_settings_come_from_the_environment_and_are_checked() {
        // Proves the notification section has the defaults, takes its overrides from
        // the environment and refuses a bad schedule or relay by key.
        let config = Config::load(ServiceKind::Notification, None, &env(&[])).unwrap();
        assert_eq!(
            config.notification.retry_schedule_ms,
            RETRY_SCHEDULE_MS_DEFAULT.to_vec()
        );
        assert!(!config.notification.allow_http_endpoints);
        let config = Config::load(
            ServiceKind::Notification,
            None,
            &env(&[
                ("SUBSIDY_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS", "0, 100,200"),
                ("SUBSIDY_NOTIFICATION_ALLOW_HTTP", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.notification.smtp_url, "smtp://127.0.0.1:2525");
        assert_eq!(config.notification.retry_schedule_ms, vec![0, 100, 200]);
        assert!(config.notification.allow_http_endpoints);
        for (key, value, reported) in [
            (
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                "0,soon",
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
            ),
            (
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                "0,999999999999",
                "notification.retry_schedule_ms",
            ),
            ("SUBSIDY_SMTP_URL", "http://relay", "notification.smtp_url"),
            (
                "SUBSIDY_NOTIFICATION_ALLOW_HTTP",
                "yes",
                "SUBSIDY_NOTIFICATION_ALLOW_HTTP",
            ),
        ] {
            let error =
                Config::load(ServiceKind::Notification, None, &env(&[(key, value)])).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { key, .. } if *key == reported),
                "{error}"
            );
        }
    }

    #[test]
    fn application_settings_come_from_the_environment_and_are_validated() {
        // Proves the application service's settings are read and bad values refused by key.
        let config = Config::load(
            ServiceKind::Application,
            None,
            &env(&[
                (
                    "SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID",
                    "vouchers-small",
                ),
                ("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "500"),
            ]),
        )
        .unwrap();
        assert_eq!(config.application.compute_voucher_pool_id, "vouchers-small");
        assert_eq!(config.application.reconcile_grace_ms, 500);
        assert_eq!(
            config.application.relay_interval_ms,
            APPLICATION_RELAY_INTERVAL_MS_DEFAULT
        );
        let error = Config::load(
            ServiceKind::Application,
            None,
            &env(&[("SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID", "Bad Pool")]),
        )
        .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "application.compute_voucher_pool_id",
                ..
            }
        ));
        let error = Config::load(
            ServiceKind::Application,
            None,
            &env(&[("SUBSIDY_APPLICATION_RELAY_INTERVAL_MS", "0")]),
        )
        .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "application.relay_interval_ms",
                ..
            }
        ));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("subsidy-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let error = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[server]\nrequest_timeout_ms = 2000\n",
        )
        .unwrap();
        let config = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap();
        assert_eq!(config.server.request_timeout_ms, 2000);
    }
}
