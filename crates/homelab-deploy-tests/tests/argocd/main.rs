//! Argo CD itself, built from its Go module (`hack/build-argocd.sh`) and run out of cluster
//! against a control plane of its own (`homelab_testenv::argocd`), syncing from git
//! repositories on this machine:
//!
//! - `health`: the health checks, installed into the `argocd-cm` that Argo CD's install created
//!   the way the README says, judged by Argo CD's application controller for every case of their
//!   `health_test.yaml` and every reason the operator reports.
//! - `gitops`: the `examples/gitops` ApplicationSets generate an Application per app and
//!   environment, Argo CD syncs them, and the operator reconciles what Argo CD applied.

mod gitops;
mod health;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use homelab_deploy_tests::{kubectl, repo_root, run};
use homelab_testenv::TestEnv;
use homelab_testenv::argocd::{self, ArgoCd, GitRepo};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// A control plane of its own, with Argo CD running against it and a git repository to sync
/// from. Each test has one: Argo CD watches the whole cluster, and the tests must not see each
/// other's objects or the operator of the other.
pub struct Stage {
    // Field order is drop order: Argo CD stops before its control plane.
    pub argocd: ArgoCd,
    pub env: TestEnv,
    pub repo: GitRepo,
    pub client: kube::Client,
}

impl Stage {
    pub async fn start(repo_name: &str) -> Result<Self> {
        let env = TestEnv::start()
            .await
            .context("starting a control plane for Argo CD")?;
        let argocd = ArgoCd::start(&env).await.context("starting Argo CD")?;
        let repo = GitRepo::init(&argocd.dir().join("git").join(repo_name))?;
        let client = env.client().await?;
        Ok(Self {
            argocd,
            env,
            repo,
            client,
        })
    }

    /// Installs the health checks as the README says:
    /// `kubectl apply --server-side --field-manager=homelab-operator -n argocd -f deploy/argocd/argocd-cm.yaml`.
    pub async fn install_health_checks(&self) -> Result<()> {
        let kubectl = kubectl().await?;
        let cm = repo_root().join("deploy/argocd/argocd-cm.yaml");
        run(std::process::Command::new(kubectl)
            .arg(format!(
                "--kubeconfig={}",
                self.env.kubeconfig_path().display()
            ))
            .args([
                "apply",
                "--server-side",
                "--field-manager=homelab-operator",
                "-n",
                argocd::NAMESPACE,
                "-f",
            ])
            .arg(&cm))?;
        Ok(())
    }

    pub fn applications(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            argocd::NAMESPACE,
            &argo_resource("Application"),
        )
    }

    /// Polls `check` every second until it returns `Some`, failing after `timeout` with the last
    /// reason it gave and the end of Argo CD's logs.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<std::result::Result<T, String>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.argocd.check_running()?;
            let last = match check().await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(reason)) => reason,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}: {last}\n\nArgo CD's logs:\n{}",
                    self.argocd.log_tails(15)
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The Application, or a reason it is not there yet.
    pub async fn application(&self, name: &str) -> Result<std::result::Result<Value, String>> {
        Ok(match self.applications().get_opt(name).await? {
            Some(app) => Ok(serde_json::to_value(app)?),
            None => Err(format!("Application {name} does not exist")),
        })
    }
}

/// An `argoproj.io/v1alpha1` kind.
pub fn argo_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", kind))
}

/// A `homelab.io/v1alpha1` kind.
pub fn homelab_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("homelab.io", "v1alpha1", kind))
}

/// An Application syncing `path` of `repo` into `namespace`, automatically, with pruning and
/// server-side apply, as the examples' Applications do.
pub fn application(name: &str, repo: &GitRepo, path: &str, namespace: &str) -> Value {
    serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": argocd::NAMESPACE},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo.url(), "targetRevision": "main", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": {
                "automated": {"prune": true},
                "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
            },
        },
    })
}

/// Writes `documents` as one YAML stream at `path` (JSON is YAML).
pub fn write_documents(path: &Path, documents: &[Value]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::new();
    for document in documents {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(document)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `value` at a JSON pointer, as a string ("" when absent).
pub fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
