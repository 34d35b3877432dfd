//! The layers figment merges (a TOML file, the environment) and the mapping of its errors
//! to the key or variable to blame.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{ConfigError, ENV_SOURCE, EnvForm, Setting};

/// A parsed TOML file, kept so that each service can read its own section from it.
#[derive(Clone, Debug)]
pub(super) struct FileLayer {
    pub(super) path: PathBuf,
    pub(super) data: Dict,
}

impl FileLayer {
    pub(super) fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown.clone(),
            source: Box::new(source),
        })?;
        let data = match Value::serialize(table) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => unreachable!("a TOML table serializes to a dictionary"),
        };
        Ok(FileLayer {
            path: path.to_owned(),
            data,
        })
    }
}

/// One layer of values with a name, as figment sees it.
pub(super) struct Layer {
    pub(super) name: String,
    pub(super) data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// The values that `settings` take from `env`, nested under their keys.
pub(super) fn env_layer(settings: &[Setting], env: &HashMap<String, String>) -> Layer {
    let mut data = Dict::new();
    for setting in settings {
        let Some(text) = setting
            .env
            .iter()
            .find_map(|name| env.get(*name).filter(|v| !v.is_empty()))
        else {
            continue;
        };
        let value = match setting.form {
            EnvForm::Text => Value::from(text.clone()),
            EnvForm::Scalar => text
                .parse::<Value>()
                .unwrap_or_else(|_| Value::from(text.clone())),
            EnvForm::List => Value::from(
                text.split(',')
                    .map(|part| {
                        let part = part.trim();
                        part.parse::<Value>()
                            .unwrap_or_else(|_| Value::from(part.to_owned()))
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        merge_into(&mut data, figment::util::nest(setting.key, value));
    }
    Layer {
        name: ENV_SOURCE.into(),
        data,
    }
}

fn merge_into(into: &mut Dict, value: Value) {
    let Value::Dict(_, dict) = value else {
        return;
    };
    for (key, value) in dict {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(tag, inner)) => {
                merge_into(existing, Value::Dict(tag, inner));
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Turns a figment error into the key or variable to blame.
pub(super) fn classify(
    error: figment::Error,
    settings: &[Setting],
    file: Option<&FileLayer>,
    env: &HashMap<String, String>,
) -> ConfigError {
    // `extract_inner` appends the section's key to the path instead of prefixing it.
    let mut segments = error.path.clone();
    if let Some(section) = settings.first().and_then(|s| s.key.split('.').next())
        && segments.len() > 1
        && segments.last().map(String::as_str) == Some(section)
        && segments.first().map(String::as_str) != Some(section)
    {
        segments.pop();
        segments.insert(0, section.to_owned());
    }
    let path = segments.join(".");
    let source = error.metadata.as_ref().map(|m| m.name.to_string());
    if source.as_deref() == Some(ENV_SOURCE)
        && let Some(setting) = settings.iter().find(|s| s.key == path)
        && let Some(name) = setting.env.iter().find(|name| env.contains_key(**name))
    {
        return ConfigError::Invalid {
            key: name,
            value: env[*name].clone(),
            why: error.kind.to_string(),
        };
    }
    let file_path = file.map(|f| f.path.display().to_string());
    match (source, file_path) {
        (Some(source), Some(file_path)) if source == file_path => ConfigError::Parse {
            path: file_path,
            source: Box::new(error),
        },
        // An unknown key carries no value to name its source by; it can only be the file's.
        (_, Some(file_path)) => ConfigError::Parse {
            path: file_path,
            source: Box::new(error),
        },
        (_, None) => ConfigError::Parse {
            path: "(built-in defaults)".into(),
            source: Box::new(error),
        },
    }
}
