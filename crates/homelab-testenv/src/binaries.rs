//! Where the etcd, kube-apiserver and kube-controller-manager binaries come from.
//!
//! `KUBEBUILDER_ASSETS`, when set, names the directory; otherwise `hack/build-control-plane.sh`
//! is run, which builds the pinned versions from Go modules into a cache on first use and prints
//! the directory on its last line. Nothing is ever skipped: a missing binary is an error.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::Error;

/// The binaries every control plane needs.
pub const REQUIRED: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// A directory holding the control-plane binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Uses `dir`, checking that every required binary is there.
    pub fn in_dir(dir: impl Into<PathBuf>, origin: &str) -> Result<Self, Error> {
        let dir = dir.into();
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|b| !is_executable(&dir.join(b)))
            .collect();
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(Error::Binaries {
                reason: format!(
                    "{origin} {} lacks {} (setup-envtest ships no kube-controller-manager: \
                     add one of the same Kubernetes version)",
                    dir.display(),
                    missing.join(", ")
                ),
            })
        }
    }

    /// `KUBEBUILDER_ASSETS` if set, else the directory `hack/build-control-plane.sh` prints
    /// (building the binaries first if they are not cached).
    pub async fn locate() -> Result<Self, Error> {
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            return Self::in_dir(dir, "KUBEBUILDER_ASSETS");
        }
        let script = crate::repo_root().join("hack/build-control-plane.sh");
        if !script.exists() {
            return Err(Error::Binaries {
                reason: format!(
                    "KUBEBUILDER_ASSETS is not set and {} is missing",
                    script.display()
                ),
            });
        }
        tracing::debug!("locating control-plane binaries with {}", script.display());
        // The script's progress goes to stderr and shows in test output; the directory is its
        // last line on stdout.
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .map_err(|e| Error::Binaries {
                reason: format!("cannot run {}: {e}", script.display()),
            })?;
        if !output.status.success() {
            return Err(Error::Binaries {
                reason: format!("{} failed ({})", script.display(), output.status),
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout.lines().last().unwrap_or_default().trim();
        Self::in_dir(dir, &format!("{} printed", script.display()))
    }

    /// The path of binary `name` in this directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
