//! `subsidyctl proposal submit|withdraw|show|list|disburse`: data-infrastructure proposals, the
//! applicant's and the finance office's steps (scoring is `round score`); `show` gives the public
//! notice of an award.

use std::path::PathBuf;

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::super::{Binding, Ctx, enums, json, money, print, print_record, time};
use super::claim_file::digest;
use super::{Client, LIST_LIMIT_DEFAULT, Payment, amount, derived_request_id, state_name};

/// Proposal commands.
#[derive(Subcommand, Debug)]
pub enum ProposalCommand {
    /// Submit a proposal into an open round, as the applicant.
    Submit {
        /// The round.
        #[arg(long)]
        round: String,
        /// The applicant's Unified Social Credit Code.
        #[arg(long)]
        applicant: String,
        /// The category.
        #[arg(long, value_parser = enums::parser::<pb::ProposalCategory>())]
        category: pb::ProposalCategory,
        /// The project title.
        #[arg(long)]
        title: String,
        /// The amount requested in CNY, e.g. 8000000.00.
        #[arg(long)]
        amount: String,
        /// The summary of the project and its benefit.
        #[arg(long)]
        summary: String,
        /// A supporting document to hash and declare; repeatable.
        #[arg(long = "attachment")]
        attachments: Vec<PathBuf>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Withdraw a proposal, as its applicant.
    Withdraw {
        /// The proposal.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a proposal with its decision, scores and award, and its public notice (公示) once
    /// awarded.
    Show {
        /// The proposal.
        id: String,
    },
    /// List proposals, by round or applicant.
    List {
        /// Only this round.
        #[arg(long, default_value = "")]
        round: String,
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::ProposalState>())]
        state: Option<pb::ProposalState>,
        /// Only this applicant (USCC).
        #[arg(long, default_value = "")]
        applicant: String,
        /// At most this many.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: i32,
    },
    /// Record the payment of an awarded proposal's grant.
    Disburse {
        /// The proposal.
        id: String,
        /// The payment.
        #[command(flatten)]
        payment: Payment,
    },
}

/// A proposal as a record.
fn proposal_record(p: &pb::Proposal) -> Vec<(&'static str, String)> {
    let decision = p.decision.clone().unwrap_or_default();
    let mut fields = vec![
        ("PROPOSAL", p.proposal_id.clone()),
        (
            "STATE",
            state_name(p.state().as_str_name(), "PROPOSAL_STATE_"),
        ),
        ("ROUND", p.round_id.clone()),
        ("APPLICANT", p.applicant_uscc.clone()),
        (
            "CATEGORY",
            state_name(p.category().as_str_name(), "PROPOSAL_CATEGORY_"),
        ),
        ("TITLE", p.title.clone()),
        ("REQUESTED", money(&p.requested_amount)),
        ("ELIGIBLE", decision.eligible.to_string()),
        ("DECISION", decision.decision_id),
        ("SCORE", format!("{}/{}", p.score_total, p.score_count)),
        ("RANK", p.rank.to_string()),
        ("RESERVATION", p.reservation_id.clone()),
        ("AWARDED", money(&p.awarded_amount)),
        ("DISBURSED", money(&p.disbursed_amount)),
        ("WITHDRAWAL REASON", p.withdrawal_reason.clone()),
        ("SUBMITTED AT", time(&p.submit_time)),
        ("UPDATED AT", time(&p.update_time)),
    ];
    if let Some(notice) = &p.public_notice {
        fields.extend(super::publicity::notice_fields(notice));
    }
    fields
}

fn show_proposal(ctx: &Ctx, proposal: Option<pb::Proposal>) -> Result<(), BoxError> {
    let proposal = proposal.ok_or("the service answered without a proposal")?;
    print_record(ctx, &proposal_record(&proposal), || {
        json::message(&proposal)
    });
    Ok(())
}

