//! The credentials of test stacks, made once per test process: a development CA with every
//! service's certificate and a token-signing key (`auth::dev`), plus an agencies' CA with one
//! agency's client certificate. Services under test get them through [`service_env`]; test
//! clients connect with them through [`connect`].
//!
//! The kit's default client is the one most tests want: it connects over mutual TLS as the
//! **application service** (so it may reserve money, evaluate claims and publish events as the
//! application does) and sends with every call that carries no `authorization` of its own an
//! **operator token** holding every human role except `expert`, bound as an applicant to every
//! test enterprise the process has named ([`crate::ids`]). The access layer uses the service
//! identity where the RPC admits the application and the token elsewhere. Tests of access
//! control connect with [`Transport::Anonymous`] and a token of their own instead.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_common::auth::token::{Claims, SigningKey};
use subsidy_common::tls::{Connector, TlsFiles, TlsState};
use subsidy_proto::access::{Role, Service};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;

/// A channel of the kit: a TLS channel that adds credentials to each call.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// The subject of the operator token.
pub const OPERATOR: &str = "kit-operator";
/// The name (DNS SAN) of the agency whose client certificate the kit holds.
pub const AGENCY: &str = "agency.example.cn";
/// The roles of the operator token.
pub const OPERATOR_ROLES: [Role; 5] = [
    Role::Applicant,
    Role::Reviewer,
    Role::Finance,
    Role::Auditor,
    Role::Admin,
];
/// Calls one caller may make per second in a test stack (tests of the limit set their own).
pub const TEST_RATE_PER_SECOND: &str = "100000";

/// The files of the process's test credentials.
#[derive(Debug)]
pub struct TestFiles {
    /// The development credentials (CA, service certificates, signing key, JWKS).
    pub dev: DevPaths,
    /// The agencies' CA.
    pub agency_ca: PathBuf,
    /// The agency's certificate chain and key.
    pub agency_cert: (PathBuf, PathBuf),
    /// The agencies file naming it.
    pub agencies_file: PathBuf,
    /// The notification service's key of signing secrets (64 hex digits).
    pub secret_key: PathBuf,
    /// The signing key.
    pub signing: SigningKey,
}

static FILES: OnceLock<TestFiles> = OnceLock::new();

/// The process's test credentials, made on first use.
pub fn files() -> &'static TestFiles {
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "subsidy-kit-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        dev::write_all(&dir, &[]).expect("write the development credentials");
        let dev = DevPaths::new(&dir);
        let agency = dev::certificate_authority("subsidy test agencies CA").expect("agency CA");
        let (chain, key) = dev::leaf(&agency, AGENCY, &[AGENCY.to_owned()], &[])
            .expect("agency certificate");
        let agency_ca = dir.join("pki").join("agency-ca.crt");
        let agency_cert = (
            dir.join("pki").join("agency.crt"),
            dir.join("pki").join("agency.key"),
        );
        std::fs::write(&agency_ca, agency.pem()).expect("write the agency CA");
        std::fs::write(&agency_cert.0, chain).expect("write the agency certificate");
        std::fs::write(&agency_cert.1, key).expect("write the agency key");
        let enterprises: Vec<String> = (0..4).map(|n| crate::shandong(n).to_string()).collect();
        let agencies_file = dir.join("auth").join("agencies.json");
        std::fs::write(
            &agencies_file,
            serde_json::json!([{ "name": AGENCY, "roles": ["applicant"], "enterprises": enterprises }])
                .to_string(),
        )
        .expect("write the agencies file");
        let signing = dev.load_signing_key().expect("the development signing key");
        let secret_key = dir.join("auth").join("notification-secret.key");
        std::fs::write(&secret_key, uuid::Uuid::new_v4().simple().to_string().repeat(2))
            .expect("write the notification secret key");
        TestFiles {
            dev,
            agency_ca,
            agency_cert,
            agencies_file,
            secret_key,
            signing,
        }
    })
}

/// The environment that gives a service of a test stack its certificate, the CAs, the JWKS
/// and generous rate limits.
pub fn service_env(kind: subsidy_common::config::ServiceKind) -> Vec<(String, String)> {
    let files = files();
    let tls = files.dev.tls_files(kind.access_service());
    let text = |path: &Path| path.display().to_string();
    vec![
        ("SUBSIDY_TLS_CERT_FILE".into(), text(&tls.cert)),
        ("SUBSIDY_TLS_KEY_FILE".into(), text(&tls.key)),
        ("SUBSIDY_TLS_CA_FILE".into(), text(&tls.ca)),
        ("SUBSIDY_TLS_AGENCY_CA_FILE".into(), text(&files.agency_ca)),
        ("SUBSIDY_AUTH_JWKS_FILE".into(), text(&files.dev.jwks())),
        ("SUBSIDY_AUTH_ISSUER".into(), dev::DEV_ISSUER.into()),
        (
            "SUBSIDY_AUTH_AGENCIES_FILE".into(),
            text(&files.agencies_file),
        ),
        (
            "SUBSIDY_AUTH_RATE_LIMIT_PER_SECOND".into(),
            TEST_RATE_PER_SECOND.into(),
        ),
        (
            "SUBSIDY_AUTH_RATE_LIMIT_BURST".into(),
            TEST_RATE_PER_SECOND.into(),
        ),
        // Read by the notification service only: the key of its signing secrets at rest.
        (
            "SUBSIDY_NOTIFICATION_SECRET_KEY_FILE".into(),
            text(&files.secret_key),
        ),
    ]
}

