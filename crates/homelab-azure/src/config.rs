//! Configuration: which Azure identity the operator uses, which cloud, and how it talks to Key
//! Vault and Blob Storage. [`crate::AzureClients`] turns it into clients.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sas::{SasPolicy, SasProtocol};

/// How the operator authenticates to Azure (Entra ID).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CredentialConfig {
    /// Workload identity federation: the pod's projected service-account token is exchanged for
    /// an Entra token. Unset fields come from `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`, which the workload identity webhook injects. The default.
    #[serde(rename_all = "camelCase")]
    WorkloadIdentity {
        /// The application (client) ID.
        client_id: Option<String>,
        /// The directory (tenant) ID.
        tenant_id: Option<String>,
        /// The federated token file.
        token_file: Option<PathBuf>,
    },
    /// A service principal with a client secret, read from a file (a mounted Secret): what a
    /// cluster outside Azure without workload identity federation uses.
    #[serde(rename_all = "camelCase")]
    ServicePrincipal {
        /// The directory (tenant) ID; `AZURE_TENANT_ID` when unset.
        #[serde(default)]
        tenant_id: Option<String>,
        /// The application (client) ID; `AZURE_CLIENT_ID` when unset.
        #[serde(default)]
        client_id: Option<String>,
        /// A file holding the client secret.
        client_secret_file: PathBuf,
    },
    /// The managed identity of the node or VM; `client_id` picks a user-assigned identity.
    #[serde(rename_all = "camelCase")]
    ManagedIdentity {
        /// Client ID of a user-assigned identity; the system-assigned identity when unset.
        client_id: Option<String>,
    },
}

impl Default for CredentialConfig {
    fn default() -> Self {
        Self::WorkloadIdentity {
            client_id: None,
            tenant_id: None,
            token_file: None,
        }
    }
}

/// The Azure cloud, which decides the Entra ID authority host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "name", rename_all = "camelCase")]
pub enum Cloud {
    /// Azure public cloud (`login.microsoftonline.com`).
    #[default]
    AzurePublic,
    /// Azure Government (`login.microsoftonline.us`).
    AzureGovernment,
    /// Azure operated by 21Vianet (`login.chinacloudapi.cn`).
    AzureChina,
    /// Any other cloud or an emulator.
    #[serde(rename_all = "camelCase")]
    Custom {
        /// The Entra ID authority host, e.g. `https://login.example.cloud`.
        authority_host: String,
    },
}

/// How SDK requests are retried before an error reaches the controller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryConfig {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Delay before the first retry, doubled each time.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// Give up retrying after this long.
    #[serde(with = "millis")]
    pub max_elapsed: Duration,
}

impl Default for RetryConfig {
    /// Controllers requeue on errors, so the SDK retries only briefly.
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// How SAS tokens are signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SasSigning {
    /// A user-delegation SAS, signed with a key from `Get User Delegation Key` (needs the role
    /// Storage Blob Delegator or Storage Blob Data Contributor). No account key is involved;
    /// Azure limits such a SAS to 7 days.
    #[default]
    UserDelegation,
    /// A service SAS signed with the storage account key, read from a file (a mounted Secret).
    #[serde(rename_all = "camelCase")]
    AccountKey {
        /// A file holding the base64 account key.
        key_file: PathBuf,
    },
}

/// Everything the adapter is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AzureConfig {
    /// The operator's identity.
    pub credential: CredentialConfig,
    /// The cloud.
    pub cloud: Cloud,
    /// Retries inside the SDK.
    pub retry: RetryConfig,
    /// Recover a soft-deleted secret instead of failing with [`AzureError::SoftDeleted`].
    pub recover_soft_deleted: bool,
    /// Skip the SDK's check that the vault's authentication challenge names a resource whose
    /// domain the vault URL belongs to. Only for emulators and private DNS setups.
    pub skip_challenge_resource_check: bool,
    /// How SAS tokens are signed.
    pub sas_signing: SasSigning,
    /// Allow plain HTTP in SAS tokens (`spr=https,http`). Only for emulators.
    pub sas_allow_http: bool,
    /// SAS lifetime in days (default 30; user-delegation SAS are capped at 7).
    pub sas_lifetime_days: Option<u32>,
}

impl AzureConfig {
    /// The SAS policy this configuration asks for.
    pub fn sas_policy(&self) -> SasPolicy {
        let mut policy = SasPolicy::default();
        if let Some(days) = self.sas_lifetime_days {
            policy.lifetime = Duration::from_secs(u64::from(days) * 24 * 3600);
        }
        if self.sas_allow_http {
            policy.protocol = SasProtocol::HttpsAndHttp;
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_camel_case() {
        let config: AzureConfig = serde_json::from_value(serde_json::json!({
            "credential": {
                "type": "servicePrincipal",
                "tenantId": "t",
                "clientId": "c",
                "clientSecretFile": "/var/run/secrets/azure/client-secret"
            },
            "cloud": { "name": "azureChina" },
            "recoverSoftDeleted": true,
            "sasSigning": { "type": "accountKey", "keyFile": "/k" },
            "sasLifetimeDays": 14
        }))
        .unwrap();
        assert!(matches!(
            config.credential,
            CredentialConfig::ServicePrincipal { .. }
        ));
        assert_eq!(config.cloud, Cloud::AzureChina);
        assert!(config.recover_soft_deleted);
        assert_eq!(
            config.sas_policy().lifetime,
            Duration::from_secs(14 * 24 * 3600)
        );
        assert_eq!(config.retry, RetryConfig::default());

        let defaults: AzureConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults.credential, CredentialConfig::default());
        let explicit: CredentialConfig = serde_json::from_value(serde_json::json!({
            "type": "workloadIdentity",
            "clientId": "c",
        }))
        .unwrap();
        assert!(matches!(
            explicit,
            CredentialConfig::WorkloadIdentity { client_id: Some(c), tenant_id: None, .. } if c == "c"
        ));
        assert_eq!(defaults.sas_signing, SasSigning::UserDelegation);
        assert_eq!(defaults.sas_policy().protocol, SasProtocol::HttpsOnly);
    }
}
