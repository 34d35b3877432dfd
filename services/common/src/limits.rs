//! The server's own limits, answered like every other refusal: a canonical code with exactly
//! one `ErrorInfo` (domain [`DOMAIN`]), never tonic's bare wording.
//!
//! - A request message larger than `server.message_size_max_bytes`: `RESOURCE_EXHAUSTED` /
//!   `MESSAGE_TOO_LARGE`, metadata `limit_bytes` and `size_bytes` (tonic answers
//!   `OUT_OF_RANGE` with text; the layer rewrites that answer).
//! - A request message that is not a valid encoding of the RPC's request type:
//!   `INVALID_ARGUMENT` / `MALFORMED_MESSAGE`, the decoder's description in the message (tonic
//!   answers `INTERNAL`, which would tell a caller the fault is the server's).
//! - A call not answered within its deadline, the smaller of `server.request_timeout_ms` and
//!   the caller's `grpc-timeout`: `DEADLINE_EXCEEDED` / `DEADLINE_EXCEEDED`, metadata
//!   `timeout_ms`. The deadline bounds the answer's head: a server stream, once started, runs
//!   on.
//! - More than `server.concurrency_per_connection_max` calls at once on one connection:
//!   `RESOURCE_EXHAUSTED` / `CONCURRENCY_LIMIT_REACHED`, metadata `limit`, with a `RetryInfo`,
//!   answered at once (queueing would only turn it into a deadline later). Calls of this
//!   system's own services are not counted: a service carries every caller's calls to its peer
//!   on one connection, and those callers were limited where they came in.
//!
//! Two layers: [`DeadlineLayer`] outside everything else (a deadline bounds the whole answer,
//! also the access layer's record of a refusal, which waits for the database), and
//! [`LimitsLayer`] inside the access layer (it reads the admitted [`Caller`], and the audit
//! trail records its refusals of changes with their house reasons).
//! The service keeps serving in every case.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use subsidy_proto::status::Failure;
use tonic::Code;

use crate::auth::{Caller, PrincipalKind};

/// The `ErrorInfo` domain of the server's own refusals.
pub const DOMAIN: &str = "subsidy.server";
/// How long a caller refused for concurrency is told to wait, in milliseconds.
pub const CONCURRENCY_RETRY_MS: u64 = 100;
/// The text with which tonic refuses a request message over the limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";
/// The text with which prost (through tonic) refuses bytes that are not the request type.
const PROST_DECODE: &str = "failed to decode Protobuf message: ";

/// The layer that limits calls per connection and answers a message over the size limit.
#[derive(Clone, Debug)]
pub struct LimitsLayer {
    concurrency_per_connection: usize,
    in_flight: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

impl LimitsLayer {
    /// A layer admitting `concurrency_per_connection` calls at once per connection.
    pub fn new(concurrency_per_connection: usize) -> Self {
        Self {
            concurrency_per_connection,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a place among the calls of `peer`'s connection; `None` when all are taken.
    fn enter(&self, peer: Option<SocketAddr>) -> Option<Place> {
        let Some(peer) = peer else {
            return Some(Place {
                layer: None,
                peer: None,
            });
        };
        let mut in_flight = self.in_flight.lock().expect("never poisoned");
        let calls = in_flight.entry(peer).or_insert(0);
        if *calls >= self.concurrency_per_connection {
            return None;
        }
        *calls += 1;
        Some(Place {
            layer: Some(self.in_flight.clone()),
            peer: Some(peer),
        })
    }
}

/// A call's place among its connection's calls, given back when dropped.
struct Place {
    layer: Option<Arc<Mutex<HashMap<SocketAddr, usize>>>>,
    peer: Option<SocketAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let (Some(layer), Some(peer)) = (&self.layer, self.peer) {
            let mut in_flight = layer.lock().expect("never poisoned");
            if let Some(calls) = in_flight.get_mut(&peer) {
                *calls -= 1;
                if *calls == 0 {
                    in_flight.remove(&peer);
                }
            }
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`LimitsLayer`].
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    layer: LimitsLayer,
}

/// The caller's `grpc-timeout` (`<up to 8 digits><H|M|S|m|u|n>`), if it sent a valid one.
pub fn caller_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The house answer for tonic's own refusal of a request message (over the limit, or not
/// decodable), if `response` is one.
fn house_answer(response: &http::Response<tonic::body::Body>) -> Option<tonic::Status> {
    let status = tonic::Status::from_header_map(response.headers())?;
    too_large(&status).or_else(|| malformed(&status))
}

/// The house answer for tonic's `INTERNAL` refusal of bytes that do not decode.
fn malformed(status: &tonic::Status) -> Option<tonic::Status> {
    if status.code() != Code::Internal {
        return None;
    }
    let detail = status.message().strip_prefix(PROST_DECODE)?;
    Some(
        Failure::new(
            Code::InvalidArgument,
            DOMAIN,
            "MALFORMED_MESSAGE",
            format!(
                "the request message is not a valid encoding of the RPC's request type: {detail}"
            ),
        )
        .into(),
    )
}

/// The house answer for tonic's `OUT_OF_RANGE` refusal of a message over the limit.
fn too_large(status: &tonic::Status) -> Option<tonic::Status> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let number = |text: &str| -> Option<u64> {
        text.split(|c: char| !c.is_ascii_digit())
            .find(|part| !part.is_empty())?
            .parse()
            .ok()
    };
    let size = number(rest)?;
    let limit = number(rest.split_once("limit is:")?.1)?;
    Some(
        Failure::new(
            Code::ResourceExhausted,
            DOMAIN,
            "MESSAGE_TOO_LARGE",
            format!(
                "the request message of {size} bytes is larger than the limit of {limit} bytes"
            ),
        )
        .with("limit_bytes", limit)
        .with("size_bytes", size)
        .into(),
    )
}

impl<S, B> tower::Service<http::Request<B>> for Limited<S>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let from_service = request
            .extensions()
            .get::<Caller>()
            .is_some_and(|caller| matches!(caller.principal.kind, PrincipalKind::Service(_)));
        let peer = crate::admission::peer_address(request.extensions()).filter(|_| !from_service);
        let Some(place) = self.layer.enter(peer) else {
            let limit = self.layer.concurrency_per_connection;
            tracing::warn!(peer = ?peer, limit, "call refused: too many calls at once on one connection");
            let status: tonic::Status = Failure::new(
                Code::ResourceExhausted,
                DOMAIN,
                "CONCURRENCY_LIMIT_REACHED",
                format!("more than {limit} calls at once on one connection; retry shortly or open another connection"),
            )
            .with("limit", limit)
            .with_retry_delay(Duration::from_millis(CONCURRENCY_RETRY_MS))
            .into();
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let _place = place;
            let response = future.await?;
            Ok(match house_answer(&response) {
                Some(status) => status.into_http(),
                None => response,
            })
        })
    }
}

