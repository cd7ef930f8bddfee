//! The node's addresses and the guard that keeps every packet of the node on this machine.
//!
//! An address that is not configured here is routed out of the machine by its default route, so
//! before any node component starts, [`Guard::install`] puts in place:
//! - a blackhole route for each range the node uses (node and emulator hosts, pods, Services):
//!   an address in them that nothing answers for is unreachable instead of routed away;
//! - rules that drop anything forwarded from or to the pod bridge except bridge-to-bridge
//!   traffic (in `mangle`, which kube-proxy and the kubelet leave alone, and again in `filter`);
//! - the node's own addresses, on `lo`.
//!
//! The CNI configuration has no masquerade, and the kubelet hands pods a resolv.conf naming only
//! the cluster DNS, so pods never see the machine's resolver. [`Guard::verify`] proves the guard
//! before anything starts; [`Guard::remove`] takes it away again once everything has stopped.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::Error;

/// The node's address: kube-apiserver's advertise address and the kubelet's InternalIP.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// CoreDNS, the cluster DNS of every pod.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 53);
/// The blob endpoint pods reach as `<account>.blob.core.windows.net` (Azurite).
pub const BLOB_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 10);
/// The Key Vault endpoint pods reach as `<vault>.vault.azure.net` (the Key Vault emulator).
pub const VAULT_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
/// The Entra ID token endpoint pods reach as `login.microsoftonline.com`.
pub const LOGIN_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 12);
/// Every address configured on `lo` for the node.
pub const HOST_IPS: [Ipv4Addr; 5] = [NODE_IP, DNS_IP, BLOB_IP, VAULT_IP, LOGIN_IP];

/// The range of the node's own addresses.
pub const HOST_CIDR: &str = "10.250.0.0/24";
/// The pods' range; the bridge holds the first address of [`POD_SUBNET`].
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The one node's pod subnet.
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// The bridge's address, the pods' gateway.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The Services' range.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP (the first address of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The pod bridge the CNI bridge plugin creates.
pub const BRIDGE: &str = "cni0";

/// The ranges that get a blackhole route.
pub const GUARDED_CIDRS: [&str; 3] = [HOST_CIDR, POD_CIDR, SERVICE_CIDR];

/// Addresses in the guarded ranges that nothing uses, probed by [`Guard::verify`].
const UNUSED_PROBES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 250, 0, 254),
    Ipv4Addr::new(10, 244, 200, 7),
    Ipv4Addr::new(10, 96, 255, 254),
];

/// The comment on every rule the guard adds, so that a sweep finds them.
const RULE_COMMENT: &str = "homelab-testenv node guard";

/// The installed guard. Removed by [`Guard::remove`], never by drop: the node must be gone first.
#[derive(Debug)]
pub struct Guard {
    previous_ip_forward: String,
}

/// One iptables rule of the guard: table, chain and the rule's arguments.
fn rules() -> Vec<(&'static str, &'static str, Vec<String>)> {
    let comment = |mut args: Vec<String>| {
        args.extend(["-m", "comment", "--comment", RULE_COMMENT].map(String::from));
        args
    };
    let mut rules = Vec::new();
    for (table, target) in [("mangle", "DROP"), ("filter", "REJECT")] {
        rules.push((
            table,
            "FORWARD",
            comment(
                ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", target]
                    .map(String::from)
                    .to_vec(),
            ),
        ));
        rules.push((
            table,
            "FORWARD",
            comment(
                ["-o", BRIDGE, "!", "-i", BRIDGE, "-j", target]
                    .map(String::from)
                    .to_vec(),
            ),
        ));
    }
    rules
}

impl Guard {
    /// Installs the guard (after removing what a killed run may have left) and verifies it.
    pub fn install() -> Result<Self, Error> {
        Self::sweep();
        let previous_ip_forward = read_sysctl("net/ipv4/ip_forward")?;
        for cidr in GUARDED_CIDRS {
            run("ip", &["route", "replace", "blackhole", cidr])?;
        }
        for ip in HOST_IPS {
            run("ip", &["addr", "replace", &format!("{ip}/32"), "dev", "lo"])?;
        }
        for (table, chain, rule) in rules() {
            for iptables in ["iptables", "ip6tables"] {
                let mut args = vec!["-w", "-t", table, "-I", chain, "1"];
                args.extend(rule.iter().map(String::as_str));
                run(iptables, &args)?;
            }
        }
        // Pods reach Services through the node (kube-proxy's DNAT), which is forwarding.
        write_sysctl("net/ipv4/ip_forward", "1")?;
        write_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        let guard = Self {
            previous_ip_forward,
        };
        guard.verify()?;
        Ok(guard)
    }

