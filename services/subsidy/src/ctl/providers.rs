//! `subsidyctl provider …`: the rules service's registry of compute providers and their data
//! centers: `register`, `suspend`, `revoke`, `readmit`, `list`, `show`, and `import` from CSV.
//!
//! Writes take a request id derived from the request's content unless one is given, so that
//! running the same command again returns the original answer. `import` reads a UTF-8 CSV file
//! (with or without a byte-order mark) with the header row [`CSV_HEADER`], one row per data
//! center, a provider's rows carrying the same provider fields; every row is checked before
//! anything is sent, and any bad row (each named by its line) stops the whole import. Providers
//! already registered exactly as in the file are left alone, so importing a file again changes
//! nothing; one registered differently is refused before anything is registered.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_common::uscc::Uscc;
use subsidy_proto::rules as pb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::status::FieldViolation;
use subsidy_rules::domain::registry::{Capacity, DivisionCode};
use tonic::transport::Channel;

use super::{Ctx, date_text, enums, json, print, print_record, proto_date, time};

/// The columns of an import file, in order.
pub const CSV_HEADER: [&str; 8] = [
    "uscc",
    "name",
    "effective_date",
    "reason",
    "data_center_name",
    "division_code",
    "capacity_pflops",
    "data_center_status",
];
/// Most rows of one import file (providers × data centers).
const IMPORT_ROWS_MAX: usize = 10_000;
/// Providers asked for per page of `list`.
const LIST_PAGE_SIZE: i32 = 1000;
/// The `ErrorInfo` domain of refusals made by `subsidyctl` itself.
const DOMAIN: &str = "subsidyctl";

/// Provider registry commands.
#[derive(Subcommand, Debug)]
pub enum ProviderCommand {
    /// Register a compute provider, admitted from a day, with its data centers.
    Register {
        /// The provider's USCC.
        #[arg(long)]
        uscc: String,
        /// The provider's name.
        #[arg(long)]
        name: String,
        /// The day it is admitted from (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Why it is admitted (e.g. the admission notice).
        #[arg(long)]
        reason: String,
        /// A data center as `NAME,DIVISION_CODE,CAPACITY_PFLOPS` (repeat for each).
        #[arg(long = "data-center", required = true)]
        data_centers: Vec<String>,
        /// The idempotency key; by default derived from the request.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Suspend a provider from a day.
    Suspend(StatusArgs),
    /// Revoke a provider from a day (final).
    Revoke(StatusArgs),
    /// Readmit a suspended provider from a day.
    Readmit(StatusArgs),
    /// List providers in order of USCC.
    List {
        /// Only those of this current status.
        #[arg(long, value_parser = enums::parser::<pb::ProviderStatus>())]
        status: Option<pb::ProviderStatus>,
    },
    /// Show a provider, its data centers and its status history.
    Show {
        /// The provider's USCC.
        uscc: String,
    },
    /// Register the providers of a CSV file, all or nothing: one row per data center under the
    /// header uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,
    /// data_center_status (in-service or retired; empty means in-service).
    Import {
        /// The CSV file (UTF-8, with or without BOM).
        #[arg(long)]
        file: std::path::PathBuf,
    },
}

/// The arguments of a status change.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The provider's USCC.
    uscc: String,
    /// The day the change takes effect (YYYY-MM-DD).
    #[arg(long)]
    from: NaiveDate,
    /// Why.
    #[arg(long)]
    reason: String,
    /// The idempotency key; by default derived from the request.
    #[arg(long)]
    request_id: Option<String>,
}

type Client = RulesServiceClient<Channel>;

/// A request id derived from `operation` and the request (without its own id).
fn derived_request_id<M: prost::Message>(operation: &str, request: &M) -> String {
    let digest = subsidy_common::idempotency::fingerprint(operation, request);
    format!(
        "subsidyctl-{}-{}",
        operation.to_ascii_lowercase(),
        &digest[..32]
    )
}

