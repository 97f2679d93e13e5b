//! The host's typed errors: the WIT `error` cases, plus what can only go
//! wrong on the host side (a trap, an engine failure).

use crate::backends::VaultError;

/// Why a call failed. A failed call stored nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The instance, key or version does not exist (or was pruned).
    #[error("not found")]
    NotFound,
    /// The input broke a validation rule; the text names the field and rule.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named limit would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// A change of a key's type.
    #[error("{0}")]
    Conflict(String),
    /// A check-and-set (`if_version`) on a version that is not the key's
    /// current one; nothing was stored.
    #[error("{0}")]
    VersionMismatch(String),
    /// The vault failed, with its kind: [`VaultError::Unavailable`] (try
    /// again), [`VaultError::Corrupt`] (raise the alarm), `Rejected`, `Other`.
    #[error("vault: {0}")]
    Vault(VaultError),
    /// The component trapped; its instance was discarded and the call's
    /// writes rolled back. The next call gets a fresh instance.
    #[error("the secrets component trapped in `{call}`: {message}")]
    Trap {
        /// The exported function that trapped.
        call: &'static str,
        /// What wasmtime said.
        message: String,
    },
    /// The engine or the component could not be set up.
    #[error("sandbox: {0}")]
    Sandbox(String),
}

impl Error {
    /// A short name of the case, stable for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound => "not-found",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::LimitExceeded(_) => "limit-exceeded",
            Error::Conflict(_) => "conflict",
            Error::VersionMismatch(_) => "version-mismatch",
            Error::Vault(_) => "vault",
            Error::Trap { .. } => "trap",
            Error::Sandbox(_) => "sandbox",
        }
    }
}

impl From<VaultError> for Error {
    fn from(e: VaultError) -> Self {
        Error::Vault(e)
    }
}

/// The logic's own errors, when the host runs one of its checks natively
/// (e.g. validating an instance id before opening a transaction).
impl From<secrets_guest::Error> for Error {
    fn from(e: secrets_guest::Error) -> Self {
        match e {
            secrets_guest::Error::NotFound => Error::NotFound,
            secrets_guest::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            secrets_guest::Error::LimitExceeded(m) => Error::LimitExceeded(m),
            secrets_guest::Error::Conflict(m) => Error::Conflict(m),
            secrets_guest::Error::VersionMismatch(m) => Error::VersionMismatch(m),
            secrets_guest::Error::Vault(e) => Error::Vault(match e {
                secrets_guest::VaultError::Unavailable(m) => VaultError::Unavailable(m),
                secrets_guest::VaultError::Corrupt(m) => VaultError::Corrupt(m),
                secrets_guest::VaultError::Rejected(m) => VaultError::Rejected(m),
                secrets_guest::VaultError::Other(m) => VaultError::Other(m),
            }),
        }
    }
}
