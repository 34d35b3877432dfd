//! The denylist: paged from the database, replaced whole in one transaction.

use prost::Message;
use subsidy_common::{RequestId, Uscc};

use super::{Author, Key, claim_key, finish_key};
use crate::domain::denylist::{self, DenylistEntry, Replacement};
use crate::error::RulesError;
use crate::storage::denylist::DenylistState;
use crate::storage::{self, Store};

/// ListDenylistEntries: up to `limit` entries after the code `after` (only `only`, when
/// given), with the list's identity.
pub async fn page(
    store: &Store,
    only: Option<&Uscc>,
    after: Option<&str>,
    limit: i64,
) -> Result<(Vec<DenylistEntry>, DenylistState), RulesError> {
    let only = only.map(Uscc::as_str).unwrap_or_default();
    Ok(storage::denylist::page(store.pool(), only, after.unwrap_or_default(), limit).await?)
}

/// ReplaceDenylist: puts `entries` (codes unique) in place of the whole list, idempotent by
/// `request_id`; answers with `respond` of what the replacement did.
pub async fn replace<R: Message + Default>(
    store: &Store,
    entries: &[DenylistEntry],
    request_id: &RequestId,
    fingerprint: &str,
    author: &Author,
    respond: impl FnOnce(&Replacement) -> R,
) -> Result<R, RulesError> {
    let key = Key {
        request_id,
        operation: "ReplaceDenylist",
        fingerprint,
        author,
    };
    let content_sha256 = denylist::content_sha256(entries);
    let mut tx = store.db().begin_write().await?;
    if let Some(replay) = claim_key(&mut tx, store, &key).await? {
        return Ok(replay);
    }
    let replaced_us =
        storage::denylist::mark_replaced(&mut tx, &content_sha256, store.now_us_sql()).await?;
    let previous = storage::denylist::codes(&mut tx).await?;
    storage::denylist::replace_entries(&mut tx, entries).await?;
    let replacement = denylist::replacement(&previous, entries, content_sha256, replaced_us);
    let response = respond(&replacement);
    finish_key(&mut tx, &key, &response, &["denylist"], replaced_us).await?;
    tx.commit().await?;
    Ok(response)
}
