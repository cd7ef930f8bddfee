//! Tables of figures, for the terminal and for docs/benchmarks.md.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::BenchReport;
use crate::cpu::CpuSplit;

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "–".into())
}

fn millis(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "–".into())
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
        .unwrap_or_else(|| "–".into())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "–",
    }
}

/// The CPU seconds of the operator runs and of the floors, summed over the rounds.
fn cpu_sums(r: &BenchReport) -> Option<(CpuSplit, CpuSplit)> {
    (!r.round_cpu.is_empty()).then(|| {
        r.round_cpu.iter().fold(
            (CpuSplit::default(), CpuSplit::default()),
            |(a, b), (o, f)| (a + *o, b + *f),
        )
    })
}

/// A Markdown table of the benchmark figures (readable as plain text too).
pub fn bench_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| figure | value | goal |");
    let _ = writeln!(s, "|---|---|---|");
    let row = |s: &mut String, what: &str, value: String, goal: &str| {
        let _ = writeln!(s, "| {what} | {value} | {goal} |");
    };
    let rounds = r.rounds.len();
    row(
        &mut s,
        &format!(
            "convergence, {} pairs ({} children), median of {rounds} round(s)",
            r.n, r.children
        ),
        secs(r.converge()),
        "",
    );
    row(
        &mut s,
        &format!(
            "floor: plain client, same {} children, median of {rounds} round(s)",
            r.floor_children
        ),
        secs(r.floor()),
        "",
    );
    let each = r
        .rounds
        .iter()
        .zip(r.round_ratios())
        .map(|((operator, floor), ratio)| {
            format!(
                "{:.1} s ÷ {:.1} s = {ratio:.2}",
                operator.as_secs_f64(),
                floor.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    row(
        &mut s,
        &format!("operator ÷ floor, median of the rounds' ratios ({each})"),
        num(r.ratio(), 2),
        &format!("≤ 1.5: {}", verdict(r.ratio().map(|x| x <= 1.5))),
    );
    if let Some((operator, floor)) = cpu_sums(r) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let (operator_time, floor_time) = r.rounds.iter().fold((0.0, 0.0), |(a, b), (o, f)| {
            (a + o.as_secs_f64(), b + f.as_secs_f64())
        });
        row(
            &mut s,
            "CPU seconds of the whole machine while converging, sum of the rounds: operator run ÷ floor (share of the cores busy)",
            format!(
                "{:.1} ÷ {:.1} = {:.2} ({:.0} % ÷ {:.0} %)",
                operator.total(),
                floor.total(),
                operator.total() / floor.total(),
                100.0 * operator.total() / (cores * operator_time),
                100.0 * floor.total() / (cores * floor_time),
            ),
            "",
        );
        row(
            &mut s,
            "of which, operator run ÷ floor",
            format!(
                "kube-apiserver {:.1} ÷ {:.1}, etcd {:.1} ÷ {:.1}, kube-controller-manager {:.1} ÷ {:.1}, bench client and watches {:.1} ÷ {:.1}, operator {:.1}",
                operator.apiserver,
                floor.apiserver,
                operator.etcd,
                floor.etcd,
                operator.controller_manager,
                floor.controller_manager,
                operator.bench,
                floor.bench,
                operator.operator,
            ),
            "",
        );
    }
    row(
        &mut s,
        "write requests until converged (creates of the CRs included)",
        r.converge_writes
            .as_ref()
            .map(|w| {
                let detail = w
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{} ({detail})", w.values().sum::<usize>())
            })
            .unwrap_or_else(|| "–".into()),
        "",
    );
    row(
        &mut s,
        "CPU seconds converging (user+system)",
        num(r.converge_cpu, 2),
        "",
    );
    let writes = r.restart_write_total();
    row(
        &mut s,
        &format!(
            "writes after restart over {} (two resync periods), leases excluded",
            secs(r.restart_window)
        ),
        writes
            .map(|w| {
                let detail = r
                    .restart_writes
                    .iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if detail.is_empty() {
                    w.to_string()
                } else {
                    format!("{w} ({detail})")
                }
            })
            .unwrap_or_else(|| "–".into()),
        &format!("0: {}", verdict(writes.map(|w| w == 0))),
    );
    row(
        &mut s,
        "reconciles in that window",
        num(r.restart_reconciles, 0),
        "",
    );
    row(
        &mut s,
        &format!(
            "Azure requests per database per hour, steady state ({} databases, {} window)",
            r.azure_pairs,
            secs(r.azure_window)
        ),
        num(r.azure_per_db_hour, 2),
        &format!("≤ 1: {}", verdict(r.azure_per_db_hour.map(|x| x <= 1.0))),
    );
    row(
        &mut s,
        "WAL archive listings per database per hour, same window (empty archives: every minute until the first segment)",
        num(r.wal_probes_per_db_hour, 2),
        "",
    );
    row(
        &mut s,
        "Azure requests per database to converge (without archive listings)",
        num(
            r.azure_converge_requests
                .map(|x| x / r.azure_pairs.max(1) as f64),
            1,
        ),
        "",
    );
    row(
        &mut s,
        &format!(
            "reaction latency p50 ({} changes, {} not seen in 10 s)",
            r.latencies.len(),
            r.latency_failures
        ),
        millis(r.percentile(0.5)),
        "",
    );
    row(
        &mut s,
        "reaction latency p99",
        millis(r.percentile(0.99)),
        &format!(
            "< 250 ms: {}",
            verdict(r.percentile(0.99).map(|p| p < Duration::from_millis(250)))
        ),
    );
    row(
        &mut s,
        "reaction latency max",
        millis(r.percentile(1.0)),
        "",
    );
    row(&mut s, "peak RSS, 0 pairs", mib(r.rss_idle), "");
    row(
        &mut s,
        &format!("peak RSS, {} pairs", r.n),
        mib(r.rss_n),
        "",
    );
    row(
        &mut s,
        &format!("peak RSS, started with {} pairs present", r.n),
        mib(r.rss_restart),
        "",
    );
    let under_goal = |rss: Option<u64>| {
        format!(
            "< 64 MiB: {}",
            verdict(
                rss.filter(|_| r.large_n >= 2000)
                    .map(|b| b < 64 * 1024 * 1024)
            )
        )
    };
    row(
        &mut s,
        &format!("peak RSS, {} pairs", r.large_n),
        mib(r.rss_large),
        &under_goal(r.rss_large),
    );
    row(
        &mut s,
        &format!("peak RSS, started with {} pairs present", r.large_n),
        mib(r.rss_large_restart),
        &under_goal(r.rss_large_restart),
    );
    row(
        &mut s,
        &format!("convergence, {} pairs", r.large_n),
        secs(r.converge_large),
        "",
    );
    row(
        &mut s,
        &format!("CPU seconds converging {} pairs", r.large_n),
        num(r.converge_large_cpu, 2),
        "",
    );
    row(
        &mut s,
        "memory per additional pair (CR pair + children in cache)",
        r.bytes_per_pair()
            .map(|b| format!("{:.1} KiB", b / 1024.0))
            .unwrap_or_else(|| "–".into()),
        "",
    );
    let secrets_ratio = r
        .rss_secrets
        .zip(r.rss_idle)
        .map(|(a, b)| a as f64 / b as f64);
    row(
        &mut s,
        &format!("peak RSS, 0 pairs + {} unrelated 1 MiB Secrets", r.secrets),
        format!(
            "{} ({} of idle)",
            mib(r.rss_secrets),
            secrets_ratio
                .map(|x| format!("{:+.1} %", (x - 1.0) * 100.0))
                .unwrap_or_else(|| "–".into())
        ),
        &format!(
            "within 10 %: {}",
            verdict(secrets_ratio.map(|x| (x - 1.0).abs() <= 0.10))
        ),
    );
    row(
        &mut s,
        "start-up: process start to /metrics",
        millis(r.startup_http),
        "",
    );
    row(
        &mut s,
        &format!(
            "start-up: process start to first reconcile ({} pairs present)",
            r.n
        ),
        millis(r.startup_first_reconcile),
        "",
    );
    row(&mut s, "release binary size", mib(r.binary_bytes), "");
    for note in &r.notes {
        let _ = writeln!(s, "\nNote: {note}");
    }
    s
}

/// Replaces the text between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->` in `path`
/// (appending the markers if absent), keeping the rest of the document.
pub fn write_section(path: &std::path::Path, marker: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {marker}:begin -->");
    let end = format!("<!-- {marker}:end -->");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{begin}\n{body}{end}");
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, updated)
}
