//! Starting etcd, kube-apiserver and kube-controller-manager on loopback, installing CRDs, and
//! restarting etcd or kube-apiserver in place.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::binaries::Binaries;
use crate::crds::{self, CrdManifest};
use crate::pki::{self, TestCa};
use crate::process::{ChildProcess, RunDir, free_port, wait_for_port};
use crate::{Error, repo_root};

const ETCD_TIMEOUT: Duration = Duration::from_secs(60);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(180);
const CONTROLLER_MANAGER_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts when a port picked as free was taken by someone else before our process bound it.
const START_ATTEMPTS: u32 = 3;
/// Attempts to start a restarted process on its old port while something else holds it, one a
/// second.
const RESTART_ATTEMPTS: u32 = 10;
/// How long one `/readyz` request may take before it counts as a failed probe.
const READYZ_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the all-powerful user in the token file (group `system:masters`).
pub const ADMIN_USER: &str = "homelab-testenv-admin";

/// Controllers run by kube-controller-manager: enough for owner references, namespace deletion,
/// service-account tokens, aggregated ClusterRoles and the deletion of volumes (the apiserver
/// puts the protection finalizers on every claim and volume; these controllers lift them) to
/// behave as in a real cluster.
pub const CONTROLLERS: &str = "garbagecollector,namespace,serviceaccount,serviceaccount-token,\
clusterrole-aggregation,pvc-protection,pv-protection";

/// The audit policy: metadata of every write request, nothing else.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// Controllers added for a control plane with a node: what turns Deployments, StatefulSets,
/// Jobs, Services and PersistentVolumeClaims into pods, endpoints and bound volumes, and the node
/// lifecycle controller, which lifts the `not-ready` taint the kubelet registers the node with.
pub const NODE_CONTROLLERS: &str = "deployment,replicaset,statefulset,daemonset,job,cronjob,\
endpoint,endpointslice,endpointslicemirroring,persistentvolume-binder,disruption,podgc,\
ttl-after-finished,root-ca-cert-publisher,ephemeral-volume,nodelifecycle";

/// kube-apiserver's port on the node's address, when the control plane serves a node.
pub const NODE_APISERVER_PORT: u16 = 6443;

/// What to start and install.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the binaries are.
    pub binaries: Binaries,
    /// Directories whose `*.yaml` CRDs are installed, in order.
    pub crd_dirs: Vec<PathBuf>,
    /// Serve a node ([`crate::node`]): kube-apiserver listens on the node's address (which the
    /// network guard must have configured) instead of loopback, with the Node authorizer, the
    /// node's Service range and the node components' identities, and kube-controller-manager
    /// also runs [`NODE_CONTROLLERS`].
    pub serve_node: bool,
    /// API groups whose CRDs are not installed from [`Settings::crd_dirs`] (for example because
    /// the operator of that group installs its own version).
    pub skip_crd_groups: Vec<String>,
}

impl Settings {
    /// Binaries from [`Binaries::locate`]; the CRDs of `HOMELAB_UPSTREAM_CRDS` (default
    /// `<repo>/../shared/upstream-crds`, which must exist) and of `<repo>/crds` (which may be
    /// empty).
    pub async fn from_env() -> Result<Self, Error> {
        let upstream = upstream_crd_dir();
        if !upstream.is_dir() {
            return Err(Error::UpstreamCrdsMissing { path: upstream });
        }
        Ok(Self {
            binaries: Binaries::locate().await?,
            crd_dirs: vec![upstream, repo_root().join("crds")],
            serve_node: false,
            skip_crd_groups: Vec::new(),
        })
    }
}

/// `HOMELAB_UPSTREAM_CRDS`, or `<repo>/../shared/upstream-crds`.
pub fn upstream_crd_dir() -> PathBuf {
    match std::env::var_os("HOMELAB_UPSTREAM_CRDS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("../shared/upstream-crds"),
    }
}

