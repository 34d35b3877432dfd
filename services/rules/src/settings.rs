//! The rules service's configuration section, `[rules]`: defaults, the environment variables
//! that override them, and validation.

use serde::{Deserialize, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting};

/// Rules-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Whether the shipped policy versions (`policies/*.policy.json`) are published on start
    /// when they are not published yet.
    pub seed_shipped_policies: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed_shipped_policies: true,
        }
    }
}

impl Section for Settings {
    const KEY: &'static str = "rules";
    const SETTINGS: &'static [Setting] = &[Setting::scalar(
        "rules.seed_shipped_policies",
        &["SUBSIDY_RULES_SEED_SHIPPED_POLICIES"],
        "publish the shipped 2025 policy versions on start when they are not published yet",
    )];

    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
