//! Bearer tokens: JWTs (OIDC style) verified with `jsonwebtoken` against the keys of a JWKS
//! file, and minted from a development key for `subsidy dev`, `subsidyctl` and tests.
//!
//! Verification is strict: the key is chosen by the token's `kid`; the algorithm is the one
//! the JWK declares (asymmetric only: a JWKS holding a symmetric key is refused when loaded),
//! never the one the token claims, so `alg=none` and HS256-signed-with-the-public-key tokens
//! fail; `iss`, `aud`, `exp` and `sub` are required, `nbf` is checked, and the leeway is at
//! most [`LEEWAY_SECONDS_MAX`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest clock leeway accepted for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS_MAX: u64 = 30;
/// Longest token accepted, in bytes (a header line is bounded anyway; this keeps parsing cheap).
pub const TOKEN_BYTES_MAX: usize = 16 * 1024;
/// Most enterprises one token may bind an applicant to.
pub const ENTERPRISES_PER_TOKEN_MAX: usize = 256;

/// Algorithms a JWK may pin: asymmetric signatures only.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// The claims this system reads from a token (besides the registered ones the library checks).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the person or agency system.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Roles (`applicant`, `reviewer`, `expert`, `finance`, `auditor`, `admin`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The enterprises (USCCs) an applicant acts for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enterprises: Vec<String>,
    /// The expert an `expert` scores as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_id: Option<String>,
}

/// The verified content of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Subject.
    pub subject: String,
    /// Roles as written in the token.
    pub roles: Vec<String>,
    /// Enterprises.
    pub enterprises: BTreeSet<String>,
    /// Expert id.
    pub expert_id: Option<String>,
}

/// Why a token was refused. The caller sees only `UNAUTHENTICATED` with the reason code; the
/// detail is logged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed JWT, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token names no key, or a key the JWKS does not hold.
    #[error("unknown signing key {0:?}")]
    UnknownKey(Option<String>),
    /// Signature, algorithm, issuer, audience, expiry or not-before failed.
    #[error("token refused: {0}")]
    Invalid(String),
}

/// Why a JWKS file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The file could not be read.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not a JWKS, or a key is not acceptable.
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
}

/// What a token must say to be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Clock leeway, seconds (at most [`LEEWAY_SECONDS_MAX`]).
    pub leeway_seconds: u64,
}

#[derive(Debug)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    stamp: [u8; 32],
}

fn load_keys(path: &Path) -> Result<Keys, KeySetError> {
    let bytes = std::fs::read(path).map_err(|error| KeySetError::Read(path.to_owned(), error))?;
    let set: JwkSet = serde_json::from_slice(&bytes)
        .map_err(|error| KeySetError::Invalid(path.to_owned(), error.to_string()))?;
    let mut by_kid = HashMap::new();
    for jwk in &set.keys {
        let invalid = |why: String| KeySetError::Invalid(path.to_owned(), why);
        // Identity providers publish encryption keys beside signing keys: not ours to use.
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| invalid("every key needs a `kid`".into()))?;
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|algorithm| Algorithm::try_from(algorithm).ok())
            .ok_or_else(|| invalid(format!("key {kid}: `alg` must name a signature algorithm")))?;
        if !ASYMMETRIC.contains(&algorithm) {
            return Err(invalid(format!(
                "key {kid}: {algorithm:?} is not an asymmetric signature algorithm"
            )));
        }
        let key =
            DecodingKey::from_jwk(jwk).map_err(|error| invalid(format!("key {kid}: {error}")))?;
        by_kid.insert(kid, (key, algorithm));
    }
    if by_kid.is_empty() {
        return Err(KeySetError::Invalid(path.to_owned(), "no key".into()));
    }
    Ok(Keys {
        by_kid,
        stamp: Sha256::digest(&bytes).into(),
    })
}

/// Verifies bearer tokens against the keys of a JWKS file, reloaded when the file changes.
#[derive(Debug)]
pub struct TokenVerifier {
    path: PathBuf,
    policy: TokenPolicy,
    keys: RwLock<Arc<Keys>>,
}

impl TokenVerifier {
    /// A verifier over the JWKS file at `path`.
    pub fn load(path: &Path, policy: TokenPolicy) -> Result<Arc<TokenVerifier>, KeySetError> {
        assert!(
            policy.leeway_seconds <= LEEWAY_SECONDS_MAX,
            "validated by the auth settings"
        );
        let keys = load_keys(path)?;
        Ok(Arc::new(TokenVerifier {
            path: path.to_owned(),
            policy,
            keys: RwLock::new(Arc::new(keys)),
        }))
    }

