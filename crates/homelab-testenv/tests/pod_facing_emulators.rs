//! Pod-facing Azure emulators, on loopback addresses standing in for the node's BLOB_IP, VAULT_IP
//! and LOGIN_IP: Entra ID tokens for the configured service principal only, the official Key Vault
//! client and External Secrets Operator's raw requests against `https://<vault>.vault.azure.net`,
//! and Azurite under `https://devstoreaccount1.blob.core.windows.net` as well as path-style.
//!
//! Host names are mapped to the loopback addresses with reqwest's `resolve`, never through DNS.
//! Every test has its own addresses (port 443 each), so tests run in parallel. Port 443 needs
//! root. A missing Azurite fails the tests (run `bash hack/install-azurite.sh`); nothing is
//! skipped.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, ensure};
use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, Transport, Url};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt;
use homelab_testenv::azure::{
    AzureEmulatorError, AzureEmulators, PodFacing, PodFacingEndpoints, ServicePrincipal,
};
use serde_json::Value;

/// `127.42.<n>.10`, `.11`, `.12`: blob, vault and login addresses private to one test.
fn loopback_set(n: u8, vault_name: &str) -> PodFacing {
    PodFacing::new(
        Ipv4Addr::new(127, 42, n, 10),
        Ipv4Addr::new(127, 42, n, 11),
        Ipv4Addr::new(127, 42, n, 12),
        vault_name,
    )
}

async fn start(config: PodFacing) -> anyhow::Result<AzureEmulators> {
    AzureEmulators::start_pod_facing(config)
        .await
        .map_err(|e| anyhow!("pod-facing emulators could not be started: {e}"))
}

fn endpoints(az: &AzureEmulators) -> anyhow::Result<&PodFacingEndpoints> {
    az.pod_facing()
        .context("start_pod_facing returned emulators without pod-facing endpoints")
}

/// A client trusting only the emulators' CA, with the Azure host names mapped to the loopback
/// addresses through `ClientBuilder::resolve` (as a pod's DNS would answer them).
fn resolving_client(az: &AzureEmulators) -> anyhow::Result<reqwest::Client> {
    let pf = endpoints(az)?;
    let ca = reqwest::Certificate::from_pem(az.ca_pem().as_bytes())?;
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    for (name, ip) in pf.host_names() {
        builder = builder.resolve(&name, (ip, 443).into());
    }
    Ok(builder.build()?)
}

/// SDK options with `http` as transport, the public cloud (authority `login.microsoftonline.com`)
/// as the operator configures it, and retries bounded so that a failure fails fast.
fn sdk_options(az: &AzureEmulators, http: &reqwest::Client) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        cloud: Some(Arc::new(CloudConfiguration::AzurePublic)),
        ..az.client_options()
    }
}

fn client_secret_credential(
    az: &AzureEmulators,
    http: &reqwest::Client,
    principal: &ServicePrincipal,
    secret: &str,
) -> anyhow::Result<Arc<ClientSecretCredential>> {
    Ok(ClientSecretCredential::new(
        &principal.tenant_id,
        principal.client_id.clone(),
        Secret::new(secret.to_owned()),
        Some(ClientSecretCredentialOptions {
            client_options: sdk_options(az, http),
        }),
    )?)
}

