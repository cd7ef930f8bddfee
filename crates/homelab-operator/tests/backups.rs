//! Restore and proof against the real control plane (kube-apiserver, etcd and the garbage
//! collector of kube-controller-manager): point-in-time restore, on-demand backups, backup health
//! and restore drills.
//!
//! CloudNativePG and its Barman Cloud Plugin cannot run here (there is no kubelet), so these tests
//! play their part by writing status the way they do: the plugin's `ObjectStore`
//! `status.serverRecoveryWindow[<serverName>]`, a `Backup`'s `status.phase` (`completed`/`failed`),
//! `startedAt`, `stoppedAt` and `error`, and a `Cluster`'s `status.conditions` (`Ready`,
//! `ContinuousArchiving`) and `phase`. A drill's verification Job cannot run either: its pod, with
//! the termination message the verification script writes, is played too (the real Job runs in
//! the end-to-end tests). Everything the operator writes is validated by the real apiserver
//! against the upstream CRDs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use homelab_api::{AppDatabase, BackupPolicy, naming};
use homelab_testenv::TestEnv;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;

const CNPG: &str = "postgresql.cnpg.io/v1";
const BARMAN: &str = "barmancloud.cnpg.io/v1";

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
) -> DynamicObject {
    let api = dynamic_api(client, ns, api_version, kind);
    eventually(&format!("{kind} {name}"), WAIT, || {
        let api = api.clone();
        let name = name.to_string();
        async move { api.get_opt(&name).await.ok().flatten() }
    })
    .await
}

/// A BackupPolicy `daily` with the given base-backup schedule, WAL bound and drill settings.
async fn policy(client: &kube::Client, ns: &str, schedule: &str, wal: &str, drill: Value) {
    let mut spec = json!({
        "schedule": schedule,
        "walArchiveTimeout": wal,
        "storage": {"azure": {"storageAccount": "homelabbackups"}},
    });
    if !drill.is_null() {
        spec["drill"] = drill;
    }
    apply_value(
        client,
        ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "daily"}, "spec": spec}),
    )
    .await;
}

async fn database(client: &kube::Client, ns: &str, name: &str, extra: Value) {
    let mut spec = json!({"backup": {"policyRef": {"name": "daily"}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    apply_value(
        client,
        ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

fn ago(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds)
}

/// Plays the Barman Cloud Plugin: the recovery window of `server` in the ObjectStore's status.
async fn play_recovery_window(
    client: &kube::Client,
    ns: &str,
    store: &str,
    server: &str,
    first: jiff::Timestamp,
    last_backup: jiff::Timestamp,
) {
    wait_exists(client, ns, BARMAN, "ObjectStore", store).await;
    dynamic_api(client, ns, BARMAN, "ObjectStore")
        .patch_status(
            store,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"serverRecoveryWindow": {server: {
                "firstRecoverabilityPoint": first.to_string(),
                "lastSuccessfulBackupTime": last_backup.to_string(),
            }}}})),
        )
        .await
        .unwrap();
}

/// Plays CloudNativePG: the Cluster's conditions (and phase).
async fn play_cluster_conditions(
    client: &kube::Client,
    ns: &str,
    name: &str,
    phase: &str,
    conditions: Value,
) {
    dynamic_api(client, ns, CNPG, "Cluster")
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "conditions": conditions}})),
        )
        .await
        .unwrap();
}

fn ready_condition(ready: bool, at: jiff::Timestamp) -> Value {
    json!({"type": "Ready", "status": if ready {"True"} else {"False"},
           "reason": if ready {"ClusterIsReady"} else {"ClusterIsNotReady"},
           "message": "reported by the test", "lastTransitionTime": at.to_string()})
}

/// `(status, reason)` of a condition in a typed resource's status.
async fn condition<K>(api: &Api<K>, name: &str, type_: &str) -> Option<(String, String, String)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let object = api.get_opt(name).await.ok()??;
    let value = serde_json::to_value(&object).ok()?;
    let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str, reason: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    eventually(
        &format!("{name} {type_}={status} ({reason})"),
        WAIT,
        || async move {
            let (s, r, _) = condition(api, name, type_).await?;
            (s == status && r == reason).then_some(())
        },
    )
    .await;
}

async fn event_reasons(client: &kube::Client, ns: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.reason).collect())
        .unwrap_or_default()
}

async fn wait_event(client: &kube::Client, ns: &str, reason: &str) {
    eventually(&format!("an Event {reason}"), WAIT, || async move {
        event_reasons(client, ns)
            .await
            .iter()
            .any(|r| r == reason)
            .then_some(())
    })
    .await;
}

async fn drill_clusters(client: &kube::Client, ns: &str) -> Vec<DynamicObject> {
    dynamic_api(client, ns, CNPG, "Cluster")
        .list(&ListParams::default().labels(naming::LABEL_DRILL))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test]
