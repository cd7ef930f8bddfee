//! What can go wrong while starting, attaching to or controlling the Azure emulators.

/// Why the Azure emulators could not be started or controlled. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AzureEmulatorError {
    /// Azurite is not installed where the test environment looks for it.
    #[error(
        "Azurite is not installed (looked for {looked_for}): run `bash hack/install-azurite.sh` \
         (needs Node.js >= 18 and npm), or set HOMELAB_AZURITE_BLOB to an `azurite-blob` executable"
    )]
    AzuriteMissing {
        /// The path that was checked.
        looked_for: String,
    },

    /// Starting or supervising a process failed (Azurite, Lowkey Vault).
    #[error(transparent)]
    Process(#[from] crate::Error),

    /// The Key Vault emulator could not be started.
    #[error("the Key Vault emulator: {0}")]
    KeyVault(String),

    /// The Entra ID token endpoint emulator could not be started.
    #[error("the Entra ID emulator: {0}")]
    Entra(String),

    /// An address given for pod-facing emulators is not configured on this machine, so nothing
    /// is started there (a connection to it would leave the machine).
    #[error(
        "{address} is not an address of this machine ({reason}): pod-facing emulators listen only \
         on local addresses (a 127.0.0.0/8 address, or one the node's network guard put on `lo`)"
    )]
    NotLocal {
        /// The address.
        address: std::net::Ipv4Addr,
        /// Why binding it failed.
        reason: String,
    },

    /// An attach-mode variable is set but unusable.
    #[error("{variable}={value}: {reason}")]
    Attach {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A control (stop, start, fault) is not available in this mode.
    #[error("{0}")]
    Unsupported(String),

    /// The control endpoint of an attached environment answered with an error.
    #[error("the emulator control endpoint: {0}")]
    Control(String),
}