fn claims(token: &str) -> anyhow::Result<Value> {
    let payload = token.split('.').nth(1).context("a JWT has three parts")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

/// A v1 token for `resource`, requested exactly as go-autorest's adal does for ESO.
async fn adal_token(
    http: &reqwest::Client,
    pf: &PodFacingEndpoints,
    resource: &str,
) -> anyhow::Result<String> {
    let sp = pf.service_principal();
    let response = http
        .post(format!("{}?api-version=1.0", pf.token_url_v1()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("client_id", &sp.client_id),
            ("client_secret", &sp.client_secret),
            ("grant_type", "client_credentials"),
            ("resource", resource),
        ]))
        .send()
        .await?;
    ensure!(response.status() == 200, "v1 token: {}", response.status());
    let body: Value = response.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("v1 token answer without access_token")
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn tokens_are_issued_for_the_right_secret_and_refused_for_a_wrong_one() -> anyhow::Result<()>
{
    let az = start(loopback_set(1, "pf-tokens")).await?;
    let pf = endpoints(&az)?;
    let http = resolving_client(&az)?;
    let sp = pf.service_principal().clone();

    // v1, as adal sends it: numbers as strings, the resource echoed, aud = the resource.
    let v1 = http
        .post(format!("{}?api-version=1.0", pf.token_url_v1()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", sp.client_secret.as_str()),
            ("resource", "https://vault.azure.net"),
        ]))
        .send()
        .await?;
    ensure!(v1.status() == 200, "v1: {}", v1.status());
    let v1: Value = v1.json().await?;
    assert_eq!(v1["token_type"], "Bearer");
    assert_eq!(v1["resource"], "https://vault.azure.net");
    for field in ["expires_in", "ext_expires_in", "expires_on", "not_before"] {
        let value = v1[field]
            .as_str()
            .with_context(|| format!("{field} in {v1}"))?;
        ensure!(
            value.parse::<i64>().is_ok(),
            "{field} is a number in a string"
        );
    }
    let v1_claims = claims(v1["access_token"].as_str().context("access_token")?)?;
    assert_eq!(v1_claims["aud"], "https://vault.azure.net");
    assert_eq!(v1_claims["tid"], sp.tenant_id.as_str());
    assert_eq!(v1_claims["appid"], sp.client_id.as_str());
    assert_eq!(v1_claims["oid"], sp.object_id.as_str());
    assert_eq!(
        v1_claims["iss"],
        format!("https://sts.windows.net/{}/", sp.tenant_id).as_str()
    );

    // v2: numbers as numbers, aud = the scope's resource.
    let v2 = http
        .post(pf.token_url_v2())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", sp.client_secret.as_str()),
            ("scope", "https://storage.azure.com/.default"),
        ]))
        .send()
        .await?;
    ensure!(v2.status() == 200, "v2: {}", v2.status());
    let v2: Value = v2.json().await?;
    assert_eq!(v2["token_type"], "Bearer");
    ensure!(
        v2["expires_in"].is_i64() && v2["ext_expires_in"].is_i64(),
        "{v2}"
    );
    assert_eq!(
        claims(v2["access_token"].as_str().context("access_token")?)?["aud"],
        "https://storage.azure.com"
    );

    // A wrong secret: Entra's 401 invalid_client / AADSTS7000215 on both endpoints.
    for (url, audience) in [
        (pf.token_url_v1(), ("resource", "https://vault.azure.net")),
        (
            pf.token_url_v2(),
            ("scope", "https://vault.azure.net/.default"),
        ),
    ] {
        let refused = http
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", sp.client_id.as_str()),
                ("client_secret", "not-the-secret"),
                audience,
            ]))
            .send()
            .await?;
        assert_eq!(refused.status(), 401, "{url}");
        let body: Value = refused.json().await?;
        assert_eq!(body["error"], "invalid_client", "{body}");
        assert_eq!(body["error_codes"], serde_json::json!([7000215]), "{body}");
        ensure!(body.get("access_token").is_none(), "no token with an error");
    }
    // An unknown client and an unknown tenant are refused too.
    let unknown_client = http
        .post(pf.token_url_v2())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "00000000-1111-4222-8333-444444444444"),
            ("client_secret", sp.client_secret.as_str()),
            ("scope", "https://vault.azure.net/.default"),
        ]))
        .send()
        .await?;
    assert_eq!(unknown_client.status(), 400);
    assert_eq!(
        unknown_client.json::<Value>().await?["error"],
        "unauthorized_client"
    );
    let unknown_tenant = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            pf.authority_url(),
            "0badc0de-0000-4000-8000-000000000000"
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sp.client_id.as_str()),
            ("client_secret", sp.client_secret.as_str()),
            ("scope", "https://vault.azure.net/.default"),
        ]))
        .send()
        .await?;
    assert_eq!(unknown_tenant.status(), 400);
    assert_eq!(
        unknown_tenant.json::<Value>().await?["error"],
        "invalid_tenant"
    );

    // The operator's credential (azure_identity's ClientSecretCredential, v2 endpoint).
    let good = client_secret_credential(&az, &http, &sp, &sp.client_secret)?;
    let token = good
        .get_token(&["https://vault.azure.net/.default"], None)
        .await?;
    assert_eq!(
        claims(token.token.secret())?["aud"],
        "https://vault.azure.net"
    );
    let bad = client_secret_credential(&az, &http, &sp, "not-the-secret")?;
    let error = match bad
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
    {
        Ok(_) => return Err(anyhow!("a wrong client secret got a token")),
        Err(e) => e,
    };
    let message = error.to_string();
    ensure!(
        message.contains("AADSTS7000215"),
        "the credential's error names Entra's code: {message}"
    );
    // ClientSecretCredential wraps the token endpoint's HTTP error in a credential error.
    let http_error = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<azure_core::Error>())
        .map(azure_core::Error::kind);
    match http_error {
        Some(ErrorKind::HttpResponse {
            status, error_code, ..
        }) => {
            assert_eq!(u16::from(*status), 401);
            assert_eq!(error_code.as_deref(), Some("7000215"));
        }
        other => {
            return Err(anyhow!(
                "expected an HTTP 401 inside {error:?}, got {other:?}"
            ));
        }
    }

    // MSAL's metadata: the tenant's OpenID configuration and instance discovery.
    let openid: Value = http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            pf.authority_url(),
            sp.tenant_id
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(openid["token_endpoint"], pf.token_url_v2().as_str());
    ensure!(openid["issuer"].is_string() && openid["authorization_endpoint"].is_string());
    let discovery: Value = http
        .get(format!(
            "{}/common/discovery/instance?api-version=1.1&authorization_endpoint={}/{}/oauth2/v2.0/authorize",
            pf.authority_url(),
            pf.authority_url(),
            sp.tenant_id
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        discovery["tenant_discovery_endpoint"],
        format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            pf.authority_url(),
            sp.tenant_id
        )
        .as_str()
    );
    Ok(())
}

