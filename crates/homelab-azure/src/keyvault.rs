//! Key Vault secrets: the [`SecretVault`] trait controllers use, and [`KeyVaultSecrets`], its
//! implementation on `azure_security_keyvault_secrets`.
//!
//! Generated secrets are written only when absent and never overwritten: an existing secret —
//! created by the operator earlier or by someone else — is returned untouched. The check and the
//! write are two requests (Key Vault has no create-if-absent); the operator runs one active
//! replica (leader election), so nothing else of the operator's writes in between.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::StatusCode;
use azure_security_keyvault_secrets::SecretClient;
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SecretClientGetSecretOptions, SetSecretParameters,
};
use jiff::Timestamp;

use crate::clients::AzureClients;
use crate::error::{AzureError, AzureRole, Failure, Result, Service};
use crate::names::SecretName;
use crate::password::{DEFAULT_PASSWORD_LENGTH, generate_password};
use crate::secret::SecretValue;

/// Tag put on every secret the operator writes.
pub const MANAGED_BY_TAG: &str = "managed-by";
/// Value of [`MANAGED_BY_TAG`].
pub const MANAGED_BY_VALUE: &str = "homelab-operator";
/// The tag naming what a token the operator stored is for (a SAS token: the container URL it
/// was signed for).
pub const SIGNED_FOR_TAG: &str = "signed-for";
/// Content type of passwords the operator generated.
pub const GENERATED_CONTENT_TYPE: &str = "text/plain; generator=homelab-operator";
/// Content type of SAS tokens the operator minted.
pub const SAS_CONTENT_TYPE: &str = "application/x-azure-sas-token; generator=homelab-operator";

/// How long a recovered secret may take to become readable (recovery is asynchronous).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Key Vault's `innererror.code` for a write to a secret whose recovery has not completed.
pub(crate) const BEING_RECOVERED: &str = "ObjectIsBeingRecovered";

/// One version of a secret, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// The secret's name.
    pub name: String,
    /// The version ID.
    pub version: String,
    /// The value.
    pub value: SecretValue,
    /// The content type.
    pub content_type: Option<String>,
    /// The tags.
    pub tags: HashMap<String, String>,
    /// When this version was created.
    pub created: Option<Timestamp>,
    /// The `exp` attribute.
    pub expires_on: Option<Timestamp>,
    /// The `nbf` attribute.
    pub not_before: Option<Timestamp>,
    /// Whether this version is enabled.
    pub enabled: bool,
}

impl StoredSecret {
    /// Whether the operator wrote this version (it carries [`MANAGED_BY_TAG`]).
    pub fn is_managed_by_operator(&self) -> bool {
        self.tags.get(MANAGED_BY_TAG).map(String::as_str) == Some(MANAGED_BY_VALUE)
    }
}

/// What [`SecretVault::ensure_generated_secret`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    /// The secret was absent and has been created.
    Created {
        /// The new version.
        version: String,
    },
    /// The operator's secret exists and was left as it is.
    Unchanged {
        /// The current version.
        version: String,
    },
    /// A secret the operator did not create exists and was adopted as it is.
    Adopted {
        /// The current version.
        version: String,
    },
    /// The secret was soft-deleted and has been recovered (configuration allowed it).
    Recovered {
        /// The current version.
        version: String,
    },
}

impl SecretOutcome {
    /// The version the secret has now.
    pub fn version(&self) -> &str {
        match self {
            Self::Created { version }
            | Self::Unchanged { version }
            | Self::Adopted { version }
            | Self::Recovered { version } => version,
        }
    }
}

/// Produces the value of a secret that is about to be created.
pub type Generator<'a> = &'a (dyn Fn() -> Result<SecretValue> + Send + Sync);

/// Key Vault secrets as controllers need them. `vault` is the vault URL, e.g. the
/// `vaultUrl` of the ClusterSecretStore (`https://<name>.vault.azure.net`).
#[async_trait]
pub trait SecretVault: Send + Sync {
    /// The current version of `name`, or `None` if there is none (or it is soft-deleted).
    async fn get(&self, vault: &str, name: &SecretName) -> Result<Option<StoredSecret>>;

    /// Creates `name` with a value from `generate` if and only if it does not exist. An existing
    /// secret is never overwritten. A soft-deleted one is recovered if the configuration allows,
    /// otherwise [`AzureError::SoftDeleted`] says what to do.
    async fn ensure_generated_secret(
        &self,
        vault: &str,
        name: &SecretName,
        generate: Generator<'_>,
    ) -> Result<SecretOutcome>;

    /// Deletes `name` (Key Vault keeps it soft-deleted for its retention period) if the operator
    /// created it; a secret someone else created is left alone. Returns whether it was deleted.
    async fn delete_managed(&self, vault: &str, name: &SecretName) -> Result<bool>;

