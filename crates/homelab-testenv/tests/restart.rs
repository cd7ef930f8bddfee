//! Restarting kube-apiserver and etcd in place: the same address and kubeconfig keep working, no
//! object is lost, resource versions keep growing, a watch started before the restarts sees
//! objects created after them, and kube-controller-manager keeps running its controllers.
//!
//! Runs on a control plane of its own: restarting the shared one would fail the tests running
//! against it at the same time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use homelab_testenv::TestEnv;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};

const TIMEOUT: Duration = Duration::from_secs(90);

async fn create(api: &Api<ConfigMap>, name: &str) -> Result<u64> {
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &config_map)
        .await
        .with_context(|| format!("creating ConfigMap {name}"))?;
    resource_version(&created)
}

fn resource_version(config_map: &ConfigMap) -> Result<u64> {
    config_map
        .metadata
        .resource_version
        .as_deref()
        .context("no resourceVersion")?
        .parse()
        .context("resourceVersion is not a number")
}

async fn wait_for<F: Fn() -> bool>(what: &str, done: F) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > TIMEOUT {
            bail!("{what} within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_and_etcd_restart_in_place_keeping_their_data() -> Result<()> {
    let env = TestEnv::start().await?;
    let control_plane = env
        .control_plane()
        .context("TestEnv::start owns its control plane")?;
    let client = env.client().await?;
    let namespace = env.namespace("restart").await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watch = {
        let seen = seen.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                if let Ok(config_map) = event
                    && let Some(name) = config_map.metadata.name
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.insert(name);
                }
            }
        })
    };
    let before = create(&api, "before").await?;
    let saw = |name: &'static str| {
        let seen = seen.clone();
        move || seen.lock().is_ok_and(|seen| seen.contains(name))
    };
    wait_for("the watch did not see ConfigMap before", saw("before")).await?;

    let restart = control_plane
        .restart_apiserver(Duration::from_secs(1))
        .await?;
    println!("kube-apiserver restart: {restart:?}");
    ensure!(restart.apiserver_restarted);
    ensure!(restart.unavailable >= Duration::from_secs(1));
    control_plane.check_running()?;
    api.get("before")
        .await
        .context("reading after the restart")?;
    let after_apiserver = create(&api, "after-apiserver").await?;
    ensure!(after_apiserver > before, "{after_apiserver} <= {before}");
    wait_for(
        "the watch did not resume after the kube-apiserver restart",
        saw("after-apiserver"),
    )
    .await?;

    let restart = control_plane.restart_etcd(Duration::from_secs(2)).await?;
    println!("etcd restart: {restart:?}");
    control_plane.check_running()?;
    for name in ["before", "after-apiserver"] {
        api.get(name)
            .await
            .with_context(|| format!("{name} after the etcd restart"))?;
    }
    let after_etcd = create(&api, "after-etcd").await?;
    ensure!(
        after_etcd > after_apiserver,
        "{after_etcd} <= {after_apiserver}"
    );
    wait_for(
        "the watch did not resume after the etcd restart",
        saw("after-etcd"),
    )
    .await?;

    // kube-controller-manager reconnected: its service-account controller fills a new namespace.
    let fresh = env.namespace("restart-kcm").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &fresh);
    let start = Instant::now();
    while accounts.get_opt("default").await?.is_none() {
        ensure!(
            start.elapsed() < TIMEOUT,
            "no ServiceAccount {fresh}/default within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    control_plane.check_running()?;
    watch.abort();
    Ok(())
}
