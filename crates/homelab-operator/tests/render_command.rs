//! `homelab-operator render -f FILE_OR_DIR`, as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

fn render(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args(["render", "-f"])
        .arg(path)
        .output()
        .expect("run homelab-operator render")
}

#[test]
fn renders_every_child_of_the_examples() {
    let output = render(&homelab_testenv::repo_root().join("examples"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "kind: Cluster\n",
        "name: linkding-db-cnpg-v1\n",
        "kind: ObjectStore\n",
        "kind: ScheduledBackup\n",
        "kind: ExternalSecret\n",
        "kind: Deployment\n",
        "kind: Ingress\n",
        "kind: HTTPRoute\n",
        "kind: NetworkPolicy\n",
        "kind: Pooler\n",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}");
    }
    // Same input, same bytes.
    let again = render(&homelab_testenv::repo_root().join("examples"));
    assert_eq!(output.stdout, again.stdout);
}

#[test]
fn invalid_input_names_the_file_the_document_and_the_field() {
    let dir = std::env::temp_dir().join(format!("homelab-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: homelab.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: daily}\nspec:\n  storage: {azure: {storageAccount: acct}}\n---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: broken}\nspec:\n  instances: three\n",
    )
    .unwrap();
    let output = render(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains('2'), "names the document: {stderr}");
    assert!(
        stderr.contains("spec.instances"),
        "names the field: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Where `want` (a rendered object) is not in `live`: the paths of leaves that are missing or
/// differ. Lists are compared item by item and must have the same length; fields the apiserver
/// adds (defaults, status, managedFields) are not looked at.
fn not_in(want: &serde_json::Value, live: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (want, live) {
        (Value::Object(want), Value::Object(live)) => {
            for (key, value) in want {
                let here = format!("{path}.{key}");
                match live.get(key) {
                    Some(live_value) => not_in(value, live_value, &here, out),
                    None => out.push(format!("{here}: missing (rendered {value})")),
                }
            }
        }
        (Value::Array(want), Value::Array(live)) if want.len() == live.len() => {
            for (index, (w, l)) in want.iter().zip(live).enumerate() {
                not_in(w, l, &format!("{path}[{index}]"), out);
            }
        }
        (want, live) if want == live => {}
        (want, live) => out.push(format!("{path}: rendered {want}, applied {live}")),
    }
}

/// What `render -f examples/` prints is what the controllers apply from the same files: every
/// printed object is applied with the same fields and values, and the controllers apply no child
/// it does not print.
#[tokio::test]
async fn render_prints_what_the_controllers_apply_for_the_examples() {
    use kube::api::{Api, DynamicObject, ListParams};
    use support::*;

    let env = homelab_testenv::TestEnv::get().await;
    let client = env.client().await.expect("client");
    let ns = env.namespace("render-same").await.expect("namespace");
    let operator = Operator::start(&ns).await;
    let examples = homelab_testenv::repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in &files {
        apply_file(&client, &ns, file).await;
    }

    // In the namespace the files were applied to, as `kubectl apply -n` put them.
    let rendered = render_in(&ns, &examples);
    assert!(
        rendered.len() > 20,
        "render printed {} objects",
        rendered.len()
    );

    assert_applied_as_rendered(&client, &ns, &rendered).await;

    // Nothing applied that render does not print, of any kind the operator manages.
    for child in homelab_render::kinds::child_kinds() {
        let kind = child.kind;
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &child.api_resource());
        let applied = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=homelab-operator"))
            .await
            .unwrap();
        for item in applied.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            assert!(
                rendered
                    .iter()
                    .any(|o| o["kind"] == kind && o["metadata"]["name"] == name.as_str()),
                "the controllers applied {kind} {name}, which render -f does not print"
            );
        }
    }
    operator.stop().await;
}

/// Fails unless every object of `rendered` was applied in `ns` with the same fields and values.
async fn assert_applied_as_rendered(
    client: &kube::Client,
    ns: &str,
    rendered: &[serde_json::Value],
) {
    use kube::api::{Api, DynamicObject};
    use support::*;
    let mut differences = Vec::new();
    for object in rendered {
        let api_version = object["apiVersion"].as_str().unwrap().to_string();
        let kind = object["kind"].as_str().unwrap().to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource(&api_version, &kind));
        let live = eventually(
            &format!("the controllers to apply {kind} {name}"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                let name = name.clone();
                async move { api.get_opt(&name).await.ok().flatten() }
            },
        )
        .await;
        let live = serde_json::to_value(&live).unwrap();
        not_in(object, &live, &format!("{kind}/{name}"), &mut differences);
    }
    assert!(
        differences.is_empty(),
        "render -f prints other objects than the controllers apply:\n{}",
        differences.join("\n")
    );
}

