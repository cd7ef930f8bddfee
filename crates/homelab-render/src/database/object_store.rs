//! The Barman Cloud Plugin `ObjectStore`: destination, Azure credentials, compression and
//! retention. It never sets `configuration.serverName`: the server name is a parameter of each
//! Cluster that uses the store.

use homelab_api::backup_policy::{CredentialsMode, WalCompression};
use homelab_api::naming;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::Context;
use crate::error::RenderError;
use crate::facts::PolicyFacts;
use crate::kinds::OBJECT_STORE;
use crate::meta::{self, Ownership};
use crate::units;

/// Key of the storage account name in the SAS Secret (the variable barman-cloud reads).
pub(crate) const STORAGE_ACCOUNT_KEY: &str = "AZURE_STORAGE_ACCOUNT";
/// Key of the SAS token in the SAS Secret (the variable barman-cloud reads).
pub(crate) const SAS_TOKEN_KEY: &str = "AZURE_STORAGE_SAS_TOKEN";

pub(super) fn uses_sas_token(policy: &PolicyFacts) -> bool {
    policy.spec.storage.azure.credentials.mode == CredentialsMode::SasToken
}

/// `https://{account}.blob.core.windows.net/{container}`, or `{endpoint}/{container}`.
pub(crate) fn destination_path(policy: &PolicyFacts, container: &str) -> String {
    format!("{}/{container}", policy.spec.storage.azure.service_url())
}

fn wal_compression(compression: WalCompression) -> Option<&'static str> {
    match compression {
        WalCompression::None => None,
        WalCompression::Gzip => Some("gzip"),
        WalCompression::Bzip2 => Some("bzip2"),
        WalCompression::Snappy => Some("snappy"),
        WalCompression::Lz4 => Some("lz4"),
        WalCompression::Zstd => Some("zstd"),
        WalCompression::Xz => Some("xz"),
    }
}

/// Base backups use the WAL algorithm where barman-cloud-backup supports it, gzip otherwise.
fn data_compression(compression: WalCompression) -> Option<&'static str> {
    match compression {
        WalCompression::None => None,
        WalCompression::Bzip2 => Some("bzip2"),
        WalCompression::Snappy => Some("snappy"),
        WalCompression::Lz4 => Some("lz4"),
        WalCompression::Gzip | WalCompression::Zstd | WalCompression::Xz => Some("gzip"),
    }
}

