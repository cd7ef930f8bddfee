//! Azurite, the Azure Storage emulator, run as a child process serving the Blob service.
//!
//! `hack/install-azurite.sh` installs it from npm into
//! `${HOMELAB_CACHE:-$XDG_CACHE_HOME/homelab-operator}/azurite-<version>`; `HOMELAB_AZURITE_BLOB`
//! may name another `azurite-blob` executable.
//!
//! Started with: HTTPS (`--cert`/`--key`, a leaf of the test CA) because Azurite accepts bearer
//! tokens only over HTTPS, and the official Rust SDK authenticates only with bearer tokens or SAS;
//! `--oauth basic` (claims are checked, signatures are not); `--skipApiVersionCheck` because the
//! SDK sends a newer `x-ms-version` than Azurite knows; `--loose` to ignore headers Azurite does not
//! implement; `--disableTelemetry` because the telemetry host is unreachable from test machines;
//! `--inMemoryPersistence`, so nothing is left on disk. Consequently a stop and start loses all
//! containers and blobs, as if the account had been emptied.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, free_port};

use super::error::AzureEmulatorError;

/// The Azurite version `hack/install-azurite.sh` installs.
pub const AZURITE_VERSION: &str = "3.35.0";
/// Azurite's built-in account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";
/// The key of Azurite's built-in account (public, documented by Microsoft).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `hack/install-azurite.sh` puts `azurite-blob` (honouring `HOMELAB_CACHE` and
/// `AZURITE_VERSION` as it does), or `HOMELAB_AZURITE_BLOB`.
pub fn azurite_blob_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HOMELAB_AZURITE_BLOB") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("HOMELAB_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("homelab-operator"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/homelab-operator"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache/homelab-operator"));
    let version = std::env::var("AZURITE_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| AZURITE_VERSION.to_owned());
    cache
        .join(format!("azurite-{version}"))
        .join("node_modules/.bin/azurite-blob")
}

/// A supervised `azurite-blob` process on a fixed address (loopback by default).
#[derive(Debug)]
pub(crate) struct Azurite {
    program: PathBuf,
    args: Vec<String>,
    log_path: PathBuf,
    host: Ipv4Addr,
    port: u16,
    child: Mutex<Option<ChildProcess>>,
}

impl Azurite {
    /// Starts Azurite with the TLS files `cert` and `key`, logging to `dir/azurite.log`.
    pub(crate) async fn start_new(
        dir: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, AzureEmulatorError> {
        let program = installed_program()?;
        // The free port may be taken by someone else before Azurite binds it: try a few.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let azurite = Self::new(
                program.clone(),
                dir,
                cert,
                key,
                Ipv4Addr::LOCALHOST,
                free_port()?,
            );
            let _ = std::fs::remove_file(&azurite.log_path);
            match azurite.start().await {
                Ok(()) => return Ok(azurite),
                Err(e) if attempt < 3 && azurite.log_mentions("EADDRINUSE") => {
                    tracing::debug!("azurite-blob lost its port, retrying: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts Azurite listening on `host:port` with the TLS files `cert` and `key`, logging to
    /// `dir/azurite.log`. `host` must be an address of this machine: an address that is not would
    /// be routed out of it while waiting for the port.
    pub(crate) async fn start_at(
        dir: &Path,
        cert: &Path,
        key: &Path,
        host: Ipv4Addr,
        port: u16,
    ) -> Result<Self, AzureEmulatorError> {
        let program = installed_program()?;
        let azurite = Self::new(program, dir, cert, key, host, port);
        let _ = std::fs::remove_file(&azurite.log_path);
        azurite.start().await?;
        Ok(azurite)
    }

    fn new(
        program: PathBuf,
        dir: &Path,
        cert: &Path,
        key: &Path,
        host: Ipv4Addr,
        port: u16,
    ) -> Self {
        let args = [
            "--blobHost",
            &host.to_string(),
            "--blobPort",
            &port.to_string(),
            "--oauth",
            "basic",
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]
        .map(str::to_owned)
        .to_vec();
        Self {
            program,
            args,
            log_path: dir.join("azurite.log"),
            host,
            port,
            child: Mutex::new(None),
        }
    }

    fn log_mentions(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log_path).is_ok_and(|log| log.contains(needle))
    }

    /// `https://<host>:<port>/devstoreaccount1` (`:443` left out), without a trailing slash.
    pub(crate) fn blob_url(&self) -> String {
        match self.port {
            443 => format!("https://{}/{ACCOUNT_NAME}", self.host),
            port => format!("https://{}:{port}/{ACCOUNT_NAME}", self.host),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(|c| c.exit_status().is_none())
    }

    /// Starts the process on the same port unless it is running.
    pub(crate) async fn start(&self) -> Result<(), AzureEmulatorError> {
        if self.is_running() {
            return Ok(());
        }
        let child =
            ChildProcess::spawn("azurite-blob", &self.program, &self.args, &self.log_path).await?;
        wait_for_listener(
            &child,
            SocketAddrV4::new(self.host, self.port),
            START_TIMEOUT,
        )
        .await?;
        *self.slot() = Some(child);
        Ok(())
    }

    /// Kills the process; connections are refused until [`start`](Self::start).
    pub(crate) fn stop(&self) {
        if let Some(child) = self.slot().take() {
            child.kill();
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<ChildProcess>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `azurite-blob`, or [`AzureEmulatorError::AzuriteMissing`] naming `hack/install-azurite.sh`.
fn installed_program() -> Result<PathBuf, AzureEmulatorError> {
    let program = azurite_blob_path();
    if program.is_file() {
        Ok(program)
    } else {
        Err(AzureEmulatorError::AzuriteMissing {
            looked_for: program.display().to_string(),
        })
    }
}

/// Waits until `process` accepts connections on `addr`, failing early if it exits.
async fn wait_for_listener(
    process: &ChildProcess,
    addr: SocketAddrV4,
    timeout: Duration,
) -> Result<(), crate::Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(process.exited_error(status));
        }
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                process.timeout_error(format!("{} to listen on {addr}", process.name()), timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
