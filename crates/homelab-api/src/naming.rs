//! Naming conventions, written down once: every name the operator derives for a child object,
//! Azure resource or label comes from here, together with the length limits that make it valid.
//!
//! An *app name* (`AppDatabase.spec.app`, defaulting to the resource name) is at most
//! [`MAX_APP_NAME_LEN`] characters of lowercase letters, digits and single hyphens, starting with
//! a letter. That keeps every derived name valid: Kubernetes object and Service names (63),
//! CloudNativePG's per-instance names (`{cluster}-{n}`, `{cluster}-{n}-initdb`), and Azure Blob
//! container names (3–63, no consecutive hyphens).

/// Longest app name: `{app}-db-cnpg-v1-1-initdb` and drill clusters must stay within 63.
pub const MAX_APP_NAME_LEN: usize = 40;
/// Longest `HomelabApp` name: Deployment, Service, Ingress and pod names derive from it.
pub const MAX_HOMELAB_APP_NAME_LEN: usize = 50;
/// Pattern of an app name (also valid as a DNS-1035 label and inside a Blob container name).
pub const APP_NAME_PATTERN: &str = r"^[a-z]([a-z0-9]|-[a-z0-9])*$";
/// Pattern of a Key Vault secret name.
pub const KEY_VAULT_SECRET_NAME_PATTERN: &str = r"^[0-9a-zA-Z-]{1,127}$";

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "homelab-operator";
/// Finalizer that lets the operator honour `deletionPolicy` before a resource goes away.
pub const FINALIZER: &str = "homelab.io/cleanup";

/// `app.kubernetes.io/managed-by` value on every child.
pub const MANAGED_BY: &str = "homelab-operator";
/// `app.kubernetes.io/part-of` value on every child.
pub const PART_OF: &str = "homelab";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Marks throw-away clusters created by restore drills.
pub const LABEL_DRILL: &str = "homelab.io/restore-drill";
/// Annotation `{Kind}/{name}` naming the custom resource a child belongs to. Children that must
/// outlive their owner (the database cluster and its ObjectStore under `deletionPolicy: Retain`)
/// carry it instead of an ownerReference, so the garbage collector never deletes them.
pub const ANNOTATION_OWNER: &str = "homelab.io/owner";
/// Prefix of every annotation the operator sets or reads.
pub const ANNOTATION_PREFIX: &str = "homelab.io/";

/// The CloudNativePG label that names the cluster a pod belongs to.
pub const CNPG_CLUSTER_LABEL: &str = "cnpg.io/cluster";
/// The CloudNativePG label that tells instance pods (`instance`) from pooler pods (`pooler`).
pub const CNPG_POD_ROLE_LABEL: &str = "cnpg.io/podRole";
/// The CloudNativePG label that names the `Pooler` a PgBouncer pod belongs to.
pub const CNPG_POOLER_LABEL: &str = "cnpg.io/poolerName";
/// The CloudNativePG label that makes the operator reload a Secret or ConfigMap when it changes.
pub const CNPG_RELOAD_LABEL: &str = "cnpg.io/reload";
/// The label every namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Azure workload identity: the ServiceAccount annotation naming the identity's client ID.
pub const WORKLOAD_IDENTITY_CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// Azure workload identity: the pod label the webhook injects the federated token into.
pub const WORKLOAD_IDENTITY_USE_LABEL: &str = "azure.workload.identity/use";

/// `app.kubernetes.io/component` of the PostgreSQL cluster, its monitoring and credentials.
pub const COMPONENT_DATABASE: &str = "database";
/// `app.kubernetes.io/component` of the PgBouncer pooler.
pub const COMPONENT_POOLER: &str = "pooler";
/// `app.kubernetes.io/component` of the object store, scheduled and on-demand backups.
pub const COMPONENT_BACKUP: &str = "backup";
/// `app.kubernetes.io/component` of restore-drill clusters.
pub const COMPONENT_RESTORE_DRILL: &str = "restore-drill";
/// `app.kubernetes.io/component` of the heartbeat writer that restore drills measure RPO by.
pub const COMPONENT_HEARTBEAT: &str = "heartbeat";
/// `app.kubernetes.io/component` of a `HomelabApp`'s workload and everything around it.
pub const COMPONENT_SERVER: &str = "server";

