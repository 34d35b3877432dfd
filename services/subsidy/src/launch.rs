//! Starting services: one (`subsidy serve`) or all four in one process (`subsidy dev`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use subsidy_common::BoxError;
use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_common::config::{Config, ServiceKind, process_env};
use tokio::net::TcpListener;

/// A shutdown signal shared by every service of a process.
pub type Stop = tokio::sync::watch::Receiver<bool>;

async fn stopped(mut stop: Stop) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Runs one service with `config` on `listener` until `stop` turns true.
pub async fn run_service(
    kind: ServiceKind,
    config: Config,
    listener: TcpListener,
    stop: Stop,
) -> Result<(), BoxError> {
    let shutdown = stopped(stop);
    match kind {
        ServiceKind::Application => subsidy_application::run(config, listener, shutdown).await,
        ServiceKind::Rules => subsidy_rules::run(config, listener, shutdown).await,
        ServiceKind::Budget => subsidy_budget::run(config, listener, shutdown).await,
        ServiceKind::Notification => subsidy_notification::run(config, listener, shutdown).await,
    }
}

/// Applies one service's migrations.
pub async fn migrate(kind: ServiceKind, config: &Config) -> Result<(), BoxError> {
    match kind {
        ServiceKind::Application => subsidy_application::migrate(config).await,
        ServiceKind::Rules => subsidy_rules::migrate(config).await,
        ServiceKind::Budget => subsidy_budget::migrate(config).await,
        ServiceKind::Notification => subsidy_notification::migrate(config).await,
    }
}

/// How the dev stack is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevSecurity {
    /// TLS with the development CA under the data directory, tokens from its dev key.
    Tls,
    /// Plaintext on loopback (`--insecure`).
    Insecure,
}

/// The environment that secures a dev-stack service with the development credentials under
/// `paths` (made on first start).
fn dev_security_env(kind: ServiceKind, paths: &DevPaths) -> Vec<(String, String)> {
    let tls = paths.tls_files(kind.access_service());
    let text = |path: &Path| path.display().to_string();
    vec![
        ("SUBSIDY_TLS_CERT_FILE".into(), text(&tls.cert)),
        ("SUBSIDY_TLS_KEY_FILE".into(), text(&tls.key)),
        ("SUBSIDY_TLS_CA_FILE".into(), text(&tls.ca)),
        ("SUBSIDY_AUTH_JWKS_FILE".into(), text(&paths.jwks())),
        ("SUBSIDY_AUTH_ISSUER".into(), dev::DEV_ISSUER.into()),
    ]
}

/// The configuration of each service of the dev stack: its own SQLite file under `data_dir`,
/// its default port on `host` (or the port in `ports`), peers pointing at each other, and,
/// unless insecure, the development credentials under `data_dir` (created on first start), and
/// a checkpoint signing key for the budget there (`budget-checkpoint-key.pem`, its public key
/// beside it) unless `SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE` names one.
pub fn dev_configs(
    data_dir: &Path,
    host: &str,
    ports: &HashMap<ServiceKind, u16>,
    security: DevSecurity,
) -> Result<Vec<(ServiceKind, Config)>, BoxError> {
    let port = |kind: ServiceKind| ports.get(&kind).copied().unwrap_or(kind.default_port());
    let scheme = match security {
        DevSecurity::Tls => "https",
        DevSecurity::Insecure => "http",
    };
    let peer = |kind: ServiceKind| format!("{scheme}://127.0.0.1:{}", port(kind));
    let paths = DevPaths::new(data_dir);
    if security == DevSecurity::Tls && paths.ensure(&[host.to_owned()])? {
        tracing::info!(dir = %data_dir.display(), "created the development CA, certificates and signing key");
    }
    let mut configs = Vec::new();
    for kind in ServiceKind::ALL {
        let mut env: HashMap<String, String> = HashMap::new();
        match security {
            DevSecurity::Tls => env.extend(dev_security_env(kind, &paths)),
            DevSecurity::Insecure => {
                env.insert("SUBSIDY_INSECURE".into(), "true".into());
            }
        }
        env.insert("SUBSIDY_LISTEN".into(), format!("{host}:{}", port(kind)));
        // Metrics on loopback, at the service's metrics port when it runs on its default
        // port, otherwise on any free port (several dev stacks on one machine; the log says
        // where).
        let metrics_port = if port(kind) == kind.default_port() {
            kind.default_metrics_port()
        } else {
            0
        };
        env.insert(
            "SUBSIDY_METRICS_LISTEN".into(),
            format!("127.0.0.1:{metrics_port}"),
        );
        let db: PathBuf = data_dir.join(format!("{}.db", kind.name()));
        env.insert(
            "SUBSIDY_DATABASE_URL".into(),
            format!("sqlite:{}", db.display()),
        );
        env.insert(
            "SUBSIDY_APPLICATION_URL".into(),
            peer(ServiceKind::Application),
        );
        env.insert("SUBSIDY_RULES_URL".into(), peer(ServiceKind::Rules));
        env.insert("SUBSIDY_BUDGET_URL".into(), peer(ServiceKind::Budget));
        env.insert(
            "SUBSIDY_NOTIFICATION_URL".into(),
            peer(ServiceKind::Notification),
        );
        // Checkpoints work in development: a key made once in the data directory, unless
        // the operator names one.
        if kind == ServiceKind::Budget
            && std::env::var_os(subsidy_budget::settings::CHECKPOINT_KEY_FILE_ENV).is_none()
        {
            let key = subsidy_budget::checkpoint_key::ensure_dev_key(data_dir)?;
            env.insert(
                subsidy_budget::settings::CHECKPOINT_KEY_FILE_ENV.into(),
                key.display().to_string(),
            );
        }
        // Uploaded documents in the data directory, unless the operator names a store.
        if kind == ServiceKind::Application
            && std::env::var_os("SUBSIDY_APPLICATION_DOCUMENTS_URL").is_none()
        {
            env.insert(
                "SUBSIDY_APPLICATION_DOCUMENTS_URL".into(),
                data_dir.join("documents").display().to_string(),
            );
        }
        // Awards are paid right after approval in development (the README walks through it):
        // publicity periods end at once unless the operator sets a length.
        if kind == ServiceKind::Rules
            && std::env::var_os(subsidy_rules::settings::PUBLICITY_OVERRIDE_ENV).is_none()
        {
            env.insert(
                subsidy_rules::settings::PUBLICITY_OVERRIDE_ENV.into(),
                "0".into(),
            );
        }
        // Webhooks to a receiver on this machine are what one tries in development.
        env.insert(
            "SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS".into(),
            "127.0.0.1,::1,localhost".into(),
        );
        // Operator settings (RUST_LOG, OTEL_*, SUBSIDY_SMTP_URL, timeouts, …) still apply;
        // only the addresses and databases set above belong to the dev stack.
        for (key, value) in std::env::vars() {
            let passes = key == "RUST_LOG"
                || key.starts_with("OTEL_")
                || (key.starts_with("SUBSIDY_")
                    && !env.contains_key(&key)
                    && key != "SUBSIDY_CONFIG");
            if passes {
                env.insert(key, value);
            }
        }
        configs.push((kind, Config::load(kind, None, &env)?));
    }
    Ok(configs)
}

