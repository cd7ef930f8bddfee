//! Azure emulators for tests: Azurite for Blob Storage, and a Key Vault secrets emulator.
//!
//! [`AzureEmulators::get`] starts both once per test process and hands out a shared
//! `&'static` handle: Azurite (`azurite-blob`, see [`azurite_blob_path`]) as a child process, and
//! [`KeyVaultEmulator`] in-process (or a real Lowkey Vault when `LOWKEY_VAULT_JAR` is set). Both
//! serve HTTPS with a leaf of a throwaway CA; [`AzureEmulators::http_client`] trusts that CA and
//! [`AzureEmulators::credential`] issues tokens both accept, so the official Azure SDK crates work
//! against them unchanged.
//!
//! Servers and process supervision run on a dedicated runtime whose threads live as long as the
//! process (every `#[tokio::test]` has its own runtime, which ends with the test), and children
//! are forked by [`crate::process`]'s spawner thread so that they die with the test process.
//!
//! **Attach mode.** When [`ENV_AZURITE_URL`], [`ENV_KEY_VAULT_URL`] and [`ENV_CA_FILE`] are set
//! (as `homelab-testenv exec` does after [`AzureEmulators::start`] and
//! [`AzureEmulators::env_vars`]), `get` uses those endpoints and starts nothing.
//!
//! **Outages and faults.** The shared instance is used by tests running in parallel, so tests that
//! stop an emulator or inject faults take a private instance from [`AzureEmulators::start`].
//!
//! **Missing Azurite.** [`AzureEmulators::get_or_skip`] fails the test when Azurite is not
//! installed, unless a local run opted out of it (the one rule of [`crate::skip`]); then it
//! records the skip and returns `None`.
//!
//! **Key Vault alone.** [`AzureEmulators::key_vault`] starts only the Key Vault emulator, so Key
//! Vault tests neither need nor wait for Azurite.
//!
//! **Pod-facing emulators.** [`AzureEmulators::start_pod_facing`] starts a private set on port 443
//! of given addresses, under the host names Azure clients insist on
//! (`devstoreaccount1.blob.core.windows.net`, `<vault>.vault.azure.net`,
//! `login.microsoftonline.com`), with an Entra ID token endpoint ([`EntraIdEmulator`]) for a
//! service principal: see [`pod_facing`].

mod azurite;
mod credential;
mod entra;
mod error;
mod keyvault;
mod lowkey;
pub mod pod_facing;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use tokio::sync::OnceCell;

use crate::pki::TestCa;
use crate::process::RunDir;

pub use azurite::{ACCOUNT_KEY, ACCOUNT_NAME, AZURITE_VERSION, azurite_blob_path};
pub use credential::{EMULATOR_OBJECT_ID, EMULATOR_TENANT_ID, EmulatorCredential};
pub use entra::{ENTRA_AUTHORITY_HOST, EntraIdEmulator, ServicePrincipal};
pub use error::AzureEmulatorError;
pub use keyvault::{KEY_VAULT_RESOURCE, KeyVaultEmulator, KeyVaultFault};
pub use lowkey::lowkey_vault_jar;
pub use pod_facing::{POD_FACING_PORT, PodFacing, PodFacingEndpoints};

use azurite::Azurite;
use lowkey::LowkeyVault;

/// Blob service URL of running emulators (`https://127.0.0.1:<port>/devstoreaccount1`).
pub const ENV_AZURITE_URL: &str = "HOMELAB_TESTENV_AZURITE_URL";
/// Key Vault URL of running emulators (`https://127.0.0.1:<port>`).
pub const ENV_KEY_VAULT_URL: &str = "HOMELAB_TESTENV_KEY_VAULT_URL";
/// PEM file of the CA that signed the emulators' certificates.
pub const ENV_CA_FILE: &str = "HOMELAB_TESTENV_AZURE_CA_FILE";

static SHARED: OnceCell<Result<AzureEmulators, Arc<AzureEmulatorError>>> = OnceCell::const_new();
static SHARED_KEY_VAULT: OnceCell<Result<AzureEmulators, Arc<AzureEmulatorError>>> =
    OnceCell::const_new();
