//! Shared helpers for the controller tests: an operator instance per test, restricted to the
//! test's namespace, and polling helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use homelab_api::{AppDatabase, BackupPolicy, HomelabApp};
use homelab_testenv::TestEnv;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// An operator running in this process until dropped.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http_port: u16,
}

impl Operator {
    pub async fn start(namespace: &str) -> Operator {
        Self::start_with(namespace, &[]).await
    }

    pub async fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_full(namespace, extra, None).await
    }

    /// An operator whose Azure side talks to the given clients (the emulators in tests).
    pub async fn start_with_azure(
        namespace: &str,
        extra: &[&str],
        azure: homelab_azure::AzureClients,
    ) -> Operator {
        let mut extra = extra.to_vec();
        extra.push("--azure=true");
        Self::start_full(namespace, &extra, Some(azure)).await
    }

    /// An operator on a control plane other than the shared one.
    pub async fn start_on(env: &TestEnv, namespace: &str, extra: &[&str]) -> Operator {
        let client = env.client().await.expect("client");
        Self::start_client(client, namespace, extra, None).await
    }

    async fn start_full(
        namespace: &str,
        extra: &[&str],
        azure: Option<homelab_azure::AzureClients>,
    ) -> Operator {
        let env = TestEnv::get().await;
        let client = operator_client(env).await;
        Self::start_client(client, namespace, extra, azure).await
    }

    async fn start_client(
        client: kube::Client,
        namespace: &str,
        extra: &[&str],
        azure: Option<homelab_azure::AzureClients>,
    ) -> Operator {
        // Operator logs are shown with the output of a failing test.
        homelab_operator::telemetry::init(homelab_operator::config::LogFormat::Text);
        let http_port = free_port();
        let mut args = vec![
            format!("--namespaces={namespace}"),
            format!("--http-addr=127.0.0.1:{http_port}"),
            "--leader-election=false".to_string(),
            "--resync-seconds=3600".to_string(),
            "--azure=false".to_string(),
        ];
        // Settings given by the test replace the defaults above.
        args.retain(|default| {
            let key = default.split('=').next().unwrap_or_default();
            !extra.iter().any(|e| e.split('=').next() == Some(key))
        });
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = homelab_operator::config::RunConfig::from_args(args).expect("config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(err) = homelab_operator::run_with(config, client, azure, shutdown).await {
                panic!("operator failed: {err}");
            }
        });
        // Started once its endpoints answer, so that a metric read later is never the absence
        // of a server.
        eventually(
            "the operator's /metrics to answer",
            Duration::from_secs(30),
            || async move { http_get(http_port, "/metrics").await.map(|_| ()) },
        )
        .await;
        Operator {
            stop: Some(stop),
            task: Some(task),
            http_port,
        }
    }

    /// Stops the operator and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// The value of metric `name` summed over its series whose labels contain `labels`; `None`
    /// when no series matches, which is not the same as 0. Panics when `/metrics` cannot be read:
    /// an endpoint that does not answer is never a value.
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let body = http_get(self.http_port, "/metrics")
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the operator's /metrics on port {} did not answer",
                    self.http_port
                )
            });
        let values: Vec<f64> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(30);

pub fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Cluster" => "clusters",
        "ObjectStore" => "objectstores",
        "ScheduledBackup" => "scheduledbackups",
        "Backup" => "backups",
        "Pooler" => "poolers",
        "PodMonitor" => "podmonitors",
        "ExternalSecret" => "externalsecrets",
        "Deployment" => "deployments",
        "Job" => "jobs",
        "Service" => "services",
        "Ingress" => "ingresses",
        "HTTPRoute" => "httproutes",
        "NetworkPolicy" => "networkpolicies",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "AppDatabase" => "appdatabases",
        "HomelabApp" => "homelabapps",
        "BackupPolicy" => "backuppolicies",
        "ClusterSecretStore" => "clustersecretstores",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        other => panic!("unknown kind {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn dynamic_api(
    client: &Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource(api_version, kind))
}

