//! Configuration: built-in defaults, then a TOML file, then environment variables; validated
//! once at start-up so that a service refuses to start on bad configuration with a clear message.
//!
//! Environment variables (each overrides the file):
//! `SUBSIDY_LISTEN`, `SUBSIDY_DATABASE_URL` (or `DATABASE_URL`), `SUBSIDY_DATABASE_MAX_CONNECTIONS`,
//! `SUBSIDY_REQUEST_TIMEOUT_MS`, `SUBSIDY_SHUTDOWN_GRACE_MS`, `SUBSIDY_MESSAGE_SIZE_MAX_BYTES`,
//! `SUBSIDY_LOG_FORMAT` (`json` or `text`), `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `SUBSIDY_RULES_URL`, `SUBSIDY_BUDGET_URL`, `SUBSIDY_NOTIFICATION_URL`,
//! `SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS`.

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
#[derive(Clone, Debug, Deserialize)]
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            database: DatabaseConfig::default(),
            server: ServerConfig::default(),
            telemetry: TelemetryConfig::default(),
            peers: PeersConfig::default(),
            budget: BudgetConfig::default(),
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
