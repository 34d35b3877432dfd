//! Arbitrary bytes as the request message of any unary RPC of the four services, decoded and
//! handled by the real service (its edge validation, its use case, its SQLite database), as
//! the access layer would hand it over: the first byte picks the RPC.
//!
//! Fails on a panic, and on an answer that breaks the house rules for errors: every refusal
//! carries exactly one `ErrorInfo`, and bad input is never `INTERNAL` or `UNKNOWN`.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use subsidy_common::auth::Caller;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::limits::LimitsLayer;
use subsidy_common::security::Security;
use subsidy_proto::access::{self, MethodAccess, Service};
use tonic::Code;
use tonic::service::Routes;
use tonic_types::{ErrorDetail, StatusExt};
use tower::{Layer, ServiceExt};

/// The four services, each on its own database in a temporary directory.
struct Harness {
    runtime: tokio::runtime::Runtime,
    routes: HashMap<&'static str, Routes>,
    _directory: tempfile::TempDir,
}

fn config(kind: ServiceKind, directory: &std::path::Path) -> Config {
    let env: HashMap<String, String> = [
        ("SUBSIDY_INSECURE", "true".to_owned()),
        ("SUBSIDY_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "SUBSIDY_DATABASE_URL",
            format!("sqlite:{}/{}.db", directory.display(), kind.name()),
        ),
        // Peers that refuse connections at once: the application's calls fail fast.
        ("SUBSIDY_RULES_URL", "http://127.0.0.1:9".to_owned()),
        ("SUBSIDY_BUDGET_URL", "http://127.0.0.1:9".to_owned()),
        ("SUBSIDY_NOTIFICATION_URL", "http://127.0.0.1:9".to_owned()),
        ("SUBSIDY_APPLICATION_UPSTREAM_TIMEOUT_MS", "200".to_owned()),
        ("RUST_LOG", "off".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    Config::load(kind, None, &env).expect("a valid configuration")
}

impl Harness {
    fn start() -> Harness {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let routes = runtime.block_on(async {
            let mut routes = HashMap::new();
            let budget_config = config(ServiceKind::Budget, directory.path());
            let budget = subsidy_budget::open(&budget_config).await.expect("budget");
            routes.insert(
                ServiceKind::Budget.grpc_name(),
                subsidy_budget::routes(budget, &budget_config),
            );

            let rules_config = config(ServiceKind::Rules, directory.path());
            let store = subsidy_rules::open_store(&rules_config)
                .await
                .expect("rules");
            subsidy_rules::seed_shipped_policies(&store)
                .await
                .expect("seed the policies");
            let catalog = std::sync::Arc::new(
                subsidy_rules::catalog::Catalog::open(store)
                    .await
                    .expect("catalog"),
            );
            routes.insert(
                ServiceKind::Rules.grpc_name(),
                subsidy_rules::routes(catalog, &rules_config),
            );

            let notification_config = config(ServiceKind::Notification, directory.path());
            let settings: subsidy_notification::settings::Settings =
                notification_config.section().expect("settings");
            let store = subsidy_notification::open_store(&notification_config)
                .await
                .expect("notification");
            let hub = subsidy_notification::stream::Hub::default();
            let policy = subsidy_notification::domain::delivery::RetryPolicy::new(
                settings.retry_schedule_ms.clone(),
                settings.retry_jitter_percent,
            );
            let ops = subsidy_notification::ops::Ops::new(store.clone(), hub.clone(), policy);
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            std::mem::forget(_stop);
            let streams =
                subsidy_notification::stream::Streams::new(store, hub, stopped, &settings);
            let grpc = subsidy_notification::grpc::NotificationGrpc::new(ops, streams, &settings);
            routes.insert(
                ServiceKind::Notification.grpc_name(),
                subsidy_notification::routes(grpc, &notification_config),
            );

            let application_config = config(ServiceKind::Application, directory.path());
            let security =
                Security::load(ServiceKind::Application, &application_config).expect("security");
            let workflow = subsidy_application::open(&application_config, &security)
                .await
                .expect("application");
            routes.insert(
                ServiceKind::Application.grpc_name(),
                subsidy_application::routes(workflow, &application_config),
            );
            routes
        });
        Harness {
            runtime,
            routes,
            _directory: directory,
        }
    }

    /// Sends `message` as the request of `rule`'s RPC and checks the answer.
    fn call(&self, rule: &'static MethodAccess, message: &[u8]) {
        let service = rule.service_name();
        let routes = self.routes[service].clone();
        let mut frame = Vec::with_capacity(message.len() + 5);
        frame.push(0);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{}", rule.path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(Full::new(Bytes::from(frame))))
            .expect("a request");
        // As the access layer admits the application (which may call every RPC it needs) or,
        // for RPCs it may not call, an operator holding every role.
        let caller = Caller::internal(Service::Application, rule);
        request.extensions_mut().insert(caller);
        let limited = LimitsLayer::new(64).layer(routes);
        self.runtime.block_on(async move {
            let response = limited.oneshot(request).await.expect("an answer");
            let status = match tonic::Status::from_header_map(response.headers()) {
                Some(status) => status,
                None => {
                    let collected = response
                        .into_body()
                        .collect()
                        .await
                        .expect("the body is read");
                    match collected.trailers() {
                        Some(trailers) => tonic::Status::from_header_map(trailers)
                            .unwrap_or_else(|| tonic::Status::ok("")),
                        None => tonic::Status::ok(""),
                    }
                }
            };
            check(rule, &status);
        });
    }
}

/// The house rules for an answer: a refusal carries exactly one `ErrorInfo`; bad input is a
/// refusal, not a failure of the service.
fn check(rule: &MethodAccess, status: &tonic::Status) {
    if status.code() == Code::Ok {
        return;
    }
    let infos = status
        .get_error_details_vec()
        .into_iter()
        .filter(|detail| matches!(detail, ErrorDetail::ErrorInfo(_)))
        .count();
    assert_eq!(
        infos,
        1,
        "{}: {:?} {:?} carries {infos} ErrorInfo",
        rule.path,
        status.code(),
        status.message()
    );
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "{}: {:?} {:?}",
        rule.path,
        status.code(),
        status.message()
    );
}

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::start);

/// The unary RPCs (a server stream, once open, is not a request to validate).
static UNARY: LazyLock<Vec<&'static MethodAccess>> = LazyLock::new(|| {
    access::METHODS
        .iter()
        .filter(|rule| {
            !rule.server_streaming && rule.service_name() != "subsidy.audit.v1.AuditService"
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let rule = UNARY[pick as usize % UNARY.len()];
    HARNESS.call(rule, message);
});
