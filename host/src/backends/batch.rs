//! Requests sent at once, for the backends whose every operation is a
//! network round trip (OpenBao, the cloud secret managers): a batched read,
//! the rewrites of a commit. A few scoped threads take the next index in
//! turn; nothing outlives the call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::backends::VaultError;

/// Requests one call sends at once.
pub(crate) const MAX_IN_FLIGHT: usize = 8;

/// Runs `f(0)`, ..., `f(n - 1)` on up to [`MAX_IN_FLIGHT`] threads named
/// `thread_name` (the caller's among them), each taking the next index;
/// after the first error no index is started. The results in index order:
/// `None` for an index not run, which only follows an error.
pub(crate) fn concurrently<T: Send>(
    n: usize,
    thread_name: &str,
    f: impl Fn(usize) -> Result<T, VaultError> + Sync,
) -> Vec<Option<Result<T, VaultError>>> {
    let slots: Vec<Mutex<Option<Result<T, VaultError>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            let result = f(i);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            *slots[i].lock() = Some(result);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..n.min(MAX_IN_FLIGHT) {
            // A thread that cannot be started leaves its share to the others.
            if std::thread::Builder::new().name(thread_name.to_owned()).spawn_scoped(s, work).is_err() {
                break;
            }
        }
        work();
    });
    slots.into_iter().map(Mutex::into_inner).collect()
}

/// The values of [`concurrently`], or its first error in index order.
pub(crate) fn all<T>(results: Vec<Option<Result<T, VaultError>>>) -> Result<Vec<T>, VaultError> {
    let mut out = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Some(Ok(value)) => out.push(value),
            Some(Err(e)) => return Err(e),
            None => return Err(VaultError::Other("a request of a batch was not sent".into())),
        }
    }
    Ok(out)
}
