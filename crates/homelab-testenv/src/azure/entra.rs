//! `EntraIdEmulator`: an in-process HTTPS server answering the Entra ID (Azure AD) token requests
//! of service principals, for clients whose authority host is fixed to
//! `https://login.microsoftonline.com` (pods reach it under that name; see
//! [`AzureEmulators::start_pod_facing`](super::AzureEmulators::start_pod_facing)).
//!
//! What it serves, for one configured [`ServicePrincipal`]:
//!
//! - `POST /{tenant}/oauth2/token` (v1, as go-autorest's `adal` sends it for External Secrets
//!   Operator: `?api-version=1.0`, form `grant_type=client_credentials&client_id&client_secret&
//!   resource`), answering `{token_type, access_token, expires_in, ext_expires_in, expires_on,
//!   not_before, resource}` with the numbers as strings, as Entra's v1 endpoint does.
//! - `POST /{tenant}/oauth2/v2.0/token` (v2, as `azure_identity`'s `ClientSecretCredential` and
//!   MSAL send it: form `grant_type=client_credentials&client_id&client_secret&scope=<resource>/.default`),
//!   answering `{token_type, access_token, expires_in, ext_expires_in}` with numbers.
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET /{tenant}/.well-known/openid-configuration`
//!   and `GET /common/discovery/instance`, the metadata MSAL reads before its first token request.
//!   Neither `azure_identity` 1.x nor `adal` asks for them.
//!
//! The access token is an unsigned JWT like [`EmulatorCredential`](super::EmulatorCredential)'s,
//! which Azurite (`--oauth basic`) and the Key Vault emulator accept: `aud` the requested resource,
//! `iss` `https://sts.windows.net/<tenant>/`, `tid`, `oid`/`sub` the principal's object id,
//! `appid`/`azp` its client id, `iat`, `nbf`, `exp` (one hour).
//!
//! Errors are Entra's JSON (`error`, `error_description` starting with the `AADSTS` code,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`) with its statuses: an
//! unknown tenant `400 invalid_tenant` (AADSTS90002), an unknown client `400 unauthorized_client`
//! (AADSTS700016), a missing or wrong secret `401 invalid_client` (AADSTS7000218, AADSTS7000215),
//! another grant type `400 unsupported_grant_type` (AADSTS70003), a missing `resource` or `scope`
//! `400 invalid_request` (AADSTS900144), a v2 scope without `/.default` `400 invalid_scope`
//! (AADSTS1002012).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::credential::unsigned_jwt;
use super::error::AzureEmulatorError;
use super::keyvault::server_tls_config;

/// The host of Entra ID's public-cloud authority, which clients for the public cloud insist on.
pub const ENTRA_AUTHORITY_HOST: &str = "login.microsoftonline.com";

/// Lifetime of issued tokens, in seconds (Entra answers 3599 for an hour).
const TOKEN_LIFETIME_SECS: i64 = 3599;

/// An application registration with a client secret, the only one the emulator knows.
#[derive(Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    /// The directory (tenant) id, in token URLs and the `tid` claim.
    pub tenant_id: String,
    /// The application (client) id, sent as `client_id`; the `appid` claim.
    pub client_id: String,
    /// The client secret, sent as `client_secret`.
    pub client_secret: String,
    /// The service principal's object id, the `oid` and `sub` claims.
    pub object_id: String,
}

impl std::fmt::Debug for ServicePrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePrincipal")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("object_id", &self.object_id)
            .finish()
    }
}

impl ServicePrincipal {
    /// A principal with random ids and a random secret (40 characters, like Entra's).
    pub fn generate() -> Self {
        let secret: String = (0..40)
            .map(|_| {
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
                char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])
            })
            .collect();
        Self {
            tenant_id: random_uuid(),
            client_id: random_uuid(),
            client_secret: secret,
            object_id: random_uuid(),
        }
    }
}

/// A random version-4 UUID, hyphenated.
pub(crate) fn random_uuid() -> String {
    let n = rand::random::<u128>();
    // Version 4, variant 10xx.
    let n = (n & !(0xf << 76)) | (0x4 << 76);
    let n = (n & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Debug)]
struct Shared {
    /// `https://login.microsoftonline.com`, the authority named in metadata.
    authority: String,
    principal: ServicePrincipal,
}

