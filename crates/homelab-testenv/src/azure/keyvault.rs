//! `KeyVaultEmulator`: an in-process HTTPS server speaking the Azure Key Vault *secrets* REST API.
//!
//! It exists because Lowkey Vault, the usual Key Vault stand-in, cannot be installed from a package
//! registry: its application jar (`com.github.nagyesta.lowkey-vault:lowkey-vault-app`) is published
//! only to GitHub Packages and Docker Hub, not to Maven Central. When a Lowkey Vault jar is at hand,
//! set `LOWKEY_VAULT_JAR` and the test environment runs it instead (see `lowkey.rs`).
//!
//! What it implements, following the documented REST API (api-version 7.x and the `2025-07-01`
//! version sent by `azure_security_keyvault_secrets` 1.x; any `api-version` is accepted, a missing
//! one is refused):
//!
//! - `PUT /secrets/{name}` creates a new version every time (value, `contentType`, `tags`,
//!   `attributes.enabled/exp/nbf`); refused with `409 Conflict` /
//!   `ObjectIsDeletedButRecoverable` while the name is soft-deleted.
//! - `GET /secrets/{name}[/{version}]`, `GET /secrets/{name}/versions`, `GET /secrets` (paged with
//!   `maxresults` and `nextLink`), `PATCH /secrets/{name}[/{version}]`.
//! - `DELETE /secrets/{name}` soft-deletes (recovery level `Recoverable+Purgeable`, 90 days);
//!   `GET /deletedsecrets[/{name}]`, `POST /deletedsecrets/{name}/recover`,
//!   `DELETE /deletedsecrets/{name}` (purge). Recovery is asynchronous as in Azure when a
//!   recovery delay is set: until it completes the secret reads as `SecretNotFound` and a write is
//!   refused with `409 Conflict` / `ObjectIsBeingRecovered`.
//! - Errors in Key Vault's shape, `{"error":{"code":..,"message":..,"innererror":{..}}}`, with
//!   the service's codes (`SecretNotFound`, `Conflict`, `Forbidden`, `BadParameter`,
//!   `Unauthorized`).
//! - Authentication as Key Vault does it: a request without `Authorization: Bearer` gets `401` and a
//!   `WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"` challenge,
//!   which is how the official SDK discovers the token scope. The token must be a JWT for the
//!   audience `https://vault.azure.net` that has not expired; its signature is not checked.
//!
//! Names are case-insensitive, as in Key Vault. Not implemented: backup/restore, certificates-backed
//! (`managed`) secrets, keys, access policies and RBAC.
//!
//! **Fault injection.** [`KeyVaultFault`] makes every authenticated request fail with `403
//! Forbidden` (as with a missing role assignment) or `429 Too Many Requests` with `Retry-After`, and
//! [`KeyVaultEmulator::stop`] stops listening and drops open connections. These switches exist
//! because the real service cannot be made to produce those failures on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::error::AzureEmulatorError;

/// The token audience Key Vault accepts, and the resource named in its challenge.
pub const KEY_VAULT_RESOURCE: &str = "https://vault.azure.net";

/// The tenant named in the challenge of [`KeyVaultEmulator::start_new`].
const DEFAULT_CHALLENGE_TENANT: &str = "00000000-0000-0000-0000-000000000000";

const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: i64 = 90;
const DEFAULT_PAGE_SIZE: usize = 25;

/// A failure the emulator injects into every authenticated request until cleared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyVaultFault {
    /// `403 Forbidden` / `ForbiddenByRbac`, as when the caller lacks a role assignment.
    Forbidden,
    /// `429 Too Many Requests` with a `Retry-After` header of `retry_after_secs`.
    Throttled {
        /// Seconds announced in `Retry-After`.
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: String,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    enabled: bool,
    exp: Option<i64>,
    nbf: Option<i64>,
    created: i64,
    updated: i64,
}

#[derive(Debug, Clone)]
struct Secret {
    name: String,
    /// Oldest first; the last one is the current version.
    versions: Vec<Version>,
}

#[derive(Debug, Clone)]
struct DeletedSecret {
    secret: Secret,
    deleted: i64,
}

