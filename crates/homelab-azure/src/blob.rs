//! Blob Storage: the [`BlobStore`] trait controllers use, and [`AzureBlobStore`], its
//! implementation on `azure_storage_blob` for one storage account.

use async_trait::async_trait;
use azure_core::http::{RequestContent, StatusCode, XmlFormat};
use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, KeyInfo};
use azure_storage_blob::{
    BlobContainerClient, BlobContainerClientOptions, BlobServiceClient, BlobServiceClientOptions,
};
use futures::TryStreamExt;
use jiff::Timestamp;
use url::Url;

use crate::clients::AzureClients;
use crate::config::SasSigning;
use crate::error::{AzureError, AzureRole, Failure, Result, Service};
use crate::names::ContainerName;
use crate::sas::{
    SasPolicy, SasScope, SasToken, UserDelegationKey, sign_service_sas, sign_user_delegation_sas,
    validity,
};
use crate::secret::SecretValue;
use crate::wal::ListedBlob;

/// What [`BlobStore::ensure_container`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOutcome {
    /// The container was created.
    Created,
    /// It already existed.
    Existing,
}

/// One storage account's Blob service, as controllers need it.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The storage account's name.
    fn account_name(&self) -> &str;

    /// The URL of `container` (without a token).
    fn container_url(&self, container: &ContainerName) -> String;

    /// Creates `container` (private) unless it exists.
    async fn ensure_container(&self, container: &ContainerName) -> Result<ContainerOutcome>;

    /// Deletes `container` and every blob in it; `false` if there was none.
    async fn delete_container(&self, container: &ContainerName) -> Result<bool>;

    /// Every blob in `container` whose name starts with `prefix`, with its `Last-Modified`.
    async fn list_blobs(&self, container: &ContainerName, prefix: &str) -> Result<Vec<ListedBlob>>;

    /// A user delegation key valid from `start` to `expiry` (at most 7 days ahead).
    async fn user_delegation_key(
        &self,
        start: Timestamp,
        expiry: Timestamp,
    ) -> Result<UserDelegationKey>;

    /// A SAS token for `container` minted `now` under `policy`, signed as configured
    /// ([`SasSigning`]).
    async fn container_sas(
        &self,
        container: &ContainerName,
        policy: &SasPolicy,
        now: Timestamp,
    ) -> Result<SasToken>;

    /// Asks Blob Storage whether it accepts `token` for `container`, by listing at most one blob
    /// with it (what the backup tools do first): `None` when it does, Blob Storage's answer when
    /// it refuses the token (403: expired, revoked by a key rotation, signed for another account
    /// or container, or without the list permission).
    async fn sas_refusal(
        &self,
        container: &ContainerName,
        token: &SecretValue,
    ) -> Result<Option<String>>;
}

/// [`BlobStore`] on Azure Blob Storage.
pub struct AzureBlobStore {
    service: BlobServiceClient,
    service_url: String,
    account: String,
    signing: SasSigning,
    /// For clients that authenticate with a SAS token instead of the operator's identity.
    client_options: azure_core::http::ClientOptions,
}

impl std::fmt::Debug for AzureBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobStore")
            .field("service_url", &self.service_url)
            .field("account", &self.account)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl AzureBlobStore {
    pub(crate) fn new(clients: &AzureClients, service_url: &str) -> Result<Self> {
        let service_url = service_url.trim_end_matches('/').to_owned();
        let url = Url::parse(&service_url)
            .map_err(|e| AzureError::Config(format!("blob service URL '{service_url}': {e}")))?;
        let account = account_name(&url).ok_or_else(|| {
            AzureError::Config(format!(
                "cannot tell the storage account from '{service_url}': expected \
                 https://<account>.blob.core.windows.net or https://<host>/<account>"
            ))
        })?;
        let service = BlobServiceClient::new(
            url,
            Some(clients.credential()),
            Some(BlobServiceClientOptions {
                client_options: clients.client_options(),
                ..Default::default()
            }),
        )
        .map_err(|e| AzureError::Config(format!("blob service URL '{service_url}': {e}")))?;
        Ok(Self {
            service,
            service_url,
            account,
            signing: clients.config().sas_signing.clone(),
            client_options: clients.client_options(),
        })
    }

    fn error(&self, failure: Failure, action: String, role: AzureRole) -> AzureError {
        failure.into_error(Service::BlobStorage, &self.service_url, &action, role)
    }
}

