//! `subsidyctl` commands of the application service: `enterprise register|show|list`,
//! `claim submit|show|explain|list|request-information|provide-information|reopen|invoice|
//! approve|reject|withdraw|disburse`, `round open|close|score|finalise|show|list`, `proposal
//! submit|withdraw|show|list|disburse`, `document upload|download|list`, `notice list`,
//! `objection file|decide|list`, `history` and `stats`.
//!
//! Every mutating command sends a `request_id`. Unless `--request-id` is given it is derived
//! from the command and its arguments (or the claim file's content), so running the same
//! command twice returns the original answer instead of acting twice.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use sha2::{Digest, Sha256};
use subsidy_common::config::ServiceKind;
use subsidy_common::{BoxError, Money};
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::google::r#type::Date;
use tonic::transport::Channel;

use super::{Binding, Ctx, enums, json, money, print, print_record, time};

mod claim_file;
mod documents;
mod explain;
mod proposals;
mod publicity;
mod rounds;
mod stats;

pub use claim_file::parse_claim_file;
use claim_file::read_claim_file;
use proposals::{ProposalCommand, proposal};
use rounds::round;

/// Default number of rows listed.
const LIST_LIMIT_DEFAULT: i32 = 50;
/// Rows fetched per page when a command shows everything (the services' page maximum).
const PAGE_SIZE_MAX: i32 = 500;
/// History entries fetched per page (the service's page maximum).
const HISTORY_PAGE_SIZE_MAX: i32 = 1000;

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
    /// Data-infrastructure proposals.
    #[command(subcommand)]
    Proposal(ProposalCommand),
    /// Upload, download and list the documents of claims and proposals.
    #[command(subcommand)]
    Document(documents::DocumentCommand),
    /// The public notices (公示) of approved claims and awarded proposals.
    #[command(subcommand)]
    Notice(publicity::NoticeCommand),
    /// Objections (异议) to awards during their publicity period: file, decide, list.
    #[command(subcommand)]
    Objection(publicity::ObjectionCommand),
    /// Show the full history of a claim or proposal.
    History {
        /// A claim (`claim-…`) or proposal (`proposal-…`) identifier.
        id: String,
    },
    /// Show a program's statistics over a period of submission dates: applications by
    /// state, amounts, pool burn rates, the compute-voucher multiplier, time to decision.
    Stats(stats::StatsArgs),
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
    /// Show a claim with its decision, reservation and amounts, and its public notice (公示)
    /// once approved.
    Show {
        /// The claim.
        id: String,
    },
    /// Explain why a claim got its amount: each check, the rate, the enterprise cap in force
    /// and what was left of it, the rounding down to the fen (from the rules service's stored
    /// decision; needs a role that may read it: auditor, reviewer, admin, or the applicant).
    Explain {
        /// The claim.
        id: String,
        /// The language of the checks' reasons and the account.
        #[arg(long, value_enum, default_value_t = explain::Lang::En)]
        lang: explain::Lang,
    },
    /// List claims, newest first.
    List {
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::ClaimState>())]
        state: Option<pb::ClaimState>,
        /// Only this enterprise (USCC).
        #[arg(long, default_value = "")]
        enterprise: String,
        /// Only claims in review past their review deadline (REVIEW DUE).
        #[arg(long)]
        review_overdue: bool,
        /// At most this many.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: i32,
    },
    /// Ask the applicant for more information about a claim under review (it waits in
    /// NEEDS_INFORMATION, its money still held, until the applicant answers).
    RequestInformation {
        /// The claim.
        id: String,
        /// What the applicant is asked for.
        #[arg(long)]
        message: String,
        /// The reviewer: a development token is minted for this reviewer.
        #[arg(long)]
        reviewer: Option<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Answer a reviewer's request for information as the claim's applicant (back to
    /// PENDING_REVIEW).
    ProvideInformation {
        /// The claim.
        id: String,
        /// The answer.
        #[arg(long)]
        message: String,
        /// A document of the claim that answers the request (its id); repeat for several.
        #[arg(long = "document")]
        documents: Vec<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Reopen an EXPIRED claim: it asks its pool for its money again at its original place
    /// in the line (held again, or WAITLISTED while the pool cannot cover it).
    Reopen {
        /// The claim.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The reviewer: a development token is minted for this reviewer.
        #[arg(long)]
        reviewer: Option<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// The invoices of a claim: add them (the applicant) or verify one (a reviewer).
    Invoice {
        /// What to do.
        #[command(subcommand)]
        command: InvoiceCommand,
    },
    /// Approve a claim under review on its VERIFIED invoices (`--verified`, when given, must
    /// equal their total).
    Approve {
        /// The claim.
        id: String,
        /// The verified amount in CNY, e.g. 1500000.00; optional: when given it must equal the
        /// total of the claim's VERIFIED invoices.
        #[arg(long)]
        verified: Option<String>,
        /// The benefit rating; unrated when left out.
        #[arg(long, value_parser = enums::parser::<pb::BenefitRating>())]
        rating: Option<pb::BenefitRating>,
        /// The reviewer, who must be the caller: by default the token's subject; a
        /// development token is minted for this reviewer.
        #[arg(long)]
        reviewer: Option<String>,
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
        /// The reviewer, who must be the caller: by default the token's subject; a
        /// development token is minted for this reviewer.
        #[arg(long)]
        reviewer: Option<String>,
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
        /// The payment.
        #[command(flatten)]
        payment: Payment,
    },
}

/// A payment as `claim disburse` and `proposal disburse` record it.
#[derive(clap::Args, Debug)]
pub struct Payment {
    /// The payment's reference.
    #[arg(long)]
    reference: String,
    /// The payment date, YYYY-MM-DD (Asia/Shanghai).
    #[arg(long)]
    date: String,
    /// The amount paid in CNY (the approved or awarded amount).
    #[arg(long)]
    amount: String,
    /// The idempotency key; by default derived from the arguments.
    #[arg(long)]
    request_id: Option<String>,
}

/// A payment's fields as the disbursement requests carry them.
struct PaymentFields {
    request_id: String,
    reference: String,
    date: Date,
    amount: subsidy_proto::google::r#type::Money,
}

impl Payment {
    /// The request's fields for the disbursement of `id` by `command` (`claim disburse`):
    /// the request id derived from all of them unless given; `Err` for a date or amount that
    /// does not parse.
    fn fields(self, command: &str, id: &str) -> Result<PaymentFields, BoxError> {
        let request_id = derived_request_id(
            self.request_id,
            &[command, id, &self.reference, &self.date, &self.amount],
        );
        Ok(PaymentFields {
            request_id,
            date: date(&self.date, "--date")?,
            amount: amount(&self.amount, "--amount")?,
            reference: self.reference,
        })
    }
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
        /// The submission deadline: an RFC 3339 time (e.g. 2027-03-31T18:00:00+08:00), or
        /// `+` and a duration from now (e.g. +30d).
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
    /// List rounds, newest first.
    List {
        /// Only this pool.
        #[arg(long, default_value = "")]
        pool: String,
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::SelectionRoundState>())]
        state: Option<pb::SelectionRoundState>,
        /// At most this many.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: i32,
    },
}

/// An amount in CNY as written on the command line or in a claim file, exact to the fen.
fn amount(text: &str, what: &str) -> Result<subsidy_proto::google::r#type::Money, BoxError> {
    let money: Money = text
        .parse()
        .map_err(|e| format!("{what} {text:?} is not an amount in CNY: {e}"))?;
    Ok(money.to_proto())
}

