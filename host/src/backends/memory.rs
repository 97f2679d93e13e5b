//! The in-memory backend: for tests, examples and embedding. Nothing
//! survives the process. Values are zeroized when replaced or dropped.
//!
//! The committed entries are an immutable map behind an `Arc`. Every
//! transaction takes a clone of that `Arc` when it begins: its snapshot,
//! which all of its reads see (plus its own pending writes), however many
//! commits happen meanwhile. Writers are serialised globally by a writer
//! lock held from `begin` to commit or drop, so a write transaction's
//! snapshot is also the latest state. The map is a persistent one
//! (`imbl::OrdMap`): taking a snapshot is O(1), and commit applies the
//! pending writes to the snapshot, copying only the O(log n) nodes they
//! touch, then swaps the new map in (before, commit copied every entry of
//! the store, so a write cost O(store size)). Readers holding the old map
//! keep it until they end; a value is zeroized when the last map holding
//! it is dropped. Dropping a transaction without commit discards its
//! writes. A read transaction refuses writes, as SQLite's does.
//! `rotate` does nothing: there is no key material to re-protect, and a
//! missing key is not an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;

use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use zeroize::Zeroizing;

use crate::backends::{Access, Backend, Transaction, Vault, VaultError};

type Entries = OrdMap<String, Arc<Zeroizing<Vec<u8>>>>;

/// An in-memory backend; clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    /// The latest committed map; the mutex only guards the swap.
    committed: Arc<Mutex<Entries>>,
    writer: Arc<Mutex<()>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of committed entries (for tests).
    pub fn len(&self) -> usize {
        self.committed.lock().len()
    }

    /// The committed keys, in order (for tests: they show where writes
    /// landed).
    pub fn keys(&self) -> Vec<String> {
        self.committed.lock().keys().cloned().collect()
    }

    /// Whether nothing is committed (for tests).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct MemoryTransaction {
    committed: Arc<Mutex<Entries>>,
    /// The committed map as of `begin` (an O(1) clone).
    snapshot: Entries,
    /// Pending writes: `None` is a delete.
    pending: BTreeMap<String, Option<Zeroizing<Vec<u8>>>>,
    /// Held by write transactions until commit or drop; `None` for reads.
    writer: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl MemoryTransaction {
    fn writable(&self, key: &str) -> Result<(), VaultError> {
        match self.writer {
            Some(_) => Ok(()),
            None => Err(VaultError::Rejected(format!("memory: write of {key} in a read-only transaction"))),
        }
    }
}

impl Backend for MemoryBackend {
    fn begin(&self, access: Access, _lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        // The writer lock first: once held, no commit can happen before this
        // transaction's own, so the snapshot taken next is the latest.
        let writer = match access {
            Access::Write => Some(self.writer.lock_arc()),
            Access::Read => None,
        };
        let snapshot = self.committed.lock().clone();
        Ok(Box::new(MemoryTransaction { committed: self.committed.clone(), snapshot, pending: BTreeMap::new(), writer }))
    }

    fn describe(&self) -> String {
        "memory:".into()
    }
}

impl Vault for MemoryTransaction {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.writable(key)?;
        self.pending.insert(key.to_owned(), Some(Zeroizing::new(value.to_vec())));
        Ok(())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.as_ref().map(|v| v.to_vec()));
        }
        Ok(self.snapshot.get(key).map(|v| v.to_vec()))
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable(key)?;
        self.pending.insert(key.to_owned(), None);
        Ok(())
    }

    fn rotate(&mut self, _key: &str) -> Result<(), VaultError> {
        Ok(())
    }
}

impl Transaction for MemoryTransaction {
    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        let MemoryTransaction { committed, snapshot, pending, writer } = *self;
        if pending.is_empty() {
            return Ok(());
        }
        // Only write transactions have pending writes, and they hold the
        // writer lock: `snapshot` is still the latest committed map.
        debug_assert!(writer.is_some());
        let mut next = snapshot;
        for (key, value) in pending {
            match value {
                Some(v) => {
                    next.insert(key, Arc::new(v));
                }
                None => {
                    next.remove(&key);
                }
            }
        }
        let previous = std::mem::replace(&mut *committed.lock(), next);
        // The old map (zeroized when its last reader ends) and the writer
        // lock are released outside the swap.
        drop(previous);
        drop(writer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(t: &mut Box<dyn Transaction>, key: &str) -> Option<Vec<u8>> {
        t.retrieve(key).unwrap()
    }

    #[test]
    fn reads_see_the_snapshot_taken_at_begin() {
        let backend = MemoryBackend::new();
        let mut w = backend.begin(Access::Write, "s").unwrap();
        w.store("a", b"old").unwrap();
        w.store("gone", b"x").unwrap();
        w.commit().unwrap();

        let mut before = backend.begin(Access::Read, "s").unwrap();
        assert_eq!(get(&mut before, "a").as_deref(), Some(&b"old"[..]));

        let mut w = backend.begin(Access::Write, "s").unwrap();
        w.store("a", b"new").unwrap();
        w.store("b", b"added").unwrap();
        w.delete("gone").unwrap();
        w.commit().unwrap();

        // The older reader keeps its snapshot, for every key, after the commit.
        assert_eq!(get(&mut before, "a").as_deref(), Some(&b"old"[..]));
        assert_eq!(get(&mut before, "b"), None);
        assert_eq!(get(&mut before, "gone").as_deref(), Some(&b"x"[..]));
        // A reader begun after it sees the commit.
        let mut after = backend.begin(Access::Read, "s").unwrap();
        assert_eq!(get(&mut after, "a").as_deref(), Some(&b"new"[..]));
        assert_eq!(get(&mut after, "b").as_deref(), Some(&b"added"[..]));
        assert_eq!(get(&mut after, "gone"), None);
        assert_eq!(backend.len(), 2);
        drop(before);
        assert_eq!(get(&mut after, "a").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_dropped_write_transaction_leaves_nothing() {
        let backend = MemoryBackend::new();
        let mut w = backend.begin(Access::Write, "s").unwrap();
        w.store("kept", b"v").unwrap();
        w.commit().unwrap();
        {
            let mut w = backend.begin(Access::Write, "s").unwrap();
            w.store("new", b"x").unwrap();
            w.store("kept", b"changed").unwrap();
            w.delete("kept").unwrap();
            assert_eq!(get(&mut w, "new").as_deref(), Some(&b"x"[..]), "a transaction reads its own writes");
        }
        assert_eq!(backend.len(), 1);
        let mut r = backend.begin(Access::Read, "s").unwrap();
        assert_eq!(get(&mut r, "new"), None);
        assert_eq!(get(&mut r, "kept").as_deref(), Some(&b"v"[..]));
        // The writer lock went with the dropped transaction.
        let mut w = backend.begin(Access::Write, "s").unwrap();
        w.store("after", b"y").unwrap();
        w.commit().unwrap();
        assert_eq!(backend.len(), 2);
    }

    #[test]
    fn a_read_transaction_cannot_write() {
        let backend = MemoryBackend::new();
        let mut r = backend.begin(Access::Read, "s").unwrap();
        assert!(matches!(r.store("k", b"v"), Err(VaultError::Rejected(m)) if m.contains("read-only")));
        assert!(matches!(r.delete("k"), Err(VaultError::Rejected(m)) if m.contains("read-only")));
        r.rotate("k").unwrap();
        r.commit().unwrap();
        assert!(backend.is_empty());
    }
}
