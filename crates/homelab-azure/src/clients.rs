//! [`AzureClients`]: the Key Vault and Blob Storage adapters built from an [`AzureConfig`],
//! sharing one credential and the HTTP pipeline settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use crate::blob::AzureBlobStore;
use crate::config::{AzureConfig, Cloud, CredentialConfig};
use crate::error::{AzureError, Result};
use crate::keyvault::KeyVaultSecrets;

/// Builds Key Vault and Blob Storage adapters sharing one credential and HTTP pipeline settings.
#[derive(Clone)]
pub struct AzureClients {
    config: AzureConfig,
    credential: Arc<dyn TokenCredential>,
    http: Option<reqwest::Client>,
    secret_clients: Arc<Mutex<HashMap<String, Arc<SecretClient>>>>,
}

impl std::fmt::Debug for AzureClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClients")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AzureClients {
    /// Clients authenticating as `config.credential` says.
    pub fn new(config: AzureConfig) -> Result<Self> {
        let credential = build_credential(&config)?;
        Ok(Self::from_parts(config, credential, None))
    }

    /// Clients authenticating with `credential`, optionally over `http` (for example a client
    /// trusting a private CA). For tests and embedding.
    pub fn with_credential(
        config: AzureConfig,
        credential: Arc<dyn TokenCredential>,
        http: Option<reqwest::Client>,
    ) -> Self {
        Self::from_parts(config, credential, http)
    }

    fn from_parts(
        config: AzureConfig,
        credential: Arc<dyn TokenCredential>,
        http: Option<reqwest::Client>,
    ) -> Self {
        Self {
            config,
            credential,
            http,
            secret_clients: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AzureConfig {
        &self.config
    }

    /// Key Vault secrets; the vault URL is given per call.
    pub fn key_vault(&self) -> KeyVaultSecrets {
        KeyVaultSecrets::new(self.clone())
    }

    /// The Blob service of the account at `service_url`
    /// (`https://<account>.blob.core.windows.net`).
    pub fn blob_store(&self, service_url: &str) -> Result<AzureBlobStore> {
        AzureBlobStore::new(self, service_url)
    }

    pub(crate) fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.clone()
    }

    pub(crate) fn client_options(&self) -> ClientOptions {
        client_options(&self.config, self.http.as_ref())
    }

    /// A cached client for `vault_url`: each client learns the vault's token scope once.
    pub(crate) fn secret_client(&self, vault_url: &str) -> Result<Arc<SecretClient>> {
        let key = vault_url.trim_end_matches('/').to_owned();
        let mut clients = self
            .secret_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = SecretClient::new(
            &key,
            self.credential(),
            Some(SecretClientOptions {
                client_options: self.client_options(),
                verify_challenge_resource: Some(!self.config.skip_challenge_resource_check),
                ..Default::default()
            }),
        )
        .map_err(|e| AzureError::Config(format!("vault URL '{vault_url}': {e}")))?;
        let client = Arc::new(client);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn cloud_configuration(cloud: &Cloud) -> CloudConfiguration {
    match cloud {
        Cloud::AzurePublic => CloudConfiguration::AzurePublic,
        Cloud::AzureGovernment => CloudConfiguration::AzureGovernment,
        Cloud::AzureChina => CloudConfiguration::AzureChina,
        Cloud::Custom { authority_host } => {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = authority_host.clone();
            CloudConfiguration::Custom(custom)
        }
    }
}

fn client_options(config: &AzureConfig, http: Option<&reqwest::Client>) -> ClientOptions {
    let to_azure = |d: Duration| {
        azure_core::time::Duration::milliseconds(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: to_azure(config.retry.initial_delay),
            max_retries: config.retry.max_retries,
            max_total_elapsed: to_azure(config.retry.max_elapsed),
            max_delay: to_azure(config.retry.max_elapsed.min(Duration::from_secs(30))),
        }),
        transport: http.map(|client| Transport::new(Arc::new(client.clone()))),
        cloud: Some(Arc::new(cloud_configuration(&config.cloud))),
        ..ClientOptions::default()
    }
}

fn build_credential(config: &AzureConfig) -> Result<Arc<dyn TokenCredential>> {
    let options = client_options(config, None);
    let credential_error =
        |what: &str, e: azure_core::Error| AzureError::Config(format!("{what}: {e}"));
    Ok(match &config.credential {
        CredentialConfig::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: options,
            },
            client_id: client_id.clone(),
            tenant_id: tenant_id.clone(),
            token_file_path: token_file.clone(),
        }))
        .map_err(|e| {
            credential_error(
                "workload identity (are AZURE_CLIENT_ID, AZURE_TENANT_ID and \
                 AZURE_FEDERATED_TOKEN_FILE set? Label the pod azure.workload.identity/use=true)",
                e,
            )
        })?,
        CredentialConfig::ServicePrincipal {
            tenant_id,
            client_id,
            client_secret_file,
        } => {
            let from_env = |value: &Option<String>, field: &str, variable: &str| {
                value
                    .clone()
                    .or_else(|| std::env::var(variable).ok().filter(|v| !v.is_empty()))
                    .ok_or_else(|| {
                        AzureError::Config(format!(
                            "service principal: set credential.{field} in the Azure configuration, or {variable}"
                        ))
                    })
            };
            let tenant_id = from_env(tenant_id, "tenantId", "AZURE_TENANT_ID")?;
            let client_id = from_env(client_id, "clientId", "AZURE_CLIENT_ID")?;
            let secret = std::fs::read_to_string(client_secret_file).map_err(|e| {
                AzureError::Config(format!(
                    "cannot read the client secret file {}: {e}",
                    client_secret_file.display()
                ))
            })?;
            ClientSecretCredential::new(
                &tenant_id,
                client_id,
                Secret::new(secret.trim().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: options,
                }),
            )
            .map_err(|e| credential_error("service principal", e))?
        }
        CredentialConfig::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: options,
            }))
            .map_err(|e| credential_error("managed identity", e))?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_kind_can_be_built_offline() {
        let secret_file =
            std::env::temp_dir().join(format!("homelab-azure-sp-{}", std::process::id()));
        std::fs::write(&secret_file, "s3cret\n").unwrap();
        // The workload identity credential reads its token file when built.
        let token_file = secret_file.with_extension("token");
        std::fs::write(&token_file, "eyJ.projected.token").unwrap();
        let tenant = "0e5f0a1c-7d3b-4c1e-9a55-3f2d6b8c4e71".to_owned();
        for credential in [
            CredentialConfig::WorkloadIdentity {
                client_id: Some("c".into()),
                tenant_id: Some(tenant.clone()),
                token_file: Some(token_file.clone()),
            },
            CredentialConfig::ServicePrincipal {
                tenant_id: Some(tenant.clone()),
                client_id: Some("c".into()),
                client_secret_file: secret_file.clone(),
            },
            CredentialConfig::ManagedIdentity { client_id: None },
            CredentialConfig::ManagedIdentity {
                client_id: Some("c".into()),
            },
        ] {
            let config = AzureConfig {
                credential: credential.clone(),
                cloud: Cloud::Custom {
                    authority_host: "https://login.example.cloud".into(),
                },
                ..Default::default()
            };
            if let Err(e) = AzureClients::new(config) {
                panic!("{credential:?}: {e}");
            }
        }
        let _ = std::fs::remove_file(secret_file);
        let _ = std::fs::remove_file(token_file);
    }

    #[test]
    fn a_missing_client_secret_file_is_a_config_error() {
        let config = AzureConfig {
            credential: CredentialConfig::ServicePrincipal {
                tenant_id: Some("0e5f0a1c-7d3b-4c1e-9a55-3f2d6b8c4e71".into()),
                client_id: Some("c".into()),
                client_secret_file: "/nonexistent/secret".into(),
            },
            ..Default::default()
        };
        let error = AzureClients::new(config)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/secret"), "{error}");
    }
}
