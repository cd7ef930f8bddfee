//! A real Kubernetes control plane for integration tests: etcd, kube-apiserver (RBAC, audit log,
//! service-account tokens) and kube-controller-manager (garbage collector, namespace and
//! service-account controllers) on loopback, with the pinned upstream CRDs and the project's own
//! CRDs installed and Established.
//!
//! ```no_run
//! # async fn example() -> Result<(), homelab_testenv::Error> {
//! use homelab_testenv::TestEnv;
//!
//! let env = TestEnv::get().await; // started once per test process, shared by its tests
//! let client = env.client().await?; // a new admin client for this test's runtime
//! let namespace = env.namespace("backup").await?; // e.g. "backup-x7k2p"
//! # let _ = (client, namespace);
//! # Ok(())
//! # }
//! ```
//!
//! When `HOMELAB_TESTENV_KUBECONFIG` is set (as `homelab-testenv exec -- cargo test` does), tests
//! attach to that running control plane instead of starting their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::SecretString;
use tokio::sync::OnceCell;

pub mod argocd;
pub mod azure;
pub mod binaries;
pub mod cluster;
pub mod crds;
pub mod data_plane;
mod error;
pub mod images;
pub mod node;
pub mod pki;
pub mod process;
pub mod skip;

pub use cluster::{ControlPlane, Restart, Settings, Timings};
pub use error::Error;

/// Kubeconfig of a running control plane to attach to instead of starting one.
pub const KUBECONFIG_ENV: &str = "HOMELAB_TESTENV_KUBECONFIG";
/// Audit log of the control plane named by [`KUBECONFIG_ENV`].
pub const AUDIT_LOG_ENV: &str = "HOMELAB_TESTENV_AUDIT_LOG";
/// Directory of the binaries (and `kubectl`) of the control plane named by [`KUBECONFIG_ENV`].
pub const BIN_DIR_ENV: &str = "HOMELAB_TESTENV_BIN_DIR";
/// Label put on every namespace that [`TestEnv::namespace`] creates.
pub const NAMESPACE_LABEL: &str = "homelab.io/testenv";