#[tokio::test]
async fn the_key_vault_client_sets_and_gets_a_secret_under_the_vault_host_name()
-> anyhow::Result<()> {
    let az = start(loopback_set(2, "pf-vault")).await?;
    let pf = endpoints(&az)?;
    let http = resolving_client(&az)?;
    let sp = pf.service_principal().clone();
    assert_eq!(pf.vault_url(), "https://pf-vault.vault.azure.net");

    let credential = client_secret_credential(&az, &http, &sp, &sp.client_secret)?;
    // The default verify_challenge_resource: the challenge's resource must match the host.
    let client = SecretClient::new(
        &pf.vault_url(),
        credential,
        Some(SecretClientOptions {
            client_options: sdk_options(&az, &http),
            ..Default::default()
        }),
    )?;
    let name = unique("db-password");
    let set = client
        .set_secret(
            &name,
            SetSecretParameters {
                value: Some("s3cr3t".into()),
                ..Default::default()
            }
            .try_into()?,
            None,
        )
        .await?
        .into_model()?;
    let id = set.id.unwrap_or_default();
    ensure!(
        id.starts_with(&format!("https://pf-vault.vault.azure.net/secrets/{name}/")),
        "the id names the vault host: {id}"
    );
    let got = client.get_secret(&name, None).await?.into_model()?;
    assert_eq!(got.value.as_deref(), Some("s3cr3t"));

    // Without a token: Key Vault's challenge, naming this tenant and the vault resource.
    let challenged = http
        .get(format!("{}/secrets/{name}?api-version=7.5", pf.vault_url()))
        .send()
        .await?;
    assert_eq!(challenged.status(), 401);
    let challenge = challenged
        .headers()
        .get("www-authenticate")
        .context("a challenge")?
        .to_str()?
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            sp.tenant_id
        )
    );
    Ok(())
}

