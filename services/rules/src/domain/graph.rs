//! The configurable part of a policy: a JDM decision graph run by the GoRules ZEN engine.
//!
//! A document is accepted only as a self-contained graph of input, output, expression, decision
//! table and switch nodes. Script (function) nodes are refused because their JavaScript makes a
//! decision neither auditable nor deterministic; sub-decision and custom nodes are refused
//! because they reach outside the document. Every expression and table cell is compiled at
//! validation, so that a typo cannot silently turn a table cell into "no match".
//!
//! The engine evaluates with `rust_decimal` numbers. Its evaluation future is not `Send` (its
//! values are reference-counted) and does no I/O for the node kinds allowed here, so it is driven
//! to completion synchronously, in the calling thread.

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::Value;
use zen_engine::model::{DecisionContent, DecisionNodeKind, GraphContent};
use zen_engine::{Decision, EvaluationOptions};
use zen_expression::variable::{Symbol, Variable};

use super::canonical;

/// How deep the engine may nest; allowed graphs never nest, so this only bounds a bad document.
const MAX_DEPTH: u8 = 4;
/// Most nodes in one graph.
pub const NODES_MAX: usize = 200;
/// Largest accepted decision document, in bytes.
pub const DOCUMENT_BYTES_MAX: usize = 1024 * 1024;
/// Longest accepted expression (expression, switch condition or table cell), in characters.
pub const EXPRESSION_CHARS_MAX: usize = 4_096;
/// Deepest accepted nesting of brackets (`(`, `[`, `{`) in one expression. The engine's
/// parser takes memory exponential in pathological nesting (the fuzz target
/// `policy_documents` found an expression of about a hundred unclosed `[` that took more than
/// 4 GiB); real policies nest a few levels.
pub const EXPRESSION_NESTING_MAX: usize = 12;

/// The JDM node types a policy may use.
const ALLOWED_NODE_TYPES: [&str; 5] = [
    "inputNode",
    "outputNode",
    "expressionNode",
    "decisionTableNode",
    "switchNode",
];
/// The JDM type of script (JavaScript function) nodes.
const SCRIPT_NODE_TYPE: &str = "functionNode";

/// Why a decision document is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocumentProblem {
    /// The document has script nodes; their ids.
    ScriptNodes(Vec<String>),
    /// The document is not an acceptable graph; why.
    Invalid(String),
}

/// Why the engine could not produce a decision from a published policy. Logged, never sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineFailure {
    /// The engine returned an error (its own text, for the log).
    #[error("the engine failed: {0}")]
    Engine(String),
    /// The graph's result lacks a field the program needs, or has the wrong type.
    #[error("the graph's result has no valid `{0}`")]
    MissingOutput(String),
    /// The graph computed a negative rate.
    #[error("the graph computed a negative rate {0}")]
    NegativeRate(Decimal),
}

/// One step of the rules evaluated for a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceStep {
    /// The graph node's id, or `rust:…` for a typed check after the engine.
    pub node_id: String,
    /// The node's or check's name.
    pub node_name: String,
    /// The ZEN node type, or `typed`.
    pub node_kind: String,
    /// Canonical JSON of the step's input, at most 4 KiB.
    pub input_summary_json: String,
    /// Canonical JSON of the step's output, at most 4 KiB.
    pub output_summary_json: String,
    /// Whether the step's check passed; true for steps that only compute.
    pub passed: bool,
}

impl TraceStep {
    /// A step of the typed checks applied after the engine.
    pub fn typed(id: &str, name: &str, input: Value, output: Value, passed: bool) -> Self {
        TraceStep {
            node_id: format!("rust:{id}"),
            node_name: name.to_owned(),
            node_kind: "typed".to_owned(),
            input_summary_json: canonical::summary(&input),
            output_summary_json: canonical::summary(&output),
            passed,
        }
    }
}

