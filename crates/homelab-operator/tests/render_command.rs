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
    let output = Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args(["render", "-n", &ns, "-f"])
        .arg(&examples)
        .output()
        .expect("run homelab-operator render");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let mut rendered = Vec::new();
    for document in serde_norway::Deserializer::from_str(&stdout) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
        if !value.is_null() {
            rendered.push(value);
        }
    }
    assert!(
        rendered.len() > 20,
        "render printed {} objects",
        rendered.len()
    );

    let mut differences = Vec::new();
    for object in &rendered {
        let api_version = object["apiVersion"].as_str().unwrap().to_string();
        let kind = object["kind"].as_str().unwrap().to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &resource(&api_version, &kind));
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
