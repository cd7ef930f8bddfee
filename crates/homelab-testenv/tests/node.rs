//! The test node: pods run behind the network guard, reach the apiserver through its Service and
//! resolve cluster names, cannot reach an address nothing answers for, and the node leaves
//! nothing behind, not even after the process that ran it was killed.
//!
//! Only one node can run on a machine, so these tests take turns.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use homelab_testenv::data_plane::DataPlane;
use homelab_testenv::node::{self, Guard, network};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{LogParams, PostParams};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;

static ONE_NODE: Mutex<()> = Mutex::const_new(());

/// What the probe pod prints, one `name=outcome` a line.
const PROBE: &str = r#"
probe() { if timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo "$3=open"; else echo "$3=closed"; fi; }
probe 10.96.0.1 443 kubernetes-service
probe 10.244.200.7 80 unused-pod-address
probe 10.96.255.254 80 unused-service-address
probe 10.250.0.254 80 unused-host-address
if getent hosts kubernetes.default.svc.cluster.local >/dev/null; then echo dns=resolved; else echo dns=failed; fi
"#;

async fn run_probe(plane: &DataPlane) -> Result<String> {
    let env = plane.env();
    let client = env.client().await?;
    let namespace = env.namespace("node-probe").await?;
    let image = "localhost/homelab/psql:17.12";
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "probe" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["bash", "-c", PROBE],
            }],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase = pods
            .get("probe")
            .await?
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default();
        if phase == "Succeeded" {
            break;
        }
        if phase == "Failed" || Instant::now() > deadline {
            bail!("the probe pod ended {phase:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Read through the apiserver, so the kubelet's serving side is proven too.
    Ok(pods.logs("probe", &LogParams::default()).await?)
}

#[tokio::test]
async fn pods_run_behind_the_guard_and_the_node_leaves_nothing() -> Result<()> {
    let _turn = ONE_NODE.lock().await;
    let plane = DataPlane::start().await?;
    let output = run_probe(&plane).await?;
    for expected in [
        "kubernetes-service=open",
        "unused-pod-address=closed",
        "unused-service-address=closed",
        "unused-host-address=closed",
        "dns=resolved",
    ] {
        assert!(
            output.lines().any(|l| l.trim() == expected),
            "the probe pod did not print {expected}:\n{output}"
        );
    }
    // The guard, as the host sees it: blackhole routes and no route out for the ranges.
    for cidr in network::GUARDED_CIDRS {
        let routes = std::process::Command::new("ip")
            .args(["route", "show", "type", "blackhole"])
            .output()?;
        assert!(String::from_utf8_lossy(&routes.stdout).contains(cidr));
    }
    assert!(
        !node::sweep::leftovers(&node::node_dir()).is_empty(),
        "a running node shows"
    );
    drop(plane);
    let left = node::sweep::leftovers(&node::node_dir());
    assert!(left.is_empty(), "the node left: {left:?}");
    let guard = Guard::leftovers();
    assert!(guard.is_empty(), "the guard left: {guard:?}");
    Ok(())
}

#[tokio::test]
async fn a_node_whose_process_was_killed_is_swept_by_the_next_start() -> Result<()> {
    let _turn = ONE_NODE.lock().await;
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-testenv"))
        .args(["up", "--data-plane"])
        .env_remove(homelab_testenv::KUBECONFIG_ENV)
        .env_remove(homelab_testenv::data_plane::KUBECONFIG_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = up.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut kubeconfig = None;
    let waited = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(value) = line.strip_prefix(&format!(
                "export {}=",
                homelab_testenv::data_plane::KUBECONFIG_ENV
            )) {
                kubeconfig = Some(value.trim_matches('\'').to_owned());
                break;
            }
        }
        anyhow::Ok(())
    })
    .await;
    waited.context("`homelab-testenv up --data-plane` did not print its exports")??;
    let kubeconfig = kubeconfig.context("no data-plane kubeconfig exported")?;
    // A pod runs, so a shim and a container outlive the killed process.
    let attached =
        homelab_testenv::TestEnv::attach(std::path::Path::new(&kubeconfig), None).await?;
    let client = attached.client().await?;
    let namespace = attached.namespace("killed").await?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "sleeper" },
        "spec": { "containers": [{
            "name": "sleeper", "image": "localhost/homelab/pause:3.10", "imagePullPolicy": "Never",
        }] },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while pods
        .get("sleeper")
        .await?
        .status
        .and_then(|s| s.phase)
        .as_deref()
        != Some("Running")
    {
        if Instant::now() > deadline {
            bail!("the pod did not run");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    up.start_kill()?;
    up.wait().await?;
    let left = node::sweep::leftovers(&node::node_dir());
    assert!(
        left.iter().any(|l| l.starts_with("process")),
        "a killed node leaves its shims and containers, which the sweep must find: {left:?}"
    );

    let plane = DataPlane::start().await?;
    drop(plane);
    let left = node::sweep::leftovers(&node::node_dir());
    assert!(left.is_empty(), "after the next start and stop: {left:?}");
    assert!(Guard::leftovers().is_empty());
    Ok(())
}
