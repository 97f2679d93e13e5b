//! `GET /metrics`, in the Prometheus text format (version 0.0.4):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `secrets_http_requests_total` | counter | `route` (the template), `method`, `status` |
//! | `secrets_call_duration_seconds` | histogram | `call` (`get`, `set`, `verify-token`, ...) |
//! | `secrets_sandbox_traps_total` | counter | |
//! | `secrets_audit_write_failures_total` | counter | |
//! | `secrets_calls_in_flight`, `secrets_call_slots` | gauge | |
//!
//! Every label value comes from a fixed set: route templates (never a
//! path), a few method names (anything else is `other`), status codes,
//! call names. No token, token id, tenant, instance, key or value is ever a
//! label, so neither secrets nor who holds them leak, and no caller can
//! grow the set of series. A call's duration is its time on the blocking
//! pool (the wait for a call slot is not included).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;
use parking_lot::Mutex;

/// Upper bounds of the duration histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), then the +Inf one.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// A request counter's labels: route template, method, status.
type RequestLabels = (Arc<str>, &'static str, u16);

/// The API's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, u64>>,
    calls: Mutex<BTreeMap<&'static str, Histogram>>,
    traps: AtomicU64,
    audit_failures: AtomicU64,
    busy: AtomicU64,
}

/// A method as a label: the ones the API knows, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// One answered request; `route` is the template (`None`: no route
    /// matched).
    pub(crate) fn request(&self, route: Option<&Arc<str>>, method: &Method, status: u16) {
        let route = route.cloned().unwrap_or_else(|| Arc::from("unmatched"));
        *self.requests.lock().entry((route, method_label(method), status)).or_insert(0) += 1;
    }

    /// One call of the sandbox or the store.
    pub(crate) fn call(&self, name: &'static str, took: Duration, trapped: bool) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        let mut calls = self.calls.lock();
        let h = calls.entry(name).or_default();
        h.counts[bucket] += 1;
        h.sum += seconds;
        drop(calls);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An audit line that could not be written.
    pub(crate) fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that found no call slot in time (503 `busy`).
    pub(crate) fn busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the text format; `slots` and `free` are the call
    /// slots and those not taken.
    pub(crate) fn render(&self, slots: usize, free: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP secrets_http_requests_total Requests answered, by route template, method and status.\n");
        out.push_str("# TYPE secrets_http_requests_total counter\n");
        for ((route, method, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "secrets_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP secrets_call_duration_seconds Time of one call of the sandbox or the store on the blocking pool, \
             by call.\n",
        );
        out.push_str("# TYPE secrets_call_duration_seconds histogram\n");
        for (call, h) in self.calls.lock().iter() {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(out, "secrets_call_duration_seconds_bucket{{call=\"{call}\",le=\"{bound}\"}} {cumulative}");
            }
            cumulative += h.counts[BUCKETS.len()];
            let _ = writeln!(out, "secrets_call_duration_seconds_bucket{{call=\"{call}\",le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "secrets_call_duration_seconds_sum{{call=\"{call}\"}} {}", h.sum);
            let _ = writeln!(out, "secrets_call_duration_seconds_count{{call=\"{call}\"}} {cumulative}");
        }
        let counters = [
            (
                "secrets_sandbox_traps_total",
                "Calls that trapped in the sandbox (answered 500; the instance was discarded).",
                self.traps.load(Ordering::Relaxed),
            ),
            (
                "secrets_audit_write_failures_total",
                "Audit lines that could not be written.",
                self.audit_failures.load(Ordering::Relaxed),
            ),
            (
                "secrets_call_slot_timeouts_total",
                "Requests answered 503 busy: no call slot came free within --max-call-wait.",
                self.busy.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let gauges = [
            ("secrets_calls_in_flight", "Calls of the sandbox or the store running now.", slots.saturating_sub(free)),
            ("secrets_call_slots", "Calls that may run at once (--max-concurrent-calls).", slots),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let m = Metrics::default();
        let route: Arc<str> = Arc::from("/v1/instances/{instance}/env");
        m.request(Some(&route), &Method::GET, 200);
        m.request(Some(&route), &Method::GET, 200);
        m.request(None, &Method::from_bytes(b"BREW").unwrap(), 404);
        m.call("get", Duration::from_millis(3), false);
        m.call("set", Duration::from_secs(20), true);
        let text = m.render(8, 7);
        for line in [
            "secrets_http_requests_total{route=\"/v1/instances/{instance}/env\",method=\"GET\",status=\"200\"} 2",
            "secrets_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1",
            "secrets_call_duration_seconds_bucket{call=\"get\",le=\"0.0025\"} 0",
            "secrets_call_duration_seconds_bucket{call=\"get\",le=\"0.005\"} 1",
            "secrets_call_duration_seconds_bucket{call=\"get\",le=\"+Inf\"} 1",
            "secrets_call_duration_seconds_count{call=\"get\"} 1",
            "secrets_call_duration_seconds_bucket{call=\"set\",le=\"10\"} 0",
            "secrets_call_duration_seconds_bucket{call=\"set\",le=\"+Inf\"} 1",
            "secrets_call_duration_seconds_sum{call=\"set\"} 20",
            "secrets_sandbox_traps_total 1",
            "secrets_audit_write_failures_total 0",
            "secrets_calls_in_flight 1",
            "secrets_call_slots 8",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
