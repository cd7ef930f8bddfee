//! The node components' configuration files, as text. Pure: paths and addresses in, files out.

use std::path::Path;

use super::network::{
    BLOB_IP, BRIDGE, DNS_IP, LOGIN_IP, NODE_IP, POD_CIDR, POD_GATEWAY, POD_SUBNET, VAULT_IP,
};

/// The node's name, also the kubelet's identity `system:node:<name>`.
pub const NODE_NAME: &str = "homelab-node";
/// The cgroup, under the root of every hierarchy, that holds every pod of the node.
pub const CGROUP_ROOT: &str = "homelab-testenv-node";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The CNI network's name.
pub const CNI_NETWORK: &str = "homelab-testenv";
/// The sandbox image, built from the `k8s.io/kubernetes` module's pause.c.
pub const PAUSE_IMAGE: &str = "localhost/homelab/pause:3.10";

/// Host names that CoreDNS answers with the emulators' addresses, so that pods reach them under
/// the names Azure clients insist on.
pub fn emulator_hosts(
    storage_account: &str,
    vault_name: &str,
) -> Vec<(std::net::Ipv4Addr, String)> {
    vec![
        (BLOB_IP, format!("{storage_account}.blob.core.windows.net")),
        (VAULT_IP, format!("{vault_name}.vault.azure.net")),
        (LOGIN_IP, "login.microsoftonline.com".to_owned()),
    ]
}

/// containerd's configuration (version 3, containerd 2.x).
pub fn containerd(dir: &Path, bin_dir: &Path, cni_conf_dir: &Path) -> String {
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
# NRI would listen on a socket outside the node's directory; nothing here uses it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{ttrpc}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE: without this every pod fails to start.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = dir.join("containerd.sock").display(),
        ttrpc = dir.join("containerd-ttrpc.sock").display(),
        runc = bin_dir.join("runc").display(),
        runc_root = dir.join("runc").display(),
        cni_conf = cni_conf_dir.display(),
    )
}

/// The CNI network: one bridge, addresses from the node's pod subnet, no masquerade.
pub fn cni_conflist() -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "{CNI_NETWORK}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{POD_SUBNET}", "gateway": "{POD_GATEWAY}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "loopback" }}
  ]
}}
"#
    )
}

/// The kubelet's configuration.
pub fn kubelet(
    dir: &Path,
    containerd_socket: &Path,
    client_ca: &Path,
    resolv_conf: &Path,
    healthz_port: u16,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
containerRuntimeEndpoint: unix://{containerd_socket}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
# cgroup v1 is what this machine has; kubelet 1.36 still runs on it when told to.
failCgroupV1: false
failSwapOn: false
clusterDomain: {CLUSTER_DOMAIN}
clusterDNS: [{DNS_IP}]
resolvConf: {resolv_conf}
podLogsDir: {pod_logs}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {client_ca}
authorization:
  mode: AlwaysAllow
registerNode: true
hairpinMode: hairpin-veth
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
evictionPressureTransitionPeriod: 5s
nodeStatusReportFrequency: 10s
localStorageCapacityIsolation: false
volumePluginDir: {plugins}
"#,
        containerd_socket = containerd_socket.display(),
        client_ca = client_ca.display(),
        resolv_conf = resolv_conf.display(),
        pod_logs = dir.join("pod-logs").display(),
        plugins = dir.join("volume-plugins").display(),
    )
}

/// The resolv.conf the kubelet hands to pods: the cluster DNS only, never this machine's
/// resolver.
pub fn resolv_conf() -> String {
    format!("nameserver {DNS_IP}\noptions ndots:5\n")
}

/// kube-proxy's configuration: iptables mode, nothing listening beyond loopback.
pub fn kube_proxy(kubeconfig: &Path, healthz_port: u16, metrics_port: u16) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_IP}
clusterCIDR: {POD_CIDR}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
clientConnection:
  kubeconfig: {kubeconfig}
conntrack:
  # Leave the machine's conntrack table size alone.
  maxPerCore: 0
  min: 0
"#,
        kubeconfig = kubeconfig.display(),
    )
}

/// CoreDNS's Corefile: cluster names from the apiserver, the emulators' host names from a hosts
/// block, and nothing forwarded anywhere.
pub fn corefile(
    kubeconfig: &Path,
    hosts: &[(std::net::Ipv4Addr, String)],
    health_port: u16,
    ready_port: u16,
) -> String {
    let mut entries = String::new();
    for (ip, name) in hosts {
        entries.push_str(&format!("      {ip} {name}\n"));
    }
    format!(
        r#".:53 {{
  bind {DNS_IP}
  errors
  health 127.0.0.1:{health_port}
  ready 127.0.0.1:{ready_port}
  hosts {{
{entries}      fallthrough
  }}
  kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
    kubeconfig {kubeconfig}
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }}
  cache 5
}}
"#,
        kubeconfig = kubeconfig.display(),
    )
}

/// A kubeconfig authenticating with a static token.
pub fn token_kubeconfig(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: homelab-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: homelab-testenv
  context:
    cluster: homelab-testenv
    user: {user}
current-context: homelab-testenv
",
        ca = ca.display(),
    )
}
