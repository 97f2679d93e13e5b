//! The storage providers: the contract every backend implements, and the
//! backends themselves, one module each.
//!
//! A backend is small on purpose (an afternoon's work, in the manner of
//! Spin's variable providers): implement [`Backend::begin`] and the four
//! [`Vault`] operations, make [`Transaction::commit`] atomic and dropping
//! a transaction a rollback, then run the shared conformance suite
//! (`tests/all/conformance.rs`) against it.
//!
//! The host makes every exported call of the component one transaction: all
//! of its vault writes land together on commit, or none does.
//!
//! Configuration flows one way: [`StoreConfig`] parses a store URL once
//! into a typed configuration and opens the backend it names; no backend
//! parses a URL or reads a configuration of another.
//!
//! | module | URL | cargo feature |
//! |---|---|---|
//! | [`memory`] | `memory:` | (always built) |
//! | `sqlite` | `sqlite:PATH` (the default store) | `sqlite` |
//! | `postgres` | `postgres://...` | `postgres` |
//! | `openbao` | `openbao+http(s)://HOST:PORT/MOUNT` | `openbao` |
//! | `awssm` | `awssm://REGION[/PREFIX]` | `awssm` |
//! | `gcpsm` | `gcpsm://PROJECT[/PREFIX]` | `gcpsm` |
//!
//! The SQL backends share [`sealed`]: encryption at rest, the master
//! keyring, and the key checks that refuse a wrong keyring. The cloud
//! backends share `remote`: a lease lock and a write buffer over a store
//! with nothing but an atomic "create if absent".

#[cfg(feature = "awssm")]
pub mod awssm;
#[cfg(any(feature = "openbao", feature = "remote"))]
pub(crate) mod batch;
#[cfg(feature = "gcpsm")]
pub mod gcpsm;
#[cfg(any(feature = "openbao", feature = "awssm", feature = "gcpsm"))]
pub(crate) mod http_agent;
pub mod memory;
#[cfg(feature = "openbao")]
pub mod openbao;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "remote")]
pub(crate) mod remote;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sealed;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod store_config;

pub use memory::MemoryBackend;
pub use store_config::StoreConfig;

use std::fmt;

/// Why a vault operation failed. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The backend could not be reached or did not answer.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An entry failed its integrity check: tampering or a wrong master key.
    #[error("stored entry is corrupt: {0}")]
    Corrupt(String),
    /// The operation broke a limit of the backend or of the host.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl VaultError {
    /// A short, stable name of the kind, for scripts and logs:
    /// `unavailable` (try again later), `corrupt` (raise the alarm),
    /// `rejected` (the request or the configuration is wrong), `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultError::Unavailable(_) => "unavailable",
            VaultError::Corrupt(_) => "corrupt",
            VaultError::Rejected(_) => "rejected",
            VaultError::Other(_) => "other",
        }
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            VaultError::Unavailable(m) | VaultError::Corrupt(m) | VaultError::Rejected(m) | VaultError::Other(m) => m,
        }
    }

    /// The same kind with its message rewritten (e.g. to add context).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            VaultError::Unavailable(m) => VaultError::Unavailable(f(m)),
            VaultError::Corrupt(m) => VaultError::Corrupt(f(m)),
            VaultError::Rejected(m) => VaultError::Rejected(f(m)),
            VaultError::Other(m) => VaultError::Other(f(m)),
        }
    }
}

/// A [`VaultError::Rejected`]: the request or the configuration is wrong.
pub(crate) fn rejected(msg: impl Into<String>) -> VaultError {
    VaultError::Rejected(msg.into())
}

/// Whether a transaction will write. Read transactions may run concurrently
/// with each other and with one writer; write transactions on the same lock
/// scope run one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: a consistent snapshot, no lock.
    Read,
    /// Reads and writes, serialised with other writers of the lock scope.
    Write,
}

/// The four operations of the WIT `vault` interface, on full vault keys
/// (already prefixed with the tenant by the host).
pub trait Vault: Send {
    /// Stores `value` under `key`, replacing any previous value.
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError>;
    /// The value under `key`, or `None`.
    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError>;
    /// The values under `keys`, in order. Remote backends answer it in one
    /// round trip (or concurrently); the default reads them one by one.
    fn retrieve_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        keys.iter().map(|key| self.retrieve(key)).collect()
    }
    /// Removes `key`; a missing key is not an error.
    fn delete(&mut self, key: &str) -> Result<(), VaultError>;
    /// Re-protects the value under `key` with the newest key material; the
    /// plaintext never changes. A missing key is not an error.
    fn rotate(&mut self, key: &str) -> Result<(), VaultError>;
}

/// A unit of work on a backend: commit applies every write at once; drop
/// without commit discards them.
pub trait Transaction: Vault {
    /// Applies every write of the transaction at once.
    fn commit(self: Box<Self>) -> Result<(), VaultError>;
}

/// A storage backend: memory, SQLite, PostgreSQL, OpenBao.
pub trait Backend: Send + Sync {
    /// Opens a transaction. `lock_scope` names what concurrent writers must
    /// serialise on (the host passes tenant and instance); a backend may
    /// serialise more coarsely, never more finely. A write transaction's
    /// lock may be taken here or with its first operation (PostgreSQL sends
    /// it with the first request, to save a round trip): either way every
    /// read and write of the transaction happens under it.
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError>;

    /// A short description for messages, e.g. `sqlite:/var/lib/secrets.db`;
    /// never a credential.
    fn describe(&self) -> String;

    /// Re-protects every entry under the newest key material, so older
    /// master key generations can be retired. Calls `progress(done, total)`
    /// as it goes and returns the number of entries re-protected. Backends
    /// without key material of their own say so.
    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        let _ = progress;
        Err(VaultError::Rejected(format!("{} has no key material of its own to rotate", self.describe())))
    }
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.describe())
    }
}
