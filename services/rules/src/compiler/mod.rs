//! The policy-draft compiler: from a draft (or a stored version) to a policy ready to evaluate.
//!
//! A version is compiled in three steps, each refusing what the next would trip over:
//! 1. the draft's fields are parsed into a [`PolicySpec`] ([`draft`]): version, effective
//!    period, typed parameters of the right program, document and description;
//! 2. the document is validated and compiled by the engine (`domain::graph`): a self-contained
//!    JDM graph without script nodes whose every expression compiles;
//! 3. the graph is probed with sample claims or proposals ([`probe`]): it must return every
//!    output its program reads and agree with its own typed parameters.
//!
//! Publication, validation-only calls, simulations and the seeding of the shipped policies all
//! go through [`validate_draft`] or [`compile_draft`]; the catalog recompiles stored versions
//! with [`compile`].

pub mod draft;
pub mod probe;

use subsidy_proto::rules as pb;
use subsidy_proto::status::FieldViolation;

use crate::domain::Program;
use crate::domain::graph::{DocumentProblem, PolicyGraph};
use crate::domain::policy::{CompiledPolicy, PolicyRecord, PolicySpec};
use crate::error::RulesError;

/// Why a policy version does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecProblem {
    /// The document has script (function) nodes; their ids.
    ScriptNodes(Vec<String>),
    /// A part of the version is not valid: the draft's field and why.
    Invalid {
        /// The field of the draft, for example `document_json`.
        field: &'static str,
        /// Why.
        why: String,
    },
}

/// Validates and compiles the graph of `record`, then probes it: the graph must return what its
/// program needs and agree with the typed parameters (see [`probe`]).
pub fn compile(record: PolicyRecord) -> Result<CompiledPolicy, SpecProblem> {
    let graph =
        PolicyGraph::parse(&record.spec.document_json).map_err(|problem| match problem {
            DocumentProblem::ScriptNodes(ids) => SpecProblem::ScriptNodes(ids),
            DocumentProblem::Invalid(why) => SpecProblem::Invalid {
                field: "document_json",
                why,
            },
        })?;
    let compiled = CompiledPolicy { record, graph };
    let probed = match compiled.program() {
        Program::ComputeVoucher => probe::compute_voucher(&compiled),
        Program::DataInfra => probe::data_infra(&compiled),
    };
    probed.map_err(|why| SpecProblem::Invalid {
        field: "document_json",
        why,
    })?;
    Ok(compiled)
}

/// Validates and compiles a parsed draft; problems are reported on the draft's fields at
/// `prefix` (for example `policy`).
pub fn compile_draft(prefix: &str, spec: PolicySpec) -> Result<CompiledPolicy, RulesError> {
    let policy_id = spec.program().policy_id();
    let version = spec.version.to_string();
    compile(PolicyRecord::draft(spec)).map_err(|problem| match problem {
        SpecProblem::ScriptNodes(node_ids) => RulesError::PolicyHasScriptNode {
            policy_id,
            version,
            violations: node_ids
                .iter()
                .map(|id| {
                    FieldViolation::new(
                        format!("{prefix}.document_json"),
                        format!(
                            "node {id:?} is a function (script) node; script nodes are not allowed"
                        ),
                    )
                })
                .collect(),
            node_ids,
        },
        SpecProblem::Invalid { field, why } => RulesError::PolicyInvalid {
            policy_id,
            version,
            violations: vec![FieldViolation::new(format!("{prefix}.{field}"), why)],
        },
    })
}

/// Validates a draft as PublishPolicy does (fields at `prefix`, the effective period
/// required) and compiles it.
pub fn validate_draft(prefix: &str, draft: &pb::PolicyDraft) -> Result<CompiledPolicy, RulesError> {
    let mut v = subsidy_common::edge::Violations::new();
    let spec = draft::parse(&mut v, prefix, Some(draft), draft::Effective::Required);
    v.finish().map_err(RulesError::Invalid)?;
    compile_draft(prefix, spec.expect("validated"))
}
