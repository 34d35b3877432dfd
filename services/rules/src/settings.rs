//! The rules service's configuration section, `[rules]`: defaults, the environment variables
//! that override them, and validation.

use serde::{Deserialize, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting};

use crate::domain::calendar::{Calendar, PUBLICITY_WORKING_DAYS_MAX};

/// The TOML key of the working-day calendar file.
pub const CALENDAR_FILE_KEY: &str = "rules.calendar_file";
/// The environment variable of the working-day calendar file.
pub const CALENDAR_FILE_ENV: &str = "SUBSIDY_RULES_CALENDAR_FILE";
/// The TOML key of the development override of every policy's publicity length.
pub const PUBLICITY_OVERRIDE_KEY: &str = "rules.publicity_working_days_override";
/// The environment variable of that override.
pub const PUBLICITY_OVERRIDE_ENV: &str = "SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE";

/// Rules-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Whether the shipped policy versions (`policies/*.policy.json`) are published on start
    /// when they are not published yet.
    pub seed_shipped_policies: bool,
    /// The working-day calendar (JSON, see `calendar/cn-working-days.json`); empty: the shipped
    /// 2025 and 2026 schedules.
    pub calendar_file: String,
    /// When set (0 to 30), every policy's publicity length is replaced by this many working
    /// days: for development stacks and tests that pay an award right after approving it.
    /// Empty in production.
    pub publicity_working_days_override: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed_shipped_policies: true,
            calendar_file: String::new(),
            publicity_working_days_override: String::new(),
        }
    }
}

impl Section for Settings {
    const KEY: &'static str = "rules";
    const SETTINGS: &'static [Setting] = &[
        Setting::scalar(
            "rules.seed_shipped_policies",
            &["SUBSIDY_RULES_SEED_SHIPPED_POLICIES"],
            "publish the shipped 2025 policy versions on start when they are not published yet",
        ),
        Setting::text(
            CALENDAR_FILE_KEY,
            &[CALENDAR_FILE_ENV],
            "working-day calendar of publicity periods (JSON: years, holidays, working_weekends); unset: the shipped 2025 and 2026 State Council schedules",
        )
        .described("shipped"),
        Setting::text(
            PUBLICITY_OVERRIDE_KEY,
            &[PUBLICITY_OVERRIDE_ENV],
            "development only: replaces every policy's publicity length with this many working days (0 to 30; `subsidy dev` sets 0)",
        )
        .described("none"),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        self.publicity_override().map(|_| ())
    }
}

impl Settings {
    /// The override of every policy's publicity length, if set.
    pub fn publicity_override(&self) -> Result<Option<u32>, ConfigError> {
        if self.publicity_working_days_override.is_empty() {
            return Ok(None);
        }
        self.publicity_working_days_override
            .parse::<u32>()
            .ok()
            .filter(|days| *days <= PUBLICITY_WORKING_DAYS_MAX)
            .map(Some)
            .ok_or_else(|| {
                ConfigError::invalid(
                    PUBLICITY_OVERRIDE_KEY,
                    &self.publicity_working_days_override,
                    format!(
                        "must be 0 to {PUBLICITY_WORKING_DAYS_MAX} working days ({PUBLICITY_OVERRIDE_ENV})"
                    ),
                )
            })
    }

    /// The configured calendar: the file when named, otherwise the shipped one.
    pub fn calendar(&self) -> Result<Calendar, ConfigError> {
        if self.calendar_file.is_empty() {
            return Ok(Calendar::shipped());
        }
        let text = std::fs::read_to_string(&self.calendar_file).map_err(|e| {
            ConfigError::invalid(
                CALENDAR_FILE_KEY,
                &self.calendar_file,
                format!("cannot be read ({CALENDAR_FILE_ENV}): {e}"),
            )
        })?;
        Calendar::from_json(&text).map_err(|why| {
            ConfigError::invalid(
                CALENDAR_FILE_KEY,
                &self.calendar_file,
                format!("is not a calendar ({CALENDAR_FILE_ENV}): {why}"),
            )
        })
    }
}