/// A validated, compiled decision graph.
#[derive(Debug)]
pub struct PolicyGraph {
    decision: Decision,
    /// Node id → (JDM type, name).
    nodes: HashMap<String, (String, String)>,
}

/// What one run of the graph produced.
pub struct GraphRun {
    /// The graph's result.
    pub output: Variable,
    /// The nodes evaluated, in order (input and output nodes left out).
    pub steps: Vec<TraceStep>,
}

impl PolicyGraph {
    /// Validates and compiles a JDM document.
    pub fn parse(document_json: &str) -> Result<Self, DocumentProblem> {
        let invalid = |why: String| DocumentProblem::Invalid(why);
        if document_json.len() > DOCUMENT_BYTES_MAX {
            return Err(invalid(format!(
                "the document is larger than {DOCUMENT_BYTES_MAX} bytes"
            )));
        }
        let value: Value = serde_json::from_str(document_json)
            .map_err(|e| invalid(format!("the document is not JSON: {e}")))?;
        check_node_types(&value)?;
        let content: DecisionContent = serde_json::from_value(value)
            .map_err(|e| invalid(format!("the document is not a JDM decision graph: {e}")))?;
        let DecisionContent::Graph(graph) = content else {
            return Err(invalid("a JDM decision graph is required".into()));
        };
        let nodes = index_nodes(&graph)?;
        compile_expressions(&graph)?;
        let mut content: GraphContent = Arc::unwrap_or_clone(graph);
        content.compile();
        let decision = Decision::from(content);
        decision
            .validate()
            .map_err(|e| invalid(format!("the graph is not valid: {e}")))?;
        Ok(PolicyGraph { decision, nodes })
    }

    /// Runs the graph on `input`; with `trace`, records every node evaluated.
    pub fn run(&self, input: Variable, trace: bool) -> Result<GraphRun, EngineFailure> {
        let options = EvaluationOptions {
            trace,
            max_depth: MAX_DEPTH,
        };
        let response =
            futures::executor::block_on(self.decision.evaluate_with_opts(input, options))
                .map_err(|e| EngineFailure::Engine(e.to_string()))?;
        let mut steps = Vec::new();
        if let Some(traces) = response.trace.and_then(|t| t.into_graph()) {
            let mut traces: Vec<_> = traces.into_values().collect();
            traces.sort_by_key(|t| t.order);
            for t in traces {
                let (kind, name) = self
                    .nodes
                    .get(t.id.as_ref())
                    .cloned()
                    .unwrap_or_else(|| ("unknown".into(), t.name.to_string()));
                if kind == "inputNode" || kind == "outputNode" {
                    continue;
                }
                let output = t.output.to_value();
                let mut output_summary = match &output {
                    Value::Object(map) => map.clone(),
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("value".into(), other.clone());
                        map
                    }
                };
                if kind == "decisionTableNode"
                    && let Some(data) = &t.trace_data
                {
                    output_summary.insert("matched".into(), data.to_value());
                }
                steps.push(TraceStep {
                    node_id: t.id.to_string(),
                    node_name: name,
                    input_summary_json: canonical::summary(&t.input.to_value()),
                    passed: !has_failed_check(&output),
                    output_summary_json: canonical::summary(&Value::Object(output_summary)),
                    node_kind: kind,
                });
            }
        }
        Ok(GraphRun {
            output: response.result,
            steps,
        })
    }
}

