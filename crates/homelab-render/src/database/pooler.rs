//! The PgBouncer `Pooler` in front of the primary.

use homelab_api::app_database::{PoolMode, PoolerSpec};
use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::json;

use super::Context;
use crate::kinds::POOLER;
use crate::meta::{self, Ownership};

pub(super) fn pooler(ctx: &Context, spec: &PoolerSpec) -> DynamicObject {
    let pool_mode = match spec.pool_mode {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
    };
    let mut pgbouncer = json!({ "poolMode": pool_mode });
    if let Some(max) = spec.max_client_connections {
        pgbouncer["parameters"] = json!({ "max_client_conn": max.to_string() });
    }
    let body = json!({
        "spec": {
            "cluster": { "name": naming::cluster(&ctx.app) },
            "instances": spec.instances,
            "type": "rw",
            "pgbouncer": pgbouncer,
        }
    });
    let metadata = meta::child_meta(
        &ctx.owner,
        naming::pooler(&ctx.app),
        ctx.labels(naming::COMPONENT_POOLER),
        Ownership::Owned,
    );
    meta::dynamic(&POOLER, metadata, body)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{database, spec};
    use super::*;
    use crate::config::OperatorConfig;

    #[test]
    fn read_write_pooler_for_the_cluster() -> Result<(), crate::RenderError> {
        let db = database(
            "metadata: {name: n8n}\nspec: {pooler: {instances: 2, poolMode: transaction, maxClientConnections: 500}}",
        );
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        let Some(pooler_spec) = &db.spec.pooler else {
            panic!("the test database has a pooler");
        };
        let p = pooler(&ctx, pooler_spec);
        assert_eq!(p.metadata.name.as_deref(), Some("n8n-db-pooler"));
        assert_eq!(
            spec(&p),
            &json!({
                "cluster": {"name": "n8n-db-cnpg-v1"},
                "instances": 2,
                "type": "rw",
                "pgbouncer": {"poolMode": "transaction", "parameters": {"max_client_conn": "500"}}
            })
        );
        Ok(())
    }
}
