//! The one enforcement layer of every service: authenticate, authorize against the RPC's
//! declared rule, rate-limit mutating calls, record refusals of mutating calls in the audit
//! trail, and hand the handler a [`Caller`].
//!
//! Order for each call:
//! 1. The RPC's rule by path. Health and reflection are open (probes and tools); any other
//!    path without a rule is `PERMISSION_DENIED` (deny by default).
//! 2. Identity: a verified client certificate (a service or an agency) and/or a bearer token
//!    (see [`AuthLayer::authenticate`] for which one names the caller); neither is
//!    `UNAUTHENTICATED`, as is a bad token or an unknown certificate.
//! 3. Admission: a service listed in the rule's `services`, or a person or agency holding one
//!    of its `roles`; otherwise `PERMISSION_DENIED`.
//! 4. For mutating RPCs, a token bucket per caller (services are not limited: they act for
//!    callers already limited at the front door): `RESOURCE_EXHAUSTED` with a `RetryInfo`.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subsidy_proto::access::{self, MethodAccess, Role, Service};
use subsidy_proto::status::Failure;
use tonic::Code;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::audit::{AuditRecord, AuditSink};
use crate::auth::token::{TokenError, TokenVerifier};
use crate::auth::{
    Caller, INSECURE_SERVICE_METADATA_KEY, ON_BEHALF_OF_METADATA_KEY, OnBehalfOf, Principal,
    PrincipalKind,
};
use crate::tls::{PeerCertificate, TlsState};

/// The `ErrorInfo` domain of the layer's refusals.
pub const DOMAIN: &str = "subsidy.auth";
/// Paths open to every caller: health (Kubernetes probes) and reflection, both versions (tools;
/// older ones ask `v1alpha`).
pub const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.",
    "/grpc.reflection.v1alpha.",
];
/// How often the rate limiter forgets callers that have been quiet, in seconds.
pub const LIMITER_SWEEP_SECONDS: u64 = 60;

/// An agency system known by its client certificate: what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agency {
    /// The certificate's first DNS (or URI) SAN.
    pub name: String,
    /// Roles it holds.
    pub roles: Vec<Role>,
    /// Enterprises an applicant agency acts for.
    pub enterprises: Vec<String>,
}

/// How callers are recognised.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS: services and agencies by certificate, people by token.
    Tls(Arc<TlsState>),
    /// Plaintext on loopback (`--insecure`): services name themselves in
    /// [`INSECURE_SERVICE_METADATA_KEY`], people by token.
    Insecure,
}

/// Everything the layer needs.
#[derive(Clone)]
pub struct AuthLayer {
    transport: Transport,
    tokens: Option<Arc<TokenVerifier>>,
    agencies: Arc<Vec<Agency>>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    audit: Option<AuditSink>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("transport", &self.transport)
            .field("tokens", &self.tokens.is_some())
            .field("agencies", &self.agencies.len())
            .finish_non_exhaustive()
    }
}

/// The rate limit of mutating calls per caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub per_second: NonZeroU32,
    /// Calls allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

