//! `subsidyctl export disbursements`: the finance office's export of the payments of a period,
//! one row per disbursement and a totals row, as CSV (UTF-8 with a byte-order mark, so that
//! spreadsheet software opens the Chinese names correctly; amounts as exact decimal text) or as
//! an XLSX workbook (amounts as numbers in a `#,##0.00` format, so that they can be summed), or
//! as the service's messages in JSON Lines.
//! The file is written under a temporary name beside the target and linked into place when
//! complete; an existing file is never replaced.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use rust_decimal::Decimal;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;

use super::{Ctx, Program, date_text, json, proto_date, time};

/// Export commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reports for the finance office.
    #[command(subcommand)]
    Export(ExportCommand),
}

/// What can be exported.
#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Every disbursement with a payment date in the period (both days included), with the
    /// approved and paid amounts, the reservation, its ledger entries and who approved, and a
    /// totals row.
    Disbursements {
        /// Only this program's payments (both programs' when left out).
        #[arg(long, value_enum)]
        program: Option<Program>,
        /// The first payment date, `YYYY-MM-DD` (Asia/Shanghai).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// The last payment date, `YYYY-MM-DD` (Asia/Shanghai).
        #[arg(long)]
        to: chrono::NaiveDate,
        /// The file format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// The file to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

/// The file format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values, UTF-8 with a byte-order mark.
    Csv,
    /// An Excel 2007+ workbook.
    Xlsx,
    /// The service's messages as proto3 JSON, one object per line (the rows, then the
    /// totals), for tools.
    Jsonl,
}

/// The column headings, in Chinese and English.
const HEADINGS: [&str; 16] = [
    "项目类型 Program",
    "申请编号 Application ID",
    "统一社会信用代码 USCC",
    "企业名称 Enterprise",
    "合同编号或项目名称 Contract / project",
    "资金池 Pool",
    "预留编号 Reservation",
    "核定金额（元） Approved (CNY)",
    "拨付金额（元） Disbursed (CNY)",
    "支付凭证号 Payment reference",
    "支付日期 Payment date",
    "登记人 Recorded by",
    "登记时间 Recorded at (UTC)",
    "审批人 Approver",
    "审批时间 Approved at (UTC)",
    "账本条目 Ledger entries",
];
/// The columns of the approved and disbursed amounts.
const AMOUNT_COLUMNS: [usize; 2] = [7, 8];

/// Runs an export command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    let Command::Export(ExportCommand::Disbursements {
        program,
        from,
        to,
        format,
        out,
    }) = command;
    let program = program.map_or(pb::ApplicationKind::Unspecified, Program::kind);
    let mut client = ApplicationServiceClient::new(ctx.channel(ServiceKind::Application).await?);
    let mut stream = client
        .export_disbursements(ctx.request(pb::ExportDisbursementsRequest {
            program: program as i32,
            from_date: Some(proto_date(from)),
            to_date: Some(proto_date(to)),
        }))
        .await?
        .into_inner();
    let mut rows = Vec::new();
    let mut lines = String::new();
    let mut totals = None;
    while let Some(message) = stream.message().await? {
        lines.push_str(&format!("{}\n", json::message(&message)));
        match message.item {
            Some(pb::export_disbursements_response::Item::Row(row)) => rows.push(row),
            Some(pb::export_disbursements_response::Item::Totals(sum)) => totals = Some(sum),
            None => {}
        }
    }
    let totals = totals.ok_or("the export ended without its totals")?;
    let bytes = match format {
        Format::Csv => Table::of(&rows, &totals)?.csv()?,
        Format::Xlsx => Table::of(&rows, &totals)?.xlsx()?,
        Format::Jsonl => lines.into_bytes(),
    };
    write_new(&out, &bytes)?;
    eprintln!(
        "{} disbursements ({} CNY paid) written to {}",
        totals.row_count,
        super::money(&totals.disbursed_total),
        out.display()
    );
    Ok(())
}

/// A cell: text, or an amount.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Text(String),
    Amount(Decimal),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Amount(amount) => format!("{amount:.2}"),
        }
    }
}

