//! The in-process harness: runs the four services (or any of them), each on its own port 0
//! listener and its own fresh database (SQLite by default, PostgreSQL when
//! `SUBSIDY_TEST_DATABASE` is set), talking to each other over real gRPC. What runs for a
//! service is the caller's [`Launch`], so this crate needs no service crate.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::testing::fresh_database;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::auth::{self, Channel};
use crate::requests::App;

/// Runs one service with its configuration on its listener until the receiver turns true (the
/// umbrella crate's `subsidy::launch::run_service`, or a test's own implementation: a scripted
/// peer, say, whose state the test keeps a handle to).
pub type Launch = std::sync::Arc<
    dyn Fn(
            ServiceKind,
            Config,
            TcpListener,
            watch::Receiver<bool>,
        ) -> BoxFuture<'static, Result<(), BoxError>>
        + Send
        + Sync,
>;

/// Connections of a test's own pool into a service's database.
const DATABASE_CHECK_CONNECTIONS: u32 = 2;
/// Longest wait for a connection into a service's database, in milliseconds.
const DATABASE_CONNECT_MS_MAX: u64 = 10_000;

/// A connector for health probes: TLS trusting the development CA, no client certificate.
fn tls_probe() -> subsidy_common::tls::Connector {
    subsidy_common::tls::Connector::anonymous(&auth::files().dev.ca())
        .expect("the development CA loads")
}

/// One running service of the stack.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), BoxError>>,
}

/// One more instance of a service of the stack (see [`Stack::spawn_replica`]).
pub struct Replica {
    kind: ServiceKind,
    /// Its address, `http://127.0.0.1:PORT`.
    pub url: String,
    running: Running,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .finish()
    }
}

impl Replica {
    /// The kit's default channel to this replica.
    pub async fn channel(&self) -> Channel {
        auth::connect(&self.url).await
    }

    /// A client of this replica, when it is an application service.
    pub async fn app(&self) -> App {
        App::new(self.channel().await)
    }

    /// Stops the replica gracefully and waits until it has stopped.
    pub async fn stop(self) {
        let _ = self.running.stop.send(true);
        let _ = self.running.task.await;
    }
}

/// Each service's environment as the stack configured it (what a launch that starts the
/// services as processes hands on; see [`crate::processes`]).
pub type Environments =
    std::sync::Arc<std::sync::Mutex<HashMap<ServiceKind, HashMap<String, String>>>>;

/// The four services, running.
pub struct Stack {
    launch: Launch,
    /// Each service's address, `http://127.0.0.1:PORT`.
    pub urls: HashMap<ServiceKind, String>,
    /// Each service's configuration (with its database URL).
    pub configs: HashMap<ServiceKind, Config>,
    running: HashMap<ServiceKind, Running>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("urls", &self.urls).finish()
    }
}

/// Extra environment for a service's configuration, e.g. short retry schedules.
pub type Overrides = HashMap<ServiceKind, Vec<(String, String)>>;

/// Settings that make the application's background work quick enough for a test (the
/// reconciler every 100 ms after a grace of 500 ms, the outbox relay every 50 ms, peers given
/// 3 s), plus `extra` (which wins).
pub fn quick_application(extra: &[(&str, &str)]) -> Overrides {
    let mut env = vec![
        ("SUBSIDY_APPLICATION_RECONCILE_INTERVAL_MS", "100"),
        ("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "500"),
        ("SUBSIDY_APPLICATION_RELAY_INTERVAL_MS", "50"),
        ("SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS", "3000"),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key, value));
    }
    let mut overrides = Overrides::new();
    overrides.insert(
        ServiceKind::Application,
        env.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    overrides
}

/// Settings of the notification service that let it deliver to plain-HTTP endpoints on
/// 127.0.0.1 (a test's own receiver), plus `extra` (which wins).
pub fn loopback_webhooks(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("SUBSIDY_NOTIFICATION_ALLOW_HTTP", "true"),
        ("SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1"),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key, value));
    }
    env.into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

impl Stack {
    /// Spawns all four services with default settings.
    pub async fn spawn(launch: Launch) -> Stack {
        Self::spawn_with(launch, Overrides::new()).await
    }

    /// Spawns all four services; `overrides` adds environment variables to a service's config.
    pub async fn spawn_with(launch: Launch, overrides: Overrides) -> Stack {
        Self::spawn_into(launch, overrides, Environments::default()).await
    }

