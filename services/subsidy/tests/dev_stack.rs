//! The real `subsidy dev` process: all four services come up SERVING with reflection (v1 and
//! v1alpha), a SIGTERM drains and exits cleanly, a restart keeps the data, and each service's
//! spans are exported under its own service name.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use subsidy_common::auth::dev::DevPaths;
use subsidy_common::tls::{Connector, TlsState};
use subsidy_proto::access::Service;
use subsidy_proto::budget as pb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use support::free_ports;

const NAMES: [&str; 4] = [
    "subsidy.application.v1.ApplicationService",
    "subsidy.rules.v1.RulesService",
    "subsidy.budget.v1.BudgetService",
    "subsidy.notification.v1.NotificationService",
];

/// A started `subsidy dev`, killed when dropped: a failing test does not leave it running
/// (holding its ports, and whatever file descriptors it inherited).
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(data_dir: &std::path::Path, ports: &[u16]) -> Running {
    start_with_env(data_dir, ports, &[])
}

/// Starts `subsidy dev` with `env` added to its environment.
fn start_with_env(data_dir: &std::path::Path, ports: &[u16], env: &[(&str, &str)]) -> Running {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    Running(
        Command::new(env!("CARGO_BIN_EXE_subsidy"))
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--ports", &ports.join(",")])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start subsidy dev"),
    )
}

/// A TLS channel to `port` trusting the dev stack's CA under `data_dir`, presenting no
/// certificate.
async fn tls(data_dir: &std::path::Path, port: u16) -> Option<tonic::transport::Channel> {
    let connector = Connector::anonymous(&DevPaths::new(data_dir).ca()).ok()?;
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .ok()
}

async fn wait_serving(child: &mut Child, data_dir: &std::path::Path, port: u16, name: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(channel) = tls(data_dir, port).await {
            let answer = HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: name.into(),
                })
                .await;
            if answer
                .map(|a| a.into_inner().status() == ServingStatus::Serving)
                .unwrap_or(false)
            {
                return;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "subsidy dev exited early"
        );
        assert!(
            Instant::now() < deadline,
            "{name} on port {port} did not become SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reflected_services(data_dir: &std::path::Path, port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tls(data_dir, port).await.expect("a TLS connection");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// What a reflection `v1alpha` client (grpcurl before 1.9, many IDE plugins) learns from the
/// service on `port`, over TLS without a client certificate: the services listed, and the name
/// of the file that declares `symbol`.
async fn reflected_v1alpha(
    data_dir: &std::path::Path,
    port: u16,
    symbol: &str,
) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let channel = tls(data_dir, port).await.expect("a TLS connection");
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("v1alpha reflection admits a caller without credentials, like v1")
        .into_inner();
    let services = match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha answer to ListServices: {other:?}"),
    };
    let files = match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                    .expect("a file descriptor")
                    .name()
                    .to_owned()
            })
            .collect(),
        other => panic!("unexpected v1alpha answer to FileContainingSymbol: {other:?}"),
    };
    (services, files)
}

async fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "subsidy dev exits cleanly after SIGTERM: {status:?}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subsidy dev did not stop within 10 s of SIGTERM"
        );
        // Sleep asynchronously: the runtime must keep serving the client side of the
        // connections so they close when the server says GOAWAY.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of the budget presenting the application's development certificate, as the
/// application does.
async fn budget(
    data_dir: &std::path::Path,
    port: u16,
) -> BudgetServiceClient<tonic::transport::Channel> {
    let state = TlsState::load(DevPaths::new(data_dir).tls_files(Service::Application))
        .expect("the dev stack made the application's certificate");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(Connector::new(state))
        .await
        .unwrap();
    BudgetServiceClient::new(channel)
}

/// Runs `subsidy probe budget` configured like the dev stack's budget on `port`.
fn probe(data_dir: &std::path::Path, port: u16) -> std::process::ExitStatus {
    let tls = DevPaths::new(data_dir).tls_files(Service::Budget);
    Command::new(env!("CARGO_BIN_EXE_subsidy"))
        .args(["probe", "budget"])
        .env("SUBSIDY_LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSIDY_TLS_CERT_FILE", &tls.cert)
        .env("SUBSIDY_TLS_KEY_FILE", &tls.key)
        .env("SUBSIDY_TLS_CA_FILE", &tls.ca)
        .stderr(Stdio::null())
        .status()
        .expect("run subsidy probe")
}