/// Checks the raw document before the engine reads it: a JSON object with at most
/// [`NODES_MAX`] nodes, none of them a script node, all of an allowed type.
fn check_node_types(value: &Value) -> Result<(), DocumentProblem> {
    let invalid = |why: String| DocumentProblem::Invalid(why);
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the document must be a JSON object".into()))?;
    if object.contains_key("blocks") {
        return Err(invalid(
            "the document is a ZEN policy document; a JDM decision graph (nodes and edges) is required".into(),
        ));
    }
    let nodes = object
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the document must have a `nodes` array".into()))?;
    if nodes.len() > NODES_MAX {
        return Err(invalid(format!(
            "the graph has more than {NODES_MAX} nodes"
        )));
    }
    // Script nodes are looked for before anything else is parsed, so that a script node is
    // reported as such even when the rest of the document is also wrong.
    let node_type = |node: &Value| node.get("type").and_then(Value::as_str).map(str::to_owned);
    let node_id = |node: &Value| {
        node.get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let scripts: Vec<String> = nodes
        .iter()
        .filter(|node| node_type(node).as_deref() == Some(SCRIPT_NODE_TYPE))
        .map(node_id)
        .collect();
    if !scripts.is_empty() {
        return Err(DocumentProblem::ScriptNodes(scripts));
    }
    for node in nodes {
        let kind = node_type(node).unwrap_or_default();
        if !ALLOWED_NODE_TYPES.contains(&kind.as_str()) {
            return Err(invalid(format!(
                "node {:?} has type {kind:?}; allowed types are {}",
                node_id(node),
                ALLOWED_NODE_TYPES.join(", ")
            )));
        }
    }
    Ok(())
}

/// Node id → (JDM type, name) of a graph whose ids are unique and which has an output node.
fn index_nodes(graph: &GraphContent) -> Result<HashMap<String, (String, String)>, DocumentProblem> {
    let mut index = HashMap::new();
    for node in &graph.nodes {
        let kind = node_kind_name(&node.kind).to_owned();
        if index
            .insert(node.id.to_string(), (kind, node.name.to_string()))
            .is_some()
        {
            return Err(DocumentProblem::Invalid(format!(
                "node id {:?} is used twice",
                node.id
            )));
        }
    }
    let outputs = graph
        .nodes
        .iter()
        .filter(|node| matches!(node.kind, DecisionNodeKind::OutputNode { .. }))
        .count();
    if outputs == 0 {
        return Err(DocumentProblem::Invalid(
            "the graph has no output node".into(),
        ));
    }
    Ok(index)
}

/// Whether a node's output holds a `checks` object with a `false` member.
fn has_failed_check(output: &Value) -> bool {
    output
        .get("checks")
        .and_then(Value::as_object)
        .is_some_and(|checks| checks.values().any(|v| v == &Value::Bool(false)))
}

fn node_kind_name(kind: &DecisionNodeKind) -> &'static str {
    match kind {
        DecisionNodeKind::InputNode { .. } => "inputNode",
        DecisionNodeKind::OutputNode { .. } => "outputNode",
        DecisionNodeKind::FunctionNode { .. } => "functionNode",
        DecisionNodeKind::DecisionNode { .. } => "decisionNode",
        DecisionNodeKind::DecisionTableNode { .. } => "decisionTableNode",
        DecisionNodeKind::ExpressionNode { .. } => "expressionNode",
        DecisionNodeKind::SwitchNode { .. } => "switchNode",
        DecisionNodeKind::CustomNode { .. } => "customNode",
    }
}

