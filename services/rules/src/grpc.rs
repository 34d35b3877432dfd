//! The edge of `subsidy.rules.v1.RulesService`: each call parses and validates its request with
//! the shared kit (`subsidy_common::edge`, the messages through `wire`, drafts through the
//! compiler), reads the clock once, calls one use case of `ops`, and renders the answer through
//! `wire`. Errors become statuses in one place, `error.rs`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use subsidy_common::audit::Changer;
use subsidy_common::edge::{Page, PageLimits, PageRequest, Violations};
use subsidy_common::idempotency::fingerprint;
use subsidy_proto::rules as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::compiler::draft::{self, Effective};
use crate::domain::policy::PolicySpec;
use crate::domain::ranking;
use crate::domain::registry::{self, Registration, StatusUpdate};
use crate::domain::simulation;
use crate::domain::{denylist, shanghai_date};
use crate::error::RulesError;
use crate::ops::evaluate::{Evaluation, Rendered};
use crate::ops::policies::{Publication, Publicity};
use crate::ops::{self, Author};
use crate::wire;

/// Pages of ListPolicies.
const POLICIES_PAGE: PageLimits = PageLimits {
    default: 50,
    max: 200,
};
/// Pages of ListDenylistEntries.
const DENYLIST_PAGE: PageLimits = PageLimits::LONG;
/// Pages of ListProviders.
const PROVIDERS_PAGE: PageLimits = PageLimits::LONG;

/// The answer to an evaluation and its stored record: `inputs` as received, of `kind`, about
/// `subject` (the buyer's or applicant's code as parsed); `respond` wraps the decision.
fn render<R>(
    evaluation: &Evaluation,
    (kind, subject): (pb::DecisionKind, &str),
    inputs: pb::stored_decision::Inputs,
    respond: impl FnOnce(pb::Decision) -> R,
) -> Rendered<R> {
    let decision = wire::decision(
        &evaluation.decision,
        evaluation.decision_id,
        evaluation.evaluated_at,
    );
    let record = wire::stored_decision(
        &evaluation.policy.record,
        (evaluation.decision_id, evaluation.evaluated_at),
        (kind, subject),
        inputs,
        pb::stored_decision::Result::Decision(decision.clone()),
    );
    Rendered {
        record: prost::Message::encode_to_vec(&record),
        response: respond(decision),
    }
}

/// A decision id: a UUID.
fn decision_id(v: &mut Violations, text: &str) -> Option<Uuid> {
    Uuid::parse_str(text)
        .map_err(|_| v.add("decision_id", "must be a decision id (a UUID)"))
        .ok()
}

/// The items of the repeated field `field`: at most `max`, and at least one when `required`;
/// each parsed by `parse` at `field[i]` with the keys seen so far, which must be unique.
fn each<W, T, K>(
    v: &mut Violations,
    field: &str,
    (items, required, max): (&[W], bool, usize),
    mut parse: impl FnMut(&mut Violations, &str, &W, &mut HashSet<K>) -> Option<T>,
) -> Vec<T> {
    if required && (items.is_empty() || items.len() > max) {
        v.add(field, format!("must have 1 to {max} {field}"));
    } else if items.len() > max {
        v.add(field, format!("must have at most {max} {field}"));
    }
    let mut seen = HashSet::new();
    items
        .iter()
        .take(max)
        .enumerate()
        .filter_map(|(i, item)| parse(v, &format!("{field}[{i}]"), item, &mut seen))
        .collect()
}

/// Where a page of ListPolicies starts: after this policy id and publish sequence.
fn policy_position(v: &mut Violations, page: &Page) -> Option<Option<(String, i64)>> {
    let Some(after) = &page.after else {
        return Some(None);
    };
    let position = after
        .split_once('/')
        .and_then(|(id, sequence)| Some((id.to_owned(), sequence.parse::<i64>().ok()?)));
    if position.is_none() {
        v.add("page_token", "page_token is not valid");
        return None;
    }
    Some(position)
}

/// The gRPC face of the rules service.
#[derive(Clone, Debug)]
pub struct RulesGrpc {
    catalog: Arc<Catalog>,
    publicity: Arc<Publicity>,
}

