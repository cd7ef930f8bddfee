//! CPU seconds of the processes that share the machine during a timed run: the control plane
//! the bench started (its child processes), the bench itself (the floor's client and every
//! watch) and the operator process. On a machine the runs keep busy, these explain a ratio of
//! times as a ratio of work.

use std::ops::{Add, Sub};

/// The control plane processes, by command name.
/// (`comm` is cut at 15 characters: kube-controller-manager shows as `kube-controller`.)
const CONTROL_PLANE: [&str; 3] = ["kube-apiserver", "etcd", "kube-controller"];

/// CPU seconds (user + system) spent so far, per process group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuSplit {
    pub apiserver: f64,
    pub etcd: f64,
    pub controller_manager: f64,
    /// This process: the bench's client and watches.
    pub bench: f64,
    /// The operator process, when one runs.
    pub operator: f64,
}

impl CpuSplit {
    /// What every process of this machine's run has spent so far; `operator` is the operator
    /// process's pid, if one runs.
    pub fn now(operator: Option<u32>) -> Self {
        let mut split = CpuSplit {
            bench: of_process("self").unwrap_or_default(),
            operator: operator
                .and_then(|pid| of_process(&pid.to_string()))
                .unwrap_or_default(),
            ..Default::default()
        };
        for (name, seconds) in control_plane() {
            match name.as_str() {
                "kube-apiserver" => split.apiserver += seconds,
                "etcd" => split.etcd += seconds,
                _ => split.controller_manager += seconds,
            }
        }
        split
    }

    pub fn total(&self) -> f64 {
        self.apiserver + self.etcd + self.controller_manager + self.bench + self.operator
    }
}

impl Add for CpuSplit {
    type Output = CpuSplit;

    fn add(self, other: CpuSplit) -> CpuSplit {
        CpuSplit {
            apiserver: self.apiserver + other.apiserver,
            etcd: self.etcd + other.etcd,
            controller_manager: self.controller_manager + other.controller_manager,
            bench: self.bench + other.bench,
            operator: self.operator + other.operator,
        }
    }
}

impl Sub for CpuSplit {
    type Output = CpuSplit;

    fn sub(self, before: CpuSplit) -> CpuSplit {
        CpuSplit {
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            controller_manager: self.controller_manager - before.controller_manager,
            bench: self.bench - before.bench,
            operator: self.operator - before.operator,
        }
    }
}

/// CPU seconds (user + system) of `/proc/<pid>` (`self` for this process).
pub fn of_process(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = times(&stat)?;
    Some((utime + stime) / clock_ticks())
}

/// (command name, CPU seconds) of this process's children that belong to the control plane.
fn control_plane() -> Vec<(String, f64)> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let ticks = clock_ticks();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            pid.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            if ppid != me || !CONTROL_PLANE.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let (utime, stime) = times(&stat)?;
            Some((name.to_owned(), (utime + stime) / ticks))
        })
        .collect()
}

/// utime and stime, in clock ticks, from a `/proc/<pid>/stat` line.
fn times(stat: &str) -> Option<(f64, f64)> {
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    // _SC_CLK_TCK is 100 on every Linux this runs on; `getconf` confirms when available.
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (kube (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(times(stat), Some((250.0, 75.0)));
    }

    #[test]
    fn this_process_has_spent_cpu() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(of_process("self").unwrap() > 0.0);
    }
}