pub(super) fn object_store(
    ctx: &Context,
    policy: &PolicyFacts,
    name: String,
    container: &str,
    sas_secret: String,
    ownership: Ownership,
) -> Result<DynamicObject, RenderError> {
    let spec = &policy.spec;
    let retention = units::retention_policy(&spec.retention).map_err(|reason| {
        RenderError::InvalidDuration {
            field: format!("BackupPolicy {}: spec.retention", policy.name),
            value: spec.retention.clone(),
            reason,
        }
    })?;
    let credentials = match spec.storage.azure.credentials.mode {
        CredentialsMode::SasToken => json!({
            "storageAccount": { "name": sas_secret, "key": STORAGE_ACCOUNT_KEY },
            "storageSasToken": { "name": sas_secret, "key": SAS_TOKEN_KEY },
        }),
        CredentialsMode::InheritFromAzureAD => json!({ "inheritFromAzureAD": true }),
    };
    let mut configuration = json!({
        "destinationPath": destination_path(policy, container),
        "azureCredentials": credentials,
    });
    if let Some(ca) = &spec.storage.azure.endpoint_ca {
        configuration["endpointCA"] = json!({ "name": ca.name, "key": ca.key });
    }
    if let Some(wal) = wal_compression(spec.wal_compression) {
        configuration["wal"] = json!({ "compression": wal });
    }
    if let Some(data) = data_compression(spec.wal_compression) {
        configuration["data"] = json!({ "compression": data });
    }
    let body: Value = json!({
        "spec": {
            "configuration": configuration,
            "retentionPolicy": retention,
        }
    });
    let metadata = meta::child_meta(
        &ctx.owner,
        name,
        ctx.labels(naming::COMPONENT_BACKUP),
        ownership,
    );
    Ok(meta::dynamic(&OBJECT_STORE, metadata, body))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::OperatorConfig;

    fn render(policy: &PolicyFacts, ownership: Ownership) -> Result<DynamicObject, RenderError> {
        let db = database("metadata: {name: linkding}\nspec: {}");
        let config = OperatorConfig::default();
        let ctx = Context::new(&db, &config)?;
        object_store(
            &ctx,
            policy,
            "linkding-db-backup".into(),
            "linkding-db-clean",
            "linkding-db-backup-sas".into(),
            ownership,
        )
    }

    #[test]
    fn sas_token_mode_reads_the_synced_secret() -> Result<(), RenderError> {
        let store = render(&daily(), Ownership::DataBearing { owned: false })?;
        assert!(store.metadata.owner_references.is_none());
        assert_eq!(
            spec(&store),
            &json!({
                "configuration": {
                    "destinationPath": "https://homelabbackups.blob.core.windows.net/linkding-db-clean",
                    "azureCredentials": {
                        "storageAccount": {"name": "linkding-db-backup-sas", "key": "AZURE_STORAGE_ACCOUNT"},
                        "storageSasToken": {"name": "linkding-db-backup-sas", "key": "AZURE_STORAGE_SAS_TOKEN"}
                    },
                    "wal": {"compression": "gzip"},
                    "data": {"compression": "gzip"}
                },
                "retentionPolicy": "7d"
            })
        );
        assert!(spec(&store)["configuration"].get("serverName").is_none());
        Ok(())
    }

    #[test]
    fn a_private_ca_for_the_endpoint_reaches_the_plugin() -> Result<(), RenderError> {
        let policy = policy(
            r#"
storage:
  azure:
    storageAccount: homelabbackups
    endpointCA: {name: blob-ca}
"#,
        );
        let store = render(&policy, Ownership::DataBearing { owned: false })?;
        assert_eq!(
            spec(&store)["configuration"]["endpointCA"],
            json!({"name": "blob-ca", "key": "ca.crt"})
        );
        let without = render(&daily(), Ownership::DataBearing { owned: false })?;
        assert!(spec(&without)["configuration"].get("endpointCA").is_none());
        Ok(())
    }

    #[test]
    fn workload_identity_mode_and_custom_endpoint() -> Result<(), RenderError> {
        let policy = policy(
            r#"
retention: 4w
walCompression: zstd
storage:
  azure:
    storageAccount: devstoreaccount1
    endpoint: "http://azurite.test:10000/devstoreaccount1/"
    credentials: {mode: InheritFromAzureAD}
"#,
        );
        let store = render(&policy, Ownership::DataBearing { owned: true })?;
        assert_eq!(
            store.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let c = &spec(&store)["configuration"];
        assert_eq!(
            c["destinationPath"],
            "http://azurite.test:10000/devstoreaccount1/linkding-db-clean"
        );
        assert_eq!(c["azureCredentials"], json!({"inheritFromAzureAD": true}));
        assert_eq!(c["wal"]["compression"], "zstd");
        assert_eq!(c["data"]["compression"], "gzip");
        assert_eq!(spec(&store)["retentionPolicy"], "4w");
        Ok(())
    }

    #[test]
    fn no_compression_leaves_both_unset() -> Result<(), RenderError> {
        let policy = policy("walCompression: none\nstorage: {azure: {storageAccount: a1b}}");
        let store = render(&policy, Ownership::Owned)?;
        let c = &spec(&store)["configuration"];
        assert!(c.get("wal").is_none() && c.get("data").is_none());
        Ok(())
    }

    #[test]
    fn bad_retention_names_the_field() {
        let policy = policy("retention: 7y\nstorage: {azure: {storageAccount: a1b}}");
        let err = render(&policy, Ownership::Owned)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("spec.retention")));
    }
}
