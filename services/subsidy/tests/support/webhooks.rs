//! A webhook endpoint on 127.0.0.1 and the published contract of what it receives: what the
//! tests that follow events to a real HTTP receiver share (`crash.rs`, `webhook_events.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The folder of the event catalogue, `docs/events`.
fn catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
}

/// The published contract of webhook bodies of type `kind`: `docs/events/<kind>.schema.json`
/// (draft 2020-12, formats checked); `None` when the catalogue has no schema for it.
pub fn body_schema(kind: &str) -> Option<jsonschema::Validator> {
    let path = catalogue().join(format!("{kind}.schema.json"));
    let text = std::fs::read_to_string(path).ok()?;
    let schema: serde_json::Value = serde_json::from_str(&text).expect("a schema is JSON");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|error| panic!("{kind}.schema.json does not compile: {error}"));
    Some(validator)
}

/// Every webhook type the catalogue describes: the `<type>` of each
/// `docs/events/<type>.schema.json`.
pub fn catalogue_types() -> BTreeSet<String> {
    std::fs::read_dir(catalogue())
        .expect("read docs/events")
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|name| {
            name.to_str()?
                .strip_suffix(".schema.json")
                .map(str::to_owned)
        })
        .collect()
}

/// Checks every body against the schema of its `type` and fails, naming each body and what
/// it breaks, unless all are valid; the types of the bodies.
#[track_caller]
pub fn assert_valid_bodies(bodies: &[serde_json::Value]) -> BTreeSet<String> {
    let mut schemas = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    let mut broken = Vec::new();
    for body in bodies {
        let kind = body["type"].as_str().unwrap_or_default().to_owned();
        let schema = schemas
            .entry(kind.clone())
            .or_insert_with(|| body_schema(&kind));
        match schema {
            None => broken.push(format!("no schema for type {kind:?}: {body}")),
            Some(schema) => broken.extend(
                schema
                    .iter_errors(body)
                    .map(|error| format!("{kind}: {error} at {}: {body}", error.instance_path())),
            ),
        }
        kinds.insert(kind);
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    kinds
}

/// A webhook endpoint on 127.0.0.1 that accepts everything and keeps each body (a body that is
/// not JSON is kept as a JSON string, which no schema accepts).
#[derive(Clone, Default)]
pub struct Receiver {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    /// Starts serving on a free port; the endpoint's URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!(
            "http://{}/hooks",
            listener.local_addr().expect("an address")
        );
        let bodies = self.bodies.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let bodies = bodies.clone();
                            async move {
                                // A body cut off (its sender killed) is sent again in full.
                                if let Ok(collected) = request.into_body().collect().await {
                                    let body = collected.to_bytes();
                                    let value =
                                        serde_json::from_slice(&body).unwrap_or_else(|_| {
                                            String::from_utf8_lossy(&body).into_owned().into()
                                        });
                                    bodies.lock().expect("not poisoned").push(value);
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        url
    }

    /// Every body received, duplicates included.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("not poisoned").clone()
    }

    /// The distinct event ids received per (type, application id).
    pub fn events(&self) -> BTreeMap<(String, String), BTreeSet<String>> {
        let mut events: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for body in self.bodies.lock().expect("not poisoned").iter() {
            let text = |key: &str| body["data"][key].as_str().unwrap_or_default().to_owned();
            events
                .entry((text("type"), text("application_id")))
                .or_default()
                .insert(text("event_id"));
        }
        events
    }
}