async fn restore_from_another_database_recovers_under_a_new_server_name() {
    let (client, ns) = setup("restore").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", Value::Null).await;
    database(&client, &ns, "source", json!({})).await;
    play_recovery_window(
        &client,
        &ns,
        "source-db-backup",
        "source-db-cnpg-v1",
        ago(7200),
        ago(3600),
    )
    .await;
    let target = ago(1800);
    database(
        &client,
        &ns,
        "restored",
        json!({"restore": {"from": {"appDatabase": "source"}, "targetTime": target.to_string()}}),
    )
    .await;

    // The apiserver accepted the recovery bootstrap rendered for the Barman Cloud Plugin.
    let cluster = wait_exists(&client, &ns, CNPG, "Cluster", "restored-db-cnpg-v1").await;
    let spec = &cluster.data["spec"];
    assert!(spec["bootstrap"].get("initdb").is_none());
    assert_eq!(spec["bootstrap"]["recovery"]["source"], "origin");
    let recovered_to: jiff::Timestamp =
        spec["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(recovered_to.as_second(), target.as_second());
    assert_eq!(
        spec["externalClusters"][0]["plugin"]["parameters"],
        json!({"barmanObjectName": "source-db-backup", "serverName": "source-db-cnpg-v1"})
    );
    // It archives into its own ObjectStore under a server name of its own.
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let restored = databases.get("restored").await.unwrap();
    let expected = naming::restored_server_name("restored-db-cnpg-v1", &restored.uid().unwrap());
    let archive = &spec["plugins"][0]["parameters"];
    assert_eq!(archive["barmanObjectName"], "restored-db-backup");
    assert_eq!(archive["serverName"], expected.as_str());
    assert_ne!(archive["serverName"], "source-db-cnpg-v1");
    wait_condition(&databases, "restored", "RestoreReady", "True", "Restored").await;
    let status = databases.get("restored").await.unwrap().status.unwrap();
    assert_eq!(
        status.backup.unwrap().server_name.as_deref(),
        Some(expected.as_str())
    );
    operator.stop().await;
}

#[tokio::test]
async fn restore_targets_outside_the_recovery_window_create_no_cluster() {
    let (client, ns) = setup("pitr-window").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", Value::Null).await;
    database(&client, &ns, "source", json!({})).await;
    play_recovery_window(
        &client,
        &ns,
        "source-db-backup",
        "source-db-cnpg-v1",
        ago(3600),
        ago(1800),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    for (name, target, reason) in [
        (
            "future",
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            "TargetTimeInFuture",
        ),
        ("too-old", ago(3 * 3600), "TargetTimeBeforeRecoveryWindow"),
    ] {
        database(
            &client,
            &ns,
            name,
            json!({"restore": {"from": {"appDatabase": "source"}, "targetTime": target.to_string()}}),
        )
        .await;
        wait_condition(&databases, name, "RestoreReady", "False", reason).await;
        let (ready, ready_reason, _) = condition(&databases, name, "Ready").await.unwrap();
        assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", reason));
        assert_argocd_shows(&client, &ns, "AppDatabase", name, reason).await;
        // The rest of the database was applied in the same pass; only the cluster was held back.
        wait_exists(
            &client,
            &ns,
            CNPG,
            "ScheduledBackup",
            &naming::scheduled_backup(name),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clusters = dynamic_api(&client, &ns, CNPG, "Cluster");
    for name in ["future", "too-old"] {
        assert!(
            clusters
                .get_opt(&naming::cluster(name))
                .await
                .unwrap()
                .is_none(),
            "no Cluster may be created for {name}"
        );
    }
    // A target inside the window proceeds.
    database(
        &client,
        &ns,
        "inside",
        json!({"restore": {"from": {"appDatabase": "source"}, "targetTime": ago(2400).to_string()}}),
    )
    .await;
    wait_exists(&client, &ns, CNPG, "Cluster", "inside-db-cnpg-v1").await;
    operator.stop().await;
}

#[tokio::test]
async fn on_demand_backups_are_created_once_per_token_and_reported() {
    let (client, ns) = setup("backup-now").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", Value::Null).await;
    database(&client, &ns, "linkding", json!({})).await;
    wait_exists(&client, &ns, CNPG, "Cluster", "linkding-db-cnpg-v1").await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let backups = dynamic_api(&client, &ns, CNPG, "Backup");
    let backup_now = |token: &str| {
        let databases = databases.clone();
        let token = token.to_string();
        async move {
            annotate(
                &databases,
                "linkding",
                naming::ANNOTATION_BACKUP_NOW,
                &token,
            )
            .await;
        }
    };
    let reported = |token: &'static str, phase: &'static str| {
        let databases = databases.clone();
        async move {
            eventually(&format!("{token} reported {phase}"), WAIT, || {
                let databases = databases.clone();
                async move {
                    let db = databases.get("linkding").await.ok()?;
                    let entry = db
                        .status?
                        .on_demand_backups
                        .into_iter()
                        .find(|b| b.token == token)?;
                    (entry.phase == phase).then_some(entry)
                }
            })
            .await
        }
    };

    backup_now("before-upgrade").await;
    let backup = wait_exists(
        &client,
        &ns,
        CNPG,
        "Backup",
        "linkding-backup-before-upgrade",
    )
    .await;
    assert_eq!(backup.data["spec"]["method"], "plugin");
    assert_eq!(
        backup.data["spec"]["cluster"]["name"],
        "linkding-db-cnpg-v1"
    );
    assert_eq!(backup.owner_references()[0].kind, "AppDatabase");
    reported("before-upgrade", "Pending").await;

    // Play CloudNativePG: the backup runs and completes.
    let started = ago(60);
    let stopped = ago(5);
    backups
        .patch_status(
            "linkding-backup-before-upgrade",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "completed",
                "startedAt": started.to_string(), "stoppedAt": stopped.to_string()}})),
        )
        .await
        .unwrap();
    let done = reported("before-upgrade", "Completed").await;
    assert_eq!(done.stopped.unwrap().0.as_second(), stopped.as_second());
    assert_eq!(done.started.unwrap().0.as_second(), started.as_second());
    wait_event(&client, &ns, "OnDemandBackupCompleted").await;

    // A second token: a second Backup; this one fails.
    backup_now("second").await;
    wait_exists(&client, &ns, CNPG, "Backup", "linkding-backup-second").await;
    backups
        .patch_status(
            "linkding-backup-second",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "failed", "error": "cannot reach the bucket"}}),
            ),
        )
        .await
        .unwrap();
    let failed = reported("second", "Failed").await;
    assert_eq!(failed.error.as_deref(), Some("cannot reach the bucket"));
    wait_event(&client, &ns, "OnDemandBackupFailed").await;
    let db = databases.get("linkding").await.unwrap();
    let tokens: Vec<String> = db
        .status
        .unwrap()
        .on_demand_backups
        .into_iter()
        .map(|b| b.token)
        .collect();
    assert_eq!(tokens, ["second", "before-upgrade"], "newest first");

    // The same token never creates another Backup, even when its Backup is deleted.
    backups
        .delete("linkding-backup-second", &DeleteParams::default())
        .await
        .unwrap();
    databases
        .patch(
            "linkding",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|b| b.name_any())
        .collect();
    assert_eq!(names, ["linkding-backup-before-upgrade"]);
    reported("second", "Failed").await;
    operator.stop().await;
}