/// How long each start-up phase took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Locating binaries is not included; this is key generation and etcd until it listens.
    pub etcd: Duration,
    /// kube-apiserver until `/readyz` answers `ok`.
    pub apiserver: Duration,
    /// CRDs applied and Established, while kube-controller-manager starts.
    pub crds: Duration,
    /// kube-controller-manager until the `default` ServiceAccount exists.
    pub controller_manager: Duration,
    /// From the first process to everything ready.
    pub total: Duration,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}s (etcd {:.1}s, kube-apiserver {:.1}s, CRDs {:.1}s, kube-controller-manager {:.1}s)",
            self.total.as_secs_f64(),
            self.etcd.as_secs_f64(),
            self.apiserver.as_secs_f64(),
            self.crds.as_secs_f64(),
            self.controller_manager.as_secs_f64(),
        )
    }
}

/// What restarting part of the control plane took, as seen by a client of kube-apiserver.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// From the SIGKILL until `/readyz` answered `ok` again.
    pub unavailable: Duration,
    /// From starting the killed process again until `/readyz` answered `ok`.
    pub recovery: Duration,
    /// Whether kube-apiserver was started again: always by [`ControlPlane::restart_apiserver`];
    /// by [`ControlPlane::restart_etcd`] only if it had exited by itself meanwhile (it normally
    /// reconnects to the restarted etcd).
    pub apiserver_restarted: bool,
}

/// One process of the control plane with what it takes to start it again identically.
#[derive(Debug)]
struct Supervised {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log_path: PathBuf,
    child: Mutex<Option<Arc<ChildProcess>>>,
}

impl Supervised {
    fn new(name: &'static str, program: PathBuf, args: Vec<String>, log_path: PathBuf) -> Self {
        Self {
            name,
            program,
            args,
            log_path,
            child: Mutex::new(None),
        }
    }

    async fn spawn(&self) -> Result<Arc<ChildProcess>, Error> {
        let child = Arc::new(
            ChildProcess::spawn(self.name, &self.program, &self.args, &self.log_path).await?,
        );
        *self.slot() = Some(child.clone());
        Ok(child)
    }

    /// The running (or exited) process, `None` while stopped.
    fn current(&self) -> Option<Arc<ChildProcess>> {
        self.slot().clone()
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&self) {
        if let Some(child) = self.slot().take() {
            child.kill();
        }
    }

    /// Notes in the log, which the new process appends to, that the process starts again.
    fn mark_restart(&self) -> Result<(), Error> {
        let what = format!("appending to {}", self.log_path.display());
        let mut log = std::fs::File::options()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .map_err(Error::io(what.clone()))?;
        writeln!(
            log,
            "homelab-testenv: starting {} again with the same arguments",
            self.name
        )
        .map_err(Error::io(what))
    }