/// Runs a provider command.
pub async fn run(command: ProviderCommand, ctx: &Ctx) -> Result<(), BoxError> {
    let mut client = RulesServiceClient::new(ctx.channel(ServiceKind::Rules).await?);
    match command {
        ProviderCommand::Register {
            uscc,
            name,
            from,
            reason,
            data_centers,
            request_id,
        } => {
            let data_centers = data_centers
                .iter()
                .map(|text| data_center_arg(text))
                .collect::<Result<Vec<_>, _>>()?;
            let mut request = pb::RegisterProviderRequest {
                request_id: String::new(),
                uscc,
                name,
                effective_date: Some(proto_date(from)),
                reason,
                data_centers,
            };
            request.request_id =
                request_id.unwrap_or_else(|| derived_request_id("RegisterProvider", &request));
            let provider = client
                .register_provider(ctx.request(request))
                .await?
                .into_inner()
                .provider
                .ok_or("the service returned no provider")?;
            show_provider(ctx, &provider, &[]);
            Ok(())
        }
        ProviderCommand::Suspend(args) => {
            change(ctx, &mut client, pb::ProviderStatus::Suspended, args).await
        }
        ProviderCommand::Revoke(args) => {
            change(ctx, &mut client, pb::ProviderStatus::Revoked, args).await
        }
        ProviderCommand::Readmit(args) => {
            change(ctx, &mut client, pb::ProviderStatus::Admitted, args).await
        }
        ProviderCommand::List { status } => list(ctx, &mut client, status).await,
        ProviderCommand::Show { uscc } => {
            let shown = client
                .get_provider(ctx.request(pb::GetProviderRequest { uscc }))
                .await?
                .into_inner();
            match ctx.output {
                super::Output::Json => super::print_json(&json::message(&shown)),
                super::Output::Table => {
                    let provider = shown.provider.ok_or("the service returned no provider")?;
                    show_provider(ctx, &provider, &shown.history);
                }
            }
            Ok(())
        }
        ProviderCommand::Import { file } => import(ctx, &mut client, &file).await,
    }
}

/// A `--data-center NAME,DIVISION_CODE,CAPACITY_PFLOPS` argument (checked by the service).
fn data_center_arg(text: &str) -> Result<pb::DataCenter, BoxError> {
    let parts: Vec<&str> = text.rsplitn(3, ',').collect();
    let [capacity, code, name] = parts[..] else {
        return Err(
            format!("--data-center {text:?} is not NAME,DIVISION_CODE,CAPACITY_PFLOPS").into(),
        );
    };
    Ok(pb::DataCenter {
        name: name.trim().to_owned(),
        division_code: code.trim().to_owned(),
        capacity_pflops: capacity.trim().to_owned(),
        status: pb::DataCenterStatus::InService as i32,
    })
}

/// `suspend`, `revoke`, `readmit`.
async fn change(
    ctx: &Ctx,
    client: &mut Client,
    status: pb::ProviderStatus,
    args: StatusArgs,
) -> Result<(), BoxError> {
    let mut request = pb::UpdateProviderStatusRequest {
        request_id: String::new(),
        uscc: args.uscc,
        status: status as i32,
        effective_date: Some(proto_date(args.from)),
        reason: args.reason,
    };
    request.request_id = args
        .request_id
        .unwrap_or_else(|| derived_request_id("UpdateProviderStatus", &request));
    let changed = client
        .update_provider_status(ctx.request(request))
        .await?
        .into_inner();
    match ctx.output {
        super::Output::Json => super::print_json(&json::message(&changed)),
        super::Output::Table => {
            let provider = changed.provider.ok_or("the service returned no provider")?;
            let history: Vec<_> = changed.change.into_iter().collect();
            show_provider(ctx, &provider, &history);
        }
    }
    Ok(())
}

fn status_name(value: i32) -> String {
    pb::ProviderStatus::try_from(value)
        .map(enums::arg_name)
        .unwrap_or_else(|_| "?".into())
}

fn data_center_text(center: &pb::DataCenter) -> String {
    let status = pb::DataCenterStatus::try_from(center.status)
        .map(enums::arg_name)
        .unwrap_or_else(|_| "?".into());
    format!(
        "{} ({}, {} PFLOPS, {status})",
        center.name, center.division_code, center.capacity_pflops
    )
}

/// A provider as `FIELD VALUE` lines, then its status changes; JSON: the provider message.
fn show_provider(ctx: &Ctx, provider: &pb::Provider, history: &[pb::ProviderStatusChange]) {
    let mut fields = vec![
        ("uscc", provider.uscc.clone()),
        ("name", provider.name.clone()),
        ("status", status_name(provider.status)),
        ("since", date_text(&provider.status_effective_date)),
        ("reason", provider.status_reason.clone()),
        ("registered", time(&provider.register_time)),
    ];
    for center in &provider.data_centers {
        fields.push(("data_center", data_center_text(center)));
    }
    for change in history {
        fields.push((
            "change",
            format!(
                "#{} {} from {} by {}: {}",
                change.sequence,
                status_name(change.status),
                date_text(&change.effective_date),
                change.actor,
                change.reason
            ),
        ));
    }
    print_record(ctx, &fields, || json::message(provider));
}

