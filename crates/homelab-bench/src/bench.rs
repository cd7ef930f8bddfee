//! The benchmark: convergence against its floor, write amplification, Azure requests in steady
//! state, reaction latency, footprint and start-up of the operator process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use homelab_api::HomelabApp;
use homelab_testenv::TestEnv;
use homelab_testenv::azure::AzureEmulators;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cpu::CpuSplit;
use crate::observe::Observer;
use crate::operator::{OperatorCommand, OperatorProcess, OperatorSettings, metric_sum};
use crate::workload::{self, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Pairs in the convergence, write-amplification and latency runs.
    pub n: usize,
    /// Pairs of the large footprint run (0 skips it).
    pub large_n: usize,
    /// Spec changes timed for reaction latency.
    pub changes: usize,
    /// Resync period of the restarted operator (the write-amplification window is two of them).
    pub resync_seconds: u64,
    /// Unrelated Secrets put in a watched namespace (0 skips it), and their size.
    pub secrets: usize,
    pub secret_bytes: usize,
    /// Pairs with the Azure side on (0 skips it) and the steady-state window.
    pub azure_pairs: usize,
    pub azure_window: Duration,
    /// The released operator (`homelab-operator run`).
    pub operator: OperatorCommand,
    /// The operator built against the emulators (for the Azure run).
    pub emulated: Option<OperatorCommand>,
    /// Where operator logs go.
    pub work_dir: PathBuf,
    /// Longest wait for one convergence.
    pub timeout: Duration,
    /// Rounds of convergence against the floor (the ratio is their median).
    pub rounds: usize,
}

/// The figures of one run. `None` where a part was skipped or failed (see `notes`).
#[derive(Debug, Default)]
pub struct BenchReport {
    pub n: usize,
    pub children: usize,
    /// (operator, floor) convergence times of each round.
    pub rounds: Vec<(Duration, Duration)>,
    /// (operator, floor) CPU seconds each process spent while converging, per round.
    pub round_cpu: Vec<(CpuSplit, CpuSplit)>,
    pub floor_children: usize,
    pub converge_cpu: Option<f64>,
    pub rss_idle: Option<u64>,
    pub rss_n: Option<u64>,
    pub large_n: usize,
    pub rss_large: Option<u64>,
    /// Peak RSS of an operator started with the N pairs already present, once each custom
    /// resource was reconciled.
    pub rss_restart: Option<u64>,
    /// The same with the large N present.
    pub rss_large_restart: Option<u64>,
    pub converge_large: Option<Duration>,
    pub converge_large_cpu: Option<f64>,
    pub rss_secrets: Option<u64>,
    pub secrets: usize,
    pub restart_writes: Option<BTreeMap<String, usize>>,
    /// Write requests in the namespace from the first create to convergence (the bench's own
    /// creates included).
    pub converge_writes: Option<BTreeMap<String, usize>>,
    pub restart_window: Option<Duration>,
    pub restart_reconciles: Option<f64>,
    pub startup_http: Option<Duration>,
    pub startup_first_reconcile: Option<Duration>,
    pub latencies: Vec<Duration>,
    pub latency_failures: usize,
    pub azure_pairs: usize,
    pub azure_converge_requests: Option<f64>,
    pub azure_window: Option<Duration>,
    pub azure_window_requests: Option<f64>,
    pub azure_per_db_hour: Option<f64>,
    /// Archive listings for the newest WAL segment, per database per hour, in the same window
    /// (not in `azure_per_db_hour`: they watch the archive, they do not verify the Azure side).
    pub wal_probes_per_db_hour: Option<f64>,
    pub binary_bytes: Option<u64>,
    pub notes: Vec<String>,
}

impl BenchReport {
    /// The median of the rounds' operator ÷ floor ratios.
    pub fn ratio(&self) -> Option<f64> {
        median(self.round_ratios())
    }

