//! The `homelab-operator` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homelab_operator::config::{RenderFlags, RunConfig};

#[derive(Parser)]
#[command(
    name = "homelab-operator",
    version,
    about = "Reconciles HomelabApp, AppDatabase and BackupPolicy resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers.
    Run(RunConfig),
    /// Print the child objects of the custom resources in FILE_OR_DIR as YAML.
    Render {
        /// Files or directories of YAML manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Also read the subdirectories of directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// The namespace of resources that name none (as `kubectl apply -n`).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        flags: RenderFlags,
    },
}

fn main() -> ExitCode {
    // kube and the Azure SDK bring different rustls crypto backends; pick one for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Render {
            paths,
            recursive,
            namespace,
            flags,
        } => {
            let config = flags.render_config();
            match homelab_operator::cli::render::render_paths(
                &paths, recursive, &namespace, &config,
            ) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(config) => run(config),
    }
}

fn run(config: RunConfig) -> ExitCode {
    homelab_operator::telemetry::init(config.log_format);
    tracing::info!(
        ?config,
        "starting homelab-operator {}",
        env!("CARGO_PKG_VERSION")
    );
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
    runtime.block_on(async move {
        let client = match kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)
            .and_then(homelab_operator::kubernetes::client::build)
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "cannot build a Kubernetes client: check KUBECONFIG or the pod's ServiceAccount");
                return ExitCode::FAILURE;
            }
        };
        match homelab_operator::run(config, client, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "homelab-operator stopped");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
