//! `subsidyctl` commands of the application service: `enterprise register|show|list`,
//! `claim submit|show|list|approve|reject|withdraw|disburse`, `round open|close|score|
//! finalise|show` and `history`.
//!
//! Every mutating command sends a `request_id`. Unless `--request-id` is given it is derived
//! from the command and its arguments (or the claim file's content), so running the same
//! command twice returns the original answer instead of acting twice.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subsidy_common::config::ServiceKind;
use subsidy_common::{BoxError, Money};
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::google::r#type::Date;
use tonic::transport::Channel;

use super::{Binding, Ctx, Output, enums, money, print, time};

/// Largest claim file read, in bytes.
const CLAIM_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Largest attachment hashed by `claim submit`, in bytes (the contract's limit: 1 GiB).
const ATTACHMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Default number of rows listed.
const LIST_LIMIT_DEFAULT: i32 = 50;
/// Rows fetched per page when a command shows everything (the services' page maximum).
const PAGE_SIZE_MAX: i32 = 500;
/// History entries fetched per page (the service's page maximum).
const HISTORY_PAGE_SIZE_MAX: i32 = 1000;
/// Size of the read buffer when hashing an attachment, in bytes.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// Commands of the application service.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Register and look up applicants.
    #[command(subcommand)]
    Enterprise(EnterpriseCommand),
    /// Compute-voucher claims.
    #[command(subcommand)]
    Claim(ClaimCommand),
    /// Data-infrastructure selection rounds.
    #[command(subcommand)]
    Round(RoundCommand),
    /// Show the full history of a claim or proposal.
    History {
        /// A claim (`claim-…`) or proposal (`proposal-…`) identifier.
        id: String,
    },
}

