//! homelab-operator in the cluster, installed from `deploy/base` as users install it: its
//! ServiceAccount and RBAC, two replicas with leader election. A kustomize overlay made here
//! changes only what a homelab outside AKS changes too: the image (imported, never pulled), a
//! service principal instead of workload identity (`deploy/components/service-principal`), and
//! the CA of the emulators' certificates.

use std::path::Path;

use serde_json::json;

use crate::azure::PodFacingEndpoints;
use crate::{Error, TestEnv, repo_root};

use super::components::{self, kubectl};

/// The operator's namespace in `deploy/base`.
pub const NAMESPACE: &str = "homelab-system";
/// Its Deployment.
pub const DEPLOYMENT: &str = "homelab-operator";

/// Installs the operator with `image` and waits until its Deployment is Available.
pub async fn install(
    env: &TestEnv,
    work: &Path,
    image: &str,
    azure: &PodFacingEndpoints,
    ca_pem: &str,
) -> Result<(), Error> {
    let overlay = work.join("operator");
    std::fs::create_dir_all(&overlay)
        .map_err(Error::io(format!("creating {}", overlay.display())))?;
    let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let principal = azure.service_principal();
    // The Secret `deploy/components/service-principal` documents; the component reads the
    // tenant and client IDs from it and mounts the client secret.
    let extra = [
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "homelab-operator-azure", "namespace": NAMESPACE },
            "stringData": {
                "tenant-id": principal.tenant_id,
                "client-id": principal.client_id,
                "client-secret": principal.client_secret,
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "homelab-operator-ca", "namespace": NAMESPACE },
            "data": { "ca.crt": ca_pem },
        }),
    ];
    let mut extra_text = String::new();
    for document in &extra {
        extra_text.push_str("---\n");
        extra_text.push_str(&document.to_string());
        extra_text.push('\n');
    }
    write(&overlay.join("azure.yaml"), &extra_text)?;
    let patch = deployment_patch();
    write(&overlay.join("deployment-patch.yaml"), &patch.to_string())?;
    // Kustomize takes only relative paths to a base.
    let base = relative_to(&overlay, &repo_root().join("deploy/base"));
    let component = relative_to(&overlay, &repo_root().join(SERVICE_PRINCIPAL_COMPONENT));
    write(
        &overlay.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {base}\n  - azure.yaml\n\
             components:\n  - {component}\n\
             images:\n  - name: ghcr.io/homelab-operator/homelab-operator\n    newName: {name}\n    newTag: \"{tag}\"\n\
             patches:\n  - path: deployment-patch.yaml\n",
            base = base.display(),
            component = component.display(),
        ),
    )?;
    let rendered = kubectl(env, &["kustomize", &overlay.display().to_string()]).await?;
    let rendered_path = work.join("operator.yaml");
    write(&rendered_path, &rendered)?;
    components::apply_file(env, &rendered_path).await?;
    components::wait_available(env, NAMESPACE, DEPLOYMENT).await
}

/// The Kustomize component that switches `deploy/base` to a service principal, as users outside
/// Azure install it.
pub const SERVICE_PRINCIPAL_COMPONENT: &str = "deploy/components/service-principal";

/// The strategic-merge patch of `deploy/base`'s Deployment that the install here makes besides
/// [`SERVICE_PRINCIPAL_COMPONENT`]: the image is never pulled, and the emulators' CA comes from
/// the ConfigMap `homelab-operator-ca` (created by [`install`]).
pub fn deployment_patch() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": DEPLOYMENT },
        "spec": { "template": { "spec": {
            "containers": [{
                "name": "operator",
                "imagePullPolicy": "Never",
                "env": [
                    { "name": "SSL_CERT_FILE", "value": "/etc/homelab-operator/ca/ca.crt" },
                ],
                "volumeMounts": [
                    { "name": "ca", "mountPath": "/etc/homelab-operator/ca", "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "ca", "configMap": { "name": "homelab-operator-ca" } },
            ],
        } } },
    })
}

/// `target` as a path relative to the directory `from` (both absolute).
fn relative_to(from: &Path, target: &Path) -> std::path::PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = std::path::PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &to[common..] {
        relative.push(part);
    }
    relative
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}
