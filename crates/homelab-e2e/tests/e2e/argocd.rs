//! Argo CD installs the operator: `deploy/argocd/application.yaml`, pointed at a git repository on
//! this machine holding the repository's `deploy/` and `crds/`, syncs `deploy/base` into the data
//! plane and reaches Synced and Healthy.
//!
//! The operator is already running there (the data plane installs it from `deploy/base` with
//! kubectl, and the other tests need it throughout), so Argo CD's sync applies the same objects
//! over it. The Application carries what a homelab outside AKS sets through Argo CD's Kustomize
//! options, the same as the data plane's own install: the image imported into the node, and the
//! Deployment patch for a service principal and the emulators' CA. The test checks that Argo CD
//! applied every object of `deploy/base` itself (its sync result, and its field manager on the
//! Deployment), not only that the objects are there.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use homelab_e2e::{data_plane, get, operator_running, patience, wait_for};
use homelab_testenv::argocd::{self, ArgoCd, GitRepo, copy_tree};
use homelab_testenv::data_plane::operator;
use homelab_testenv::repo_root;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const UPSTREAM_REPO: &str = "https://github.com/homelab-operator/homelab-operator.git";

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

#[tokio::test]
async fn argo_cd_installs_the_operator_from_deploy_base() -> Result<()> {
    let plane = data_plane().await?;
    let argocd = ArgoCd::start(plane.env()).await?;
    let repo = GitRepo::init(&argocd.dir().join("git/homelab-operator"))?;
    for dir in ["deploy", "crds"] {
        copy_tree(&repo_root().join(dir), &repo.path().join(dir))?;
    }
    repo.commit("deploy and crds")?;

    let running = get(
        plane,
        operator::NAMESPACE,
        "deployment",
        operator::DEPLOYMENT,
    )
    .await?;
    let image = text(&running, "/spec/template/spec/containers/0/image").to_owned();
    let (name, tag) = image
        .rsplit_once(':')
        .with_context(|| format!("the operator's image {image:?} has no tag"))?;

    let path = repo_root().join("deploy/argocd/application.yaml");
    let manifest = std::fs::read_to_string(&path)?;
    ensure!(
        manifest.contains(UPSTREAM_REPO),
        "{} does not name {UPSTREAM_REPO}",
        path.display()
    );
    let mut application: Value =
        serde_norway::from_str(&manifest.replace(UPSTREAM_REPO, &repo.url()))?;
    application["spec"]["source"]["kustomize"] = json!({
        "images": [format!("ghcr.io/homelab-operator/homelab-operator={name}:{tag}")],
        "components": ["../components/service-principal"],
        "patches": [{
            "target": {"kind": "Deployment", "name": operator::DEPLOYMENT},
            "patch": operator::deployment_patch().to_string(),
        }],
    });
    let client = plane.env().client().await?;
    let applications: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        argocd::NAMESPACE,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "argoproj.io",
            "v1alpha1",
            "Application",
        )),
    );
    applications
        .patch(
            "homelab-operator",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&application),
        )
        .await
        .context("creating the Application of deploy/argocd/application.yaml")?;

    let synced = wait_for(
        "the operator's Application Synced and Healthy",
        patience().min(Duration::from_secs(300)),
        || {
            let applications = applications.clone();
            let argocd = &argocd;
            async move {
                argocd.check_running()?;
                let app = serde_json::to_value(applications.get("homelab-operator").await?)?;
                let state = (
                    text(&app, "/status/sync/status"),
                    text(&app, "/status/health/status"),
                    text(&app, "/status/operationState/phase"),
                );
                if state == ("Synced", "Healthy", "Succeeded") {
                    return Ok(Some(app));
                }
                anyhow::bail!(
                    "sync {:?}, health {:?}, operation {:?}: {}",
                    state.0,
                    state.1,
                    state.2,
                    text(&app, "/status/operationState/message")
                )
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n\nArgo CD's logs:\n{}", argocd.log_tails(20)))?;

    // Every object of deploy/base was applied by Argo CD's sync.
    let kubectl = plane.env().kubectl()?;
    let rendered = tokio::process::Command::from(kubectl)
        .args(["kustomize"])
        .arg(repo_root().join("deploy/base"))
        .output()
        .await?;
    ensure!(
        rendered.status.success(),
        "kubectl kustomize deploy/base failed"
    );
    let objects = String::from_utf8_lossy(&rendered.stdout)
        .split("\n---\n")
        .map(serde_norway::from_str::<Value>)
        .collect::<Result<Vec<Value>, _>>()?;
    let results = synced
        .pointer("/status/operationState/syncResult/resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for object in &objects {
        let kind = text(object, "/kind");
        let name = text(object, "/metadata/name");
        let result = results
            .iter()
            .find(|r| text(r, "/kind") == kind && text(r, "/name") == name)
            .with_context(|| format!("Argo CD's sync did not apply {kind} {name}"))?;
        ensure!(
            text(result, "/status") == "Synced",
            "Argo CD's sync of {kind} {name}: {result}"
        );
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), operator::NAMESPACE);
    let deployment = deployments.get(operator::DEPLOYMENT).await?;
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.operation.as_deref() == Some("Apply"))
        .filter_map(|f| f.manager)
        .collect();
    ensure!(
        managers.iter().any(|m| m == "argocd-controller"),
        "Argo CD did not server-side apply the Deployment (appliers: {managers:?})"
    );
    operator_running(plane).await
}