/// The rows of an export and its totals row, as cells.
struct Table {
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn of(
        rows: &[pb::DisbursementRow],
        totals: &pb::DisbursementTotals,
    ) -> Result<Table, BoxError> {
        let amount =
            |value: &Option<subsidy_proto::google::r#type::Money>| -> Result<Cell, BoxError> {
                let money = value.as_ref().ok_or("an amount is missing")?;
                Ok(Cell::Amount(
                    subsidy_common::Money::from_proto(money)?.decimal(),
                ))
            };
        let mut cells = Vec::with_capacity(rows.len() + 1);
        for row in rows {
            let kind = match row.kind() {
                pb::ApplicationKind::ComputeVoucherClaim => "算力券 compute voucher",
                pb::ApplicationKind::DataInfrastructureProposal => {
                    "数据基础设施 data infrastructure"
                }
                pb::ApplicationKind::Unspecified => "",
            };
            cells.push(vec![
                Cell::Text(kind.to_owned()),
                Cell::Text(row.application_id.clone()),
                Cell::Text(row.enterprise_uscc.clone()),
                Cell::Text(row.enterprise_name.clone()),
                Cell::Text(row.subject.clone()),
                Cell::Text(row.pool_id.clone()),
                Cell::Text(row.reservation_id.clone()),
                amount(&row.approved_amount)?,
                amount(&row.disbursed_amount)?,
                Cell::Text(row.payment_reference.clone()),
                Cell::Text(date_text(&row.payment_date)),
                Cell::Text(row.recorded_by.clone()),
                Cell::Text(time(&row.record_time)),
                Cell::Text(row.approver.clone()),
                Cell::Text(time(&row.approve_time)),
                Cell::Text(
                    row.ledger_sequences
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ]);
        }
        let mut sum = vec![Cell::Text(String::new()); HEADINGS.len()];
        sum[0] = Cell::Text("合计 Total".into());
        sum[1] = Cell::Text(format!("{} 笔 rows", totals.row_count));
        sum[AMOUNT_COLUMNS[0]] = amount(&totals.approved_total)?;
        sum[AMOUNT_COLUMNS[1]] = amount(&totals.disbursed_total)?;
        cells.push(sum);
        Ok(Table { rows: cells })
    }

    /// CSV, UTF-8 with a byte-order mark; amounts as exact decimal text (`12345.60`).
    fn csv(&self) -> Result<Vec<u8>, BoxError> {
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        {
            let mut writer = csv::Writer::from_writer(&mut bytes);
            writer.write_record(HEADINGS)?;
            for row in &self.rows {
                writer.write_record(row.iter().map(Cell::text))?;
            }
            writer.flush()?;
        }
        Ok(bytes)
    }

    /// An XLSX workbook of one sheet; amounts as numbers formatted `#,##0.00`, which a
    /// spreadsheet holds exactly to the fen for any amount below 10^13 CNY.
    fn xlsx(&self) -> Result<Vec<u8>, BoxError> {
        use rust_xlsxwriter::{Format as CellFormat, Workbook};
        let mut workbook = Workbook::new();
        let heading = CellFormat::new().set_bold();
        let amount = CellFormat::new().set_num_format("#,##0.00");
        let sheet = workbook.add_worksheet();
        sheet.set_name("拨付明细 Disbursements")?;
        for (column, text) in (0_u16..).zip(HEADINGS) {
            sheet.write_string_with_format(0, column, text, &heading)?;
            sheet.set_column_width(column, 18)?;
        }
        for (row, cells) in (1_u32..).zip(&self.rows) {
            for (column, cell) in (0_u16..).zip(cells) {
                match cell {
                    Cell::Text(text) => {
                        sheet.write_string(row, column, text)?;
                    }
                    Cell::Amount(value) => {
                        sheet.write_with_format(row, column, *value, &amount)?;
                    }
                }
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok(workbook.save_to_buffer()?)
    }
}

/// Writes `bytes` to `out`, which must not exist: under a temporary name beside it first, then
/// linked into place (a hard link fails when `out` exists), so that a reader never sees half a
/// file and nothing is replaced.
fn write_new(out: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    use std::io::Write;
    let partial = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| -> Result<(), BoxError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(&partial, out)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&partial);
    written
}
