//! `BackupPolicy`: when and where databases are backed up, how long backups are kept, how much
//! data may be lost (the WAL archive bound), and how often restores are rehearsed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL rule for a five-field cron expression (minute hour day-of-month month day-of-week) as
/// CloudNativePG's scheduler accepts it once the operator prepends the seconds: numbers, `*`,
/// ranges, steps and lists, `?` for either day field, and month or weekday names.
const CRON_RULE: &str = r"self.matches('^[0-9*,/-]+\\s+[0-9*,/-]+\\s+[0-9*,/?-]+\\s+[0-9A-Za-z*,/-]+\\s+[0-9A-Za-z*,/?-]+$')";
const CRON_MESSAGE: &str = "must be a five-field cron expression in UTC (minute hour day-of-month month day-of-week), such as \"0 1 * * *\" for 01:00 every day; CloudNativePG's six-field form with seconds is not accepted";

/// Backup schedule, retention, WAL archiving bound, Azure destination and restore drills for the
/// databases that reference this policy through `AppDatabase.spec.backup.policyRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "homelab.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bp",
    category = "homelab",
    doc = "Backup schedule, retention, WAL archiving bound and restore drills for PostgreSQL databases.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the policy is valid and applied"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the policy is or is not ready"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Base backup schedule (cron, UTC)"
    ),
    printcolumn(
        name = "Retention",
        type_ = "string",
        json_path = ".spec.retention",
        description = "How long backups are kept"
    ),
    printcolumn(
        name = "Databases",
        type_ = "integer",
        json_path = ".status.databases",
        description = "Databases using this policy"
    ),
    printcolumn(
        name = "Last Drill",
        type_ = "string",
        json_path = ".status.lastDrillOutcome",
        description = "Outcome of the most recent restore drill"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// When base backups run: a standard five-field cron expression (minute hour day-of-month
    /// month day-of-week), evaluated in UTC. The default, `0 1 * * *`, is daily at 01:00 UTC.
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": CRON_RULE, "message": CRON_MESSAGE}
    ]))]
    pub schedule: String,

    /// How long backups are kept, as Barman Cloud's recovery window: a number followed by `d`
    /// (days), `w` (weeks) or `m` (months). Older base backups and the WAL they need are deleted.
    #[serde(default = "default_retention")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}[dwm]$"))]
    pub retention: String,

    /// Upper bound on the age of the newest archived WAL segment, which bounds how much data a
    /// restore can lose (the RPO). Becomes PostgreSQL's `archive_timeout`. Seconds (`s`) or
    /// minutes (`m`), between 30s and 60m.
    #[serde(default = "default_wal_archive_timeout")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}(s|m)$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[1-9][0-9]{0,3}(s|m)$') && (self.endsWith('m') ? int(self.substring(0, size(self)-1)) <= 60 : (int(self.substring(0, size(self)-1)) >= 30 && int(self.substring(0, size(self)-1)) <= 3600))",
         "message": "walArchiveTimeout must be between 30s and 60m, in seconds (such as 90s) or minutes (such as 5m)"}
    ]))]
    pub wal_archive_timeout: String,

    /// Compression of archived WAL segments.
    #[serde(default)]
    pub wal_compression: WalCompression,

    /// Where backups are stored.
    pub storage: BackupStorage,

    /// Stop taking scheduled base backups (WAL archiving continues). Existing backups are kept.
    #[serde(default)]
    pub suspend: bool,

    /// Automated restore drills: restore the latest backup into a throw-away cluster on a
    /// schedule, and report how long it took and how much data it recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSpec>,
}

fn default_schedule() -> String {
    "0 1 * * *".to_string()
}

fn default_retention() -> String {
    "7d".to_string()
}

fn default_wal_archive_timeout() -> String {
    "5m".to_string()
}

/// Compression algorithm for archived WAL segments.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WalCompression {
    /// No compression.
    None,
    /// gzip.
    #[default]
    Gzip,
    /// bzip2.
    Bzip2,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
    /// xz.
    Xz,
}

/// Backup destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorage {
    /// Azure Blob Storage.
    pub azure: AzureBlobStorage,
}

