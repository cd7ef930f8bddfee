//! Every reason the README's troubleshooting table lists, produced by the controllers in the
//! situation the table describes, each checked where it is produced: the `Ready` condition names
//! it for the current generation, its message says what to do, and Argo CD's health check
//! (`deploy/argocd/health`, run as Argo CD runs it) shows it as the README says (Progressing when
//! it resolves by itself, Degraded when someone must change something).
//!
//! What no component here produces on demand is played, and says so: CloudNativePG's and External
//! Secrets Operator's statuses (neither runs on this control plane), the plugin's recovery window.
//! Key Vault's refusals come from the Key Vault emulator's faults; the apiserver's refusal of a
//! child from a real ValidatingAdmissionPolicy. The reasons produced elsewhere are listed in
//! [`PRODUCED_ELSEWHERE`], and a test checks that together they cover the README's table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use homelab_api::naming;
use homelab_testenv::TestEnv;
use homelab_testenv::azure::{AzureEmulators, EmulatorCredential, KeyVaultFault};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::*;

const HOMELAB: &str = "homelab.io/v1alpha1";
const CNPG: &str = "postgresql.cnpg.io/v1";
const BARMAN: &str = "barmancloud.cnpg.io/v1";
const ESO: &str = "external-secrets.io/v1";

/// README reasons produced by tests in other files, so that [`the_readme_table_is_covered`] can
/// tell a forgotten one. Where `Ready` carries the reason there, the same test checks Argo CD's
/// health of it (`assert_argocd_shows`); where another condition carries it while `Ready` shows an
/// earlier reason (a played cluster without status), Argo CD's reading of the reason is checked
/// by the Argo CD test `crates/homelab-deploy-tests/tests/argocd/health.rs`.
const PRODUCED_ELSEWHERE: &[(&str, &str)] = &[
    ("CRDNotInstalled", "resilience.rs"),
    ("InvalidSpec", "resilience.rs"),
    (
        "BackupDestinationInUse",
        "homelab-e2e database.rs, on real CloudNativePG",
    ),
    ("StorageCannotExpand", "controllers.rs"),
    ("AzureUnreachable", "azure.rs"),
    ("ClusterNotHealthy", "controllers.rs"),
    ("DatabaseNotReady", "controllers.rs"),
    ("SecretsNotSynced", "controllers.rs"),
    ("WALArchivingFailing", "backups.rs"),
    ("WALArchivingStale", "backups.rs, azure.rs"),
    ("BackupStale", "backups.rs"),
    ("TargetTimeInFuture", "backups.rs"),
    ("TargetTimeBeforeRecoveryWindow", "backups.rs"),
    ("DrillFailed", "backups.rs"),
    ("DrillObjectiveMissed", "backups.rs"),
];

/// The reasons this file produces.
const PRODUCED_HERE: &[&str] = &[
    "BackupPolicyNotFound",
    "DatabaseNotFound",
    "SecretStoreNotUsable",
    "AzureThrottled",
    "AzureForbidden",
    "AzureUnauthenticated",
    "SecretSoftDeleted",
    "SecretDisabled",
    "SasTokenRefused",
    "WaitingForExternalSecrets",
    "CredentialsNotSynced",
    "ClusterCreating",
    "BackupFailing",
    "SourceHasNoBackup",
    "ReplicasUnavailable",
    "ChildRejected",
];

async fn setup(prefix: &str) -> (kube::Client, String) {
    let env = TestEnv::get().await;
    let client = env.client().await.expect("client");
    let namespace = env.namespace(prefix).await.expect("namespace");
    (client, namespace)
}

