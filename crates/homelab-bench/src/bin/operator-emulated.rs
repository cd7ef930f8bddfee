//! `homelab-operator run` with its Azure side talking to the Azure emulators named by the
//! environment (`homelab-testenv`'s variables): the same library entry point as the released
//! binary, with the emulators' credential and CA instead of workload identity. For the benchmark
//! and chaos runs, which need a separate process they can kill.

use clap::Parser;
use homelab_operator::config::RunConfig;
use homelab_testenv::azure::AzureEmulators;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: RunConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    homelab_operator::telemetry::init(config.log_format);
    homelab_testenv::install_crypto_provider();
    let client = kube::Client::try_default().await?;
    let azure = if config.azure {
        let az = AzureEmulators::attach_from_env()?
            .ok_or_else(|| anyhow::anyhow!("--azure=true needs the emulators' variables"))?;
        Some(homelab_azure::AzureClients::with_credential(
            homelab_bench::emulators::operator_config(),
            az.credential(),
            Some(az.http_client()),
        ))
    } else {
        None
    };
    let shutdown = async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
    };
    homelab_operator::run_with(config, client, azure, shutdown).await?;
    Ok(())
}
