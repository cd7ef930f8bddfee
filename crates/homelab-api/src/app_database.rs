//! `AppDatabase`: one app's PostgreSQL database on CloudNativePG, with credentials generated
//! into Azure Key Vault, backups to Azure Blob Storage and point-in-time restore.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, LocalRef, SecretStoreRef};

/// A PostgreSQL database for one app, run by CloudNativePG as the cluster `{app}-db-cnpg-v1`
/// (Services `{app}-db-cnpg-v1-rw` and `-r`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "homelab.io",
    version = "v1alpha1",
    kind = "AppDatabase",
    namespaced,
    status = "AppDatabaseStatus",
    shortname = "adb",
    category = "homelab",
    doc = "A PostgreSQL database for one app on CloudNativePG, with generated credentials in Azure Key Vault and backups to Azure Blob Storage.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the database is ready for use"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the database is or is not ready"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoints.readWrite",
        description = "Read-write Service host"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.backup.lastSuccessfulBackup",
        description = "When the last base backup completed"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".spec.instances",
        priority = 1,
        description = "Number of PostgreSQL instances"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.app) == has(oldSelf.app) && (!has(self.app) || self.app == oldSelf.app)",
     "message": "spec.app is immutable: it names the CloudNativePG cluster and the backup archive", "fieldPath": ".app", "reason": "FieldValueForbidden"},
    {"rule": "has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)",
     "message": "spec.restore can only be set when the AppDatabase is created and cannot change afterwards", "fieldPath": ".restore", "reason": "FieldValueForbidden"},
    {"rule": "!has(oldSelf.walStorage) || has(self.walStorage)",
     "message": "spec.walStorage cannot be removed once set: CloudNativePG cannot move the write-ahead log back into the data volume", "fieldPath": ".walStorage", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.pooler) || self.instances >= 1",
     "message": "a pooler needs at least one instance", "fieldPath": ".pooler"}
]))]
pub struct AppDatabaseSpec {
    /// The app this database belongs to. Defaults to the AppDatabase's name. Names the cluster
    /// (`{app}-db-cnpg-v1`), the Key Vault secrets and the backup container. At most 40
    /// lowercase letters, digits and single hyphens, starting with a letter. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z]([a-z0-9]|-[a-z0-9])*$"))]
    pub app: Option<String>,

    /// PostgreSQL version and configuration.
    #[serde(default)]
    pub postgres: PostgresSpec,

    /// Number of PostgreSQL instances: 1 runs a primary only; more add streaming replicas.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,

    /// Volume for the data directory.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Separate volume for the write-ahead log. Recommended for busy databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<StorageSpec>,

    /// CPU and memory for each PostgreSQL instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::resource_requirements_schema")]
    pub resources: Option<ResourceRequirements>,

    /// The database created in the cluster, and its owner.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// Where the generated password lives and how it is synced into the cluster.
    #[serde(default)]
    pub credentials: CredentialsSpec,

    /// A PgBouncer connection pooler in front of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerSpec>,

    /// Backups: which BackupPolicy applies. Without it the database is not backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRef>,

    /// Create this database by restoring another database's backups, optionally to a point in
    /// time. Only at creation; immutable afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,

    /// What deleting this AppDatabase does to its data. `Retain` (default) keeps the cluster and
    /// its volumes, the backup container and the Key Vault secrets; `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Monitoring of the PostgreSQL pods.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Keep CloudNativePG's PodDisruptionBudgets (default), which stop a node drain from
    /// evicting the primary. On a single node a drain (a MicroK8s or kured upgrade) then waits
    /// forever for a single-instance database; `false` lets it proceed, and the database is down
    /// until the node is back.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub pod_disruption_budget: bool,
}

fn default_instances() -> i32 {
    1
}

fn is_true(value: &bool) -> bool {
    *value
}

