//! Configuration: built-in defaults, then a TOML file, then environment variables, layered by
//! `figment` and validated once at start-up, so that a service refuses to start on bad
//! configuration with a message naming the key (or the environment variable) that is wrong.
//!
//! This module holds the loader and the sections every service shares (`listen`, `database`,
//! `server`, `telemetry`, `peers`). Each service declares its own section (`[budget]`,
//! `[notification]`, `[application]`, `[rules]`) in its `settings.rs` as a [`Section`]: its
//! fields with their defaults, the environment variables that set them, a sentence per key, and
//! its validation with named bounds. [`Config::section`] layers that section the same way.
//! The README's configuration table is generated from these declarations (and a test checks it).

use std::collections::HashMap;
use std::fmt::{self, Debug, Display};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod bounds;
mod layers;
mod table;

pub use bounds::*;
use layers::{FileLayer, Layer, classify, env_layer};
pub use table::{TableRow, section_defaults, shared_defaults, table_rows};

/// The name under which environment variables appear in figment's metadata.
const ENV_SOURCE: &str = "environment variable";

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

    /// The short name used on the command line, in file names and as the section key.
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

    /// The default port of the Prometheus scrape endpoint (`/metrics`, plain HTTP).
    pub fn default_metrics_port(self) -> u16 {
        match self {
            ServiceKind::Application => 9461,
            ServiceKind::Rules => 9462,
            ServiceKind::Budget => 9463,
            ServiceKind::Notification => 9464,
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
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (an unknown key, a wrong type).
    #[error("config file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the key.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value is out of range or malformed. `key` is the TOML key, or the environment
    /// variable when the value came from one and could not be read as the key's type.
    #[error("invalid configuration: {key} = {value:?}: {why}")]
    Invalid {
        /// The key or environment variable.
        key: &'static str,
        /// The value given (hidden where it may hold a secret).
        value: String,
        /// What is accepted.
        why: String,
    },
}

impl ConfigError {
    /// The error for `key` holding `value`, which is not accepted because `why`.
    pub fn invalid(key: &'static str, value: &dyn Display, why: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            why: why.into(),
        }
    }
}

/// Checks that `value` of `key` lies in `min..=max`.
pub fn check_range<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            &value,
            format!("must be {min} to {max}"),
        ));
    }
    Ok(())
}

/// How the text of an environment variable becomes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvForm {
    /// Taken as text, whatever it looks like (URLs, names).
    Text,
    /// A number or `true`/`false`, read as TOML would.
    Scalar,
    /// A comma-separated list of numbers.
    List,
}

/// One setting: its full key, the environment variables that set it (the first one set wins),
/// how their text is read, what it means, and, where the default depends on the service,
/// how the default is described.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The TOML key, e.g. `budget.expiry_interval_ms`.
    pub key: &'static str,
    /// Environment variables, in order of precedence.
    pub env: &'static [&'static str],
    /// How the environment's text is read.
    pub form: EnvForm,
    /// One sentence for the README.
    pub meaning: &'static str,
    /// The default described in words, where the built-in value is not the whole story.
    pub default_text: Option<&'static str>,
}

impl Setting {
    /// A setting without environment variables.
    pub const fn file_only(key: &'static str, meaning: &'static str) -> Self {
        Setting {
            key,
            env: &[],
            form: EnvForm::Scalar,
            meaning,
            default_text: None,
        }
    }

    /// A setting read from `env` as a number or boolean.
    pub const fn scalar(
        key: &'static str,
        env: &'static [&'static str],
        meaning: &'static str,
    ) -> Self {
        Setting {
            key,
            env,
            form: EnvForm::Scalar,
            meaning,
            default_text: None,
        }
    }

    /// A setting read from `env` as text.
    pub const fn text(
        key: &'static str,
        env: &'static [&'static str],
        meaning: &'static str,
    ) -> Self {
        Setting {
            key,
            env,
            form: EnvForm::Text,
            meaning,
            default_text: None,
        }
    }

    /// The same setting with its default described in words.
    pub const fn described(mut self, default_text: &'static str) -> Self {
        self.default_text = Some(default_text);
        self
    }

    /// The same setting read as a comma-separated list.
    pub const fn list(mut self) -> Self {
        self.form = EnvForm::List;
        self
    }
}

