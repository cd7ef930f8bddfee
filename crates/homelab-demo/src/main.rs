//! `make demo`: the operator's main job on this machine. It starts the data plane the end-to-end
//! tests use (a control plane with a real node, real CloudNativePG, Barman Cloud Plugin and
//! External Secrets Operator, the Azure emulators under their Azure host names, and the operator
//! installed from `deploy/base`), applies the seed examples and shows what a user would look at:
//! databases Ready from CloudNativePG's own status, and their backups in Azurite.
//!
//! What differs from a homelab is said plainly: the apps' own images are not on the node and
//! nothing is pulled, so only the databases run.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use homelab_api::AppDatabase;
use homelab_testenv::binaries::Binaries;
use homelab_testenv::data_plane::DataPlane;
use homelab_testenv::data_plane::components::{apply_documents, parse_documents};
use kube::api::Api;
use serde_json::json;

const NAMESPACE: &str = "homelab";
const APPS: [&str; 5] = ["linkding", "commafeed", "wallabag", "n8n", "listmonk"];

#[derive(Parser)]
#[command(
    about = "Run homelab-operator on a local data plane (a real node) with the seed examples"
)]
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
        "Starting the data plane: a control plane, a real node (containerd, kubelet), CloudNativePG, the Barman Cloud Plugin, \
         External Secrets Operator, the Azure emulators under their Azure host names, and homelab-operator from deploy/base \
         (the first run builds them, see the README)",
    );
    // Attached to a running data plane (`homelab-testenv exec --data-plane`, as the end-to-end
    // phase of `make test` runs this demo), or a new one.
    let plane = DataPlane::from_env()
        .await
        .context("starting the data plane")?;
    homelab_e2e::operator_running(&plane).await?;
    done(t);
    let kubeconfig = plane.env().kubeconfig_path().to_path_buf();

    let t = step(&format!(
        "Applying examples/ into namespace {NAMESPACE}: the BackupPolicy (pointed at Azurite) and the five seed apps"
    ));
    apply_examples(&plane).await?;
    done(t);

    let t = step(
        "Waiting for real CloudNativePG to run every database with the password ESO synced from Key Vault",
    );
    wait_for_databases(&plane).await?;
    done(t);
    let t = step("Waiting for WAL and a base backup of every database in its Azurite container");
    for app in APPS {
        let container = format!("{app}-db-clean");
        for (what, part) in [("WAL", "/wals/"), ("a base backup", "/base/")] {
            homelab_e2e::wait_for_blob(&plane, &container, what, Duration::from_secs(600), |n| {
                n.contains(part)
            })
            .await?;
        }
    }
    done(t);

    let kubectl = Binaries::locate().await?.path("kubectl");
    for (title, args) in [
        (
            "kubectl get homelab -n homelab",
            vec!["get", "homelab", "-n", NAMESPACE],
        ),
        (
            "CloudNativePG clusters, scheduled backups and poolers (status from CloudNativePG)",
            vec![
                "get",
                "clusters.postgresql.cnpg.io,scheduledbackups.postgresql.cnpg.io,poolers.postgresql.cnpg.io",
                "-n",
                NAMESPACE,
            ],
        ),
        (
            "ExternalSecrets (synced by External Secrets Operator from the Key Vault emulator)",
            vec![
                "get",
                "externalsecrets.external-secrets.io",
                "-n",
                NAMESPACE,
            ],
        ),
        ("Pods", vec!["get", "pods", "-n", NAMESPACE, "-o", "wide"]),
    ] {
        show(&kubectl, &kubeconfig, title, &args)?;
    }
    eprintln!("\n--- Backups in Azurite");
    for app in APPS {
        let container = format!("{app}-db-clean");
        let names = homelab_e2e::blob_names(&plane, &container).await?;
        let wal = names.iter().filter(|n| n.contains("/wals/")).count();
        let base = names
            .iter()
            .filter(|n| n.contains("/base/") && n.ends_with("/backup.info"))
            .count();
        println!("{container}: {wal} WAL files, {base} base backup(s)");
    }

    eprintln!(
        "\nThe databases, their credentials and their backups above are real: PostgreSQL runs in pods on this machine's node,\n\
         CloudNativePG reports them, ESO brought the passwords the operator generated in Key Vault, and the Barman Cloud\n\
         Plugin archives into Azurite with the SAS tokens the operator minted. Changed from examples/ for this machine:\n\
         - the BackupPolicy names Azurite's account (devstoreaccount1) and the test CA (endpointCA);\n\
         - the databases use the node's PostgreSQL 17 image and one instance each (two cores);\n\
         - the apps' own Key Vault secrets, which a user creates, were set by the demo.\n\
         The apps' own images (linkding, commafeed, ...) are not on the node and nothing is pulled (no registry, no\n\
         internet), so their pods wait with ErrImagePull; their wiring is what the end-to-end tests connect with."
    );
    eprintln!("\nKUBECONFIG={}", kubeconfig.display());
    if !args.once {
        eprintln!("Everything keeps running; press Ctrl-C to stop and remove it all.");
        tokio::signal::ctrl_c().await?;
    }
    let t = step("Stopping the data plane and removing the node (unless it was attached to)");
    drop(plane);
    done(t);
    Ok(())
}

