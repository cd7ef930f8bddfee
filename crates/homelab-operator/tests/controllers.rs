//! The controllers against the real control plane (kube-apiserver, etcd and the garbage
//! collector of kube-controller-manager). CloudNativePG, External Secrets Operator and the
//! kubelet cannot run here, so where a test needs their part it writes their status the way
//! they do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use homelab_api::{AppDatabase, HomelabApp, naming};
use homelab_testenv::TestEnv;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::*;

const CNPG: &str = "postgresql.cnpg.io/v1";
const BARMAN: &str = "barmancloud.cnpg.io/v1";
const ESO: &str = "external-secrets.io/v1";

async fn setup(prefix: &str) -> (kube::Client, String) {
    let env = TestEnv::get().await;
    let client = env.client().await.expect("client");
    let namespace = env.namespace(prefix).await.expect("namespace");
    (client, namespace)
}

async fn wait_exists(
    client: &kube::Client,
    ns: &str,
    api_version: &str,
    kind: &str,
    name: &str,
) -> kube::api::DynamicObject {
    let api = dynamic_api(client, ns, api_version, kind);
    eventually(&format!("{kind} {name}"), WAIT, || {
        let api = api.clone();
        let name = name.to_string();
        async move { api.get_opt(&name).await.ok().flatten() }
    })
    .await
}

async fn ready_condition<K>(api: &Api<K>, name: &str) -> Option<(String, String)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let object = api.get_opt(name).await.ok()??;
    let value = serde_json::to_value(&object).ok()?;
    let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
    ))
}

/// Waits until `name` reports `Ready=False` with `reason`.
async fn wait_ready_false<K>(api: &Api<K>, name: &str, reason: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    eventually(what, WAIT, || async move {
        let (status, found) = ready_condition(api, name).await?;
        (status == "False" && found == reason).then_some(())
    })
    .await;
}

