//! `make chaos`: SIGKILLs, kube-apiserver and etcd restarts, emulator outages and cut connections
//! against the operator process; prints a summary and exits non-zero if an invariant was violated.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use homelab_bench::chaos::{self, ChaosOptions};
use homelab_bench::operator::OperatorCommand;

#[derive(Parser)]
#[command(about = "Fault injection against the homelab-operator process")]
struct Cli {
    /// Pairs converging while the operator is killed.
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// SIGKILLs of the operator process.
    #[arg(long, default_value_t = 50)]
    kills: usize,
    /// Time bound of the run, in minutes.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Seconds between connection cuts.
    #[arg(long, default_value_t = 3)]
    cut_every_seconds: u64,
    /// Seconds each Azure emulator stays down.
    #[arg(long, default_value_t = 10)]
    outage_seconds: u64,
    /// The released operator binary.
    #[arg(long, default_value = "target/release/homelab-operator")]
    operator: PathBuf,
    /// The operator wired to the Azure emulators.
    #[arg(long, default_value = "target/release/operator-emulated")]
    emulated: PathBuf,
    /// Where the summary goes (the section between the chaos markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: PathBuf,
    /// Do not write the summary into a file.
    #[arg(long)]
    no_write: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    homelab_testenv::install_crypto_provider();
    let machine = homelab_bench::machine::Machine::probe();
    eprintln!("starting a private control plane…");
    let env = homelab_testenv::TestEnv::start().await?;
    let work_dir = std::env::temp_dir().join(format!("homelab-chaos-{}", std::process::id()));
    let opts = ChaosOptions {
        n: cli.n,
        kills: cli.kills,
        budget: Duration::from_secs(cli.minutes * 60),
        cut_every: Duration::from_secs(cli.cut_every_seconds),
        outage: Duration::from_secs(cli.outage_seconds),
        operator: OperatorCommand::released(std::fs::canonicalize(&cli.operator)?),
        emulated: std::fs::canonicalize(&cli.emulated)
            .ok()
            .map(|binary| OperatorCommand {
                binary,
                prefix: Vec::new(),
                env: Vec::new(),
            }),
        // The emulator phases fail the run when the emulators cannot start, unless a local run
        // opted out of Azurite (homelab_testenv::skip), which the summary then shows as skipped.
        require_azure: !homelab_testenv::skip::opted_out(homelab_testenv::skip::Component::Azurite),
        work_dir: work_dir.clone(),
    };
    let started = std::time::Instant::now();
    let report = chaos::run(&env, &opts).await?;
    let table = report.table();
    println!("{table}");
    eprintln!("operator logs: {}", work_dir.display());
    let violations = report.violations();
    if !cli.no_write {
        let body = format!(
            "Measured by `make chaos` (N={}, {} SIGKILLs, cuts every {} s, outages of {} s; took {:.0} s):\n\n{}\n{}\n",
            cli.n,
            cli.kills,
            cli.cut_every_seconds,
            cli.outage_seconds,
            started.elapsed().as_secs_f64(),
            machine.markdown(),
            table
        );
        homelab_bench::report::write_section(&cli.output, "chaos", &body)?;
    }
    if violations.is_empty() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        for v in &violations {
            eprintln!("violated: {v}");
        }
        Ok(std::process::ExitCode::FAILURE)
    }
}