/// The Entra ID token endpoint emulator; stops serving when dropped.
pub struct EntraIdEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EntraIdEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraIdEmulator")
            .field("addr", &self.addr)
            .field("principal", &self.shared.principal)
            .finish_non_exhaustive()
    }
}

impl EntraIdEmulator {
    /// Binds `addr` and serves HTTPS with `cert_pem`/`key_pem` on `runtime`, which must outlive
    /// every client. Tokens are issued to `principal` only.
    pub(crate) async fn start_at(
        addr: SocketAddr,
        principal: ServicePrincipal,
        cert_pem: &str,
        key_pem: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, AzureEmulatorError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(cert_pem, key_pem)?));
        let bind_error = |e: String| AzureEmulatorError::Entra(format!("binding {addr}: {e}"));
        let listener = runtime
            .spawn(async move { TcpListener::bind(addr).await })
            .await
            .map_err(|e| bind_error(e.to_string()))?
            .map_err(|e| bind_error(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;
        let shared = Arc::new(Shared {
            authority: format!("https://{ENTRA_AUTHORITY_HOST}"),
            principal,
        });
        let task = runtime.spawn(serve_tls(listener, acceptor, router(shared.clone())));
        Ok(Self { addr, shared, task })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one principal tokens are issued to.
    pub fn principal(&self) -> &ServicePrincipal {
        &self.shared.principal
    }
}

impl Drop for EntraIdEmulator {
    fn drop(&mut self) {
        // The accept loop owns the listener and the connections' JoinSet: aborting drops them.
        self.task.abort();
    }
}

/// Accepts TLS connections on `listener` and serves `router` on each (HTTP/1.1) until aborted.
pub(crate) async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid_configuration_v1),
        )
        .route("/common/discovery/instance", get(instance_discovery))
        .fallback(|| async {
            entra_error(
                StatusCode::NOT_FOUND,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests to the token endpoints and GET requests \
                 to the metadata endpoints of this Entra ID emulator.",
            )
        })
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Token endpoints
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    V1,
    V2,
}

async fn token_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    issue(&shared, &tenant, &body, Endpoint::V1)
}

async fn token_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    issue(&shared, &tenant, &body, Endpoint::V2)
}

fn issue(shared: &Shared, tenant: &str, body: &[u8], endpoint: Endpoint) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let principal = &shared.principal;
    if !tenant.eq_ignore_ascii_case(&principal.tenant_id) {
        return invalid_tenant(tenant);
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!(
                    "The app requested an unsupported grant type '{other}'. This emulator \
                     issues tokens for the client_credentials grant only."
                ),
            );
        }
        None => return missing_parameter("grant_type"),
    }
    let Some(client_id) = field("client_id") else {
        return missing_parameter("client_id");
    };
    if !client_id.eq_ignore_ascii_case(&principal.client_id) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let Some(secret) = field("client_secret") else {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        );
    };
    if secret != principal.client_secret {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{}'.",
                principal.client_id
            ),
        );
    }
    let resource = match endpoint {
        Endpoint::V1 => match field("resource") {
            Some(resource) => resource.to_owned(),
            None => return missing_parameter("resource"),
        },
        Endpoint::V2 => match field("scope") {
            Some(scope) => match resource_of_scope(scope) {
                Ok(resource) => resource,
                Err(response) => return *response,
            },
            None => return missing_parameter("scope"),
        },
    };
    let now = jiff::Timestamp::now().as_second();
    let expires_on = now + TOKEN_LIFETIME_SECS;
    let token = access_token(principal, &resource, now, expires_on);
    let body = match endpoint {
        Endpoint::V1 => json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS.to_string(),
            "ext_expires_in": TOKEN_LIFETIME_SECS.to_string(),
            "expires_on": expires_on.to_string(),
            "not_before": (now - 300).to_string(),
            "resource": resource,
            "access_token": token,
        }),
        Endpoint::V2 => json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": token,
        }),
    };
    no_store((StatusCode::OK, axum::Json(body)).into_response())
}

/// The resource of a v2 client-credentials `scope` (`<resource>/.default`, space-separated with
/// OpenID scopes, which are ignored), or Entra's error answer.
fn resource_of_scope(scope: &str) -> Result<String, Box<Response>> {
    let mut resources = scope
        .split(' ')
        .filter(|s| !s.is_empty() && !matches!(*s, "openid" | "profile" | "offline_access"));
    let invalid = |s: &str| {
        Box::new(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {s} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        ))
    };
    let Some(first) = resources.next() else {
        return Err(invalid(scope));
    };
    let Some(resource) = first.strip_suffix("/.default") else {
        return Err(invalid(first));
    };
    if let Some(other) = resources.next() {
        return Err(Box::new(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value \
                 for the input parameter 'scope' is not valid: '{other}' is a second resource."
            ),
        )));
    }
    Ok(resource.to_owned())
}

