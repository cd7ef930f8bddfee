//! Inspecting the Azure emulators: Key Vault secret versions and Blob containers, through their
//! REST APIs as an operator's auditor would.

use anyhow::{Context as _, Result, bail};
use homelab_testenv::azure::{AzureEmulators, EmulatorCredential};

/// Azure settings of the operator process for the emulators.
pub fn operator_config() -> homelab_azure::AzureConfig {
    homelab_azure::AzureConfig {
        skip_challenge_resource_check: true,
        retry: homelab_azure::RetryConfig {
            max_retries: 1,
            initial_delay: std::time::Duration::from_millis(100),
            max_elapsed: std::time::Duration::from_secs(3),
        },
        ..homelab_azure::AzureConfig::default()
    }
}

/// How many versions the Key Vault secret `name` has (0 when it does not exist).
pub async fn secret_versions(az: &AzureEmulators, name: &str) -> Result<usize> {
    let token = EmulatorCredential::token_for("https://vault.azure.net/.default");
    let mut url = format!(
        "{}/secrets/{name}/versions?api-version=7.5",
        az.key_vault_url()
    );
    let mut count = 0;
    loop {
        let response = az
            .http_client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(count);
        }
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        let body: serde_json::Value = response.json().await?;
        count += body["value"].as_array().map(Vec::len).unwrap_or(0);
        match body["nextLink"].as_str() {
            Some(next) if !next.is_empty() => url = next.to_string(),
            _ => return Ok(count),
        }
    }
}

/// Names of the Blob containers starting with `prefix`.
pub async fn containers(az: &AzureEmulators, prefix: &str) -> Result<Vec<String>> {
    let token = EmulatorCredential::token_for("https://storage.azure.com/.default");
    let mut names = Vec::new();
    let mut marker = String::new();
    loop {
        let url = format!(
            "{}/?comp=list&prefix={prefix}&maxresults=5000{}",
            az.blob_service_url(),
            if marker.is_empty() {
                String::new()
            } else {
                format!("&marker={marker}")
            }
        );
        let response = az
            .http_client()
            .get(&url)
            .bearer_auth(&token)
            .header("x-ms-version", "2021-12-02")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        let body = response.text().await?;
        names.extend(between_all(&body, "<Name>", "</Name>"));
        marker = between_all(&body, "<NextMarker>", "</NextMarker>")
            .into_iter()
            .next()
            .unwrap_or_default();
        if marker.is_empty() {
            return Ok(names);
        }
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

/// A ClusterSecretStore named `name` pointing at the emulated vault (the operator finds the vault
/// of a database through its store), and the operator flag that makes it the default.
pub async fn secret_store(
    client: &kube::Client,
    name: &str,
    az: &AzureEmulators,
) -> Result<String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let stores: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("external-secrets.io", "v1", "ClusterSecretStore"),
            "clustersecretstores",
        ),
    );
    stores
        .patch(
            name,
            &PatchParams::apply("homelab-bench").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "external-secrets.io/v1",
                "kind": "ClusterSecretStore",
                "metadata": {"name": name},
                "spec": {"provider": {"azurekv": {
                    "vaultUrl": az.key_vault_url(),
                    "authType": "WorkloadIdentity",
                    "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}
                }}}
            })),
        )
        .await
        .context("applying the ClusterSecretStore")?;
    Ok(format!("--default-secret-store={name}"))
}
