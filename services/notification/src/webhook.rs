//! The webhook sender: one signed POST per attempt, a deadline for the answer, no redirects.
//! A 2xx status within the deadline is success; anything else is a failure to retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use subsidy_common::BoxError;

use crate::domain::delivery::Outcome;
use crate::domain::subscription::{SigningSecret, signature_header};

/// The `user-agent` of every webhook request.
pub const USER_AGENT: &str = concat!("subsidy-notification/", env!("CARGO_PKG_VERSION"));
/// Most response body read (and thrown away) so that the connection can be reused, in bytes.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Idle connections kept per endpoint host.
pub const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 8;
/// How long an idle connection is kept, in milliseconds.
pub const IDLE_CONNECTION_TIMEOUT_MS: u64 = 90_000;

/// One webhook request.
#[derive(Debug)]
pub struct WebhookRequest<'a> {
    /// The endpoint.
    pub endpoint: &'a str,
    /// The `webhook-id`: the event's id, stable across attempts.
    pub message_id: &'a str,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The secrets to sign with, current first.
    pub secrets: &'a [SigningSecret],
    /// Further headers, such as the trace context.
    pub extra_headers: Vec<(String, String)>,
}

/// Sends webhook requests over one pooled HTTP/1.1 client (HTTPS through rustls with the ring
/// provider and the Mozilla roots).
#[derive(Clone)]
pub struct WebhookSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    allow_http: bool,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("timeout", &self.timeout)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl WebhookSender {
    /// A sender whose requests must be answered within `timeout`; plain `http://` endpoints
    /// are refused unless `allow_http`.
    pub fn new(timeout: Duration, allow_http: bool) -> Result<Self, BoxError> {
        // The provider is chosen explicitly: the workspace may link both ring and aws-lc-rs,
        // and then rustls has no process default to fall back on.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(IDLE_CONNECTION_TIMEOUT_MS))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .build(connector);
        Ok(WebhookSender {
            client,
            timeout,
            allow_http,
        })
    }

    /// Makes one attempt.
    pub async fn send(&self, request: WebhookRequest<'_>) -> Outcome {
        if request.endpoint.starts_with("http://") && !self.allow_http {
            return Outcome::transient(0, "plain http endpoints are not allowed");
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature_header(
            &request.secrets.iter().collect::<Vec<_>>(),
            request.message_id,
            timestamp,
            &request.body,
        );
        let mut builder = http::Request::post(request.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header("webhook-id", request.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        for (name, value) in &request.extra_headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let http_request = match builder.body(Full::new(Bytes::from(request.body))) {
            Ok(http_request) => http_request,
            Err(_) => return Outcome::transient(0, "the endpoint URL cannot be requested"),
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response =
            match tokio::time::timeout_at(deadline, self.client.request(http_request)).await {
                Err(_) => {
                    return Outcome::transient(
                        0,
                        format!("timeout after {} ms", self.timeout.as_millis()),
                    );
                }
                Ok(Err(error)) => return Outcome::transient(0, describe(&error)),
                Ok(Ok(response)) => response,
            };
        let status = response.status();
        // Read a bounded body so the connection can be reused; its content is never kept.
        let _ = tokio::time::timeout_at(
            deadline,
            Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX).collect(),
        )
        .await;
        if status.is_success() {
            Outcome::Succeeded {
                status_code: i64::from(status.as_u16()),
            }
        } else {
            Outcome::transient(
                i64::from(status.as_u16()),
                format!("HTTP {}", status.as_u16()),
            )
        }
    }
}

/// A short description of a failed request from its root cause, without peer data.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut last = error.to_string();
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => "connect timeout".to_owned(),
                _ => format!("connection failed: {io}"),
            };
        }
        last = current.to_string();
        source = current.source();
    }
    if error.is_connect() {
        format!("connection failed: {last}")
    } else {
        format!("request failed: {last}")
    }
}
