//! **Restore RTO.** A source AppDatabase is filled with about `size` MiB of rows that do not
//! compress (a row is 31 MD5 digests of random values), then backed up on demand, so the archive
//! holds one base backup of that size. Each round restores it twice, one side at a time,
//! alternating which goes first:
//! - the operator: an AppDatabase with `restore.from.appDatabase` naming the source, from apply
//!   until it reports `Ready=True` (CloudNativePG recovered, credentials synced);
//! - the floor: a Cluster written by hand, `bootstrap.recovery` from the source's ObjectStore
//!   through the Barman Cloud Plugin, from apply until CloudNativePG reports it healthy.
//!
//! Neither restored side archives WAL of its own (the AppDatabase has no BackupPolicy), so both
//! do the same work in PostgreSQL. After each side, the row count of the restored table is
//! compared with the source's: a restore without the data is an error, not a figure.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use homelab_testenv::data_plane::DataPlane;
use homelab_testenv::data_plane::components::kubectl;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::{clear, cluster_healthy, clusters, condition_true, databases, until};
use crate::{
    POSTGRESQL_IMAGE, annotate, apply, backup_policy, get, patience, psql_in_pod, wait_for,
};

/// Rows per MiB of the filler table: a row of 992 characters and its headers, seven to a page.
const ROWS_PER_MIB: u64 = 900;
/// The PostgreSQL cluster of an AppDatabase, and its first pod.
fn cluster_of(app: &str) -> String {
    format!("{app}-db-cnpg-v1")
}

/// One round of [`restore_rto`].
#[derive(Clone, Debug)]
pub struct RestoreRound {
    /// `pg_database_size` of the source when it was backed up.
    pub database_bytes: u64,
    pub operator: Duration,
    pub floor: Duration,
}

/// How long a step on `size_mib` of data may take: the usual patience, and a minute more per
/// 32 MiB (filling, backing up and restoring scale with the size).
fn limit(size_mib: u64) -> Duration {
    patience() + Duration::from_secs(60 * size_mib.div_ceil(32))
}

/// The storage a database of `size_mib` gets: room for the data and its WAL.
fn storage(size_mib: u64) -> String {
    format!("{}Gi", 1 + (size_mib * 3).div_ceil(1024))
}

/// The source: created, filled, backed up. Returns its row count, database size, and what a
/// hand-written recovery names: the ObjectStore, the server name, the database and its owner.
struct Source {
    app: String,
    rows: u64,
    bytes: u64,
    object_store: String,
    server_name: String,
    database: String,
    owner: String,
}

async fn prepare_source(
    plane: &DataPlane,
    namespace: &str,
    app: &str,
    size_mib: u64,
) -> Result<Source> {
    let storage = storage(size_mib);
    let manifests = [
        backup_policy(plane, "figures", "1m", "")?,
        format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: {app} }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: {storage} }}
  deletionPolicy: Delete
  backup: {{ policyRef: {{ name: figures }} }}
"#
        ),
    ]
    .join("\n---\n");
    apply(plane, namespace, &manifests).await?;
    let limit = limit(size_mib);
    let db = wait_for(&format!("AppDatabase {app} Ready"), limit, || async {
        let db = get(plane, namespace, "appdatabase", app).await?;
        let ready = db["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(db))
    })
    .await?;
    let database = db["status"]["database"].as_str().unwrap_or(app).to_owned();
    let owner = db["status"]["owner"].as_str().unwrap_or(app).to_owned();
    // The cluster's first, immediate base backup is let finish on the empty database before the
    // rows go in, so that the archive holds the same two backups every run (one of the empty
    // database, the on-demand one of the rows) and the on-demand backup never waits for it.
    let cluster = cluster_of(app);
    wait_for(
        &format!("the first base backup of {app}"),
        limit,
        || async {
            let text = kubectl(
                plane.env(),
                &[
                    "get",
                    "backups.postgresql.cnpg.io",
                    "-n",
                    namespace,
                    "-o",
                    "json",
                ],
            )
            .await?;
            let backups: serde_json::Value = serde_json::from_str(&text)?;
            let completed = backups["items"].as_array().into_iter().flatten().any(|b| {
                b["spec"]["cluster"]["name"] == cluster.as_str()
                    && b["status"]["phase"] == "completed"
            });
            Ok(completed.then_some(()))
        },
    )
    .await?;
    let rows = size_mib * ROWS_PER_MIB;
    let pod = format!("{}-1", cluster_of(app));
    let bytes = psql_in_pod(
        plane,
        namespace,
        &pod,
        &database,
        &format!(
            "create table filler (id bigint primary key, payload text not null); \
             insert into filler select g, (select string_agg(md5(random()::text || g || i), '') \
               from generate_series(1, 31) i) from generate_series(1, {rows}) g; \
             alter table filler owner to {owner}; \
             select pg_database_size(current_database());"
        ),
    )
    .await
    .context("filling the source database")?;
    // psql prints every statement's command tag before the last statement's result.
    let bytes = bytes
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse::<u64>().ok())
        .with_context(|| format!("pg_database_size did not print a number: {bytes}"))?;

    let token = format!("figures-{size_mib}");
    annotate(
        plane,
        namespace,
        "appdatabase",
        app,
        "homelab.io/backup-now",
        &token,
    )
    .await?;
    let db = wait_for(&format!("the on-demand backup of {app}"), limit, || async {
        let db = get(plane, namespace, "appdatabase", app).await?;
        let request = db["status"]["onDemandBackups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["token"] == token.as_str())
            .cloned();
        match request.as_ref().and_then(|r| r["phase"].as_str()) {
            Some("Completed") => Ok(Some(db)),
            Some("Failed") => bail!("the on-demand backup failed: {request:?}"),
            _ => Ok(None),
        }
    })
    .await?;
    let server_name = db["status"]["backup"]["serverName"]
        .as_str()
        .context("the source reports no status.backup.serverName")?
        .to_owned();
    Ok(Source {
        app: app.to_owned(),
        rows,
        bytes,
        object_store: format!("{app}-db-backup"),
        server_name,
        database,
        owner,
    })
}

