//! Development credentials: a CA with a certificate per service, and a token-signing key with
//! its JWKS. `subsidy dev` creates them under its data directory on first start (so the dev
//! stack is secure by default and still one command), `subsidyctl certs dev DIR` writes them
//! anywhere, `subsidyctl` finds them to trust the dev CA and to mint tokens, and the test kit
//! makes a fresh set per stack.
//!
//! Layout under a directory `D`:
//! - `D/pki/ca.crt`, `D/pki/ca.key`: the development CA;
//! - `D/pki/<service>.crt`, `D/pki/<service>.key`: each service's certificate (leaf first,
//!   then the CA), with the URI SAN `spiffe://subsidy/<service>`, DNS SANs `localhost`,
//!   `<service>` and the given host names, and IP SANs for loopback;
//! - `D/auth/signing-key.pem` (ES256, PKCS#8) and `D/auth/jwks.json` (its public half).
//!
//! Nothing here is for production: there, certificates come from the province's CA and
//! tokens from its identity provider.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use subsidy_proto::access::{Role, Service};

use super::token::{Claims, SigningKey, TokenError, now_seconds};
use crate::BoxError;
use crate::tls::TlsFiles;

/// The issuer of development tokens.
pub const DEV_ISSUER: &str = "https://subsidy.dev.invalid";
/// The audience of development tokens (and the default audience of every service).
pub const DEV_AUDIENCE: &str = "subsidy";
/// The key id of the development signing key.
pub const DEV_KID: &str = "subsidy-dev-1";
/// Lifetime of a development token, in seconds.
pub const DEV_TOKEN_TTL_SECONDS: u64 = 3_600;
/// First year development certificates are valid in.
pub const DEV_CERT_FROM_YEAR: i32 = 2025;
/// Development certificates are valid until the start of this year.
pub const DEV_CERT_UNTIL_YEAR: i32 = 2036;

/// The files of a development credential directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl DevPaths {
    /// The credentials under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DevPaths { dir: dir.into() }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("pki").join("ca.crt")
    }

    /// The TLS files of `service`.
    pub fn tls_files(&self, service: Service) -> TlsFiles {
        let name = service.short_name();
        TlsFiles {
            cert: self.dir.join("pki").join(format!("{name}.crt")),
            key: self.dir.join("pki").join(format!("{name}.key")),
            ca: self.ca(),
            agency_ca: None,
        }
    }

    /// The token-signing key.
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("auth").join("signing-key.pem")
    }

    /// The JWKS of the signing key.
    pub fn jwks(&self) -> PathBuf {
        self.dir.join("auth").join("jwks.json")
    }

    /// Whether every file exists.
    pub fn complete(&self) -> bool {
        self.ca().exists()
            && self.signing_key().exists()
            && self.jwks().exists()
            && Service::ALL.iter().all(|service| {
                let files = self.tls_files(*service);
                files.cert.exists() && files.key.exists()
            })
    }

    /// Creates whatever is missing (all of it, when anything is: a half-made set is replaced).
    pub fn ensure(&self, hosts: &[String]) -> Result<bool, BoxError> {
        if self.complete() {
            return Ok(false);
        }
        write_all(&self.dir, hosts)?;
        Ok(true)
    }

    /// The development signing key.
    pub fn load_signing_key(&self) -> Result<SigningKey, BoxError> {
        let pem = std::fs::read(self.signing_key())
            .map_err(|error| format!("{}: {error}", self.signing_key().display()))?;
        Ok(SigningKey::from_pem(&pem, DEV_KID)?)
    }
}

fn write_secret(path: &Path, contents: &str) -> Result<(), BoxError> {
    std::fs::write(path, contents).map_err(|error| format!("{}: {error}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(DEV_CERT_FROM_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(DEV_CERT_UNTIL_YEAR, 1, 1);
}

/// A development CA named `name`.
pub fn certificate_authority(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, BoxError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A leaf certificate for client and server use, signed by `issuer`: DNS/IP SANs from
/// `names`, URI SANs from `uris`. Returns (certificate chain PEM, key PEM).
pub fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    names: &[String],
    uris: &[String],
) -> Result<(String, String), BoxError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into()?));
    }
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let signer: &Issuer<'static, KeyPair> = issuer;
    let certificate = params.signed_by(&key, signer)?;
    Ok((certificate.pem() + &issuer.pem(), key.serialize_pem()))
}

/// Writes a complete credential set under `dir`; `hosts` are extra DNS names or IPs put in
/// every service certificate (e.g. Kubernetes service names).
pub fn write_all(dir: &Path, hosts: &[String]) -> Result<(), BoxError> {
    let paths = DevPaths::new(dir);
    std::fs::create_dir_all(dir.join("pki"))?;
    std::fs::create_dir_all(dir.join("auth"))?;
    let ca = certificate_authority("subsidy development CA")?;
    for service in Service::ALL {
        let name = service.short_name();
        let mut names = vec![
            "localhost".to_owned(),
            name.to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.extend(hosts.iter().cloned());
        let (chain, key) = leaf(&ca, name, &names, &[service.spiffe_id()])?;
        let files = paths.tls_files(service);
        std::fs::write(&files.cert, chain)?;
        write_secret(&files.key, &key)?;
    }
    std::fs::write(paths.ca(), ca.pem())?;
    write_secret(&dir.join("pki").join("ca.key"), &ca.key().serialize_pem())?;
    let signing = KeyPair::generate()?.serialize_pem();
    write_secret(&paths.signing_key(), &signing)?;
    let key = SigningKey::from_pem(signing.as_bytes(), DEV_KID)?;
    let jwks = jsonwebtoken::jwk::JwkSet {
        keys: vec![key.public_jwk()],
    };
    std::fs::write(paths.jwks(), serde_json::to_string_pretty(&jwks)?)?;
    Ok(())
}

/// Claims of a development token for `subject` holding `roles`.
pub fn claims(
    subject: &str,
    roles: &[Role],
    enterprises: &[String],
    expert_id: Option<&str>,
) -> Claims {
    let now = now_seconds();
    Claims {
        iss: DEV_ISSUER.to_owned(),
        sub: subject.to_owned(),
        aud: DEV_AUDIENCE.to_owned(),
        exp: now + DEV_TOKEN_TTL_SECONDS,
        nbf: Some(now.saturating_sub(1)),
        iat: Some(now),
        roles: roles
            .iter()
            .map(|role| role.claim_name().to_owned())
            .collect(),
        enterprises: enterprises.to_vec(),
        expert_id: expert_id.map(str::to_owned),
    }
}

/// Mints a development token.
pub fn mint(
    key: &SigningKey,
    subject: &str,
    roles: &[Role],
    enterprises: &[String],
    expert_id: Option<&str>,
) -> Result<String, TokenError> {
    Ok(key.mint(&claims(subject, roles, enterprises, expert_id)))
}
