//! Test support: the application service with fake peers, in the test kit's stack (each on its
//! own port 0 listener, a fresh database for the application, SQLite by default and
//! PostgreSQL when `SUBSIDY_TEST_DATABASE` is set). The rules service is the kit's scripted
//! one, the budget a fake in memory, the notification service one that records what it is
//! given; the test keeps a handle to each. Every scenario with the real peers lives in the
//! cross-service tests of `tests/`.
#![allow(dead_code)]

pub mod budget;
pub mod notification;

use std::sync::Arc;

use futures::FutureExt;
use subsidy_common::config::ServiceKind;
pub use subsidy_testkit::requests::*;
pub use subsidy_testkit::*;

use budget::FakeBudget;
use notification::RecordingNotification;
use subsidy_testkit::fakes::{stopped, with_fakes};

/// Handles to the fake peers of the application under test.
#[derive(Clone, Default)]
pub struct Peers {
    /// The kit's scripted rules service (switch it down or to partial claims).
    pub rules: ScriptedRules,
    /// The budget in memory.
    pub budget: FakeBudget,
    /// The notification service that records what it is given.
    pub notification: RecordingNotification,
}

/// Starts the application with fake peers and `overrides` (say, the kit's
/// [`quick_application`]).
pub async fn spawn(overrides: Overrides) -> (Stack, Peers) {
    let peers = Peers::default();
    let application: Launch = Arc::new(|kind, config, listener, stop| {
        assert_eq!(kind, ServiceKind::Application, "every peer is a fake");
        subsidy_application::run(config, listener, stopped(stop)).boxed()
    });
    let launch = with_fakes(
        application,
        vec![
            (ServiceKind::Rules, peers.rules.routes()),
            (ServiceKind::Budget, peers.budget.routes()),
            (ServiceKind::Notification, peers.notification.routes()),
        ],
    );
    let stack = Stack::spawn_with(launch, overrides).await;
    (stack, peers)
}

/// Starts the application with fake peers and quick settings plus `app_env`, funding compute
/// vouchers from the kit's [`TEST_POOL`] of `total_fen` whose holds last `hold_seconds`.
pub async fn with_pool(
    total_fen: i64,
    hold_seconds: i64,
    app_env: &[(&str, &str)],
) -> (Stack, Peers) {
    let (stack, peers) = spawn(test_pool_application(app_env)).await;
    stack.create_test_pool(total_fen, hold_seconds).await;
    (stack, peers)
}
