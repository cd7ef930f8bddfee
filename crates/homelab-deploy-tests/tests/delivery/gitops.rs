//! `examples/gitops`: every overlay renders with kubectl's Kustomize and passes a server-side
//! dry-run, and the ApplicationSets' git directory generators find exactly the overlays of their
//! environment and send each to the overlay's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use homelab_deploy_tests::{DryRun, display, kustomize, object_id, read_documents, repo_root};
use homelab_testenv::TestEnv;
use serde_json::Value;

const APPS: [&str; 5] = ["commafeed", "linkding", "listmonk", "n8n", "wallabag"];
const ENVIRONMENTS: [&str; 3] = ["dev", "prod", "qa"];

fn gitops() -> PathBuf {
    repo_root().join("examples/gitops")
}

fn subdirectories(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", display(dir)))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            names.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// `(app, environment)` of every overlay directory.
fn overlays() -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for app in subdirectories(&gitops().join("apps"))? {
        for env in subdirectories(&gitops().join("apps").join(&app).join("overlays"))? {
            found.push((app.clone(), env));
        }
    }
    Ok(found)
}

fn host(app: &Value) -> Option<&str> {
    app["spec"]["ingress"]["host"]
        .as_str()
        .or_else(|| app["spec"]["route"]["hostname"].as_str())
}

#[tokio::test]
async fn every_overlay_renders_and_is_accepted_by_the_apiserver() -> Result<()> {
    let overlays = overlays()?;
    let expected: Vec<(String, String)> = APPS
        .iter()
        .flat_map(|a| {
            ENVIRONMENTS
                .iter()
                .map(|e| ((*a).to_owned(), (*e).to_owned()))
        })
        .collect();
    assert_eq!(
        overlays, expected,
        "one overlay per seed app and environment"
    );

    // The bases carry the seed examples unchanged.
    for app in APPS {
        let example = std::fs::read_to_string(repo_root().join(format!("examples/{app}.yaml")))?;
        let base = std::fs::read_to_string(gitops().join(format!("apps/{app}/base/{app}.yaml")))?;
        ensure!(
            example == base,
            "examples/gitops/apps/{app}/base/{app}.yaml differs from examples/{app}.yaml"
        );
    }

    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-gitops").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    let mut hosts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (app, environment) in &overlays {
        let dir = gitops().join(format!("apps/{app}/overlays/{environment}"));
        let objects = kustomize(&dir).await?;
        let ids: BTreeSet<String> = objects.iter().map(object_id).collect();
        let wanted: BTreeSet<String> = [
            format!("HomelabApp/{app}"),
            format!("AppDatabase/{app}"),
            "BackupPolicy/daily".to_owned(),
        ]
        .into();
        assert_eq!(ids, wanted, "{}", display(&dir));
        for object in &objects {
            assert_eq!(
                object["metadata"]["namespace"],
                format!("{app}-{environment}"),
                "{} {}",
                display(&dir),
                object_id(object)
            );
        }
        let homelab_app = objects
            .iter()
            .find(|o| o["kind"] == "HomelabApp")
            .context("no HomelabApp")?;
        let host = host(homelab_app).with_context(|| format!("{}: no host", display(&dir)))?;
        hosts
            .entry(app.clone())
            .or_default()
            .insert(host.to_owned());
        // Settings that repeat the host (CSRF origin, base URLs) follow it to the environment.
        for env in homelab_app["spec"]["env"].as_array().into_iter().flatten() {
            let value = env["value"].as_str().unwrap_or_default();
            ensure!(
                !value.contains("example.com") || value.contains('@') || value.contains(host),
                "{}: {} is {value:?}, another environment's host than {host}",
                display(&dir),
                env["name"]
            );
        }
        // Dry-run in a test namespace: the apiserver checks schemas and CEL rules.
        if let Err(e) = dry_run.apply_all(&objects, Some(&namespace)).await {
            failures.push(format!("{}: {e:#}", display(&dir)));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    for (app, hosts) in hosts {
        assert_eq!(
            hosts.len(),
            ENVIRONMENTS.len(),
            "{app}: hosts repeat across environments: {hosts:?}"
        );
    }
    Ok(())
}

/// Matches a path against a glob whose segments are literal or `*` (what the overlays' generator
/// patterns use).
fn glob_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
}

