//! A control plane with a real node under it: pods run in containerd, and the components the
//! operator works with run as users install them (see [`crate::node`] for the node itself).
//!
//! [`DataPlane::get`] starts it once per test process, or attaches to the one `homelab-testenv
//! exec --data-plane` started ([`KUBECONFIG_ENV`]). Only one can run on a machine: the node owns
//! the pod bridge and the node's addresses.

use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::OnceCell;

pub mod components;
pub mod operator;

use crate::azure::{AzureEmulators, PodFacing};
use crate::images::{self, Images};
use crate::node::{self, Guard, Hosts, Node, network};
use crate::{Error, Service, Settings, TestEnv};

pub use components::Artifacts;

/// The vault pods reach as `<name>.vault.azure.net`.
pub const VAULT_NAME: &str = "homelab-testenv";

/// Kubeconfig of a running data plane to attach to.
pub const KUBECONFIG_ENV: &str = "HOMELAB_DATA_PLANE_KUBECONFIG";
/// Directory of the control-plane binaries (and `kubectl`) of that data plane.
pub const BIN_DIR_ENV: &str = "HOMELAB_DATA_PLANE_BIN_DIR";
/// PEM file of the CA that signed the pod-facing Azure emulators' certificates.
pub const AZURE_CA_ENV: &str = "HOMELAB_DATA_PLANE_AZURE_CA";

static SHARED: OnceCell<Result<DataPlane, Error>> = OnceCell::const_new();

/// A control plane and its node, started by this process or attached to.
#[derive(Debug)]
pub struct DataPlane {
    // Field order is drop order: the node stops before its control plane, and the guard goes
    // last, once nothing of the node runs.
    node: Option<Node>,
    azure: Option<AzureEmulators>,
    images: Images,
    operator_image: Option<String>,
    env: TestEnv,
    _guard: GuardHandle,
}

/// Removes the network guard when dropped.
#[derive(Debug, Default)]
struct GuardHandle(Option<Guard>);

impl Drop for GuardHandle {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            guard.remove();
        }
    }
}

impl DataPlane {
    /// The data plane shared by the tests of this process.
    ///
    /// # Panics
    ///
    /// When it cannot be started (every later call panics with the same message).
    pub async fn get() -> &'static DataPlane {
        match SHARED.get_or_init(Self::from_env).await {
            Ok(plane) => plane,
            Err(e) => panic!("the data plane (control plane with a node) is not available: {e}"),
        }
    }

    /// Attaches to [`KUBECONFIG_ENV`] if set, else starts a data plane.
    pub async fn from_env() -> Result<Self, Error> {
        match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(kubeconfig) => {
                let mut env = TestEnv::attach(&PathBuf::from(kubeconfig), None).await?;
                env.set_binaries_dir(std::env::var_os(BIN_DIR_ENV).map(PathBuf::from));
                Ok(Self {
                    node: None,
                    azure: None,
                    images: Images::default(),
                    operator_image: None,
                    env,
                    _guard: GuardHandle::default(),
                })
            }
            None => Self::start().await,
        }
    }

    /// Builds what is missing (node binaries, the third-party operators, images), installs the
    /// network guard, starts the control plane, the pod-facing Azure emulators and the node, and
    /// installs CloudNativePG, the Barman Cloud Plugin and External Secrets Operator.
    ///
    /// `HOMELAB_OPERATOR_BINARY`, when set, names the operator binary whose image is imported too.
    /// [`components::STOP_ENV`], when set, stops the components it names once installed.
    pub async fn start() -> Result<Self, Error> {
        let started = Instant::now();
        let mut settings = Settings::from_env().await?;
        settings.serve_node = true;
        // ESO v2.9.0, whose CRDs are pinned, cannot be built here: the data plane runs the
        // newest ESO that builds, with its own CRDs (docs/data-plane.md).
        settings.skip_crd_groups = vec!["external-secrets.io".into()];
        let node_binaries = node::locate_binaries().await?;
        let artifacts = Artifacts::locate().await?;
        let images = build_images(&node_binaries, &artifacts).await?;

        // A killed run's pods may still run: stop them before their guard is replaced.
        node::sweep::sweep(&node::node_dir());
        let guard = GuardHandle(Some(Guard::install()?));
        let Some(guard_ref) = guard.0.as_ref() else {
            return Err(Error::Node {
                what: "the network guard".into(),
                reason: "not installed".into(),
            });
        };
        let env = TestEnv::start_with(&settings).await?;
        let join = env
            .control_plane()
            .and_then(|c| c.node_join())
            .ok_or_else(|| Error::Node {
                what: "joining the control plane".into(),
                reason: "it was not started to serve a node".into(),
            })?;
        let azure = AzureEmulators::start_pod_facing(PodFacing::new(
            network::BLOB_IP,
            network::VAULT_IP,
            network::LOGIN_IP,
            VAULT_NAME,
        ))
        .await
        .map_err(|e| Error::Node {
            what: "starting the pod-facing Azure emulators".into(),
            reason: e.to_string(),
        })?;
        let endpoints = azure.pod_facing().cloned().ok_or_else(|| Error::Node {
            what: "starting the pod-facing Azure emulators".into(),
            reason: "they report no pod-facing endpoints".into(),
        })?;
        let hosts = Hosts(
            endpoints
                .host_names()
                .into_iter()
                .map(|(name, ip)| (ip, name))
                .collect(),
        );
        let node =
            Node::start(&node_binaries, &join, &hosts, &images.archives(), guard_ref).await?;
        let work = node.dir().join("manifests");
        std::fs::create_dir_all(&work)
            .map_err(Error::io(format!("creating {}", work.display())))?;
        let installed = Instant::now();
        let pgbouncer = images
            .reference(images::PGBOUNCER.name)
            .ok_or_else(|| Error::Node {
                what: "the PgBouncer image".into(),
                reason: "hack/build-images.sh listed no pgbouncer image".into(),
            })?
            .to_owned();
        components::install_cloudnative_pg(&env, &artifacts, &work, &pgbouncer).await?;
        components::install_external_secrets(&env, &artifacts, &work, &endpoints, azure.ca_pem())
            .await?;
        let operator_image = images.reference("homelab-operator").map(str::to_owned);
        if let Some(image) = &operator_image {
            operator::install(&env, &work, image, &endpoints, azure.ca_pem()).await?;
        }
        components::stop_requested(&env).await?;
        tracing::info!(
            "data plane ready in {:.1}s (node {}, CloudNativePG, plugin and ESO {:.1}s)",
            started.elapsed().as_secs_f64(),
            node.timings(),
            installed.elapsed().as_secs_f64(),
        );
        Ok(Self {
            node: Some(node),
            azure: Some(azure),
            images,
            operator_image,
            env,
            _guard: guard,
        })
    }

    /// The image of the operator running in the cluster; `None` when no operator binary was
    /// given (`HOMELAB_OPERATOR_BINARY`) or when attached.
    pub fn operator_image(&self) -> Option<&str> {
        self.operator_image.as_deref()
    }

    /// The images the node holds.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// The PEM of the CA the pod-facing Azure emulators' certificates chain to: from the
    /// emulators this process started, or from [`AZURE_CA_ENV`] when attached.
    pub fn azure_ca_pem(&self) -> Result<String, Error> {
        match &self.azure {
            Some(azure) => Ok(azure.ca_pem().to_owned()),
            None => {
                let path = std::env::var_os(AZURE_CA_ENV).ok_or_else(|| Error::Node {
                    what: "attaching to the data plane".into(),
                    reason: format!("{AZURE_CA_ENV} is not set"),
                })?;
                std::fs::read_to_string(&path).map_err(Error::io(format!(
                    "reading {}",
                    PathBuf::from(path).display()
                )))
            }
        }
    }

    /// The pod-facing Azure emulators this process started; `None` when attached.
    pub fn azure(&self) -> Option<&AzureEmulators> {
        self.azure.as_ref()
    }

    /// The control plane, with the admin client, namespaces and kubectl of [`TestEnv`].
    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// The node this process started; `None` when attached.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

