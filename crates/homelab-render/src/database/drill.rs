//! A restore drill: a throw-away single-instance cluster recovered from a database's latest
//! backup, owned by the BackupPolicy that schedules drills. It reads the source's archive and
//! never writes to one.

use homelab_api::{AppDatabase, BackupPolicy, naming};
use kube::api::DynamicObject;
use serde_json::{Map, json};

use super::Context;
use super::cluster::{RECOVERY_SOURCE, external_cluster, image_name, storage};
use super::heartbeat::{connection_env, interval, pod_spec};
use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::facts::DrillFacts;
use crate::kinds::{CLUSTER, JOB, OwnerKind};
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
            // The source's own credentials, which the verification Job logs in with.
            "secret": { "name": naming::credentials_secret(&ctx.app) },
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

/// The verification script: waits for the restored server, then reports, one `key=value` line
/// each, into the container's termination message: `tables` (user tables outside PostgreSQL's
/// schemas and `homelab`), `heartbeat` (the newest heartbeat, seconds since the epoch, empty when
/// the table has no row), `query` (the first column of the user's query) or `*_error` with
/// PostgreSQL's message. It exits 0 whenever it could report; what the report means is the
/// operator's to judge.
const VERIFY_SCRIPT: &str = r#"out=/dev/termination-log
one_line() { tr '\n' ' ' | cut -c1-600; }
i=0
until pg_isready -q || [ $i -ge 60 ]; do i=$((i+1)); sleep 2; done
if r=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'homelab')" 2>&1); then
  echo "tables=$r" >>$out
else
  echo "error=$(echo "$r" | one_line)" >>$out
  exit 0
fi
if [ "$HEARTBEAT" = on ]; then
  if r=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "SELECT coalesce(extract(epoch FROM max(beat))::bigint::text, '') FROM homelab.heartbeat" 2>&1); then
    echo "heartbeat=$r" >>$out
  else
    echo "heartbeat_error=$(echo "$r" | one_line)" >>$out
  fi
fi
if [ -n "$DRILL_QUERY" ]; then
  if r=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$DRILL_QUERY" 2>&1); then
    echo "query=$(echo "$r" | head -n 1 | cut -d '|' -f 1 | one_line)" >>$out
  else
    echo "query_error=$(echo "$r" | one_line)" >>$out
  fi
fi
exit 0
"#;

/// The Job `{drill}-verify` that checks the data restored into `drill_cluster`: it logs into the
/// restored database as the source's owner, with the source's credentials Secret, in read-only
/// transactions, and reports what it found (see [`VerificationReport`]) in its termination
/// message. It runs once (no retries: a second run would only stretch the measured RTO).
pub fn render_drill_verification(
    policy: &BackupPolicy,
    source: &AppDatabase,
    facts: &DrillFacts,
    drill_cluster: &str,
    config: &OperatorConfig,
) -> Result<DynamicObject, RenderError> {
    let ctx = Context::new(source, config)?;
    let owner = Owner::new(OwnerKind::BackupPolicy, &policy.metadata)?;
    let heartbeat = interval(&owner.name, &policy.spec)?.is_some();
    let names = source.published_names();
    let mut env = connection_env(
        &format!("{drill_cluster}-rw"),
        &naming::credentials_secret(&ctx.app),
        &names.database,
        &names.owner,
    );
    env.push(json!({ "name": "PGOPTIONS", "value": "-c default_transaction_read_only=on" }));
    env.push(json!({ "name": "HEARTBEAT", "value": if heartbeat { "on" } else { "off" } }));
    let query = source
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.drill_query.clone())
        .unwrap_or_default();
    env.push(json!({ "name": "DRILL_QUERY", "value": query }));

    let mut labels = meta::labels(&ctx.app, &owner.name, naming::COMPONENT_RESTORE_DRILL);
    labels.insert(naming::LABEL_DRILL.to_string(), ctx.owner.name.clone());
    let metadata = meta::child_meta(
        &owner,
        naming::drill_verification(drill_cluster),
        labels.clone(),
        Ownership::Owned,
    );
    let body = json!({ "spec": {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": { "labels": labels },
            "spec": pod_spec(
                image_name(&ctx, facts.source_image.as_deref()),
                VERIFY_SCRIPT.to_string(),
                env,
                "Never",
            ),
        },
    }});
    Ok(meta::dynamic(&JOB, metadata, body))
}

/// What the verification Job found in a restored database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerificationReport {
    /// User tables in the restored database.
    pub tables: Option<i64>,
    /// The newest heartbeat, when the table had one.
    pub heartbeat: Option<jiff::Timestamp>,
    /// Whether the heartbeat was looked for.
    pub heartbeat_checked: bool,
    /// The first column of the user's query (`t` for true).
    pub query: Option<String>,
    /// Errors PostgreSQL gave, by step (`connect`, `heartbeat`, `query`).
    pub errors: Vec<(String, String)>,
}

impl VerificationReport {
    /// Reads the Job's termination message; lines it does not know are ignored.
    pub fn parse(message: &str) -> Self {
        let mut report = Self::default();
        for line in message.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "tables" => report.tables = value.parse().ok(),
                "heartbeat" => {
                    report.heartbeat_checked = true;
                    report.heartbeat = value
                        .parse::<i64>()
                        .ok()
                        .and_then(|s| jiff::Timestamp::from_second(s).ok());
                }
                "query" => report.query = Some(value.to_string()),
                "error" => report.errors.push(("connect".into(), value.to_string())),
                "heartbeat_error" => {
                    report.heartbeat_checked = true;
                    report.errors.push(("heartbeat".into(), value.to_string()));
                }
                "query_error" => report.errors.push(("query".into(), value.to_string())),
                _ => {}
            }
        }
        report
    }
}

#[cfg(test)]
mod verification_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_report_is_read_line_by_line() {
        let report = VerificationReport::parse("tables=3\nheartbeat=1764633600\nquery=t\nnoise\n");
        assert_eq!(report.tables, Some(3));
        assert_eq!(
            report.heartbeat,
            Some("2025-12-02T00:00:00Z".parse().unwrap())
        );
        assert!(report.heartbeat_checked);
        assert_eq!(report.query.as_deref(), Some("t"));
        assert!(report.errors.is_empty());
    }

    #[test]
    fn an_empty_heartbeat_and_errors_are_kept_apart() {
        let report = VerificationReport::parse(
            "tables=0\nheartbeat=\nquery_error=ERROR:  relation \"x\" does not exist\n",
        );
        assert_eq!(report.tables, Some(0));
        assert!(report.heartbeat_checked);
        assert_eq!(report.heartbeat, None);
        assert_eq!(
            report.errors,
            vec![(
                "query".to_string(),
                "ERROR:  relation \"x\" does not exist".to_string()
            )]
        );
    }

    #[test]
    fn a_connection_error_is_reported_as_such() {
        let report = VerificationReport::parse(
            "error=psql: error: connection to server failed: FATAL:  password authentication failed",
        );
        assert_eq!(report.tables, None);
        assert_eq!(report.errors[0].0, "connect");
    }
}