    /// Checks that the guard is in place: every guarded range is a blackhole, every rule is
    /// there, and an unused address in each range cannot be reached.
    pub fn verify(&self) -> Result<(), Error> {
        let routes = output("ip", &["route", "show", "type", "blackhole"])?;
        for cidr in GUARDED_CIDRS {
            if !routes
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(cidr))
            {
                return Err(guard_error(format!("no blackhole route for {cidr}")));
            }
        }
        for (table, chain, rule) in rules() {
            for iptables in ["iptables", "ip6tables"] {
                let mut args = vec!["-w", "-t", table, "-C", chain];
                args.extend(rule.iter().map(String::as_str));
                run(iptables, &args).map_err(|e| {
                    guard_error(format!(
                        "{iptables} rule in {table}/{chain} is missing: {e}"
                    ))
                })?;
            }
        }
        for probe in UNUSED_PROBES {
            let target = SocketAddrV4::new(probe, 80);
            if TcpStream::connect_timeout(&target.into(), Duration::from_millis(500)).is_ok() {
                return Err(guard_error(format!(
                    "{target} accepted a connection, but nothing may answer there"
                )));
            }
            let route = output("ip", &["route", "get", &probe.to_string()]);
            if let Ok(route) = route
                && !route.contains("blackhole")
            {
                return Err(guard_error(format!("{probe} is routed: {}", route.trim())));
            }
        }
        Ok(())
    }

    /// Removes the guard. Call only once nothing of the node runs any more.
    pub fn remove(self) {
        Self::sweep();
        let _ = write_sysctl("net/ipv4/ip_forward", self.previous_ip_forward.trim());
    }

    /// Removes every route, address and rule of a guard, whether this process installed it or
    /// a killed run left it.
    pub fn sweep() {
        for cidr in GUARDED_CIDRS {
            let _ = run("ip", &["route", "del", "blackhole", cidr]);
        }
        for ip in HOST_IPS {
            let _ = run("ip", &["addr", "del", &format!("{ip}/32"), "dev", "lo"]);
        }
        for (table, chain, rule) in rules() {
            for iptables in ["iptables", "ip6tables"] {
                let mut args = vec!["-w", "-t", table, "-D", chain];
                args.extend(rule.iter().map(String::as_str));
                // A rule inserted twice by two killed runs is deleted twice.
                while run(iptables, &args).is_ok() {}
            }
        }
    }
}

impl Guard {
    /// What is left of a guard, one line each; empty when nothing is.
    pub fn leftovers() -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(routes) = output("ip", &["route", "show", "type", "blackhole"]) {
            for cidr in GUARDED_CIDRS {
                if routes.contains(cidr) {
                    left.push(format!("blackhole route {cidr}"));
                }
            }
        }
        if let Ok(addrs) = output("ip", &["-4", "addr", "show", "dev", "lo"]) {
            for ip in HOST_IPS {
                if addrs.contains(&format!("{ip}/32")) {
                    left.push(format!("address {ip} on lo"));
                }
            }
        }
        for (table, chain, rule) in rules() {
            for iptables in ["iptables", "ip6tables"] {
                let mut args = vec!["-w", "-t", table, "-C", chain];
                args.extend(rule.iter().map(String::as_str));
                if run(iptables, &args).is_ok() {
                    left.push(format!(
                        "{iptables} rule in {table}/{chain}: {}",
                        rule.join(" ")
                    ));
                }
            }
        }
        left
    }
}

fn guard_error(reason: String) -> Error {
    Error::Node {
        what: "the network guard".into(),
        reason: format!("{reason}; nothing of the node was started"),
    }
}

/// Runs a command, failing with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    output(program, args).map(drop)
}

/// Runs a command and returns its stdout, failing with its stderr.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<String, Error> {
    let result = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Node {
            what: format!("{program} {}", args.join(" ")),
            reason: format!("cannot run {program}: {e} (install iproute2 and iptables)"),
        })?;
    if result.status.success() {
        Ok(String::from_utf8_lossy(&result.stdout).into_owned())
    } else {
        Err(Error::Node {
            what: format!("{program} {}", args.join(" ")),
            reason: format!(
                "{}: {}",
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            ),
        })
    }
}

fn read_sysctl(name: &str) -> Result<String, Error> {
    let path = format!("/proc/sys/{name}");
    std::fs::read_to_string(&path).map_err(Error::io(format!("reading {path}")))
}

pub(crate) fn write_sysctl(name: &str, value: &str) -> Result<(), Error> {
    let path = format!("/proc/sys/{name}");
    std::fs::write(&path, value).map_err(Error::io(format!("writing {value} to {path}")))
}
