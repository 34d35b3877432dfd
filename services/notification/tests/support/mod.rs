//! Test support: a fresh database per test, the notification service on port 0 with short
//! retry settings, a scripted HTTP receiver, the Python helpers (a `standardwebhooks` verifier
//! and an `aiosmtpd` relay); polling with a deadline (`eventually`) and wire money come from the
//! shared test kit.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sqlx::Row;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::{Backend, Db, testing};
use subsidy_notification::Settings;
use subsidy_proto::notification as pb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_testkit::Channel;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for something that should happen soon.
pub const DEADLINE: Duration = Duration::from_secs(20);
pub use subsidy_testkit::{cny, eventually};
// Counts rows of a table: the kit's; not every test binary uses it.
#[allow(unused_imports)]
pub use subsidy_testkit::count;

/// A fresh database URL for this test (SQLite, or PostgreSQL with `SUBSIDY_TEST_DATABASE`).
pub async fn fresh_db(label: &str) -> String {
    testing::fresh_database(label).await.url
}

/// A connection to the test database for inspecting rows.
pub async fn inspect(url: &str) -> Db {
    Db::connect(url, 4, Duration::from_secs(10))
        .await
        .expect("connect to the test database")
}

/// The key of the tests on PostgreSQL (which requires a key file; on SQLite the service
/// generates its development key next to the database).
pub const TEST_SECRET_KEY_HEX: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The secret key file of the test database `db_url`: none on SQLite, a file of
/// [`TEST_SECRET_KEY_HEX`] named after the database on PostgreSQL (the same for every start).
pub fn secret_key_file(db_url: &str) -> String {
    if !db_url.starts_with("postgres") {
        return String::new();
    }
    let name: String = db_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let dir = std::env::temp_dir().join("subsidy-tests");
    std::fs::create_dir_all(&dir).expect("create the key directory");
    let path = dir.join(format!("{name}-secret.key"));
    if !path.exists() {
        std::fs::write(&path, TEST_SECRET_KEY_HEX).expect("write the test key");
    }
    path.display().to_string()
}

/// The service's configuration for tests: plain http allowed, receivers on 127.0.0.1
/// allowed (`webhook_allowed_hosts`), a short retry schedule without jitter, fast polling, an
/// unreachable relay unless a test sets one; `tweak` adjusts it.
pub fn config(db_url: &str, tweak: impl FnOnce(&mut Settings)) -> Config {
    let mut env: HashMap<String, String> =
        subsidy_testkit::auth::service_env(ServiceKind::Notification)
            .into_iter()
            .collect();
    // Tests run side by side: metrics on any free port.
    env.insert("SUBSIDY_METRICS_LISTEN".into(), "127.0.0.1:0".into());
    let mut config =
        Config::load(ServiceKind::Notification, None, &env).expect("the test configuration");
    config.database.url = db_url.to_owned();
    config.server.shutdown_grace_ms = 2_000;
    let mut settings = Settings::default();
    let n = &mut settings;
    n.allow_http_endpoints = true;
    n.retry_schedule_ms = vec![0, 100, 100, 100];
    n.retry_jitter_percent = 0;
    n.poll_interval_ms = 20;
    n.webhook_timeout_ms = 3_000;
    n.smtp_url = "smtp://127.0.0.1:9".into();
    n.smtp_timeout_ms = 3_000;
    n.stream_heartbeat_ms = 60_000;
    n.webhook_allowed_hosts = vec!["127.0.0.1".into()];
    n.secret_key_file = secret_key_file(db_url);
    tweak(n);
    config.set_section(&settings);
    config.validate().expect("valid test configuration");
    config
        .section::<Settings>()
        .expect("valid test notification settings");
    config
}

