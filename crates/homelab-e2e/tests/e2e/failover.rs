//! Killing the leading operator pod mid-convergence loses nothing: the standby replica of
//! `deploy/base` takes the lease and finishes the database, and the password generated in Key
//! Vault is the one generated before the kill.

use anyhow::{Result, bail, ensure};
use homelab_e2e::{
    POSTGRESQL_IMAGE, Vault, apply, condition, data_plane, exists, get, operator_leader, patience,
    wait_condition, wait_for,
};
use homelab_testenv::data_plane::components::kubectl;

#[tokio::test]
async fn killing_the_leader_mid_convergence_loses_nothing() -> Result<()> {
    let plane = data_plane().await?;
    let namespace = plane.env().namespace("feeds").await?;
    apply(
        plane,
        &namespace,
        &format!(
            r#"
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {{ name: feeds }}
spec:
  instances: 1
  postgres: {{ image: {POSTGRESQL_IMAGE} }}
  storage: {{ size: 1Gi }}
"#
        ),
    )
    .await?;

    // Mid-convergence: the operator has written the Cluster, which is not running yet.
    wait_for("the operator writing the Cluster", patience(), || async {
        Ok(exists(plane, &namespace, "cluster", "feeds-db-cnpg-v1")
            .await?
            .then_some(()))
    })
    .await?;
    let database = get(plane, &namespace, "appdatabase", "feeds").await?;
    ensure!(
        !condition(&database, "Ready").is_some_and(|c| c["status"] == "True"),
        "the database was Ready before the kill, so the kill was not mid-convergence"
    );
    let vault = Vault::new(plane)?;
    let versions_before = vault.versions("feeds-db-password").await?;
    let killed = operator_leader(plane).await?;
    kubectl(
        plane.env(),
        &[
            "delete",
            "pod",
            "-n",
            homelab_e2e::OPERATOR_NAMESPACE,
            &killed,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
    )
    .await?;

    let database = wait_condition(
        plane,
        &namespace,
        "appdatabase",
        "feeds",
        "Ready",
        "True",
        patience(),
    )
    .await?;
    let new_leader = operator_leader(plane).await?;
    ensure!(
        new_leader != killed,
        "the Lease is still held by the killed pod {killed}"
    );
    ensure!(
        database["status"]["passwordOrigin"] == "Generated",
        "passwordOrigin is {}",
        database["status"]["passwordOrigin"]
    );
    // Generated once: the version that existed before the kill (if any) is the only one.
    let versions = vault.versions("feeds-db-password").await?;
    ensure!(
        versions.len() == 1,
        "the password was written {} times: {versions:?}",
        versions.len()
    );
    if let Some(before) = versions_before.first() {
        ensure!(
            versions[0].id == before.id,
            "the password generated before the kill was replaced"
        );
    }
    let cluster = get(plane, &namespace, "cluster", "feeds-db-cnpg-v1").await?;
    if cluster["status"]["phase"] != "Cluster in healthy state" {
        bail!("CloudNativePG reports {}", cluster["status"]["phase"]);
    }
    Ok(())
}
