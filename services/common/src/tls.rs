//! Transport security: every service serves TLS and presents its own certificate; services
//! call each other over mutual TLS; external callers may present a client certificate.
//!
//! - The server verifies a client certificate when one is presented (against the internal CA
//!   and, if configured, the agencies' CA) and accepts connections without one: people and
//!   agency systems without certificates authenticate each call with a bearer token instead.
//! - A service's identity is the URI SAN `spiffe://subsidy/<service>` of a certificate that
//!   chains to the **internal** CA; the same SAN in a certificate of the agencies' CA names
//!   nobody ([`TlsState::service_of`]).
//! - Certificates, keys and CA bundles are files (Kubernetes Secrets). A task compares their
//!   digest every `reload_interval_ms` and, when they changed, builds new server and client
//!   configurations; new connections use them, live ones keep theirs. A broken set of files is
//!   logged and the previous configuration stays.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use subsidy_proto::access::{SPIFFE_PREFIX, Service};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Time a client has to finish the TLS handshake, in milliseconds.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Connections accepted but not yet handed to the server (handshakes in flight beyond this
/// wait).
pub const ACCEPT_QUEUE_MAX: usize = 256;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Where the TLS material of a process is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The process's certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The internal CA bundle: services' certificates chain to it, PEM.
    pub ca: PathBuf,
    /// The CA bundle of agencies' client certificates, PEM, if agencies may present them.
    pub agency_ca: Option<PathBuf>,
}

/// One loaded set of TLS material.
#[derive(Debug)]
pub struct TlsMaterial {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    internal_anchors: Vec<TrustAnchor<'static>>,
    agency_anchors: Vec<TrustAnchor<'static>>,
}

/// The crypto provider of every TLS configuration built here (the workspace compiles two
/// providers in, so none is picked implicitly).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            why: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            why: "no certificate".into(),
        });
    }
    Ok(certs)
}

fn anchors(
    path: &Path,
    certs: &[CertificateDer<'static>],
) -> Result<Vec<TrustAnchor<'static>>, TlsError> {
    certs
        .iter()
        .map(|cert| {
            webpki::anchor_from_trusted_cert(cert)
                .map(|anchor| anchor.to_owned())
                .map_err(|error| TlsError::Pem {
                    path: path.to_owned(),
                    why: format!("not a CA certificate: {error:?}"),
                })
        })
        .collect()
}

impl TlsMaterial {
    /// Loads and checks the files.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
        let chain = certificates(&files.cert)?;
        let key_bytes = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|error| TlsError::Pem {
            path: files.key.clone(),
            why: error.to_string(),
        })?;
        let internal = certificates(&files.ca)?;
        let internal_anchors = anchors(&files.ca, &internal)?;
        let agency = match &files.agency_ca {
            Some(path) => certificates(path)?,
            None => Vec::new(),
        };
        let agency_anchors = match &files.agency_ca {
            Some(path) => anchors(path, &agency)?,
            None => Vec::new(),
        };
        let rustls_error = |error: rustls::Error| TlsError::Rustls(error.to_string());

        let mut client_roots = RootCertStore::empty();
        client_roots.extend(internal_anchors.iter().cloned());
        client_roots.extend(agency_anchors.iter().cloned());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(rustls_error)?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut server_roots = RootCertStore::empty();
        server_roots.extend(internal_anchors.iter().cloned());
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_root_certificates(server_roots)
            .with_client_auth_cert(chain, key)
            .map_err(rustls_error)?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(TlsMaterial {
            server: Arc::new(server),
            client: Arc::new(client),
            internal_anchors,
            agency_anchors,
        })
    }
}

/// Which CA a verified client certificate chains to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCertificate {
    /// A service of this system.
    Service(Service),
    /// An agency system, named by the certificate's first DNS SAN (or URI SAN).
    Agency(String),
}

/// Verified peers remembered, by the digest of their certificate chain.
const PEER_CACHE_ENTRIES_MAX: usize = 4096;

/// The TLS material in use, replaced when the files change.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<(Arc<TlsMaterial>, [u8; 32])>,
    // Who a chain identifies, so that a connection's certificate is checked against the CAs
    // once, not on every call; emptied when the material changes.
    peers: std::sync::Mutex<HashMap<[u8; 32], Option<PeerCertificate>>>,
}

fn digest(files: &TlsFiles) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let paths = [Some(&files.cert), Some(&files.key), Some(&files.ca)];
    for path in paths
        .into_iter()
        .chain([files.agency_ca.as_ref()])
        .flatten()
    {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(std::fs::read(path).unwrap_or_default());
    }
    hasher.finalize().into()
}