async fn apply_examples(plane: &DataPlane) -> Result<()> {
    let examples = homelab_testenv::repo_root().join("examples");
    let mut files = vec![examples.join("backup-policy.yaml")];
    files.extend(APPS.iter().map(|app| examples.join(format!("{app}.yaml"))));
    let ca = plane.azure_ca_pem()?;
    let mut app_secrets: Vec<String> = Vec::new();
    let mut documents = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "azurite-ca", "namespace": NAMESPACE},
            "stringData": {"ca.crt": ca},
        }),
    ];
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for mut value in parse_documents(&text, &file.display().to_string())? {
            match value["kind"].as_str() {
                Some("BackupPolicy") => {
                    let azure = &mut value["spec"]["storage"]["azure"];
                    azure["storageAccount"] = json!("devstoreaccount1");
                    azure["endpointCA"] = json!({"name": "azurite-ca"});
                }
                Some("AppDatabase") => {
                    value["spec"]["postgres"]["image"] = json!(homelab_e2e::POSTGRESQL_IMAGE);
                    value["spec"]["instances"] = json!(1);
                }
                Some("HomelabApp") => app_secrets.extend(
                    value["spec"]["secrets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["keyVaultSecret"].as_str())
                        .map(str::to_owned),
                ),
                other => bail!("unexpected kind {other:?} in {}", file.display()),
            }
            value["metadata"]["namespace"] = json!(NAMESPACE);
            eprintln!(
                "    {} {}",
                value["kind"].as_str().unwrap_or_default(),
                value["metadata"]["name"].as_str().unwrap_or_default()
            );
            documents.push(value);
        }
    }
    // The apps' own secrets are the user's to create (`az keyvault secret set`); the demo does it.
    let vault = homelab_e2e::Vault::new(plane)?;
    for name in &app_secrets {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        vault.set(name, &format!("demo-{nanos:x}")).await?;
        eprintln!("    Key Vault secret {name} (an app's own secret, set as a user would)");
    }
    let path = std::env::temp_dir().join("homelab-demo-examples.json");
    apply_documents(plane.env(), &documents, &path).await?;
    Ok(())
}

async fn wait_for_databases(plane: &DataPlane) -> Result<()> {
    let databases: Api<AppDatabase> = Api::namespaced(plane.env().client().await?, NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last = String::new();
    loop {
        let list = databases.list(&Default::default()).await?;
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|db| {
                db.status.as_ref().is_some_and(|s| {
                    s.observed_generation == db.metadata.generation
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .map(|db| db.metadata.name.clone().unwrap_or_default())
            .collect();
        let line = format!(
            "    {}/{} databases Ready: {}",
            ready.len(),
            APPS.len(),
            ready.join(", ")
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if ready.len() == APPS.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not every database became Ready within 15 minutes (kubectl describe appdatabase -n {NAMESPACE})"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
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
