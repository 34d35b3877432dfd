//! The budget service's configuration section, `[budget]`: defaults, the environment
//! variables that override them, and validation with named bounds.

use serde::{Deserialize, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting, check_range};

/// Default interval of the expiry sweep, in milliseconds.
pub const EXPIRY_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Shortest expiry interval accepted, in milliseconds.
pub const EXPIRY_INTERVAL_MS_MIN: u64 = 10;
/// Longest expiry interval accepted, in milliseconds: one hour.
pub const EXPIRY_INTERVAL_MS_MAX: u64 = 3_600_000;

/// Budget-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How often held reservations past their expiry are expired, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Whether to create the two 2025 pools when they do not exist.
    pub seed_2025_pools: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            expiry_interval_ms: EXPIRY_INTERVAL_MS_DEFAULT,
            seed_2025_pools: true,
        }
    }
}

impl Section for Settings {
    const KEY: &'static str = "budget";
    const SETTINGS: &'static [Setting] = &[
        Setting::scalar(
            "budget.expiry_interval_ms",
            &["SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS"],
            "how often due holds are expired, in milliseconds",
        ),
        Setting::file_only(
            "budget.seed_2025_pools",
            "create the two 2025 pools when missing",
        ),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "budget.expiry_interval_ms",
            self.expiry_interval_ms,
            EXPIRY_INTERVAL_MS_MIN,
            EXPIRY_INTERVAL_MS_MAX,
        )
    }
}
