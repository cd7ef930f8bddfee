//! Helpers for the delivery tests: where the repository and the tools are (kubectl, helm, lua,
//! promtool), rendering Kustomize directories and the Helm chart into objects, and server-side
//! dry-runs of those objects against the test control plane.
//!
//! A missing tool is an error that says how to install it, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;
use serde_json::Value;

pub mod health;

/// Field manager of the dry-run applies.
pub const FIELD_MANAGER: &str = "homelab-deploy-tests";

/// The workspace root.
pub fn repo_root() -> PathBuf {
    homelab_testenv::repo_root()
}

/// `path` relative to the repository root, for messages.
pub fn display(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The executable `name` found on `PATH`, or an error that says how to install it.
pub fn tool(name: &str, install: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!("`{name}` is not on PATH; the delivery tests need it: {install}")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// kubectl with built-in Kustomize: the one built with the test control plane when there is one
/// (same Kubernetes version as the apiserver), else the first on `PATH`.
pub async fn kubectl() -> Result<PathBuf> {
    if let Ok(binaries) = homelab_testenv::binaries::Binaries::locate().await {
        let path = binaries.path("kubectl");
        if is_executable(&path) {
            return Ok(path);
        }
    }
    tool(
        "kubectl",
        "run `make control-plane` (builds kubectl with the control plane) or install kubectl",
    )
}

/// Helm, built and cached by `hack/install-helm.sh` (the path is the script's last line).
pub fn helm() -> Result<PathBuf> {
    let script = repo_root().join("hack/install-helm.sh");
    let stdout = run(Command::new("bash").arg(&script).stderr(Stdio::inherit()))
        .with_context(|| format!("{} could not provide helm", display(&script)))?;
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !is_executable(&path) {
        bail!(
            "{} printed {:?}, which is not an executable",
            display(&script),
            path
        );
    }
    Ok(path)
}

/// Runs a command and returns its standard output; fails with its standard error when it exits
/// with a non-zero status.
pub fn run(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The non-empty YAML documents of a multi-document stream.
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The YAML documents of a file.
pub fn read_documents(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", display(path)))?;
    parse_documents(&text).with_context(|| format!("parsing {}", display(path)))
}

/// `kubectl kustomize <dir>`: the objects a Kustomize directory renders.
pub async fn kustomize(dir: &Path) -> Result<Vec<Value>> {
    let kubectl = kubectl().await?;
    let output = run(Command::new(kubectl).arg("kustomize").arg(dir))?;
    parse_documents(&output).with_context(|| format!("parsing the output of {}", display(dir)))
}

/// `helm template` of the chart in `deploy/helm/homelab-operator` with `--include-crds` and the
/// extra arguments (e.g. `--set`), as release `homelab-operator` in `namespace`.
pub fn helm_template(namespace: &str, extra: &[&str]) -> Result<Vec<Value>> {
    let helm = helm()?;
    let chart = repo_root().join("deploy/helm/homelab-operator");
    let output = run(Command::new(helm)
        .args(["template", "homelab-operator"])
        .arg(&chart)
        .args(["--namespace", namespace, "--include-crds"])
        .args(extra))?;
    parse_documents(&output).context("parsing the output of helm template")
}

/// `kind/name` of an object, for messages and comparisons.
pub fn object_id(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Server-side dry-runs against a real apiserver, resolving kinds through discovery.
pub struct DryRun {
    client: kube::Client,
    discovery: Discovery,
}

impl DryRun {
    pub async fn new(client: kube::Client) -> Result<Self> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .context("API discovery")?;
        Ok(Self { client, discovery })
    }

    /// Whether the kind of `object` is namespaced (an error when the apiserver does not serve it).
    pub fn is_namespaced(&self, object: &Value) -> Result<bool> {
        let (_, scope) = self.resolve(object)?;
        Ok(scope == Scope::Namespaced)
    }

    fn resolve(&self, object: &Value) -> Result<(kube::core::ApiResource, Scope)> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = self
            .discovery
            .resolve_gvk(&gvk)
            .with_context(|| format!("the apiserver does not serve {api_version} {kind}"))?;
        Ok((resource, capabilities.scope))
    }

    /// Server-side apply with `dryRun=All` and strict field validation: everything the apiserver
    /// checks (schema, CEL rules, admission) without storing anything. Namespaced objects go to
    /// `namespace` when given, else to their own namespace. Returns the object the server would
    /// store.
    pub async fn apply(&self, object: &Value, namespace: Option<&str>) -> Result<Value> {
        let (resource, scope) = self.resolve(object)?;
        let id = object_id(object);
        let name = object["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{id} has no metadata.name"))?;
        let mut object = object.clone();
        let api: Api<DynamicObject> = match scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
            Scope::Namespaced => {
                let target = match namespace {
                    Some(ns) => ns.to_owned(),
                    None => object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_owned(),
                };
                object["metadata"]["namespace"] = Value::String(target.clone());
                Api::namespaced_with(self.client.clone(), &target, &resource)
            }
        };
        let params = PatchParams::apply(FIELD_MANAGER)
            .force()
            .dry_run()
            .validation_strict();
        let applied = api
            .patch(name, &params, &Patch::Apply(&object))
            .await
            .with_context(|| format!("the apiserver rejected {id}"))?;
        serde_json::to_value(applied).context("serializing the dry-run result")
    }

    /// Dry-runs every object, collecting every rejection into one error.
    pub async fn apply_all(&self, objects: &[Value], namespace: Option<&str>) -> Result<()> {
        let mut failures = Vec::new();
        for object in objects {
            if let Err(e) = self.apply(object, namespace).await {
                failures.push(format!("{e:#}"));
            }
        }
        if !failures.is_empty() {
            bail!(
                "{} of {} objects rejected:\n{}",
                failures.len(),
                objects.len(),
                failures.join("\n")
            );
        }
        Ok(())
    }
}