    pub fn round_ratios(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|(operator, floor)| operator.as_secs_f64() / floor.as_secs_f64())
            .collect()
    }

    /// The median operator convergence time over the rounds.
    pub fn converge(&self) -> Option<Duration> {
        median(self.rounds.iter().map(|r| r.0.as_secs_f64()).collect()).map(Duration::from_secs_f64)
    }

    /// The median floor time over the rounds.
    pub fn floor(&self) -> Option<Duration> {
        median(self.rounds.iter().map(|r| r.1.as_secs_f64()).collect()).map(Duration::from_secs_f64)
    }

    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return None;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied()
    }

    /// Memory per additional pair between the N and large-N runs.
    pub fn bytes_per_pair(&self) -> Option<f64> {
        let (small, large) = (self.rss_n? as f64, self.rss_large? as f64);
        (self.large_n > self.n).then(|| (large - small) / (self.large_n - self.n) as f64)
    }

    /// Total writes counted in the restart window.
    pub fn restart_write_total(&self) -> Option<usize> {
        self.restart_writes.as_ref().map(|w| w.values().sum())
    }
}

/// One convergence: a fresh namespace, an operator watching it, N pairs created at once.
struct Round {
    ns: String,
    load: Workload,
    observer: Observer,
    operator: OperatorProcess,
    created: workload::Created,
    expected: std::collections::BTreeSet<(String, String)>,
    elapsed: Duration,
    machine_cpu: CpuSplit,
    writes: BTreeMap<String, usize>,
}

async fn converge_round(
    env: &TestEnv,
    opts: &BenchOptions,
    client: &kube::Client,
    kinds: &BTreeMap<(String, String), kube::core::ApiResource>,
    render_config: &homelab_render::OperatorConfig,
    audit_log: &std::path::Path,
    tag: &str,
) -> Result<Round> {
    let ns = env.namespace("bench").await?;
    let load = Workload::new(&format!("b{}", suffix(&ns)), opts.n);
    let observer = Observer::start(client, &ns, kinds);
    let mut operator =
        OperatorProcess::spawn(&opts.operator, &settings(&ns, env, opts, 3600, tag)).await?;
    operator.wait_http(Duration::from_secs(60)).await?;
    tokio::time::sleep(SETTLE).await;
    let machine_before = CpuSplit::now(Some(operator.pid));
    let offset = crate::audit::offset(audit_log)?;
    let start = Instant::now();
    let created = workload::create(client, &ns, &load).await?;
    let expected = workload::expected_children(&created, render_config, kinds)?;
    let elapsed = observer
        .wait_converged(opts.n, &expected, start, opts.timeout)
        .await?;
    let machine_cpu = CpuSplit::now(Some(operator.pid)) - machine_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = crate::audit::writes(audit_log, offset, &ns)?;
    Ok(Round {
        ns,
        load,
        observer,
        operator,
        created,
        expected,
        elapsed,
        machine_cpu,
        writes,
    })
}

