//! The objects a run creates: one BackupPolicy and N AppDatabase + HomelabApp pairs, the children
//! they should produce (rendered with the operator's own renderer), and the floor: a plain client
//! applying exactly those children.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt, stream};
use homelab_api::{AppDatabase, BackupPolicy, HomelabApp};
use homelab_render::{AppDatabaseFacts, DatabaseFacts, OperatorConfig, PolicyFacts};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

/// The BackupPolicy every database of a run uses.
pub const POLICY: &str = "daily";

/// What a run creates.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Name prefix of the pairs (unique per run, since Key Vault and Blob names are global).
    pub prefix: String,
    pub pairs: usize,
    /// Blob service URL when the Azure side is on (the policy points there).
    pub blob_endpoint: Option<String>,
    pub storage_account: String,
    /// Create requests in flight at once.
    pub concurrency: usize,
}

impl Workload {
    pub fn new(prefix: &str, pairs: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            pairs,
            blob_endpoint: None,
            storage_account: "benchaccount".into(),
            concurrency: 16,
        }
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn policy(&self) -> Value {
        let mut azure = json!({
            "storageAccount": self.storage_account,
            "credentials": {"mode": "SasToken", "sasValidity": "7d"}
        });
        if let Some(endpoint) = &self.blob_endpoint {
            azure["endpoint"] = json!(endpoint);
        }
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": POLICY},
            "spec": {"storage": {"azure": azure}}
        })
    }

    pub fn database(&self, i: usize) -> Value {
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": self.name(i)},
            "spec": {
                "instances": 1,
                "storage": {"size": "1Gi"},
                "backup": {"policyRef": {"name": POLICY}}
            }
        })
    }

    pub fn app(&self, i: usize) -> Value {
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "HomelabApp",
            "metadata": {"name": self.name(i)},
            "spec": {
                "image": "registry.example/bench:1.0.0",
                "port": 8080,
                "replicas": 1,
                "database": {
                    "ref": {"name": self.name(i)},
                    "env": [{"name": "DB_HOST", "field": "host"}, {"name": "DB_PASSWORD", "field": "password"}]
                }
            }
        })
    }
}

/// The created CRs, as the apiserver returned them (with their uids).
pub struct Created {
    pub policy: BackupPolicy,
    pub databases: Vec<AppDatabase>,
    pub apps: Vec<HomelabApp>,
}

/// Creates the policy, then every pair with `workload.concurrency` requests in flight.
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
) -> Result<Created> {
    create_range(client, namespace, workload, 0..workload.pairs).await
}

pub async fn create_range(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
    range: std::ops::Range<usize>,
) -> Result<Created> {
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let policy = policies
        .patch(
            POLICY,
            &PatchParams::apply("homelab-bench").force(),
            &Patch::Apply(workload.policy()),
        )
        .await
        .context("applying the BackupPolicy")?;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), namespace);
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), namespace);
    let pairs: Vec<(AppDatabase, HomelabApp)> = stream::iter(range)
        .map(|i| {
            let databases = databases.clone();
            let apps = apps.clone();
            async move {
                let db: AppDatabase = serde_json::from_value(workload.database(i))?;
                let app: HomelabApp = serde_json::from_value(workload.app(i))?;
                let db = databases
                    .create(&PostParams::default(), &db)
                    .await
                    .with_context(|| format!("creating AppDatabase {}", workload.name(i)))?;
                let app = apps
                    .create(&PostParams::default(), &app)
                    .await
                    .with_context(|| format!("creating HomelabApp {}", workload.name(i)))?;
                anyhow::Ok((db, app))
            }
        })
        .buffer_unordered(workload.concurrency.max(1))
        .try_collect()
        .await?;
    let (databases, apps) = pairs.into_iter().unzip();
    Ok(Created {
        policy,
        databases,
        apps,
    })
}

/// The child kinds the control plane serves (the operator skips the others), by
/// `(apiVersion, kind)`.
pub async fn installed_kinds(
    client: &kube::Client,
    namespace: &str,
) -> BTreeMap<(String, String), ApiResource> {
    let mut kinds = BTreeMap::new();
    for kind in homelab_render::child_kinds() {
        if !kind.namespaced {
            continue;
        }
        let resource = kind.api_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        if api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .is_ok()
        {
            kinds.insert((kind.api_version(), kind.kind.to_string()), resource);
        }
    }
    kinds
}

