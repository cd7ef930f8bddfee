//! What the renderers need to know beyond the custom resource itself: other resources it refers
//! to, and state observed in the cluster. Controllers gather these; the manifest renderer derives
//! them from the other documents.

use homelab_api::app_database::{ArchiveRef, DatabaseNames};
use homelab_api::common::SecretStoreRef;
use homelab_api::{AppDatabase, BackupPolicySpec, naming};

use crate::config::OperatorConfig;

/// A BackupPolicy, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFacts {
    pub name: String,
    pub spec: BackupPolicySpec,
}

/// Facts for rendering an `AppDatabase`.
#[derive(Clone, Debug, PartialEq)]
pub struct AppDatabaseFacts {
    /// The BackupPolicy named by `spec.backup.policyRef`, if any and if it exists. Without it the
    /// database is rendered without backups.
    pub policy: Option<PolicyFacts>,
    /// The server name this incarnation of the database archives under ([`server_name`]); a
    /// restored database must not reuse its source's.
    pub server_name: String,
    /// Where `spec.restore` reads from. Required when `spec.restore` is set.
    pub restore_source: Option<RestoreSourceFacts>,
    /// The operand image the database's data was written with: the image its existing Cluster
    /// runs (CloudNativePG's `status.image`), or, before a restored database's Cluster exists, its source's. Kept
    /// while the major version is unchanged, because changing an existing cluster's image type
    /// or Debian release (and so its collations) is not supported upstream.
    pub running_image: Option<String>,
}

impl AppDatabaseFacts {
    /// Facts for a database that is not restored, in its first incarnation.
    pub fn new(database: &AppDatabase, policy: Option<PolicyFacts>) -> Self {
        Self {
            policy,
            server_name: server_name(database),
            restore_source: None,
            running_image: None,
        }
    }
}

/// The server name a database archives under: the one it reported
/// (`status.backup.serverName`; a database keeps its name for life), else for a restored
/// database `{cluster}-{first 8 characters of its uid}` ([`naming::restored_server_name`]: a
/// new name, so it never writes into the archive it was restored from), else its cluster's
/// name. A restored database read from a file without `metadata.uid` (not yet created) gets
/// `{cluster}-restored`.
pub fn server_name(db: &AppDatabase) -> String {
    if let Some(existing) = db
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.server_name.clone())
    {
        return existing;
    }
    let cluster = naming::cluster(db.app_name());
    if db.spec.restore.is_some() {
        naming::restored_server_name(&cluster, db.metadata.uid.as_deref().unwrap_or_default())
    } else {
        cluster
    }
}

/// The archive a restore reads.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreSourceFacts {
    /// Another database's archive, through its existing `ObjectStore` in the same namespace
    /// (`restore.from.appDatabase`).
    ObjectStore {
        /// The source's `ObjectStore` (`{source-app}-db-backup`).
        name: String,
        /// The server name the source archives under.
        server_name: String,
        /// The database and owner holding the source's data.
        names: DatabaseNames,
    },
    /// An archive named directly (`restore.from.archive`). A read-only `ObjectStore`
    /// `{app}-db-restore` is rendered for it, with the named policy's storage account and
    /// credentials (a SAS token from the Key Vault secret `{app}-db-restore-sas`).
    Archive {
        /// The policy named by `restore.from.archive.policyRef`.
        policy: Box<PolicyFacts>,
        /// The database and owner holding the archive's data.
        names: DatabaseNames,
    },
}

impl RestoreSourceFacts {
    /// The database and owner holding the data restored.
    pub fn names(&self) -> &DatabaseNames {
        match self {
            Self::ObjectStore { names, .. } | Self::Archive { names, .. } => names,
        }
    }

    /// The names of the data in `archive`: those it names, else the defaults of the app its
    /// server name tells, else those of `restoring` (the database restoring it).
    pub fn archive_names(archive: &ArchiveRef, restoring: &AppDatabase) -> DatabaseNames {
        let defaults = naming::app_of_server_name(&archive.server_name)
            .map(DatabaseNames::for_app)
            .unwrap_or_else(|| DatabaseNames::for_app(restoring.app_name()));
        DatabaseNames {
            database: archive.database.name.clone().unwrap_or(defaults.database),
            owner: archive.database.owner.clone().unwrap_or(defaults.owner),
        }
    }
}

impl AppDatabaseFacts {
    /// The database and owner the database's clients use (see [`AppDatabase::database_names`]).
    pub fn database_names(&self, database: &AppDatabase) -> DatabaseNames {
        database.database_names(self.restore_source.as_ref().map(RestoreSourceFacts::names))
    }
}

