//! `subsidyctl` commands of the rules service: `policy list|show|publish|simulate`,
//! `provider …` (in `providers.rs`) and `check-uscc`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_common::uscc::{Uscc, UsccError, check_character};
use subsidy_proto::rules as pb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_rules::policy_file;
use tonic::transport::Channel;

use super::{Ctx, enums, json, money, print, time};

/// Commands of the rules service.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect, publish and try out policy versions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The registry of compute providers and their data centers.
    #[command(subcommand)]
    Provider(super::providers::ProviderCommand),
    /// Check a Unified Social Credit Code (GB 32100-2015) locally.
    CheckUscc {
        /// The 18-character code.
        code: String,
    },
}

/// Policy commands.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// List the published versions, newest first per policy.
    List {
        /// Only `compute-voucher` or `data-infra`.
        #[arg(long)]
        program: Option<String>,
    },
    /// Show one version: metadata and parameters, or the decision graph with `--document`.
    Show {
        /// `compute-voucher` or `data-infra`.
        policy_id: String,
        /// The version; by default the one in effect today (Asia/Shanghai).
        #[arg(long, default_value = "")]
        version: String,
        /// Print the JDM decision graph instead of the summary.
        #[arg(long)]
        document: bool,
    },
    /// Validate and publish a policy file (see services/rules/policies/README.md).
    Publish {
        /// The policy file (`*.policy.json`).
        file: PathBuf,
        /// Only validate; publish nothing.
        #[arg(long)]
        validate_only: bool,
        /// The idempotency key; by default derived from the file's content, so that running
        /// the same command again returns the original publication.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Compare a draft policy file with a published version over past cases.
    Simulate {
        /// The draft policy file (`*.policy.json`).
        file: PathBuf,
        /// The past cases (a JSON array; see policies/examples/compute-voucher-cases.json).
        #[arg(long)]
        cases: PathBuf,
        /// The published version to compare with; by default the one in effect today.
        #[arg(long, default_value = "")]
        baseline: String,
    },
}

/// The program of `--program`, named by its policy id (the proto name without `PROGRAM_`, see
/// `enums`); unspecified when absent.
fn program(name: Option<&str>) -> Result<pb::Program, BoxError> {
    let Some(name) = name else {
        return Ok(pb::Program::Unspecified);
    };
    enums::parse::<pb::Program>(name).ok_or_else(|| {
        let known: Vec<String> = enums::values::<pb::Program>()
            .into_iter()
            .map(enums::arg_name)
            .collect();
        format!("unknown program {name}; use {}", known.join(" or ")).into()
    })
}

fn date(value: &Option<subsidy_proto::google::r#type::Date>) -> String {
    value
        .as_ref()
        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
        .unwrap_or_else(|| "-".into())
}