/// Enterprise commands.
#[derive(Subcommand, Debug)]
pub enum EnterpriseCommand {
    /// Register an enterprise.
    Register {
        /// The Unified Social Credit Code.
        #[arg(long)]
        uscc: String,
        /// The registered name.
        #[arg(long)]
        name: String,
        /// The contact e-mail address.
        #[arg(long)]
        email: String,
        /// The contact telephone number.
        #[arg(long, default_value = "")]
        phone: String,
        /// The registration division code; by default characters 3 to 8 of the USCC.
        #[arg(long, default_value = "")]
        division: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one enterprise.
    Show {
        /// The Unified Social Credit Code.
        uscc: String,
    },
    /// List enterprises in USCC order.
    List {
        /// Only those whose division code starts with this (e.g. 37 for Shandong).
        #[arg(long, default_value = "")]
        division_prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: i32,
    },
}

/// Claim commands.
#[derive(Subcommand, Debug)]
pub enum ClaimCommand {
    /// Submit a claim described by a YAML file (see docs/examples/claim.yaml).
    Submit {
        /// The claim file.
        file: PathBuf,
        /// The idempotency key; by default the file's `request_id`, else derived from its
        /// content.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a claim with its decision, reservation and amounts.
    Show {
        /// The claim.
        id: String,
    },
    /// List claims, newest first.
    List {
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::ClaimState>())]
        state: Option<pb::ClaimState>,
        /// Only this enterprise (USCC).
        #[arg(long, default_value = "")]
        enterprise: String,
        /// At most this many.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: i32,
    },
    /// Approve a claim under review with the amount verified as invoiced and paid.
    Approve {
        /// The claim.
        id: String,
        /// The verified amount in CNY, e.g. 1500000.00.
        #[arg(long)]
        verified: String,
        /// The benefit rating; unrated when left out.
        #[arg(long, value_parser = enums::parser::<pb::BenefitRating>())]
        rating: Option<pb::BenefitRating>,
        /// The reviewer.
        #[arg(long)]
        reviewer: String,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Reject a claim that waits or is under review.
    Reject {
        /// The claim.
        id: String,
        /// Why.
        #[arg(long, value_parser = enums::parser::<pb::ClaimRejectionReason>())]
        reason: pb::ClaimRejectionReason,
        /// A note (required with `--reason other`).
        #[arg(long, default_value = "")]
        note: String,
        /// The reviewer.
        #[arg(long)]
        reviewer: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Withdraw a claim on the applicant's request.
    Withdraw {
        /// The claim.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Record the payment of an approved claim.
    Disburse {
        /// The claim.
        id: String,
        /// The payment's reference.
        #[arg(long)]
        reference: String,
        /// The payment date, YYYY-MM-DD (Asia/Shanghai).
        #[arg(long)]
        date: String,
        /// The amount paid in CNY (the approved amount).
        #[arg(long)]
        amount: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
}

/// Round commands.
#[derive(Subcommand, Debug)]
pub enum RoundCommand {
    /// Open a selection round for a pool.
    Open {
        /// The budget pool, e.g. data-infra-2025.
        #[arg(long, default_value = "data-infra-2025")]
        pool: String,
        /// The title.
        #[arg(long)]
        title: String,
        /// The submission deadline, RFC 3339 (e.g. 2025-09-30T18:00:00+08:00).
        #[arg(long)]
        deadline: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Close an open round for submissions before its deadline.
    Close {
        /// The round.
        id: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Record an expert's score of a proposal.
    Score {
        /// The proposal.
        proposal: String,
        /// The expert.
        #[arg(long)]
        expert: String,
        /// The USCC of the expert's organisation.
        #[arg(long)]
        organization: String,
        /// The score, 0 to 100.
        #[arg(long)]
        score: u32,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Finalise a closed round: rank, then award in rank order while the pool lasts.
    #[command(alias = "finalize")]
    Finalise {
        /// The round.
        id: String,
        /// The idempotency key; by default derived from the round.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a round and its proposals.
    Show {
        /// The round.
        id: String,
    },
}

/// A claim as written in a YAML file. Amounts are strings (`"2000000.00"`), never floats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimFile {
    /// The idempotency key; optional.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The buyer's USCC.
    pub enterprise_uscc: String,
    /// The contract.
    pub contract: ContractFile,
}

/// The contract part of a claim file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractFile {
    /// The contract number.
    pub contract_number: String,
    /// The seller's USCC.
    pub seller_uscc: String,
    /// The seller's name.
    pub seller_name: String,
    /// The signing date, YYYY-MM-DD.
    pub signing_date: String,
    /// The total in CNY, as a string.
    pub total: String,
    /// ai_accelerator, general_purpose_hosting or storage.
    pub compute_type: String,
    /// The data center's division code.
    pub data_center_division_code: String,
    /// The data center's name.
    pub data_center_name: String,
    /// The related-party declaration.
    pub related_party: RelatedPartyFile,
    /// The scenario and its expected benefit.
    pub scenario_description: String,
    /// The supporting documents.
    #[serde(default)]
    pub attachments: Vec<AttachmentFile>,
}

/// The related-party declaration of a claim file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedPartyFile {
    /// Whether buyer and seller are related.
    pub related: bool,
    /// The relationship, when related.
    #[serde(default)]
    pub relationship_description: String,
}

/// An attachment: a `path` to a local file (hashed by the CLI), or its digest given directly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentFile {
    /// A file to hash, relative to the claim file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The file name, when no path is given.
    #[serde(default)]
    pub file_name: Option<String>,
    /// The lower-case hex SHA-256, when no path is given.
    #[serde(default)]
    pub sha256_hex: Option<String>,
    /// The size in bytes, when no path is given.
    #[serde(default)]
    pub size_bytes: Option<i64>,
}

fn amount(text: &str, what: &str) -> Result<subsidy_proto::google::r#type::Money, BoxError> {
    let money: Money = text
        .parse()
        .map_err(|e| format!("{what} {text:?} is not an amount in CNY: {e}"))?;
    Ok(money.to_proto())
}

fn date(text: &str, what: &str) -> Result<Date, BoxError> {
    use chrono::Datelike;
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{what} {text:?} is not a date YYYY-MM-DD"))?;
    Ok(Date {
        year: date.year(),
        month: date.month() as i32,
        day: date.day() as i32,
    })
}

/// A request id derived from the command and its arguments.
fn derived_request_id(given: Option<String>, parts: &[&str]) -> String {
    given.unwrap_or_else(|| {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        format!("ctl-{}", &hex::encode(hasher.finalize())[..32])
    })
}

fn digest(path: &Path) -> Result<pb::AttachmentDigest, BoxError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read attachment {}: {e}", path.display()))?;
    let size = file.metadata()?.len();
    if size > ATTACHMENT_BYTES_MAX {
        return Err(format!("attachment {} is larger than 1 GiB", path.display()).into());
    }
    let mut reader = std::io::BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_BUFFER_BYTES];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(pb::AttachmentDigest {
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256_hex: hex::encode(hasher.finalize()),
        size_bytes: i64::try_from(size)?,
    })
}

/// Reads a claim file into a request (without the request id).
pub fn read_claim_file(path: &Path) -> Result<(pb::SubmitClaimRequest, String), BoxError> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > CLAIM_FILE_BYTES_MAX {
        return Err(format!("{} is larger than 1 MiB", path.display()).into());
    }
    let text = std::fs::read_to_string(path)?;
    let file: ClaimFile = serde_norway::from_str(&text)
        .map_err(|e| format!("{} is not a valid claim file: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let contract = file.contract;
    let compute_type =
        enums::parse::<pb::ComputeType>(&contract.compute_type).ok_or_else(|| {
            let known: Vec<String> = enums::values::<pb::ComputeType>()
                .into_iter()
                .map(|v| enums::arg_name(v).replace('-', "_"))
                .collect();
            format!(
                "compute_type {:?} is not one of {}",
                contract.compute_type,
                known.join(", ")
            )
        })?;
    let mut attachments = Vec::new();
    for attachment in contract.attachments {
        attachments.push(match attachment.path {
            Some(relative) => digest(&base.join(relative))?,
            None => pb::AttachmentDigest {
                file_name: attachment.file_name.unwrap_or_default(),
                sha256_hex: attachment.sha256_hex.unwrap_or_default(),
                size_bytes: attachment.size_bytes.unwrap_or_default(),
            },
        });
    }
    let request = pb::SubmitClaimRequest {
        request_id: String::new(),
        enterprise_uscc: file.enterprise_uscc,
        contract: Some(pb::ComputeContract {
            contract_number: contract.contract_number,
            seller_uscc: contract.seller_uscc,
            seller_name: contract.seller_name,
            signing_date: Some(date(&contract.signing_date, "signing_date")?),
            total: Some(amount(&contract.total, "total")?),
            compute_type: compute_type as i32,
            data_center_division_code: contract.data_center_division_code,
            data_center_name: contract.data_center_name,
            related_party: Some(pb::RelatedPartyDeclaration {
                related: contract.related_party.related,
                relationship_description: contract.related_party.relationship_description,
            }),
            scenario_description: contract.scenario_description,
            attachments,
        }),
    };
    let request_id = derived_request_id(file.request_id, &["claim submit", &text]);
    Ok((request, request_id))
}

fn state_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_owned()
}

/// Prints one record: `FIELD  VALUE` lines for people, one JSON object for scripts.
fn print_record(ctx: &Ctx, fields: &[(&str, String)]) {
    match ctx.output {
        Output::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_lowercase().replace(' ', "_"),
                        serde_json::Value::String(v.clone()),
                    )
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&object).expect("JSON of strings")
            );
        }
        Output::Table => {
            let width = fields
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            for (key, value) in fields {
                println!("{key:<width$}  {value}");
            }
        }
    }
}