/// A service's own configuration section.
pub trait Section:
    Serialize + DeserializeOwned + Default + Clone + Debug + Send + Sync + 'static
{
    /// The section's key in the file, e.g. `budget`.
    const KEY: &'static str;
    /// Every key of the section (full keys), with its environment variables and meaning.
    const SETTINGS: &'static [Setting];

    /// Checks every value; the first problem is returned.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Database settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite:…`; empty means `sqlite:data/<service>.db`.
    pub url: String,
    /// The connection migrations are applied with (on PostgreSQL the owner role; the service
    /// itself connects as a runtime role without UPDATE or DELETE on its records); empty
    /// means `url`.
    pub owner_url: String,
    /// Whether the service applies its migrations when it starts (off where a separate job
    /// runs `subsidy migrate`).
    pub migrate_on_start: bool,
    /// Pool size.
    pub max_connections: u32,
    /// Wait for a connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// How long a request's idempotency record is kept, in milliseconds: a request repeated
    /// with its `request_id` within this window is answered as a replay, later as a new
    /// request.
    pub request_retention_ms: u64,
    /// Interval between two pruning rounds, in milliseconds.
    pub prune_interval_ms: u64,
    /// Rows deleted per statement (and transaction) when pruning.
    pub prune_batch: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            owner_url: String::new(),
            migrate_on_start: true,
            max_connections: DATABASE_MAX_CONNECTIONS_DEFAULT,
            acquire_timeout_ms: DATABASE_ACQUIRE_TIMEOUT_MS_DEFAULT,
            request_retention_ms: REQUEST_RETENTION_MS_DEFAULT,
            prune_interval_ms: PRUNE_INTERVAL_MS_DEFAULT,
            prune_batch: PRUNE_BATCH_DEFAULT,
        }
    }
}

/// Limits of the gRPC server.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Interval between two checks of the database behind readiness, in milliseconds.
    pub readiness_interval_ms: u64,
    /// After this long a client's connection is closed gracefully (GOAWAY; its calls finish
    /// within the shutdown grace), so that clients reconnect and spread over the replicas;
    /// 0 keeps connections open.
    pub max_connection_age_ms: u64,
    /// Time the database has to answer one readiness check, in milliseconds.
    pub readiness_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES_DEFAULT,
            concurrency_per_connection_max: CONCURRENCY_PER_CONNECTION_DEFAULT,
            readiness_interval_ms: READINESS_INTERVAL_MS_DEFAULT,
            max_connection_age_ms: MAX_CONNECTION_AGE_MS_DEFAULT,
            readiness_timeout_ms: READINESS_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Logs and traces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (default) or `text`.
    pub log_format: String,
    /// A `tracing` filter such as `info` or `subsidy_budget=debug,info`.
    pub log_filter: String,
    /// OTLP/gRPC endpoint; traces and metrics are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// Address of the Prometheus scrape endpoint (`GET /metrics`, plain HTTP on its own port);
    /// empty means `0.0.0.0:<the service's metrics port>`, `off` serves none.
    pub metrics_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "json".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
            metrics_listen: String::new(),
        }
    }
}

/// Where the other services are (used by the application service and the CLI).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// 0: one connection per peer URL (balanced per connection by whatever is in between).
    /// Otherwise the host of each peer URL (or of each URL of a comma-separated list) is
    /// resolved every this many milliseconds, and calls are balanced over every address found
    /// (a headless Service's ready pods), each call to the address with the fewest calls in
    /// flight of two picked at random.
    pub resolve_interval_ms: u64,
}

