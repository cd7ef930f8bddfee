//! Argo CD out of cluster, against a test control plane: redis, the repo-server, the application
//! controller, the ApplicationSet controller and the API server (with authentication off, on
//! loopback), as its own `Procfile` runs them for Argo CD's end-to-end tests. Git comes from
//! repositories on this machine ([`GitRepo`], `file://` URLs), never from a network.
//!
//! The namespace `argocd` holds what Argo CD's install creates: its CRDs (from the module at the
//! built version), the ConfigMaps and Secret of `manifests/base/config`, and the `default`
//! AppProject. The binaries come from `hack/build-argocd.sh`, which builds them on first use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{ChildProcess, RunDir, free_port, wait_for_port};
use crate::{Error, TestEnv, repo_root};

/// The namespace Argo CD runs in, as in its install manifests.
pub const NAMESPACE: &str = "argocd";
/// The version `hack/build-argocd.sh` builds.
pub const VERSION: &str = "v3.6.1";

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory `hack/build-argocd.sh` prints: `bin/` (argocd, its component links, kustomize,
/// git wrappers) and `manifests/` (`crds/`, `config/`).
#[derive(Debug, Clone)]
pub struct Build {
    dir: PathBuf,
}

impl Build {
    /// Runs `hack/build-argocd.sh` (building what is not cached) and checks what it printed.
    pub async fn locate() -> Result<Self, Error> {
        let script = repo_root().join("hack/build-argocd.sh");
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .map_err(|e| argocd_error("running hack/build-argocd.sh", e.to_string()))?;
        if !output.status.success() {
            return Err(argocd_error(
                "building it with hack/build-argocd.sh",
                format!("the script failed ({}); its output is above", output.status),
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        for needed in [
            "bin/argocd",
            "bin/kustomize",
            "manifests/crds",
            "manifests/config",
        ] {
            if !dir.join(needed).exists() {
                return Err(argocd_error(
                    "locating the build",
                    format!("{} has no {needed}", dir.display()),
                ));
            }
        }
        Ok(Self { dir })
    }

    /// The `argocd` binary (it acts as the component it is named after).
    pub fn argocd(&self) -> PathBuf {
        self.dir.join("bin/argocd")
    }

    /// `bin/`, which goes first on the repo-server's `PATH` (kustomize, git wrappers).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Argo CD's own CRDs at the built version.
    pub fn crds_dir(&self) -> PathBuf {
        self.dir.join("manifests/crds")
    }

    /// Argo CD's `manifests/base/config`: argocd-cm, argocd-rbac-cm, argocd-secret and the rest.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("manifests/config")
    }
}

/// A running Argo CD. Its processes stop when it is dropped; what it created in the control
/// plane stays with the control plane.
#[derive(Debug)]
pub struct ArgoCd {
    // Field order is drop order: the components stop before redis, then the directory goes.
    processes: Vec<ChildProcess>,
    redis: ChildProcess,
    server_port: u16,
    build: Build,
    kubeconfig: PathBuf,
    environment: Vec<(String, String)>,
    dir: RunDir,
}

impl ArgoCd {
    /// Installs Argo CD's namespace objects into `env` and starts its components.
    pub async fn start(env: &TestEnv) -> Result<Self, Error> {
        let build = Build::locate().await?;
        install(env, &build).await?;
        let dir = RunDir::create()?;
        let root = dir.path().to_owned();
        for sub in [
            "tls",
            "ssh",
            "gpg/keys",
            "gpg/source",
            "tmp",
            "home",
            "redis",
        ] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(Error::io(format!("creating {}", root.join(sub).display())))?;
        }
        let path = match std::env::var_os("PATH") {
            Some(path) => {
                let mut dirs = vec![build.bin_dir()];
                dirs.extend(std::env::split_paths(&path));
                std::env::join_paths(dirs)
                    .map_err(|e| argocd_error("building PATH", e.to_string()))?
            }
            None => build.bin_dir().into_os_string(),
        };
        let environment: Vec<(String, String)> = [
            ("ARGOCD_FAKE_IN_CLUSTER", "true".to_owned()),
            ("KUBECONFIG", env.kubeconfig_path().display().to_string()),
            (
                "ARGOCD_TLS_DATA_PATH",
                root.join("tls").display().to_string(),
            ),
            (
                "ARGOCD_SSH_DATA_PATH",
                root.join("ssh").display().to_string(),
            ),
            (
                "ARGOCD_GNUPGHOME",
                root.join("gpg/keys").display().to_string(),
            ),
            (
                "ARGOCD_GPG_DATA_PATH",
                root.join("gpg/source").display().to_string(),
            ),
            ("ARGOCD_GPG_ENABLED", "false".to_owned()),
            ("TMPDIR", root.join("tmp").display().to_string()),
            // The repo-server's askpass socket defaults to one fixed path in /tmp, which a second
            // Argo CD on the machine (a parallel test) would find taken.
            (
                "ARGOCD_ASK_PASS_SOCK",
                root.join("ask-pass.sock").display().to_string(),
            ),
            ("HOME", root.join("home").display().to_string()),
            ("PATH", path.to_string_lossy().into_owned()),
            // git reads no configuration of this machine's users.
            ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        let redis_port = free_port()?;
        let redis = ChildProcess::spawn(
            "redis",
            Path::new("redis-server"),
            &strings(&[
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &root.join("redis").display().to_string(),
            ]),
            &root.join("redis.log"),
        )
        .await
        .map_err(|e| {
            argocd_error(
                "starting redis-server",
                format!("{e} (install it: apt-get install redis-server)"),
            )
        })?;
        wait_for_port(&redis, redis_port, START_TIMEOUT).await?;
        let redis_addr = format!("127.0.0.1:{redis_port}");

        let repo_port = free_port()?;
        let repo_addr = format!("127.0.0.1:{repo_port}");
        let mut processes = Vec::new();
        let repo_server = spawn(
            &build,
            &root,
            &environment,
            "argocd-repo-server",
            &[
                "--port",
                &repo_port.to_string(),
                "--metrics-port",
                &free_port()?.to_string(),
                "--redis",
                &redis_addr,
                "--disable-tls",
                "--client-ca-path=",
                "--address",
                "127.0.0.1",
                // How long a branch's resolved commit is cached (3 minutes by default, tuned for
                // remote hosts): a test that commits expects Argo CD to see it within seconds.
                "--revision-cache-expiration",
                "5s",
            ],
        )
        .await?;
        wait_for_port(&repo_server, repo_port, START_TIMEOUT).await?;
        processes.push(repo_server);

        let controller_metrics = free_port()?;
        let controller = spawn(
            &build,
            &root,
            &environment,
            "argocd-application-controller",
            &[
                "--namespace",
                NAMESPACE,
                "--redis",
                &redis_addr,
                "--repo-server",
                &repo_addr,
                "--repo-server-plaintext",
                "--metrics-port",
                &controller_metrics.to_string(),
                // Git is polled every 10 s instead of every 3 minutes: tests change it.
                "--app-resync",
                "10",
            ],
        )
        .await?;
        wait_for_port(&controller, controller_metrics, START_TIMEOUT).await?;
        processes.push(controller);

        let appset_probe = free_port()?;
        let appset = spawn(
            &build,
            &root,
            &environment,
            "argocd-applicationset-controller",
            &[
                "--namespace",
                NAMESPACE,
                "--argocd-repo-server",
                &repo_addr,
                "--repo-server-plaintext",
                "--metrics-addr",
                &format!("127.0.0.1:{}", free_port()?),
                "--probe-addr",
                &format!("127.0.0.1:{appset_probe}"),
                "--webhook-addr",
                &format!("127.0.0.1:{}", free_port()?),
            ],
        )
        .await?;
        wait_for_port(&appset, appset_probe, START_TIMEOUT).await?;
        processes.push(appset);

        let server_port = free_port()?;
        let server = spawn(
            &build,
            &root,
            &environment,
            "argocd-server",
            &[
                "--namespace",
                NAMESPACE,
                "--redis",
                &redis_addr,
                "--repo-server",
                &repo_addr,
                "--repo-server-plaintext",
                "--insecure",
                "--disable-auth",
                "--address",
                "127.0.0.1",
                "--port",
                &server_port.to_string(),
                "--metrics-port",
                &free_port()?.to_string(),
                "--dex-server",
                "",
            ],
        )
        .await?;
        wait_for_port(&server, server_port, START_TIMEOUT).await?;
        processes.push(server);
        tracing::info!("Argo CD {VERSION} running (API server on 127.0.0.1:{server_port})");
        Ok(Self {
            processes,
            redis,
            server_port,
            build,
            kubeconfig: env.kubeconfig_path().to_owned(),
            environment,
            dir,
        })
    }

    /// The API server's base URL (plain HTTP on loopback, no authentication).
    pub fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server_port)
    }

    /// The build it runs.
    pub fn build(&self) -> &Build {
        &self.build
    }

    /// An `argocd` CLI command talking to the API server, as a user's CLI does (plain HTTP on
    /// loopback; the server needs no login), with the components' environment.
    pub fn cli(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.build.argocd());
        command
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .env("ARGOCD_BINARY_NAME", "argocd")
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "--server",
                &format!("127.0.0.1:{}", self.server_port),
                "--plaintext",
                "--auth-token",
                "none",
            ]);
        command
    }

    /// A GET of the API server, as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        let url = format!("{}{path}", self.server_url());
        let response = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| argocd_error(format!("GET {url}"), e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| argocd_error(format!("GET {url}"), e.to_string()))?;
        if !status.is_success() {
            return Err(argocd_error(
                format!("GET {url}"),
                format!("{status}: {body}"),
            ));
        }
        serde_json::from_str(&body).map_err(|e| argocd_error(format!("GET {url}"), e.to_string()))
    }

    /// Fails when a component has exited, with the end of its log.
    pub fn check_running(&self) -> Result<(), Error> {
        for process in std::iter::once(&self.redis).chain(&self.processes) {
            if let Some(status) = process.exit_status() {
                return Err(process.exited_error(status));
            }
        }
        Ok(())
    }

    /// The end of every component's log, for a failing test's message.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes
            .iter()
            .map(|p| {
                format!(
                    "--- {} ({})\n{}",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the components keep their scratch files and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

async fn spawn(
    build: &Build,
    root: &Path,
    environment: &[(String, String)],
    component: &str,
    args: &[&str],
) -> Result<ChildProcess, Error> {
    let mut args = strings(args);
    args.extend(strings(&["--loglevel", "info"]));
    let mut environment = environment.to_vec();
    environment.push(("ARGOCD_BINARY_NAME".into(), component.into()));
    ChildProcess::spawn_with_env(
        component,
        &build.bin_dir().join(component),
        &args,
        &environment,
        &root.join(format!("{component}.log")),
    )
    .await
}

/// What Argo CD's install puts in the cluster: its CRDs, the namespace, the objects of
/// `manifests/base/config` and the `default` AppProject (which `argocd-server` would create on
/// first start; it is created here so that nothing waits on it).
async fn install(env: &TestEnv, build: &Build) -> Result<(), Error> {
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=homelab-testenv",
            "-k",
            &build.crds_dir().display().to_string(),
        ],
    )
    .await?;
    for crd in [
        "applications.argoproj.io",
        "applicationsets.argoproj.io",
        "appprojects.argoproj.io",
    ] {
        kubectl(
            env,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ],
        )
        .await?;
    }
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    apply_json(env, &namespace).await?;
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--field-manager=argocd-install",
            "-n",
            NAMESPACE,
            "-k",
            &build.config_dir().display().to_string(),
        ],
    )
    .await?;
    let project = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"namespace": "*", "server": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    });
    apply_json(env, &project).await
}