#[tokio::test]
async fn examples_converge_into_owned_children() {
    let (client, ns) = setup("converge").await;
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "linkding.yaml").await;
    apply_example(&client, &ns, "n8n.yaml").await;

    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
    let db = databases.get("linkding").await.unwrap();
    let app = apps.get("linkding").await.unwrap();

    // Data-bearing children are kept outside garbage collection under Retain.
    let cluster = wait_exists(&client, &ns, CNPG, "Cluster", "linkding-db-cnpg-v1").await;
    assert!(
        cluster.owner_references().is_empty(),
        "Retain: the Cluster must have no ownerReference"
    );
    assert_eq!(
        cluster
            .annotations()
            .get(naming::ANNOTATION_OWNER)
            .map(String::as_str),
        Some("AppDatabase/linkding")
    );
    // So are the Secrets the retained cluster keeps using.
    for (api_version, kind, name) in [
        (BARMAN, "ObjectStore", "linkding-db-backup"),
        (ESO, "ExternalSecret", "linkding-db-credentials"),
        (ESO, "ExternalSecret", "linkding-db-backup-sas"),
    ] {
        let child = wait_exists(&client, &ns, api_version, kind, name).await;
        assert!(
            child.owner_references().is_empty(),
            "Retain: {kind} {name} must have no ownerReference"
        );
        assert_eq!(
            child
                .annotations()
                .get(naming::ANNOTATION_OWNER)
                .map(String::as_str),
            Some("AppDatabase/linkding")
        );
    }

    for (api_version, kind, name) in [(CNPG, "ScheduledBackup", "linkding-db-backup")] {
        let child = wait_exists(&client, &ns, api_version, kind, name).await;
        let owner = &child.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("AppDatabase", db.uid().unwrap().as_str()),
            "{kind} {name}"
        );
    }
    for (api_version, kind, name) in [
        ("apps/v1", "Deployment", "linkding"),
        ("v1", "Service", "linkding"),
        ("networking.k8s.io/v1", "Ingress", "linkding"),
        ("networking.k8s.io/v1", "NetworkPolicy", "linkding"),
        (ESO, "ExternalSecret", "linkding-db"),
        (ESO, "ExternalSecret", "linkding-secrets"),
    ] {
        let child = wait_exists(&client, &ns, api_version, kind, name).await;
        let owner = &child.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("HomelabApp", app.uid().unwrap().as_str()),
            "{kind} {name}"
        );
    }
    // The operator works as its ServiceAccount, with the ClusterRole of deploy/base.
    assert_eq!(
        audit_creators(&ns, "deployments").await,
        vec![format!(
            "system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
        )]
    );

    // n8n asks for a pooler and a Gateway API route.
    wait_exists(&client, &ns, CNPG, "Pooler", "n8n-db-pooler").await;
    wait_exists(
        &client,
        &ns,
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "n8n",
    )
    .await;

    // Every child the operator wrote is applied server-side under its one field manager, and
    // no other writer (no Update by the operator) owns a field of it.
    let selector = format!("{}={}", naming::LABEL_MANAGED_BY, naming::MANAGED_BY);
    let mut checked = 0;
    for (api_version, kind) in [
        (CNPG, "Cluster"),
        (CNPG, "ScheduledBackup"),
        (CNPG, "Pooler"),
        (BARMAN, "ObjectStore"),
        (ESO, "ExternalSecret"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ] {
        let children = dynamic_api(&client, &ns, api_version, kind)
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap();
        for child in children {
            let name = child.name_any();
            let managers: Vec<(String, String)> = child
                .metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .map(|m| {
                    (
                        m.manager.unwrap_or_default(),
                        m.operation.unwrap_or_default(),
                    )
                })
                .collect();
            assert!(
                managers
                    .iter()
                    .any(|(m, op)| m == homelab_api::naming::FIELD_MANAGER && op == "Apply"),
                "{kind} {name} is not applied by field manager {}: {managers:?}",
                homelab_api::naming::FIELD_MANAGER
            );
            assert!(
                !managers
                    .iter()
                    .any(|(m, op)| m == homelab_api::naming::FIELD_MANAGER && op != "Apply"),
                "{kind} {name} has fields the operator wrote other than by apply: {managers:?}"
            );
            checked += 1;
        }
    }
    // linkding and n8n: two Clusters, ScheduledBackups, ObjectStores, Deployments, Services
    // and NetworkPolicies at least, and their ExternalSecrets.
    assert!(
        checked >= 14,
        "only {checked} children carry the managed-by label"
    );

    // status.databaseHost is the host the Deployment connects to: the pooler for n8n.
    for (app, variable) in [("linkding", "LD_DB_HOST"), ("n8n", "DB_POSTGRESDB_HOST")] {
        let deployment = wait_exists(&client, &ns, "apps/v1", "Deployment", app).await;
        let wired = deployment.data["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == variable)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{app}'s Deployment has no {variable}"));
        let reported = eventually(&format!("{app}'s status.databaseHost"), WAIT, || {
            let apps = apps.clone();
            async move { apps.get(app).await.ok()?.status?.database_host }
        })
        .await;
        assert_eq!(reported, wired, "{app}: status.databaseHost");
    }
    assert_eq!(
        apps.get("n8n")
            .await
            .unwrap()
            .status
            .unwrap()
            .database_host
            .as_deref(),
        Some(naming::pooler_host("n8n", &ns).as_str())
    );

    // Status reports the generation it describes.
    eventually("observedGeneration on every resource", WAIT, || {
        let databases = databases.clone();
        let apps = apps.clone();
        async move {
            for name in ["linkding", "n8n"] {
                let db = databases.get(name).await.ok()?;
                if db.status.as_ref()?.observed_generation != db.metadata.generation {
                    return None;
                }
                let app = apps.get(name).await.ok()?;
                if app.status.as_ref()?.observed_generation != app.metadata.generation {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn changes_deletions_and_hand_edits_are_reconciled() {
    let (client, ns) = setup("drift").await;
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "linkding.yaml").await;
    let deployments = dynamic_api(&client, &ns, "apps/v1", "Deployment");
    wait_exists(&client, &ns, "apps/v1", "Deployment", "linkding").await;

    // A spec change reaches the child.
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
    apps.patch(
        "linkding",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "sissbruecker/linkding:1.42.0"}})),
    )
    .await
    .unwrap();
    eventually("the new image in the Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("linkding").await.ok()?;
            (d.data.pointer("/spec/template/spec/containers/0/image")?
                == "sissbruecker/linkding:1.42.0")
                .then_some(())
        }
    })
    .await;

    // A deleted child comes back.
    let services = dynamic_api(&client, &ns, "v1", "Service");
    let before = services.get("linkding").await.unwrap().uid();
    services
        .delete("linkding", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Service to be re-created", WAIT, || {
        let services = services.clone();
        let before = before.clone();
        async move {
            let s = services.get_opt("linkding").await.ok()??;
            (s.uid() != before).then_some(())
        }
    })
    .await;

    // A child that is no longer wanted is deleted: the app moves from an Ingress to a route.
    apps.patch(
        "linkding",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ingress": null,
            "route": {"gateway": {"name": "homelab"}, "hostname": "links.example.com"}}})),
    )
    .await
    .unwrap();
    let ingresses = dynamic_api(&client, &ns, "networking.k8s.io/v1", "Ingress");
    eventually("the Ingress to be deleted", WAIT, || {
        let ingresses = ingresses.clone();
        async move {
            ingresses
                .get_opt("linkding")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    wait_exists(
        &client,
        &ns,
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "linkding",
    )
    .await;

    // A hand edit of an owned field is reverted.
    deployments
        .patch(
            "linkding",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually("replicas put back to 1", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("linkding").await.ok()?;
            (d.data.pointer("/spec/replicas")? == 1).then_some(())
        }
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn status_follows_what_the_children_report() {
    let (client, ns) = setup("status").await;
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "linkding.yaml").await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);

    wait_exists(&client, &ns, CNPG, "Cluster", "linkding-db-cnpg-v1").await;
    eventually("AppDatabase not ready before CNPG reports", WAIT, || {
        let databases = databases.clone();
        async move {
            let (status, _) = ready_condition(&databases, "linkding").await?;
            (status != "True").then_some(())
        }
    })
    .await;

    // Play CloudNativePG and External Secrets Operator.
    let now = jiff::Timestamp::now().to_string();
    let cluster_status = |ready: bool| {
        json!({"status": {
            "phase": if ready { "Cluster in healthy state" } else { "Failing over" },
            "readyInstances": if ready { 1 } else { 0 },
            "instances": 1,
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                "reason": if ready {"ClusterIsReady"} else {"ClusterIsNotReady"},
                "message": if ready {"Cluster is Ready"} else {"Cluster Is Not Ready"},
                "lastTransitionTime": now}]
        }})
    };
    let synced = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
        "message": "secret synced", "lastTransitionTime": now}]}});
    let clusters = dynamic_api(&client, &ns, CNPG, "Cluster");
    clusters
        .patch_status(
            "linkding-db-cnpg-v1",
            &PatchParams::default(),
            &Patch::Merge(cluster_status(true)),
        )
        .await
        .unwrap();
    let secrets = dynamic_api(&client, &ns, ESO, "ExternalSecret");
    for name in [
        "linkding-db-credentials",
        "linkding-db-backup-sas",
        "linkding-db",
        "linkding-secrets",
    ] {
        wait_exists(&client, &ns, ESO, "ExternalSecret", name).await;
        secrets
            .patch_status(name, &PatchParams::default(), &Patch::Merge(synced.clone()))
            .await
            .unwrap();
    }
    eventually("AppDatabase Ready=True", WAIT, || {
        let databases = databases.clone();
        async move { (ready_condition(&databases, "linkding").await?.0 == "True").then_some(()) }
    })
    .await;

    // Play the Deployment controller.
    let deployments = dynamic_api(&client, &ns, "apps/v1", "Deployment");
    deployments
        .patch_status(
            "linkding",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 1, "availableReplicas": 1, "readyReplicas": 1}}),
            ),
        )
        .await
        .unwrap();
    eventually("HomelabApp Ready=True", WAIT, || {
        let apps = apps.clone();
        async move { (ready_condition(&apps, "linkding").await?.0 == "True").then_some(()) }
    })
    .await;

    // The cluster fails: both resources say so, with the reason.
    clusters
        .patch_status(
            "linkding-db-cnpg-v1",
            &PatchParams::default(),
            &Patch::Merge(cluster_status(false)),
        )
        .await
        .unwrap();
    wait_ready_false(
        &databases,
        "linkding",
        "ClusterNotHealthy",
        "AppDatabase Ready=False with the cluster's reason",
    )
    .await;
    assert_argocd_shows(&client, &ns, "AppDatabase", "linkding", "ClusterNotHealthy").await;
    wait_ready_false(
        &apps,
        "linkding",
        "DatabaseNotReady",
        "HomelabApp Ready=False because its database is not ready",
    )
    .await;
    assert_argocd_shows(&client, &ns, "HomelabApp", "linkding", "DatabaseNotReady").await;

    // The cluster recovers, and ESO reports the app's own secrets failing: the app says so.
    clusters
        .patch_status(
            "linkding-db-cnpg-v1",
            &PatchParams::default(),
            &Patch::Merge(cluster_status(true)),
        )
        .await
        .unwrap();
    let failing = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
        "reason": "SecretSyncedError", "message": "could not get secret data from provider",
        "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
    secrets
        .patch_status(
            "linkding-secrets",
            &PatchParams::default(),
            &Patch::Merge(failing),
        )
        .await
        .unwrap();
    wait_ready_false(
        &apps,
        "linkding",
        "SecretsNotSynced",
        "HomelabApp Ready=False because its secrets do not sync",
    )
    .await;
    assert_argocd_shows(&client, &ns, "HomelabApp", "linkding", "SecretsNotSynced").await;
    operator.stop().await;
}

