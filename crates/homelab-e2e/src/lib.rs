//! What the end-to-end tests share: the data plane, applying manifests, waiting for conditions
//! written by the real controllers, running a client pod with an app's own database wiring, and
//! reading the backup container in Azurite.

pub mod figures;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
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

/// How long a test waits for the real components to do one thing (a cluster becoming Ready, a
/// backup completing): `HOMELAB_E2E_TIMEOUT` seconds, 600 by default.
pub fn patience() -> Duration {
    std::env::var("HOMELAB_E2E_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs)
}

/// The data plane, with the operator running in it (from `deploy/base`, leader elected).
pub async fn data_plane() -> Result<&'static DataPlane> {
    let plane = DataPlane::get().await;
    operator_running(plane).await?;
    Ok(plane)
}

/// Fails unless the operator installed from `deploy/base` has a ready replica in `plane`.
pub async fn operator_running(plane: &DataPlane) -> Result<()> {
    let client = plane.env().client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "homelab-system");
    let operator = deployments.get_opt("homelab-operator").await?.context(
        "homelab-operator is not installed in the data plane: start it with \
         HOMELAB_OPERATOR_BINARY set (make e2e and make demo do)",
    )?;
    let ready = operator
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or_default();
    if ready < 1 {
        bail!("homelab-operator has no ready replica in the data plane");
    }
    Ok(())
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
    let deadline = Instant::now() + patience().min(Duration::from_secs(180));
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
    let (http, token) = blob_http(plane)?;
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

/// The manifests every backed-up test database shares: the Blob endpoint's CA and a BackupPolicy
/// `name` pointed at the data plane's Azurite (WAL switched at least every `wal_timeout`), with
/// `extra` appended to its spec (for example a `drill:` block, indented by two spaces).
pub fn backup_policy(
    plane: &DataPlane,
    name: &str,
    wal_timeout: &str,
    extra: &str,
) -> Result<String> {
    let ca = plane.azure_ca_pem()?;
    Ok(format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{ name: blob-ca }}
stringData:
  ca.crt: {ca:?}
---
apiVersion: homelab.io/v1alpha1
kind: BackupPolicy
metadata: {{ name: {name} }}
spec:
  schedule: "0 1 * * *"
  retention: 7d
  walArchiveTimeout: {wal_timeout}
  storage:
    azure:
      storageAccount: devstoreaccount1
      containerTemplate: "{{app}}-db-clean"
      endpointCA: {{ name: blob-ca }}
      credentials: {{ mode: SasToken, sasValidity: 7d }}
{extra}
"#
    ))
}

/// A HomelabApp `name` running the `psql` image idle, wired to AppDatabase `database` with the
/// `DB_*` variables (host, port, database, user, password) and any `extra` lines of its
/// `spec.database` (indented by four spaces).
pub fn client_app(name: &str, database: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: homelab.io/v1alpha1
kind: HomelabApp
metadata: {{ name: {name} }}
spec:
  image: {PSQL_IMAGE}
  command: ["sleep", "infinity"]
  port: 9090
  database:
    ref: {{ name: {database} }}
{extra}
    env:
      - {{ name: DB_HOST, field: host }}
      - {{ name: DB_PORT, field: port }}
      - {{ name: DB_DATABASE, field: database }}
      - {{ name: DB_USER, field: username }}
      - {{ name: DB_PASSWORD, field: password }}
"#
    )
}

/// `psql` with the `DB_*` wiring of [`client_app`], reading SQL from standard input, printing
/// unaligned tuples only; for [`run_with_wiring_of`] scripts.
pub const PSQL_WITH_WIRING: &str = r#"PGPASSWORD="$DB_PASSWORD" psql -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_DATABASE" -At"#;