/// An unsigned v1 access token for `principal` and `resource`, as Entra issues to applications.
fn access_token(principal: &ServicePrincipal, resource: &str, now: i64, expires_on: i64) -> String {
    let header = json!({ "alg": "none", "typ": "JWT" });
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{}/", principal.tenant_id),
        "iat": now,
        "nbf": now - 300,
        "exp": expires_on,
        "appid": principal.client_id,
        "azp": principal.client_id,
        "appidacr": "1",
        "idp": format!("https://sts.windows.net/{}/", principal.tenant_id),
        "idtyp": "app",
        "oid": principal.object_id,
        "sub": principal.object_id,
        "tid": principal.tenant_id,
        "ver": "1.0",
    });
    unsigned_jwt(&header, &claims)
}

// ---------------------------------------------------------------------------------------------
// Metadata (MSAL)
// ---------------------------------------------------------------------------------------------

async fn openid_configuration_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    openid_configuration(&shared, &tenant, Endpoint::V2)
}

async fn openid_configuration_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    openid_configuration(&shared, &tenant, Endpoint::V1)
}

fn openid_configuration(shared: &Shared, tenant: &str, endpoint: Endpoint) -> Response {
    let known = tenant.eq_ignore_ascii_case(&shared.principal.tenant_id)
        || matches!(tenant, "common" | "organizations");
    if !known {
        return invalid_tenant(tenant);
    }
    let authority = &shared.authority;
    let base = format!("{authority}/{tenant}");
    let (oauth2, issuer) = match endpoint {
        Endpoint::V1 => (
            format!("{base}/oauth2"),
            format!("https://sts.windows.net/{tenant}/"),
        ),
        Endpoint::V2 => (format!("{base}/oauth2/v2.0"), format!("{base}/v2.0")),
    };
    let body = json!({
        "token_endpoint": format!("{oauth2}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/{}keys", if endpoint == Endpoint::V2 { "v2.0/" } else { "" }),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{oauth2}/authorize"),
        "device_authorization_endpoint": format!("{oauth2}/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{oauth2}/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "ver"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
struct DiscoveryQuery {
    authorization_endpoint: Option<String>,
}

async fn instance_discovery(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<DiscoveryQuery>,
) -> Response {
    // `authorization_endpoint` is `https://<host>/<tenant>/oauth2/v2.0/authorize`.
    let tenant = query
        .authorization_endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok())
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next().map(str::to_owned))
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "common".to_owned());
    let body = json!({
        "tenant_discovery_endpoint": format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            shared.authority
        ),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": ENTRA_AUTHORITY_HOST,
            "preferred_cache": ENTRA_AUTHORITY_HOST,
            "aliases": [ENTRA_AUTHORITY_HOST],
        }],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn invalid_tenant(tenant: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
             are signing into the correct cloud."
        ),
    )
}

fn missing_parameter(name: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// An error in Entra's shape: `{error, error_description: "AADSTS<code>: …", error_codes, …}`.
fn entra_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let trace_id = random_uuid();
    let correlation_id = random_uuid();
    let timestamp = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ");
    let body: Value = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} \
             Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp.to_string(),
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://{ENTRA_AUTHORITY_HOST}/error?code={code}"),
    });
    no_store((status, axum::Json(body)).into_response())
}

/// Entra marks token responses `Cache-Control: no-store` and `Pragma: no-cache`.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(
        axum::http::header::PRAGMA,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn scopes_name_one_resource() {
        assert_eq!(
            resource_of_scope("https://vault.azure.net/.default").ok(),
            Some("https://vault.azure.net".to_owned())
        );
        assert_eq!(
            resource_of_scope("openid https://storage.azure.com/.default offline_access").ok(),
            Some("https://storage.azure.com".to_owned())
        );
        assert!(resource_of_scope("https://vault.azure.net").is_err());
        assert!(
            resource_of_scope(
                "https://vault.azure.net/.default https://storage.azure.com/.default"
            )
            .is_err()
        );
    }
}