/// Loads one service's configuration from an optional file and the process environment.
pub fn load_config(kind: ServiceKind, file: Option<&Path>) -> Result<Config, BoxError> {
    Ok(Config::load(kind, file, &process_env())?)
}

/// The configuration table of the README: every key of the shared sections and of each
/// service's section, with its environment variables, its default (read from the code) and
/// its meaning, as Markdown. `subsidy settings` prints it; a test checks the README holds it.
pub fn settings_table() -> String {
    use subsidy_common::config::{
        SHARED_SETTINGS, Section, section_defaults, shared_defaults, table_rows,
    };
    fn rows_of<S: Section>() -> Vec<subsidy_common::config::TableRow> {
        table_rows(S::SETTINGS, &section_defaults::<S>())
    }
    let mut rows = table_rows(SHARED_SETTINGS, &shared_defaults());
    rows.extend(rows_of::<subsidy_application::settings::Settings>());
    rows.extend(rows_of::<subsidy_rules::settings::Settings>());
    rows.extend(rows_of::<subsidy_budget::settings::Settings>());
    rows.extend(rows_of::<subsidy_notification::settings::Settings>());
    rows.extend(rows_of::<subsidy_common::security::TlsSettings>());
    rows.extend(rows_of::<subsidy_common::security::AuthSettings>());
    let mut table =
        String::from("| key (TOML) | environment | default | meaning |\n|---|---|---|---|\n");
    for row in rows {
        let env = if row.env.is_empty() { "" } else { &row.env };
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.key, env, row.default, row.meaning
        ));
    }
    table
}

/// The table of who may call what, as `docs/SECURITY.md` shows it: every RPC with the roles
/// and services its proto declaration admits. `subsidy access` prints it; a test checks the
/// document holds it.
pub fn access_table() -> String {
    use subsidy_proto::access::METHODS;
    let mut table = String::from("| RPC | roles | services | changes state |\n|---|---|---|---|\n");
    for rule in METHODS {
        let service = rule
            .service_name()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim_end_matches("Service");
        let names = |names: Vec<&str>| {
            if names.is_empty() {
                "–".to_owned()
            } else {
                names.join(", ")
            }
        };
        table.push_str(&format!(
            "| {service}.{} | {} | {} | {} |\n",
            rule.method(),
            names(rule.roles.iter().map(|role| role.claim_name()).collect()),
            names(rule.services.iter().map(|s| s.short_name()).collect()),
            if rule.mutating { "yes" } else { "" }
        ));
    }
    table
}

/// Longest wait of a probe, in milliseconds.
pub const PROBE_TIMEOUT_MS: u64 = 3_000;

/// Which of a service's health statuses a probe asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The service's own name: SERVING while its database answers, until shutdown begins.
    Readiness,
    /// The empty name: SERVING until shutdown begins.
    Liveness,
}

/// Asks the service `kind` configured by `config` for its `probe` health on its own port of
/// this machine, over TLS trusting `tls.ca_file` (plaintext when insecure): `Ok` when SERVING.
pub async fn probe(kind: ServiceKind, config: &Config, probe: Probe) -> Result<(), BoxError> {
    use subsidy_common::security::TlsSettings;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let port = config
        .listen
        .parse::<std::net::SocketAddr>()
        .map_err(|error| format!("listen {}: {error}", config.listen))?
        .port();
    let tls: TlsSettings = config.section()?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(std::time::Duration::from_millis(PROBE_TIMEOUT_MS))
        .timeout(std::time::Duration::from_millis(PROBE_TIMEOUT_MS));
    let channel = if tls.insecure {
        endpoint.connect().await?
    } else {
        // Dials this machine, verifies the service's own name (every certificate carries it).
        let connector = subsidy_common::tls::Connector::anonymous(Path::new(&tls.ca_file))?
            .verifying(kind.name());
        endpoint.connect_with_connector(connector).await?
    };
    let status = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: match probe {
                Probe::Readiness => kind.grpc_name().into(),
                Probe::Liveness => String::new(),
            },
        })
        .await?
        .into_inner()
        .status();
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(format!("{} is {} ({probe:?})", kind.name(), status.as_str_name()).into())
    }
}
