//! The API refuses bad input at the door, proven against a real kube-apiserver with the generated
//! CRDs installed:
//!
//! - every example in `examples/` is accepted by server-side apply (field manager
//!   `homelab-operator`, strict field validation), and the defaults the server fills in are the
//!   ones the Rust types document;
//! - every manifest in `tests/invalid/` is refused, both by server-side apply and by a strict
//!   create, with an error that contains each of its `# expect:` lines (`# expect-apply:` and
//!   `# expect-create:` lines hold for one of the two only);
//! - every create-then-update pair in `tests/transitions/` is accepted or refused as its
//!   `# outcome:` line says, and a refused update leaves the stored object unchanged;
//! - `kubectl get homelab` lists all three kinds, every printer column shows the value of its
//!   field under its own header, and `kubectl explain` prints the fields' descriptions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use homelab_api::naming::FIELD_MANAGER;
use homelab_api::{AppDatabaseSpec, BackupPolicySpec, HomelabAppSpec};
use homelab_testenv::{TestEnv, skip};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The smallest corpus this suite accepts; fewer files means some were lost.
const MIN_INVALID_MANIFESTS: usize = 35;

fn repo_root() -> PathBuf {
    homelab_testenv::repo_root()
}

/// The `*.yaml` files of a directory under the repository root, sorted.
fn yaml_files(dir: &str) -> Result<Vec<PathBuf>> {
    let dir = repo_root().join(dir);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "{} holds no *.yaml file", dir.display());
    Ok(files)
}

fn display(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A test manifest: its YAML documents and the `# key: value` lines of its comments.
struct Manifest {
    path: PathBuf,
    documents: Vec<Value>,
    comments: Vec<(String, String)>,
}

impl Manifest {
    fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut documents = Vec::new();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .with_context(|| format!("parsing {}", path.display()))?;
            if !value.is_null() {
                documents.push(value);
            }
        }
        let comments = text
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter_map(|line| line.trim().split_once(": "))
            .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            documents,
            comments,
        })
    }

    fn values(&self, key: &str) -> Vec<&str> {
        self.comments
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn name(&self) -> String {
        display(&self.path)
    }
}

/// The API resource of a manifest's `kind`, from the generated CRDs.
fn api_resource(object: &Value) -> Result<ApiResource> {
    let kind = object["kind"].as_str().context("manifest has no kind")?;
    let crd = homelab_api::crd::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .with_context(|| format!("{kind} is not a homelab.io kind"))?;
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(homelab_api::GROUP, homelab_api::VERSION, kind),
        &crd.spec.names.plural,
    ))
}

fn object_name(object: &Value) -> Result<&str> {
    object["metadata"]["name"]
        .as_str()
        .context("manifest has no metadata.name")
}

fn api(client: &kube::Client, namespace: &str, object: &Value) -> Result<Api<DynamicObject>> {
    Ok(Api::namespaced_with(
        client.clone(),
        namespace,
        &api_resource(object)?,
    ))
}

/// What the apiserver answered: the stored object, or the refusal's message.
enum Answer {
    Accepted(Value),
    Refused { code: u16, message: String },
}

fn answer<T: Serialize>(result: kube::Result<T>) -> Result<Answer> {
    match result {
        Ok(object) => Ok(Answer::Accepted(serde_json::to_value(object)?)),
        Err(kube::Error::Api(status)) => Ok(Answer::Refused {
            code: status.code,
            message: status.message.clone(),
        }),
        // Not an answer about the object (connection, TLS, decoding): the test cannot judge it.
        Err(e) => Err(e).context("the request did not reach a verdict"),
    }
}

/// Server-side apply as the operator does it: field manager `homelab-operator`, strict field
/// validation.
async fn apply(client: &kube::Client, namespace: &str, object: &Value) -> Result<Answer> {
    let params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    let result = api(client, namespace, object)?
        .patch(object_name(object)?, &params, &Patch::Apply(object))
        .await;
    answer(result)
}