    /// An error saying that the process was killed and not started again.
    fn stopped_error(&self) -> Error {
        Error::Exited {
            name: self.name.to_owned(),
            status: "killed and not started again".into(),
            log_path: self.log_path.clone(),
            log_tail: crate::process::log_tail(&self.log_path, 30),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<ChildProcess>>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running control plane. Dropping it stops every process and removes its directory.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: processes stop before their directory is removed.
    etcd: Supervised,
    apiserver: Supervised,
    controller_manager: Supervised,
    /// Held while a process is restarted; [`ControlPlane::check_running`] then reports nothing.
    restarting: tokio::sync::Mutex<()>,
    etcd_port: u16,
    config: kube::Config,
    kubeconfig_path: PathBuf,
    audit_log_path: PathBuf,
    apiserver_url: String,
    timings: Timings,
    crd_count: usize,
    node_join: Option<NodeFiles>,
    dir: RunDir,
}

impl ControlPlane {
    /// Starts everything and installs the CRDs of `settings.crd_dirs`.
    pub async fn start(settings: &Settings) -> Result<Self, Error> {
        let mut crd_manifests = Vec::new();
        for dir in &settings.crd_dirs {
            crd_manifests.extend(crds::load_dir(dir)?);
        }
        crd_manifests.retain(|crd| {
            let group = crd.body["spec"]["group"].as_str().unwrap_or_default();
            !settings.skip_crd_groups.iter().any(|skip| skip == group)
        });
        let mut attempt = 1;
        loop {
            match Self::start_once(settings, &crd_manifests).await {
                Err(Error::Exited { ref log_tail, .. })
                    if attempt < START_ATTEMPTS && log_tail.contains("address already in use") =>
                {
                    tracing::warn!("a port was taken while starting; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(settings: &Settings, crd_manifests: &[CrdManifest]) -> Result<Self, Error> {
        let binaries = &settings.binaries;
        let started = Instant::now();
        let mut dir = RunDir::create()?;
        // Until everything is up, an early return leaves the logs behind for the error message.
        dir.keep(true);
        let files = Files::write(dir.path(), settings.serve_node)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd = Supervised::new(
            "etcd",
            binaries.path("etcd"),
            etcd_args(dir.path(), etcd_port, etcd_peer_port),
            dir.path().join("etcd.log"),
        );
        let etcd_process = etcd.spawn().await?;
        wait_for_port(&etcd_process, etcd_port, ETCD_TIMEOUT).await?;
        let etcd_ready = Instant::now();

        let (apiserver_host, apiserver_port) = if settings.serve_node {
            (
                crate::node::network::NODE_IP.to_string(),
                NODE_APISERVER_PORT,
            )
        } else {
            ("127.0.0.1".to_owned(), free_port()?)
        };
        let apiserver_url = format!("https://{apiserver_host}:{apiserver_port}");
        files.write_kubeconfigs(&apiserver_url)?;
        let apiserver = Supervised::new(
            "kube-apiserver",
            binaries.path("kube-apiserver"),
            apiserver_args(&files, etcd_port, &apiserver_host, apiserver_port),
            dir.path().join("kube-apiserver.log"),
        );
        let apiserver_process = apiserver.spawn().await?;
        let config = crate::load_kubeconfig(&files.kubeconfig).await?;
        let client = crate::client_from(&config)?;
        wait_ready(&client, &apiserver_process, APISERVER_TIMEOUT).await?;
        let apiserver_ready = Instant::now();

        let controller_manager = Supervised::new(
            "kube-controller-manager",
            binaries.path("kube-controller-manager"),
            controller_manager_args(&files, settings.serve_node),
            dir.path().join("kube-controller-manager.log"),
        );
        let controller_manager_process = controller_manager.spawn().await?;
        let crds_started = Instant::now();
        crds::install(&client, crd_manifests).await?;
        let crds_done = Instant::now();
        wait_for_default_service_account(&client, &controller_manager_process).await?;
        let done = Instant::now();

        let timings = Timings {
            etcd: etcd_ready - started,
            apiserver: apiserver_ready - etcd_ready,
            crds: crds_done - crds_started,
            controller_manager: done - apiserver_ready,
            total: done - started,
        };
        tracing::info!(%apiserver_url, crds = crd_manifests.len(), "control plane ready in {timings}");
        dir.keep(false);
        Ok(Self {
            etcd,
            apiserver,
            controller_manager,
            restarting: tokio::sync::Mutex::new(()),
            etcd_port,
            config,
            kubeconfig_path: files.kubeconfig,
            audit_log_path: files.audit_log,
            apiserver_url,
            timings,
            crd_count: crd_manifests.len(),
            node_join: files.node_join.clone(),
            dir,
        })
    }

    /// What a node needs to join this control plane; `None` unless it was started with
    /// [`Settings::serve_node`].
    pub fn node_join(&self) -> Option<crate::node::Join> {
        let join = self.node_join.as_ref()?;
        Some(crate::node::Join {
            server: self.apiserver_url.clone(),
            ca_file: join.ca_file.clone(),
            kubelet_kubeconfig: join.kubelet_kubeconfig.clone(),
            proxy_kubeconfig: join.proxy_kubeconfig.clone(),
            scheduler_kubeconfig: join.scheduler_kubeconfig.clone(),
            dns_kubeconfig: self.kubeconfig_path.clone(),
            admin: self.config.clone(),
        })
    }

    /// The admin kubeconfig (a static token in group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// The JSON-lines audit log of every write request.
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log_path
    }

    /// How long start-up took.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// How many CRDs were installed.
    pub fn crd_count(&self) -> usize {
        self.crd_count
    }

    /// The directory holding keys, logs and etcd data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The first process that has exited, as an error with the end of its log. Nothing is
    /// reported while [`restart_apiserver`](Self::restart_apiserver) or
    /// [`restart_etcd`](Self::restart_etcd) is in progress: they report their own failures.
    pub fn check_running(&self) -> Result<(), Error> {
        let Ok(_not_restarting) = self.restarting.try_lock() else {
            return Ok(());
        };
        for part in self.parts() {
            let Some(process) = part.current() else {
                return Err(part.stopped_error());
            };
            if let Some(status) = process.exit_status() {
                return Err(process.exited_error(status));
            }
        }
        Ok(())
    }

    /// Kills kube-apiserver with SIGKILL, waits `down`, starts it again with the same arguments
    /// (port, certificates, etcd, audit log; its log is appended to) and waits until `/readyz`
    /// answers `ok`. The kubeconfig stays valid; clients see refused connections meanwhile and
    /// their watches end.
    pub async fn restart_apiserver(&self, down: Duration) -> Result<Restart, Error> {
        let _restarting = self.restarting.lock().await;
        let killed = Instant::now();
        self.apiserver.kill();
        tracing::info!("kube-apiserver killed; starting it again in {down:?}");
        tokio::time::sleep(down).await;
        let started = Instant::now();
        self.start_again(&self.apiserver, |process| self.wait_ready(process))
            .await?;
        let restart = Restart {
            unavailable: killed.elapsed(),
            recovery: started.elapsed(),
            apiserver_restarted: true,
        };
        tracing::info!(?restart, "kube-apiserver ready again");
        Ok(restart)
    }

    /// Kills etcd with SIGKILL, waits `down`, starts it again on the same data directory and
    /// ports (its log is appended to), and waits until kube-apiserver's `/readyz` answers `ok`.
    ///
    /// kube-apiserver is not restarted: it keeps serving what its watch cache holds, fails
    /// requests that need etcd, and reconnects by itself once etcd is back (a few seconds of
    /// gRPC backoff). Only if it exits meanwhile is it started again, which
    /// [`Restart::apiserver_restarted`] reports. The data, and so every resourceVersion,
    /// survives: etcd's files are intact after a SIGKILL even without fsync, since the kernel
    /// still holds what the process wrote.
    pub async fn restart_etcd(&self, down: Duration) -> Result<Restart, Error> {
        let _restarting = self.restarting.lock().await;
        let killed = Instant::now();
        self.etcd.kill();
        tracing::info!("etcd killed; starting it again in {down:?}");
        tokio::time::sleep(down).await;
        let started = Instant::now();
        let port = self.etcd_port;
        self.start_again(&self.etcd, |process| async move {
            wait_for_port(&process, port, ETCD_TIMEOUT).await
        })
        .await?;
        let mut apiserver_restarted = false;
        let apiserver = self.apiserver.current();
        let waited = match apiserver {
            Some(process) => self.wait_ready(process).await,
            None => Err(self.apiserver.stopped_error()),
        };
        match waited {
            Ok(()) => {}
            Err(Error::Exited { status, .. }) => {
                tracing::warn!(
                    "kube-apiserver exited ({status}) while etcd was down; starting it again"
                );
                self.start_again(&self.apiserver, |process| self.wait_ready(process))
                    .await?;
                apiserver_restarted = true;
            }
            Err(e) => return Err(e),
        }
        let restart = Restart {
            unavailable: killed.elapsed(),
            recovery: started.elapsed(),
            apiserver_restarted,
        };
        tracing::info!(?restart, "etcd restarted; kube-apiserver ready again");
        Ok(restart)
    }

    /// Starts `part` again with its old arguments and waits until `ready` says it is, retrying
    /// while its port is still held by someone else (the port of a killed process is free for
    /// anyone to take until it is bound again).
    async fn start_again<F, Fut>(&self, part: &Supervised, ready: F) -> Result<(), Error>
    where
        F: Fn(Arc<ChildProcess>) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        part.kill();
        part.mark_restart()?;
        let mut attempt = 1;
        loop {
            let process = part.spawn().await?;
            match ready(process).await {
                Err(Error::Exited { ref log_tail, .. })
                    if attempt < RESTART_ATTEMPTS
                        && log_tail.contains("address already in use") =>
                {
                    tracing::warn!("{}: its port is taken; retrying in a second", part.name);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until `/readyz` answers `ok`, failing early if `apiserver` exits.
    async fn wait_ready(&self, apiserver: Arc<ChildProcess>) -> Result<(), Error> {
        let client = crate::client_from(&self.config)?;
        wait_ready(&client, &apiserver, APISERVER_TIMEOUT).await
    }

    /// The processes in start order.
    fn parts(&self) -> [&Supervised; 3] {
        [&self.etcd, &self.apiserver, &self.controller_manager]
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Dependents first: the controller manager, then the apiserver, then etcd.
        for part in self.parts().into_iter().rev() {
            part.kill();
        }
    }
}

/// The files the processes read, written into the run directory.
struct Files {
    dir: PathBuf,
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
    tokens: PathBuf,
    audit_policy: PathBuf,
    audit_log: PathBuf,
    kubeconfig: PathBuf,
    admin_token: String,
    node_join: Option<NodeFiles>,
}

/// The node components' identities: a static token each.
#[derive(Debug, Clone)]
struct NodeFiles {
    ca_file: PathBuf,
    kubelet_client_cert: PathBuf,
    kubelet_client_key: PathBuf,
    kubelet_kubeconfig: PathBuf,
    proxy_kubeconfig: PathBuf,
    scheduler_kubeconfig: PathBuf,
    /// `(token, user, groups)` of each component.
    tokens: Vec<(String, String, String)>,
}

impl Files {
    fn write(dir: &Path, serve_node: bool) -> Result<Self, Error> {
        let ca = TestCa::generate("homelab-testenv-ca")?;
        let node_ip = crate::node::network::NODE_IP.to_string();
        let service_ip = crate::node::network::KUBERNETES_SERVICE_IP.to_string();
        let mut names = vec![
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        if serve_node {
            names.extend([node_ip.as_str(), service_ip.as_str()]);
        }
        let serving = ca.issue_server(&names)?;
        let admin_token = random_token();
        let node_join = if serve_node {
            let client = ca.issue_client("kube-apiserver-kubelet-client")?;
            let files = NodeFiles {
                ca_file: dir.join("ca.crt"),
                kubelet_client_cert: dir.join("kubelet-client.crt"),
                kubelet_client_key: dir.join("kubelet-client.key"),
                kubelet_kubeconfig: dir.join("kubelet.kubeconfig"),
                proxy_kubeconfig: dir.join("kube-proxy.kubeconfig"),
                scheduler_kubeconfig: dir.join("kube-scheduler.kubeconfig"),
                tokens: vec![
                    (
                        random_token(),
                        format!("system:node:{}", crate::node::config::NODE_NAME),
                        "system:nodes".into(),
                    ),
                    (random_token(), "system:kube-proxy".into(), String::new()),
                    (
                        random_token(),
                        "system:kube-scheduler".into(),
                        String::new(),
                    ),
                ],
            };
            write(&files.kubelet_client_cert, &client.cert_pem)?;
            write(&files.kubelet_client_key, &client.key_pem)?;
            Some(files)
        } else {
            None
        };
        let files = Self {
            dir: dir.to_owned(),
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_public_key: dir.join("service-account.pub"),
            tokens: dir.join("tokens.csv"),
            audit_policy: dir.join("audit-policy.yaml"),
            audit_log: dir.join("audit.log"),
            kubeconfig: dir.join("admin.kubeconfig"),
            admin_token,
            node_join,
        };
        write(&files.ca_cert, ca.cert_pem())?;
        write(&files.serving_cert, &serving.cert_pem)?;
        write(&files.serving_key, &serving.key_pem)?;
        let (private_key, public_key) = pki::key_pair_pem()?;
        write(&files.service_account_key, &private_key)?;
        write(&files.service_account_public_key, &public_key)?;
        let mut tokens = format!(
            "{},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n",
            files.admin_token
        );
        for (token, user, groups) in files.node_join.iter().flat_map(|n| &n.tokens) {
            let _ = writeln!(tokens, "{token},{user},{user},\"{groups}\"");
        }
        write(&files.tokens, &tokens)?;
        write(&files.audit_policy, AUDIT_POLICY)?;
        Ok(files)
    }

    fn write_kubeconfigs(&self, server: &str) -> Result<(), Error> {
        if let Some(node) = &self.node_join {
            let paths = [
                &node.kubelet_kubeconfig,
                &node.proxy_kubeconfig,
                &node.scheduler_kubeconfig,
            ];
            for (path, (token, user, _)) in paths.into_iter().zip(&node.tokens) {
                write(
                    path,
                    &crate::node::config::token_kubeconfig(server, &self.ca_cert, user, token),
                )?;
            }
        }
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: homelab-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {ADMIN_USER}
  user:
    token: {token}
contexts:
- name: homelab-testenv
  context:
    cluster: homelab-testenv
    user: {ADMIN_USER}
    namespace: default
current-context: homelab-testenv
",
            ca = self.ca_cert.display(),
            token = self.admin_token,
        );
        write(&self.kubeconfig, &kubeconfig)
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().fold(String::with_capacity(48), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn etcd_args(dir: &Path, port: u16, peer_port: u16) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // The data is thrown away with the directory; fsync would only slow every write.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(files: &Files, etcd_port: u16, host: &str, port: u16) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec![
        format!("--advertise-address={host}"),
        format!("--bind-address={host}"),
        format!("--secure-port={port}"),
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--cert-dir={}", path(&files.dir.join("apiserver-certs"))),
        format!("--tls-cert-file={}", path(&files.serving_cert)),
        format!("--tls-private-key-file={}", path(&files.serving_key)),
        format!("--token-auth-file={}", path(&files.tokens)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!(
            "--service-account-key-file={}",
            path(&files.service_account_public_key)
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(&files.service_account_key)
        ),
        "--allow-privileged=true".into(),
        format!("--audit-policy-file={}", path(&files.audit_policy)),
        format!("--audit-log-path={}", path(&files.audit_log)),
        "--v=1".into(),
    ];
    match &files.node_join {
        None => args.extend([
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/16".into(),
        ]),
        Some(node) => args.extend([
            "--authorization-mode=Node,RBAC".into(),
            format!(
                "--service-cluster-ip-range={}",
                crate::node::network::SERVICE_CIDR
            ),
            format!(
                "--kubelet-client-certificate={}",
                path(&node.kubelet_client_cert)
            ),
            format!("--kubelet-client-key={}", path(&node.kubelet_client_key)),
            "--kubelet-preferred-address-types=InternalIP".into(),
            // Webhooks and aggregated APIs are called at a pod's address: the Service range is
            // a blackhole on this machine (the network guard), so a ClusterIP cannot be dialled
            // from the host.
            "--enable-aggregator-routing=true".into(),
        ]),
    }
    args
}

fn controller_manager_args(files: &Files, serve_node: bool) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let controllers = if serve_node {
        format!("{CONTROLLERS},{NODE_CONTROLLERS}")
    } else {
        CONTROLLERS.to_owned()
    };
    vec![
        format!("--kubeconfig={}", path(&files.kubeconfig)),
        format!("--controllers={controllers}"),
        "--use-service-account-credentials=false".into(),
        "--leader-elect=false".into(),
        // No metrics or health endpoint: several control planes may run side by side.
        "--secure-port=0".into(),
        format!(
            "--service-account-private-key-file={}",
            path(&files.service_account_key)
        ),
        format!("--root-ca-file={}", path(&files.ca_cert)),
        "--v=1".into(),
    ]
}

/// Waits until `GET /readyz` answers `ok`.
async fn wait_ready(
    client: &kube::Client,
    apiserver: &ChildProcess,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut last_answer = String::new();
    loop {
        if let Some(status) = apiserver.exit_status() {
            return Err(apiserver.exited_error(status));
        }
        let request = http::Request::get("/readyz").body(Vec::new());
        if let Ok(request) = request {
            match tokio::time::timeout(READYZ_REQUEST_TIMEOUT, client.request_text(request)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => last_answer = body,
                Ok(Err(e)) => last_answer = e.to_string(),
                Err(_) => last_answer = format!("no answer within {READYZ_REQUEST_TIMEOUT:?}"),
            }
        }
        if Instant::now() > deadline {
            return Err(apiserver.timeout_error(
                format!("kube-apiserver /readyz (last answer: {last_answer})"),
                timeout,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the service-account controller has created `default/default`, which shows that
/// kube-controller-manager is connected and running its controllers.
async fn wait_for_default_service_account(
    client: &kube::Client,
    controller_manager: &ChildProcess,
) -> Result<(), Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + CONTROLLER_MANAGER_TIMEOUT;
    loop {
        if let Some(status) = controller_manager.exit_status() {
            return Err(controller_manager.exited_error(status));
        }
        if let Ok(Some(_)) = api.get_opt("default").await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(controller_manager.timeout_error(
                "kube-controller-manager to create ServiceAccount default/default",
                CONTROLLER_MANAGER_TIMEOUT,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