impl TlsState {
    /// Loads `files`; fails when they are not usable.
    pub fn load(files: TlsFiles) -> Result<Arc<TlsState>, TlsError> {
        let material = TlsMaterial::load(&files)?;
        let stamp = digest(&files);
        Ok(Arc::new(TlsState {
            files,
            current: RwLock::new((Arc::new(material), stamp)),
            peers: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The material in use now.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.current
            .read()
            .expect("the TLS state is never poisoned")
            .0
            .clone()
    }

    /// Loads the files again if they changed; returns whether new material is in use.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = digest(&self.files);
        if self
            .current
            .read()
            .expect("the TLS state is never poisoned")
            .1
            == stamp
        {
            return false;
        }
        match TlsMaterial::load(&self.files) {
            Ok(material) => {
                *self
                    .current
                    .write()
                    .expect("the TLS state is never poisoned") = (Arc::new(material), stamp);
                self.peers.lock().expect("never poisoned").clear();
                tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                true
            }
            Err(error) => {
                // Files being replaced one by one look broken for a moment: keep what works.
                tracing::error!(%error, "new TLS files are not usable; the previous ones stay in use");
                false
            }
        }
    }

    /// Checks the files every `interval` for as long as the state is in use.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) {
        let state = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(state) = state.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || state.reload_if_changed()).await;
            }
        });
    }

    /// Who presented `chain` (already verified by the handshake against the union of the
    /// CAs): a service when it chains to the internal CA and names a service in its URI SAN,
    /// an agency when it chains to the agencies' CA. `None` when neither holds.
    pub fn peer_of(&self, chain: &[CertificateDer<'static>]) -> Option<PeerCertificate> {
        let mut hasher = Sha256::new();
        for certificate in chain {
            hasher.update((certificate.len() as u64).to_be_bytes());
            hasher.update(certificate.as_ref());
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if let Some(known) = self.peers.lock().expect("never poisoned").get(&digest) {
            return known.clone();
        }
        let peer = self.identify(chain);
        let mut peers = self.peers.lock().expect("never poisoned");
        if peers.len() >= PEER_CACHE_ENTRIES_MAX {
            peers.clear();
        }
        peers.insert(digest, peer.clone());
        peer
    }

    fn identify(&self, chain: &[CertificateDer<'static>]) -> Option<PeerCertificate> {
        let material = self.material();
        let leaf = chain.first()?;
        let certificate = webpki::EndEntityCert::try_from(leaf).ok()?;
        let intermediates = chain.get(1..).unwrap_or_default();
        let verified_by = |anchors: &[TrustAnchor<'static>]| {
            !anchors.is_empty()
                && certificate
                    .verify_for_usage(
                        provider().signature_verification_algorithms.all,
                        anchors,
                        intermediates,
                        UnixTime::now(),
                        webpki::KeyUsage::client_auth(),
                        None,
                        None,
                    )
                    .is_ok()
        };
        if verified_by(&material.internal_anchors) {
            return certificate
                .valid_uri_names()
                .filter_map(|uri| uri.strip_prefix(SPIFFE_PREFIX))
                .find_map(Service::from_short_name)
                .map(PeerCertificate::Service);
        }
        if verified_by(&material.agency_anchors) {
            return certificate
                .valid_dns_names()
                .chain(certificate.valid_uri_names())
                .next()
                .map(|name| PeerCertificate::Agency(name.to_owned()));
        }
        None
    }
}

/// Accepts connections on `listener`, completes the TLS handshake of each in a task of its
/// own (bounded by [`HANDSHAKE_TIMEOUT_MS`]) with the configuration in use at that moment,
/// and hands the secured streams to the server. A failed handshake closes only that
/// connection.
pub fn incoming(listener: TcpListener, state: Arc<TlsState>) -> Incoming {
    let (sender, receiver) = tokio::sync::mpsc::channel(ACCEPT_QUEUE_MAX);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if sender.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(state.material().server.clone());
            let sender = sender.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                    acceptor.accept(tcp),
                )
                .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    // Never handed on as an error: the server would stop on it.
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Incoming {
        receiver: tokio_stream::wrappers::ReceiverStream::new(receiver),
        accept,
    }
}

/// The secured connections of a listener. Dropping it (the server stopped, or its task was
/// aborted) stops accepting and closes the listener, so the port is free again at once.
#[derive(Debug)]
pub struct Incoming {
    receiver: tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>,
    accept: tokio::task::JoinHandle<()>,
}

impl futures::Stream for Incoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.receiver).poll_next(cx)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connects to peer services over mutual TLS with the material in use when the connection is
/// made. The channel's URI must be `http://host:port` (the TLS is this connector's); the
/// server's certificate must carry `host` among its names.
#[derive(Clone, Debug)]
pub struct Connector {
    source: ClientSource,
    server_name: Option<String>,
}

#[derive(Clone, Debug)]
enum ClientSource {
    /// This process's material (reloaded), presenting its certificate.
    State(Arc<TlsState>),
    /// A fixed configuration presenting no certificate.
    Anonymous(Arc<ClientConfig>),
}

impl Connector {
    /// A connector over `state`.
    pub fn new(state: Arc<TlsState>) -> Self {
        Connector {
            source: ClientSource::State(state),
            server_name: None,
        }
    }

    /// A connector that trusts the CA bundle `ca` and presents no certificate (people and
    /// agency systems that authenticate by token; tools).
    pub fn anonymous(ca: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(anchors(ca, &certificates(ca)?)?);
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Rustls(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Connector {
            source: ClientSource::Anonymous(Arc::new(config)),
            server_name: None,
        })
    }

    /// The same connector verifying the server's certificate for `name` instead of the host
    /// it dials (a probe dials 127.0.0.1 and checks the service's own name).
    pub fn verifying(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    fn config(&self) -> Arc<ClientConfig> {
        match &self.source {
            ClientSource::State(state) => state.material().client.clone(),
            ClientSource::Anonymous(config) => config.clone(),
        }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config();
        let verify_as = self.server_name.clone();
        Box::pin(async move {
            let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri
                .host()
                .ok_or_else(|| invalid("the peer URL has no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid("the peer URL has no port"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(verify_as.unwrap_or(host))
                .map_err(|_| invalid("bad host name"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                return Err(std::io::Error::other("the peer did not negotiate HTTP/2"));
            }
            Ok(TokioIo::new(stream))
        })
    }
}