#[tokio::test]
async fn stale_backups_and_archiving_flip_backup_ready_on_time() {
    let (client, ns) = setup("staleness").await;
    let operator = Operator::start(&ns).await;
    // A daily schedule whose run falls so that the last backup goes stale at a whole minute
    // 40-100 s from now: the schedule fires an hour before `stale`, the slack of a daily schedule.
    let now = jiff::Timestamp::now();
    let stale = {
        let t = now + jiff::SignedDuration::from_secs(100);
        jiff::Timestamp::from_second(t.as_second() - t.as_second() % 60).unwrap()
    };
    let fire = (stale - jiff::SignedDuration::from_hours(1))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    let schedule = format!("{} {} * * *", fire.minute(), fire.hour());
    let last_backup = stale - jiff::SignedDuration::from_hours(13);
    policy(&client, &ns, &schedule, "30s", Value::Null).await;
    database(&client, &ns, "aging", json!({})).await;
    database(&client, &ns, "archiving", json!({})).await;
    play_recovery_window(
        &client,
        &ns,
        "aging-db-backup",
        "aging-db-cnpg-v1",
        last_backup,
        last_backup,
    )
    .await;
    play_recovery_window(
        &client,
        &ns,
        "archiving-db-backup",
        "archiving-db-cnpg-v1",
        ago(600),
        ago(600),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    wait_condition(&databases, "aging", "BackupReady", "True", "BackupsHealthy").await;
    wait_condition(
        &databases,
        "archiving",
        "BackupReady",
        "True",
        "BackupsHealthy",
    )
    .await;
    assert!(
        jiff::Timestamp::now() < stale,
        "the test set-up was too slow"
    );

    // Archiving fails (play CloudNativePG's instance manager): False at once, stale after the
    // 30 s RPO, with no write in between.
    wait_exists(&client, &ns, CNPG, "Cluster", "archiving-db-cnpg-v1").await;
    let failing_since = ago(20);
    play_cluster_conditions(
        &client,
        &ns,
        "archiving-db-cnpg-v1",
        "Cluster in healthy state",
        json!([{"type": "ContinuousArchiving", "status": "False", "reason": "ContinuousArchivingFailing",
                "message": "unexpected failure invoking barman-cloud-wal-archive",
                "lastTransitionTime": failing_since.to_string()}]),
    )
    .await;
    wait_condition(
        &databases,
        "archiving",
        "BackupReady",
        "False",
        "WALArchivingFailing",
    )
    .await;
    // Without the Azure side there is no archive listing: nothing claims what reached it.
    let db = databases.get("archiving").await.unwrap();
    assert_eq!(db.status.unwrap().backup.unwrap().last_archived_wal, None);
    let failing_metric = operator
        .metric(
            "homelab_wal_archiving_failing_since_timestamp_seconds",
            "database=\"archiving\"",
        )
        .await;
    assert_eq!(
        failing_metric.map(|v| v as i64),
        Some(failing_since.as_second())
    );
    wait_condition(
        &databases,
        "archiving",
        "BackupReady",
        "False",
        "WALArchivingStale",
    )
    .await;

    // The base backup of the other database goes stale when the schedule says, not before.
    let offset = audit_offset().await;
    let (status, _, _) = condition(&databases, "aging", "BackupReady").await.unwrap();
    assert_eq!(status, "True", "stale before {stale}");
    eventually(
        "BackupReady=False (BackupStale) at the missed run plus slack",
        Duration::from_secs(100),
        || {
            let databases = databases.clone();
            async move {
                let (s, r, _) = condition(&databases, "aging", "BackupReady").await?;
                (s == "False" && r == "BackupStale").then_some(())
            }
        },
    )
    .await;
    let flipped = jiff::Timestamp::now();
    assert!(flipped >= stale, "flipped at {flipped}, before {stale}");
    assert!(
        flipped.duration_since(stale) < jiff::SignedDuration::from_secs(10),
        "flipped at {flipped}, long after {stale}: the controller did not requeue for it"
    );
    let writes: Vec<String> = audit_writes(&ns, offset)
        .await
        .into_iter()
        .filter(|w| w.contains("appdatabases/aging"))
        .collect();
    assert_eq!(writes.len(), 1, "one status write, the flip: {writes:#?}");
    let metric = operator
        .metric(
            "homelab_backup_last_success_timestamp_seconds",
            "database=\"aging\"",
        )
        .await;
    assert_eq!(metric.map(|v| v as i64), Some(last_backup.as_second()));
    wait_event(&client, &ns, "BackupStale").await;

    // A deleted database takes its series with it (here without a finalizer: no Azure side).
    databases
        .delete("aging", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted database's series to go", WAIT, || {
        let operator = &operator;
        async move {
            let left = operator
                .metric(
                    "homelab_backup_last_success_timestamp_seconds",
                    "database=\"aging\"",
                )
                .await;
            left.is_none().then_some(())
        }
    })
    .await;
    let other = operator
        .metric(
            "homelab_wal_archiving_failing_since_timestamp_seconds",
            "database=\"archiving\"",
        )
        .await;
    assert_eq!(
        other.map(|v| v as i64),
        Some(failing_since.as_second()),
        "the other database keeps its series"
    );
    operator.stop().await;
}

