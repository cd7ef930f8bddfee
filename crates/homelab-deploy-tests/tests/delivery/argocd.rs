//! Argo CD: the Lua health checks of `deploy/argocd/health`, run by real Lua interpreters against
//! the cases of their `health_test.yaml` (Argo CD's own test layout), the `argocd-cm` snippet that
//! installs them, and the Application for the operator.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use homelab_deploy_tests::health::{evaluate, health_dir, interpreters, lua_literal};
use homelab_deploy_tests::{DryRun, display, read_documents, repo_root, run, tool};
use homelab_testenv::TestEnv;
use serde_json::Value;

const KINDS: [&str; 3] = ["HomelabApp", "AppDatabase", "BackupPolicy"];

#[test]
fn lua_literals_escape_what_lua_would_misread() -> Result<()> {
    let lua = tool("lua5.4", "apt-get install lua5.4")?;
    let tricky = serde_json::json!({
        "quote\"d": "line\nbreak \\ back\"slash\ttab ]] [[ é ✓",
        "list": [1, 2.5, true, null, "x"],
    });
    let mut literal = String::new();
    lua_literal(&tricky, &mut literal);
    let program = format!(
        r#"local t = {literal}
io.write(t['quote"d'], "|", #t.list, "|", tostring(t.list[2]))"#
    );
    let out = run(Command::new(lua).arg("-e").arg(program))?;
    assert_eq!(out, "line\nbreak \\ back\"slash\ttab ]] [[ é ✓|5|2.5");
    Ok(())
}

/// The cases of one kind's `health_test.yaml`: `(expected status, expected message, input)`.
fn cases(kind: &str) -> Result<Vec<(String, String, PathBuf)>> {
    let dir = health_dir(kind);
    let tests = read_documents(&dir.join("health_test.yaml"))?;
    let tests = tests
        .first()
        .and_then(|d| d["tests"].as_array())
        .with_context(|| format!("{}/health_test.yaml has no tests", display(&dir)))?;
    tests
        .iter()
        .map(|t| {
            Ok((
                t["healthStatus"]["status"]
                    .as_str()
                    .context("healthStatus.status")?
                    .to_owned(),
                t["healthStatus"]["message"]
                    .as_str()
                    .context("healthStatus.message")?
                    .to_owned(),
                dir.join(t["inputPath"].as_str().context("inputPath")?),
            ))
        })
        .collect()
}

#[tokio::test]
async fn health_checks_give_the_expected_status_and_message() -> Result<()> {
    let interpreters = interpreters()?;
    let mut inputs = Vec::new();
    let mut failures = Vec::new();
    let mut count = 0;
    for kind in KINDS {
        let script = health_dir(kind).join("health.lua");
        ensure!(script.is_file(), "{} is missing", display(&script));
        let cases = cases(kind)?;
        let statuses: BTreeSet<&str> = cases.iter().map(|(s, _, _)| s.as_str()).collect();
        let mut wanted = vec!["Healthy", "Progressing", "Degraded"];
        if kind == "BackupPolicy" {
            wanted.push("Suspended");
        }
        for status in wanted {
            ensure!(
                statuses.contains(status),
                "{kind}: no test case expects {status}"
            );
        }
        // Every testdata file is used by a case.
        let used: BTreeSet<PathBuf> = cases.iter().map(|(_, _, p)| p.clone()).collect();
        for entry in std::fs::read_dir(health_dir(kind).join("testdata"))? {
            let path = entry?.path();
            ensure!(
                used.contains(&path),
                "{} is not used by health_test.yaml",
                display(&path)
            );
        }
        for (status, message, input) in &cases {
            let object = read_documents(input)?
                .into_iter()
                .next()
                .with_context(|| format!("{} is empty", display(input)))?;
            ensure!(object["kind"] == kind, "{} is not a {kind}", display(input));
            inputs.push(object.clone());
            for lua in &interpreters {
                count += 1;
                let name = lua.file_name().unwrap_or_default().to_string_lossy();
                match evaluate(lua, &script, &object) {
                    Ok((got_status, got_message)) => {
                        if (&got_status, &got_message) != (status, message) {
                            failures.push(format!(
                                "{} ({name}): expected {status} {message:?}, got {got_status} {got_message:?}",
                                display(input)
                            ));
                        }
                    }
                    Err(e) => failures.push(format!("{} ({name}): {e:#}", display(input))),
                }
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    ensure!(count >= 40, "only {count} health evaluations ran");

    // The inputs are objects the apiserver accepts (their specs pass the CRDs' schemas and
    // rules; the status is the operator's, which a create ignores).
    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-health").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    let specs: Vec<Value> = inputs
        .into_iter()
        .map(|mut o| {
            if let Some(fields) = o.as_object_mut() {
                fields.remove("status");
            }
            if let Some(metadata) = o["metadata"].as_object_mut() {
                metadata.remove("generation");
            }
            o
        })
        .collect();
    dry_run.apply_all(&specs, Some(&namespace)).await
}

/// A script error is reported, not taken for a result.
#[test]
fn a_broken_health_check_fails() -> Result<()> {
    let lua = tool("lua5.4", "apt-get install lua5.4")?;
    let dir = std::env::temp_dir().join(format!("homelab-broken-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("health.lua");
    std::fs::write(&script, "return obj.status.conditions[1].type\n")?;
    let result = evaluate(&lua, &script, &serde_json::json!({ "metadata": {} }));
    std::fs::remove_dir_all(&dir)?;
    ensure!(result.is_err(), "a failing script gave {result:?}");
    Ok(())
}

#[tokio::test]
async fn argocd_cm_snippet_installs_the_health_checks_verbatim() -> Result<()> {
    let path = repo_root().join("deploy/argocd/argocd-cm.yaml");
    let documents = read_documents(&path)?;
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .with_context(|| format!("{} holds no ConfigMap", display(&path)))?;
    assert_eq!(config_map["metadata"]["name"], "argocd-cm");
    for kind in KINDS {
        let key = format!("resource.customizations.health.homelab.io_{kind}");
        let script = std::fs::read_to_string(health_dir(kind).join("health.lua"))?;
        ensure!(
            config_map["data"][&key].as_str() == Some(script.as_str()),
            "{key} in {} differs from {}/health.lua; copy the script into the snippet",
            display(&path),
            display(&health_dir(kind))
        );
    }

    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-argocd").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    dry_run.apply_all(&documents, Some(&namespace)).await?;

    let application = read_documents(&repo_root().join("deploy/argocd/application.yaml"))?;
    ensure!(
        application
            .iter()
            .any(|d| d["kind"] == "Application" && d["spec"]["source"]["path"] == "deploy/base"),
        "deploy/argocd/application.yaml does not deploy deploy/base"
    );
    dry_run.apply_all(&application, Some(&namespace)).await
}
