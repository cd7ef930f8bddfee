//! The bookmarks database: the operator (in the cluster, from
//! `deploy/base`) writes the CloudNativePG Cluster, the ObjectStore and the ExternalSecrets; real
//! CloudNativePG starts PostgreSQL, real External Secrets Operator brings the password the
//! operator generated in Key Vault, and the real Barman Cloud Plugin archives WAL and base
//! backups into Azurite with the SAS token the operator minted. No status here is written by a
//! test.

use anyhow::{Result, ensure};
use homelab_e2e::{
    POSTGRESQL_IMAGE, apply, blob_names, data_plane, get, patience, run_with_wiring_of,
    wait_condition, wait_for, wait_for_blob,
};

#[tokio::test]
async fn bookmarks_database_runs_backs_up_and_serves_the_app() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace("bookmarks").await?;
    let ca = plane.azure_ca_pem()?;
    let manifests = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{ name: blob-ca }}
stringData:
  ca.crt: {ca:?}
---
apiVersion: homelab.io/v1alpha1
kind: BackupPolicy
metadata: {{ name: daily }}
spec:
  schedule: "0 1 * * *"
  retention: 7d
  walArchiveTimeout: 1m
  storage:
    azure:
      storageAccount: devstoreaccount1
      containerTemplate: "{{app}}-db-clean"
      endpointCA: {{ name: blob-ca }}
      credentials: {{ mode: SasToken, sasValidity: 7d }}
---
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: bookmarks }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  backup: {{ policyRef: {{ name: daily }} }}
---
apiVersion: homelab.io/v1alpha1
kind: HomelabApp
metadata: {{ name: bookmarks }}
spec:
  image: {psql}
  command: ["sleep", "infinity"]
  port: 9090
  database:
    ref: {{ name: bookmarks }}
    env:
      - {{ name: LD_DB_HOST, field: host }}
      - {{ name: LD_DB_PORT, field: port }}
      - {{ name: LD_DB_DATABASE, field: database }}
      - {{ name: LD_DB_USER, field: username }}
      - {{ name: LD_DB_PASSWORD, field: password }}
"#,
        psql = homelab_e2e::PSQL_IMAGE,
    );
    apply(plane, &namespace, &manifests).await?;

    let database = wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "bookmarks",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    // Ready comes from CloudNativePG's own status of the cluster it runs.
    let cluster = get(plane, &namespace, "cluster", "bookmarks-db-cnpg-v1").await?;
    ensure!(
        cluster["status"]["phase"] == "Cluster in healthy state",
        "CloudNativePG reports {}",
        cluster["status"]["phase"]
    );
    ensure!(cluster["status"]["readyInstances"] == 1);
    // The password CloudNativePG bootstrapped with came from Key Vault through ESO.
    let credentials = get(
        plane,
        &namespace,
        "externalsecret",
        "bookmarks-db-credentials",
    )
    .await?;
    ensure!(
        homelab_e2e::condition(&credentials, "Ready").is_some_and(|c| c["status"] == "True"),
        "the credentials ExternalSecret is not synced: {credentials:#}"
    );

    // A client with exactly the wiring of the app's Deployment writes and reads rows.
    let output = run_with_wiring_of(
        plane,
        &namespace,
        "bookmarks",
        "write-bookmarks",
        r#"export PGPASSWORD="$LD_DB_PASSWORD"
psql -v ON_ERROR_STOP=1 -h "$LD_DB_HOST" -p "$LD_DB_PORT" -U "$LD_DB_USER" -d "$LD_DB_DATABASE" -At <<'SQL'
create table bookmarks (id serial primary key, url text not null);
insert into bookmarks (url) values ('https://bookmarks.link'), ('https://cloudnative-pg.io'), ('https://external-secrets.io');
select 'rows=' || count(*) from bookmarks;
select 'user=' || current_user;
SQL"#,
    )
    .await?;
    ensure!(output.contains("rows=3"), "the client printed:\n{output}");
    ensure!(
        output.contains("user=bookmarks"),
        "the client printed:\n{output}"
    );

    // WAL and the immediate base backup reach the container, under the cluster's server name.
    let server = database["status"]["backup"]["serverName"]
        .as_str()
        .unwrap_or("bookmarks-db-cnpg-v1")
        .to_owned();
    let names = wait_for_blob(
        plane,
        "bookmarks-db-clean",
        "a WAL segment",
        patience(),
        |n| n.starts_with(&format!("{server}/wals/")),
    )
    .await?;
    wait_for_blob(
        plane,
        "bookmarks-db-clean",
        "a base backup",
        patience(),
        |n| n.starts_with(&format!("{server}/base/")),
    )
    .await?;
    ensure!(!names.is_empty());

    // The status names a segment the plugin uploaded, read from the container.
    let (segment, archived_at) = wait_for(
        "status.backup.lastArchivedWalSegment",
        patience(),
        || async {
            let db = get(plane, &namespace, "appdatabase", "bookmarks").await?;
            let backup = &db["status"]["backup"];
            Ok(backup["lastArchivedWalSegment"]
                .as_str()
                .zip(backup["lastArchivedWal"].as_str())
                .map(|(s, t)| (s.to_string(), t.to_string())))
        },
    )
    .await?;
    let names = blob_names(plane, "bookmarks-db-clean").await?;
    ensure!(
        names.iter().any(|n| n.starts_with(&format!(
            "{server}/wals/{}/{segment}",
            &segment[..16.min(segment.len())]
        ))),
        "status.backup.lastArchivedWalSegment {segment} is not in the container: {names:?}"
    );
    ensure!(
        archived_at.len() == 20 && archived_at.ends_with('Z'),
        "status.backup.lastArchivedWal {archived_at:?} is not a time"
    );

    // The same database in another namespace, under a policy with the same storage account and
    // container template, would archive into this database's history, which barman refuses
    // ("Expected empty archive"): the operator says so and creates nothing for it.
    let twin = plane.env().namespace("bookmarks").await?;
    apply(
        plane,
        &twin,
        &format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: BackupPolicy
metadata: {{ name: daily }}
spec:
  schedule: "0 1 * * *"
  storage:
    azure:
      storageAccount: devstoreaccount1
      containerTemplate: "{{app}}-db-clean"
      credentials: {{ mode: SasToken }}
---
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: bookmarks }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  backup: {{ policyRef: {{ name: daily }} }}
"#
        ),
    )
    .await?;
    let holder = format!("AppDatabase {namespace}/bookmarks");
    let ready = homelab_e2e::wait_for(
        "the second database refused with BackupDestinationInUse",
        patience(),
        || {
            let twin = &twin;
            async move {
                let object = get(plane, twin, "appdatabase", "bookmarks").await?;
                let ready = homelab_e2e::condition(&object, "Ready")
                    .cloned()
                    .unwrap_or_default();
                anyhow::ensure!(
                    ready["reason"] == "BackupDestinationInUse",
                    "its Ready condition: {ready}"
                );
                Ok(Some(ready))
            }
        },
    )
    .await?;
    let message = ready["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains(&holder) && message.contains("bookmarks-db-clean"),
        "the message does not name the container and {holder}: {message}"
    );
    ensure!(
        !homelab_e2e::exists(plane, &twin, "cluster", "bookmarks-db-cnpg-v1").await?,
        "a cluster was created for the database whose backup destination is taken"
    );
    // The first one is untouched.
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "bookmarks",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    Ok(())
}