#[derive(Debug, Default)]
struct Vault {
    /// Keyed by lower-cased name: Key Vault names are case-insensitive.
    secrets: BTreeMap<String, Secret>,
    deleted: BTreeMap<String, DeletedSecret>,
    /// Secrets whose recovery was accepted and has not completed, with when it completes. Azure
    /// recovers asynchronously: until then a read answers 404 and a write 409
    /// `ObjectIsBeingRecovered`.
    recovering: BTreeMap<String, (Secret, std::time::Instant)>,
}

impl Vault {
    /// Completes the recoveries that are due.
    fn settle_recoveries(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .recovering
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if let Some((secret, _)) = self.recovering.remove(&key) {
                self.secrets.insert(key, secret);
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    base_url: String,
    /// The `WWW-Authenticate` value of the 401 answer to an unauthenticated request.
    challenge: HeaderValue,
    vault: Mutex<Vault>,
    fault: Mutex<Option<KeyVaultFault>>,
    /// When each request answered with an injected fault arrived.
    faulted: Mutex<Vec<std::time::Instant>>,
    /// How long a recovery of a deleted secret takes (zero: it completes with the request).
    recovery_delay: Mutex<Duration>,
    /// How many requests were answered "still recovering" (a 404 read, a 409 write).
    answered_while_recovering: Mutex<usize>,
}

impl Shared {
    fn vault(&self) -> MutexGuard<'_, Vault> {
        let mut vault = self.vault.lock().unwrap_or_else(|p| p.into_inner());
        vault.settle_recoveries();
        vault
    }
    fn recovery_delay(&self) -> Duration {
        *self
            .recovery_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
    fn count_answer_while_recovering(&self) {
        *self
            .answered_while_recovering
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += 1;
    }
    fn fault(&self) -> MutexGuard<'_, Option<KeyVaultFault>> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn faulted(&self) -> MutexGuard<'_, Vec<std::time::Instant>> {
        self.faulted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running accept loop and the way to stop it.
struct Server {
    task: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

/// The Key Vault secrets emulator. Its state survives [`stop`](Self::stop) and
/// [`start`](Self::start), as a real vault's does across an outage.
pub struct KeyVaultEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    runtime: tokio::runtime::Handle,
    server: Mutex<Option<Server>>,
}

impl std::fmt::Debug for KeyVaultEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultEmulator")
            .field("url", &self.shared.base_url)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl KeyVaultEmulator {
    /// Binds a free loopback port and starts serving HTTPS with `cert_pem`/`key_pem`. The server
    /// runs on `runtime`, which must outlive every client.
    pub(crate) async fn start_new(
        cert_pem: &str,
        key_pem: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, AzureEmulatorError> {
        Self::start_at(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
            DEFAULT_CHALLENGE_TENANT,
            cert_pem,
            key_pem,
            runtime,
        )
        .await
    }

    /// Binds `addr` (port 0: a free one) and starts serving HTTPS with `cert_pem`/`key_pem`.
    /// `base_url` is the vault URL used in secret ids (`https://<bound address>` when `None`);
    /// the 401 challenge names `https://login.microsoftonline.com/<challenge_tenant>`.
    pub(crate) async fn start_at(
        addr: SocketAddr,
        base_url: Option<String>,
        challenge_tenant: &str,
        cert_pem: &str,
        key_pem: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, AzureEmulatorError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(cert_pem, key_pem)?));
        let challenge = HeaderValue::from_str(&format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{challenge_tenant}\", \
             resource=\"{KEY_VAULT_RESOURCE}\""
        ))
        .map_err(|e| AzureEmulatorError::KeyVault(format!("the challenge header: {e}")))?;
        let listener = runtime
            .spawn(async move { TcpListener::bind(addr).await })
            .await
            .map_err(|e| AzureEmulatorError::KeyVault(format!("binding {addr}: {e}")))?
            .map_err(|e| AzureEmulatorError::KeyVault(format!("binding {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AzureEmulatorError::KeyVault(format!("binding {addr}: {e}")))?;
        let shared = Arc::new(Shared {
            base_url: base_url.unwrap_or_else(|| format!("https://{addr}")),
            challenge,
            vault: Mutex::default(),
            fault: Mutex::default(),
            faulted: Mutex::default(),
            recovery_delay: Mutex::default(),
            answered_while_recovering: Mutex::default(),
        });
        let emulator = Self {
            shared,
            addr,
            acceptor,
            runtime,
            server: Mutex::default(),
        };
        emulator.serve(listener);
        Ok(emulator)
    }

    /// The vault URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.server_slot()
            .as_ref()
            .is_some_and(|s| !s.task.is_finished())
    }

    /// Stops listening and closes every open connection; clients then see connection errors.
    /// Returns once nothing is served any more.
    pub async fn stop(&self) {
        let server = self.server_slot().take();
        if let Some(Server { task, shutdown }) = server {
            let _ = shutdown.send(());
            let _ = task.await;
        }
    }

    /// Listens again on the same port, with the same secrets. Does nothing when running.
    pub async fn start(&self) -> Result<(), AzureEmulatorError> {
        if self.is_running() {
            return Ok(());
        }
        let addr = self.addr;
        let listener = self
            .runtime
            .spawn(async move {
                // The port was ours a moment ago; retry briefly while the aborted loop lets go of it.
                let mut last = None;
                for _ in 0..50 {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => return Ok(listener),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
            })
            .await
            .map_err(|e| AzureEmulatorError::KeyVault(format!("rebinding {addr}: {e}")))?
            .map_err(|e| AzureEmulatorError::KeyVault(format!("rebinding {addr}: {e}")))?;
        self.serve(listener);
        Ok(())
    }

    /// Makes every authenticated request fail with `fault` until [`clear_fault`](Self::clear_fault).
    pub fn set_fault(&self, fault: KeyVaultFault) {
        *self.shared.fault() = Some(fault);
    }

    /// Serves requests normally again.
    pub fn clear_fault(&self) {
        *self.shared.fault() = None;
    }

    /// The fault currently injected, if any.
    pub fn fault(&self) -> Option<KeyVaultFault> {
        self.shared.fault().clone()
    }

    /// When each request answered with an injected fault arrived, oldest first: how a test
    /// sees whether a client waited as a `Retry-After` told it to.
    pub fn faulted_requests(&self) -> Vec<std::time::Instant> {
        self.shared.faulted().clone()
    }

    /// Makes every later recovery of a deleted secret take `delay`, as Azure's asynchronous
    /// recovery does (seconds, sometimes more): meanwhile the secret reads as not found and
    /// cannot be written.
    pub fn set_recovery_delay(&self, delay: Duration) {
        *self
            .shared
            .recovery_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// How many requests were answered "still being recovered" so far.
    pub fn answered_while_recovering(&self) -> usize {
        *self
            .shared
            .answered_while_recovering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn server_slot(&self) -> MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        let router = router(self.shared.clone());
        let acceptor = self.acceptor.clone();
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        let task = self.runtime.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => {
                        // Aborts every connection and waits for them, so nothing is served after.
                        connections.shutdown().await;
                        return;
                    }
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
        });
        if let Some(old) = self.server_slot().replace(Server { task, shutdown }) {
            old.task.abort();
        }
    }
}

impl Drop for KeyVaultEmulator {
    fn drop(&mut self) {
        if let Some(server) = self.server_slot().take() {
            // The accept loop owns the connections' JoinSet: dropping it aborts them too.
            server.task.abort();
        }
    }
}

pub(crate) fn server_tls_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, AzureEmulatorError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_error = |e: String| AzureEmulatorError::KeyVault(format!("TLS configuration: {e}"));
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_error(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls_error(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route("/secrets/", get(list_secrets))
        .route(
            "/secrets/{name}",
            get(get_latest)
                .put(set_secret)
                .delete(delete_secret)
                .patch(update_latest),
        )
        .route(
            "/secrets/{name}/",
            get(get_latest).put(set_secret).patch(update_latest),
        )
        .route("/secrets/{name}/versions", get(list_versions))
        .route(
            "/secrets/{name}/{version}",
            get(get_version).patch(update_version),
        )
        .route("/deletedsecrets", get(list_deleted))
        .route(
            "/deletedsecrets/{name}",
            get(get_deleted).delete(purge_deleted),
        )
        .route("/deletedsecrets/{name}/recover", post(recover_deleted))
        .fallback(|| async {
            kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested operation is not supported by this Key Vault emulator.",
                None,
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), gatekeeper))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Authentication, api-version and injected faults
// ---------------------------------------------------------------------------------------------

async fn gatekeeper(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let has_api_version = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
    });
    if let Some(response) = reject_unauthenticated(request.headers(), &shared.challenge) {
        return response;
    }
    if !has_api_version {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request is missing the required query parameter 'api-version'.",
            None,
        );
    }
    let fault = shared.fault().clone();
    if fault.is_some() {
        shared.faulted().push(std::time::Instant::now());
    }
    match fault {
        Some(KeyVaultFault::Forbidden) => {
            let action = format!("{} {}", request.method(), request.uri().path());
            kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role \
                     assignments, deny assignments or role definitions were changed recently, \
                     please observe propagation time.\r\nAction: '{action}'\r\nAssignment: (not \
                     found)\r\nVault: emulator;location=local\r\n"
                ),
                Some("ForbiddenByRbac"),
            )
        }
        Some(KeyVaultFault::Throttled { retry_after_secs }) => {
            let mut response = kv_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: \
                 VaultRequestTypeLimitReached",
                None,
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        None => next.run(request).await,
    }
}

/// The 401 answer for a request Key Vault would not authenticate, if any.
fn reject_unauthenticated(headers: &HeaderMap, challenge_value: &HeaderValue) -> Option<Response> {
    let challenge = || {
        let mut response = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            None,
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge_value.clone());
        response
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(challenge());
    };
    let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
        return Some(challenge());
    };
    let unauthorized = |message: &str| {
        Some(kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            message,
            None,
        ))
    };
    let Some(claims) = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    else {
        return unauthorized("The bearer token is not a JWT.");
    };
    let audience = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if audience.trim_end_matches('/') != KEY_VAULT_RESOURCE {
        return unauthorized(&format!(
            "Invalid audience. Expected {KEY_VAULT_RESOURCE}, found: {audience}."
        ));
    }
    let now = now();
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_none_or(|exp| exp <= now)
    {
        return unauthorized("Token has expired or has no expiry.");
    }
    if claims
        .get("nbf")
        .and_then(Value::as_i64)
        .is_some_and(|nbf| nbf > now + 300)
    {
        return unauthorized("Token is not valid yet.");
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Paging {
    maxresults: Option<usize>,
    #[serde(rename = "$skiptoken")]
    skip_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AttributesIn {
    enabled: Option<bool>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct SetBody {
    value: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesIn>,
}

#[derive(Debug, Default, Deserialize)]
struct UpdateBody {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesIn>,
}

async fn set_secret(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = reject_invalid_name(&name) {
        return r;
    }
    let body: SetBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_parameter(&format!("The request body is not valid JSON: {e}")),
    };
    let Some(value) = body.value else {
        return bad_parameter("Property 'value' is required.");
    };
    let key = name.to_ascii_lowercase();
    let mut vault = shared.vault();
    if vault.recovering.contains_key(&key) {
        shared.count_answer_while_recovering();
        return kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Secret {name} is currently being recovered and cannot be re-created; retry later."
            ),
            Some("ObjectIsBeingRecovered"),
        );
    }
    if vault.deleted.contains_key(&key) {
        return kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name \
                 cannot be reused; in this state, the secret can only be recovered or purged."
            ),
            Some("ObjectIsDeletedButRecoverable"),
        );
    }
    let now = now();
    let attributes = body.attributes.unwrap_or_default();
    let version = Version {
        id: new_version_id(),
        value,
        content_type: body.content_type,
        tags: body.tags,
        enabled: attributes.enabled.unwrap_or(true),
        exp: attributes.exp,
        nbf: attributes.nbf,
        created: now,
        updated: now,
    };
    let secret = vault.secrets.entry(key).or_insert_with(|| Secret {
        name: name.clone(),
        versions: Vec::new(),
    });
    secret.versions.push(version);
    let Some(latest) = secret.versions.last() else {
        return internal("no version after insert");
    };
    ok(bundle(&shared.base_url, &secret.name, latest, true))
}

