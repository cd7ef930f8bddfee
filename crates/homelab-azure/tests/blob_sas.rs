//! The Blob adapter and SAS minting against Azurite, which enforces SAS signatures, scope,
//! permissions and expiry: a minted token works on its own container only, and only until it
//! expires; rotation stores a new token whose Key Vault expiry follows it.

mod common;

use std::time::Duration;

use azure_core::http::{RequestContent, Url};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::TryStreamExt;
use homelab_azure::{
    AzureConfig, BlobStore, ContainerName, ContainerOutcome, RotationReason, SasOutcome, SasPolicy,
    SasSigning, SecretName, SecretVault, WalSegment, ensure_backup_sas, newest_archived_wal,
};
use homelab_testenv::azure::AzureEmulators;
use jiff::Timestamp;

use common::{account_key_file, clients, emulator_config, unique};

/// A container client that authenticates with nothing but `token` in its URL.
#[allow(clippy::unwrap_used)]
fn sas_client(az: &AzureEmulators, container_url: &str, token: &str) -> BlobContainerClient {
    BlobContainerClient::new(
        Url::parse(&format!("{container_url}?{token}")).unwrap(),
        None,
        Some(BlobContainerClientOptions {
            client_options: az.client_options(),
            ..Default::default()
        }),
    )
    .unwrap()
}

async fn upload(client: &BlobContainerClient, name: &str) -> azure_core::Result<()> {
    client
        .blob_client(name)
        .upload(RequestContent::from(b"wal segment".to_vec()), None)
        .await
        .map(|_| ())
}

async fn list(client: &BlobContainerClient) -> azure_core::Result<Vec<String>> {
    client
        .list_blobs(None)?
        .map_ok(|blob| blob.name.unwrap_or_default())
        .try_collect()
        .await
}

#[tokio::test]
async fn ensure_container_is_idempotent_and_delete_reports_absence() {
    let Some(az) = AzureEmulators::get_or_skip("ensure_container").await else {
        return;
    };
    let store = clients(az, emulator_config())
        .blob_store(az.blob_service_url())
        .unwrap();
    assert_eq!(store.account_name(), "devstoreaccount1");
    let container = ContainerName::backup(&unique("app"));
    assert_eq!(
        store.ensure_container(&container).await.unwrap(),
        ContainerOutcome::Created
    );
    assert_eq!(
        store.ensure_container(&container).await.unwrap(),
        ContainerOutcome::Existing
    );
    assert!(store.delete_container(&container).await.unwrap());
    assert!(!store.delete_container(&container).await.unwrap());
}

#[tokio::test]
async fn user_delegation_sas_works_on_its_container_only_and_until_it_expires() {
    let Some(az) = AzureEmulators::get_or_skip("user_delegation_sas").await else {
        return;
    };
    let store = clients(az, emulator_config())
        .blob_store(az.blob_service_url())
        .unwrap();
    let own = ContainerName::backup(&unique("own"));
    let other = ContainerName::backup(&unique("other"));
    store.ensure_container(&own).await.unwrap();
    store.ensure_container(&other).await.unwrap();

    let policy = SasPolicy {
        // Long enough for the checks below on a loaded machine, short enough to wait out.
        lifetime: Duration::from_secs(10),
        ..SasPolicy::default()
    };
    let token = store
        .container_sas(&own, &policy, Timestamp::now())
        .await
        .unwrap();
    let t = token.token.expose();
    assert!(
        t.contains("sp=rwdl") && t.contains("spr=https") && t.contains("skoid="),
        "{t}"
    );

    let client = sas_client(az, &store.container_url(&own), t);
    upload(&client, "wals/000000010000000000000001")
        .await
        .unwrap();
    upload(&client, "base/20260101T000000/data.tar")
        .await
        .unwrap();
    let mut names = list(&client).await.unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "base/20260101T000000/data.tar",
            "wals/000000010000000000000001"
        ]
    );
    client
        .blob_client("base/20260101T000000/data.tar")
        .delete(None)
        .await
        .unwrap();

    let elsewhere = sas_client(az, &store.container_url(&other), t);
    let refused = upload(&elsewhere, "intruder").await.unwrap_err();
    assert_eq!(refused.http_status().map(u16::from), Some(403), "{refused}");
    let refused = list(&elsewhere).await.unwrap_err();
    assert_eq!(refused.http_status().map(u16::from), Some(403), "{refused}");

    // Wait until the token has expired (its expiry has whole-second precision).
    let wait = token.expires_on.as_second() - Timestamp::now().as_second() + 2;
    tokio::time::sleep(Duration::from_secs(u64::try_from(wait.max(0)).unwrap())).await;
    let expired = list(&client).await.unwrap_err();
    assert_eq!(expired.http_status().map(u16::from), Some(403), "{expired}");
    let expired = upload(&client, "late").await.unwrap_err();
    assert_eq!(expired.http_status().map(u16::from), Some(403), "{expired}");
}

