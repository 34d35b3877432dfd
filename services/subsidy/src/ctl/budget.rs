//! `subsidyctl` commands of the budget service: `pools`, `reservations`, `ledger`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_proto::budget as pb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use tonic::transport::Channel;

use super::{Ctx, json, money, print, time};

/// Commands of the budget service.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the pools with their utilisation.
    Pools,
    /// List the reservations of a pool, newest first.
    Reservations {
        /// The pool.
        #[arg(long, default_value = "compute-voucher-2025")]
        pool: String,
        /// Only this beneficiary (USCC).
        #[arg(long, default_value = "")]
        beneficiary: String,
        /// Only this state.
        #[arg(long, value_parser = super::enums::parser::<pb::ReservationState>())]
        state: Option<pb::ReservationState>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Inspect the append-only, hash-chained ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

/// Ledger commands.
#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Recompute every pool's hash chain and report the first broken entry: on the running
    /// service, or, given an export (`ledger verify FILE`, or `--file FILE`), offline (no
    /// service, no database: every hash, every chain, the balances replayed entry by entry,
    /// and every signed checkpoint checked with `--public-key` and against the chain at its
    /// sequence; see docs/LEDGER.md).
    Verify {
        /// An export written by `ledger export`, to verify offline.
        #[arg(value_name = "FILE", group = "export")]
        path: Option<PathBuf>,
        /// The same as the FILE argument.
        #[arg(long, group = "export")]
        file: Option<PathBuf>,
        /// The budget's checkpoint public key (PEM, Ed25519 or SM2); repeat for rotated keys.
        /// Required when the export holds checkpoints.
        #[arg(long = "public-key", requires = "export")]
        public_keys: Vec<PathBuf>,
        /// A checkpoint held outside this system (the JSON body of a `ledger.checkpoint`
        /// webhook, its payload, or a line of an export) that the export's chain must match;
        /// repeatable.
        #[arg(long = "checkpoint", requires = "public_keys")]
        checkpoints: Vec<PathBuf>,
    },
    /// Sign the head of a pool's ledger now (admin): a checkpoint, also published as a
    /// `ledger.checkpoint` event. A head signed already is not signed again.
    Checkpoint {
        /// The pool.
        #[arg(long)]
        pool: String,
        /// Idempotency key; pass the same one to retry safely. Generated when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Write every ledger entry (of one pool, or all) to a file, one JSON object per line in
    /// write order, each pool's signed checkpoints after its entries, for `ledger verify --file`
    /// and for auditors' own tools.
    Export {
        /// Only this pool.
        #[arg(long, default_value = "")]
        pool: String,
        /// The file to write (never replaced: refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// List entries in write order.
    List {
        /// Only this pool.
        #[arg(long, default_value = "")]
        pool: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
}

fn percent(
    part: &Option<subsidy_proto::google::r#type::Money>,
    total: &Option<subsidy_proto::google::r#type::Money>,
) -> String {
    let fen = |m: &Option<subsidy_proto::google::r#type::Money>| {
        m.as_ref()
            .and_then(|m| subsidy_common::Money::from_proto(m).ok())
            .map(|m| m.fen())
            .unwrap_or(0)
    };
    let (part, total) = (fen(part), fen(total));
    if total == 0 {
        return "-".into();
    }
    // Integer arithmetic in basis points: no floats near money.
    let bp = part.saturating_mul(10_000) / total;
    format!("{}.{:02}%", bp / 100, bp % 100)
}

/// Entries fetched per page by `ledger export` (the service's maximum).
const LEDGER_PAGE_SIZE_MAX: i32 = 1000;

/// The budget service's client.
type Client = BudgetServiceClient<Channel>;

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    if let Command::Ledger(LedgerCommand::Verify {
        path,
        file,
        public_keys,
        checkpoints,
    }) = &command
        && let Some(file) = path.as_ref().or(file.as_ref())
    {
        return super::ledger_file::verify(ctx, file, public_keys, checkpoints);
    }
    let mut client = BudgetServiceClient::new(ctx.channel(ServiceKind::Budget).await?);
    match command {
        Command::Pools => pools(ctx, &mut client).await,
        Command::Reservations {
            pool,
            beneficiary,
            state,
            limit,
        } => reservations(ctx, &mut client, pool, beneficiary, state, limit).await,
        Command::Ledger(LedgerCommand::Verify {
            path: None,
            file: None,
            ..
        }) => ledger_verify(ctx, &mut client).await,
        Command::Ledger(LedgerCommand::Verify { .. }) => {
            unreachable!("offline verification is handled before connecting")
        }
        Command::Ledger(LedgerCommand::Checkpoint { pool, request_id }) => {
            ledger_checkpoint(ctx, &mut client, pool, request_id).await
        }
        Command::Ledger(LedgerCommand::Export { pool, out }) => {
            ledger_export(&mut client, ctx, pool, &out).await
        }
        Command::Ledger(LedgerCommand::List { pool, limit }) => {
            ledger_list(ctx, &mut client, pool, limit).await
        }
    }
}

/// A pool as a row of `pools`.
fn pool_row(pool: &pb::Pool) -> Vec<String> {
    let used = pool
        .held
        .as_ref()
        .zip(pool.committed.as_ref())
        .and_then(|(h, c)| {
            let sum = subsidy_common::Money::from_proto(h)
                .ok()?
                .checked_add(subsidy_common::Money::from_proto(c).ok()?)?;
            Some(sum.to_proto())
        });
    vec![
        pool.pool_id.clone(),
        money(&pool.total),
        money(&pool.held),
        money(&pool.committed),
        money(&pool.available),
        percent(&used, &pool.total),
        money(&pool.beneficiary_cap),
        money(&pool.reservation_cap),
        pool.reservation_count.to_string(),
    ]
}

/// Every pool, page by page.
async fn all_pools(ctx: &Ctx, client: &mut Client) -> Result<Vec<pb::Pool>, BoxError> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pools(ctx.request(pb::ListPoolsRequest {
                page_size: 500,
                page_token: token,
            }))
            .await?
            .into_inner();
        all.extend(page.pools);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(all)
}