/// A development token acting for the proposal's applicant (withdrawing is the applicant's).
async fn applicant_of(ctx: &Ctx, client: &mut Client, id: &str) -> Result<Binding, BoxError> {
    let applicant = client
        .get_proposal(ctx.request(pb::GetProposalRequest {
            proposal_id: id.to_owned(),
        }))
        .await?
        .into_inner()
        .proposal
        .map(|proposal| proposal.applicant_uscc)
        .unwrap_or_default();
    Ok(Binding {
        enterprises: vec![applicant],
        expert: None,
    })
}

/// The request of `proposal submit`: attachments hashed, the request id derived from every
/// argument and the attachments' digests.
#[allow(clippy::too_many_arguments)]
fn submit_request(
    round: String,
    applicant: String,
    category: pb::ProposalCategory,
    title: String,
    requested: &str,
    summary: String,
    attachments: &[PathBuf],
    request_id: Option<String>,
) -> Result<pb::SubmitProposalRequest, BoxError> {
    let attachments = attachments
        .iter()
        .map(|path| digest(path))
        .collect::<Result<Vec<_>, _>>()?;
    let digests: Vec<&str> = attachments.iter().map(|a| a.sha256_hex.as_str()).collect();
    let mut parts = vec![
        "proposal submit",
        &round,
        &applicant,
        category.as_str_name(),
        &title,
        requested,
        &summary,
    ];
    parts.extend(digests);
    let request_id = derived_request_id(request_id, &parts);
    Ok(pb::SubmitProposalRequest {
        request_id,
        round_id: round,
        applicant_uscc: applicant,
        category: category as i32,
        title,
        requested_amount: Some(amount(requested, "--amount")?),
        summary,
        attachments,
    })
}

/// Runs a proposal command.
pub(super) async fn proposal(
    command: ProposalCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
    match command {
        ProposalCommand::Submit {
            round,
            applicant,
            category,
            title,
            amount: requested,
            summary,
            attachments,
            request_id,
        } => {
            let request = submit_request(
                round,
                applicant,
                category,
                title,
                &requested,
                summary,
                &attachments,
                request_id,
            )?;
            let binding = Binding {
                enterprises: vec![request.applicant_uscc.clone()],
                expert: None,
            };
            let proposal = client
                .submit_proposal(ctx.request_as(request, &binding))
                .await?
                .into_inner()
                .proposal;
            show_proposal(ctx, proposal)
        }
        ProposalCommand::Withdraw {
            id,
            reason,
            request_id,
        } => {
            let request_id = derived_request_id(request_id, &["proposal withdraw", &id, &reason]);
            let binding = applicant_of(ctx, client, &id).await?;
            let proposal = client
                .withdraw_proposal(ctx.request_as(
                    pb::WithdrawProposalRequest {
                        request_id,
                        proposal_id: id,
                        reason,
                    },
                    &binding,
                ))
                .await?
                .into_inner()
                .proposal;
            show_proposal(ctx, proposal)
        }
        ProposalCommand::Show { id } => {
            let proposal = client
                .get_proposal(ctx.request(pb::GetProposalRequest { proposal_id: id }))
                .await?
                .into_inner()
                .proposal;
            show_proposal(ctx, proposal)
        }
        ProposalCommand::List {
            round,
            state,
            applicant,
            limit,
        } => {
            let page = client
                .list_proposals(ctx.request(pb::ListProposalsRequest {
                    round_id: round,
                    state: state.map(|s| s as i32).unwrap_or_default(),
                    applicant_uscc: applicant,
                    page_size: limit,
                    page_token: String::new(),
                }))
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = page
                .proposals
                .iter()
                .map(super::rounds::proposal_row)
                .collect();
            print(ctx, &super::rounds::PROPOSAL_COLUMNS, &rows, || {
                json::messages(&page.proposals)
            });
            Ok(())
        }
        ProposalCommand::Disburse { id, payment } => {
            let paid = payment.fields("proposal disburse", &id)?;
            let proposal = client
                .record_proposal_disbursement(ctx.request(pb::RecordProposalDisbursementRequest {
                    request_id: paid.request_id,
                    proposal_id: id,
                    payment_reference: paid.reference,
                    payment_date: Some(paid.date),
                    amount: Some(paid.amount),
                }))
                .await?
                .into_inner()
                .proposal;
            show_proposal(ctx, proposal)
        }
    }
}
