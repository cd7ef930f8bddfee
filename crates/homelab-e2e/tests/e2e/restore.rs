//! Backups that restore: an on-demand backup through the `homelab.io/backup-now` annotation,
//! point-in-time restore into a new AppDatabase read through its own wiring, and what deleting
//! does under each `deletionPolicy`.

use anyhow::{Context, Result, bail, ensure};
use homelab_e2e::{
    POSTGRESQL_IMAGE, PSQL_WITH_WIRING, Vault, annotate, apply, backup_policy, blob_names,
    client_app, container_exists, data_plane, delete, exists, get, names, patience,
    run_with_wiring_of, wait_condition, wait_for, wait_for_blob, wait_gone,
};
use serde_json::Value;

fn database(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: {name} }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  backup: {{ policyRef: {{ name: daily }} }}
{extra}
"#
    )
}

/// The line of `output` starting with `key=`, without the key.
fn value_of<'a>(output: &'a str, key: &str) -> Result<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .with_context(|| format!("the client printed no {key}=:\n{output}"))
}

#[tokio::test]
async fn on_demand_backup_point_in_time_restore_and_deletion_policies() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace("notes").await?;
    let manifests = [
        backup_policy(plane, "daily", "30s", "")?,
        database("notes", ""),
        client_app("notes", "notes", ""),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &manifests).await?;
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "notes",
        "Ready",
        "True",
        patience(),
    )
    .await?;

    // An on-demand backup: CloudNativePG's Backup completes and status.backup reports it.
    annotate(
        plane,
        &namespace,
        "appdatabase",
        "notes",
        "homelab.io/backup-now",
        "before-writes",
    )
    .await?;
    let (db, request) = wait_for("the on-demand backup before-writes", patience(), || async {
        let db = get(plane, &namespace, "appdatabase", "notes").await?;
        let Some(request) = db["status"]["onDemandBackups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["token"] == "before-writes")
            .cloned()
        else {
            bail!(
                "status.onDemandBackups has no before-writes yet: {}",
                db["status"]
            );
        };
        match request["phase"].as_str() {
            Some("Completed" | "Failed") => Ok(Some((db, request))),
            _ => bail!("on-demand backup: {request}"),
        }
    })
    .await?;
    ensure!(
        request["phase"] == "Completed",
        "the on-demand backup failed: {request}"
    );
    let backup_name = request["backup"]
        .as_str()
        .context("no Backup name")?
        .to_owned();
    let backup = get(
        plane,
        &namespace,
        "backups.postgresql.cnpg.io",
        &backup_name,
    )
    .await?;
    ensure!(
        backup["status"]["phase"] == "completed",
        "CloudNativePG reports the Backup {backup_name}: {}",
        backup["status"]
    );
    let status = &db["status"]["backup"];
    for field in [
        "lastSuccessfulBackup",
        "firstRecoverabilityPoint",
        "lastArchivedWal",
    ] {
        ensure!(
            status[field].is_string(),
            "status.backup.{field} is not set: {status}"
        );
    }
    let server = status["serverName"]
        .as_str()
        .context("no serverName")?
        .to_owned();
    let backup_id = backup["status"]["backupId"]
        .as_str()
        .context("no backupId")?;
    let blobs = blob_names(plane, "notes-db-clean").await?;
    ensure!(
        blobs
            .iter()
            .any(|n| n.starts_with(&format!("{server}/base/{backup_id}/"))),
        "the on-demand backup {backup_id} is not in notes-db-clean: {blobs:?}"
    );

    // Two writes with a target time between them, taken from PostgreSQL's own clock and rounded
    // up to the second (targetTime has second precision).
    let before = run_with_wiring_of(
        plane,
        &namespace,
        "notes",
        "write-before-target",
        &format!(
            r#"{PSQL_WITH_WIRING} <<'SQL'
create table notes (body text primary key);
insert into notes values ('kept-1'), ('kept-2');
select 'target=' || to_char(date_trunc('second', clock_timestamp() at time zone 'utc') + interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
SQL
sleep 3"#
        ),
    )
    .await?;
    let target = value_of(&before, "target")?.to_owned();
    let after = run_with_wiring_of(
        plane,
        &namespace,
        "notes",
        "write-after-target",
        &format!(
            r#"{PSQL_WITH_WIRING} <<'SQL'
insert into notes values ('after-target');
select 'committed=' || to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
select 'segment=' || pg_walfile_name(pg_current_wal_lsn());
SQL"#
        ),
    )
    .await?;
    let committed = value_of(&after, "committed")?;
    ensure!(
        committed > target.as_str(),
        "the second write ({committed}) is not after the target {target}"
    );
    // The segment holding the second write is archived (walArchiveTimeout switches it), so the
    // restore has WAL past the target.
    let segment = value_of(&after, "segment")?.to_owned();
    let prefix = format!(
        "{server}/wals/{}/{segment}",
        &segment[..16.min(segment.len())]
    );
    wait_for_blob(
        plane,
        "notes-db-clean",
        "the WAL segment of the second write",
        patience(),
        |n| n.starts_with(&prefix),
    )
    .await?;

    // Point-in-time restore into a new AppDatabase, read through its own app's wiring.
    let restored = [
        database(
            "notes-restored",
            &format!(
                "  deletionPolicy: Delete\n  restore:\n    from: {{ appDatabase: notes }}\n    targetTime: \"{target}\"\n"
            ),
        ),
        client_app("notes-restored", "notes-restored", ""),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &restored).await?;
    let restored_db = wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "notes-restored",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    // The restored data is in the source's database, owned by the source's role: the new app is
    // wired to those, though its own name is notes-restored.
    ensure!(
        restored_db["status"]["database"] == "notes" && restored_db["status"]["owner"] == "notes",
        "the restored database does not point its app at the source's database and owner: {}",
        restored_db["status"]
    );
    let rows = run_with_wiring_of(
        plane,
        &namespace,
        "notes-restored",
        "read-restored",
        &format!(
            "{PSQL_WITH_WIRING} -c \"select 'rows=' || string_agg(body, ',' order by body) from notes\""
        ),
    )
    .await?;
    ensure!(
        value_of(&rows, "rows")? == "kept-1,kept-2",
        "the restore to {target} holds other rows than those written before it:\n{rows}"
    );
    let restored_server = restored_db["status"]["backup"]["serverName"]
        .as_str()
        .context("the restored database reports no serverName")?
        .to_owned();
    ensure!(
        restored_server != server,
        "the restored database archives under its source's server name {server}"
    );

    // Delete: the operator removes what it created — cluster (and with it the volumes), the
    // ExternalSecrets, the backup container and the Key Vault secrets.
    let vault = Vault::new(plane)?;
    ensure!(vault.value("notes-restored-db-password").await?.is_some());
    ensure!(container_exists(plane, "notes-restored-db-clean").await?);
    delete(plane, &namespace, "appdatabase", "notes-restored").await?;
    wait_gone(
        plane,
        &namespace,
        "appdatabase",
        "notes-restored",
        patience(),
    )
    .await?;
    wait_gone(
        plane,
        &namespace,
        "cluster",
        "notes-restored-db-cnpg-v1",
        patience(),
    )
    .await?;
    let selector = "cnpg.io/cluster=notes-restored-db-cnpg-v1";
    wait_for(
        "removal of the restored cluster's volumes",
        patience(),
        || async {
            let claims = names(plane, &namespace, "pvc", selector).await?;
            if claims.is_empty() {
                Ok(Some(()))
            } else {
                bail!("still there: {claims:?}")
            }
        },
    )
    .await?;
    for external_secret in [
        "notes-restored-db-credentials",
        "notes-restored-db-backup-sas",
    ] {
        ensure!(
            !exists(plane, &namespace, "externalsecret", external_secret).await?,
            "ExternalSecret {external_secret} is left after Delete"
        );
    }
    ensure!(
        !container_exists(plane, "notes-restored-db-clean").await?,
        "the backup container notes-restored-db-clean is left after Delete"
    );
    ensure!(
        vault.value("notes-restored-db-password").await?.is_none(),
        "the Key Vault password secret is left after Delete"
    );

    // Retain (the default): the running cluster, its volumes, its backups and its data stay.
    delete(plane, &namespace, "appdatabase", "notes").await?;
    wait_gone(plane, &namespace, "appdatabase", "notes", patience()).await?;
    let cluster: Value = get(plane, &namespace, "cluster", "notes-db-cnpg-v1").await?;
    ensure!(
        cluster["metadata"]["deletionTimestamp"].is_null()
            && cluster["status"]["phase"] == "Cluster in healthy state",
        "the retained cluster is not running: {}",
        cluster["status"]
    );
    let claims = names(plane, &namespace, "pvc", "cnpg.io/cluster=notes-db-cnpg-v1").await?;
    ensure!(
        !claims.is_empty(),
        "the retained cluster's volumes are gone"
    );
    let blobs = blob_names(plane, "notes-db-clean").await?;
    ensure!(
        blobs
            .iter()
            .any(|n| n.starts_with(&format!("{server}/base/{backup_id}/"))),
        "the retained backups are gone: {blobs:?}"
    );
    ensure!(vault.value("notes-db-password").await?.is_some());
    let rows = run_with_wiring_of(
        plane,
        &namespace,
        "notes",
        "read-retained",
        &format!(
            "{PSQL_WITH_WIRING} -c \"select 'rows=' || string_agg(body, ',' order by body) from notes\""
        ),
    )
    .await?;
    ensure!(
        value_of(&rows, "rows")? == "after-target,kept-1,kept-2",
        "the retained database lost rows:\n{rows}"
    );
    Ok(())
}
