//! `subsidyctl export disbursements`: the finance office's export of the payments of a period,
//! one row per disbursement and a totals row, as CSV (UTF-8 with a byte-order mark, so that
//! spreadsheet software opens the Chinese names correctly; amounts as exact decimal text) or as
//! an XLSX workbook (amounts as numbers in a `#,##0.00` format, so that they can be summed), or
//! as the service's messages in JSON Lines.
//! The file is written under a temporary name beside the target and linked into place when
//! complete; an existing file is never replaced.
//!
//! Text that people typed (enterprise names, contract numbers and project titles, payment
//! references, who recorded and who approved, the ids) could begin with `=`, `+`, `-`, `@`, a
//! tab, a carriage return or NUL, which spreadsheet software reads as the start of a formula
//! ("CSV injection", OWASP): such a cell is written with a leading `'` in CSV (the spreadsheets'
//! "this is text" marker), and in XLSX as a string cell (never a formula) with Excel's quote
//! prefix set, its text unchanged. Amounts, dates and the labels this command writes are never
//! changed.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use rust_decimal::Decimal;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;

use super::{Ctx, Program, date_text, proto_date, time};

mod received;

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
/// The first characters that make spreadsheet software read a cell as a formula (OWASP, "CSV
/// Injection": `=`, `+`, `-`, `@`, tab and carriage return; ASVS 5.0 1.2.10 adds NUL).
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\0'];
/// What is put before such text in CSV so that it is shown as text.
const TEXT_PREFIX: char = '\'';

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
    let stream = client
        .export_disbursements(ctx.request(pb::ExportDisbursementsRequest {
            program: program as i32,
            from_date: Some(proto_date(from)),
            to_date: Some(proto_date(to)),
        }))
        .await?
        .into_inner();
    // Nothing is written unless the whole export arrived (its totals last, counting its rows).
    let received::Received {
        rows,
        totals,
        lines,
    } = received::collect(stream).await?;
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

/// A cell: text from the service (typed by someone, so it may look like a formula), a label
/// this command formatted (kind, dates, times, sequence numbers, totals), or an amount.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Text(String),
    Label(String),
    Amount(Decimal),
}

impl Cell {
    /// The cell as CSV text: text that a spreadsheet would read as a formula gets a leading `'`.
    fn text(&self) -> String {
        match self {
            Cell::Text(text) if looks_like_formula(text) => format!("{TEXT_PREFIX}{text}"),
            Cell::Text(text) | Cell::Label(text) => text.clone(),
            Cell::Amount(amount) => format!("{amount:.2}"),
        }
    }
}

