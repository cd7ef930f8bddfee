//! `AppDatabase` → CloudNativePG `Cluster`, `PodMonitor`s, Barman Cloud `ObjectStore`,
//! `ScheduledBackup`, `ExternalSecret`s and `Pooler`; plus the objects made on request: restore
//! drills (owned by the BackupPolicy) and on-demand `Backup`s.

mod backup;
mod cluster;
mod drill;
mod external_secret;
mod heartbeat;
mod object_store;
mod pod_monitor;
mod pooler;
mod scheduled_backup;

use std::collections::BTreeMap;

use homelab_api::common::{DeletionPolicy, SecretStoreRef};
use homelab_api::{AppDatabase, naming};
use kube::api::DynamicObject;

use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::facts::{AppDatabaseFacts, PolicyFacts, RestoreSourceFacts};
use crate::kinds::OwnerKind;
use crate::meta::{self, Owner, Ownership};

pub use backup::render_on_demand_backup;
pub use drill::{VerificationReport, render_drill_verification, render_restore_drill};
pub(crate) use external_secret::spec as external_secret_spec;

/// Everything one `AppDatabase` needs, sorted by kind and name:
///
/// - `Cluster` `{app}-db-cnpg-v1`, bootstrapped by `initdb` or, with `spec.restore`, by recovery
///   through the Barman Cloud Plugin; archiving WAL through the plugin when a policy applies;
/// - `ExternalSecret` `{app}-db-credentials` → `kubernetes.io/basic-auth` Secret for the owner;
/// - with a policy: `ObjectStore` and `ScheduledBackup` `{app}-db-backup`, and in `SasToken`
///   mode the `ExternalSecret` `{app}-db-backup-sas`;
/// - with `restore.from.archive`: `ObjectStore` `{app}-db-restore` (and its SAS `ExternalSecret`);
/// - with `spec.pooler`: `Pooler` `{app}-db-pooler`;
/// - with `monitoring.podMonitor`: `PodMonitor`s for the instances and the pooler;
/// - when the policy runs drills with a heartbeat: the `Deployment` `{app}-db-heartbeat`.
///
/// Under `deletionPolicy: Retain` the `Cluster`, the `ObjectStore` and the two `ExternalSecret`s
/// the running cluster depends on (its credentials and its backup SAS token) carry no
/// ownerReference, so that deleting the `AppDatabase` neither deletes the data nor stops the
/// retained cluster from archiving.
pub fn render_app_database(
    database: &AppDatabase,
    facts: &AppDatabaseFacts,
    config: &OperatorConfig,
) -> Result<Vec<DynamicObject>, RenderError> {
    let ctx = Context::new(database, config)?;
    let mut objects = vec![
        cluster::cluster(&ctx, facts)?,
        external_secret::credentials(&ctx, &facts.database_names(database)),
    ];
    if database.spec.monitoring.pod_monitor {
        objects.push(pod_monitor::cluster_pod_monitor(&ctx));
    }
    if let Some(pooler) = &database.spec.pooler {
        objects.push(pooler::pooler(&ctx, pooler));
        if database.spec.monitoring.pod_monitor {
            objects.push(pod_monitor::pooler_pod_monitor(&ctx));
        }
    }
    if let Some(policy) = &facts.policy {
        let container = container_name(policy, &ctx.app)?;
        objects.push(object_store::object_store(
            &ctx,
            policy,
            naming::backup_object_store(&ctx.app),
            &container,
            naming::backup_sas_secret(&ctx.app),
            Ownership::DataBearing {
                owned: ctx.deletion_policy == DeletionPolicy::Delete,
            },
        )?);
        objects.push(scheduled_backup::scheduled_backup(&ctx, policy)?);
        let names = facts.database_names(database);
        if let Some(writer) =
            heartbeat::heartbeat(&ctx, policy, facts, &names.database, &names.owner)?
        {
            objects.push(writer);
        }
        if object_store::uses_sas_token(policy) {
            objects.push(external_secret::sas_token(
                &ctx,
                policy,
                naming::backup_sas_secret(&ctx.app),
                naming::default_sas_key_vault_secret(&ctx.app),
            ));
        }
    }
    if let (Some(restore), Some(RestoreSourceFacts::Archive { policy, .. })) =
        (&database.spec.restore, &facts.restore_source)
        && let Some(archive) = &restore.from.archive
    {
        if !naming::is_valid_container_name(&archive.container) {
            return Err(RenderError::InvalidName {
                field: "spec.restore.from.archive.container".into(),
                value: archive.container.clone(),
                reason:
                    "a Blob container name has 3 to 63 lowercase letters, digits and single hyphens"
                        .into(),
            });
        }
        objects.push(object_store::object_store(
            &ctx,
            policy,
            naming::restore_object_store(&ctx.app),
            &archive.container,
            naming::restore_sas_secret(&ctx.app),
            Ownership::Owned,
        )?);
        if object_store::uses_sas_token(policy) {
            objects.push(external_secret::sas_token(
                &ctx,
                policy,
                naming::restore_sas_secret(&ctx.app),
                naming::restore_sas_secret(&ctx.app),
            ));
        }
    }
    meta::sort(&mut objects);
    Ok(objects)
}