/// A running notification service.
pub struct Service {
    pub client: NotificationServiceClient<Channel>,
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Service {
    /// Starts the service with `config` on a free port and connects a client.
    pub async fn start(config: Config) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            subsidy_notification::run(config, listener, async move {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        let channel = subsidy_testkit::auth::connect(&format!("http://{addr}")).await;
        Service {
            client: NotificationServiceClient::new(channel),
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// A new client of this service.
    pub async fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(
            subsidy_testkit::auth::connect(&format!("http://{}", self.addr)).await,
        )
    }

    /// Shuts the service down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("not stopped yet").send(());
        let result = tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("the service stops within the deadline")
            .expect("the service task did not panic");
        result.expect("the service ran without error");
    }

    /// Kills the service as a crash would: the task is dropped mid-flight, with its worker
    /// and every attempt under way.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One request received by [`Receiver`].
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    pub status: u16,
    /// When it arrived (this machine's clock, as the database's).
    pub at: std::time::SystemTime,
}

/// Where [`Receiver`] redirects when it answers with a 3xx status.
pub const REDIRECT_PATH: &str = "/redirected";

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<u16>,
    default_status: u16,
    hold: Option<Duration>,
    requests: Vec<Received>,
    in_flight: usize,
    max_in_flight: usize,
}

/// A real HTTP server on 127.0.0.1:0 that answers with scripted statuses and records every
/// request; a 3xx answer carries `Location: /redirected`.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    /// Answers the first requests with `first` (one status each), then with `then`.
    pub async fn start(first: &[u16], then: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/subsidy", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ReceiverState {
            script: first.iter().copied().collect(),
            default_status: then,
            ..ReceiverState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, state }
    }

    /// Answers every later request with `status`.
    pub fn answer(&self, status: u16) {
        let mut state = self.state.lock().unwrap();
        state.script.clear();
        state.default_status = status;
    }

    /// Holds every later request for `hold` before answering (a slow endpoint).
    pub fn hold(&self, hold: Option<Duration>) {
        self.state.lock().unwrap().hold = hold;
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

async fn handle(
    state: Arc<Mutex<ReceiverState>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let (status, hold) = {
        let mut state = state.lock().unwrap();
        let status = state.script.pop_front().unwrap_or(state.default_status);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.requests.push(Received {
            path,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            status,
            at: std::time::SystemTime::now(),
        });
        (status, state.hold)
    };
    if let Some(hold) = hold {
        // A slow endpoint is the behaviour under test here, not a synchronisation.
        tokio::time::sleep(hold).await;
    }
    state.lock().unwrap().in_flight -= 1;
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    if response.status().is_redirection() {
        response.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static(REDIRECT_PATH),
        );
    }
    Ok(response)
}

/// A Python helper started from `tests/python`, whose JSON lines are collected.
pub struct Python {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    pub port: u16,
}

impl Python {
    /// Starts `script` with `args` and waits for its `{"listening": PORT}` line.
    pub async fn start(script: &str, args: &[&str]) -> Python {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "python", script]
            .iter()
            .collect();
        let mut child = tokio::process::Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (the test environment provides it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value: serde_json::Value =
                    serde_json::from_str(&line).expect("the helper prints JSON lines");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let first = tokio::time::timeout(DEADLINE, lines.recv())
            .await
            .expect("the helper starts in time (are its pip packages installed?)")
            .expect("the helper prints its port");
        let port = first["listening"].as_u64().expect("a listening line") as u16;
        Python { child, lines, port }
    }

    /// Writes one line to the helper's standard input.
    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next JSON line, failing the test after [`DEADLINE`].
    pub async fn next(&mut self) -> serde_json::Value {
        tokio::time::timeout(DEADLINE, self.lines.recv())
            .await
            .expect("the helper reports in time")
            .expect("the helper is running")
    }

    /// Whether a line is waiting right now.
    pub fn try_next(&mut self) -> Option<serde_json::Value> {
        self.lines.try_recv().ok()
    }
}

/// The `n`-th test enterprise, a valid Shandong USCC.
pub fn enterprise(n: usize) -> String {
    subsidy_testkit::shandong(n).to_string()
}

/// A valid claim event.
pub fn event(event_id: &str, kind: pb::EventType, application_id: &str) -> pb::Event {
    pb::Event {
        event_id: event_id.into(),
        r#type: kind as i32,
        application_id: application_id.into(),
        enterprise_uscc: enterprise(1),
        program: pb::Program::ComputeVoucher as i32,
        amount: cny(1_234_567),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        source: "subsidy.application".into(),
        ..pb::Event::default()
    }
}