static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The runtime that serves the Key Vault emulator; its thread lives until the process exits.
fn runtime() -> Result<tokio::runtime::Handle, AzureEmulatorError> {
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("homelab-testenv-azure")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(e) => Err(AzureEmulatorError::KeyVault(format!(
            "cannot build the emulator runtime: {e}"
        ))),
    }
}

#[derive(Debug)]
enum KeyVaultBackend {
    Emulator(KeyVaultEmulator),
    Lowkey(LowkeyVault),
}

/// Emulators started by this process. Fields drop in order: servers first, the directory last.
#[derive(Debug)]
struct Local {
    /// Only in pod-facing sets; held to be stopped on drop.
    _entra: Option<EntraIdEmulator>,
    key_vault: KeyVaultBackend,
    /// `None` in a Key Vault only set ([`AzureEmulators::key_vault`]).
    azurite: Option<Azurite>,
    _run_dir: RunDir,
}

/// Running (or attached) Azure emulators and what a client needs to use them.
#[derive(Debug)]
pub struct AzureEmulators {
    /// `None` in a Key Vault only set ([`AzureEmulators::key_vault`]).
    blob_url: Option<String>,
    key_vault_url: String,
    ca_pem: String,
    ca_file: PathBuf,
    /// Built at set-up, which checks the CA; see [`AzureEmulators::http_client`].
    http: reqwest::Client,
    credential: Arc<EmulatorCredential>,
    /// Set by [`AzureEmulators::start_pod_facing`].
    pod_facing: Option<PodFacingEndpoints>,
    local: Option<Local>,
}

