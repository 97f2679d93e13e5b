//! Transactions: writes buffered in the order issued and applied at commit,
//! every one of them in that order (a key written twice is written twice:
//! the secrets logic relies on the order, e.g. a delete's mark in the index
//! before the removal of the key record), under the lock's lease; reads
//! see the buffer first, then KV, batched reads concurrently. Where order
//! cannot be observed, requests go out together: the `max_versions` of
//! the entries a commit creates (metadata, before any data), and a run of
//! rotations (which rewrite the same plaintext). Not atomic (see the module
//! documentation of the backend).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::lock::HeldLock;
use super::{Inner, THREAD_NAME};
use crate::backends::batch::concurrently;
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
    pub(super) seen: HashSet<String>,
}

impl OpenBaoTxn {
    fn writable(&self) -> Result<(), VaultError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(VaultError::Rejected("a read transaction cannot write".into())),
        }
    }

    /// The last pending write of `key`: the one a read must see.
    fn pending(&self, key: &str) -> Option<&Op> {
        self.ops.iter().rev().find(|(k, _)| k == key).map(|(_, op)| op)
    }

    fn push(&mut self, key: &str, op: Op) {
        self.ops.push((key.to_owned(), op));
    }

    /// The entries the commit creates, in order: keys stored before any
    /// delete of them in this transaction and not seen to exist. Their
    /// `max_versions` can be set all at once before the first write (a
    /// key deleted first gets it again when it is stored after that).
    fn created(&self) -> Vec<String> {
        let mut decided = HashSet::new();
        let mut created = Vec::new();
        for (key, op) in &self.ops {
            match op {
                Op::Put(_) if !self.seen.contains(key) && decided.insert(key.as_str()) => created.push(key.clone()),
                Op::Delete => {
                    decided.insert(key.as_str());
                }
                Op::Put(_) | Op::Rotate => {}
            }
        }
        created
    }
}

/// Runs `f(0)`, ..., `f(n - 1)` concurrently, each started under the lease
/// of `lock` ([`HeldLock::keep`]); returns how many succeeded, and the
/// first error in index order.
fn under_lease(
    lock: &mut HeldLock,
    n: usize,
    f: impl Fn(usize) -> Result<(), VaultError> + Sync,
) -> (usize, Option<VaultError>) {
    let lock = Mutex::new(lock);
    let results = concurrently(n, THREAD_NAME, |i| {
        lock.lock().keep()?;
        f(i)
    });
    let done = results.iter().filter(|r| matches!(r, Some(Ok(())))).count();
    (done, results.into_iter().find_map(|r| r.and_then(Result::err)))
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

    /// The buffer first, as [`retrieve`](Vault::retrieve); the other keys
    /// (each once) read from KV concurrently, up to `MAX_IN_FLIGHT` at a
    /// time over the keep-alive connections.
    fn retrieve_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        enum From {
            Buffer(Option<Vec<u8>>),
            Kv(usize),
        }
        // The keys read from KV, each once, and how many of `keys` want
        // each (the last one takes the value, the others a copy).
        let mut wanted: Vec<&str> = Vec::new();
        let mut uses: Vec<usize> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let from: Vec<From> = keys
            .iter()
            .map(|key| match self.pending(key) {
                Some(Op::Put(v)) => From::Buffer(Some(v.to_vec())),
                Some(Op::Delete) => From::Buffer(None),
                Some(Op::Rotate) | None => {
                    let i = *index.entry(key.as_str()).or_insert_with(|| {
                        wanted.push(key.as_str());
                        uses.push(0);
                        wanted.len() - 1
                    });
                    uses[i] += 1;
                    From::Kv(i)
                }
            })
            .collect();
        let mut values = self.inner.retrieve_many(&wanted)?;
        for (key, value) in wanted.iter().zip(&values) {
            if value.is_some() {
                self.seen.insert((*key).to_owned());
            }
        }
        Ok(from
            .into_iter()
            .map(|f| match f {
                From::Buffer(value) => value,
                From::Kv(i) => {
                    uses[i] -= 1;
                    if uses[i] == 0 { values[i].take() } else { values[i].clone() }
                }
            })
            .collect())
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
        let created = txn.created();
        let Some(lock) = txn.lock.as_mut() else { return Ok(()) };
        if txn.ops.is_empty() {
            return Ok(());
        }
        let inner = &*txn.inner;
        let total = txn.ops.len();
        let cut = inner.cut_commits_after.load(Ordering::Relaxed);
        let cut_short = || VaultError::Unavailable("commit cut short by cut_commits_after (a test hook)".into());
        let stopped = |done: usize| {
            move |e: VaultError| {
                e.map_message(|m| {
                    format!("{m} (commit stopped after {done} of {total} writes; the earlier ones are applied)")
                })
            }
        };
        // The lease: renewed here only if a third of it has gone by (see
        // the lock module); this also fails, before anything is written,
        // if another writer took the lock over.
        lock.keep().map_err(|e| e.map_message(|m| format!("{m}; nothing was written")))?;
        // `max_versions = 1` on the entries this commit creates, at once:
        // metadata only, which no read sees, so their order is free.
        if !created.is_empty() {
            let (_, failed) =
                under_lease(lock, created.len(), |i| inner.client.kv_keep_one_version(&inner.entry_path(&created[i])));
            if let Some(e) = failed {
                return Err(e.map_message(|m| format!("{m}; no value was written")));
            }
            txn.seen.extend(created);
        }
        let mut done = 0;
        while done < total {
            let (key, op) = &txn.ops[done];
            if let Op::Rotate = op {
                // A run of rotations, concurrently: a rotation rewrites the
                // same plaintext, so no reader can tell their order.
                let run = txn.ops[done..].iter().take_while(|(_, op)| matches!(op, Op::Rotate)).count();
                let keys = &txn.ops[done..done + run];
                let first = done;
                let (rotated, failed) = under_lease(lock, run, |i| {
                    if first + i >= cut {
                        return Err(cut_short());
                    }
                    inner.rewrite(&inner.entry_path(&keys[i].0)).map(drop)
                });
                if let Some(e) = failed {
                    return Err(stopped(done + rotated)(e));
                }
                done += run;
                continue;
            }
            let result = if done >= cut {
                Err(cut_short())
            } else {
                lock.keep().and_then(|()| match op {
                    Op::Put(value) => inner.store(key, value, txn.seen.contains(key)),
                    Op::Delete => inner.client.kv_delete_all(&inner.entry_path(key)),
                    Op::Rotate => inner.rewrite(&inner.entry_path(key)).map(drop),
                })
            };
            result.map_err(stopped(done))?;
            // Whether the entry now exists with its metadata set.
            match op {
                Op::Put(_) => txn.seen.insert(key.clone()),
                Op::Delete => txn.seen.remove(key),
                Op::Rotate => false,
            };
            done += 1;
        }
        // Dropping the transaction releases the lock (in the background).
        Ok(())
    }
}
