//! `subsidyctl`: the operators' command line. Every command talks gRPC to a service; output is a
//! table for people or, with `--output json`, JSON for scripts.

/// `println!` to standard output through [`write_out`]: a reader that went away (`| head`)
/// ends the command quietly instead of panicking. Defined before the modules that use it.
macro_rules! outln {
    () => {
        $crate::ctl::write_out("\n")
    };
    ($($arg:tt)*) => {
        $crate::ctl::write_out(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod application;
pub mod budget;
pub mod credentials;
pub mod enums;
pub mod errors;
pub mod events;
pub mod export;
pub mod json;
pub mod ledger_file;
pub mod notification;
pub mod providers;
pub mod rules;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;

use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_common::tls::Connector;
use subsidy_proto::access::Role;
use tonic::transport::Channel;

/// How long a connection may take to open, in seconds.
const CONNECT_TIMEOUT_S: u64 = 5;
/// How long one call may take, in seconds.
const CALL_TIMEOUT_S: u64 = 30;
/// How often a long-lived stream pings the server, in seconds.
const KEEP_ALIVE_S: u64 = 30;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The services' messages as JSON for scripts (one object per line for `watch`).
    Json,
}

/// Where the services are and how to print.
#[derive(Args, Debug, Clone)]
pub struct Ctx {
    /// The application service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_APPLICATION_URL",
        default_value = "https://127.0.0.1:50051"
    )]
    pub application_url: String,
    /// The rules service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_RULES_URL",
        default_value = "https://127.0.0.1:50052"
    )]
    pub rules_url: String,
    /// The budget service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_BUDGET_URL",
        default_value = "https://127.0.0.1:50053"
    )]
    pub budget_url: String,
    /// The notification service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_NOTIFICATION_URL",
        default_value = "https://127.0.0.1:50054"
    )]
    pub notification_url: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The subject of development tokens minted from the dev key (ignored with `--token`).
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_ACTOR",
        default_value = "subsidyctl"
    )]
    pub actor: String,
    /// A bearer token to send (from the province's identity provider); without it,
    /// `subsidyctl` mints development tokens from the dev key under `--data-dir`.
    #[arg(long, global = true, env = "SUBSIDY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The dev stack's data directory: its CA (`pki/ca.crt`) is trusted and its signing key
    /// (`auth/signing-key.pem`) mints development tokens.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// The CA bundle to trust (default: the dev stack's, under `--data-dir`).
    #[arg(long, global = true, env = "SUBSIDY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Talk plaintext (a dev stack started with `subsidy dev --insecure`).
    #[arg(long, global = true, env = "SUBSIDY_INSECURE")]
    pub insecure: bool,
}

/// What a development token must bind its bearer to, for commands that act as an applicant
/// or an expert.
#[derive(Clone, Debug, Default)]
pub struct Binding {
    /// Enterprises the applicant acts for.
    pub enterprises: Vec<String>,
    /// The expert who scores.
    pub expert: Option<String>,
}

impl Ctx {
    /// The URL of a service.
    pub fn url(&self, kind: ServiceKind) -> &str {
        match kind {
            ServiceKind::Application => &self.application_url,
            ServiceKind::Rules => &self.rules_url,
            ServiceKind::Budget => &self.budget_url,
            ServiceKind::Notification => &self.notification_url,
        }
    }

    /// A connected channel to a service: TLS trusting the CA (`--ca-file` or the dev
    /// stack's), or plaintext with `--insecure`; every call bounded by 30 s.
    pub async fn channel(&self, kind: ServiceKind) -> Result<Channel, BoxError> {
        self.connect(kind, |endpoint| {
            endpoint.timeout(std::time::Duration::from_secs(CALL_TIMEOUT_S))
        })
        .await
    }

    /// A connected channel for a long-lived stream: like [`Ctx::channel`], with no call
    /// timeout and HTTP/2 keep-alive pings instead.
    pub async fn stream_channel(&self, kind: ServiceKind) -> Result<Channel, BoxError> {
        self.connect(kind, |endpoint| {
            endpoint
                .http2_keep_alive_interval(std::time::Duration::from_secs(KEEP_ALIVE_S))
                .keep_alive_while_idle(true)
        })
        .await
    }

