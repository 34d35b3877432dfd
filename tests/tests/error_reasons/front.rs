//! The reasons every service answers before the RPC's own code runs: the access layer's
//! (`subsidy.auth`) and the server's own limits (`subsidy.server`), documented in the header of
//! `access.proto`.

use std::path::{Path, PathBuf};

use http::uri::PathAndQuery;
use subsidy_common::auth::token::SigningKey;
use subsidy_common::tls::{Connector, TlsFiles, TlsState};
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_testkit::auth::{Credentials, Transport};

use super::*;

/// Bytes that are not an encoding of `GetPoolRequest`: its `pool_id` (field 1) is a string,
/// and this sends a number in its place.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAGetPoolRequest {
    #[prost(uint64, tag = "1")]
    pool_id: u64,
}

/// A raw unary call of `path` on `channel` sending `message` (for what a generated client
/// cannot send).
async fn raw_call<M: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    message: M,
) -> Result<tonic::Response<()>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the channel is ready");
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<M, ()>::default(),
    )
    .await
}

/// A budget client presenting no client certificate and sending `credentials`.
async fn budget_with(stack: &Stack, credentials: Credentials) -> BudgetServiceClient<Channel> {
    BudgetServiceClient::new(
        stack
            .channel_as(ServiceKind::Budget, Transport::Anonymous, credentials)
            .await,
    )
}

/// The reasons a stack with the usual settings answers: the access layer's refusals of
/// credentials and roles, an undeclared method, and the server's refusal of a message that is
/// too large or does not decode.
pub(crate) async fn front_reasons(stack: &Stack, seen: &mut Seen) {
    let list = || bpb::ListPoolsRequest::default();
    let mut anonymous = budget_with(stack, Credentials::None).await;
    seen.refused(
        anonymous.list_pools(list()).await,
        Code::Unauthenticated,
        AUTH,
        "CREDENTIALS_MISSING",
    );
    let mut garbled = budget_with(stack, Credentials::Token("not-a-token".into())).await;
    seen.refused(
        garbled.list_pools(list()).await,
        Code::Unauthenticated,
        AUTH,
        "TOKEN_INVALID",
    );
    let stranger = rcgen::KeyPair::generate().expect("a key").serialize_pem();
    let unknown_kid = SigningKey::from_pem(stranger.as_bytes(), "kid-nobody-knows")
        .expect("a signing key")
        .mint(&subsidy_common::auth::dev::claims(
            "auditor-1",
            &[Role::Auditor],
            &[],
            None,
        ));
    let mut unknown = budget_with(stack, Credentials::Token(unknown_kid.into())).await;
    seen.refused(
        unknown.list_pools(list()).await,
        Code::Unauthenticated,
        AUTH,
        "TOKEN_KEY_UNKNOWN",
    );
    let auditor = token("auditor-1", &[Role::Auditor], &[], None);
    let mut reader = budget_with(stack, Credentials::Token(auditor.into())).await;
    seen.refused(
        reader
            .close_pool(bpb::ClosePoolRequest {
                request_id: "auditor-closes".into(),
                pool_id: "no-such-pool".into(),
                reason: "an auditor changes nothing".into(),
            })
            .await,
        Code::PermissionDenied,
        AUTH,
        "PERMISSION_DENIED",
    );
    seen.refused(
        raw_call(
            stack.channel(ServiceKind::Budget).await,
            "/subsidy.budget.v1.BudgetService/NoSuchMethod",
            (),
        )
        .await,
        Code::PermissionDenied,
        AUTH,
        "METHOD_NOT_DECLARED",
    );
    seen.refused(
        raw_call(
            stack.channel(ServiceKind::Budget).await,
            "/subsidy.budget.v1.BudgetService/GetPool",
            NotAGetPoolRequest { pool_id: 7 },
        )
        .await,
        Code::InvalidArgument,
        SERVER,
        "MALFORMED_MESSAGE",
    );
    // One byte over the default limit of 4 MiB.
    let mut budget = stack.budget().await;
    seen.refused(
        budget
            .create_pool(bpb::CreatePoolRequest {
                request_id: "too-large".into(),
                pool_id: "too-large".into(),
                display_name: "x".repeat(4 * 1024 * 1024 + 1),
                total: cny(100),
                beneficiary_cap: None,
                reservation_cap: None,
                default_hold_seconds: LONG_HOLD_SECONDS,
            })
            .await,
        Code::ResourceExhausted,
        SERVER,
        "MESSAGE_TOO_LARGE",
    );
}