/// PostgreSQL's port, on the cluster's Services and the pooler's.
pub const POSTGRES_PORT: i32 = 5432;

/// Annotation on an `AppDatabase` that requests an on-demand backup, once per distinct value.
pub const ANNOTATION_BACKUP_NOW: &str = "homelab.io/backup-now";
/// Annotation on an `AppDatabase` that requests an on-demand restore drill, once per value.
pub const ANNOTATION_DRILL_NOW: &str = "homelab.io/drill-now";
/// Annotation naming the BackupPolicy a scheduled backup follows.
pub const ANNOTATION_BACKUP_POLICY: &str = "homelab.io/backup-policy";
/// cert-manager's annotation naming the cluster issuer of an Ingress' certificate.
pub const CERT_MANAGER_CLUSTER_ISSUER: &str = "cert-manager.io/cluster-issuer";

/// The Barman Cloud Plugin's name, as CloudNativePG knows it.
pub const BARMAN_CLOUD_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// `{app}-db-cnpg-v1`: the CloudNativePG `Cluster`.
pub fn cluster(app: &str) -> String {
    format!("{app}-db-cnpg-v1")
}

/// `{app}-db-cnpg-v1-rw`: the read-write Service CloudNativePG creates for the primary.
pub fn read_write_service(app: &str) -> String {
    format!("{}-rw", cluster(app))
}

/// `{app}-db-cnpg-v1-r`: the Service CloudNativePG creates for any instance.
pub fn read_service(app: &str) -> String {
    format!("{}-r", cluster(app))
}

/// `{app}-db-cnpg-v1-ro`: the Service CloudNativePG creates for replicas only.
pub fn read_only_service(app: &str) -> String {
    format!("{}-ro", cluster(app))
}

/// Fully qualified host name of the read-write Service.
pub fn read_write_host(app: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc.cluster.local", read_write_service(app))
}

/// `{app}-db-pooler`: the PgBouncer `Pooler` and its Service.
pub fn pooler(app: &str) -> String {
    format!("{app}-db-pooler")
}

/// Fully qualified host name of the pooler's Service.
pub fn pooler_host(app: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc.cluster.local", pooler(app))
}

/// `{app}-db-credentials`: the `kubernetes.io/basic-auth` Secret ESO writes in the database's
/// namespace (and in each app's namespace that uses the database).
pub fn credentials_secret(app: &str) -> String {
    format!("{app}-db-credentials")
}

/// `{app}-db-backup`: the Barman Cloud `ObjectStore`, the `ScheduledBackup` and the Secret that
/// holds the SAS token for the backup container.
pub fn backup_object_store(app: &str) -> String {
    format!("{app}-db-backup")
}

/// `{app}-db-backup`: the `ScheduledBackup` (named like the `ObjectStore` it writes to).
pub fn scheduled_backup(app: &str) -> String {
    backup_object_store(app)
}

/// `{app}-db-cnpg-v1`: the `PodMonitor` of the PostgreSQL instances, named like the cluster.
pub fn cluster_pod_monitor(app: &str) -> String {
    cluster(app)
}

/// `{app}-db-pooler`: the `PodMonitor` of the PgBouncer pods, named like the pooler.
pub fn pooler_pod_monitor(app: &str) -> String {
    pooler(app)
}

/// `{app}-db-backup-sas`: the Secret (synced by ESO) with the SAS token.
pub fn backup_sas_secret(app: &str) -> String {
    format!("{app}-db-backup-sas")
}

