//! The `[tls]` and `[auth]` sections, and the security of one service process built from them:
//! the TLS material (served, and presented to peers), the token verifier, the access layer,
//! and the channels to peer services.
//!
//! Secure by default: without `tls.insecure = true` a service refuses to start unless its
//! certificate, key and CA files are configured. `tls.insecure` serves plaintext and is
//! accepted only on a loopback address; the process says so loudly.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subsidy_proto::access::{Role, Service};

use crate::BoxError;
use crate::admission::{Agency, AuthLayer, RateLimit, Transport};
use crate::audit::AuditSink;
use crate::auth::token::{LEEWAY_SECONDS_MAX, TokenPolicy, TokenVerifier};
use crate::config::{Config, ConfigError, Section, ServiceKind, Setting, check_range};
use crate::db::Db;
use crate::tls::{TlsFiles, TlsState};

/// Default interval between checks of the certificate and key files, in milliseconds.
pub const RELOAD_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Shortest reload interval accepted, in milliseconds.
pub const RELOAD_INTERVAL_MS_MIN: u64 = 100;
/// Longest reload interval accepted, in milliseconds.
pub const RELOAD_INTERVAL_MS_MAX: u64 = 3_600_000;
/// Default audience of accepted tokens.
pub const AUDIENCE_DEFAULT: &str = "subsidy";
/// Default clock leeway for token times, in seconds.
pub const LEEWAY_SECONDS_DEFAULT: u64 = 30;
/// Default sustained rate of changes per caller, per second.
pub const RATE_PER_SECOND_DEFAULT: u32 = 20;
/// Default burst of changes per caller.
pub const RATE_BURST_DEFAULT: u32 = 40;
/// Time allowed to connect to a peer service, in seconds.
pub const PEER_CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Largest rate or burst accepted.
pub const RATE_MAX: u32 = 1_000_000;
/// Smallest rate or burst accepted.
pub const RATE_MIN: u32 = 1;

/// The `[tls]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The service's certificate chain (PEM, leaf first).
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
    /// The internal CA bundle (PEM): peers' certificates chain to it.
    pub ca_file: String,
    /// The CA bundle of agencies' client certificates (PEM); empty: agencies use tokens.
    pub agency_ca_file: String,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
    /// Serve plaintext (loopback only) and trust services that name themselves.
    pub insecure: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            agency_ca_file: String::new(),
            reload_interval_ms: RELOAD_INTERVAL_MS_DEFAULT,
            insecure: false,
        }
    }
}