/// Runs the real `subsidyctl` against the dev stack on `ports`; returns its standard output.
fn subsidyctl(data_dir: &std::path::Path, ports: &[u16], args: &[&str]) -> String {
    let url = |port: u16| format!("https://127.0.0.1:{port}");
    let output = Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--application-url", &url(ports[0])])
        .args(["--rules-url", &url(ports[1])])
        .args(["--budget-url", &url(ports[2])])
        .args(["--notification-url", &url(ports[3])])
        .args(args)
        .env_remove("SUBSIDY_TOKEN")
        .output()
        .expect("run subsidyctl");
    assert!(
        output.status.success(),
        "subsidyctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test]
async fn subsidy_dev_serves_all_four_drains_on_sigterm_and_keeps_its_data() {
    // Proves the README's run command: four services SERVING with reflection (v1, and v1alpha for
    // older tools, both open to a caller without credentials) on their ports,
    // embedded SQLite created and seeded, a clean exit on SIGTERM, and data kept across restarts.
    let data_dir =
        std::env::temp_dir().join(format!("subsidy-dev-{}", uuid::Uuid::new_v4().simple()));
    let ports = free_ports();
    let mut child = start(&data_dir, &ports);
    for (port, name) in ports.iter().zip(NAMES) {
        wait_serving(&mut child, &data_dir, *port, name).await;
        let services = reflected_services(&data_dir, *port).await;
        assert!(services.contains(&name.to_string()), "{services:?}");
        assert!(
            services.contains(&"grpc.health.v1.Health".to_string()),
            "{services:?}"
        );
        // Older tools ask reflection v1alpha: the same services, and the files behind them.
        let (listed, files) = reflected_v1alpha(&data_dir, *port, name).await;
        assert_eq!(listed, services, "v1alpha lists what v1 lists");
        assert!(
            listed.contains(&"grpc.reflection.v1alpha.ServerReflection".to_string()),
            "{listed:?}"
        );
        let package = name.rsplit_once('.').unwrap().0.replace('.', "/");
        assert!(
            files.iter().any(|file| file.starts_with(&package)),
            "v1alpha serves the file declaring {name}: {files:?}"
        );
    }
    let plaintext =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports[2]))
            .unwrap()
            .connect()
            .await;
    if let Ok(channel) = plaintext {
        let refused = BudgetServiceClient::new(channel)
            .list_pools(pb::ListPoolsRequest::default())
            .await;
        assert!(refused.is_err(), "the dev stack does not answer plaintext");
    }
    let mut client = budget(&data_dir, ports[2]).await;
    let pools = client
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(
        pools.iter().map(|p| p.pool_id.as_str()).collect::<Vec<_>>(),
        ["compute-voucher-2025", "data-infra-2025"]
    );
    // subsidyctl finds the dev stack's CA and signing key under the data directory.
    assert!(subsidyctl(&data_dir, &ports, &["pools"]).contains("compute-voucher-2025"));
    assert!(subsidyctl(&data_dir, &ports, &["health"]).contains("SERVING"));
    // The exec probe Kubernetes runs answers over the service's own TLS.
    assert!(
        probe(&data_dir, ports[2]).success(),
        "the budget probes SERVING"
    );
    client
        .reserve(pb::ReserveRequest {
            request_id: "dev-stack-test".into(),
            pool_id: "compute-voucher-2025".into(),
            beneficiary_uscc: "91350100M000100Y43".into(),
            amount: Some(subsidy_proto::google::r#type::Money {
                currency_code: "CNY".into(),
                units: 1,
                nanos: 0,
            }),
            reference: "dev-stack-test".into(),
            hold_seconds: 0,
        })
        .await
        .unwrap();
    drop(client);
    terminate(&mut child).await;
    assert!(
        !probe(&data_dir, ports[2]).success(),
        "a stopped budget fails its probe"
    );
    for name in ["application.db", "rules.db", "budget.db", "notification.db"] {
        assert!(data_dir.join(name).exists(), "{name} was created");
    }

    let mut child = start(&data_dir, &ports);
    for (port, name) in ports.iter().zip(NAMES) {
        wait_serving(&mut child, &data_dir, *port, name).await;
    }
    let mut client = budget(&data_dir, ports[2]).await;
    let pools = client
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 2, "seeding is not repeated");
    let compute = pools
        .iter()
        .find(|p| p.pool_id == "compute-voucher-2025")
        .unwrap();
    assert_eq!(
        compute.reservation_count, 1,
        "the reservation survived the restart"
    );
    drop(client);
    terminate(&mut child).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn an_insecure_dev_stack_says_so_serves_plaintext_on_loopback_only_and_still_authenticates() {
    // Proves `subsidy dev --insecure`: it warns loudly, serves plaintext on 127.0.0.1, still
    // refuses a caller without credentials (UNAUTHENTICATED), admits a service that names
    // itself, and refuses to start on a non-loopback address.
    let data_dir =
        std::env::temp_dir().join(format!("subsidy-dev-{}", uuid::Uuid::new_v4().simple()));
    let ports = free_ports();
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_subsidy"))
            .args(["dev", "--insecure", "--data-dir"])
            .arg(&data_dir)
            .args(["--ports", &port_list.join(",")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start subsidy dev --insecure"),
    );
    let budget_url = format!("http://127.0.0.1:{}", ports[2]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(budget_url.clone())
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "subsidy dev exited early"
        );
        assert!(Instant::now() < deadline, "the budget did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = BudgetServiceClient::new(channel.clone())
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(pb::ListPoolsRequest::default());
    request.metadata_mut().insert(
        subsidy_common::auth::INSECURE_SERVICE_METADATA_KEY,
        "application".parse().unwrap(),
    );
    let pools = BudgetServiceClient::new(channel)
        .list_pools(request)
        .await
        .expect("a service naming itself is believed in insecure mode")
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 2);
    terminate(&mut child).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("INSECURE"), "{stderr}");

    let outcome = Command::new(env!("CARGO_BIN_EXE_subsidy"))
        .args(["dev", "--insecure", "--host", "0.0.0.0", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--ports",
            &free_ports()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("run subsidy dev --insecure --host 0.0.0.0");
    assert!(
        !outcome.status.success(),
        "plaintext is refused off loopback"
    );
    assert!(
        String::from_utf8_lossy(&outcome.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&outcome.stderr)
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn subsidy_dev_exports_each_services_spans_under_its_own_service_name() {
    // Proves: the real `subsidy dev`, with an OTLP endpoint, exports the server span of each
    // call under the `service.name` of the service that answered it (`subsidy-budget` for the
    // budget's ListPools, `subsidy-<service>` for each service's health checks), not under one
    // name for the process.
    let receiver = subsidy_testkit::otlp::Receiver::start().await;
    let data_dir =
        std::env::temp_dir().join(format!("subsidy-dev-{}", uuid::Uuid::new_v4().simple()));
    let ports = free_ports();
    let mut child = start_with_env(
        &data_dir,
        &ports,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            // The log filter decides which spans are recorded too: the server spans are INFO.
            ("RUST_LOG", "info"),
        ],
    );
    for (port, name) in ports.iter().zip(NAMES) {
        wait_serving(&mut child, &data_dir, *port, name).await;
    }
    let mut client = budget(&data_dir, ports[2]).await;
    client
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap();
    drop(client);
    // Stopping flushes the spans.
    terminate(&mut child).await;
    let _ = std::fs::remove_dir_all(&data_dir);

    let spans = receiver.spans();
    let server_spans: Vec<(String, String)> = spans
        .iter()
        .filter(|span| span.kind == subsidy_testkit::otlp::SpanKind::Server)
        .map(|span| (span.service_name.clone(), span.name.clone()))
        .collect();
    let exported_as = |name: &str| -> Vec<&str> {
        let mut services: Vec<&str> = server_spans
            .iter()
            .filter(|(_, span)| span == name)
            .map(|(service, _)| service.as_str())
            .collect();
        services.dedup();
        services
    };
    assert_eq!(
        exported_as("subsidy.budget.v1.BudgetService/ListPools"),
        ["subsidy-budget"],
        "{server_spans:#?}"
    );
    assert!(
        server_spans
            .iter()
            .all(|(service, _)| service.starts_with("subsidy-") && service != "subsidy-dev"),
        "every server span names its service: {server_spans:#?}"
    );
    let mut health = exported_as("grpc.health.v1.Health/Check");
    health.sort();
    health.dedup();
    assert_eq!(
        health,
        [
            "subsidy-application",
            "subsidy-budget",
            "subsidy-notification",
            "subsidy-rules"
        ],
        "{server_spans:#?}"
    );
}
