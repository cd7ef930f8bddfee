//! The CloudNativePG `Cluster`: instances, image, storage, PostgreSQL parameters, bootstrap
//! (`initdb`, or recovery through the Barman Cloud Plugin) and WAL archiving through the plugin.

use std::collections::BTreeMap;

use homelab_api::app_database::{RestoreSpec, StorageSpec};
use homelab_api::common::DeletionPolicy;
use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::{Map, Value, json};

use super::{Context, plugin_parameters};
use crate::error::RenderError;
use crate::facts::{AppDatabaseFacts, RestoreSourceFacts};
use crate::kinds::CLUSTER;
use crate::meta::{self, Ownership};
use crate::units;

/// Name of the `externalClusters` entry a recovery reads from.
pub(crate) const RECOVERY_SOURCE: &str = "origin";

pub(super) fn cluster(
    ctx: &Context,
    facts: &AppDatabaseFacts,
) -> Result<DynamicObject, RenderError> {
    let spec = &ctx.database.spec;
    let mut body = Map::new();
    body.insert("instances".into(), spec.instances.into());
    body.insert(
        "imageName".into(),
        image_name(ctx, facts.running_image.as_deref()).into(),
    );
    if !spec.pod_disruption_budget {
        body.insert("enablePDB".into(), false.into());
    }
    body.insert("storage".into(), storage(&spec.storage));
    if let Some(wal) = &spec.wal_storage {
        body.insert("walStorage".into(), storage(wal));
    }
    if let Some(resources) = &spec.resources {
        body.insert("resources".into(), to_value(resources, &ctx.owner.name)?);
    }

    let mut parameters: BTreeMap<String, String> = spec.postgres.parameters.clone();
    if let Some(policy) = &facts.policy {
        let timeout =
            units::archive_timeout(&policy.spec.wal_archive_timeout).map_err(|reason| {
                RenderError::InvalidDuration {
                    field: format!("BackupPolicy {}: spec.walArchiveTimeout", policy.name),
                    value: policy.spec.wal_archive_timeout.clone(),
                    reason,
                }
            })?;
        parameters.insert("archive_timeout".into(), timeout);
    }
    if !parameters.is_empty() {
        body.insert("postgresql".into(), json!({ "parameters": parameters }));
    }

    let credentials = json!({ "name": naming::credentials_secret(&ctx.app) });
    match &spec.restore {
        None => {
            body.insert(
                "bootstrap".into(),
                json!({ "initdb": {
                    "database": facts.database_names(ctx.database).database,
                    "owner": facts.database_names(ctx.database).owner,
                    "secret": credentials,
                }}),
            );
        }
        Some(restore) => {
            let (object_store, server_name) = restore_source(ctx, restore, facts)?;
            // Recovery restores the source's databases and roles as they were; the app must
            // connect to the ones holding its data, so these default to the source's.
            let names = facts.database_names(ctx.database);
            let mut recovery = json!({
                "source": RECOVERY_SOURCE,
                "database": names.database,
                "owner": names.owner,
                "secret": credentials,
            });
            if let Some(target) = &restore.target_time {
                recovery["recoveryTarget"] = json!({ "targetTime": target });
            }
            body.insert("bootstrap".into(), json!({ "recovery": recovery }));
            body.insert(
                "externalClusters".into(),
                json!([external_cluster(&object_store, &server_name)]),
            );
        }
    }

    // The sidecar that archives (own policy) or reads the archive (a named archive's policy)
    // authenticates as the policy says.
    let reading_policy = match &facts.restore_source {
        Some(RestoreSourceFacts::Archive { policy, .. }) => Some(&policy.spec),
        _ => None,
    };
    if let Some(policy) = facts.policy.as_ref().map(|p| &p.spec).or(reading_policy) {
        super::insert_workload_identity(&mut body, policy);
    }

    if facts.policy.is_some() {
        body.insert(
            "plugins".into(),
            json!([{
                "name": naming::BARMAN_CLOUD_PLUGIN,
                "isWALArchiver": true,
                "parameters": plugin_parameters(
                    &naming::backup_object_store(&ctx.app),
                    &facts.server_name,
                ),
            }]),
        );
    }

    let metadata = meta::child_meta(
        &ctx.owner,
        naming::cluster(&ctx.app),
        ctx.labels(naming::COMPONENT_DATABASE),
        Ownership::DataBearing {
            owned: ctx.deletion_policy == DeletionPolicy::Delete,
        },
    );
    Ok(meta::dynamic(&CLUSTER, metadata, json!({ "spec": body })))
}

