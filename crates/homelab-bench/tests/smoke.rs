//! The bench and chaos runs at small sizes, asserting correctness only (no timing): everything
//! converges, an unchanged world costs no writes after a restart, and no chaos invariant breaks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use homelab_bench::bench::{self, BenchOptions};
use homelab_bench::chaos::{self, ChaosOptions};
use homelab_bench::operator::OperatorCommand;
use homelab_testenv::TestEnv;

/// The operator process: the library's entry point, as the released binary runs it, built with
/// the emulators' Azure wiring.
fn operator() -> OperatorCommand {
    OperatorCommand {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_operator-emulated")),
        prefix: Vec::new(),
        env: Vec::new(),
    }
}

/// Whether the Azure part of `test` runs: when Azurite is installed. Missing, it fails the test,
/// unless a local run opted out of Azurite (`homelab_testenv::skip`), which records the skip.
fn azure_part(test: &str) -> bool {
    let azurite = homelab_testenv::azure::azurite_blob_path();
    if azurite.exists() {
        return true;
    }
    homelab_testenv::skip::missing(
        test,
        homelab_testenv::skip::Component::Azurite,
        &format!("{} does not exist", azurite.display()),
    );
    false
}

fn work_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("homelab-bench-smoke-{name}-{}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_at_small_n_converges_without_writes_after_restart() {
    let env = TestEnv::get().await;
    let opts = BenchOptions {
        n: 5,
        large_n: 0,
        changes: 5,
        resync_seconds: 10,
        secrets: 2,
        secret_bytes: 1024,
        azure_pairs: if azure_part(
            "bench_at_small_n_converges_without_writes_after_restart (its Azure part)",
        ) {
            2
        } else {
            0
        },
        azure_window: Duration::from_secs(5),
        operator: operator(),
        emulated: Some(operator()),
        work_dir: work_dir("bench"),
        timeout: Duration::from_secs(120),
        rounds: 2,
    };
    let report = bench::run(env, &opts).await.expect("bench run");
    println!("{}", homelab_bench::report::bench_table(&report));
    assert_eq!(
        report.rounds.len(),
        2,
        "both rounds converged and were timed"
    );
    assert!(report.children > 0);
    assert_eq!(
        report.floor_children, report.children,
        "the floor applies the same children"
    );
    assert_eq!(
        report.latency_failures, 0,
        "every change reached its Deployment"
    );
    assert_eq!(report.latencies.len(), 5);
    assert_eq!(
        report.restart_write_total(),
        Some(0),
        "writes after a restart over an unchanged world: {:?}",
        report.restart_writes
    );
    assert!(report.rss_idle.is_some() && report.rss_n.is_some());
    if opts.azure_pairs > 0 {
        assert!(
            report.notes.is_empty(),
            "the Azure run completed: {:?}",
            report.notes
        );
        assert!(report.azure_per_db_hour.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_at_small_n_keeps_every_invariant() {
    let env = TestEnv::get().await;
    let opts = ChaosOptions {
        n: 5,
        kills: 3,
        budget: Duration::from_secs(120),
        cut_every: Duration::from_secs(1),
        outage: Duration::from_secs(3),
        operator: operator(),
        emulated: azure_part("chaos_at_small_n_keeps_every_invariant (its emulator phases)")
            .then(operator),
        require_azure: true,
        work_dir: work_dir("chaos"),
    };
    let report = chaos::run(env, &opts).await.expect("chaos run");
    println!("{}", report.table());
    assert!(report.violations().is_empty(), "{:?}", report.violations());
    assert!(
        report
            .phases
            .iter()
            .any(|p| p.phase.starts_with("apiserver and etcd restart")),
        "the restart phase ran"
    );
}