async fn apply_kind(client: &kube::Client, ns: &str, kind: &str, name: &str, spec: Value) {
    apply_value(
        client,
        ns,
        json!({"apiVersion": HOMELAB, "kind": kind, "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// Waits until `kind/name` reports `Ready` with `reason` for its current generation, checks
/// that Argo CD shows it as the README documents, and returns the condition's message.
async fn produced(client: &kube::Client, ns: &str, kind: &str, name: &str, reason: &str) -> String {
    let api = dynamic_api(client, ns, HOMELAB, kind);
    let object = eventually(
        &format!("{kind} {ns}/{name} to report Ready with reason {reason}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let object = serde_json::to_value(api.get(&name).await.ok()?).ok()?;
                let generation = object["metadata"]["generation"].as_i64()?;
                (object["status"]["observedGeneration"].as_i64()? == generation).then_some(())?;
                object["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["reason"] == reason)
                    .then_some(object.clone())
            }
        },
    )
    .await;
    assert_argocd_shows(client, ns, kind, name, reason).await;
    let (_, health_message) = argocd_health_of(client, ns, kind, name).await;
    let ready = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let message = ready["message"].as_str().unwrap_or_default().to_string();
    assert!(
        health_message.contains(&message),
        "Argo CD shows {health_message:?}, not the condition's message {message:?}"
    );
    message
}

/// Plays CloudNativePG: the Cluster of `app` healthy with one ready instance.
async fn play_cluster_healthy(client: &kube::Client, ns: &str, app: &str) {
    let clusters = dynamic_api(client, ns, CNPG, "Cluster");
    let name = naming::cluster(app);
    eventually(&format!("Cluster {name}"), WAIT, || {
        let clusters = clusters.clone();
        let name = name.clone();
        async move { clusters.get_opt(&name).await.ok().flatten() }
    })
    .await;
    clusters
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Cluster in healthy state", "readyInstances": 1, "instances": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                    "message": "played by the test",
                    "lastTransitionTime": jiff::Timestamp::now().to_string()}]}})),
        )
        .await
        .unwrap();
}

/// Plays External Secrets Operator: the ExternalSecret of `app`'s credentials `Ready=ready`.
async fn play_credentials(client: &kube::Client, ns: &str, app: &str, ready: bool) {
    let secrets = dynamic_api(client, ns, ESO, "ExternalSecret");
    let name = naming::credentials_secret(app);
    eventually(&format!("ExternalSecret {name}"), WAIT, || {
        let secrets = secrets.clone();
        let name = name.clone();
        async move { secrets.get_opt(&name).await.ok().flatten() }
    })
    .await;
    let condition = if ready {
        json!({"type": "Ready", "status": "True", "reason": "SecretSynced",
               "message": "secret synced", "lastTransitionTime": jiff::Timestamp::now().to_string()})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "SecretSyncedError",
               "message": "could not get secret data from provider",
               "lastTransitionTime": jiff::Timestamp::now().to_string()})
    };
    secrets
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await
        .unwrap();
}

#[test]
fn the_readme_table_is_covered() {
    let readme =
        std::fs::read_to_string(homelab_testenv::repo_root().join("README.md")).expect("README");
    let table = readme
        .split("### Troubleshooting by condition reason")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("the README's troubleshooting table");
    let mut listed = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        // `DrillFailed` (`DrillSucceeded=False`): the condition it shows on is not a reason.
        for piece in first_cell.split('`').skip(1).step_by(2) {
            if !piece.contains('=') {
                listed.push(piece.to_string());
            }
        }
    }
    assert!(
        listed.len() > 20,
        "reasons read from the README: {listed:?}"
    );
    for reason in &listed {
        assert!(
            homelab_api::reasons::Reason::from_name(reason).is_some(),
            "the README lists {reason}, which is not a reason the operator emits (homelab_api::reasons)"
        );
        let here = PRODUCED_HERE.contains(&reason.as_str());
        let elsewhere = PRODUCED_ELSEWHERE.iter().any(|(r, _)| r == reason);
        assert!(
            here || elsewhere,
            "the README lists {reason}, which no controller test produces"
        );
    }
    for reason in PRODUCED_HERE {
        assert!(
            listed.iter().any(|r| r == reason),
            "{reason} is produced here but not in the README's table"
        );
    }
}