/// Facts for rendering a `HomelabApp`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HomelabAppFacts {
    /// The `AppDatabase` named by `spec.database.ref`. Required when `spec.database` is set.
    pub database: Option<DatabaseFacts>,
}

/// What an app needs to know about its database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseFacts {
    /// The `AppDatabase`'s name.
    pub name: String,
    /// Its app name, which names the cluster and the pooler.
    pub app: String,
    pub namespace: String,
    /// Database name inside PostgreSQL.
    pub database: String,
    /// Owner role, which the app logs in as.
    pub owner: String,
    /// The Key Vault secret holding the password.
    pub key_vault_secret: String,
    /// The store that reads that Key Vault.
    pub secret_store: SecretStoreRef,
    /// Whether the database has a PgBouncer pooler.
    pub has_pooler: bool,
}

impl DatabaseFacts {
    /// The facts of an `AppDatabase` (which must have a name and namespace).
    pub fn from_app_database(database: &AppDatabase, config: &OperatorConfig) -> Self {
        Self {
            name: database.metadata.name.clone().unwrap_or_default(),
            app: database.app_name().to_string(),
            namespace: database.metadata.namespace.clone().unwrap_or_default(),
            database: database.published_names().database,
            owner: database.published_names().owner,
            key_vault_secret: database.key_vault_password_secret(),
            secret_store: database
                .spec
                .credentials
                .secret_store_ref
                .clone()
                .unwrap_or_else(|| config.default_secret_store.clone()),
            has_pooler: database.spec.pooler.is_some(),
        }
    }
}

/// Facts for rendering a restore drill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillFacts {
    /// Sequence number of the drill, which names its cluster ([`naming::drill_cluster`]).
    pub sequence: u64,
    /// The server name the source database currently archives under.
    pub server_name: String,
    /// The image the source Cluster runs (`status.image`): the drill restores with the binaries
    /// that wrote the data.
    pub source_image: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use homelab_api::common::SecretStoreKind;

    fn database(yaml: &str) -> AppDatabase {
        let mut db: AppDatabase = match serde_norway::from_str(yaml) {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        };
        db.metadata.namespace = Some("apps".into());
        db
    }

    #[test]
    fn database_facts_apply_defaults() {
        let db = database("metadata: {name: my-app}\nspec: {pooler: {}}");
        let facts = DatabaseFacts::from_app_database(&db, &OperatorConfig::default());
        assert_eq!(facts.app, "my-app");
        assert_eq!(facts.database, "my_app");
        assert_eq!(facts.owner, "my_app");
        assert_eq!(facts.key_vault_secret, "my-app-db-password");
        assert_eq!(facts.secret_store.name, "azure-keyvault");
        assert!(facts.has_pooler);
    }

    #[test]
    fn database_facts_follow_overrides() {
        let db = database(
            "metadata: {name: x}\nspec: {app: wiki, credentials: {keyVaultSecret: pw, secretStoreRef: {name: local, kind: SecretStore}}}",
        );
        let facts = DatabaseFacts::from_app_database(&db, &OperatorConfig::default());
        assert_eq!((facts.name.as_str(), facts.app.as_str()), ("x", "wiki"));
        assert_eq!(facts.key_vault_secret, "pw");
        assert_eq!(facts.secret_store.kind, SecretStoreKind::SecretStore);
        assert!(!facts.has_pooler);
    }

    #[test]
    fn first_incarnation_archives_under_the_cluster_name() {
        let db = database("metadata: {name: wiki}\nspec: {}");
        assert_eq!(
            AppDatabaseFacts::new(&db, None).server_name,
            "wiki-db-cnpg-v1"
        );
    }

    #[test]
    fn an_archive_tells_the_names_of_its_data() {
        let restoring: AppDatabase = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "notes-restored"},
            "spec": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let archive = |server: &str, database: serde_json::Value| -> ArchiveRef {
            serde_json::from_value(serde_json::json!({
                "policyRef": {"name": "daily"}, "container": "notes-db-clean",
                "serverName": server, "database": database
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let from_server = RestoreSourceFacts::archive_names(
            &archive("my-notes-db-cnpg-v1-3f2a9c1e", serde_json::json!({})),
            &restoring,
        );
        assert_eq!(from_server, DatabaseNames::for_app("my-notes"));
        assert_eq!(from_server.database, "my_notes");
        let named = RestoreSourceFacts::archive_names(
            &archive("legacy", serde_json::json!({"owner": "app"})),
            &restoring,
        );
        assert_eq!(
            named,
            DatabaseNames {
                database: "notes_restored".into(),
                owner: "app".into()
            }
        );
    }
}
