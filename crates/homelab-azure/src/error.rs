//! The adapter's errors: what went wrong with Azure, classified so that controllers can react
//! (requeue after `Retry-After`, report a missing role, stop on a soft-deleted secret), each
//! message saying what to do.

use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;

/// Which Azure service a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Azure Key Vault (secrets).
    KeyVault,
    /// Azure Blob Storage.
    BlobStorage,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KeyVault => "Azure Key Vault",
            Self::BlobStorage => "Azure Blob Storage",
        })
    }
}

/// The Azure built-in role that grants an operation, named in [`AzureError::Forbidden`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureRole {
    /// Read, create and update Key Vault secrets.
    KeyVaultSecretsOfficer,
    /// Create, delete and write containers and blobs.
    StorageBlobDataContributor,
    /// Get a user delegation key (to sign user-delegation SAS tokens).
    StorageBlobDelegator,
}

impl AzureRole {
    /// The role's name as Azure shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyVaultSecretsOfficer => "Key Vault Secrets Officer",
            Self::StorageBlobDataContributor => "Storage Blob Data Contributor",
            Self::StorageBlobDelegator => "Storage Blob Delegator",
        }
    }

    /// The scope the role must be assigned at.
    fn scope(self) -> &'static str {
        match self {
            Self::KeyVaultSecretsOfficer => "the key vault",
            Self::StorageBlobDataContributor | Self::StorageBlobDelegator => "the storage account",
        }
    }
}

impl std::fmt::Display for AzureRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong when the operator talks to Azure.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// The service could not be reached (DNS, TCP, TLS, timeout).
    #[error(
        "{service} at {endpoint} is unreachable: {detail}. Check the URL, DNS, network policies \
         and firewall rules (private endpoints, the vault's or account's network ACLs); the \
         operator retries"
    )]
    Unreachable {
        /// The service.
        service: Service,
        /// The URL that was tried.
        endpoint: String,
        /// The transport error.
        detail: String,
    },

    /// The service throttled the request (HTTP 429, or 503 `ServerBusy` from Storage).
    #[error(
        "{service} is throttling requests{}; the operator retries later. If this persists, \
         reduce the request rate or raise the service's limits",
        retry_after.map(|d| format!(" (Retry-After: {}s)", d.as_secs())).unwrap_or_default()
    )]
    Throttled {
        /// The service.
        service: Service,
        /// How long the service asked to wait, from `Retry-After`.
        retry_after: Option<Duration>,
    },

    /// The identity lacks a role assignment (HTTP 403).
    #[error(
        "{service} refused {action} (403 Forbidden{}): assign the role '{role}' on {} to the \
         operator's identity, then wait a few minutes for the assignment to propagate",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default(),
        role.scope()
    )]
    Forbidden {
        /// The service.
        service: Service,
        /// What was attempted, e.g. `setting secret "app-db-password"`.
        action: String,
        /// The role that grants it.
        role: AzureRole,
        /// The service's error code, e.g. `ForbiddenByRbac`.
        code: Option<String>,
    },

    /// The service did not accept the operator's token (HTTP 401), or no token could be had.
    #[error(
        "authentication to {service} failed: {detail}. Check the operator's Azure identity \
         (workload identity federation: the client ID, tenant ID and the federated credential's \
         subject; or the service principal's secret)"
    )]
    Unauthenticated {
        /// The service.
        service: Service,
        /// The service's or the credential's answer.
        detail: String,
    },

    /// Blob Storage refuses a SAS token that someone other than the operator stored.
    #[error(
        "Blob Storage refuses the SAS token in Key Vault secret '{name}' ({vault}) for container \
         '{container}' ({answer}): it has expired, was revoked, or was signed for another account \
         or container. The secret was not written by the operator, so it is not replaced: store \
         a valid token there, or delete the secret to let the operator mint and rotate one"
    )]
    SasRefused {
        /// The vault URL.
        vault: String,
        /// The secret name.
        name: String,
        /// The container the token is for.
        container: String,
        /// Blob Storage's answer (status and error code).
        answer: String,
    },

    /// The secret is soft-deleted: its name cannot be used until it is recovered or purged.
    #[error(
        "secret '{name}' in {vault} is deleted but recoverable, so its name cannot be reused. \
         Recover it (`az keyvault secret recover --id {vault}/deletedsecrets/{name}`, or allow \
         the operator to by setting `recoverSoftDeleted: true`), or purge it to have a new \
         value generated (`az keyvault secret purge --id {vault}/deletedsecrets/{name}`)"
    )]
    SoftDeleted {
        /// The vault URL.
        vault: String,
        /// The secret name.
        name: String,
    },

    /// The secret's current version is disabled; the operator will not replace it.
    #[error(
        "secret '{name}' in {vault} exists but its current version is disabled; enable it \
         (`az keyvault secret set-attributes --id {vault}/secrets/{name} --enabled true`). The \
         operator never overwrites an existing secret"
    )]
    SecretDisabled {
        /// The vault URL.
        vault: String,
        /// The secret name.
        name: String,
    },

    /// A name Azure would reject.
    #[error("invalid {kind} '{name}': {reason}")]
    InvalidName {
        /// What the name is for, e.g. `Key Vault secret name`.
        kind: &'static str,
        /// The name.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The adapter's configuration is unusable.
    #[error("invalid Azure configuration: {0}")]
    Config(String),

    /// Any other answer from the service.
    #[error("{service} answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Service {
        /// The service.
        service: Service,
        /// The HTTP status.
        status: u16,
        /// The service's error code.
        code: Option<String>,
        /// The service's message or the SDK's description.
        message: String,
    },
}