#[tokio::test]
async fn user_delegation_sas_is_capped_at_seven_days() {
    let Some(az) = AzureEmulators::get_or_skip("user_delegation_cap").await else {
        return;
    };
    let store = clients(az, emulator_config())
        .blob_store(az.blob_service_url())
        .unwrap();
    let container = ContainerName::backup(&unique("cap"));
    store.ensure_container(&container).await.unwrap();
    let now = Timestamp::now();
    let token = store
        .container_sas(&container, &SasPolicy::default(), now)
        .await
        .unwrap();
    let lifetime = token.expires_on.as_second() - now.as_second();
    assert!(
        (7 * 86400 - 1..=7 * 86400).contains(&lifetime),
        "{lifetime}"
    );
    let client = sas_client(az, &store.container_url(&container), token.token.expose());
    upload(&client, "x").await.unwrap();
}

#[tokio::test]
async fn service_sas_signed_with_the_account_key_works_on_its_container_only() {
    let Some(az) = AzureEmulators::get_or_skip("service_sas").await else {
        return;
    };
    let config = AzureConfig {
        sas_signing: SasSigning::AccountKey {
            key_file: account_key_file(az),
        },
        ..emulator_config()
    };
    let store = clients(az, config)
        .blob_store(az.blob_service_url())
        .unwrap();
    let own = ContainerName::backup(&unique("svc"));
    let other = ContainerName::backup(&unique("svc-other"));
    store.ensure_container(&own).await.unwrap();
    store.ensure_container(&other).await.unwrap();
    let now = Timestamp::now();
    let token = store
        .container_sas(&own, &SasPolicy::default(), now)
        .await
        .unwrap();
    assert_eq!(
        token.expires_on.as_second() - now.as_second(),
        30 * 86400,
        "the default lifetime is 30 days"
    );
    let t = token.token.expose();
    assert!(
        !t.contains("skoid="),
        "a service SAS has no delegation key: {t}"
    );
    let client = sas_client(az, &store.container_url(&own), t);
    upload(&client, "wal").await.unwrap();
    assert_eq!(list(&client).await.unwrap(), ["wal"]);
    let elsewhere = sas_client(az, &store.container_url(&other), t);
    let refused = upload(&elsewhere, "wal").await.unwrap_err();
    assert_eq!(refused.http_status().map(u16::from), Some(403), "{refused}");
}