impl AzureEmulators {
    /// The process-wide emulators, started (or attached) on first use.
    ///
    /// # Panics
    ///
    /// When they cannot be started; the message says what to do. For use in tests.
    pub async fn get() -> &'static Self {
        match Self::try_get().await {
            Ok(emulators) => emulators,
            Err(e) => panic!("Azure emulators are not available: {e}"),
        }
    }

    /// The process-wide emulators, or why they could not be started. A failure is remembered:
    /// later calls return the same error without trying again.
    pub async fn try_get() -> Result<&'static Self, Arc<AzureEmulatorError>> {
        let shared = SHARED
            .get_or_init(|| async {
                match Self::attach_from_env() {
                    Ok(Some(attached)) => Ok(attached),
                    Ok(None) => Self::start().await.map_err(Arc::new),
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await;
        shared.as_ref().map_err(Arc::clone)
    }

    /// Like [`get`](Self::get), but when Azurite is not installed: fails the test, or, in a
    /// local run that opted out of Azurite ([`crate::skip`]), records the skip and returns `None`.
    ///
    /// # Panics
    ///
    /// When the emulators cannot start, unless the run opted out of a missing Azurite.
    pub async fn get_or_skip(test: &str) -> Option<&'static Self> {
        match Self::try_get().await {
            Ok(emulators) => Some(emulators),
            Err(e) if matches!(*e, AzureEmulatorError::AzuriteMissing { .. }) => {
                crate::skip::missing(test, crate::skip::Component::Azurite, &e);
                None
            }
            Err(e) => panic!("Azure emulators are not available: {e}"),
        }
    }

    /// Like [`start`](Self::start), with the rule of [`get_or_skip`](Self::get_or_skip).
    ///
    /// # Panics
    ///
    /// When the emulators cannot start, unless the run opted out of a missing Azurite.
    pub async fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start().await {
            Ok(emulators) => Some(emulators),
            Err(e) if matches!(e, AzureEmulatorError::AzuriteMissing { .. }) => {
                crate::skip::missing(test, crate::skip::Component::Azurite, &e);
                None
            }
            Err(e) => panic!("Azure emulators could not be started: {e}"),
        }
    }

    /// The process-wide Key Vault emulator alone (attached to the one named by the environment,
    /// when that is set): what Key Vault tests use, so that they do not depend on Azurite. Its
    /// [`blob_service_url`](Self::blob_service_url) panics.
    ///
    /// # Panics
    ///
    /// When the Key Vault emulator cannot start; for use in tests.
    pub async fn key_vault() -> &'static Self {
        let shared = SHARED_KEY_VAULT
            .get_or_init(|| async {
                match Self::attach_from_env() {
                    Ok(Some(attached)) => Ok(attached),
                    Ok(None) => Self::start_with(false).await.map_err(Arc::new),
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await;
        match shared {
            Ok(emulators) => emulators,
            Err(e) => panic!("the Key Vault emulator is not available: {e}"),
        }
    }

    /// Starts a private set of emulators owned by the caller and stopped when dropped. Used by
    /// `homelab-testenv exec` (with [`env_vars`](Self::env_vars)) and by tests that stop
    /// emulators or inject faults.
    pub async fn start() -> Result<Self, AzureEmulatorError> {
        Self::start_with(true).await
    }

    /// A private Key Vault emulator without Azurite, for tests that inject faults or delays
    /// into Key Vault only.
    pub async fn start_private_key_vault() -> Result<Self, AzureEmulatorError> {
        Self::start_with(false).await
    }

    /// Starts Key Vault, and Azurite when `with_azurite`.
    async fn start_with(with_azurite: bool) -> Result<Self, AzureEmulatorError> {
        let runtime = runtime()?;
        let run_dir = RunDir::create()?;
        let dir = run_dir.path().to_owned();
        let ca = TestCa::generate("homelab-testenv Azure emulators CA")?;
        let leaf = ca.issue_server(&["127.0.0.1", "localhost"])?;
        let ca_file = dir.join("azure-ca.pem");
        let cert_file = dir.join("azure-emulators.crt");
        let key_file = dir.join("azure-emulators.key");
        for (path, content) in [
            (&ca_file, ca.cert_pem()),
            (&cert_file, leaf.cert_pem.as_str()),
            (&key_file, leaf.key_pem.as_str()),
        ] {
            std::fs::write(path, content)
                .map_err(crate::Error::io(format!("writing {}", path.display())))?;
        }

        let azurite_dir = dir.join("azurite");
        std::fs::create_dir_all(&azurite_dir).map_err(crate::Error::io(format!(
            "creating {}",
            azurite_dir.display()
        )))?;
        let azurite = if with_azurite {
            Some(Azurite::start_new(&azurite_dir, &cert_file, &key_file).await?)
        } else {
            None
        };
        let key_vault = match lowkey_vault_jar() {
            Some(jar) => KeyVaultBackend::Lowkey(
                LowkeyVault::start_new(&jar, &dir, &cert_file, &key_file).await?,
            ),
            None => KeyVaultBackend::Emulator(
                KeyVaultEmulator::start_new(&leaf.cert_pem, &leaf.key_pem, runtime).await?,
            ),
        };
        let key_vault_url = match &key_vault {
            KeyVaultBackend::Emulator(kv) => kv.url().to_owned(),
            KeyVaultBackend::Lowkey(kv) => kv.url(),
        };
        let ca_pem = ca.cert_pem().to_owned();
        Ok(Self {
            blob_url: azurite.as_ref().map(Azurite::blob_url),
            key_vault_url,
            http: http_client(&ca_pem, None)?,
            ca_pem,
            ca_file,
            credential: Arc::new(EmulatorCredential::new()),
            pod_facing: None,
            local: Some(Local {
                _entra: None,
                key_vault,
                azurite,
                _run_dir: run_dir,
            }),
        })
    }

    /// Emulators started elsewhere, named by [`ENV_AZURITE_URL`], [`ENV_KEY_VAULT_URL`] and
    /// [`ENV_CA_FILE`]; `None` when none of them is set.
    pub fn attach_from_env() -> Result<Option<Self>, AzureEmulatorError> {
        let vars = [ENV_AZURITE_URL, ENV_KEY_VAULT_URL, ENV_CA_FILE]
            .map(|name| (name, std::env::var(name).ok().filter(|v| !v.is_empty())));
        if vars.iter().all(|(_, v)| v.is_none()) {
            return Ok(None);
        }
        let mut values = Vec::new();
        for (name, value) in &vars {
            match value {
                Some(v) => values.push(v.clone()),
                None => {
                    return Err(AzureEmulatorError::Attach {
                        variable: name,
                        value: String::new(),
                        reason: format!(
                            "unset, while {} are set: set all three or none",
                            vars.iter()
                                .filter(|(_, v)| v.is_some())
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        let [blob_url, key_vault_url, ca_file] = [&values[0], &values[1], &values[2]];
        for (variable, url) in [
            (ENV_AZURITE_URL, blob_url),
            (ENV_KEY_VAULT_URL, key_vault_url),
        ] {
            if !url.starts_with("https://") || url.ends_with('/') {
                return Err(AzureEmulatorError::Attach {
                    variable,
                    value: url.clone(),
                    reason: "must be an https URL without a trailing slash".into(),
                });
            }
        }
        let ca_pem = std::fs::read_to_string(ca_file).map_err(|e| AzureEmulatorError::Attach {
            variable: ENV_CA_FILE,
            value: ca_file.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(Self {
            blob_url: Some(blob_url.clone()),
            key_vault_url: key_vault_url.clone(),
            http: http_client(&ca_pem, None)?,
            ca_pem,
            ca_file: PathBuf::from(ca_file),
            credential: Arc::new(EmulatorCredential::new()),
            pod_facing: None,
            local: None,
        }))
    }

    /// The variables that make [`get`](Self::get) in child processes attach to these emulators.
    ///
    /// # Panics
    ///
    /// For a Key Vault only set, which child processes could not attach to.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_AZURITE_URL, self.blob_service_url().to_owned()),
            (ENV_KEY_VAULT_URL, self.key_vault_url.clone()),
            (ENV_CA_FILE, self.ca_file.display().to_string()),
        ]
    }

    /// The Blob service URL, `https://127.0.0.1:<port>/devstoreaccount1` (no trailing slash);
    /// `https://<blob ip>/devstoreaccount1` for pod-facing emulators.
    ///
    /// # Panics
    ///
    /// For a Key Vault only set ([`key_vault`](Self::key_vault)): a test that uses Blob Storage
    /// takes [`get`](Self::get) instead.
    pub fn blob_service_url(&self) -> &str {
        match &self.blob_url {
            Some(url) => url,
            None => panic!(
                "these emulators are Key Vault only (AzureEmulators::key_vault); a test that \
                 uses Blob Storage takes AzureEmulators::get_or_skip"
            ),
        }
    }

    /// The storage account name ([`ACCOUNT_NAME`]).
    pub fn account_name(&self) -> &str {
        ACCOUNT_NAME
    }

    /// The storage account key, base64 ([`ACCOUNT_KEY`]), for signing service SAS tokens.
    pub fn account_key(&self) -> &str {
        ACCOUNT_KEY
    }

    /// The Key Vault URL, `https://127.0.0.1:<port>`; `https://<vault ip>` for pod-facing
    /// emulators (whose secret ids name `https://<vault>.vault.azure.net`).
    pub fn key_vault_url(&self) -> &str {
        &self.key_vault_url
    }

    /// The PEM of the CA that signed the emulators' certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`ca_pem`](Self::ca_pem).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A credential whose tokens both emulators accept.
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.clone()
    }

    /// A new HTTP client trusting the emulators' CA (HTTP/1.1, bounded timeouts). For pod-facing
    /// emulators it also maps their Azure host names to their addresses
    /// ([`PodFacingEndpoints::resolve`]).
    ///
    /// New on every call because a client's pooled connections belong to the runtime that opened
    /// them, and every `#[tokio::test]` has its own runtime: a client shared between tests fails
    /// with "runtime dropped the dispatch task" once the test that opened a connection has ended.
    pub fn http_client(&self) -> reqwest::Client {
        // Building succeeded with the same CA when these emulators were set up.
        http_client(&self.ca_pem, self.pod_facing.as_ref()).unwrap_or_else(|_| self.http.clone())
    }

    /// SDK client options for the emulators: a new trusting HTTP client as transport, and retries
    /// bounded to two quick attempts so that a misconfigured test fails instead of hanging.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http_client()))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(100),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(1),
            }),
            ..ClientOptions::default()
        }
    }

    /// Whether these are emulators started elsewhere (attach mode).
    pub fn is_attached(&self) -> bool {
        self.local.is_none()
    }

    /// Whether Key Vault is a real Lowkey Vault rather than [`KeyVaultEmulator`].
    pub fn uses_lowkey_vault(&self) -> bool {
        matches!(
            self.local.as_ref().map(|l| &l.key_vault),
            Some(KeyVaultBackend::Lowkey(_))
        )
    }

    /// Stops Key Vault: connections are refused until [`start_key_vault`](Self::start_key_vault).
    /// The emulator keeps its secrets; a Lowkey Vault loses them.
    pub async fn stop_key_vault(&self) -> Result<(), AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => kv.stop().await,
            KeyVaultBackend::Lowkey(kv) => kv.stop(),
        }
        Ok(())
    }

    /// Starts Key Vault again on the same port.
    pub async fn start_key_vault(&self) -> Result<(), AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => kv.start().await,
            KeyVaultBackend::Lowkey(kv) => kv.start().await,
        }
    }

    /// Stops Azurite: connections are refused until [`start_azurite`](Self::start_azurite), which
    /// starts it empty (it keeps data in memory only).
    pub async fn stop_azurite(&self) -> Result<(), AzureEmulatorError> {
        self.azurite()?.stop();
        Ok(())
    }

    /// Starts Azurite again on the same port.
    pub async fn start_azurite(&self) -> Result<(), AzureEmulatorError> {
        self.azurite()?.start().await
    }

    fn azurite(&self) -> Result<&Azurite, AzureEmulatorError> {
        self.local()?.azurite.as_ref().ok_or_else(|| {
            AzureEmulatorError::Unsupported("these emulators are Key Vault only".into())
        })
    }

    /// Makes every Key Vault request fail with `fault` (`None` clears it). Only the in-process
    /// emulator can do this: the real services cannot be made to fail on demand.
    pub fn set_key_vault_fault(
        &self,
        fault: Option<KeyVaultFault>,
    ) -> Result<(), AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => {
                match fault {
                    Some(fault) => kv.set_fault(fault),
                    None => kv.clear_fault(),
                }
                Ok(())
            }
            KeyVaultBackend::Lowkey(_) => Err(AzureEmulatorError::Unsupported(
                "Lowkey Vault cannot inject faults; unset LOWKEY_VAULT_JAR to use the \
                 in-process Key Vault emulator"
                    .into(),
            )),
        }
    }

    /// When each Key Vault request answered with an injected fault arrived, oldest first.
    pub fn key_vault_faulted_requests(
        &self,
    ) -> Result<Vec<std::time::Instant>, AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => Ok(kv.faulted_requests()),
            KeyVaultBackend::Lowkey(_) => Err(AzureEmulatorError::Unsupported(
                "Lowkey Vault cannot inject faults".into(),
            )),
        }
    }

    /// Makes later recoveries of deleted secrets take `delay` in the Key Vault emulator, as
    /// Azure's asynchronous recovery does.
    pub fn set_key_vault_recovery_delay(&self, delay: Duration) -> Result<(), AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => {
                kv.set_recovery_delay(delay);
                Ok(())
            }
            KeyVaultBackend::Lowkey(_) => Err(AzureEmulatorError::Unsupported(
                "Lowkey Vault cannot delay recoveries".into(),
            )),
        }
    }

    /// How many Key Vault requests were answered "still being recovered" (a read that found
    /// nothing, a write refused) while a delayed recovery ran.
    pub fn key_vault_answered_while_recovering(&self) -> Result<usize, AzureEmulatorError> {
        match &self.local()?.key_vault {
            KeyVaultBackend::Emulator(kv) => Ok(kv.answered_while_recovering()),
            KeyVaultBackend::Lowkey(_) => Err(AzureEmulatorError::Unsupported(
                "Lowkey Vault cannot delay recoveries".into(),
            )),
        }
    }

    fn local(&self) -> Result<&Local, AzureEmulatorError> {
        self.local.as_ref().ok_or_else(|| {
            AzureEmulatorError::Unsupported(
                "these emulators were started by another process (attach mode); take a private \
                 instance from AzureEmulators::start() to stop emulators or inject faults"
                    .into(),
            )
        })
    }
}

fn http_client(
    ca_pem: &str,
    pod_facing: Option<&PodFacingEndpoints>,
) -> Result<reqwest::Client, AzureEmulatorError> {
    let client_error = |e: reqwest::Error| {
        AzureEmulatorError::KeyVault(format!("building an HTTP client trusting the test CA: {e}"))
    };
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(client_error)?;
    let builder = match pod_facing {
        Some(endpoints) => endpoints.resolve(reqwest::Client::builder()),
        None => reqwest::Client::builder(),
    };
    builder
        .tls_certs_only([ca])
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(client_error)
}
