//! The health checks of `deploy/argocd/health`, judged by Argo CD's application controller.
//!
//! One Application syncs a custom resource per case from git; the test then writes each one's
//! status through the status subresource and reads the health Argo CD computed for it from the
//! Application's resource tree. The statuses are played, not produced by the operator: what
//! is under test is Argo CD's reading of them, for every reason the operator can report,
//! including those it reaches only after hours (a stale backup) or on an Azure outage. No operator
//! runs on this control plane, so nothing overwrites them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use homelab_deploy_tests::health::documented;
use homelab_deploy_tests::{DryRun, read_documents, repo_root};
use homelab_testenv::argocd;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{Stage, application, homelab_resource, text, write_documents};

const KINDS: [&str; 3] = ["HomelabApp", "AppDatabase", "BackupPolicy"];
const NAMESPACE: &str = "health-cases";
const PLAYED_MESSAGE: &str = "played by the test";

/// One custom resource whose health Argo CD must compute as `expected`.
struct Case {
    kind: &'static str,
    name: String,
    origin: String,
    object: Value,
    status: Option<Value>,
    expected_status: String,
    expected_message: String,
}

fn health_dir(kind: &str) -> std::path::PathBuf {
    repo_root()
        .join("deploy/argocd/health/homelab.io")
        .join(kind)
}

fn read_one(path: &std::path::Path) -> Result<Value> {
    read_documents(path)?
        .into_iter()
        .next()
        .with_context(|| format!("{} is empty", path.display()))
}

/// Moves every `observedGeneration` in `status` by `shift`.
fn shift_generations(value: &mut Value, shift: i64) {
    match value {
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                if key == "observedGeneration" {
                    if let Some(n) = item.as_i64() {
                        *item = json!(n + shift);
                    }
                } else {
                    shift_generations(item, shift);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_generations(i, shift)),
        _ => {}
    }
}

/// The cases of a kind's `health_test.yaml`. An object created from git has generation 1, so
/// each case's generations are moved to keep their distance from `metadata.generation`.
fn test_file_cases(kind: &'static str) -> Result<Vec<Case>> {
    let dir = health_dir(kind);
    let tests = read_one(&dir.join("health_test.yaml"))?;
    let tests = tests["tests"]
        .as_array()
        .context("health_test.yaml has no tests")?;
    let mut cases = Vec::new();
    for test in tests {
        let input = text(test, "/inputPath");
        let object = read_one(&dir.join(input))?;
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
        let mut status = object.get("status").cloned();
        if let Some(status) = &mut status {
            shift_generations(status, 1 - generation);
        }
        let mut message = text(test, "/healthStatus/message").to_owned();
        if generation != 1 {
            message = message.replace(&format!("generation {generation}"), "generation 1");
        }
        let name = input
            .trim_start_matches("testdata/")
            .trim_end_matches(".yaml")
            .to_owned();
        cases.push(Case {
            kind,
            name: format!("case-{name}"),
            origin: format!("{kind}/{input}"),
            object,
            status,
            expected_status: text(test, "/healthStatus/status").to_owned(),
            expected_message: message,
        });
    }
    Ok(cases)
}

fn ready_condition(status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "observedGeneration": 1, "lastTransitionTime": "2026-11-20T10:00:00Z",
    })
}

/// A case per reason of [`documented`], on the kind's healthy object: `Ready=False` with that
/// reason. BackupPolicy reports a failed drill in `DrillSucceeded`, next to `Ready=True`.
fn reason_cases(kind: &'static str) -> Result<Vec<Case>> {
    let healthy = read_one(&health_dir(kind).join("testdata/healthy.yaml"))?;
    let mut cases = Vec::new();
    for (reason, expected) in documented(kind) {
        cases.push(Case {
            kind,
            name: format!("reason-{}", reason.to_lowercase()),
            origin: format!("{kind} Ready=False {reason}"),
            object: healthy.clone(),
            status: Some(json!({
                "observedGeneration": 1,
                "conditions": [ready_condition("False", reason, PLAYED_MESSAGE)],
            })),
            expected_status: expected.to_owned(),
            expected_message: format!("{reason}: {PLAYED_MESSAGE}"),
        });
    }
    if kind == "BackupPolicy" {
        for reason in ["DrillFailed", "DrillObjectiveMissed"] {
            cases.push(Case {
                kind,
                name: format!("reason-{}", reason.to_ascii_lowercase()),
                origin: format!("BackupPolicy Ready=True, DrillSucceeded=False {reason}"),
                object: healthy.clone(),
                status: Some(json!({
                    "observedGeneration": 1,
                    "conditions": [
                        ready_condition("True", "Ready", "the policy is valid and applied"),
                        {
                            "type": "DrillSucceeded", "status": "False", "reason": reason,
                            "message": PLAYED_MESSAGE, "observedGeneration": 1,
                            "lastTransitionTime": "2026-11-20T10:00:00Z",
                        },
                    ],
                })),
                expected_status: "Degraded".into(),
                expected_message: format!("{reason}: {PLAYED_MESSAGE}"),
            });
        }
    }
    Ok(cases)
}

/// The object as it goes into git: the case's metadata name and spec, in [`NAMESPACE`].
fn manifest(case: &Case, spec: &Value) -> Value {
    json!({
        "apiVersion": "homelab.io/v1alpha1",
        "kind": case.kind,
        "metadata": {"name": case.name, "namespace": NAMESPACE},
        "spec": spec,
    })
}

