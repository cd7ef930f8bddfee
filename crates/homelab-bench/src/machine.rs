//! The machine a run happened on.

use std::fmt::Write as _;

pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub date: String,
    pub git_rev: String,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let git_rev = command("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !command("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        Self {
            cpus,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            cpu_model,
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            git_rev: if dirty {
                format!("{git_rev} (with uncommitted changes)")
            } else {
                git_rev
            },
            kernel: command("uname", &["-r"]),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| CPUs (nproc) | {} |", self.cpus);
        let _ = writeln!(s, "| memory | {:.1} GiB |", self.memory_gib);
        let _ = writeln!(s, "| CPU model | {} |", self.cpu_model);
        let _ = writeln!(s, "| kernel | {} |", self.kernel);
        let _ = writeln!(s, "| date | {} |", self.date);
        let _ = writeln!(s, "| git revision | {} |", self.git_rev);
        s
    }
}

fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
