//! Webhook signing secrets sealed at rest: AES-256-GCM from `ring`, the key from a mounted
//! file (or, for development on SQLite, one generated next to the database), the stored form,
//! and the queries of the start-up pass (`ops::secrets`) that seals the secrets earlier
//! versions stored in plaintext.
//!
//! The stored form is `v1:` followed by the standard base64 of nonce (12 random bytes) ‖
//! ciphertext ‖ tag (16 bytes). The associated data binds a sealed secret to its
//! subscription and to the version of the form, so a value copied into another
//! subscription's row does not open. A subscription's current and previous secrets share that
//! binding: a rotation moves the sealed current secret into `previous_secret` as it is.
//! A random 96-bit nonce per sealing is safe far beyond what one key ever seals here (about
//! 2^32 sealings; the service holds at most a thousand subscriptions).
//!
//! Where the key comes from is decided in one place, [`load_secret_key`]:
//! - `notification.secret_key_file` set: the key in that file, 64 hex digits
//!   (`openssl rand -hex 32`) or 32 raw bytes. Production mounts one (a Kubernetes Secret).
//! - unset, on SQLite: a development key in a file next to the database
//!   (`data/notification.db` → `data/notification-secret.key`), generated with mode 0600 on the
//!   first start and read on every later one. Losing it loses the secrets: rotate them.
//! - unset, on PostgreSQL: the service refuses to start.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;
use subsidy_common::BoxError;

use super::{Store, Tx};
use crate::domain::subscription::SigningSecret;

/// The prefix of a sealed secret: the version of the stored form.
pub const SEALED_PREFIX: &str = "v1:";
/// Bytes in the key (AES-256).
pub const SECRET_KEY_BYTES: usize = 32;
/// The file name ending of the development key next to a SQLite database.
pub const DEV_KEY_SUFFIX: &str = "-secret.key";
/// Bytes in the authentication tag appended to a ciphertext.
const TAG_BYTES: usize = 16;
/// What the associated data starts with: the purpose and the version of the stored form.
const AAD_CONTEXT: &str = "subsidy.notification.signing-secret.v1";

/// Why a signing secret could not be sealed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The store was made without a key (only migrations and inspection need none).
    #[error("no key to encrypt signing secrets is configured (notification.secret_key_file)")]
    NoKey,
    /// The key file holds something else than a key.
    #[error(
        "the secret key must be 32 bytes: 64 hex digits (openssl rand -hex 32) or 32 raw bytes"
    )]
    KeyFormat,
    /// The stored secret does not open with the key: another key sealed it, or the row was
    /// changed.
    #[error(
        "the stored signing secret cannot be decrypted with the configured key \
         (notification.secret_key_file): the key was replaced or the row was changed"
    )]
    WrongKey,
    /// The stored value is neither a sealed secret nor a plaintext one.
    #[error("the stored signing secret is malformed")]
    Malformed,
    /// The operating system gave no random bytes.
    #[error("no random bytes from the operating system to encrypt a signing secret")]
    Random,
}

/// The key signing secrets are sealed with.
#[derive(Clone)]
pub struct SecretKey {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(AES-256-GCM, …)")
    }
}

/// The associated data of a secret sealed for `subscription_id`.
fn aad(subscription_id: &str) -> String {
    format!("{AAD_CONTEXT}\n{subscription_id}")
}

impl SecretKey {
    /// A key of exactly [`SECRET_KEY_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, SecretError> {
        if bytes.len() != SECRET_KEY_BYTES {
            return Err(SecretError::KeyFormat);
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::KeyFormat)?;
        Ok(SecretKey {
            key: Arc::new(LessSafeKey::new(key)),
        })
    }

    /// The key in a key file: 64 hex digits (surrounding white space ignored), or exactly 32
    /// raw bytes.
    pub fn from_file_contents(contents: &[u8]) -> Result<SecretKey, SecretError> {
        let text = std::str::from_utf8(contents)
            .map(str::trim)
            .unwrap_or_default();
        if text.len() == 2 * SECRET_KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = hex::decode(text).map_err(|_| SecretError::KeyFormat)?;
            return SecretKey::from_bytes(&bytes);
        }
        SecretKey::from_bytes(contents)
    }

    /// Seals `secret` of `subscription_id` into its stored form, under a fresh random nonce.
    pub fn seal(
        &self,
        subscription_id: &str,
        secret: &SigningSecret,
    ) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = secret.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(subscription_id)),
                &mut sealed,
            )
            .map_err(|_| SecretError::Random)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(blob)))
    }

    /// Opens a stored secret of `subscription_id`. A secret stored in plaintext by an earlier
    /// version (sealed at the next start) is read as it is.
    pub fn open(&self, subscription_id: &str, stored: &str) -> Result<SigningSecret, SecretError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return SigningSecret::from_stored(stored).ok_or(SecretError::Malformed);
        };
        let mut blob = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_BYTES {
            return Err(SecretError::Malformed);
        }
        let (nonce, sealed) = blob.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Malformed)?;
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(aad(subscription_id)), sealed)
            .map_err(|_| SecretError::WrongKey)?;
        let text = std::str::from_utf8(opened).map_err(|_| SecretError::Malformed)?;
        SigningSecret::from_stored(text).ok_or(SecretError::Malformed)
    }
}

