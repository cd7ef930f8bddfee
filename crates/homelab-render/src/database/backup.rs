//! An on-demand `Backup`, requested through the `homelab.io/backup-now` annotation.

use std::collections::BTreeMap;

use homelab_api::{AppDatabase, naming};
use kube::api::DynamicObject;
use serde_json::json;

use super::Context;
use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::kinds::BACKUP;
use crate::meta::{self, Ownership};

/// The `Backup` `{app}-backup-{token}` of the database's cluster through the Barman Cloud Plugin,
/// owned by the `AppDatabase` and annotated with the token that requested it.
pub fn render_on_demand_backup(
    database: &AppDatabase,
    token: &str,
    config: &OperatorConfig,
) -> Result<DynamicObject, RenderError> {
    let ctx = Context::new(database, config)?;
    let name = naming::on_demand_backup(&ctx.app, token);
    if name.ends_with("-backup-") {
        return Err(RenderError::InvalidName {
            field: format!("metadata.annotations[{}]", naming::ANNOTATION_BACKUP_NOW),
            value: token.to_string(),
            reason: "the token needs at least one letter or digit, e.g. a date such as 2026-11-26"
                .into(),
        });
    }
    let mut metadata = meta::child_meta(
        &ctx.owner,
        name,
        ctx.labels(naming::COMPONENT_BACKUP),
        Ownership::Owned,
    );
    metadata.annotations = Some(BTreeMap::from([(
        naming::ANNOTATION_BACKUP_NOW.to_string(),
        token.to_string(),
    )]));
    let body = json!({
        "spec": {
            "cluster": { "name": naming::cluster(&ctx.app) },
            "method": "plugin",
            "pluginConfiguration": { "name": naming::BARMAN_CLOUD_PLUGIN },
        }
    });
    Ok(meta::dynamic(&BACKUP, metadata, body))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn plugin_backup_named_after_the_token() -> Result<(), RenderError> {
        let db = database("metadata: {name: linkding}\nspec: {}");
        let backup = render_on_demand_backup(&db, "Before-Upgrade", &OperatorConfig::default())?;
        assert_eq!(
            backup.metadata.name.as_deref(),
            Some("linkding-backup-before-upgrade")
        );
        assert_eq!(
            spec(&backup),
            &json!({
                "cluster": {"name": "linkding-db-cnpg-v1"},
                "method": "plugin",
                "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}
            })
        );
        assert_eq!(
            backup.metadata.annotations.unwrap_or_default()[naming::ANNOTATION_BACKUP_NOW],
            "Before-Upgrade"
        );
        Ok(())
    }

    #[test]
    fn tokens_without_letters_or_digits_are_refused() {
        let db = database("metadata: {name: linkding}\nspec: {}");
        assert!(render_on_demand_backup(&db, "!!!", &OperatorConfig::default()).is_err());
    }
}
