//! The checkpoint signing key on disk: read from `budget.checkpoint_key_file` at start-up (a
//! key that cannot be read or is not of `budget.checkpoint_algorithm` stops the service, naming
//! the setting and its variable), and made once for `subsidy dev` in its data directory.

use std::path::{Path, PathBuf};

use subsidy_common::BoxError;

use crate::domain::checkpoint::{Algorithm, CheckpointSigner};
use crate::settings::{CHECKPOINT_KEY_FILE_ENV, CHECKPOINT_KEY_FILE_KEY, Settings};

/// The development key's file name in a `subsidy dev` data directory.
pub const DEV_KEY_FILE: &str = "budget-checkpoint-key.pem";
/// The development public key's file name, for `subsidyctl ledger verify --public-key`.
pub const DEV_PUBLIC_KEY_FILE: &str = "budget-checkpoint-public.pem";

/// The configured signer; `None` when no key file is set (checkpoints disabled).
pub fn load(settings: &Settings) -> Result<Option<CheckpointSigner>, BoxError> {
    let path = settings.checkpoint_key_file.trim();
    if path.is_empty() {
        return Ok(None);
    }
    let algorithm = settings.algorithm()?;
    let named = |why: String| -> BoxError {
        format!("{CHECKPOINT_KEY_FILE_KEY} ({CHECKPOINT_KEY_FILE_ENV}) names {path}: {why}").into()
    };
    let pem = std::fs::read_to_string(path).map_err(|e| named(format!("cannot read it: {e}")))?;
    let signer =
        CheckpointSigner::from_pkcs8_pem(algorithm, &pem).map_err(|e| named(e.to_string()))?;
    Ok(Some(signer))
}

/// Makes an Ed25519 development key in `dir` unless one is there, and its public key beside
/// it; returns the private key's path.
pub fn ensure_dev_key(dir: &Path) -> Result<PathBuf, BoxError> {
    let path = dir.join(DEV_KEY_FILE);
    if !path.exists() {
        let signer = CheckpointSigner::from_seed(Algorithm::Ed25519, &rand::random())
            .expect("every 32 bytes are an Ed25519 seed");
        write_private(&path, &signer.to_pkcs8_pem())?;
        std::fs::write(dir.join(DEV_PUBLIC_KEY_FILE), signer.public_key().to_pem())?;
    }
    Ok(path)
}

/// Writes a private key readable by its owner only, never replacing a file.
fn write_private(path: &Path, pem: &str) -> Result<(), BoxError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_file_is_refused_naming_the_setting_and_its_variable() {
        // Proves an operator is told which setting points at the unusable file, and that a
        // development key, once made, loads as the configured key.
        let dir = tempfile::tempdir().unwrap();
        let missing = Settings {
            checkpoint_key_file: dir.path().join("none.pem").display().to_string(),
            ..Settings::default()
        };
        let refusal = load(&missing).unwrap_err().to_string();
        assert!(refusal.contains(CHECKPOINT_KEY_FILE_KEY), "{refusal}");
        assert!(refusal.contains(CHECKPOINT_KEY_FILE_ENV), "{refusal}");
        let dev = ensure_dev_key(dir.path()).unwrap();
        let configured = Settings {
            checkpoint_key_file: dev.display().to_string(),
            ..Settings::default()
        };
        assert!(load(&configured).unwrap().is_some());
        let wrong_algorithm = Settings {
            checkpoint_algorithm: "sm2-sm3".into(),
            ..configured
        };
        let refusal = load(&wrong_algorithm).unwrap_err().to_string();
        assert!(refusal.contains("sm2-sm3"), "{refusal}");
        assert!(refusal.contains(CHECKPOINT_KEY_FILE_ENV), "{refusal}");
        assert!(load(&Settings::default()).unwrap().is_none());
    }
}