const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root, where `hack/`, `crds/` and `Cargo.toml` are.
///
/// Found at run time (from `CARGO_MANIFEST_DIR`, which cargo sets for tests and `cargo run`, or
/// from the working directory) before falling back to where this crate was compiled: a build
/// directory shared by several clones may hold artifacts compiled in another clone.
pub fn repo_root() -> PathBuf {
    let is_root = |dir: &Path| dir.join("Cargo.toml").is_file() && dir.join("crds").is_dir();
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in starts.into_iter().flatten() {
        if let Some(root) = start.ancestors().find(|dir| is_root(dir)) {
            return root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Something started for the lifetime of a `homelab-testenv up` or `exec` run, reachable by
/// other processes through the environment variables it exports. Stopped when dropped.
pub trait Service: Send + Sync {
    /// A short name for messages, e.g. `control plane`.
    fn name(&self) -> &str;
    /// `(NAME, value)` pairs that let another process attach to this service.
    fn exports(&self) -> Vec<(String, String)>;
    /// An error if the service has stopped by itself.
    fn check_running(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// A control plane for tests: either started by this process, or attached to.
#[derive(Debug)]
pub struct TestEnv {
    kubeconfig_path: PathBuf,
    apiserver_url: String,
    audit_log_path: Option<PathBuf>,
    binaries_dir: Option<PathBuf>,
    config: kube::Config,
    control_plane: Option<ControlPlane>,
}

static SHARED: OnceCell<Result<TestEnv, Error>> = OnceCell::const_new();

impl TestEnv {
    /// The test environment shared by all tests of this process, started (or attached to, when
    /// `HOMELAB_TESTENV_KUBECONFIG` is set) by the first caller.
    ///
    /// # Panics
    ///
    /// When the environment cannot be started; every later call panics with the same message, so
    /// the start is not retried by each test. Use [`TestEnv::try_get`] to handle the error.
    pub async fn get() -> &'static TestEnv {
        match Self::try_get().await {
            Ok(env) => env,
            Err(e) => panic!("the test control plane is not available: {e}"),
        }
    }

    /// Like [`TestEnv::get`], returning the error instead of panicking.
    pub async fn try_get() -> Result<&'static TestEnv, &'static Error> {
        SHARED.get_or_init(Self::from_env).await.as_ref()
    }

    /// Attaches to `HOMELAB_TESTENV_KUBECONFIG` if set, else starts a new control plane.
    pub async fn from_env() -> Result<Self, Error> {
        match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(kubeconfig) => {
                let audit_log = std::env::var_os(AUDIT_LOG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from);
                let mut env = Self::attach(Path::new(&kubeconfig), audit_log).await?;
                env.binaries_dir = std::env::var_os(BIN_DIR_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from);
                Ok(env)
            }
            None => Self::start().await,
        }
    }

    /// Starts a control plane owned by the returned value (stopped when it is dropped), with the
    /// binaries and CRDs of [`Settings::from_env`].
    pub async fn start() -> Result<Self, Error> {
        let settings = Settings::from_env().await?;
        Self::start_with(&settings).await
    }

    /// Starts a control plane owned by the returned value with explicit settings.
    pub async fn start_with(settings: &Settings) -> Result<Self, Error> {
        let control_plane = ControlPlane::start(settings).await?;
        let config = load_kubeconfig(control_plane.kubeconfig_path()).await?;
        Ok(Self {
            kubeconfig_path: control_plane.kubeconfig_path().to_owned(),
            apiserver_url: control_plane.apiserver_url().to_owned(),
            audit_log_path: Some(control_plane.audit_log_path().to_owned()),
            binaries_dir: Some(settings.binaries.dir().to_owned()),
            config,
            control_plane: Some(control_plane),
        })
    }

    /// Attaches to the running control plane of `kubeconfig`, checking that it is ready.
    pub async fn attach(kubeconfig: &Path, audit_log: Option<PathBuf>) -> Result<Self, Error> {
        let config = load_kubeconfig(kubeconfig).await?;
        let client = client_from(&config)?;
        let readyz = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Kubeconfig {
                path: kubeconfig.to_owned(),
                reason: e.to_string(),
            })?;
        let url = config.cluster_url.to_string();
        match tokio::time::timeout(ATTACH_TIMEOUT, client.request_text(readyz)).await {
            Ok(Ok(body)) if body.trim() == "ok" => {}
            Ok(Ok(body)) => {
                return Err(Error::Kubeconfig {
                    path: kubeconfig.to_owned(),
                    reason: format!(
                        "{url}/readyz answered {body:?}; is the control plane healthy?"
                    ),
                });
            }
            Ok(Err(e)) => {
                return Err(Error::Kubeconfig {
                    path: kubeconfig.to_owned(),
                    reason: format!(
                        "{url}/readyz failed: {e}; is `homelab-testenv up` still running? \
                         Unset {KUBECONFIG_ENV} to start a control plane per test process"
                    ),
                });
            }
            Err(_) => {
                return Err(Error::timeout(format!("{url}/readyz"), ATTACH_TIMEOUT));
            }
        }
        Ok(Self {
            kubeconfig_path: kubeconfig.to_owned(),
            apiserver_url: url.trim_end_matches('/').to_owned(),
            audit_log_path: audit_log,
            binaries_dir: None,
            config,
            control_plane: None,
        })
    }

    /// A new client with the admin token (user `homelab-testenv-admin`, group `system:masters`).
    ///
    /// Build one per test: a client is bound to the Tokio runtime it was made on, and every
    /// `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from(&self.config)
    }

    /// A new client that authenticates with `token` instead of the admin token, for example a
    /// service-account token, to test what RBAC lets it do.
    pub async fn token_client(&self, token: &str) -> Result<kube::Client, Error> {
        client_from(&self.token_config(token))
    }

    /// The client configuration that authenticates with `token` instead of the admin token.
    pub fn token_config(&self, token: &str) -> kube::Config {
        let mut config = self.config.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(SecretString::from(token.to_owned())),
            ..Default::default()
        };
        config
    }

    /// Creates ServiceAccount `namespace/name` if missing and returns a client that authenticates
    /// as it (`system:serviceaccount:<namespace>:<name>`) with a fresh one-hour token.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, Error> {
        client_from(&self.service_account_config(namespace, name).await?)
    }

    /// Like [`Self::service_account_client`], the configuration instead of a client, for a
    /// caller that builds its own client stack.
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Config, Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => {
                return Err(Error::Kube {
                    what: format!("creating ServiceAccount {namespace}/{name}"),
                    source: e,
                });
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(Error::kube(format!(
                "requesting a token for ServiceAccount {namespace}/{name}"
            )))?
            .status
            .and_then(|s| s.token)
            .unwrap_or_default();
        Ok(self.token_config(&token))
    }

    /// Creates a namespace named `<prefix>-<5 random characters>` and returns its name. Use one per
    /// test so tests running in parallel do not see each other's objects.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let sanitized: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(50)
            .collect();
        let prefix = match sanitized.trim_matches('-') {
            "" => "test",
            trimmed => trimmed,
        };
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(Error::kube(format!(
                "creating a namespace named {prefix}-…"
            )))?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// The admin kubeconfig; `kubectl --kubeconfig` accepts it too.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// The apiserver's audit log: one JSON object per line for each write request (`create`,
    /// `update`, `patch`, `delete`, `deletecollection`) at `Metadata` level, with `user.username`,
    /// `verb` and `objectRef`. Lines appear shortly after each response. `None` when attached
    /// without `HOMELAB_TESTENV_AUDIT_LOG`.
    pub fn audit_log_path(&self) -> Option<&Path> {
        self.audit_log_path.as_deref()
    }

    /// The directory of the control-plane binaries; `None` when attached without
    /// `HOMELAB_TESTENV_BIN_DIR`.
    pub fn binaries_dir(&self) -> Option<&Path> {
        self.binaries_dir.as_deref()
    }

    /// A `kubectl` command talking to this control plane as admin (`--kubeconfig` is set). Uses
    /// the kubectl next to the control-plane binaries, which has the same version, else the
    /// first `kubectl` on `PATH`.
    pub fn kubectl(&self) -> Result<std::process::Command, Error> {
        let beside = self
            .binaries_dir
            .as_ref()
            .map(|dir| dir.join("kubectl"))
            .filter(|path| path.is_file());
        let on_path = || {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("kubectl"))
                    .find(|path| path.is_file())
            })
        };
        let kubectl = beside.or_else(on_path).ok_or_else(|| Error::Binaries {
            reason: "kubectl is neither next to the control-plane binaries nor on PATH".into(),
        })?;
        let mut command = std::process::Command::new(kubectl);
        command.arg(format!("--kubeconfig={}", self.kubeconfig_path.display()));
        Ok(command)
    }

    /// The admin client configuration, to build clients with other settings.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Names the directory of the control-plane binaries of an attached control plane.
    pub fn set_binaries_dir(&mut self, dir: Option<PathBuf>) {
        self.binaries_dir = dir.filter(|d| !d.as_os_str().is_empty());
    }

    /// The control plane this value started, or `None` when attached.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.control_plane.as_ref()
    }
}