#[tokio::test]
async fn backup_sas_is_stored_with_its_expiry_and_rotated_when_a_third_remains() {
    let Some(az) = AzureEmulators::get_or_skip("backup_sas_rotation").await else {
        return;
    };
    let vault = az.key_vault_url();
    let azure = clients(az, common::account_key_config(az));
    let store = azure.blob_store(az.blob_service_url()).unwrap();
    let secrets = azure.key_vault();
    let app = unique("rot");
    let container = ContainerName::backup(&app);
    let secret = SecretName::backup_sas(&app);
    store.ensure_container(&container).await.unwrap();
    let policy = SasPolicy::default();
    let now = Timestamp::now();

    let first = ensure_backup_sas(&secrets, vault, &secret, &store, &container, &policy, now)
        .await
        .unwrap();
    let SasOutcome::Minted {
        version: v1,
        expires_on: exp1,
        reason: RotationReason::Missing,
        rotate_at,
    } = first.clone()
    else {
        panic!("expected a first token, got {first:?}");
    };
    assert_eq!(first.requeue_at(), Some(rotate_at));
    assert_eq!(
        rotate_at.as_second() - now.as_second(),
        20 * 86400,
        "due after two thirds"
    );
    let stored = secrets.get(vault, &secret).await.unwrap().unwrap();
    assert_eq!(stored.version, v1);
    assert_eq!(
        stored.expires_on,
        Some(exp1),
        "the secret's exp is the token's se"
    );
    let token1 = stored.value.clone();
    let client = sas_client(az, &store.container_url(&container), token1.expose());
    upload(&client, "from-stored-token").await.unwrap();

    // Ten days on, two thirds remain: kept.
    let later = now + jiff::SignedDuration::from_hours(10 * 24);
    let kept = ensure_backup_sas(&secrets, vault, &secret, &store, &container, &policy, later)
        .await
        .unwrap();
    assert!(
        matches!(&kept, SasOutcome::Kept { version, .. } if *version == v1),
        "{kept:?}"
    );

    // Twenty-one days on, less than a third remains: a new token, a new version, a new exp.
    let due = now + jiff::SignedDuration::from_hours(21 * 24);
    let rotated = ensure_backup_sas(&secrets, vault, &secret, &store, &container, &policy, due)
        .await
        .unwrap();
    let SasOutcome::Minted {
        version: v2,
        expires_on: exp2,
        reason: RotationReason::LessThanAThirdLeft,
        ..
    } = rotated.clone()
    else {
        panic!("expected a rotation, got {rotated:?}");
    };
    assert_ne!(v2, v1);
    assert_eq!(exp2.as_second() - due.as_second(), 30 * 86400);
    let stored = secrets.get(vault, &secret).await.unwrap().unwrap();
    assert_eq!(stored.version, v2);
    assert_eq!(stored.expires_on, Some(exp2));
    assert_ne!(stored.value, token1);
}

#[tokio::test]
async fn a_sas_secret_written_by_someone_else_is_left_alone() {
    let Some(az) = AzureEmulators::get_or_skip("foreign_sas").await else {
        return;
    };
    let vault = az.key_vault_url();
    let azure = clients(az, emulator_config());
    let store = azure.blob_store(az.blob_service_url()).unwrap();
    let app = unique("foreign");
    let secret = SecretName::backup_sas(&app);
    let container = ContainerName::backup(&app);
    store.ensure_container(&container).await.unwrap();
    // A token a person minted (`az storage container generate-sas`) and stored by hand.
    let token = store
        .container_sas(&container, &SasPolicy::default(), Timestamp::now())
        .await
        .unwrap();
    common::set_by_hand(az, secret.as_str(), token.token.expose()).await;
    let outcome = ensure_backup_sas(
        &azure.key_vault(),
        vault,
        &secret,
        &store,
        &container,
        &SasPolicy::default(),
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, SasOutcome::NotManaged { .. }),
        "{outcome:?}"
    );
    assert_eq!(common::version_count(az, secret.as_str()).await, 1);
}

/// A token for `container` that expired two days ago, signed as `store` signs.
#[allow(clippy::unwrap_used)]
async fn expired_token(store: &dyn BlobStore, container: &ContainerName) -> String {
    let policy = SasPolicy {
        lifetime: Duration::from_secs(86_400),
        ..SasPolicy::default()
    };
    let three_days_ago = Timestamp::now() - jiff::SignedDuration::from_hours(72);
    let token = store
        .container_sas(container, &policy, three_days_ago)
        .await
        .unwrap();
    assert!(
        token.expires_on < Timestamp::now(),
        "the token is not expired"
    );
    token.token.expose().to_owned()
}