/// The floor of a round: in a fresh namespace no operator watches, the same CRs and exactly the
/// children the operator would render, applied by a plain client. Timed like the operator's
/// run — until a watch has seen every child — with the same watches open, so both sides carry
/// the same observation load. Returns the time, the CPU seconds spent and the number of children
/// applied.
async fn floor_round(
    env: &TestEnv,
    opts: &BenchOptions,
    client: &kube::Client,
    kinds: &BTreeMap<(String, String), kube::core::ApiResource>,
    render_config: &homelab_render::OperatorConfig,
    round: &Round,
) -> Result<(Duration, CpuSplit, usize)> {
    let ns = env.namespace("bench-floor").await?;
    let observer = Observer::start(client, &ns, kinds);
    tokio::time::sleep(SETTLE).await;
    let machine_before = CpuSplit::now(None);
    let start = Instant::now();
    let (_, applied) = workload::floor(client, &ns, &round.load, render_config, kinds).await?;
    let elapsed = observer
        .wait_children(&round.expected, start, opts.timeout)
        .await?;
    Ok((elapsed, CpuSplit::now(None) - machine_before, applied))
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn settings(
    namespace: &str,
    env: &TestEnv,
    opts: &BenchOptions,
    resync: u64,
    tag: &str,
) -> OperatorSettings {
    OperatorSettings {
        namespace: namespace.to_string(),
        kubeconfig: env.kubeconfig_path().to_owned(),
        resync_seconds: resync,
        azure: false,
        extra: Vec::new(),
        log: opts.work_dir.join(format!("operator-{tag}.log")),
    }
}

/// Settles after the HTTP endpoint answers: the watches list and sync.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(env: &TestEnv, opts: &BenchOptions) -> Result<BenchReport> {
    std::fs::create_dir_all(&opts.work_dir)?;
    let client = env.client().await?;
    let audit_log = env
        .audit_log_path()
        .context("the control plane has no audit log")?
        .to_owned();
    let render_config =
        homelab_operator::config::RunConfig::from_args(["--azure=false"])?.render_config();
    let kinds = workload::installed_kinds(&client, "default").await;
    let mut report = BenchReport {
        n: opts.n,
        large_n: opts.large_n,
        secrets: opts.secrets,
        azure_pairs: opts.azure_pairs,
        binary_bytes: crate::operator::file_size(&opts.operator.binary),
        ..BenchReport::default()
    };

    // Idle footprint: no objects.
    {
        let ns = env.namespace("bench-idle").await?;
        let mut operator =
            OperatorProcess::spawn(&opts.operator, &settings(&ns, env, opts, 3600, "idle")).await?;
        operator.wait_http(Duration::from_secs(60)).await?;
        tokio::time::sleep(SETTLE).await;
        report.rss_idle = operator.peak_rss();
        operator.stop().await?;
    }

    // Convergence of N pairs against its floor, in rounds: on a shared machine the control
    // plane's speed drifts within minutes, so each round times the operator and then the floor
    // back to back, and the ratio reported is the median of the rounds' ratios. The first
    // round's namespace stays for the latency and restart measurements.
    let first = converge_round(
        env,
        opts,
        &client,
        &kinds,
        &render_config,
        &audit_log,
        "converge",
    )
    .await?;
    report.children = first.expected.len();
    report.converge_writes = Some(first.writes.clone());
    report.converge_cpu = Some(first.machine_cpu.operator);
    report.rss_n = first.operator.peak_rss();
    let (floor, floor_cpu, applied) =
        floor_round(env, opts, &client, &kinds, &render_config, &first).await?;
    report.floor_children = applied;
    report.rounds.push((first.elapsed, floor));
    report.round_cpu.push((first.machine_cpu, floor_cpu));
    for round in 2..=opts.rounds.max(1) {
        let tag = format!("converge-{round}");
        let other =
            converge_round(env, opts, &client, &kinds, &render_config, &audit_log, &tag).await?;
        let elapsed = other.elapsed;
        let (floor, floor_cpu, _) =
            floor_round(env, opts, &client, &kinds, &render_config, &other).await?;
        other.operator.stop().await?;
        report.rounds.push((elapsed, floor));
        report.round_cpu.push((other.machine_cpu, floor_cpu));
    }
    let Round {
        ns,
        load,
        observer,
        operator,
        created,
        ..
    } = first;

    // Reaction latency: one field of one HomelabApp at a time, until the Deployment shows it.
    if opts.n > 0 {
        let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
        let mut deployments = BTreeMap::new();
        for (db, app) in created.databases.iter().zip(&created.apps) {
            let (_, children) = workload::render_pair(&created.policy, db, app, &render_config)?;
            if let Some(deployment) = children
                .iter()
                .find(|o| workload::type_of(o).1 == "Deployment")
            {
                deployments.insert(
                    app.metadata.name.clone().unwrap_or_default(),
                    deployment.metadata.name.clone().unwrap_or_default(),
                );
            }
        }
        let mut replicas: BTreeMap<String, i64> = BTreeMap::new();
        for i in 0..opts.changes {
            let name = load.name(i % opts.n);
            let Some(deployment) = deployments.get(&name) else {
                continue;
            };
            let current = replicas.entry(name.clone()).or_insert(1);
            let next = if *current == 1 { 2 } else { 1 };
            *current = next;
            let mut changes = observer.subscribe();
            let sent = Instant::now();
            apps.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": next}})),
            )
            .await?;
            let seen = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match changes.recv().await {
                        Ok(change)
                            if change.kind == "Deployment"
                                && change.object.metadata.name.as_deref()
                                    == Some(deployment.as_str())
                                && change.object.data["spec"]["replicas"].as_i64()
                                    == Some(next) =>
                        {
                            return Some(change.at);
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return None,
                    }
                }
            })
            .await;
            match seen {
                Ok(Some(at)) => report.latencies.push(at.saturating_duration_since(sent)),
                _ => report.latency_failures += 1,
            }
        }
        // Let the status writes of the last change land before the restart window.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    operator.stop().await?;

    // Write amplification and start-up: restart over an unchanged world.
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let offset = crate::audit::offset(&audit_log)?;
        let mut operator = OperatorProcess::spawn(
            &opts.operator,
            &settings(&ns, env, opts, opts.resync_seconds, "restart"),
        )
        .await?;
        report.startup_http = Some(operator.wait_http(Duration::from_secs(60)).await?);
        if opts.n > 0 {
            report.startup_first_reconcile = Some(
                operator
                    .wait_first_reconcile(Duration::from_secs(60))
                    .await?,
            );
        }
        let resync = Duration::from_secs(opts.resync_seconds.max(10));
        let window_end = operator.started + 2 * resync + Duration::from_secs(2);
        tokio::time::sleep(window_end.saturating_duration_since(Instant::now())).await;
        report.restart_reconciles = operator
            .metric("homelab_operator_reconciles_total", "")
            .await;
        report.restart_window = Some(operator.started.elapsed());
        report.rss_restart = operator.peak_rss();
        operator.stop().await?;
        // Audit lines follow the responses shortly.
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.restart_writes = Some(crate::audit::writes(&audit_log, offset, &ns)?);
    }
    drop(observer);

    // Footprint at large N.
    if opts.large_n > 0 {
        let ns = env.namespace("bench-large").await?;
        let load = Workload::new(&format!("l{}", suffix(&ns)), opts.large_n);
        let observer = Observer::start(&client, &ns, &kinds);
        let mut operator =
            OperatorProcess::spawn(&opts.operator, &settings(&ns, env, opts, 3600, "large"))
                .await?;
        operator.wait_http(Duration::from_secs(60)).await?;
        tokio::time::sleep(SETTLE).await;
        let cpu_before = operator.cpu_seconds();
        let start = Instant::now();
        let created = workload::create(&client, &ns, &load).await?;
        let expected = workload::expected_children(&created, &render_config, &kinds)?;
        match observer
            .wait_converged(opts.large_n, &expected, start, opts.timeout * 4)
            .await
        {
            Ok(elapsed) => report.converge_large = Some(elapsed),
            Err(e) => report.notes.push(format!("large run: {e}")),
        }
        report.converge_large_cpu = cpu_before
            .zip(operator.cpu_seconds())
            .map(|(before, after)| after - before);
        report.rss_large = operator.peak_rss();
        operator.stop().await?;

        // Started again over the converged pairs: every cache lists everything at once.
        let mut operator = OperatorProcess::spawn(
            &opts.operator,
            &settings(&ns, env, opts, 3600, "large-restart"),
        )
        .await?;
        let reconciled = (2 * opts.large_n + 1) as f64;
        match operator.wait_reconciles(reconciled, opts.timeout).await {
            Ok(_) => report.rss_large_restart = operator.peak_rss(),
            Err(e) => report.notes.push(format!("large restart: {e}")),
        }
        operator.stop().await?;
    }

    // Unrelated Secrets in the watched namespace.
    if opts.secrets > 0 {
        let ns = env.namespace("bench-secrets").await?;
        create_secrets(&client, &ns, opts.secrets, opts.secret_bytes).await?;
        let mut operator =
            OperatorProcess::spawn(&opts.operator, &settings(&ns, env, opts, 3600, "secrets"))
                .await?;
        operator.wait_http(Duration::from_secs(60)).await?;
        tokio::time::sleep(SETTLE).await;
        report.rss_secrets = operator.peak_rss();
        operator.stop().await?;
    }

    // Azure requests in steady state.
    if opts.azure_pairs > 0 {
        match &opts.emulated {
            Some(emulated) => match AzureEmulators::start().await {
                Ok(az) => {
                    if let Err(e) = azure_steady_state(env, opts, emulated, &az, &mut report).await
                    {
                        report.notes.push(format!("Azure run failed: {e:#}"));
                    }
                }
                Err(e) => report.notes.push(format!(
                    "Azure run skipped: the emulators did not start: {e}"
                )),
            },
            None => report
                .notes
                .push("Azure run skipped: no emulator-wired operator binary".into()),
        }
    }
    Ok(report)
}

