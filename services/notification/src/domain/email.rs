//! Emails to applicants (and to subscription contacts), rendered from the Chinese and English
//! templates in `templates/email.toml`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;
use subsidy_common::Uscc;
use subsidy_common::time::shanghai;

use super::event::{Event, EventType, Language, Program};

/// The templates, embedded at compile time.
const TEMPLATES_TOML: &str = include_str!("../../templates/email.toml");
/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 14] = [
    "application_id",
    "enterprise_uscc",
    "program",
    "amount",
    "occur_time",
    "round_id",
    "event_id",
    "reason",
    "subscription_id",
    "endpoint_url",
    "failing_since",
    "notice_id",
    "objection_id",
    "end_time",
];

#[derive(Debug, Deserialize)]
struct LanguageTemplates {
    greeting: String,
    footer: String,
    #[serde(flatten)]
    types: BTreeMap<String, TypeTemplate>,
}

#[derive(Debug, Deserialize)]
struct TypeTemplate {
    subject: String,
    body: String,
}

static TEMPLATES: LazyLock<BTreeMap<String, LanguageTemplates>> = LazyLock::new(|| {
    toml::from_str(TEMPLATES_TOML).expect("templates/email.toml is valid (checked by unit tests)")
});

/// A rendered email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailContent {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

fn program_name(program: Option<Program>, language: Language) -> &'static str {
    match (program, language) {
        (Some(Program::ComputeVoucher), Language::Zh) => "人工智能算力券",
        (Some(Program::ComputeVoucher), Language::En) => "AI compute voucher",
        (Some(Program::DataInfra), Language::Zh) => "数据基础设施标杆工程",
        (Some(Program::DataInfra), Language::En) => "data-infrastructure benchmark",
        (None, _) => "",
    }
}

fn beijing_time(us: i64, language: Language) -> String {
    let Some(time) = chrono::DateTime::from_timestamp_micros(us) else {
        return String::new();
    };
    let local = time.with_timezone(&shanghai());
    match language {
        Language::Zh => local.format("%Y年%m月%d日 %H:%M（北京时间）").to_string(),
        Language::En => local.format("%Y-%m-%d %H:%M (Beijing time)").to_string(),
    }
}

fn payload_text(event: &Event, key: &str) -> Option<String> {
    event
        .payload
        .get(key)
        .and_then(|value| value.as_str())
        .map(str::to_owned)
}

/// The values of the placeholders for `event` in `language`.
fn values(event: &Event, language: Language) -> BTreeMap<&'static str, String> {
    let none = match language {
        Language::Zh => "未说明",
        Language::En => "not given",
    };
    let amount = match (event.amount, language) {
        (Some(amount), Language::Zh) => format!("{} 元", amount.grouped()),
        (Some(amount), Language::En) => format!("CNY {}", amount.grouped()),
        (None, _) => none.to_owned(),
    };
    // A payload timestamp (RFC 3339) in Beijing time; left as sent if it does not parse.
    let payload_time = |key: &str| {
        payload_text(event, key)
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(&text)
                    .map(|t| beijing_time(t.timestamp_micros(), language))
                    .unwrap_or(text)
            })
            .unwrap_or_default()
    };
    let failing_since = payload_time("failing_since");
    let end_time = payload_time("end_time");
    BTreeMap::from([
        ("application_id", event.application_id.clone()),
        (
            "enterprise_uscc",
            event
                .enterprise_uscc
                .as_ref()
                .map(Uscc::to_string)
                .unwrap_or_default(),
        ),
        ("program", program_name(event.program, language).to_owned()),
        ("amount", amount),
        ("occur_time", beijing_time(event.occur_us, language)),
        ("round_id", event.round_id.clone()),
        ("event_id", event.event_id.to_string()),
        (
            "reason",
            payload_text(event, "reason").unwrap_or_else(|| none.to_owned()),
        ),
        (
            "subscription_id",
            payload_text(event, "subscription_id").unwrap_or_default(),
        ),
        (
            "endpoint_url",
            payload_text(event, "endpoint_url").unwrap_or_default(),
        ),
        ("failing_since", failing_since),
        (
            "notice_id",
            payload_text(event, "notice_id").unwrap_or_default(),
        ),
        (
            "objection_id",
            payload_text(event, "objection_id").unwrap_or_default(),
        ),
        ("end_time", end_time),
    ])
}

