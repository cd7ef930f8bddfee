//! A token the services do not accept is reported as an authentication problem (with what to
//! check), not as a missing role: Key Vault answers 401, Storage 403 `AuthenticationFailed`.

mod common;

use std::sync::Arc;

use homelab_azure::{
    AzureClients, AzureError, BlobStore, ContainerName, SecretName, SecretVault, Service,
};
use homelab_testenv::azure::AzureEmulators;

use common::{WrongAudienceCredential, emulator_config, unique};

fn misconfigured(az: &AzureEmulators) -> AzureClients {
    AzureClients::with_credential(
        emulator_config(),
        Arc::new(WrongAudienceCredential),
        Some(az.http_client()),
    )
}

#[tokio::test]
async fn key_vault_refusing_the_token_is_unauthenticated() {
    let az = AzureEmulators::key_vault().await;
    let error = misconfigured(az)
        .key_vault()
        .ensure_password(
            az.key_vault_url(),
            &SecretName::db_password(&unique("auth")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            AzureError::Unauthenticated {
                service: Service::KeyVault,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("workload identity"), "{error}");
}

#[tokio::test]
async fn storage_refusing_the_token_is_unauthenticated() {
    let Some(az) = AzureEmulators::get_or_skip("blob unauthenticated").await else {
        return;
    };
    let error = misconfigured(az)
        .blob_store(az.blob_service_url())
        .unwrap()
        .ensure_container(&ContainerName::backup(&unique("auth")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            AzureError::Unauthenticated {
                service: Service::BlobStorage,
                ..
            }
        ),
        "{error:?}"
    );
}