/// Sets annotation `key` to `value` on `name`, as `kubectl annotate --overwrite` does.
async fn annotate<K>(api: &Api<K>, name: &str, key: &str, value: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
    )
    .await
    .unwrap();
}

/// A policy with drills that are only ever started by `drill-now` during the test.
fn manual_drills(timeout: &str) -> Value {
    json!({"schedule": "0 4 1 1 *", "timeout": timeout, "history": 3})
}

/// A database with a completed base backup (the plugin's recovery window says so).
async fn backed_up_database(client: &kube::Client, ns: &str, name: &str) {
    database(client, ns, name, json!({})).await;
    play_recovery_window(
        client,
        ns,
        &naming::backup_object_store(name),
        &naming::cluster(name),
        ago(7200),
        ago(600),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), ns);
    eventually("the last base backup in status", WAIT, || {
        let databases = databases.clone();
        let name = name.to_string();
        async move {
            let db = databases.get(&name).await.ok()?;
            db.status?.backup?.last_successful_backup.map(|_| ())
        }
    })
    .await;
}

/// Waits until the clock is in the first seconds of a minute, leaving most of the minute before
/// the next whole one.
async fn early_in_a_minute() {
    let second = jiff::Timestamp::now().as_second().rem_euclid(60);
    if !(1..=20).contains(&second) {
        tokio::time::sleep(Duration::from_secs(((61 - second) % 60) as u64)).await;
    }
}

/// The newest drill record, once it has `outcome`.
async fn wait_drill(
    policies: &Api<BackupPolicy>,
    outcome: &str,
) -> homelab_api::backup_policy::DrillRecord {
    wait_drill_of(policies, None, outcome).await
}

/// The record of drill cluster `cluster` (or the newest record), once it has `outcome`.
async fn wait_drill_of(
    policies: &Api<BackupPolicy>,
    cluster: Option<&str>,
    outcome: &str,
) -> homelab_api::backup_policy::DrillRecord {
    eventually(
        &format!("a drill record {outcome}"),
        Duration::from_secs(120),
        || {
            let policies = policies.clone();
            let outcome = outcome.to_string();
            async move {
                let p = policies.get("daily").await.ok()?;
                let record = p
                    .status?
                    .drills
                    .into_iter()
                    .find(|r| cluster.is_none_or(|c| r.cluster == c))?;
                (serde_json::to_value(record.outcome).ok()? == json!(outcome)).then_some(record)
            }
        },
    )
    .await
}

async fn wait_no_drill_cluster(client: &kube::Client, ns: &str) {
    eventually("the drill cluster to be deleted", WAIT, || async move {
        drill_clusters(client, ns).await.is_empty().then_some(())
    })
    .await;
}