    /// Spawns all four services, first writing each one's environment into `environments`
    /// (which `launch` may read).
    pub async fn spawn_into(
        launch: Launch,
        overrides: Overrides,
        environments: Environments,
    ) -> Stack {
        let mut listeners = HashMap::new();
        let mut urls = HashMap::new();
        for kind in ServiceKind::ALL {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a free port");
            urls.insert(kind, format!("http://{}", listener.local_addr().unwrap()));
            listeners.insert(kind, listener);
        }
        let mut configs = HashMap::new();
        for kind in ServiceKind::ALL {
            let mut env: HashMap<String, String> = HashMap::new();
            let port = urls[&kind].rsplit(':').next().unwrap().to_owned();
            env.insert("SUBSIDY_LISTEN".into(), format!("127.0.0.1:{port}"));
            let database = fresh_database(kind.name()).await;
            // Services connect as the runtime role; migrations run as the owner.
            env.insert("SUBSIDY_DATABASE_URL".into(), database.runtime_url());
            env.insert("SUBSIDY_DATABASE_OWNER_URL".into(), database.url);
            env.extend(auth::service_env(kind));
            env.insert("SUBSIDY_DATABASE_MAX_CONNECTIONS".into(), "8".into());
            env.insert(
                "SUBSIDY_APPLICATION_URL".into(),
                urls[&ServiceKind::Application].clone(),
            );
            env.insert(
                "SUBSIDY_RULES_URL".into(),
                urls[&ServiceKind::Rules].clone(),
            );
            env.insert(
                "SUBSIDY_BUDGET_URL".into(),
                urls[&ServiceKind::Budget].clone(),
            );
            env.insert(
                "SUBSIDY_NOTIFICATION_URL".into(),
                urls[&ServiceKind::Notification].clone(),
            );
            env.insert("SUBSIDY_SHUTDOWN_GRACE_MS".into(), "2000".into());
            // Any free port: tests run side by side (a test of the metrics names its own).
            env.insert("SUBSIDY_METRICS_LISTEN".into(), "127.0.0.1:0".into());
            if kind == ServiceKind::Application {
                // Uploaded documents in a directory of this stack's own (a test may override).
                let documents = std::env::temp_dir()
                    .join(format!("subsidy-test-documents-{}", uuid::Uuid::new_v4()));
                env.insert(
                    "SUBSIDY_APPLICATION_DOCUMENTS_URL".into(),
                    documents.display().to_string(),
                );
            }
            if kind == ServiceKind::Rules {
                // Awards are paid as soon as they are approved, like `subsidy dev`; a test of
                // the publicity period overrides this with the working days it needs.
                env.insert(
                    "SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE".into(),
                    "0".into(),
                );
            }
            for (key, value) in overrides.get(&kind).cloned().unwrap_or_default() {
                env.insert(key, value);
            }
            environments
                .lock()
                .expect("the environments lock is never poisoned")
                .insert(kind, env.clone());
            configs.insert(
                kind,
                Config::load(kind, None, &env).expect("valid test configuration"),
            );
        }
        let mut stack = Stack {
            launch,
            urls,
            configs,
            running: HashMap::new(),
        };
        for kind in ServiceKind::ALL {
            let listener = listeners.remove(&kind).unwrap();
            stack.start_on(kind, listener);
        }
        for kind in ServiceKind::ALL {
            stack.wait_serving(kind).await;
        }
        stack
    }

    fn start_on(&mut self, kind: ServiceKind, listener: TcpListener) {
        let (stop, stop_rx) = watch::channel(false);
        let config = self.configs[&kind].clone();
        let task = tokio::spawn((self.launch)(kind, config, listener, stop_rx));
        self.running.insert(kind, Running { stop, task });
    }

