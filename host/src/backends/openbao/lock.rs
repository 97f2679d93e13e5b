//! The write lock of a lock scope: a process-local mutex, then a lock entry
//! in KV created with check-and-set `cas = 0`, holding a random owner id and
//! the holder's lease (`ttl_ms`).
//!
//! No writer trusts another's clock, nor its own wall clock. A waiter
//! measures a lease on its own monotonic clock ([`Instant`]): it takes a
//! lock over (`cas = <its version>`) only after it has seen the same entry
//! (same owner, same KV version) unchanged for the holder's `ttl_ms`,
//! counted from the first answer that showed it. The holder counts its
//! lease from just before it sent the write that created or renewed the
//! entry, which the waiter can only see afterwards: so a takeover comes
//! strictly more than a lease after the holder's last renewal started.
//!
//! The holder checks its lease before each write of its commit
//! ([`HeldLock::keep`]): once a third of it has gone by it renews (read,
//! check the owner and version, then `cas = <its version>`), and once half
//! of it has gone by it starts no write: the other half is the margin for
//! a request in flight. That check is also the whole of what a commit does
//! about the lock before its first write. Renewing a lease younger than a
//! third would only confirm what the lease already guarantees: no waiter
//! can have taken the entry over before a whole lease has gone by, and the
//! write about to be sent starts before half of it has, with the same
//! margin as every later write; the reads of the transaction, all before
//! that instant, were made under the lock too. A lease older than that is
//! renewed first, which fails, writing nothing, if the lock was taken over.
//!
//! Releasing deletes the entry (its metadata, so KV numbers a new lock
//! from version 1). For the same reason, under half a lease after the last
//! renewal the entry is known to be ours and is deleted in one request;
//! later its owner is read first and an entry taken over is left alone.
//! The release runs on a background thread (the caller does not wait),
//! holding the process-local mutex until the entry is gone; see
//! [`Release`]. `expires_ms` (wall clock) is still written, for people
//! reading the entry and for older releases, and never read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RawMutex, lock_api::ArcMutexGuard};

use super::client::LockData;
use super::{BACKOFF_MAX, BACKOFF_MIN, Inner, now_ms};

/// How long a writer waits for a lock before it says so.
const WAIT_BEFORE_SAYING: Duration = Duration::from_secs(1);
use crate::backends::VaultError;

