//! The webhook sender: one signed POST per attempt, a deadline for the answer, no redirects.
//! A 2xx status within the deadline is success; anything else is a failure to retry.
//!
//! Outbound safety: an endpoint may not be, or resolve to, an internal address
//! ([`crate::domain::address`]) unless the operator allows it. The rule is applied when a
//! subscription names the endpoint ([`check_endpoint`], by the use cases) and again on every
//! connection: the client resolves names through [`GuardedResolver`], so the address checked
//! is the address connected to, and an endpoint that is an IP address (which the connector
//! does not resolve) is checked before the request is sent.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use subsidy_common::BoxError;

use crate::domain::address::{AllowList, ForbiddenRange, check_address};
use crate::domain::delivery::Outcome;
use crate::domain::subscription::{PLAIN_HTTP_REFUSED, SigningSecret, signature_header};

/// The `user-agent` of every webhook request.
pub const USER_AGENT: &str = concat!("subsidy-notification/", env!("CARGO_PKG_VERSION"));
/// Most response body read (and thrown away) so that the connection can be reused, in bytes.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Idle connections kept per endpoint host.
pub const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 8;
/// How long an idle connection is kept, in milliseconds.
pub const IDLE_CONNECTION_TIMEOUT_MS: u64 = 90_000;
/// Longest wait for the addresses of an endpoint's host, in milliseconds.
pub const LOOKUP_TIMEOUT_MS: u64 = 5_000;

/// Why an endpoint may not be reached. The text completes "the endpoint …" (and is the
/// description of the URL field when a subscription names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefused {
    /// The URL names an IP address in a forbidden range.
    #[error(
        "is an address not allowed for webhooks ({0}); the setting \
         notification.webhook_allowed_hosts (environment variable \
         SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS) allows it"
    )]
    Address(ForbiddenRange),
    /// The host resolves to an address in a forbidden range (one is enough).
    #[error(
        "resolves to an address not allowed for webhooks ({0}); the setting \
         notification.webhook_allowed_hosts (environment variable \
         SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS) allows the host"
    )]
    Resolves(ForbiddenRange),
    /// The host has no address (or the lookup took longer than [`LOOKUP_TIMEOUT_MS`]).
    #[error("does not resolve to any address")]
    Unresolved,
    /// The URL has no host.
    #[error("is not a valid URL")]
    Invalid,
}

/// The host (without IPv6 brackets) and port of an endpoint URL.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    let default_port = if uri.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    Some((host.to_owned(), uri.port_u16().unwrap_or(default_port)))
}

/// The addresses of `host`, when every one of them may be reached (a name that resolves to
/// one internal address among public ones is refused as a whole).
async fn resolve_allowed(
    host: &str,
    port: u16,
    allow: &AllowList,
) -> Result<Vec<SocketAddr>, EndpointRefused> {
    let lookup = tokio::time::timeout(
        Duration::from_millis(LOOKUP_TIMEOUT_MS),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(EndpointRefused::Unresolved);
    }
    for addr in &addrs {
        check_address(allow, host, addr.ip()).map_err(EndpointRefused::Resolves)?;
    }
    Ok(addrs)
}

/// Whether webhooks may go to `url` now: its IP address, or every address its host resolves
/// to, is outside the forbidden ranges or allowed by `allow`. A host name on the allow-list
/// is accepted without a lookup.
pub async fn check_endpoint(url: &str, allow: &AllowList) -> Result<(), EndpointRefused> {
    let (host, port) = host_and_port(url).ok_or(EndpointRefused::Invalid)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check_address(allow, &host, ip).map_err(EndpointRefused::Address);
    }
    if allow.allows_host(&host) {
        return Ok(());
    }
    resolve_allowed(&host, port, allow).await.map(|_| ())
}

/// The refusal of an endpoint that is an IP address not allowed; `None` for a host name
/// (the resolver judges those) or an allowed address. The connector connects to an IP
/// address without asking the resolver, so this is checked before each request.
fn literal_refusal(url: &str, allow: &AllowList) -> Option<EndpointRefused> {
    let (host, _) = host_and_port(url)?;
    let ip = host.parse::<IpAddr>().ok()?;
    check_address(allow, &host, ip)
        .err()
        .map(EndpointRefused::Address)
}

/// The resolver of the webhook client: the system's lookup, refused when an address may not
/// be reached, so that a name re-pointed at an internal address after the subscription was
/// checked is not connected to.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = EndpointRefused;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow.clone();
        Box::pin(async move {
            // The connector puts the URL's port on each address.
            resolve_allowed(name.as_str(), 0, &allow)
                .await
                .map(Vec::into_iter)
        })
    }
}

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
/// provider and the Mozilla roots), connecting only to addresses webhooks may reach.
#[derive(Clone)]
pub struct WebhookSender {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    timeout: Duration,
    allow_http: bool,
    allow: Arc<AllowList>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("timeout", &self.timeout)
            .field("allow_http", &self.allow_http)
            .field("allow", &self.allow)
            .finish()
    }
}

impl WebhookSender {
    /// A sender whose requests must be answered within `timeout`; plain `http://` endpoints
    /// are refused unless `allow_http`, internal addresses unless `allow` lists them.
    pub fn new(timeout: Duration, allow_http: bool, allow: AllowList) -> Result<Self, BoxError> {
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
        let allow = Arc::new(allow);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow: allow.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // The client never follows redirects: a 3xx answer is a failed attempt like any other
        // non-2xx status, and its Location is not fetched.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(IDLE_CONNECTION_TIMEOUT_MS))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .build(connector);
        Ok(WebhookSender {
            client,
            timeout,
            allow_http,
            allow,
        })
    }

    /// Makes one attempt. An endpoint that may not be reached fails like an unreachable one
    /// (status 0, retried on the schedule) and is not contacted.
    pub async fn send(&self, request: WebhookRequest<'_>) -> Outcome {
        if request.endpoint.starts_with("http://") && !self.allow_http {
            return Outcome::transient(0, format!("the endpoint {PLAIN_HTTP_REFUSED}"));
        }
        if let Some(refused) = literal_refusal(request.endpoint, &self.allow) {
            return Outcome::transient(0, format!("the endpoint {refused}"));
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
        if let Some(refused) = current.downcast_ref::<EndpointRefused>() {
            return format!("the endpoint {refused}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_http_endpoint_is_not_contacted_and_the_failure_names_the_setting() {
        // Proves that when plain http is not allowed (for a subscription made while it was),
        // the attempt fails without a request and its error, shown in the delivery log, names
        // the setting that allows it.
        let sender = WebhookSender::new(Duration::from_millis(100), false, AllowList::default())
            .expect("a sender");
        let outcome = sender
            .send(WebhookRequest {
                endpoint: "http://agency.example.org/hooks",
                message_id: "evt-1",
                body: b"{}".to_vec(),
                secrets: &[],
                extra_headers: Vec::new(),
            })
            .await;
        let Outcome::Failed {
            status_code, error, ..
        } = outcome
        else {
            panic!("an http endpoint is refused: {outcome:?}");
        };
        assert_eq!(status_code, 0);
        // The text names the setting (checked against its declaration in the settings' tests).
        assert_eq!(error, format!("the endpoint {PLAIN_HTTP_REFUSED}"));
    }
}