impl AuthLayer {
    /// A layer recognising callers by `transport` and `tokens`, limiting mutating calls to
    /// `rate`, writing refusals of mutating calls to `audit`.
    pub fn new(
        transport: Transport,
        tokens: Option<Arc<TokenVerifier>>,
        agencies: Vec<Agency>,
        rate: RateLimit,
        audit: Option<AuditSink>,
    ) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        let limiter = Arc::new(RateLimiter::keyed(quota));
        let sweeping = Arc::downgrade(&limiter);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs(LIMITER_SWEEP_SECONDS));
                loop {
                    ticks.tick().await;
                    let Some(limiter) = sweeping.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        AuthLayer {
            transport,
            tokens,
            agencies: Arc::new(agencies),
            limiter,
            audit,
        }
    }

    /// Authenticates and admits a call to `path` with `headers` and the connection's
    /// `extensions`.
    pub fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Option<Caller>, Box<Refusal>> {
        if OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
            return Ok(None);
        }
        let peer = peer_address(extensions);
        let Some(rule) = access::rule(path) else {
            return Err(Box::new(Refusal::new(
                Failure::new(
                    Code::PermissionDenied,
                    DOMAIN,
                    "METHOD_NOT_DECLARED",
                    "this method admits nobody",
                )
                .with("method", path),
                None,
                peer,
            )));
        };
        let principal = self
            .authenticate(headers, extensions, rule)
            .map_err(|failure| Box::new(Refusal::new(*failure, Some(rule), peer)))?;
        let caller = admit(principal, rule, peer).map_err(|denied| {
            let (failure, principal) = *denied;
            Box::new(Refusal::denied(failure, rule, principal, peer))
        })?;
        if rule.mutating
            && !matches!(caller.principal.kind, PrincipalKind::Service(_))
            && let Err(not_until) = self.limiter.check_key(&caller.principal.scope())
        {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            let failure = Failure::new(
                Code::ResourceExhausted,
                DOMAIN,
                "RATE_LIMITED",
                "too many changes in a short time; retry after the delay given",
            )
            .with("retry_after_ms", wait.as_millis())
            .with_retry_delay(wait.max(Duration::from_millis(1)));
            return Err(Box::new(Refusal::denied(
                failure,
                rule,
                caller.principal.clone(),
                peer,
            )));
        }
        Ok(Some(caller))
    }

    /// Who calls. A call may carry two credentials: the connection's client certificate and
    /// a bearer token. A service's certificate is used when the rule admits that service;
    /// otherwise a bearer token, when present, names the caller (a person acting through a
    /// service or an agency system); otherwise the certificate does. Neither can grant more
    /// than it would alone.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
        rule: &MethodAccess,
    ) -> Result<Arc<Principal>, Box<Failure>> {
        let has_token = headers.contains_key(http::header::AUTHORIZATION);
        let certificate = self.peer_certificate(headers, extensions);
        if let Some(decided) = self.by_certificate(certificate, has_token, headers, rule) {
            return decided;
        }
        self.by_token(headers)
    }

    /// What the connection says of the caller: the service or agency of its client
    /// certificate (`Err` for a certificate that names neither), or on an insecure transport
    /// the service named in the metadata; `None` without either.
    fn peer_certificate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<Result<PeerCertificate, ()>> {
        match &self.transport {
            Transport::Tls(state) => extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .map(|chain| state.peer_of(&chain).ok_or(())),
            Transport::Insecure => headers
                .get(INSECURE_SERVICE_METADATA_KEY)
                .and_then(|value| value.to_str().ok())
                .and_then(Service::from_short_name)
                .map(|service| Ok(PeerCertificate::Service(service))),
        }
    }

    /// The caller as `certificate` names it, when the certificate decides: always without a
    /// bearer token, and with one for a service the rule admits. `None` leaves it to the token.
    fn by_certificate(
        &self,
        certificate: Option<Result<PeerCertificate, ()>>,
        has_token: bool,
        headers: &http::HeaderMap,
        rule: &MethodAccess,
    ) -> Option<Result<Arc<Principal>, Box<Failure>>> {
        match certificate {
            Some(Err(())) if !has_token => Some(Err(unauthenticated(
                "UNKNOWN_CERTIFICATE",
                "the client certificate identifies no service or agency",
            ))),
            Some(Ok(PeerCertificate::Service(service)))
                if rule.services.contains(&service) || !has_token =>
            {
                Some(Ok(Arc::new(with_on_behalf_of(
                    Principal::service(service),
                    headers,
                ))))
            }
            Some(Ok(PeerCertificate::Agency(name))) if !has_token => {
                Some(self.agency(&name).map(Arc::new).ok_or_else(|| {
                    unauthenticated(
                        "UNKNOWN_AGENCY",
                        "the client certificate names no configured agency",
                    )
                }))
            }
            _ => None,
        }
    }

    /// The person the bearer token of the call names, verified.
    fn by_token(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, Box<Failure>> {
        let Some(authorization) = headers.get(http::header::AUTHORIZATION) else {
            return Err(unauthenticated(
                "CREDENTIALS_MISSING",
                "send `authorization: Bearer <token>` or a client certificate",
            ));
        };
        let token = authorization
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthenticated("TOKEN_INVALID", "the authorization is not `Bearer <token>`")
            })?;
        let Some(verifier) = &self.tokens else {
            return Err(unauthenticated(
                "TOKENS_NOT_ACCEPTED",
                "this server accepts no bearer tokens",
            ));
        };
        let verified = verifier.verify(token.trim()).map_err(|error| {
            tracing::info!(%error, "bearer token refused");
            match error {
                TokenError::UnknownKey(_) => {
                    unauthenticated("TOKEN_KEY_UNKNOWN", "the token's signing key is unknown")
                }
                TokenError::Malformed(_) | TokenError::Invalid(_) => unauthenticated(
                    "TOKEN_INVALID",
                    "the token is not valid (signature, issuer, audience or time)",
                ),
            }
        })?;
        let roles = verified
            .roles
            .iter()
            .filter_map(|name| Role::from_claim_name(name))
            .collect();
        Ok(Arc::new(Principal {
            kind: PrincipalKind::Person,
            subject: verified.subject,
            roles,
            enterprises: verified.enterprises,
            expert_id: verified.expert_id,
            on_behalf_of: None,
        }))
    }

    fn agency(&self, name: &str) -> Option<Principal> {
        self.agencies
            .iter()
            .find(|agency| agency.name == name)
            .map(|agency| Principal {
                kind: PrincipalKind::Agency,
                subject: agency.name.clone(),
                roles: agency.roles.clone(),
                enterprises: agency.enterprises.iter().cloned().collect(),
                expert_id: None,
                on_behalf_of: None,
            })
    }
}