impl Section for TlsSettings {
    const KEY: &'static str = "tls";
    const SETTINGS: &'static [Setting] = &[
        Setting::text(
            "tls.cert_file",
            &["SUBSIDY_TLS_CERT_FILE"],
            "the service's certificate chain (PEM, leaf first; URI SAN `spiffe://subsidy/<service>`)",
        )
        .described("unset (required unless `tls.insecure`)"),
        Setting::text(
            "tls.key_file",
            &["SUBSIDY_TLS_KEY_FILE"],
            "the certificate's private key (PEM)",
        )
        .described("unset (required unless `tls.insecure`)"),
        Setting::text(
            "tls.ca_file",
            &["SUBSIDY_TLS_CA_FILE"],
            "the internal CA (PEM) that services' certificates chain to",
        )
        .described("unset (required unless `tls.insecure`)"),
        Setting::text(
            "tls.agency_ca_file",
            &["SUBSIDY_TLS_AGENCY_CA_FILE"],
            "CA (PEM) of agencies' client certificates; agencies then need an entry in `auth.agencies_file`",
        )
        .described("unset"),
        Setting::scalar(
            "tls.reload_interval_ms",
            &["SUBSIDY_TLS_RELOAD_INTERVAL_MS"],
            "how often certificate, key, CA and JWKS files are checked for changes, in milliseconds",
        ),
        Setting::scalar(
            "tls.insecure",
            &["SUBSIDY_INSECURE"],
            "serve plaintext on a loopback address (development only; said loudly at start)",
        ),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "tls.reload_interval_ms",
            self.reload_interval_ms,
            RELOAD_INTERVAL_MS_MIN,
            RELOAD_INTERVAL_MS_MAX,
        )?;
        if !self.insecure {
            for (key, value) in [
                ("tls.cert_file", &self.cert_file),
                ("tls.key_file", &self.key_file),
                ("tls.ca_file", &self.ca_file),
            ] {
                if value.is_empty() {
                    return Err(ConfigError::invalid(
                        key,
                        &"",
                        "is required (or set tls.insecure = true on a loopback address)",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl TlsSettings {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<TlsFiles> {
        (!self.insecure).then(|| TlsFiles {
            cert: PathBuf::from(&self.cert_file),
            key: PathBuf::from(&self.key_file),
            ca: PathBuf::from(&self.ca_file),
            agency_ca: (!self.agency_ca_file.is_empty())
                .then(|| PathBuf::from(&self.agency_ca_file)),
        })
    }
}

/// The `[auth]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The JWKS file of the identity provider; empty: no bearer tokens are accepted.
    pub jwks_file: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Clock leeway for `exp` and `nbf`, seconds.
    pub leeway_seconds: u64,
    /// Changes per second one caller may make, sustained.
    pub rate_limit_per_second: u32,
    /// Changes one caller may make at once after a quiet period.
    pub rate_limit_burst: u32,
    /// A JSON file of agency systems known by client certificate:
    /// `[{"name": "<SAN>", "roles": ["applicant"], "enterprises": ["<USCC>"]}]`.
    pub agencies_file: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwks_file: String::new(),
            issuer: String::new(),
            audience: AUDIENCE_DEFAULT.to_owned(),
            leeway_seconds: LEEWAY_SECONDS_DEFAULT,
            rate_limit_per_second: RATE_PER_SECOND_DEFAULT,
            rate_limit_burst: RATE_BURST_DEFAULT,
            agencies_file: String::new(),
        }
    }
}

impl Section for AuthSettings {
    const KEY: &'static str = "auth";
    const SETTINGS: &'static [Setting] = &[
        Setting::text(
            "auth.jwks_file",
            &["SUBSIDY_AUTH_JWKS_FILE"],
            "JWKS (JSON) of the identity provider's token-signing keys, reloaded when it changes; unset: bearer tokens are refused",
        )
        .described("unset"),
        Setting::text(
            "auth.issuer",
            &["SUBSIDY_AUTH_ISSUER"],
            "the `iss` every token must carry (required with `auth.jwks_file`)",
        )
        .described("unset"),
        Setting::text(
            "auth.audience",
            &["SUBSIDY_AUTH_AUDIENCE"],
            "the `aud` every token must carry",
        ),
        Setting::scalar(
            "auth.leeway_seconds",
            &["SUBSIDY_AUTH_LEEWAY_SECONDS"],
            "clock leeway for a token's `exp` and `nbf`, in seconds (at most 30)",
        ),
        Setting::scalar(
            "auth.rate_limit_per_second",
            &["SUBSIDY_AUTH_RATE_LIMIT_PER_SECOND"],
            "changes one caller may make per second, sustained (services are not limited)",
        ),
        Setting::scalar(
            "auth.rate_limit_burst",
            &["SUBSIDY_AUTH_RATE_LIMIT_BURST"],
            "changes one caller may make at once",
        ),
        Setting::text(
            "auth.agencies_file",
            &["SUBSIDY_AUTH_AGENCIES_FILE"],
            "JSON list of agency systems known by client certificate: name (SAN), roles, enterprises",
        )
        .described("unset"),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "auth.leeway_seconds",
            self.leeway_seconds,
            0,
            LEEWAY_SECONDS_MAX,
        )?;
        check_range(
            "auth.rate_limit_per_second",
            self.rate_limit_per_second,
            RATE_MIN,
            RATE_MAX,
        )?;
        check_range(
            "auth.rate_limit_burst",
            self.rate_limit_burst,
            RATE_MIN,
            RATE_MAX,
        )?;
        if !self.jwks_file.is_empty() && self.issuer.is_empty() {
            return Err(ConfigError::invalid(
                "auth.issuer",
                &"",
                "is required when auth.jwks_file is set",
            ));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::invalid("auth.audience", &"", "is required"));
        }
        Ok(())
    }
}

