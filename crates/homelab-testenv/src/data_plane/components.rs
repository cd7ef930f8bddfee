//! CloudNativePG, the Barman Cloud Plugin and External Secrets Operator, installed from their
//! upstream manifests (rendered by `hack/build-data-plane.sh`, which lists every change made to
//! them in docs/data-plane.md) and waited for until their Deployments are Available.
//!
//! The test environment adds what a cluster admin would: the plugin's two TLS Secrets (made here
//! instead of by cert-manager), the test CA for External Secrets Operator (its Azure client trusts
//! only the system roots, so `SSL_CERT_FILE` names a mounted bundle), and the
//! `ClusterSecretStore` that reaches the Key Vault emulator with a service principal.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};

use crate::azure::PodFacingEndpoints;
use crate::{Error, TestEnv};

const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The namespace of CloudNativePG and the plugin.
pub const CNPG_NAMESPACE: &str = "cnpg-system";
/// The namespace of External Secrets Operator.
pub const ESO_NAMESPACE: &str = "external-secrets";
/// The ClusterSecretStore the operator uses by default.
pub const SECRET_STORE: &str = "azure-keyvault";
/// The ConfigMap holding the test CA, in ESO's namespace.
const CA_CONFIG_MAP: &str = "homelab-testenv-ca";
const CA_MOUNT: &str = "/etc/homelab-testenv-ca";

/// What `hack/build-data-plane.sh` built.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The script's output directory (`bin/`, `manifests/`).
    pub dir: PathBuf,
}

impl Artifacts {
    /// Runs `hack/build-data-plane.sh` (building on first use).
    pub async fn locate() -> Result<Self, Error> {
        let dir = crate::process::run_build_script("build-data-plane.sh", &[], &[]).await?;
        Ok(Self { dir })
    }

    /// A binary in `bin/`.
    pub fn binary(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    fn manifest(&self, name: &str) -> PathBuf {
        self.dir.join("manifests").join(name)
    }
}

/// Installs CloudNativePG (with `pgbouncer_image` as its Poolers' default image) and the plugin,
/// and waits until both run.
pub async fn install_cloudnative_pg(
    env: &TestEnv,
    artifacts: &Artifacts,
    work: &Path,
    pgbouncer_image: &str,
) -> Result<(), Error> {
    let text = std::fs::read_to_string(artifacts.manifest("cnpg.yaml"))
        .map_err(Error::io("reading the CloudNativePG manifest"))?;
    let mut documents = parse_documents(&text, "cnpg.yaml")?;
    set_pgbouncer_image(&mut documents, pgbouncer_image)?;
    apply_documents(env, &documents, &work.join("cnpg.yaml")).await?;
    wait_available(env, CNPG_NAMESPACE, "cnpg-controller-manager").await?;
    // The plugin's TLS, in place of upstream's cert-manager Certificates: each side trusts only
    // the other's certificate, so both are self-signed, as upstream's are.
    let server = crate::pki::self_signed("barman-cloud", &["barman-cloud"], true)?;
    let client = crate::pki::self_signed("barman-cloud-client", &[], false)?;
    let mut documents = Vec::new();
    for (name, cert) in [
        ("barman-cloud-server-tls", &server),
        ("barman-cloud-client-tls", &client),
    ] {
        documents.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": { "name": name, "namespace": CNPG_NAMESPACE },
            "stringData": { "tls.crt": cert.cert_pem, "tls.key": cert.key_pem, "ca.crt": cert.cert_pem },
        }));
    }
    apply_documents(env, &documents, &work.join("plugin-tls.yaml")).await?;
    apply_file(env, &artifacts.manifest("plugin-barman-cloud.yaml")).await?;
    wait_available(env, CNPG_NAMESPACE, "barman-cloud").await?;
    Ok(())
}

