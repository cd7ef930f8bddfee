//! A real node for the test control plane: containerd and runc running pods, the kubelet,
//! kube-proxy, kube-scheduler, CoreDNS and static hostPath volumes, all on this machine and kept
//! on it by the network guard ([`network`]).
//!
//! There is only ever one node on the machine (it owns the pod bridge, the node's addresses and
//! its cgroup), so it lives in one fixed directory, [`node_dir`], held under an exclusive lock.
//! Whatever a killed run left there is swept before a node starts ([`sweep`]), and [`Node`]
//! removes all of it when dropped.

pub mod config;
pub mod network;
pub mod sweep;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as KubeNode, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::Error;
use crate::process::{ChildProcess, free_port, log_tail};

pub use network::Guard;

const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(60);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How many hostPath PersistentVolumes the node offers, and each one's size. Their reclaim
/// policy is Retain (as for data), so a released volume is not bound again: every cluster of a
/// whole end-to-end run, drills and restored copies included, needs a volume of its own (a full
/// `make test` binds and releases about 32).
const VOLUMES: usize = 64;
const VOLUME_SIZE: &str = "20Gi";
/// The StorageClass of those volumes, the cluster's default.
pub const STORAGE_CLASS: &str = "standard";
/// The field manager of what the node applies.
const FIELD_MANAGER: &str = "homelab-testenv";

/// The node's fixed directory: `$TMPDIR/homelab-testenv-node`.
pub fn node_dir() -> PathBuf {
    std::env::temp_dir().join("homelab-testenv-node")
}

/// The directory of the node's binaries, from `hack/build-node.sh` (built on first use).
pub async fn locate_binaries() -> Result<PathBuf, Error> {
    let dir = crate::process::run_build_script("build-node.sh", &[], &[]).await?;
    for binary in [
        "kubelet",
        "kube-proxy",
        "kube-scheduler",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "coredns",
    ] {
        if !dir.join(binary).is_file() {
            return Err(Error::Node {
                what: "locating the node's binaries".into(),
                reason: format!(
                    "hack/build-node.sh printed {}, which lacks {binary}",
                    dir.display()
                ),
            });
        }
    }
    Ok(dir)
}

/// What the node needs from the control plane it joins.
#[derive(Debug, Clone)]
pub struct Join {
    /// kube-apiserver's URL on the node's address.
    pub server: String,
    /// The CA that signed kube-apiserver's certificate, and the client certificate it shows the
    /// kubelet.
    pub ca_file: PathBuf,
    /// Kubeconfigs of the node's components, each with its own identity.
    pub kubelet_kubeconfig: PathBuf,
    /// `system:kube-proxy`.
    pub proxy_kubeconfig: PathBuf,
    /// `system:kube-scheduler`.
    pub scheduler_kubeconfig: PathBuf,
    /// CoreDNS reads Services, EndpointSlices, Namespaces and Pods.
    pub dns_kubeconfig: PathBuf,
    /// The admin client, for what the node installs (StorageClass, PersistentVolumes).
    pub admin: kube::Config,
}

/// Emulator host names CoreDNS answers for pods.
#[derive(Debug, Clone, Default)]
pub struct Hosts(pub Vec<(std::net::Ipv4Addr, String)>);

/// How long each part of the node took to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeTimings {
    /// containerd until its socket answers.
    pub containerd: Duration,
    /// Importing the image archives.
    pub images: Duration,
    /// The kubelet until the Node is Ready.
    pub kubelet: Duration,
    /// From the sweep to everything started.
    pub total: Duration,
}

impl std::fmt::Display for NodeTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}s (containerd {:.1}s, images {:.1}s, kubelet to Ready {:.1}s)",
            self.total.as_secs_f64(),
            self.containerd.as_secs_f64(),
            self.images.as_secs_f64(),
            self.kubelet.as_secs_f64(),
        )
    }
}

/// A running node. Dropping it stops every process and container and removes everything it made
/// (the network guard is the caller's: it must outlive the control plane too).
#[derive(Debug)]
pub struct Node {
    // Field order is drop order; `Drop` sweeps after the processes are gone.
    processes: Vec<ChildProcess>,
    containerd_socket: PathBuf,
    ctr: PathBuf,
    dir: PathBuf,
    timings: NodeTimings,
    _lock: File,
}