fn shortfall(value: i32) -> String {
    pb::ShortfallMode::try_from(value)
        .map(|mode| {
            mode.as_str_name()
                .trim_start_matches("SHORTFALL_MODE_")
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

/// The parameters of a policy as name/value rows.
fn parameter_rows(parameters: &Option<pb::PolicyParameters>) -> Vec<Vec<String>> {
    use pb::policy_parameters::ProgramParameters;
    let row = |name: &str, value: String| vec![name.to_owned(), value];
    match parameters
        .as_ref()
        .and_then(|p| p.program_parameters.as_ref())
    {
        Some(ProgramParameters::ComputeVoucher(p)) => vec![
            row("rate_max", p.rate_max.clone()),
            row("enterprise_cap", money(&p.enterprise_cap)),
            row("window_start", date(&p.window_start)),
            row("window_end", date(&p.window_end)),
            row("contract_total_max", money(&p.contract_total_max)),
            row("shortfall_mode", shortfall(p.shortfall_mode)),
        ],
        Some(ProgramParameters::DataInfra(p)) => vec![
            row("project_cap", money(&p.project_cap)),
            row("shortfall_mode", shortfall(p.shortfall_mode)),
        ],
        None => Vec::new(),
    }
}

fn policy_rows(policy: &pb::Policy) -> Vec<Vec<String>> {
    let row = |name: &str, value: String| vec![name.to_owned(), value];
    let mut rows = vec![
        row("policy_id", policy.policy_id.clone()),
        row("version", policy.version.clone()),
        row(
            "state",
            policy
                .state()
                .as_str_name()
                .trim_start_matches("POLICY_STATE_")
                .to_owned(),
        ),
        row("effective_start", date(&policy.effective_start)),
        row("effective_end", date(&policy.effective_end)),
        row("content_sha256", policy.content_sha256.clone()),
        row("published", time(&policy.publish_time)),
        row("publisher", policy.publisher.clone()),
        row("description", policy.description.clone()),
    ];
    rows.extend(parameter_rows(&policy.parameters));
    rows
}

fn decision_summary(decision: &Option<pb::Decision>) -> (String, String, String) {
    match decision {
        Some(d) => (
            if d.eligible { "yes" } else { "no" }.to_owned(),
            money(&d.entitlement),
            d.failed_checks
                .iter()
                .map(|c| c.reason.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        None => ("-".into(), "-".into(), String::new()),
    }
}

/// Checks a USCC and explains the result.
fn check_uscc(ctx: &Ctx, code: &str) -> Result<(), BoxError> {
    let normalized = code.trim().to_ascii_uppercase();
    let (valid, problem) = match Uscc::parse(code) {
        Ok(_) => ("yes", String::new()),
        Err(UsccError::Check) => (
            "no",
            format!(
                "check character is {}, expected {}",
                &normalized[17..],
                check_character(&normalized[..17]).map_err(|e| e.to_string())?
            ),
        ),
        Err(other) => ("no", other.to_string()),
    };
    let division = normalized.get(2..8).unwrap_or("").to_owned();
    let shandong = if valid == "yes" {
        if division.starts_with("37") {
            "yes"
        } else {
            "no"
        }
    } else {
        "-"
    };
    let json = || {
        let mut value = serde_json::json!({"code": normalized, "valid": valid == "yes"});
        if valid == "yes" {
            value["division"] = division.clone().into();
            value["shandong"] = (shandong == "yes").into();
        } else {
            value["problem"] = problem.clone().into();
        }
        value
    };
    print(
        ctx,
        &["CODE", "VALID", "DIVISION", "SHANDONG", "PROBLEM"],
        &[vec![
            normalized.clone(),
            valid.to_owned(),
            division.clone(),
            shandong.to_owned(),
            problem.clone(),
        ]],
        json,
    );
    if valid == "yes" {
        Ok(())
    } else {
        Err("the code is not a valid USCC".into())
    }
}

/// The rules service's client.
type Client = RulesServiceClient<Channel>;

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    let policy = match command {
        Command::CheckUscc { code } => return check_uscc(ctx, &code),
        Command::Provider(command) => return super::providers::run(command, ctx).await,
        Command::Policy(policy) => policy,
    };
    let mut client = RulesServiceClient::new(ctx.channel(ServiceKind::Rules).await?);
    match policy {
        PolicyCommand::List { program: name } => {
            policy_list(ctx, &mut client, program(name.as_deref())?).await
        }
        PolicyCommand::Show {
            policy_id,
            version,
            document,
        } => policy_show(ctx, &mut client, policy_id, version, document).await,
        PolicyCommand::Publish {
            file,
            validate_only,
            request_id,
        } => policy_publish(ctx, &mut client, &file, validate_only, request_id).await,
        PolicyCommand::Simulate {
            file,
            cases,
            baseline,
        } => policy_simulate(ctx, &mut client, &file, &cases, baseline).await,
    }
}

/// `policy list`: every published version of `program` (all when unspecified).
async fn policy_list(ctx: &Ctx, client: &mut Client, program: pb::Program) -> Result<(), BoxError> {
    let mut rows = Vec::new();
    let mut policies = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_policies(ctx.request(pb::ListPoliciesRequest {
                program: program as i32,
                page_size: 200,
                page_token: token,
            }))
            .await?
            .into_inner();
        for p in &page.policies {
            rows.push(vec![
                p.policy_id.clone(),
                p.version.clone(),
                date(&p.effective_start),
                date(&p.effective_end),
                time(&p.publish_time),
                p.publisher.clone(),
                p.content_sha256.chars().take(12).collect(),
            ]);
        }
        policies.extend(page.policies);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    print(
        ctx,
        &[
            "POLICY",
            "VERSION",
            "EFFECTIVE FROM",
            "EFFECTIVE TO",
            "PUBLISHED",
            "PUBLISHER",
            "SHA256",
        ],
        &rows,
        || json::messages(&policies),
    );
    Ok(())
}

/// `policy show`: the summary, or the decision graph with `document`.
async fn policy_show(
    ctx: &Ctx,
    client: &mut Client,
    policy_id: String,
    version: String,
    document: bool,
) -> Result<(), BoxError> {
    let policy = client
        .get_policy(ctx.request(pb::GetPolicyRequest { policy_id, version }))
        .await?
        .into_inner()
        .policy
        .ok_or("the service returned no policy")?;
    if document {
        outln!("{}", policy.document_json);
    } else {
        print(ctx, &["FIELD", "VALUE"], &policy_rows(&policy), || {
            json::message(&policy)
        });
    }
    Ok(())
}

/// `policy publish`: the policy file, published or only validated.
async fn policy_publish(
    ctx: &Ctx,
    client: &mut Client,
    file: &Path,
    validate_only: bool,
    request_id: Option<String>,
) -> Result<(), BoxError> {
    let draft = policy_file::load(file)?;
    let request_id = match request_id {
        Some(id) => id,
        None if validate_only => String::new(),
        None => {
            let digest = subsidy_common::idempotency::fingerprint("PublishPolicy", &draft);
            format!("subsidyctl-publish-{}", &digest[..32])
        }
    };
    let policy = client
        .publish_policy(ctx.request(pb::PublishPolicyRequest {
            request_id,
            policy: Some(draft),
            validate_only,
        }))
        .await?
        .into_inner()
        .policy
        .ok_or("the service returned no policy")?;
    print(ctx, &["FIELD", "VALUE"], &policy_rows(&policy), || {
        json::message(&policy)
    });
    Ok(())
}

/// One case of a simulation as a row: the draft's and the baseline's decisions side by side.
fn simulation_row(result: &pb::SimulationCaseResult) -> Vec<String> {
    let (d_eligible, d_amount, d_reasons) = decision_summary(&result.draft_decision);
    let (b_eligible, b_amount, b_reasons) = decision_summary(&result.baseline_decision);
    vec![
        result.case_id.clone(),
        d_eligible,
        d_amount,
        d_reasons,
        b_eligible,
        b_amount,
        b_reasons,
        if result.changed { "CHANGED" } else { "" }.to_owned(),
    ]
}

/// The totals of a simulation's draft or baseline: eligible of all cases, the total subsidy,
/// how many reached the enterprise cap.
fn simulation_totals(totals: &Option<pb::SimulationTotals>) -> (String, String, String) {
    totals
        .as_ref()
        .map(|t| {
            (
                format!("{}/{}", t.eligible_count, t.case_count),
                money(&t.total_subsidy),
                format!("cap reached: {}", t.enterprise_cap_reached_count),
            )
        })
        .unwrap_or_default()
}

/// `policy simulate`: a draft policy file against a published version over past cases.
async fn policy_simulate(
    ctx: &Ctx,
    client: &mut Client,
    file: &Path,
    cases: &Path,
    baseline: String,
) -> Result<(), BoxError> {
    let draft = policy_file::load(file)?;
    let cases = policy_file::load_cases(cases)?;
    let response = client
        .simulate_policy(ctx.request(pb::SimulatePolicyRequest {
            draft: Some(draft),
            cases,
            baseline_version: baseline,
            include_trace: false,
        }))
        .await?
        .into_inner();
    let version = |policy: &Option<pb::Policy>| {
        policy
            .as_ref()
            .map(|p| p.version.clone())
            .unwrap_or_default()
    };
    let (baseline_version, draft_version) = (version(&response.baseline), version(&response.draft));
    let mut rows: Vec<Vec<String>> = response.results.iter().map(simulation_row).collect();
    let (d_count, d_total, d_cap) = simulation_totals(&response.draft_totals);
    let (b_count, b_total, b_cap) = simulation_totals(&response.baseline_totals);
    rows.push(vec![
        "(totals)".into(),
        d_count,
        d_total,
        d_cap,
        b_count,
        b_total,
        b_cap,
        String::new(),
    ]);
    if ctx.output == super::Output::Table {
        outln!("draft {draft_version} compared with published {baseline_version}");
    }
    print(
        ctx,
        &[
            "CASE",
            "DRAFT ELIGIBLE",
            "DRAFT ENTITLEMENT",
            "DRAFT REASONS",
            "BASELINE ELIGIBLE",
            "BASELINE ENTITLEMENT",
            "BASELINE REASONS",
            "CHANGE",
        ],
        &rows,
        || json::message(&response),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            application_url: String::new(),
            rules_url: String::new(),
            budget_url: String::new(),
            notification_url: String::new(),
            output: super::super::Output::Json,
            actor: "test".into(),
            token: None,
            data_dir: std::path::PathBuf::from("./data"),
            ca_file: None,
            insecure: false,
        }
    }

    #[test]
    fn check_uscc_accepts_a_valid_code_and_refuses_a_corrupted_one() {
        // Proves: `subsidyctl check-uscc` succeeds only for a code with the right check character.
        assert!(check_uscc(&ctx(), "91350100M000100Y43").is_ok());
        assert!(check_uscc(&ctx(), "91350100M000100Y44").is_err());
        assert!(check_uscc(&ctx(), "short").is_err());
    }

    #[test]
    fn policy_programs_are_named_by_their_policy_ids() {
        // Proves: `--program` takes the policy ids and nothing else.
        assert_eq!(program(Some("data-infra")).unwrap(), pb::Program::DataInfra);
        assert_eq!(program(None).unwrap(), pb::Program::Unspecified);
        assert!(program(Some("vouchers")).is_err());
    }
}
