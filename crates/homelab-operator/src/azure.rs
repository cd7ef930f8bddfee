//! The Azure side of each AppDatabase: its generated password in Key Vault, its backup container
//! and the SAS token that lets backups write there.
//!
//! Azure is called only when something could have changed: the first time a database is seen,
//! when its inputs change, when the SAS token is due for rotation, and once an hour to verify.
//! In between, reconciles reuse the last result, so a steady state costs at most one round of
//! Azure requests per database per hour.
//!
//! The archive is listed apart from that ([`AzureSide::probe_wal`]) to read its newest WAL
//! segment: for a database with a heartbeat writer when that segment would become stale if
//! nothing newer arrived (at most once per [`crate::controllers::backups::archive_max_age`],
//! every minute while it is stale), otherwise every [`WAL_PROBE_UNBOUNDED`]; every minute while
//! the archive holds no segment yet, and again after each new base backup.

use homelab_api::reasons::Reason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homelab_azure::{
    ArchivedWal, AzureBlobStore, AzureClients, AzureError, ContainerName, SasOutcome, SecretName,
    SecretOutcome, SecretVault, Service, WalSegment, ensure_backup_sas, newest_archived_wal,
};
use jiff::Timestamp;

use crate::metrics::{AzureLabels, Metrics};

/// SAS permissions for reading an archive during a restore.
pub const RESTORE_PERMISSIONS: &str = "rl";

/// How long a verified result is trusted before Azure is asked again.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(3600);

/// How often the archive of a database without a heartbeat writer is listed: an idle database
/// archives nothing, so the age of its newest segment bounds nothing, and the listing only keeps
/// `status.backup.lastArchivedWal` current.
pub const WAL_PROBE_UNBOUNDED: Duration = Duration::from_secs(15 * 60);

/// How often an archive that is stale, or still empty, is listed while a writer should be
/// filling it, so that archiving coming back is seen within a minute.
pub const WAL_PROBE_STALE: Duration = Duration::from_secs(60);

/// Where one database archives its WAL, and the last base backup the plugin reports there: a
/// new base backup ends with a segment archived, so it makes the remembered listing stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalArchive {
    pub service_url: String,
    pub container: String,
    pub server_name: String,
    pub last_backup: Option<String>,
}

/// What the last listing of an archive found, and when to list it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalProbe {
    pub newest: Option<ArchivedWal>,
    pub next_probe: Timestamp,
}

/// When to list an archive again, given the upload time of its newest segment and how old that
/// may grow ([`crate::controllers::backups::archive_max_age`], `None` without a writer): at
/// the moment it would turn stale if nothing newer arrived, or after [`WAL_PROBE_STALE`] once it
/// is or while the archive is empty, never later than [`WAL_PROBE_UNBOUNDED`].
pub fn next_wal_probe(
    newest: Option<Timestamp>,
    max_age: Option<jiff::SignedDuration>,
    now: Timestamp,
) -> Timestamp {
    let after = |d: Duration| {
        now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default())
            .unwrap_or(now)
    };
    let Some(newest) = newest else {
        // Nothing archived yet: a new database's first segments arrive within minutes.
        return after(WAL_PROBE_STALE);
    };
    let latest = after(WAL_PROBE_UNBOUNDED);
    let Some(max_age) = max_age else {
        return latest;
    };
    match newest.checked_add(max_age) {
        Ok(due) if due > now => due.min(latest),
        _ => after(WAL_PROBE_STALE),
    }
}

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

impl DatabaseInputs {
    /// What ensuring these inputs creates in Azure: the password and SAS secrets, and the backup
    /// container (never the container a restore reads from: that one is the source's).
    pub fn resources(&self) -> homelab_api::app_database::AzureResources {
        use homelab_api::app_database::{AzureResources, BlobContainerRef, KeyVaultSecretRef};
        let secret = |name: &str| KeyVaultSecretRef {
            vault_url: self.vault_url.clone(),
            name: name.to_string(),
        };
        let mut secrets = vec![secret(&self.password_secret)];
        let mut containers = Vec::new();
        if let Some(backup) = &self.backup {
            secrets.extend(backup.sas_secret.as_deref().map(secret));
            containers.push(BlobContainerRef {
                service_url: backup.service_url.clone(),
                name: backup.container.clone(),
            });
        }
        if let Some(archive) = &self.restore_archive {
            secrets.extend(archive.sas_secret.as_deref().map(secret));
        }
        AzureResources {
            secrets,
            containers,
        }
    }
}