async fn apply_json(env: &TestEnv, object: &Value) -> Result<(), Error> {
    let mut command = tokio::process::Command::from(env.kubectl()?);
    command
        .args([
            "apply",
            "--server-side",
            "--field-manager=argocd-install",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| argocd_error("running kubectl", e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(object.to_string().as_bytes())
            .await
            .map_err(|e| argocd_error("writing to kubectl", e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| argocd_error("running kubectl", e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(argocd_error(
            "kubectl apply",
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

async fn kubectl(env: &TestEnv, args: &[&str]) -> Result<String, Error> {
    let output = tokio::process::Command::from(env.kubectl()?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| argocd_error("running kubectl", e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(argocd_error(
            format!("kubectl {}", args.join(" ")),
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// A git repository on this machine that Argo CD reads through a `file://` URL. Each
/// [`GitRepo::commit`] replaces the whole tree with the given files.
#[derive(Debug)]
pub struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    /// Creates an empty repository with branch `main` in `dir`.
    pub fn init(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let repo = Self {
            dir: dir.to_owned(),
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"])?;
        Ok(repo)
    }

    /// The URL Argo CD clones.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// The working tree, to write files into before [`GitRepo::commit`].
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Commits everything in the working tree (additions, changes and deletions) and returns
    /// the commit's SHA.
    pub fn commit(&self, message: &str) -> Result<String, Error> {
        self.git(&["add", "--all"])?;
        self.git(&[
            "-c",
            "user.name=homelab-testenv",
            "-c",
            "user.email=testenv@homelab.invalid",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            message,
        ])?;
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    fn git(&self, args: &[&str]) -> Result<String, Error> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| argocd_error("running git", e.to_string()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(argocd_error(
                format!("git {}", args.join(" ")),
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    }
}

/// Copies the files of `from` (recursively) into `to`, as they are on disk.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(to).map_err(Error::io(format!("creating {}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(Error::io(format!("reading {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("reading {}", from.display())))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(Error::io(format!("reading {}", source.display())))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(Error::io(format!(
                "copying {} to {}",
                source.display(),
                target.display()
            )))?;
        }
    }
    Ok(())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn argocd_error(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::ArgoCd {
        what: what.into(),
        reason: reason.into(),
    }
}