/// A plain create with strict field validation (what `kubectl create` sends).
async fn create(client: &kube::Client, namespace: &str, object: &Value) -> Result<Answer> {
    let resource = api_resource(object)?;
    let url = format!(
        "/apis/{}/{}/namespaces/{namespace}/{}?fieldManager={FIELD_MANAGER}&fieldValidation=Strict",
        resource.group, resource.version, resource.plural
    );
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(object)?)?;
    answer(client.request::<Value>(request).await)
}

async fn get(client: &kube::Client, namespace: &str, object: &Value) -> Result<Value> {
    let stored = api(client, namespace, object)?
        .get(object_name(object)?)
        .await
        .with_context(|| format!("reading back {}", object_name(object).unwrap_or("?")))?;
    Ok(serde_json::to_value(stored)?)
}

async fn delete(client: &kube::Client, namespace: &str, object: &Value) -> Result<()> {
    api(client, namespace, object)?
        .delete(object_name(object)?, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Whether a refusal is the apiserver saying "your input is invalid" (400 or 422), rather than a
/// failure that a retry could fix. Server-side apply answers 500 when it cannot convert the applied
/// object to the schema's types (unknown field, wrong type, duplicate list-map key): a known
/// apiserver bug (kubernetes/kubernetes#139253), accepted here for that message only.
fn is_invalid_input(how: &str, code: u16, message: &str) -> bool {
    matches!(code, 400 | 422)
        || (how == "apply"
            && code == 500
            && message.starts_with("failed to create typed patch object"))
}

/// The expected texts missing from `message`.
fn missing<'a>(expected: &[&'a str], message: &str) -> Vec<&'a str> {
    expected
        .iter()
        .copied()
        .filter(|e| !message.contains(e))
        .collect()
}

/// Whether every field of `wanted` is in `actual` with the same value (lists compared whole).
fn contains(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(actual), Value::Object(wanted)) => wanted
            .iter()
            .all(|(k, w)| actual.get(k).is_some_and(|a| contains(a, w))),
        _ => actual == wanted,
    }
}

#[tokio::test]
async fn examples_are_accepted_by_server_side_apply() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("admission-examples").await?;
    let mut applied = 0;
    for path in yaml_files("examples")? {
        let manifest = Manifest::load(&path)?;
        ensure!(
            !manifest.documents.is_empty(),
            "{} has no document",
            manifest.name()
        );
        for object in &manifest.documents {
            match apply(&client, &namespace, object).await? {
                Answer::Accepted(stored) => {
                    ensure!(
                        contains(&stored["spec"], &object["spec"]),
                        "{}: the stored spec of {} lost fields of the example:\n{}",
                        manifest.name(),
                        object_name(object)?,
                        serde_json::to_string_pretty(&stored["spec"])?
                    );
                    applied += 1;
                }
                Answer::Refused { message, .. } => {
                    bail!(
                        "{}: {} {} was refused: {message}",
                        manifest.name(),
                        object["kind"],
                        object_name(object)?
                    )
                }
            }
        }
    }
    // Five apps, each a HomelabApp and an AppDatabase, and the BackupPolicy.
    ensure!(applied >= 11, "only {applied} example objects were applied");
    Ok(())
}