#[tokio::test]
async fn an_expired_sas_someone_else_stored_is_reported_with_blob_storages_answer_and_kept() {
    let Some(az) = AzureEmulators::get_or_skip("foreign_expired_sas").await else {
        return;
    };
    let vault = az.key_vault_url();
    let azure = clients(az, common::account_key_config(az));
    let store = azure.blob_store(az.blob_service_url()).unwrap();
    let app = unique("stale");
    let secret = SecretName::backup_sas(&app);
    let container = ContainerName::backup(&app);
    store.ensure_container(&container).await.unwrap();
    let expired = expired_token(&store, &container).await;
    // Azurite itself refuses it: the fault is Blob Storage's answer, not the adapter's opinion.
    let refused = list(&sas_client(az, &store.container_url(&container), &expired))
        .await
        .unwrap_err();
    assert_eq!(refused.http_status().map(u16::from), Some(403), "{refused}");
    common::set_by_hand(az, secret.as_str(), &expired).await;

    let error = ensure_backup_sas(
        &azure.key_vault(),
        vault,
        &secret,
        &store,
        &container,
        &SasPolicy::default(),
        Timestamp::now(),
    )
    .await
    .unwrap_err();
    let homelab_azure::AzureError::SasRefused {
        name,
        container: for_container,
        answer,
        ..
    } = &error
    else {
        panic!("expected SasRefused, got {error:?}");
    };
    assert_eq!(name, secret.as_str());
    assert_eq!(for_container, container.as_str());
    assert!(answer.starts_with("403 "), "{answer}");
    assert!(!error.is_transient());
    assert_eq!(
        common::version_count(az, secret.as_str()).await,
        1,
        "a token someone else stored was replaced"
    );
}

#[tokio::test]
async fn a_stored_sas_that_blob_storage_refuses_is_minted_again() {
    let Some(az) = AzureEmulators::get_or_skip("refused_sas").await else {
        return;
    };
    let vault = az.key_vault_url();
    let azure = clients(az, common::account_key_config(az));
    let store = azure.blob_store(az.blob_service_url()).unwrap();
    let secrets = azure.key_vault();
    let app = unique("revoked");
    let secret = SecretName::backup_sas(&app);
    let container = ContainerName::backup(&app);
    store.ensure_container(&container).await.unwrap();
    let policy = SasPolicy::default();
    let first = ensure_backup_sas(
        &secrets,
        vault,
        &secret,
        &store,
        &container,
        &policy,
        Timestamp::now(),
    )
    .await
    .unwrap();
    let SasOutcome::Minted { expires_on, .. } = first else {
        panic!("expected a first token, got {first:?}");
    };
    // The operator's own secret, still valid by its Key Vault expiry, now holds a token Blob
    // Storage refuses (as after an account key rotation, which Azurite cannot do).
    let signed_for = store.container_url(&container);
    secrets
        .set_with_expiry(
            vault,
            &secret,
            &homelab_azure::SecretValue::new(expired_token(&store, &container).await),
            homelab_azure::SAS_CONTENT_TYPE,
            expires_on,
            &[(homelab_azure::SIGNED_FOR_TAG, signed_for.as_str())],
        )
        .await
        .unwrap();

    let again = ensure_backup_sas(
        &secrets,
        vault,
        &secret,
        &store,
        &container,
        &policy,
        Timestamp::now(),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            again,
            SasOutcome::Minted {
                reason: RotationReason::RefusedByBlobStorage,
                ..
            }
        ),
        "{again:?}"
    );
    let stored = secrets.get(vault, &secret).await.unwrap().unwrap();
    list(&sas_client(az, &signed_for, stored.value.expose()))
        .await
        .expect("the new token is accepted");
}

#[tokio::test]
async fn a_stored_sas_for_another_container_is_minted_again_for_this_one() {
    let Some(az) = AzureEmulators::get_or_skip("sas_for_another_container").await else {
        return;
    };
    let vault = az.key_vault_url();
    let azure = clients(az, common::account_key_config(az));
    let store = azure.blob_store(az.blob_service_url()).unwrap();
    let secrets = azure.key_vault();
    let app = unique("moved");
    let secret = SecretName::backup_sas(&app);
    let old_container = ContainerName::backup(&app);
    let new_container = ContainerName::backup(&unique("moved-to"));
    for container in [&old_container, &new_container] {
        store.ensure_container(container).await.unwrap();
    }
    let policy = SasPolicy::default();
    let now = Timestamp::now();
    let first = ensure_backup_sas(
        &secrets,
        vault,
        &secret,
        &store,
        &old_container,
        &policy,
        now,
    )
    .await
    .unwrap();
    assert!(matches!(first, SasOutcome::Minted { .. }), "{first:?}");
    let old_token = secrets.get(vault, &secret).await.unwrap().unwrap().value;

    // The database's container changed (its policy's template or storage account did): the
    // stored token, fresh as it is, is for the old one and is replaced.
    let moved = ensure_backup_sas(
        &secrets,
        vault,
        &secret,
        &store,
        &new_container,
        &policy,
        now,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            moved,
            SasOutcome::Minted {
                reason: RotationReason::SignedForAnotherContainer,
                ..
            }
        ),
        "{moved:?}"
    );
    let new_token = secrets.get(vault, &secret).await.unwrap().unwrap().value;
    assert_ne!(new_token, old_token);
    let on_new = sas_client(az, &store.container_url(&new_container), new_token.expose());
    upload(&on_new, "after-the-move").await.unwrap();
    let refused = upload(
        &sas_client(az, &store.container_url(&new_container), old_token.expose()),
        "with-the-old-token",
    )
    .await
    .unwrap_err();
    assert_eq!(refused.http_status().map(u16::from), Some(403), "{refused}");

    // Signed for this container now: kept.
    let kept = ensure_backup_sas(
        &secrets,
        vault,
        &secret,
        &store,
        &new_container,
        &policy,
        now,
    )
    .await
    .unwrap();
    assert!(matches!(kept, SasOutcome::Kept { .. }), "{kept:?}");
}

