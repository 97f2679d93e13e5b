//! The write lock of a lock scope: a process-local mutex, then a lock entry
//! in KV created with check-and-set `cas = 0`, holding a random owner id and
//! an expiry; an expired lock is taken over with `cas = <its version>`, and
//! commit renews the lock with check-and-set on its version (the fence).

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
    local: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl HeldLock {
    fn lock_data(&self) -> LockData {
        LockData {
            owner: self.owner.clone(),
            expires_ms: now_ms() + self.inner.config.lock_ttl.as_millis() as u64,
            pid: std::process::id(),
        }
    }

    fn timeout(inner: &Inner, scope: &str, path: &str) -> VaultError {
        VaultError::Unavailable(format!(
            "timed out after {:?} waiting for the write lock of {scope:?} (lock entry {}/data/{path}); another writer holds it, and a crashed holder's lock expires {:?} after it was taken",
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
            local: None,
        };
        match local {
            Some(guard) => held.local = Some(guard),
            None => return Err(Self::timeout(inner, scope, &held.path)),
        }
        let mut backoff = BACKOFF_MIN;
        let started = Instant::now();
        let mut said = false;
        loop {
            // Absent: create it.
            if let Some(version) = inner.client.kv_write(&held.path, &held.lock_data(), Some(0))? {
                held.version = version;
                return Ok(held);
            }
            // Present: take it over if it expired (or is unreadable).
            let current = match inner.client.kv_read::<LockData>(&held.path) {
                Ok(Some((lock, version))) => {
                    let left_ms = lock.expires_ms.saturating_sub(now_ms());
                    // Once per wait, after a second: say what we wait for
                    // (the CLI shows warnings on stderr).
                    if !said && left_ms > 0 && started.elapsed() >= WAIT_BEFORE_SAYING {
                        said = true;
                        tracing::warn!(
                            "waiting for the OpenBao write lock of {scope}: process {} holds it, or held it and \
                             stopped; it expires in {:.0} s at most",
                            lock.pid,
                            (left_ms as f64 / 1000.0).ceil()
                        );
                    }
                    (left_ms == 0).then_some(version)
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
            if let Some(stale) = current
                && let Some(version) = inner.client.kv_write(&held.path, &held.lock_data(), Some(stale))?
            {
                tracing::warn!(scope, "took over an expired OpenBao lock entry");
                held.version = version;
                return Ok(held);
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

    /// Extends the lock, checking it is still ours: fails if another writer
    /// took it over after it expired.
    pub(super) fn renew(&mut self) -> Result<(), VaultError> {
        match self.inner.client.kv_write(&self.path, &self.lock_data(), Some(self.version))? {
            Some(version) => {
                self.version = version;
                Ok(())
            }
            None => Err(VaultError::Unavailable(format!(
                "lost the write lock of {:?}: it expired (lock_ttl {:?}) and another writer took it over; nothing was written",
                self.scope, self.inner.config.lock_ttl
            ))),
        }
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
