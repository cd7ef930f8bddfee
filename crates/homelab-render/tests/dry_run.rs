//! Every object rendered from every example (and from a set of variants that exercise the other
//! branches: restores, workload identity, `Delete`, secret files, drills and their verification
//! Jobs, on-demand backups) is
//! accepted by a real kube-apiserver with the pinned upstream CRDs, through a server-side apply
//! dry run with strict field validation, so an unknown or misspelled field fails.

use anyhow::{Context, Result, bail};
use homelab_api::{AppDatabase, BackupPolicy, naming};
use homelab_render::manifest::{Document, Resource, parse_manifests, render_documents};
use homelab_render::{
    DrillFacts, OperatorConfig, kinds, render_drill_verification, render_on_demand_backup,
    render_restore_drill,
};
use homelab_testenv::TestEnv;
use kube::api::{Api, DynamicObject, Patch, PatchParams};

/// Resources that together reach the renderers' other branches.
const VARIANTS: &str = r#"
apiVersion: homelab.io/v1alpha1
kind: BackupPolicy
metadata: {name: identity}
spec:
  schedule: "*/30 2-4 * jan-jun mon-fri"
  retention: 4w
  walArchiveTimeout: 30s
  walCompression: zstd
  suspend: true
  storage:
    azure:
      storageAccount: othersaccount
      endpoint: "http://azurite.test:10000/othersaccount"
      containerTemplate: "pg-{app}"
      credentials: {mode: InheritFromAzureAD, clientId: 11111111-1111-1111-1111-111111111111}
---
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {name: wiki}
spec:
  app: wiki-main
  instances: 3
  postgres: {version: 16, parameters: {max_connections: "200", shared_buffers: 256MB}}
  storage: {size: 20Gi, storageClass: fast}
  walStorage: {size: 5Gi}
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 2Gi}}
  database: {name: wikidb, owner: wikiuser}
  credentials:
    keyVaultSecret: wiki-password
    secretStoreRef: {name: local-vault, kind: SecretStore}
  pooler: {instances: 2, poolMode: transaction, maxClientConnections: 500}
  backup: {policyRef: {name: identity}}
  deletionPolicy: Delete
---
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {name: wiki-copy}
spec:
  backup: {policyRef: {name: daily}}
  restore:
    from: {appDatabase: wiki}
    targetTime: "2026-11-20T13:45:00Z"
  monitoring: {podMonitor: false}
---
apiVersion: homelab.io/v1alpha1
kind: AppDatabase
metadata: {name: reborn}
spec:
  backup: {policyRef: {name: daily}}
  restore:
    from:
      archive: {policyRef: {name: daily}, container: reborn-db-clean, serverName: reborn-db-cnpg-v1}
---
apiVersion: homelab.io/v1alpha1
kind: HomelabApp
metadata: {name: wiki}
spec:
  image: ghcr.io/example/wiki:2.0
  replicas: 2
  port: 3000
  command: [/bin/wiki]
  args: [serve, --port, "3000"]
  healthCheck: {path: /healthz, port: 3001, initialDelaySeconds: 10}
  database:
    ref: {name: wiki}
    usePooler: true
    env:
      - {name: DATABASE_URL, field: uri}
      - {name: JDBC_URL, field: jdbcUrl}
  secrets:
    - {name: SESSION_SECRET, keyVaultSecret: wiki-session}
    - {name: tls.crt, keyVaultSecret: wiki-crt, mountPath: /etc/wiki/tls}
    - {name: tls.key, keyVaultSecret: wiki-key, mountPath: /etc/wiki/tls}
  secretStoreRef: {name: local-vault, kind: SecretStore}
  persistence:
    - {name: uploads, mountPath: /data/uploads, size: 5Gi, storageClass: fast}
  networkPolicy:
    ingressNamespace: traefik
    egress: [{cidr: 10.0.0.0/8}, {cidr: "::/0", ports: [443, 8443]}]
  security: {runAsUser: 1000, fsGroup: 1000}
  ingress:
    host: wiki.example.com
    path: /wiki
    className: traefik
    tls: {clusterIssuer: letsencrypt-staging, secretName: wildcard-example-com}
---
apiVersion: homelab.io/v1alpha1
kind: HomelabApp
metadata: {name: static}
spec:
  image: nginxinc/nginx-unprivileged:1.29
  networkPolicy: {enabled: false}
  ingress: {host: static.example.com, tls: {enabled: false}}