/// A calendar date written `YYYY-MM-DD`.
fn date(text: &str, what: &str) -> Result<Date, BoxError> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{what} {text:?} is not a date YYYY-MM-DD"))?;
    Ok(super::proto_date(date))
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

fn state_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_owned()
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
    let mut fields = vec![
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
        ("HOLD EXPIRES", time(&claim.hold_expire_time)),
        ("REVIEW DUE", time(&claim.review_due_time)),
        ("INFORMATION REQUEST", claim.information_request.clone()),
        ("SUBMITTED AT", time(&claim.submit_time)),
        ("UPDATED AT", time(&claim.update_time)),
        ("REVISION", claim.revision.to_string()),
    ];
    if let Some(notice) = &claim.public_notice {
        fields.extend(publicity::notice_fields(notice));
    }
    fields
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
    print_record(ctx, &claim_record(&claim), || json::message(&claim));
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
        Command::Proposal(command) => proposal(command, ctx, &mut client).await,
        Command::Document(command) => documents::document(command, ctx, &mut client).await,
        Command::Notice(command) => publicity::notice(command, ctx, &mut client).await,
        Command::Objection(command) => publicity::objection(command, ctx, &mut client).await,
        Command::History { id } => history(ctx, &mut client, id).await,
        Command::Stats(args) => stats::stats(ctx, &mut client, args).await,
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
    let mut entries = Vec::new();
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
                entry.actor.clone(),
                entry.request_id.clone(),
                entry.reason.clone(),
            ]);
            entries.push(entry);
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
        || json::messages(&entries),
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
    print_record(ctx, &enterprise_record(&enterprise), || {
        json::message(&enterprise)
    });
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
    print_record(ctx, &enterprise_record(&enterprise), || {
        json::message(&enterprise)
    });
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
    print(ctx, &["USCC", "NAME", "DIVISION", "EMAIL"], &rows, || {
        json::messages(&page.enterprises)
    });
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
        ClaimCommand::Explain { id, lang } => explain::claim_explain(ctx, client, id, lang).await,
        ClaimCommand::List {
            state,
            enterprise,
            review_overdue,
            limit,
        } => {
            let filter = pb::ListClaimsRequest {
                state: state.map(|s| s as i32).unwrap_or_default(),
                enterprise_uscc: enterprise,
                review_overdue,
                page_size: limit,
                ..Default::default()
            };
            claim_list(ctx, client, filter).await
        }
        ClaimCommand::RequestInformation {
            id,
            message,
            reviewer,
            request_id,
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let request_id =
                derived_request_id(request_id, &["claim request-information", &id, &message]);
            let claim = client
                .request_claim_information(ctx.request(pb::RequestClaimInformationRequest {
                    request_id,
                    claim_id: id,
                    message,
                }))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        ClaimCommand::ProvideInformation {
            id,
            message,
            documents,
            request_id,
        } => {
            let mut parts = vec!["claim provide-information", &id, &message];
            parts.extend(documents.iter().map(String::as_str));
            let request_id = derived_request_id(request_id, &parts);
            let binding = claim_binding(ctx, client, &id).await?;
            let claim = client
                .provide_claim_information(ctx.request_as(
                    pb::ProvideClaimInformationRequest {
                        request_id,
                        claim_id: id,
                        message,
                        document_ids: documents,
                    },
                    &binding,
                ))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        ClaimCommand::Reopen {
            id,
            reason,
            reviewer,
            request_id,
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let request_id = derived_request_id(request_id, &["claim reopen", &id, &reason]);
            let claim = client
                .reopen_claim(ctx.request(pb::ReopenClaimRequest {
                    request_id,
                    claim_id: id,
                    reason,
                }))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        ClaimCommand::Approve {
            id,
            verified,
            rating,
            reviewer,
            note,
            request_id,
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let reviewer = reviewer.unwrap_or_default();
            let request =
                approve_request(id, verified.as_deref(), rating, reviewer, note, request_id)?;
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
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let reviewer = reviewer.unwrap_or_default();
            claim_reject(ctx, client, id, reason, note, reviewer, request_id).await
        }
        ClaimCommand::Withdraw {
            id,
            reason,
            request_id,
        } => claim_withdraw(ctx, client, id, reason, request_id).await,
        ClaimCommand::Disburse { id, payment } => claim_disburse(ctx, client, id, payment).await,
        ClaimCommand::Invoice { command } => claim_invoice(ctx, client, command).await,
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

/// A development token's binding to the enterprise of claim `id` (what the applicant's own
/// commands act for).
async fn claim_binding(ctx: &Ctx, client: &mut Client, id: &str) -> Result<Binding, BoxError> {
    let enterprise = client
        .get_claim(ctx.request(pb::GetClaimRequest {
            claim_id: id.to_owned(),
        }))
        .await?
        .into_inner()
        .claim
        .map(|claim| claim.enterprise_uscc)
        .unwrap_or_default();
    Ok(Binding {
        enterprises: vec![enterprise],
        expert: None,
    })
}

/// `claim list`: the first page only.
async fn claim_list(
    ctx: &Ctx,
    client: &mut Client,
    filter: pb::ListClaimsRequest,
) -> Result<(), BoxError> {
    let page = client.list_claims(ctx.request(filter)).await?.into_inner();
    let rows: Vec<Vec<String>> = page.claims.iter().map(claim_row).collect();
    print(ctx, &CLAIM_HEADERS, &rows, || json::messages(&page.claims));
    Ok(())
}

/// `claim invoice` commands.
#[derive(Subcommand, Debug)]
pub enum InvoiceCommand {
    /// Add invoices to a claim in review (as its applicant).
    Add {
        /// The claim.
        id: String,
        /// An invoice as NUMBER,DATE,AMOUNT or CODE/NUMBER,DATE,AMOUNT (a 20-digit number
        /// alone, or an 8-digit number with its 10- or 12-digit code; DATE YYYY-MM-DD; AMOUNT
        /// the tax-inclusive total in CNY), issued by the contract's seller to the claiming
        /// enterprise. Repeat for several.
        #[arg(long = "invoice", required = true)]
        invoices: Vec<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Record a reviewer's verification of one invoice of a claim in review.
    Verify {
        /// The claim.
        id: String,
        /// The invoice: NUMBER, or CODE/NUMBER.
        invoice: String,
        /// Record it as not verified (REJECTED) instead.
        #[arg(long)]
        reject: bool,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// The reviewer, who must be the caller: by default the token's subject; a
        /// development token is minted for this reviewer.
        #[arg(long)]
        reviewer: Option<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
}

/// An invoice's `CODE/NUMBER` or `NUMBER` as (code, number).
fn invoice_key(text: &str) -> (String, String) {
    match text.split_once('/') {
        Some((code, number)) => (code.trim().to_owned(), number.trim().to_owned()),
        None => (String::new(), text.trim().to_owned()),
    }
}

/// `claim invoice add|verify`.
async fn claim_invoice(
    ctx: &Ctx,
    client: &mut Client,
    command: InvoiceCommand,
) -> Result<(), BoxError> {
    match command {
        InvoiceCommand::Add {
            id,
            invoices,
            request_id,
        } => {
            let current = client
                .get_claim(ctx.request(pb::GetClaimRequest {
                    claim_id: id.clone(),
                }))
                .await?
                .into_inner()
                .claim
                .unwrap_or_default();
            let seller = current
                .contract
                .as_ref()
                .map(|c| c.seller_uscc.clone())
                .unwrap_or_default();
            let mut parsed = Vec::with_capacity(invoices.len());
            for text in &invoices {
                let parts: Vec<&str> = text.split(',').map(str::trim).collect();
                let [key, day, total] = parts.as_slice() else {
                    return Err(format!(
                        "--invoice {text:?}: expected NUMBER,DATE,AMOUNT or CODE/NUMBER,DATE,AMOUNT"
                    )
                    .into());
                };
                let (code, number) = invoice_key(key);
                parsed.push(pb::Invoice {
                    invoice_code: code,
                    invoice_number: number,
                    issue_date: Some(date(day, "--invoice")?),
                    amount: Some(amount(total, "--invoice")?),
                    seller_uscc: seller.clone(),
                    buyer_uscc: current.enterprise_uscc.clone(),
                    verification: None,
                });
            }
            let mut parts = vec!["claim invoice add", id.as_str()];
            parts.extend(invoices.iter().map(String::as_str));
            let request_id = derived_request_id(request_id, &parts);
            let binding = Binding {
                enterprises: vec![current.enterprise_uscc.clone()],
                expert: None,
            };
            let claim = client
                .add_claim_invoices(ctx.request_as(
                    pb::AddClaimInvoicesRequest {
                        request_id,
                        claim_id: id,
                        invoices: parsed,
                    },
                    &binding,
                ))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
        InvoiceCommand::Verify {
            id,
            invoice,
            reject,
            note,
            reviewer,
            request_id,
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let state = if reject {
                pb::InvoiceVerificationState::Rejected
            } else {
                pb::InvoiceVerificationState::Verified
            };
            let request_id = derived_request_id(
                request_id,
                &[
                    "claim invoice verify",
                    &id,
                    &invoice,
                    state.as_str_name(),
                    &note,
                ],
            );
            let (code, number) = invoice_key(&invoice);
            let claim = client
                .verify_claim_invoice(ctx.request(pb::VerifyClaimInvoiceRequest {
                    request_id,
                    claim_id: id,
                    invoice_code: code,
                    invoice_number: number,
                    state: state as i32,
                    note,
                }))
                .await?
                .into_inner()
                .claim;
            show_claim(ctx, claim)
        }
    }
}

/// The request of `claim approve`; `Err` when the verified amount is not an amount.
fn approve_request(
    id: String,
    verified: Option<&str>,
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
            verified.unwrap_or_default(),
            rating_value.as_str_name(),
            &reviewer,
            &note,
        ],
    );
    Ok(pb::ApproveClaimRequest {
        request_id,
        claim_id: id,
        verified_paid_amount: verified
            .map(|verified| amount(verified, "--verified"))
            .transpose()?,
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

/// `claim disburse`: records the payment of an approved claim.
async fn claim_disburse(
    ctx: &Ctx,
    client: &mut Client,
    id: String,
    payment: Payment,
) -> Result<(), BoxError> {
    let paid = payment.fields("claim disburse", &id)?;
    let claim = client
        .record_claim_disbursement(ctx.request(pb::RecordClaimDisbursementRequest {
            request_id: paid.request_id,
            claim_id: id,
            payment_reference: paid.reference,
            payment_date: Some(paid.date),
            amount: Some(paid.amount),
        }))
        .await?
        .into_inner()
        .claim;
    show_claim(ctx, claim)
}
