//! The README's configuration table, generated from the settings' declarations.

use figment::value::Value;
use serde::Serialize;

use super::{DatabaseConfig, PeersConfig, Section, ServerConfig, Setting, TelemetryConfig};

/// One row of the configuration table: key, environment, default, meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRow {
    /// The TOML key.
    pub key: String,
    /// The environment variables.
    pub env: String,
    /// The default.
    pub default: String,
    /// The meaning.
    pub meaning: String,
}

/// The table rows of `settings`, with defaults read from `defaults` (the serialized default
/// of their section, or of the shared sections).
pub fn table_rows(settings: &[Setting], defaults: &Value) -> Vec<TableRow> {
    settings
        .iter()
        .map(|setting| {
            let default = match setting.default_text {
                Some(text) => text.to_owned(),
                None => match defaults.find_ref(setting.key) {
                    Some(value) => render_default(value),
                    None => "unset".to_owned(),
                },
            };
            TableRow {
                key: format!("`{}`", setting.key),
                env: setting
                    .env
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                default,
                meaning: setting.meaning.to_owned(),
            }
        })
        .collect()
}

fn render_default(value: &Value) -> String {
    match value {
        Value::String(_, text) if text.is_empty() => "empty".to_owned(),
        Value::String(_, text) => format!("`{text}`"),
        Value::Bool(_, flag) => flag.to_string(),
        Value::Num(_, num) => num
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| num.to_i128().map(|n| n.to_string()))
            .unwrap_or_else(|| format!("{:?}", num.to_f64())),
        Value::Array(_, items) => items
            .iter()
            .map(render_default)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Empty(_, _) => "unset".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The serialized defaults of the shared sections, for [`table_rows`].
pub fn shared_defaults() -> Value {
    #[derive(Serialize)]
    struct Defaults {
        database: DatabaseConfig,
        server: ServerConfig,
        telemetry: TelemetryConfig,
        peers: PeersConfig,
    }
    Value::serialize(Defaults {
        database: DatabaseConfig::default(),
        server: ServerConfig::default(),
        telemetry: TelemetryConfig::default(),
        peers: PeersConfig::default(),
    })
    .expect("defaults serialize")
}

/// The serialized default of section `S`, nested under its key, for [`table_rows`].
pub fn section_defaults<S: Section>() -> Value {
    figment::util::nest(
        S::KEY,
        Value::serialize(S::default()).expect("defaults serialize"),
    )
}