/// Plays the pod of `cluster`'s verification Job: once the operator created the Job, a pod with
/// its `job-name` label whose container terminated with the report the script writes (`tables`,
/// and a heartbeat `heartbeat_age` seconds old).
async fn play_verification(client: &kube::Client, ns: &str, cluster: &str, heartbeat_age: i64) {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let job = naming::drill_verification(cluster);
    wait_exists(client, ns, "batch/v1", "Job", &job).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("{job}-played");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": job}},
        "spec": {"automountServiceAccountToken": false, "restartPolicy": "Never",
                 "containers": [{"name": "psql", "image": "psql"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let now = jiff::Timestamp::now();
    let beat = now.as_second() - heartbeat_age;
    let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "psql", "image": "psql", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
            "message": format!("tables=4\nheartbeat={beat}\n"),
            "startedAt": now.to_string(), "finishedAt": now.to_string()}}}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_drill_restores_measures_and_cleans_up() {
    let (client, ns) = setup("drill").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("30m")).await;
    backed_up_database(&client, &ns, "linkding").await;
    let production = wait_exists(&client, &ns, CNPG, "Cluster", "linkding-db-cnpg-v1").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    annotate(
        &databases,
        "linkding",
        naming::ANNOTATION_DRILL_NOW,
        "first",
    )
    .await;

    let drill = wait_exists(&client, &ns, CNPG, "Cluster", "linkding-drill-1").await;
    let owner = &drill.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("BackupPolicy", "daily")
    );
    assert_eq!(
        drill.labels().get(naming::LABEL_DRILL).map(String::as_str),
        Some("linkding")
    );
    // It reads the production archive and never writes to one.
    assert!(drill.data["spec"].get("plugins").is_none());
    assert_eq!(
        drill.data["spec"]["externalClusters"][0]["plugin"]["parameters"]["serverName"],
        "linkding-db-cnpg-v1"
    );
    let running = wait_drill(&policies, "Running").await;
    assert_eq!(running.cluster, "linkding-drill-1");
    wait_event(&client, &ns, "DrillStarted").await;

    // Play CloudNativePG: a PVC it owns, then the restored cluster turns Ready.
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &ns);
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "linkding-drill-1-1", "ownerReferences": [{
            "apiVersion": CNPG, "kind": "Cluster", "name": "linkding-drill-1",
            "uid": drill.uid().unwrap(), "controller": true}]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready_at = jiff::Timestamp::now();
    play_cluster_conditions(
        &client,
        &ns,
        "linkding-drill-1",
        "Cluster in healthy state",
        json!([ready_condition(true, ready_at)]),
    )
    .await;
    play_verification(&client, &ns, "linkding-drill-1", 120).await;

    let done = wait_drill(&policies, "Succeeded").await;
    assert_eq!(done.cluster, "linkding-drill-1");
    let recovery = done.recovery_seconds.unwrap();
    // The 2 s slept before Ready, less the second the pod's finishedAt drops.
    assert!((1..30).contains(&recovery), "recoverySeconds {recovery}");
    // RPO: the drill's start minus the played heartbeat, 120 s before the answer.
    let rpo = done.data_loss_seconds.unwrap();
    assert!((120 - 30..=120).contains(&rpo), "{done:?}");
    assert_eq!(done.tables, Some(4));
    wait_condition(
        &policies,
        "daily",
        "DrillSucceeded",
        "True",
        "DrillsSucceeded",
    )
    .await;
    let status = policies.get("daily").await.unwrap().status.unwrap();
    assert_eq!(status.last_drill_outcome.as_deref(), Some("Succeeded"));
    assert_eq!(status.drills.len(), 1);
    wait_event(&client, &ns, "DrillSucceeded").await;
    wait_no_drill_cluster(&client, &ns).await;
    // The garbage collector deletes the PVC with its cluster (the PVC-protection finalizer,
    // whose controller does not run here, would hold it until no pod uses it).
    eventually(
        "the garbage collector to delete the drill's PVC",
        Duration::from_secs(60),
        || {
            let pvcs = pvcs.clone();
            async move {
                match pvcs.get_opt("linkding-drill-1-1").await.ok()? {
                    None => Some(()),
                    Some(pvc) => pvc.metadata.deletion_timestamp.map(|_| ()),
                }
            }
        },
    )
    .await;
    assert_eq!(
        operator
            .metric(
                "homelab_restore_drill_last_success",
                "database=\"linkding\""
            )
            .await,
        Some(1.0)
    );
    assert_eq!(
        operator
            .metric(
                "homelab_restore_drill_recovery_seconds",
                "database=\"linkding\""
            )
            .await
            .map(|v| v as i64),
        Some(recovery)
    );
    // The production cluster was never touched.
    let after = dynamic_api(&client, &ns, CNPG, "Cluster")
        .get("linkding-db-cnpg-v1")
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, production.metadata.generation);
    assert_eq!(after.data["spec"], production.data["spec"]);
    // One Event per drill outcome, not repeated by the condition's transition.
    let succeeded_events = event_reasons(&client, &ns)
        .await
        .into_iter()
        .filter(|r| r == "DrillSucceeded")
        .count();
    assert_eq!(succeeded_events, 1);
    // The token is not acted on twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(drill_clusters(&client, &ns).await.is_empty());
    assert_eq!(
        policies
            .get("daily")
            .await
            .unwrap()
            .status
            .unwrap()
            .drills
            .len(),
        1
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_drill_beyond_its_recovery_point_objective_is_reported_not_passed() {
    let (client, ns) = setup("drill-objective").await;
    let operator = Operator::start(&ns).await;
    // The default objectives: RPO 5 minutes, RTO 10 minutes.
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("30m")).await;
    backed_up_database(&client, &ns, "feeds").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    annotate(
        &dynamic_api(&client, &ns, "homelab.io/v1alpha1", "AppDatabase"),
        "feeds",
        naming::ANNOTATION_DRILL_NOW,
        "late",
    )
    .await;
    wait_exists(&client, &ns, CNPG, "Cluster", "feeds-drill-1").await;
    play_cluster_conditions(
        &client,
        &ns,
        "feeds-drill-1",
        "Cluster in healthy state",
        json!([ready_condition(true, jiff::Timestamp::now())]),
    )
    .await;
    // The newest heartbeat in the restored database is 15 minutes old: beyond the RPO.
    play_verification(&client, &ns, "feeds-drill-1", 900).await;

    let done = wait_drill(&policies, "ObjectiveMissed").await;
    let rpo = done.data_loss_seconds.unwrap();
    assert!((870..=900).contains(&rpo), "{done:?}");
    let rto = done.recovery_seconds.unwrap();
    assert_eq!(
        done.message.as_deref().unwrap_or_default(),
        format!(
            "restored and verified in {rto}s (RTO), newest heartbeat {rpo}s before the drill started (RPO); RPO {rpo}s is beyond the objective of 300s"
        )
    );
    wait_condition(
        &policies,
        "daily",
        "DrillSucceeded",
        "False",
        "DrillObjectiveMissed",
    )
    .await;
    // README (## ArgoCD): a drill that is not a success makes the BackupPolicy Degraded.
    let (health, message) = argocd_health_of(&client, &ns, "BackupPolicy", "daily").await;
    assert_eq!(health, "Degraded", "{message}");
    assert!(message.starts_with("DrillObjectiveMissed"), "{message}");
    wait_no_drill_cluster(&client, &ns).await;
    // The data was restored and verified (last_success 1); the RPO it measured is exported for
    // HomelabRestoreDrillObjectiveMissed to compare with the objective.
    let exported = eventually("the drill's outcome in /metrics", WAIT, || async {
        operator
            .metric("homelab_restore_drill_last_success", "database=\"feeds\"")
            .await
    })
    .await;
    assert_eq!(exported, 1.0);
    assert_eq!(
        operator
            .metric(
                "homelab_restore_drill_data_loss_seconds",
                "database=\"feeds\""
            )
            .await
            .map(|v| v as i64),
        Some(rpo)
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_drill_that_never_becomes_ready_times_out_and_is_cleaned_up() {
    let (client, ns) = setup("drill-timeout").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("1m")).await;
    backed_up_database(&client, &ns, "wiki").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    // The policy's own annotation drills every database using it.
    annotate(&policies, "daily", naming::ANNOTATION_DRILL_NOW, "t1").await;
    wait_exists(&client, &ns, CNPG, "Cluster", "wiki-drill-1").await;
    // Play CloudNativePG: the recovery never finishes.
    play_cluster_conditions(
        &client,
        &ns,
        "wiki-drill-1",
        "Setting up primary",
        json!([ready_condition(false, jiff::Timestamp::now())]),
    )
    .await;
    let failed = wait_drill(&policies, "Failed").await;
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("timed out")
            && failed
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("Setting up primary"),
        "{failed:?}"
    );
    let took = failed.finished.unwrap().0.duration_since(failed.started.0);
    assert!(
        took >= jiff::SignedDuration::from_secs(60),
        "failed after {took}"
    );
    assert!(
        took < jiff::SignedDuration::from_secs(75),
        "failed after {took}"
    );
    wait_condition(&policies, "daily", "DrillSucceeded", "False", "DrillFailed").await;
    // README (## ArgoCD): a failed restore drill makes a BackupPolicy Degraded.
    let (health, message) = argocd_health_of(&client, &ns, "BackupPolicy", "daily").await;
    assert_eq!(health, "Degraded", "{message}");
    assert!(message.starts_with("DrillFailed"), "{message}");
    assert_eq!(
        policies
            .get("daily")
            .await
            .unwrap()
            .status
            .unwrap()
            .last_drill_outcome
            .as_deref(),
        Some("Failed")
    );
    wait_event(&client, &ns, "DrillTimedOut").await;
    wait_no_drill_cluster(&client, &ns).await;
    assert_eq!(
        operator
            .metric("homelab_restore_drill_last_success", "database=\"wiki\"")
            .await,
        Some(0.0),
        "a failed drill is exported as 0, not left out"
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_operator_restart_mid_drill_resumes_the_same_drill() {
    let (client, ns) = setup("drill-restart").await;
    let offset = audit_offset().await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("30m")).await;
    backed_up_database(&client, &ns, "n8n").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    annotate(&databases, "n8n", naming::ANNOTATION_DRILL_NOW, "go").await;
    let drill = wait_exists(&client, &ns, CNPG, "Cluster", "n8n-drill-1").await;
    let running = wait_drill(&policies, "Running").await;
    operator.stop().await;

    // A restart that finds the drill in status and its cluster running.
    let operator = Operator::start(&ns).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clusters = drill_clusters(&client, &ns).await;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].uid(), drill.uid(), "the same drill cluster");
    let status = policies.get("daily").await.unwrap().status.unwrap();
    assert_eq!(status.drills, vec![running.clone()]);
    operator.stop().await;

    // A restart that lost the status record (as if the operator died between creating the
    // cluster and recording it): the drill is adopted from the cluster's annotations.
    policies
        .patch_status(
            "daily",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"drills": null, "lastDrillOutcome": null}})),
        )
        .await
        .unwrap();
    let operator = Operator::start(&ns).await;
    let adopted = wait_drill(&policies, "Running").await;
    assert_eq!(adopted.cluster, "n8n-drill-1");
    assert_eq!(adopted.started.0.as_second(), running.started.0.as_second());
    assert_eq!(drill_clusters(&client, &ns).await.len(), 1);

    // The resumed drill finishes normally.
    play_cluster_conditions(
        &client,
        &ns,
        "n8n-drill-1",
        "Cluster in healthy state",
        json!([ready_condition(true, jiff::Timestamp::now())]),
    )
    .await;
    play_verification(&client, &ns, "n8n-drill-1", 10).await;
    let done = wait_drill(&policies, "Succeeded").await;
    assert_eq!(done.cluster, "n8n-drill-1");
    assert_eq!(done.started.0.as_second(), running.started.0.as_second());
    wait_no_drill_cluster(&client, &ns).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Exactly one drill cluster ever existed: no other name was written, and it was deleted
    // once, at the end (a re-created one would have needed a delete before).
    let writes = audit_writes(&ns, offset).await;
    let drill_writes: Vec<&String> = writes
        .iter()
        .filter(|w| w.contains(" clusters/") && w.contains("-drill-"))
        .collect();
    assert!(
        drill_writes
            .iter()
            .all(|w| w.contains(" clusters/n8n-drill-1 ")),
        "{drill_writes:#?}"
    );
    let deletes = drill_writes
        .iter()
        .filter(|w| w.starts_with("delete "))
        .count();
    assert_eq!(deletes, 1, "{drill_writes:#?}");
    assert_eq!(
        policies
            .get("daily")
            .await
            .unwrap()
            .status
            .unwrap()
            .drills
            .len(),
        1
    );
    operator.stop().await;
}