/// `postgres.image`; else the image the data was written with (`running`) while its major
/// version is still the one asked for; else the configured repository's
/// `{major}-{flavor}` image. A changed `postgres.version` moves to the new major's default image,
/// which CloudNativePG performs as a major upgrade.
pub(crate) fn image_name(ctx: &Context, running: Option<&str>) -> String {
    let postgres = &ctx.database.spec.postgres;
    if let Some(image) = &postgres.image {
        return image.clone();
    }
    if let Some(running) = running {
        match image_major_version(running) {
            Some(major) if major != postgres.version => {}
            // Same major, or a tag that does not tell: keep what the data was written with.
            _ => return running.to_string(),
        }
    }
    format!(
        "{}:{}-{}",
        ctx.config.postgres_image_repository, postgres.version, ctx.config.postgres_image_flavor
    )
}

/// The PostgreSQL major version an image's tag starts with (`17` in `…/postgresql:17.6-system-trixie`
/// or `…:17`), if the tag tells.
pub(crate) fn image_major_version(image: &str) -> Option<i32> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let (_, tag) = without_digest.rsplit_once(':')?;
    if tag.contains('/') {
        return None; // a registry port, not a tag
    }
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub(crate) fn storage(storage: &StorageSpec) -> Value {
    let mut value = json!({ "size": storage.size });
    if let Some(class) = &storage.storage_class {
        value["storageClass"] = class.clone().into();
    }
    value
}

/// An `externalClusters` entry that reads an archive through the Barman Cloud Plugin.
pub(crate) fn external_cluster(object_store: &str, server_name: &str) -> Value {
    json!({
        "name": RECOVERY_SOURCE,
        "plugin": {
            "name": naming::BARMAN_CLOUD_PLUGIN,
            "parameters": plugin_parameters(object_store, server_name),
        },
    })
}

fn restore_source(
    ctx: &Context,
    restore: &RestoreSpec,
    facts: &AppDatabaseFacts,
) -> Result<(String, String), RenderError> {
    match (&facts.restore_source, &restore.from.archive) {
        (Some(RestoreSourceFacts::ObjectStore {
            name, server_name, ..
        }), None) => {
            Ok((name.clone(), server_name.clone()))
        }
        (Some(RestoreSourceFacts::Archive { .. }), Some(archive)) => Ok((
            naming::restore_object_store(&ctx.app),
            archive.server_name.clone(),
        )),
        (None, _) => Err(RenderError::InvalidRestore {
            field: "spec.restore.from".into(),
            reason: "the source of the restore is not known yet; name an AppDatabase that has a BackupPolicy, or an archive with its BackupPolicy".into(),
        }),
        (Some(_), _) => Err(RenderError::InvalidRestore {
            field: "spec.restore.from".into(),
            reason: "the observed restore source does not match spec.restore.from (appDatabase or archive)".into(),
        }),
    }
}

