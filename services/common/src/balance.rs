//! Client-side balancing of the calls to a peer service over its replicas
//! (`peers.resolve_interval_ms`): the host of each peer URL is resolved again and again (a
//! Kubernetes headless Service answers with the addresses of its ready pods), every address
//! gets its own lazily connecting channel (mutual TLS, the certificate verified for the URL's
//! host, as with one connection), and each call goes to the less busy (fewest calls in flight)
//! of two addresses picked at random (`tower`'s power-of-two-choices balancer). An address
//! that disappears from the answer is dropped once its calls are done; a resolution that fails
//! keeps the last addresses. Without it, one connection per peer carries every call, and only
//! connections are balanced (by kube-proxy).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Channel;
use tower::ServiceExt as _;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::BoxCloneSyncService;

use crate::BoxError;

/// The transport of the calls to one peer: one channel, or a balancer over several.
pub type PeerTransport = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// Why a call did not reach the peer (the error of the transport, as its source). A concrete
/// type, so that the clients built on a [`PeerTransport`] stay `Send` in async code.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Calls waiting for an address at once, per peer, before callers wait themselves.
pub const QUEUE_MAX: usize = 1024;
/// Changes of the address set waiting to be applied.
const CHANGES_MAX: usize = 64;

/// One host to resolve, with the port to call it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host of the peer URL: a name (resolved) or an address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Target {
    /// The target of an absolute URL such as `https://budget.subsidy.svc:50053`.
    pub fn of_url(url: &str) -> Result<Target, BoxError> {
        let uri: http::Uri = url.trim().parse()?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        Ok(Target { host, port })
    }
}

/// One channel, boxed as a transport.
pub fn single(channel: Channel) -> PeerTransport {
    BoxCloneSyncService::new(channel.map_err(|error| TransportError(error.into())))
}

/// Calls balanced over the addresses of `targets`, resolved every `interval`; `connect` makes
/// the channel to one address, verifying the peer's certificate for the host it came from. A
/// call that finds no address within `timeout` fails (and is retried by the caller like any
/// call to a peer that is not there). Must be called within the Tokio runtime.
pub fn balanced(
    targets: Vec<Target>,
    interval: Duration,
    timeout: Duration,
    connect: impl Fn(SocketAddr, &str) -> Channel + Send + 'static,
) -> PeerTransport {
    let (changes, discovered) = tokio::sync::mpsc::channel(CHANGES_MAX);
    tokio::spawn(resolve(targets, interval, changes, connect));
    let discover = tokio_stream::wrappers::ReceiverStream::new(discovered);
    let balance = Balance::new(discover);
    let buffer = Buffer::new(balance, QUEUE_MAX);
    BoxCloneSyncService::new(tower::timeout::Timeout::new(buffer, timeout).map_err(TransportError))
}

type Endpoint = PendingRequests<Channel, CompleteOnResponse>;
type Changes = tokio::sync::mpsc::Sender<Result<Change<SocketAddr, Endpoint>, Infallible>>;

/// Resolves `targets` every `interval` and tells the balancer which addresses came and went,
/// until the balancer is gone.
async fn resolve(
    targets: Vec<Target>,
    interval: Duration,
    changes: Changes,
    connect: impl Fn(SocketAddr, &str) -> Channel,
) {
    // The addresses last found for each target (kept when a resolution fails).
    let mut found: BTreeMap<usize, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        for (index, target) in targets.iter().enumerate() {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addresses) => {
                    found.insert(index, addresses.collect());
                }
                Err(error) => {
                    tracing::warn!(host = %target.host, %error, "resolving a peer failed; its last addresses stay");
                }
            }
        }
        let wanted: BTreeMap<SocketAddr, usize> = found
            .iter()
            .flat_map(|(index, addresses)| addresses.iter().map(move |address| (*address, *index)))
            .collect();
        for (address, index) in &wanted {
            if current.insert(*address) {
                let channel = connect(*address, &targets[*index].host);
                let endpoint = PendingRequests::new(channel, CompleteOnResponse::default());
                tracing::info!(%address, host = %targets[*index].host, "peer address added");
                if changes
                    .send(Ok(Change::Insert(*address, endpoint)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let gone: Vec<SocketAddr> = current
            .iter()
            .filter(|address| !wanted.contains_key(address))
            .copied()
            .collect();
        for address in gone {
            current.remove(&address);
            tracing::info!(%address, "peer address removed");
            if changes.send(Ok(Change::Remove(address))).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = changes.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_peer_urls() {
        // Proves the host and port of a peer URL, with the scheme's port when none is given.
        assert_eq!(
            Target::of_url("https://budget.subsidy.svc:50053").unwrap(),
            Target {
                host: "budget.subsidy.svc".into(),
                port: 50053
            }
        );
        assert_eq!(Target::of_url("https://rules.example").unwrap().port, 443);
        assert_eq!(Target::of_url("http://[::1]:7").unwrap().host, "::1");
        assert!(Target::of_url("not a url").is_err());
    }
}
