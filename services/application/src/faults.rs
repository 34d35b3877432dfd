//! Test-only fault injection, compiled with the `test-faults` feature. A test registers a
//! fault for one contract number (so that tests running in parallel do not disturb each
//! other); the workflow reaches the fault's point and stops there for good, as a process that
//! died at that instant would. A failing fault instead makes one peer call fail as if the peer
//! could not be reached (keyed by what the call is about, a reservation say).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

/// The points where a fault can stop the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// The budget made a claim's reservation; it is not recorded yet.
    AfterReserve,
    /// The budget committed a claim's approval; it is not recorded yet.
    AfterCommit,
    /// The disbursement export asks the budget for a reservation's ledger entries (a failing
    /// fault, keyed by the reservation id).
    ExportLedgerLookup,
}

/// The registered faults: a point and a contract number, and whom to tell when it is reached.
type Registry = Mutex<HashMap<(Point, String), Arc<Notify>>>;

fn hangs() -> &'static Registry {
    static HANGS: OnceLock<Registry> = OnceLock::new();
    HANGS.get_or_init(Mutex::default)
}

/// Makes the workflow of the claim on `contract_number` stop for good the next time it
/// reaches `point`. The returned notification fires when that point is reached. The fault
/// fires once.
pub fn hang_at(point: Point, contract_number: &str) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    hangs()
        .lock()
        .expect("the fault registry lock is never poisoned")
        .insert((point, contract_number.to_owned()), notify.clone());
    notify
}

/// Makes the next claim on `contract_number` stop for good right after the budget made its
/// reservation and before the reservation is recorded.
pub fn hang_after_reserve(contract_number: &str) -> Arc<Notify> {
    hang_at(Point::AfterReserve, contract_number)
}

/// Makes the disbursement export's next request for the ledger entries of `reservation_id`
/// fail as if the budget could not be reached. The returned notification fires when it fails.
pub fn fail_export_ledger_lookup(reservation_id: &str) -> Arc<Notify> {
    hang_at(Point::ExportLedgerLookup, reservation_id)
}

/// Whether a failing fault is registered at `point` for `key`; it fires once.
pub(crate) fn fails(point: Point, key: &str) -> bool {
    let fault = hangs()
        .lock()
        .expect("the fault registry lock is never poisoned")
        .remove(&(point, key.to_owned()));
    fault.map(|notify| notify.notify_one()).is_some()
}

/// A fault point of the workflow.
pub(crate) async fn reached(point: Point, contract_number: &str) {
    let fault = hangs()
        .lock()
        .expect("the fault registry lock is never poisoned")
        .remove(&(point, contract_number.to_owned()));
    if let Some(notify) = fault {
        notify.notify_one();
        std::future::pending::<()>().await;
    }
}
