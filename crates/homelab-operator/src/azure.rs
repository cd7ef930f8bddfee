//! The Azure side of each AppDatabase: its generated password in Key Vault, its backup container
//! and the SAS token that lets backups write there.
//!
//! Azure is called only when something could have changed: the first time a database is seen,
//! when its inputs change, when the SAS token is due for rotation, and once an hour to verify.
//! In between, reconciles reuse the last result, so a steady state costs at most one round of
//! Azure requests per database per hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homelab_azure::{
    AzureBlobStore, AzureClients, AzureError, ContainerName, SasOutcome, SecretName, SecretOutcome,
    SecretVault, ensure_backup_sas,
};
use jiff::Timestamp;

use crate::metrics::{AzureLabels, Metrics};

/// SAS permissions for reading an archive during a restore.
pub const RESTORE_PERMISSIONS: &str = "rl";

/// How long a verified result is trusted before Azure is asked again.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(3600);

/// What the Azure side of one database needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseInputs {
    pub vault_url: String,
    pub password_secret: String,
    pub backup: Option<BackupInputs>,
    /// The archive a database restores from when it names one directly
    /// (`spec.restore.from.archive`): a read-only SAS token for its container.
    pub restore_archive: Option<BackupInputs>,
}

/// The backup destination of one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInputs {
    /// `https://{account}.blob.core.windows.net`, or the policy's endpoint.
    pub service_url: String,
    pub container: String,
    /// The Key Vault secret for the SAS token; `None` when backups use workload identity.
    pub sas_secret: Option<String>,
    pub sas_lifetime: Duration,
}

/// What the Azure side looks like after [`AzureSide::ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    /// `Generated` when the operator created the password, `Adopted` when it found one.
    pub password_origin: &'static str,
    pub password_version: String,
    pub container_created: bool,
    pub sas_expires: Option<Timestamp>,
    /// When Azure should be asked again.
    pub next_check: Timestamp,
}

struct Memo {
    inputs: DatabaseInputs,
    ensured: Ensured,
}

/// Ensures the Azure side of databases, remembering what it verified.
pub struct AzureSide {
    clients: AzureClients,
    metrics: Arc<Metrics>,
    memo: Mutex<HashMap<String, Memo>>,
    blob_stores: Mutex<HashMap<String, Arc<AzureBlobStore>>>,
}

impl AzureSide {
    pub fn new(clients: AzureClients, metrics: Arc<Metrics>) -> Self {
        Self {
            clients,
            metrics,
            memo: Mutex::new(HashMap::new()),
            blob_stores: Mutex::new(HashMap::new()),
        }
    }

    /// The last verified result for `key`, if its inputs are unchanged and it is still fresh.
    pub fn remembered(
        &self,
        key: &str,
        inputs: &DatabaseInputs,
        now: Timestamp,
    ) -> Option<Ensured> {
        let memo = self.memo.lock().ok()?;
        let entry = memo.get(key)?;
        (entry.inputs == *inputs && now < entry.ensured.next_check).then(|| entry.ensured.clone())
    }