#[tokio::test]
async fn drills_start_on_their_schedule_one_at_a_time() {
    let (client, ns) = setup("drill-cron").await;
    let operator = Operator::start(&ns).await;
    // Every minute: the first drill starts at the next whole minute after the policy and the
    // database exist. A drill that comes due before the database's first backup reaches its
    // status finds nothing to restore, so both are created early in a minute.
    early_in_a_minute().await;
    policy(
        &client,
        &ns,
        "0 1 * * *",
        "5m",
        json!({"schedule": "* * * * *", "timeout": "30m"}),
    )
    .await;
    backed_up_database(&client, &ns, "commafeed").await;
    let drill = eventually(
        "the scheduled drill to start",
        Duration::from_secs(90),
        || {
            let client = client.clone();
            let ns = ns.clone();
            async move { drill_clusters(&client, &ns).await.into_iter().next() }
        },
    )
    .await;
    assert_eq!(drill.name_any(), "commafeed-drill-1");
    assert_eq!(
        drill
            .annotations()
            .get("homelab.io/drill-trigger")
            .map(String::as_str),
        Some("schedule")
    );
    let started: jiff::Timestamp = drill.annotations()["homelab.io/drill-started"]
        .parse()
        .unwrap();
    assert!(
        started.as_second() % 60 < 30,
        "started at {started}, long after the whole minute"
    );
    // The schedule comes round again while the drill runs: no second drill.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let clusters = drill_clusters(&client, &ns).await;
    assert_eq!(
        clusters.len(),
        1,
        "{:?}",
        clusters.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        policies
            .get("daily")
            .await
            .unwrap()
            .status
            .unwrap()
            .drills
            .len(),
        1
    );
    play_cluster_conditions(
        &client,
        &ns,
        "commafeed-drill-1",
        "Cluster in healthy state",
        json!([ready_condition(true, jiff::Timestamp::now())]),
    )
    .await;
    play_verification(&client, &ns, "commafeed-drill-1", 10).await;
    let done = wait_drill_of(&policies, Some("commafeed-drill-1"), "Succeeded").await;
    // At least the 65 s slept, less the second the pod's finishedAt drops.
    assert!(done.recovery_seconds.unwrap() >= 64, "{done:?}");
    // The next run is the first one after the drill finished: runs that fell during it are
    // skipped, not queued up.
    let next = eventually("the next scheduled drill", Duration::from_secs(90), || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            drill_clusters(&client, &ns)
                .await
                .into_iter()
                .find(|c| c.name_any() == "commafeed-drill-2")
        }
    })
    .await;
    let next_started: jiff::Timestamp = next.annotations()["homelab.io/drill-started"]
        .parse()
        .unwrap();
    let finished = done.finished.unwrap().0;
    assert!(
        next_started > finished && next_started.as_second() % 60 < 30,
        "the second drill started at {next_started}; the first finished at {finished}"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_drill_whose_database_leaves_the_policy_is_ended_and_cleaned_up() {
    let (client, ns) = setup("drill-orphan").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("30m")).await;
    backed_up_database(&client, &ns, "listmonk").await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    annotate(&databases, "listmonk", naming::ANNOTATION_DRILL_NOW, "x").await;
    wait_exists(&client, &ns, CNPG, "Cluster", "listmonk-drill-1").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    wait_drill(&policies, "Running").await;
    // The database stops using the policy mid-drill.
    databases
        .patch(
            "listmonk",
            &PatchParams::apply("test").force(),
            &Patch::Apply(
                json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
                "metadata": {"name": "listmonk"}, "spec": {}}),
            ),
        )
        .await
        .unwrap();
    let ended = wait_drill(&policies, "Failed").await;
    assert_eq!(ended.cluster, "listmonk-drill-1");
    assert!(
        ended
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no longer uses this BackupPolicy"),
        "{ended:?}"
    );
    wait_no_drill_cluster(&client, &ns).await;
    operator.stop().await;
}