/// Fails unless the filler table of `cluster`'s first pod holds the source's rows.
async fn check_rows(
    plane: &DataPlane,
    namespace: &str,
    cluster: &str,
    source: &Source,
) -> Result<()> {
    let count = psql_in_pod(
        plane,
        namespace,
        &format!("{cluster}-1"),
        &source.database,
        "select count(*) from filler",
    )
    .await
    .with_context(|| format!("counting the rows restored into {cluster}"))?;
    ensure!(
        count.trim() == source.rows.to_string(),
        "{cluster} restored {} rows of the source's {}",
        count.trim(),
        source.rows
    );
    Ok(())
}

async fn operator_side(
    plane: &DataPlane,
    client: &kube::Client,
    namespace: &str,
    source: &Source,
    app: &str,
    size_mib: u64,
) -> Result<Duration> {
    let api = databases(client, namespace);
    let database: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
        "metadata": {"name": app},
        "spec": {"instances": 1, "postgres": {"image": POSTGRESQL_IMAGE},
                 "storage": {"size": storage(size_mib)}, "deletionPolicy": "Delete",
                 "restore": {"from": {"appDatabase": source.app}}}
    }))?;
    let start = Instant::now();
    api.patch(
        app,
        &PatchParams::apply("figures"),
        &Patch::Apply(&database),
    )
    .await
    .with_context(|| format!("applying AppDatabase {namespace}/{app}"))?;
    let took = until(
        &format!("the restored AppDatabase {namespace}/{app} Ready"),
        start,
        limit(size_mib),
        || {
            let api = api.clone();
            async move {
                api.get(app)
                    .await
                    .is_ok_and(|db| condition_true(&db, "Ready"))
            }
        },
    )
    .await?;
    check_rows(plane, namespace, &cluster_of(app), source).await?;
    let selector = format!("cnpg.io/cluster={}", cluster_of(app));
    clear(client, &api, namespace, app, &selector).await?;
    Ok(took)
}

async fn floor_side(
    plane: &DataPlane,
    client: &kube::Client,
    namespace: &str,
    source: &Source,
    name: &str,
    size_mib: u64,
) -> Result<Duration> {
    let api = clusters(client, namespace);
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "instances": 1,
            "imageName": POSTGRESQL_IMAGE,
            "storage": {"size": storage(size_mib)},
            "bootstrap": {"recovery": {
                "source": "origin", "database": source.database, "owner": source.owner,
            }},
            "externalClusters": [{
                "name": "origin",
                "plugin": {
                    "name": "barman-cloud.cloudnative-pg.io",
                    "parameters": {
                        "barmanObjectName": source.object_store,
                        "serverName": source.server_name,
                    },
                },
            }],
        }
    }))?;
    let start = Instant::now();
    api.patch(
        name,
        &PatchParams::apply("by-hand"),
        &Patch::Apply(&cluster),
    )
    .await
    .with_context(|| format!("applying the Cluster {namespace}/{name} by hand"))?;
    let took = until(
        &format!("the hand-written Cluster {namespace}/{name} healthy"),
        start,
        limit(size_mib),
        || {
            let api = api.clone();
            async move { cluster_healthy(&api, name).await }
        },
    )
    .await?;
    check_rows(plane, namespace, name, source).await?;
    clear(
        client,
        &api,
        namespace,
        name,
        &format!("cnpg.io/cluster={name}"),
    )
    .await?;
    Ok(took)
}

/// `rounds` rounds of restore RTO of a database of about `size_mib` MiB, the operator against
/// the floor. The source is deleted with its archive afterwards.
pub async fn restore_rto(
    plane: &DataPlane,
    size_mib: u64,
    rounds: usize,
) -> Result<Vec<RestoreRound>> {
    ensure!(size_mib > 0, "a database of 0 MiB has nothing to restore");
    let client = plane.env().client().await?;
    let namespace = plane
        .env()
        .namespace(&format!("figures-restore-{size_mib}"))
        .await?;
    let run = super::run_suffix(&namespace);
    let source =
        prepare_source(plane, &namespace, &format!("src{size_mib}{run}"), size_mib).await?;

    let mut results = Vec::new();
    for round in 0..rounds {
        let (mut operator, mut floor) = (None, None);
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let app = format!("op{size_mib}r{round}{run}");
                operator =
                    Some(operator_side(plane, &client, &namespace, &source, &app, size_mib).await?);
            } else {
                let name = format!("hand{size_mib}r{round}{run}");
                floor =
                    Some(floor_side(plane, &client, &namespace, &source, &name, size_mib).await?);
            }
        }
        if let (Some(operator), Some(floor)) = (operator, floor) {
            results.push(RestoreRound {
                database_bytes: source.bytes,
                operator,
                floor,
            });
        }
    }
    let selector = format!("cnpg.io/cluster={}", cluster_of(&source.app));
    clear(
        &client,
        &databases(&client, &namespace),
        &namespace,
        &source.app,
        &selector,
    )
    .await?;
    Ok(results)
}