    /// Writes a new version of `name` with the `exp` attribute set to `expires_on`, tagged as
    /// the operator's and with `tags`. For values the operator owns and rotates (SAS tokens),
    /// never for generated passwords.
    async fn set_with_expiry(
        &self,
        vault: &str,
        name: &SecretName,
        value: &SecretValue,
        content_type: &str,
        expires_on: Timestamp,
        tags: &[(&str, &str)],
    ) -> Result<StoredSecret>;

    /// [`ensure_generated_secret`](Self::ensure_generated_secret) with a strong random
    /// password (40 letters and digits from the OS random number generator).
    async fn ensure_password(&self, vault: &str, name: &SecretName) -> Result<SecretOutcome> {
        let generate = || {
            generate_password(DEFAULT_PASSWORD_LENGTH)
                .map_err(|e| AzureError::Config(e.to_string()))
        };
        self.ensure_generated_secret(vault, name, &generate).await
    }
}

/// [`SecretVault`] on Azure Key Vault.
#[derive(Debug, Clone)]
pub struct KeyVaultSecrets {
    clients: AzureClients,
}

impl KeyVaultSecrets {
    pub(crate) fn new(clients: AzureClients) -> Self {
        Self { clients }
    }

    fn error(failure: Failure, vault: &str, action: String) -> AzureError {
        failure.into_error(
            Service::KeyVault,
            vault,
            &action,
            AzureRole::KeyVaultSecretsOfficer,
        )
    }

    async fn put(
        client: &SecretClient,
        name: &SecretName,
        value: &SecretValue,
        content_type: &str,
        expires_on: Option<Timestamp>,
        extra_tags: &[(&str, &str)],
    ) -> std::result::Result<StoredSecret, Failure> {
        let mut tags = HashMap::from([(MANAGED_BY_TAG.to_owned(), MANAGED_BY_VALUE.to_owned())]);
        tags.extend(
            extra_tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let attributes = SecretAttributes {
            enabled: Some(true),
            expires: expires_on.and_then(to_offset),
            ..Default::default()
        };
        let parameters = SetSecretParameters {
            value: Some(value.expose().to_owned()),
            content_type: Some(content_type.to_owned()),
            tags: Some(tags),
            secret_attributes: Some(attributes),
        };
        let content = parameters
            .try_into()
            .map_err(|e: azure_core::Error| Failure::from_sdk(&e))?;
        let response = client
            .set_secret(name.as_str(), content, None)
            .await
            .map_err(|e| Failure::from_sdk(&e))?;
        let secret = response.into_model().map_err(|e| Failure::from_sdk(&e))?;
        Ok(stored(name, secret))
    }

    async fn read(
        client: &SecretClient,
        name: &SecretName,
    ) -> std::result::Result<Option<StoredSecret>, Failure> {
        match client
            .get_secret(name.as_str(), None::<SecretClientGetSecretOptions<'_>>)
            .await
        {
            Ok(response) => {
                let secret = response.into_model().map_err(|e| Failure::from_sdk(&e))?;
                Ok(Some(stored(name, secret)))
            }
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_status(StatusCode::NotFound) {
                    Ok(None)
                } else {
                    Err(failure)
                }
            }
        }
    }

    async fn recover(&self, vault: &str, name: &SecretName) -> Result<StoredSecret> {
        let client = self.clients.secret_client(vault)?;
        let action = || format!("recovering deleted secret '{name}' in {vault}");
        client
            .recover_deleted_secret(name.as_str(), None)
            .await
            .map_err(|e| Self::error(Failure::from_sdk(&e), vault, action()))?;
        self.wait_recovered(vault, name).await
    }

    /// Waits for a recovery to complete: Key Vault recovers asynchronously, and the secret reads
    /// as not found (and refuses writes) until it has.
    async fn wait_recovered(&self, vault: &str, name: &SecretName) -> Result<StoredSecret> {
        let client = self.clients.secret_client(vault)?;
        let action = || format!("waiting for deleted secret '{name}' in {vault} to be recovered");
        let deadline = tokio::time::Instant::now() + RECOVERY_TIMEOUT;
        let mut delay = Duration::from_millis(200);
        loop {
            match Self::read(&client, name).await {
                Ok(Some(secret)) => return Ok(secret),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Ok(None) => {
                    return Err(AzureError::Service {
                        service: Service::KeyVault,
                        status: 409,
                        code: Some(BEING_RECOVERED.into()),
                        message: format!(
                            "secret '{name}' in {vault} is being recovered and still not readable \
                             after {}s; the operator keeps waiting for it and generates no other \
                             password",
                            RECOVERY_TIMEOUT.as_secs()
                        ),
                    });
                }
                Err(failure) => return Err(Self::error(failure, vault, action())),
            }
        }
    }
}

#[async_trait]
impl SecretVault for KeyVaultSecrets {
    async fn delete_managed(&self, vault: &str, name: &SecretName) -> Result<bool> {
        match self.get(vault, name).await? {
            Some(existing) if existing.is_managed_by_operator() => {}
            _ => return Ok(false),
        }
        let client = self.clients.secret_client(vault)?;
        match client.delete_secret(name.as_str(), None).await {
            Ok(_) => {
                tracing::info!(%vault, secret = %name, "deleted secret");
                Ok(true)
            }
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_status(StatusCode::NotFound) {
                    Ok(false)
                } else {
                    Err(Self::error(
                        failure,
                        vault,
                        format!("deleting secret '{name}' from {vault}"),
                    ))
                }
            }
        }
    }

