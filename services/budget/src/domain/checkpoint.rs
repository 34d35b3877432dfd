//! Signed checkpoints: the head of one pool's chain (its last entry's sequence and hash, and the
//! counters after it) signed with the budget's key, so that a copy held outside this system's
//! database catches a chain rewritten consistently from its first entry to its last.
//!
//! The signed bytes are a canonical encoding like the entries' (`docs/LEDGER.md`): the tag
//! `subsidy.checkpoint.v1`, then every field length-prefixed (text) or fixed-width (integers).
//! Ed25519 signs them as they are; SM2 signs them with SM3 hashing and the default
//! distinguishing identifier. Both signatures are deterministic (Ed25519 by construction, SM2
//! through RFC 6979 nonces), so the documented test vectors are exact. A key is named by its
//! id, the first 16 bytes of the SHA-256 of its public key's DER SubjectPublicKeyInfo: each
//! checkpoint carries the id of the key that signed it, so keys can rotate.
//!
//! [`ChainWitness`] checks checkpoints against a replayed chain (the offline verification).
//! Pure: no clock, no files (keys arrive as PEM text, randomness as bytes).

use std::collections::BTreeMap;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};
use sm2::dsa::signature::{Signer, Verifier};

use super::ledger::LedgerEntry;

/// The tag that starts the signed bytes of a checkpoint.
pub const CHECKPOINT_TAG: &str = "subsidy.checkpoint.v1";
/// The SM2 distinguishing identifier (the default of GM/T 0009-2012) hashed into `Z_A`.
pub const SM2_DISTINGUISHING_ID: &str = "1234567812345678";
/// Bytes of the SHA-256 of the public key that make its id.
pub const KEY_ID_BYTES: usize = 16;
/// Length of an Ed25519 or SM2 signature, in bytes.
pub const SIGNATURE_BYTES: usize = 64;

/// A signature algorithm of checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032), the default.
    Ed25519,
    /// SM2 signatures with SM3 hashing (GM/T 0003-2012, GM/T 0004-2012).
    Sm2Sm3,
}

impl Algorithm {
    /// The name in the configuration and in the signed bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Sm2Sm3 => "sm2-sm3",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Self> {
        [Algorithm::Ed25519, Algorithm::Sm2Sm3]
            .into_iter()
            .find(|algorithm| algorithm.as_str() == text)
    }
}

/// The head of a pool's chain as it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The pool.
    pub pool_id: String,
    /// The sequence of its last entry.
    pub sequence: i64,
    /// The hash of that entry.
    pub head_hash: String,
    /// The pool's total, fen.
    pub total_fen: i64,
    /// Held after that entry, fen.
    pub held_fen: i64,
    /// Committed after that entry, fen.
    pub committed_fen: i64,
    /// When the checkpoint is made, µs (database clock).
    pub created_us: i64,
}

/// A signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// What is signed of the pool.
    pub head: Head,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The signing key's id.
    pub key_id: String,
    /// The signature over [`Checkpoint::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The bytes signed, as `docs/LEDGER.md` documents them: the tag, then pool id, sequence,
    /// head hash, total, held, committed, time, algorithm and key id; text as its UTF-8 length
    /// (4 bytes, big-endian) and bytes, integers as 8 bytes big-endian two's complement.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.head, self.algorithm, &self.key_id)
    }
}

