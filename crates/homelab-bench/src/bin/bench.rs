//! `make bench`: the operator process against a private control plane (and the Azure
//! emulators); prints the figures and writes them into docs/benchmarks.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use homelab_bench::bench::{self, BenchOptions};
use homelab_bench::operator::OperatorCommand;

#[derive(Parser)]
#[command(about = "Benchmarks the homelab-operator process against a real control plane")]
struct Cli {
    /// AppDatabase + HomelabApp pairs converged at once.
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Rounds of convergence against the floor; the ratio reported is their median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Pairs of the large footprint run (0 skips it).
    #[arg(long, default_value_t = 2000)]
    large_n: usize,
    /// Spec changes timed for reaction latency.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Resync period of the restarted operator, in seconds (at least 10).
    #[arg(long, default_value_t = 10)]
    resync_seconds: u64,
    /// Unrelated 1 MiB Secrets in a watched namespace (0 skips it).
    #[arg(long, default_value_t = 500)]
    secrets: usize,
    /// Databases with the Azure side on, against the emulators (0 skips it).
    #[arg(long, default_value_t = 5)]
    azure_pairs: usize,
    /// Steady-state window for Azure requests, in seconds.
    #[arg(long, default_value_t = 60)]
    azure_window_seconds: u64,
    /// The released operator binary.
    #[arg(long, default_value = "target/release/homelab-operator")]
    operator: PathBuf,
    /// The operator wired to the Azure emulators.
    #[arg(long, default_value = "target/release/operator-emulated")]
    emulated: PathBuf,
    /// Where the figures go (the section between the bench markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: PathBuf,
    /// Do not write the figures into a file.
    #[arg(long)]
    no_write: bool,
    /// Longest wait for one convergence, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    homelab_testenv::install_crypto_provider();
    let machine = homelab_bench::machine::Machine::probe();
    eprintln!("starting a private control plane…");
    let env = homelab_testenv::TestEnv::start().await?;
    let work_dir = std::env::temp_dir().join(format!("homelab-bench-{}", std::process::id()));
    let opts = BenchOptions {
        n: cli.n,
        large_n: cli.large_n,
        changes: cli.changes,
        resync_seconds: cli.resync_seconds,
        secrets: cli.secrets,
        secret_bytes: 1 << 20,
        azure_pairs: cli.azure_pairs,
        azure_window: Duration::from_secs(cli.azure_window_seconds),
        operator: OperatorCommand::released(std::fs::canonicalize(&cli.operator)?),
        emulated: std::fs::canonicalize(&cli.emulated)
            .ok()
            .map(|binary| OperatorCommand {
                binary,
                prefix: Vec::new(),
                env: Vec::new(),
            }),
        work_dir: work_dir.clone(),
        timeout: Duration::from_secs(cli.timeout_seconds),
        rounds: cli.rounds,
    };
    let report = bench::run(&env, &opts).await?;
    let table = homelab_bench::report::bench_table(&report);
    println!("{table}");
    eprintln!("operator logs: {}", work_dir.display());
    if !cli.no_write {
        let body = format!(
            "Measured by `make bench` (N={}, large N={}, {} changes, resync {} s, {} Secrets, {} Azure databases):\n\n{}\n{}\n",
            cli.n,
            cli.large_n,
            cli.changes,
            cli.resync_seconds,
            cli.secrets,
            cli.azure_pairs,
            machine.markdown(),
            table
        );
        homelab_bench::report::write_section(&cli.output, "bench", &body)?;
        eprintln!("wrote {}", cli.output.display());
    }
    Ok(())
}