/// Sets annotation `key=value` on `kind/name`.
pub async fn annotate(
    plane: &DataPlane,
    namespace: &str,
    kind: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<()> {
    kubectl(
        plane.env(),
        &[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            kind,
            name,
            &format!("{key}={value}"),
        ],
    )
    .await?;
    Ok(())
}

/// Deletes `kind/name` without waiting for its finalizers.
pub async fn delete(plane: &DataPlane, namespace: &str, kind: &str, name: &str) -> Result<()> {
    kubectl(
        plane.env(),
        &["delete", "--wait=false", "-n", namespace, kind, name],
    )
    .await?;
    Ok(())
}

/// The names (`kind/name`) of the objects of `kind` in `namespace` matching `selector` (or all,
/// when it is empty).
pub async fn names(
    plane: &DataPlane,
    namespace: &str,
    kind: &str,
    selector: &str,
) -> Result<Vec<String>> {
    let mut args = vec!["get", kind, "-n", namespace, "-o", "name"];
    if !selector.is_empty() {
        args.extend(["-l", selector]);
    }
    let text = kubectl(plane.env(), &args).await?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Whether `kind/name` exists.
pub async fn exists(plane: &DataPlane, namespace: &str, kind: &str, name: &str) -> Result<bool> {
    let text = kubectl(
        plane.env(),
        &[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "--ignore-not-found",
            "-o",
            "name",
        ],
    )
    .await?;
    Ok(!text.trim().is_empty())
}

/// Polls `check` every two seconds until it returns `Some`, and returns that; on timeout the error
/// names `what` and the last thing `check` reported through `Err`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing was observed");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until `kind/name` no longer exists.
pub async fn wait_gone(
    plane: &DataPlane,
    namespace: &str,
    kind: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    wait_for(
        &format!("deletion of {kind} {namespace}/{name}"),
        timeout,
        || async { Ok((!exists(plane, namespace, kind, name).await?).then_some(())) },
    )
    .await
}

/// Runs `sql` with `psql` as the `postgres` superuser over the local socket inside the
/// PostgreSQL container of pod `pod` (no password: CloudNativePG's peer rule), in `database`.
pub async fn psql_in_pod(
    plane: &DataPlane,
    namespace: &str,
    pod: &str,
    database: &str,
    sql: &str,
) -> Result<String> {
    let output = kubectl(
        plane.env(),
        &[
            "exec",
            "-n",
            namespace,
            pod,
            "-c",
            "postgres",
            "--",
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            database,
            "-c",
            sql,
        ],
    )
    .await?;
    Ok(output)
}

/// The data plane's Key Vault emulator, reached from the host under its vault host name.
pub struct Vault {
    http: reqwest::Client,
    url: String,
}

/// One version of a Key Vault secret, as the data plane's vault lists it.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// The version's id.
    pub id: String,
    /// Its content type.
    pub content_type: Option<String>,
}

impl Vault {
    /// A client for the vault the data plane's ClusterSecretStore and operator use.
    pub fn new(plane: &DataPlane) -> Result<Self> {
        let ca = reqwest::Certificate::from_pem(plane.azure_ca_pem()?.as_bytes())?;
        let host = format!(
            "{}.vault.azure.net",
            homelab_testenv::data_plane::VAULT_NAME
        );
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(&host, std::net::SocketAddr::from((network::VAULT_IP, 443)))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            url: format!("https://{host}"),
        })
    }

    fn token() -> String {
        homelab_testenv::azure::EmulatorCredential::token_for("https://vault.azure.net/.default")
    }

    /// The current value of secret `name`, or `None` when it does not exist (or is deleted).
    pub async fn value(&self, name: &str) -> Result<Option<String>> {
        let response = self
            .http
            .get(format!("{}/secrets/{name}?api-version=7.4", self.url))
            .bearer_auth(Self::token())
            .send()
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("reading secret {name}: {status}: {body}");
        }
        Ok(body["value"].as_str().map(str::to_owned))
    }

    /// Every version of secret `name`, oldest first as the vault lists them (empty when the
    /// secret does not exist).
    pub async fn versions(&self, name: &str) -> Result<Vec<SecretVersion>> {
        let response = self
            .http
            .get(format!(
                "{}/secrets/{name}/versions?api-version=7.4",
                self.url
            ))
            .bearer_auth(Self::token())
            .send()
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("listing versions of secret {name}: {status}: {body}");
        }
        Ok(body["value"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| SecretVersion {
                id: v["id"]
                    .as_str()
                    .and_then(|id| id.rsplit('/').next())
                    .unwrap_or_default()
                    .to_owned(),
                content_type: v["contentType"].as_str().map(str::to_owned),
            })
            .collect())
    }

    /// Writes a new version of secret `name` as a person would, without the operator's tags.
    pub async fn set(&self, name: &str, value: &str) -> Result<()> {
        let response = self
            .http
            .put(format!("{}/secrets/{name}?api-version=7.4", self.url))
            .bearer_auth(Self::token())
            .json(&json!({ "value": value, "contentType": "text/plain" }))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "writing secret {name}: {status}: {}",
                response.text().await?
            );
        }
        Ok(())
    }
}

