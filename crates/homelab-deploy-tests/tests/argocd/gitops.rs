//! The GitOps layout of `examples/gitops`, synced by Argo CD from a git repository holding the
//! repository's `examples/`, with the operator running against the same control plane.
//!
//! The ApplicationSets are applied as the layout's README says, with two changes a user makes
//! too: `repoURL` names the repository they sync from, and the git generator polls every 10 s
//! (`requeueAfterSeconds`) instead of every 3 minutes, so that a change in git shows quickly.
//! The operator runs without Azure (`--azure=false`): the examples' vaults and storage accounts
//! are not emulated here, and what is under test is Argo CD's view of what the operator writes.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use homelab_deploy_tests::repo_root;
use homelab_testenv::argocd::copy_tree;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{Stage, argo_resource, homelab_resource, text};

const UPSTREAM_REPO: &str = "https://github.com/homelab-operator/homelab-operator.git";
const APPS: [&str; 5] = ["commafeed", "linkding", "listmonk", "n8n", "wallabag"];
const ENVIRONMENTS: [&str; 3] = ["dev", "qa", "prod"];
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// The operator, in this process, watching every namespace, until dropped.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    async fn start(stage: &Stage) -> Result<Self> {
        homelab_operator::telemetry::init(homelab_operator::config::LogFormat::Text);
        let port = homelab_testenv::process::free_port()?;
        let config = homelab_operator::config::RunConfig::from_args([
            format!("--http-addr=127.0.0.1:{port}"),
            "--leader-election=false".into(),
            "--azure=false".into(),
        ])?;
        let client = stage.env.client().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(err) = homelab_operator::run_with(config, client, None, shutdown).await {
                tracing::error!("the operator stopped: {err}");
            }
        });
        Ok(Self {
            stop: Some(stop),
            task,
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The ApplicationSets of `examples/gitops/argocd`, reading from `repo_url`.
fn application_sets(repo_url: &str) -> Result<Vec<Value>> {
    let mut sets = Vec::new();
    for environment in ENVIRONMENTS {
        let path = repo_root().join(format!(
            "examples/gitops/argocd/applicationset-{environment}.yaml"
        ));
        let text = std::fs::read_to_string(&path)?;
        ensure!(
            text.contains(UPSTREAM_REPO),
            "{} does not name {UPSTREAM_REPO}",
            path.display()
        );
        let mut documents =
            homelab_deploy_tests::parse_documents(&text.replace(UPSTREAM_REPO, repo_url))?;
        for set in &mut documents {
            let generators = set
                .pointer_mut("/spec/generators")
                .and_then(Value::as_array_mut)
                .context("an ApplicationSet without generators")?;
            for generator in generators {
                if let Some(git) = generator.get_mut("git").and_then(Value::as_object_mut) {
                    git.insert("requeueAfterSeconds".into(), json!(10));
                }
            }
        }
        sets.extend(documents);
    }
    Ok(sets)
}

fn expected_applications() -> BTreeSet<String> {
    APPS.iter()
        .flat_map(|app| ENVIRONMENTS.iter().map(move |env| format!("{app}-{env}")))
        .collect()
}

#[tokio::test]
async fn argo_cd_syncs_the_gitops_layout_and_the_operator_reconciles_it() -> Result<()> {
    let stage = Stage::start("homelab").await?;
    stage.install_health_checks().await?;
    copy_tree(
        &repo_root().join("examples"),
        &stage.repo.path().join("examples"),
    )?;
    stage.repo.commit("the examples")?;

    // The stores the overlays name, as the layout's README says: once per cluster, from
    // cluster/secret-stores.yaml.
    let stores: Api<DynamicObject> = Api::all_with(
        stage.client.clone(),
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "external-secrets.io",
            "v1",
            "ClusterSecretStore",
        )),
    );
    let stores_file = repo_root().join("examples/gitops/cluster/secret-stores.yaml");
    for store in homelab_deploy_tests::read_documents(&stores_file)? {
        let name = text(&store, "/metadata/name").to_owned();
        stores
            .patch(
                &name,
                &PatchParams::apply("homelab-deploy-tests").force(),
                &Patch::Apply(&store),
            )
            .await
            .with_context(|| format!("creating ClusterSecretStore {name}"))?;
    }

    let _operator = Operator::start(&stage).await?;
    let sets: Api<DynamicObject> = Api::namespaced_with(
        stage.client.clone(),
        homelab_testenv::argocd::NAMESPACE,
        &argo_resource("ApplicationSet"),
    );
    for set in application_sets(&stage.repo.url())? {
        let name = text(&set, "/metadata/name").to_owned();
        sets.patch(
            &name,
            &PatchParams::apply("homelab-deploy-tests").force(),
            &Patch::Apply(&set),
        )
        .await
        .with_context(|| format!("applying ApplicationSet {name}"))?;
    }

    // An Application per app and environment, each Synced, none Degraded.
    let expected = expected_applications();
    let applications = stage.applications();
    stage
        .wait("every Application Synced", SYNC_TIMEOUT, || {
            let applications = applications.clone();
            let expected = &expected;
            async move {
                let list = applications.list(&Default::default()).await?;
                let mut seen = BTreeSet::new();
                let mut waiting = Vec::new();
                for app in list {
                    let app = serde_json::to_value(app)?;
                    let name = text(&app, "/metadata/name").to_owned();
                    let sync = text(&app, "/status/sync/status");
                    let health = text(&app, "/status/health/status");
                    if sync != "Synced"
                        || health.is_empty()
                        || health == "Degraded"
                        || health == "Missing"
                    {
                        waiting.push(format!(
                            "{name}: {sync} {health} {}",
                            text(&app, "/status/conditions/0/message")
                        ));
                    }
                    seen.insert(name);
                }
                Ok(if &seen != expected {
                    Err(format!("Applications {seen:?}, expected {expected:?}"))
                } else if !waiting.is_empty() {
                    Err(waiting.join("; "))
                } else {
                    Ok(())
                })
            }
        })
        .await?;

    // The operator reconciled what Argo CD applied: every custom resource has a status for its
    // generation.
    for kind in ["HomelabApp", "AppDatabase", "BackupPolicy"] {
        let api: Api<DynamicObject> = Api::all_with(stage.client.clone(), &homelab_resource(kind));
        stage
            .wait(
                &format!("the operator's status on every {kind}"),
                SYNC_TIMEOUT,
                || {
                    let api = api.clone();
                    async move {
                        let list = api.list(&Default::default()).await?;
                        let count = list.items.len();
                        let behind: Vec<String> = list
                            .into_iter()
                            .filter(|o| {
                                o.data
                                    .pointer("/status/observedGeneration")
                                    .and_then(Value::as_i64)
                                    != o.metadata.generation
                            })
                            .map(|o| {
                                format!(
                                    "{}/{}",
                                    o.metadata.namespace.unwrap_or_default(),
                                    o.metadata.name.unwrap_or_default()
                                )
                            })
                            .collect();
                        Ok(if count != 15 {
                            Err(format!("{count} {kind}s, expected 15"))
                        } else if behind.is_empty() {
                            Ok(())
                        } else {
                            Err(format!("not reconciled yet: {}", behind.join(", ")))
                        })
                    }
                },
            )
            .await?;
    }

    // The operator's writes (status, children) leave every Application Synced: after a hard
    // refresh Argo CD compares again, and finds nothing to sync.
    for name in &expected {
        applications
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}}),
                ),
            )
            .await?;
    }
    stage
        .wait(
            "every Application compared again, and Synced",
            SYNC_TIMEOUT,
            || {
                let applications = applications.clone();
                async move {
                    let list = applications.list(&Default::default()).await?;
                    let mut problems = Vec::new();
                    for app in list {
                        let app = serde_json::to_value(app)?;
                        let name = text(&app, "/metadata/name");
                        let refreshing = app
                            .pointer("/metadata/annotations/argocd.argoproj.io~1refresh")
                            .is_some();
                        let out_of_sync: Vec<String> = app
                            .pointer("/status/resources")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|r| text(r, "/status") != "Synced")
                            .map(|r| {
                                format!(
                                    "{} {}: {}",
                                    text(r, "/kind"),
                                    text(r, "/name"),
                                    text(r, "/status")
                                )
                            })
                            .collect();
                        if refreshing {
                            problems.push(format!("{name}: refresh pending"));
                        } else if text(&app, "/status/sync/status") != "Synced"
                            || !out_of_sync.is_empty()
                        {
                            problems.push(format!("{name}: OutOfSync {}", out_of_sync.join(", ")));
                        }
                    }
                    Ok(if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(problems.join("; "))
                    })
                }
            },
        )
        .await?;

    // The resource tree shows the operator's children under each custom resource.
    for name in &expected {
        let tree = stage
            .argocd
            .get(&format!("/api/v1/applications/{name}/resource-tree"))
            .await?;
        let nodes = tree["nodes"].as_array().cloned().unwrap_or_default();
        let children_of = |kind: &str| -> BTreeSet<String> {
            nodes
                .iter()
                .filter(|n| {
                    n["parentRefs"].as_array().is_some_and(|parents| {
                        parents
                            .iter()
                            .any(|p| text(p, "/kind") == kind && text(p, "/group") == "homelab.io")
                    })
                })
                .map(|n| text(n, "/kind").to_owned())
                .collect()
        };
        let app_children = children_of("HomelabApp");
        for kind in ["Deployment", "Service", "NetworkPolicy"] {
            ensure!(
                app_children.contains(kind),
                "{name}: Argo CD's tree shows no {kind} under the HomelabApp (it shows {app_children:?})"
            );
        }
        // The cluster and its volumes are data and carry no owner reference under the default
        // deletionPolicy Retain, so they are not in the tree; what is owned is.
        let database_children = children_of("AppDatabase");
        for kind in ["ScheduledBackup", "PodMonitor"] {
            ensure!(
                database_children.contains(kind),
                "{name}: Argo CD's tree shows no {kind} under the AppDatabase (it shows {database_children:?})"
            );
        }
    }

    // What a user's `argocd app get` shows: the three kinds with the health Argo CD computed.
    let output = stage
        .argocd
        .cli()
        .args(["app", "get", "argocd/linkding-prod", "--output", "tree"])
        .output()
        .context("running argocd app get")?;
    let shown = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "argocd app get failed: {}{}",
        shown,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("argocd app get argocd/linkding-prod --output tree:\n{shown}");
    for (kind, name) in [
        ("HomelabApp", "linkding"),
        ("AppDatabase", "linkding"),
        ("BackupPolicy", "daily"),
    ] {
        ensure!(
            shown.lines().any(|line| line.contains(kind)
                && line.contains(name)
                && ["Healthy", "Progressing", "Degraded", "Suspended"]
                    .iter()
                    .any(|health| line.contains(health))),
            "argocd app get shows no health for {kind} {name}:\n{shown}"
        );
    }

    // The operator made the database the Application asked for.
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        stage.client.clone(),
        "linkding-dev",
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "postgresql.cnpg.io",
            "v1",
            "Cluster",
        )),
    );
    ensure!(
        clusters.get_opt("linkding-db-cnpg-v1").await?.is_some(),
        "the operator made no cluster linkding-db-cnpg-v1 in linkding-dev"
    );

    delete_from_git_keeps_the_database(&stage, &clusters).await
}

