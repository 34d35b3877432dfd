//! `subsidyctl notice list` and `subsidyctl objection file|decide|list`: the publicity (公示) of
//! awards and the objections (异议) to them. Every approved claim and awarded proposal is
//! published as a notice `notice-<application id>` for a period the rules service counts in
//! working days; anyone may object while it runs, a reviewer decides each objection (upholding
//! one revokes the award), and the award is paid only after the period, with no objection open.
//!
//! Lists print one page; when there is another, its token goes to standard error
//! (`next page: --page-token T`), so that standard output stays a table or a JSON array.

use clap::{ArgGroup, Subcommand, ValueEnum};
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::{Client, LIST_LIMIT_DEFAULT, derived_request_id, state_name};
use crate::ctl::{Ctx, enums, json, money, print, print_record, time};

/// Characters of an objection's grounds shown in the `objection list` table (JSON has them all).
const GROUNDS_SHOWN_CHARS_MAX: usize = 40;

/// The kind of award a notice publishes, as `notice list --kind` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoticeKind {
    /// A compute-voucher claim's approval.
    Claim,
    /// A data-infrastructure proposal's award.
    Proposal,
}

impl NoticeKind {
    /// The proto's kind of application.
    fn application_kind(self) -> pb::ApplicationKind {
        match self {
            NoticeKind::Claim => pb::ApplicationKind::ComputeVoucherClaim,
            NoticeKind::Proposal => pb::ApplicationKind::DataInfrastructureProposal,
        }
    }
}