/// A drill step that fails (here: a real ValidatingAdmissionPolicy of the apiserver refuses one
/// database's drill Cluster) is reported in `DrillSucceeded` with the apiserver's refusal and a
/// Warning Event; the status is still written, with the drill of the other database that went
/// on; and the refused drill is tried again once the refusal is gone.
#[tokio::test]
async fn a_refused_drill_is_reported_and_the_other_databases_drill_on() {
    let (client, ns) = setup("drill-refused").await;
    let refused_message = "drill clusters of wallabag are refused by the test's admission policy";
    let refusal = AdmissionRefusal::install(
        &client,
        &ns,
        ("postgresql.cnpg.io", "v1", "clusters"),
        &format!(
            "!has(object.metadata.labels) || !('{label}' in object.metadata.labels) || object.metadata.labels['{label}'] != 'wallabag'",
            label = naming::LABEL_DRILL
        ),
        refused_message,
        &resource(CNPG, "Cluster"),
        json!({"apiVersion": CNPG, "kind": "Cluster",
               "metadata": {"name": "probe", "labels": {naming::LABEL_DRILL: "wallabag"}},
               "spec": {"instances": 1, "storage": {"size": "1Gi"}}}),
    )
    .await;
    // A short resync: a refusal is not retried soon by itself (someone must lift it), so the
    // retry after it is lifted comes with the next resync.
    let operator = Operator::start_with(&ns, &["--resync-seconds=5"]).await;
    policy(&client, &ns, "0 1 * * *", "5m", manual_drills("30m")).await;
    backed_up_database(&client, &ns, "wallabag").await;
    backed_up_database(&client, &ns, "linkding").await;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    annotate(&policies, "daily", naming::ANNOTATION_DRILL_NOW, "both").await;

    wait_exists(&client, &ns, CNPG, "Cluster", "linkding-drill-1").await;
    wait_condition(
        &policies,
        "daily",
        "DrillSucceeded",
        "False",
        "ChildRejected",
    )
    .await;
    let (_, _, message) = condition(&policies, "daily", "DrillSucceeded")
        .await
        .unwrap();
    assert!(
        message.starts_with("a restore drill could not go on (AppDatabase wallabag: ")
            && message.contains(refused_message)
            && message.ends_with("); it is tried again, and the other databases' drills go on"),
        "DrillSucceeded does not say which drill failed and why: {message}"
    );
    wait_event(&client, &ns, "ChildRejected").await;
    let written = policies.get("daily").await.unwrap();
    let status = written.status.clone().unwrap();
    assert_eq!(status.observed_generation, written.metadata.generation);
    let records: Vec<(String, String)> = status
        .drills
        .iter()
        .map(|r| (r.database.clone(), r.cluster.clone()))
        .collect();
    assert_eq!(
        records,
        vec![("linkding".to_string(), "linkding-drill-1".to_string())],
        "the status keeps the drill that went on, and nothing for the refused one"
    );
    assert_eq!(
        serde_json::to_value(status.drills[0].outcome).unwrap(),
        json!("Running")
    );

    refusal.remove().await;
    wait_exists(&client, &ns, CNPG, "Cluster", "wallabag-drill-1").await;
    wait_condition(
        &policies,
        "daily",
        "DrillSucceeded",
        "Unknown",
        "NoDrillYet",
    )
    .await;
    operator.stop().await;
}

