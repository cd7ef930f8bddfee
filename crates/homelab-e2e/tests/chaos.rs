//! Chaos on the data plane, in a test binary of its own so that nothing else runs beside it.
//!
//! While a restore drill runs and the heartbeat writer writes: the source's PostgreSQL pod is
//! force-deleted, Azurite is frozen for a minute (SIGSTOP: it accepts connections and answers
//! nothing, as a hung storage endpoint does; SIGCONT ends it, and its archive, held in memory,
//! survives, as Azure's data survives an outage) and the leading operator pod is force-deleted.
//! Afterwards the drill has ended and left no cluster or Job behind, every base backup and WAL
//! segment archived before is still in the container, the password has its one version, the
//! source is Ready, and the next drill restores the data and passes.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use homelab_e2e::{
    OPERATOR_NAMESPACE, POSTGRESQL_IMAGE, Vault, annotate, apply, backup_policy, blob_names,
    data_plane, drill, drill_clusters_recorded, get, names, operator_leader, patience, psql_in_pod,
    wait_condition, wait_for, wait_gone,
};
use homelab_testenv::data_plane::DataPlane;
use homelab_testenv::data_plane::components::kubectl;

const POLICY: &str = "chaos";
const DATABASE: &str = "ledger";
const CONTAINER: &str = "ledger-db-clean";
const PRIMARY: &str = "ledger-db-cnpg-v1-1";

/// Azurite frozen with SIGSTOP; thawed with SIGCONT when dropped, whatever the test did.
struct FrozenAzurite {
    pid: String,
}

impl FrozenAzurite {
    fn freeze() -> Result<Self> {
        let pid = azurite_pid()?;
        signal("-STOP", &pid)?;
        Ok(Self { pid })
    }
}

impl Drop for FrozenAzurite {
    fn drop(&mut self) {
        if let Err(e) = signal("-CONT", &self.pid) {
            eprintln!("could not thaw Azurite (pid {}): {e:#}", self.pid);
        }
    }
}

fn signal(which: &str, pid: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([which, pid])
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill {which} {pid}: {status}");
    Ok(())
}

/// The Azurite process serving the pods: the one started with `--blobHost <the blob address>`.
fn azurite_pid() -> Result<String> {
    let host = homelab_testenv::node::network::BLOB_IP.to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let serves_pods = args
            .windows(2)
            .any(|w| w[0] == "--blobHost" && w[1] == host);
        if serves_pods && args.iter().any(|a| a.contains("azurite")) {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(pid.clone()),
        other => bail!("expected one Azurite process serving {host}, found {other:?}"),
    }
}