/// Replaces each `{name}` of a known placeholder in one pass, so that braces inside values are
/// left as they are.
fn fill(template: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| values.get(&after[..close]).map(|v| (close, v)))
        {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders the email about `event` in `language`.
pub fn render(event: &Event, language: Language) -> EmailContent {
    let templates = TEMPLATES
        .get(language.as_str())
        .expect("every language has templates (checked by unit tests)");
    let template = templates
        .types
        .get(event.event_type.as_str())
        .expect("every event type has a template (checked by unit tests)");
    let values = values(event, language);
    let body = format!(
        "{}\n\n{}\n{}\n",
        fill(&templates.greeting, &values),
        fill(&template.body, &values),
        fill(&templates.footer, &values)
    );
    EmailContent {
        subject: fill(&template.subject, &values),
        body,
    }
}

/// Every (language, event type) pair, for the completeness test.
pub fn template_texts() -> Vec<(Language, EventType, String)> {
    let mut texts = Vec::new();
    for language in [Language::Zh, Language::En] {
        for kind in EventType::ALL {
            let Some(templates) = TEMPLATES.get(language.as_str()) else {
                continue;
            };
            if let Some(template) = templates.types.get(kind.as_str()) {
                texts.push((
                    language,
                    kind,
                    format!(
                        "{}\n{}\n{}\n{}",
                        template.subject, template.body, templates.greeting, templates.footer
                    ),
                ));
            }
        }
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::super::event::tests_support::sample;
    use super::*;

    #[test]
    fn every_event_type_has_a_template_in_both_languages_using_known_placeholders() {
        // Proves the template file is complete and has no misspelt placeholder.
        let texts = template_texts();
        assert_eq!(texts.len(), 2 * EventType::ALL.len());
        assert_eq!(TEMPLATES.len(), 2, "only zh and en");
        for (language, kind, text) in texts {
            let mut rest = text.as_str();
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').expect("closed placeholder") + open;
                let name = &rest[open + 1..close];
                assert!(
                    PLACEHOLDERS.contains(&name),
                    "{language:?} {kind:?}: unknown placeholder {name}"
                );
                rest = &rest[close + 1..];
            }
        }
    }

    #[test]
    fn an_approval_is_rendered_with_amount_and_beijing_time_in_each_language() {
        // Proves the values land in the right language's template.
        let event = sample();
        let zh = render(&event, Language::Zh);
        assert_eq!(zh.subject, "【山东省补贴】算力券申请 app-1 已获批准");
        assert!(zh.body.contains("12,345.67 元"), "{}", zh.body);
        assert!(
            zh.body.contains("2023年11月15日 06:13（北京时间）"),
            "{}",
            zh.body
        );
        assert!(zh.body.contains("人工智能算力券"));
        let en = render(&event, Language::En);
        assert_eq!(en.subject, "[Shandong subsidy] Claim app-1 approved");
        assert!(en.body.contains("CNY 12,345.67"), "{}", en.body);
        assert!(en.body.contains("2023-11-15 06:13 (Beijing time)"));
        assert!(en.body.contains("Event: evt-1"));
    }

    #[test]
    fn an_award_publication_names_its_notice_and_the_end_of_the_period_in_beijing_time() {
        // Proves the publicity placeholders come from the payload: the notice and the end of
        // its period (an RFC 3339 UTC payload timestamp) shown in Beijing time, and an
        // objection's identifier.
        let mut event = sample();
        event.event_type = EventType::AwardPublished;
        event
            .payload
            .insert("notice_id".into(), serde_json::json!("notice-app-1"));
        event.payload.insert(
            "end_time".into(),
            serde_json::json!("2023-11-21T16:00:00.000Z"),
        );
        let zh = render(&event, Language::Zh);
        assert!(zh.body.contains("notice-app-1"), "{}", zh.body);
        assert!(
            zh.body.contains("2023年11月22日 00:00（北京时间）"),
            "{}",
            zh.body
        );
        let en = render(&event, Language::En);
        assert!(en.body.contains("notice notice-app-1"), "{}", en.body);
        assert!(
            en.body.contains("2023-11-22 00:00 (Beijing time)"),
            "{}",
            en.body
        );
        event.event_type = EventType::ObjectionFiled;
        event
            .payload
            .insert("objection_id".into(), serde_json::json!("obj-7"));
        let en = render(&event, Language::En);
        assert!(en.body.contains("objection obj-7"), "{}", en.body);
    }

    #[test]
    fn braces_in_values_are_not_expanded() {
        // Proves a producer's text cannot inject placeholders.
        let mut event = sample();
        event.event_type = EventType::ClaimRejected;
        event
            .payload
            .insert("reason".into(), serde_json::json!("{application_id} {x"));
        let en = render(&event, Language::En);
        assert!(
            en.body.contains("Reason: {application_id} {x"),
            "{}",
            en.body
        );
    }
}
