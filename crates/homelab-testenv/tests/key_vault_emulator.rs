//! The Key Vault emulator behaves as the documented Key Vault secrets API does, seen through the
//! official SDK and through raw HTTP: authentication challenge, versions, paging, soft delete,
//! recovery, purge, and error bodies with the service's codes.

use azure_core::error::ErrorKind;
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions,
    SecretClientListSecretPropertiesVersionsOptions, SetSecretParameters,
    UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use homelab_testenv::azure::{AzureEmulators, EmulatorCredential, KEY_VAULT_RESOURCE};
use serde_json::Value;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[allow(clippy::unwrap_used)]
fn client(az: &AzureEmulators) -> SecretClient {
    SecretClient::new(
        az.key_vault_url(),
        az.credential(),
        Some(SecretClientOptions {
            client_options: az.client_options(),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .unwrap()
}

#[allow(clippy::unwrap_used)]
async fn set(client: &SecretClient, name: &str, value: &str) -> String {
    let secret = client
        .set_secret(
            name,
            SetSecretParameters {
                value: Some(value.into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    secret.id.unwrap().rsplit('/').next().unwrap().to_owned()
}

fn status_and_code(error: &azure_core::Error) -> (Option<u16>, Option<String>) {
    match error.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (Some(u16::from(*status)), error_code.clone()),
        _ => (None, None),
    }
}

#[tokio::test]
async fn requests_without_a_token_get_the_key_vault_challenge() {
    let az = AzureEmulators::key_vault().await;
    let http = az.http_client();
    let url = format!("{}/secrets/anything?api-version=7.5", az.key_vault_url());

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer authorization=\"https://login.microsoftonline.com/"));
    assert!(
        challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");

    // A token for another audience is refused too.
    let storage_token = EmulatorCredential::token_for("https://storage.azure.com/.default");
    let response = http
        .get(&url)
        .bearer_auth(storage_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // The right audience but no api-version: BadParameter.
    let token = EmulatorCredential::token_for(&format!("{KEY_VAULT_RESOURCE}/.default"));
    let response = http
        .get(format!("{}/secrets/anything", az.key_vault_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadParameter");

    // An invalid name: BadParameter.
    let response = http
        .put(format!(
            "{}/secrets/no_underscores?api-version=7.5",
            az.key_vault_url()
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "value": "v" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn versions_are_kept_listed_in_pages_and_updated_individually() {
    let az = AzureEmulators::key_vault().await;
    let client = client(az);
    let name = unique("versions");
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(set(&client, &name, &format!("value-{i}")).await);
    }

    let latest = client
        .get_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("value-4"));
    let first = client
        .get_secret(
            // Names are case-insensitive.
            &name.to_uppercase(),
            Some(SecretClientGetSecretOptions {
                secret_version: Some(versions[0].clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(first.value.as_deref(), Some("value-0"));

    let listed: Vec<_> = client
        .list_secret_properties_versions(
            &name,
            Some(SecretClientListSecretPropertiesVersionsOptions {
                maxresults: Some(2),
                ..Default::default()
            }),
        )
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut listed: Vec<String> = listed
        .into_iter()
        .map(|p| p.id.unwrap().rsplit('/').next().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = versions.clone();
    expected.sort();
    assert_eq!(listed, expected, "three pages of at most two");

    let names: Vec<String> = client
        .list_secret_properties(None)
        .unwrap()
        .map_ok(|p| p.id.unwrap_or_default())
        .try_collect()
        .await
        .unwrap();
    assert!(
        names.contains(&format!("{}/secrets/{name}", az.key_vault_url())),
        "secrets are listed by their unversioned id"
    );

    let exp = azure_core::time::OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
    let updated = client
        .update_secret_properties(
            &name,
            UpdateSecretPropertiesParameters {
                content_type: Some("text/plain".into()),
                tags: Some([("k".to_owned(), "v".to_owned())].into()),
                secret_attributes: Some(SecretAttributes {
                    expires: Some(exp),
                    ..Default::default()
                }),
            }
            .try_into()
            .unwrap(),
            Some(azure_security_keyvault_secrets::models::SecretClientUpdateSecretPropertiesOptions {
                secret_version: Some(versions[1].clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.value, None, "updates answer without the value");
    assert_eq!(updated.attributes.unwrap().expires, Some(exp));
    let latest = client
        .get_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        latest.attributes.unwrap().expires,
        None,
        "only that version changed"
    );
}

#[tokio::test]
async fn soft_delete_blocks_the_name_until_recovered_or_purged() {
    let az = AzureEmulators::key_vault().await;
    let client = client(az);
    let name = unique("deleted");
    let version = set(&client, &name, "old").await;

    let deleted = client
        .delete_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        deleted.recovery_id.as_deref(),
        Some(format!("{}/deletedsecrets/{name}", az.key_vault_url()).as_str())
    );
    assert!(deleted.deleted_date.is_some() && deleted.scheduled_purge_date.is_some());

    let missing = client.get_secret(&name, None).await.unwrap_err();
    assert_eq!(
        status_and_code(&missing),
        (Some(404), Some("SecretNotFound".into()))
    );

    let conflict = client
        .set_secret(
            &name,
            SetSecretParameters {
                value: Some("new".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        status_and_code(&conflict),
        (Some(409), Some("Conflict".into()))
    );
    let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = conflict.kind()
    else {
        panic!("no raw response: {conflict:?}");
    };
    let body: Value = serde_json::from_slice(raw.body()).unwrap();
    assert_eq!(
        body["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );

    client.get_deleted_secret(&name, None).await.unwrap();
    let recovered = client
        .recover_deleted_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(recovered.id.unwrap().ends_with(&version));
    let back = client
        .get_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(back.value.as_deref(), Some("old"));

    client.delete_secret(&name, None).await.unwrap();
    client.purge_deleted_secret(&name, None).await.unwrap();
    let gone = client.get_deleted_secret(&name, None).await.unwrap_err();
    assert_eq!(status_and_code(&gone).0, Some(404));
    set(&client, &name, "fresh").await;
    let fresh = client
        .get_secret(&name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(fresh.value.as_deref(), Some("fresh"));
}