impl Default for PeersConfig {
    fn default() -> Self {
        let url = |kind: ServiceKind| format!("http://127.0.0.1:{}", kind.default_port());
        Self {
            application_url: url(ServiceKind::Application),
            rules_url: url(ServiceKind::Rules),
            budget_url: url(ServiceKind::Budget),
            notification_url: url(ServiceKind::Notification),
            resolve_interval_ms: 0,
        }
    }
}

/// The shape of the whole file: the shared sections, checked here, and each service's section,
/// checked by [`Config::section`]. Any other key is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Shared {
    listen: String,
    database: DatabaseConfig,
    server: ServerConfig,
    telemetry: TelemetryConfig,
    peers: PeersConfig,
    application: Option<Dict>,
    rules: Option<Dict>,
    budget: Option<Dict>,
    notification: Option<Dict>,
    tls: Option<Dict>,
    auth: Option<Dict>,
}

/// The settings every service process shares, and the layers its own section is read from.
#[derive(Clone)]
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
    file: Option<FileLayer>,
    env: HashMap<String, String>,
    sections: HashMap<&'static str, Value>,
}

impl Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets; it is not printed.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database.max_connections", &self.database.max_connections)
            .field("server", &self.server)
            .field("telemetry", &self.telemetry)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// The settings of the shared sections, for the README table.
pub const SHARED_SETTINGS: &[Setting] = &[
    Setting::text("listen", &["SUBSIDY_LISTEN"], "address to serve on")
        .described("`0.0.0.0:<service port>`"),
    Setting::text(
        "database.url",
        &["SUBSIDY_DATABASE_URL", "DATABASE_URL"],
        "`postgres://…` or `sqlite:PATH`",
    )
    .described("`sqlite:data/<service>.db`"),
    Setting::text(
        "database.owner_url",
        &["SUBSIDY_DATABASE_OWNER_URL"],
        "connection that applies migrations (PostgreSQL: the owner role; the service connects as the runtime role `subsidy_runtime`)",
    )
    .described("`database.url`"),
    Setting::scalar(
        "database.migrate_on_start",
        &["SUBSIDY_DATABASE_MIGRATE_ON_START"],
        "apply migrations when the service starts (off where a job runs `subsidy migrate`)",
    ),
    Setting::scalar(
        "database.max_connections",
        &["SUBSIDY_DATABASE_MAX_CONNECTIONS"],
        "size of the database pool",
    ),
    Setting::file_only(
        "database.acquire_timeout_ms",
        "wait for a database connection, in milliseconds",
    ),
    Setting::scalar(
        "database.request_retention_ms",
        &["SUBSIDY_REQUEST_RETENTION_MS"],
        "how long a request_id is remembered (its replay window), in milliseconds; older idempotency records are pruned",
    ),
    Setting::scalar(
        "database.prune_interval_ms",
        &["SUBSIDY_PRUNE_INTERVAL_MS"],
        "interval between two pruning rounds, in milliseconds",
    ),
    Setting::scalar(
        "database.prune_batch",
        &["SUBSIDY_PRUNE_BATCH"],
        "rows deleted per statement and transaction when pruning",
    ),
    Setting::scalar(
        "server.request_timeout_ms",
        &["SUBSIDY_REQUEST_TIMEOUT_MS"],
        "deadline of every call, in milliseconds",
    ),
    Setting::scalar(
        "server.shutdown_grace_ms",
        &["SUBSIDY_SHUTDOWN_GRACE_MS"],
        "drain time after SIGTERM/SIGINT, in milliseconds",
    ),
    Setting::scalar(
        "server.message_size_max_bytes",
        &["SUBSIDY_MESSAGE_SIZE_MAX_BYTES"],
        "largest message in or out, in bytes",
    ),
    Setting::scalar(
        "server.concurrency_per_connection_max",
        &["SUBSIDY_CONCURRENCY_PER_CONNECTION_MAX"],
        "calls at once per connection; more are refused with `RESOURCE_EXHAUSTED` / `CONCURRENCY_LIMIT_REACHED`",
    ),
    Setting::scalar(
        "server.max_connection_age_ms",
        &["SUBSIDY_MAX_CONNECTION_AGE_MS"],
        "close a client's connection gracefully after this long so clients reconnect across replicas, in milliseconds; 0 never",
    ),
    Setting::scalar(
        "server.readiness_interval_ms",
        &["SUBSIDY_READINESS_INTERVAL_MS"],
        "how often readiness (the service's name in grpc.health.v1) checks the database, in milliseconds",
    ),
    Setting::scalar(
        "server.readiness_timeout_ms",
        &["SUBSIDY_READINESS_TIMEOUT_MS"],
        "time the database has to answer a readiness check before the service reports NOT_SERVING, in milliseconds",
    ),
    Setting::text(
        "telemetry.log_format",
        &["SUBSIDY_LOG_FORMAT"],
        "`json` or `text`",
    ),
    Setting::text("telemetry.log_filter", &["RUST_LOG"], "tracing filter"),
    Setting::text(
        "telemetry.otlp_endpoint",
        &["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "OTLP/gRPC export of traces and metrics; none when unset",
    ),
    Setting::text(
        "telemetry.metrics_listen",
        &["SUBSIDY_METRICS_LISTEN"],
        "Prometheus scrape endpoint (`GET /metrics`, plain HTTP); `off` serves none",
    )
    .described("`0.0.0.0:<metrics port>` (application 9461, rules 9462, budget 9463, notification 9464)"),
    Setting::text(
        "peers.application_url",
        &["SUBSIDY_APPLICATION_URL"],
        "where the application service is",
    ),
    Setting::text(
        "peers.rules_url",
        &["SUBSIDY_RULES_URL"],
        "where the rules service is",
    ),
    Setting::text(
        "peers.budget_url",
        &["SUBSIDY_BUDGET_URL"],
        "where the budget service is",
    ),
    Setting::text(
        "peers.notification_url",
        &["SUBSIDY_NOTIFICATION_URL"],
        "where the notification service is",
    ),
    Setting::scalar(
        "peers.resolve_interval_ms",
        &["SUBSIDY_PEERS_RESOLVE_INTERVAL_MS"],
        "0: one connection per peer; otherwise the peers' hosts (a URL or a comma-separated list of URLs each) are resolved this often (milliseconds) and calls balanced over every address",
    ),
];

/// The process environment, without empty variables.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().filter(|(_, v)| !v.is_empty()).collect()
}