async fn get_latest(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    read_secret(&shared, &name, None)
}

async fn get_version(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    read_secret(&shared, &name, Some(&version))
}

fn read_secret(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    let vault = shared.vault();
    let found = vault
        .secrets
        .get(&name.to_ascii_lowercase())
        .and_then(|s| find_version(s, version).map(|v| (s, v)));
    let Some((secret, version)) = found else {
        if vault.recovering.contains_key(&name.to_ascii_lowercase()) {
            shared.count_answer_while_recovering();
        }
        return secret_not_found(name, version);
    };
    if !version.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
            Some("SecretDisabled"),
        );
    }
    ok(bundle(&shared.base_url, &secret.name, version, true))
}

async fn update_latest(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    update_secret(&shared, &name, None, &body)
}

async fn update_version(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    update_secret(&shared, &name, Some(&version), &body)
}

fn update_secret(shared: &Shared, name: &str, version: Option<&str>, body: &[u8]) -> Response {
    let body: UpdateBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return bad_parameter(&format!("The request body is not valid JSON: {e}")),
    };
    let mut vault = shared.vault();
    let Some(secret) = vault.secrets.get_mut(&name.to_ascii_lowercase()) else {
        return secret_not_found(name, version);
    };
    let index = match version.filter(|v| !v.is_empty()) {
        None => secret.versions.len().checked_sub(1),
        Some(v) => secret.versions.iter().position(|x| x.id == v),
    };
    let Some(target) = index.and_then(|i| secret.versions.get_mut(i)) else {
        return secret_not_found(name, version);
    };
    if let Some(content_type) = body.content_type {
        target.content_type = Some(content_type);
    }
    if let Some(tags) = body.tags {
        target.tags = Some(tags);
    }
    if let Some(attributes) = body.attributes {
        if let Some(enabled) = attributes.enabled {
            target.enabled = enabled;
        }
        if attributes.exp.is_some() {
            target.exp = attributes.exp;
        }
        if attributes.nbf.is_some() {
            target.nbf = attributes.nbf;
        }
    }
    target.updated = now();
    let target = target.clone();
    ok(bundle(&shared.base_url, &secret.name, &target, false))
}

