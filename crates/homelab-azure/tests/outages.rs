//! Outages and refusals give typed errors, and the adapter converges once they end. Each test
//! stops emulators or injects faults, so each takes a private set of emulators.

mod common;

use std::time::Duration;

use homelab_azure::{
    AzureError, AzureRole, BlobStore, ContainerName, SecretName, SecretOutcome, SecretVault,
    Service,
};
use homelab_testenv::azure::{AzureEmulators, KeyVaultFault};

use common::{clients, emulator_config, unique, version_count};

/// Retries `attempt` like a controller requeueing after an outage: transient errors (such as a
/// pooled connection to the stopped server) are retried for a while, anything else fails.
async fn converge<T, Fut>(mut attempt: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, AzureError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                eprintln!("not yet converged: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("did not converge after the restart: {e:?}"),
        }
    }
}

/// Private emulators, or `None` when Azurite is not installed and this is not CI.
async fn private(test: &str) -> Option<AzureEmulators> {
    AzureEmulators::start_or_skip(test).await
}

#[tokio::test]
async fn key_vault_outage_is_unreachable_and_restart_converges_without_a_new_password() {
    let Some(az) = private("key_vault_outage").await else {
        return;
    };
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("outage"));
    let adapter = clients(&az, emulator_config()).key_vault();
    let created = adapter.ensure_password(vault, &name).await.unwrap();

    az.stop_key_vault().await.unwrap();
    let error = adapter.ensure_password(vault, &name).await.unwrap_err();
    assert!(
        matches!(&error, AzureError::Unreachable { service: Service::KeyVault, endpoint, .. } if endpoint == vault),
        "{error:?}"
    );
    assert!(error.is_transient());
    // A fresh adapter (operator restarted during the outage) fails the same way.
    let fresh = clients(&az, emulator_config()).key_vault();
    let error = fresh.ensure_password(vault, &name).await.unwrap_err();
    assert!(matches!(error, AzureError::Unreachable { .. }), "{error:?}");

    az.start_key_vault().await.unwrap();
    for adapter in [&adapter, &fresh] {
        let outcome = converge(|| adapter.ensure_password(vault, &name)).await;
        assert_eq!(
            outcome,
            SecretOutcome::Unchanged {
                version: created.version().to_owned()
            }
        );
    }
    assert_eq!(version_count(&az, name.as_str()).await, 1);
}

#[tokio::test]
async fn blob_outage_is_unreachable_and_restart_converges() {
    let Some(az) = private("blob_outage").await else {
        return;
    };
    let store = clients(&az, emulator_config())
        .blob_store(az.blob_service_url())
        .unwrap();
    let container = ContainerName::backup(&unique("outage"));
    store.ensure_container(&container).await.unwrap();

    az.stop_azurite().await.unwrap();
    let error = store.ensure_container(&container).await.unwrap_err();
    assert!(
        matches!(
            error,
            AzureError::Unreachable {
                service: Service::BlobStorage,
                ..
            }
        ),
        "{error:?}"
    );
    let error = store
        .container_sas(&container, &Default::default(), jiff::Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(error, AzureError::Unreachable { .. }), "{error:?}");

    az.start_azurite().await.unwrap();
    converge(|| async {
        store.ensure_container(&container).await?;
        store
            .container_sas(&container, &Default::default(), jiff::Timestamp::now())
            .await
    })
    .await;
}

#[tokio::test]
async fn forbidden_names_the_missing_role() {
    let Some(az) = private("forbidden").await else {
        return;
    };
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("forbidden"));
    let adapter = clients(&az, emulator_config()).key_vault();

    az.set_key_vault_fault(Some(KeyVaultFault::Forbidden))
        .unwrap();
    let error = adapter.ensure_password(vault, &name).await.unwrap_err();
    let AzureError::Forbidden {
        service,
        role,
        code,
        ..
    } = &error
    else {
        panic!("expected Forbidden, got {error:?}");
    };
    assert_eq!(*service, Service::KeyVault);
    assert_eq!(*role, AzureRole::KeyVaultSecretsOfficer);
    assert_eq!(code.as_deref(), Some("ForbiddenByRbac"));
    assert!(
        error.to_string().contains("Key Vault Secrets Officer"),
        "{error}"
    );
    assert!(!error.is_transient());

    az.set_key_vault_fault(None).unwrap();
    let outcome = adapter.ensure_password(vault, &name).await.unwrap();
    assert!(
        matches!(outcome, SecretOutcome::Created { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn throttling_is_typed_and_carries_retry_after() {
    let Some(az) = private("throttled").await else {
        return;
    };
    let vault = az.key_vault_url();
    let name = SecretName::db_password(&unique("throttled"));
    let adapter = clients(&az, emulator_config()).key_vault();

    az.set_key_vault_fault(Some(KeyVaultFault::Throttled {
        retry_after_secs: 1,
    }))
    .unwrap();
    let error = adapter.ensure_password(vault, &name).await.unwrap_err();
    assert!(
        matches!(
            error,
            AzureError::Throttled {
                service: Service::KeyVault,
                retry_after: Some(d)
            } if d == Duration::from_secs(1)
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));

    az.set_key_vault_fault(None).unwrap();
    adapter.ensure_password(vault, &name).await.unwrap();
    assert_eq!(version_count(&az, name.as_str()).await, 1);
}