    /// A health client of a service, as a Kubernetes probe connects (TLS, no client
    /// certificate).
    pub async fn health_client(
        &self,
        kind: ServiceKind,
    ) -> Result<HealthClient<tonic::transport::Channel>, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(self.urls[&kind].clone())
            .expect("a service URL")
            .connect_with_connector(tls_probe())
            .await?;
        Ok(HealthClient::new(channel))
    }

    /// What a service answers on grpc.health.v1 for `service` (its own gRPC name is
    /// readiness, the empty name liveness); `None` when it does not answer.
    pub async fn health(&self, kind: ServiceKind, service: &str) -> Option<ServingStatus> {
        let mut client = self.health_client(kind).await.ok()?;
        let answer = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status())
    }

    /// Starts one more instance of `kind` in this process, on a port of its own, with the
    /// stack's configuration of that service (so the same database): a second replica, with
    /// its own connections and background work. Waits until it is SERVING.
    pub async fn spawn_replica(&self, kind: ServiceKind) -> Replica {
        self.spawn_replica_with(kind, |_| {}).await
    }

    /// [`Stack::spawn_replica`] with `tweak` applied to the replica's configuration.
    pub async fn spawn_replica_with(
        &self,
        kind: ServiceKind,
        tweak: impl FnOnce(&mut Config),
    ) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let mut config = self.configs[&kind].clone();
        config.listen = addr.to_string();
        tweak(&mut config);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn((self.launch)(kind, config, listener, stop_rx));
        let replica = Replica {
            kind,
            url: format!("http://{addr}"),
            running: Running { stop, task },
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let serving = async {
                let channel = tonic::transport::Endpoint::from_shared(replica.url.clone())
                    .ok()?
                    .connect_with_connector(tls_probe())
                    .await
                    .ok()?;
                let answer = HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: kind.grpc_name().into(),
                    })
                    .await
                    .ok()?;
                Some(answer.into_inner().status() == ServingStatus::Serving)
            };
            if serving.await == Some(true) {
                return replica;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {} replica did not become SERVING",
                kind.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a service reports SERVING on grpc.health.v1.
    pub async fn wait_serving(&self, kind: ServiceKind) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.health(kind, kind.grpc_name()).await == Some(ServingStatus::Serving) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not become SERVING",
                kind.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops a service gracefully and waits until it has stopped.
    pub async fn stop(&mut self, kind: ServiceKind) {
        if let Some(running) = self.running.remove(&kind) {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// Tells a service to shut down (as SIGTERM does) without waiting; [`Stack::stop`] then
    /// waits until it has stopped.
    pub fn signal_stop(&self, kind: ServiceKind) {
        if let Some(running) = self.running.get(&kind) {
            let _ = running.stop.send(true);
        }
    }

    /// Kills a service abruptly (the task is aborted mid-flight, as a crash would).
    pub async fn kill(&mut self, kind: ServiceKind) {
        if let Some(running) = self.running.remove(&kind) {
            running.task.abort();
            let _ = running.task.await;
        }
    }

    /// Starts a stopped service again on its old port with its old database.
    pub async fn restart(&mut self, kind: ServiceKind) {
        assert!(
            !self.running.contains_key(&kind),
            "stop or kill {} first",
            kind.name()
        );
        let addr = self.configs[&kind].listen.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot rebind {addr}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.start_on(kind, listener);
        self.wait_serving(kind).await;
    }

    /// The kit's default channel to a service (see [`auth`]).
    pub async fn channel(&self, kind: ServiceKind) -> Channel {
        auth::connect(&self.urls[&kind]).await
    }

    /// A channel to a service presenting `transport` and adding `credentials`.
    pub async fn channel_as(
        &self,
        kind: ServiceKind,
        transport: auth::Transport,
        credentials: auth::Credentials,
    ) -> Channel {
        auth::connect_with(&self.urls[&kind], transport, credentials).await
    }

    /// A lazily connecting channel (for services that may be down).
    pub fn lazy_channel(&self, kind: ServiceKind) -> Channel {
        auth::connect_lazy(&self.urls[&kind])
    }

    /// A client of the application service.
    pub async fn app(&self) -> App {
        App::new(self.channel(ServiceKind::Application).await)
    }

    /// A client of the budget service.
    pub async fn budget(&self) -> BudgetServiceClient<Channel> {
        BudgetServiceClient::new(self.channel(ServiceKind::Budget).await)
    }

    /// A client of the notification service.
    pub async fn notification(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel(ServiceKind::Notification).await)
    }

    /// A direct connection to a service's own database as its owner, for checks against its
    /// rows.
    pub async fn database(&self, kind: ServiceKind) -> subsidy_common::db::Db {
        let database = &self.configs[&kind].database;
        let url = if database.owner_url.is_empty() {
            &database.url
        } else {
            &database.owner_url
        };
        subsidy_common::db::Db::connect(
            url,
            DATABASE_CHECK_CONNECTIONS,
            Duration::from_millis(DATABASE_CONNECT_MS_MAX),
        )
        .await
        .expect("connect to a service's database")
    }

    /// Stops every service.
    pub async fn shutdown(mut self) {
        for kind in ServiceKind::ALL {
            self.stop(kind).await;
        }
    }
}