/// Inputs at the edge of the rules that must stay valid, so that tightening a rule cannot
/// silently refuse what users legitimately write.
#[tokio::test]
async fn valid_edge_cases_are_accepted() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("admission-edges").await?;
    let objects = [
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "edges"},
        "spec": {
            "schedule": "*/15 2-4 ? JAN-MAR MON,FRI",
            "retention": "12w",
            "walArchiveTimeout": "30s",
            "storage": {"azure": {
                "storageAccount": "abc",
                "containerTemplate": "pg-{app}-backups-v2",
                "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
                "credentials": {"mode": "InheritFromAzureAD", "clientId": "11111111-1111-1111-1111-111111111111", "sasValidity": "1h"},
            }},
            "drill": {"schedule": "0 4 * * SUN", "timeout": "2h", "history": 20},
        }}),
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "hourly"},
            "spec": {"walArchiveTimeout": "60m",
                "storage": {"azure": {"storageAccount": "a23456789012345678901234", "containerTemplate": "{app}"}}}}),
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
        // 40 characters: the longest app name.
        "metadata": {"name": "a234567890-234567890-234567890-234567890"},
        "spec": {
            "instances": 9,
            "postgres": {"version": 13, "parameters": {"max_connections": "200", "shared_buffers": "256MB", "pg_stat_statements.max": "10000"}},
            "storage": {"size": "1Ti", "storageClass": "local-path"},
            "walStorage": {"size": "512Mi"},
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "1.5Gi"}},
            "database": {"name": "_app_db", "owner": "app_owner"},
            "pooler": {"instances": 10, "poolMode": "transaction", "maxClientConnections": 100000},
            "deletionPolicy": "Delete",
        }}),
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": "restored.from.archive"},
            "spec": {"app": "restored", "restore": {
                "from": {"archive": {"policyRef": {"name": "edges"}, "container": "abc", "serverName": "linkding-db-cnpg-v1"}},
                "targetTime": "2026-11-20T13:45:00Z"}}}),
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "HomelabApp",
        // 50 characters: the longest HomelabApp name.
        "metadata": {"name": "a234567890-234567890-234567890-234567890-234567890"},
        "spec": {
            "image": "ghcr.io/example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "replicas": 0,
            "port": 65535,
            "env": [{"name": "app.mode-x_Y", "value": ""}],
            "secrets": [
                {"name": "API_TOKEN", "keyVaultSecret": "A-1"},
                {"name": "API_TOKEN_FILE", "keyVaultSecret": "api-token", "mountPath": "/run/secrets"},
                {"name": "DB_HOST", "keyVaultSecret": "db-host-file", "mountPath": "/etc/db"},
            ],
            "database": {"ref": {"name": "restored"}, "usePooler": true,
                "env": [{"name": "DB_HOST", "field": "host"}, {"name": "DATABASE_URL", "field": "uri"}]},
            "persistence": [{"name": "data", "mountPath": "/data", "size": "1Mi"},
                            {"name": "a23456789012", "mountPath": "/data/cache", "size": "1Gi", "storageClass": "nfs.example.com"}],
            "networkPolicy": {"ingressNamespace": "ingress-nginx",
                "egress": [{"cidr": "::/0", "ports": [443]}, {"cidr": "10.0.0.0/8"}, {"cidr": "2001:db8::/32", "ports": [1, 65535]}]},
            "route": {"gateway": {"name": "homelab", "namespace": "gateway", "sectionName": "https.main"}, "hostname": "a.b.example.com", "path": "/app"},
            "security": {"runAsUser": 65534, "fsGroup": 0},
        }}),
    ];
    for object in &objects {
        if let Answer::Refused { message, .. } = apply(&client, &namespace, object).await? {
            bail!(
                "{} {} was refused: {message}",
                object["kind"],
                object_name(object)?
            );
        }
    }
    Ok(())
}

/// Applies `object`, reads it back and returns its `spec` as the server stored it.
async fn applied_spec(client: &kube::Client, namespace: &str, object: Value) -> Result<Value> {
    match apply(client, namespace, &object).await? {
        Answer::Accepted(_) => {}
        Answer::Refused { message, .. } => bail!("{} was refused: {message}", object["kind"]),
    }
    Ok(get(client, namespace, &object).await?["spec"].clone())
}

/// The spec `input` becomes in Rust: the serde defaults filled in, serialized again.
fn rust_defaulted<T: DeserializeOwned + Serialize>(input: &Value) -> Result<Value> {
    let typed: T = serde_json::from_value(input.clone())?;
    Ok(serde_json::to_value(typed)?)
}

fn assert_fields(kind: &str, spec: &Value, fields: &[(&str, Value)]) -> Result<()> {
    for (pointer, expected) in fields {
        let actual = spec.pointer(pointer).unwrap_or(&Value::Null);
        ensure!(
            actual == expected,
            "{kind}: the server defaulted spec{} to {actual}, expected {expected}; spec: {spec}",
            pointer.replace('/', ".")
        );
    }
    Ok(())
}

