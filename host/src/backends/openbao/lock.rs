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
//! strictly more than a lease after the holder's last renewal started. The
//! holder renews (read, check the owner and version, then `cas = <its
//! version>`) at the start of its commit and again whenever a third of its
//! lease has gone by, and starts no write once half of it has gone by: the
//! other half is the margin for a request in flight. `expires_ms` (wall
//! clock) is still written, for people reading the entry and for older
//! releases, and never read.

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
    pub(super) fn renew(&mut self) -> Result<(), VaultError> {
        match self.inner.client.kv_read::<LockData>(&self.path) {
            Ok(Some((lock, version))) if lock.owner == self.owner && version == self.version => {}
            Ok(_) | Err(VaultError::Corrupt(_)) => return Err(self.lost()),
            Err(e) => return Err(e),
        }
        let sent = Instant::now();
        match self.inner.client.kv_write(&self.path, &self.lock_data(), Some(self.version))? {
            Some(version) => {
                self.version = version;
                self.renewed_at = sent;
                Ok(())
            }
            None => Err(self.lost()),
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

    fn release(&mut self) -> Result<(), VaultError> {
        if self.version == 0 {
            return Ok(());
        }
        if let Some((lock, _)) = self.inner.client.kv_read::<LockData>(&self.path)?
            && lock.owner == self.owner
        {
            self.inner.client.kv_delete_all(&self.path)?;
        }
        self.version = 0;
        Ok(())
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(scope = self.scope, error = %e, "could not release an OpenBao lock entry; it expires by itself");
        }
        drop(self.local.take());
        self.inner.forget_local_lock(&self.scope);
    }
}