impl Node {
    /// Sweeps what a killed run left, then starts containerd (importing `images`, OCI archives),
    /// CoreDNS, the kubelet, kube-proxy and kube-scheduler, waits until the Node is Ready, and
    /// creates the default StorageClass with its hostPath volumes. The guard must be installed.
    pub async fn start(
        bin_dir: &Path,
        join: &Join,
        hosts: &Hosts,
        images: &[PathBuf],
        guard: &Guard,
    ) -> Result<Self, Error> {
        let started = Instant::now();
        let dir = node_dir();
        let lock = lock_node_dir(&dir)?;
        sweep::sweep(&dir);
        guard.verify()?;
        let mut node = Self {
            processes: Vec::new(),
            containerd_socket: dir.join("containerd/containerd.sock"),
            ctr: bin_dir.join("ctr"),
            dir: dir.clone(),
            timings: NodeTimings::default(),
            _lock: lock,
        };
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(Error::io(format!("creating {}", parent.display())))?;
            }
            std::fs::write(&path, contents)
                .map_err(Error::io(format!("writing {}", path.display())))?;
            Ok(path)
        };
        for sub in ["logs", "pod-logs", "volume-plugins", "kubelet", "volumes"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(Error::io(format!("creating {}", dir.join(sub).display())))?;
        }
        create_cgroup_root()?;
        let path_env = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );

        // containerd.
        let cni_dir = dir.join("cni");
        write("cni/10-homelab.conflist", &config::cni_conflist())?;
        let containerd_config = write(
            "containerd/config.toml",
            &config::containerd(&dir.join("containerd"), bin_dir, &cni_dir),
        )?;
        let containerd = node
            .spawn(
                "containerd",
                &bin_dir.join("containerd"),
                &[format!("--config={}", containerd_config.display())],
                &[("PATH".into(), path_env.clone())],
            )
            .await?;
        wait_for_socket(
            &node.processes[containerd],
            &node.containerd_socket,
            CONTAINERD_TIMEOUT,
        )
        .await?;
        node.timings.containerd = started.elapsed();

        let images_started = Instant::now();
        for archive in images {
            node.import(archive).await?;
        }
        node.timings.images = images_started.elapsed();

        // CoreDNS on the host, at the cluster DNS address.
        let dns_health = free_port()?;
        let dns_ready = free_port()?;
        let corefile = write(
            "coredns/Corefile",
            &config::corefile(&join.dns_kubeconfig, &hosts.0, dns_health, dns_ready),
        )?;
        node.spawn(
            "coredns",
            &bin_dir.join("coredns"),
            &[format!("-conf={}", corefile.display())],
            &[],
        )
        .await?;

        // The kubelet.
        let kubelet_started = Instant::now();
        let resolv_conf = write("resolv.conf", &config::resolv_conf())?;
        let kubelet_config = write(
            "kubelet/config.yaml",
            &config::kubelet(
                &dir,
                &node.containerd_socket,
                &join.ca_file,
                &resolv_conf,
                free_port()?,
            ),
        )?;
        let kubelet = node
            .spawn(
                "kubelet",
                &bin_dir.join("kubelet"),
                &[
                    format!("--config={}", kubelet_config.display()),
                    format!("--kubeconfig={}", join.kubelet_kubeconfig.display()),
                    format!("--root-dir={}", dir.join("kubelet").display()),
                    format!("--cert-dir={}", dir.join("kubelet/pki").display()),
                    format!("--hostname-override={}", config::NODE_NAME),
                    format!("--node-ip={}", network::NODE_IP),
                    "--v=1".into(),
                ],
                &[("PATH".into(), path_env.clone())],
            )
            .await?;

        let proxy_config = write(
            "kube-proxy/config.yaml",
            &config::kube_proxy(&join.proxy_kubeconfig, free_port()?, free_port()?),
        )?;
        node.spawn(
            "kube-proxy",
            &bin_dir.join("kube-proxy"),
            &[
                format!("--config={}", proxy_config.display()),
                "--v=1".into(),
            ],
            &[],
        )
        .await?;
        node.spawn(
            "kube-scheduler",
            &bin_dir.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", join.scheduler_kubeconfig.display()),
                format!(
                    "--authentication-kubeconfig={}",
                    join.scheduler_kubeconfig.display()
                ),
                format!(
                    "--authorization-kubeconfig={}",
                    join.scheduler_kubeconfig.display()
                ),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=1".into(),
            ],
            &[],
        )
        .await?;

        let client = crate::client_from(&join.admin)?;
        node.wait_ready(&client, kubelet).await?;
        node.timings.kubelet = kubelet_started.elapsed();
        node.create_volumes(&client).await?;
        node.timings.total = started.elapsed();
        tracing::info!("node {} ready in {}", config::NODE_NAME, node.timings);
        Ok(node)
    }

    /// How long start-up took.
    pub fn timings(&self) -> NodeTimings {
        self.timings
    }

    /// The node's directory (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first node process that has exited, as an error with the end of its log.
    pub fn check_running(&self) -> Result<(), Error> {
        for process in &self.processes {
            if let Some(status) = process.exit_status() {
                return Err(process.exited_error(status));
            }
        }
        Ok(())
    }

    /// Imports an OCI image archive into containerd's `k8s.io` namespace, where the kubelet finds
    /// it: pods never pull.
    pub async fn import(&self, archive: &Path) -> Result<(), Error> {
        let output = tokio::process::Command::new(&self.ctr)
            .arg(format!("--address={}", self.containerd_socket.display()))
            .args(["--namespace=k8s.io", "images", "import", "--local=false"])
            .arg(archive)
            .output()
            .await
            .map_err(Error::io(format!("running {}", self.ctr.display())))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Node {
                what: format!("importing image archive {}", archive.display()),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    async fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<usize, Error> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let process = ChildProcess::spawn_with_env(name, program, args, env, &log).await?;
        self.processes.push(process);
        Ok(self.processes.len() - 1)
    }

    async fn wait_ready(&self, client: &kube::Client, kubelet: usize) -> Result<(), Error> {
        let nodes: Api<KubeNode> = Api::all(client.clone());
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            self.check_running()?;
            if let Ok(Some(node)) = nodes.get_opt(config::NODE_NAME).await {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                // The node lifecycle controller lifts this taint once it has seen the node Ready.
                let schedulable = !node
                    .spec
                    .and_then(|s| s.taints)
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/not-ready");
                if ready && schedulable {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.processes[kubelet].timeout_error(
                    format!("Node {} to be Ready and schedulable", config::NODE_NAME),
                    NODE_READY_TIMEOUT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The default StorageClass (no provisioner, bound when a pod is scheduled) and its hostPath
    /// volumes, owned by uid and gid 26 (PostgreSQL in CloudNativePG's images) with mode 0700.
    async fn create_volumes(&self, client: &kube::Client) -> Result<(), Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let classes: Api<StorageClass> = Api::all(client.clone());
        let class = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": { "storageclass.kubernetes.io/is-default-class": "true" },
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
            "allowVolumeExpansion": false,
        });
        classes
            .patch(STORAGE_CLASS, &params, &Patch::Apply(class))
            .await
            .map_err(Error::kube("applying the default StorageClass"))?;
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        for index in 0..VOLUMES {
            let name = format!("{}-pv-{index:02}", config::NODE_NAME);
            let path = self.dir.join("volumes").join(&name);
            std::fs::create_dir_all(&path)
                .map_err(Error::io(format!("creating {}", path.display())))?;
            network::run("chown", &["26:26", &path.display().to_string()])?;
            network::run("chmod", &["0700", &path.display().to_string()])?;
            let volume = serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": { "name": name },
                "spec": {
                    "capacity": { "storage": VOLUME_SIZE },
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": { "path": path.display().to_string(), "type": "Directory" },
                    "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                        { "key": "kubernetes.io/hostname", "operator": "In", "values": [config::NODE_NAME] }
                    ] }] } },
                },
            });
            volumes
                .patch(&name, &params, &Patch::Apply(volume))
                .await
                .map_err(Error::kube(format!("applying PersistentVolume {name}")))?;
        }
        Ok(())
    }

    /// The end of a node process's log, for error messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        log_tail(&self.dir.join("logs").join(format!("{name}.log")), lines)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet first, so that it starts nothing new, then everything else; the sweep
        // then kills the containers by cgroup and removes what they left.
        for process in self.processes.iter().rev() {
            process.kill();
        }
        self.processes.clear();
        sweep::sweep(&self.dir);
        let left = sweep::leftovers(&self.dir);
        if !left.is_empty() {
            tracing::warn!("the node left: {}", left.join(", "));
        }
    }
}

/// Takes the node's lock (a file beside its directory); the lock goes with this process.
fn lock_node_dir(dir: &Path) -> Result<File, Error> {
    let lock_path = dir.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(format!("opening {}", lock_path.display())))?;
    file.try_lock().map_err(|e| Error::Node {
        what: format!("locking {}", lock_path.display()),
        reason: format!("{e}: another test node runs on this machine, and only one can"),
    })?;
    Ok(file)
}

/// The kubelet refuses a `cgroupRoot` that does not exist in every hierarchy.
fn create_cgroup_root() -> Result<(), Error> {
    let hierarchies =
        std::fs::read_dir("/sys/fs/cgroup").map_err(Error::io("reading /sys/fs/cgroup"))?;
    for hierarchy in hierarchies.flatten() {
        let path = hierarchy.path();
        if path.join("cgroup.procs").exists() {
            let root = path.join(config::CGROUP_ROOT);
            std::fs::create_dir_all(&root)
                .map_err(Error::io(format!("creating {}", root.display())))?;
        }
    }
    Ok(())
}

async fn wait_for_socket(
    process: &ChildProcess,
    socket: &Path,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(process.exited_error(status));
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(process.timeout_error(format!("{} to listen", socket.display()), timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