    async fn get(&self, vault: &str, name: &SecretName) -> Result<Option<StoredSecret>> {
        let client = self.clients.secret_client(vault)?;
        Self::read(&client, name).await.map_err(|failure| {
            if failure.inner_code.as_deref() == Some("SecretDisabled") {
                return AzureError::SecretDisabled {
                    vault: vault.to_owned(),
                    name: name.to_string(),
                };
            }
            Self::error(
                failure,
                vault,
                format!("reading secret '{name}' from {vault}"),
            )
        })
    }

    async fn ensure_generated_secret(
        &self,
        vault: &str,
        name: &SecretName,
        generate: Generator<'_>,
    ) -> Result<SecretOutcome> {
        if let Some(existing) = self.get(vault, name).await? {
            return Ok(if existing.is_managed_by_operator() {
                SecretOutcome::Unchanged {
                    version: existing.version,
                }
            } else {
                SecretOutcome::Adopted {
                    version: existing.version,
                }
            });
        }
        let value = generate()?;
        let client = self.clients.secret_client(vault)?;
        match Self::put(&client, name, &value, GENERATED_CONTENT_TYPE, None, &[]).await {
            Ok(created) => {
                tracing::info!(%vault, secret = %name, version = %created.version, "created secret");
                Ok(SecretOutcome::Created {
                    version: created.version,
                })
            }
            Err(failure)
                if failure.inner_code.as_deref() == Some("ObjectIsDeletedButRecoverable") =>
            {
                if !self.clients.config().recover_soft_deleted {
                    return Err(AzureError::SoftDeleted {
                        vault: vault.trim_end_matches('/').to_owned(),
                        name: name.to_string(),
                    });
                }
                let recovered = self.recover(vault, name).await?;
                tracing::info!(%vault, secret = %name, version = %recovered.version, "recovered soft-deleted secret");
                Ok(SecretOutcome::Recovered {
                    version: recovered.version,
                })
            }
            // A recovery started earlier (by another reconcile, or before a restart) has not
            // completed: its secret is the password, so wait for it rather than create another.
            Err(failure) if failure.inner_code.as_deref() == Some(BEING_RECOVERED) => {
                let recovered = self.wait_recovered(vault, name).await?;
                tracing::info!(%vault, secret = %name, version = %recovered.version, "waited for a recovery in progress");
                Ok(SecretOutcome::Recovered {
                    version: recovered.version,
                })
            }
            Err(failure) => Err(Self::error(
                failure,
                vault,
                format!("creating secret '{name}' in {vault}"),
            )),
        }
    }

    async fn set_with_expiry(
        &self,
        vault: &str,
        name: &SecretName,
        value: &SecretValue,
        content_type: &str,
        expires_on: Timestamp,
        tags: &[(&str, &str)],
    ) -> Result<StoredSecret> {
        let client = self.clients.secret_client(vault)?;
        Self::put(&client, name, value, content_type, Some(expires_on), tags)
            .await
            .map_err(|failure| {
                if failure.inner_code.as_deref() == Some("ObjectIsDeletedButRecoverable") {
                    return AzureError::SoftDeleted {
                        vault: vault.trim_end_matches('/').to_owned(),
                        name: name.to_string(),
                    };
                }
                Self::error(
                    failure,
                    vault,
                    format!("setting secret '{name}' in {vault}"),
                )
            })
    }
}

fn to_offset(t: Timestamp) -> Option<azure_core::time::OffsetDateTime> {
    azure_core::time::OffsetDateTime::from_unix_timestamp(t.as_second()).ok()
}

fn from_offset(t: azure_core::time::OffsetDateTime) -> Option<Timestamp> {
    Timestamp::from_second(t.unix_timestamp()).ok()
}

/// The version is the last segment of the id, `https://{vault}/secrets/{name}/{version}`.
fn stored(name: &SecretName, secret: Secret) -> StoredSecret {
    let version = secret
        .id
        .as_deref()
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    let attributes = secret.attributes.unwrap_or_default();
    StoredSecret {
        name: name.to_string(),
        version,
        value: SecretValue::new(secret.value.unwrap_or_default()),
        content_type: secret.content_type,
        tags: secret.tags.unwrap_or_default(),
        created: attributes.created.and_then(from_offset),
        expires_on: attributes.expires.and_then(from_offset),
        not_before: attributes.not_before.and_then(from_offset),
        enabled: attributes.enabled.unwrap_or(true),
    }
}