impl Service for TestEnv {
    fn name(&self) -> &str {
        "control plane"
    }

    fn exports(&self) -> Vec<(String, String)> {
        let kubeconfig = self.kubeconfig_path.display().to_string();
        let mut vars = vec![
            (KUBECONFIG_ENV.to_owned(), kubeconfig.clone()),
            ("KUBECONFIG".to_owned(), kubeconfig),
        ];
        if let Some(audit_log) = &self.audit_log_path {
            vars.push((AUDIT_LOG_ENV.to_owned(), audit_log.display().to_string()));
        }
        if let Some(dir) = &self.binaries_dir {
            vars.push((BIN_DIR_ENV.to_owned(), dir.display().to_string()));
        }
        vars
    }

    fn check_running(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match &self.control_plane {
            Some(control_plane) => Ok(control_plane.check_running()?),
            None => Ok(()),
        }
    }
}

pub(crate) async fn load_kubeconfig(path: &Path) -> Result<kube::Config, Error> {
    let kubeconfig_error = |reason: String| Error::Kubeconfig {
        path: path.to_owned(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(e.to_string()))
}

pub(crate) fn client_from(config: &kube::Config) -> Result<kube::Client, Error> {
    install_crypto_provider();
    kube::Client::try_from(config.clone()).map_err(Error::kube("building a client"))
}

/// Selects rustls' ring provider for the process, once. Both ring (through kube) and aws-lc-rs
/// (through the Azure SDK's reqwest) are linked into test binaries, and rustls refuses to choose.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