/// Settings of the second stack for [`second_stack_front_reasons`]: a budget that accepts no
/// bearer tokens and trusts an agencies' CA (written into `dir`) that has issued a certificate
/// naming nothing and one naming an agency not configured; and an application that admits one
/// change per second per caller.
pub(crate) fn second_stack_front_overrides(overrides: &mut Overrides, dir: &Path) {
    let ca = subsidy_common::auth::dev::certificate_authority("strangers' CA").expect("a CA");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write the CA");
    for (name, names) in [
        ("nameless", vec![]),
        ("stranger", vec!["stranger.example.cn".to_owned()]),
    ] {
        let (chain, key) =
            subsidy_common::auth::dev::leaf(&ca, name, &names, &[]).expect("a certificate");
        std::fs::write(dir.join(format!("{name}.crt")), chain).expect("write the certificate");
        std::fs::write(dir.join(format!("{name}.key")), key).expect("write the key");
    }
    overrides.entry(ServiceKind::Budget).or_default().extend([
        ("SUBSIDY_AUTH_JWKS_FILE".into(), String::new()),
        (
            "SUBSIDY_TLS_AGENCY_CA_FILE".into(),
            dir.join("ca.crt").display().to_string(),
        ),
    ]);
    overrides
        .entry(ServiceKind::Application)
        .or_default()
        .extend([
            ("SUBSIDY_AUTH_RATE_LIMIT_PER_SECOND".into(), "1".into()),
            ("SUBSIDY_AUTH_RATE_LIMIT_BURST".into(), "1".into()),
        ]);
}

/// A budget client over a connection presenting the certificate `name` of `dir`, no token.
async fn budget_as_certificate(
    stack: &Stack,
    dir: &Path,
    name: &str,
) -> BudgetServiceClient<Channel> {
    let file = |extension: &str| -> PathBuf { dir.join(format!("{name}.{extension}")) };
    let tls = TlsState::load(TlsFiles {
        cert: file("crt"),
        key: file("key"),
        ca: subsidy_testkit::auth::files().dev.ca(),
        agency_ca: None,
    })
    .expect("load the certificate");
    let channel = tonic::transport::Endpoint::from_shared(stack.urls[&ServiceKind::Budget].clone())
        .expect("a URL")
        .connect_with_connector(Connector::new(tls))
        .await
        .expect("the strangers' CA is trusted");
    BudgetServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        Credentials::None,
    ))
}

/// The reasons of [`second_stack_front_overrides`]: a token sent to a service that takes
/// none, certificates of a trusted CA that name no service or agency, and a second change
/// within a second.
pub(crate) async fn second_stack_front_reasons(stack: &Stack, dir: &Path, seen: &mut Seen) {
    // A person's token, on a connection without a client certificate.
    let mut person = budget_with(stack, Credentials::Operator).await;
    seen.refused(
        person.list_pools(bpb::ListPoolsRequest::default()).await,
        Code::Unauthenticated,
        AUTH,
        "TOKENS_NOT_ACCEPTED",
    );
    for (name, reason) in [
        ("nameless", "UNKNOWN_CERTIFICATE"),
        ("stranger", "UNKNOWN_AGENCY"),
    ] {
        let mut budget = budget_as_certificate(stack, dir, name).await;
        seen.refused(
            budget.list_pools(bpb::ListPoolsRequest::default()).await,
            Code::Unauthenticated,
            AUTH,
            reason,
        );
    }
    // A caller of its own, so that no other call of the test spends its allowance.
    let admin = token("rate-limited-admin", &[Role::Admin], &[], None);
    let mut app = pb::application_service_client::ApplicationServiceClient::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Anonymous,
                Credentials::Token(admin.into()),
            )
            .await,
    );
    let change = || pb::RegisterEnterpriseRequest {
        request_id: "rate-limited".into(),
        uscc: "not a USCC".into(),
        ..pb::RegisterEnterpriseRequest::default()
    };
    // The first change spends the allowance (and is refused for its input).
    let first = app
        .register_enterprise(change())
        .await
        .expect_err("invalid");
    assert_eq!(first.code(), Code::InvalidArgument, "{first:?}");
    let status = seen.refused(
        app.register_enterprise(change()).await,
        Code::ResourceExhausted,
        AUTH,
        "RATE_LIMITED",
    );
    assert!(status.get_details_retry_info().is_some(), "a RetryInfo");
}
