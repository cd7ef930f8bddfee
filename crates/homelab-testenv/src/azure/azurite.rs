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

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::process::{ChildProcess, free_port, wait_for_port};

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

/// A supervised `azurite-blob` process on a fixed loopback port.
#[derive(Debug)]
pub(crate) struct Azurite {
    program: PathBuf,
    args: Vec<String>,
    log_path: PathBuf,
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
        let program = azurite_blob_path();
        if !program.is_file() {
            return Err(AzureEmulatorError::AzuriteMissing {
                looked_for: program.display().to_string(),
            });
        }
        // The free port may be taken by someone else before Azurite binds it: try a few.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let azurite = Self::new(program.clone(), dir, cert, key, free_port()?);
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

    fn new(program: PathBuf, dir: &Path, cert: &Path, key: &Path, port: u16) -> Self {
        let args = [
            "--blobHost",
            "127.0.0.1",
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
            port,
            child: Mutex::new(None),
        }
    }

    fn log_mentions(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log_path).is_ok_and(|log| log.contains(needle))
    }

    /// `https://127.0.0.1:<port>/devstoreaccount1`, without a trailing slash.
    pub(crate) fn blob_url(&self) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT_NAME}", self.port)
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
        wait_for_port(&child, self.port, START_TIMEOUT).await?;
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
