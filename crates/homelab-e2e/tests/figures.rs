//! The smoke run of `make bench-data-plane`, for correctness only (no timing is judged), in a
//! test binary of its own:
//! - one round of time to Ready: the operator's AppDatabase, and the Cluster and ExternalSecret
//!   written by hand from what the operator applied, both reach Ready;
//! - one round of restore RTO of a small database: both the operator's restore and the
//!   hand-written recovery Cluster come up with every row of the source (checked inside);
//! - one drill under a steady write load: it succeeds and measures an RPO from a heartbeat.
//!
//! The restore and the drill run at the same time, on their own namespaces.

use anyhow::{Result, ensure};
use homelab_e2e::data_plane;
use homelab_e2e::figures::{drill_rpo, restore_rto, time_to_ready};

#[tokio::test]
async fn one_round_of_each_figure_completes() -> Result<()> {
    let plane = data_plane().await?;
    let rounds = time_to_ready(plane, 1).await?;
    ensure!(rounds.len() == 1, "rounds of time to Ready: {rounds:?}");
    eprintln!("time to Ready: {rounds:?}");

    let (restored, drills) = tokio::join!(restore_rto(plane, 8, 1), drill_rpo(plane, "30s", 1));
    let restored = restored?;
    ensure!(restored.len() == 1, "rounds of restore: {restored:?}");
    ensure!(
        restored[0].database_bytes > 8 * 1024 * 1024,
        "the source was not filled with 8 MiB: {restored:?}"
    );
    eprintln!("restore: {restored:?}");
    let drills = drills?;
    ensure!(
        drills.len() == 1 && drills[0].outcome == "Succeeded" && drills[0].rpo.is_some(),
        "the drill under write load did not succeed with an RPO: {drills:?}"
    );
    eprintln!("drill under write load: {drills:?}");
    Ok(())
}