/// `render -n NS -f FILE` of FILE; the YAML documents it prints.
fn render_in(ns: &str, path: &std::path::Path) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args(["render", "-n", ns, "-f"])
        .arg(path)
        .output()
        .expect("run homelab-operator render");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    serde_norway::Deserializer::from_str(&stdout)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .filter(|value: &serde_json::Value| !value.is_null())
        .collect()
}

/// A restored database, rendered from what `kubectl get -o yaml` prints of it (its uid, which
/// names the server it archives under, and its status) and of its source and policy: render
/// prints what the controllers applied.
#[tokio::test]
async fn render_of_a_restored_database_as_kubectl_prints_it_is_what_the_controllers_apply() {
    use homelab_api::{AppDatabase, BackupPolicy};
    use kube::api::{Api, Patch, PatchParams};
    use support::*;

    let env = homelab_testenv::TestEnv::get().await;
    let client = env.client().await.expect("client");
    let ns = env.namespace("render-restore").await.expect("namespace");
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_value(
        &client,
        &ns,
        serde_json::json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": "notes"},
            "spec": {"backup": {"policyRef": {"name": "daily"}}}}),
    )
    .await;
    // Play the Barman Cloud Plugin: the source has a recovery window.
    let stores = dynamic_api(&client, &ns, "barmancloud.cnpg.io/v1", "ObjectStore");
    eventually("the source's ObjectStore", WAIT, || {
        let stores = stores.clone();
        async move { stores.get_opt("notes-db-backup").await.ok().flatten() }
    })
    .await;
    let now = jiff::Timestamp::now();
    stores
        .patch_status(
            "notes-db-backup",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"serverRecoveryWindow": {
            "notes-db-cnpg-v1": {
                "firstRecoverabilityPoint": (now - jiff::SignedDuration::from_hours(2)).to_string(),
                "lastSuccessfulBackupTime": (now - jiff::SignedDuration::from_hours(1)).to_string(),
            }}}})),
        )
        .await
        .unwrap();
    apply_value(
        &client,
        &ns,
        serde_json::json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": "notes-copy"},
            "spec": {"backup": {"policyRef": {"name": "daily"}},
                     "restore": {"from": {"appDatabase": "notes"}}}}),
    )
    .await;
    let clusters = dynamic_api(&client, &ns, "postgresql.cnpg.io/v1", "Cluster");
    eventually("the restored Cluster", WAIT, || {
        let clusters = clusters.clone();
        async move {
            clusters
                .get_opt("notes-copy-db-cnpg-v1")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    eventually("the restored database's status", WAIT, || {
        let databases = databases.clone();
        async move {
            let db = databases.get("notes-copy").await.ok()?;
            db.status?.backup?.server_name.map(|_| ())
        }
    })
    .await;

    // What `kubectl get -o yaml` prints of the three.
    let policy = Api::<BackupPolicy>::namespaced(client.clone(), &ns)
        .get("daily")
        .await
        .unwrap();
    let mut documents = vec![serde_json::to_value(&policy).unwrap()];
    for name in ["notes", "notes-copy"] {
        documents.push(serde_json::to_value(databases.get(name).await.unwrap()).unwrap());
    }
    let file = std::env::temp_dir().join(format!("{ns}.yaml"));
    let text: String = documents
        .iter()
        .map(|d| format!("---\n{}", serde_norway::to_string(d).unwrap()))
        .collect();
    std::fs::write(&file, text).unwrap();
    let rendered: Vec<serde_json::Value> = render_in(&ns, &file)
        .into_iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("notes-copy-"))
        })
        .collect();
    let _ = std::fs::remove_file(&file);
    assert!(
        rendered.iter().any(|o| o["kind"] == "Cluster"),
        "render printed no Cluster for the restored database"
    );
    assert_applied_as_rendered(&client, &ns, &rendered).await;
    let cluster = rendered.iter().find(|o| o["kind"] == "Cluster").unwrap();
    let uid = databases
        .get("notes-copy")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        cluster["spec"]["plugins"][0]["parameters"]["serverName"],
        homelab_api::naming::restored_server_name("notes-copy-db-cnpg-v1", &uid).as_str()
    );
    operator.stop().await;
}
