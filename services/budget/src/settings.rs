//! The budget service's configuration section, `[budget]`: defaults, the environment
//! variables that override them, and validation with named bounds.

use serde::{Deserialize, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting, check_range};

use crate::domain::checkpoint::Algorithm;

/// Default interval of the expiry sweep, in milliseconds.
pub const EXPIRY_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Shortest expiry interval accepted, in milliseconds.
pub const EXPIRY_INTERVAL_MS_MIN: u64 = 10;
/// Longest expiry interval accepted, in milliseconds: one hour.
pub const EXPIRY_INTERVAL_MS_MAX: u64 = 3_600_000;

/// Default interval of scheduled checkpoints, in milliseconds: one hour.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 3_600_000;
/// Shortest checkpoint interval accepted, in milliseconds.
pub const CHECKPOINT_INTERVAL_MS_MIN: u64 = 100;
/// Longest checkpoint interval accepted, in milliseconds: one week.
pub const CHECKPOINT_INTERVAL_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// The default checkpoint algorithm.
pub const CHECKPOINT_ALGORITHM_DEFAULT: &str = "ed25519";
/// The TOML key of the checkpoint signing key file.
pub const CHECKPOINT_KEY_FILE_KEY: &str = "budget.checkpoint_key_file";
/// The environment variable of the checkpoint signing key file.
pub const CHECKPOINT_KEY_FILE_ENV: &str = "SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE";
/// The TOML key of the checkpoint algorithm.
pub const CHECKPOINT_ALGORITHM_KEY: &str = "budget.checkpoint_algorithm";
/// The environment variable of the checkpoint algorithm.
pub const CHECKPOINT_ALGORITHM_ENV: &str = "SUBSIDY_BUDGET_CHECKPOINT_ALGORITHM";

/// Budget-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How often held reservations past their expiry are expired, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Whether to create the two 2025 pools when they do not exist.
    pub seed_2025_pools: bool,
    /// The PKCS#8 PEM private key that signs ledger checkpoints (mounted from a Secret).
    /// Empty: checkpoints are disabled and `CreateCheckpoint` is refused.
    pub checkpoint_key_file: String,
    /// The algorithm of that key: `ed25519` or `sm2-sm3`.
    pub checkpoint_algorithm: String,
    /// How often every pool whose head moved is checkpointed, in milliseconds.
    pub checkpoint_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            expiry_interval_ms: EXPIRY_INTERVAL_MS_DEFAULT,
            seed_2025_pools: true,
            checkpoint_key_file: String::new(),
            checkpoint_algorithm: CHECKPOINT_ALGORITHM_DEFAULT.into(),
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
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
        Setting::text(
            CHECKPOINT_KEY_FILE_KEY,
            &[CHECKPOINT_KEY_FILE_ENV],
            "PKCS#8 PEM private key that signs ledger checkpoints (`openssl genpkey -algorithm ed25519`, or `-algorithm SM2`); unset: checkpoints disabled (`subsidy dev` generates one in its data directory)",
        )
        .described("none"),
        Setting::text(
            CHECKPOINT_ALGORITHM_KEY,
            &[CHECKPOINT_ALGORITHM_ENV],
            "signature algorithm of checkpoints: `ed25519` or `sm2-sm3` (SM2 signatures with SM3 hashing)",
        ),
        Setting::scalar(
            "budget.checkpoint_interval_ms",
            &["SUBSIDY_BUDGET_CHECKPOINT_INTERVAL_MS"],
            "how often every pool whose ledger head moved is checkpointed, in milliseconds",
        ),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "budget.expiry_interval_ms",
            self.expiry_interval_ms,
            EXPIRY_INTERVAL_MS_MIN,
            EXPIRY_INTERVAL_MS_MAX,
        )?;
        check_range(
            "budget.checkpoint_interval_ms",
            self.checkpoint_interval_ms,
            CHECKPOINT_INTERVAL_MS_MIN,
            CHECKPOINT_INTERVAL_MS_MAX,
        )?;
        self.algorithm().map(|_| ())
    }
}

impl Settings {
    /// The configured checkpoint algorithm; the refusal names the key and its variable.
    pub fn algorithm(&self) -> Result<Algorithm, ConfigError> {
        Algorithm::parse(&self.checkpoint_algorithm).ok_or_else(|| {
            ConfigError::invalid(
                CHECKPOINT_ALGORITHM_KEY,
                &self.checkpoint_algorithm,
                format!("must be ed25519 or sm2-sm3 ({CHECKPOINT_ALGORITHM_ENV})"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_checkpoint_algorithm_is_refused_naming_its_key_and_variable() {
        // Proves the refusal tells an operator where the value came from.
        let settings = Settings {
            checkpoint_algorithm: "rsa".into(),
            ..Settings::default()
        };
        let refusal = settings.validate().unwrap_err().to_string();
        assert!(refusal.contains(CHECKPOINT_ALGORITHM_KEY), "{refusal}");
        assert!(refusal.contains(CHECKPOINT_ALGORITHM_ENV), "{refusal}");
        let sm2 = Settings {
            checkpoint_algorithm: "sm2-sm3".into(),
            ..Settings::default()
        };
        assert_eq!(sm2.algorithm().unwrap(), Algorithm::Sm2Sm3);
    }
}