/// Whether a stored secret is sealed (not plaintext from an earlier version).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The file of a `sqlite:` database URL, read as `Db::connect` reads it; `None` for
/// PostgreSQL.
pub fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let file = rest
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    (!file.is_empty() && file != ":memory:").then(|| PathBuf::from(file))
}

/// The development key file next to the SQLite database `database`:
/// `data/notification.db` → `data/notification-secret.key`.
pub fn dev_key_path(database: &Path) -> PathBuf {
    let stem = database
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "notification".to_owned());
    database.with_file_name(format!("{stem}{DEV_KEY_SUFFIX}"))
}

/// The key signing secrets are sealed with, by the service's one rule (see the module): the
/// file `secret_key_file` names; without one, on SQLite (`database_url`), the development key
/// next to the database, generated on the first start; without one on PostgreSQL, an error
/// that stops the service.
pub fn load_secret_key(secret_key_file: &str, database_url: &str) -> Result<SecretKey, BoxError> {
    let configured = secret_key_file.trim();
    if !configured.is_empty() {
        return read_key_file(Path::new(configured));
    }
    let Some(database) = sqlite_file(database_url) else {
        return Err(
            "notification.secret_key_file (SUBSIDY_NOTIFICATION_SECRET_KEY_FILE) is \
                    required on PostgreSQL: mount a file holding 64 hex digits \
                    (openssl rand -hex 32), the key that encrypts webhook signing secrets"
                .into(),
        );
    };
    let path = dev_key_path(&database);
    if generate_dev_key(&path)? {
        tracing::warn!(
            path = %path.display(),
            "notification.secret_key_file is not set: generated a development key that \
             encrypts webhook signing secrets next to the SQLite database; production \
             mounts its own key"
        );
    }
    read_key_file(&path)
}

/// The key in the file at `path`.
fn read_key_file(path: &Path) -> Result<SecretKey, BoxError> {
    let contents = std::fs::read(path)
        .map_err(|e| format!("cannot read the secret key file {}: {e}", path.display()))?;
    SecretKey::from_file_contents(&contents)
        .map_err(|e| format!("secret key file {}: {e}", path.display()).into())
}

#[cfg(unix)]
fn owner_only(options: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600);
}

#[cfg(not(unix))]
fn owner_only(_options: &mut OpenOptions) {}

/// Creates the development key file at `path` unless it exists; whether it was created. The
/// key is written under a temporary name and linked into place, so a concurrent start never
/// reads half a key and the first one wins.
fn generate_dev_key(path: &Path) -> Result<bool, BoxError> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut key = [0u8; SECRET_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SecretError::Random)?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    owner_only(&mut options);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(format!(
            "cannot create the development secret key {}: {error}",
            path.display()
        )
        .into()),
    }
}

/// A subscription's signing secrets as its row stores them (sealed, or plaintext from an
/// earlier version).
#[derive(Clone, Debug)]
pub struct StoredSecrets {
    /// The subscription.
    pub subscription_id: String,
    /// The current secret as stored.
    pub current: String,
    /// The previous secret as stored, during a rotation's overlap.
    pub previous: Option<String>,
}

impl Store {
    /// The key signing secrets are sealed with, for a use case that seals stored ones.
    pub fn sealing_key(&self) -> Result<SecretKey, SecretError> {
        self.secret_key().cloned()
    }