/// An Azure Blob Storage account that receives base backups and WAL archives, one container per
/// database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureBlobStorage {
    /// Name of the storage account (3–24 lowercase letters and digits).
    #[schemars(pattern(r"^[a-z0-9]{3,24}$"))]
    pub storage_account: String,

    /// Name of the Blob container for each database; `{app}` is replaced by the database's app
    /// name. The result must be a valid container name (3–63 lowercase letters, digits and
    /// single hyphens).
    #[serde(default = "default_container_template")]
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9{}-]+$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.contains('{app}')", "message": "containerTemplate must contain {app}, so that every database gets its own container"},
        {"rule": "self.replace('{app}', 'a').matches('^[a-z0-9]([a-z0-9]|-[a-z0-9])*$')",
         "message": "containerTemplate must give a valid Blob container name once {app} is replaced: lowercase letters, digits and single hyphens, starting and ending with a letter or digit, and no braces other than {app}"},
        {"rule": "size(self) + 35 * ((size(self) - size(self.replace('{app}', ''))) / 5) <= 63",
         "message": "containerTemplate is too long: with {app} replaced by the longest app name (40 characters) the container name must stay within Azure's 63 characters, so a template with one {app} has at most 28 characters"}
    ]))]
    pub container_template: String,

    /// Blob service endpoint, for sovereign clouds and emulators. Defaults to
    /// `https://{storageAccount}.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/]+(/[^\s]*)?$"))]
    pub endpoint: Option<String>,

    /// A Secret in each database's namespace holding the CA bundle (PEM) that signed the Blob
    /// endpoint's certificate, for storage behind a private CA (a private endpoint behind a
    /// TLS-inspecting proxy, Azure Stack Hub, an emulator). The Barman Cloud Plugin gives it to
    /// barman-cloud as `endpointCA`. Unset, the system's trusted roots are used.
    #[serde(
        rename = "endpointCA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<EndpointCa>,

    /// How backups authenticate to the storage account.
    #[serde(default)]
    pub credentials: AzureCredentials,
}

impl AzureBlobStorage {
    /// The Blob service URL: `endpoint`, or `https://{storageAccount}.blob.core.windows.net`,
    /// without a trailing slash.
    pub fn service_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", self.storage_account))
            .trim_end_matches('/')
            .to_string()
    }
}

/// A key of a Secret that holds a PEM CA bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCa {
    /// The Secret's name, in the database's namespace.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The key holding the bundle.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

fn default_container_template() -> String {
    crate::naming::DEFAULT_CONTAINER_TEMPLATE.to_string()
}

/// How the Barman Cloud Plugin authenticates to Azure Blob Storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'InheritFromAzureAD' || has(self.clientId)",
     "message": "credentials.mode InheritFromAzureAD needs credentials.clientId: the client ID of the Entra identity federated with the database pods' ServiceAccounts (Azure workload identity); outside Azure without workload identity, use mode SasToken"},
    {"rule": "self.mode == 'InheritFromAzureAD' || !has(self.clientId)",
     "message": "credentials.clientId is used only with mode InheritFromAzureAD; remove it, or set the mode"}
]))]
pub struct AzureCredentials {
    /// `SasToken`: the operator mints a SAS token scoped to the database's container, keeps it
    /// in Key Vault and rotates it before it expires. `InheritFromAzureAD`: the backup sidecar
    /// authenticates with Azure workload identity as `clientId`, and no token exists.
    #[serde(default)]
    pub mode: CredentialsMode,

    /// With `InheritFromAzureAD`: the client ID of the Entra identity (a user-assigned managed
    /// identity or an app registration) that holds Storage Blob Data Contributor on the storage
    /// account and has a federated credential for each database's ServiceAccount
    /// (`system:serviceaccount:{namespace}:{app}-db-cnpg-v1`). The database's ServiceAccount is
    /// annotated with it and its pods are labelled for the workload identity webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub client_id: Option<String>,

    /// Lifetime of each minted SAS token (hours `h` or days `d`, 1h to 365d). Tokens are rotated
    /// when less than a third of their lifetime remains.
    #[serde(default = "default_sas_validity")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}(h|d)$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[1-9][0-9]{0,3}(h|d)$') && int(self.substring(0, size(self)-1)) <= (self.endsWith('h') ? 8760 : 365)",
         "message": "sasValidity must be between 1h and 365d, in hours (such as 12h) or days (such as 30d)"}
    ]))]
    pub sas_validity: String,
}

impl Default for AzureCredentials {
    fn default() -> Self {
        Self {
            mode: CredentialsMode::default(),
            client_id: None,
            sas_validity: default_sas_validity(),
        }
    }
}