/// Refuses an expression longer than [`EXPRESSION_CHARS_MAX`] or nested deeper than
/// [`EXPRESSION_NESTING_MAX`], before the engine's parser sees it.
fn check_expression(node: &str, source: &str) -> Result<(), DocumentProblem> {
    let chars = source.chars().count();
    if chars > EXPRESSION_CHARS_MAX {
        return Err(DocumentProblem::Invalid(format!(
            "node {node:?}: an expression of {chars} characters is longer than {EXPRESSION_CHARS_MAX}"
        )));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > EXPRESSION_NESTING_MAX {
        return Err(DocumentProblem::Invalid(format!(
            "node {node:?}: an expression nests brackets {deepest} deep, more than {EXPRESSION_NESTING_MAX}"
        )));
    }
    Ok(())
}

/// Compiles every expression, switch condition and table cell of the graph.
fn compile_expressions(graph: &GraphContent) -> Result<(), DocumentProblem> {
    let mut isolate = zen_expression::Isolate::new();
    let fail = |node: &str, source: &str, error: String| {
        DocumentProblem::Invalid(format!(
            "node {node:?}: expression {source:?} does not compile: {error}"
        ))
    };
    for node in &graph.nodes {
        match &node.kind {
            DecisionNodeKind::ExpressionNode { content } => {
                for expression in content.expressions.iter() {
                    if expression.key.is_empty() || expression.value.is_empty() {
                        continue;
                    }
                    check_expression(&node.id, &expression.value)?;
                    isolate
                        .compile_standard(&expression.value)
                        .map_err(|e| fail(&node.id, &expression.value, e.to_string()))?;
                }
            }
            DecisionNodeKind::SwitchNode { content } => {
                for statement in content.statements.iter() {
                    if statement.condition.trim().is_empty() {
                        continue;
                    }
                    check_expression(&node.id, &statement.condition)?;
                    isolate
                        .compile_standard(&statement.condition)
                        .map_err(|e| fail(&node.id, &statement.condition, e.to_string()))?;
                }
            }
            DecisionNodeKind::DecisionTableNode { content } => {
                for rule in content.rules.iter() {
                    for input in content.inputs.iter() {
                        let Some(cell) = rule.get(&input.id).filter(|c| !c.is_empty()) else {
                            continue;
                        };
                        check_expression(&node.id, cell)?;
                        let compiled = if input.field.is_some() {
                            isolate.compile_unary(cell).map(|_| ())
                        } else {
                            isolate.compile_standard(cell).map(|_| ())
                        };
                        compiled.map_err(|e| fail(&node.id, cell, e.to_string()))?;
                    }
                    for output in content.outputs.iter() {
                        let Some(cell) = rule.get(&output.id).filter(|c| !c.is_empty()) else {
                            continue;
                        };
                        check_expression(&node.id, cell)?;
                        isolate
                            .compile_standard(cell)
                            .map_err(|e| fail(&node.id, cell, e.to_string()))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Builds an engine object from named members.
pub fn object(members: Vec<(&str, Variable)>) -> Variable {
    Variable::from_object(
        members
            .into_iter()
            .map(|(key, value)| (Symbol::from(key), value))
            .collect(),
    )
}

/// An engine string.
pub fn text(value: &str) -> Variable {
    Variable::String(Symbol::from(value))
}

/// Reads a boolean at a dotted path of a result.
pub fn read_bool(output: &Variable, path: &str) -> Result<bool, EngineFailure> {
    output
        .dot(path)
        .and_then(|v| v.as_bool())
        .ok_or_else(|| EngineFailure::MissingOutput(path.to_owned()))
}

/// Reads a number at a dotted path of a result.
pub fn read_number(output: &Variable, path: &str) -> Result<Decimal, EngineFailure> {
    output
        .dot(path)
        .and_then(|v| v.as_number())
        .ok_or_else(|| EngineFailure::MissingOutput(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAPH: &str = r#"{
      "nodes": [
        {"id": "in", "name": "request", "type": "inputNode", "content": {}},
        {"id": "x", "name": "double", "type": "expressionNode",
         "content": {"expressions": [{"id": "e", "key": "checks.big", "value": "amount > 10"},
                                     {"id": "f", "key": "twice", "value": "amount * 2"}]}},
        {"id": "out", "name": "result", "type": "outputNode", "content": {}}
      ],
      "edges": [
        {"id": "a", "sourceId": "in", "targetId": "x"},
        {"id": "b", "sourceId": "x", "targetId": "out"}
      ]
    }"#;

    #[test]
    fn a_graph_runs_with_exact_decimals_and_a_trace_per_node() {
        // Proves: numbers stay exact decimals through the engine and every rule node is traced.
        let graph = PolicyGraph::parse(GRAPH).unwrap();
        let input = object(vec![(
            "amount",
            Variable::Number(Decimal::new(1_234_567, 2)),
        )]);
        let run = graph.run(input, true).unwrap();
        assert_eq!(
            read_number(&run.output, "twice").unwrap(),
            Decimal::new(2_469_134, 2)
        );
        assert!(read_bool(&run.output, "checks.big").unwrap());
        assert_eq!(run.steps.len(), 1);
        assert_eq!(run.steps[0].node_id, "x");
        assert_eq!(run.steps[0].node_kind, "expressionNode");
        assert!(run.steps[0].passed);
    }

    #[test]
    fn script_nodes_are_refused_before_anything_else() {
        // Proves: a function node is reported as a script node even in an otherwise broken graph.
        let document = r#"{"nodes": [{"id": "js", "type": "functionNode", "content": "export const handler = () => ({})"},
                                     {"id": "bad", "type": "noSuchNode"}], "edges": []}"#;
        assert_eq!(
            PolicyGraph::parse(document).unwrap_err(),
            DocumentProblem::ScriptNodes(vec!["js".into()])
        );
    }

    #[test]
    fn expressions_nested_too_deep_or_too_long_are_refused_before_the_engine_parses_them() {
        // Proves the guard against the engine parser's blow-up found by the fuzzer (its input
        // nested about a hundred `[`; parsing it took more than 4 GiB).
        let nested = |depth: usize| {
            GRAPH.replace(
                "amount > 10",
                &format!("startsWith(x{}y, 'a')", "[".repeat(depth)),
            )
        };
        let refused = PolicyGraph::parse(&nested(EXPRESSION_NESTING_MAX + 1));
        assert!(
            matches!(&refused, Err(DocumentProblem::Invalid(why)) if why.contains("nests brackets")),
            "{refused:?}"
        );
        let found = nested(100);
        assert!(matches!(
            PolicyGraph::parse(&found),
            Err(DocumentProblem::Invalid(why)) if why.contains("nests brackets 101 deep")
        ));
        // At the limit the engine parses it (and refuses it as the syntax error it is).
        let at_limit = PolicyGraph::parse(&nested(EXPRESSION_NESTING_MAX - 1));
        assert!(
            matches!(&at_limit, Err(DocumentProblem::Invalid(why)) if why.contains("does not compile")),
            "{at_limit:?}"
        );
        let long = GRAPH.replace(
            "amount > 10",
            &format!("amount > {}", "1".repeat(EXPRESSION_CHARS_MAX)),
        );
        assert!(matches!(
            PolicyGraph::parse(&long),
            Err(DocumentProblem::Invalid(why)) if why.contains("longer than")
        ));
    }

    #[test]
    fn sub_decisions_bad_expressions_and_cycles_are_refused() {
        // Proves: only self-contained, compilable, acyclic graphs are accepted.
        let sub = GRAPH.replace(r#""type": "expressionNode""#, r#""type": "decisionNode""#);
        assert!(matches!(
            PolicyGraph::parse(&sub),
            Err(DocumentProblem::Invalid(_))
        ));
        let typo = GRAPH.replace("amount > 10", "amount >> (");
        assert!(matches!(
            PolicyGraph::parse(&typo),
            Err(DocumentProblem::Invalid(why)) if why.contains("does not compile")
        ));
        let cycle = GRAPH.replace(
            r#"{"id": "b", "sourceId": "x", "targetId": "out"}"#,
            r#"{"id": "b", "sourceId": "x", "targetId": "out"}, {"id": "c", "sourceId": "x", "targetId": "in"}"#,
        );
        assert!(matches!(
            PolicyGraph::parse(&cycle),
            Err(DocumentProblem::Invalid(_))
        ));
        assert!(matches!(
            PolicyGraph::parse("[1]"),
            Err(DocumentProblem::Invalid(_))
        ));
        assert!(matches!(
            PolicyGraph::parse(r#"{"blocks": []}"#),
            Err(DocumentProblem::Invalid(_))
        ));
    }
}