/// Removing linkding's dev overlay from git: the ApplicationSet deletes the Application, Argo CD
/// deletes what it synced (the HomelabApp, the AppDatabase, the BackupPolicy) with the children
/// they own, and the default `deletionPolicy: Retain` keeps the CloudNativePG cluster and the
/// app's volume claim, as the CRD reference documents. (Without Azure the operator puts no finalizer on the
/// AppDatabase, having nothing outside the cluster to clean up: what keeps the cluster is that it
/// carries no owner reference.)
async fn delete_from_git_keeps_the_database(
    stage: &Stage,
    clusters: &Api<DynamicObject>,
) -> Result<()> {
    let overlay = stage
        .repo
        .path()
        .join("examples/gitops/apps/linkding/overlays/dev");
    std::fs::remove_dir_all(&overlay).with_context(|| format!("removing {}", overlay.display()))?;
    stage.repo.commit("linkding leaves dev")?;

    let applications = stage.applications();
    let namespace = "linkding-dev";
    let homelab = |kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(stage.client.clone(), namespace, &homelab_resource(kind))
    };
    let (apps, databases) = (homelab("HomelabApp"), homelab("AppDatabase"));
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(stage.client.clone(), namespace);
    stage
        .wait(
            "Argo CD to delete linkding-dev and what it synced",
            SYNC_TIMEOUT,
            || {
                let (applications, apps, databases, deployments) = (
                    applications.clone(),
                    apps.clone(),
                    databases.clone(),
                    deployments.clone(),
                );
                async move {
                    let mut left = Vec::new();
                    if let Some(app) = applications.get_opt("linkding-dev").await? {
                        left.push(format!(
                            "Application linkding-dev (finalizers {:?})",
                            app.metadata.finalizers.unwrap_or_default()
                        ));
                    }
                    for (kind, api) in [("HomelabApp", &apps), ("AppDatabase", &databases)] {
                        if let Some(object) = api.get_opt("linkding").await? {
                            left.push(format!(
                                "{kind} linkding (finalizers {:?})",
                                object.metadata.finalizers.unwrap_or_default()
                            ));
                        }
                    }
                    if deployments.get_opt("linkding").await?.is_some() {
                        left.push("Deployment linkding".into());
                    }
                    Ok(if left.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("still there: {}", left.join(", ")))
                    })
                }
            },
        )
        .await?;

    // The garbage collector has had its chance: the Deployment the HomelabApp owned is gone.
    let cluster = clusters.get_opt("linkding-db-cnpg-v1").await?;
    ensure!(
        cluster
            .as_ref()
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        "deleting the AppDatabase under deletionPolicy Retain deleted its cluster linkding-db-cnpg-v1"
    );
    // So is the app's data volume: HomelabApp's default deletionPolicy Retain gives its claims
    // no owner reference.
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(stage.client.clone(), namespace);
    let claim = claims.get_opt("linkding-data").await?;
    ensure!(
        claim
            .as_ref()
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        "deleting the HomelabApp under deletionPolicy Retain deleted its volume claim linkding-data"
    );
    // The other environments are untouched.
    for name in ["linkding-qa", "linkding-prod"] {
        ensure!(
            applications.get_opt(name).await?.is_some(),
            "removing the dev overlay deleted Application {name}"
        );
    }
    Ok(())
}