fn claim_record(claim: &pb::Claim) -> Vec<(&'static str, String)> {
    let contract = claim.contract.clone().unwrap_or_default();
    let decision = claim.decision.clone().unwrap_or_default();
    let failed = decision
        .failed_reasons
        .iter()
        .map(|r| r.code.clone())
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        ("CLAIM", claim.claim_id.clone()),
        (
            "STATE",
            state_name(claim.state().as_str_name(), "CLAIM_STATE_"),
        ),
        ("ENTERPRISE", claim.enterprise_uscc.clone()),
        ("CONTRACT", contract.contract_number.clone()),
        ("SELLER", contract.seller_uscc.clone()),
        ("CONTRACT TOTAL", money(&contract.total)),
        ("ELIGIBLE", decision.eligible.to_string()),
        ("FAILED RULES", failed),
        (
            "POLICY",
            format!("{} {}", decision.policy_id, decision.policy_version)
                .trim()
                .to_owned(),
        ),
        ("DECISION", decision.decision_id.clone()),
        ("ENTITLEMENT", money(&decision.entitlement)),
        ("POOL", claim.pool_id.clone()),
        ("RESERVATION", claim.reservation_id.clone()),
        ("RESERVED", money(&claim.reserved_amount)),
        ("WAITLIST POSITION", claim.waitlist_position.to_string()),
        ("VERIFIED", money(&claim.verified_paid_amount)),
        ("APPROVED", money(&claim.approved_amount)),
        ("DISBURSED", money(&claim.disbursed_amount)),
        ("REVIEWER", claim.reviewer_id.clone()),
        ("SUBMITTED AT", time(&claim.submit_time)),
        ("UPDATED AT", time(&claim.update_time)),
        ("REVISION", claim.revision.to_string()),
    ]
}