/// One agency entry of `auth.agencies_file`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyEntry {
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    enterprises: Vec<String>,
}

fn load_agencies(path: &str) -> Result<Vec<Agency>, BoxError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|error| format!("{path}: {error}"))?;
    let entries: Vec<AgencyEntry> =
        serde_json::from_str(&text).map_err(|error| format!("{path}: {error}"))?;
    entries
        .into_iter()
        .map(|entry| {
            let roles = entry
                .roles
                .iter()
                .map(|name| {
                    Role::from_claim_name(name).ok_or_else(|| {
                        format!("{path}: agency {}: unknown role {name}", entry.name)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Agency {
                name: entry.name,
                roles,
                enterprises: entry.enterprises,
            })
        })
        .collect()
}

impl ServiceKind {
    /// The service as the access rules name it.
    pub fn access_service(self) -> Service {
        match self {
            ServiceKind::Application => Service::Application,
            ServiceKind::Rules => Service::Rules,
            ServiceKind::Budget => Service::Budget,
            ServiceKind::Notification => Service::Notification,
        }
    }
}

/// The security of one service process.
#[derive(Clone, Debug)]
pub struct Security {
    kind: ServiceKind,
    tls: Option<Arc<TlsState>>,
    tokens: Option<Arc<TokenVerifier>>,
    agencies: Vec<Agency>,
    rate: RateLimit,
}

impl Security {
    /// Loads the files the `[tls]` and `[auth]` sections name and starts watching them.
    pub fn load(kind: ServiceKind, config: &Config) -> Result<Security, BoxError> {
        let tls_settings: TlsSettings = config.section()?;
        let auth: AuthSettings = config.section()?;
        let interval = Duration::from_millis(tls_settings.reload_interval_ms);
        let tls = match tls_settings.files() {
            Some(files) => {
                let state = TlsState::load(files)?;
                state.spawn_reloader(interval);
                Some(state)
            }
            None => {
                let loopback = config
                    .listen
                    .parse::<std::net::SocketAddr>()
                    .map(|address| address.ip().is_loopback())
                    .unwrap_or(false);
                if !loopback {
                    return Err(format!(
                        "tls.insecure is only allowed on a loopback address, not {}",
                        config.listen
                    )
                    .into());
                }
                tracing::warn!(
                    service = kind.name(),
                    listen = %config.listen,
                    "INSECURE: serving plaintext without TLS; services are trusted by the name they send. Development only."
                );
                None
            }
        };
        let tokens = if auth.jwks_file.is_empty() {
            None
        } else {
            let verifier = TokenVerifier::load(
                std::path::Path::new(&auth.jwks_file),
                TokenPolicy {
                    issuer: auth.issuer.clone(),
                    audience: auth.audience.clone(),
                    leeway_seconds: auth.leeway_seconds,
                },
            )?;
            verifier.spawn_reloader(interval);
            Some(verifier)
        };
        Ok(Security {
            kind,
            tls,
            tokens,
            agencies: load_agencies(&auth.agencies_file)?,
            rate: RateLimit {
                per_second: NonZeroU32::new(auth.rate_limit_per_second)
                    .expect("validated to at least 1"),
                burst: NonZeroU32::new(auth.rate_limit_burst).expect("validated to at least 1"),
            },
        })
    }

    /// The TLS state, when TLS is on.
    pub fn tls(&self) -> Option<&Arc<TlsState>> {
        self.tls.as_ref()
    }

    /// The access layer of this process, recording refused changes in `db`'s audit trail.
    pub fn layer(&self, db: Option<&Db>) -> AuthLayer {
        let transport = match &self.tls {
            Some(state) => Transport::Tls(state.clone()),
            None => Transport::Insecure,
        };
        AuthLayer::new(
            transport,
            self.tokens.clone(),
            self.agencies.clone(),
            self.rate,
            db.map(|db| AuditSink::new(db.clone())),
        )
    }

    /// A lazily connecting channel to the peer service at `url`: mutual TLS with this
    /// service's certificate (an `https://` or `http://` URL alike), or plaintext when
    /// insecure. Calls carry the trace, the person this service acts for, and, when insecure,
    /// this service's name. With `resolve_interval`, `url` may be a comma-separated list, each
    /// host is resolved that often, and calls are balanced over every address found
    /// ([`crate::balance`]); without it, one connection carries every call.
    pub fn peer_channel(
        &self,
        url: &str,
        timeout: Duration,
        resolve_interval: Option<Duration>,
    ) -> Result<PeerChannel, BoxError> {
        let tls = self.tls.clone();
        let endpoint = move |url: String| -> Result<tonic::transport::Endpoint, BoxError> {
            Ok(
                tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?
                    .connect_timeout(Duration::from_secs(PEER_CONNECT_TIMEOUT_SECONDS))
                    .timeout(timeout)
                    .tcp_nodelay(true),
            )
        };
        let transport = match resolve_interval {
            None => {
                let endpoint = endpoint(url.to_owned())?;
                crate::balance::single(match &tls {
                    Some(state) => endpoint
                        .connect_with_connector_lazy(crate::tls::Connector::new(state.clone())),
                    None => endpoint.connect_lazy(),
                })
            }
            Some(interval) => {
                let targets = url
                    .split(',')
                    .map(crate::balance::Target::of_url)
                    .collect::<Result<Vec<_>, _>>()?;
                // Checked here once: every address gets the same kind of endpoint.
                endpoint(url.split(',').next().unwrap_or(url).trim().to_owned())?;
                crate::balance::balanced(targets, interval, timeout, move |address, host| {
                    let endpoint = endpoint(format!("http://{address}"))
                        .expect("an address makes a valid endpoint");
                    match &tls {
                        // The certificate is verified for the host the address came from.
                        Some(state) => endpoint.connect_with_connector_lazy(
                            crate::tls::Connector::new(state.clone()).verifying(host),
                        ),
                        None => endpoint.connect_lazy(),
                    }
                })
            }
        };
        let insecure_name = self
            .tls
            .is_none()
            .then(|| self.kind.access_service().short_name());
        Ok(crate::telemetry::ClientSpans::new(
            self.kind,
            tonic::service::interceptor::InterceptedService::new(
                transport,
                PeerCall { insecure_name },
            ),
        ))
    }
}

/// A channel to a peer service: a client span per call, and [`PeerCall`] metadata.
pub type PeerChannel = crate::telemetry::ClientSpans<
    tonic::service::interceptor::InterceptedService<crate::balance::PeerTransport, PeerCall>,
>;

/// Adds to every outgoing call: the W3C trace context, the person the service acts for
/// (`x-subsidy-on-behalf-of`, from the call being handled), and in insecure mode the
/// service's own name.
#[derive(Clone, Copy, Debug)]
pub struct PeerCall {
    insecure_name: Option<&'static str>,
}

impl tonic::service::Interceptor for PeerCall {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject_current(request.metadata_mut());
        if let Some(person) = crate::auth::acting_for_now()
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(person.as_str())
        {
            request
                .metadata_mut()
                .insert(crate::auth::ON_BEHALF_OF_METADATA_KEY, value);
        }
        if let Some(name) = self.insecure_name {
            request.metadata_mut().insert(
                crate::auth::INSECURE_SERVICE_METADATA_KEY,
                tonic::metadata::MetadataValue::from_static(name),
            );
        }
        Ok(request)
    }
}