/// Whether Blob container `container` exists in the data plane's Azurite.
pub async fn container_exists(plane: &DataPlane, container: &str) -> Result<bool> {
    let (http, token) = blob_http(plane)?;
    let response = http
        .get(format!(
            "https://{}/devstoreaccount1/{container}?restype=container",
            network::BLOB_IP
        ))
        .bearer_auth(&token)
        .header("x-ms-version", "2021-12-02")
        .send()
        .await?;
    match response.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        other => bail!(
            "reading container {container}: {other}: {}",
            response.text().await?
        ),
    }
}

/// An HTTP client that trusts the data plane's Azurite, and a bearer token for it.
fn blob_http(plane: &DataPlane) -> Result<(reqwest::Client, String)> {
    let ca = reqwest::Certificate::from_pem(plane.azure_ca_pem()?.as_bytes())?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()?;
    let token =
        homelab_testenv::azure::EmulatorCredential::token_for("https://storage.azure.com/.default");
    Ok((http, token))
}

/// Sends `method` for blob `blob` in `container`; returns the status and the body.
async fn blob_request(
    plane: &DataPlane,
    method: reqwest::Method,
    container: &str,
    blob: &str,
) -> Result<(reqwest::StatusCode, String)> {
    let (http, token) = blob_http(plane)?;
    let url = format!(
        "https://{}/devstoreaccount1/{container}/{blob}",
        network::BLOB_IP
    );
    let response = http
        .request(method, url)
        .bearer_auth(&token)
        .header("x-ms-version", "2021-12-02")
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.text().await?))
}

/// The text of blob `blob` in `container`.
pub async fn blob_text(plane: &DataPlane, container: &str, blob: &str) -> Result<String> {
    let (status, body) = blob_request(plane, reqwest::Method::GET, container, blob).await?;
    ensure!(
        status.is_success(),
        "reading {container}/{blob}: {status}: {body}"
    );
    Ok(body)
}

/// Deletes blob `blob` from `container`.
pub async fn delete_blob(plane: &DataPlane, container: &str, blob: &str) -> Result<()> {
    let (status, body) = blob_request(plane, reqwest::Method::DELETE, container, blob).await?;
    ensure!(
        status.is_success() || status.as_u16() == 404,
        "deleting {container}/{blob}: {status}: {body}"
    );
    Ok(())
}

/// The namespace the data plane installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "homelab-system";

/// The operator pod holding the leader Lease.
pub async fn operator_leader(plane: &DataPlane) -> Result<String> {
    let lease = get(
        plane,
        OPERATOR_NAMESPACE,
        "lease",
        "homelab-operator-leader",
    )
    .await?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .context("the operator's Lease has no holder")
}

/// Requests a drill of `policy` with `token` and waits until it records a finished drill of
/// `database` started after the request; returns that record and the policy.
pub async fn drill(
    plane: &DataPlane,
    namespace: &str,
    policy: &str,
    database: &str,
    token: &str,
) -> Result<(Value, Value)> {
    let known = drill_clusters_recorded(plane, namespace, policy).await?;
    annotate(
        plane,
        namespace,
        "backuppolicy",
        policy,
        "homelab.io/drill-now",
        token,
    )
    .await?;
    wait_for(&format!("the drill {token}"), patience(), || async {
        let status = get(plane, namespace, "backuppolicy", policy).await?;
        let record = status["status"]["drills"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["database"] == database && !known.contains(&r["cluster"]))
            .cloned();
        match record {
            Some(r) if r["outcome"] != "Running" => Ok(Some((r, status))),
            other => bail!("drill records: {other:?}; status {}", status["status"]),
        }
    })
    .await
}

/// The drill clusters `policy`'s status records.
pub async fn drill_clusters_recorded(
    plane: &DataPlane,
    namespace: &str,
    policy: &str,
) -> Result<Vec<Value>> {
    let policy = get(plane, namespace, "backuppolicy", policy).await?;
    Ok(policy["status"]["drills"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r["cluster"].clone())
        .collect())
}
