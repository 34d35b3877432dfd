//! The registry of compute providers: registration and status changes, each one write
//! transaction idempotent by `request_id` (claim the key, take the `rules_state` row, decide,
//! write, store the response the edge's `respond` builds); reads straight from the pool.

use prost::Message;
use subsidy_common::{RequestId, Uscc};

use super::{Author, Key, claim_key, finish_key};
use crate::domain::registry::{
    self, Provider, ProviderStatus, Registration, StatusChange, StatusRefusal, StatusUpdate,
};
use crate::error::RulesError;
use crate::storage::{self, Store};

/// RegisterProvider: admits `registration`'s provider with its data centers.
pub async fn register<R: Message + Default>(
    store: &Store,
    registration: &Registration,
    (request_id, fingerprint): (&RequestId, &str),
    author: &Author,
    respond: impl FnOnce(&Provider) -> R,
) -> Result<R, RulesError> {
    let key = Key {
        request_id,
        operation: "RegisterProvider",
        fingerprint,
        author,
    };
    let mut tx = store.db().begin_write().await?;
    if let Some(replay) = claim_key(&mut tx, store, &key).await? {
        return Ok(replay);
    }
    let now_us = storage::registry::mark_changed(&mut tx, store.now_us_sql()).await?;
    if storage::registry::current(&mut tx, &registration.uscc)
        .await?
        .is_some()
    {
        return Err(RulesError::ProviderExists {
            uscc: registration.uscc.as_str().to_owned(),
        });
    }
    let provider = storage::registry::insert(&mut tx, registration, &author.actor, now_us).await?;
    let response = respond(&provider);
    finish_key(
        &mut tx,
        &key,
        &response,
        &[registration.uscc.as_str()],
        now_us,
    )
    .await?;
    tx.commit().await?;
    Ok(response)
}

/// UpdateProviderStatus: records `update` as the provider's next status change.
pub async fn update_status<R: Message + Default>(
    store: &Store,
    update: &StatusUpdate,
    (request_id, fingerprint): (&RequestId, &str),
    author: &Author,
    respond: impl FnOnce(&Provider, &StatusChange) -> R,
) -> Result<R, RulesError> {
    let key = Key {
        request_id,
        operation: "UpdateProviderStatus",
        fingerprint,
        author,
    };
    let mut tx = store.db().begin_write().await?;
    if let Some(replay) = claim_key(&mut tx, store, &key).await? {
        return Ok(replay);
    }
    let now_us = storage::registry::mark_changed(&mut tx, store.now_us_sql()).await?;
    let uscc = update.uscc.as_str().to_owned();
    let Some(current) = storage::registry::current(&mut tx, &update.uscc).await? else {
        return Err(RulesError::ProviderNotFound { uscc });
    };
    registry::check_update(&current, update).map_err(|refusal| match refusal {
        StatusRefusal::Unchanged { current, .. } => RulesError::ProviderStatusUnchanged {
            uscc: uscc.clone(),
            status: current,
        },
        StatusRefusal::DateOutOfOrder { current_since } => {
            RulesError::ProviderStatusDateOutOfOrder {
                uscc: uscc.clone(),
                effective_date: current_since,
            }
        }
    })?;
    let change = storage::registry::update_status(&mut tx, update, &author.actor, now_us).await?;
    let provider = Provider {
        status: change.status,
        effective_date: change.effective_date,
        reason: change.reason.clone(),
        updated_us: now_us,
        data_centers: storage::registry::data_centers_in(&mut tx, &update.uscc).await?,
        ..current
    };
    let response = respond(&provider, &change);
    finish_key(&mut tx, &key, &response, &[&uscc], now_us).await?;
    tx.commit().await?;
    Ok(response)
}

/// GetProvider: the provider with its history.
pub async fn get(store: &Store, uscc: &Uscc) -> Result<(Provider, Vec<StatusChange>), RulesError> {
    let Some(provider) = storage::registry::get(store.pool(), uscc).await? else {
        return Err(RulesError::ProviderNotFound {
            uscc: uscc.as_str().to_owned(),
        });
    };
    let history = storage::registry::history(store.pool(), uscc).await?;
    Ok((provider, history))
}

/// ListProviders: up to `limit` providers after `after`, of current status `only`.
pub async fn page(
    store: &Store,
    only: Option<ProviderStatus>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Provider>, RulesError> {
    Ok(storage::registry::page(store.pool(), only, after.unwrap_or_default(), limit).await?)
}