#[tokio::test]
async fn server_applies_the_documented_defaults() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("admission-defaults").await?;

    let database_spec = json!({});
    let database = applied_spec(
        &client,
        &namespace,
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": "minimal"}, "spec": database_spec,
        }),
    )
    .await?;
    assert_fields(
        "AppDatabase",
        &database,
        &[
            ("/instances", json!(1)),
            ("/storage/size", json!("15Gi")),
            ("/deletionPolicy", json!("Retain")),
            ("/postgres/version", json!(17)),
            ("/monitoring/podMonitor", json!(true)),
        ],
    )?;
    let rust = rust_defaulted::<AppDatabaseSpec>(&database_spec)?;
    ensure!(
        database == rust,
        "AppDatabase: server defaults {database} differ from the Rust defaults {rust}"
    );

    let policy_spec = json!({
        "storage": {"azure": {"storageAccount": "homelabbackups"}},
        "drill": {"schedule": "0 4 * * 0"},
    });
    let policy = applied_spec(
        &client,
        &namespace,
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "minimal"}, "spec": policy_spec,
        }),
    )
    .await?;
    assert_fields(
        "BackupPolicy",
        &policy,
        &[
            ("/schedule", json!("0 1 * * *")),
            ("/retention", json!("7d")),
            ("/walArchiveTimeout", json!("5m")),
            ("/walCompression", json!("gzip")),
            ("/suspend", json!(false)),
            ("/storage/azure/containerTemplate", json!("{app}-db-clean")),
            ("/storage/azure/credentials/mode", json!("SasToken")),
            ("/storage/azure/credentials/sasValidity", json!("30d")),
            ("/drill/timeout", json!("30m")),
            ("/drill/history", json!(5)),
        ],
    )?;
    let rust = rust_defaulted::<BackupPolicySpec>(&policy_spec)?;
    ensure!(
        policy == rust,
        "BackupPolicy: server defaults {policy} differ from the Rust defaults {rust}"
    );

    let app_spec = json!({
        "image": "sissbruecker/linkding:1.41.0",
        "ingress": {"host": "links.example.com"},
        "database": {"ref": {"name": "minimal"}, "env": [{"name": "LD_DB_HOST", "field": "host"}]},
        "secretStoreRef": {"name": "azure-key-vault"},
    });
    let app = applied_spec(
        &client,
        &namespace,
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "HomelabApp",
            "metadata": {"name": "minimal"}, "spec": app_spec,
        }),
    )
    .await?;
    assert_fields(
        "HomelabApp",
        &app,
        &[
            ("/replicas", json!(1)),
            ("/port", json!(8080)),
            ("/networkPolicy/enabled", json!(true)),
            ("/ingress/className", json!("nginx")),
            ("/ingress/path", json!("/")),
            ("/ingress/tls/enabled", json!(true)),
            ("/database/usePooler", json!(false)),
            ("/secretStoreRef/kind", json!("ClusterSecretStore")),
            ("/security/runAsRoot", json!(false)),
        ],
    )?;
    let rust = rust_defaulted::<HomelabAppSpec>(&app_spec)?;
    ensure!(
        app == rust,
        "HomelabApp: server defaults {app} differ from the Rust defaults {rust}"
    );
    Ok(())
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_with_its_expected_message() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    // One namespace per request kind, so an apply that was wrongly accepted cannot turn the
    // create of the same name into a conflict.
    let apply_namespace = env.namespace("admission-invalid-apply").await?;
    let create_namespace = env.namespace("admission-invalid-create").await?;

    let files = yaml_files("tests/invalid")?;
    ensure!(
        files.len() >= MIN_INVALID_MANIFESTS,
        "tests/invalid holds {} manifests, fewer than {MIN_INVALID_MANIFESTS}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let manifest = Manifest::load(path)?;
        let name = manifest.name();
        let [object] = manifest.documents.as_slice() else {
            failures.push(format!(
                "{name}: holds {} documents, not one",
                manifest.documents.len()
            ));
            continue;
        };
        let common = manifest.values("expect");
        if common.is_empty() {
            failures.push(format!("{name}: has no `# expect:` line"));
        }
        let requests = [
            (
                "apply",
                &apply_namespace,
                apply(&client, &apply_namespace, object).await?,
            ),
            (
                "create",
                &create_namespace,
                create(&client, &create_namespace, object).await?,
            ),
        ];
        for (how, namespace, answer) in requests {
            match answer {
                Answer::Accepted(_) => {
                    failures.push(format!("{name}: ACCEPTED by {how}"));
                    delete(&client, namespace, object).await?;
                }
                Answer::Refused { code, message } => {
                    if !is_invalid_input(how, code, &message) {
                        failures.push(format!(
                            "{name}: {how} was refused with HTTP {code}, not as invalid input: {message}"
                        ));
                    }
                    let mut expected = common.clone();
                    expected.extend(manifest.values(&format!("expect-{how}")));
                    let absent = missing(&expected, &message);
                    if !absent.is_empty() {
                        failures.push(format!(
                            "{name}: {how} was refused, but the message lacks {absent:?}:\n    {message}"
                        ));
                    }
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} invalid manifests were not refused as expected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn transitions_are_accepted_or_refused_as_stated() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let files = yaml_files("tests/transitions")?;
    let mut failures = Vec::new();
    for path in &files {
        let manifest = Manifest::load(path)?;
        let name = manifest.name();
        let [before, after] = manifest.documents.as_slice() else {
            bail!(
                "{name}: holds {} documents, not two",
                manifest.documents.len()
            );
        };
        ensure!(
            object_name(before)? == object_name(after)?,
            "{name}: the two documents name different objects"
        );
        let outcome = match manifest.values("outcome").as_slice() {
            ["accepted"] => true,
            ["rejected"] => false,
            other => bail!("{name}: needs one `# outcome: accepted|rejected` line, has {other:?}"),
        };
        let expected = manifest.values("expect");
        ensure!(
            outcome || !expected.is_empty(),
            "{name}: a rejected transition needs `# expect:` lines"
        );
        // A namespace per pair: every pair starts from nothing.
        let namespace = env.namespace("admission-transition").await?;
        if let Answer::Refused { message, .. } = apply(&client, &namespace, before).await? {
            bail!("{name}: the first document was refused: {message}");
        }
        let stored_before = get(&client, &namespace, before).await?;
        let answer = apply(&client, &namespace, after).await?;
        let stored_after = get(&client, &namespace, before).await?;
        match (outcome, answer) {
            (true, Answer::Accepted(_)) => {
                if !contains(&stored_after["spec"], &after["spec"]) {
                    failures.push(format!(
                        "{name}: accepted, but the stored spec is not the update: {}",
                        stored_after["spec"]
                    ));
                }
            }
            (true, Answer::Refused { message, .. }) => {
                failures.push(format!("{name}: REFUSED, expected accepted: {message}"));
            }
            (false, Answer::Accepted(_)) => {
                failures.push(format!("{name}: ACCEPTED, expected refused"));
            }
            (false, Answer::Refused { message, .. }) => {
                let absent = missing(&expected, &message);
                if !absent.is_empty() {
                    failures.push(format!(
                        "{name}: refused, but the message lacks {absent:?}:\n    {message}"
                    ));
                }
                if stored_after["spec"] != stored_before["spec"] {
                    failures.push(format!(
                        "{name}: refused, yet the stored spec changed to {}",
                        stored_after["spec"]
                    ));
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} transitions did not behave as stated:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    Ok(())
}

/// kubectl: the one next to the control-plane binaries if there is one, else `kubectl` on
/// `PATH`. Missing, it fails `test`, or, in a local run that opted out of kubectl
/// (`homelab_testenv::skip`), is `None` after the skip is recorded.
async fn kubectl(test: &str) -> Result<Option<PathBuf>> {
    if let Ok(binaries) = homelab_testenv::binaries::Binaries::locate().await {
        let path = binaries.path("kubectl");
        if path.is_file() {
            return Ok(Some(path));
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    match on_path {
        Some(path) => Ok(Some(path)),
        None => {
            skip::missing(
                test,
                skip::Component::Kubectl,
                &"it is neither next to the control-plane binaries nor on PATH",
            );
            Ok(None)
        }
    }
}

fn run_kubectl(kubectl: &Path, env: &TestEnv, args: &[&str]) -> Result<String> {
    let output = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(args)
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "kubectl {} failed ({}): {}{}",
        args.join(" "),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description of a field in the generated CRD of `kind`, e.g. `spec.backup`.
fn crd_description(kind: &str, path: &str) -> Result<String> {
    let crd = homelab_api::crd::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .with_context(|| format!("no CRD for {kind}"))?;
    let mut schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.clone())
        .context("CRD without schema")?;
    for step in path.split('.') {
        schema = schema
            .properties
            .and_then(|mut p| p.remove(step))
            .with_context(|| format!("{kind} has no field {path}"))?;
    }
    schema
        .description
        .with_context(|| format!("{kind}.{path} has no description"))
}

#[tokio::test]
async fn kubectl_explain_prints_field_descriptions() -> Result<()> {
    let env = TestEnv::get().await;
    let Some(kubectl) = kubectl("kubectl_explain_prints_field_descriptions").await? else {
        return Ok(());
    };
    for (resource, kind, path) in [
        ("appdatabase.spec.backup", "AppDatabase", "spec.backup"),
        ("homelabapp.spec.database", "HomelabApp", "spec.database"),
        ("backuppolicy.spec.drill", "BackupPolicy", "spec.drill"),
    ] {
        let description = squeeze(&crd_description(kind, path)?);
        // The apiserver publishes a new CRD's OpenAPI shortly after it is Established.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = run_kubectl(&kubectl, env, &["explain", resource]);
            match result {
                Ok(out) if squeeze(&out).contains(&description) => break,
                Ok(out) if Instant::now() > deadline => {
                    bail!("kubectl explain {resource} does not print {description:?}:\n{out}")
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_get_homelab_lists_all_three_kinds_with_their_columns() -> Result<()> {
    let env = TestEnv::get().await;
    let Some(kubectl) =
        kubectl("kubectl_get_homelab_lists_all_three_kinds_with_their_columns").await?
    else {
        return Ok(());
    };
    let client = env.client().await?;
    let namespace = env.namespace("admission-category").await?;
    let manifest = Manifest::load(&repo_root().join("examples/linkding.yaml"))?;
    let policy = Manifest::load(&repo_root().join("examples/backup-policy.yaml"))?;
    for object in manifest.documents.iter().chain(&policy.documents) {
        if let Answer::Refused { message, .. } = apply(&client, &namespace, object).await? {
            bail!("applying {} failed: {message}", object["kind"]);
        }
    }
    let out = run_kubectl(&kubectl, env, &["get", "homelab", "-A"])?;
    for kind in [
        "appdatabase.homelab.io/linkding",
        "backuppolicy.homelab.io/daily",
        "homelabapp.homelab.io/linkding",
    ] {
        ensure!(
            out.lines()
                .any(|line| line.starts_with(&namespace) && line.contains(kind)),
            "kubectl get homelab -A lacks {kind} in {namespace}:\n{out}"
        );
    }
    for wanted in [
        "NAMESPACE",
        "ENDPOINT",
        "LAST BACKUP",
        "SCHEDULE",
        "RETENTION",
        "URL",
        "0 1 * * *",
    ] {
        ensure!(
            out.contains(wanted),
            "kubectl get homelab lacks {wanted:?}:\n{out}"
        );
    }

    // Statuses as the controllers write them (no controller runs here): each column prints the
    // value its JSON path selects, under its own header.
    let now = jiff::Timestamp::now();
    let condition = |status: &str, reason: &str| {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": "written by the test",
                "lastTransitionTime": now.round(jiff::Unit::Second).unwrap_or(now).to_string()}])
    };
    let statuses = [
        (
            "AppDatabase",
            json!({"conditions": condition("True", "Ready"),
                   "endpoints": {"readWrite": "linkding-db-cnpg-v1-rw", "read": "linkding-db-cnpg-v1-r", "port": 5432},
                   "backup": {"lastSuccessfulBackup": (now - jiff::SignedDuration::from_mins(72 * 60 + 30)).round(jiff::Unit::Second).unwrap_or(now).to_string()}}),
        ),
        (
            "HomelabApp",
            json!({"conditions": condition("False", "ReplicasUnavailable"),
                   "url": "https://links.example.com", "availableReplicas": 0}),
        ),
        (
            "BackupPolicy",
            json!({"conditions": condition("True", "Ready"), "databases": 1,
                   "lastDrillOutcome": "ObjectiveMissed"}),
        ),
    ];
    for (kind, status) in &statuses {
        let object = manifest
            .documents
            .iter()
            .chain(&policy.documents)
            .find(|o| o["kind"] == *kind)
            .with_context(|| format!("no {kind} in the examples"))?;
        api(&client, &namespace, object)?
            .patch_status(
                object_name(object)?,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .with_context(|| format!("writing the status of {kind}"))?;
    }
    for (resource, name, wanted) in [
        (
            "appdatabase",
            "linkding",
            &[
                ("READY", "True"),
                ("REASON", "Ready"),
                ("ENDPOINT", "linkding-db-cnpg-v1-rw"),
                ("LAST BACKUP", "3d"),
                ("INSTANCES", "1"),
            ][..],
        ),
        (
            "homelabapp",
            "linkding",
            &[
                ("READY", "False"),
                ("REASON", "ReplicasUnavailable"),
                ("URL", "https://links.example.com"),
                ("AVAILABLE", "0"),
            ][..],
        ),
        (
            "backuppolicy",
            "daily",
            &[
                ("READY", "True"),
                ("REASON", "Ready"),
                ("SCHEDULE", "0 1 * * *"),
                ("RETENTION", "7d"),
                ("DATABASES", "1"),
                ("LAST DRILL", "ObjectiveMissed"),
            ][..],
        ),
    ] {
        let out = run_kubectl(
            &kubectl,
            env,
            &["get", resource, "-n", &namespace, "-o", "wide"],
        )?;
        let rows = table(&out)?;
        let row = rows
            .iter()
            .find(|row| row.get("NAME").map(String::as_str) == Some(name))
            .with_context(|| format!("kubectl get {resource} has no row {name}:\n{out}"))?;
        for (column, value) in wanted {
            ensure!(
                row.get(*column).map(String::as_str) == Some(*value),
                "kubectl get {resource} -o wide shows {column} = {:?}, not {value:?}:\n{out}",
                row.get(*column)
            );
        }
    }
    Ok(())
}

/// The rows of a table kubectl printed, each as header → cell. Columns are left-aligned and
/// separated by at least three spaces, so a column starts where its header does; headers hold at
/// most single spaces ("LAST BACKUP").
fn table(out: &str) -> Result<Vec<std::collections::BTreeMap<String, String>>> {
    let mut lines = out.lines();
    let header = lines.next().context("kubectl printed no header")?;
    let mut starts = Vec::new();
    let mut blanks = 2;
    for (at, c) in header.char_indices() {
        if c != ' ' && blanks >= 2 {
            starts.push(at);
        }
        blanks = if c == ' ' { blanks + 1 } else { 0 };
    }
    let columns: Vec<(String, usize, Option<usize>)> = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts.get(i + 1).copied();
            let name = header[start..end.unwrap_or(header.len())]
                .trim()
                .to_string();
            (name, start, end)
        })
        .collect();
    Ok(lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            columns
                .iter()
                .map(|(name, start, end)| {
                    let cell = line
                        .get(*start..end.unwrap_or(line.len()).min(line.len()))
                        .unwrap_or_default();
                    (name.clone(), cell.trim().to_string())
                })
                .collect()
        })
        .collect())
}