/// The children of one database and one app, rendered as the operator renders them.
pub fn render_pair(
    policy: &BackupPolicy,
    db: &AppDatabase,
    app: &HomelabApp,
    config: &OperatorConfig,
) -> Result<(Vec<DynamicObject>, Vec<DynamicObject>)> {
    let facts = AppDatabaseFacts::new(
        db,
        Some(PolicyFacts {
            name: POLICY.to_string(),
            spec: policy.spec.clone(),
        }),
    );
    let db_children = homelab_render::render_app_database(db, &facts, config)?;
    let app_facts = homelab_render::HomelabAppFacts {
        database: Some(DatabaseFacts::from_app_database(db, config)),
    };
    let app_children = homelab_render::render_homelab_app(app, &app_facts, config)?;
    Ok((db_children, app_children))
}

/// `(kind, name)` of every child the created CRs should have, among installed kinds.
pub fn expected_children(
    created: &Created,
    config: &OperatorConfig,
    kinds: &BTreeMap<(String, String), ApiResource>,
) -> Result<BTreeSet<(String, String)>> {
    let mut expected = BTreeSet::new();
    for (db, app) in created.databases.iter().zip(&created.apps) {
        let (a, b) = render_pair(&created.policy, db, app, config)?;
        for object in a.iter().chain(&b) {
            let (api_version, kind) = type_of(object);
            if kinds.contains_key(&(api_version, kind.clone())) {
                expected.insert((kind, object.metadata.name.clone().unwrap_or_default()));
            }
        }
    }
    Ok(expected)
}

pub fn type_of(object: &DynamicObject) -> (String, String) {
    object
        .types
        .as_ref()
        .map(|t| (t.api_version.clone(), t.kind.clone()))
        .unwrap_or_default()
}

/// The floor: creates the same CRs in `namespace` (no operator watches it), then applies exactly
/// the children the operator would, `concurrency` databases and `concurrency` apps at once, each
/// one's children together, as the operator's reconciles do. Returns the time from the first
/// create to the last applied child, and the number of children applied.
pub async fn floor(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
    config: &OperatorConfig,
    kinds: &BTreeMap<(String, String), ApiResource>,
) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let created = create(client, namespace, workload).await?;
    let kinds = Arc::new(kinds.clone());
    let mut db_jobs = Vec::new();
    let mut app_jobs = Vec::new();
    for (db, app) in created.databases.iter().zip(&created.apps) {
        let (a, b) = render_pair(&created.policy, db, app, config)?;
        db_jobs.push(a);
        app_jobs.push(b);
    }
    let apply_all = |jobs: Vec<Vec<DynamicObject>>| {
        let kinds = kinds.clone();
        async move {
            stream::iter(jobs)
                .map(|objects| {
                    let kinds = kinds.clone();
                    async move {
                        let applies = objects.iter().filter_map(|object| {
                            let resource = kinds.get(&type_of(object))?;
                            let api: Api<DynamicObject> =
                                Api::namespaced_with(client.clone(), namespace, resource);
                            let name = object.metadata.name.clone().unwrap_or_default();
                            Some(async move {
                                api.patch(
                                    &name,
                                    &PatchParams::apply("homelab-bench-floor").force(),
                                    &Patch::Apply(object),
                                )
                                .await
                                .with_context(|| format!("applying {name}"))
                            })
                        });
                        let results = futures::future::join_all(applies).await;
                        let count = results.len();
                        for result in results {
                            result?;
                        }
                        anyhow::Ok(count)
                    }
                })
                .buffer_unordered(workload.concurrency.max(1))
                .try_fold(0usize, |sum, n| async move { Ok(sum + n) })
                .await
        }
    };
    let (a, b) = tokio::try_join!(apply_all(db_jobs), apply_all(app_jobs))?;
    Ok((start.elapsed(), a + b))
}