fn signed_bytes(head: &Head, algorithm: Algorithm, key_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let text = |out: &mut Vec<u8>, value: &str| {
        let len = u32::try_from(value.len()).expect("checkpoint fields are far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    };
    let int = |out: &mut Vec<u8>, value: i64| out.extend_from_slice(&value.to_be_bytes());
    text(&mut out, CHECKPOINT_TAG);
    text(&mut out, &head.pool_id);
    int(&mut out, head.sequence);
    text(&mut out, &head.head_hash);
    for value in [
        head.total_fen,
        head.held_fen,
        head.committed_fen,
        head.created_us,
    ] {
        int(&mut out, value);
    }
    text(&mut out, algorithm.as_str());
    text(&mut out, key_id);
    out
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PKCS#8 private key of the algorithm.
    #[error("not a PKCS#8 PEM private key for {algorithm}: {why}")]
    NotPrivateKey {
        /// The algorithm expected.
        algorithm: &'static str,
        /// What the decoder said.
        why: String,
    },
    /// The text is not an Ed25519 or SM2 public key in PEM (SubjectPublicKeyInfo).
    #[error("not an Ed25519 or SM2 PEM public key (-----BEGIN PUBLIC KEY-----)")]
    NotPublicKey,
}

/// The id of a public key: the first [`KEY_ID_BYTES`] of the SHA-256 of its DER
/// SubjectPublicKeyInfo, lower-case hex.
fn key_id(spki_der: &[u8]) -> String {
    hex::encode(&Sha256::digest(spki_der)[..KEY_ID_BYTES])
}

/// The budget's private key, which signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SignerKey,
    public: PublicKey,
}

#[derive(Clone)]
enum SignerKey {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Sm2(Box<sm2::dsa::SigningKey>),
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("CheckpointSigner")
            .field("algorithm", &self.public.algorithm())
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) of `algorithm`.
    pub fn from_pkcs8_pem(algorithm: Algorithm, pem: &str) -> Result<Self, KeyError> {
        let refused = |why: String| KeyError::NotPrivateKey {
            algorithm: algorithm.as_str(),
            why,
        };
        let key = match algorithm {
            Algorithm::Ed25519 => SignerKey::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                    .map_err(|e| refused(e.to_string()))?,
            )),
            Algorithm::Sm2Sm3 => {
                let secret =
                    sm2::SecretKey::from_pkcs8_pem(pem).map_err(|e| refused(e.to_string()))?;
                SignerKey::Sm2(Box::new(
                    sm2::dsa::SigningKey::new(SM2_DISTINGUISHING_ID, &secret)
                        .map_err(|e| refused(e.to_string()))?,
                ))
            }
        };
        Ok(Self::of(key))
    }

    /// A key of `algorithm` made from 32 random bytes (`None` in the negligible case that they
    /// are no valid SM2 scalar).
    pub fn from_seed(algorithm: Algorithm, seed: &[u8; 32]) -> Option<Self> {
        let key = match algorithm {
            Algorithm::Ed25519 => {
                SignerKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(seed)))
            }
            Algorithm::Sm2Sm3 => {
                let secret = sm2::SecretKey::from_slice(seed).ok()?;
                SignerKey::Sm2(Box::new(
                    sm2::dsa::SigningKey::new(SM2_DISTINGUISHING_ID, &secret).ok()?,
                ))
            }
        };
        Some(Self::of(key))
    }

    fn of(key: SignerKey) -> Self {
        let public = match &key {
            SignerKey::Ed25519(key) => PublicKey::ed25519(key.verifying_key()),
            SignerKey::Sm2(key) => PublicKey::sm2(key.verifying_key().into()),
        };
        CheckpointSigner { key, public }
    }

    /// The private key as PKCS#8 PEM, for a key file.
    pub fn to_pkcs8_pem(&self) -> String {
        let line_ending = sm2::pkcs8::LineEnding::LF;
        let pem = match &self.key {
            SignerKey::Ed25519(key) => key.to_pkcs8_pem(line_ending),
            SignerKey::Sm2(key) => {
                let secret = sm2::SecretKey::from(key.as_nonzero_scalar());
                sm2::pkcs8::EncodePrivateKey::to_pkcs8_pem(&secret, line_ending)
            }
        };
        pem.expect("a valid key encodes").to_string()
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `head` now.
    pub fn sign(&self, head: Head) -> Checkpoint {
        let algorithm = self.public.algorithm();
        let key_id = self.public.key_id().to_owned();
        let message = signed_bytes(&head, algorithm, &key_id);
        let signature = match &self.key {
            SignerKey::Ed25519(key) => key.sign(&message).to_bytes().to_vec(),
            SignerKey::Sm2(key) => {
                let signature: sm2::dsa::Signature = key.sign(&message);
                signature.to_bytes().to_vec()
            }
        };
        Checkpoint {
            head,
            algorithm,
            key_id,
            signature,
        }
    }
}

/// A public key that verifies checkpoints.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: VerifierKey,
    key_id: String,
    pem: String,
}

#[derive(Clone, Debug)]
enum VerifierKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

impl PublicKey {
    fn ed25519(key: ed25519_dalek::VerifyingKey) -> Self {
        let der = key.to_public_key_der().expect("a valid key encodes");
        let pem = key
            .to_public_key_pem(sm2::pkcs8::LineEnding::LF)
            .expect("a valid key encodes");
        PublicKey {
            key_id: key_id(der.as_bytes()),
            key: VerifierKey::Ed25519(key),
            pem,
        }
    }