#[tokio::test]
async fn missing_references_and_children_on_their_way() {
    let (client, ns) = setup("reasons-refs").await;
    let operator = Operator::start(&ns).await;

    apply_kind(
        &client,
        &ns,
        "AppDatabase",
        "orphan",
        json!({"backup": {"policyRef": {"name": "nightly"}}}),
    )
    .await;
    apply_kind(
        &client,
        &ns,
        "HomelabApp",
        "lonely",
        json!({"image": "registry.example/lonely:1", "port": 8080,
               "database": {"ref": {"name": "nowhere"},
                            "env": [{"name": "DB_HOST", "field": "host"}]}}),
    )
    .await;
    apply_kind(&client, &ns, "AppDatabase", "fresh", json!({})).await;
    apply_kind(&client, &ns, "AppDatabase", "syncing", json!({})).await;
    apply_kind(&client, &ns, "AppDatabase", "unsynced", json!({})).await;
    apply_kind(
        &client,
        &ns,
        "HomelabApp",
        "starting",
        json!({"image": "registry.example/starting:1", "port": 8080}),
    )
    .await;

    let message = produced(
        &client,
        &ns,
        "AppDatabase",
        "orphan",
        "BackupPolicyNotFound",
    )
    .await;
    assert_eq!(
        message,
        format!(
            "BackupPolicy \"nightly\" does not exist in namespace {ns}: create it or fix the reference"
        )
    );
    let message = produced(&client, &ns, "HomelabApp", "lonely", "DatabaseNotFound").await;
    assert_eq!(
        message,
        format!(
            "AppDatabase \"nowhere\" does not exist in namespace {ns}: create it or fix the reference"
        )
    );

    // CloudNativePG has not reported on the cluster (it does not run here).
    let message = produced(&client, &ns, "AppDatabase", "fresh", "ClusterCreating").await;
    assert_eq!(
        message,
        "waiting for CloudNativePG to report on the cluster"
    );

    // The cluster is healthy; ESO has not synced the credentials yet.
    play_cluster_healthy(&client, &ns, "syncing").await;
    let message = produced(
        &client,
        &ns,
        "AppDatabase",
        "syncing",
        "WaitingForExternalSecrets",
    )
    .await;
    assert_eq!(
        message,
        format!(
            "waiting for External Secrets Operator to sync syncing-db-credentials from Key Vault secret {}",
            naming::default_password_key_vault_secret("syncing")
        )
    );

    // ESO reports that it cannot sync them.
    play_cluster_healthy(&client, &ns, "unsynced").await;
    play_credentials(&client, &ns, "unsynced", false).await;
    let message = produced(
        &client,
        &ns,
        "AppDatabase",
        "unsynced",
        "CredentialsNotSynced",
    )
    .await;
    assert_eq!(
        message,
        "External Secrets Operator cannot sync unsynced-db-credentials: SecretSyncedError: could not get secret data from provider"
    );

    // The Deployment exists; its pod cannot run (no node here), so no replica is available.
    let message = produced(
        &client,
        &ns,
        "HomelabApp",
        "starting",
        "ReplicasUnavailable",
    )
    .await;
    assert_eq!(
        message,
        "0/1 replicas available: check the pods' events and logs"
    );

    operator.stop().await;
}

