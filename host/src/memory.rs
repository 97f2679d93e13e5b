//! The in-memory backend: for tests, examples and embedding. Nothing
//! survives the process. Writers are serialised globally; readers see the
//! last committed state. Values are zeroized when replaced or dropped.
//! `rotate` has no key material to rotate and only checks the entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use zeroize::Zeroizing;

use crate::vault::{Access, Backend, Transaction, Vault, VaultError};

type Entries = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// An in-memory backend; clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    entries: Arc<Mutex<Entries>>,
    writer: Arc<Mutex<()>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of committed entries (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct MemoryTransaction {
    entries: Arc<Mutex<Entries>>,
    /// Pending writes: `None` is a delete.
    pending: BTreeMap<String, Option<Zeroizing<Vec<u8>>>>,
    _writer: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl Backend for MemoryBackend {
    fn begin(&self, access: Access, _lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let writer = match access {
            Access::Write => Some(self.writer.lock_arc()),
            Access::Read => None,
        };
        Ok(Box::new(MemoryTransaction { entries: self.entries.clone(), pending: BTreeMap::new(), _writer: writer }))
    }

    fn describe(&self) -> String {
        "memory:".into()
    }
}

impl Vault for MemoryTransaction {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.pending.insert(key.to_owned(), Some(Zeroizing::new(value.to_vec())));
        Ok(())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.as_ref().map(|v| v.to_vec()));
        }
        Ok(self.entries.lock().get(key).map(|v| v.to_vec()))
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.pending.insert(key.to_owned(), None);
        Ok(())
    }

    fn rotate(&mut self, _key: &str) -> Result<(), VaultError> {
        Ok(())
    }
}

impl Transaction for MemoryTransaction {
    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        let mut entries = self.entries.lock();
        for (key, value) in self.pending {
            match value {
                Some(v) => entries.insert(key, v),
                None => entries.remove(&key),
            };
        }
        Ok(())
    }
}
