//! `make bench-data-plane`: figures on the data plane, each a ratio against a floor measured in
//! the same run (see `homelab_e2e::figures`). Run under `homelab-testenv exec --data-plane`.

use anyhow::{Context, Result, ensure};
use clap::Parser;
use homelab_e2e::figures::{median, time_to_ready};
use homelab_testenv::data_plane::DataPlane;

#[derive(Parser)]
struct Args {
    /// Rounds of time to Ready (operator and floor each once per round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    homelab_testenv::install_crypto_provider();
    let plane = DataPlane::from_env()
        .await
        .context("attaching to the data plane")?;
    homelab_e2e::operator_running(&plane).await?;
    let rounds = time_to_ready(&plane, args.rounds).await?;
    println!(
        "| round | AppDatabase to Ready (operator) | Cluster + ExternalSecret by hand (floor) | ratio |"
    );
    println!("|---|---|---|---|");
    for (i, round) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} |",
            i + 1,
            round.operator.as_secs_f64(),
            round.floor.as_secs_f64(),
            round.operator.as_secs_f64() / round.floor.as_secs_f64()
        );
    }
    let operator = median(rounds.iter().map(|r| r.operator).collect()).context("no round")?;
    let floor = median(rounds.iter().map(|r| r.floor).collect()).context("no round")?;
    let ratio = operator.as_secs_f64() / floor.as_secs_f64();
    println!(
        "| median of {} | {:.1} s | {:.1} s | **{ratio:.2}** (goal ≤ 1.05: {}) |",
        rounds.len(),
        operator.as_secs_f64(),
        floor.as_secs_f64(),
        if ratio <= 1.05 { "met" } else { "not met" }
    );
    Ok(())
}
