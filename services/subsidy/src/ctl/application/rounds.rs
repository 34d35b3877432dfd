//! `subsidyctl round open|close|score|finalise|show`: selection rounds of the
//! data-infrastructure pool.

use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::super::{Binding, Ctx, Output, json, money, print, print_record, time};
use super::{Client, PAGE_SIZE_MAX, RoundCommand, derived_request_id, state_name};

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

pub(super) async fn round(
    command: RoundCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
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
        RoundCommand::List { pool, state, limit } => {
            round_list(ctx, client, pool, state, limit).await
        }
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
    let at = deadline_time(&deadline, chrono::Utc::now())?;
    let request_id = derived_request_id(request_id, &["round open", &pool, &title, &deadline]);
    let round = client
        .create_selection_round(ctx.request(pb::CreateSelectionRoundRequest {
            request_id,
            pool_id: pool,
            title,
            submission_deadline_time: Some(prost_types::Timestamp {
                seconds: at,
                nanos: 0,
            }),
        }))
        .await?
        .into_inner()
        .round
        .ok_or("the service answered without a round")?;
    print_record(ctx, &round_record(&round), || json::message(&round));
    Ok(())
}

/// `round list`: the first page of rounds.
async fn round_list(
    ctx: &Ctx,
    client: &mut Client,
    pool: String,
    state: Option<pb::SelectionRoundState>,
    limit: i32,
) -> Result<(), BoxError> {
    let page = client
        .list_selection_rounds(ctx.request(pb::ListSelectionRoundsRequest {
            pool_id: pool,
            state: state.map(|s| s as i32).unwrap_or_default(),
            page_size: limit,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page
        .rounds
        .iter()
        .map(|round| {
            vec![
                round.round_id.clone(),
                state_name(round.state().as_str_name(), "SELECTION_ROUND_STATE_"),
                round.pool_id.clone(),
                round.title.clone(),
                time(&round.submission_deadline_time),
                round.proposal_count.to_string(),
            ]
        })
        .collect();
    print(
        ctx,
        &["ROUND", "STATE", "POOL", "TITLE", "DEADLINE", "PROPOSALS"],
        &rows,
        || json::messages(&page.rounds),
    );
    Ok(())
}

/// The deadline `text` names, in seconds since the epoch: an RFC 3339 time, or `+` and a
/// duration from `now` (`+30d`, `+36h`, `+2weeks`).
fn deadline_time(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, BoxError> {
    if let Some(ahead) = text.strip_prefix('+') {
        let ahead = humantime::parse_duration(ahead)
            .map_err(|e| format!("--deadline {text:?}: {e} (e.g. +30d)"))?;
        let ahead = chrono::Duration::from_std(ahead)
            .map_err(|_| format!("--deadline {text:?} is too far ahead"))?;
        return Ok((now + ahead).timestamp());
    }
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
        format!("--deadline {text:?} is neither an RFC 3339 time nor +DURATION (e.g. +30d)")
    })?;
    Ok(at.timestamp())
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
    print_record(ctx, &round_record(&round), || json::message(&round));
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
        || json::message(&proposal),
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
        || json::message(&result),
    );
    if ctx.output == Output::Table {
        outln!("not selected: {}", result.not_selected_count);
    }
    Ok(())
}

/// The columns of a round's proposals in `round show`.
pub(super) const PROPOSAL_COLUMNS: [&str; 8] = [
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
    let proposals = round_proposals(ctx, client, &id).await?;
    match ctx.output {
        Output::Json => {
            let mut value = json::message(&round);
            value["proposals"] = json::messages(&proposals);
            super::super::print_json(&value);
        }
        Output::Table => {
            print_record(ctx, &round_record(&round), || json::message(&round));
            outln!();
            let rows: Vec<Vec<String>> = proposals.iter().map(proposal_row).collect();
            print(ctx, &PROPOSAL_COLUMNS, &rows, || json::messages(&proposals));
        }
    }
    Ok(())
}

/// A proposal as a row of [`PROPOSAL_COLUMNS`].
pub(super) fn proposal_row(p: &pb::Proposal) -> Vec<String> {
    vec![
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
    ]
}

/// Every proposal of a round, page by page.
async fn round_proposals(
    ctx: &Ctx,
    client: &mut Client,
    round_id: &str,
) -> Result<Vec<pb::Proposal>, BoxError> {
    let mut proposals = Vec::new();
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
        proposals.extend(page.proposals);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(proposals)
}

#[cfg(test)]
mod tests {
    use super::deadline_time;

    #[test]
    fn a_deadline_is_an_rfc_3339_time_or_a_duration_ahead() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .to_utc();
        let at = |text| deadline_time(text, now).map_err(|e| e.to_string());
        assert_eq!(at("+30d"), Ok(now.timestamp() + 30 * 86_400));
        assert_eq!(at("+36h"), Ok(now.timestamp() + 36 * 3_600));
        assert_eq!(
            at("2027-03-31T18:00:00+08:00"),
            Ok(now.timestamp() + 116 * 86_400)
        );
        assert!(at("+soon").unwrap_err().contains("+30d"));
        assert!(at("2027-03-31").unwrap_err().contains("RFC 3339"));
    }
}
