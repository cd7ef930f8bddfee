//! What the end-to-end tests share: the data plane, applying manifests, waiting for conditions
//! written by the real controllers, running a client pod with an app's own database wiring, and
//! reading the backup container in Azurite.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use homelab_testenv::data_plane::DataPlane;
use homelab_testenv::data_plane::components::{kubectl, parse_documents};
use homelab_testenv::node::network;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use serde_json::{Value, json};

/// The PostgreSQL operand image the node holds.
pub const POSTGRESQL_IMAGE: &str = "localhost/homelab/postgresql:17.12";
/// The client image with `psql`.
pub const PSQL_IMAGE: &str = "localhost/homelab/psql:17.12";

/// The data plane, with the operator running in it (from `deploy/base`, leader elected).
pub async fn data_plane() -> Result<&'static DataPlane> {
    let plane = DataPlane::get().await;
    let client = plane.env().client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "homelab-system");
    let operator = deployments.get_opt("homelab-operator").await?.context(
        "homelab-operator is not installed in the data plane: start it with \
         HOMELAB_OPERATOR_BINARY set (make e2e does)",
    )?;
    let ready = operator
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or_default();
    if ready < 1 {
        bail!("homelab-operator has no ready replica in the data plane");
    }
    Ok(plane)
}

/// Applies `yaml` (one or more documents) server-side into `namespace`.
pub async fn apply(plane: &DataPlane, namespace: &str, yaml: &str) -> Result<()> {
    let documents = parse_documents(yaml, "test manifest")?;
    let dir = std::env::temp_dir().join("homelab-e2e");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{namespace}-{}.json", rand_suffix()));
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": documents });
    std::fs::write(&path, list.to_string())?;
    let file = path.display().to_string();
    let applied = kubectl(
        plane.env(),
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e",
            "-n",
            namespace,
            "-f",
            &file,
        ],
    )
    .await;
    let _ = std::fs::remove_file(&path);
    applied?;
    Ok(())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// `kubectl get <kind> <name> -o json`.
pub async fn get(plane: &DataPlane, namespace: &str, kind: &str, name: &str) -> Result<Value> {
    let text = kubectl(
        plane.env(),
        &["get", kind, name, "-n", namespace, "-o", "json"],
    )
    .await?;
    Ok(serde_json::from_str(&text)?)
}

/// The condition `type_` of an object's status.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until `kind/name` has condition `type_` with `status` for its current generation, and
/// returns the object. On timeout the error shows the object's conditions and `explain`'s output.
pub async fn wait_condition(
    plane: &DataPlane,
    namespace: &str,
    kind: &str,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        if let Ok(object) = get(plane, namespace, kind, name).await {
            let generation = object["metadata"]["generation"].clone();
            if let Some(c) = condition(&object, type_)
                && c["status"] == status
                && (c["observedGeneration"].is_null() || c["observedGeneration"] == generation)
            {
                return Ok(object);
            }
            last = object["status"].clone();
        }
        if Instant::now() > deadline {
            let pods = kubectl(
                plane.env(),
                &[
                    "get",
                    "pods,clusters,externalsecrets,backups",
                    "-n",
                    namespace,
                    "-o",
                    "wide",
                ],
            )
            .await
            .unwrap_or_default();
            bail!(
                "{kind} {namespace}/{name} did not reach {type_}={status} within {timeout:?}; \
                 its status: {last:#}\nobjects in the namespace:\n{pods}"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs `script` with bash in a Job whose container gets exactly the `env` and `envFrom` of the
/// first container of Deployment `deployment` (an app's database wiring), and returns its logs.
pub async fn run_with_wiring_of(
    plane: &DataPlane,
    namespace: &str,
    deployment: &str,
    job: &str,
    script: &str,
) -> Result<String> {
    let client = plane.env().client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let app = deployments.get(deployment).await?;
    let container = app
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .context("the app's Deployment has no container")?;
    let body = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": job },
        "spec": {
            "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "client",
                    "image": PSQL_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["bash", "-euo", "pipefail", "-c", script],
                    "env": container.env,
                    "envFrom": container.env_from,
                }],
            } },
        },
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.create(&PostParams::default(), &serde_json::from_value(body)?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    loop {
        let status = jobs.get(job).await?.status.unwrap_or_default();
        let done = status.succeeded.unwrap_or_default() > 0;
        let failed = status.failed.unwrap_or_default() > 0;
        if done || failed || Instant::now() > deadline {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await?;
            let mut logs = String::new();
            for pod in list {
                let name = pod.metadata.name.unwrap_or_default();
                logs.push_str(
                    &pods
                        .logs(&name, &LogParams::default())
                        .await
                        .unwrap_or_default(),
                );
            }
            if done {
                return Ok(logs);
            }
            bail!("Job {namespace}/{job} did not succeed; its output:\n{logs}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The names of the blobs in `container` of the data plane's Azurite, read path-style from the
/// host with a bearer token.
pub async fn blob_names(plane: &DataPlane, container: &str) -> Result<Vec<String>> {
    let ca = reqwest::Certificate::from_pem(plane.azure_ca_pem()?.as_bytes())?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()?;
    let token =
        homelab_testenv::azure::EmulatorCredential::token_for("https://storage.azure.com/.default");
    let mut names = Vec::new();
    let mut marker = String::new();
    loop {
        let url = format!(
            "https://{}/devstoreaccount1/{container}?restype=container&comp=list&marker={marker}",
            network::BLOB_IP
        );
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .header("x-ms-version", "2021-12-02")
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if status.as_u16() == 404 {
            return Ok(names);
        }
        if !status.is_success() {
            bail!("listing {container}: {status}: {body}");
        }
        names.extend(between_all(&body, "<Name>", "</Name>"));
        marker = between_all(&body, "<NextMarker>", "</NextMarker>")
            .into_iter()
            .next()
            .unwrap_or_default();
        if marker.is_empty() {
            return Ok(names);
        }
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|rest| rest.split(close).next())
        .map(str::to_owned)
        .collect()
}

/// Waits until `container` holds a blob for which `wanted` is true, and returns all names.
pub async fn wait_for_blob(
    plane: &DataPlane,
    container: &str,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let names = blob_names(plane, container).await?;
        if names.iter().any(|n| wanted(n)) {
            return Ok(names);
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not appear in container {container} within {timeout:?}; it holds {names:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
