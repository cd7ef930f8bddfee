//! The backup SAS of a database: a container-scoped token kept in Key Vault, with the secret's
//! `exp` attribute equal to the token's expiry, replaced when less than a third of its lifetime
//! remains or when Blob Storage refuses it. A token someone else stored is never replaced; one
//! Blob Storage refuses is reported.

use jiff::Timestamp;

use crate::blob::BlobStore;
use crate::error::{AzureError, Result};
use crate::keyvault::{SAS_CONTENT_TYPE, SIGNED_FOR_TAG, SecretVault};
use crate::names::{ContainerName, SecretName};
use crate::sas::{RotationDecision, RotationReason, SasPolicy, rotation_decision};

/// What [`ensure_backup_sas`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SasOutcome {
    /// A new token was minted and stored as a new secret version.
    Minted {
        /// The new secret version.
        version: String,
        /// The token's (and the secret's) expiry.
        expires_on: Timestamp,
        /// Why.
        reason: RotationReason,
        /// When it will be due for rotation.
        rotate_at: Timestamp,
    },
    /// The stored token is still good.
    Kept {
        /// The current secret version.
        version: String,
        /// Its expiry.
        expires_on: Timestamp,
        /// When it will be due for rotation.
        rotate_at: Timestamp,
    },
    /// The secret exists but was not written by the operator; it is left alone.
    NotManaged {
        /// The current secret version.
        version: String,
        /// Its expiry, if set.
        expires_on: Option<Timestamp>,
    },
}

impl SasOutcome {
    /// When the controller should look again: the rotation time, or `None` when it is not ours.
    pub fn requeue_at(&self) -> Option<Timestamp> {
        match self {
            Self::Minted { rotate_at, .. } | Self::Kept { rotate_at, .. } => Some(*rotate_at),
            Self::NotManaged { .. } => None,
        }
    }
}

/// Makes sure the secret `secret` in `vault` holds a SAS token for `container` that is not due
/// for rotation at `now`, minting and storing a new one otherwise.
pub async fn ensure_backup_sas(
    vault_client: &dyn SecretVault,
    vault: &str,
    secret: &SecretName,
    store: &dyn BlobStore,
    container: &ContainerName,
    policy: &SasPolicy,
    now: Timestamp,
) -> Result<SasOutcome> {
    let current = vault_client.get(vault, secret).await?;
    // A token is scoped to one container of one account; one signed for another (the policy's
    // storage account or the container changed) would be refused there.
    let signed_for = store.container_url(container);
    let reason = match &current {
        None => RotationReason::Missing,
        Some(stored) if !stored.is_managed_by_operator() => {
            if let Some(answer) = store.sas_refusal(container, &stored.value).await? {
                return Err(AzureError::SasRefused {
                    vault: vault.trim_end_matches('/').to_owned(),
                    name: secret.to_string(),
                    container: container.to_string(),
                    answer,
                });
            }
            return Ok(SasOutcome::NotManaged {
                version: stored.version.clone(),
                expires_on: stored.expires_on,
            });
        }
        Some(stored) if stored.tags.get(SIGNED_FOR_TAG) != Some(&signed_for) => {
            RotationReason::SignedForAnotherContainer
        }
        Some(stored) => match rotation_decision(stored.created, stored.expires_on, now) {
            RotationDecision::Keep { rotate_at } => {
                match store.sas_refusal(container, &stored.value).await? {
                    None => {
                        return Ok(SasOutcome::Kept {
                            version: stored.version.clone(),
                            expires_on: stored.expires_on.unwrap_or(rotate_at),
                            rotate_at,
                        });
                    }
                    Some(answer) => {
                        tracing::warn!(%vault, %secret, %container, %answer, "Blob Storage refuses the stored SAS token; minting another");
                        RotationReason::RefusedByBlobStorage
                    }
                }
            }
            RotationDecision::Rotate(reason) => reason,
        },
    };
    let token = store.container_sas(container, policy, now).await?;
    let written = vault_client
        .set_with_expiry(
            vault,
            secret,
            &token.token,
            SAS_CONTENT_TYPE,
            token.expires_on,
            &[(SIGNED_FOR_TAG, signed_for.as_str())],
        )
        .await?;
    tracing::info!(%vault, %secret, %container, version = %written.version, expires_on = %token.expires_on, ?reason, "minted backup SAS");
    // Judged as the next call will judge it: from the version's creation, which is about now.
    let rotate_at = match rotation_decision(Some(now), Some(token.expires_on), now) {
        RotationDecision::Keep { rotate_at } => rotate_at,
        RotationDecision::Rotate(_) => now,
    };
    Ok(SasOutcome::Minted {
        version: written.version,
        expires_on: token.expires_on,
        reason,
        rotate_at,
    })
}
