//! What the cloud secret-manager backends (`awssm`, `gcpsm`) share: a
//! remote store of named entries with no multi-key transactions and no
//! compare-and-set on an existing entry, only an atomic "create if
//! absent". Over such a store this module builds what the OpenBao backend
//! has over KV v2: a lock entry with a lease ([`lock`]), writes buffered
//! and applied at commit in the order the secrets logic issued them
//! ([`txn`]), and bounded retries of throttled requests ([`retry`]).
//!
//! A cloud backend implements [`RemoteStore`] (entries and lock entries,
//! each in its own namespace of cloud secrets) and wraps it in a
//! [`RemoteBackend`]. The OpenBao backend keeps its own lock: KV v2 has
//! check-and-set on existing entries, which makes its takeover of a stale
//! lock exact (see `openbao::lock`), where this one relies on a claim entry
//! (see [`lock`]).

pub(crate) mod lock;
pub(crate) mod retry;
pub(crate) mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::backends::{Access, Backend, Transaction, VaultError, rejected};

/// The largest value a cloud secret holds: 64 KiB (AWS `SecretBinary`, GCP
/// `payload.data`). The backends refuse larger entries themselves (the
/// emulators do not).
pub const MAX_ENTRY: usize = 65536;

/// The two namespaces of a store: the vault's entries, and lock entries
/// (a scope's lock and the claims of a takeover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// A vault key.
    Entry,
    /// A lock or claim name.
    Lock,
}

/// A remote store of named byte values: one cloud secret per name.
/// Values are 0..=[`MAX_ENTRY`] bytes (the empty value included; how a
/// cloud that refuses empty values keeps it is the store's business).
pub(crate) trait RemoteStore: Send + Sync + 'static {
    /// For messages: `awssm://us-east-1/prefix`, never a credential.
    fn describe(&self) -> String;
    /// Checks, before a write is buffered, that `key` can be stored
    /// (its name fits the cloud's rules); the size is checked by the caller.
    fn check_key(&self, space: Space, key: &str) -> Result<(), VaultError>;
    /// The current value, or `None`.
    fn get(&self, space: Space, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError>;
    /// Creates the entry with `value` if it does not exist, atomically:
    /// `false` if it existed (nothing written).
    fn create(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError>;
    /// Replaces the value of an existing entry: `false` if there is none.
    fn update(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError>;
    /// Deletes the entry at once (no recovery window); a missing one is fine.
    fn remove(&self, space: Space, key: &str) -> Result<(), VaultError>;
    /// Re-protects the entry under the cloud's current key material, same
    /// plaintext: `false` if it does not exist.
    fn rewrite(&self, key: &str) -> Result<bool, VaultError>;
    /// Every entry of the store (cloud names, for [`rewrite_name`](Self::rewrite_name)).
    fn entry_names(&self) -> Result<Vec<String>, VaultError>;
    /// [`rewrite`](Self::rewrite) by cloud name.
    fn rewrite_name(&self, name: &str) -> Result<bool, VaultError>;
}

/// Lock settings of a remote backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockConfig {
    pub(crate) ttl: Duration,
    pub(crate) timeout: Duration,
}


pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) lock: LockConfig,
    /// Process-local writer mutexes, one per lock scope in use.
    local_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl<S> Shared<S> {
    pub(crate) fn local_lock(&self, scope: &str) -> Arc<Mutex<()>> {
        self.local_locks.lock().entry(scope.to_owned()).or_default().clone()
    }

    pub(crate) fn forget_local_lock(&self, scope: &str) {
        let mut locks = self.local_locks.lock();
        if locks.get(scope).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(scope);
        }
    }
}

/// A [`Backend`] over a [`RemoteStore`]: locks, buffered transactions.
pub(crate) struct RemoteBackend<S: RemoteStore> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S: RemoteStore> RemoteBackend<S> {
    pub(crate) fn new(store: S, lock: LockConfig) -> Self {
        RemoteBackend { shared: Arc::new(Shared { store, lock, local_locks: Mutex::new(HashMap::new()) }) }
    }

    pub(crate) fn store(&self) -> &S {
        &self.shared.store
    }
}

impl<S: RemoteStore> Backend for RemoteBackend<S> {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let lock = match access {
            Access::Write => Some(lock::HeldLock::acquire(&self.shared, lock_scope)?),
            Access::Read => None,
        };
        Ok(Box::new(txn::RemoteTxn::new(self.shared.clone(), lock)))
    }

    fn describe(&self) -> String {
        self.shared.store.describe()
    }

    /// Rewrites every entry of the store under the cloud's current key
    /// material (same plaintext).
    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        let names = self.shared.store.entry_names()?;
        let total = names.len() as u64;
        progress(0, total);
        let mut rotated = 0;
        for (i, name) in names.iter().enumerate() {
            if self.shared.store.rewrite_name(name)? {
                rotated += 1;
            }
            progress(i as u64 + 1, total);
        }
        Ok(rotated)
    }
}

/// The `endpoint=` of a cloud store (an emulator, or a private endpoint):
/// an `http(s)://HOST[:PORT]` URL without credentials, without its
/// trailing slashes.
pub(crate) fn endpoint_url(endpoint: &str) -> Result<String, VaultError> {
    let url = url::Url::parse(endpoint).map_err(|_| rejected(format!("endpoint= {endpoint:?} is not a URL")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(rejected("endpoint= must be an http(s)://HOST[:PORT] URL without credentials"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

/// The 16 random bytes of an owner id or request token, as hex.
pub(crate) fn random_hex16() -> Result<String, VaultError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| VaultError::Other(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}