    async fn connect(
        &self,
        kind: ServiceKind,
        shape: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    ) -> Result<Channel, BoxError> {
        let url = self.url(kind).to_owned();
        let endpoint = shape(
            tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?
                .connect_timeout(std::time::Duration::from_secs(CONNECT_TIMEOUT_S)),
        );
        let unreachable = |e: tonic::transport::Error| {
            errors::unreachable(format!(
                "cannot reach the {} service at {url}: {e}",
                kind.name()
            ))
        };
        if self.insecure {
            return Ok(endpoint.connect().await.map_err(unreachable)?);
        }
        let ca = self
            .ca_file
            .clone()
            .unwrap_or_else(|| DevPaths::new(&self.data_dir).ca());
        let connector = Connector::anonymous(&ca).map_err(|e| {
            format!("{e}: pass --ca-file, or --data-dir of a running `subsidy dev`, or --insecure")
        })?;
        Ok(endpoint
            .connect_with_connector(connector)
            .await
            .map_err(unreachable)?)
    }

    /// This context, with development tokens minted for `subject` when one is given (a
    /// `--token` is sent unchanged).
    pub fn minting_for(&self, subject: Option<&str>) -> Ctx {
        let mut ctx = self.clone();
        if let Some(subject) = subject {
            ctx.actor = subject.to_owned();
        }
        ctx
    }

    /// A request carrying the caller's credentials: `--token`, or a development token for
    /// every staff role.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_as(message, &Binding::default())
    }

    /// A request carrying the caller's credentials; a development token also binds
    /// `binding` (the enterprises an applicant acts for, the expert who scores).
    pub fn request_as<T>(&self, message: T, binding: &Binding) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let token = match &self.token {
            Some(token) => Some(token.clone()),
            None => self.dev_token(binding),
        };
        if let Some(value) = token.and_then(|token| format!("Bearer {token}").parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// A development token from the dev key under `--data-dir`: every human role, applicant
    /// of `binding`'s enterprises, expert `binding.expert`. `None` without a dev key (the
    /// service then answers UNAUTHENTICATED and says how to authenticate).
    fn dev_token(&self, binding: &Binding) -> Option<String> {
        let key = DevPaths::new(&self.data_dir).load_signing_key().ok()?;
        let mut roles = vec![
            Role::Applicant,
            Role::Reviewer,
            Role::Finance,
            Role::Auditor,
            Role::Admin,
        ];
        if binding.expert.is_some() {
            roles.push(Role::Expert);
        }
        dev::mint(
            &key,
            &self.actor,
            &roles,
            &binding.enterprises,
            binding.expert.as_deref(),
        )
        .ok()
    }
}

/// The whole command line of `subsidyctl`.
#[derive(Parser, Debug)]
#[command(
    name = "subsidyctl",
    version,
    about = "Operate the Shandong subsidy services",
    after_help = errors::EXIT_CODES_HELP
)]
pub struct Cli {
    /// Where the services are and how to print.
    #[command(flatten)]
    pub ctx: Ctx,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the gRPC health of all four services.
    Health,
    /// Print a shell completion script, e.g. `subsidyctl completions bash >
    /// /etc/bash_completion.d/subsidyctl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page subsidyctl(1) in roff, e.g. `subsidyctl man | man -l -`; with
    /// `--dir`, write one page per command there instead (`subsidyctl-claim-approve.1`, …).
    Man {
        /// The directory to write every page to.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Development certificates.
    #[command(subcommand)]
    Certs(credentials::Certs),
    /// Development tokens.
    #[command(subcommand)]
    Token(credentials::Token),
    #[command(flatten)]
    Budget(budget::Command),
    #[command(flatten)]
    Rules(rules::Command),
    #[command(flatten)]
    Notification(notification::Command),
    #[command(flatten)]
    Events(events::Command),
    #[command(flatten)]
    Application(application::Command),
    #[command(flatten)]
    Export(export::Command),
}

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    match command {
        Command::Health => health(ctx).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "subsidyctl", &mut script);
            write_out(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Man { dir: None } => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            write_out(&String::from_utf8_lossy(&page));
            Ok(())
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(Cli::command(), &dir)?;
            Ok(())
        }
        Command::Certs(command) => credentials::certs(command),
        Command::Token(command) => credentials::token(command, ctx),
        Command::Budget(command) => budget::run(command, ctx).await,
        Command::Rules(command) => rules::run(command, ctx).await,
        Command::Notification(command) => notification::run(command, ctx).await,
        Command::Events(command) => events::run(command, ctx).await,
        Command::Application(command) => application::run(command, ctx).await,
        Command::Export(command) => export::run(command, ctx).await,
    }
}

