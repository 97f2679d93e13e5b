//! The plain-Rust mirror of the WIT types, and the [`Vault`] trait.

use core::fmt;

/// How a secret reaches its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SecretType {
    Env,
    File,
    Registry,
    Tls,
}

impl SecretType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::Env => "env",
            SecretType::File => "file",
            SecretType::Registry => "registry",
            SecretType::Tls => "tls",
        }
    }
}

impl fmt::Display for SecretType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one version of a secret; never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub instance_id: String,
    pub key: String,
    pub kind: SecretType,
    pub version: u32,
    /// Unix milliseconds.
    pub created_at: u64,
    pub size: u32,
    /// tls only: the leaf certificate's not-after, unix seconds.
    pub not_after: Option<i64>,
    /// When the version was soft-deleted, unix milliseconds.
    pub deleted_at: Option<u64>,
    /// Whether its value was destroyed.
    pub destroyed: bool,
}

/// One version of a secret with its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub meta: SecretMeta,
    pub value: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret").field("meta", &self.meta).field("value", &"[REDACTED]").finish()
    }
}

/// A request to set a secret.
#[derive(Clone)]
pub struct SetRequest {
    pub instance_id: String,
    pub key: String,
    pub value: Vec<u8>,
    pub kind: SecretType,
    /// Check-and-set: the version that must be current (0: must not exist).
    pub if_version: Option<u32>,
}

impl fmt::Debug for SetRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetRequest")
            .field("instance_id", &self.instance_id)
            .field("key", &self.key)
            .field("value", &"[REDACTED]")
            .field("kind", &self.kind)
            .field("if_version", &self.if_version)
            .finish()
    }
}

/// A file that a file, tls or registry secret becomes in the container.
#[derive(Clone, PartialEq, Eq)]
pub struct Mount {
    /// Relative to the secrets directory.
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("contents", &"[REDACTED]")
            .finish()
    }
}

/// Why a call failed. A failed call stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    NotFound,
    InvalidArgument(String),
    LimitExceeded(String),
    Conflict(String),
    /// A check-and-set named a version that is not the current one.
    VersionMismatch(String),
    /// The vault failed, or what it holds is unreadable (`Corrupt`): the
    /// kind is kept, so the caller can tell "retry" from "raise the alarm".
    Vault(VaultError),
}

impl Error {
    /// Stored data the logic cannot read: a [`VaultError::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::Vault(VaultError::Corrupt(message.into()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::LimitExceeded(m) => write!(f, "limit exceeded: {m}"),
            Error::Conflict(m) => write!(f, "conflict: {m}"),
            Error::VersionMismatch(m) => write!(f, "version mismatch: {m}"),
            Error::Vault(m) => write!(f, "vault: {m}"),
        }
    }
}

/// Why a vault operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultError {
    Unavailable(String),
    Corrupt(String),
    Rejected(String),
    Other(String),
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::Unavailable(m) => write!(f, "unavailable: {m}"),
            VaultError::Corrupt(m) => write!(f, "corrupt entry: {m}"),
            VaultError::Rejected(m) => write!(f, "rejected: {m}"),
            VaultError::Other(m) => f.write_str(m),
        }
    }
}

impl From<VaultError> for Error {
    fn from(e: VaultError) -> Self {
        Error::Vault(e)
    }
}

/// The storage the logic runs on: the four operations of the WIT `vault`.
pub trait Vault {
    fn store(&self, key: &str, value: &[u8]) -> Result<(), VaultError>;
    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError>;
    /// The values under `keys`, in order: one round trip to a remote store.
    fn retrieve_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        keys.iter().map(|key| self.retrieve(key)).collect()
    }
    fn delete(&self, key: &str) -> Result<(), VaultError>;
    fn rotate(&self, key: &str) -> Result<(), VaultError>;
}
