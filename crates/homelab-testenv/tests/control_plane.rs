//! Smoke tests of the real control plane: the upstream CRDs validate what the operator will write,
//! and the controllers the operator relies on (garbage collector, namespace deletion) run.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use homelab_testenv::TestEnv;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::ObjectMeta;
use serde_json::{Value, json};

const MANAGER: &str = "homelab-testenv-smoke";
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn cnpg_cluster() -> ApiResource {
    resource("postgresql.cnpg.io", "v1", "Cluster", "clusters")
}

fn object_store() -> ApiResource {
    resource("barmancloud.cnpg.io", "v1", "ObjectStore", "objectstores")
}

fn external_secret() -> ApiResource {
    resource(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
        "externalsecrets",
    )
}

/// Server-side applies `body` with strict field validation.
async fn apply(api: &Api<DynamicObject>, body: &Value) -> Result<DynamicObject, kube::Error> {
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).validation_strict();
    api.patch(name, &params, &Patch::Apply(body)).await
}

/// Asserts that applying `body` is refused as invalid (422), with a message containing `expected`.
async fn assert_rejected(api: &Api<DynamicObject>, body: &Value, expected: &str) -> Result<()> {
    assert_refused(api, body, 422, expected).await
}

/// Asserts that applying `body` is refused with `code` and a message containing `expected`.
async fn assert_refused(
    api: &Api<DynamicObject>,
    body: &Value,
    code: u16,
    expected: &str,
) -> Result<()> {
    match apply(api, body).await {
        Ok(_) => bail!("the apiserver accepted an invalid object: {body}"),
        Err(kube::Error::Api(status)) => {
            ensure!(
                status.code == code && status.message.contains(expected),
                "expected a {code} containing {expected:?}, got {}: {}",
                status.code,
                status.message
            );
            Ok(())
        }
        Err(e) => bail!("expected a validation error, got {e}"),
    }
}

async fn setup(prefix: &str) -> Result<(kube::Client, String)> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace(prefix).await?;
    Ok((client, namespace))
}

#[tokio::test]
async fn cnpg_cluster_is_validated_by_its_crd() -> Result<()> {
    let (client, ns) = setup("cnpg").await?;
    let api = Api::<DynamicObject>::namespaced_with(client, &ns, &cnpg_cluster());
    let valid = json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "app-db"},
        "spec": {
            "instances": 1,
            "storage": {"size": "1Gi"},
            "plugins": [{
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": true,
                "parameters": {"barmanObjectName": "app-db-backups"}
            }]
        }
    });
    let applied = apply(&api, &valid).await?;
    assert_eq!(applied.data["spec"]["instances"], 1);

    let mut too_few = valid.clone();
    too_few["metadata"]["name"] = json!("too-few");
    too_few["spec"]["instances"] = json!(0);
    assert_rejected(
        &api,
        &too_few,
        "spec.instances: Invalid value: 0: spec.instances in body should be greater than or equal to 1",
    )
    .await?;

    let mut unknown_field = valid.clone();
    unknown_field["metadata"]["name"] = json!("unknown-field");
    unknown_field["spec"]["backupp"] = json!({});
    // Server-side apply cannot build a typed patch from an undeclared field, and kube-apiserver
    // 1.36 answers that with 500 rather than 422: callers must not retry it as transient.
    assert_refused(
        &api,
        &unknown_field,
        500,
        ".spec.backupp: field not declared in schema",
    )
    .await
}

#[tokio::test]
async fn barman_object_store_is_validated_by_its_crd() -> Result<()> {
    let (client, ns) = setup("objectstore").await?;
    let api = Api::<DynamicObject>::namespaced_with(client, &ns, &object_store());
    let valid = json!({
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": {"name": "app-db-backups"},
        "spec": {
            "retentionPolicy": "30d",
            "configuration": {
                "destinationPath": "https://homelab.blob.core.windows.net/backups/app-db",
                "azureCredentials": {
                    "storageAccount": {"name": "app-db-azure", "key": "AZURE_STORAGE_ACCOUNT"},
                    "storageSasToken": {"name": "app-db-azure", "key": "AZURE_STORAGE_SAS_TOKEN"}
                },
                "wal": {"compression": "gzip"}
            }
        }
    });
    let applied = apply(&api, &valid).await?;
    assert_eq!(applied.data["spec"]["retentionPolicy"], "30d");

    let mut bad_retention = valid.clone();
    bad_retention["metadata"]["name"] = json!("bad-retention");
    bad_retention["spec"]["retentionPolicy"] = json!("30 days");
    assert_rejected(
        &api,
        &bad_retention,
        "spec.retentionPolicy in body should match '^[1-9][0-9]*[dwm]$'",
    )
    .await?;

    // The plugin takes serverName as a parameter; the CRD's CEL rule forbids it here.
    let mut server_name = valid.clone();
    server_name["metadata"]["name"] = json!("server-name");
    server_name["spec"]["configuration"]["serverName"] = json!("app-db");
    assert_rejected(
        &api,
        &server_name,
        "spec.configuration.serverName: Forbidden: use the 'serverName' plugin parameter",
    )
    .await
}

