//! `ExternalSecret`s of a database: the owner's credentials and the backup SAS token, both read
//! from Azure Key Vault (the source of truth) through the External Secrets Operator.

use std::collections::BTreeMap;

use homelab_api::app_database::DatabaseNames;
use homelab_api::common::{DeletionPolicy, SecretStoreKind, SecretStoreRef};
use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::Context;
use super::object_store::{SAS_TOKEN_KEY, STORAGE_ACCOUNT_KEY};
use crate::facts::PolicyFacts;
use crate::kinds::EXTERNAL_SECRET;
use crate::meta::{self, Ownership};

/// How often ESO re-reads Key Vault: rotated SAS tokens and passwords arrive within this.
pub(crate) const REFRESH_INTERVAL: &str = "1h";

/// `secretStoreRef` of an ExternalSecret.
pub(crate) fn store_ref(store: &SecretStoreRef) -> Value {
    let kind = match store.kind {
        SecretStoreKind::ClusterSecretStore => "ClusterSecretStore",
        SecretStoreKind::SecretStore => "SecretStore",
    };
    json!({ "name": store.name, "kind": kind })
}

/// An ExternalSecret spec writing the Secret `target` from Key Vault secrets, through `template`.
/// The Secret is owned by the ExternalSecret, and kept if the Key Vault secret disappears.
pub(crate) fn spec(
    store: &SecretStoreRef,
    target: &str,
    template: Value,
    data: Vec<(&str, &str)>,
) -> Value {
    let data: Vec<Value> = data
        .into_iter()
        .map(|(secret_key, remote)| json!({ "secretKey": secret_key, "remoteRef": { "key": remote } }))
        .collect();
    let mut target = json!({
        "name": target,
        "creationPolicy": "Owner",
        "deletionPolicy": "Retain",
    });
    if !template.is_null() {
        target["template"] = template;
    }
    json!({
        "refreshInterval": REFRESH_INTERVAL,
        "secretStoreRef": store_ref(store),
        "target": target,
        "data": data,
    })
}

/// `{app}-db-credentials`: a `kubernetes.io/basic-auth` Secret with the owner's `username` and
/// the `password` from Key Vault. CloudNativePG's instance manager sets the owner's password from
/// it at bootstrap and again whenever the Secret changes, so a password changed in Key Vault
/// reaches PostgreSQL within the refresh interval.
pub(super) fn credentials(ctx: &Context, names: &DatabaseNames) -> DynamicObject {
    let name = naming::credentials_secret(&ctx.app);
    let template = json!({
        "type": "kubernetes.io/basic-auth",
        "engineVersion": "v2",
        "metadata": {
            "labels": BTreeMap::from([(naming::CNPG_RELOAD_LABEL, "true")]),
        },
        "data": {
            "username": names.owner,
            "password": "{{ .password }}",
        },
    });
    let key_vault_secret = ctx.database.key_vault_password_secret();
    let body = json!({
        "spec": spec(
            &ctx.secret_store(),
            &name,
            template,
            vec![("password", key_vault_secret.as_str())],
        )
    });
    let metadata = meta::child_meta(
        &ctx.owner,
        name,
        ctx.labels(naming::COMPONENT_DATABASE),
        // The retained cluster keeps using this Secret: it shares the cluster's fate.
        Ownership::DataBearing {
            owned: ctx.deletion_policy == DeletionPolicy::Delete,
        },
    );
    meta::dynamic(&EXTERNAL_SECRET, metadata, body)
}

/// A Secret with the storage account and a SAS token from Key Vault, in the keys the
/// `ObjectStore` names (the variables barman-cloud reads).
pub(super) fn sas_token(
    ctx: &Context,
    policy: &PolicyFacts,
    name: String,
    key_vault_secret: String,
) -> DynamicObject {
    let template = json!({
        "type": "Opaque",
        "engineVersion": "v2",
        "data": {
            STORAGE_ACCOUNT_KEY: policy.spec.storage.azure.storage_account,
            SAS_TOKEN_KEY: "{{ .sasToken }}",
        },
    });
    let body = json!({
        "spec": spec(
            &ctx.secret_store(),
            &name,
            template,
            vec![("sasToken", key_vault_secret.as_str())],
        )
    });
    let metadata = meta::child_meta(
        &ctx.owner,
        name,
        ctx.labels(naming::COMPONENT_BACKUP),
        // A retained cluster keeps archiving WAL with this token: it shares the cluster's fate.
        Ownership::DataBearing {
            owned: ctx.deletion_policy == DeletionPolicy::Delete,
        },
    );
    meta::dynamic(&EXTERNAL_SECRET, metadata, body)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{self, daily, database};
    use super::*;
    use crate::config::OperatorConfig;

    #[test]
    fn credentials_are_basic_auth_from_key_vault() -> Result<(), crate::RenderError> {
        let db = database("metadata: {name: linkding}\nspec: {}");
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        let es = credentials(&ctx, &db.published_names());
        assert_eq!(es.metadata.name.as_deref(), Some("linkding-db-credentials"));
        let spec = test_support::spec(&es);
        assert_eq!(
            spec["secretStoreRef"],
            json!({"name": "azure-keyvault", "kind": "ClusterSecretStore"})
        );
        assert_eq!(spec["target"]["name"], "linkding-db-credentials");
        assert_eq!(
            spec["target"]["template"]["type"],
            "kubernetes.io/basic-auth"
        );
        assert_eq!(
            spec["target"]["template"]["data"],
            json!({"username": "linkding", "password": "{{ .password }}"})
        );
        assert_eq!(
            spec["data"],
            json!([{"secretKey": "password", "remoteRef": {"key": "linkding-db-password"}}])
        );
        Ok(())
    }

    #[test]
    fn credentials_follow_overrides() -> Result<(), crate::RenderError> {
        let db = database(
            r#"
metadata: {name: wiki}
spec:
  database: {name: wikidb, owner: wikiuser}
  credentials:
    keyVaultSecret: shared-wiki-pw
    secretStoreRef: {name: team-vault, kind: SecretStore}
"#,
        );
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        let es = credentials(&ctx, &db.published_names());
        let spec = test_support::spec(&es);
        assert_eq!(
            spec["secretStoreRef"],
            json!({"name": "team-vault", "kind": "SecretStore"})
        );
        assert_eq!(spec["target"]["template"]["data"]["username"], "wikiuser");
        assert_eq!(spec["data"][0]["remoteRef"]["key"], "shared-wiki-pw");
        Ok(())
    }

    #[test]
    fn sas_token_secret_has_account_and_token() -> Result<(), crate::RenderError> {
        let db = database("metadata: {name: linkding}\nspec: {}");
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        let es = sas_token(
            &ctx,
            &daily(),
            "linkding-db-backup-sas".into(),
            "linkding-db-backup-sas".into(),
        );
        let spec = test_support::spec(&es);
        assert_eq!(
            spec["target"]["template"]["data"],
            json!({"AZURE_STORAGE_ACCOUNT": "homelabbackups", "AZURE_STORAGE_SAS_TOKEN": "{{ .sasToken }}"})
        );
        assert_eq!(
            spec["data"][0]["remoteRef"]["key"],
            "linkding-db-backup-sas"
        );
        Ok(())
    }
}
