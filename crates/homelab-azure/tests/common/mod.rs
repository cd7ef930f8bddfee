//! Shared set-up for the tests against the Azure emulators.

// Each test binary uses some of these; set-up failures panic, as in the tests themselves.
#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use homelab_azure::{AzureClients, AzureConfig, RetryConfig, SasSigning};
use homelab_testenv::azure::AzureEmulators;

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Adapter configuration for the emulators: their challenge names vault.azure.net, which
/// 127.0.0.1 is not part of, and retries are short so that failures show quickly.
pub fn emulator_config() -> AzureConfig {
    AzureConfig {
        skip_challenge_resource_check: true,
        retry: RetryConfig {
            max_retries: 1,
            initial_delay: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(3),
        },
        ..Default::default()
    }
}

/// A fresh adapter (nothing cached) talking to `az`.
pub fn clients(az: &AzureEmulators, config: AzureConfig) -> AzureClients {
    AzureClients::with_credential(config, az.credential(), Some(az.http_client()))
}

/// The official SDK client, to look at Key Vault independently of the adapter.
pub fn sdk_secrets(az: &AzureEmulators) -> SecretClient {
    SecretClient::new(
        az.key_vault_url(),
        az.credential(),
        Some(SecretClientOptions {
            client_options: az.client_options(),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .expect("SDK secret client")
}

/// Stores `value` in the vault's secret `name` as a person would with `az keyvault secret set`:
/// without the operator's tags.
pub async fn set_by_hand(az: &AzureEmulators, name: &str, value: &str) {
    sdk_secrets(az)
        .set_secret(
            name,
            azure_security_keyvault_secrets::models::SetSecretParameters {
                value: Some(value.into()),
                ..Default::default()
            }
            .try_into()
            .expect("secret parameters"),
            None,
        )
        .await
        .expect("setting a secret by hand");
}

/// Adapter configuration for the emulators that signs service SAS tokens with Azurite's account
/// key (a user delegation key cannot start in the past, which expired tokens need).
pub fn account_key_config(az: &AzureEmulators) -> AzureConfig {
    AzureConfig {
        sas_signing: SasSigning::AccountKey {
            key_file: account_key_file(az),
        },
        ..emulator_config()
    }
}

/// How many versions `name` has.
pub async fn version_count(az: &AzureEmulators, name: &str) -> usize {
    use futures::TryStreamExt;
    sdk_secrets(az)
        .list_secret_properties_versions(name, None)
        .expect("pager")
        .try_collect::<Vec<_>>()
        .await
        .expect("versions")
        .len()
}

/// A file holding the emulator's account key, for service-SAS signing.
pub fn account_key_file(az: &AzureEmulators) -> PathBuf {
    let path = std::env::temp_dir().join(format!("homelab-azure-test-key-{}", std::process::id()));
    std::fs::write(&path, az.account_key()).expect("write key file");
    path
}

/// Issues tokens for an audience neither emulator serves, as a misconfigured identity would.
#[derive(Debug)]
pub struct WrongAudienceCredential;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for WrongAudienceCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            homelab_testenv::azure::EmulatorCredential::token_for("https://wrong.example/.default"),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}
