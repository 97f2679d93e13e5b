//! The write lock of a lock scope over a store without compare-and-set on
//! existing entries: a process-local mutex, then a lock entry created with
//! the store's atomic "create if absent", holding a random owner id, a
//! renewal counter and the holder's lease (`ttl_ms`).
//!
//! - **Taking a free lock**: create the entry; exactly one creator wins.
//! - **Waiting**: a waiter reads the entry and watches its (owner,
//!   renewal) pair on its own monotonic clock, from the first answer that
//!   showed it; no clocks are compared between hosts.
//! - **Renewing** (the holder, during a long commit): read the entry,
//!   check it still holds our owner id and renewal number, then replace it
//!   with the next renewal number. The lease runs from just before that
//!   write was sent. A waiter sees a new pair and starts watching again.
//! - **Taking over a stale lock** (unchanged for its holder's lease): the
//!   cloud cannot replace an entry only if it is unchanged, so a waiter
//!   first creates a *claim* entry named after the stale pair
//!   (`claim/<owner>.<renewal>/<scope>`): exactly one waiter wins it. The
//!   winner re-reads the lock entry, deletes it if it still shows the
//!   stale pair, deletes its claim, and then competes like anyone for a
//!   fresh lock (create if absent). A claim whose own holder vanished
//!   (unchanged for a lease) is deleted by the next waiter that finds it.
//! - **Releasing**: delete the entry. Under half a lease after the last
//!   renewal it is known to be ours (nobody may take it over before a
//!   whole lease); later its owner is read first and an entry taken over
//!   is left alone.
//!
//! The holder checks its lease before each write of its commit
//! ([`HeldLock::keep`]): it renews once a third of the lease has gone by
//! and starts no write once half has. What this does **not** protect, and
//! OpenBao's check-and-set does: a holder that stalls (a paused VM, a
//! request that lands late) for more than half its lease between a read
//! and the write that depends on it. Here that covers the renewal's read
//! and write as well as a claimant's re-read and delete: a stalled
//! claimant can delete a lock entry created after its re-read. Keep
//! `lock_ttl` far above request latencies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RawMutex, lock_api::ArcMutexGuard};
use serde::{Deserialize, Serialize};

use super::{RemoteStore, Shared, Space, random_hex16};
use crate::backends::VaultError;

/// How long a writer waits for a lock before it says so.
const WAIT_BEFORE_SAYING: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// The content of a lock or claim entry (JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LockData {
    /// Random per acquisition.
    #[serde(default)]
    pub(crate) owner: String,
    /// 0 when created, one more at each renewal.
    #[serde(default)]
    pub(crate) renewal: u64,
    /// The holder's lease: a waiter may take the entry over once it has
    /// seen it unchanged for this long.
    #[serde(default)]
    pub(crate) ttl_ms: u64,
    /// For people reading the entry.
    #[serde(default)]
    pub(crate) pid: u32,
    /// The lock scope (or, for a claim, what it claims), checked on read.
    #[serde(default)]
    pub(crate) scope: String,
}

fn lock_key(scope: &str) -> String {
    format!("lock/{scope}")
}

fn claim_key(scope: &str, owner: &str, renewal: u64) -> String {
    format!("claim/{owner}.{renewal}/{scope}")
}

/// The lock data under `key`: `Ok(None)` if absent, `Some(None)` if the
/// entry holds something that is not a lock entry of `scope`.
fn read_lock<S: RemoteStore>(store: &S, key: &str, scope: &str) -> Result<Option<Option<LockData>>, VaultError> {
    Ok(store.get(Space::Lock, key)?.map(|bytes| {
        serde_json::from_slice::<LockData>(&bytes).ok().filter(|l| l.scope == scope && !l.owner.is_empty())
    }))
}

/// An entry watched by a waiter: what it showed and since when.
#[derive(Default)]
struct Watch {
    seen: Option<(String, u64, Instant)>,
}