"#;

fn examples() -> Result<Vec<(String, String)>> {
    let dir = homelab_testenv::repo_root().join("examples");
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            inputs.push((path.display().to_string(), std::fs::read_to_string(&path)?));
        }
    }
    inputs.sort();
    inputs.push(("variants".to_string(), VARIANTS.to_string()));
    Ok(inputs)
}

fn find<'a, T>(
    documents: &'a [Document],
    pick: impl Fn(&'a Resource) -> Option<&'a T>,
) -> Result<&'a T> {
    documents
        .iter()
        .find_map(|d| pick(&d.resource))
        .context("resource missing from the inputs")
}

/// Everything the operator can create for the inputs, placed in `namespace`.
fn render_all(namespace: &str) -> Result<Vec<DynamicObject>> {
    let mut documents = parse_manifests(&examples()?)?;
    for (i, document) in documents.iter_mut().enumerate() {
        let meta = document.resource.metadata_mut();
        meta.namespace = Some(namespace.to_string());
        meta.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    }
    let config = OperatorConfig::default();
    let mut objects = render_documents(&documents, &config)?;

    let policy: &BackupPolicy = find(&documents, |r| match r {
        Resource::BackupPolicy(p) if p.metadata.name.as_deref() == Some("daily") => {
            Some(p.as_ref())
        }
        _ => None,
    })?;
    for document in &documents {
        if let Resource::AppDatabase(database) = &document.resource {
            let database: &AppDatabase = database;
            let facts = DrillFacts {
                sequence: 123_456,
                server_name: naming::cluster(database.app_name()),
                source_image: None,
            };
            let drill = render_restore_drill(policy, database, &facts, &config)?;
            objects.push(render_drill_verification(
                policy,
                database,
                &facts,
                drill.metadata.name.as_deref().unwrap_or_default(),
                &config,
            )?);
            objects.push(drill);
            objects.push(render_on_demand_backup(
                database,
                "2026-11-26T06:00:00Z",
                &config,
            )?);
        }
    }
    Ok(objects)
}

async fn dry_run_apply(
    client: &kube::Client,
    namespace: &str,
    object: &DynamicObject,
) -> Result<(), String> {
    let types = object.types.clone().unwrap_or_default();
    let Some(kind) = kinds::find(&types.api_version, &types.kind) else {
        return Err(format!(
            "{}/{} is not in the child kinds table",
            types.api_version, types.kind
        ));
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
    let params = PatchParams::apply(naming::FIELD_MANAGER)
        .dry_run()
        .validation_strict();
    let name = object.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {name}: {e}", types.kind))
}

#[tokio::test]
async fn every_rendered_object_passes_a_strict_server_side_dry_run() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("render-dry-run").await?;
    let objects = render_all(&namespace)?;
    assert!(
        objects.len() > 80,
        "only {} objects rendered",
        objects.len()
    );

    let mut failures = Vec::new();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for object in &objects {
        kinds_seen.insert(object.types.clone().unwrap_or_default().kind);
        if let Err(failure) = dry_run_apply(&client, &namespace, object).await {
            failures.push(failure);
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} objects were refused:\n{}",
            failures.len(),
            objects.len(),
            failures.join("\n")
        );
    }
    let every_kind: std::collections::BTreeSet<String> = kinds::child_kinds()
        .iter()
        .map(|k| k.kind.to_string())
        .collect();
    assert_eq!(kinds_seen, every_kind, "every child kind is exercised");
    eprintln!(
        "{} objects of {} kinds accepted",
        objects.len(),
        kinds_seen.len()
    );
    Ok(())
}

/// The check above is only worth something if strict validation refuses unknown fields.
#[tokio::test]
async fn strict_dry_run_refuses_a_misspelled_field() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("render-strict").await?;
    let mut objects = render_all(&namespace)?;
    let Some(cluster) = objects
        .iter_mut()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Cluster"))
    else {
        bail!("no Cluster rendered");
    };
    cluster.data["spec"]["instancez"] = serde_json::json!(2);
    match dry_run_apply(&client, &namespace, cluster).await {
        Ok(()) => bail!("the apiserver accepted spec.instancez"),
        Err(message) => {
            assert!(message.contains("instancez"), "{message}");
            Ok(())
        }
    }
}