async fn list_secrets(State(shared): State<Arc<Shared>>, Query(paging): Query<Paging>) -> Response {
    let vault = shared.vault();
    let items: Vec<Value> = vault
        .secrets
        .values()
        .filter_map(|s| {
            let latest = s.versions.last()?;
            let mut item = properties(&shared.base_url, &s.name, latest);
            item.insert(
                "id".into(),
                json!(format!("{}/secrets/{}", shared.base_url, s.name)),
            );
            Some(Value::Object(item))
        })
        .collect();
    page(&shared.base_url, "/secrets", items, &paging)
}

async fn list_versions(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    let vault = shared.vault();
    let items: Vec<Value> = vault
        .secrets
        .get(&name.to_ascii_lowercase())
        .map(|s| {
            s.versions
                .iter()
                .map(|v| Value::Object(properties(&shared.base_url, &s.name, v)))
                .collect()
        })
        .unwrap_or_default();
    page(
        &shared.base_url,
        &format!("/secrets/{name}/versions"),
        items,
        &paging,
    )
}

async fn delete_secret(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let key = name.to_ascii_lowercase();
    let mut vault = shared.vault();
    let Some(secret) = vault.secrets.remove(&key) else {
        return secret_not_found(&name, None);
    };
    let deleted = DeletedSecret {
        secret,
        deleted: now(),
    };
    let body = deleted_bundle(&shared.base_url, &deleted);
    vault.deleted.insert(key, deleted);
    ok(body)
}

