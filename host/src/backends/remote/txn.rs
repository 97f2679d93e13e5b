//! Transactions over a [`RemoteStore`]: writes buffered in the order
//! issued and applied at commit, every one in that order (the secrets
//! logic relies on it: value, then key record, then index; a delete's mark
//! before the removal of the key record), each started under the lock's
//! lease ([`HeldLock::keep`]); reads see the buffer first, then the store,
//! batched reads concurrently. Not atomic: a commit cut short leaves the
//! writes before the cut applied and those after it not.
//!
//! Every write is checked when it is buffered (entry size, name), so a
//! value the cloud would refuse fails the call before anything is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::lock::HeldLock;
use super::{MAX_ENTRY, RemoteStore, Shared, Space};
use crate::backends::batch::{all, concurrently};
use crate::backends::{Transaction, Vault, VaultError};

enum Op {
    Put(Zeroizing<Vec<u8>>),
    Delete,
    Rotate,
}

pub(crate) struct RemoteTxn<S: RemoteStore> {
    shared: Arc<Shared<S>>,
    ops: Vec<(String, Op)>,
    lock: Option<HeldLock<S>>,
    /// Keys this transaction found to exist (read, or written by it).
    seen: HashSet<String>,
}

impl<S: RemoteStore> RemoteTxn<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, lock: Option<HeldLock<S>>) -> Self {
        RemoteTxn { shared, ops: Vec::new(), lock, seen: HashSet::new() }
    }

    fn writable(&self) -> Result<(), VaultError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(VaultError::Rejected("a read transaction cannot write".into())),
        }
    }

    fn pending(&self, key: &str) -> Option<&Op> {
        self.ops.iter().rev().find(|(k, _)| k == key).map(|(_, op)| op)
    }

    /// Writes `value`: an update if the entry is known to exist, else a
    /// create; either falls back to the other when the entry turns out to
    /// be there (or not) after all.
    fn put(&self, key: &str, value: &[u8], exists: bool) -> Result<(), VaultError> {
        let store = &self.shared.store;
        let mut exists = exists;
        for _ in 0..3 {
            let done =
                if exists { store.update(Space::Entry, key, value)? } else { store.create(Space::Entry, key, value)? };
            if done {
                return Ok(());
            }
            exists = !exists;
        }
        Err(VaultError::Unavailable(format!(
            "the entry of {key:?} on {} kept appearing and disappearing while it was written",
            store.describe()
        )))
    }
}

impl<S: RemoteStore> Vault for RemoteTxn<S> {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.writable()?;
        if value.len() > MAX_ENTRY {
            return Err(VaultError::Rejected(format!(
                "an entry of {} bytes is larger than a cloud secret holds ({MAX_ENTRY} bytes) on {}",
                value.len(),
                self.shared.store.describe()
            )));
        }
        self.shared.store.check_key(Space::Entry, key)?;
        self.ops.push((key.to_owned(), Op::Put(Zeroizing::new(value.to_vec()))));
        Ok(())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.pending(key) {
            Some(Op::Put(v)) => Ok(Some(v.to_vec())),
            Some(Op::Delete) => Ok(None),
            Some(Op::Rotate) | None => {
                let value = self.shared.store.get(Space::Entry, key)?;
                if value.is_some() {
                    self.seen.insert(key.to_owned());
                }
                Ok(value.map(|v| v.to_vec()))
            }
        }
    }

    /// The buffer first; the other keys (each once) read concurrently.
    fn retrieve_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        let mut wanted: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        enum From {
            Buffer(Option<Vec<u8>>),
            Remote(usize),
        }
        let from: Vec<From> = keys
            .iter()
            .map(|key| match self.pending(key) {
                Some(Op::Put(v)) => From::Buffer(Some(v.to_vec())),
                Some(Op::Delete) => From::Buffer(None),
                Some(Op::Rotate) | None => From::Remote(*index.entry(key.as_str()).or_insert_with(|| {
                    wanted.push(key.as_str());
                    wanted.len() - 1
                })),
            })
            .collect();
        let store = &self.shared.store;
        let values = all(concurrently(wanted.len(), "remote-request", |i| store.get(Space::Entry, wanted[i])))?;
        for (key, value) in wanted.iter().zip(&values) {
            if value.is_some() {
                self.seen.insert((*key).to_owned());
            }
        }
        Ok(from
            .into_iter()
            .map(|f| match f {
                From::Buffer(value) => value,
                From::Remote(i) => values[i].as_ref().map(|v| v.to_vec()),
            })
            .collect())
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable()?;
        self.ops.push((key.to_owned(), Op::Delete));
        Ok(())
    }

    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable()?;
        // A pending store writes a fresh version anyway; a pending delete
        // leaves nothing to rotate.
        if self.pending(key).is_none() {
            self.ops.push((key.to_owned(), Op::Rotate));
        }
        Ok(())
    }
}

impl<S: RemoteStore> Transaction for RemoteTxn<S> {
    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        if self.ops.is_empty() || self.lock.is_none() {
            return Ok(());
        }
        let total = self.ops.len();
        let ops = std::mem::take(&mut self.ops);
        let mut lock = self.lock.take().expect("checked above");
        lock.keep().map_err(|e| e.map_message(|m| format!("{m}; nothing was written")))?;
        for (done, (key, op)) in ops.iter().enumerate() {
            let stopped = |e: VaultError| {
                e.map_message(|m| format!("{m} (commit stopped after {done} of {total} writes; the earlier ones are applied)"))
            };
            if done > 0 {
                lock.keep().map_err(stopped)?;
            }
            let result = match op {
                Op::Put(value) => self.put(key, value, self.seen.contains(key)),
                Op::Delete => self.shared.store.remove(Space::Entry, key),
                Op::Rotate => self.shared.store.rewrite(key).map(drop),
            };
            result.map_err(stopped)?;
            match op {
                Op::Put(_) => self.seen.insert(key.clone()),
                Op::Delete => self.seen.remove(key),
                Op::Rotate => false,
            };
        }
        // Dropping the lock releases it.
        drop(lock);
        Ok(())
    }
}