/// One `AppDatabase`, prepared for the child renderers.
pub(crate) struct Context<'a> {
    pub database: &'a AppDatabase,
    pub config: &'a OperatorConfig,
    pub owner: Owner,
    pub app: String,
    pub deletion_policy: DeletionPolicy,
}

impl<'a> Context<'a> {
    pub fn new(database: &'a AppDatabase, config: &'a OperatorConfig) -> Result<Self, RenderError> {
        let owner = Owner::new(OwnerKind::AppDatabase, &database.metadata)?;
        let app = database.app_name().to_string();
        if !naming::is_valid_app_name(&app) {
            return Err(RenderError::InvalidName {
                field: if database.spec.app.is_some() {
                    "spec.app".to_string()
                } else {
                    "metadata.name (the default of spec.app)".to_string()
                },
                value: app,
                reason: format!(
                    "an app name has at most {} lowercase letters, digits and single hyphens and starts with a letter; set spec.app to such a name",
                    naming::MAX_APP_NAME_LEN
                ),
            });
        }
        Ok(Self {
            database,
            config,
            owner,
            app,
            deletion_policy: database.spec.deletion_policy,
        })
    }

    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        meta::labels(&self.app, &self.owner.name, component)
    }

    /// The store that reads the credentials' Key Vault.
    pub fn secret_store(&self) -> SecretStoreRef {
        self.database
            .spec
            .credentials
            .secret_store_ref
            .clone()
            .unwrap_or_else(|| self.config.default_secret_store.clone())
    }
}

/// The Blob container of `app` under `policy`.
pub(crate) fn container_name(policy: &PolicyFacts, app: &str) -> Result<String, RenderError> {
    let template = &policy.spec.storage.azure.container_template;
    let container = naming::container(template, app);
    if naming::is_valid_container_name(&container) {
        Ok(container)
    } else {
        Err(RenderError::InvalidContainer {
            field: format!(
                "BackupPolicy {}: spec.storage.azure.containerTemplate",
                policy.name
            ),
            template: template.clone(),
            app: app.to_string(),
            container,
        })
    }
}

/// The plugin reference CloudNativePG uses for the Barman Cloud Plugin, with its parameters.
pub(crate) fn plugin_parameters(object_store: &str, server_name: &str) -> serde_json::Value {
    serde_json::json!({
        "barmanObjectName": object_store,
        "serverName": server_name,
    })
}

/// What a Cluster needs for barman-cloud to authenticate with Azure workload identity
/// (`credentials.mode: InheritFromAzureAD`): its ServiceAccount annotated with the identity's
/// client ID, and its pods labelled so that the workload identity webhook injects the federated
/// token and `AZURE_*` variables into every container, the plugin's sidecar included.
pub(crate) fn insert_workload_identity(
    body: &mut serde_json::Map<String, serde_json::Value>,
    policy: &homelab_api::backup_policy::BackupPolicySpec,
) {
    let credentials = &policy.storage.azure.credentials;
    if credentials.mode != homelab_api::backup_policy::CredentialsMode::InheritFromAzureAD {
        return;
    }
    let Some(client_id) = &credentials.client_id else {
        return;
    };
    body.insert(
        "serviceAccountTemplate".into(),
        serde_json::json!({ "metadata": { "annotations": {
            homelab_api::naming::WORKLOAD_IDENTITY_CLIENT_ID_ANNOTATION: client_id,
        }}}),
    );
    body.insert(
        "inheritedMetadata".into(),
        serde_json::json!({ "labels": {
            homelab_api::naming::WORKLOAD_IDENTITY_USE_LABEL: "true",
        }}),
    );
}

#[cfg(test)]
pub(crate) mod test_support {
    use homelab_api::AppDatabase;
    use homelab_api::backup_policy::BackupPolicySpec;

    use crate::facts::PolicyFacts;

    pub fn database(yaml: &str) -> AppDatabase {
        let mut db: AppDatabase = match serde_norway::from_str(yaml) {
            Ok(db) => db,
            Err(e) => panic!("bad test AppDatabase: {e}"),
        };
        db.metadata.namespace = Some("apps".into());
        db.metadata.uid = Some("00000000-0000-0000-0000-00000000d0b0".into());
        db
    }

    pub fn policy(yaml: &str) -> PolicyFacts {
        let spec: BackupPolicySpec = match serde_norway::from_str(yaml) {
            Ok(spec) => spec,
            Err(e) => panic!("bad test BackupPolicySpec: {e}"),
        };
        PolicyFacts {
            name: "daily".into(),
            spec,
        }
    }

    pub fn daily() -> PolicyFacts {
        policy("storage: {azure: {storageAccount: homelabbackups}}")
    }

    pub fn spec(object: &kube::api::DynamicObject) -> &serde_json::Value {
        &object.data["spec"]
    }
}