/// A restore right after `backup-now` does not wait for the Barman Cloud Plugin's recovery
/// window: the plugin's refresh of it after a backup can be lost to a conflict (seen on the data
/// plane: HTTP 409 on its status update, the window reported five minutes later), and the
/// completed on-demand Backup is evidence of a base backup of its own. Here the plugin reports
/// no window at all; CloudNativePG's completion of the Backup is played.
#[tokio::test]
async fn a_restore_after_backup_now_starts_without_the_plugins_window() {
    let (client, ns) = setup("restore-after-backup").await;
    let operator = Operator::start(&ns).await;
    policy(&client, &ns, "0 1 * * *", "5m", Value::Null).await;
    database(&client, &ns, "source", json!({})).await;
    wait_exists(&client, &ns, CNPG, "Cluster", "source-db-cnpg-v1").await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    wait_condition(
        &databases,
        "source",
        "BackupReady",
        "Unknown",
        "WaitingForFirstBackup",
    )
    .await;
    annotate(
        &databases,
        "source",
        naming::ANNOTATION_BACKUP_NOW,
        "migrate",
    )
    .await;
    wait_exists(&client, &ns, CNPG, "Backup", "source-backup-migrate").await;
    let stopped = ago(5);
    dynamic_api(&client, &ns, CNPG, "Backup")
        .patch_status(
            "source-backup-migrate",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "completed",
                "startedAt": ago(60).to_string(), "stoppedAt": stopped.to_string()}})),
        )
        .await
        .unwrap();
    let backup = eventually("the source to report its last backup", WAIT, || {
        let databases = databases.clone();
        async move {
            let status = databases.get("source").await.ok()?.status?.backup?;
            status.last_successful_backup.is_some().then_some(status)
        }
    })
    .await;
    assert_eq!(
        backup.last_successful_backup.map(|t| t.0.as_second()),
        Some(stopped.as_second())
    );
    assert_eq!(
        backup.first_recoverability_point.map(|t| t.0.as_second()),
        Some(stopped.as_second())
    );

    database(
        &client,
        &ns,
        "copy",
        json!({"restore": {"from": {"appDatabase": "source"}}}),
    )
    .await;
    wait_exists(&client, &ns, CNPG, "Cluster", "copy-db-cnpg-v1").await;
    wait_condition(&databases, "copy", "RestoreReady", "True", "Restored").await;
    operator.stop().await;
}