/// An `UNAUTHENTICATED` refusal for `reason`.
fn unauthenticated(reason: &str, message: &str) -> Box<Failure> {
    Box::new(Failure::new(Code::Unauthenticated, DOMAIN, reason, message))
}

/// The person a service says it acts for; believed only from the application.
fn with_on_behalf_of(mut principal: Principal, headers: &http::HeaderMap) -> Principal {
    if principal.kind != PrincipalKind::Service(Service::Application) {
        return principal;
    }
    principal.on_behalf_of = headers
        .get(ON_BEHALF_OF_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(':'))
        .filter(|(role, subject)| {
            !role.is_empty()
                && !subject.is_empty()
                && subject.len() <= crate::edge::IDENTIFIER_LEN_MAX
        })
        .map(|(role, subject)| OnBehalfOf {
            role: role.to_owned(),
            subject: subject.to_owned(),
        });
    principal
}

fn admit(
    principal: Arc<Principal>,
    rule: &'static MethodAccess,
    peer: Option<SocketAddr>,
) -> Result<Caller, Box<(Failure, Arc<Principal>)>> {
    let denied = |principal: Arc<Principal>| {
        let allowed = rule
            .roles
            .iter()
            .map(|role| role.claim_name())
            .chain(rule.services.iter().map(|service| service.short_name()))
            .collect::<Vec<_>>()
            .join(",");
        Box::new((
            Failure::new(
                Code::PermissionDenied,
                DOMAIN,
                "PERMISSION_DENIED",
                "the caller may not call this method",
            )
            .with("method", rule.method())
            .with("allowed", allowed),
            principal,
        ))
    };
    match principal.kind {
        PrincipalKind::Service(service) => {
            if rule.services.contains(&service) {
                Ok(Caller {
                    principal,
                    role: None,
                    rule,
                    peer,
                })
            } else {
                Err(denied(principal))
            }
        }
        PrincipalKind::Person | PrincipalKind::Agency => match principal.admitted_role(rule) {
            Some(role) => Ok(Caller {
                principal,
                role: Some(role),
                rule,
                peer,
            }),
            None => Err(denied(principal)),
        },
    }
}

