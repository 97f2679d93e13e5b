//! Bounded retries of throttled requests (AWS `ThrottlingException`, HTTP
//! 429): exponential backoff with jitter, at most [`ATTEMPTS`] attempts and
//! about [`BUDGET`] of waiting in all, then the throttling error itself
//! ([`VaultError::Unavailable`]: try again later). Only throttling is
//! retried: a throttled request was refused before it did anything, so
//! sending it again is safe even when it is not idempotent.

use std::time::{Duration, Instant};

use crate::backends::VaultError;

/// Attempts per request, the first included.
pub const ATTEMPTS: u32 = 6;
/// The longest a request waits between its attempts, in all.
pub const BUDGET: Duration = Duration::from_secs(10);
const FIRST: Duration = Duration::from_millis(100);
const MAX_SLEEP: Duration = Duration::from_secs(4);

/// What one attempt gave: done (either way), or throttled (with the
/// server's own wait, if it said one, and the error to return when the
/// retries run out).
pub(crate) enum Attempt<T> {
    Done(Result<T, VaultError>),
    Throttled { retry_after: Option<Duration>, error: VaultError },
}

/// Runs `attempt` until it is not throttled, or the attempts or the budget
/// run out. `attempt` gets the attempt's number (0 first).
pub(crate) fn throttled<T>(mut attempt: impl FnMut(u32) -> Attempt<T>) -> Result<T, VaultError> {
    let started = Instant::now();
    let mut sleep = FIRST;
    for n in 0..ATTEMPTS {
        match attempt(n) {
            Attempt::Done(result) => return result,
            Attempt::Throttled { retry_after, error } => {
                let wait = retry_after.unwrap_or(sleep).min(MAX_SLEEP);
                // Full jitter over the upper half: spread, never zero.
                let wait = wait / 2 + jitter(wait / 2);
                if n + 1 == ATTEMPTS || started.elapsed() + wait > BUDGET {
                    return Err(error.map_message(|m| {
                        format!("{m} (throttled; gave up after {} attempts in {:.1?})", n + 1, started.elapsed())
                    }));
                }
                tracing::debug!(attempt = n + 1, wait_ms = wait.as_millis() as u64, "throttled; retrying");
                std::thread::sleep(wait);
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = getrandom::fill(&mut b).map(|()| u32::from_le_bytes(b)).unwrap_or(0x9e37_79b9);
    max.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retried_within_bounds() {
        let mut calls = 0;
        let got = throttled(|_| {
            calls += 1;
            if calls < 3 {
                Attempt::Throttled { retry_after: Some(Duration::from_millis(2)), error: VaultError::Unavailable("slow down".into()) }
            } else {
                Attempt::Done(Ok(7))
            }
        });
        assert_eq!((got, calls), (Ok(7), 3));
        let mut calls = 0;
        let err = throttled::<()>(|_| {
            calls += 1;
            Attempt::Throttled { retry_after: Some(Duration::from_millis(1)), error: VaultError::Unavailable("slow down".into()) }
        })
        .unwrap_err();
        assert_eq!(calls, ATTEMPTS);
        assert!(matches!(err, VaultError::Unavailable(ref m) if m.contains("slow down") && m.contains("6 attempts")), "{err:?}");
    }
}