    /// Every subscription's signing secrets as stored, in `tx`.
    pub async fn stored_secrets(&self, tx: &mut Tx) -> Result<Vec<StoredSecrets>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT subscription_id, secret, previous_secret FROM subscriptions")
                .fetch_all(&mut **tx)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredSecrets {
                    subscription_id: row.try_get("subscription_id")?,
                    current: row.try_get("secret")?,
                    previous: row.try_get("previous_secret")?,
                })
            })
            .collect()
    }

    /// Stores `current` and `previous` (already in their stored form) as the signing secrets
    /// of `subscription_id`, in `tx`.
    pub async fn replace_stored_secrets(
        &self,
        tx: &mut Tx,
        subscription_id: &str,
        current: String,
        previous: Option<String>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE subscriptions SET secret = $2, previous_secret = $3 \
             WHERE subscription_id = $1",
        )
        .bind(subscription_id)
        .bind(current)
        .bind(previous)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; SECRET_KEY_BYTES]).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_subscription() {
        // Proves the round trip, a fresh nonce per sealing, and that another key, another
        // subscription or a changed byte are refused.
        let secret = SigningSecret::generate(&mut rand::rng());
        let sealed = key(1).seal("sub-1", &secret).unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains(secret.expose()));
        assert_ne!(sealed, key(1).seal("sub-1", &secret).unwrap());
        assert_eq!(key(1).open("sub-1", &sealed).unwrap(), secret);
        assert_eq!(key(2).open("sub-1", &sealed), Err(SecretError::WrongKey));
        assert_eq!(key(1).open("sub-2", &sealed), Err(SecretError::WrongKey));
        let mut blob = BASE64.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", BASE64.encode(&blob));
        assert_eq!(key(1).open("sub-1", &tampered), Err(SecretError::WrongKey));
        assert_eq!(key(1).open("sub-1", "v1:AAAA"), Err(SecretError::Malformed));
        assert_eq!(key(1).open("sub-1", "v1:***"), Err(SecretError::Malformed));
        assert_eq!(
            key(1).open("sub-1", secret.expose()).unwrap(),
            secret,
            "a plaintext secret of an earlier version is read as it is"
        );
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes() {
        // Proves the accepted key file forms and that anything else is refused.
        let hex_key = format!("{}\n", "ab".repeat(SECRET_KEY_BYTES));
        let from_hex = SecretKey::from_file_contents(hex_key.as_bytes()).unwrap();
        let raw = SecretKey::from_file_contents(&[0xab; SECRET_KEY_BYTES]).unwrap();
        let secret = SigningSecret::generate(&mut rand::rng());
        let sealed = from_hex.seal("sub-1", &secret).unwrap();
        assert_eq!(raw.open("sub-1", &sealed).unwrap(), secret, "the same key");
        let not_hex = "zz".repeat(SECRET_KEY_BYTES);
        let bad: [&[u8]; 4] = [
            b"",
            b"abcd",
            &[0u8; SECRET_KEY_BYTES + 1],
            not_hex.as_bytes(),
        ];
        for bad in bad {
            assert_eq!(
                SecretKey::from_file_contents(bad).map(|_| ()),
                Err(SecretError::KeyFormat)
            );
        }
    }

    #[test]
    fn the_key_rule_uses_the_file_or_a_development_key_on_sqlite_only() {
        // Proves the one rule: a configured file wins, SQLite gets a key generated once next
        // to its database (owner-only), PostgreSQL without a file does not start.
        let dir = std::env::temp_dir().join(format!(
            "subsidy-notification-keys-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let database = dir.join("notification.db");
        let url = format!("sqlite:{}?mode=rwc", database.display());
        assert_eq!(sqlite_file(&url), Some(database.clone()));
        assert_eq!(sqlite_file("postgres://db/notification"), None);
        assert_eq!(dev_key_path(&database), dir.join("notification-secret.key"));

        let secret = SigningSecret::generate(&mut rand::rng());
        let first = load_secret_key("", &url).unwrap();
        let sealed = first.seal("sub-1", &secret).unwrap();
        let again = load_secret_key("", &url).unwrap();
        assert_eq!(again.open("sub-1", &sealed).unwrap(), secret, "kept");
        let written = std::fs::read_to_string(dir.join("notification-secret.key")).unwrap();
        assert_eq!(written.trim().len(), 2 * SECRET_KEY_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("notification-secret.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }

        let configured = dir.join("mounted.key");
        std::fs::write(&configured, "cd".repeat(SECRET_KEY_BYTES)).unwrap();
        let mounted = load_secret_key(&configured.display().to_string(), &url).unwrap();
        assert_eq!(mounted.open("sub-1", &sealed), Err(SecretError::WrongKey));
        assert!(load_secret_key("", "postgres://db/notification").is_err());
        assert!(load_secret_key(&dir.join("missing.key").display().to_string(), &url).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