async fn force_delete_pod(plane: &DataPlane, namespace: &str, pod: &str) -> Result<()> {
    kubectl(
        plane.env(),
        &[
            "delete",
            "pod",
            "-n",
            namespace,
            pod,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
    )
    .await?;
    Ok(())
}

/// Base backups and WAL segments in the container.
async fn archived(plane: &DataPlane) -> Result<BTreeSet<String>> {
    Ok(blob_names(plane, CONTAINER)
        .await?
        .into_iter()
        .filter(|n| n.contains("/wals/") || n.contains("/base/"))
        .collect())
}

#[tokio::test]
async fn drills_and_backups_survive_killed_pods_and_a_frozen_azurite() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace(DATABASE).await?;
    let manifests = [
        backup_policy(
            plane,
            POLICY,
            "30s",
            "  drill: { schedule: \"0 4 1 1 *\", timeout: 8m, history: 5, heartbeatInterval: 5s }",
        )?,
        format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: {DATABASE} }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
  backup:
    policyRef: {{ name: {POLICY} }}
    drillQuery: "SELECT count(*) = 3 FROM entries"
"#
        ),
    ]
    .join("\n---\n");
    apply(plane, &namespace, &manifests).await?;
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        DATABASE,
        "Ready",
        "True",
        patience(),
    )
    .await?;
    wait_for("the first base backup", patience(), || async {
        let db = get(plane, &namespace, "appdatabase", DATABASE).await?;
        Ok(db["status"]["backup"]["lastSuccessfulBackup"]
            .is_string()
            .then_some(()))
    })
    .await?;
    psql_in_pod(
        plane,
        &namespace,
        PRIMARY,
        DATABASE,
        "create table entries (id int primary key, body text); \
         insert into entries values (1, 'one'), (2, 'two'), (3, 'three'); \
         alter table entries owner to ledger; select pg_switch_wal();",
    )
    .await?;
    let segments = |names: &BTreeSet<String>| names.iter().filter(|n| n.contains("/wals/")).count();
    let before_rows = segments(&archived(plane).await?);
    wait_for("WAL after the rows", patience(), || async {
        Ok((segments(&archived(plane).await?) > before_rows + 1).then_some(()))
    })
    .await?;
    let vault = Vault::new(plane)?;
    let password_versions = vault.versions("ledger-db-password").await?;
    ensure!(password_versions.len() == 1, "{password_versions:?}");
    let archived_before = archived(plane).await?;

    // A drill starts; once its cluster exists, the chaos.
    let known = drill_clusters_recorded(plane, &namespace, POLICY).await?;
    annotate(
        plane,
        &namespace,
        "backuppolicy",
        POLICY,
        "homelab.io/drill-now",
        "during-chaos",
    )
    .await?;
    let drill_cluster = wait_for("the drill's cluster", patience(), || async {
        let policy = get(plane, &namespace, "backuppolicy", POLICY).await?;
        let cluster = policy["status"]["drills"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["database"] == DATABASE && !known.contains(&r["cluster"]))
            .and_then(|r| r["cluster"].as_str().map(str::to_owned));
        let Some(cluster) = cluster else {
            return Ok(None);
        };
        let clusters = names(plane, &namespace, "cluster", "").await?;
        let created = clusters.iter().any(|n| n.ends_with(&format!("/{cluster}")));
        Ok(created.then_some(cluster))
    })
    .await?;
    eprintln!("chaos: drill cluster {drill_cluster} exists; killing {PRIMARY}");
    force_delete_pod(plane, &namespace, PRIMARY).await?;
    {
        let _frozen = FrozenAzurite::freeze()?;
        eprintln!("chaos: Azurite frozen");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let leader = operator_leader(plane).await?;
        eprintln!("chaos: killing the leading operator pod {leader}");
        force_delete_pod(plane, OPERATOR_NAMESPACE, &leader).await?;
        tokio::time::sleep(Duration::from_secs(40)).await;
    }
    eprintln!("chaos: Azurite thawed");

    // The drill ends, whatever its outcome, and leaves nothing behind.
    let ended = wait_for("the drill during the chaos to end", patience(), || async {
        let policy = get(plane, &namespace, "backuppolicy", POLICY).await?;
        Ok(policy["status"]["drills"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["cluster"] == drill_cluster.as_str() && r["outcome"] != "Running")
            .cloned())
    })
    .await?;
    eprintln!("chaos: the drill during the chaos ended: {ended}");
    ensure!(
        ended["outcome"] == "Succeeded" || ended["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a drill that did not succeed says nothing about why: {ended}"
    );
    wait_gone(plane, &namespace, "cluster", &drill_cluster, patience()).await?;
    wait_gone(
        plane,
        &namespace,
        "job",
        &format!("{drill_cluster}-verify"),
        patience(),
    )
    .await?;

    // The source is back, nothing archived before is lost, the password is the one it was.
    wait_condition(
        plane,
        &namespace,
        "appdatabase",
        DATABASE,
        "Ready",
        "True",
        patience(),
    )
    .await?;
    let archived_after = archived(plane).await?;
    let lost: Vec<&String> = archived_before.difference(&archived_after).collect();
    ensure!(
        lost.is_empty(),
        "archived before the chaos and gone: {lost:?}"
    );
    let versions = vault.versions("ledger-db-password").await?;
    ensure!(
        versions.len() == 1 && versions[0].id == password_versions[0].id,
        "the password changed: {versions:?}"
    );

    // The next drill restores the rows and a recent heartbeat, and passes.
    let (record, policy) = drill(plane, &namespace, POLICY, DATABASE, "after-chaos").await?;
    eprintln!("chaos: the drill after the chaos: {record}");
    ensure!(
        record["outcome"] == "Succeeded",
        "the drill after the chaos did not succeed: {record}"
    );
    ensure!(
        record["newestHeartbeat"].is_string(),
        "the drill after the chaos found no heartbeat: {record}"
    );
    let cluster = record["cluster"].as_str().context("no drill cluster")?;
    wait_gone(plane, &namespace, "cluster", cluster, patience()).await?;
    let left: Vec<String> = names(plane, &namespace, "cluster", "")
        .await?
        .into_iter()
        .filter(|n| n.contains("-drill-"))
        .collect();
    ensure!(left.is_empty(), "drill clusters left over: {left:?}");
    ensure!(
        homelab_e2e::condition(&policy, "DrillSucceeded").is_some_and(|c| c["status"] == "True"),
        "DrillSucceeded is not True: {}",
        policy["status"]
    );
    Ok(())
}