impl RulesGrpc {
    /// Serves `catalog`, counting publicity periods as `publicity` says.
    pub fn new(catalog: Arc<Catalog>, publicity: Publicity) -> Self {
        Self {
            catalog,
            publicity: Arc::new(publicity),
        }
    }
}

#[tonic::async_trait]
impl pb::rules_service_server::RulesService for RulesGrpc {
    async fn evaluate_compute_voucher(
        &self,
        request: Request<pb::EvaluateComputeVoucherRequest>,
    ) -> Result<Response<pb::EvaluateComputeVoucherResponse>, Status> {
        let now = Utc::now();
        let req = request.into_inner();
        let mut v = Violations::new();
        let claim = wire::claim(&mut v, "claim", req.claim.as_ref());
        let version = wire::version(&mut v, "policy_version", &req.policy_version);
        v.check(RulesError::Invalid)?;
        let claim = claim.expect("validated");
        let inputs = |evaluation: &Evaluation| {
            pb::stored_decision::Inputs::ComputeVoucher(pb::ComputeVoucherInputs {
                claim: req.claim.clone(),
                buyer_on_denylist: evaluation.buyer_on_denylist,
                provider_registry: evaluation
                    .provider_registry
                    .as_ref()
                    .map(wire::registry_answer_to_proto),
            })
        };
        let kind = (pb::DecisionKind::ComputeVoucher, claim.buyer_uscc.as_str());
        let response = ops::evaluate::compute_voucher(&self.catalog, &claim, version, now, |e| {
            render(e, kind, inputs(e), |decision| {
                pb::EvaluateComputeVoucherResponse {
                    decision: Some(decision),
                }
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn evaluate_data_infra_proposal(
        &self,
        request: Request<pb::EvaluateDataInfraProposalRequest>,
    ) -> Result<Response<pb::EvaluateDataInfraProposalResponse>, Status> {
        let now = Utc::now();
        let req = request.into_inner();
        let mut v = Violations::new();
        let proposal = wire::proposal(&mut v, "proposal", req.proposal.as_ref());
        let version = wire::version(&mut v, "policy_version", &req.policy_version);
        v.check(RulesError::Invalid)?;
        let proposal = proposal.expect("validated");
        let inputs =
            pb::stored_decision::Inputs::DataInfra(req.proposal.clone().unwrap_or_default());
        let kind = (
            pb::DecisionKind::DataInfra,
            proposal.applicant_uscc.as_str(),
        );
        let response = ops::evaluate::data_infra(&self.catalog, &proposal, version, now, |e| {
            render(e, kind, inputs, |decision| {
                pb::EvaluateDataInfraProposalResponse {
                    decision: Some(decision),
                }
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn rank_selection_round(
        &self,
        request: Request<pb::RankSelectionRoundRequest>,
    ) -> Result<Response<pb::RankSelectionRoundResponse>, Status> {
        let now = Utc::now();
        let req = request.into_inner();
        let mut v = Violations::new();
        let pool = v.money("pool_available", req.pool_available.as_ref());
        let version = wire::version(&mut v, "policy_version", &req.policy_version);
        let candidates = each(
            &mut v,
            "candidates",
            (&req.candidates, true, ranking::CANDIDATES_MAX),
            wire::candidate,
        );
        v.check(RulesError::Invalid)?;
        let pool = pool.expect("validated");
        let render = |ranking: &ops::evaluate::Ranking| {
            let response = wire::round(&ranking.result, &ranking.policy, ranking.decision_id);
            let record = wire::stored_decision(
                &ranking.policy.record,
                (ranking.decision_id, ranking.evaluated_at),
                (pb::DecisionKind::SelectionRound, ""),
                pb::stored_decision::Inputs::SelectionRound(req.clone()),
                pb::stored_decision::Result::Ranking(response.clone()),
            );
            Rendered {
                record: prost::Message::encode_to_vec(&record),
                response,
            }
        };
        let response = ops::evaluate::rank_selection_round(
            &self.catalog,
            pool,
            &candidates,
            version,
            now,
            render,
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        let tenant = subsidy_common::auth::Caller::of(&request)?.tenant();
        let mut v = Violations::new();
        let id = decision_id(&mut v, &request.get_ref().decision_id);
        v.check(RulesError::Invalid)?;
        let record =
            ops::decisions::get(self.catalog.store(), id.expect("validated"), &tenant).await?;
        Ok(Response::new(pb::GetDecisionResponse {
            decision: Some(wire::decode_stored(&record)),
        }))
    }

    async fn replay_decision(
        &self,
        request: Request<pb::ReplayDecisionRequest>,
    ) -> Result<Response<pb::ReplayDecisionResponse>, Status> {
        let tenant = subsidy_common::auth::Caller::of(&request)?.tenant();
        let mut v = Violations::new();
        let id = decision_id(&mut v, &request.get_ref().decision_id);
        v.check(RulesError::Invalid)?;
        let record =
            ops::decisions::get(self.catalog.store(), id.expect("validated"), &tenant).await?;
        let stored = wire::decode_stored(&record);
        let response = match wire::replay_inputs(&stored) {
            Ok((policy_id, version, inputs)) => {
                let (replayed, policy) =
                    ops::decisions::replay(&self.catalog, &policy_id, version, &inputs).await?;
                let rendered = wire::replayed(&stored, &replayed, &policy);
                wire::replay_response(&stored, rendered, &policy.record.spec.content_sha256())
            }
            // Inputs this code no longer reads cannot be replayed: that is the finding.
            Err(why) => wire::unreplayable(&stored, why),
        };
        tracing::info!(
            decision_id = %response.decision_id,
            identical = response.identical,
            differences = response.differences.len(),
            "decision replayed"
        );
        Ok(Response::new(response))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let now = Utc::now();
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.policy_id.is_empty() {
            v.add("policy_id", "is required");
        }
        let version = wire::version(&mut v, "version", &req.version);
        v.check(RulesError::Invalid)?;
        let policy = ops::policies::get(&self.catalog, &req.policy_id, version, now).await?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(wire::policy(&policy.record, true)),
        }))
    }

    async fn get_publicity_period(
        &self,
        request: Request<pb::GetPublicityPeriodRequest>,
    ) -> Result<Response<pb::GetPublicityPeriodResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let program = v.enum_value(
            "program",
            req.program,
            pb::Program::Unspecified,
            wire::program,
        );
        if matches!(program, Some(None)) {
            v.add("program", "is required");
        }
        let start = v.instant("start_time", req.start_time.as_ref());
        let version = wire::version(&mut v, "policy_version", &req.policy_version);
        v.check(RulesError::Invalid)?;
        let program = program.flatten().flatten().expect("validated");
        let start = start.expect("validated");
        let (policy, working_days, period) = ops::policies::publicity_period(
            &self.catalog,
            &self.publicity,
            program,
            version,
            start,
        )
        .await?;
        Ok(Response::new(pb::GetPublicityPeriodResponse {
            start_time: req.start_time,
            end_time: Some(subsidy_common::edge::timestamp(
                period.end.timestamp_micros(),
            )),
            last_working_day: period.last_working_day.map(subsidy_common::edge::date),
            working_days,
            policy_id: program.policy_id().to_owned(),
            policy_version: policy.version(),
            calendar_covered: period.covered,
        }))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let program = v
            .enum_value(
                "program",
                req.program,
                pb::Program::Unspecified,
                wire::program,
            )
            .map(Option::flatten);
        let program_filter = req.program.to_string();
        let page = v.page(
            PageRequest {
                kind: "policies",
                size: req.page_size,
                token: &req.page_token,
                filters: &[&program_filter],
            },
            POLICIES_PAGE,
        );
        let after = page.as_ref().and_then(|page| policy_position(&mut v, page));
        v.check(RulesError::Invalid)?;
        let (program, page, after) = (
            program.expect("validated"),
            page.expect("validated"),
            after.expect("validated"),
        );
        let after = after
            .as_ref()
            .map(|(id, sequence)| (id.as_str(), *sequence));
        let limit = usize::try_from(page.fetch_limit()).expect("a page is small");
        let mut policies = ops::policies::list(&self.catalog, program, after, limit).await?;
        let next_page_token = page.finish(&mut policies, |p| {
            format!("{}/{}", p.record.policy_id(), p.record.publish_sequence)
        });
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: policies
                .iter()
                .map(|p| wire::policy(&p.record, false))
                .collect(),
            next_page_token,
        }))
    }

    async fn publish_policy(
        &self,
        request: Request<pb::PublishPolicyRequest>,
    ) -> Result<Response<pb::PublishPolicyResponse>, Status> {
        let author = Author::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = if req.validate_only && req.request_id.is_empty() {
            None
        } else {
            v.request_id(&req.request_id)
        };
        let spec = draft::parse(&mut v, "policy", req.policy.as_ref(), Effective::Required);
        v.check(RulesError::Invalid)?;
        let spec = spec.expect("validated");
        let respond = |record: &_| pb::PublishPolicyResponse {
            policy: Some(wire::policy(record, true)),
        };
        let store = self.catalog.store();
        if req.validate_only {
            let response =
                ops::policies::publish(store, spec, &author, Publication::ValidateOnly, respond)
                    .await?;
            return Ok(Response::new(response));
        }
        let publication = Publication::Publish {
            request_id: request_id.as_ref().expect("required unless validate_only"),
            fingerprint: &fingerprint("PublishPolicy", &req),
        };
        let response = ops::policies::publish(store, spec, &author, publication, respond).await?;
        if let Some(policy) = &response.policy {
            tracing::info!(
                policy_id = %policy.policy_id,
                policy_version = %policy.version,
                content_sha256 = %policy.content_sha256,
                publisher = %policy.publisher,
                "policy publication answered"
            );
        }
        Ok(Response::new(response))
    }

    async fn simulate_policy(
        &self,
        request: Request<pb::SimulatePolicyRequest>,
    ) -> Result<Response<pb::SimulatePolicyResponse>, Status> {
        let now = Utc::now();
        let req = request.into_inner();
        let mut v = Violations::new();
        let effective = Effective::On(shanghai_date(now));
        let spec = draft::parse(&mut v, "draft", req.draft.as_ref(), effective);
        let program = spec.as_ref().map(PolicySpec::program);
        let baseline_version = wire::version(&mut v, "baseline_version", &req.baseline_version);
        let cases = each(
            &mut v,
            "cases",
            (&req.cases, true, simulation::CASES_MAX),
            |v, prefix, case, seen| wire::case(v, prefix, case, seen, program),
        );
        v.check(RulesError::Invalid)?;
        let spec = spec.expect("validated");
        let simulated = ops::evaluate::simulate(
            &self.catalog,
            spec,
            &cases,
            baseline_version,
            req.include_trace,
            now,
        )
        .await?;
        // The draft is shown with the period it was sent with; it was simulated as in effect.
        let mut draft = wire::policy(&simulated.draft.record, false);
        let wire_draft = req.draft.as_ref().expect("validated");
        draft.effective_start = wire_draft.effective_start;
        draft.effective_end = wire_draft.effective_end;
        Ok(Response::new(wire::simulation(
            draft,
            &simulated.baseline.record,
            &simulated.simulation,
            |decision| wire::decision(decision, Uuid::now_v7(), now),
        )))
    }

    async fn list_denylist_entries(
        &self,
        request: Request<pb::ListDenylistEntriesRequest>,
    ) -> Result<Response<pb::ListDenylistEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let only = v.optional_uscc("uscc", &req.uscc);
        let only_filter = only
            .as_ref()
            .and_then(Option::as_ref)
            .map(|code| code.as_str().to_owned())
            .unwrap_or_default();
        let page = v.page(
            PageRequest {
                kind: "denylist",
                size: req.page_size,
                token: &req.page_token,
                filters: &[&only_filter],
            },
            DENYLIST_PAGE,
        );
        v.check(RulesError::Invalid)?;
        let (only, page) = (only.expect("validated"), page.expect("validated"));
        let (mut entries, state) = ops::denylist::page(
            self.catalog.store(),
            only.as_ref(),
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let next_page_token = page.finish(&mut entries, |e| e.uscc.as_str().to_owned());
        Ok(Response::new(wire::denylist_page(
            &entries,
            &state,
            next_page_token,
        )))
    }

    async fn replace_denylist(
        &self,
        request: Request<pb::ReplaceDenylistRequest>,
    ) -> Result<Response<pb::ReplaceDenylistResponse>, Status> {
        let author = Author::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let entries = each(
            &mut v,
            "entries",
            (&req.entries, false, denylist::ENTRIES_MAX),
            wire::denylist_entry,
        );
        v.check(RulesError::Invalid)?;
        let response = ops::denylist::replace(
            self.catalog.store(),
            &entries,
            &request_id.expect("validated"),
            &fingerprint("ReplaceDenylist", &req),
            &author,
            wire::replacement,
        )
        .await?;
        tracing::info!(
            entry_count = response.entry_count,
            content_sha256 = %response.content_sha256,
            "denylist replaced"
        );
        Ok(Response::new(response))
    }

    async fn register_provider(
        &self,
        request: Request<pb::RegisterProviderRequest>,
    ) -> Result<Response<pb::RegisterProviderResponse>, Status> {
        let author = Author::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let uscc = v.uscc("uscc", &req.uscc);
        let name = v.text("name", &req.name, registry::NAME_CHARS_MAX);
        let effective_date = v.date("effective_date", req.effective_date.as_ref());
        let reason = v.text("reason", &req.reason, registry::REASON_CHARS_MAX);
        let data_centers = each(
            &mut v,
            "data_centers",
            (&req.data_centers, true, registry::DATA_CENTERS_MAX),
            wire::data_center,
        );
        v.check(RulesError::Invalid)?;
        let registration = Registration {
            uscc: uscc.expect("validated"),
            name: name.expect("validated"),
            effective_date: effective_date.expect("validated"),
            reason: reason.expect("validated"),
            data_centers,
        };
        let response = ops::registry::register(
            self.catalog.store(),
            &registration,
            (
                &request_id.expect("validated"),
                &fingerprint("RegisterProvider", &req),
            ),
            &author,
            |provider| pb::RegisterProviderResponse {
                provider: Some(wire::provider(provider)),
            },
        )
        .await?;
        tracing::info!(uscc = %registration.uscc.as_str(), "provider registered");
        Ok(Response::new(response))
    }

    async fn update_provider_status(
        &self,
        request: Request<pb::UpdateProviderStatusRequest>,
    ) -> Result<Response<pb::UpdateProviderStatusResponse>, Status> {
        let author = Author::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let uscc = v.uscc("uscc", &req.uscc);
        let status = wire::provider_status(&mut v, "status", req.status, true);
        let effective_date = v.date("effective_date", req.effective_date.as_ref());
        let reason = v.text("reason", &req.reason, registry::REASON_CHARS_MAX);
        v.check(RulesError::Invalid)?;
        let update = StatusUpdate {
            uscc: uscc.expect("validated"),
            status: status.flatten().expect("validated"),
            effective_date: effective_date.expect("validated"),
            reason: reason.expect("validated"),
        };
        let response = ops::registry::update_status(
            self.catalog.store(),
            &update,
            (
                &request_id.expect("validated"),
                &fingerprint("UpdateProviderStatus", &req),
            ),
            &author,
            |provider, change| pb::UpdateProviderStatusResponse {
                provider: Some(wire::provider(provider)),
                change: Some(wire::status_change(change)),
            },
        )
        .await?;
        tracing::info!(uscc = %update.uscc.as_str(), status = %update.status, "provider status changed");
        Ok(Response::new(response))
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::GetProviderResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let uscc = v.uscc("uscc", &req.uscc);
        v.check(RulesError::Invalid)?;
        let (provider, history) =
            ops::registry::get(self.catalog.store(), &uscc.expect("validated")).await?;
        Ok(Response::new(pb::GetProviderResponse {
            provider: Some(wire::provider(&provider)),
            history: history.iter().map(wire::status_change).collect(),
        }))
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let only = wire::provider_status(&mut v, "status", req.status, false);
        let only_filter = only
            .flatten()
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default();
        let page = v.page(
            PageRequest {
                kind: "providers",
                size: req.page_size,
                token: &req.page_token,
                filters: &[&only_filter],
            },
            PROVIDERS_PAGE,
        );
        v.check(RulesError::Invalid)?;
        let (only, page) = (only.expect("validated"), page.expect("validated"));
        let mut providers = ops::registry::page(
            self.catalog.store(),
            only,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let next_page_token = page.finish(&mut providers, |p| p.uscc.as_str().to_owned());
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers.iter().map(wire::provider).collect(),
            next_page_token,
        }))
    }
}