fn claim_row(claim: &pb::Claim) -> Vec<String> {
    let contract = claim.contract.clone().unwrap_or_default();
    vec![
        claim.claim_id.clone(),
        state_name(claim.state().as_str_name(), "CLAIM_STATE_"),
        claim.enterprise_uscc.clone(),
        contract.contract_number,
        money(&contract.total),
        money(&claim.reserved_amount),
        money(&claim.approved_amount),
        if claim.waitlist_position > 0 {
            claim.waitlist_position.to_string()
        } else {
            String::new()
        },
        time(&claim.submit_time),
    ]
}

const CLAIM_HEADERS: [&str; 9] = [
    "CLAIM",
    "STATE",
    "ENTERPRISE",
    "CONTRACT",
    "TOTAL",
    "RESERVED",
    "APPROVED",
    "WAITLIST",
    "SUBMITTED",
];

fn show_claim(ctx: &Ctx, claim: Option<pb::Claim>) -> Result<(), BoxError> {
    let claim = claim.ok_or("the service answered without a claim")?;
    print_record(ctx, &claim_record(&claim));
    Ok(())
}

/// The application service's client.
type Client = ApplicationServiceClient<Channel>;

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    let mut client = ApplicationServiceClient::new(ctx.channel(ServiceKind::Application).await?);
    match command {
        Command::Enterprise(command) => enterprise(command, ctx, &mut client).await,
        Command::Claim(command) => claim(command, ctx, &mut client).await,
        Command::Round(command) => round(command, ctx, &mut client).await,
        Command::History { id } => history(ctx, &mut client, id).await,
    }
}

/// The state of a history entry, by its proto name without prefix, `-` when absent.
fn history_state(state: &Option<pb::ApplicationState>) -> String {
    match state.as_ref().and_then(|s| s.state) {
        Some(pb::application_state::State::ClaimState(v)) => pb::ClaimState::try_from(v)
            .map(|s| state_name(s.as_str_name(), "CLAIM_STATE_"))
            .unwrap_or_default(),
        Some(pb::application_state::State::ProposalState(v)) => pb::ProposalState::try_from(v)
            .map(|s| state_name(s.as_str_name(), "PROPOSAL_STATE_"))
            .unwrap_or_default(),
        None => "-".to_owned(),
    }
}