/// The newest WAL segment is read from the archive as `barman-cloud-wal-archive` lays it out:
/// the greatest segment name wins over later uploads of other files, a known segment narrows
/// the listing to its directory and still finds the next directory and the next timeline, and a
/// segment that is gone sends the probe back to the whole archive.
#[tokio::test]
async fn the_newest_archived_wal_segment_is_read_from_the_archive() {
    let Some(az) = AzureEmulators::get_or_skip("newest_archived_wal").await else {
        return;
    };
    let store = clients(az, emulator_config())
        .blob_store(az.blob_service_url())
        .unwrap();
    let container = ContainerName::backup(&unique("wal"));
    store.ensure_container(&container).await.unwrap();
    let token = store
        .container_sas(&container, &SasPolicy::default(), Timestamp::now())
        .await
        .unwrap();
    let client = sas_client(az, &store.container_url(&container), token.token.expose());
    let server = "app-db-cnpg-v1";
    let newest = |known: Option<WalSegment>| {
        let store = &store;
        let container = &container;
        async move {
            newest_archived_wal(store, container, server, known.as_ref())
                .await
                .unwrap()
                .map(|wal| wal.segment.to_string())
        }
    };

    assert_eq!(newest(None).await, None, "an empty archive has no segment");
    for name in [
        "wals/0000000100000000/000000010000000000000001.gz",
        "wals/0000000100000000/000000010000000000000002.gz",
        "wals/0000000100000000/000000010000000000000002.00000028.backup.gz",
        "base/20261203T010000/data.tar",
    ] {
        upload(&client, &format!("{server}/{name}")).await.unwrap();
    }
    // Another server's archive in the same container is not this database's.
    upload(
        &client,
        "other-db-cnpg-v1/wals/0000000900000000/000000090000000000000001",
    )
    .await
    .unwrap();
    let before = Timestamp::now();
    let first = newest_archived_wal(&store, &container, server, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.segment.as_str(), "000000010000000000000002");
    assert!(
        (first.archived_at.as_second() - before.as_second()).abs() <= 5,
        "Last-Modified {} is not the upload time (~{before})",
        first.archived_at
    );

    let known = Some(first.segment.clone());
    assert_eq!(
        newest(known.clone()).await.as_deref(),
        Some("000000010000000000000002"),
        "nothing newer: the known segment stands"
    );
    upload(
        &client,
        &format!("{server}/wals/0000000100000001/000000010000000100000000.gz"),
    )
    .await
    .unwrap();
    assert_eq!(
        newest(known).await.as_deref(),
        Some("000000010000000100000000"),
        "the next directory"
    );
    upload(&client, &format!("{server}/wals/00000002.history"))
        .await
        .unwrap();
    upload(
        &client,
        &format!("{server}/wals/0000000200000001/000000020000000100000000.gz"),
    )
    .await
    .unwrap();
    assert_eq!(
        newest(WalSegment::parse("000000010000000100000000"))
            .await
            .as_deref(),
        Some("000000020000000100000000"),
        "the next timeline"
    );
    assert_eq!(
        newest(WalSegment::parse("0000000700000000000000AA"))
            .await
            .as_deref(),
        Some("000000020000000100000000"),
        "a known segment that is gone: the whole archive"
    );
    store.delete_container(&container).await.unwrap();
}
