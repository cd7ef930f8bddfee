//! The heartbeat writer: a one-replica Deployment that writes the current time into the database
//! (`homelab.heartbeat`) every `drill.heartbeatInterval`, as the database owner, with the owner's
//! credentials Secret. Restore drills find the newest heartbeat in the restored database and so
//! measure how much recent data a restore holds (the RPO) from data, not from a status field.

use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::Context;
use super::cluster::image_name;
use crate::error::RenderError;
use crate::facts::{AppDatabaseFacts, PolicyFacts};
use crate::kinds::DEPLOYMENT;
use crate::meta::{self, Ownership};
use crate::units;

/// What the writer runs each time: create the table once, then keep one row per writer.
const HEARTBEAT_SQL: &str = "SET client_min_messages = warning; \
CREATE SCHEMA IF NOT EXISTS homelab; \
CREATE TABLE IF NOT EXISTS homelab.heartbeat (source text PRIMARY KEY, beat timestamptz NOT NULL); \
INSERT INTO homelab.heartbeat VALUES ('heartbeat', now()) \
ON CONFLICT (source) DO UPDATE SET beat = excluded.beat";

/// The heartbeat Deployment `{app}-db-heartbeat`, when the policy runs drills with a heartbeat.
pub(super) fn heartbeat(
    ctx: &Context,
    policy: &PolicyFacts,
    facts: &AppDatabaseFacts,
    database: &str,
    owner: &str,
) -> Result<Option<DynamicObject>, RenderError> {
    let Some(interval) = interval(&policy.name, &policy.spec)? else {
        return Ok(None);
    };
    let name = naming::heartbeat(&ctx.app);
    let labels = ctx.labels(naming::COMPONENT_HEARTBEAT);
    let script = format!(
        "while true; do psql -X -q -v ON_ERROR_STOP=1 -c \"$HEARTBEAT_SQL\" || echo 'heartbeat not written, retrying in {interval}s' >&2; sleep {interval}; done"
    );
    let env = connection_env(
        &naming::read_write_service(&ctx.app),
        &naming::credentials_secret(&ctx.app),
        database,
        owner,
    );
    let mut env = env;
    env.push(json!({ "name": "HEARTBEAT_SQL", "value": HEARTBEAT_SQL }));
    let body = json!({ "spec": {
        "replicas": 1,
        "strategy": { "type": "Recreate" },
        "selector": { "matchLabels": selector(&labels) },
        "template": {
            "metadata": { "labels": labels },
            "spec": pod_spec(
                image_name(ctx, facts.running_image.as_deref()),
                script,
                env,
                "Always",
            ),
        },
    }});
    let metadata = meta::child_meta(&ctx.owner, name, labels.clone(), Ownership::Owned);
    Ok(Some(meta::dynamic(&DEPLOYMENT, metadata, body)))
}

/// The heartbeat interval of policy `name` in seconds; `None` without drills or with `off`.
pub(super) fn interval(
    name: &str,
    policy: &homelab_api::BackupPolicySpec,
) -> Result<Option<u64>, RenderError> {
    let Some(drill) = &policy.drill else {
        return Ok(None);
    };
    units::heartbeat_interval(&drill.heartbeat_interval).map_err(|reason| {
        RenderError::InvalidDuration {
            field: format!("BackupPolicy {name}: spec.drill.heartbeatInterval"),
            value: drill.heartbeat_interval.clone(),
            reason,
        }
    })
}

fn selector(labels: &std::collections::BTreeMap<String, String>) -> Value {
    json!({
        naming::LABEL_NAME: labels.get(naming::LABEL_NAME),
        naming::LABEL_INSTANCE: labels.get(naming::LABEL_INSTANCE),
        naming::LABEL_COMPONENT: labels.get(naming::LABEL_COMPONENT),
    })
}

/// libpq's environment for the owner of `database` on `host`, with the password from the
/// owner's credentials Secret (the operator never reads it).
pub(super) fn connection_env(host: &str, secret: &str, database: &str, owner: &str) -> Vec<Value> {
    vec![
        json!({ "name": "PGHOST", "value": host }),
        json!({ "name": "PGPORT", "value": naming::POSTGRES_PORT.to_string() }),
        json!({ "name": "PGDATABASE", "value": database }),
        json!({ "name": "PGUSER", "value": owner }),
        json!({ "name": "PGPASSWORD", "valueFrom": { "secretKeyRef": { "name": secret, "key": "password" } } }),
        json!({ "name": "PGCONNECT_TIMEOUT", "value": "10" }),
        json!({ "name": "PGAPPNAME", "value": "homelab-operator" }),
    ]
}

/// A pod running `script` with `sh` in the PostgreSQL operand image (which has `psql`), as its
/// `postgres` user, with nothing writable and no privileges.
pub(super) fn pod_spec(image: String, script: String, env: Vec<Value>, restart: &str) -> Value {
    json!({
        "restartPolicy": restart,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 26,
            "runAsGroup": 26,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [{
            "name": "psql",
            "image": image,
            "command": ["sh", "-c", script],
            "env": env,
            "resources": {
                "requests": { "cpu": "10m", "memory": "16Mi" },
                "limits": { "memory": "64Mi" },
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
            },
        }],
    })
}