async fn azure_steady_state(
    env: &TestEnv,
    opts: &BenchOptions,
    emulated: &OperatorCommand,
    az: &AzureEmulators,
    report: &mut BenchReport,
) -> Result<()> {
    let client = env.client().await?;
    let ns = env.namespace("bench-azure").await?;
    let mut load = Workload::new(&format!("a{}", suffix(&ns)), opts.azure_pairs);
    load.blob_endpoint = Some(az.blob_service_url().to_string());
    load.storage_account = az.account_name().to_string();
    let mut command = emulated.clone();
    command.env = az
        .env_vars()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut settings = settings(&ns, env, opts, opts.resync_seconds, "azure");
    settings.azure = true;
    settings
        .extra
        .push(crate::emulators::secret_store(&client, &format!("vault-{ns}"), az).await?);
    let mut operator = OperatorProcess::spawn(&command, &settings).await?;
    operator.wait_http(Duration::from_secs(60)).await?;
    workload::create(&client, &ns, &load).await?;
    wait_azure_side(&client, &ns, opts.azure_pairs, opts.timeout).await?;
    const PROBES: &str = "operation=\"probe_wal_archive\"";
    // All requests, and the archive listings among them: the family must have samples (the
    // databases converged through Azure), while no listing yet is zero listings.
    let requests = || {
        let operator = &operator;
        async move {
            let body = operator
                .metrics()
                .await
                .context("/metrics does not answer")?;
            const NAME: &str = "homelab_operator_azure_requests_total";
            let all = metric_sum(&body, NAME, "").with_context(|| {
                format!("/metrics has no {NAME} after the Azure side converged")
            })?;
            anyhow::Ok((all, metric_sum(&body, NAME, PROBES).unwrap_or(0.0)))
        }
    };
    let (before, probes_before) = requests().await?;
    report.azure_converge_requests = Some(before - probes_before);
    let start = Instant::now();
    tokio::time::sleep(opts.azure_window).await;
    let (after, probes_after) = requests().await?;
    let window = start.elapsed();
    let per_db_hour = |count: f64| count / opts.azure_pairs as f64 * 3600.0 / window.as_secs_f64();
    let probes = probes_after - probes_before;
    report.azure_window = Some(window);
    report.azure_window_requests = Some(after - before - probes);
    report.azure_per_db_hour = Some(per_db_hour(after - before - probes));
    report.wal_probes_per_db_hour = Some(per_db_hour(probes));
    operator.stop().await?;
    Ok(())
}

/// Waits until every AppDatabase in `namespace` reports where its password came from and when
/// its backup SAS expires: the Azure side is complete.
pub async fn wait_azure_side(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let api: Api<homelab_api::AppDatabase> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    loop {
        let list = api.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|db| {
                db.status.as_ref().is_some_and(|s| {
                    s.password_origin.is_some()
                        && s.backup.as_ref().is_some_and(|b| b.sas_expires.is_some())
                })
            })
            .count();
        if done >= count {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{done} of {count} databases have their Azure side after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn create_secrets(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    bytes: usize,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let payload = k8s_openapi::ByteString(vec![b'x'; bytes]);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let payload = payload.clone();
            async move {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("unrelated-{i}")),
                        ..Default::default()
                    },
                    data: Some([("blob".to_string(), payload)].into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The random part of a test namespace's name, for unique object names.
pub fn suffix(namespace: &str) -> String {
    namespace.rsplit('-').next().unwrap_or("x").to_string()
}
