//! Transactions: writes buffered in the order issued and applied at commit,
//! after the lock is renewed; reads see the buffer first, then KV. Not
//! atomic (see the module documentation of the backend).

use std::sync::Arc;

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
    /// Pending writes in the order issued; at most one per key.
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
        self.ops.retain(|(k, _)| k != key);
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
        let Some(lock) = self.lock.as_mut() else { return Ok(()) };
        if self.ops.is_empty() {
            return Ok(());
        }
        lock.renew()?;
        let total = self.ops.len();
        for (done, (key, op)) in self.ops.iter().enumerate() {
            let result = match op {
                Op::Put(value) => self.inner.store(key, value, self.seen.contains(key)),
                Op::Delete => self.inner.client.kv_delete_all(&self.inner.entry_path(key)),
                Op::Rotate => self.inner.rewrite(&self.inner.entry_path(key)).map(|_| ()),
            };
            result.map_err(|e| {
                e.map_message(|m| format!("{m} (commit stopped after {done} of {total} writes; the earlier ones are applied)"))
            })?;
        }
        // Dropping the transaction releases the lock.
        Ok(())
    }
}