/// Result of the adapter's operations.
pub type Result<T, E = AzureError> = std::result::Result<T, E>;

impl AzureError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Throttled { .. } => true,
            Self::Service { status, code, .. } => {
                *status >= 500 || code.as_deref() == Some(crate::keyvault::BEING_RECOVERED)
            }
            _ => false,
        }
    }

    /// How long to wait before retrying, when the service said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An SDK error with what the adapter needs to classify it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Option<u16>,
    /// The top-level error code (`SecretNotFound`, `ContainerAlreadyExists`, ...).
    pub code: Option<String>,
    /// Key Vault's `innererror.code` (`ObjectIsDeletedButRecoverable`, `SecretDisabled`, ...).
    pub inner_code: Option<String>,
    pub retry_after: Option<Duration>,
    pub message: String,
    pub kind: FailureKind,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Transport,
    Credential,
    Http,
    Other,
}

impl Failure {
    pub(crate) fn from_sdk(error: &azure_core::Error) -> Self {
        let mut failure = Self {
            status: None,
            code: None,
            inner_code: None,
            retry_after: None,
            message: error.to_string(),
            kind: FailureKind::Other,
        };
        match error.kind() {
            ErrorKind::Io | ErrorKind::Connection => failure.kind = FailureKind::Transport,
            ErrorKind::Credential => failure.kind = FailureKind::Credential,
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => {
                failure.kind = FailureKind::Http;
                failure.status = Some(u16::from(*status));
                failure.code = error_code.clone();
                if let Some(raw) = raw_response {
                    failure.retry_after = raw
                        .headers()
                        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                        .and_then(parse_retry_after);
                    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(raw.body()) {
                        let error = body.get("error");
                        if let Some(message) = error
                            .and_then(|e| e.get("message"))
                            .and_then(|m| m.as_str())
                        {
                            failure.message = message.to_owned();
                        }
                        if failure.code.is_none() {
                            failure.code = error
                                .and_then(|e| e.get("code"))
                                .and_then(|c| c.as_str())
                                .map(str::to_owned);
                        }
                        failure.inner_code = error
                            .and_then(|e| e.get("innererror"))
                            .and_then(|e| e.get("code"))
                            .and_then(|c| c.as_str())
                            .map(str::to_owned);
                    }
                }
            }
            _ => {}
        }
        failure
    }

    pub(crate) fn is_status(&self, status: StatusCode) -> bool {
        self.status == Some(u16::from(status))
    }