async fn deletion_case(policy: &str) -> bool {
    let (client, ns) = setup(&format!("delete-{}", policy.to_lowercase())).await;
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": "keepme"},
               "spec": {"deletionPolicy": policy, "backup": {"policyRef": {"name": "daily"}}}}),
    )
    .await;
    wait_exists(&client, &ns, CNPG, "Cluster", "keepme-db-cnpg-v1").await;
    wait_exists(&client, &ns, CNPG, "ScheduledBackup", "keepme-db-backup").await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    // Without the Azure side nothing lives outside garbage collection: no finalizer.
    let reconciled = eventually("the AppDatabase's status", WAIT, || {
        let databases = databases.clone();
        async move {
            let db = databases.get("keepme").await.ok()?;
            (db.status.as_ref()?.observed_generation == db.metadata.generation).then_some(db)
        }
    })
    .await;
    assert!(
        !reconciled
            .finalizers()
            .iter()
            .any(|f| f == naming::FINALIZER),
        "an AppDatabase without the Azure side needs no finalizer: {:?}",
        reconciled.finalizers()
    );
    databases
        .delete("keepme", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the AppDatabase to be gone", WAIT, || {
        let databases = databases.clone();
        async move {
            databases
                .get_opt("keepme")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    // Owned children go with the garbage collector; wait for that to prove it has run.
    let scheduled = dynamic_api(&client, &ns, CNPG, "ScheduledBackup");
    eventually(
        "the garbage collector to remove the ScheduledBackup",
        Duration::from_secs(60),
        || {
            let scheduled = scheduled.clone();
            async move {
                scheduled
                    .get_opt("keepme-db-backup")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    let clusters = dynamic_api(&client, &ns, CNPG, "Cluster");
    // Give the collector a few more seconds to (not) act on the cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exists = clusters
        .get_opt("keepme-db-cnpg-v1")
        .await
        .unwrap()
        .is_some();
    let store_exists = dynamic_api(&client, &ns, BARMAN, "ObjectStore")
        .get_opt("keepme-db-backup")
        .await
        .unwrap()
        .is_some();
    assert_eq!(exists, store_exists, "Cluster and ObjectStore share a fate");
    operator.stop().await;
    exists
}

#[tokio::test]
async fn deleting_with_retain_keeps_the_cluster() {
    assert!(
        deletion_case("Retain").await,
        "Retain must keep the Cluster"
    );
}

#[tokio::test]
async fn deleting_with_delete_removes_the_cluster() {
    assert!(
        !deletion_case("Delete").await,
        "Delete must remove the Cluster"
    );
}

#[tokio::test]
async fn a_restart_after_convergence_writes_nothing() {
    let (client, ns) = setup("steady").await;
    let operator = Operator::start(&ns).await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    for example in [
        "linkding.yaml",
        "commafeed.yaml",
        "wallabag.yaml",
        "n8n.yaml",
        "listmonk.yaml",
    ] {
        apply_example(&client, &ns, example).await;
    }
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
    eventually("all five pairs to report their generation", WAIT, || {
        let databases = databases.clone();
        let apps = apps.clone();
        async move {
            let dbs = databases.list(&Default::default()).await.ok()?;
            let all = apps.list(&Default::default()).await.ok()?;
            let done = dbs.items.len() == 5
                && all.items.len() == 5
                && dbs.items.iter().all(|d| {
                    d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
                })
                && all.items.iter().all(|a| {
                    a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
                });
            done.then_some(())
        }
    })
    .await;
    // Converged means quiet: no status write and no apply for five seconds in a row.
    let mut last = (Some(-1.0), Some(-1.0));
    let mut quiet = 0;
    let start = std::time::Instant::now();
    while quiet < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the operator never went quiet"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (
            operator
                .metric("homelab_operator_status_patches_total", "")
                .await,
            operator
                .metric(
                    "homelab_operator_child_applies_total",
                    "outcome=\"applied\"",
                )
                .await,
        );
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    operator.stop().await;
    let offset = audit_offset().await;
    let operator = Operator::start(&ns).await;
    // The restarted operator must have reconciled every resource (and found it up to date).
    eventually(
        "the restarted operator to reconcile all resources",
        WAIT,
        || {
            let operator = &operator;
            async move {
                let unchanged = operator
                    .metric(
                        "homelab_operator_child_applies_total",
                        "outcome=\"unchanged\"",
                    )
                    .await
                    .unwrap_or(0.0);
                let reconciles = operator
                    .metric("homelab_operator_reconciles_total", "kind=\"HomelabApp\"")
                    .await
                    .unwrap_or(0.0);
                (unchanged >= 40.0 && reconciles >= 5.0).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = audit_writes(&ns, offset).await;
    assert!(
        writes.is_empty(),
        "a restart after convergence wrote: {writes:#?}"
    );
    operator.stop().await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let (client, ns) = setup("leader").await;
    let lease_args = ["--leader-election=true", "--lease-duration-seconds=3"];
    let ns_arg = format!("--leader-election-namespace={ns}");
    grant_leases(&ns).await;
    let first = Operator::start_with(
        &ns,
        &[lease_args[0], lease_args[1], &ns_arg, "--identity=first"],
    )
    .await;
    let second = Operator::start_with(
        &ns,
        &[lease_args[0], lease_args[1], &ns_arg, "--identity=second"],
    )
    .await;
    let (leader, standby) = eventually("one leader", WAIT, || {
        let first = &first;
        let second = &second;
        async move {
            let a = first.metric("homelab_operator_leader", "").await;
            let b = second.metric("homelab_operator_leader", "").await;
            match (a, b) {
                (Some(1.0), Some(0.0)) => Some((first, second)),
                (Some(0.0), Some(1.0)) => Some((second, first)),
                _ => None,
            }
        }
    })
    .await;
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "listmonk.yaml").await;
    wait_exists(&client, &ns, "apps/v1", "Deployment", "listmonk").await;
    // The leader acted in this window, and the standby answers (it reports itself not leading):
    // a standby without a reconcile series has reconciled nothing.
    assert!(
        leader
            .metric("homelab_operator_reconciles_total", "")
            .await
            .is_some_and(|n| n > 0.0)
    );
    assert_eq!(
        standby.metric("homelab_operator_leader", "").await,
        Some(0.0)
    );
    assert_eq!(
        standby
            .metric("homelab_operator_reconciles_total", "")
            .await
            .unwrap_or(0.0),
        0.0,
        "the standby must not reconcile"
    );

    let standby_port = standby.http_port;
    let (leader, standby) = if std::ptr::eq(leader, &first) {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(standby.http_port, standby_port);
    leader.stop().await;
    eventually("the standby to take over", Duration::from_secs(30), || {
        let standby = &standby;
        async move { (standby.metric("homelab_operator_leader", "").await == Some(1.0)).then_some(()) }
    })
    .await;
    // The new leader acts on changes.
    let apps: Api<HomelabApp> = Api::namespaced(client.clone(), &ns);
    apps.patch(
        "listmonk",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let deployments = dynamic_api(&client, &ns, "apps/v1", "Deployment");
    eventually("the new leader to scale the Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("listmonk").await.ok()?;
            (d.data.pointer("/spec/replicas")? == 2).then_some(())
        }
    })
    .await;
    standby.stop().await;
}

/// A database asked to grow on a storage class that cannot expand volumes keeps its size and
/// says why (MicroK8s' `microk8s-hostpath` is such a class); on one that can, it grows.
#[tokio::test]
async fn growing_a_database_on_a_class_that_cannot_expand_is_refused_clearly() {
    let (client, ns) = setup("volumes").await;
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    let fixed = format!("{ns}-fixed");
    let growing = format!("{ns}-growing");
    for (name, expand) in [(&fixed, false), (&growing, true)] {
        let class: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "microk8s.io/hostpath",
            "allowVolumeExpansion": expand,
        }))
        .unwrap();
        classes
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&class),
            )
            .await
            .unwrap();
    }
    let operator = Operator::start(&ns).await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    for (app, class) in [("fixed", &fixed), ("growing", &growing)] {
        apply_value(
            &client,
            &ns,
            json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
                "metadata": {"name": app},
                "spec": {"storage": {"size": "1Gi", "storageClass": class}}}),
        )
        .await;
        wait_exists(&client, &ns, CNPG, "Cluster", &naming::cluster(app)).await;
        databases
            .patch(
                app,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storage": {"size": "2Gi"}}})),
            )
            .await
            .unwrap();
    }

    let condition = eventually(
        "VolumesReady=False on the fixed-size database",
        WAIT,
        || {
            let databases = databases.clone();
            async move {
                let db = serde_json::to_value(databases.get("fixed").await.ok()?).ok()?;
                let generation = db["metadata"]["generation"].as_i64()?;
                (db["status"]["observedGeneration"].as_i64()? == generation).then_some(())?;
                db["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "VolumesReady")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "StorageCannotExpand");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.storage.size asks for 2Gi")
            && message.contains(&format!(
                "StorageClass {fixed} does not allow volume expansion"
            ))
            && message.contains("keeps 1Gi"),
        "{message}"
    );
    assert_eq!(
        ready_condition(&databases, "fixed").await,
        Some(("False".to_string(), "StorageCannotExpand".to_string()))
    );
    assert_argocd_shows(&client, &ns, "AppDatabase", "fixed", "StorageCannotExpand").await;
    let clusters = dynamic_api(&client, &ns, CNPG, "Cluster");
    let fixed_cluster = clusters.get(&naming::cluster("fixed")).await.unwrap();
    assert_eq!(
        fixed_cluster.data.pointer("/spec/storage/size"),
        Some(&json!("1Gi"))
    );

    // The class that can expand lets the same change through, with no such condition.
    eventually("the growing database's Cluster at 2Gi", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get(&naming::cluster("growing")).await.ok()?;
            (c.data.pointer("/spec/storage/size")? == "2Gi").then_some(())
        }
    })
    .await;
    let growing_db = serde_json::to_value(databases.get("growing").await.unwrap()).unwrap();
    assert!(
        growing_db["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["type"] != "VolumesReady")),
        "{growing_db}"
    );
    operator.stop().await;
    for name in [&fixed, &growing] {
        let _ = classes.delete(name, &DeleteParams::default()).await;
    }
}