#[tokio::test]
async fn external_secret_is_validated_by_its_crd() -> Result<()> {
    let (client, ns) = setup("eso").await?;
    let api = Api::<DynamicObject>::namespaced_with(client, &ns, &external_secret());
    let valid = json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": "app-db-azure"},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": "azure-key-vault"},
            "target": {"name": "app-db-azure", "creationPolicy": "Owner"},
            "data": [{
                "secretKey": "AZURE_STORAGE_SAS_TOKEN",
                "remoteRef": {"key": "app-db-sas-token"}
            }]
        }
    });
    let applied = apply(&api, &valid).await?;
    assert_eq!(
        applied.data["spec"]["secretStoreRef"]["kind"],
        "ClusterSecretStore"
    );

    let mut bad_kind = valid.clone();
    bad_kind["metadata"]["name"] = json!("bad-kind");
    bad_kind["spec"]["secretStoreRef"]["kind"] = json!("KeyVault");
    assert_rejected(
        &api,
        &bad_kind,
        "spec.secretStoreRef.kind: Unsupported value: \"KeyVault\"",
    )
    .await
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() -> Result<()> {
    let (client, ns) = setup("gc").await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let owner = api
        .create(&PostParams::default(), &config_map("owner", None))
        .await?;
    let owner_uid = owner.metadata.uid.context("the owner has no uid")?;
    let reference = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid
    }]);
    api.create(
        &PostParams::default(),
        &config_map("dependent", Some(serde_json::from_value(reference)?)),
    )
    .await?;

    api.delete("owner", &DeleteParams::background()).await?;
    poll_until_gone(|| api.get_opt("dependent"), "ConfigMap dependent").await
}

#[tokio::test]
async fn namespace_deletion_completes() -> Result<()> {
    let (client, ns) = setup("nsdelete").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    config_maps
        .create(&PostParams::default(), &config_map("content", None))
        .await?;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    poll_until_gone(|| namespaces.get_opt(&ns), &format!("namespace {ns}")).await
}

#[tokio::test]
async fn service_account_client_is_subject_to_rbac_and_writes_are_audited() -> Result<()> {
    let env = TestEnv::get().await;
    let (admin, ns) = setup("rbac").await?;
    let robot = env.service_account_client(&ns, "robot").await?;
    match Api::<ConfigMap>::namespaced(robot, &ns)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => ensure!(
            status.code == 403
                && status
                    .message
                    .contains(&format!("system:serviceaccount:{ns}:robot")),
            "expected 403 for the robot, got {}: {}",
            status.code,
            status.message
        ),
        other => bail!("a service account without any role listed ConfigMaps: {other:?}"),
    }

    let audit_log = env
        .audit_log_path()
        .context("the test environment has no audit log")?;
    Api::<ConfigMap>::namespaced(admin, &ns)
        .create(&PostParams::default(), &config_map("audited", None))
        .await?;
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    loop {
        let log = std::fs::read_to_string(audit_log)?;
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| {
                e["verb"] == "create"
                    && e["objectRef"]["namespace"] == ns.as_str()
                    && e["objectRef"]["name"] == "audited"
                    && e["user"]["username"] == homelab_testenv::cluster::ADMIN_USER
            });
        if found {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no audit event for creating ConfigMap {ns}/audited in {}",
            audit_log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn kubectl_of_the_same_version_reaches_the_control_plane() -> Result<()> {
    let env = TestEnv::get().await;
    let output = env.kubectl()?.args(["version", "-o", "json"]).output()?;
    ensure!(
        output.status.success(),
        "kubectl version failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let version: Value = serde_json::from_slice(&output.stdout)?;
    let server = &version["serverVersion"]["gitVersion"];
    ensure!(
        server.as_str().is_some_and(|v| v.starts_with("v1.36.")),
        "unexpected server version {server}"
    );
    if env
        .binaries_dir()
        .is_some_and(|d| d.join("kubectl").is_file())
    {
        assert_eq!(version["clientVersion"]["gitVersion"], *server);
    }

    let output = env
        .kubectl()?
        .args(["get", "crd", "clusters.postgresql.cnpg.io", "-o", "name"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "customresourcedefinition.apiextensions.k8s.io/clusters.postgresql.cnpg.io"
    );
    Ok(())
}

fn config_map(
    name: &str,
    owner_references: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            owner_references,
            ..Default::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..Default::default()
    }
}

/// Polls `get` until it finds nothing, failing after [`POLL_TIMEOUT`].
async fn poll_until_gone<T, F, Fut>(get: F, what: &str) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    while get().await?.is_some() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} still exists after {POLL_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
