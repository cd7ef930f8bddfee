//! `homelab-testenv`: keeps the test control plane (and any other test service) running for an
//! interactive session (`up`) or for one command (`exec -- CMD...`), so that every test process
//! attaches to it instead of starting its own.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use homelab_testenv::{Error, Service, TestEnv};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(version, about = "Run the homelab-operator test control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start everything, print the kubeconfig and `export` lines, and wait for Ctrl-C.
    Up {
        /// Also start a data plane: a second control plane with a real node under it.
        #[arg(long)]
        data_plane: bool,
    },
    /// Start everything, run CMD with the `export` variables set, stop everything, and exit with
    /// CMD's exit code.
    Exec {
        /// Also start a data plane: a second control plane with a real node under it.
        #[arg(long)]
        data_plane: bool,
        /// The command and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

/// Services in start order; each is stopped when dropped.
type Services = Vec<Box<dyn Service>>;

/// Starts every service tests may attach to. A new service (for example an emulator) is started
/// here; its `exports` are then printed by `up` and passed to the command by `exec`.
async fn start_services(data_plane: bool) -> Result<Services, Error> {
    let mut services: Services = Vec::new();
    if data_plane {
        // First: the node's network guard must be in place before anything listens on the
        // node's addresses.
        let plane = homelab_testenv::data_plane::DataPlane::start().await?;
        eprintln!(
            "homelab-testenv: data plane ready at {}",
            plane.env().apiserver_url()
        );
        services.push(Box::new(plane));
    }
    let env = TestEnv::start().await?;
    if let Some(control_plane) = env.control_plane() {
        eprintln!(
            "homelab-testenv: control plane ready at {} in {} with {} CRDs",
            env.apiserver_url(),
            control_plane.timings(),
            control_plane.crd_count()
        );
    }
    services.push(Box::new(env));
    Ok(services)
}

fn stop_services(mut services: Services) {
    while let Some(service) = services.pop() {
        tracing::debug!("stopping {}", service.name());
        drop(service);
    }
}

fn exports(services: &Services) -> Vec<(String, String)> {
    services.iter().flat_map(|s| s.exports()).collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("homelab_testenv=info")),
        )
        .init();
    let cli = Cli::parse();
    let data_plane = match &cli.command {
        Command::Up { data_plane } | Command::Exec { data_plane, .. } => *data_plane,
    };
    let services = match start_services(data_plane).await {
        Ok(services) => services,
        Err(e) => {
            eprintln!("homelab-testenv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        Command::Up { .. } => up(&services).await,
        Command::Exec { command, .. } => exec(&services, &command).await,
    };
    stop_services(services);
    code
}

async fn up(services: &Services) -> ExitCode {
    for (name, value) in exports(services) {
        println!("export {name}={}", shell_quote(&value));
    }
    eprintln!("homelab-testenv: running; press Ctrl-C to stop");
    tokio::select! {
        signal = shutdown_signal() => {
            if let Err(e) = signal {
                eprintln!("homelab-testenv: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        e = watch(services) => {
            eprintln!("homelab-testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn exec(services: &Services, command: &[OsString]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        return ExitCode::FAILURE;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .envs(exports(services))
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "homelab-testenv: cannot run {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(127);
        }
    };
    let watch = watch(services);
    tokio::pin!(watch);
    let mut watching = true;
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => exit_code(status),
                    Err(e) => {
                        eprintln!("homelab-testenv: waiting for the command failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            _ = shutdown_signal() => {
                eprintln!("homelab-testenv: interrupted; stopping the command");
                let _ = child.kill().await;
                return ExitCode::from(130);
            }
            e = &mut watch, if watching => {
                // The command's own tests will fail and say so; make the cause visible too.
                eprintln!("homelab-testenv: {e}");
                watching = false;
            }
        }
    }
}

/// Resolves when a service stops by itself, with the reason.
async fn watch(services: &Services) -> String {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    loop {
        interval.tick().await;
        for service in services {
            if let Err(e) = service.check_running() {
                return format!("{} stopped: {e}", service.name());
            }
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
