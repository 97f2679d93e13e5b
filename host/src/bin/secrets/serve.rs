//! `secrets serve`: the HTTP API on the store (see `secrets_host::http`).
//!
//! HTTPS with `--tls-cert`/`--tls-key`; plain HTTP on loopback addresses
//! only unless `--insecure-listen`. Prints `listening on
//! http(s)://ADDR:PORT` on stderr once bound (so
//! `--listen 127.0.0.1:0` can be used by scripts and tests), one log line
//! per request, and stops on SIGTERM or SIGINT: no new connections,
//! requests in flight finish (for at most `--shutdown-timeout`), exit 0.
//! `--audit-log` and `--rate-limit`: see `secrets_host::http::audit` and
//! `secrets_host::http::ratelimit`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrets_host::Secrets;
use secrets_host::backends::Backend;
use secrets_host::http::{ApiConfig, App, AuditLog, ServeOutcome, TlsConfig, check_listen, serve, shutdown_signal};
use secrets_host::tokens::TokenStore;

use crate::CliError;
use crate::args::ServeArgs;

fn usage(message: String) -> CliError {
    CliError { code: 2, message }
}

fn resolve(listen: &str) -> Result<SocketAddr, CliError> {
    let mut addrs = listen
        .to_socket_addrs()
        .map_err(|e| usage(format!("--listen {listen}: {e} (expected ADDR:PORT, e.g. 127.0.0.1:8787)")))?;
    addrs.next().ok_or_else(|| usage(format!("--listen {listen}: no address")))
}

/// The audit log of `--audit-log`: `-` is stderr; a file is opened for
/// appending (created 0600; an existing file readable by others is
/// warned about, not changed).
fn audit_log(path: &Path, sync: bool) -> Result<AuditLog, CliError> {
    if path == Path::new("-") {
        return Ok(AuditLog::stderr());
    }
    let log = AuditLog::open(path, sync).map_err(|e| CliError::error(format!("--audit-log {}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: the audit log {} is accessible to other users (mode {:o}); consider chmod 600",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(log)
}

pub fn run(secrets: Secrets, backend: Arc<dyn Backend>, args: ServeArgs) -> Result<u8, CliError> {
    let addr = resolve(&args.listen)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key).map_err(CliError::error)?),
        _ => None,
    };
    check_listen(addr, tls.is_some(), args.insecure_listen).map_err(usage)?;
    if tls.is_none() && !addr.ip().is_loopback() {
        eprintln!("warning: serving plain HTTP on {addr} (--insecure-listen): tokens and values cross the network unencrypted");
    }
    if backend.describe() == "memory:" {
        eprintln!(
            "warning: a memory: store starts empty and holds no tokens (`secrets token create` cannot reach it): \
             every request will be refused"
        );
    }
    let audit = match &args.audit_log {
        Some(path) => Some(Arc::new(audit_log(path, args.audit_sync)?)),
        None => None,
    };
    let calls = args.max_concurrent_calls as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("secrets-serve")
        // The call slots, as many for token checks, and a few threads for
        // audit lines (written outside the slots).
        .max_blocking_threads(2 * calls + 4)
        .build()
        .map_err(|e| CliError::error(format!("starting the runtime: {e}")))?;
    let config = ApiConfig {
        max_concurrent_calls: calls,
        max_call_wait: args.max_call_wait,
        rate_limit: args.rate_limit.and_then(NonZeroU32::new),
        audit,
        ..ApiConfig::default()
    };
    let app = App::new(secrets, TokenStore::new(backend), config);
    let outcome = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| CliError::error(format!("listening on {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| CliError::error(format!("listening on {addr}: {e}")))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("listening on {scheme}://{local}");
        serve(listener, tls, app, shutdown_signal(), args.shutdown_timeout)
            .await
            .map_err(|e| CliError::error(format!("serving on {local}: {e}")))
    })?;
    // Calls abandoned after the grace period finish or roll back on their
    // own threads; the process does not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        ServeOutcome::Drained => eprintln!("stopped"),
        ServeOutcome::GraceExpired => {
            eprintln!("stopped after {:?} with requests still in flight", args.shutdown_timeout)
        }
    }
    Ok(0)
}
