//! What `/healthz` and `/readyz` report: whether the controllers run, whether this replica leads,
//! and which required custom resource definitions are missing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::kubernetes::capabilities::Capabilities;

#[derive(Default)]
pub struct Health {
    running: AtomicBool,
    standby: AtomicBool,
    missing_required: Mutex<Option<String>>,
    missing_optional: Mutex<Option<String>>,
    problem: Mutex<Option<String>>,
}

/// The answer of `/readyz`.
pub struct Readiness {
    pub ready: bool,
    pub text: String,
}

impl Health {
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
        if running {
            self.set_problem(None);
        }
    }

    /// A replica waiting for the leader Lease is ready: it can take over at any moment.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    pub fn set_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }

    pub fn set_capabilities(&self, capabilities: &Capabilities) {
        let required = capabilities.missing.iter().any(|(_, _, r)| *r);
        if let Ok(mut m) = self.missing_required.lock() {
            *m = if required {
                capabilities.missing_message(|kind| {
                    capabilities.missing.iter().any(|(k, _, r)| *r && k == kind)
                })
            } else {
                None
            };
        }
        if let Ok(mut m) = self.missing_optional.lock() {
            *m = capabilities.missing_message(|kind| {
                capabilities
                    .missing
                    .iter()
                    .any(|(k, _, r)| !*r && k == kind)
            });
        }
    }

    pub fn readiness(&self) -> Readiness {
        let mut lines = Vec::new();
        let mut ready = true;
        if let Ok(problem) = self.problem.lock()
            && let Some(problem) = problem.as_ref()
        {
            ready = false;
            lines.push(format!("[-] {problem}"));
        }
        if let Ok(missing) = self.missing_required.lock()
            && let Some(missing) = missing.as_ref()
        {
            ready = false;
            lines.push(format!("[-] {missing}"));
        }
        if let Ok(missing) = self.missing_optional.lock()
            && let Some(missing) = missing.as_ref()
        {
            lines.push(format!("[!] optional features disabled: {missing}"));
        }
        let standby = self.standby.load(Ordering::SeqCst);
        let running = self.running.load(Ordering::SeqCst);
        if standby {
            lines.push("[+] standby: another replica holds the leader Lease".to_string());
        } else if running {
            lines.push("[+] controllers running".to_string());
        } else {
            ready = false;
            lines.push("[-] controllers starting".to_string());
        }
        lines.push(if ready {
            "ok".into()
        } else {
            "not ready".into()
        });
        Readiness {
            ready,
            text: lines.join("\n") + "\n",
        }
    }
}