    fn sm2(key: sm2::PublicKey) -> Self {
        let der =
            sm2::pkcs8::EncodePublicKey::to_public_key_der(&key).expect("a valid key encodes");
        let pem = sm2::pkcs8::EncodePublicKey::to_public_key_pem(&key, sm2::pkcs8::LineEnding::LF)
            .expect("a valid key encodes");
        let verifying = sm2::dsa::VerifyingKey::new(SM2_DISTINGUISHING_ID, key)
            .expect("a valid point with the standard distinguishing id");
        PublicKey {
            key_id: key_id(der.as_bytes()),
            key: VerifierKey::Sm2(Box::new(verifying)),
            pem,
        }
    }

    /// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo) of either
    /// algorithm, as `openssl pkey -pubout` writes it.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::ed25519(key));
        }
        sm2::PublicKey::from_public_key_pem(pem)
            .map(Self::sm2)
            .map_err(|_| KeyError::NotPublicKey)
    }

    /// The algorithm the key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            VerifierKey::Ed25519(_) => Algorithm::Ed25519,
            VerifierKey::Sm2(_) => Algorithm::Sm2Sm3,
        }
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key in PEM.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// Checks that this key signed `checkpoint`; `Err` says what is wrong.
    pub fn verify(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        if checkpoint.key_id != self.key_id {
            return Err(format!(
                "signed by key {}, not by the key given ({})",
                checkpoint.key_id, self.key_id
            ));
        }
        if checkpoint.algorithm != self.algorithm() {
            return Err(format!(
                "algorithm {} does not match key {} ({})",
                checkpoint.algorithm.as_str(),
                self.key_id,
                self.algorithm().as_str()
            ));
        }
        let bad = || "the signature does not verify: a signed field was changed".to_owned();
        let message = checkpoint.signed_bytes();
        match &self.key {
            VerifierKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(&checkpoint.signature)
                    .map_err(|_| bad())?;
                key.verify_strict(&message, &signature).map_err(|_| bad())
            }
            VerifierKey::Sm2(key) => {
                let signature =
                    sm2::dsa::Signature::from_slice(&checkpoint.signature).map_err(|_| bad())?;
                key.verify(&message, &signature).map_err(|_| bad())
            }
        }
    }
}