/// The account is the first label of `<account>.blob.<suffix>`, or, for IP-style and emulator
/// URLs (`https://127.0.0.1:10000/devstoreaccount1`), the first path segment.
fn account_name(url: &Url) -> Option<String> {
    if let Some(first) = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty())
    {
        return Some(first.to_owned());
    }
    let host = url.host_str()?;
    let (account, rest) = host.split_once('.')?;
    rest.starts_with("blob.").then(|| account.to_owned())
}

#[async_trait]
impl BlobStore for AzureBlobStore {
    fn account_name(&self) -> &str {
        &self.account
    }

    fn container_url(&self, container: &ContainerName) -> String {
        format!("{}/{container}", self.service_url)
    }

    async fn ensure_container(&self, container: &ContainerName) -> Result<ContainerOutcome> {
        let client = self.service.blob_container_client(container.as_str());
        match client.create(None).await {
            Ok(_) => {
                tracing::info!(account = %self.account, %container, "created container");
                Ok(ContainerOutcome::Created)
            }
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_status(StatusCode::Conflict)
                    && failure.code.as_deref() == Some("ContainerAlreadyExists")
                {
                    return Ok(ContainerOutcome::Existing);
                }
                Err(self.error(
                    failure,
                    format!("creating container '{container}'"),
                    AzureRole::StorageBlobDataContributor,
                ))
            }
        }
    }

    async fn delete_container(&self, container: &ContainerName) -> Result<bool> {
        let client = self.service.blob_container_client(container.as_str());
        match client.delete(None).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_status(StatusCode::NotFound) {
                    return Ok(false);
                }
                Err(self.error(
                    failure,
                    format!("deleting container '{container}'"),
                    AzureRole::StorageBlobDataContributor,
                ))
            }
        }
    }

    async fn list_blobs(&self, container: &ContainerName, prefix: &str) -> Result<Vec<ListedBlob>> {
        let client = self.service.blob_container_client(container.as_str());
        let failed = |e: azure_core::Error| {
            self.error(
                Failure::from_sdk(&e),
                format!("listing '{prefix}' in container '{container}'"),
                AzureRole::StorageBlobDataContributor,
            )
        };
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_string()),
            ..Default::default()
        };
        client
            .list_blobs(Some(options))
            .map_err(failed)?
            .map_ok(|blob| ListedBlob {
                name: blob.name.unwrap_or_default(),
                last_modified: blob
                    .properties
                    .and_then(|p| p.last_modified)
                    .and_then(|t| Timestamp::from_second(t.unix_timestamp()).ok()),
            })
            .try_collect()
            .await
            .map_err(failed)
    }

    async fn user_delegation_key(
        &self,
        start: Timestamp,
        expiry: Timestamp,
    ) -> Result<UserDelegationKey> {
        let to_offset = |t: Timestamp| {
            azure_core::time::OffsetDateTime::from_unix_timestamp(t.as_second()).ok()
        };
        let key_info = KeyInfo {
            start: to_offset(start),
            expiry: to_offset(expiry),
            ..Default::default()
        };
        let action = || "getting a user delegation key".to_owned();
        let content: RequestContent<KeyInfo, XmlFormat> = key_info.try_into().map_err(|e| {
            self.error(
                Failure::from_sdk(&e),
                action(),
                AzureRole::StorageBlobDelegator,
            )
        })?;
        let key = self
            .service
            .get_user_delegation_key(content, None)
            .await
            .and_then(|response| response.into_model())
            .map_err(|e| {
                self.error(
                    Failure::from_sdk(&e),
                    action(),
                    AzureRole::StorageBlobDelegator,
                )
            })?;
        let from_offset = |t: Option<azure_core::time::OffsetDateTime>| {
            t.and_then(|t| Timestamp::from_second(t.unix_timestamp()).ok())
        };
        let incomplete = |field: &str| AzureError::Service {
            service: Service::BlobStorage,
            status: 200,
            code: None,
            message: format!("the user delegation key lacks {field}"),
        };
        Ok(UserDelegationKey {
            signed_oid: key.signed_oid.ok_or_else(|| incomplete("SignedOid"))?,
            signed_tid: key.signed_tid.ok_or_else(|| incomplete("SignedTid"))?,
            signed_start: from_offset(key.signed_start).ok_or_else(|| incomplete("SignedStart"))?,
            signed_expiry: from_offset(key.signed_expiry)
                .ok_or_else(|| incomplete("SignedExpiry"))?,
            signed_service: key
                .signed_service
                .ok_or_else(|| incomplete("SignedService"))?,
            signed_version: key
                .signed_version
                .ok_or_else(|| incomplete("SignedVersion"))?,
            value: key.value.ok_or_else(|| incomplete("Value"))?,
        })
    }

    async fn container_sas(
        &self,
        container: &ContainerName,
        policy: &SasPolicy,
        now: Timestamp,
    ) -> Result<SasToken> {
        let scope = SasScope {
            account: &self.account,
            container,
        };
        match &self.signing {
            SasSigning::UserDelegation => {
                let (start, expiry) = validity(policy, now, true);
                let key = self.user_delegation_key(start, expiry).await?;
                sign_user_delegation_sas(scope, &key, policy, start, expiry)
            }
            SasSigning::AccountKey { key_file } => {
                let key = std::fs::read_to_string(key_file).map_err(|e| {
                    AzureError::Config(format!(
                        "cannot read the storage account key file {}: {e}",
                        key_file.display()
                    ))
                })?;
                let (start, expiry) = validity(policy, now, false);
                sign_service_sas(scope, &SecretValue::new(key), policy, start, expiry)
            }
        }
    }

    async fn sas_refusal(
        &self,
        container: &ContainerName,
        token: &SecretValue,
    ) -> Result<Option<String>> {
        let action = || format!("listing container '{container}' with its SAS token");
        let url = Url::parse(&format!(
            "{}?{}",
            self.container_url(container),
            token.expose().trim_start_matches('?')
        ))
        .map_err(|e| AzureError::Config(format!("the SAS URL of container '{container}': {e}")))?;
        let client = BlobContainerClient::new(
            url,
            None,
            Some(BlobContainerClientOptions {
                client_options: self.client_options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| AzureError::Config(format!("the SAS URL of container '{container}': {e}")))?;
        let options = BlobContainerClientListBlobsOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let first = client
            .list_blobs(Some(options))
            .map_err(|e| {
                self.error(
                    Failure::from_sdk(&e),
                    action(),
                    AzureRole::StorageBlobDataContributor,
                )
            })?
            .try_next()
            .await;
        match first {
            Ok(_) => Ok(None),
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_status(StatusCode::Forbidden) {
                    return Ok(Some(match &failure.code {
                        Some(code) => format!("403 {code}"),
                        None => format!("403 {}", failure.message),
                    }));
                }
                Err(self.error(failure, action(), AzureRole::StorageBlobDataContributor))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_come_from_host_or_path() {
        let name = |u: &str| account_name(&Url::parse(u).unwrap());
        assert_eq!(
            name("https://acct.blob.core.windows.net").as_deref(),
            Some("acct")
        );
        assert_eq!(
            name("https://acct.blob.core.chinacloudapi.cn/").as_deref(),
            Some("acct")
        );
        assert_eq!(
            name("https://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(name("https://example.com"), None);
    }
}
