//! The reasons each proto documents, and the collector of the reasons seen with their codes,
//! domains and metadata.

use super::*;

/// Reasons a proto documents that this test does not provoke, and where each is proved.
pub(crate) const NOT_PROVOKED_HERE: [(&str, &str, &str); 9] = [
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

/// The reasons the proto header of `file` documents (the list after `Reasons:`, or the
/// bullets of the `Errors carry one` paragraph).
pub(crate) fn documented(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/../proto/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("read the proto");
    let header = text.split("\nservice ").next().expect("a header");
    let start = header
        .find("Errors carry one")
        .expect("the errors paragraph");
    let paragraph: Vec<&str> = header[start..]
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("// - "))
        .collect();
    let tokens = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|token| token.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    let joined = paragraph.join(" ");
    if let Some(list) = joined.split("Reasons:").nth(1) {
        let list = list.split("`.").next().expect("a list");
        return tokens(list).into_iter().collect();
    }
    // Bullets, each with its continuation lines.
    let mut bullets: Vec<String> = Vec::new();
    for line in &paragraph {
        let line = line.trim_start_matches("//").trim_start();
        match line.strip_prefix("- ") {
            Some(start) => bullets.push(start.to_owned()),
            None => {
                if let Some(last) = bullets.last_mut() {
                    last.push(' ');
                    last.push_str(line);
                }
            }
        }
    }
    bullets
        .iter()
        .flat_map(|bullet| {
            // The reasons lead the bullet, up to its colon; a parenthesis names a code.
            let mut head = String::new();
            let mut depth = 0;
            for c in bullet.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ':' if depth == 0 => break,
                    _ if depth == 0 => head.push(c),
                    _ => {}
                }
            }
            tokens(&head)
        })
        .collect()
}

/// The reasons seen, with their domains.
#[derive(Default)]
pub(crate) struct Seen(pub(crate) BTreeSet<(String, String)>);

impl Seen {
    /// Checks that `result` is the refusal `code` / `reason` of `domain` carrying exactly the
    /// metadata `keys`.
    #[track_caller]
    pub(crate) fn refused<T: std::fmt::Debug>(
        &mut self,
        result: Result<tonic::Response<T>, tonic::Status>,
        code: Code,
        domain: &str,
        reason: &str,
        keys: &[&str],
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
        let actual: BTreeSet<&str> = info.metadata.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(actual, expected, "{reason}: metadata {:?}", info.metadata);
        self.0.insert((domain.to_owned(), reason.to_owned()));
        status
    }
}

pub(crate) const BUDGET: &str = "subsidy.budget";
pub(crate) const RULES: &str = "subsidy.rules";
pub(crate) const NOTIFICATION: &str = "subsidy.notification";
pub(crate) const APPLICATION: &str = "subsidy.application";