/// `{app}-db-restore`: the read-only Barman Cloud `ObjectStore` through which a database restored
/// from `spec.restore.from.archive` reads that archive.
pub fn restore_object_store(app: &str) -> String {
    format!("{app}-db-restore")
}

/// `{app}-db-restore-sas`: the Secret (synced by ESO) and the Key Vault secret with the SAS token
/// that reaches the archive named in `spec.restore.from.archive`.
pub fn restore_sas_secret(app: &str) -> String {
    format!("{app}-db-restore-sas")
}

/// `{name}`: a `HomelabApp`'s Deployment, Service, Ingress or HTTPRoute and NetworkPolicy.
pub fn app_workload(name: &str) -> String {
    name.to_string()
}

/// `{name}-secrets`: the Secret (synced by ESO) with a `HomelabApp`'s Key Vault secrets.
pub fn app_secrets(name: &str) -> String {
    format!("{name}-secrets")
}

/// `{name}-db`: the Secret (synced by ESO, in the app's namespace) with a `HomelabApp`'s database
/// connection: `username`, `password` and `uri`.
pub fn app_database_secret(name: &str) -> String {
    format!("{name}-db")
}

/// `{name}-{volume}`: the PersistentVolumeClaim of one of a `HomelabApp`'s volumes.
pub fn app_volume_claim(name: &str, volume: &str) -> String {
    format!("{name}-{volume}")
}

/// `{name}-tls`: the default Secret for an Ingress' certificate.
pub fn tls_secret(name: &str) -> String {
    format!("{name}-tls")
}

/// `{app}-db-password`: the default Key Vault secret holding the generated password.
pub fn default_password_key_vault_secret(app: &str) -> String {
    format!("{app}-db-password")
}

/// `{app}-db-backup-sas`: the default Key Vault secret holding the backup container's SAS token.
pub fn default_sas_key_vault_secret(app: &str) -> String {
    format!("{app}-db-backup-sas")
}

/// The default Blob container template; `{app}` is replaced by the app name.
pub const DEFAULT_CONTAINER_TEMPLATE: &str = "{app}-db-clean";

/// Expands a container name template (`{app}` placeholder).
pub fn container(template: &str, app: &str) -> String {
    template.replace("{app}", app)
}

/// Whether a string is a valid Azure Blob container name: 3–63 characters, lowercase letters,
/// digits and hyphens, starting and ending with a letter or digit, no consecutive hyphens.
pub fn is_valid_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
        && !name.contains("--")
}

