//! The smoke run of `make bench-data-plane`, for correctness only (no timing is judged): one
//! round of time to Ready, in a test binary of its own. Both sides reach Ready: the operator's
//! AppDatabase, and the Cluster and ExternalSecret written by hand from what the operator applied.

use anyhow::{Result, ensure};
use homelab_e2e::data_plane;
use homelab_e2e::figures::time_to_ready;

#[tokio::test]
async fn one_round_of_time_to_ready_completes_on_both_sides() -> Result<()> {
    let plane = data_plane().await?;
    let rounds = time_to_ready(plane, 1).await?;
    ensure!(rounds.len() == 1, "rounds measured: {rounds:?}");
    eprintln!("time to Ready: {rounds:?}");
    Ok(())
}
