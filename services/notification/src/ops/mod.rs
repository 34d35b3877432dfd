//! The use cases of the notification service, one function each, called by the edge (`grpc`)
//! and by the delivery worker.
//!
//! A call that changes something follows one protocol, in one write transaction:
//! 1. begin the transaction;
//! 2. claim the `request_id` ([`subsidy_common::idempotency`]): a replay answers the stored
//!    response and changes nothing, a reuse for another request is `REQUEST_ID_REUSED`
//!    (`PublishEvent` is idempotent by `event_id` instead);
//! 3. read what the decision needs and ask the domain;
//! 4. write through `storage`, taking row locks in the order deliveries → subscriptions →
//!    feed head;
//! 5. build the response (`wire`), store it with the key, commit;
//! 6. after the commit, tell streams of a new feed position and the worker that deliveries
//!    may be due ([`Hub`]).
//!
//! A refusal returns before the commit, so nothing of the call is kept and a retry is judged
//! afresh. Reads go to storage without a transaction.

pub mod attempts;
pub mod deliveries;
pub mod events;
pub mod recording;
pub mod secrets;
pub mod subscriptions;

use prost::Message;
use subsidy_common::RequestId;
use subsidy_common::audit::{self, AuditRecord};
use subsidy_common::auth::Caller;
use subsidy_common::edge::Page;
use subsidy_common::idempotency::{self, Claim};
use subsidy_common::time;

use crate::domain::delivery::RetryPolicy;
use crate::error::NotificationError;
use crate::storage::{Store, Tx};
use crate::stream::Hub;

/// What makes a mutating call idempotent: its operation, its `request_id`, and the
/// fingerprint of the whole request (so that a reuse with other content is told apart).
#[derive(Clone, Debug)]
pub struct Idempotency {
    operation: &'static str,
    request_id: RequestId,
    fingerprint: String,
    scope: String,
    audit: Option<AuditRecord>,
}

impl Idempotency {
    /// The key of `request` as sent to `operation` (the RPC's name), not yet tied to a caller.
    pub fn of<M: Message>(operation: &'static str, request_id: RequestId, request: &M) -> Self {
        Idempotency {
            operation,
            fingerprint: idempotency::fingerprint(operation, request),
            request_id,
            scope: String::new(),
            audit: None,
        }
    }

    /// The same key in `caller`'s scope, with the audit record of the call naming `targets`.
    pub fn by(self, caller: &Caller, targets: &[&str]) -> Self {
        let audit = AuditRecord::change(caller, targets, Some(self.request_id.as_str()));
        Idempotency {
            scope: caller.principal.scope(),
            audit: Some(audit),
            ..self
        }
    }

    /// The key as stored.
    fn stored(&self) -> String {
        idempotency::scoped(&self.scope, self.request_id.as_str())
    }
}

/// One page of a list and the token of the next (empty after the last).
#[derive(Clone, Debug)]
pub struct Listed<T> {
    /// The rows of the page.
    pub rows: Vec<T>,
    /// The token of the next page, or empty.
    pub next_page_token: String,
}

/// The use cases over one store.
#[derive(Clone, Debug)]
pub struct Ops {
    store: Store,
    hub: Hub,
    policy: RetryPolicy,
    subscriptions_max: i64,
    recorder: recording::Recorder,
}

impl Ops {
    /// The use cases over `store`, signalling through `hub`, scheduling first attempts by
    /// `policy`.
    pub fn new(store: Store, hub: Hub, policy: RetryPolicy) -> Self {
        Ops {
            store,
            hub,
            policy,
            subscriptions_max: crate::domain::subscription::SUBSCRIPTIONS_MAX,
            recorder: recording::Recorder::default(),
        }
    }

    /// The same use cases holding at most `subscriptions_max` subscriptions
    /// (`notification.subscriptions_max`).
    pub fn with_subscriptions_max(mut self, subscriptions_max: u32) -> Self {
        self.subscriptions_max = i64::from(subscriptions_max);
        self
    }

    /// The signals this process's streams and worker wait on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The delay before the first attempt of a new or requeued delivery, with jitter.
    fn first_delay_ms(&self) -> u64 {
        self.policy.first_delay_ms(&mut rand::rng())
    }

    /// Steps 1 and 2: a transaction with `key` claimed, or the stored response of a replay.
    async fn begin<R: Message + Default>(
        &self,
        key: &Idempotency,
    ) -> Result<Result<Tx, R>, NotificationError> {
        let mut tx = self.store.db().begin_write().await?;
        let claim = idempotency::claim::<R>(
            &mut tx,
            &key.stored(),
            key.operation,
            &key.fingerprint,
            self.store.now_sql(),
        )
        .await?;
        match claim {
            Claim::Fresh => Ok(Ok(tx)),
            Claim::Replay(response) => Ok(Err(response)),
            Claim::Reused => Err(NotificationError::RequestIdReused {
                request_id: key.request_id.as_str().to_owned(),
            }),
        }
    }

    /// Step 5: stores `response` with the key, appends the call's audit record, and commits.
    async fn answer<R: Message>(
        &self,
        mut tx: Tx,
        key: &Idempotency,
        response: R,
    ) -> Result<R, NotificationError> {
        idempotency::store_response(&mut tx, &key.stored(), &response).await?;
        if let Some(record) = &key.audit {
            audit::append(&mut tx, std::slice::from_ref(record), time::now_us()).await?;
        }
        tx.commit().await?;
        Ok(response)
    }
}

/// Trims `rows` (fetched with [`Page::fetch_limit`]) to `page` and returns it with the next
/// token, each row's position given by `position`.
fn listed<T>(page: &Page, mut rows: Vec<T>, position: impl Fn(&T) -> String) -> Listed<T> {
    let next_page_token = page.finish(&mut rows, position);
    Listed {
        rows,
        next_page_token,
    }
}

/// The keyset position of `page` (`Err` when its token holds something else).
fn after_keyset(page: &Page) -> Result<Option<(i64, String)>, NotificationError> {
    page.after_keyset()
        .map_err(|violation| NotificationError::Invalid(vec![violation]))
}