/// Whether a string is a valid app name (see the module documentation).
pub fn is_valid_app_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_APP_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The app whose cluster wrote under `server_name`, when the name follows the operator's
/// pattern (`{app}-db-cnpg-v{N}`, optionally followed by a restore's suffix).
pub fn app_of_server_name(server_name: &str) -> Option<&str> {
    let (app, rest) = server_name.split_once("-db-cnpg-v")?;
    let version = rest.split('-').next().unwrap_or_default();
    (!app.is_empty() && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
        .then_some(app)
}

/// The archive server name of a database restored from backups: `{cluster}-{first 8 characters
/// of the resource's uid}`, unique per incarnation, so the restored cluster never writes into the
/// archive it was restored from.
pub fn restored_server_name(cluster: &str, uid: &str) -> String {
    let suffix: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if suffix.is_empty() {
        format!("{cluster}-restored")
    } else {
        format!("{cluster}-{suffix}")
    }
}

/// `{app}-drill-{n}`: the throw-away cluster of a restore drill.
pub fn drill_cluster(app: &str, sequence: u64) -> String {
    format!("{app}-drill-{}", sequence % 1_000_000)
}

/// `{drill cluster}-verify`: the Job that checks the data of a restore drill's cluster.
pub fn drill_verification(drill_cluster: &str) -> String {
    format!("{drill_cluster}-verify")
}

/// `{app}-db-heartbeat`: the Deployment writing heartbeats into a database whose policy drills.
pub fn heartbeat(app: &str) -> String {
    format!("{app}-db-heartbeat")
}

/// The schema-qualified table the heartbeat writer keeps its newest heartbeat in.
pub const HEARTBEAT_TABLE: &str = "homelab.heartbeat";

/// `{app}-backup-{token}`: the CloudNativePG `Backup` of an on-demand backup request.
pub fn on_demand_backup(app: &str, token: &str) -> String {
    let token: String = token
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63 - app.len() - "-backup-".len())
        .collect();
    format!("{app}-backup-{}", token.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_app_name_keeps_every_derived_name_within_limits() {
        let app = "a".repeat(MAX_APP_NAME_LEN);
        assert!(is_valid_app_name(&app));
        assert!(format!("{}-1-initdb", cluster(&app)).len() <= 63);
        assert!(read_write_service(&app).len() <= 63);
        assert!(read_only_service(&app).len() <= 63);
        assert!(backup_sas_secret(&app).len() <= 63);
        assert!(credentials_secret(&app).len() <= 63);
        assert!(is_valid_container_name(&container(
            DEFAULT_CONTAINER_TEMPLATE,
            &app
        )));
        assert!(format!("{}-1", drill_cluster(&app, 999_999)).len() <= 63);
        assert!(restored_server_name(&cluster(&app), "0123456789abcdef").len() <= 63);
    }

    #[test]
    fn app_names_follow_the_pattern() {
        for good in ["linkding", "n8n", "a", "my-app2"] {
            assert!(is_valid_app_name(good), "{good}");
        }
        for bad in ["", "1app", "App", "my--app", "app-", "a.b", &"a".repeat(41)] {
            assert!(!is_valid_app_name(bad), "{bad}");
        }
    }

    #[test]
    fn container_names_follow_azure_rules() {
        assert!(is_valid_container_name("linkding-db-clean"));
        assert!(!is_valid_container_name("ab"));
        assert!(!is_valid_container_name("a--b"));
        assert!(!is_valid_container_name("-ab"));
        assert!(!is_valid_container_name("Abc"));
    }

    #[test]
    fn restored_incarnations_archive_under_new_server_names() {
        assert_eq!(
            restored_server_name("x-db-cnpg-v1", "3F2b-9c1d-77aa"),
            "x-db-cnpg-v1-3f2b9c1d"
        );
        assert_eq!(
            restored_server_name("x-db-cnpg-v1", ""),
            "x-db-cnpg-v1-restored"
        );
    }

    #[test]
    fn server_names_tell_their_app() {
        assert_eq!(app_of_server_name("notes-db-cnpg-v1"), Some("notes"));
        assert_eq!(app_of_server_name("my-notes-db-cnpg-v12"), Some("my-notes"));
        assert_eq!(
            app_of_server_name("notes-db-cnpg-v1-3f2a9c1e"),
            Some("notes")
        );
        assert_eq!(app_of_server_name("legacy-pg"), None);
        assert_eq!(app_of_server_name("-db-cnpg-v1"), None);
        assert_eq!(app_of_server_name("notes-db-cnpg-vx"), None);
    }

    #[test]
    fn restored_server_names_differ_from_the_source() {
        let name = restored_server_name("x-db-cnpg-v1", "3F2A9c1e-0000-4000-8000-000000000000");
        assert_eq!(name, "x-db-cnpg-v1-3f2a9c1e");
        assert!(restored_server_name(&cluster(&"a".repeat(40)), "abcdefgh-1").len() <= 63);
    }

    #[test]
    fn on_demand_backup_names_are_valid() {
        let name = on_demand_backup("linkding", "Before-Upgrade_2026!");
        assert_eq!(name, "linkding-backup-before-upgrade2026");
        let long = on_demand_backup(&"a".repeat(40), &"x".repeat(100));
        assert!(long.len() <= 63);
    }
}