/// PostgreSQL version, image and parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// PostgreSQL major version; selects CloudNativePG's `standard` image on Debian trixie,
    /// `ghcr.io/cloudnative-pg/postgresql:{version}-standard-trixie`, for a new cluster. An
    /// existing cluster keeps the image it runs while the major version is unchanged; raising
    /// the version moves it to the new major's image (an in-place major upgrade). Ignored when
    /// `image` is set.
    #[serde(default = "default_postgres_version")]
    #[schemars(range(min = 13, max = 18))]
    pub version: i32,

    /// A full PostgreSQL operand image, for pinned digests or custom extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(r"^[^\s]+$"))]
    pub image: Option<String>,

    /// PostgreSQL configuration parameters (`postgresql.conf`). Parameters that CloudNativePG
    /// or the backup policy manage (such as `archive_timeout`) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "x-kubernetes-validations" = [
        {"rule": "!('archive_timeout' in self)", "message": "archive_timeout is set from the BackupPolicy's walArchiveTimeout; remove it from spec.postgres.parameters"},
        {"rule": MANAGED_PARAMETERS_RULE, "message": MANAGED_PARAMETERS_MESSAGE}
    ]))]
    pub parameters: BTreeMap<String, String>,
}

/// Parameters CloudNativePG sets itself (archiving, recovery, replication, listening, files, TLS,
/// logging) and refuses in a Cluster; refused here already, so the mistake shows at apply time.
const MANAGED_PARAMETERS_RULE: &str = "!self.exists(k, k in ['archive_mode', 'archive_command', 'archive_cleanup_command', 'restore_command', 'recovery_end_command', 'primary_conninfo', 'primary_slot_name', 'hot_standby', 'wal_level', 'wal_log_hints', 'full_page_writes', 'synchronous_standby_names', 'listen_addresses', 'port', 'unix_socket_directories', 'unix_socket_group', 'unix_socket_permissions', 'data_directory', 'config_file', 'hba_file', 'ident_file', 'external_pid_file', 'cluster_name', 'shared_preload_libraries', 'logging_collector', 'log_destination', 'log_directory', 'log_filename'] || k.startsWith('recovery_target') || k.startsWith('ssl'))";
const MANAGED_PARAMETERS_MESSAGE: &str = "spec.postgres.parameters sets a parameter that CloudNativePG manages itself (archiving, recovery_target*, replication, listen_addresses, port, sockets, data and config files, cluster_name, shared_preload_libraries, ssl*, logging destination): remove it";

impl Default for PostgresSpec {
    fn default() -> Self {
        Self {
            version: default_postgres_version(),
            image: None,
            parameters: BTreeMap::new(),
        }
    }
}

fn default_postgres_version() -> i32 {
    17
}

/// A persistent volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
     "message": "storage size can grow but never shrink", "fieldPath": ".size"},
    {"rule": "has(self.storageClass) == has(oldSelf.storageClass) && (!has(self.storageClass) || self.storageClass == oldSelf.storageClass)",
     "message": "storageClass is immutable: volumes cannot move to another storage class", "fieldPath": ".storageClass", "reason": "FieldValueForbidden"}
]))]
pub struct StorageSpec {
    /// Size of the volume, e.g. `15Gi`. Can grow (if the storage class allows expansion), never
    /// shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 16), pattern(r"^[1-9][0-9]*(Mi|Gi|Ti)$"))]
    pub size: String,

    /// Storage class of the volume. Defaults to the cluster's default class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub storage_class: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class: None,
        }
    }
}

fn default_storage_size() -> String {
    "15Gi".to_string()
}

/// The application database and its owner.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database name. Defaults to the app name with hyphens replaced by underscores. Not
    /// `postgres`, `template0` or `template1`, which every cluster already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z_][a-z0-9_]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!(self in ['postgres', 'template0', 'template1'])", "message": "postgres, template0 and template1 exist in every cluster: choose the app's own database name"}
    ]))]
    pub name: Option<String>,

    /// Owner role, which the app logs in as. Defaults to the app name with hyphens replaced by
    /// underscores. Not the superuser `postgres`, CloudNativePG's `streaming_replica`, or a name
    /// starting with `pg_` (reserved by PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z_][a-z0-9_]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!(self in ['postgres', 'streaming_replica']) && !self.startsWith('pg_')", "message": "the owner cannot be the superuser postgres, CloudNativePG's streaming_replica, or a pg_ role (reserved by PostgreSQL): choose the app's own role name"}
    ]))]
    pub owner: Option<String>,
}

impl DatabaseSpec {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.owner.is_none()
    }
}

/// The database and owner role inside PostgreSQL that an app connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseNames {
    pub database: String,
    pub owner: String,
}

impl DatabaseNames {
    /// The default names for an app: its name with hyphens replaced by underscores.
    pub fn for_app(app: &str) -> Self {
        let name = app.replace('-', "_");
        Self {
            database: name.clone(),
            owner: name,
        }
    }
}