/// Installs External Secrets Operator trusting `ca_pem`, and the default ClusterSecretStore for
/// the Key Vault emulator, and waits until the store is Ready.
pub async fn install_external_secrets(
    env: &TestEnv,
    artifacts: &Artifacts,
    work: &Path,
    azure: &PodFacingEndpoints,
    ca_pem: &str,
) -> Result<(), Error> {
    apply_file(env, &artifacts.manifest("external-secrets-crds.yaml")).await?;
    let text = std::fs::read_to_string(artifacts.manifest("external-secrets.yaml"))
        .map_err(Error::io("reading the External Secrets Operator manifest"))?;
    let mut documents = parse_documents(&text, "external-secrets.yaml")?;
    // The namespace first, then the CA before the Deployments that mount it.
    let namespace_at = documents
        .iter()
        .position(|d| d["kind"] == "Namespace")
        .unwrap_or(0);
    documents.insert(
        namespace_at + 1,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": CA_CONFIG_MAP, "namespace": ESO_NAMESPACE },
            "data": { "ca.crt": ca_pem },
        }),
    );
    for document in &mut documents {
        if document["kind"] == "Deployment" {
            trust_test_ca(document);
        }
    }
    apply_documents(env, &documents, &work.join("external-secrets.yaml")).await?;
    for deployment in [
        "external-secrets",
        "external-secrets-webhook",
        "external-secrets-cert-controller",
    ] {
        wait_available(env, ESO_NAMESPACE, deployment).await?;
    }
    let principal = azure.service_principal();
    let store = [
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "azure-keyvault-credentials", "namespace": ESO_NAMESPACE },
            "stringData": { "client-id": principal.client_id, "client-secret": principal.client_secret },
        }),
        json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ClusterSecretStore",
            "metadata": { "name": SECRET_STORE },
            "spec": { "provider": { "azurekv": {
                "vaultUrl": azure.vault_url(),
                "tenantId": principal.tenant_id,
                "environmentType": "PublicCloud",
                "authType": "ServicePrincipal",
                "authSecretRef": {
                    "clientId": { "name": "azure-keyvault-credentials", "namespace": ESO_NAMESPACE, "key": "client-id" },
                    "clientSecret": { "name": "azure-keyvault-credentials", "namespace": ESO_NAMESPACE, "key": "client-secret" },
                },
            } } },
        }),
    ];
    // The webhook admits stores only once it serves; it may take a moment after Available.
    let deadline = Instant::now() + AVAILABLE_TIMEOUT;
    loop {
        match apply_documents(env, &store, &work.join("secret-store.yaml")).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("ClusterSecretStore not admitted yet: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
    wait_store_ready(env).await
}

/// Names third-party components (comma-separated: `cloudnative-pg`, `barman-cloud`,
/// `external-secrets`) to stop once the data plane is installed, by scaling their Deployments to
/// zero: what the end-to-end tests show when one of them is not running.
pub const STOP_ENV: &str = "HOMELAB_DATA_PLANE_STOP";

/// The Deployments of each component [`STOP_ENV`] can name.
const STOPPABLE: [(&str, &str, &[&str]); 3] = [
    (
        "cloudnative-pg",
        CNPG_NAMESPACE,
        &["cnpg-controller-manager"],
    ),
    ("barman-cloud", CNPG_NAMESPACE, &["barman-cloud"]),
    (
        "external-secrets",
        ESO_NAMESPACE,
        &[
            "external-secrets",
            "external-secrets-webhook",
            "external-secrets-cert-controller",
        ],
    ),
];

/// Stops what [`STOP_ENV`] names; an unknown name is an error.
pub async fn stop_requested(env: &TestEnv) -> Result<(), Error> {
    let Ok(list) = std::env::var(STOP_ENV) else {
        return Ok(());
    };
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, namespace, deployments)) = STOPPABLE.iter().find(|(n, _, _)| *n == name)
        else {
            return Err(Error::Node {
                what: format!("{STOP_ENV}={list}"),
                reason: format!(
                    "{name} is not one of {}",
                    STOPPABLE.map(|(n, _, _)| n).join(", ")
                ),
            });
        };
        for deployment in *deployments {
            kubectl(
                env,
                &[
                    "scale",
                    "deployment",
                    "-n",
                    namespace,
                    deployment,
                    "--replicas=0",
                ],
            )
            .await?;
        }
        tracing::warn!("{name} stopped ({STOP_ENV}): its Deployments are scaled to zero");
    }
    Ok(())
}