/// What [`AzureSide::delete_recorded`] deleted, and what it kept.
#[derive(Debug, Default)]
pub struct DeletedAzure {
    pub containers: Vec<homelab_api::app_database::BlobContainerRef>,
    pub secrets: Vec<homelab_api::app_database::KeyVaultSecretRef>,
    /// Secrets that exist but were not created by the operator, or no longer exist.
    pub kept_secrets: Vec<homelab_api::app_database::KeyVaultSecretRef>,
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
    wal_probes: Mutex<HashMap<String, (WalArchive, WalProbe)>>,
    blob_stores: Mutex<HashMap<String, Arc<AzureBlobStore>>>,
    /// Endpoints (a vault URL, a Blob service URL) that answered 429 with `Retry-After`: until
    /// when, and the wait they asked for.
    throttled: Mutex<HashMap<String, (std::time::Instant, Duration)>>,
}

impl AzureSide {
    pub fn new(clients: AzureClients, metrics: Arc<Metrics>) -> Self {
        Self {
            clients,
            metrics,
            memo: Mutex::new(HashMap::new()),
            wal_probes: Mutex::new(HashMap::new()),
            blob_stores: Mutex::new(HashMap::new()),
            throttled: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses, without a request, to call `endpoint` of `service` while it still asks to be
    /// left alone: a `Retry-After` holds for every reconcile that would call it, not only for
    /// the one that got the answer (another event must not send a request in the window). The
    /// error repeats the wait the service asked for, so the condition's message stays the same.
    fn wait_out_throttling(&self, endpoint: &str, service: Service) -> Result<(), AzureError> {
        let now = std::time::Instant::now();
        let throttled = self
            .throttled
            .lock()
            .ok()
            .and_then(|t| t.get(endpoint).copied());
        match throttled {
            Some((until, asked)) if now < until => Err(AzureError::Throttled {
                service,
                retry_after: Some(asked),
            }),
            _ => Ok(()),
        }
    }

    /// Remembers a `Retry-After` answer of `endpoint` for [`Self::wait_out_throttling`].
    fn throttling<T>(
        &self,
        endpoint: &str,
        result: Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        if let Err(AzureError::Throttled {
            retry_after: Some(asked),
            ..
        }) = &result
            && let Ok(mut throttled) = self.throttled.lock()
        {
            throttled.insert(
                endpoint.to_string(),
                (std::time::Instant::now() + *asked, *asked),
            );
        }
        result
    }

    /// Calls `call` unless `vault` or `blob` is being waited out, and remembers a throttling
    /// answer under the endpoint of the service that gave it.
    async fn call<T>(
        &self,
        operation: &'static str,
        vault: Option<&str>,
        blob: Option<&str>,
        call: impl std::future::Future<Output = Result<T, AzureError>>,
    ) -> Result<T, AzureError> {
        if let Some(vault) = vault {
            self.wait_out_throttling(vault, Service::KeyVault)?;
        }
        if let Some(blob) = blob {
            self.wait_out_throttling(blob, Service::BlobStorage)?;
        }
        let result = self.count(operation, call.await);
        let endpoint = match &result {
            Err(AzureError::Throttled {
                service: Service::KeyVault,
                ..
            }) => vault,
            Err(AzureError::Throttled {
                service: Service::BlobStorage,
                ..
            }) => blob,
            _ => None,
        };
        match endpoint {
            Some(endpoint) => self.throttling(endpoint, result),
            None => result,
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
        if let Ok(mut probes) = self.wal_probes.lock() {
            probes.remove(key);
        }
    }

    /// The newest WAL segment in `archive`, listed when [`next_wal_probe`] says and remembered in
    /// between. `known` is the segment the database's status last named: it narrows the first
    /// listing after a restart to one directory.
    pub async fn probe_wal(
        &self,
        key: &str,
        archive: &WalArchive,
        known: Option<WalSegment>,
        max_age: Option<jiff::SignedDuration>,
        now: Timestamp,
    ) -> Result<WalProbe, AzureError> {
        let remembered = self
            .wal_probes
            .lock()
            .ok()
            .and_then(|probes| probes.get(key).cloned())
            .filter(|(probed, _)| probed == archive)
            .map(|(_, probe)| probe);
        if let Some(probe) = &remembered
            && now < probe.next_probe
        {
            return Ok(probe.clone());
        }
        let known = remembered
            .and_then(|probe| probe.newest)
            .map(|newest| newest.segment)
            .or(known);
        let store = self.blob_store(&archive.service_url)?;
        let container = ContainerName::parse(&archive.container)?;
        let newest = self
            .call(
                "probe_wal_archive",
                None,
                Some(&archive.service_url),
                newest_archived_wal(
                    store.as_ref(),
                    &container,
                    &archive.server_name,
                    known.as_ref(),
                ),
            )
            .await?;
        let probe = WalProbe {
            next_probe: next_wal_probe(newest.as_ref().map(|n| n.archived_at), max_age, now),
            newest,
        };
        if let Ok(mut probes) = self.wal_probes.lock() {
            probes.insert(key.to_string(), (archive.clone(), probe.clone()));
        }
        Ok(probe)
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
        let outcome = self
            .call(
                "ensure_password",
                Some(&inputs.vault_url),
                None,
                vault.ensure_password(&inputs.vault_url, &password_secret),
            )
            .await?;
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
            let created = self
                .call(
                    "ensure_container",
                    None,
                    Some(&backup.service_url),
                    store.ensure_container(&container),
                )
                .await?;
            ensured.container_created = matches!(created, homelab_azure::ContainerOutcome::Created);
            if let Some(sas_secret) = &backup.sas_secret {
                let secret = SecretName::parse(sas_secret)?;
                let mut policy = self.clients.config().sas_policy();
                policy.lifetime = backup.sas_lifetime;
                let sas = self
                    .call(
                        "ensure_backup_sas",
                        Some(&inputs.vault_url),
                        Some(&backup.service_url),
                        ensure_backup_sas(
                            &vault,
                            &inputs.vault_url,
                            &secret,
                            store.as_ref(),
                            &container,
                            &policy,
                            now,
                        ),
                    )
                    .await?;
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
            let sas = self
                .call(
                    "ensure_restore_sas",
                    Some(&inputs.vault_url),
                    Some(&archive.service_url),
                    ensure_backup_sas(
                        &vault,
                        &inputs.vault_url,
                        &secret,
                        store.as_ref(),
                        &container,
                        &policy,
                        now,
                    ),
                )
                .await?;
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
    /// Deletes what `resources` records: each container, and each secret the operator manages
    /// (a secret someone else created is left alone, as `delete_managed` does). Returns what
    /// was there and is deleted now, and the secrets kept because the operator did not create
    /// them.
    pub async fn delete_recorded(
        &self,
        resources: &homelab_api::app_database::AzureResources,
    ) -> Result<DeletedAzure, AzureError> {
        use homelab_azure::BlobStore;
        let mut outcome = DeletedAzure::default();
        for container in &resources.containers {
            let store = self.blob_store(&container.service_url)?;
            let name = ContainerName::parse(&container.name)?;
            let existed = self
                .call(
                    "delete_container",
                    None,
                    Some(&container.service_url),
                    store.delete_container(&name),
                )
                .await?;
            if existed {
                outcome.containers.push(container.clone());
            }
        }
        let vault = self.clients.key_vault();
        for secret in &resources.secrets {
            let name = SecretName::parse(&secret.name)?;
            let deleted = self
                .call(
                    "delete_secret",
                    Some(&secret.vault_url),
                    None,
                    vault.delete_managed(&secret.vault_url, &name),
                )
                .await?;
            if deleted {
                outcome.secrets.push(secret.clone());
            } else {
                outcome.kept_secrets.push(secret.clone());
            }
        }
        Ok(outcome)
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
pub fn reason(error: &AzureError) -> Reason {
    match error {
        AzureError::Unreachable { .. } => Reason::AzureUnreachable,
        AzureError::Throttled { .. } => Reason::AzureThrottled,
        AzureError::Forbidden { .. } => Reason::AzureForbidden,
        AzureError::Unauthenticated { .. } => Reason::AzureUnauthenticated,
        AzureError::SoftDeleted { .. } => Reason::SecretSoftDeleted,
        AzureError::SasRefused { .. } => Reason::SasTokenRefused,
        AzureError::SecretDisabled { .. } => Reason::SecretDisabled,
        AzureError::InvalidName { .. } => Reason::InvalidAzureName,
        AzureError::Config(_) => Reason::AzureMisconfigured,
        AzureError::Service { .. } => Reason::AzureError,
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
    fn archives_are_listed_when_their_newest_segment_would_turn_stale() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let max_age = Some(jiff::SignedDuration::from_secs(330));
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            next_wal_probe(Some(at("2026-12-03T09:58:00Z")), max_age, now),
            at("2026-12-03T10:03:30Z")
        );
        assert_eq!(
            next_wal_probe(Some(at("2026-12-03T09:50:00Z")), max_age, now),
            at("2026-12-03T10:01:00Z"),
            "stale: every minute"
        );
        assert_eq!(
            next_wal_probe(None, max_age, now),
            at("2026-12-03T10:01:00Z"),
            "empty with a writer: every minute"
        );
        assert_eq!(
            next_wal_probe(None, None, now),
            at("2026-12-03T10:01:00Z"),
            "empty without a writer: every minute too"
        );
        assert_eq!(
            next_wal_probe(Some(at("2026-12-03T09:59:00Z")), None, now),
            at("2026-12-03T10:15:00Z"),
            "no writer: the age bounds nothing"
        );
        assert_eq!(
            next_wal_probe(Some(now), Some(jiff::SignedDuration::from_hours(2)), now),
            at("2026-12-03T10:15:00Z"),
            "never later than the unbounded interval"
        );
    }

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
