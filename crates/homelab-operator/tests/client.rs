//! The operator's Kubernetes client against the real apiserver: requests in flight are streams
//! of one HTTP/2 connection. (Its own test binary, so that no other test's client adds
//! connections to this process while it counts them.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use homelab_testenv::TestEnv;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

const BURST: usize = 48;

#[tokio::test]
async fn a_burst_of_requests_shares_one_connection() {
    let env = TestEnv::get().await;
    homelab_testenv::install_crypto_provider();
    let port = apiserver_port(env.apiserver_url());

    let before = connections_to(port);
    let client = homelab_operator::kubernetes::client::build(env.config().clone()).unwrap();
    burst(&client).await;
    let opened = connections_to(port).difference(&before).count();
    assert_eq!(
        opened, 1,
        "{BURST} requests in flight over HTTP/2 need one connection"
    );

    // The same count for kube's default HTTP/1.1 stack: one connection per request in flight,
    // which is what the count above would show if the client fell back to it.
    let before = connections_to(port);
    let default = kube::Client::try_from(env.config().clone()).unwrap();
    burst(&default).await;
    let opened = connections_to(port).difference(&before).count();
    assert!(
        opened > 1,
        "HTTP/1.1 opened {opened} connection(s) for {BURST} requests in flight"
    );
}

async fn burst(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let params = ListParams::default();
    let lists = (0..BURST).map(|_| namespaces.list(&params));
    for result in futures::future::join_all(lists).await {
        result.expect("listing namespaces");
    }
}

fn apiserver_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .expect("the apiserver URL names its port")
}

/// The socket inodes of this process's established TCP connections to `port`.
fn connections_to(port: u16) -> HashSet<u64> {
    let own: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut found = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 01 is ESTABLISHED.
            if remote_port == Some(port)
                && *state == "01"
                && let Ok(inode) = inode.parse::<u64>()
                && own.contains(&inode)
            {
                found.insert(inode);
            }
        }
    }
    found
}