/// `history`: every entry of a claim's or proposal's history, oldest first.
async fn history(ctx: &Ctx, client: &mut Client, id: String) -> Result<(), BoxError> {
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_application_history(ctx.request(pb::ListApplicationHistoryRequest {
                application_id: id.clone(),
                page_size: HISTORY_PAGE_SIZE_MAX,
                page_token: token,
            }))
            .await?
            .into_inner();
        for entry in page.entries {
            rows.push(vec![
                entry.sequence.to_string(),
                time(&entry.create_time),
                history_state(&entry.from_state),
                history_state(&entry.to_state),
                entry.actor,
                entry.request_id,
                entry.reason,
            ]);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    print(
        ctx,
        &["SEQ", "TIME", "FROM", "TO", "ACTOR", "REQUEST", "REASON"],
        &rows,
    );
    Ok(())
}

async fn enterprise(
    command: EnterpriseCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
    match command {
        EnterpriseCommand::Register {
            uscc,
            name,
            email,
            phone,
            division,
            request_id,
        } => {
            let request = register_request(uscc, name, email, phone, division, request_id);
            enterprise_register(ctx, client, request).await
        }
        EnterpriseCommand::Show { uscc } => enterprise_show(ctx, client, uscc).await,
        EnterpriseCommand::List {
            division_prefix,
            limit,
        } => enterprise_list(ctx, client, division_prefix, limit).await,
    }
}

/// An enterprise as a record.
fn enterprise_record(e: &pb::Enterprise) -> Vec<(&'static str, String)> {
    vec![
        ("USCC", e.uscc.clone()),
        ("NAME", e.name.clone()),
        ("EMAIL", e.contact_email.clone()),
        ("PHONE", e.contact_phone.clone()),
        ("DIVISION", e.registration_division_code.clone()),
        ("REGISTERED AT", time(&e.create_time)),
    ]
}

/// The request of `enterprise register`.
fn register_request(
    uscc: String,
    name: String,
    email: String,
    phone: String,
    division: String,
    request_id: Option<String>,
) -> pb::RegisterEnterpriseRequest {
    let request_id = derived_request_id(
        request_id,
        &[
            "enterprise register",
            &uscc,
            &name,
            &email,
            &phone,
            &division,
        ],
    );
    pb::RegisterEnterpriseRequest {
        request_id,
        uscc,
        name,
        contact_email: email,
        contact_phone: phone,
        registration_division_code: division,
    }
}

/// `enterprise register`.
async fn enterprise_register(
    ctx: &Ctx,
    client: &mut Client,
    request: pb::RegisterEnterpriseRequest,
) -> Result<(), BoxError> {
    let enterprise = client
        .register_enterprise(ctx.request(request))
        .await?
        .into_inner()
        .enterprise
        .ok_or("the service answered without an enterprise")?;
    print_record(ctx, &enterprise_record(&enterprise));
    Ok(())
}

/// `enterprise show`.
async fn enterprise_show(ctx: &Ctx, client: &mut Client, uscc: String) -> Result<(), BoxError> {
    let enterprise = client
        .get_enterprise(ctx.request(pb::GetEnterpriseRequest { uscc }))
        .await?
        .into_inner()
        .enterprise
        .ok_or("the service answered without an enterprise")?;
    print_record(ctx, &enterprise_record(&enterprise));
    Ok(())
}

/// `enterprise list`.
async fn enterprise_list(
    ctx: &Ctx,
    client: &mut Client,
    division_prefix: String,
    limit: i32,
) -> Result<(), BoxError> {
    let page = client
        .list_enterprises(ctx.request(pb::ListEnterprisesRequest {
            registration_division_code_prefix: division_prefix,
            page_size: limit,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page
        .enterprises
        .iter()
        .map(|e| {
            vec![
                e.uscc.clone(),
                e.name.clone(),
                e.registration_division_code.clone(),
                e.contact_email.clone(),
            ]
        })
        .collect();
    print(ctx, &["USCC", "NAME", "DIVISION", "EMAIL"], &rows);
    Ok(())
}

async fn claim(command: ClaimCommand, ctx: &Ctx, client: &mut Client) -> Result<(), BoxError> {
    match command {
        ClaimCommand::Submit { file, request_id } => {
            claim_submit(ctx, client, &file, request_id).await
        }
        ClaimCommand::Show { id } => {
            let claim = client
                .get_claim(ctx.request(pb::GetClaimRequest { claim_id: id }))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        ClaimCommand::List {
            state,
            enterprise,
            limit,
        } => claim_list(ctx, client, state, enterprise, limit).await,
        ClaimCommand::Approve {
            id,
            verified,
            rating,
            reviewer,
            note,
            request_id,
        } => {
            let request = approve_request(id, &verified, rating, reviewer, note, request_id)?;
            let claim = client
                .approve_claim(ctx.request(request))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        ClaimCommand::Reject {
            id,
            reason,
            note,
            reviewer,
            request_id,
        } => claim_reject(ctx, client, id, reason, note, reviewer, request_id).await,
        ClaimCommand::Withdraw {
            id,
            reason,
            request_id,
        } => claim_withdraw(ctx, client, id, reason, request_id).await,
        ClaimCommand::Disburse {
            id,
            reference,
            date: payment_date,
            amount: paid,
            request_id,
        } => claim_disburse(ctx, client, id, reference, payment_date, paid, request_id).await,
    }
}

/// `claim submit`: the claim file, with `request_id` if given.
async fn claim_submit(
    ctx: &Ctx,
    client: &mut Client,
    file: &Path,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let (mut request, derived) = read_claim_file(file)?;
    request.request_id = request_id.unwrap_or(derived);
    let binding = Binding {
        enterprises: vec![request.enterprise_uscc.clone()],
        expert: None,
    };
    let claim = client
        .submit_claim(ctx.request_as(request, &binding))
        .await?
        .into_inner()
        .claim;
    show_claim(ctx, claim)
}

/// `claim list`: the first page only.
async fn claim_list(
    ctx: &Ctx,
    client: &mut Client,
    state: Option<pb::ClaimState>,
    enterprise: String,
    limit: i32,
) -> Result<(), BoxError> {
    let page = client
        .list_claims(ctx.request(pb::ListClaimsRequest {
            state: state.map(|s| s as i32).unwrap_or_default(),
            enterprise_uscc: enterprise,
            submit_start_time: None,
            submit_end_time: None,
            page_size: limit,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page.claims.iter().map(claim_row).collect();
    print(ctx, &CLAIM_HEADERS, &rows);
    Ok(())
}

/// The request of `claim approve`; `Err` when the verified amount is not an amount.
fn approve_request(
    id: String,
    verified: &str,
    rating: Option<pb::BenefitRating>,
    reviewer: String,
    note: String,
    request_id: Option<String>,
) -> Result<pb::ApproveClaimRequest, BoxError> {
    let rating_value = rating.unwrap_or(pb::BenefitRating::Unspecified);
    let request_id = derived_request_id(
        request_id,
        &[
            "claim approve",
            &id,
            verified,
            rating_value.as_str_name(),
            &reviewer,
            &note,
        ],
    );
    Ok(pb::ApproveClaimRequest {
        request_id,
        claim_id: id,
        verified_paid_amount: Some(amount(verified, "--verified")?),
        benefit_rating: rating_value as i32,
        reviewer_id: reviewer,
        note,
    })
}

/// `claim reject`.
async fn claim_reject(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    reason: pb::ClaimRejectionReason,
    note: String,
    reviewer: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = derived_request_id(
        request_id,
        &["claim reject", &id, reason.as_str_name(), &note, &reviewer],
    );
    let claim = client
        .reject_claim(ctx.request(pb::RejectClaimRequest {
            request_id,
            claim_id: id,
            reason: reason as i32,
            note,
            reviewer_id: reviewer,
        }))
        .await?
        .into_inner()
        .claim;
    show_claim(ctx, claim)
}

/// `claim withdraw`.
async fn claim_withdraw(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    reason: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = derived_request_id(request_id, &["claim withdraw", &id, &reason]);
    // A development token acts for the claim's enterprise (withdrawing is the applicant's).
    let enterprise = client
        .get_claim(ctx.request(pb::GetClaimRequest {
            claim_id: id.clone(),
        }))
        .await?
        .into_inner()
        .claim
        .map(|claim| claim.enterprise_uscc)
        .unwrap_or_default();
    let binding = Binding {
        enterprises: vec![enterprise],
        expert: None,
    };
    let claim = client
        .withdraw_claim(ctx.request_as(
            pb::WithdrawClaimRequest {
                request_id,
                claim_id: id,
                reason,
            },
            &binding,
        ))
        .await?
        .into_inner()
        .claim;
    show_claim(ctx, claim)
}

/// `claim disburse`: the payment of `paid` on `payment_date`.
async fn claim_disburse(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    reference: String,
    payment_date: String,
    paid: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = derived_request_id(
        request_id,
        &["claim disburse", &id, &reference, &payment_date, &paid],
    );
    let claim = client
        .record_claim_disbursement(ctx.request(pb::RecordClaimDisbursementRequest {
            request_id,
            claim_id: id,
            payment_reference: reference,
            payment_date: Some(date(&payment_date, "--date")?),
            amount: Some(amount(&paid, "--amount")?),
        }))
        .await?
        .into_inner()
        .claim;
    show_claim(ctx, claim)
}

fn round_record(round: &pb::SelectionRound) -> Vec<(&'static str, String)> {
    vec![
        ("ROUND", round.round_id.clone()),
        (
            "STATE",
            state_name(round.state().as_str_name(), "SELECTION_ROUND_STATE_"),
        ),
        ("POOL", round.pool_id.clone()),
        ("TITLE", round.title.clone()),
        ("DEADLINE", time(&round.submission_deadline_time)),
        ("PROPOSALS", round.proposal_count.to_string()),
        ("AWARDS", round.award_count.to_string()),
        ("AWARDED", money(&round.awarded_total)),
        ("RANKING", round.ranking_decision_id.clone()),
        ("FINALISED AT", time(&round.finalize_time)),
    ]
}

async fn round(command: RoundCommand, ctx: &Ctx, client: &mut Client) -> Result<(), BoxError> {
    match command {
        RoundCommand::Open {
            pool,
            title,
            deadline,
            request_id,
        } => round_open(ctx, client, pool, title, deadline, request_id).await,
        RoundCommand::Close { id, request_id } => round_close(ctx, client, id, request_id).await,
        RoundCommand::Score {
            proposal,
            expert,
            organization,
            score,
            comment,
            request_id,
        } => {
            let request = score_request(proposal, expert, organization, score, comment, request_id);
            round_score(ctx, client, request).await
        }
        RoundCommand::Finalise { id, request_id } => {
            round_finalise(ctx, client, id, request_id).await
        }
        RoundCommand::Show { id } => round_show(ctx, client, id).await,
    }
}

/// `round open`: a round for `pool` taking submissions until `deadline` (RFC 3339).
async fn round_open(
    ctx: &Ctx,
    client: &mut Client,
    pool: String,
    title: String,
    deadline: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let at = chrono::DateTime::parse_from_rfc3339(&deadline)
        .map_err(|_| format!("--deadline {deadline:?} is not an RFC 3339 time"))?;
    let request_id = derived_request_id(request_id, &["round open", &pool, &title, &deadline]);
    let round = client
        .create_selection_round(ctx.request(pb::CreateSelectionRoundRequest {
            request_id,
            pool_id: pool,
            title,
            submission_deadline_time: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
        }))
        .await?
        .into_inner()
        .round
        .ok_or("the service answered without a round")?;
    print_record(ctx, &round_record(&round));
    Ok(())
}

/// `round close`.
async fn round_close(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = derived_request_id(request_id, &["round close", &id]);
    let round = client
        .close_selection_round(ctx.request(pb::CloseSelectionRoundRequest {
            request_id,
            round_id: id,
        }))
        .await?
        .into_inner()
        .round
        .ok_or("the service answered without a round")?;
    print_record(ctx, &round_record(&round));
    Ok(())
}

/// The request of `round score`.
fn score_request(
    proposal: String,
    expert: String,
    organization: String,
    score: u32,
    comment: String,
    request_id: Option<String>,
) -> pb::ScoreProposalRequest {
    let request_id = derived_request_id(
        request_id,
        &[
            "round score",
            &proposal,
            &expert,
            &organization,
            &score.to_string(),
            &comment,
        ],
    );
    pb::ScoreProposalRequest {
        request_id,
        proposal_id: proposal,
        expert_id: expert,
        expert_organization_uscc: organization,
        score,
        comment,
    }
}

/// `round score`: records the score and shows the proposal's totals.
async fn round_score(
    ctx: &Ctx,
    client: &mut Client,
    request: pb::ScoreProposalRequest,
) -> Result<(), BoxError> {
    let binding = Binding {
        enterprises: Vec::new(),
        expert: Some(request.expert_id.clone()),
    };
    let proposal = client
        .score_proposal(ctx.request_as(request, &binding))
        .await?
        .into_inner()
        .proposal
        .ok_or("the service answered without a proposal")?;
    print_record(
        ctx,
        &[
            ("PROPOSAL", proposal.proposal_id.clone()),
            ("SCORES", proposal.score_count.to_string()),
            ("SCORE TOTAL", proposal.score_total.to_string()),
        ],
    );
    Ok(())
}

/// `round finalise`: the awards in rank order, and how many were not selected.
async fn round_finalise(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let request_id = derived_request_id(request_id, &["round finalise", &id]);
    let result = client
        .finalize_selection_round(ctx.request(pb::FinalizeSelectionRoundRequest {
            request_id,
            round_id: id,
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = result
        .awards
        .iter()
        .map(|a| {
            vec![
                a.rank.to_string(),
                a.proposal_id.clone(),
                a.applicant_uscc.clone(),
                format!("{}/{}", a.score_total, a.score_count),
                money(&a.requested_amount),
                money(&a.awarded_amount),
                if a.partially_funded { "yes" } else { "" }.to_owned(),
                a.reservation_id.clone(),
            ]
        })
        .collect();
    print(
        ctx,
        &[
            "RANK",
            "PROPOSAL",
            "APPLICANT",
            "SCORE",
            "REQUESTED",
            "AWARDED",
            "PARTIAL",
            "RESERVATION",
        ],
        &rows,
    );
    if ctx.output == Output::Table {
        println!("not selected: {}", result.not_selected_count);
    }
    Ok(())
}

/// The columns of a round's proposals in `round show`: table headers, and the JSON keys in
/// lower case.
const PROPOSAL_COLUMNS: [&str; 8] = [
    "PROPOSAL",
    "STATE",
    "APPLICANT",
    "TITLE",
    "REQUESTED",
    "SCORE",
    "RANK",
    "AWARDED",
];

/// `round show`: the round, then every one of its proposals.
async fn round_show(ctx: &Ctx, client: &mut Client, id: String) -> Result<(), BoxError> {
    let round = client
        .get_selection_round(ctx.request(pb::GetSelectionRoundRequest {
            round_id: id.clone(),
        }))
        .await?
        .into_inner()
        .round
        .ok_or("the service answered without a round")?;
    let rows = proposal_rows(ctx, client, &id).await?;
    match ctx.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&round_json(&round, &rows)).expect("JSON of strings")
        ),
        Output::Table => {
            print_record(ctx, &round_record(&round));
            println!();
            print(ctx, &PROPOSAL_COLUMNS, &rows);
        }
    }
    Ok(())
}

/// Every proposal of a round as a row of [`PROPOSAL_COLUMNS`], page by page.
async fn proposal_rows(
    ctx: &Ctx,
    client: &mut Client,
    round_id: &str,
) -> Result<Vec<Vec<String>>, BoxError> {
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_proposals(ctx.request(pb::ListProposalsRequest {
                round_id: round_id.to_owned(),
                state: 0,
                applicant_uscc: String::new(),
                page_size: PAGE_SIZE_MAX,
                page_token: token,
            }))
            .await?
            .into_inner();
        for p in page.proposals {
            rows.push(vec![
                p.proposal_id.clone(),
                state_name(p.state().as_str_name(), "PROPOSAL_STATE_"),
                p.applicant_uscc.clone(),
                p.title.clone(),
                money(&p.requested_amount),
                format!("{}/{}", p.score_total, p.score_count),
                if p.rank > 0 {
                    p.rank.to_string()
                } else {
                    String::new()
                },
                money(&p.awarded_amount),
            ]);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(rows)
}

/// A round and its proposal rows as one JSON object, its proposals under `proposals`.
fn round_json(
    round: &pb::SelectionRound,
    rows: &[Vec<String>],
) -> serde_json::Map<String, serde_json::Value> {
    let proposals: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::Value::Object(
                PROPOSAL_COLUMNS
                    .iter()
                    .zip(row)
                    .map(|(k, v)| (k.to_lowercase(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
        })
        .collect();
    let mut object: serde_json::Map<String, serde_json::Value> = round_record(round)
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_lowercase().replace(' ', "_"),
                serde_json::Value::String(v),
            )
        })
        .collect();
    object.insert("proposals".into(), serde_json::Value::Array(proposals));
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_claim_file_reads_into_a_request_with_exact_amounts() {
        // Proves docs/examples/claim.yaml parses, with the total exact to the fen.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/claim.yaml");
        let (request, request_id) = read_claim_file(&path).unwrap();
        let contract = request.contract.unwrap();
        assert_eq!(
            Money::from_proto(contract.total.as_ref().unwrap())
                .unwrap()
                .fen(),
            200_000_000
        );
        assert_eq!(contract.compute_type(), pb::ComputeType::AiAccelerator);
        assert_eq!(contract.attachments.len(), 2);
        assert!(request_id.starts_with("ctl-"), "{request_id}");
        let (_, again) = read_claim_file(&path).unwrap();
        assert_eq!(request_id, again, "the same file gives the same request id");
    }

    #[test]
    fn a_float_like_amount_finer_than_a_fen_is_refused() {
        // Proves the CLI never rounds an amount silently.
        assert!(amount("1.005", "total").is_err());
        assert_eq!(amount("1,000.10", "total").unwrap().units, 1000);
    }
}
