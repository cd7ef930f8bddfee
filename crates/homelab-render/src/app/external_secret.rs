//! `ExternalSecret`s in the app's namespace: `{name}-secrets` with its Key Vault secrets, and
//! `{name}-db` with its database connection. Key Vault is the source of truth; nothing is copied
//! between namespaces.

use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{BoundDatabase, Context};
use crate::database::external_secret_spec;
use crate::kinds::EXTERNAL_SECRET;
use crate::meta::{self, Ownership};

pub(super) fn app_secrets(ctx: &Context) -> DynamicObject {
    let name = naming::app_secrets(&ctx.name);
    let data: Vec<(&str, &str)> = ctx
        .spec
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.key_vault_secret.as_str()))
        .collect();
    let store = ctx
        .spec
        .secret_store_ref
        .clone()
        .unwrap_or_else(|| ctx.config.default_secret_store.clone());
    let body = json!({ "spec": external_secret_spec(&store, &name, Value::Null, data) });
    let metadata = meta::child_meta(&ctx.owner, name, ctx.labels(), Ownership::Owned);
    meta::dynamic(&EXTERNAL_SECRET, metadata, body)
}

/// `username`, `password` and `uri`, read with the database's store. The password is
/// percent-encoded in the URI (`urlquery` writes spaces as `+`, which a URI's user info would
/// keep literally, hence the replacement).
pub(super) fn database_secret(ctx: &Context, db: &BoundDatabase) -> DynamicObject {
    let name = naming::app_database_secret(&ctx.name);
    let facts = db.facts;
    let uri = format!(
        "postgresql://{}:{{{{ .password | urlquery | replace \"+\" \"%20\" }}}}@{}:{}/{}",
        facts.owner,
        db.host,
        naming::POSTGRES_PORT,
        facts.database
    );
    let template = json!({
        "type": "Opaque",
        "engineVersion": "v2",
        "data": {
            "username": facts.owner,
            "password": "{{ .password }}",
            "uri": uri,
        },
    });
    let body = json!({
        "spec": external_secret_spec(
            &facts.secret_store,
            &name,
            template,
            vec![("password", facts.key_vault_secret.as_str())],
        )
    });
    let metadata = meta::child_meta(&ctx.owner, name, ctx.labels(), Ownership::Owned);
    meta::dynamic(&EXTERNAL_SECRET, metadata, body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Keys the `{name}-db` Secret provides.
    fn database_keys() -> BTreeSet<&'static str> {
        BTreeSet::from(["username", "password", "uri"])
    }

    use super::super::test_support::{app, facts, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use homelab_api::homelab_app::ConnectionField;

    #[test]
    fn app_secrets_map_env_names_to_key_vault_secrets() -> Result<(), crate::RenderError> {
        let app = app(
            "metadata: {name: n8n}\nspec: {image: x, secrets: [{name: N8N_ENCRYPTION_KEY, keyVaultSecret: n8n-encryption-key}], secretStoreRef: {name: other}}",
        );
        let facts = crate::facts::HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let es = app_secrets(&ctx);
        assert_eq!(es.metadata.name.as_deref(), Some("n8n-secrets"));
        assert_eq!(
            spec(&es)["data"],
            json!([{"secretKey": "N8N_ENCRYPTION_KEY", "remoteRef": {"key": "n8n-encryption-key"}}])
        );
        assert_eq!(
            spec(&es)["secretStoreRef"],
            json!({"name": "other", "kind": "ClusterSecretStore"})
        );
        assert!(spec(&es)["target"].get("template").is_none());
        Ok(())
    }

    #[test]
    fn database_secret_builds_the_uri() -> Result<(), crate::RenderError> {
        let app = app(
            "metadata: {name: n8n}\nspec: {image: x, database: {ref: {name: n8n}, usePooler: true, env: [{name: DB_URL, field: uri}]}}",
        );
        let facts = facts("n8n", true);
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let Some(db) = &ctx.database else {
            panic!("bound database expected");
        };
        let es = database_secret(&ctx, db);
        assert_eq!(es.metadata.name.as_deref(), Some("n8n-db"));
        let data = &spec(&es)["target"]["template"]["data"];
        assert_eq!(
            data["uri"],
            "postgresql://n8n:{{ .password | urlquery | replace \"+\" \"%20\" }}@n8n-db-pooler.apps.svc.cluster.local:5432/n8n"
        );
        assert_eq!(data["username"], "n8n");
        let keys: BTreeSet<&str> = data
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, database_keys());
        for field in [
            ConnectionField::Username,
            ConnectionField::Password,
            ConnectionField::Uri,
        ] {
            assert!(keys.contains(super::super::deployment::secret_key(field)));
        }
        assert_eq!(spec(&es)["data"][0]["remoteRef"]["key"], "n8n-db-password");
        Ok(())
    }
}
