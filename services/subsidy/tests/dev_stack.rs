//! The real `subsidy dev` process: all four services come up SERVING with reflection, a SIGTERM
//! drains and exits cleanly, and a restart keeps the data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use subsidy_proto::budget as pb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;

const NAMES: [&str; 4] = [
    "subsidy.application.v1.ApplicationService",
    "subsidy.rules.v1.RulesService",
    "subsidy.budget.v1.BudgetService",
    "subsidy.notification.v1.NotificationService",
];

fn free_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn start(data_dir: &std::path::Path, ports: &[u16]) -> Child {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    Command::new(env!("CARGO_BIN_EXE_subsidy"))
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .args(["--ports", &ports.join(",")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start subsidy dev")
}

async fn wait_serving(child: &mut Child, port: u16, name: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
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

async fn reflected_services(port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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

async fn budget(port: u16) -> BudgetServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    BudgetServiceClient::new(channel)
}

#[tokio::test]
async fn subsidy_dev_serves_all_four_drains_on_sigterm_and_keeps_its_data() {
    // Proves the README's run command: four services SERVING with reflection on their ports,
    // embedded SQLite created and seeded, a clean exit on SIGTERM, and data kept across restarts.
    let data_dir =
        std::env::temp_dir().join(format!("subsidy-dev-{}", uuid::Uuid::new_v4().simple()));
    let ports = free_ports();
    let mut child = start(&data_dir, &ports);
    for (port, name) in ports.iter().zip(NAMES) {
        wait_serving(&mut child, *port, name).await;
        let services = reflected_services(*port).await;
        assert!(services.contains(&name.to_string()), "{services:?}");
        assert!(
            services.contains(&"grpc.health.v1.Health".to_string()),
            "{services:?}"
        );
    }
    let mut client = budget(ports[2]).await;
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
    for name in ["application.db", "rules.db", "budget.db", "notification.db"] {
        assert!(data_dir.join(name).exists(), "{name} was created");
    }

    let mut child = start(&data_dir, &ports);
    for (port, name) in ports.iter().zip(NAMES) {
        wait_serving(&mut child, *port, name).await;
    }
    let mut client = budget(ports[2]).await;
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