/// A writer's hold on a lock scope: the process-local mutex and the lock
/// entry in KV. Dropping it releases both.
pub(super) struct HeldLock {
    inner: Arc<Inner>,
    scope: String,
    path: String,
    owner: String,
    /// The KV version of our lock entry; 0 while there is none of ours
    /// (not taken yet, or found taken over).
    version: u64,
    /// When the write that created or last renewed the entry was about to
    /// be sent: the lease runs from there.
    renewed_at: Instant,
    local: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl HeldLock {
    fn ttl(&self) -> Duration {
        self.inner.config.lock_ttl
    }

    fn lock_data(&self) -> LockData {
        LockData {
            owner: self.owner.clone(),
            expires_ms: now_ms() + self.ttl().as_millis() as u64,
            ttl_ms: self.ttl().as_millis() as u64,
            pid: std::process::id(),
        }
    }

    fn timeout(inner: &Inner, scope: &str, path: &str) -> VaultError {
        VaultError::Unavailable(format!(
            "timed out after {:?} waiting for the write lock of {scope:?} (lock entry {}/data/{path}); another writer holds it, and a crashed holder's lock is taken over once it stayed unchanged for its lock_ttl ({:?} here)",
            inner.config.lock_timeout, inner.config.mount, inner.config.lock_ttl
        ))
    }

    pub(super) fn acquire(inner: &Arc<Inner>, scope: &str) -> Result<HeldLock, VaultError> {
        let deadline = Instant::now() + inner.config.lock_timeout;
        let path = inner.lock_path(scope);
        let local = inner.local_lock(scope).try_lock_arc_for(inner.config.lock_timeout);
        let mut owner = [0u8; 16];
        getrandom::fill(&mut owner)
            .map_err(|e| VaultError::Other(format!("no randomness for a lock owner id: {e}")))?;
        let mut held = HeldLock {
            inner: inner.clone(),
            scope: scope.to_owned(),
            path,
            owner: hex::encode(owner),
            version: 0,
            renewed_at: Instant::now(),
            local: None,
        };
        match local {
            Some(guard) => held.local = Some(guard),
            None => return Err(Self::timeout(inner, scope, &held.path)),
        }
        let mut backoff = BACKOFF_MIN;
        let started = Instant::now();
        let mut said = false;
        // The lock entry last seen (owner, KV version) and when it was
        // first seen so, by this process's monotonic clock.
        let mut watched: Option<(String, u64, Instant)> = None;
        loop {
            // Absent: create it.
            let sent = Instant::now();
            if let Some(version) = inner.client.kv_write(&held.path, &held.lock_data(), Some(0))? {
                held.version = version;
                held.renewed_at = sent;
                return Ok(held);
            }
            // Present: take it over once it stayed unchanged for its
            // holder's lease (or if it is unreadable).
            let current = match inner.client.kv_read::<LockData>(&held.path) {
                Ok(Some((lock, version))) => {
                    let seen = Instant::now();
                    let since = match &watched {
                        Some((owner, v, since)) if *owner == lock.owner && *v == version => *since,
                        _ => {
                            watched = Some((lock.owner.clone(), version, seen));
                            seen
                        }
                    };
                    let lease = if lock.ttl_ms > 0 { Duration::from_millis(lock.ttl_ms) } else { inner.config.lock_ttl };
                    let left = lease.saturating_sub(seen - since);
                    // Once per wait, after a second: say what we wait for
                    // (the CLI shows warnings on stderr).
                    if !said && !left.is_zero() && started.elapsed() >= WAIT_BEFORE_SAYING {
                        said = true;
                        tracing::warn!(
                            "waiting for the OpenBao write lock of {scope}: process {} holds it, or held it and \
                             stopped; it expires in {:.0} s at most",
                            lock.pid,
                            left.as_secs_f64().ceil()
                        );
                    }
                    left.is_zero().then_some(version)
                }
                // Usually released meanwhile; or its latest version was
                // deleted by hand, leaving metadata that defeats `cas = 0`:
                // take that over (never a live version: a new lock may have
                // been created since the read).
                Ok(None) => inner.client.kv_dead_version(&held.path)?,
                // Not a lock of ours: treat as expired.
                Err(VaultError::Corrupt(_)) => inner.client.kv_read::<serde_json::Value>(&held.path)?.map(|(_, v)| v),
                Err(e) => return Err(e),
            };
            if let Some(stale) = current {
                let sent = Instant::now();
                if let Some(version) = inner.client.kv_write(&held.path, &held.lock_data(), Some(stale))? {
                    tracing::warn!(scope, "took over an expired OpenBao lock entry");
                    held.version = version;
                    held.renewed_at = sent;
                    return Ok(held);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                // `held` is dropped: it owns no entry (version 0).
                return Err(Self::timeout(inner, scope, &held.path));
            }
            let jitter = Duration::from_micros(now_ms().wrapping_mul(2654435761) % 1000);
            std::thread::sleep((backoff + jitter).min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn lost(&self) -> VaultError {
        VaultError::Unavailable(format!(
            "lost the write lock of {:?}: it expired (lock_ttl {:?}) and another writer took it over",
            self.scope,
            self.ttl()
        ))
    }

    /// Extends the lease, checking the entry is still ours: fails if
    /// another writer took it over after it expired. The owner is read
    /// first because a released entry starts again at version 1: the
    /// version alone could be someone else's new lock.
    /// A lock found taken over (or gone) is not released: `version` 0 says
    /// there is no entry of ours to delete.
    fn renew(&mut self) -> Result<(), VaultError> {
        match self.inner.client.kv_read::<LockData>(&self.path) {
            Ok(Some((lock, version))) if lock.owner == self.owner && version == self.version => {}
            // Ours, rewritten by a renewal whose answer was lost.
            Ok(Some((lock, _))) if lock.owner == self.owner => return Err(self.lost()),
            Ok(_) | Err(VaultError::Corrupt(_)) => {
                self.version = 0;
                return Err(self.lost());
            }
            Err(e) => return Err(e),
        }
        let sent = Instant::now();
        match self.inner.client.kv_write(&self.path, &self.lock_data(), Some(self.version))? {
            Some(version) => {
                self.version = version;
                self.renewed_at = sent;
                Ok(())
            }
            None => {
                self.version = 0;
                Err(self.lost())
            }
        }
    }

    /// Before each write of a commit: renews the lease once a third of it
    /// has gone by, and refuses once half of it has (a renewal that took
    /// that long): a waiter may take the lock over one lease after the
    /// last renewal started, and the other half is left for a request in
    /// flight to land before that.
    pub(super) fn keep(&mut self) -> Result<(), VaultError> {
        if self.renewed_at.elapsed() >= self.ttl() / 3 {
            self.renew()?;
        }
        let held = self.renewed_at.elapsed();
        if held >= self.ttl() / 2 {
            return Err(VaultError::Unavailable(format!(
                "stopped writing under the write lock of {:?}: {held:.1?} since its lease was last renewed, more than half its lock_ttl ({:?})",
                self.scope,
                self.ttl()
            )));
        }
        Ok(())
    }
}

impl Drop for HeldLock {
    /// Releases the lock: in the background while a handle of the backend
    /// is alive (the caller does not wait for the request), else here.
    fn drop(&mut self) {
        Release {
            inner: self.inner.clone(),
            scope: std::mem::take(&mut self.scope),
            path: std::mem::take(&mut self.path),
            owner: std::mem::take(&mut self.owner),
            version: self.version,
            renewed_at: self.renewed_at,
            local: self.local.take(),
            counted: false,
        }
        .start();
    }
}

/// The release of a lock: the lock entry, then the process-local mutex,
/// which it holds until the entry is gone (another writer of this process
/// would otherwise only wait on the entry instead). Dropping it releases.
struct Release {
    inner: Arc<Inner>,
    scope: String,
    path: String,
    owner: String,
    /// 0: there is no entry to delete.
    version: u64,
    renewed_at: Instant,
    local: Option<ArcMutexGuard<RawMutex, ()>>,
    /// Counted in `Inner::releases`.
    counted: bool,
}

impl Release {
    fn start(mut self) {
        if self.version == 0 {
            return;
        }
        let inner = self.inner.clone();
        {
            let mut releases = inner.releases.lock();
            if !releases.open {
                // No handle of the backend is left to wait for a
                // background release: released here, on drop.
                return;
            }
            releases.in_flight += 1;
            self.counted = true;
        }
        // If no thread can be started, the closure, and `self` with it, is
        // dropped here: released synchronously.
        let _ = std::thread::Builder::new().name("openbao-unlock".into()).spawn(move || drop(self));
    }

    /// Deletes the lock entry if it is still ours. While less than half
    /// the lease has gone by since it was last renewed it is known to be
    /// (nobody may take it over before a whole lease has), so it is
    /// deleted in one request, with the margin every write of a commit
    /// has (see [`HeldLock::keep`]); after that the owner is read first,
    /// and an entry taken over is left alone.
    fn release(&self) -> Result<(), VaultError> {
        if self.renewed_at.elapsed() >= self.inner.config.lock_ttl / 2 {
            match self.inner.client.kv_read::<LockData>(&self.path) {
                Ok(Some((lock, _))) if lock.owner == self.owner => {}
                Ok(_) | Err(VaultError::Corrupt(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.inner.client.kv_delete_all(&self.path)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.version != 0
            && let Err(e) = self.release()
        {
            tracing::warn!(scope = self.scope, error = %e, "could not release an OpenBao lock entry; it expires by itself");
        }
        drop(self.local.take());
        self.inner.forget_local_lock(&self.scope);
        if self.counted {
            self.inner.releases.lock().in_flight -= 1;
            self.inner.released.notify_all();
        }
    }
}