    /// Reads the JWKS file again if it changed (a rotated key set).
    pub fn reload_if_changed(&self) {
        let Ok(bytes) = std::fs::read(&self.path) else {
            tracing::error!(path = %self.path.display(), "the JWKS file cannot be read; the previous keys stay in use");
            return;
        };
        let stamp: [u8; 32] = Sha256::digest(&bytes).into();
        if self.keys.read().expect("never poisoned").stamp == stamp {
            return;
        }
        match load_keys(&self.path) {
            Ok(keys) => {
                *self.keys.write().expect("never poisoned") = Arc::new(keys);
                tracing::info!(path = %self.path.display(), "token signing keys reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "the new JWKS is not usable; the previous keys stay in use")
            }
        }
    }

    /// Checks the JWKS file every `interval` while the verifier is in use.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) {
        let verifier = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || verifier.reload_if_changed()).await;
            }
        });
    }

    /// Verifies `token`.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed("longer than allowed".into()));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Malformed(error.to_string()))?;
        let keys = self.keys.read().expect("never poisoned").clone();
        let (key, algorithm) = header
            .kid
            .as_ref()
            .and_then(|kid| keys.by_kid.get(kid))
            .ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
        // The algorithm is the key's, pinned when the key set was loaded.
        let mut validation = Validation::new(*algorithm);
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.policy.leeway_seconds;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|error| TokenError::Invalid(error.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > crate::edge::IDENTIFIER_LEN_MAX {
            return Err(TokenError::Invalid(
                "sub must be 1 to 128 characters".into(),
            ));
        }
        if claims.enterprises.len() > ENTERPRISES_PER_TOKEN_MAX {
            return Err(TokenError::Invalid("too many enterprises".into()));
        }
        Ok(Verified {
            subject: claims.sub,
            roles: claims.roles,
            enterprises: claims.enterprises.into_iter().collect(),
            expert_id: claims.expert_id,
        })
    }
}

/// A private signing key with its key id, for minting tokens (development and tests).
#[derive(Clone)]
pub struct SigningKey {
    key: EncodingKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An ES256 key from its PKCS#8 PEM, named `kid`.
    pub fn from_pem(pem: &[u8], kid: &str) -> Result<SigningKey, TokenError> {
        Ok(SigningKey {
            key: EncodingKey::from_ec_pem(pem)
                .map_err(|error| TokenError::Malformed(error.to_string()))?,
            kid: kid.to_owned(),
        })
    }

    /// The public half as a JWK (for a JWKS file).
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256)
            .expect("an EC signing key has a public JWK");
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` (ES256, with this key's `kid`).
    pub fn mint(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("ES256 signing does not fail")
    }
}

/// Seconds since the Unix epoch now.
pub fn now_seconds() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_set(dir: &Path, keys: serde_json::Value) -> PathBuf {
        let path = dir.join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
        path
    }

    #[test]
    fn a_key_set_keeps_signing_keys_skips_encryption_keys_and_refuses_symmetric_ones() {
        // Proves the JWKS rules: an identity provider's encryption key beside its signing key
        // is skipped; a symmetric key, or a key without `alg` or `kid`, refuses the whole set.
        let dir = std::env::temp_dir();
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let signing = SigningKey::from_pem(pem.as_bytes(), "sig-1").unwrap();
        let public = serde_json::to_value(signing.public_jwk()).unwrap();
        let encryption = serde_json::json!({
            "kty": "RSA", "use": "enc", "kid": "enc-1", "alg": "RSA-OAEP",
            "n": "sXch", "e": "AQAB"
        });
        let keys = load_keys(&key_set(&dir, serde_json::json!([public, encryption]))).unwrap();
        assert_eq!(keys.by_kid.len(), 1);
        assert!(keys.by_kid.contains_key("sig-1"));
        let symmetric =
            serde_json::json!({ "kty": "oct", "kid": "hs", "alg": "HS256", "k": "c2VjcmV0" });
        assert!(load_keys(&key_set(&dir, serde_json::json!([symmetric]))).is_err());
        let mut no_alg = public.clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        assert!(load_keys(&key_set(&dir, serde_json::json!([no_alg]))).is_err());
        let mut no_kid = public.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(load_keys(&key_set(&dir, serde_json::json!([no_kid]))).is_err());
    }
}