impl Config {
    /// Loads the configuration of `kind`: defaults, then `file` if given, then `env`.
    pub fn load(
        kind: ServiceKind,
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let file = file.map(FileLayer::read).transpose()?;
        let mut figment = Figment::new();
        if let Some(file) = &file {
            figment = figment.merge(Layer {
                name: file.path.display().to_string(),
                data: file.data.clone(),
            });
        }
        figment = figment.merge(env_layer(SHARED_SETTINGS, env));
        let shared: Shared = figment
            .extract()
            .map_err(|e| classify(e, SHARED_SETTINGS, file.as_ref(), env))?;
        let mut config = Config {
            listen: shared.listen,
            database: shared.database,
            server: shared.server,
            telemetry: shared.telemetry,
            peers: shared.peers,
            file,
            env: env.clone(),
            sections: HashMap::new(),
        };
        if config.listen.is_empty() {
            config.listen = format!("0.0.0.0:{}", kind.default_port());
        }
        if config.telemetry.metrics_listen.is_empty() {
            config.telemetry.metrics_listen = format!("0.0.0.0:{}", kind.default_metrics_port());
        }
        if config.database.url.is_empty() {
            config.database.url = format!("sqlite:data/{}.db", kind.name());
        }
        config.validate()?;
        Ok(config)
    }