pub(crate) fn to_value<T: serde::Serialize>(value: &T, name: &str) -> Result<Value, RenderError> {
    serde_json::to_value(value).map_err(|e| RenderError::Serialize {
        kind: "Cluster",
        name: name.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::{AppDatabaseFacts, PolicyFacts};
    use homelab_api::app_database::DatabaseNames;

    fn render(yaml: &str, facts: &AppDatabaseFacts) -> Result<DynamicObject, RenderError> {
        let db = database(yaml);
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        cluster(&ctx, facts)
    }

    fn with_policy(db_yaml: &str, policy: PolicyFacts) -> AppDatabaseFacts {
        let db = database(db_yaml);
        AppDatabaseFacts::new(&db, Some(policy))
    }

    const LINKDING: &str = "metadata: {name: linkding}\nspec: {}";

    #[test]
    fn initdb_bootstrap_with_the_credentials_secret() -> Result<(), RenderError> {
        let facts = AppDatabaseFacts::new(&database(LINKDING), None);
        let c = render(LINKDING, &facts)?;
        assert_eq!(c.metadata.name.as_deref(), Some("linkding-db-cnpg-v1"));
        let s = spec(&c);
        assert_eq!(s["instances"], 1);
        assert_eq!(
            s["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:17-standard-trixie"
        );
        assert_eq!(s["storage"], json!({"size": "15Gi"}));
        assert_eq!(
            s["bootstrap"]["initdb"],
            json!({"database": "linkding", "owner": "linkding", "secret": {"name": "linkding-db-credentials"}})
        );
        assert!(s.get("plugins").is_none(), "no archiving without a policy");
        assert!(s.get("postgresql").is_none());
        Ok(())
    }

    #[test]
    fn a_policy_adds_the_wal_archiver_and_archive_timeout() -> Result<(), RenderError> {
        let facts = with_policy(LINKDING, daily());
        let s = spec(&render(LINKDING, &facts)?).clone();
        assert_eq!(s["postgresql"]["parameters"]["archive_timeout"], "5min");
        assert_eq!(
            s["plugins"],
            json!([{
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": true,
                "parameters": {"barmanObjectName": "linkding-db-backup", "serverName": "linkding-db-cnpg-v1"}
            }])
        );
        Ok(())
    }

    #[test]
    fn seconds_stay_seconds_and_user_parameters_are_kept() -> Result<(), RenderError> {
        let yaml = "metadata: {name: x}\nspec: {postgres: {version: 16, parameters: {max_connections: '200'}}}";
        let facts = with_policy(
            yaml,
            policy("walArchiveTimeout: 30s\nstorage: {azure: {storageAccount: acct}}"),
        );
        let s = spec(&render(yaml, &facts)?).clone();
        assert_eq!(
            s["postgresql"]["parameters"],
            json!({"archive_timeout": "30s", "max_connections": "200"})
        );
        assert_eq!(
            s["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:16-standard-trixie"
        );
        Ok(())
    }

    #[test]
    fn an_existing_cluster_keeps_its_image_until_the_major_version_changes()
    -> Result<(), RenderError> {
        // A cluster created with the legacy `system` image: switching it to `standard` is not
        // supported upstream, so the running image stays.
        let mut facts = AppDatabaseFacts::new(&database(LINKDING), None);
        facts.running_image = Some("ghcr.io/cloudnative-pg/postgresql:17".into());
        assert_eq!(
            spec(&render(LINKDING, &facts)?)["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:17"
        );
        facts.running_image = Some("ghcr.io/cloudnative-pg/postgresql:17.6-system-bookworm".into());
        assert_eq!(
            spec(&render(LINKDING, &facts)?)["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:17.6-system-bookworm"
        );
        // Raising the version is a major upgrade to the new major's default image.
        let upgraded = "metadata: {name: linkding}\nspec: {postgres: {version: 18}}";
        assert_eq!(
            spec(&render(upgraded, &facts)?)["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:18-standard-trixie"
        );
        // An image named in the spec always wins.
        let pinned =
            "metadata: {name: linkding}\nspec: {postgres: {image: 'registry.example/pg:17.7'}}";
        assert_eq!(
            spec(&render(pinned, &facts)?)["imageName"],
            "registry.example/pg:17.7"
        );
        Ok(())
    }

    #[test]
    fn workload_identity_labels_the_pods_and_annotates_the_service_account()
    -> Result<(), RenderError> {
        let facts = with_policy(
            LINKDING,
            policy(
                "storage: {azure: {storageAccount: acct, credentials: {mode: InheritFromAzureAD, clientId: 11111111-1111-1111-1111-111111111111}}}",
            ),
        );
        let s = spec(&render(LINKDING, &facts)?).clone();
        assert_eq!(
            s["serviceAccountTemplate"],
            json!({"metadata": {"annotations": {"azure.workload.identity/client-id": "11111111-1111-1111-1111-111111111111"}}})
        );
        assert_eq!(
            s["inheritedMetadata"],
            json!({"labels": {"azure.workload.identity/use": "true"}})
        );
        // SAS tokens need neither.
        let s = spec(&render(LINKDING, &with_policy(LINKDING, daily()))?).clone();
        assert!(s.get("serviceAccountTemplate").is_none(), "{s}");
        assert!(s.get("inheritedMetadata").is_none(), "{s}");
        Ok(())
    }

    #[test]
    fn image_major_versions_are_read_from_tags() {
        for (image, major) in [
            ("ghcr.io/cloudnative-pg/postgresql:17", Some(17)),
            (
                "ghcr.io/cloudnative-pg/postgresql:16.9-minimal-trixie",
                Some(16),
            ),
            ("localhost:5000/pg:18-standard-trixie@sha256:abc", Some(18)),
            ("localhost:5000/pg", None),
            ("registry.example/pg:latest", None),
            ("registry.example/pg@sha256:abc", None),
        ] {
            assert_eq!(image_major_version(image), major, "{image}");
        }
    }

    #[test]
    fn invalid_archive_timeout_names_the_policy_field() {
        let facts = with_policy(
            LINKDING,
            policy("walArchiveTimeout: 2h\nstorage: {azure: {storageAccount: acct}}"),
        );
        let err = render(LINKDING, &facts).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("BackupPolicy daily: spec.walArchiveTimeout")),
            "{err:?}"
        );
    }

    #[test]
    fn image_storage_and_resources_come_from_the_spec() -> Result<(), RenderError> {
        let yaml = r#"
metadata: {name: big}
spec:
  instances: 3
  postgres: {image: "registry.example/pg:17.6@sha256:abc"}
  storage: {size: 50Gi, storageClass: fast}
  walStorage: {size: 10Gi}
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 2Gi}}
"#;
        let facts = AppDatabaseFacts::new(&database(yaml), None);
        let s = spec(&render(yaml, &facts)?).clone();
        assert_eq!(s["instances"], 3);
        assert_eq!(s["imageName"], "registry.example/pg:17.6@sha256:abc");
        assert_eq!(
            s["storage"],
            json!({"size": "50Gi", "storageClass": "fast"})
        );
        assert_eq!(s["walStorage"], json!({"size": "10Gi"}));
        assert_eq!(s["resources"]["limits"]["memory"], "2Gi");
        Ok(())
    }

    #[test]
    fn retained_clusters_have_no_owner_reference() -> Result<(), RenderError> {
        let facts = AppDatabaseFacts::new(&database(LINKDING), None);
        let c = render(LINKDING, &facts)?;
        assert!(c.metadata.owner_references.is_none());
        assert_eq!(
            c.metadata.annotations.unwrap_or_default()[naming::ANNOTATION_OWNER],
            "AppDatabase/linkding"
        );
        let deleting = "metadata: {name: linkding}\nspec: {deletionPolicy: Delete}";
        let c = render(deleting, &facts)?;
        assert_eq!(c.metadata.owner_references.map(|r| r.len()), Some(1));
        Ok(())
    }

    #[test]
    fn restore_from_another_database_uses_its_object_store() -> Result<(), RenderError> {
        let yaml = r#"
metadata: {name: linkding2}
spec:
  restore:
    from: {appDatabase: linkding}
    targetTime: "2026-11-20T13:45:00Z"
"#;
        let mut facts = with_policy(yaml, daily());
        facts.server_name = "linkding2-db-cnpg-v1".into();
        facts.restore_source = Some(RestoreSourceFacts::ObjectStore {
            name: "linkding-db-backup".into(),
            server_name: "linkding-db-cnpg-v1".into(),
            names: DatabaseNames {
                database: "bookmarks".into(),
                owner: "ld".into(),
            },
        });
        let s = spec(&render(yaml, &facts)?).clone();
        assert_eq!(s["bootstrap"]["recovery"]["source"], "origin");
        // The restored data lives in the source's database, owned by the source's role: the new
        // app connects to those, not to empty ones named after itself.
        assert_eq!(s["bootstrap"]["recovery"]["database"], "bookmarks");
        assert_eq!(s["bootstrap"]["recovery"]["owner"], "ld");
        let objects =
            crate::render_app_database(&database(yaml), &facts, &OperatorConfig::default())?;
        let secret = objects
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some("linkding2-db-credentials"))
            .map(|o| o.data["spec"]["target"]["template"]["data"]["username"].clone());
        assert_eq!(secret, Some(json!("ld")));
        // Names the restoring AppDatabase sets itself win.
        let named = "metadata: {name: linkding2}\nspec: {database: {name: other}, restore: {from: {appDatabase: linkding}}}";
        let named = spec(&render(named, &facts)?).clone();
        assert_eq!(named["bootstrap"]["recovery"]["database"], "other");
        assert_eq!(named["bootstrap"]["recovery"]["owner"], "ld");
        assert_eq!(
            s["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"],
            "2026-11-20T13:45:00Z"
        );
        assert_eq!(
            s["bootstrap"]["recovery"]["secret"]["name"],
            "linkding2-db-credentials"
        );
        assert!(s["bootstrap"].get("initdb").is_none());
        assert_eq!(
            s["externalClusters"],
            json!([{"name": "origin", "plugin": {
                "name": "barman-cloud.cloudnative-pg.io",
                "parameters": {"barmanObjectName": "linkding-db-backup", "serverName": "linkding-db-cnpg-v1"}
            }}])
        );
        assert_eq!(
            s["plugins"][0]["parameters"]["serverName"],
            "linkding2-db-cnpg-v1"
        );
        Ok(())
    }

    #[test]
    fn pod_disruption_budgets_stay_unless_turned_off() -> Result<(), RenderError> {
        let facts = AppDatabaseFacts::new(&database(LINKDING), None);
        let kept = spec(&render(LINKDING, &facts)?).clone();
        assert!(kept.get("enablePDB").is_none(), "{kept}");
        let off = "metadata: {name: linkding}\nspec: {podDisruptionBudget: false}";
        let off = spec(&render(off, &facts)?).clone();
        assert_eq!(off["enablePDB"], false);
        Ok(())
    }

    #[test]
    fn restore_without_known_source_is_an_error() {
        let yaml = "metadata: {name: b}\nspec: {restore: {from: {appDatabase: a}}}";
        let facts = AppDatabaseFacts::new(&database(yaml), None);
        assert!(matches!(
            render(yaml, &facts),
            Err(RenderError::InvalidRestore { .. })
        ));
    }

    #[test]
    fn invalid_app_names_are_refused() {
        let yaml = "metadata: {name: Not_Valid}\nspec: {}";
        let facts = AppDatabaseFacts::new(&database(yaml), None);
        let err = render(yaml, &facts).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("metadata.name")));
    }
}
