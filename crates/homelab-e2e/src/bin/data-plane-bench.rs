//! `make bench-data-plane`: figures on the data plane, each a ratio against a floor measured in
//! the same run, or against a bound (see `homelab_e2e::figures`). Prints Markdown tables. Run
//! under `homelab-testenv exec --data-plane`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Parser, ValueEnum};
use homelab_e2e::figures::rpo::parse_timeout;
use homelab_e2e::figures::{drill_rpo, median, restore_rto, time_to_ready};
use homelab_testenv::data_plane::DataPlane;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Figure {
    /// An AppDatabase to Ready, against its Cluster and ExternalSecret applied by hand.
    Ready,
    /// Restore RTO, against a hand-written CloudNativePG recovery from the same archive.
    Restore,
    /// The RPO drills measure under a steady write load, against walArchiveTimeout + 30 s.
    Rpo,
}

#[derive(Parser)]
struct Args {
    /// The figures to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ready,restore,rpo"
    )]
    figures: Vec<Figure>,
    /// Rounds of time to Ready (operator and floor each once per round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sizes in MiB of the restored databases.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    restore_sizes: Vec<u64>,
    /// Rounds of restore per size (operator and floor each once per round).
    #[arg(long, default_value_t = 1)]
    restore_rounds: usize,
    /// The BackupPolicies' walArchiveTimeout values; each is measured on its own database, all
    /// at the same time.
    #[arg(long, value_delimiter = ',', default_value = "5m,1m")]
    rpo_timeouts: Vec<String>,
    /// Drills per walArchiveTimeout.
    #[arg(long, default_value_t = 3)]
    rpo_drills: usize,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

async fn ready(plane: &DataPlane, rounds: usize) -> Result<()> {
    let rounds = time_to_ready(plane, rounds).await?;
    println!(
        "| round | AppDatabase to Ready (operator) | Cluster + ExternalSecret by hand (floor) | ratio |"
    );
    println!("|---|---|---|---|");
    for (i, round) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} |",
            i + 1,
            seconds(round.operator),
            seconds(round.floor),
            seconds(round.operator) / seconds(round.floor)
        );
    }
    let operator = median(rounds.iter().map(|r| r.operator).collect()).context("no round")?;
    let floor = median(rounds.iter().map(|r| r.floor).collect()).context("no round")?;
    let ratio = seconds(operator) / seconds(floor);
    println!(
        "| median of {} | {:.1} s | {:.1} s | **{ratio:.2}** (goal ≤ 1.05: {}) |\n",
        rounds.len(),
        seconds(operator),
        seconds(floor),
        met(ratio <= 1.05)
    );
    Ok(())
}

async fn restore(plane: &DataPlane, sizes: &[u64], rounds: usize) -> Result<()> {
    println!(
        "| database | round | restored AppDatabase to Ready (operator) | hand-written recovery Cluster healthy (floor) | ratio |"
    );
    println!("|---|---|---|---|---|");
    for &size in sizes {
        let measured = restore_rto(plane, size, rounds).await?;
        for (i, round) in measured.iter().enumerate() {
            let ratio = seconds(round.operator) / seconds(round.floor);
            let under_objective = round.operator <= Duration::from_secs(600);
            println!(
                "| {size} MiB asked, {:.0} MiB by pg_database_size | {} | {:.1} s (under 10 min: {}) | {:.1} s | **{ratio:.2}** (goal ≤ 1.1: {}) |",
                round.database_bytes as f64 / (1024.0 * 1024.0),
                i + 1,
                seconds(round.operator),
                met(under_objective),
                seconds(round.floor),
                met(ratio <= 1.1)
            );
        }
    }
    println!();
    Ok(())
}

async fn rpo(plane: &DataPlane, timeouts: &[String], drills: usize) -> Result<()> {
    let measured = futures::future::try_join_all(
        timeouts
            .iter()
            .map(|timeout| async move { drill_rpo(plane, timeout, drills).await }),
    )
    .await?;
    println!("| walArchiveTimeout | drill | outcome | RPO (from data) | bound | RTO |");
    println!("|---|---|---|---|---|---|");
    for (timeout, drills) in timeouts.iter().zip(measured) {
        let bound = parse_timeout(timeout)? + Duration::from_secs(30);
        for (i, drill) in drills.iter().enumerate() {
            let rpo = drill
                .rpo
                .map_or("none: no heartbeat found".to_owned(), |r| {
                    format!("{} s", r.as_secs())
                });
            let within = drill.rpo.is_some_and(|r| r <= bound);
            let outcome = if drill.message.is_empty() {
                drill.outcome.clone()
            } else {
                format!("{} ({})", drill.outcome, drill.message)
            };
            println!(
                "| {timeout} | {} | {outcome} | {rpo} | {} s: {} | {} |",
                i + 1,
                bound.as_secs(),
                met(within),
                drill
                    .rto
                    .map_or("none".to_owned(), |r| format!("{} s", r.as_secs()))
            );
        }
    }
    println!();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.restore_rounds > 0,
        "--restore-rounds must be at least 1"
    );
    ensure!(args.rpo_drills > 0, "--rpo-drills must be at least 1");
    for timeout in &args.rpo_timeouts {
        parse_timeout(timeout)?;
    }
    homelab_testenv::install_crypto_provider();
    let plane = DataPlane::from_env()
        .await
        .context("attaching to the data plane")?;
    homelab_e2e::operator_running(&plane).await?;
    for figure in &args.figures {
        match figure {
            Figure::Ready => ready(&plane, args.rounds).await?,
            Figure::Restore => restore(&plane, &args.restore_sizes, args.restore_rounds).await?,
            Figure::Rpo => rpo(&plane, &args.rpo_timeouts, args.rpo_drills).await?,
        }
    }
    Ok(())
}
