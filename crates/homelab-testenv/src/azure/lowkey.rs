//! A real Lowkey Vault (a Key Vault emulator written in Java), used instead of
//! [`KeyVaultEmulator`](super::KeyVaultEmulator) when `LOWKEY_VAULT_JAR` names its application jar.
//!
//! The jar runs on `LOWKEY_VAULT_JAVA` or, by default, the Temurin 25 JDK, serving HTTPS on a free
//! loopback port (`--server.port`) with the test CA's leaf, packed into a PKCS#12 key store with
//! `openssl` and handed over with Spring Boot's `server.ssl.key-store` properties. Lowkey Vault
//! registers a vault for `https://127.0.0.1:<server.port>` by default, which is the vault URL used.
//! It keeps secrets in memory, so a stop and start empties it, and it cannot inject faults.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::process::{ChildProcess, free_port, wait_for_port};

use super::error::AzureEmulatorError;

const DEFAULT_JAVA: &str = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Protects nothing: the key store holds a throwaway test key.
const KEY_STORE_PASSWORD: &str = "homelab-testenv";

/// The jar named by `LOWKEY_VAULT_JAR`, if any.
pub fn lowkey_vault_jar() -> Option<PathBuf> {
    std::env::var_os("LOWKEY_VAULT_JAR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[derive(Debug)]
pub(crate) struct LowkeyVault {
    java: PathBuf,
    args: Vec<String>,
    log_path: PathBuf,
    port: u16,
    child: Mutex<Option<ChildProcess>>,
}

impl LowkeyVault {
    pub(crate) async fn start_new(
        jar: &Path,
        dir: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, AzureEmulatorError> {
        let java = std::env::var_os("LOWKEY_VAULT_JAVA")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_JAVA));
        let port = free_port()?;
        let key_store = dir.join("lowkey-vault.p12");
        let openssl = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-name", "lowkey-vault", "-passout"])
            .arg(format!("pass:{KEY_STORE_PASSWORD}"))
            .arg("-in")
            .arg(cert)
            .arg("-inkey")
            .arg(key)
            .arg("-out")
            .arg(&key_store)
            .output()
            .map_err(|e| crate::Error::Spawn {
                what: "openssl (to build Lowkey Vault's key store)".into(),
                reason: e.to_string(),
            })?;
        if !openssl.status.success() {
            return Err(crate::Error::Spawn {
                what: "openssl pkcs12 -export".into(),
                reason: String::from_utf8_lossy(&openssl.stderr).into_owned(),
            }
            .into());
        }
        let args = vec![
            "-jar".to_owned(),
            jar.display().to_string(),
            format!("--server.port={port}"),
            format!("--server.ssl.key-store={}", key_store.display()),
            "--server.ssl.key-store-type=PKCS12".to_owned(),
            format!("--server.ssl.key-store-password={KEY_STORE_PASSWORD}"),
            "--server.ssl.key-alias=lowkey-vault".to_owned(),
        ];
        let vault = Self {
            java,
            args,
            log_path: dir.join("lowkey-vault.log"),
            port,
            child: Mutex::new(None),
        };
        vault.start().await?;
        Ok(vault)
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(|c| c.exit_status().is_none())
    }

    pub(crate) async fn start(&self) -> Result<(), AzureEmulatorError> {
        if self.is_running() {
            return Ok(());
        }
        let child =
            ChildProcess::spawn("lowkey-vault", &self.java, &self.args, &self.log_path).await?;
        wait_for_port(&child, self.port, START_TIMEOUT).await?;
        *self.slot() = Some(child);
        Ok(())
    }

    pub(crate) fn stop(&self) {
        if let Some(child) = self.slot().take() {
            child.kill();
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<ChildProcess>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }
}
