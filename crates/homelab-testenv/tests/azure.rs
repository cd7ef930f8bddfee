//! Smoke tests: Microsoft's official Azure SDK crates work against the emulators unchanged —
//! a container is created and a blob uploaded and listed in Azurite, and a secret is set and read
//! back in Key Vault (the Key Vault emulator alone, so that test does not need Azurite). A missing
//! Azurite fails the Blob test, unless a local run opted out of it (`homelab_testenv::skip`).

use azure_core::http::{RequestContent, Url};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use futures::TryStreamExt;
use homelab_testenv::azure::AzureEmulators;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn blob_container_is_created_and_a_blob_uploaded_and_listed() -> anyhow::Result<()> {
    let Some(az) = AzureEmulators::get_or_skip("blob smoke test").await else {
        return Ok(());
    };
    let service = BlobServiceClient::new(
        Url::parse(az.blob_service_url())?,
        Some(az.credential()),
        Some(BlobServiceClientOptions {
            client_options: az.client_options(),
            ..Default::default()
        }),
    )?;
    let container = service.blob_container_client(&unique("smoke"));
    container.create(None).await?;
    assert!(
        container.exists().await?,
        "the container exists after create"
    );

    container
        .blob_client("base/backup.tar")
        .upload(RequestContent::from(b"not really a backup".to_vec()), None)
        .await?;

    let names: Vec<String> = container
        .list_blobs(None)?
        .map_ok(|blob| blob.name.unwrap_or_default())
        .try_collect()
        .await?;
    assert_eq!(names, ["base/backup.tar"]);

    let download = container
        .blob_client("base/backup.tar")
        .download(None)
        .await?;
    let bytes = download.body.collect().await?;
    assert_eq!(&bytes[..], b"not really a backup");
    Ok(())
}

#[tokio::test]
async fn secret_is_set_and_read_back() -> anyhow::Result<()> {
    let az = AzureEmulators::key_vault().await;
    let client = SecretClient::new(
        az.key_vault_url(),
        az.credential(),
        Some(SecretClientOptions {
            client_options: az.client_options(),
            // The emulator's challenge names https://vault.azure.net, which 127.0.0.1 is not in.
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )?;
    let name = unique("smoke-secret");
    let set = client
        .set_secret(
            &name,
            SetSecretParameters {
                value: Some("s3cr3t".into()),
                content_type: Some("text/plain".into()),
                ..Default::default()
            }
            .try_into()?,
            None,
        )
        .await?
        .into_model()?;
    let set_id = set.id.unwrap_or_default();
    assert!(
        set_id.starts_with(&format!("{}/secrets/{name}/", az.key_vault_url())),
        "id {set_id} names the vault, the secret and a version"
    );

    let got = client.get_secret(&name, None).await?.into_model()?;
    assert_eq!(got.value.as_deref(), Some("s3cr3t"));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.id.as_deref(), Some(set_id.as_str()));
    Ok(())
}