async fn health(ctx: &Ctx) -> Result<(), BoxError> {
    use tonic_health::pb::health_client::HealthClient;
    let mut rows = Vec::new();
    let mut all_serving = true;
    for kind in ServiceKind::ALL {
        let status = match ctx.channel(kind).await {
            Ok(channel) => match HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: kind.grpc_name().into(),
                })
                .await
            {
                Ok(response) => match response.into_inner().status() {
                    tonic_health::pb::health_check_response::ServingStatus::Serving => {
                        "SERVING".to_owned()
                    }
                    other => other.as_str_name().to_owned(),
                },
                Err(status) => format!("ERROR {:?}", status.code()),
            },
            Err(_) => "UNREACHABLE".to_owned(),
        };
        all_serving &= status == "SERVING";
        rows.push(vec![
            kind.name().to_owned(),
            ctx.url(kind).to_owned(),
            status,
        ]);
    }
    let json = || {
        serde_json::Value::Array(
            rows.iter()
                .map(|row| serde_json::json!({"service": row[0], "url": row[1], "status": row[2]}))
                .collect(),
        )
    };
    print(ctx, &["SERVICE", "URL", "STATUS"], &rows, json);
    if all_serving {
        Ok(())
    } else {
        Err("not every service is serving".into())
    }
}

/// Prints rows under `headers` for people, or, with `--output json`, `json()`: the service's
/// messages (see [`json`]).
pub fn print(
    ctx: &Ctx,
    headers: &[&str],
    rows: &[Vec<String>],
    json: impl FnOnce() -> serde_json::Value,
) {
    match ctx.output {
        Output::Json => print_json(&json()),
        Output::Table => write_out(&table(headers, rows)),
    }
}

/// Prints one record as `FIELD  VALUE` lines for people, or, with `--output json`, `json()`:
/// the service's message.
pub fn print_record(
    ctx: &Ctx,
    fields: &[(&str, String)],
    json: impl FnOnce() -> serde_json::Value,
) {
    match ctx.output {
        Output::Json => print_json(&json()),
        Output::Table => {
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|(key, value)| vec![(*key).to_owned(), value.clone()])
                .collect();
            write_out(&columns(None, &rows));
        }
    }
}

/// Prints a JSON document, indented.
pub fn print_json(value: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value serializes")
    );
}

/// Writes `text` to standard output and flushes it (so `watch` lines reach a pipe at once).
/// When the reader went away (`subsidyctl … | head -1`) the command ends quietly with exit
/// code 0, as Unix tools do; another write failure ends it with code 1.
pub fn write_out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(errors::exit::OK));
        }
        eprintln!("subsidyctl: cannot write the output: {error}");
        std::process::exit(i32::from(errors::exit::FAILURE));
    }
}

/// Formats rows as columns under a header line.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    columns(Some(headers), rows)
}

/// Aligned columns two spaces apart, without borders, never wrapped; trailing spaces trimmed.
fn columns(headers: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    if let Some(headers) = headers {
        table.set_header(headers.to_vec());
    }
    table.add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect()
}

/// A program, named as operators say it. (The proto's `ApplicationKind` names the kinds of
/// application, `compute-voucher-claim` and `data-infrastructure-proposal`; commands take the
/// programs' short names.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Program {
    /// Compute-voucher claims.
    ComputeVoucher,
    /// Data-infrastructure proposals.
    DataInfra,
}

impl Program {
    /// The kind of application of the program.
    pub fn kind(self) -> subsidy_proto::application::ApplicationKind {
        use subsidy_proto::application::ApplicationKind;
        match self {
            Program::ComputeVoucher => ApplicationKind::ComputeVoucherClaim,
            Program::DataInfra => ApplicationKind::DataInfrastructureProposal,
        }
    }
}

/// `day` as a `google.type.Date`.
pub fn proto_date(day: chrono::NaiveDate) -> subsidy_proto::google::r#type::Date {
    use chrono::Datelike;
    subsidy_proto::google::r#type::Date {
        year: day.year(),
        month: i32::try_from(day.month()).expect("a month fits"),
        day: i32::try_from(day.day()).expect("a day fits"),
    }
}

/// A `google.type.Date` as `YYYY-MM-DD`; `-` when absent.
pub fn date_text(day: &Option<subsidy_proto::google::r#type::Date>) -> String {
    day.as_ref().map_or_else(
        || "-".to_owned(),
        |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
    )
}

/// Formats `google.type.Money` as `12,345.67`.
pub fn money(value: &Option<subsidy_proto::google::r#type::Money>) -> String {
    match value.as_ref().map(subsidy_common::Money::from_proto) {
        Some(Ok(money)) => money.grouped(),
        Some(Err(_)) => "?".into(),
        None => "-".into(),
    }
}

/// Formats a protobuf timestamp as RFC 3339 in UTC.
pub fn time(value: &Option<prost_types::Timestamp>) -> String {
    value
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}