/// Publishes `event` and returns the response.
pub async fn publish(
    client: &mut NotificationServiceClient<Channel>,
    event: pb::Event,
) -> pb::PublishEventResponse {
    client
        .publish_event(pb::PublishEventRequest { event: Some(event) })
        .await
        .expect("publish")
        .into_inner()
}

/// Creates a subscription to `url` for every event and returns it with its secret.
pub async fn subscribe(
    client: &mut NotificationServiceClient<Channel>,
    url: &str,
    tweak: impl FnOnce(&mut pb::CreateSubscriptionRequest),
) -> (pb::Subscription, String) {
    let mut request = pb::CreateSubscriptionRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        endpoint_url: url.into(),
        description: "test agency".into(),
        ..pb::CreateSubscriptionRequest::default()
    };
    tweak(&mut request);
    let response = client
        .create_subscription(request)
        .await
        .expect("create subscription")
        .into_inner();
    (response.subscription.unwrap(), response.signing_secret)
}

/// The deliveries of an event (newest first, as listed).
pub async fn deliveries_of(
    client: &mut NotificationServiceClient<Channel>,
    event_id: &str,
) -> Vec<pb::Delivery> {
    client
        .list_deliveries(pb::ListDeliveriesRequest {
            event_id: event_id.into(),
            page_size: 500,
            ..pb::ListDeliveriesRequest::default()
        })
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries
}

/// Waits until the only delivery of `event_id` over `channel` is in `state`, and returns it.
pub async fn delivery_in_state(
    client: &mut NotificationServiceClient<Channel>,
    event_id: &str,
    channel: pb::Channel,
    state: pb::DeliveryState,
) -> pb::Delivery {
    eventually(&format!("{event_id} {channel:?} {state:?}"), || {
        let mut client = client.clone();
        let event_id = event_id.to_owned();
        async move {
            deliveries_of(&mut client, &event_id)
                .await
                .into_iter()
                .find(|d| d.channel() == channel && d.state() == state)
        }
    })
    .await
}

/// The stored `secret` and `previous_secret` of a subscription, as they are in its row.
pub async fn stored_secrets(db: &Db, subscription_id: &str) -> (String, Option<String>) {
    let rows = subsidy_testkit::query_rows(
        db,
        "SELECT secret, previous_secret FROM subscriptions WHERE subscription_id = $1",
        &[subscription_id],
    )
    .await;
    let row = rows.first().expect("the subscription's row");
    (row.get("secret"), row.get("previous_secret"))
}

/// Stores `secret` in plaintext in a subscription's row, as versions before secrets were
/// encrypted did: the trigger that now refuses a plaintext secret is dropped first.
pub async fn plant_plaintext_secret(db: &Db, subscription_id: &str, secret: &str) {
    let drop_backstop = match db.backend {
        Backend::Postgres => "DROP TRIGGER subscriptions_secret_sealed ON subscriptions",
        Backend::Sqlite => "DROP TRIGGER subscriptions_secret_sealed_on_update",
    };
    sqlx::query(drop_backstop)
        .execute(&db.pool)
        .await
        .expect("drop the backstop");
    sqlx::query("UPDATE subscriptions SET secret = $2 WHERE subscription_id = $1")
        .bind(subscription_id)
        .bind(secret)
        .execute(&db.pool)
        .await
        .expect("store a plaintext secret");
}

/// Checks that every subscription's in-flight counter equals its IN_FLIGHT deliveries.
pub async fn assert_in_flight_counters(db: &Db) {
    let rows = subsidy_testkit::query_rows(
        db,
        "SELECT s.subscription_id, s.in_flight, \
         (SELECT CAST(COUNT(*) AS BIGINT) FROM deliveries d WHERE d.subscription_id = s.subscription_id \
          AND d.state = 'IN_FLIGHT') AS actual FROM subscriptions s",
        &[],
    )
    .await;
    for row in rows {
        let id: String = row.get("subscription_id");
        let counter: i64 = row.get("in_flight");
        let actual: i64 = row.get("actual");
        assert_eq!(
            counter, actual,
            "{id}: the in-flight counter matches the rows"
        );
    }
}
