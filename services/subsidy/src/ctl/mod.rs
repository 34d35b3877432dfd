//! `subsidyctl`: the operators' command line. Every command talks gRPC to a service; output is a
//! table for people or, with `--output json`, JSON for scripts.

pub mod application;
pub mod budget;
pub mod enums;
pub mod notification;
pub mod rules;

use clap::{Args, Subcommand, ValueEnum};
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use tonic::transport::Channel;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
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
        default_value = "http://127.0.0.1:50051"
    )]
    pub application_url: String,
    /// The rules service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_RULES_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub rules_url: String,
    /// The budget service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_BUDGET_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub budget_url: String,
    /// The notification service.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_NOTIFICATION_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub notification_url: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Who is acting, recorded in ledgers and histories.
    #[arg(
        long,
        global = true,
        env = "SUBSIDY_ACTOR",
        default_value = "subsidyctl"
    )]
    pub actor: String,
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

    /// A connected channel to a service.
    pub async fn channel(&self, kind: ServiceKind) -> Result<Channel, BoxError> {
        let url = self.url(kind).to_owned();
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30));
        endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach the {} service at {url}: {e}", kind.name()).into())
    }

    /// A request carrying the actor's name.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = self.actor.parse() {
            request.metadata_mut().insert("x-subsidy-actor", value);
        }
        request
    }
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the gRPC health of all four services.
    Health,
    #[command(flatten)]
    Budget(budget::Command),
    #[command(flatten)]
    Rules(rules::Command),
    #[command(flatten)]
    Notification(notification::Command),
    #[command(flatten)]
    Application(application::Command),
}

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    match command {
        Command::Health => health(ctx).await,
        Command::Budget(command) => budget::run(command, ctx).await,
        Command::Rules(command) => rules::run(command, ctx).await,
        Command::Notification(command) => notification::run(command, ctx).await,
        Command::Application(command) => application::run(command, ctx).await,
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
    print(ctx, &["SERVICE", "URL", "STATUS"], &rows);
    if all_serving {
        Ok(())
    } else {
        Err("not every service is serving".into())
    }
}

/// Prints rows as a table, or as a JSON array of objects keyed by the lower-cased headers.
pub fn print(ctx: &Ctx, headers: &[&str], rows: &[Vec<String>]) {
    match ctx.output {
        Output::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    let object: serde_json::Map<String, serde_json::Value> = headers
                        .iter()
                        .zip(row)
                        .map(|(h, v)| {
                            (
                                h.to_lowercase().replace(' ', "_"),
                                serde_json::Value::String(v.clone()),
                            )
                        })
                        .collect();
                    serde_json::Value::Object(object)
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&items).expect("JSON of strings")
            );
        }
        Output::Table => print!("{}", table(headers, rows)),
    }
}

/// Formats rows as aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
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