/// Where the database password lives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSpec {
    /// Name of the Key Vault secret holding the password. Defaults to `{app}-db-password`.
    /// Generated once if it does not exist; an existing secret is adopted and never overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-zA-Z-]{1,127}$"))]
    pub key_vault_secret: Option<String>,

    /// The External Secrets Operator store that reads the Key Vault. Defaults to the operator's
    /// configured ClusterSecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,
}

/// PgBouncer pooler settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSpec {
    /// Number of PgBouncer pods.
    #[serde(default = "default_pooler_instances")]
    #[schemars(range(min = 1, max = 10))]
    pub instances: i32,

    /// `session` or `transaction` pooling.
    #[serde(default)]
    pub pool_mode: PoolMode,

    /// Largest number of client connections PgBouncer accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 100000))]
    pub max_client_connections: Option<i32>,
}

fn default_pooler_instances() -> i32 {
    1
}

/// PgBouncer pool mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client session.
    #[default]
    Session,
    /// A server connection per transaction.
    Transaction,
}

/// The BackupPolicy that applies to this database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// A BackupPolicy in the same namespace.
    pub policy_ref: LocalRef,

    /// A query a restore drill runs in the restored database, besides the heartbeat check: it
    /// must return one row whose first column is true, such as
    /// `SELECT count(*) > 0 FROM bookmarks_bookmark`. It runs with the database owner's
    /// credentials, in a read-only transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2000))]
    pub drill_query: Option<String>,
}

/// Restore a new database from existing backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Whose backups to restore.
    pub from: RestoreSource,

    /// Recover up to this moment (RFC 3339, e.g. `2026-11-20T13:45:00Z`). Without it, recovery
    /// replays all archived WAL (the latest point). Must lie inside the source's recovery window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,
}

/// The backups a restore reads. Exactly one of `appDatabase` and `archive`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.appDatabase) != has(self.archive)", "message": "set exactly one of restore.from.appDatabase and restore.from.archive"}
]))]
pub struct RestoreSource {
    /// Another AppDatabase in the same namespace; its BackupPolicy and archive are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub app_database: Option<String>,

    /// An archive named directly, for example one left behind by a deleted database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
}

/// A WAL archive and base backups in a Blob container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRef {
    /// The BackupPolicy whose storage account and credentials reach the archive.
    pub policy_ref: LocalRef,
    /// The Blob container.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9]([a-z0-9]|-[a-z0-9])*$"))]
    pub container: String,
    /// The server name the archive was written under (usually the source cluster's name).
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub server_name: String,
    /// The database and owner that hold the data in the archive. Default: those an AppDatabase
    /// named after the server name's app (`{app}-db-cnpg-v1`) has by default, its app name with
    /// hyphens replaced by underscores.
    #[serde(default, skip_serializing_if = "DatabaseSpec::is_empty")]
    pub database: DatabaseSpec,
}

/// Monitoring settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a Prometheus Operator `PodMonitor` for the PostgreSQL pods.
    #[serde(default = "default_true")]
    pub pod_monitor: bool,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self { pod_monitor: true }
    }
}

fn default_true() -> bool {
    true
}

/// Observed state of an `AppDatabase`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDatabaseStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` and the specific `ClusterReady`, `CredentialsReady`, `StorageReady`,
    /// `BackupReady` and `RestoreReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Name of the CloudNativePG cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,

    /// Where apps connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// The Secret (type `kubernetes.io/basic-auth`) holding `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// The Key Vault secret holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_secret: Option<String>,

    /// Whether the password was generated by the operator or adopted from an existing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_origin: Option<String>,

    /// Backup facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,

    /// On-demand backups requested through the `homelab.io/backup-now` annotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_demand_backups: Vec<OnDemandBackup>,

    /// The database inside PostgreSQL that clients connect to: `spec.database.name`, or for a
    /// restore the source's (the one holding the restored data), or the app name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,

    /// The owner role clients log in as, chosen as `database` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,

    /// The sizes the cluster's volumes were last given: `spec.storage.size` and
    /// `spec.walStorage.size` once applied, or the smaller ones kept while the storage class
    /// cannot expand (condition `VolumesReady`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_sizes: Option<VolumeSizes>,

    /// What the operator created in Azure for this database, recorded once it was ensured:
    /// `deletionPolicy: Delete` removes exactly this, also after the BackupPolicy or the
    /// ClusterSecretStore that named it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureResources>,
}

