//! **RPO of drills under a steady write load.** A source AppDatabase whose BackupPolicy switches
//! WAL at least every `walArchiveTimeout`, with the operator's heartbeat writer (every 10 s) and a
//! steady write load beside it (a row every 100 ms, one session, a commit per row). Drills run one
//! after another; each reports the RPO it measured from data (its cut-off minus the newest
//! heartbeat found in the restored database) and its RTO. The bound is `walArchiveTimeout`
//! + 30 s, for every drill.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use homelab_testenv::data_plane::DataPlane;

use super::{clear, databases};
use crate::{POSTGRESQL_IMAGE, apply, backup_policy, drill, get, patience, psql_in_pod, wait_for};

/// The heartbeat interval of the measured databases.
const HEARTBEAT: &str = "10s";

/// One drill of [`drill_rpo`].
#[derive(Clone, Debug)]
pub struct RpoDrill {
    /// `Succeeded`, `ObjectiveMissed` or `Failed`, as the drill recorded it.
    pub outcome: String,
    /// The drill's RPO (`dataLossSeconds`), if it found a heartbeat.
    pub rpo: Option<Duration>,
    /// The drill's RTO (`recoverySeconds`), if it got that far.
    pub rto: Option<Duration>,
    /// The drill's message, for one that did not succeed.
    pub message: String,
}

/// A `walArchiveTimeout` such as `5m` or `30s`, as a duration.
pub fn parse_timeout(value: &str) -> Result<Duration> {
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let amount: u64 = digits
        .parse()
        .with_context(|| format!("{value:?} does not start with a number"))?;
    match unit {
        "s" => Ok(Duration::from_secs(amount)),
        "m" => Ok(Duration::from_secs(amount * 60)),
        _ => anyhow::bail!("{value:?}: use seconds (30s) or minutes (5m)"),
    }
}

/// `drills` drills of a database whose BackupPolicy has `walArchiveTimeout: wal_archive_timeout`,
/// under a steady write load. The database is deleted with its archive afterwards.
pub async fn drill_rpo(
    plane: &DataPlane,
    wal_archive_timeout: &str,
    drills: usize,
) -> Result<Vec<RpoDrill>> {
    let timeout = parse_timeout(wal_archive_timeout)?;
    let client = plane.env().client().await?;
    let namespace = plane
        .env()
        .namespace(&format!("figures-rpo-{wal_archive_timeout}"))
        .await?;
    let app = format!("rpo{wal_archive_timeout}{}", super::run_suffix(&namespace));
    let manifests = [
        backup_policy(
            plane,
            "rpo",
            wal_archive_timeout,
            &format!(
                "  drill: {{ schedule: \"0 4 * * 0\", timeout: 10m, history: {}, heartbeatInterval: {HEARTBEAT} }}",
                drills.max(1)
            ),
        )?,
        format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: {app} }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  deletionPolicy: Delete
  backup: {{ policyRef: {{ name: rpo }} }}
"#
        ),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &manifests).await?;
    let db = wait_for(
        &format!("the first base backup of {app}"),
        patience(),
        || async {
            let db = get(plane, &namespace, "appdatabase", &app).await?;
            Ok(db["status"]["backup"]["lastSuccessfulBackup"]
                .is_string()
                .then_some(db))
        },
    )
    .await?;
    let database = db["status"]["database"].as_str().unwrap_or(&app).to_owned();
    let owner = db["status"]["owner"].as_str().unwrap_or(&app).to_owned();
    let pod = format!("{app}-db-cnpg-v1-1");
    psql_in_pod(
        plane,
        &namespace,
        &pod,
        &database,
        // The app's table, owned by the app's role as an app's own tables are: a drill counts
        // the tables the owner sees, and a database with none is empty.
        &format!(
            "create table load (id bigserial primary key, at timestamptz not null, body text not null); \
             alter table load owner to {owner}"
        ),
    )
    .await?;

    // The load runs on its own session until it is dropped with the measurement, or at the
    // latest until every drill could have timed out.
    let bound_minutes = (drills as u64 + 1) * 12;
    let writes = format!(
        "do $$ declare stop timestamptz := clock_timestamp() + interval '{bound_minutes} minutes'; \
         begin while clock_timestamp() < stop loop \
           insert into load (at, body) values (clock_timestamp(), md5(random()::text)); \
           commit; perform pg_sleep(0.1); \
         end loop; end $$"
    );
    let load = psql_in_pod(plane, &namespace, &pod, &database, &writes);
    let measured = async {
        // A first heartbeat is archived before the first drill starts.
        tokio::time::sleep(timeout + Duration::from_secs(30)).await;
        let mut results = Vec::new();
        for i in 0..drills {
            let (record, _) = drill(plane, &namespace, "rpo", &app, &format!("rpo-{i}")).await?;
            let seconds = |field: &str| record[field].as_u64().map(Duration::from_secs);
            results.push(RpoDrill {
                outcome: record["outcome"].as_str().unwrap_or_default().to_owned(),
                rpo: seconds("dataLossSeconds"),
                rto: seconds("recoverySeconds"),
                message: record["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        anyhow::Ok(results)
    };
    let results = tokio::select! {
        results = measured => results?,
        ended = load => {
            let output = ended.context("the write load stopped")?;
            anyhow::bail!("the write load ended before the drills: {output}");
        }
    };
    let rows = psql_in_pod(
        plane,
        &namespace,
        &pod,
        &database,
        "select count(*) from load",
    )
    .await?;
    ensure!(
        rows.trim().parse::<u64>().is_ok_and(|n| n > 0),
        "the write load wrote no rows: {rows}"
    );
    let selector = format!("cnpg.io/cluster={app}-db-cnpg-v1");
    clear(
        &client,
        &databases(&client, &namespace),
        &namespace,
        &app,
        &selector,
    )
    .await?;
    Ok(results)
}