/// `pools`: every pool, page by page.
async fn pools(ctx: &Ctx, client: &mut Client) -> Result<(), BoxError> {
    let all = all_pools(ctx, client).await?;
    print(
        ctx,
        &[
            "POOL",
            "TOTAL",
            "HELD",
            "COMMITTED",
            "AVAILABLE",
            "UTILISATION",
            "BENEFICIARY CAP",
            "RESERVATION CAP",
            "RESERVATIONS",
        ],
        &all.iter().map(pool_row).collect::<Vec<_>>(),
        || json::messages(&all),
    );
    Ok(())
}

/// `reservations`: the first page of a pool's reservations, newest first.
async fn reservations(
    ctx: &Ctx,
    client: &mut Client,
    pool: String,
    beneficiary: String,
    state: Option<pb::ReservationState>,
    limit: i32,
) -> Result<(), BoxError> {
    let state = state.unwrap_or(pb::ReservationState::Unspecified);
    let page = client
        .list_reservations(ctx.request(pb::ListReservationsRequest {
            pool_id: pool,
            beneficiary_uscc: beneficiary,
            reference: String::new(),
            state: state as i32,
            page_size: limit,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page
        .reservations
        .iter()
        .map(|r| {
            vec![
                r.reservation_id.clone(),
                r.beneficiary_uscc.clone(),
                r.reference.clone(),
                r.state()
                    .as_str_name()
                    .trim_start_matches("RESERVATION_STATE_")
                    .to_owned(),
                money(&r.held_amount),
                money(&r.committed_amount),
                time(&r.create_time),
                time(&r.expire_time),
            ]
        })
        .collect();
    print(
        ctx,
        &[
            "RESERVATION",
            "BENEFICIARY",
            "REFERENCE",
            "STATE",
            "HELD",
            "COMMITTED",
            "CREATED",
            "EXPIRES",
        ],
        &rows,
        || json::messages(&page.reservations),
    );
    Ok(())
}

/// `ledger verify`: fails when a hash chain is broken.
async fn ledger_verify(ctx: &Ctx, client: &mut Client) -> Result<(), BoxError> {
    let verdict = client
        .verify_ledger(ctx.request(pb::VerifyLedgerRequest {}))
        .await?
        .into_inner();
    let status = if verdict.intact {
        "INTACT".to_owned()
    } else {
        "BROKEN".to_owned()
    };
    print(
        ctx,
        &[
            "STATUS",
            "ENTRIES CHECKED",
            "FIRST BROKEN POOL",
            "FIRST BROKEN SEQUENCE",
            "PROBLEM",
        ],
        &[vec![
            status,
            verdict.entries_checked.to_string(),
            verdict.first_broken_pool_id.clone(),
            if verdict.intact {
                String::new()
            } else {
                verdict.first_broken_sequence.to_string()
            },
            verdict.problem.clone(),
        ]],
        || json::message(&verdict),
    );
    if !verdict.intact {
        return Err("the ledger is broken".into());
    }
    Ok(())
}

/// `ledger checkpoint`: signs the pool's head and prints the checkpoint.
async fn ledger_checkpoint(
    ctx: &Ctx,
    client: &mut Client,
    pool: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = request_id.unwrap_or_else(|| {
        format!(
            "ctl-checkpoint-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        )
    });
    let answer = client
        .create_checkpoint(ctx.request(pb::CreateCheckpointRequest {
            request_id,
            pool_id: pool,
        }))
        .await?
        .into_inner();
    let checkpoint = answer.checkpoint.clone().unwrap_or_default();
    print(
        ctx,
        &[
            "POOL",
            "SEQ",
            "HEAD HASH",
            "HELD",
            "COMMITTED",
            "KEY",
            "NEW",
        ],
        &[vec![
            checkpoint.pool_id.clone(),
            checkpoint.sequence.to_string(),
            checkpoint.head_hash.clone(),
            money(&checkpoint.held),
            money(&checkpoint.committed),
            checkpoint.key_id.clone(),
            answer.created.to_string(),
        ]],
        || json::message(&answer),
    );
    Ok(())
}

/// Every checkpoint of `pool_id`, in the order they were made.
async fn pool_checkpoints(
    ctx: &Ctx,
    client: &mut Client,
    pool_id: &str,
) -> Result<Vec<pb::LedgerCheckpoint>, BoxError> {
    let mut checkpoints = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_checkpoints(ctx.request(pb::ListCheckpointsRequest {
                pool_id: pool_id.to_owned(),
                page_size: LEDGER_PAGE_SIZE_MAX,
                page_token: token,
            }))
            .await?
            .into_inner();
        checkpoints.extend(page.checkpoints);
        token = page.next_page_token;
        if token.is_empty() {
            return Ok(checkpoints);
        }
    }
}

/// `ledger export`: every entry of `pool` (of every pool when empty), pool by pool in chain
/// order, one proto3 JSON object per line (amounts as decimal strings), each pool's signed
/// checkpoints after its entries. Each pool is paged by its own sequence, so entries of other
/// pools committing meanwhile cannot be skipped; its checkpoints are read before its entries,
/// so every checkpoint written signs an entry written. The file is written under a temporary
/// name beside `out` and renamed into place when complete.
async fn ledger_export(
    client: &mut Client,
    ctx: &Ctx,
    pool: String,
    out: &Path,
) -> Result<(), BoxError> {
    use std::io::Write;
    let pools = if pool.is_empty() {
        all_pools(ctx, client)
            .await?
            .into_iter()
            .map(|pool| pool.pool_id)
            .collect()
    } else {
        vec![pool]
    };
    let partial = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let written: Result<(usize, usize), BoxError> = async {
        let mut writer = std::io::BufWriter::new(file);
        let mut count = 0usize;
        let mut signed = 0usize;
        for pool_id in pools {
            let checkpoints = pool_checkpoints(ctx, client, &pool_id).await?;
            let mut token = String::new();
            loop {
                let page = client
                    .list_ledger_entries(ctx.request(pb::ListLedgerEntriesRequest {
                        pool_id: pool_id.clone(),
                        page_size: LEDGER_PAGE_SIZE_MAX,
                        page_token: token,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                for entry in &page.entries {
                    writeln!(writer, "{}", json::message(entry))?;
                    count += 1;
                }
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            for checkpoint in &checkpoints {
                writeln!(writer, "{}", json::message(checkpoint))?;
            }
            signed += checkpoints.len();
        }
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        // Never replaces an existing file: a hard link fails when `out` exists.
        std::fs::hard_link(&partial, out)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        Ok((count, signed))
    }
    .await;
    let _ = std::fs::remove_file(&partial);
    let (count, signed) = written?;
    eprintln!(
        "{count} entries and {signed} checkpoints written to {}",
        out.display()
    );
    Ok(())
}

/// `ledger list`: the first page of entries in write order.
async fn ledger_list(
    ctx: &Ctx,
    client: &mut Client,
    pool: String,
    limit: i32,
) -> Result<(), BoxError> {
    let page = client
        .list_ledger_entries(ctx.request(pb::ListLedgerEntriesRequest {
            pool_id: pool,
            page_size: limit,
            page_token: String::new(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                e.pool_id.clone(),
                e.sequence.to_string(),
                e.kind()
                    .as_str_name()
                    .trim_start_matches("LEDGER_ENTRY_KIND_")
                    .to_owned(),
                e.reservation_id.clone(),
                money(&e.amount),
                money(&e.held_after),
                money(&e.committed_after),
                e.actor.clone(),
                time(&e.create_time),
                e.entry_hash[..12.min(e.entry_hash.len())].to_owned(),
            ]
        })
        .collect();
    print(
        ctx,
        &[
            "POOL",
            "SEQ",
            "KIND",
            "RESERVATION",
            "AMOUNT",
            "HELD AFTER",
            "COMMITTED AFTER",
            "ACTOR",
            "TIME",
            "HASH",
        ],
        &rows,
        || json::messages(&page.entries),
    );
    Ok(())
}