/// Azure resources the operator created for a database.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureResources {
    /// Key Vault secrets: the password and the SAS tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<KeyVaultSecretRef>,
    /// The Blob container of the database's backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<BlobContainerRef>,
}

/// A Key Vault secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultSecretRef {
    /// `https://{vault}.vault.azure.net`.
    pub vault_url: String,
    pub name: String,
}

/// A Blob container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobContainerRef {
    /// `https://{account}.blob.core.windows.net`, or the policy's endpoint.
    pub service_url: String,
    pub name: String,
}

impl AzureResources {
    /// `self` with what `other` names added (kept in order, without duplicates): a destination
    /// that changed leaves its old container in the record, to be deleted with the database.
    pub fn merged(mut self, other: &AzureResources) -> AzureResources {
        for secret in &other.secrets {
            if !self.secrets.contains(secret) {
                self.secrets.push(secret.clone());
            }
        }
        for container in &other.containers {
            if !self.containers.contains(container) {
                self.containers.push(container.clone());
            }
        }
        self
    }
}

/// Sizes of a cluster's volumes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSizes {
    /// The data volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// The WAL volumes, when separate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<String>,
}

/// Connection endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Host of the read-write Service (the primary).
    pub read_write: String,
    /// Host of the read Service (any instance).
    pub read: String,
    /// Host of the pooler Service, when a pooler is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<String>,
    /// PostgreSQL port.
    pub port: i32,
}

/// Backup facts, from the ObjectStore's recovery window, the Backup objects and the archive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The Blob container holding this database's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The server name this incarnation archives under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// When the last base backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<Time>,
    /// When the last base backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_backup: Option<Time>,
    /// The earliest point a restore can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<Time>,
    /// When the newest WAL segment in the Blob container finished uploading (its
    /// `Last-Modified`), as the operator last listed the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<Time>,
    /// The name of that segment (timeline, log, segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal_segment: Option<String>,
    /// When the current backup SAS token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_expires: Option<Time>,
}

/// The outcome of one on-demand backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandBackup {
    /// The annotation value that requested it.
    pub token: String,
    /// The CloudNativePG Backup object.
    pub backup: String,
    /// `Pending`, `Running`, `Completed` or `Failed`, as CloudNativePG reports it.
    pub phase: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Time>,
    /// CloudNativePG's error message, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AppDatabase {
    /// The app name: `spec.app`, or the resource's name.
    pub fn app_name(&self) -> &str {
        self.spec
            .app
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// The database and owner this database's clients use: what `spec.database` sets, else the
    /// names already published in status (chosen once, like the server name), else those of the
    /// data a restore brings (`restored`), else the app's defaults.
    pub fn database_names(&self, restored: Option<&DatabaseNames>) -> DatabaseNames {
        let status = self.status.as_ref();
        let defaults = restored
            .cloned()
            .unwrap_or_else(|| DatabaseNames::for_app(self.app_name()));
        DatabaseNames {
            database: (self.spec.database.name.clone())
                .or_else(|| status.and_then(|s| s.database.clone()))
                .unwrap_or(defaults.database),
            owner: (self.spec.database.owner.clone())
                .or_else(|| status.and_then(|s| s.owner.clone()))
                .unwrap_or(defaults.owner),
        }
    }

    /// The names clients use as far as this object tells (see [`AppDatabase::database_names`]).
    pub fn published_names(&self) -> DatabaseNames {
        self.database_names(None)
    }

    /// The database name inside PostgreSQL, without regard to a restore's source.
    pub fn database_name(&self) -> String {
        self.spec
            .database
            .name
            .clone()
            .unwrap_or_else(|| self.app_name().replace('-', "_"))
    }

    /// The owner role.
    pub fn owner_name(&self) -> String {
        self.spec
            .database
            .owner
            .clone()
            .unwrap_or_else(|| self.app_name().replace('-', "_"))
    }

    /// The Key Vault secret holding the password.
    pub fn key_vault_password_secret(&self) -> String {
        self.spec
            .credentials
            .key_vault_secret
            .clone()
            .unwrap_or_else(|| crate::naming::default_password_key_vault_secret(self.app_name()))
    }
}