/// Verifies `checkpoint` with whichever of `keys` has its key id.
pub fn verify_with_any(keys: &[PublicKey], checkpoint: &Checkpoint) -> Result<(), String> {
    match keys.iter().find(|key| key.key_id() == checkpoint.key_id) {
        Some(key) => key.verify(checkpoint),
        None => Err(format!(
            "signed by key {}, which is not among the public keys given ({})",
            checkpoint.key_id,
            keys.iter()
                .map(PublicKey::key_id)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A checkpoint found wrong against the chain: which one (as the caller labelled it), and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointProblem {
    /// The caller's name of the checkpoint (e.g. `line 7`).
    pub label: String,
    /// Its pool.
    pub pool_id: String,
    /// Its sequence.
    pub sequence: i64,
    /// What is wrong, for people.
    pub what: String,
}

/// Checks checkpoints against a chain being replayed: each is expected at its pool and
/// sequence ([`ChainWitness::expect`]), each entry replayed is shown to it
/// ([`ChainWitness::observe`]), and [`ChainWitness::finish`] names the first checkpoint that
/// does not match its entry or whose entry never came.
#[derive(Clone, Debug, Default)]
pub struct ChainWitness {
    expected: BTreeMap<(String, i64), Vec<(String, Head)>>,
    problems: Vec<CheckpointProblem>,
    last_seen: BTreeMap<String, i64>,
    /// The latest checkpoint expected of each pool: sequence and label.
    latest: BTreeMap<String, (i64, i64, String)>,
}

impl ChainWitness {
    /// Expects `checkpoint` (already verified) at its pool and sequence. Checkpoints of one
    /// pool must come in the order they were made: one older than the one before it was put in
    /// a newer one's place.
    pub fn expect(&mut self, label: &str, head: &Head) -> Result<(), CheckpointProblem> {
        if let Some((sequence, created_us, previous)) = self.latest.get(&head.pool_id)
            && (head.sequence < *sequence || head.created_us <= *created_us)
        {
            return Err(CheckpointProblem {
                label: label.to_owned(),
                pool_id: head.pool_id.clone(),
                sequence: head.sequence,
                what: format!(
                    "follows the pool's checkpoint {previous} at sequence {sequence} but is not newer: an older checkpoint in a newer one's place"
                ),
            });
        }
        self.latest.insert(
            head.pool_id.clone(),
            (head.sequence, head.created_us, label.to_owned()),
        );
        self.expected
            .entry((head.pool_id.clone(), head.sequence))
            .or_default()
            .push((label.to_owned(), head.clone()));
        Ok(())
    }

    /// Shows the witness an entry that replayed without a problem, with its hash and its
    /// pool's total.
    pub fn observe(&mut self, entry: &LedgerEntry, entry_hash: &str, total_fen: i64) {
        self.last_seen.insert(entry.pool_id.clone(), entry.sequence);
        let Some(heads) = self
            .expected
            .remove(&(entry.pool_id.clone(), entry.sequence))
        else {
            return;
        };
        for (label, head) in heads {
            let mismatch = if head.head_hash != entry_hash {
                Some(format!(
                    "head hash {} differs from entry {}'s hash {entry_hash}: the chain was rewritten",
                    head.head_hash, entry.sequence
                ))
            } else if (head.held_fen, head.committed_fen, head.total_fen)
                != (entry.held_after_fen, entry.committed_after_fen, total_fen)
            {
                Some(format!(
                    "counters held/committed/total {}/{}/{} differ from the chain's {}/{}/{} after entry {}",
                    head.held_fen,
                    head.committed_fen,
                    head.total_fen,
                    entry.held_after_fen,
                    entry.committed_after_fen,
                    total_fen,
                    entry.sequence
                ))
            } else {
                None
            };
            if let Some(what) = mismatch {
                self.problems.push(CheckpointProblem {
                    label,
                    pool_id: head.pool_id,
                    sequence: head.sequence,
                    what,
                });
            }
        }
    }

    /// The first problem: a checkpoint that did not match its entry, or whose entry the chain
    /// never reached (entries missing at the end, or the pool missing altogether).
    pub fn finish(mut self) -> Result<(), CheckpointProblem> {
        if !self.problems.is_empty() {
            return Err(self.problems.swap_remove(0));
        }
        if let Some(((pool_id, sequence), heads)) = self.expected.into_iter().next() {
            let (label, _) = heads.into_iter().next().expect("a key holds a head");
            let what = match self.last_seen.get(&pool_id) {
                None => "the chain holds no entry of this pool".to_owned(),
                Some(last) => format!(
                    "the chain ends at sequence {last}: entries signed by this checkpoint are missing"
                ),
            };
            return Err(CheckpointProblem {
                label,
                pool_id,
                sequence,
                what,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of the documented test vector.
    fn head() -> Head {
        Head {
            pool_id: "p".into(),
            sequence: 1,
            head_hash: "0094d3ca3972b9a21edc986dd17c175a29fa53dc65fd35ef3c78d2f19ef4b100".into(),
            total_fen: 100,
            held_fen: 1,
            committed_fen: 0,
            created_us: 5,
        }
    }

    fn key(algorithm: Algorithm, byte: u8) -> CheckpointSigner {
        CheckpointSigner::from_seed(algorithm, &[byte; 32]).unwrap()
    }

    #[test]
    fn the_signed_bytes_match_the_documented_vector() {
        // Proves the code signs exactly what docs/LEDGER.md specifies: the expected digest of
        // the signed bytes and the Ed25519 signature were computed from the document alone
        // (Python's struct, hashlib and the cryptography package), with the documented seed.
        let signer = key(Algorithm::Ed25519, 7);
        let checkpoint = signer.sign(head());
        assert_eq!(
            checkpoint.key_id,
            signer.public_key().key_id(),
            "the id of the signing key"
        );
        assert_eq!(
            hex::encode(Sha256::digest(checkpoint.signed_bytes())),
            DOCUMENTED_SIGNED_BYTES_SHA256,
        );
        assert_eq!(checkpoint.key_id, DOCUMENTED_ED25519_KEY_ID);
        assert_eq!(
            hex::encode(&checkpoint.signature),
            DOCUMENTED_ED25519_SIGNATURE
        );
    }

    /// The vectors of docs/LEDGER.md (seed: 32 bytes of 0x07).
    const DOCUMENTED_SIGNED_BYTES_SHA256: &str =
        "abebcbe217f6743dd583d55fefcafef15385f68f4b2021aa5f3813ea5797fc29";
    const DOCUMENTED_ED25519_KEY_ID: &str = "324be2dea8bc44461b0233e51fa48902";
    const DOCUMENTED_ED25519_SIGNATURE: &str = "9711e7018ff12cb6a0c4e52ab8311fa0d4340e12fd5c6ad6c56ccc5ea5655708e1b693eb012805776fa3407b0620184288c591e821749a2a7da12dc4ff3dc60a";

    #[test]
    fn both_algorithms_sign_and_verify_and_refuse_a_changed_field_or_another_key() {
        // Proves Ed25519 and SM2/SM3 checkpoints verify with their own public key (also read
        // back from PEM), and that a changed field, another key, or a key of the other
        // algorithm is refused and named.
        for algorithm in [Algorithm::Ed25519, Algorithm::Sm2Sm3] {
            let signer = key(algorithm, 9);
            let reread =
                CheckpointSigner::from_pkcs8_pem(algorithm, &signer.to_pkcs8_pem()).unwrap();
            assert_eq!(reread.public_key().key_id(), signer.public_key().key_id());
            let public = PublicKey::from_pem(signer.public_key().to_pem()).unwrap();
            assert_eq!(public.algorithm(), algorithm);
            let checkpoint = signer.sign(head());
            assert_eq!(checkpoint.signature.len(), SIGNATURE_BYTES);
            assert_eq!(public.verify(&checkpoint), Ok(()));
            // Deterministic: the same head signs to the same bytes.
            assert_eq!(reread.sign(head()), checkpoint);
            let mut changed = checkpoint.clone();
            changed.head.held_fen += 1;
            assert!(public.verify(&changed).unwrap_err().contains("signature"));
            let mut moved = checkpoint.clone();
            moved.head.pool_id = "q".into();
            assert!(public.verify(&moved).unwrap_err().contains("signature"));
            let other = key(algorithm, 10);
            assert!(
                other
                    .public_key()
                    .verify(&checkpoint)
                    .unwrap_err()
                    .contains("not by the key given")
            );
            // A forged checkpoint claiming the right key id but signed by another key.
            let mut forged = other.sign(head());
            forged.key_id = checkpoint.key_id.clone();
            assert!(public.verify(&forged).unwrap_err().contains("signature"));
            assert!(
                verify_with_any(&[other.public_key().clone()], &checkpoint)
                    .unwrap_err()
                    .contains("not among the public keys")
            );
        }
        let ed = key(Algorithm::Ed25519, 1);
        assert!(matches!(
            CheckpointSigner::from_pkcs8_pem(Algorithm::Sm2Sm3, &ed.to_pkcs8_pem()),
            Err(KeyError::NotPrivateKey { .. })
        ));
        assert_eq!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
                .unwrap_err(),
            KeyError::NotPublicKey
        );
    }

    #[test]
    fn a_checkpoint_is_matched_against_the_chain_at_its_sequence() {
        // Proves the witness names a checkpoint whose head hash or counters differ from the
        // entry at its sequence, one whose entry the chain never reached, one of a pool the
        // chain does not hold, and an older checkpoint put after a newer one.
        let entry = LedgerEntry {
            pool_id: "p".into(),
            sequence: 1,
            kind: "POOL_CREATED".into(),
            reservation_id: String::new(),
            beneficiary_uscc: String::new(),
            actor: "a".into(),
            request_id: "q".into(),
            amount_fen: 100,
            released_fen: 0,
            held_before_fen: 0,
            held_after_fen: 1,
            committed_before_fen: 0,
            committed_after_fen: 0,
            created_us: 5,
            previous_hash: String::new(),
            hash_version: 2,
            expires_us: None,
        };
        let hash = head().head_hash;
        let run = |heads: &[Head]| {
            let mut witness = ChainWitness::default();
            for (n, head) in heads.iter().enumerate() {
                witness.expect(&format!("c{n}"), head)?;
            }
            witness.observe(&entry, &hash, 100);
            witness.finish()
        };
        assert_eq!(run(&[head()]), Ok(()));
        let rewritten = Head {
            head_hash: "ff".into(),
            ..head()
        };
        assert!(run(&[rewritten]).unwrap_err().what.contains("rewritten"));
        let counters = Head {
            held_fen: 2,
            ..head()
        };
        assert!(run(&[counters]).unwrap_err().what.contains("counters"));
        let ahead = Head {
            sequence: 2,
            created_us: 6,
            ..head()
        };
        let problem = run(&[head(), ahead.clone()]).unwrap_err();
        assert_eq!((problem.label.as_str(), problem.sequence), ("c1", 2));
        assert!(problem.what.contains("ends at sequence 1"), "{problem:?}");
        let elsewhere = Head {
            pool_id: "other".into(),
            ..head()
        };
        assert!(run(&[elsewhere]).unwrap_err().what.contains("no entry"));
        let problem = run(&[ahead, head()]).unwrap_err();
        assert!(problem.what.contains("older checkpoint"), "{problem:?}");
    }
}