/// Sets `PGBOUNCER_IMAGE_NAME` (CloudNativePG's configuration of the default PgBouncer image) on
/// the manager container: upstream's default is an image on ghcr.io, which the node cannot pull.
fn set_pgbouncer_image(documents: &mut [Value], image: &str) -> Result<(), Error> {
    let manager = documents
        .iter_mut()
        .filter(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "cnpg-controller-manager")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .into_iter()
                .flatten()
        })
        .find(|c| c["name"] == "manager")
        .ok_or_else(|| Error::Node {
            what: "the CloudNativePG manifest".into(),
            reason: "it has no Deployment cnpg-controller-manager with a container `manager`"
                .into(),
        })?;
    let env = json!({ "name": "PGBOUNCER_IMAGE_NAME", "value": image });
    match manager["env"].as_array_mut() {
        Some(list) => {
            list.retain(|e| e["name"] != "PGBOUNCER_IMAGE_NAME");
            list.push(env);
        }
        None => manager["env"] = json!([env]),
    }
    Ok(())
}

/// Mounts the test CA into every container of `deployment` and points Go's `SSL_CERT_FILE` at it.
fn trust_test_ca(deployment: &mut Value) {
    let spec = &mut deployment["spec"]["template"]["spec"];
    let volume = json!({ "name": CA_CONFIG_MAP, "configMap": { "name": CA_CONFIG_MAP } });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for container in containers {
            let env = json!({ "name": "SSL_CERT_FILE", "value": format!("{CA_MOUNT}/ca.crt") });
            match container["env"].as_array_mut() {
                Some(list) => list.push(env),
                None => container["env"] = json!([env]),
            }
            let mount = json!({ "name": CA_CONFIG_MAP, "mountPath": CA_MOUNT, "readOnly": true });
            match container["volumeMounts"].as_array_mut() {
                Some(list) => list.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
        }
    }
}

async fn wait_store_ready(env: &TestEnv) -> Result<(), Error> {
    let deadline = Instant::now() + AVAILABLE_TIMEOUT;
    loop {
        let output = kubectl(
            env,
            &[
                "get",
                "clustersecretstore",
                SECRET_STORE,
                "-o",
                "jsonpath={.status.conditions}",
            ],
        )
        .await;
        let last = match output {
            Ok(conditions)
                if conditions.contains("\"type\":\"Ready\"")
                    && conditions.contains("\"status\":\"True\"") =>
            {
                return Ok(());
            }
            Ok(conditions) => conditions,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::timeout(
                format!("ClusterSecretStore {SECRET_STORE} to be Ready (last: {last})"),
                AVAILABLE_TIMEOUT,
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until Deployment `namespace/name` is Available.
pub async fn wait_available(env: &TestEnv, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(env.client().await?, namespace);
    let deadline = Instant::now() + AVAILABLE_TIMEOUT;
    loop {
        if let Ok(Some(deployment)) = api.get_opt(name).await {
            let available = deployment
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            if available {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let pods = kubectl(env, &["get", "pods", "-n", namespace, "-o", "wide"])
                .await
                .unwrap_or_default();
            return Err(Error::timeout(
                format!(
                    "Deployment {namespace}/{name} to be Available; its namespace's pods:\n{pods}"
                ),
                AVAILABLE_TIMEOUT,
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads a multi-document YAML file into JSON values, skipping empty documents.
pub fn parse_documents(text: &str, what: &str) -> Result<Vec<Value>, Error> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| Error::Manifest {
                path: PathBuf::from(what),
                reason: e.to_string(),
            })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Applies `documents` server-side, through a file at `path` (kept for a person to read).
pub async fn apply_documents(env: &TestEnv, documents: &[Value], path: &Path) -> Result<(), Error> {
    let mut text = String::new();
    for document in documents {
        text.push_str("---\n");
        text.push_str(
            &serde_json::to_string(document).map_err(|e| Error::Manifest {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
        );
        text.push('\n');
    }
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))?;
    apply_file(env, path).await
}

/// `kubectl apply --server-side` of a file, as the upstream install instructions say.
pub async fn apply_file(env: &TestEnv, path: &Path) -> Result<(), Error> {
    let path = path.display().to_string();
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=homelab-testenv",
            "-f",
            &path,
        ],
    )
    .await
    .map(drop)
}

/// Runs kubectl against `env` and returns its stdout.
pub async fn kubectl(env: &TestEnv, args: &[&str]) -> Result<String, Error> {
    let command = env.kubectl()?;
    let output = tokio::process::Command::from(command)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(Error::io("running kubectl"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Node {
            what: format!("kubectl {}", args.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
