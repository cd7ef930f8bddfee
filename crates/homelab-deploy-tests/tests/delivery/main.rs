//! Delivery tests, against real tools: kubectl's Kustomize, Helm, Lua interpreters, promtool, and
//! the test control plane's kube-apiserver (schemas, CEL rules, RBAC, Pod Security admission).
//!
//! - `manifests`: the Kustomize base and the Helm chart render, every object passes a
//!   server-side dry-run, RBAC is least-privilege (checked statically and by the apiserver's
//!   authorizer), the pods are admitted by a namespace enforcing the `restricted` Pod Security
//!   Standard, and Helm and Kustomize install the same objects.
//! - `argocd`: the health checks of `deploy/argocd/health` give the results of their
//!   `health_test.yaml`, the `argocd-cm` snippet carries them verbatim, and the Argo CD objects
//!   are accepted by the apiserver.
//! - `gitops`: every overlay of `examples/gitops` renders and passes a dry-run, and the
//!   ApplicationSets' generators find them.
//! - `monitoring`: the alerts pass `promtool check rules` and `promtool test rules` and the
//!   apiserver, and the dashboard only queries metrics the operator exports.

mod argocd;
mod gitops;
mod manifests;
mod monitoring;

use anyhow::{Context, Result};
use homelab_testenv::TestEnv;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// A fresh namespace for one test, with the given labels added.
pub async fn namespace_with_labels(prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
    let env = TestEnv::get().await;
    let name = env.namespace(prefix).await?;
    if !labels.is_empty() {
        let api: Api<Namespace> = Api::all(env.client().await?);
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": labels } })),
        )
        .await
        .with_context(|| format!("labelling namespace {name}"))?;
    }
    Ok(name)
}
