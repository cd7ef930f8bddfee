//! `make demo`: the operator's main job on a local, embedded default. It starts a real
//! kube-apiserver (with etcd and the garbage collector), Azurite and the Key Vault emulator on
//! loopback, runs the operator, applies the seed examples and shows what a user would look at.
//!
//! What cannot run here is said plainly: there is no kubelet, so no pod ever starts, and neither
//! CloudNativePG nor External Secrets Operator runs — the objects they would act on are created
//! and validated by the real apiserver, and their status stays as those operators would find it.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::TryStreamExt;
use homelab_api::AppDatabase;
use homelab_azure::{AzureClients, AzureConfig, RetryConfig};
use homelab_testenv::azure::AzureEmulators;
use homelab_testenv::{TestEnv, binaries::Binaries};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const NAMESPACE: &str = "homelab";
const STORE: &str = "azure-keyvault";
const APPS: [&str; 5] = ["linkding", "commafeed", "wallabag", "n8n", "listmonk"];

#[derive(Parser)]
#[command(about = "Run homelab-operator on a local control plane with the seed examples")]
struct Args {
    /// Show the result and exit instead of waiting for Ctrl-C.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\ndemo failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(message: &str) -> Instant {
    eprintln!("==> {message}");
    Instant::now()
}

fn done(start: Instant) {
    eprintln!("    done in {:.1}s", start.elapsed().as_secs_f64());
}

async fn demo(args: Args) -> Result<()> {
    homelab_testenv::install_crypto_provider();

    let t = step(
        "Starting the control plane: etcd, kube-apiserver, kube-controller-manager (first run builds them from Go modules, several minutes)",
    );
    let env = TestEnv::start()
        .await
        .context("starting the control plane")?;
    done(t);
    let kubeconfig = env.kubeconfig_path().to_path_buf();
    let client = env.client().await?;

    let t = step("Starting the Azure emulators: Azurite (Blob Storage) and the Key Vault emulator");
    let az = AzureEmulators::start()
        .await
        .context("starting the Azure emulators")?;
    done(t);

    let t = step(&format!(
        "Creating namespace {NAMESPACE} and a ClusterSecretStore {STORE} pointing at the emulated Key Vault"
    ));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NAMESPACE,
            &PatchParams::apply("demo").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await?;
    let stores: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource(
            "external-secrets.io",
            "v1",
            "ClusterSecretStore",
            "clustersecretstores",
        ),
    );
    stores
        .patch(
            STORE,
            &PatchParams::apply("demo").force(),
            &Patch::Apply(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                "metadata": {"name": STORE},
                "spec": {"provider": {"azurekv": {
                    "vaultUrl": az.key_vault_url(),
                    "authType": "WorkloadIdentity",
                    "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}
                }}}
            })),
        )
        .await?;
    done(t);

    let t = step("Starting homelab-operator (in this process, watching namespace homelab)");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = homelab_operator::config::RunConfig::from_args([
        format!("--namespaces={NAMESPACE}"),
        "--http-addr=127.0.0.1:0".to_string(),
        "--leader-election=false".to_string(),
        format!("--default-secret-store={STORE}"),
    ])?;
    let azure = AzureClients::with_credential(
        AzureConfig {
            skip_challenge_resource_check: true,
            retry: RetryConfig {
                max_retries: 1,
                initial_delay: Duration::from_millis(100),
                max_elapsed: Duration::from_secs(3),
            },
            ..AzureConfig::default()
        },
        az.credential(),
        Some(az.http_client()),
    );
    let operator_client = client.clone();
    let operator = tokio::spawn(async move {
        homelab_operator::run_with(config, operator_client, Some(azure), async move {
            let _ = stopped.await;
        })
        .await
    });
    done(t);

    let t =
        step("Applying examples/: the BackupPolicy (pointed at Azurite) and the five seed apps");
    apply_examples(&client, &az).await?;
    done(t);

    let t = step(
        "Waiting for every AppDatabase to get its password, backup container and SAS token in Azure, and for every child object",
    );
    wait_for_convergence(&client).await?;
    done(t);

    let kubectl = Binaries::locate().await?.path("kubectl");
    for (title, args) in [
        (
            "kubectl get homelab -n homelab",
            vec!["get", "homelab", "-n", NAMESPACE],
        ),
        (
            "CloudNativePG clusters, scheduled backups and poolers",
            vec![
                "get",
                "clusters.postgresql.cnpg.io,scheduledbackups.postgresql.cnpg.io,poolers.postgresql.cnpg.io",
                "-n",
                NAMESPACE,
            ],
        ),
        (
            "Barman Cloud object stores",
            vec!["get", "objectstores.barmancloud.cnpg.io", "-n", NAMESPACE],
        ),
        (
            "ExternalSecrets (synced by External Secrets Operator in a real cluster)",
            vec![
                "get",
                "externalsecrets.external-secrets.io",
                "-n",
                NAMESPACE,
            ],
        ),
        (
            "Ingresses and HTTPRoutes",
            vec![
                "get",
                "ingresses,httproutes.gateway.networking.k8s.io",
                "-n",
                NAMESPACE,
            ],
        ),
        (
            "Deployments (no kubelet here: their pods never start)",
            vec!["get", "deployments", "-n", NAMESPACE],
        ),
    ] {
        show(&kubectl, &kubeconfig, title, &args)?;
    }
    show_azure(&az).await?;

    eprintln!(
        "\nWhat you see is the operator's real output, accepted by the real apiserver. What cannot run here:\n\
         - no kubelet: pods never start, so Deployments report 0 available replicas;\n\
         - no CloudNativePG and no External Secrets Operator: clusters and ExternalSecrets get no status,\n\
           so Ready stays False or Unknown with the reason the operator found (kubectl describe appdatabase -n homelab).\n\
         On a real cluster with CNPG, the Barman Cloud Plugin, ESO and cert-manager, the same objects become Ready."
    );
    eprintln!("\nKUBECONFIG={}", kubeconfig.display());
    if !args.once {
        eprintln!("Everything keeps running; press Ctrl-C to stop and remove it all.");
        tokio::signal::ctrl_c().await?;
    }
    let t = step("Stopping the operator, the emulators and the control plane");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    drop(az);
    drop(env);
    done(t);
    Ok(())
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

