//! The operator as a separate process: spawned from its binary with a kubeconfig, observed through
//! `/proc` and `/metrics`, stopped with SIGTERM or killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How to start an operator process.
#[derive(Clone, Debug)]
pub struct OperatorCommand {
    /// The executable.
    pub binary: PathBuf,
    /// Arguments before the settings (`run` for `homelab-operator`).
    pub prefix: Vec<String>,
    /// Extra environment (the Azure emulators' addresses for the emulated build).
    pub env: Vec<(String, String)>,
}

impl OperatorCommand {
    /// `homelab-operator run`, the released binary.
    pub fn released(binary: PathBuf) -> Self {
        Self {
            binary,
            prefix: vec!["run".into()],
            env: Vec::new(),
        }
    }
}

/// Settings of one operator process.
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    pub namespace: String,
    pub kubeconfig: PathBuf,
    pub resync_seconds: u64,
    pub azure: bool,
    pub extra: Vec<String>,
    pub log: PathBuf,
}

/// A running operator process.
pub struct OperatorProcess {
    child: Child,
    pub pid: u32,
    pub http_port: u16,
    pub started: Instant,
}

impl OperatorProcess {
    pub async fn spawn(command: &OperatorCommand, settings: &OperatorSettings) -> Result<Self> {
        let http_port = free_port()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.log)
            .with_context(|| format!("opening {}", settings.log.display()))?;
        let mut cmd = Command::new(&command.binary);
        cmd.args(&command.prefix)
            .arg(format!("--namespaces={}", settings.namespace))
            .arg(format!("--azure={}", settings.azure))
            .arg("--leader-election=false")
            .arg(format!("--http-addr=127.0.0.1:{http_port}"))
            .arg(format!("--resync-seconds={}", settings.resync_seconds))
            .args(&settings.extra)
            .env("KUBECONFIG", &settings.kubeconfig)
            .env("RUST_LOG", "warn")
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", command.binary.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        Ok(Self {
            child,
            pid,
            http_port,
            started,
        })
    }

    /// SIGKILL, as an OOM kill or a node failure would.
    pub async fn kill9(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub async fn stop(mut self) -> Result<()> {
        signal(self.pid, "TERM");
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            self.child.start_kill()?;
            self.child.wait().await?;
        }
        Ok(())
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set size in bytes (VmHWM).
    pub fn peak_rss(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmHWM:").map(|k| k * 1024)
    }

    /// Current resident set size in bytes (VmRSS).
    pub fn rss(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmRSS:").map(|k| k * 1024)
    }

    /// CPU seconds (user + system) spent so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        crate::cpu::of_process(&self.pid.to_string())
    }

    /// The `/metrics` text, if the endpoint answers.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.http_port, "/metrics").await
    }

    /// Sum of the samples of `name` whose labels contain `labels`; `None` when `/metrics` does
    /// not answer or has no such sample (absent is not zero).
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let body = self.metrics().await?;
        metric_sum(&body, name, labels)
    }

    /// Waits until `homelab_operator_reconciles_total` reaches `count`; the time since spawn.
    pub async fn wait_reconciles(&mut self, count: f64, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.metric("homelab_operator_reconciles_total", "").await
                && value >= count
            {
                return Ok(self.started.elapsed());
            }
            if !self.running() {
                bail!("the operator process exited before {count} reconciles");
            }
            if Instant::now() > deadline {
                bail!("fewer than {count} reconciles within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `homelab_operator_reconciles_total` is above zero; the time since spawn.
    pub async fn wait_first_reconcile(&mut self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.metric("homelab_operator_reconciles_total", "").await
                && value > 0.0
            {
                return Ok(self.started.elapsed());
            }
            if !self.running() {
                bail!("the operator process exited before its first reconcile");
            }
            if Instant::now() > deadline {
                bail!("no reconcile within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `/readyz` answers 200: the child caches are filled and the controllers run.
    /// The time since spawn.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get(self.http_port, "/readyz").await.is_some() {
                return Ok(self.started.elapsed());
            }
            if !self.running() {
                bail!("the operator process exited");
            }
            if Instant::now() > deadline {
                bail!("/readyz did not answer 200 within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/metrics` answers; the time since spawn.
    pub async fn wait_http(&mut self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metrics().await.is_some() {
                return Ok(self.started.elapsed());
            }
            if !self.running() {
                bail!("the operator process exited");
            }
            if Instant::now() > deadline {
                bail!("/metrics did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Sum of the samples of `name` (exact metric name, any labels containing `labels`).
pub fn metric_sum(body: &str, name: &str, labels: &str) -> Option<f64> {
    let samples: Vec<f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// Sends a signal through the `kill` command (std has no signal API and unsafe code is forbidden).
fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn http_get(port: u16, path: &str) -> Option<String> {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The size of a file in bytes.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}
