//! The Azure side of databases through the controller, against the Azure emulators (Azurite for
//! Blob Storage, the Key Vault emulator) and the real control plane: every database gets its
//! password, container and SAS token; a password is generated once and never again — not after a
//! restart, an outage, or a deleted and re-created AppDatabase.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use homelab_api::AppDatabase;
use homelab_azure::{
    AzureClients, BlobStore, ContainerName, ContainerOutcome, SecretName, SecretVault,
};
use homelab_testenv::TestEnv;
use homelab_testenv::azure::AzureEmulators;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::*;

const APPS: [&str; 5] = ["linkding", "commafeed", "wallabag", "n8n", "listmonk"];

fn clients(az: &AzureEmulators) -> AzureClients {
    emulator_clients(az, az.credential())
}

/// A ClusterSecretStore (unique to the test: it is cluster-scoped) pointing at the emulated vault,
/// and a BackupPolicy writing to the emulated storage account.
async fn setup(prefix: &str, az: &AzureEmulators) -> (kube::Client, String, String) {
    let env = TestEnv::get().await;
    let client = env.client().await.unwrap();
    let ns = env.namespace(prefix).await.unwrap();
    let store = secret_store(&client, &ns, az).await;
    apply_value(
        &client,
        &ns,
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "daily"},
            "spec": {"storage": {"azure": {
                "storageAccount": az.account_name(),
                "endpoint": az.blob_service_url(),
                "credentials": {"mode": "SasToken", "sasValidity": "7d"}
            }}}
        }),
    )
    .await;
    (client, ns, store)
}

/// Waits until the AppDatabase reports its password's origin and (with a policy) its SAS expiry.
async fn wait_azure_side(
    databases: &Api<AppDatabase>,
    name: &str,
    with_backup: bool,
) -> AppDatabase {
    eventually(
        &format!("the Azure side of {name}"),
        Duration::from_secs(60),
        || {
            let databases = databases.clone();
            let name = name.to_string();
            async move {
                let db = databases.get(&name).await.ok()?;
                let status = db.status.as_ref()?;
                status.password_origin.as_ref()?;
                if with_backup {
                    status.backup.as_ref()?.sas_expires.as_ref()?;
                }
                Some(db)
            }
        },
    )
    .await
}

#[tokio::test]
async fn every_example_database_gets_its_password_container_and_sas() {
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-examples", az).await;
    let operator = Operator::start_with_azure(
        &ns,
        &[&format!("--default-secret-store={store}")],
        clients(az),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let mut names = Vec::new();
    for app in APPS {
        let name = unique_app(&ns, app);
        apply_value(
            &client,
            &ns,
            json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
                   "metadata": {"name": name},
                   "spec": {"backup": {"policyRef": {"name": "daily"}}}}),
        )
        .await;
        names.push(name);
    }
    let vault = clients(az).key_vault();
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    for name in &names {
        let db = wait_azure_side(&databases, name, true).await;
        let status = db.status.unwrap();
        assert_eq!(status.password_origin.as_deref(), Some("Generated"));
        let password = vault
            .get(
                az.key_vault_url(),
                &SecretName::parse(&format!("{name}-db-password")).unwrap(),
            )
            .await
            .unwrap()
            .expect("password secret");
        assert!(password.is_managed_by_operator());
        assert!(password.value.expose().len() >= 24, "a strong password");
        let sas = vault
            .get(
                az.key_vault_url(),
                &SecretName::parse(&format!("{name}-db-backup-sas")).unwrap(),
            )
            .await
            .unwrap()
            .expect("SAS secret");
        let expires = sas.expires_on.expect("the SAS secret has an expiry");
        assert_eq!(
            Some(expires),
            status.backup.unwrap().sas_expires.map(|t| t.0),
            "status reports the SAS expiry"
        );
        let container = ContainerName::parse(&format!("{name}-db-clean")).unwrap();
        assert_eq!(
            blobs.ensure_container(&container).await.unwrap(),
            ContainerOutcome::Existing,
            "the controller created the container"
        );
    }
    operator.stop().await;
}