pub(crate) fn peer_address(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
}

/// A call refused by the layer, with what the audit trail records of it.
#[derive(Debug)]
pub struct Refusal {
    failure: Failure,
    rule: Option<&'static MethodAccess>,
    principal: Option<Arc<Principal>>,
    peer: Option<SocketAddr>,
}

impl Refusal {
    fn new(
        failure: Failure,
        rule: Option<&'static MethodAccess>,
        peer: Option<SocketAddr>,
    ) -> Self {
        Refusal {
            failure,
            rule,
            principal: None,
            peer,
        }
    }

    fn denied(
        failure: Failure,
        rule: &'static MethodAccess,
        principal: Arc<Principal>,
        peer: Option<SocketAddr>,
    ) -> Self {
        Refusal {
            failure,
            rule: Some(rule),
            principal: Some(principal),
            peer,
        }
    }

    /// The status the caller gets.
    pub fn status(&self) -> tonic::Status {
        self.failure.clone().into()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authorized<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        match self
            .layer
            .admit(&path, request.headers(), request.extensions())
        {
            Ok(caller) => {
                let audited = caller
                    .as_ref()
                    .filter(|caller| caller.rule.mutating)
                    .cloned()
                    .zip(self.layer.audit.clone());
                if let Some(caller) = &caller {
                    request.extensions_mut().insert(caller.clone());
                }
                let person = caller.as_ref().and_then(Caller::on_behalf_of_value);
                let future = crate::auth::acting_for(person, self.inner.call(request));
                Box::pin(async move {
                    let response = future.await?;
                    // A refused change is recorded here; a change that happened was recorded
                    // by the use case in its own transaction.
                    if let Some((caller, sink)) = audited
                        && let Some(status) = tonic::Status::from_header_map(response.headers())
                            .filter(|status| status.code() != Code::Ok)
                    {
                        sink.record_refusal(AuditRecord::refused(&caller, &status))
                            .await;
                    }
                    Ok(response)
                })
            }
            Err(refusal) => {
                let status = refusal.status();
                tracing::info!(
                    method = %path,
                    code = ?status.code(),
                    reason = subsidy_proto::status::reason(&status).unwrap_or_default(),
                    peer = ?refusal.peer,
                    "call refused by the access layer"
                );
                let sink = self
                    .layer
                    .audit
                    .clone()
                    .filter(|_| refusal.rule.is_some_and(|rule| rule.mutating));
                Box::pin(async move {
                    if let (Some(sink), Some(rule)) = (sink, refusal.rule) {
                        sink.record_refusal(AuditRecord::unadmitted(
                            rule,
                            refusal.principal.as_deref(),
                            refusal.peer,
                            &status,
                        ))
                        .await;
                    }
                    Ok(status.into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            ON_BEHALF_OF_METADATA_KEY,
            "reviewer:r.zhou".parse().unwrap(),
        );
        headers
    }

    #[test]
    fn on_behalf_of_is_believed_only_from_the_application_service() {
        let believed = with_on_behalf_of(Principal::service(Service::Application), &headers());
        assert_eq!(
            believed.on_behalf_of,
            Some(OnBehalfOf {
                role: "reviewer".into(),
                subject: "r.zhou".into()
            })
        );
        for service in [Service::Rules, Service::Budget, Service::Notification] {
            let ignored = with_on_behalf_of(Principal::service(service), &headers());
            assert_eq!(ignored.on_behalf_of, None, "{service:?}");
        }
        let mut person = Principal::service(Service::Application);
        person.kind = PrincipalKind::Person;
        assert_eq!(with_on_behalf_of(person, &headers()).on_behalf_of, None);
        let mut agency = Principal::service(Service::Application);
        agency.kind = PrincipalKind::Agency;
        assert_eq!(with_on_behalf_of(agency, &headers()).on_behalf_of, None);
    }
}
