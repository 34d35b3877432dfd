//! The start-up pass that seals the signing secrets earlier versions stored in plaintext.

use subsidy_common::BoxError;

use crate::domain::subscription::SigningSecret;
use crate::storage::secrets::is_sealed;
use crate::storage::{SecretError, SecretKey, Store, StoredSecrets};

/// Seals every signing secret still stored in plaintext (rows written before secrets were
/// encrypted), in one transaction; sealed ones are left as they are, so running it again
/// changes nothing. The number of subscriptions changed. A malformed stored secret is left and
/// reported; its deliveries fail until the secret is rotated.
pub async fn seal_plaintext_secrets(store: &Store) -> Result<u64, BoxError> {
    let key = store.sealing_key()?;
    let mut tx = store.db().begin_write().await?;
    let rows = store.stored_secrets(&mut tx).await?;
    let mut changed = 0;
    for row in rows {
        let subscription_id = row.subscription_id.clone();
        let (current, previous) = match sealed(&key, row) {
            None => continue,
            Some(Ok(sealed)) => sealed,
            Some(Err(error)) => {
                tracing::error!(%subscription_id, %error, "a stored signing secret was left as it is");
                continue;
            }
        };
        store
            .replace_stored_secrets(&mut tx, &subscription_id, current, previous)
            .await?;
        changed += 1;
    }
    tx.commit().await?;
    Ok(changed)
}

/// The secrets of `row` in their stored form with every plaintext one sealed by `key`; `None`
/// when both are sealed already.
fn sealed(
    key: &SecretKey,
    row: StoredSecrets,
) -> Option<Result<(String, Option<String>), SecretError>> {
    let StoredSecrets {
        subscription_id,
        current,
        previous,
    } = row;
    let current_plain = !is_sealed(&current);
    let previous_plain = previous.as_deref().is_some_and(|p| !is_sealed(p));
    if !current_plain && !previous_plain {
        return None;
    }
    let seal = |stored: String, plain: bool| -> Result<String, SecretError> {
        if !plain {
            return Ok(stored);
        }
        let secret = SigningSecret::from_stored(&stored).ok_or(SecretError::Malformed)?;
        key.seal(&subscription_id, &secret)
    };
    Some(seal(current, current_plain).and_then(|current| {
        let previous = previous.map(|p| seal(p, previous_plain)).transpose()?;
        Ok((current, previous))
    }))
}
