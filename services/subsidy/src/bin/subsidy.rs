//! `subsidy`: runs the subsidy services.
//!
//! - `subsidy dev` runs all four services in one process on embedded SQLite under `./data`;
//! - `subsidy serve SERVICE` runs one service (what Kubernetes runs);
//! - `subsidy migrate SERVICE` applies that service's migrations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use subsidy::launch;
use subsidy_common::config::ServiceKind;

/// mimalloc instead of the system allocator: under load the budget spent about 13 % of its CPU
/// in glibc's malloc and free, and with mimalloc it did about 20 % more operations per second
/// at 64 clients (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "subsidy",
    version,
    about = "Shandong 2025 compute-voucher and data-infrastructure subsidy services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run all four services in one process on embedded SQLite (development and single machine).
    Dev {
        /// Where the SQLite databases live.
        #[arg(long, default_value = "./data", env = "SUBSIDY_DATA_DIR")]
        data_dir: PathBuf,
        /// The address the services listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The ports of application, rules, budget and notification, comma-separated.
        #[arg(long, default_value = "50051,50052,50053,50054", value_delimiter = ',')]
        ports: Vec<u16>,
        /// Serve plaintext without TLS (loopback only): anyone on this machine can then name
        /// itself a service. Without it the stack serves TLS with a development CA and
        /// accepts development tokens, both made under --data-dir on first start.
        #[arg(long)]
        insecure: bool,
    },
    /// Run one service (application, rules, budget or notification).
    Serve {
        /// Which service.
        service: String,
        /// A TOML configuration file; environment variables override it.
        #[arg(long, env = "SUBSIDY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print every configuration key with its environment variables, default and meaning.
    Settings,
    /// Print who may call each RPC (the roles and services the proto declares).
    Access,
    /// Ask a running service for its gRPC health over its own TLS (for Kubernetes exec
    /// probes: the kubelet's gRPC probes speak no TLS); exits 0 when SERVING. Without
    /// `--liveness` it asks readiness (NOT_SERVING while the service's database does not answer
    /// and once shutdown begins); with it, liveness (NOT_SERVING only once shutdown begins).
    Probe {
        /// Which service.
        service: String,
        /// Ask liveness instead of readiness.
        #[arg(long)]
        liveness: bool,
        /// A TOML configuration file; environment variables override it.
        #[arg(long, env = "SUBSIDY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply one service's database migrations and exit.
    Migrate {
        /// Which service.
        service: String,
        /// A TOML configuration file; environment variables override it.
        #[arg(long, env = "SUBSIDY_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn parse_kind(name: &str) -> Result<ServiceKind, String> {
    ServiceKind::parse(name).ok_or_else(|| {
        format!("unknown service {name:?}: expected application, rules, budget or notification")
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("subsidy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `subsidy dev`: the four services in one process, each on its own SQLite database under
/// `data_dir`, until a shutdown signal; fails with the first service that failed.
async fn dev(
    data_dir: PathBuf,
    host: String,
    ports: Vec<u16>,
    insecure: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    if ports.len() != 4 {
        return Err("--ports takes four ports: application,rules,budget,notification".into());
    }
    let ports: HashMap<ServiceKind, u16> = ServiceKind::ALL.into_iter().zip(ports).collect();
    let security = if insecure {
        eprintln!(
            "subsidy dev: INSECURE — plaintext on {host}, no TLS, services trusted by the name they send; development only"
        );
        launch::DevSecurity::Insecure
    } else {
        launch::DevSecurity::Tls
    };
    let configs = launch::dev_configs(&data_dir, &host, &ports, security)?;
    // One process, four services: each span is still exported under its own service's name.
    let _telemetry =
        subsidy_common::telemetry::init_per_service("subsidy-dev", &configs[0].1.telemetry)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (kind, config) in configs {
        let listener = subsidy_common::server::bind(&config.listen)
            .await
            .map_err(|e| format!("{}: cannot listen on {}: {e}", kind.name(), config.listen))?;
        tracing::info!(service = kind.name(), addr = %config.listen, database = %config.database.url, "starting");
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            (
                kind,
                launch::run_service(kind, config, listener, stop).await,
            )
        }));
    }
    let listening: Vec<String> = ServiceKind::ALL
        .iter()
        .map(|kind| format!("{} {}:{}", kind.name(), host, ports[kind]))
        .collect();
    println!(
        "subsidy dev: {} (data in {}{})",
        listening.join(", "),
        data_dir.display(),
        if insecure {
            ", plaintext"
        } else {
            "; TLS with the development CA in pki/, subsidyctl finds it and the dev token key there"
        }
    );
    let signal = tokio::spawn(async move {
        subsidy_common::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut failure = None;
    for task in tasks {
        let (kind, result) = task.await?;
        if let Err(error) = result {
            tracing::error!(service = kind.name(), %error, "service failed");
            failure.get_or_insert(format!("{}: {error}", kind.name()));
        }
    }
    signal.abort();
    match failure {
        Some(message) => Err(message.into()),
        None => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Dev {
            data_dir,
            host,
            ports,
            insecure,
        } => dev(data_dir, host, ports, insecure).await,
        Command::Serve { service, config } => {
            let kind = parse_kind(&service)?;
            let config = launch::load_config(kind, config.as_deref())?;
            let _telemetry = subsidy_common::telemetry::init(
                &format!("subsidy-{}", kind.name()),
                &config.telemetry,
            )?;
            let listener = subsidy_common::server::bind(&config.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                subsidy_common::server::shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            launch::run_service(kind, config, listener, stop_rx).await
        }
        Command::Settings => {
            print!("{}", launch::settings_table());
            Ok(())
        }
        Command::Access => {
            print!("{}", launch::access_table());
            Ok(())
        }
        Command::Probe {
            service,
            liveness,
            config,
        } => {
            let kind = parse_kind(&service)?;
            let config = launch::load_config(kind, config.as_deref())?;
            let probe = if liveness {
                launch::Probe::Liveness
            } else {
                launch::Probe::Readiness
            };
            launch::probe(kind, &config, probe).await
        }
        Command::Migrate { service, config } => {
            let kind = parse_kind(&service)?;
            let config = launch::load_config(kind, config.as_deref())?;
            launch::migrate(kind, &config).await?;
            let database = &config.database;
            let used = if database.owner_url.is_empty() {
                &database.url
            } else {
                &database.owner_url
            };
            println!("{}: migrations applied to {}", kind.name(), redact(used));
            Ok(())
        }
    }
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
