//! A restore drill: a throw-away single-instance cluster recovered from a database's latest
//! backup, owned by the BackupPolicy that schedules drills. It reads the source's archive and
//! never writes to one.

use homelab_api::{AppDatabase, BackupPolicy, naming};
use kube::api::DynamicObject;
use serde_json::{Map, json};

use super::Context;
use super::cluster::{RECOVERY_SOURCE, external_cluster, image_name, storage};
use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::facts::DrillFacts;
use crate::kinds::{CLUSTER, OwnerKind};
use crate::meta::{self, Owner, Ownership};

/// The drill cluster `{app}-drill-{n}` for `source`, restored through the source's `ObjectStore`
/// from the archive of `facts.server_name`. It copies the source's PostgreSQL parameters (WAL
/// replay needs settings such as `max_connections` at least as high as the source's), requests
/// little CPU and memory, disables the PodDisruptionBudget and carries the
/// `homelab.io/restore-drill` label with the source's name.
pub fn render_restore_drill(
    policy: &BackupPolicy,
    source: &AppDatabase,
    facts: &DrillFacts,
    config: &OperatorConfig,
) -> Result<DynamicObject, RenderError> {
    let ctx = Context::new(source, config)?;
    let owner = Owner::new(OwnerKind::BackupPolicy, &policy.metadata)?;
    let spec = &source.spec;

    let mut body = Map::new();
    body.insert("instances".into(), 1.into());
    body.insert(
        "imageName".into(),
        image_name(&ctx, facts.source_image.as_deref()).into(),
    );
    body.insert("enablePDB".into(), false.into());
    body.insert("storage".into(), storage(&spec.storage));
    if let Some(wal) = &spec.wal_storage {
        body.insert("walStorage".into(), storage(wal));
    }
    body.insert(
        "resources".into(),
        json!({ "requests": { "cpu": "100m", "memory": "256Mi" } }),
    );
    super::insert_workload_identity(&mut body, &policy.spec);
    if !spec.postgres.parameters.is_empty() {
        body.insert(
            "postgresql".into(),
            json!({ "parameters": spec.postgres.parameters }),
        );
    }
    body.insert(
        "bootstrap".into(),
        json!({ "recovery": {
            "source": RECOVERY_SOURCE,
            "database": source.published_names().database,
            "owner": source.published_names().owner,
        }}),
    );
    body.insert(
        "externalClusters".into(),
        json!([external_cluster(
            &naming::backup_object_store(&ctx.app),
            &facts.server_name
        )]),
    );

    let mut labels = meta::labels(&ctx.app, &owner.name, naming::COMPONENT_RESTORE_DRILL);
    labels.insert(naming::LABEL_DRILL.to_string(), ctx.owner.name.clone());
    let metadata = meta::child_meta(
        &owner,
        naming::drill_cluster(&ctx.app, facts.sequence),
        labels,
        Ownership::Owned,
    );
    Ok(meta::dynamic(&CLUSTER, metadata, json!({ "spec": body })))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{database, spec};
    use super::*;
    use homelab_api::BackupPolicySpec;

    fn policy() -> BackupPolicy {
        let spec: BackupPolicySpec =
            match serde_norway::from_str("storage: {azure: {storageAccount: acct}}") {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
        let mut policy = BackupPolicy::new("daily", spec);
        policy.metadata.namespace = Some("apps".into());
        policy.metadata.uid = Some("00000000-0000-0000-0000-0000000000bb".into());
        policy
    }

    #[test]
    fn drill_restores_latest_without_archiving() -> Result<(), RenderError> {
        let source = database(
            "metadata: {name: linkding}\nspec: {storage: {size: 20Gi}, postgres: {parameters: {max_connections: '300'}}}",
        );
        let facts = DrillFacts {
            sequence: 7,
            server_name: "linkding-db-cnpg-v1".into(),
            source_image: None,
        };
        let c = render_restore_drill(&policy(), &source, &facts, &OperatorConfig::default())?;
        assert_eq!(c.metadata.name.as_deref(), Some("linkding-drill-7"));
        let refs = c.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "BackupPolicy");
        assert_eq!(
            c.metadata.labels.clone().unwrap_or_default()[naming::LABEL_DRILL],
            "linkding"
        );
        let s = spec(&c);
        assert_eq!(s["instances"], 1);
        assert!(s.get("plugins").is_none(), "a drill must never archive WAL");
        assert_eq!(s["storage"]["size"], "20Gi");
        assert_eq!(s["postgresql"]["parameters"]["max_connections"], "300");
        assert_eq!(s["bootstrap"]["recovery"]["source"], "origin");
        assert!(s["bootstrap"]["recovery"].get("recoveryTarget").is_none());
        assert_eq!(
            s["externalClusters"][0]["plugin"]["parameters"],
            json!({"barmanObjectName": "linkding-db-backup", "serverName": "linkding-db-cnpg-v1"})
        );
        Ok(())
    }

    #[test]
    fn a_drill_restores_with_the_source_clusters_image() -> Result<(), RenderError> {
        let source = database("metadata: {name: linkding}\nspec: {}");
        let mut facts = DrillFacts {
            sequence: 1,
            server_name: "linkding-db-cnpg-v1".into(),
            source_image: None,
        };
        let config = OperatorConfig::default();
        let c = render_restore_drill(&policy(), &source, &facts, &config)?;
        assert_eq!(
            spec(&c)["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:17-standard-trixie"
        );
        facts.source_image = Some("ghcr.io/cloudnative-pg/postgresql:17.6-system-bookworm".into());
        let c = render_restore_drill(&policy(), &source, &facts, &config)?;
        assert_eq!(
            spec(&c)["imageName"],
            "ghcr.io/cloudnative-pg/postgresql:17.6-system-bookworm"
        );
        Ok(())
    }
}