/// Public notice commands.
#[derive(Subcommand, Debug)]
pub enum NoticeCommand {
    /// List the public notices of awards, newest first: the enterprise, the amount, the
    /// period, the state and the objections still open (open to every role).
    List {
        /// Only notices of claims or of proposals.
        #[arg(long, value_enum)]
        kind: Option<NoticeKind>,
        /// Only notices in this state (PUBLISHED: the period runs; ENDED; REVOKED).
        #[arg(long, value_parser = enums::parser::<pb::PublicNoticeState>())]
        state: Option<pb::PublicNoticeState>,
        /// At most this many (the service allows up to 500).
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        page_size: i32,
        /// The page to show: the token a previous list printed.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

/// Objection commands.
#[derive(Subcommand, Debug)]
pub enum ObjectionCommand {
    /// File an objection to an award during its publicity period (any role); it stays OPEN,
    /// holding the award's payment, until a reviewer decides it.
    File {
        /// The notice (`notice-claim-…` or `notice-proposal-…`).
        notice: String,
        /// The grounds, 1 to 2,000 characters.
        #[arg(long)]
        grounds: String,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Decide an OPEN objection as a reviewer: `--dismiss` (the award stands) or `--uphold`
    /// (the award is REVOKED and its money returned to the pool).
    #[command(group(ArgGroup::new("decision").required(true).args(["uphold", "dismiss"])))]
    Decide {
        /// The objection (`objection-…`).
        objection: String,
        /// Uphold the objection: revoke the award.
        #[arg(long)]
        uphold: bool,
        /// Dismiss the objection: the award stands.
        #[arg(long)]
        dismiss: bool,
        /// The reasons of the decision, 1 to 2,000 characters.
        #[arg(long)]
        reason: String,
        /// The reviewer's id: by default the development token's subject (`--actor`), for
        /// whom a token is minted; required with `--token`.
        #[arg(long)]
        reviewer: Option<String>,
        /// The idempotency key; by default derived from the arguments.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List objections, oldest filing first (reviewer, auditor or admin: it names who filed
    /// each one).
    List {
        /// Only objections to this notice.
        #[arg(long, default_value = "")]
        notice: String,
        /// Only objections in this state.
        #[arg(long, value_parser = enums::parser::<pb::ObjectionState>())]
        state: Option<pb::ObjectionState>,
        /// At most this many (the service allows up to 500).
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        page_size: i32,
        /// The page to show: the token a previous list printed.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

/// `claim` or `proposal`, from a notice's kind of application.
fn kind_name(notice: &pb::PublicNotice) -> String {
    match notice.application_kind() {
        pb::ApplicationKind::ComputeVoucherClaim => "claim".to_owned(),
        pb::ApplicationKind::DataInfrastructureProposal => "proposal".to_owned(),
        pb::ApplicationKind::Unspecified => "-".to_owned(),
    }
}

/// A notice's state without its prefix, e.g. `ENDED`.
fn notice_state(notice: &pb::PublicNotice) -> String {
    state_name(notice.state().as_str_name(), "PUBLIC_NOTICE_STATE_")
}

/// An objection's state without its prefix, e.g. `OPEN`.
fn objection_state(objection: &pb::Objection) -> String {
    state_name(objection.state().as_str_name(), "OBJECTION_STATE_")
}

/// The end of a notice's period: `not counted yet` until the rules service has counted it.
fn period_end(notice: &pb::PublicNotice) -> String {
    if notice.end_time.is_some() {
        time(&notice.end_time)
    } else {
        "not counted yet".to_owned()
    }
}

/// The lines `claim show` and `proposal show` add for the public notice of an award.
pub(super) fn notice_fields(notice: &pb::PublicNotice) -> Vec<(&'static str, String)> {
    vec![
        ("PUBLIC NOTICE", notice.notice_id.clone()),
        ("PUBLICITY STATE", notice_state(notice)),
        ("PUBLISHED AT", time(&notice.start_time)),
        ("PUBLICITY ENDS", period_end(notice)),
        ("PUBLICITY DAYS", notice.working_days.to_string()),
        ("OBJECTIONS OPEN", notice.open_objection_count.to_string()),
    ]
}

/// A notice as a record, after a filing or a decision.
fn notice_record(notice: &pb::PublicNotice) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("APPLICATION", notice.application_id.clone()),
        ("KIND", kind_name(notice)),
        ("ENTERPRISE", notice.enterprise_name.clone()),
        ("USCC", notice.enterprise_uscc.clone()),
        ("AMOUNT", money(&notice.amount)),
    ];
    fields.extend(notice_fields(notice));
    if notice.revoke_time.is_some() {
        fields.push(("REVOKED AT", time(&notice.revoke_time)));
    }
    fields
}

/// An objection as a record, followed by its notice's state when the service sent it.
fn objection_record(
    objection: &pb::Objection,
    notice: Option<&pb::PublicNotice>,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("OBJECTION", objection.objection_id.clone()),
        ("STATE", objection_state(objection)),
        ("NOTICE", objection.notice_id.clone()),
        ("APPLICATION", objection.application_id.clone()),
        ("GROUNDS", objection.grounds.clone()),
        ("FILED BY", objection.filed_by.clone()),
        ("FILED AT", time(&objection.file_time)),
        ("REVIEWER", objection.reviewer_id.clone()),
        ("DECISION REASON", objection.decision_reason.clone()),
        ("DECIDED AT", time(&objection.decide_time)),
    ];
    if let Some(notice) = notice {
        fields.extend(
            notice_record(notice)
                .into_iter()
                .filter(|(label, _)| !matches!(*label, "APPLICATION" | "PUBLIC NOTICE")),
        );
    }
    fields
}

/// At most [`GROUNDS_SHOWN_CHARS_MAX`] characters of `text` on one line, `…` when cut.
fn shortened(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= GROUNDS_SHOWN_CHARS_MAX {
        return line;
    }
    let cut: String = line.chars().take(GROUNDS_SHOWN_CHARS_MAX - 1).collect();
    format!("{cut}…")
}

/// Tells where the next page starts, on standard error (standard output stays parseable).
fn next_page_hint(token: &str) {
    if !token.is_empty() {
        eprintln!("next page: --page-token {token}");
    }
}

/// Runs a notice command.
pub(super) async fn notice(
    command: NoticeCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
    let NoticeCommand::List {
        kind,
        state,
        page_size,
        page_token,
    } = command;
    let page = client
        .list_public_notices(
            ctx.request(pb::ListPublicNoticesRequest {
                application_kind: kind
                    .map(|k| k.application_kind() as i32)
                    .unwrap_or_default(),
                state: state.map(|s| s as i32).unwrap_or_default(),
                page_size,
                page_token,
            }),
        )
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page
        .notices
        .iter()
        .map(|n| {
            vec![
                n.notice_id.clone(),
                kind_name(n),
                n.enterprise_name.clone(),
                money(&n.amount),
                time(&n.start_time),
                period_end(n),
                notice_state(n),
                n.open_objection_count.to_string(),
            ]
        })
        .collect();
    print(
        ctx,
        &[
            "NOTICE",
            "KIND",
            "ENTERPRISE",
            "AMOUNT",
            "START",
            "END",
            "STATE",
            "OPEN OBJECTIONS",
        ],
        &rows,
        || json::messages(&page.notices),
    );
    next_page_hint(&page.next_page_token);
    Ok(())
}

/// Runs an objection command.
pub(super) async fn objection(
    command: ObjectionCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
    match command {
        ObjectionCommand::File {
            notice,
            grounds,
            request_id,
        } => {
            let request_id = derived_request_id(request_id, &["objection file", &notice, &grounds]);
            let response = client
                .file_objection(ctx.request(pb::FileObjectionRequest {
                    request_id,
                    notice_id: notice,
                    grounds,
                }))
                .await?
                .into_inner();
            show_decided(ctx, &response.objection, response.notice.as_ref(), || {
                json::message(&response)
            })
        }
        ObjectionCommand::Decide {
            objection,
            uphold,
            dismiss: _,
            reason,
            reviewer,
            request_id,
        } => {
            let ctx = &ctx.minting_for(reviewer.as_deref());
            let decision = if uphold {
                pb::ObjectionDecision::Uphold
            } else {
                pb::ObjectionDecision::Dismiss
            };
            // The service needs the reviewer's id; a development token's subject is known here,
            // a real token's is the caller's to give.
            let reviewer = reviewer.unwrap_or_else(|| {
                if ctx.token.is_none() {
                    ctx.actor.clone()
                } else {
                    String::new()
                }
            });
            let request_id = derived_request_id(
                request_id,
                &[
                    "objection decide",
                    &objection,
                    decision.as_str_name(),
                    &reason,
                    &reviewer,
                ],
            );
            let response = client
                .decide_objection(ctx.request(pb::DecideObjectionRequest {
                    request_id,
                    objection_id: objection,
                    decision: decision as i32,
                    reason,
                    reviewer_id: reviewer,
                }))
                .await?
                .into_inner();
            show_decided(ctx, &response.objection, response.notice.as_ref(), || {
                json::message(&response)
            })
        }
        ObjectionCommand::List {
            notice,
            state,
            page_size,
            page_token,
        } => {
            let page = client
                .list_objections(ctx.request(pb::ListObjectionsRequest {
                    notice_id: notice,
                    state: state.map(|s| s as i32).unwrap_or_default(),
                    page_size,
                    page_token,
                }))
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = page
                .objections
                .iter()
                .map(|o| {
                    vec![
                        o.objection_id.clone(),
                        o.notice_id.clone(),
                        objection_state(o),
                        o.filed_by.clone(),
                        time(&o.file_time),
                        o.reviewer_id.clone(),
                        time(&o.decide_time),
                        shortened(&o.grounds),
                    ]
                })
                .collect();
            print(
                ctx,
                &[
                    "OBJECTION",
                    "NOTICE",
                    "STATE",
                    "FILED BY",
                    "FILED",
                    "REVIEWER",
                    "DECIDED",
                    "GROUNDS",
                ],
                &rows,
                || json::messages(&page.objections),
            );
            next_page_hint(&page.next_page_token);
            Ok(())
        }
    }
}

/// Prints the objection of a filing or decision with its notice; JSON prints the whole
/// response (`objection` and `notice`).
fn show_decided(
    ctx: &Ctx,
    objection: &Option<pb::Objection>,
    notice: Option<&pb::PublicNotice>,
    as_json: impl FnOnce() -> serde_json::Value,
) -> Result<(), BoxError> {
    let objection = objection
        .as_ref()
        .ok_or("the service answered without an objection")?;
    print_record(ctx, &objection_record(objection, notice), as_json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_grounds_are_cut_on_one_line_and_short_ones_kept() {
        // Proves the table's grounds column stays one line of at most 40 characters.
        assert_eq!(
            shortened("the contract\nis forged"),
            "the contract is forged"
        );
        let long = "x".repeat(100);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), GROUNDS_SHOWN_CHARS_MAX);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_notice_without_a_counted_period_says_so() {
        // Proves an uncounted period is shown as such, not as a missing time.
        let notice = pb::PublicNotice {
            notice_id: "notice-claim-1".into(),
            application_kind: pb::ApplicationKind::ComputeVoucherClaim as i32,
            state: pb::PublicNoticeState::Published as i32,
            ..Default::default()
        };
        let fields = notice_fields(&notice);
        assert!(fields.contains(&("PUBLICITY ENDS", "not counted yet".to_owned())));
        assert!(fields.contains(&("PUBLICITY STATE", "PUBLISHED".to_owned())));
        assert_eq!(kind_name(&notice), "claim");
    }
}