    /// The generic classification; callers handle operation-specific codes first.
    pub(crate) fn into_error(
        self,
        service: Service,
        endpoint: &str,
        action: &str,
        role: AzureRole,
    ) -> AzureError {
        match self.kind {
            FailureKind::Transport => AzureError::Unreachable {
                service,
                endpoint: endpoint.to_owned(),
                detail: self.message,
            },
            FailureKind::Credential => AzureError::Unauthenticated {
                service,
                detail: self.message,
            },
            FailureKind::Http | FailureKind::Other => match self.status {
                Some(429) => AzureError::Throttled {
                    service,
                    retry_after: self.retry_after,
                },
                Some(503) if self.code.as_deref() == Some("ServerBusy") => AzureError::Throttled {
                    service,
                    retry_after: self.retry_after,
                },
                Some(401) => AzureError::Unauthenticated {
                    service,
                    detail: self.message,
                },
                // Storage answers 403 (not 401) when it does not accept the token itself.
                Some(403) if self.code.as_deref() == Some("AuthenticationFailed") => {
                    AzureError::Unauthenticated {
                        service,
                        detail: self.message,
                    }
                }
                Some(403) => AzureError::Forbidden {
                    service,
                    action: action.to_owned(),
                    role,
                    code: self.inner_code.or(self.code),
                },
                Some(status) => AzureError::Service {
                    service,
                    status,
                    code: self.code,
                    message: self.message,
                },
                None => AzureError::Service {
                    service,
                    status: 0,
                    code: None,
                    message: format!("{action}: {}", self.message),
                },
            },
        }
    }
}

/// `Retry-After` in seconds (the form Azure uses); HTTP dates are not used by these services.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    fn http_error(status: u16, code: Option<&str>) -> azure_core::Error {
        azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: code.map(str::to_owned),
                raw_response: None,
            },
            "refused",
        )
    }

    fn classify(error: &azure_core::Error, service: Service) -> AzureError {
        Failure::from_sdk(error).into_error(
            service,
            "https://acct.blob.core.windows.net",
            "creating container 'c'",
            AzureRole::StorageBlobDataContributor,
        )
    }

    #[test]
    fn sdk_errors_are_classified() {
        let storage = Service::BlobStorage;
        assert!(matches!(
            classify(
                &http_error(403, Some("AuthorizationPermissionMismatch")),
                storage
            ),
            AzureError::Forbidden {
                role: AzureRole::StorageBlobDataContributor,
                ..
            }
        ));
        assert!(matches!(
            classify(&http_error(403, Some("AuthenticationFailed")), storage),
            AzureError::Unauthenticated { .. }
        ));
        assert!(matches!(
            classify(&http_error(401, None), Service::KeyVault),
            AzureError::Unauthenticated { .. }
        ));
        assert!(matches!(
            classify(&http_error(429, None), storage),
            AzureError::Throttled {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(&http_error(503, Some("ServerBusy")), storage),
            AzureError::Throttled { .. }
        ));
        let internal = classify(&http_error(500, Some("InternalError")), storage);
        assert!(matches!(internal, AzureError::Service { status: 500, .. }));
        assert!(internal.is_transient());
        let io = azure_core::Error::with_message(ErrorKind::Io, "connection refused");
        assert!(matches!(
            classify(&io, storage),
            AzureError::Unreachable { endpoint, .. } if endpoint == "https://acct.blob.core.windows.net"
        ));
    }

    #[test]
    fn messages_say_what_to_do() {
        let forbidden = AzureError::Forbidden {
            service: Service::KeyVault,
            action: "setting secret 'a'".into(),
            role: AzureRole::KeyVaultSecretsOfficer,
            code: Some("ForbiddenByRbac".into()),
        };
        let text = forbidden.to_string();
        assert!(text.contains("Key Vault Secrets Officer"), "{text}");
        assert!(text.contains("on the key vault"), "{text}");

        let throttled = AzureError::Throttled {
            service: Service::BlobStorage,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(throttled.to_string().contains("Retry-After: 3s"));
        assert!(throttled.is_transient());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));

        let deleted = AzureError::SoftDeleted {
            vault: "https://v.vault.azure.net".into(),
            name: "app-db-password".into(),
        };
        let text = deleted.to_string();
        assert!(text.contains("az keyvault secret recover"), "{text}");
        assert!(text.contains("az keyvault secret purge"), "{text}");
        assert!(!deleted.is_transient());
    }
}