/// Whether spreadsheet software would read `text` as the start of a formula.
fn looks_like_formula(text: &str) -> bool {
    text.starts_with(FORMULA_STARTS)
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
                Cell::Label(kind.to_owned()),
                Cell::Text(row.application_id.clone()),
                Cell::Text(row.enterprise_uscc.clone()),
                Cell::Text(row.enterprise_name.clone()),
                Cell::Text(row.subject.clone()),
                Cell::Text(row.pool_id.clone()),
                Cell::Text(row.reservation_id.clone()),
                amount(&row.approved_amount)?,
                amount(&row.disbursed_amount)?,
                Cell::Text(row.payment_reference.clone()),
                Cell::Label(date_text(&row.payment_date)),
                Cell::Text(row.recorded_by.clone()),
                Cell::Label(time(&row.record_time)),
                Cell::Text(row.approver.clone()),
                Cell::Label(time(&row.approve_time)),
                Cell::Label(
                    row.ledger_sequences
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ]);
        }
        let mut sum = vec![Cell::Label(String::new()); HEADINGS.len()];
        sum[0] = Cell::Label("合计 Total".into());
        sum[1] = Cell::Label(format!("{} 笔 rows", totals.row_count));
        sum[AMOUNT_COLUMNS[0]] = amount(&totals.approved_total)?;
        sum[AMOUNT_COLUMNS[1]] = amount(&totals.disbursed_total)?;
        cells.push(sum);
        Ok(Table { rows: cells })
    }

    /// CSV, UTF-8 with a byte-order mark; amounts as exact decimal text (`12345.60`); text
    /// that would be read as a formula with a leading `'`.
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
    /// spreadsheet holds exactly to the fen for any amount below 10^13 CNY. Text is always a
    /// string cell (`write_string`, never a formula); text that looks like a formula also gets
    /// Excel's quote prefix, so that editing the cell does not turn it into one.
    fn xlsx(&self) -> Result<Vec<u8>, BoxError> {
        use rust_xlsxwriter::{Format as CellFormat, Workbook};
        let mut workbook = Workbook::new();
        let heading = CellFormat::new().set_bold();
        let amount = CellFormat::new().set_num_format("#,##0.00");
        let literal = CellFormat::new().set_quote_prefix();
        let sheet = workbook.add_worksheet();
        sheet.set_name("拨付明细 Disbursements")?;
        for (column, text) in (0_u16..).zip(HEADINGS) {
            sheet.write_string_with_format(0, column, text, &heading)?;
            sheet.set_column_width(column, 18)?;
        }
        for (row, cells) in (1_u32..).zip(&self.rows) {
            for (column, cell) in (0_u16..).zip(cells) {
                match cell {
                    Cell::Text(text) if looks_like_formula(text) => {
                        sheet.write_string_with_format(row, column, text, &literal)?;
                    }
                    Cell::Text(text) | Cell::Label(text) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use subsidy_common::Money;

    fn cny(fen: i64) -> Option<subsidy_proto::google::r#type::Money> {
        Some(Money::from_fen(fen).unwrap().to_proto())
    }

    /// A row whose typed text tries every formula start, and its totals.
    fn hostile() -> (Vec<pb::DisbursementRow>, pb::DisbursementTotals) {
        let row = pb::DisbursementRow {
            kind: pb::ApplicationKind::ComputeVoucherClaim as i32,
            application_id: "\0=1+1".into(),
            enterprise_uscc: "91370100MA3C00001H".into(),
            enterprise_name: "=HYPERLINK(\"http://evil.example\",\"Jinan\")".into(),
            subject: "+1+cmd|' /C calc'!A0".into(),
            pool_id: "compute-voucher-2025".into(),
            reservation_id: "@SUM(A1:A9)".into(),
            approved_amount: cny(7_500_000),
            disbursed_amount: cny(7_500_000),
            payment_reference: "-2+3".into(),
            payment_date: None,
            recorded_by: "\tfinance".into(),
            record_time: None,
            approver: "\rreviewer".into(),
            approve_time: None,
            ledger_sequences: vec![2, 3],
        };
        let totals = pb::DisbursementTotals {
            row_count: 1,
            approved_total: cny(7_500_000),
            disbursed_total: cny(7_500_000),
        };
        (vec![row], totals)
    }

    #[test]
    fn text_that_a_spreadsheet_would_read_as_a_formula_is_written_as_text() {
        // Proves: in CSV every typed text beginning with =, +, -, @, tab or carriage return
        // gets a leading ', while amounts, dates ("-" when absent) and our labels are written
        // as they are, and text with such a character further in is left alone; in XLSX the
        // same text is a string cell with its text unchanged and no cell holds a formula.
        let (mut rows, totals) = hostile();
        let mut plain = rows[0].clone();
        plain.enterprise_name = "Jinan A=B+C Co., Ltd.".into();
        plain.subject = "HT-2025-001".into();
        plain.reservation_id = "res-1".into();
        plain.payment_reference = "PAY 1".into();
        plain.recorded_by = "finance".into();
        plain.approver = "reviewer".into();
        rows.push(plain);
        let table = Table::of(&rows, &totals).unwrap();

        let csv = String::from_utf8(table.csv().unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let hostile = &records[0];
        assert_eq!(&hostile[1], "'\0=1+1");
        assert_eq!(
            &hostile[3],
            "'=HYPERLINK(\"http://evil.example\",\"Jinan\")"
        );
        assert_eq!(&hostile[4], "'+1+cmd|' /C calc'!A0");
        assert_eq!(&hostile[6], "'@SUM(A1:A9)");
        assert_eq!(&hostile[7], "75000.00");
        assert_eq!(&hostile[8], "75000.00");
        assert_eq!(&hostile[9], "'-2+3");
        assert_eq!(&hostile[10], "-", "an absent date is our own label");
        assert_eq!(&hostile[11], "'\tfinance");
        assert_eq!(&hostile[13], "'\rreviewer");
        assert_eq!(&hostile[15], "2 3");
        let plain = &records[1];
        assert_eq!(&plain[3], "Jinan A=B+C Co., Ltd.");
        assert_eq!(&plain[4], "HT-2025-001");
        assert_eq!(&plain[13], "reviewer");
        assert_eq!(&records[2][0], "合计 Total");
        assert_eq!(&records[2][7], "75000.00");

        use calamine::{Data, Reader, Xlsx};
        let mut workbook = Xlsx::new(std::io::Cursor::new(table.xlsx().unwrap())).unwrap();
        let sheet = workbook.worksheet_range("拨付明细 Disbursements").unwrap();
        let cell = |row: u32, column: u32| sheet.get_value((row, column)).unwrap().clone();
        assert_eq!(
            cell(1, 3),
            Data::String("=HYPERLINK(\"http://evil.example\",\"Jinan\")".into())
        );
        assert_eq!(cell(1, 9), Data::String("-2+3".into()));
        assert_eq!(cell(1, 13), Data::String("\rreviewer".into()));
        assert_eq!(cell(1, 7), Data::Float(75000.0));
        let formulas = workbook
            .worksheet_formula("拨付明细 Disbursements")
            .unwrap();
        assert!(
            formulas
                .used_cells()
                .all(|(_, _, formula)| formula.is_empty()),
            "no cell holds a formula"
        );
    }
}
