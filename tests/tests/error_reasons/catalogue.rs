//! The reasons each proto documents, and the collector of the reasons seen with their codes,
//! domains and metadata.

use std::collections::BTreeMap;

use super::*;

/// Reasons a proto documents that this test does not provoke, and where each is proved.
pub(crate) const NOT_PROVOKED_HERE: [(&str, &str, &str); 11] = [
    (
        "subsidy.server",
        "DEADLINE_EXCEEDED",
        "needs a small server deadline and a call held past it; tests/tests/limits.rs (a_call_past_its_deadline_is_deadline_exceeded_with_the_deadline_named) checks it with its `timeout_ms`",
    ),
    (
        "subsidy.server",
        "CONCURRENCY_LIMIT_REACHED",
        "needs a small limit per connection and calls held at once; tests/tests/limits.rs (more_calls_at_once_than_a_connection_may_make_are_refused_at_once) checks it with its `limit` and RetryInfo",
    ),
    (
        "subsidy.application",
        "APPROVED_AMOUNT_EXCEEDS_CONTRACT",
        "unreachable through the API since approval settles on verified invoices, whose total never exceeds the contract total; kept as a backstop and checked in services/application/src/error.rs (tests)",
    ),
    (
        "subsidy.budget",
        "INVARIANT_BACKSTOP",
        "a defect by definition; budget_concurrency.rs provokes it with the naive variant",
    ),
    (
        "subsidy.application",
        "RESERVATION_EXPIRED",
        "provoked by approving_a_claim_whose_hold_lapsed_answers_reservation_expired below (its own stack: one-second holds)",
    ),
    (
        "subsidy.application",
        "DOCUMENT_DIGEST_MISMATCH",
        "provoked by services/application/tests/documents.rs (content_that_does_not_match_its_declaration_stores_nothing), which also checks nothing is stored",
    ),
    (
        "subsidy.application",
        "DOCUMENT_SIZE_MISMATCH",
        "provoked by services/application/tests/documents.rs (content_that_does_not_match_its_declaration_stores_nothing)",
    ),
    (
        "subsidy.application",
        "DOCUMENT_TOO_LARGE",
        "provoked by services/application/tests/documents.rs (documents_above_the_limits_are_refused_before_their_content, small limits)",
    ),
    (
        "subsidy.application",
        "APPLICATION_DOCUMENTS_TOO_LARGE",
        "provoked by services/application/tests/documents.rs (documents_above_the_limits_are_refused_before_their_content, small limits)",
    ),
    (
        "subsidy.application",
        "DOCUMENT_NOT_FOUND",
        "provoked by services/application/tests/documents.rs (another_applicant_neither_downloads_nor_lists_nor_uploads)",
    ),
    (
        "subsidy.application",
        "DOCUMENT_CORRUPTED",
        "provoked by services/application/tests/documents.rs (an_altered_stored_object_ends_the_download_with_data_loss)",
    ),
];

/// The proto files whose headers document error reasons, read by [`documented`].
pub(crate) const PROTOS: [&str; 5] = [
    "subsidy/access/v1/access.proto",
    "subsidy/application/v1/application_service.proto",
    "subsidy/rules/v1/rules_service.proto",
    "subsidy/budget/v1/budget_service.proto",
    "subsidy/notification/v1/notification_service.proto",
];

/// What a proto header documents of one reason: its canonical code when named, and its
/// `ErrorInfo.metadata` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Documented {
    /// The code named in the parenthesis after the reason (`(`UNAVAILABLE`)`), if any.
    pub(crate) code: Option<Code>,
    /// Keys every refusal with this reason carries.
    pub(crate) required: BTreeSet<String>,
    /// Keys carried only in some cases (the key is followed by `when ...` or `once ...`).
    pub(crate) optional: BTreeSet<String>,
    /// Keys of which exactly one is carried (`the one of `a`, `b` or `c``).
    pub(crate) one_of: BTreeSet<String>,
}