#[tokio::test]
async fn requests_as_external_secrets_operator_sends_them_get_key_vault_answers()
-> anyhow::Result<()> {
    let az = start(loopback_set(3, "pf-eso")).await?;
    let pf = endpoints(&az)?;
    let http = resolving_client(&az)?;
    let token = adal_token(&http, pf, "https://vault.azure.net").await?;
    let vault = pf.vault_url();
    let name = unique("eso-secret");

    // Two versions, written with the v7.0 API as ESO's PushSecret would.
    let mut versions = Vec::new();
    for value in ["first", "second"] {
        let set: Value = http
            .put(format!("{vault}/secrets/{name}?api-version=7.0"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "value": value }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = set["id"].as_str().context("id")?;
        versions.push(id.rsplit('/').next().context("version")?.to_owned());
    }

    // ESO's GetSecret with no version: `/secrets/<name>/` with an empty version.
    let latest = http
        .get(format!("{vault}/secrets/{name}/?api-version=7.0"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(latest.status(), 200);
    let latest: Value = latest.json().await?;
    assert_eq!(latest["value"], "second", "{latest}");
    assert_eq!(
        latest["id"],
        format!("{vault}/secrets/{name}/{}", versions[1]).as_str()
    );
    assert_eq!(latest["attributes"]["enabled"], true);
    ensure!(latest["attributes"]["created"].is_i64(), "{latest}");

    // With a version.
    let first: Value = http
        .get(format!(
            "{vault}/secrets/{name}/{}?api-version=7.0",
            versions[0]
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(first["value"], "first");

    // ESO's GetAllSecrets lists first.
    let list: Value = http
        .get(format!("{vault}/secrets?api-version=7.0&maxresults=25"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ids: Vec<&str> = list["value"]
        .as_array()
        .context("value")?
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    assert_eq!(ids, [format!("{vault}/secrets/{name}").as_str()]);

    // A missing secret is Key Vault's 404 (ESO: "Secret does not exist"); no token is a 401.
    let missing = http
        .get(format!("{vault}/secrets/no-such-secret/?api-version=7.0"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await?["error"]["code"],
        "SecretNotFound"
    );
    let anonymous = http
        .get(format!("{vault}/secrets/{name}/?api-version=7.0"))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    // A storage token is not a Key Vault token.
    let storage_token = adal_token(&http, pf, "https://storage.azure.com").await?;
    let wrong_audience = http
        .get(format!("{vault}/secrets/{name}/?api-version=7.0"))
        .bearer_auth(&storage_token)
        .send()
        .await?;
    assert_eq!(wrong_audience.status(), 401);
    Ok(())
}

#[tokio::test]
async fn blobs_are_reached_production_style_and_path_style() -> anyhow::Result<()> {
    let az = start(loopback_set(4, "pf-blob")).await?;
    let pf = endpoints(&az)?;
    let http = resolving_client(&az)?;
    let sp = pf.service_principal().clone();
    assert_eq!(
        pf.blob_url(),
        "https://devstoreaccount1.blob.core.windows.net"
    );
    let credential: Arc<dyn TokenCredential> =
        client_secret_credential(&az, &http, &sp, &sp.client_secret)?;

    // Production style: the account is the host's first label.
    let production = BlobServiceClient::new(
        Url::parse(&pf.blob_url())?,
        Some(credential.clone()),
        Some(BlobServiceClientOptions {
            client_options: sdk_options(&az, &http),
            ..Default::default()
        }),
    )?;
    let container_name = unique("wal");
    let container = production.blob_container_client(&container_name);
    container.create(None).await?;
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

    // Path style, by IP (as host-side clients reach it): the same account and blob.
    assert_eq!(
        pf.blob_path_style_url(),
        format!("https://{}/devstoreaccount1", pf.blob_ip())
    );
    assert_eq!(az.blob_service_url(), pf.blob_path_style_url());
    let path_style = BlobServiceClient::new(
        Url::parse(&pf.blob_path_style_url())?,
        Some(credential),
        Some(BlobServiceClientOptions {
            client_options: sdk_options(&az, &http),
            ..Default::default()
        }),
    )?;
    let same = path_style.blob_container_client(&container_name);
    let names: Vec<String> = same
        .list_blobs(None)?
        .map_ok(|blob| blob.name.unwrap_or_default())
        .try_collect()
        .await?;
    assert_eq!(names, ["base/backup.tar"]);
    let bytes = same
        .blob_client("base/backup.tar")
        .download(None)
        .await?
        .body
        .collect()
        .await?;
    assert_eq!(&bytes[..], b"not really a backup");

    // Raw production-style GET with a v1 storage token, as a pod's client would send it.
    let token = adal_token(&http, pf, "https://storage.azure.com").await?;
    let raw = http
        .get(format!(
            "{}/{container_name}/base/backup.tar",
            pf.blob_url()
        ))
        .bearer_auth(&token)
        .header("x-ms-version", "2025-11-05")
        .send()
        .await?;
    assert_eq!(raw.status(), 200);
    assert_eq!(&raw.bytes().await?[..], b"not really a backup");
    Ok(())
}

#[tokio::test]
async fn the_library_client_maps_the_host_names_and_everything_stops_on_drop() -> anyhow::Result<()>
{
    let config = loopback_set(5, "pf-drop");
    let az = start(config.clone()).await?;
    let pf = endpoints(&az)?.clone();
    // az.http_client() resolves the Azure host names itself.
    let token = adal_token(&az.http_client(), &pf, "https://vault.azure.net").await?;
    let status = az
        .http_client()
        .get(format!("{}/secrets/none/?api-version=7.0", pf.vault_url()))
        .bearer_auth(&token)
        .send()
        .await?
        .status();
    assert_eq!(status, 404);
    ensure!(az.ca_file().is_file(), "the CA file exists");
    assert_eq!(std::fs::read_to_string(az.ca_file())?, az.ca_pem());
    drop(az);

    // Nothing listens any more on the three addresses...
    for ip in [config.blob, config.vault, config.login] {
        ensure!(
            tokio::net::TcpStream::connect((ip, 443)).await.is_err(),
            "{ip}:443 still accepts connections after drop"
        );
    }
    // ...and a new set starts on the same addresses.
    let again = start(config).await?;
    let token = adal_token(
        &again.http_client(),
        endpoints(&again)?,
        "https://vault.azure.net",
    )
    .await?;
    ensure!(!token.is_empty());
    Ok(())
}

#[tokio::test]
async fn addresses_that_are_not_local_are_refused_before_anything_starts() {
    // TEST-NET-1: never configured here; binding it fails without sending anything.
    let config = PodFacing::new(
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(127, 42, 6, 11),
        Ipv4Addr::new(127, 42, 6, 12),
        "pf-refused",
    );
    match AzureEmulators::start_pod_facing(config).await {
        Err(AzureEmulatorError::NotLocal { address, .. }) => {
            assert_eq!(address, Ipv4Addr::new(192, 0, 2, 10));
        }
        other => panic!("expected NotLocal, got {other:?}"),
    }
    let invalid = PodFacing::new(
        Ipv4Addr::new(127, 42, 6, 10),
        Ipv4Addr::new(127, 42, 6, 10),
        Ipv4Addr::new(127, 42, 6, 12),
        "pf-refused",
    );
    assert!(AzureEmulators::start_pod_facing(invalid).await.is_err());
    let bad_name = loopback_set(6, "-not-a-vault");
    assert!(AzureEmulators::start_pod_facing(bad_name).await.is_err());
}

#[test]
fn service_principal_secrets_are_not_printed() {
    let sp = ServicePrincipal::generate();
    let printed = format!("{sp:?}");
    assert!(!printed.contains(&sp.client_secret), "{printed}");
    assert!(printed.contains(&sp.client_id));
}