/// The layer that answers a call not answered within its deadline.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    request_timeout: Duration,
}

impl DeadlineLayer {
    /// A layer giving each call at most `request_timeout` (less when the caller asks less).
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadlined<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadlined {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

/// The service produced by [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadlined<S> {
    inner: S,
    request_timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for Deadlined<S>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = caller_timeout(request.headers()).map_or(self.request_timeout, |asked| {
            asked.min(self.request_timeout)
        });
        let path = request.uri().path().to_owned();
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(answer) => answer,
                Err(_) => {
                    let timeout_ms = timeout.as_millis();
                    tracing::warn!(method = %path, timeout_ms = timeout_ms as u64, "call not answered within its deadline");
                    let status: tonic::Status = Failure::new(
                        Code::DeadlineExceeded,
                        DOMAIN,
                        "DEADLINE_EXCEEDED",
                        format!("the call was not answered within its deadline of {timeout_ms} ms"),
                    )
                    .with("timeout_ms", timeout_ms)
                    .into();
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_timeout_is_read_in_every_unit_and_nonsense_is_ignored() {
        // Proves the grpc-timeout header's grammar: 1 to 8 digits and one unit.
        let read = |text: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", text.parse().unwrap());
            caller_timeout(&headers)
        };
        assert_eq!(read("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(read("3M"), Some(Duration::from_secs(180)));
        assert_eq!(read("4S"), Some(Duration::from_secs(4)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(read("123456789m"), None, "nine digits");
        assert_eq!(read("m"), None);
        assert_eq!(read("5x"), None);
        assert_eq!(read("-5S"), None);
        assert_eq!(caller_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn tonics_refusal_of_a_large_message_becomes_message_too_large() {
        // Proves the rewrite reads tonic's own wording (a tonic upgrade that changes it fails
        // here, not in production).
        let tonic = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        );
        let status = house_answer(&tonic.into_http()).expect("recognised");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            subsidy_proto::status::reason(&status).as_deref(),
            Some("MESSAGE_TOO_LARGE")
        );
        let metadata = subsidy_proto::status::metadata(&status);
        assert_eq!(metadata["limit_bytes"], "4194304");
        assert_eq!(metadata["size_bytes"], "5242880");
        let other = tonic::Status::out_of_range("page_size out of range");
        assert!(house_answer(&other.into_http()).is_none());
    }

    #[test]
    fn prosts_refusal_of_undecodable_bytes_becomes_malformed_message() {
        // Decodes real garbage through prost, so a change of its wording fails here.
        let error =
            <subsidy_proto::budget::ReserveRequest as prost::Message>::decode(&[0x0a, 0xff][..])
                .expect_err("truncated");
        let tonic = tonic::Status::internal(error.to_string());
        let status = house_answer(&tonic.into_http()).expect("recognised");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            subsidy_proto::status::reason(&status).as_deref(),
            Some("MALFORMED_MESSAGE")
        );
        assert!(
            status.message().contains("ReserveRequest"),
            "{}",
            status.message()
        );
        let other = tonic::Status::internal("the database is gone");
        assert!(house_answer(&other.into_http()).is_none());
    }
}