/// Every reason the headers of [`PROTOS`] document, by domain and reason, read once.
pub(crate) fn catalogue() -> &'static BTreeMap<(String, String), Documented> {
    static CATALOGUE: std::sync::OnceLock<BTreeMap<(String, String), Documented>> =
        std::sync::OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let mut all = BTreeMap::new();
        for file in PROTOS {
            for (key, documented) in documented(file) {
                assert!(
                    all.insert(key.clone(), documented).is_none(),
                    "{key:?} documented twice"
                );
            }
        }
        all
    })
}

/// The reasons the proto header of `file` documents, by domain and reason. A section opens
/// with the line naming `Errors carry one` and the `domain`; each bullet below it names
/// reasons (before its colon; a parenthesis after a reason may name its code) and then the
/// metadata keys (backquoted snake_case names up to the first `;` or full stop, outside
/// parentheses; `none` when there are none). A `Reasons:` list in the opening paragraph
/// must name exactly the reasons of the bullets, so a reason cannot be listed without its keys.
pub(crate) fn documented(file: &str) -> BTreeMap<(String, String), Documented> {
    let text = std::fs::read_to_string(format!("{}/../proto/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("read the proto");
    let header = text.split("\nservice ").next().expect("a header");
    let lines: Vec<&str> = header.lines().collect();
    let mut found = BTreeMap::new();
    for (at, line) in lines.iter().enumerate() {
        if !line.contains("Errors carry one") {
            continue;
        }
        let (base, _) = comment(line).expect("a comment");
        let base = comment_bullet(line).map(|_| base);
        let mut preamble = comment(line).expect("a comment").1.to_owned();
        let mut bullets: Vec<String> = Vec::new();
        for line in &lines[at + 1..] {
            let Some((indent, text)) = comment(line) else {
                break;
            };
            if text.is_empty() {
                break;
            }
            match comment_bullet(line) {
                Some(_) if base.is_some_and(|base| indent <= base) => break,
                Some(bullet) => bullets.push(bullet.to_owned()),
                None => {
                    let into = bullets.last_mut().unwrap_or(&mut preamble);
                    into.push(' ');
                    into.push_str(text);
                }
            }
        }
        let domain = preamble
            .split("domain")
            .nth(1)
            .and_then(|rest| rest.split('`').nth(1))
            .unwrap_or_else(|| panic!("{file}: a domain in {preamble:?}"))
            .to_owned();
        let mut section: BTreeMap<String, Documented> = BTreeMap::new();
        for bullet in &bullets {
            let (reasons, keys) = parse_bullet(bullet);
            assert!(!reasons.is_empty(), "{file}: no reason in {bullet:?}");
            for (reason, code) in reasons {
                let documented = Documented {
                    code,
                    ..keys.clone()
                };
                assert!(
                    section.insert(reason.clone(), documented).is_none(),
                    "{file}: {reason} in two bullets"
                );
            }
        }
        if let Some(list) = preamble.split("Reasons:").nth(1) {
            let listed: BTreeSet<String> = ticks(list.split("`.").next().expect("a list"))
                .into_iter()
                .filter(|token| is_reason(token))
                .collect();
            let bulleted: BTreeSet<String> = section.keys().cloned().collect();
            assert_eq!(
                listed, bulleted,
                "{file}: the `Reasons:` list and the reasons with their keys differ"
            );
        }
        for (reason, documented) in section {
            found.insert((domain.clone(), reason), documented);
        }
    }
    assert!(!found.is_empty(), "{file}: no `Errors carry one` section");
    found
}

/// The indentation (spaces after `// `) and the text of a comment line.
fn comment(line: &str) -> Option<(usize, &str)> {
    let text = line.trim_start().strip_prefix("//")?;
    let text = text.strip_prefix(' ').unwrap_or(text);
    let trimmed = text.trim_start();
    Some((text.len() - trimmed.len(), trimmed.trim_end()))
}

/// The text of a bullet line after its `- `.
fn comment_bullet(line: &str) -> Option<&str> {
    comment(line)?.1.strip_prefix("- ")
}

fn ticks(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn is_reason(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

fn is_key(token: &str) -> bool {
    token.starts_with(|c: char| c.is_ascii_lowercase())
        && token
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A piece of a bullet: plain text or a backquoted token, at a parenthesis depth.
#[derive(Debug)]
enum Piece {
    Text(usize, String),
    Tick(usize, String),
}

fn pieces(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut in_tick = false;
    for c in text.chars() {
        match (in_tick, c) {
            (true, '`') => {
                pieces.push(Piece::Tick(depth, std::mem::take(&mut current)));
                in_tick = false;
            }
            (true, c) => current.push(c),
            (false, '`') => {
                pieces.push(Piece::Text(depth, std::mem::take(&mut current)));
                in_tick = true;
            }
            (false, '(') => {
                pieces.push(Piece::Text(depth, std::mem::take(&mut current)));
                depth += 1;
            }
            (false, ')') => {
                pieces.push(Piece::Text(depth, std::mem::take(&mut current)));
                depth = depth.saturating_sub(1);
            }
            (false, c) => current.push(c),
        }
    }
    pieces.push(Piece::Text(depth, current));
    pieces
}

/// The reasons a bullet names, each with the code its parenthesis names, and its keys.
fn parse_bullet(bullet: &str) -> (Vec<(String, Option<Code>)>, Documented) {
    let pieces = pieces(bullet);
    // The head runs to the first colon outside parentheses and backquotes.
    let split = pieces
        .iter()
        .enumerate()
        .find_map(|(at, piece)| match piece {
            Piece::Text(0, text) => text.find(':').map(|colon| (at, colon)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no colon in {bullet:?}"));
    let mut reasons: Vec<(String, Option<Code>)> = Vec::new();
    let mut code_pending = false;
    for piece in &pieces[..split.0] {
        match piece {
            Piece::Tick(0, token) if is_reason(token) => {
                reasons.push((token.clone(), None));
                code_pending = false;
            }
            Piece::Text(1, _) if reasons.last().is_some_and(|(_, code)| code.is_none()) => {
                code_pending = true;
            }
            Piece::Tick(1, token) if code_pending => {
                if let Some(last) = reasons.last_mut() {
                    last.1 = code_named(token);
                }
                code_pending = false;
            }
            _ => code_pending = false,
        }
    }
    // The keys: depth-0 text and tokens after the colon, to the first `;` or full stop.
    let mut rest: Vec<(bool, String)> = Vec::new();
    let after_colon = match &pieces[split.0] {
        Piece::Text(_, text) => text[split.1 + 1..].to_owned(),
        Piece::Tick(..) => unreachable!(),
    };
    let mut tail = vec![Piece::Text(0, after_colon)];
    tail.extend(pieces.into_iter().skip(split.0 + 1));
    'walk: for piece in tail {
        match piece {
            Piece::Tick(0, token) => rest.push((true, token)),
            Piece::Text(0, text) => {
                let end = text
                    .char_indices()
                    .find(|(at, c)| {
                        *c == ';'
                            || (*c == '.'
                                && text[at + 1..]
                                    .chars()
                                    .next()
                                    .is_none_or(char::is_whitespace))
                    })
                    .map(|(at, _)| at);
                match end {
                    Some(end) => {
                        rest.push((false, text[..end].to_owned()));
                        break 'walk;
                    }
                    None => rest.push((false, text)),
                }
            }
            _ => {}
        }
    }
    let mut documented = Documented::default();
    let mut in_group = false;
    let mut between = String::new();
    for (at, (is_tick, text)) in rest.iter().enumerate() {
        if !is_tick {
            between.push_str(text);
            continue;
        }
        if !is_key(text) {
            between.clear();
            continue;
        }
        let separator_only = between
            .split(|c: char| c == ',' || c.is_whitespace())
            .all(|word| word.is_empty() || word == "or");
        if between.contains("one of") {
            in_group = true;
        } else if in_group && !separator_only {
            in_group = false;
        }
        between.clear();
        let after: String = rest[at + 1..]
            .iter()
            .take_while(|(is_tick, _)| !is_tick)
            .map(|(_, text)| text.as_str())
            .collect();
        let after = after.trim_start();
        let set = if in_group {
            &mut documented.one_of
        } else if after.starts_with("when ") || after.starts_with("once ") {
            &mut documented.optional
        } else {
            &mut documented.required
        };
        set.insert(text.clone());
    }
    (reasons, documented)
}

/// The canonical code `name` spells, if it is one.
fn code_named(name: &str) -> Option<Code> {
    Some(match name {
        "CANCELLED" => Code::Cancelled,
        "UNKNOWN" => Code::Unknown,
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "ABORTED" => Code::Aborted,
        "OUT_OF_RANGE" => Code::OutOfRange,
        "UNIMPLEMENTED" => Code::Unimplemented,
        "INTERNAL" => Code::Internal,
        "UNAVAILABLE" => Code::Unavailable,
        "DATA_LOSS" => Code::DataLoss,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        _ => return None,
    })
}

/// The reasons seen, with their domains.
#[derive(Default)]
pub(crate) struct Seen(pub(crate) BTreeSet<(String, String)>);

impl Seen {
    /// Checks that `result` is the refusal `code` / `reason` of `domain` carrying exactly the
    /// metadata keys the proto header documents for the reason, and none of its conditional
    /// ones (see [`Seen::refused_with`]).
    #[track_caller]
    pub(crate) fn refused<T: std::fmt::Debug>(
        &mut self,
        result: Result<tonic::Response<T>, tonic::Status>,
        code: Code,
        domain: &str,
        reason: &str,
    ) -> tonic::Status {
        self.refused_with(result, code, domain, reason, &[])
    }

    /// Like [`Seen::refused`], where the documented conditional keys `present` apply (a key
    /// the header says is carried `when ...` or `once ...`, or the one of a `one of` list).
    #[track_caller]
    pub(crate) fn refused_with<T: std::fmt::Debug>(
        &mut self,
        result: Result<tonic::Response<T>, tonic::Status>,
        code: Code,
        domain: &str,
        reason: &str,
        present: &[&str],
    ) -> tonic::Status {
        let status = result.expect_err(reason);
        let infos: Vec<_> = status
            .get_error_details_vec()
            .into_iter()
            .filter_map(|detail| match detail {
                ErrorDetail::ErrorInfo(info) => Some(info),
                _ => None,
            })
            .collect();
        assert_eq!(infos.len(), 1, "{reason}: one ErrorInfo in {status:?}");
        let info = &infos[0];
        assert_eq!(
            (status.code(), info.domain.as_str(), info.reason.as_str()),
            (code, domain, reason),
            "{}",
            status.message()
        );
        let documented = catalogue()
            .get(&(domain.to_owned(), reason.to_owned()))
            .unwrap_or_else(|| panic!("{domain} {reason}: provoked but not documented"));
        if let Some(documented_code) = documented.code {
            assert_eq!(code, documented_code, "{reason}: the documented code");
        }
        for key in present {
            assert!(
                documented.optional.contains(*key) || documented.one_of.contains(*key),
                "{reason}: `{key}` is not documented as a conditional key: {documented:?}"
            );
        }
        if !documented.one_of.is_empty() {
            let chosen = present
                .iter()
                .filter(|key| documented.one_of.contains(**key))
                .count();
            assert_eq!(chosen, 1, "{reason}: one of {:?}", documented.one_of);
        }
        let actual: BTreeSet<&str> = info.metadata.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = documented
            .required
            .iter()
            .map(String::as_str)
            .chain(present.iter().copied())
            .collect();
        assert_eq!(
            actual, expected,
            "{reason}: metadata {:?} against the documented {documented:?}",
            info.metadata
        );
        self.0.insert((domain.to_owned(), reason.to_owned()));
        status
    }
}

pub(crate) const BUDGET: &str = "subsidy.budget";
pub(crate) const RULES: &str = "subsidy.rules";
pub(crate) const NOTIFICATION: &str = "subsidy.notification";
pub(crate) const APPLICATION: &str = "subsidy.application";
pub(crate) const AUTH: &str = "subsidy.auth";
pub(crate) const SERVER: &str = "subsidy.server";

#[test]
fn the_header_grammar_gives_codes_and_required_conditional_and_alternative_keys() {
    // Proves the reading of a bullet that the catalogue relies on, on the forms the headers use.
    let (reasons, keys) = parse_bullet(
        "`STORAGE_UNAVAILABLE` (code `UNAVAILABLE`; retry with the same `request_id`) and \
         `INTERNAL`: none; retry with the same `request_id`.",
    );
    assert_eq!(
        reasons,
        vec![
            ("STORAGE_UNAVAILABLE".to_owned(), Some(Code::Unavailable)),
            ("INTERNAL".to_owned(), None)
        ]
    );
    assert_eq!(keys, Documented::default());
    let (reasons, keys) = parse_bullet(
        "`ENTERPRISE_NOT_BOUND` (`PERMISSION_DENIED`: an applicant acting for another): `uscc`;",
    );
    assert_eq!(reasons[0].1, Some(Code::PermissionDenied));
    assert_eq!(keys.required, BTreeSet::from(["uscc".to_owned()]));
    let (_, keys) = parse_bullet(
        "`TRANSITION_NOT_ALLOWED`: `state` (the current state) and the one of `claim_id`, \
         `proposal_id` or `round_id` that refused;",
    );
    assert_eq!(keys.required, BTreeSet::from(["state".to_owned()]));
    assert_eq!(keys.one_of.len(), 3, "{keys:?}");
    let (_, keys) = parse_bullet(
        "`INVOICE_PARTY_MISMATCH`: `invoice_code` (empty for a fully digitalised invoice), \
         `invoice_number`, and `claim_id` when the claim was recorded before (AddClaimInvoices; \
         a refused submission records no claim);",
    );
    assert_eq!(keys.required.len(), 2, "{keys:?}");
    assert_eq!(keys.optional, BTreeSet::from(["claim_id".to_owned()]));
    let (_, keys) = parse_bullet(
        "`SUBSCRIPTION_LIMIT_REACHED`: `subscriptions_max`, the most subscriptions the service \
         holds (setting `notification.subscriptions_max`);",
    );
    assert_eq!(
        keys.required,
        BTreeSet::from(["subscriptions_max".to_owned()])
    );

    // And the headers as written: every domain, with the keys of a reason of each.
    let catalogue = catalogue();
    let keys = |domain: &str, reason: &str| -> BTreeSet<&str> {
        catalogue[&(domain.to_owned(), reason.to_owned())]
            .required
            .iter()
            .map(String::as_str)
            .collect()
    };
    assert_eq!(
        keys(BUDGET, "BENEFICIARY_CAP_EXCEEDED"),
        BTreeSet::from([
            "pool_id",
            "beneficiary_uscc",
            "cap",
            "used",
            "remaining",
            "requested"
        ])
    );
    assert_eq!(
        keys(AUTH, "PERMISSION_DENIED"),
        BTreeSet::from(["method", "allowed"])
    );
    assert_eq!(
        keys(SERVER, "MESSAGE_TOO_LARGE"),
        BTreeSet::from(["limit_bytes", "size_bytes"])
    );
    assert_eq!(
        keys(RULES, "POLICY_NOT_FOUND"),
        BTreeSet::from(["policy_id"])
    );
    assert_eq!(
        keys(NOTIFICATION, "CURSOR_EXPIRED"),
        BTreeSet::from(["oldest_cursor"])
    );
    assert_eq!(
        keys(APPLICATION, "DUPLICATE_CONTRACT"),
        BTreeSet::from(["seller_uscc", "contract_number"])
    );
}
