//! The operator against a control plane of its own that lacks CloudNativePG and the Barman Cloud
//! Plugin at first, and that holds an AppDatabase stored under an older, looser schema: the
//! operator reports what is missing (conditions and /readyz) instead of failing, picks the CRDs
//! up once they are installed, and one unreadable resource does not stop the others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use homelab_api::{AppDatabase, HomelabApp};
use homelab_testenv::{Settings, TestEnv, crds};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::*;

fn is_cnpg(name: &str) -> bool {
    name.ends_with(".postgresql.cnpg.io") || name.ends_with(".barmancloud.cnpg.io")
}

#[tokio::test]
async fn missing_crds_are_reported_then_picked_up_and_a_malformed_resource_is_isolated() {
    // A control plane with every upstream CRD except CloudNativePG's and the plugin's, and with
    // our own CRDs.
    let mut settings = Settings::from_env()
        .await
        .expect("test environment settings");
    let upstream = homelab_testenv::cluster::upstream_crd_dir();
    let dir = tempfile_dir();
    for manifest in crds::load_dir(&upstream).unwrap() {
        if !is_cnpg(&manifest.name) {
            let file = dir.join(format!("{}.yaml", manifest.name));
            std::fs::write(&file, serde_json::to_string(&manifest.body).unwrap()).unwrap();
        }
    }
    settings.crd_dirs = vec![dir.clone(), homelab_testenv::repo_root().join("crds")];
    let env = TestEnv::start_with(&settings)
        .await
        .expect("private control plane");
    let client = env.client().await.unwrap();
    let ns = env.namespace("resilience").await.unwrap();

    // An AppDatabase stored while the schema was looser: `instances` is a string.
    let real_crd =
        crds::load_file(&homelab_testenv::repo_root().join("crds/homelab.io_appdatabases.yaml"))
            .unwrap();
    let mut loose = real_crd[0].body.clone();
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                       "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    });
    let loose = crds::CrdManifest {
        body: loose,
        ..real_crd[0].clone()
    };
    crds::install(&client, &[loose]).await.unwrap();
    let raw: Api<kube::api::DynamicObject> =
        dynamic_homelab(&client, &ns, "AppDatabase", "appdatabases");
    raw.patch(
        "broken",
        &PatchParams::apply("test").force(),
        &Patch::Apply(
            json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": "broken"}, "spec": {"instances": "three"}}),
        ),
    )
    .await
    .unwrap();
    crds::install(&client, &real_crd).await.unwrap();

    let operator = Operator::start_on(&env, &ns, &["--discovery-interval-seconds=2"]).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "linkding.yaml").await;

    // The database says what is missing and what to install; the app still gets its workload.
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let message = eventually("Ready=False with CRDNotInstalled", WAIT, || {
        let databases = databases.clone();
        async move {
            let db = databases.get("linkding").await.ok()?;
            let ready = db
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.reason == "CRDNotInstalled").then_some(ready.message)
        }
    })
    .await;
    assert!(message.contains("CloudNativePG"), "{message}");
    assert_argocd_shows(&client, &ns, "AppDatabase", "linkding", "CRDNotInstalled").await;
    let deployments = dynamic_api(&client, &ns, "apps/v1", "Deployment");
    eventually("the app's Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("linkding").await.ok()?.map(|_| ()) }
    })
    .await;
    let readyz = http_get(operator.http_port, "/readyz")
        .await
        .unwrap_or_default();
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains("CloudNativePG"), "{readyz}");

    // The unreadable resource gets a Warning Event; the others were reconciled regardless.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually("a Warning Event on the malformed AppDatabase", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                        && e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("InvalidSpec")
                })
                .then_some(())
        }
    })
    .await;

    // Installing CloudNativePG and the plugin is noticed without a restart.
    let cnpg: Vec<_> = crds::load_dir(&upstream)
        .unwrap()
        .into_iter()
        .filter(|m| is_cnpg(&m.name))
        .collect();
    crds::install(&client, &cnpg).await.unwrap();
    let clusters = dynamic_api(&client, &ns, "postgresql.cnpg.io/v1", "Cluster");
    eventually(
        "the Cluster once CloudNativePG is installed",
        Duration::from_secs(60),
        || {
            let clusters = clusters.clone();
            async move {
                clusters
                    .get_opt("linkding-db-cnpg-v1")
                    .await
                    .ok()?
                    .map(|_| ())
            }
        },
    )
    .await;
    eventually("/readyz to turn ready", WAIT, || {
        let port = operator.http_port;
        async move {
            let body = http_get(port, "/readyz").await?;
            body.starts_with("HTTP/1.1 200").then_some(())
        }
    })
    .await;
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
    assert!(apps.get("linkding").await.unwrap().status.is_some());
    operator.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "homelab-resilience-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn dynamic_homelab(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    plural: &str,
) -> Api<kube::api::DynamicObject> {
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("homelab.io", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), ns, &resource)
}