/// Applies every document of an example file to `namespace`.
pub async fn apply_example(client: &Client, namespace: &str, file: &str) {
    let path = homelab_testenv::repo_root().join("examples").join(file);
    apply_file(client, namespace, &path).await;
}

pub async fn apply_file(client: &Client, namespace: &str, path: &Path) {
    let text = std::fs::read_to_string(path).expect("read example");
    for document in serde_norway::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(document).expect("parse example");
        if value.is_null() {
            continue;
        }
        apply_value(client, namespace, value).await;
    }
}

pub async fn apply_value(client: &Client, namespace: &str, value: serde_json::Value) {
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let params = PatchParams::apply("test").force();
    match kind.as_str() {
        "AppDatabase" => {
            apply_typed::<AppDatabase>(client, namespace, &name, &value, &params).await
        }
        "HomelabApp" => apply_typed::<HomelabApp>(client, namespace, &name, &value, &params).await,
        "BackupPolicy" => {
            apply_typed::<BackupPolicy>(client, namespace, &name, &value, &params).await
        }
        other => panic!("unexpected kind {other} in example"),
    }
}

async fn apply_typed<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    value: &serde_json::Value,
    params: &PatchParams,
) where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(name, params, &Patch::Apply(value))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Write requests recorded in the audit log for `namespace` after byte `offset`, excluding
/// those made by the test itself (field manager `test` cannot be seen here, so the caller
/// must not write during the window).
pub async fn audit_writes(namespace: &str, offset: u64) -> Vec<String> {
    let Some(path) = TestEnv::get().await.audit_log_path() else {
        panic!("the test environment has no audit log");
    };
    let text = std::fs::read(path)
        .unwrap_or_else(|e| panic!("the audit log {} cannot be read: {e}", path.display()));
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .map(|e| {
            format!(
                "{} {}/{} by {}",
                e["verb"].as_str().unwrap_or_default(),
                e["objectRef"]["resource"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default(),
                e["userAgent"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

pub async fn audit_offset() -> u64 {
    let env = TestEnv::get().await;
    let Some(path) = env.audit_log_path() else {
        panic!("the test environment has no audit log");
    };
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("the audit log {} cannot be read: {e}", path.display()))
        .len()
}

/// The namespace and name of the operator's ServiceAccount, as `deploy/base` creates it.
pub const OPERATOR_NAMESPACE: &str = "homelab-system";
pub const OPERATOR_ACCOUNT: &str = "homelab-operator";

static RBAC: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A client authenticated as the operator's ServiceAccount, bound to the ClusterRole of
/// `deploy/base/rbac.yaml`: every test that runs the operator this way proves the role grants
/// enough (and the role's own tests prove it grants no more).
pub async fn operator_client(env: &TestEnv) -> Client {
    let admin = env.client().await.expect("client");
    RBAC.get_or_init(|| async {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
        namespaces
            .patch(
                OPERATOR_NAMESPACE,
                &PatchParams::apply("test").force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": OPERATOR_NAMESPACE}
                })),
            )
            .await
            .expect("operator namespace");
        for document in rbac_documents() {
            if matches!(
                document["kind"].as_str(),
                Some("ClusterRole" | "ClusterRoleBinding")
            ) {
                apply_rbac(&admin, None, document).await;
            }
        }
    })
    .await;
    let config = env
        .service_account_config(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
        .await
        .expect("operator ServiceAccount token");
    // The binary's own client stack (HTTP/2), so the controllers run as in production.
    homelab_operator::kubernetes::client::build(config).expect("operator client")
}

/// Grants the operator's ServiceAccount its leader-election Role in `namespace`.
pub async fn grant_leases(namespace: &str) {
    let admin = TestEnv::get().await.client().await.expect("client");
    for document in rbac_documents() {
        if matches!(document["kind"].as_str(), Some("Role" | "RoleBinding")) {
            apply_rbac(&admin, Some(namespace), document).await;
        }
    }
}

fn rbac_documents() -> Vec<serde_json::Value> {
    let path = homelab_testenv::repo_root().join("deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/rbac.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("RBAC YAML"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

async fn apply_rbac(admin: &Client, namespace: Option<&str>, document: serde_json::Value) {
    let kind = document["kind"].as_str().unwrap_or_default().to_string();
    let name = document["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let plural = match kind.as_str() {
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        other => panic!("unexpected {other} in rbac.yaml"),
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", &kind),
        plural,
    );
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(document),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

/// The users that created `resource` objects in `namespace`, from the audit log.
pub async fn audit_creators(namespace: &str, resource: &str) -> Vec<String> {
    let Some(path) = TestEnv::get().await.audit_log_path() else {
        panic!("the test environment has no audit log");
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut users: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["objectRef"]["namespace"] == namespace && e["objectRef"]["resource"] == resource
        })
        .filter(|e| e["verb"] == "create" || e["verb"] == "patch")
        .filter_map(|e| e["user"]["username"].as_str().map(str::to_string))
        .collect();
    users.sort();
    users.dedup();
    users
}

/// Argo CD's health of `kind/name` as the API serves it now, computed by its check in
/// `deploy/argocd/health` the way Argo CD runs it: `(status, message)`.
pub async fn argocd_health_of(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> (String, String) {
    let object = dynamic_api(client, namespace, "homelab.io/v1alpha1", kind)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {kind} {namespace}/{name}: {e}"));
    let object = serde_json::to_value(object).expect("an object is JSON");
    homelab_deploy_tests::health::argocd_health(kind, &object)
        .unwrap_or_else(|e| panic!("Argo CD's health check of {kind}: {e:#}"))
}

/// Asserts that `kind/name`, whose `Ready` reason is now `reason`, shows in Argo CD as the README
/// documents for that reason (Progressing when it resolves by itself, Degraded when someone must
/// act).
pub async fn assert_argocd_shows(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) {
    let expected = homelab_deploy_tests::health::documented(kind)
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, health)| health)
        .unwrap_or_else(|| panic!("the README gives no Argo CD health for {kind} reason {reason}"));
    let (health, message) = argocd_health_of(client, namespace, kind, name).await;
    assert_eq!(
        health, expected,
        "Argo CD's health of {kind} {namespace}/{name} with Ready reason {reason}: {message}"
    );
}

/// Azure clients for the emulators `az`, authenticating with `credential`: the emulator's
/// challenge resource is not checked, and retries are few and quick, so a test fails fast.
pub fn emulator_clients(
    az: &homelab_testenv::azure::AzureEmulators,
    credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential>,
) -> homelab_azure::AzureClients {
    homelab_azure::AzureClients::with_credential(
        emulator_config(),
        credential,
        Some(az.http_client()),
    )
}

/// The operator's Azure configuration for the emulators: their challenge names vault.azure.net,
/// which 127.0.0.1 is not part of, and retries are short so that failures show quickly.
pub fn emulator_config() -> homelab_azure::AzureConfig {
    homelab_azure::AzureConfig {
        skip_challenge_resource_check: true,
        retry: homelab_azure::RetryConfig {
            max_retries: 1,
            initial_delay: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(3),
        },
        ..homelab_azure::AzureConfig::default()
    }
}

/// The official SDK's Key Vault client, to act on the vault as a person with `az` would.
pub fn sdk_secret_client(
    az: &homelab_testenv::azure::AzureEmulators,
) -> azure_security_keyvault_secrets::SecretClient {
    azure_security_keyvault_secrets::SecretClient::new(
        az.key_vault_url(),
        az.credential(),
        Some(azure_security_keyvault_secrets::SecretClientOptions {
            client_options: az.client_options(),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .expect("the SDK's Key Vault client")
}

/// `base` with the random end of namespace `ns`: app names become Key Vault secret and container
/// names, shared by all tests, so tests keep them apart.
pub fn unique_app(ns: &str, base: &str) -> String {
    let suffix: String = ns
        .rsplit('-')
        .next()
        .unwrap_or("x")
        .chars()
        .take(5)
        .collect();
    format!("{base}-{suffix}")
}

/// A ClusterSecretStore named after `ns` that reads the emulated vault.
pub async fn secret_store(
    client: &kube::Client,
    ns: &str,
    az: &homelab_testenv::azure::AzureEmulators,
) -> String {
    let store = format!("vault-{ns}");
    Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("external-secrets.io/v1", "ClusterSecretStore"),
    )
    .patch(
        &store,
        &PatchParams::apply("test").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": store},
            "spec": {"provider": {"azurekv": {
                "vaultUrl": az.key_vault_url(), "authType": "WorkloadIdentity",
                "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}
            }}}
        })),
    )
    .await
    .unwrap();
    store
}

/// Stores `value` in the vault's secret `name` as a person would with `az keyvault secret set`:
/// without the operator's tags.
pub async fn set_by_hand(az: &homelab_testenv::azure::AzureEmulators, name: &str, value: &str) {
    set_by_hand_with(
        az,
        name,
        azure_security_keyvault_secrets::models::SetSecretParameters {
            value: Some(value.into()),
            ..Default::default()
        },
    )
    .await;
}

/// [`set_by_hand`] with the attributes a person set too (`az keyvault secret set --disabled`).
pub async fn set_by_hand_with(
    az: &homelab_testenv::azure::AzureEmulators,
    name: &str,
    parameters: azure_security_keyvault_secrets::models::SetSecretParameters,
) {
    sdk_secret_client(az)
        .set_secret(name, parameters.try_into().unwrap(), None)
        .await
        .unwrap();
}

/// A real ValidatingAdmissionPolicy of the apiserver, bound to one namespace, refusing what
/// `expression` (CEL over `object`) rejects. Dropping it deletes the policy and its binding.
pub struct AdmissionRefusal {
    client: Client,
    name: String,
}

impl AdmissionRefusal {
    /// Installs the policy for creates and updates of `resource` (`group`, `version`, plural) in
    /// `namespace`, and waits until the apiserver enforces it: a dry-run create of `probe` (an
    /// object the policy refuses, of `probe_kind`) is answered 422.
    pub async fn install(
        client: &Client,
        namespace: &str,
        (group, version, resource): (&str, &str, &str),
        expression: &str,
        message: &str,
        probe_kind: &ApiResource,
        probe: serde_json::Value,
    ) -> Self {
        let name = format!("refuse-{resource}-{namespace}");
        let apply = PatchParams::apply("test").force();
        policies(client)
            .patch(
                &name,
                &apply,
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": name},
                    "spec": {
                        "failurePolicy": "Fail",
                        "matchConstraints": {"resourceRules": [{
                            "apiGroups": [group], "apiVersions": [version],
                            "operations": ["CREATE", "UPDATE"], "resources": [resource]}]},
                        "validations": [{"expression": expression, "reason": "Invalid",
                            "message": message}],
                    },
                })),
            )
            .await
            .expect("the ValidatingAdmissionPolicy");
        bindings(client)
            .patch(
                &name,
                &apply,
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": name},
                    "spec": {
                        "policyName": name,
                        "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": namespace}}},
                    },
                })),
            )
            .await
            .expect("the ValidatingAdmissionPolicyBinding");

        // The apiserver compiles policies in the background: the policy is in force once it
        // refuses the probe (a dry run, which admission sees like a real request).
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, probe_kind);
        let probe: DynamicObject =
            serde_json::from_value(probe).expect("the probe is a Kubernetes object");
        eventually(
            &format!("the admission policy to refuse {resource}"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                let probe = probe.clone();
                async move {
                    let dry_run = kube::api::PostParams {
                        dry_run: true,
                        ..Default::default()
                    };
                    match api.create(&dry_run, &probe).await {
                        Err(kube::Error::Api(status)) if status.code == 422 => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
        Self {
            client: client.clone(),
            name,
        }
    }

    /// Deletes the binding and the policy.
    pub async fn remove(self) {
        let delete = kube::api::DeleteParams::default();
        bindings(&self.client)
            .delete(&self.name, &delete)
            .await
            .expect("delete the binding");
        policies(&self.client)
            .delete(&self.name, &delete)
            .await
            .expect("delete the policy");
    }
}

fn policies(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
        ),
    )
}

fn bindings(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &resource(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
        ),
    )
}
