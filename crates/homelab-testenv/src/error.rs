//! What can go wrong while starting, attaching to or using the test control plane.

use std::path::PathBuf;
use std::time::Duration;

/// Why the test environment could not be started or used. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No control-plane binaries could be found or built.
    #[error(
        "control-plane binaries are not available: {reason}. Run `make control-plane` (builds \
         them from Go modules; needs Go, and about 8 minutes on 2 cores the first time) with \
         KUBEBUILDER_ASSETS unset, or point KUBEBUILDER_ASSETS at a directory holding etcd, \
         kube-apiserver and kube-controller-manager"
    )]
    Binaries {
        /// What is missing or what failed.
        reason: String,
    },

    /// A process could not be started.
    #[error("could not start {what}: {reason}")]
    Spawn {
        /// The process.
        what: String,
        /// The operating system's or the spawner's answer.
        reason: String,
    },

    /// A process of the control plane exited.
    #[error("{name} exited ({status}); the end of its log {log_path}:\n{log_tail}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: String,
        /// Its full log.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },

    /// Something did not become ready in time.
    #[error("timed out after {after:?} waiting for {what} (is the machine overloaded?){log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
        /// The end of the relevant process log, introduced by its path, or empty.
        log: String,
    },

    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation, naming the file.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A manifest (a CRD file or a kubeconfig) could not be read.
    #[error("cannot read {path}: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The directory of upstream CRDs is missing.
    #[error(
        "the upstream CRD directory {path} does not exist: set HOMELAB_UPSTREAM_CRDS to a directory \
         holding them, or run hack/fetch-upstream-crds.sh (see README, \"Running the tests\")"
    )]
    UpstreamCrdsMissing {
        /// Where they were looked for.
        path: PathBuf,
    },

    /// A certificate or key could not be generated.
    #[error("generating {what}: {source}")]
    Certificate {
        /// The certificate or key.
        what: String,
        /// The underlying error.
        source: rcgen::Error,
    },

    /// Building a client from a kubeconfig failed.
    #[error("cannot use kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// Setting up, running or tearing down the test node failed.
    #[error("test node: {what}: {reason}")]
    Node {
        /// The step, naming the command or file.
        what: String,
        /// What failed, and what to do where it is known.
        reason: String,
    },

    /// Building, installing or running Argo CD failed.
    #[error("Argo CD: {what}: {reason}")]
    ArgoCd {
        /// The step, naming the command or request.
        what: String,
        /// What failed, and what to do where it is known.
        reason: String,
    },

    /// A request to the apiserver failed.
    #[error("{what}: {source}")]
    Kube {
        /// The request.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
}

impl Error {
    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Self::Timeout {
            what: what.into(),
            after,
            log: String::new(),
        }
    }

    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