    pub fn forget(&self, key: &str) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.remove(key);
        }
    }

    /// Makes sure the password exists (created once, never overwritten), the container exists
    /// and the SAS token is valid and not due for rotation.
    pub async fn ensure(
        &self,
        key: &str,
        inputs: &DatabaseInputs,
        now: Timestamp,
    ) -> Result<Ensured, AzureError> {
        if let Some(ensured) = self.remembered(key, inputs, now) {
            return Ok(ensured);
        }
        let vault = self.clients.key_vault();
        let password_secret = SecretName::parse(&inputs.password_secret)?;
        let outcome = self.count(
            "ensure_password",
            vault
                .ensure_password(&inputs.vault_url, &password_secret)
                .await,
        )?;
        let password_origin = match outcome {
            SecretOutcome::Created { .. } => "Generated",
            SecretOutcome::Unchanged { .. } => "Generated",
            SecretOutcome::Adopted { .. } => "Adopted",
            SecretOutcome::Recovered { .. } => "Recovered",
        };
        let mut ensured = Ensured {
            password_origin,
            password_version: outcome.version().to_string(),
            container_created: false,
            sas_expires: None,
            next_check: now
                .checked_add(jiff::SignedDuration::try_from(VERIFY_INTERVAL).unwrap_or_default())
                .unwrap_or(now),
        };
        if let Some(backup) = &inputs.backup {
            let store = self.blob_store(&backup.service_url)?;
            let container = ContainerName::parse(&backup.container)?;
            use homelab_azure::BlobStore;
            let created =
                self.count("ensure_container", store.ensure_container(&container).await)?;
            ensured.container_created = matches!(created, homelab_azure::ContainerOutcome::Created);
            if let Some(sas_secret) = &backup.sas_secret {
                let secret = SecretName::parse(sas_secret)?;
                let mut policy = self.clients.config().sas_policy();
                policy.lifetime = backup.sas_lifetime;
                let sas = self.count(
                    "ensure_backup_sas",
                    ensure_backup_sas(
                        &vault,
                        &inputs.vault_url,
                        &secret,
                        store.as_ref(),
                        &container,
                        &policy,
                        now,
                    )
                    .await,
                )?;
                let (expires, rotate_at) = match &sas {
                    SasOutcome::Minted { expires_on, .. } => (Some(*expires_on), sas.requeue_at()),
                    SasOutcome::Kept {
                        expires_on,
                        rotate_at,
                        ..
                    } => (Some(*expires_on), Some(*rotate_at)),
                    SasOutcome::NotManaged { expires_on, .. } => (*expires_on, None),
                };
                ensured.sas_expires = expires;
                if let Some(rotate_at) = rotate_at
                    && rotate_at < ensured.next_check
                {
                    ensured.next_check = rotate_at;
                }
            }
        }
        if let Some(archive) = &inputs.restore_archive
            && let Some(sas_secret) = &archive.sas_secret
        {
            let store = self.blob_store(&archive.service_url)?;
            let container = ContainerName::parse(&archive.container)?;
            let secret = SecretName::parse(sas_secret)?;
            let mut policy = self.clients.config().sas_policy();
            policy.lifetime = archive.sas_lifetime;
            // Restoring reads base backups and WAL: read and list, nothing that writes.
            policy.permissions = RESTORE_PERMISSIONS.to_string();
            let sas = self.count(
                "ensure_restore_sas",
                ensure_backup_sas(
                    &vault,
                    &inputs.vault_url,
                    &secret,
                    store.as_ref(),
                    &container,
                    &policy,
                    now,
                )
                .await,
            )?;
            if let Some(rotate_at) = sas.requeue_at()
                && rotate_at < ensured.next_check
            {
                ensured.next_check = rotate_at;
            }
        }
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(
                key.to_string(),
                Memo {
                    inputs: inputs.clone(),
                    ensured: ensured.clone(),
                },
            );
        }
        Ok(ensured)
    }

    /// Deletes the Azure side of a database: the backup container with every blob in it, and
    /// the Key Vault secrets the operator created (a password someone else created stays). Used
    /// only under `deletionPolicy: Delete`.
    pub async fn delete_database(&self, inputs: &DatabaseInputs) -> Result<(), AzureError> {
        use homelab_azure::BlobStore;
        let vault = self.clients.key_vault();
        if let Some(backup) = &inputs.backup {
            let store = self.blob_store(&backup.service_url)?;
            let container = ContainerName::parse(&backup.container)?;
            self.count("delete_container", store.delete_container(&container).await)?;
            if let Some(sas_secret) = &backup.sas_secret {
                let secret = SecretName::parse(sas_secret)?;
                self.count(
                    "delete_secret",
                    vault.delete_managed(&inputs.vault_url, &secret).await,
                )?;
            }
        }
        let password = SecretName::parse(&inputs.password_secret)?;
        self.count(
            "delete_secret",
            vault.delete_managed(&inputs.vault_url, &password).await,
        )?;
        Ok(())
    }

    fn blob_store(&self, service_url: &str) -> Result<Arc<AzureBlobStore>, AzureError> {
        let mut stores = self
            .blob_stores
            .lock()
            .map_err(|_| AzureError::Config("blob store cache poisoned".into()))?;
        if let Some(store) = stores.get(service_url) {
            return Ok(store.clone());
        }
        let store = Arc::new(self.clients.blob_store(service_url)?);
        stores.insert(service_url.to_string(), store.clone());
        Ok(store)
    }

    fn count<T>(
        &self,
        operation: &'static str,
        result: Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        let outcome = match &result {
            Ok(_) => "success",
            Err(AzureError::Throttled { .. }) => "throttled",
            Err(AzureError::Forbidden { .. }) => "forbidden",
            Err(AzureError::Unreachable { .. }) => "unreachable",
            Err(_) => "error",
        };
        self.metrics
            .azure_requests
            .get_or_create(&AzureLabels { operation, outcome })
            .inc();
        result
    }
}

/// The condition reason for an Azure failure.
pub fn reason(error: &AzureError) -> &'static str {
    match error {
        AzureError::Unreachable { .. } => "AzureUnreachable",
        AzureError::Throttled { .. } => "AzureThrottled",
        AzureError::Forbidden { .. } => "AzureForbidden",
        AzureError::Unauthenticated { .. } => "AzureUnauthenticated",
        AzureError::SoftDeleted { .. } => "SecretSoftDeleted",
        AzureError::SecretDisabled { .. } => "SecretDisabled",
        AzureError::InvalidName { .. } => "InvalidAzureName",
        AzureError::Config(_) => "AzureMisconfigured",
        AzureError::Service { .. } => "AzureError",
    }
}

/// Parses a SAS validity such as `30d` or `12h`.
pub fn parse_validity(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: u64 = number.parse().ok()?;
    match unit {
        "h" => Some(Duration::from_secs(number * 3600)),
        "d" => Some(Duration::from_secs(number * 86_400)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validities_parse() {
        assert_eq!(
            parse_validity("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_validity("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_validity("5m"), None);
        assert_eq!(parse_validity(""), None);
    }
}

#[cfg(test)]
mod documentation {
    /// Every YAML example in docs/azure.md is a configuration the operator accepts.
    #[test]
    fn the_configuration_examples_parse() {
        let doc = include_str!("../../../docs/azure.md");
        let mut examples = 0;
        for block in doc.split("```yaml").skip(1) {
            let yaml = block.split("```").next().unwrap_or_default();
            let parsed: Result<homelab_azure::AzureConfig, _> = serde_norway::from_str(yaml);
            assert!(parsed.is_ok(), "{parsed:?}\n{yaml}");
            examples += 1;
        }
        assert_eq!(examples, 3);
    }
}

#[cfg(test)]
mod configuration {
    #[test]
    fn a_misspelled_setting_is_refused() {
        let parsed: Result<homelab_azure::AzureConfig, _> =
            serde_norway::from_str("recoverSoftDeletd: true\n");
        assert!(parsed.is_err());
    }
}