/// `list`: every provider (of `status`), page by page.
async fn list(
    ctx: &Ctx,
    client: &mut Client,
    status: Option<pb::ProviderStatus>,
) -> Result<(), BoxError> {
    let mut providers = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_providers(ctx.request(pb::ListProvidersRequest {
                status: status.unwrap_or(pb::ProviderStatus::Unspecified) as i32,
                page_size: LIST_PAGE_SIZE,
                page_token: token,
            }))
            .await?
            .into_inner();
        providers.extend(page.providers);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let rows: Vec<Vec<String>> = providers
        .iter()
        .map(|p| {
            vec![
                p.uscc.clone(),
                p.name.clone(),
                status_name(p.status),
                date_text(&p.status_effective_date),
                p.data_centers
                    .iter()
                    .map(|d| d.division_code.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    print(
        ctx,
        &["USCC", "NAME", "STATUS", "SINCE", "DATA CENTERS"],
        &rows,
        || json::messages(&providers),
    );
    Ok(())
}

/// The registrations of an import file, in order of first appearance, or the violations of
/// every bad row (`line N: column`).
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<pb::RegisterProviderRequest>, Vec<FieldViolation>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut violations = Vec::new();
    let header_ok = reader
        .headers()
        .map(|h| h.iter().eq(CSV_HEADER.iter().copied()))
        .unwrap_or(false);
    if !header_ok {
        return Err(vec![FieldViolation::new(
            "line 1",
            format!("the header must be {}", CSV_HEADER.join(",")),
        )]);
    }
    let mut providers: BTreeMap<String, (usize, pb::RegisterProviderRequest)> = BTreeMap::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        if index >= IMPORT_ROWS_MAX {
            violations.push(FieldViolation::new(
                format!("line {line}"),
                format!("a file has at most {IMPORT_ROWS_MAX} rows"),
            ));
            break;
        }
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                violations.push(FieldViolation::new(
                    format!("line {line}"),
                    error.to_string(),
                ));
                continue;
            }
        };
        if let Some(row) = parse_row(line, &record, &mut violations) {
            add_row(line, row, &mut providers, &mut violations);
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let mut ordered: Vec<_> = providers.into_values().collect();
    ordered.sort_by_key(|(first_line, _)| *first_line);
    Ok(ordered.into_iter().map(|(_, request)| request).collect())
}

/// One checked row: the provider's fields and one data center.
fn parse_row(
    line: usize,
    record: &csv::StringRecord,
    violations: &mut Vec<FieldViolation>,
) -> Option<pb::RegisterProviderRequest> {
    let field = |i: usize| record.get(i).unwrap_or("").to_owned();
    let mut bad = |column: &str, why: &str| {
        violations.push(FieldViolation::new(format!("line {line}: {column}"), why));
    };
    let before = (record.len(), CSV_HEADER.len());
    if before.0 != before.1 {
        bad("row", &format!("must have {} columns", CSV_HEADER.len()));
        return None;
    }
    let mut ok = true;
    if Uscc::parse(&field(0)).is_err() {
        bad("uscc", "is not a valid USCC");
        ok = false;
    }
    for (i, column) in [(1, "name"), (3, "reason"), (4, "data_center_name")] {
        if field(i).is_empty() {
            bad(column, "is required");
            ok = false;
        }
    }
    let day = NaiveDate::parse_from_str(&field(2), "%Y-%m-%d").ok();
    if day.is_none() {
        bad("effective_date", "must be a date like 2025-01-31");
        ok = false;
    }
    if DivisionCode::parse(&field(5)).is_none() {
        bad("division_code", "must be 6 digits");
        ok = false;
    }
    if Capacity::parse(&field(6)).is_none() {
        bad(
            "capacity_pflops",
            "must be a decimal greater than 0 with at most 3 decimal places",
        );
        ok = false;
    }
    let status = match field(7).as_str() {
        "" => Some(pb::DataCenterStatus::InService),
        other => enums::parse::<pb::DataCenterStatus>(other),
    };
    if status.is_none() {
        bad("data_center_status", "must be in-service or retired");
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(pb::RegisterProviderRequest {
        request_id: String::new(),
        uscc: Uscc::parse(&field(0)).ok()?.to_string(),
        name: field(1),
        effective_date: day.map(proto_date),
        reason: field(3),
        data_centers: vec![pb::DataCenter {
            name: field(4),
            division_code: field(5),
            capacity_pflops: Capacity::parse(&field(6))?.as_str().to_owned(),
            status: status? as i32,
        }],
    })
}

/// Adds a checked row to its provider; the provider fields must agree with its first row's.
fn add_row(
    line: usize,
    row: pb::RegisterProviderRequest,
    providers: &mut BTreeMap<String, (usize, pb::RegisterProviderRequest)>,
    violations: &mut Vec<FieldViolation>,
) {
    match providers.get_mut(&row.uscc) {
        None => {
            providers.insert(row.uscc.clone(), (line, row));
        }
        Some((first_line, provider)) => {
            if (&provider.name, &provider.effective_date, &provider.reason)
                != (&row.name, &row.effective_date, &row.reason)
            {
                violations.push(FieldViolation::new(
                    format!("line {line}: uscc"),
                    format!("name, effective_date and reason differ from line {first_line}"),
                ));
            } else if provider
                .data_centers
                .iter()
                .any(|d| d.name == row.data_centers[0].name)
            {
                violations.push(FieldViolation::new(
                    format!("line {line}: data_center_name"),
                    "appears twice for this provider",
                ));
            } else {
                provider.data_centers.extend(row.data_centers);
            }
        }
    }
}

/// Whether `registered` is the provider `wanted` would register.
fn same_registration(registered: &pb::Provider, wanted: &pb::RegisterProviderRequest) -> bool {
    registered.name == wanted.name && registered.data_centers == wanted.data_centers
}

/// `import`: checks every row, then every provider against the registry, then registers the
/// new ones; prints what became of each.
async fn import(ctx: &Ctx, client: &mut Client, file: &Path) -> Result<(), BoxError> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let registrations = parse_csv(&bytes).map_err(|violations| {
        Box::new(subsidy_proto::status::invalid_argument(DOMAIN, &violations)) as BoxError
    })?;
    let mut outcomes = Vec::with_capacity(registrations.len());
    let mut conflicts = Vec::new();
    for wanted in &registrations {
        let known = client
            .get_provider(ctx.request(pb::GetProviderRequest {
                uscc: wanted.uscc.clone(),
            }))
            .await;
        match known {
            Ok(shown) => {
                let registered = shown.into_inner().provider.unwrap_or_default();
                if !same_registration(&registered, wanted) {
                    conflicts.push(FieldViolation::new(
                        format!("uscc {}", wanted.uscc),
                        "is registered with another name or other data centers",
                    ));
                }
                outcomes.push("unchanged");
            }
            Err(status) if status.code() == tonic::Code::NotFound => outcomes.push("registered"),
            Err(status) => return Err(status.into()),
        }
    }
    if !conflicts.is_empty() {
        return Err(Box::new(subsidy_proto::status::invalid_argument(
            DOMAIN, &conflicts,
        )));
    }
    let mut providers = Vec::with_capacity(registrations.len());
    for (wanted, outcome) in registrations.into_iter().zip(&outcomes) {
        if *outcome == "registered" {
            let mut request = wanted;
            request.request_id = derived_request_id("RegisterProvider", &request);
            let provider = client
                .register_provider(ctx.request(request))
                .await?
                .into_inner()
                .provider
                .ok_or("the service returned no provider")?;
            providers.push(provider);
        } else {
            providers.push(pb::Provider {
                uscc: wanted.uscc,
                name: wanted.name,
                ..Default::default()
            });
        }
    }
    let rows: Vec<Vec<String>> = providers
        .iter()
        .zip(&outcomes)
        .map(|(p, outcome)| vec![p.uscc.clone(), p.name.clone(), (*outcome).to_owned()])
        .collect();
    print(ctx, &["USCC", "NAME", "IMPORT"], &rows, || {
        serde_json::Value::Array(
            providers
                .iter()
                .zip(&outcomes)
                .map(|(p, outcome)| serde_json::json!({"uscc": p.uscc, "name": p.name, "import": outcome}))
                .collect(),
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_file_with_a_bom_groups_rows_by_provider_and_names_every_bad_row() {
        // Proves the CSV reading: a BOM is skipped, a provider's rows become one registration
        // with its data centers, and every bad row is named by line and column.
        let good = "\u{feff}uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,data_center_status\n\
            91370100MA00000023,济南智算,2025-01-01,名单,济南中心,370102,120.50,\n\
            91370100MA00000023,济南智算,2025-01-01,名单,青岛中心,370211,80,retired\n";
        let parsed = parse_csv(good.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].data_centers.len(), 2);
        assert_eq!(parsed[0].data_centers[0].capacity_pflops, "120.5");
        let bad = "uscc,name,effective_date,reason,data_center_name,division_code,capacity_pflops,data_center_status\n\
            91370100MA00000024,x,2025-01-01,r,c,370102,1,\n\
            91370100MA00000023,x,2025-13-01,r,c,3701,1.5e3,\n";
        let violations = parse_csv(bad.as_bytes()).unwrap_err();
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "line 2: uscc",
                "line 3: effective_date",
                "line 3: division_code",
                "line 3: capacity_pflops"
            ]
        );
    }
}