#[tokio::test]
async fn failing_backups_and_a_restore_from_a_database_without_one() {
    let (client, ns) = setup("reasons-backups").await;
    let operator = Operator::start(&ns).await;
    apply_kind(
        &client,
        &ns,
        "BackupPolicy",
        "daily",
        json!({"walArchiveTimeout": "5m",
               "storage": {"azure": {"storageAccount": "homelabbackups"}}}),
    )
    .await;
    let with_policy = json!({"backup": {"policyRef": {"name": "daily"}}});
    apply_kind(&client, &ns, "AppDatabase", "failing", with_policy.clone()).await;
    apply_kind(&client, &ns, "AppDatabase", "empty", with_policy).await;
    apply_kind(
        &client,
        &ns,
        "AppDatabase",
        "copy",
        json!({"restore": {"from": {"appDatabase": "empty"}}}),
    )
    .await;

    // The last base backup attempt failed after the last good one (played: the plugin's window).
    play_cluster_healthy(&client, &ns, "failing").await;
    play_credentials(&client, &ns, "failing", true).await;
    let store = naming::backup_object_store("failing");
    let stores = dynamic_api(&client, &ns, BARMAN, "ObjectStore");
    eventually(&format!("ObjectStore {store}"), WAIT, || {
        let stores = stores.clone();
        let store = store.clone();
        async move { stores.get_opt(&store).await.ok().flatten() }
    })
    .await;
    // Whole seconds, so that the message's timestamps are the ones played.
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    let succeeded = now - jiff::SignedDuration::from_hours(6);
    let failed = now - jiff::SignedDuration::from_mins(5);
    stores
        .patch_status(
            &store,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"serverRecoveryWindow": {naming::cluster("failing"): {
                "firstRecoverabilityPoint": (now - jiff::SignedDuration::from_hours(30)).to_string(),
                "lastSuccessfulBackupTime": succeeded.to_string(),
                "lastFailedBackupTime": failed.to_string(),
            }}}})),
        )
        .await
        .unwrap();
    let message = produced(&client, &ns, "AppDatabase", "failing", "BackupFailing").await;
    assert_eq!(
        message,
        format!(
            "the last base backup attempt failed at {failed}; the last successful one completed at {succeeded}: check the Backup objects and the backup logs"
        )
    );

    // The source has no base backup yet: the restore waits, and creates no cluster.
    let message = produced(&client, &ns, "AppDatabase", "copy", "SourceHasNoBackup").await;
    assert_eq!(
        message,
        format!(
            "AppDatabase empty has no base backup to restore yet (its ObjectStore {} reports no recovery window for server {}); the cluster is created once a base backup exists",
            naming::backup_object_store("empty"),
            naming::cluster("empty")
        )
    );
    let clusters = dynamic_api(&client, &ns, CNPG, "Cluster");
    assert!(
        clusters
            .get_opt(&naming::cluster("copy"))
            .await
            .unwrap()
            .is_none(),
        "a restore without a backup to restore created its cluster"
    );
    // The source's first base backup completes (played: the plugin reports its window). Nothing
    // of the restoring database changes, yet it looks again and creates its cluster.
    let source_store = naming::backup_object_store("empty");
    eventually(&format!("ObjectStore {source_store}"), WAIT, || {
        let stores = stores.clone();
        let store = source_store.clone();
        async move { stores.get_opt(&store).await.ok().flatten() }
    })
    .await;
    stores
        .patch_status(
            &source_store,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"serverRecoveryWindow": {naming::cluster("empty"): {
                "firstRecoverabilityPoint": (now - jiff::SignedDuration::from_mins(2)).to_string(),
                "lastSuccessfulBackupTime": (now - jiff::SignedDuration::from_mins(1)).to_string(),
            }}}})),
        )
        .await
        .unwrap();
    eventually(
        "the restore to create its cluster once the source has a base backup",
        Duration::from_secs(60),
        || {
            let clusters = clusters.clone();
            async move {
                clusters
                    .get_opt(&naming::cluster("copy"))
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await;

    operator.stop().await;
}

#[tokio::test]
async fn a_child_the_apiserver_refuses() {
    let (client, ns) = setup("reasons-rejected").await;
    // A real admission policy of the apiserver refuses every Service in this namespace.
    let refusal = AdmissionRefusal::install(
        &client,
        &ns,
        ("", "v1", "services"),
        "false",
        "Services are refused in this namespace by the test's admission policy",
        &resource("v1", "Service"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe"},
               "spec": {"ports": [{"port": 80}]}}),
    )
    .await;

    let operator = Operator::start(&ns).await;
    apply_kind(
        &client,
        &ns,
        "HomelabApp",
        "refused",
        json!({"image": "registry.example/refused:1", "port": 8080}),
    )
    .await;
    let message = produced(&client, &ns, "HomelabApp", "refused", "ChildRejected").await;
    assert!(
        message.contains("Services are refused in this namespace"),
        "the condition does not carry the apiserver's reason: {message}"
    );
    operator.stop().await;
    refusal.remove().await;
}

/// A credential whose tokens are for another resource than Key Vault: the emulator answers 401
/// as Key Vault does for a token with the wrong audience.
#[derive(Debug)]
struct WrongAudience;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for WrongAudience {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            EmulatorCredential::token_for("https://wrong.example/.default"),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn key_vault_refusals_say_what_to_do() {
    // A private Key Vault emulator: this test injects faults.
    let az = AzureEmulators::start_private_key_vault()
        .await
        .expect("the Key Vault emulator");
    let (client, ns) = setup("reasons-azure").await;
    let store = secret_store(&client, &ns, &az).await;
    let store_arg = format!("--default-secret-store={store}");
    let operator =
        Operator::start_with_azure(&ns, &[&store_arg], emulator_clients(&az, az.credential()))
            .await;

    // A store that does not exist.
    let nostore = unique_app(&ns, "nostore");
    apply_kind(
        &client,
        &ns,
        "AppDatabase",
        &nostore,
        json!({"credentials": {"secretStoreRef": {"name": "no-such-store"}}}),
    )
    .await;
    let message = produced(
        &client,
        &ns,
        "AppDatabase",
        &nostore,
        "SecretStoreNotUsable",
    )
    .await;
    assert!(message.contains("no-such-store"), "{message}");

    // A password secret that was deleted and is kept soft-deleted by the vault.
    let deleted = unique_app(&ns, "deleted");
    let secret = format!("{deleted}-db-password");
    set_by_hand(&az, &secret, "set-by-a-human").await;
    sdk_secret_client(&az)
        .delete_secret(&secret, None)
        .await
        .unwrap();
    apply_kind(&client, &ns, "AppDatabase", &deleted, json!({})).await;
    let message = produced(&client, &ns, "AppDatabase", &deleted, "SecretSoftDeleted").await;
    assert!(
        message.contains("az keyvault secret recover") && message.contains(&secret),
        "{message}"
    );

    // A password secret whose current version someone disabled: never overwritten.
    let disabled = unique_app(&ns, "disabled");
    let secret = format!("{disabled}-db-password");
    set_by_hand_with(
        &az,
        &secret,
        azure_security_keyvault_secrets::models::SetSecretParameters {
            value: Some("set-by-a-human".into()),
            secret_attributes: Some(azure_security_keyvault_secrets::models::SecretAttributes {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    apply_kind(&client, &ns, "AppDatabase", &disabled, json!({})).await;
    let message = produced(&client, &ns, "AppDatabase", &disabled, "SecretDisabled").await;
    assert!(
        message.contains(&format!(
            "az keyvault secret set-attributes --id {}/secrets/{secret} --enabled true",
            az.key_vault_url().trim_end_matches('/')
        )),
        "{message}"
    );

    // The operator's identity lacks the role: the message names the one to assign.
    az.set_key_vault_fault(Some(KeyVaultFault::Forbidden))
        .unwrap();
    let refused = unique_app(&ns, "refused");
    apply_kind(&client, &ns, "AppDatabase", &refused, json!({})).await;
    let message = produced(&client, &ns, "AppDatabase", &refused, "AzureForbidden").await;
    assert!(message.contains("Key Vault Secrets Officer"), "{message}");

    operator.stop().await;

    // A token Key Vault does not accept.
    let operator = Operator::start_with_azure(
        &ns,
        &[&store_arg],
        emulator_clients(&az, Arc::new(WrongAudience)),
    )
    .await;
    let unauthenticated = unique_app(&ns, "noauth");
    apply_kind(&client, &ns, "AppDatabase", &unauthenticated, json!({})).await;
    let message = produced(
        &client,
        &ns,
        "AppDatabase",
        &unauthenticated,
        "AzureUnauthenticated",
    )
    .await;
    assert!(message.contains("workload identity"), "{message}");
    operator.stop().await;
}

#[tokio::test]
async fn a_sas_token_blob_storage_refuses_is_reported_and_kept() {
    let az = AzureEmulators::get().await;
    let (client, ns) = setup("reasons-sas").await;
    let store = secret_store(&client, &ns, az).await;
    let app = unique_app(&ns, "stale");
    let container = homelab_azure::ContainerName::backup(&app);
    let secret = homelab_azure::SecretName::backup_sas(&app);
    // A token for the database's container that a person stored by hand; it expired two days
    // ago, and Azurite refuses it for that.
    let now = jiff::Timestamp::now();
    let expired = homelab_azure::sign_service_sas(
        homelab_azure::SasScope {
            account: az.account_name(),
            container: &container,
        },
        &homelab_azure::SecretValue::new(az.account_key()),
        &homelab_azure::SasPolicy::default(),
        now - jiff::SignedDuration::from_hours(72),
        now - jiff::SignedDuration::from_hours(48),
    )
    .unwrap();
    set_by_hand(az, secret.as_str(), expired.token.expose()).await;
    let store_arg = format!("--default-secret-store={store}");
    let operator =
        Operator::start_with_azure(&ns, &[&store_arg], emulator_clients(az, az.credential())).await;
    apply_kind(
        &client,
        &ns,
        "BackupPolicy",
        "daily",
        json!({"storage": {"azure": {
            "storageAccount": az.account_name(),
            "endpoint": az.blob_service_url(),
            "credentials": {"mode": "SasToken"}
        }}}),
    )
    .await;
    apply_kind(
        &client,
        &ns,
        "AppDatabase",
        &app,
        json!({"backup": {"policyRef": {"name": "daily"}}}),
    )
    .await;
    let message = produced(&client, &ns, "AppDatabase", &app, "SasTokenRefused").await;
    let vault = az.key_vault_url().trim_end_matches('/');
    assert!(
        message.starts_with(&format!(
            "Blob Storage refuses the SAS token in Key Vault secret '{secret}' ({vault}) for container '{container}' (403 "
        )) && message.ends_with(
            "store a valid token there, or delete the secret to let the operator mint and rotate one"
        ),
        "{message}"
    );
    // Not replaced: the person's token is still the only version.
    let versions: Vec<_> = futures::TryStreamExt::try_collect(
        sdk_secret_client(az)
            .list_secret_properties_versions(secret.as_str(), None)
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "the token someone else stored was replaced"
    );
    operator.stop().await;
}

#[tokio::test]
async fn throttling_is_waited_out_as_retry_after_says() {
    // A private Key Vault emulator: this test injects faults.
    let az = AzureEmulators::start_private_key_vault()
        .await
        .expect("the Key Vault emulator");
    let (client, ns) = setup("reasons-throttled").await;
    let store = secret_store(&client, &ns, &az).await;
    let store_arg = format!("--default-secret-store={store}");
    let operator =
        Operator::start_with_azure(&ns, &[&store_arg], emulator_clients(&az, az.credential()))
            .await;

    const RETRY_AFTER: u64 = 4;
    az.set_key_vault_fault(Some(KeyVaultFault::Throttled {
        retry_after_secs: RETRY_AFTER,
    }))
    .unwrap();
    let throttled = unique_app(&ns, "throttled");
    apply_kind(&client, &ns, "AppDatabase", &throttled, json!({})).await;
    produced(&client, &ns, "AppDatabase", &throttled, "AzureThrottled").await;
    // Positive evidence first: the operator asked again, several times.
    let asked = eventually(
        "the operator to ask Key Vault four times while it is throttled",
        Duration::from_secs(60),
        || {
            let asked = az.key_vault_faulted_requests().unwrap();
            async move { (asked.len() >= 4).then_some(asked) }
        },
    )
    .await;
    az.set_key_vault_fault(None).unwrap();
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    let floor = Duration::from_secs(RETRY_AFTER) - Duration::from_millis(300);
    assert!(
        gaps.iter().all(|gap| *gap >= floor),
        "Key Vault said Retry-After: {RETRY_AFTER}, and the operator asked again after {gaps:?}"
    );

    // Once Key Vault answers again, the database converges by itself.
    let databases = dynamic_api(&client, &ns, HOMELAB, "AppDatabase");
    eventually(
        "the throttled database to get its password once Key Vault answers",
        Duration::from_secs(60),
        || {
            let databases = databases.clone();
            let throttled = throttled.clone();
            async move {
                let db = serde_json::to_value(databases.get(&throttled).await.ok()?).ok()?;
                db["status"]["passwordOrigin"].is_string().then_some(())
            }
        },
    )
    .await;
    operator.stop().await;
}