impl Watch {
    /// Whether the entry showing (owner, renewal) with lease `ttl` has
    /// stayed so for that long; the time left otherwise.
    fn left(&mut self, owner: &str, renewal: u64, ttl: Duration) -> Duration {
        let now = Instant::now();
        let since = match &self.seen {
            Some((o, r, since)) if o == owner && *r == renewal => *since,
            _ => {
                self.seen = Some((owner.to_owned(), renewal, now));
                now
            }
        };
        ttl.saturating_sub(now - since)
    }
}

/// A writer's hold on a lock scope. Dropping it releases the lock entry
/// (synchronously: one request), then the process-local mutex.
pub(crate) struct HeldLock<S: RemoteStore> {
    shared: Arc<Shared<S>>,
    scope: String,
    key: String,
    owner: String,
    renewal: u64,
    /// Whether an entry of ours exists (false once found taken over).
    holding: bool,
    /// When the write that created or last renewed the entry was about to
    /// be sent: the lease runs from there.
    renewed_at: Instant,
    local: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl<S: RemoteStore> HeldLock<S> {
    fn ttl(&self) -> Duration {
        self.shared.lock.ttl
    }

    fn data(&self, owner: &str, renewal: u64, scope: &str) -> Vec<u8> {
        let data = LockData {
            owner: owner.to_owned(),
            renewal,
            ttl_ms: self.ttl().as_millis() as u64,
            pid: std::process::id(),
            scope: scope.to_owned(),
        };
        serde_json::to_vec(&data).expect("plain data")
    }

    fn timeout(shared: &Shared<S>, scope: &str) -> VaultError {
        VaultError::Unavailable(format!(
            "timed out after {:?} waiting for the write lock of {scope:?} on {}; another writer holds it, and a crashed holder's lock is taken over once it stayed unchanged for its lock_ttl ({:?} here)",
            shared.lock.timeout,
            shared.store.describe(),
            shared.lock.ttl
        ))
    }

    pub(crate) fn acquire(shared: &Arc<Shared<S>>, scope: &str) -> Result<Self, VaultError> {
        let deadline = Instant::now() + shared.lock.timeout;
        let local = shared.local_lock(scope).try_lock_arc_for(shared.lock.timeout);
        let mut held = HeldLock {
            shared: shared.clone(),
            scope: scope.to_owned(),
            key: lock_key(scope),
            owner: random_hex16()?,
            renewal: 0,
            holding: false,
            renewed_at: Instant::now(),
            local: None,
        };
        match local {
            Some(guard) => held.local = Some(guard),
            None => return Err(Self::timeout(shared, scope)),
        }
        let store = &shared.store;
        let ttl = shared.lock.ttl;
        let started = Instant::now();
        let mut said = false;
        let mut backoff = BACKOFF_MIN;
        let (mut lock_watch, mut claim_watch) = (Watch::default(), Watch::default());
        // A lock found absent right after the create failed was released
        // meanwhile: created again at once, but only once in a row (a
        // name the cloud has not freed yet would otherwise spin).
        let mut retry_now = false;
        loop {
            let sent = Instant::now();
            if store.create(Space::Lock, &held.key, &held.data(&held.owner, 0, scope))? {
                held.holding = true;
                held.renewed_at = sent;
                return Ok(held);
            }
            match read_lock(store, &held.key, scope)? {
                None if !retry_now => {
                    retry_now = true;
                    continue;
                }
                None => retry_now = false,
                Some(lock) => {
                    retry_now = false;
                    // Not a lock entry of this scope: watched like a lock
                    // whose holder never renews, with our own lease.
                    let (owner, renewal, lease, pid) = match &lock {
                        Some(l) => (l.owner.clone(), l.renewal, Duration::from_millis(l.ttl_ms.max(1)), l.pid),
                        None => (String::from("?"), 0, ttl, 0),
                    };
                    let left = lock_watch.left(&owner, renewal, lease);
                    if !said && !left.is_zero() && started.elapsed() >= WAIT_BEFORE_SAYING {
                        said = true;
                        tracing::warn!(
                            "waiting for the write lock of {scope} on {}: process {pid} holds it, or held it and \
                             stopped; it expires in {:.0} s at most",
                            store.describe(),
                            left.as_secs_f64().ceil()
                        );
                    }
                    if left.is_zero() && held.take_over(&owner, renewal, lock.as_ref(), &mut claim_watch)? {
                        retry_now = true;
                        continue;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Self::timeout(shared, scope));
            }
            let jitter = Duration::from_micros(u64::from(std::process::id()).wrapping_mul(2654435761) % 2000);
            std::thread::sleep((backoff + jitter).min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Removes the stale lock entry showing (owner, renewal) under a claim
    /// only one waiter can hold. `true` if the entry may be gone now (try
    /// to create it again at once).
    fn take_over(
        &self,
        owner: &str,
        renewal: u64,
        seen: Option<&LockData>,
        claim_watch: &mut Watch,
    ) -> Result<bool, VaultError> {
        let store = &self.shared.store;
        let claim = claim_key(&self.scope, owner, renewal);
        let claimed_scope = format!("claim of {}", self.scope);
        if store.create(Space::Lock, &claim, &self.data(&self.owner, 0, &claimed_scope))? {
            let still = match read_lock(store, &self.key, &self.scope)? {
                Some(Some(l)) => Some(&l) == seen,
                Some(None) => seen.is_none(),
                None => false,
            };
            let removed = if still { store.remove(Space::Lock, &self.key) } else { Ok(()) };
            // The claim goes even if the removal failed (the next waiter
            // claims again).
            let unclaimed = store.remove(Space::Lock, &claim);
            removed?;
            unclaimed?;
            if still {
                tracing::warn!(scope = self.scope, "took over an expired lock entry on {}", store.describe());
            }
            return Ok(true);
        }
        // Another waiter's claim: it normally removes the lock within a
        // request or two. A claim whose holder vanished is removed once it
        // stayed unchanged for that holder's lease.
        match read_lock(store, &claim, &claimed_scope)? {
            None => Ok(true),
            Some(data) => {
                let (o, r, lease) = match &data {
                    Some(c) => (c.owner.clone(), c.renewal, Duration::from_millis(c.ttl_ms.max(1))),
                    None => ("?".to_owned(), 0, self.ttl()),
                };
                if claim_watch.left(&o, r, lease).is_zero() {
                    store.remove(Space::Lock, &claim)?;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    fn lost(&self) -> VaultError {
        VaultError::Unavailable(format!(
            "lost the write lock of {:?}: it expired (lock_ttl {:?}) and another writer took it over",
            self.scope,
            self.ttl()
        ))
    }

    /// Extends the lease after checking the entry is still ours.
    fn renew(&mut self) -> Result<(), VaultError> {
        let store = &self.shared.store;
        match read_lock(store, &self.key, &self.scope)? {
            Some(Some(l)) if l.owner == self.owner && l.renewal == self.renewal => {}
            _ => {
                self.holding = false;
                return Err(self.lost());
            }
        }
        let sent = Instant::now();
        if store.update(Space::Lock, &self.key, &self.data(&self.owner, self.renewal + 1, &self.scope))? {
            self.renewal += 1;
            self.renewed_at = sent;
            Ok(())
        } else {
            self.holding = false;
            Err(self.lost())
        }
    }

    /// Before each write of a commit: renews the lease once a third of it
    /// has gone by, and refuses once half of it has.
    pub(crate) fn keep(&mut self) -> Result<(), VaultError> {
        if !self.holding {
            return Err(self.lost());
        }
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

    fn release(&self) -> Result<(), VaultError> {
        let store = &self.shared.store;
        if self.renewed_at.elapsed() >= self.ttl() / 2 {
            match read_lock(store, &self.key, &self.scope)? {
                Some(Some(l)) if l.owner == self.owner => {}
                _ => return Ok(()),
            }
        }
        store.remove(Space::Lock, &self.key)
    }
}

impl<S: RemoteStore> Drop for HeldLock<S> {
    fn drop(&mut self) {
        if self.holding
            && let Err(e) = self.release()
        {
            tracing::warn!(scope = self.scope, error = %e, "could not release a lock entry; it expires by itself");
        }
        drop(self.local.take());
        self.shared.forget_local_lock(&self.scope);
    }
}