/// A token signed by the test key for `subject` holding `roles`.
pub fn token(
    subject: &str,
    roles: &[Role],
    enterprises: &[String],
    expert_id: Option<&str>,
) -> String {
    files()
        .signing
        .mint(&dev::claims(subject, roles, enterprises, expert_id))
}

/// A token with exactly these claims (for tests of refused tokens).
pub fn token_with(claims: &Claims) -> String {
    files().signing.mint(claims)
}

/// `Bearer <token>` as metadata.
pub fn bearer(token: &str) -> MetadataValue<tonic::metadata::Ascii> {
    MetadataValue::try_from(format!("Bearer {token}")).expect("a token is ASCII")
}

/// The test enterprises named so far in this process (see [`crate::ids`]).
static ENTERPRISES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// The operator token, minted again when the set of enterprises grew.
static OPERATOR_TOKEN: Mutex<(usize, String)> = Mutex::new((usize::MAX, String::new()));

/// Records that a test uses the enterprise `uscc` (the operator token binds it).
pub fn named(uscc: &str) {
    ENTERPRISES
        .lock()
        .expect("never poisoned")
        .insert(uscc.to_owned());
}

/// The operator token for the enterprises named so far.
pub fn operator_token() -> String {
    let enterprises: Vec<String> = ENTERPRISES
        .lock()
        .expect("never poisoned")
        .iter()
        .cloned()
        .collect();
    let mut cached = OPERATOR_TOKEN.lock().expect("never poisoned");
    if cached.0 != enterprises.len() {
        *cached = (
            enterprises.len(),
            token(OPERATOR, &OPERATOR_ROLES, &enterprises, None),
        );
    }
    cached.1.clone()
}

/// What a kit channel adds to a call that carries no `authorization` of its own (it always
/// adds the current trace context).
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Nothing.
    None,
    /// The operator token.
    Operator,
    /// This token.
    Token(Arc<str>),
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        // A test client continues the trace of the test's span, as an agency's client would.
        subsidy_common::telemetry::inject_current(request.metadata_mut());
        if request.metadata().contains_key("authorization") {
            return Ok(request);
        }
        let token = match self {
            Credentials::None => return Ok(request),
            Credentials::Operator => operator_token(),
            Credentials::Token(token) => token.to_string(),
        };
        request
            .metadata_mut()
            .insert("authorization", bearer(&token));
        Ok(request)
    }
}

/// The client certificate a kit channel presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A service's certificate.
    Service(Service),
    /// The agency's certificate.
    Agency,
    /// None (TLS that authenticates the server only).
    Anonymous,
}

static STATES: Mutex<Option<HashMap<Transport, Arc<TlsState>>>> = Mutex::new(None);

fn connector(transport: Transport) -> Connector {
    let files = files();
    let load = |tls: TlsFiles| TlsState::load(tls).expect("load test TLS files");
    match transport {
        Transport::Anonymous => {
            Connector::anonymous(&files.dev.ca()).expect("the development CA loads")
        }
        _ => {
            let mut states = STATES.lock().expect("never poisoned");
            let state = states
                .get_or_insert_with(HashMap::new)
                .entry(transport)
                .or_insert_with(|| match transport {
                    Transport::Service(service) => load(files.dev.tls_files(service)),
                    _ => load(TlsFiles {
                        cert: files.agency_cert.0.clone(),
                        key: files.agency_cert.1.clone(),
                        ca: files.dev.ca(),
                        agency_ca: None,
                    }),
                })
                .clone();
            Connector::new(state)
        }
    }
}

fn endpoint(url: &str) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))
        .expect("a valid URL")
}

/// A channel to `url` presenting `transport`'s certificate and adding `credentials`.
pub async fn connect_with(url: &str, transport: Transport, credentials: Credentials) -> Channel {
    let channel = endpoint(url)
        .connect_with_connector(connector(transport))
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}"));
    InterceptedService::new(channel, credentials)
}

/// The kit's default channel to `url`: the application's certificate and the operator token.
pub async fn connect(url: &str) -> Channel {
    connect_with(
        url,
        Transport::Service(Service::Application),
        Credentials::Operator,
    )
    .await
}

/// A channel to `url` as the application service, connecting lazily (for services that may be
/// down), adding `credentials`.
pub fn connect_lazy_as(url: &str, credentials: Credentials) -> Channel {
    let channel = endpoint(url)
        .connect_with_connector_lazy(connector(Transport::Service(Service::Application)));
    InterceptedService::new(channel, credentials)
}

/// The default channel, connecting lazily (for services that may be down).
pub fn connect_lazy(url: &str) -> Channel {
    let channel = endpoint(url)
        .connect_with_connector_lazy(connector(Transport::Service(Service::Application)));
    InterceptedService::new(channel, Credentials::Operator)
}
