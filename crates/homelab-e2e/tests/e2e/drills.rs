//! Restore drills against real CloudNativePG, proven with data: the heartbeat writer keeps a
//! heartbeat in the source; a drill of the healthy archive finds it and the user's rows in the
//! restored database and reports RPO and RTO measured from them; a drill of a truncated archive
//! (the WAL after the base backup deleted) fails because the rows are not there; one whose
//! archive credentials are broken fails, with a reason a user can act on.

use anyhow::{Context, Result, ensure};
use homelab_e2e::{
    POSTGRESQL_IMAGE, Vault, annotate, apply, backup_policy, blob_names, blob_text, condition,
    data_plane, delete_blob, drill, get, patience, psql_in_pod, wait_condition, wait_for,
    wait_gone,
};

#[tokio::test]
async fn restore_drills_succeed_and_fail_for_real() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace("wiki").await?;
    let manifests = [
        backup_policy(
            plane,
            "drilled",
            "30s",
            "  drill: { schedule: \"0 4 * * 0\", timeout: 4m, history: 5, heartbeatInterval: 10s }",
        )?,
        format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: wiki }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  backup:
    policyRef: {{ name: drilled }}
    drillQuery: "SELECT count(*) = 3 FROM notes"
"#
        ),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &manifests).await?;
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "wiki",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    wait_for("the first base backup of wiki", patience(), || async {
        let db = get(plane, &namespace, "appdatabase", "wiki").await?;
        Ok(db["status"]["backup"]["lastSuccessfulBackup"]
            .is_string()
            .then_some(()))
    })
    .await?;

    // The operator's heartbeat writer, with the database's own credentials.
    wait_for("a heartbeat in wiki", patience(), || async {
        let beat = psql_in_pod(
            plane,
            &namespace,
            "wiki-db-cnpg-v1-1",
            "wiki",
            "select extract(epoch from now() - beat)::int from homelab.heartbeat",
        )
        .await
        .unwrap_or_default();
        Ok(beat.trim().parse::<i64>().ok().filter(|age| *age < 60))
    })
    .await?;
    // The user's rows, written after the base backup: only WAL carries them into a restore.
    psql_in_pod(
        plane,
        &namespace,
        "wiki-db-cnpg-v1-1",
        "wiki",
        "create table notes (id int primary key, body text); \
         insert into notes values (1, 'one'), (2, 'two'), (3, 'three'); \
         alter table notes owner to wiki; select pg_switch_wal();",
    )
    .await?;
    let names = blob_names(plane, "wiki-db-clean").await?;
    let info = names
        .iter()
        .find(|n| n.ends_with("/backup.info"))
        .context(format!("no base backup in wiki-db-clean: {names:?}"))?
        .clone();
    let server = info.split('/').next().unwrap_or_default().to_string();
    // The segment the switch closed, archived (the heartbeat fills later ones).
    let wal_count = |names: &[String]| names.iter().filter(|n| n.contains("/wals/")).count();
    let before = wal_count(&names);
    wait_for("WAL after the rows", patience(), || async {
        let names = blob_names(plane, "wiki-db-clean").await?;
        Ok((wal_count(&names) > before + 1).then_some(()))
    })
    .await?;

    // A drill of a healthy archive: CloudNativePG restores it into a throw-away cluster, and the
    // verification finds the rows and a recent heartbeat in it.
    let (record, policy) = drill(plane, &namespace, "drilled", "wiki", "healthy").await?;
    eprintln!("the drill of the healthy archive: {record}");
    ensure!(
        record["outcome"] == "Succeeded",
        "the drill of a healthy archive did not succeed: {record}"
    );
    ensure!(
        record["recoverySeconds"].as_i64().is_some_and(|s| s > 0),
        "the drill reports no recovery time: {record}"
    );
    ensure!(
        record["newestHeartbeat"].is_string() && record["dataLossSeconds"].as_i64().is_some(),
        "the drill reports no heartbeat, so no RPO: {record}"
    );
    ensure!(
        record["tables"].as_i64().is_some_and(|t| t >= 1),
        "the drill found no tables: {record}"
    );
    ensure!(
        condition(&policy, "DrillSucceeded").is_some_and(|c| c["status"] == "True"),
        "DrillSucceeded is not True: {}",
        policy["status"]
    );
    let cluster = record["cluster"].as_str().context("no drill cluster")?;
    wait_gone(plane, &namespace, "cluster", cluster, patience()).await?;
    wait_gone(
        plane,
        &namespace,
        "job",
        &format!("{cluster}-verify"),
        patience(),
    )
    .await?;

    // A truncated archive: every WAL segment after the base backup's last one is deleted, so a
    // restore ends at the base backup, before the rows.
    let end_wal = blob_text(plane, "wiki-db-clean", &info)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("end_wal=").map(str::to_owned))
        .context(format!("{info} names no end_wal"))?;
    let mut deleted = 0;
    for name in blob_names(plane, "wiki-db-clean").await? {
        let segment = name.rsplit('/').next().unwrap_or_default();
        let segment = segment.split('.').next().unwrap_or_default();
        if name.starts_with(&format!("{server}/wals/"))
            && segment.len() == 24
            && segment > end_wal.as_str()
        {
            delete_blob(plane, "wiki-db-clean", &name).await?;
            deleted += 1;
        }
    }
    ensure!(deleted > 0, "no WAL after {end_wal} to delete");
    let (record, _) = drill(plane, &namespace, "drilled", "wiki", "truncated").await?;
    eprintln!("the drill of the truncated archive: {record}");
    ensure!(
        record["outcome"] == "Failed",
        "a drill of an archive without the rows did not fail: {record}"
    );
    let message = record["message"].as_str().unwrap_or_default();
    // The rows' table is gone: an empty database, the heartbeat's schema aside.
    ensure!(
        message == "the restored database is empty: it has no tables",
        "the failed drill does not say that the data is missing: {message}"
    );
    ensure!(
        record["recoverySeconds"].as_i64().is_some() && record["tables"] == 0,
        "the truncated drill does not report what it found: {record}"
    );

    // Break the archive's credentials as a person could: a new version of the Key Vault secret
    // holding a token whose signature is wrong. The operator leaves a secret it did not write
    // alone, and ESO syncs it into the cluster.
    let vault = Vault::new(plane)?;
    let token = vault
        .value("wiki-db-backup-sas")
        .await?
        .context("the backup SAS is not in Key Vault")?;
    let broken: String = token
        .split('&')
        .map(|part| {
            if part.starts_with("sig=") {
                "sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D".to_owned()
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    ensure!(broken != token, "the SAS token has no signature: {token}");
    vault.set("wiki-db-backup-sas", &broken).await?;
    annotate(
        plane,
        &namespace,
        "externalsecret",
        "wiki-db-backup-sas",
        "force-sync",
        &format!("{:?}", std::time::SystemTime::now()),
    )
    .await?;
    wait_for("ESO syncing the broken token", patience(), || async {
        let secret = get(plane, &namespace, "secret", "wiki-db-backup-sas").await?;
        let synced = secret["data"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.values())
            .filter_map(|v| v.as_str())
            .any(|v| decode(v).is_some_and(|text| text.contains("sig=AAAAAAAA")));
        Ok(synced.then_some(()))
    })
    .await?;

    // The source notices too, once it has WAL to archive.
    psql_in_pod(
        plane,
        &namespace,
        "wiki-db-cnpg-v1-1",
        "postgres",
        "create table after_breakage (id int); select pg_switch_wal();",
    )
    .await?;
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "wiki",
        "BackupReady",
        "False",
        patience(),
    )
    .await?;

    let (record, policy) =
        drill(plane, &namespace, "drilled", "wiki", "broken-credentials").await?;
    ensure!(
        record["outcome"] == "Failed",
        "a drill against an archive it cannot read did not fail: {record}"
    );
    let message = record["message"].as_str().unwrap_or_default();
    eprintln!("the drill against broken credentials failed with: {message}");
    ensure!(
        message.contains("check the SAS token"),
        "the failed drill does not say what to fix: {message}"
    );
    ensure!(
        condition(&policy, "DrillSucceeded").is_some_and(|c| c["status"] == "False"),
        "DrillSucceeded is not False after a failed drill: {}",
        policy["status"]
    );
    Ok(())
}

/// Base64 to text; `None` when it is not base64 of UTF-8.
fn decode(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}
