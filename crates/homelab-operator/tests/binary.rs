//! The `homelab-operator` binary as it runs in a pod: started as a process with a kubeconfig, it
//! becomes ready, reconciles, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use homelab_testenv::TestEnv;
use support::*;

#[tokio::test]
async fn the_binary_starts_reconciles_and_stops_on_sigterm() {
    let env = TestEnv::get().await;
    let client = env.client().await.unwrap();
    let ns = env.namespace("binary").await.unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args([
            "run",
            &format!("--namespaces={ns}"),
            &format!("--http-addr=127.0.0.1:{port}"),
            "--azure=false",
            "--leader-election=false",
            "--log-format=json",
        ])
        .env("KUBECONFIG", env.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = eventually("/readyz", Duration::from_secs(60), || async move {
        let body = http_get(port, "/readyz").await?;
        body.starts_with("HTTP/1.1 200").then_some(body)
    })
    .await;
    assert!(ready.contains("controllers running"), "{ready}");
    apply_example(&client, &ns, "backup-policy.yaml").await;
    apply_example(&client, &ns, "listmonk.yaml").await;
    let deployments = dynamic_api(&client, &ns, "apps/v1", "Deployment");
    eventually("the Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("listmonk")
                .await
                .ok()
                .flatten()
                .map(|_| ())
        }
    })
    .await;
    let metrics = http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("homelab_operator_reconciles_total"),
        "{metrics}"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut logs);
        }
        (status, logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("the operator stops within 20s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit {status}:\n{logs}");
    // JSON logs: one object per line.
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line}"
        );
    }
    assert!(logs.contains("shutting down"), "{logs}");
}
