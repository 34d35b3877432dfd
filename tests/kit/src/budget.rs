//! Requests and reads of the budget service that tests make again and again (against the real
//! budget or a fake one: both speak the same contract).

use subsidy_proto::budget as bpb;

use crate::money::cny;
use crate::stack::{Overrides, Stack};

/// The pool a test funds compute-voucher claims from when it makes its own (see
/// [`test_pool_application`] and [`Stack::create_test_pool`]).
pub const TEST_POOL: &str = "test-vouchers";
/// 30,000,000 CNY, the size of the 2025 compute-voucher pool, in fen.
pub const POOL_2025_FEN: i64 = 3_000_000_000;
/// A hold long enough never to expire during a test, in seconds.
pub const LONG_HOLD_SECONDS: i64 = 3600;

/// Quick settings of the application (see [`crate::quick_application`]) that fund its
/// compute vouchers from [`TEST_POOL`], plus `extra`.
pub fn test_pool_application(extra: &[(&str, &str)]) -> Overrides {
    let mut env = vec![("SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID", TEST_POOL)];
    env.extend_from_slice(extra);
    crate::quick_application(&env)
}

impl Stack {
    /// Creates [`TEST_POOL`] with `total_fen`, holds lasting `hold_seconds` and the enterprise
    /// cap of the 2025 compute-voucher policy per beneficiary.
    pub async fn create_test_pool(&self, total_fen: i64, hold_seconds: i64) {
        self.create_pool(
            TEST_POOL,
            total_fen,
            Some(crate::ENTERPRISE_CAP_FEN),
            hold_seconds,
        )
        .await;
    }

    /// Creates a pool in the budget with an optional cap per beneficiary.
    pub async fn create_pool(
        &self,
        pool_id: &str,
        total_fen: i64,
        beneficiary_cap_fen: Option<i64>,
        hold_seconds: i64,
    ) {
        self.budget()
            .await
            .create_pool(bpb::CreatePoolRequest {
                request_id: format!("create-{pool_id}"),
                pool_id: pool_id.into(),
                display_name: pool_id.into(),
                total: cny(total_fen),
                beneficiary_cap: beneficiary_cap_fen.and_then(cny),
                reservation_cap: None,
                default_hold_seconds: hold_seconds,
            })
            .await
            .expect("create a pool");
    }

    /// A pool of the budget.
    pub async fn pool(&self, pool_id: &str) -> bpb::Pool {
        self.budget()
            .await
            .get_pool(bpb::GetPoolRequest {
                pool_id: pool_id.into(),
            })
            .await
            .expect("read the pool")
            .into_inner()
            .pool
            .expect("the response carries the pool")
    }

    /// Every reservation made under `reference` in `pool_id`.
    pub async fn reservations(&self, pool_id: &str, reference: &str) -> Vec<bpb::Reservation> {
        self.budget()
            .await
            .list_reservations(bpb::ListReservationsRequest {
                pool_id: pool_id.into(),
                reference: reference.into(),
                ..Default::default()
            })
            .await
            .expect("list the reservations")
            .into_inner()
            .reservations
    }
}
