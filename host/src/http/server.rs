//! Listening and stopping: the loopback rule for plain HTTP, serving a
//! router until a shutdown signal, then draining in-flight requests for a
//! bounded time.
//!
//! TLS will come in here (a rustls acceptor in front of the same router);
//! until then, [`check_listen`] refuses plain HTTP on any address but
//! loopback unless the operator insists.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::App;

/// Refuses plain HTTP on a non-loopback address unless `insecure` (the
/// operator's `--insecure-listen`): tokens and values would cross the
/// network in clear text.
pub fn check_listen(addr: SocketAddr, insecure: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || insecure {
        return Ok(());
    }
    Err(format!(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: bearer tokens and secret values \
         would cross the network unencrypted, and TLS is not supported yet. Listen on 127.0.0.1 or [::1] (behind a \
         TLS-terminating proxy on this host), or pass --insecure-listen to accept the risk"
    ))
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// Shut down, and every in-flight request finished.
    Drained,
    /// Shut down, but requests were still running when the grace period
    /// ended; they were abandoned (a call in the sandbox commits or rolls
    /// back on its own).
    GraceExpired,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets in-flight requests finish for at most `grace`, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<ServeOutcome> {
    let signalled = Arc::new(Notify::new());
    let notify = signalled.clone();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // The peer's address reaches the audit log.
    let service = app.router().into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(target: "secrets_host::http", "shutting down: no new connections; finishing requests in flight");
        notify.notify_one();
    });
    tokio::select! {
        result = server => result.map(|()| ServeOutcome::Drained),
        () = async {
            signalled.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(target: "secrets_host::http", "requests still in flight after {grace:?}; stopping anyway");
            Ok(ServeOutcome::GraceExpired)
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!(target: "secrets_host::http", "cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in ["127.0.0.1:8787", "127.0.0.2:1", "[::1]:8787"] {
            assert!(check_listen(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8787", "[::]:8787", "192.0.2.1:80"] {
            let err = check_listen(bad.parse().unwrap(), false).unwrap_err();
            assert!(err.contains("--insecure-listen"), "{err}");
            assert!(check_listen(bad.parse().unwrap(), true).is_ok());
        }
    }
}