async fn get_deleted(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let vault = shared.vault();
    match vault.deleted.get(&name.to_ascii_lowercase()) {
        Some(deleted) => ok(deleted_bundle(&shared.base_url, deleted)),
        None => deleted_not_found(&name),
    }
}

async fn list_deleted(State(shared): State<Arc<Shared>>, Query(paging): Query<Paging>) -> Response {
    let vault = shared.vault();
    let items: Vec<Value> = vault
        .deleted
        .values()
        .map(|d| {
            let mut item = deleted_bundle(&shared.base_url, d);
            if let Some(map) = item.as_object_mut() {
                map.remove("value");
                map.insert(
                    "id".into(),
                    json!(format!("{}/secrets/{}", shared.base_url, d.secret.name)),
                );
            }
            item
        })
        .collect();
    page(&shared.base_url, "/deletedsecrets", items, &paging)
}

async fn recover_deleted(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let key = name.to_ascii_lowercase();
    let mut vault = shared.vault();
    let Some(deleted) = vault.deleted.remove(&key) else {
        return deleted_not_found(&name);
    };
    let secret = deleted.secret;
    let Some(latest) = secret.versions.last() else {
        return internal("a deleted secret without versions");
    };
    let body = bundle(&shared.base_url, &secret.name, latest, false);
    let delay = shared.recovery_delay();
    if delay.is_zero() {
        vault.secrets.insert(key, secret);
    } else {
        vault
            .recovering
            .insert(key, (secret, std::time::Instant::now() + delay));
    }
    ok(body)
}