#[tokio::test]
async fn argo_cd_computes_the_documented_health_for_every_case_and_reason() -> Result<()> {
    let stage = Stage::start("health").await?;

    // The health checks go into the argocd-cm Argo CD's install created, as the README says,
    // and every key Argo CD put there survives.
    let config_maps: Api<ConfigMap> = Api::namespaced(stage.client.clone(), argocd::NAMESPACE);
    let installed = config_maps
        .get("argocd-cm")
        .await
        .context("argocd-cm from Argo CD's install")?
        .data
        .unwrap_or_default();
    ensure!(
        installed.contains_key("resource.exclusions"),
        "Argo CD's argocd-cm has no resource.exclusions: not the install's ConfigMap? {:?}",
        installed.keys()
    );
    stage.install_health_checks().await?;
    let merged = config_maps.get("argocd-cm").await?.data.unwrap_or_default();
    for (key, value) in &installed {
        ensure!(
            merged.get(key) == Some(value),
            "installing the health checks changed or removed argocd-cm key {key}"
        );
    }
    for kind in KINDS {
        let key = format!("resource.customizations.health.homelab.io_{kind}");
        let script = std::fs::read_to_string(health_dir(kind).join("health.lua"))?;
        ensure!(
            merged.get(&key) == Some(&script),
            "argocd-cm {key} is not {kind}/health.lua verbatim"
        );
    }

    let mut cases = Vec::new();
    for kind in KINDS {
        cases.extend(test_file_cases(kind)?);
        cases.extend(reason_cases(kind)?);
    }
    // A case whose spec the apiserver refuses (an invalid schedule is refused at admission, so
    // only its status can be shown) takes the healthy object's spec: the health checks read the
    // status, and BackupPolicy's `spec.suspend` is kept.
    let namespaces: Api<Namespace> = Api::all(stage.client.clone());
    namespaces
        .patch(
            NAMESPACE,
            &PatchParams::apply("homelab-deploy-tests"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await?;
    let dry_run = DryRun::new(stage.client.clone()).await?;
    let mut manifests = Vec::new();
    for case in &cases {
        let mut spec = case.object["spec"].clone();
        if dry_run
            .apply(&manifest(case, &spec), Some(NAMESPACE))
            .await
            .is_err()
        {
            let healthy = read_one(&health_dir(case.kind).join("testdata/healthy.yaml"))?;
            let suspend = spec.get("suspend").cloned();
            spec = healthy["spec"].clone();
            if let (Some(suspend), Some(fields)) = (suspend, spec.as_object_mut()) {
                fields.insert("suspend".into(), suspend);
            }
        }
        manifests.push(manifest(case, &spec));
    }
    write_documents(&stage.repo.path().join("cases/cases.yaml"), &manifests)?;
    stage.repo.commit("one custom resource per health case")?;
    let app = application("health-cases", &stage.repo, "cases", NAMESPACE);
    stage
        .applications()
        .patch(
            "health-cases",
            &PatchParams::apply("homelab-deploy-tests").force(),
            &Patch::Apply(&app),
        )
        .await?;
    let applications = stage.applications();
    let count = manifests.len();
    stage
        .wait("health-cases to sync", Duration::from_secs(180), || {
            let applications = applications.clone();
            async move {
                let app = match applications.get_opt("health-cases").await? {
                    Some(app) => serde_json::to_value(app)?,
                    None => return Ok(Err("no Application".into())),
                };
                let synced = text(&app, "/status/sync/status");
                let resources = app
                    .pointer("/status/resources")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                Ok(if synced == "Synced" && resources == count {
                    Ok(())
                } else {
                    Err(format!(
                        "sync {synced:?}, {resources} of {count} resources, operation {}",
                        app.pointer("/status/operationState")
                            .map(Value::to_string)
                            .unwrap_or_default()
                    ))
                })
            }
        })
        .await?;

    for case in &cases {
        let Some(status) = &case.status else { continue };
        let api: Api<DynamicObject> = Api::namespaced_with(
            stage.client.clone(),
            NAMESPACE,
            &homelab_resource(case.kind),
        );
        api.patch_status(
            &case.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .with_context(|| format!("writing the status of {}", case.origin))?;
    }

    let expected: BTreeMap<(String, String), (String, String, String)> = cases
        .iter()
        .map(|c| {
            (
                (c.kind.to_owned(), c.name.clone()),
                (
                    c.expected_status.clone(),
                    c.expected_message.clone(),
                    c.origin.clone(),
                ),
            )
        })
        .collect();
    stage
        .wait(
            "Argo CD's health of every case",
            Duration::from_secs(120),
            || {
                let argocd = &stage.argocd;
                let expected = &expected;
                async move {
                    // Argo CD 3 keeps resource health in the resource tree, not in the
                    // Application's status.
                    let tree = argocd
                        .get("/api/v1/applications/health-cases/resource-tree")
                        .await?;
                    let resources = tree["nodes"].as_array().cloned().unwrap_or_default();
                    let mut wrong = Vec::new();
                    for ((kind, name), (status, message, origin)) in expected {
                        let seen = resources
                            .iter()
                            .find(|r| text(r, "/kind") == kind && text(r, "/name") == name);
                        let (seen_status, seen_message) = seen.map_or(("(absent)", ""), |r| {
                            (text(r, "/health/status"), text(r, "/health/message"))
                        });
                        if seen_status != status || seen_message != message {
                            wrong.push(format!(
                                "{origin}: Argo CD says {seen_status} {seen_message:?}, documented {status} {message:?}"
                            ));
                        }
                    }
                    Ok(if wrong.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} of {} cases differ:\n  {}",
                            wrong.len(),
                            expected.len(),
                            wrong.join("\n  ")
                        ))
                    })
                }
            },
        )
        .await
}
