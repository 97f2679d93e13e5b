//! Transactions: writes buffered in the order issued and applied at commit,
//! every one of them in that order (a key written twice is written twice:
//! the secrets logic relies on the order, e.g. a delete's mark in the index
//! before the removal of the key record), after the lock is renewed; reads
//! see the buffer first, then KV. Not atomic (see the module documentation
//! of the backend).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use zeroize::Zeroizing;

use super::Inner;
use super::lock::HeldLock;
use crate::backends::{Transaction, Vault, VaultError};

pub(super) enum Op {
    Put(Zeroizing<Vec<u8>>),
    Delete,
    Rotate,
}

pub(super) struct OpenBaoTxn {
    pub(super) inner: Arc<Inner>,
    /// Pending writes in the order issued.
    pub(super) ops: Vec<(String, Op)>,
    /// Held by write transactions only.
    pub(super) lock: Option<HeldLock>,
    /// Keys this transaction read and found: they exist, with their
    /// metadata set when they were created.
    pub(super) seen: std::collections::HashSet<String>,
}

impl OpenBaoTxn {
    fn writable(&self) -> Result<(), VaultError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(VaultError::Rejected("a read transaction cannot write".into())),
        }
    }

    fn pending(&self, key: &str) -> Option<&Op> {
        self.ops.iter().rev().find(|(k, _)| k == key).map(|(_, op)| op)
    }

    fn push(&mut self, key: &str, op: Op) {
        self.ops.push((key.to_owned(), op));
    }
}

impl Vault for OpenBaoTxn {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.writable()?;
        self.push(key, Op::Put(Zeroizing::new(value.to_vec())));
        Ok(())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.pending(key) {
            Some(Op::Put(v)) => Ok(Some(v.to_vec())),
            Some(Op::Delete) => Ok(None),
            Some(Op::Rotate) | None => {
                let value = self.inner.retrieve(key)?;
                if value.is_some() {
                    self.seen.insert(key.to_owned());
                }
                Ok(value)
            }
        }
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable()?;
        self.push(key, Op::Delete);
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

impl Transaction for OpenBaoTxn {
    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        let txn = &mut *self;
        let Some(lock) = txn.lock.as_mut() else { return Ok(()) };
        if txn.ops.is_empty() {
            return Ok(());
        }
        lock.renew().map_err(|e| e.map_message(|m| format!("{m}; nothing was written")))?;
        let total = txn.ops.len();
        let cut = txn.inner.cut_commits_after.load(Ordering::Relaxed);
        for (done, (key, op)) in txn.ops.iter().enumerate() {
            let result = if done == cut {
                Err(VaultError::Unavailable("commit cut short by cut_commits_after (a test hook)".into()))
            } else {
                lock.keep().and_then(|()| match op {
                    Op::Put(value) => txn.inner.store(key, value, txn.seen.contains(key)),
                    Op::Delete => txn.inner.client.kv_delete_all(&txn.inner.entry_path(key)),
                    Op::Rotate => txn.inner.rewrite(&txn.inner.entry_path(key)).map(|_| ()),
                })
            };
            result.map_err(|e| {
                e.map_message(|m| format!("{m} (commit stopped after {done} of {total} writes; the earlier ones are applied)"))
            })?;
            // Whether the entry now exists with its metadata set.
            match op {
                Op::Put(_) => txn.seen.insert(key.clone()),
                Op::Delete => txn.seen.remove(key),
                Op::Rotate => false,
            };
        }
        // Dropping the transaction releases the lock.
        Ok(())
    }
}