async fn purge_deleted(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let mut vault = shared.vault();
    match vault.deleted.remove(&name.to_ascii_lowercase()) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => deleted_not_found(&name),
    }
}

// ---------------------------------------------------------------------------------------------
// Representations
// ---------------------------------------------------------------------------------------------

fn find_version<'a>(secret: &'a Secret, version: Option<&str>) -> Option<&'a Version> {
    match version.filter(|v| !v.is_empty()) {
        None => secret.versions.last(),
        Some(v) => secret.versions.iter().find(|x| x.id == v),
    }
}

fn attributes(version: &Version) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), json!(version.enabled));
    if let Some(nbf) = version.nbf {
        a.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = version.exp {
        a.insert("exp".into(), json!(exp));
    }
    a.insert("created".into(), json!(version.created));
    a.insert("updated".into(), json!(version.updated));
    a.insert("recoveryLevel".into(), json!(RECOVERY_LEVEL));
    a.insert("recoverableDays".into(), json!(RECOVERABLE_DAYS));
    Value::Object(a)
}

/// `SecretProperties` / `SecretItem`: everything but the value.
fn properties(base: &str, name: &str, version: &Version) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "id".into(),
        json!(format!("{base}/secrets/{name}/{}", version.id)),
    );
    m.insert("attributes".into(), attributes(version));
    if let Some(ct) = &version.content_type {
        m.insert("contentType".into(), json!(ct));
    }
    if let Some(tags) = &version.tags {
        m.insert("tags".into(), json!(tags));
    }
    m
}

/// `SecretBundle`, with or without the value (update and recover answer without it).
fn bundle(base: &str, name: &str, version: &Version, with_value: bool) -> Value {
    let mut m = properties(base, name, version);
    if with_value {
        m.insert("value".into(), json!(version.value));
    }
    Value::Object(m)
}

fn deleted_bundle(base: &str, deleted: &DeletedSecret) -> Value {
    let name = &deleted.secret.name;
    let mut m = match deleted.secret.versions.last() {
        Some(latest) => properties(base, name, latest),
        None => Map::new(),
    };
    m.insert(
        "recoveryId".into(),
        json!(format!("{base}/deletedsecrets/{name}")),
    );
    m.insert("deletedDate".into(), json!(deleted.deleted));
    m.insert(
        "scheduledPurgeDate".into(),
        json!(deleted.deleted + RECOVERABLE_DAYS * 24 * 3600),
    );
    Value::Object(m)
}

fn page(base: &str, path: &str, items: Vec<Value>, paging: &Paging) -> Response {
    let size = paging
        .maxresults
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, DEFAULT_PAGE_SIZE);
    let skip: usize = paging
        .skip_token
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(size).collect();
    let next = skip + size;
    let next_link = (next < total)
        .then(|| format!("{base}{path}?api-version=7.5&$skiptoken={next}&maxresults={size}"));
    ok(json!({ "value": value, "nextLink": next_link }))
}

/// The 400 answer for a name Key Vault refuses, if it is one.
fn reject_invalid_name(name: &str) -> Option<Response> {
    let valid = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (!valid).then(|| {
        bad_parameter(&format!(
            "The request URI contains an invalid name: {name}. Secret names may contain only \
             0-9, a-z, A-Z and -, and be 1 to 127 characters long."
        ))
    })
}

fn new_version_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let (Some(inner), Some(map)) = (inner, error.as_object_mut()) {
        map.insert("innererror".into(), json!({ "code": inner }));
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn bad_parameter(message: &str) -> Response {
    kv_error(StatusCode::BAD_REQUEST, "BadParameter", message, None)
}

fn secret_not_found(name: &str, version: Option<&str>) -> Response {
    let id = match version.filter(|v| !v.is_empty()) {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {id} was not found in this key vault. If you recently \
             deleted this secret you may be able to recover it using the correct recovery \
             command. For help resolving this issue, please see \
             https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn deleted_not_found(name: &str) -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("Deleted Secret not found: {name}"),
        None,
    )
}

fn internal(what: &str) -> Response {
    kv_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        what,
        None,
    )
}