    /// The section `S`: its defaults, then the file's `[S::KEY]` table, then its environment
    /// variables; validated. A section set with [`Config::set_section`] is returned as set.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        if let Some(value) = self.sections.get(S::KEY) {
            let section: S = value
                .deserialize()
                .map_err(|e| classify(e, S::SETTINGS, None, &self.env))?;
            section.validate()?;
            return Ok(section);
        }
        let mut figment = Figment::new();
        if let Some(file) = &self.file {
            figment = figment.merge(Layer {
                name: file.path.display().to_string(),
                data: file.data.clone(),
            });
        }
        figment = figment.merge(env_layer(S::SETTINGS, &self.env));
        let section: S = if figment.find_value(S::KEY).is_ok() {
            figment
                .extract_inner(S::KEY)
                .map_err(|e| classify(e, S::SETTINGS, self.file.as_ref(), &self.env))?
        } else {
            S::default()
        };
        section.validate()?;
        Ok(section)
    }

    /// Replaces section `S` by `section` (tests, and the dev stack's own choices).
    pub fn set_section<S: Section>(&mut self, section: &S) {
        let value = Value::serialize(section).expect("a section serializes");
        self.sections.insert(S::KEY, value);
    }

    /// The section `S` changed by `change`, set back (a shorthand for tests).
    pub fn tweak_section<S: Section>(&mut self, change: impl FnOnce(&mut S)) {
        let mut section: S = self.section().expect("a valid section to change");
        change(&mut section);
        self.set_section(&section);
    }

    /// Checks every shared value; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "listen",
                &self.listen,
                "must be an IP address and port, e.g. 0.0.0.0:50053",
            ));
        }
        self.validate_database()?;
        self.validate_server()?;
        self.validate_telemetry()?;
        self.validate_peers()
    }

    /// Checks `[database]`: the URLs and the pool's and pruning's bounds.
    fn validate_database(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                url,
                "must start with postgres:// or sqlite:",
            ));
        }
        let owner = &self.database.owner_url;
        if !(owner.is_empty()
            || owner.starts_with("postgres://")
            || owner.starts_with("postgresql://")
            || owner.starts_with("sqlite:"))
        {
            return Err(ConfigError::invalid(
                "database.owner_url",
                owner,
                "must start with postgres:// or sqlite:",
            ));
        }
        check_range(
            "database.max_connections",
            self.database.max_connections,
            DATABASE_MAX_CONNECTIONS_MIN,
            DATABASE_MAX_CONNECTIONS_MAX,
        )?;
        check_range(
            "database.acquire_timeout_ms",
            self.database.acquire_timeout_ms,
            DATABASE_ACQUIRE_TIMEOUT_MS_MIN,
            DATABASE_ACQUIRE_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "database.request_retention_ms",
            self.database.request_retention_ms,
            REQUEST_RETENTION_MS_MIN,
            REQUEST_RETENTION_MS_MAX,
        )?;
        check_range(
            "database.prune_interval_ms",
            self.database.prune_interval_ms,
            PRUNE_INTERVAL_MS_MIN,
            PRUNE_INTERVAL_MS_MAX,
        )?;
        check_range(
            "database.prune_batch",
            self.database.prune_batch,
            PRUNE_BATCH_MIN,
            PRUNE_BATCH_MAX,
        )?;
        Ok(())
    }

    /// Checks `[server]`: the bounds of timeouts, sizes, connections and readiness checks.
    fn validate_server(&self) -> Result<(), ConfigError> {
        check_range(
            "server.request_timeout_ms",
            self.server.request_timeout_ms,
            REQUEST_TIMEOUT_MS_MIN,
            REQUEST_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "server.shutdown_grace_ms",
            self.server.shutdown_grace_ms,
            SHUTDOWN_GRACE_MS_MIN,
            SHUTDOWN_GRACE_MS_MAX,
        )?;
        check_range(
            "server.message_size_max_bytes",
            self.server.message_size_max_bytes,
            MESSAGE_SIZE_MAX_BYTES_MIN,
            MESSAGE_SIZE_MAX_BYTES_MAX,
        )?;
        check_range(
            "server.concurrency_per_connection_max",
            self.server.concurrency_per_connection_max,
            CONCURRENCY_PER_CONNECTION_MIN,
            CONCURRENCY_PER_CONNECTION_MAX,
        )?;
        if self.server.max_connection_age_ms != 0 {
            check_range(
                "server.max_connection_age_ms",
                self.server.max_connection_age_ms,
                MAX_CONNECTION_AGE_MS_MIN,
                MAX_CONNECTION_AGE_MS_MAX,
            )?;
        }
        check_range(
            "server.readiness_interval_ms",
            self.server.readiness_interval_ms,
            READINESS_INTERVAL_MS_MIN,
            READINESS_INTERVAL_MS_MAX,
        )?;
        check_range(
            "server.readiness_timeout_ms",
            self.server.readiness_timeout_ms,
            READINESS_TIMEOUT_MS_MIN,
            READINESS_TIMEOUT_MS_MAX,
        )?;
        Ok(())
    }

    /// Checks `[peers]`: one absolute URL per peer, or several when they are balanced.
    fn validate_peers(&self) -> Result<(), ConfigError> {
        let balancing = self.peers.resolve_interval_ms > 0;
        if balancing {
            check_range(
                "peers.resolve_interval_ms",
                self.peers.resolve_interval_ms,
                PEERS_RESOLVE_INTERVAL_MS_MIN,
                PEERS_RESOLVE_INTERVAL_MS_MAX,
            )?;
        }
        for (key, urls) in [
            ("peers.application_url", &self.peers.application_url),
            ("peers.rules_url", &self.peers.rules_url),
            ("peers.budget_url", &self.peers.budget_url),
            ("peers.notification_url", &self.peers.notification_url),
        ] {
            if !balancing && urls.contains(',') {
                return Err(ConfigError::invalid(
                    key,
                    urls,
                    "holds one URL unless peers.resolve_interval_ms is set",
                ));
            }
            for url in urls.split(',') {
                check_absolute_url(key, url.trim())?;
            }
        }
        Ok(())
    }

    /// Checks `[telemetry]`: the log format and filter, the metrics address, the OTLP endpoint.
    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        if !matches!(self.telemetry.log_format.as_str(), "json" | "text") {
            return Err(ConfigError::invalid(
                "telemetry.log_format",
                &self.telemetry.log_format,
                "must be json or text",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter).is_err() {
            return Err(ConfigError::invalid(
                "telemetry.log_filter",
                &self.telemetry.log_filter,
                "is not a valid tracing filter",
            ));
        }
        let metrics = &self.telemetry.metrics_listen;
        if metrics != METRICS_OFF && metrics.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "telemetry.metrics_listen",
                metrics,
                "must be an IP address and port, e.g. 0.0.0.0:9463, or off",
            ));
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                endpoint,
                "must be an http:// or https:// URL",
            ));
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

/// Checks that `url` is absolute, such as `http://127.0.0.1:50053`.
pub fn check_absolute_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let absolute = url
        .parse::<http::Uri>()
        .map(|uri| uri.scheme().is_some() && uri.host().is_some())
        .unwrap_or(false);
    if !absolute {
        return Err(ConfigError::invalid(
            key,
            &url,
            "must be an absolute URL such as http://127.0.0.1:50053",
        ));
    }
    Ok(())
}

/// Deserializes a list of numbers given either as a list or as one comma-separated text.
pub mod comma_list {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<u64>),
        Text(String),
    }

    /// The deserializer for `#[serde(deserialize_with = "comma_list::u64s")]`.
    pub fn u64s<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
        match Form::deserialize(deserializer)? {
            Form::List(list) => Ok(list),
            Form::Text(text) => text
                .split(',')
                .map(|part| part.trim().parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    serde::de::Error::custom("not a comma-separated list of milliseconds")
                }),
        }
    }
}

#[cfg(test)]
mod tests;
