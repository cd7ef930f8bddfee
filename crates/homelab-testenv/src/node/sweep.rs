//! Removing everything a node made — processes, containers, mounts, network namespaces, cgroups,
//! iptables chains, the pod bridge, files — whether this process ran the node or a killed run
//! left it behind, and listing what is left.
//!
//! Container processes live in the node's cgroup (`/<CGROUP_ROOT>` in every hierarchy), outside
//! this process's own, and the shims re-parent themselves away from containerd, so nothing dies
//! with the test process by itself: the sweep finds them by cgroup and by command line.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::{CGROUP_ROOT, CNI_NETWORK};
use super::network::{self, BRIDGE};

/// Directories outside the node's own that the kubelet or the CNI plugins write to.
const STRAY_DIRS: [&str; 4] = [
    "/var/lib/kubelet/device-plugins",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd/s",
];

/// Chains the kubelet, kube-proxy and the CNI plugins create.
const CHAIN_PREFIXES: [&str; 2] = ["KUBE-", "CNI-"];
const TABLES: [&str; 3] = ["filter", "nat", "mangle"];

/// Stops and removes everything of a node that used `node_dir`. The network guard stays: it is
/// removed on its own, once nothing of the node runs ([`Guard::remove`](super::Guard::remove), [`Guard::sweep`](super::Guard::sweep)).
pub fn sweep(node_dir: &Path) {
    kill_node_processes(node_dir);
    unmount_under(node_dir);
    unmount_netns();
    let _ = network::run("ip", &["link", "del", BRIDGE]);
    remove_cgroups();
    remove_chains();
    let _ = fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(CNI_NETWORK));
    let _ = fs::remove_dir_all("/var/lib/cni/results");
    for dir in STRAY_DIRS {
        let _ = fs::remove_dir_all(dir);
    }
    // Nothing may be mounted below the directory any more; remove_dir_all would otherwise reach
    // into whatever a mount shows.
    if mounts_under(node_dir).is_empty() {
        let _ = fs::remove_dir_all(node_dir);
    }
}

/// What is left of a node that used `node_dir`, one line each; empty when nothing is. The
/// network guard is listed by [`Guard::leftovers`](super::Guard::leftovers).
pub fn leftovers(node_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for pid in node_pids(node_dir) {
        left.push(format!("process {pid} ({})", cmdline(pid)));
    }
    for mount in mounts_under(node_dir) {
        left.push(format!("mount {}", mount.display()));
    }
    for netns in cni_netns() {
        left.push(format!("network namespace {}", netns.display()));
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        left.push(format!("interface {BRIDGE}"));
    }
    for cgroup in cgroup_dirs() {
        left.push(format!("cgroup {}", cgroup.display()));
    }
    for (iptables, table, chain) in chains() {
        left.push(format!("{iptables} chain {table}/{chain}"));
    }
    if node_dir.exists() {
        left.push(format!("directory {}", node_dir.display()));
    }
    left
}

/// Every process of the node: those in its cgroups, and those whose command line names its
/// directory (containerd, the shims, the kubelet, kube-proxy, CoreDNS).
fn node_pids(node_dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    for cgroup in cgroup_dirs() {
        if let Ok(procs) = fs::read_to_string(cgroup.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    let needle = node_dir.display().to_string();
    let own = std::process::id();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != own && cmdline(pid).contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn kill_node_processes(node_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = node_pids(node_dir);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                // SIGKILL: the data of a test node is thrown away.
                let _ = network::run("kill", &["-9", &pid.to_string()]);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape_mount_path)
        .filter(|path| path.starts_with(dir))
        .collect();
    mounts.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape_mount_path(raw: &str) -> PathBuf {
    PathBuf::from(
        raw.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\"),
    )
}

fn unmount_under(dir: &Path) {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let _ = network::run("umount", &["-l", &mount.display().to_string()]);
        }
    }
}

/// The network namespaces containerd's CNI setup pinned under /run/netns.
fn cni_netns() -> Vec<PathBuf> {
    fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("cni-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unmount_netns() {
    for netns in cni_netns() {
        let path = netns.display().to_string();
        let _ = network::run("umount", &["-l", &path]);
        let _ = fs::remove_file(&netns);
    }
}

/// The node's cgroup directories in every hierarchy, deepest first.
fn cgroup_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return dirs;
    };
    for hierarchy in hierarchies.flatten() {
        let root = hierarchy.path().join(CGROUP_ROOT);
        if root.is_dir() {
            collect_dirs(&root, &mut dirs);
        }
    }
    dirs.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    dirs
}

fn collect_dirs(dir: &Path, into: &mut Vec<PathBuf>) {
    into.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), into);
            }
        }
    }
}

fn remove_cgroups() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dirs = cgroup_dirs();
        if dirs.is_empty() || Instant::now() > deadline {
            return;
        }
        for dir in dirs {
            // A cgroup is removed with rmdir once it holds no process; its files go with it.
            let _ = fs::remove_dir(&dir);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's chains, as `(iptables binary, table, chain)`.
fn chains() -> Vec<(&'static str, &'static str, String)> {
    let mut found = Vec::new();
    for iptables in ["iptables", "ip6tables"] {
        for table in TABLES {
            let Ok(rules) = network::output(iptables, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            for line in rules.lines() {
                if let Some(chain) = line.strip_prefix("-N ")
                    && CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
                {
                    found.push((iptables, table, chain.trim().to_owned()));
                }
            }
        }
    }
    found
}

/// Deletes every rule that jumps to one of the node's chains, then the chains.
fn remove_chains() {
    for iptables in ["iptables", "ip6tables"] {
        for table in TABLES {
            let Ok(rules) = network::output(iptables, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            let builtin: Vec<&str> = rules
                .lines()
                .filter_map(|l| l.strip_prefix("-P "))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            for chain in builtin {
                // Rules by number, last first, so the numbers of the others stay valid.
                let Ok(listed) = network::output(iptables, &["-w", "-t", table, "-S", chain])
                else {
                    continue;
                };
                let numbered: Vec<usize> = listed
                    .lines()
                    .filter(|l| l.starts_with("-A "))
                    .enumerate()
                    .filter(|(_, l)| {
                        CHAIN_PREFIXES.iter().any(|p| {
                            l.contains(&format!("-j {p}")) || l.contains(&format!("-g {p}"))
                        })
                    })
                    .map(|(i, _)| i + 1)
                    .collect();
                for number in numbered.into_iter().rev() {
                    let _ = network::run(
                        iptables,
                        &["-w", "-t", table, "-D", chain, &number.to_string()],
                    );
                }
            }
        }
    }
    // Chains may jump to each other: flush all, then delete all.
    let chains = chains();
    for (iptables, table, chain) in &chains {
        let _ = network::run(iptables, &["-w", "-t", table, "-F", chain]);
    }
    for (iptables, table, chain) in &chains {
        let _ = network::run(iptables, &["-w", "-t", table, "-X", chain]);
    }
}