async fn apply_examples(client: &kube::Client, az: &AzureEmulators) -> Result<()> {
    let examples = homelab_testenv::repo_root().join("examples");
    let mut files = vec![examples.join("backup-policy.yaml")];
    files.extend(APPS.iter().map(|app| examples.join(format!("{app}.yaml"))));
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let mut value: serde_json::Value = serde::Deserialize::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            if value["kind"] == "BackupPolicy" {
                // Backups go to the emulated storage account.
                value["spec"]["storage"]["azure"]["storageAccount"] = json!(az.account_name());
                value["spec"]["storage"]["azure"]["endpoint"] = json!(az.blob_service_url());
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = match kind.as_str() {
                "AppDatabase" => "appdatabases",
                "HomelabApp" => "homelabapps",
                "BackupPolicy" => "backuppolicies",
                other => bail!("unexpected kind {other} in {}", file.display()),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                NAMESPACE,
                &resource("homelab.io", "v1alpha1", &kind, plural),
            );
            api.patch(
                &name,
                &PatchParams::apply("demo").force(),
                &Patch::Apply(&value),
            )
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
            eprintln!("    applied {kind} {name}");
        }
    }
    Ok(())
}

async fn wait_for_convergence(client: &kube::Client) -> Result<()> {
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        let list = databases.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|db| {
                db.status.as_ref().is_some_and(|s| {
                    s.password_origin.is_some()
                        && s.backup
                            .as_ref()
                            .and_then(|b| b.sas_expires.as_ref())
                            .is_some()
                        && s.observed_generation == db.metadata.generation
                })
            })
            .count();
        let line = format!("    {ready}/{} databases have their Azure side", APPS.len());
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if ready == APPS.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the databases did not converge within two minutes (kubectl describe appdatabase -n {NAMESPACE})"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn show(kubectl: &Path, kubeconfig: &Path, title: &str, args: &[&str]) -> Result<()> {
    eprintln!("\n--- {title}");
    let output = std::process::Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn show_azure(az: &AzureEmulators) -> Result<()> {
    eprintln!("\n--- Key Vault secrets (emulator)");
    let secrets = azure_security_keyvault_secrets::SecretClient::new(
        az.key_vault_url(),
        az.credential(),
        Some(azure_security_keyvault_secrets::SecretClientOptions {
            client_options: az.client_options(),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )?;
    let mut names: Vec<String> = Vec::new();
    let mut pages = secrets.list_secret_properties(None)?;
    while let Some(item) = pages.try_next().await? {
        if let Some(id) = item.id {
            names.push(id.rsplit('/').next().unwrap_or(&id).to_string());
        }
    }
    names.sort();
    for name in &names {
        println!("{name}");
    }
    eprintln!("\n--- Blob containers (Azurite)");
    let blobs = azure_storage_blob::BlobServiceClient::new(
        url::Url::parse(az.blob_service_url())?,
        Some(az.credential()),
        Some(azure_storage_blob::BlobServiceClientOptions {
            client_options: az.client_options(),
            ..Default::default()
        }),
    )?;
    let mut containers: Vec<String> = Vec::new();
    let mut pages = blobs.list_containers(None)?;
    while let Some(item) = pages.try_next().await? {
        if let Some(name) = item.name {
            containers.push(name);
        }
    }
    containers.sort();
    for name in &containers {
        println!("{name}");
    }
    Ok(())
}