impl Service for DataPlane {
    fn name(&self) -> &str {
        "data plane"
    }

    fn exports(&self) -> Vec<(String, String)> {
        let mut vars = vec![(
            KUBECONFIG_ENV.to_owned(),
            self.env.kubeconfig_path().display().to_string(),
        )];
        if let Some(dir) = self.env.binaries_dir() {
            vars.push((BIN_DIR_ENV.to_owned(), dir.display().to_string()));
        }
        if let Some(azure) = &self.azure {
            vars.push((
                AZURE_CA_ENV.to_owned(),
                azure.ca_file().display().to_string(),
            ));
        }
        vars
    }

    fn check_running(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.env.check_running()?;
        if let Some(node) = &self.node {
            node.check_running()?;
        }
        Ok(())
    }
}

/// Builds (or finds cached) every image the data plane's pods run.
async fn build_images(
    node_binaries: &std::path::Path,
    artifacts: &Artifacts,
) -> Result<Images, Error> {
    let pause = node_binaries.join("pause");
    let cnpg = artifacts.binary("cnpg-manager");
    let barman = artifacts.binary("barman-cloud-manager");
    let eso = artifacts.binary("external-secrets");
    let mut recipes = vec![
        images::PAUSE,
        images::POSTGRESQL,
        images::PSQL,
        images::PGBOUNCER,
        images::CLOUDNATIVE_PG,
        images::BARMAN_PLUGIN,
        images::BARMAN_SIDECAR,
        images::EXTERNAL_SECRETS,
    ];
    let mut binaries: Vec<(&str, &std::path::Path)> = vec![
        ("PAUSE_BINARY", &pause),
        ("CNPG_MANAGER", &cnpg),
        ("BARMAN_CLOUD_MANAGER", &barman),
        ("ESO_BINARY", &eso),
    ];
    let operator = std::env::var_os("HOMELAB_OPERATOR_BINARY").map(PathBuf::from);
    if let Some(operator) = &operator {
        recipes.push(images::HOMELAB_OPERATOR);
        binaries.push(("HOMELAB_OPERATOR_BINARY", operator));
    }
    images::build(&recipes, &binaries).await
}