#[tokio::test]
async fn passwords_are_generated_once_and_existing_ones_adopted() {
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-once", az).await;
    let vault = clients(az).key_vault();
    let generated = unique_app(&ns, "gen");
    let adopted = unique_app(&ns, "adopt");
    // A password a person set before the database existed (as `az keyvault secret set` would)
    // is adopted, never replaced.
    set_by_hand(az, &format!("{adopted}-db-password"), "chosen-by-a-human").await;
    let preset = vault
        .get(
            az.key_vault_url(),
            &SecretName::parse(&format!("{adopted}-db-password")).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!preset.is_managed_by_operator());
    let store_arg = format!("--default-secret-store={store}");
    let operator = Operator::start_with_azure(&ns, &[&store_arg], clients(az)).await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    for name in [&generated, &adopted] {
        apply_value(
            &client,
            &ns,
            json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
                   "metadata": {"name": name}, "spec": {}}),
        )
        .await;
    }
    wait_azure_side(&databases, &generated, false).await;
    let db = wait_azure_side(&databases, &adopted, false).await;
    assert_eq!(
        db.status.unwrap().password_origin.as_deref(),
        Some("Adopted")
    );
    let current = |name: String| {
        let vault = clients(az).key_vault();
        async move {
            vault
                .get(
                    az.key_vault_url(),
                    &SecretName::parse(&format!("{name}-db-password")).unwrap(),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    let first = current(generated.clone()).await;
    let adopted_now = current(adopted.clone()).await;
    assert_eq!(
        adopted_now.version, preset.version,
        "the adopted secret keeps its version"
    );
    assert_eq!(adopted_now.value.expose(), "chosen-by-a-human");

    // An operator restart generates nothing.
    operator.stop().await;
    let operator = Operator::start_with_azure(&ns, &[&store_arg], clients(az)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(current(generated.clone()).await.version, first.version);

    // Deleting the AppDatabase (Retain) and creating it again adopts the same secret.
    databases
        .delete(&generated, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the AppDatabase to be gone", WAIT, || {
        let databases = databases.clone();
        let generated = generated.clone();
        async move {
            databases
                .get_opt(&generated)
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": generated}, "spec": {}}),
    )
    .await;
    wait_azure_side(&databases, &generated, false).await;
    let again = current(generated.clone()).await;
    assert_eq!(
        again.version, first.version,
        "re-creating the AppDatabase must not regenerate"
    );
    assert_eq!(again.value.expose(), first.value.expose());
    operator.stop().await;
}

#[tokio::test]
async fn a_key_vault_outage_is_reported_and_recovers_without_regenerating() {
    // A private set of emulators: this test stops one.
    let az = AzureEmulators::start().await.expect("Azure emulators");
    let (client, ns, store) = setup("azure-outage", &az).await;
    let store_arg = format!("--default-secret-store={store}");
    let operator = Operator::start_with_azure(&ns, &[&store_arg], clients(&az)).await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let name = unique_app(&ns, "outage");
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": name}, "spec": {}}),
    )
    .await;
    wait_azure_side(&databases, &name, false).await;
    let secret = SecretName::parse(&format!("{name}-db-password")).unwrap();
    let before = clients(&az)
        .key_vault()
        .get(az.key_vault_url(), &secret)
        .await
        .unwrap()
        .unwrap();

    // Stop the vault, and make the operator look again (a restart forgets what it verified).
    operator.stop().await;
    az.stop_key_vault().await.unwrap();
    let operator = Operator::start_with_azure(&ns, &[&store_arg], clients(&az)).await;
    eventually(
        "CredentialsReady=False with AzureUnreachable",
        Duration::from_secs(60),
        || {
            let databases = databases.clone();
            let name = name.clone();
            async move {
                let db = databases.get(&name).await.ok()?;
                let conditions = db.status?.conditions;
                let credentials = conditions.iter().find(|c| c.type_ == "CredentialsReady")?;
                let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
                (credentials.status == "False"
                    && credentials.reason == "AzureUnreachable"
                    && ready.status == "False")
                    .then_some(())
            }
        },
    )
    .await;

    az.start_key_vault().await.unwrap();
    eventually(
        "CredentialsReady to leave AzureUnreachable",
        Duration::from_secs(90),
        || {
            let databases = databases.clone();
            let name = name.clone();
            async move {
                let db = databases.get(&name).await.ok()?;
                let conditions = db.status?.conditions;
                let credentials = conditions.iter().find(|c| c.type_ == "CredentialsReady")?;
                (credentials.reason != "AzureUnreachable").then_some(())
            }
        },
    )
    .await;
    let after = clients(&az)
        .key_vault()
        .get(az.key_vault_url(), &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.version, before.version,
        "the outage must not regenerate the password"
    );
    operator.stop().await;
}

#[tokio::test]
async fn deleting_with_delete_removes_the_azure_side_and_retain_keeps_it() {
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-delete", az).await;
    let operator = Operator::start_with_azure(
        &ns,
        &[&format!("--default-secret-store={store}")],
        clients(az),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let deleted = unique_app(&ns, "gone");
    let kept = unique_app(&ns, "kept");
    for (name, policy) in [(&deleted, "Delete"), (&kept, "Retain")] {
        apply_value(
            &client,
            &ns,
            json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
                   "metadata": {"name": name},
                   "spec": {"deletionPolicy": policy, "backup": {"policyRef": {"name": "daily"}}}}),
        )
        .await;
        wait_azure_side(&databases, name, true).await;
    }
    for name in [&deleted, &kept] {
        databases
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&deleted, &kept] {
        eventually("the AppDatabase to be gone", WAIT, || {
            let databases = databases.clone();
            let name = name.clone();
            async move { databases.get_opt(&name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
    let vault = clients(az).key_vault();
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    let password = |name: &str| SecretName::parse(&format!("{name}-db-password")).unwrap();
    let container = |name: &str| ContainerName::parse(&format!("{name}-db-clean")).unwrap();

    assert!(
        vault
            .get(az.key_vault_url(), &password(&kept))
            .await
            .unwrap()
            .is_some(),
        "Retain keeps the password"
    );
    assert_eq!(
        blobs.ensure_container(&container(&kept)).await.unwrap(),
        ContainerOutcome::Existing,
        "Retain keeps the backup container"
    );
    assert!(
        vault
            .get(az.key_vault_url(), &password(&deleted))
            .await
            .unwrap()
            .is_none(),
        "Delete removes the password"
    );
    assert!(
        !blobs.delete_container(&container(&deleted)).await.unwrap(),
        "Delete removes the backup container"
    );
    operator.stop().await;
}

/// `deletionPolicy: Delete` removes what the operator recorded it created in Azure when it
/// ensured it, even once the BackupPolicy and the ClusterSecretStore that named the container and
/// the vault are deleted first (as `kubectl delete -f` of a whole directory may); the Event
/// names what was deleted.
#[tokio::test]
async fn delete_removes_what_was_recorded_after_its_policy_and_store_are_gone() {
    use k8s_openapi::api::events::v1::Event;
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-delete-late", az).await;
    let operator = Operator::start_with_azure(
        &ns,
        &[&format!("--default-secret-store={store}")],
        clients(az),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let name = unique_app(&ns, "late");
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": name},
               "spec": {"deletionPolicy": "Delete", "backup": {"policyRef": {"name": "daily"}}}}),
    )
    .await;
    let db = wait_azure_side(&databases, &name, true).await;
    let recorded = eventually("the Azure side recorded in status", WAIT, || {
        let databases = databases.clone();
        let name = name.clone();
        async move { databases.get(&name).await.ok()?.status?.azure }
    })
    .await;
    let names: Vec<&str> = recorded.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{name}-db-password").as_str(),
            format!("{name}-db-backup-sas").as_str()
        ]
    );
    assert_eq!(
        recorded
            .containers
            .iter()
            .map(|c| (c.service_url.as_str(), c.name.as_str()))
            .collect::<Vec<_>>(),
        [(az.blob_service_url(), format!("{name}-db-clean").as_str())]
    );
    drop(db);

    // The references go first.
    dynamic_api(&client, &ns, "homelab.io/v1alpha1", "BackupPolicy")
        .delete("daily", &DeleteParams::default())
        .await
        .unwrap();
    kube::Api::<kube::api::DynamicObject>::all_with(
        client.clone(),
        &resource("external-secrets.io/v1", "ClusterSecretStore"),
    )
    .delete(&store, &DeleteParams::default())
    .await
    .unwrap();
    databases
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the AppDatabase to be gone", WAIT, || {
        let databases = databases.clone();
        let name = name.clone();
        async move { databases.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;

    let vault = clients(az).key_vault();
    for secret in ["db-password", "db-backup-sas"] {
        let secret = SecretName::parse(&format!("{name}-{secret}")).unwrap();
        assert!(
            vault
                .get(az.key_vault_url(), &secret)
                .await
                .unwrap()
                .is_none(),
            "{secret:?} is deleted"
        );
    }
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    assert!(
        !blobs
            .delete_container(&ContainerName::parse(&format!("{name}-db-clean")).unwrap())
            .await
            .unwrap(),
        "the backup container is deleted"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = eventually("the DataDeleted Event", WAIT, || {
        let events = events.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("DataDeleted"))?
                .note
        }
    })
    .await;
    assert_eq!(
        note,
        format!(
            "deletionPolicy is Delete: deleted the CloudNativePG cluster {name}-db-cnpg-v1 and its backup configuration, the Blob container {name}-db-clean ({blob}), the Key Vault secret {name}-db-password ({vault}), the Key Vault secret {name}-db-backup-sas ({vault})",
            blob = az.blob_service_url(),
            vault = az.key_vault_url()
        )
    );
    operator.stop().await;
}

/// A deletion that Azure refuses (here Key Vault answers 403, from the emulator's fault: the real
/// service cannot be made to refuse on demand) holds the finalizer, and `Ready` says why while it
/// does; once Azure answers again the deletion completes.
#[tokio::test]
async fn a_deletion_azure_refuses_holds_the_finalizer_and_says_why() {
    use homelab_testenv::azure::KeyVaultFault;
    let az = AzureEmulators::start_private_key_vault()
        .await
        .expect("the Key Vault emulator");
    let env = TestEnv::get().await;
    let client = env.client().await.unwrap();
    let ns = env.namespace("azure-delete-held").await.unwrap();
    let store = secret_store(&client, &ns, &az).await;
    // A short resync: a refusal is not retried soon by itself.
    let operator = Operator::start_with_azure(
        &ns,
        &[
            &format!("--default-secret-store={store}"),
            "--resync-seconds=5",
        ],
        clients(&az),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let name = unique_app(&ns, "held");
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": name}, "spec": {"deletionPolicy": "Delete"}}),
    )
    .await;
    wait_azure_side(&databases, &name, false).await;

    az.set_key_vault_fault(Some(KeyVaultFault::Forbidden))
        .unwrap();
    databases
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let ready = eventually("Ready to say why deleting is held up", WAIT, || {
        let databases = databases.clone();
        let name = name.clone();
        async move {
            let db = databases.get_opt(&name).await.ok()??;
            db.metadata.deletion_timestamp.as_ref()?;
            let ready = db
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == "AzureForbidden").then_some(ready)
        }
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .starts_with("cannot delete the Azure side of this database (")
            && ready.message.ends_with(
                "); the AppDatabase stays until it can — or set deletionPolicy: Retain to keep the Azure data and let it go"
            ),
        "{}",
        ready.message
    );

    az.set_key_vault_fault(None).unwrap();
    eventually("the AppDatabase to be gone", WAIT, || {
        let databases = databases.clone();
        let name = name.clone();
        async move { databases.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let password = SecretName::parse(&format!("{name}-db-password")).unwrap();
    assert!(
        clients(&az)
            .key_vault()
            .get(az.key_vault_url(), &password)
            .await
            .unwrap()
            .is_none(),
        "the password is deleted once Key Vault answers"
    );
    operator.stop().await;
}

#[tokio::test]
async fn restoring_from_a_named_archive_gets_a_read_only_token_for_it() {
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-archive", az).await;
    // An archive left by a database that no longer exists.
    let source_app = unique_app(&ns, "old");
    let archive = ContainerName::parse(&format!("{source_app}-db-clean")).unwrap();
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    blobs.ensure_container(&archive).await.unwrap();
    let operator = Operator::start_with_azure(
        &ns,
        &[&format!("--default-secret-store={store}")],
        clients(az),
    )
    .await;
    let app = unique_app(&ns, "new");
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": app},
               "spec": {"restore": {"from": {"archive": {
                   "policyRef": {"name": "daily"},
                   "container": archive.as_str(),
                   "serverName": format!("{source_app}-db-cnpg-v1")}}}}}),
    )
    .await;
    let vault = clients(az).key_vault();
    let secret = SecretName::parse(&format!("{app}-db-restore-sas")).unwrap();
    let token = eventually(
        "the restore SAS in Key Vault",
        Duration::from_secs(60),
        || {
            let vault = vault.clone();
            let secret = secret.clone();
            async move { vault.get(az.key_vault_url(), &secret).await.ok().flatten() }
        },
    )
    .await;
    let token = token.value.expose().trim_start_matches('?').to_string();
    let http = az.http_client();
    let base = format!("{}/{}", az.blob_service_url(), archive.as_str());
    let list = http
        .get(format!("{base}?restype=container&comp=list&{token}"))
        .send()
        .await
        .unwrap();
    assert!(
        list.status().is_success(),
        "the token lists the archive: {}",
        list.status()
    );
    let write = http
        .put(format!("{base}/intruder.txt?{token}"))
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-version", "2025-01-05")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        write.status().as_u16(),
        403,
        "the restore token must not write"
    );
    // The read-only ObjectStore for the archive exists.
    let stores = dynamic_api(&client, &ns, "barmancloud.cnpg.io/v1", "ObjectStore");
    eventually("the restore ObjectStore", WAIT, || {
        let stores = stores.clone();
        let name = format!("{app}-db-restore");
        async move { stores.get_opt(&name).await.ok().flatten().map(|_| ()) }
    })
    .await;
    operator.stop().await;
}

/// Uploads a blob with a token the store mints for `container`, as Barman Cloud would.
async fn upload_with_sas(az: &AzureEmulators, container: &ContainerName, blob: &str) {
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    let token = blobs
        .container_sas(
            container,
            &homelab_azure::SasPolicy::default(),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let response = az
        .http_client()
        .put(format!(
            "{}/{blob}?{}",
            blobs.container_url(container),
            token.token.expose().trim_start_matches('?')
        ))
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-version", "2025-01-05")
        .body("wal segment")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// `status.backup.lastArchivedWal` and its metric are the upload time of the newest WAL segment
/// in the container; a database with a heartbeat writer whose archive gets nothing newer for
/// longer than walArchiveTimeout + heartbeat + 1 minute turns BackupReady False
/// (WALArchivingStale, naming the segment), and a newer segment clears it at the next listing.
#[tokio::test]
async fn the_newest_archived_wal_is_read_from_the_container() {
    let az = AzureEmulators::get().await;
    let (client, ns, store) = setup("azure-wal", az).await;
    apply_value(
        &client,
        &ns,
        json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "written"},
            "spec": {
                "walArchiveTimeout": "30s",
                "drill": {"schedule": "0 3 1 1 *", "heartbeatInterval": "1s"},
                "storage": {"azure": {
                    "storageAccount": az.account_name(),
                    "endpoint": az.blob_service_url(),
                    "credentials": {"mode": "SasToken", "sasValidity": "7d"}
                }}
            }
        }),
    )
    .await;
    let app = unique_app(&ns, "wal");
    let server = format!("{app}-db-cnpg-v1");
    let container = ContainerName::parse(&format!("{app}-db-clean")).unwrap();
    let blobs = clients(az).blob_store(az.blob_service_url()).unwrap();
    blobs.ensure_container(&container).await.unwrap();
    let first = "000000010000000000000003";
    upload_with_sas(
        az,
        &container,
        &format!("{server}/wals/0000000100000000/{first}.gz"),
    )
    .await;
    let uploaded = jiff::Timestamp::now();
    upload_with_sas(
        az,
        &container,
        &format!("{server}/wals/0000000100000000/000000010000000000000002.00000028.backup.gz"),
    )
    .await;

    let operator = Operator::start_with_azure(
        &ns,
        &[&format!("--default-secret-store={store}")],
        clients(az),
    )
    .await;
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": app},
               "spec": {"backup": {"policyRef": {"name": "written"}}}}),
    )
    .await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    let archived = |wanted: &'static str| {
        let databases = databases.clone();
        let app = app.clone();
        async move {
            let db = databases.get(&app).await.ok()?;
            let backup = db.status?.backup?;
            (backup.last_archived_wal_segment.as_deref() == Some(wanted))
                .then_some(backup.last_archived_wal?.0)
        }
    };
    let at = eventually("the first segment in the status", WAIT, || archived(first)).await;
    assert!(
        (at.as_second() - uploaded.as_second()).abs() <= 5,
        "lastArchivedWal {at} is not the upload time (~{uploaded})"
    );
    let metric = eventually("the archive metric", WAIT, || {
        let operator = &operator;
        let app = app.clone();
        async move {
            let value = operator
                .metric(
                    "homelab_wal_last_archived_timestamp_seconds",
                    &format!("database=\"{app}\""),
                )
                .await;
            value.filter(|v| *v > 0.0)
        }
    })
    .await;
    assert_eq!(metric as i64, at.as_second());
    let max_age = operator
        .metric(
            "homelab_wal_archive_max_age_seconds",
            &format!("database=\"{app}\""),
        )
        .await;
    assert_eq!(max_age, Some(91.0), "30s timeout + 1s heartbeat + 60s");

    // Nothing newer: stale 91 s after the upload (Last-Modified has whole seconds).
    let stale = eventually(
        "BackupReady=False/WALArchivingStale",
        Duration::from_secs(150),
        || {
            let databases = databases.clone();
            let app = app.clone();
            async move {
                let db = databases.get(&app).await.ok()?;
                let c = db
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "BackupReady")?;
                (c.status == "False" && c.reason == "WALArchivingStale").then_some(c.message)
            }
        },
    )
    .await;
    assert!(
        jiff::Timestamp::now().duration_since(at).as_secs() >= 91,
        "stale too early: {stale}"
    );
    assert!(stale.contains(first), "{stale}");

    // A newer segment, in the next directory: seen at the next listing, within a minute.
    let second = "000000010000000100000000";
    upload_with_sas(
        az,
        &container,
        &format!("{server}/wals/0000000100000001/{second}.gz"),
    )
    .await;
    eventually(
        "the newer segment in the status",
        Duration::from_secs(90),
        || archived(second),
    )
    .await;
    let db = databases.get(&app).await.unwrap();
    let ready = db
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "BackupReady")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("Unknown", "WaitingForFirstBackup"),
        "{}",
        ready.message
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_soft_deleted_password_is_recovered_unchanged_however_long_recovery_takes() {
    // A private Key Vault emulator: this test makes its recoveries take time, as Azure's do.
    let az = AzureEmulators::start_private_key_vault()
        .await
        .expect("the Key Vault emulator");
    az.set_key_vault_recovery_delay(Duration::from_secs(5))
        .unwrap();
    let env = TestEnv::get().await;
    let client = env.client().await.unwrap();
    let ns = env.namespace("azure-recovery").await.unwrap();
    let store = secret_store(&client, &ns, &az).await;
    let app = unique_app(&ns, "recovered");
    let name = SecretName::db_password(&app);
    // The password of an earlier life of the database, deleted by a person and kept soft-deleted.
    let vault = clients(&az).key_vault();
    let created = vault
        .ensure_password(az.key_vault_url(), &name)
        .await
        .unwrap();
    let before = vault.get(az.key_vault_url(), &name).await.unwrap().unwrap();
    sdk_secret_client(&az)
        .delete_secret(name.as_str(), None)
        .await
        .unwrap();

    let recovering = homelab_azure::AzureClients::with_credential(
        homelab_azure::AzureConfig {
            recover_soft_deleted: true,
            ..emulator_config()
        },
        az.credential(),
        Some(az.http_client()),
    );
    let store_arg = format!("--default-secret-store={store}");
    let operator = Operator::start_with_azure(&ns, &[&store_arg], recovering).await;
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), &ns);
    apply_value(
        &client,
        &ns,
        json!({"apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
               "metadata": {"name": app}, "spec": {}}),
    )
    .await;
    let db = wait_azure_side(&databases, &app, false).await;
    assert_eq!(
        db.status.unwrap().password_origin.as_deref(),
        Some("Recovered")
    );
    // The operator waited while the vault still answered "being recovered".
    assert!(
        az.key_vault_answered_while_recovering().unwrap() > 0,
        "the recovery completed before anyone looked: the delay was not exercised"
    );
    let after = vault
        .get(az.key_vault_url(), &name)
        .await
        .unwrap()
        .expect("the recovered password");
    assert_eq!(
        after.version,
        created.version(),
        "a new password was written"
    );
    assert_eq!(after.value.expose(), before.value.expose());
    operator.stop().await;
}