fn default_sas_validity() -> String {
    "30d".to_string()
}

/// Credentials mode for backups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CredentialsMode {
    /// An operator-minted, container-scoped SAS token kept in Key Vault and synced by ESO.
    #[default]
    SasToken,
    /// Azure workload identity of the database pods, as `clientId`.
    InheritFromAzureAD,
}

/// Restore drill settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillSpec {
    /// When drills run: a five-field cron expression in UTC, e.g. `0 4 * * 0` (Sundays 04:00).
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": CRON_RULE, "message": CRON_MESSAGE}
    ]))]
    pub schedule: String,

    /// How long a drill may take before it is declared failed (minutes `m` or hours `h`).
    #[serde(default = "default_drill_timeout")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}(m|h)$"))]
    pub timeout: String,

    /// How many past drills to keep in status, per database.
    #[serde(default = "default_drill_history")]
    #[schemars(range(min = 1, max = 20))]
    pub history: i32,

    /// How often a small workload writes a heartbeat (the current time) into each database using
    /// this policy, with the database's own credentials, into the table `homelab.heartbeat`. A
    /// drill measures its RPO as its start minus the newest heartbeat the restored database holds,
    /// and fails when there is none. Seconds (`s`) or minutes (`m`), or `off` for no heartbeat
    /// (then a drill checks only that the restored database has tables, and RPO is not measured).
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(length(max = 8), pattern(r"^(off|[1-9][0-9]{0,3}(s|m))$"))]
    pub heartbeat_interval: String,

    /// The recovery objectives a drill is held to. A drill that restored the data but took longer
    /// than `rto`, or whose newest heartbeat is older than `rpo`, ends `ObjectiveMissed`.
    #[serde(default)]
    pub objectives: RecoveryObjectives,
}

/// Recovery point and recovery time objectives (seconds `s`, minutes `m` or hours `h`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryObjectives {
    /// At most this much recent data may be missing from a restore.
    #[serde(default = "default_rpo")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}(s|m|h)$"))]
    pub rpo: String,
    /// A restore must answer queries within this long.
    #[serde(default = "default_rto")]
    #[schemars(length(max = 8), pattern(r"^[1-9][0-9]{0,3}(s|m|h)$"))]
    pub rto: String,
}

impl Default for RecoveryObjectives {
    fn default() -> Self {
        Self {
            rpo: default_rpo(),
            rto: default_rto(),
        }
    }
}

fn default_heartbeat_interval() -> String {
    "30s".to_string()
}

fn default_rpo() -> String {
    "5m".to_string()
}

fn default_rto() -> String {
    "10m".to_string()
}

fn default_drill_timeout() -> String {
    "30m".to_string()
}

fn default_drill_history() -> i32 {
    5
}

/// Observed state of a `BackupPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Applied` and `DrillSucceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Number of databases that reference this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<i32>,

    /// The schedule in CloudNativePG's six-field form (seconds first), as applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnpg_schedule: Option<String>,

    /// Outcome of the most recent drill across all databases: `Succeeded`, `ObjectiveMissed`,
    /// `Failed` or `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_outcome: Option<String>,

    /// Recent restore drills, newest first, at most `drill.history` per database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<DrillRecord>,
}

/// One restore drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    /// The `AppDatabase` whose backups were restored.
    pub database: String,
    /// Name of the throw-away cluster.
    pub cluster: String,
    /// When the drill started.
    pub started: Time,
    /// When the drill finished, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// `Running`, `Succeeded`, `ObjectiveMissed` or `Failed`.
    pub outcome: DrillOutcome,
    /// Seconds from the drill's start until the verification in the restored database answered:
    /// the recovery time achieved (RTO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<i64>,
    /// Seconds between the drill's start and the newest heartbeat found in the restored
    /// database: the data a real restore at that moment would have lost (RPO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss_seconds: Option<i64>,
    /// The newest heartbeat found in the restored database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_heartbeat: Option<Time>,
    /// Tables found in the restored database, outside PostgreSQL's own schemas and the heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i64>,
    /// Why a drill failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a restore drill.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillOutcome {
    Running,
    /// The data was restored and verified, within the objectives.
    Succeeded,
    /// The data was restored and verified, but the RPO or RTO was beyond its objective.
    ObjectiveMissed,
    Failed,
}