/// Renders the two template expressions the ApplicationSets use, `{{ .path.path }}` and
/// `{{ index .path.segments N }}`; anything else is an error.
fn render_template(template: &str, path: &str) -> Result<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("unclosed expression in {template:?}"))?;
        let expr = rest[start + 2..start + end].trim();
        let value = if expr == ".path.path" {
            path.to_owned()
        } else if let Some(index) = expr.strip_prefix("index .path.segments ") {
            let index: usize = index.trim().parse()?;
            segments
                .get(index)
                .with_context(|| format!("{path} has no segment {index}"))?
                .to_string()
        } else {
            anyhow::bail!("unsupported template expression {expr:?}");
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every string of a template value.
fn render_strings(value: &Value, path: &str) -> Result<Value> {
    Ok(match value {
        Value::String(s) => Value::String(render_template(s, path)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_strings(i, path))
                .collect::<Result<_>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), render_strings(v, path)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

#[tokio::test]
async fn application_sets_discover_every_overlay_of_their_environment() -> Result<()> {
    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-appsets").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    let overlays = overlays()?;
    for environment in ENVIRONMENTS {
        let path = gitops().join(format!("argocd/applicationset-{environment}.yaml"));
        let documents = read_documents(&path)?;
        ensure!(
            documents.len() == 1,
            "{}: one ApplicationSet",
            display(&path)
        );
        let set = &documents[0];
        assert_eq!(set["kind"], "ApplicationSet");
        dry_run.apply(set, Some(&namespace)).await?;

        let patterns: Vec<&str> = set["spec"]["generators"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["git"]["directories"].as_array().into_iter().flatten())
            .filter_map(|d| d["path"].as_str())
            .collect();
        ensure!(
            !patterns.is_empty(),
            "{}: no git directory generator",
            display(&path)
        );
        let mut discovered = BTreeSet::new();
        for (app, env_name) in &overlays {
            let dir = format!("examples/gitops/apps/{app}/overlays/{env_name}");
            if patterns.iter().any(|p| glob_matches(p, &dir)) {
                discovered.insert((app.clone(), env_name.clone(), dir));
            }
        }
        let apps: BTreeSet<&str> = discovered.iter().map(|(a, _, _)| a.as_str()).collect();
        assert_eq!(apps, APPS.into(), "{}", display(&path));
        ensure!(
            discovered.iter().all(|(_, e, _)| e == environment),
            "{}: the generator also finds other environments: {discovered:?}",
            display(&path)
        );

        let template = &set["spec"]["template"];
        for (app, env_name, dir) in &discovered {
            let name = render_template(
                template["metadata"]["name"]
                    .as_str()
                    .context("template name")?,
                dir,
            )?;
            let destination = render_template(
                template["spec"]["destination"]["namespace"]
                    .as_str()
                    .context("destination namespace")?,
                dir,
            )?;
            let source = render_template(
                template["spec"]["source"]["path"]
                    .as_str()
                    .context("source path")?,
                dir,
            )?;
            assert_eq!(name, format!("{app}-{env_name}"));
            assert_eq!(
                destination,
                format!("{app}-{env_name}"),
                "must be the overlay's namespace"
            );
            assert_eq!(&source, dir);

            // The Application the generator would create is one the apiserver accepts.
            let application = serde_json::json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {
                    "name": name,
                    "labels": render_strings(&template["metadata"]["labels"], dir)?,
                },
                "spec": render_strings(&template["spec"], dir)?,
            });
            dry_run.apply(&application, Some(&namespace)).await?;
        }
    }
    Ok(())
}

/// The Key Vault URL behind each ClusterSecretStore of `cluster/secret-stores.yaml`.
fn vaults() -> Result<BTreeMap<String, String>> {
    let path = gitops().join("cluster/secret-stores.yaml");
    let mut vaults = BTreeMap::new();
    for store in read_documents(&path)? {
        ensure!(
            store["kind"] == "ClusterSecretStore",
            "{}: {} is not a ClusterSecretStore",
            display(&path),
            object_id(&store)
        );
        let name = store["metadata"]["name"].as_str().unwrap_or_default();
        let url = store["spec"]["provider"]["azurekv"]["vaultUrl"]
            .as_str()
            .with_context(|| format!("{}: store {name} has no vaultUrl", display(&path)))?;
        vaults.insert(name.to_owned(), url.trim_end_matches('/').to_owned());
    }
    Ok(vaults)
}

/// Every Key Vault secret an overlay's ExternalSecrets read, as (vault URL, secret name), from
/// what the operator renders for it.
fn key_vault_secrets(
    objects: &[Value],
    vaults: &BTreeMap<String, String>,
    overlay: &str,
) -> Result<BTreeSet<(String, String)>> {
    let text = objects
        .iter()
        .map(|o| Ok(format!("---\n{}\n", serde_json::to_string(o)?)))
        .collect::<Result<String>>()?;
    let config = homelab_render::OperatorConfig::default();
    let children = homelab_render::render_manifests(&[(overlay, text.as_str())], &config)
        .with_context(|| format!("rendering {overlay}"))?;
    let mut secrets = BTreeSet::new();
    for child in children
        .iter()
        .filter(|c| c.types.as_ref().is_some_and(|t| t.kind == "ExternalSecret"))
    {
        let spec = &child.data["spec"];
        let store = spec["secretStoreRef"]["name"].as_str().unwrap_or_default();
        let vault = vaults.get(store).with_context(|| {
            format!(
                "{overlay}: ExternalSecret {} reads ClusterSecretStore {store}, which cluster/secret-stores.yaml does not define",
                child.metadata.name.as_deref().unwrap_or_default()
            )
        })?;
        let keys = spec["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["remoteRef"]["key"].as_str())
            .chain(
                spec["dataFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["extract"]["key"].as_str()),
            );
        for key in keys {
            secrets.insert((vault.clone(), key.to_owned()));
        }
    }
    Ok(secrets)
}

#[tokio::test]
async fn no_two_environments_share_a_key_vault_secret() -> Result<()> {
    let vaults = vaults()?;
    let distinct: BTreeSet<&String> = vaults.values().collect();
    ensure!(
        distinct.len() == vaults.len(),
        "two ClusterSecretStores point at one vault: {vaults:?}"
    );
    let mut readers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (app, environment) in overlays()? {
        let overlay = format!("apps/{app}/overlays/{environment}");
        let objects = kustomize(&gitops().join(&overlay)).await?;
        let secrets = key_vault_secrets(&objects, &vaults, &overlay)?;
        ensure!(
            secrets
                .iter()
                .any(|(_, key)| key == &format!("{app}-db-password")),
            "{overlay}: no ExternalSecret reads the database password {app}-db-password: {secrets:?}"
        );
        for secret in secrets {
            readers.entry(secret).or_default().insert(overlay.clone());
        }
    }
    let shared: Vec<String> = readers
        .iter()
        .filter(|(_, overlays)| overlays.len() > 1)
        .map(|((vault, key), overlays)| format!("{vault} secret {key}: {overlays:?}"))
        .collect();
    ensure!(
        shared.is_empty(),
        "Key Vault secrets reached from more than one overlay (each would read and rotate the other's):\n{}",
        shared.join("\n")
    );
    Ok(())
}
