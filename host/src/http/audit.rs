//! The audit log: JSON lines saying who did what to which secret, for
//! `--audit-log PATH|-`.
//!
//! Every request on a `/v1` route but the OpenAPI document (public, no
//! token) gets an **outcome** line when it ends (authenticated or not,
//! allowed or not). Requests that return values
//! (`value`, `env`, `mounts`) or write (`set`, `delete`, `rotate`) also get
//! an **intent** line, written before the call of the sandbox, on the same
//! blocking thread, right before it:
//!
//! ```json
//! {"time":"2025-01-01T12:00:00.123Z","event":"intent","request_id":"…","token_id":"3fa9c2e01b7d","tenant":"acme","method":"PUT","route":"/v1/instances/{instance}/secrets/{key}","instance":"web","key":"DATABASE_URL","version":null,"if_version":2,"remote":"127.0.0.1:50412"}
//! {"time":"2025-01-01T12:00:00.131Z","event":"outcome","request_id":"…","token_id":"3fa9c2e01b7d","tenant":"acme","method":"PUT","route":"/v1/instances/{instance}/secrets/{key}","instance":"web","key":"DATABASE_URL","version":3,"if_version":2,"outcome":"ok","status":200,"remote":"127.0.0.1:50412","duration_ms":8.1}
//! ```
//!
//! A line holds the token's id (never the token), the tenant, the route
//! *template* and the instance and key once they passed the input checks
//! (a refused path is not repeated); never a value, a header or a body.
//! `outcome` is `ok`, `not-modified`, or the error `code` of the answer
//! (`unauthorized`, `forbidden`, `not-found`, `precondition-failed`, ...).
//!
//! # Fail closed
//! - No intent line, no call: when the intent line cannot be written, the
//!   request is answered 503 `audit-unavailable` and the sandbox is never
//!   called; so no value is read and nothing is committed without a line
//!   that says who asked.
//! - No outcome line, no value: when the outcome line of a request that
//!   would return values cannot be written, the answer is replaced by a
//!   503 and its body (the values) is dropped unsent.
//! - A write's outcome line is written after its commit: when that line
//!   fails, the write stands and the client gets the true answer (a 503
//!   would invite a retry that writes twice); its intent line is already
//!   in the log, and the failure goes to the server's log. An intent
//!   without an outcome means "check the store". Outcome lines of other
//!   requests (metadata, lists, refusals) are best effort the same way.
//!
//! # The file
//! Opened once, `O_APPEND` (each line is one `write(2)` of the whole line,
//! so concurrent writers, `logrotate`'s `copytruncate` included, never
//! interleave inside a line), created with mode 0600. Lines are not
//! `fsync`ed unless `--audit-sync`: a written line survives a crash of the
//! server, not a crash of the machine; with `--audit-sync` every line is
//! `fdatasync`ed before the request goes on (durable, and slower: lines are
//! written one at a time), except the outcome lines of requests without a
//! valid token (401), so that a flood of them costs no disk flushes. `-` writes to stderr, beside the server's log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

enum Sink {
    File { file: File, sync: bool },
    Stderr,
    Writer(Box<dyn Write + Send>),
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Mutex<Sink>,
    describe: String,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").field("to", &self.describe).finish()
    }
}

impl AuditLog {
    /// Appends to the file at `path` (created with mode 0600);
    /// `sync`: `fdatasync` after every line.
    pub fn open(path: &Path, sync: bool) -> io::Result<AuditLog> {
        let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
        Ok(AuditLog { sink: Mutex::new(Sink::File { file, sync }), describe: path.display().to_string() })
    }

    /// Writes to the process's stderr.
    pub fn stderr() -> AuditLog {
        AuditLog { sink: Mutex::new(Sink::Stderr), describe: "stderr".into() }
    }

    /// Writes to `writer` (an embedder's sink; tests).
    pub fn to_writer(writer: Box<dyn Write + Send>) -> AuditLog {
        AuditLog { sink: Mutex::new(Sink::Writer(writer)), describe: "a writer".into() }
    }

    /// Where the lines go, for messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Writes one line (blocking: call it from a blocking thread).
    pub(crate) fn write(&self, line: &AuditLine) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut sink = self.sink.lock();
        match &mut *sink {
            Sink::File { file, sync } => {
                file.write_all(&bytes)?;
                // Lines of requests without a valid token are not flushed
                // to disk one by one: a flood of bad tokens must not turn
                // into a flood of disk flushes.
                if *sync && line.token_id.is_some() {
                    file.sync_data()?;
                }
                Ok(())
            }
            Sink::Stderr => {
                let mut err = io::stderr().lock();
                err.write_all(&bytes)?;
                err.flush()
            }
            Sink::Writer(w) => {
                w.write_all(&bytes)?;
                w.flush()
            }
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditLine {
    pub time: String,
    pub event: &'static str,
    pub request_id: String,
    pub token_id: Option<String>,
    pub tenant: Option<String>,
    pub method: String,
    pub route: String,
    pub instance: Option<String>,
    pub key: Option<String>,
    /// The version read or written (the one asked for, in an intent).
    pub version: Option<u32>,
    /// A check-and-set's expected version (0: must not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
}

/// Now, as RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line() -> AuditLine {
        AuditLine {
            time: now(),
            event: "intent",
            request_id: "r".into(),
            token_id: Some("abc".into()),
            tenant: Some("acme".into()),
            method: "GET".into(),
            route: "/v1/instances/{instance}/env".into(),
            instance: Some("web".into()),
            key: None,
            version: None,
            if_version: None,
            outcome: None,
            status: None,
            remote: Some("127.0.0.1:1".into()),
            duration_ms: None,
        }
    }

    #[test]
    fn one_json_object_per_line() {
        let out = Shared::default();
        let log = AuditLog::to_writer(Box::new(out.clone()));
        log.write(&line()).unwrap();
        log.write(&AuditLine { event: "outcome", outcome: Some("ok".into()), status: Some(200), ..line() }).unwrap();
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "intent");
        assert!(lines[0].get("status").is_none() && lines[0]["key"].is_null());
        assert_eq!((lines[1]["status"].as_u64(), lines[1]["outcome"].as_str()), (Some(200), Some("ok")));
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_new_file_is_private_and_appended_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditLog::open(&path, true).unwrap().write(&line()).unwrap();
        AuditLog::open(&path, false).unwrap().write(&line()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_full_device_is_an_error() {
        let log = AuditLog::open(Path::new("/dev/full"), false).unwrap();
        assert_eq!(log.write(&line()).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    }
}
