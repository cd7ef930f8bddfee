//! The `ScheduledBackup`: base backups through the Barman Cloud Plugin on the policy's schedule.

use std::collections::BTreeMap;

use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::json;

use super::Context;
use crate::cron;
use crate::error::RenderError;
use crate::facts::PolicyFacts;
use crate::kinds::SCHEDULED_BACKUP;
use crate::meta::{self, Ownership};

pub(super) fn scheduled_backup(
    ctx: &Context,
    policy: &PolicyFacts,
) -> Result<DynamicObject, RenderError> {
    let schedule = cron::to_cnpg_schedule(&policy.spec.schedule).map_err(|e| {
        RenderError::InvalidSchedule {
            field: format!("BackupPolicy {}: spec.schedule", policy.name),
            value: policy.spec.schedule.clone(),
            reason: e.to_string(),
        }
    })?;
    let mut metadata = meta::child_meta(
        &ctx.owner,
        naming::scheduled_backup(&ctx.app),
        ctx.labels(naming::COMPONENT_BACKUP),
        Ownership::Owned,
    );
    metadata.annotations = Some(BTreeMap::from([(
        naming::ANNOTATION_BACKUP_POLICY.to_string(),
        policy.name.clone(),
    )]));
    let body = json!({
        "spec": {
            "schedule": schedule,
            "suspend": policy.spec.suspend,
            "immediate": true,
            "backupOwnerReference": "self",
            "cluster": { "name": naming::cluster(&ctx.app) },
            "method": "plugin",
            "pluginConfiguration": { "name": naming::BARMAN_CLOUD_PLUGIN },
        }
    });
    Ok(meta::dynamic(&SCHEDULED_BACKUP, metadata, body))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::OperatorConfig;

    fn render(policy: &PolicyFacts) -> Result<DynamicObject, RenderError> {
        let db = database("metadata: {name: linkding}\nspec: {}");
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        scheduled_backup(&ctx, policy)
    }

    #[test]
    fn plugin_method_six_field_schedule() -> Result<(), RenderError> {
        let backup = render(&daily())?;
        assert_eq!(backup.metadata.name.as_deref(), Some("linkding-db-backup"));
        assert_eq!(
            spec(&backup),
            &json!({
                "schedule": "0 0 1 * * *",
                "suspend": false,
                "immediate": true,
                "backupOwnerReference": "self",
                "cluster": {"name": "linkding-db-cnpg-v1"},
                "method": "plugin",
                "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}
            })
        );
        assert_eq!(backup.metadata.owner_references.map(|r| r.len()), Some(1));
        Ok(())
    }

    #[test]
    fn suspension_follows_the_policy() -> Result<(), RenderError> {
        let policy = policy(
            "suspend: true\nschedule: '30 2 * * 0'\nstorage: {azure: {storageAccount: a1b}}",
        );
        let backup = render(&policy)?;
        assert_eq!(spec(&backup)["suspend"], true);
        assert_eq!(spec(&backup)["schedule"], "0 30 2 * * 0");
        Ok(())
    }

    #[test]
    fn invalid_schedules_name_the_policy_field() {
        let policy = policy("schedule: '0 0 1 * * *'\nstorage: {azure: {storageAccount: a1b}}");
        let err = render(&policy)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BackupPolicy daily: spec.schedule"), "{err}");
        assert!(err.contains("without seconds"), "{err}");
    }
}
