//! Listening and stopping: TLS (rustls on ring) or, on loopback only,
//! plain HTTP; one task per connection; on shutdown, no new connections
//! and a bounded wait for the requests in flight.
//!
//! Our own accept loop (on hyper, as `axum::serve` is) because a TLS
//! handshake must not hold up the accept loop, and because every
//! connection gets the same limits either way: a TLS handshake within
//! [`HANDSHAKE_TIMEOUT`], request headers within [`HEADER_TIMEOUT`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use super::App;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's headers once it has started
/// (or, on a kept-alive connection, once the previous answer was sent):
/// a client that dribbles bytes does not hold a connection for ever.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses plain HTTP on a non-loopback address unless `insecure` (the
/// operator's `--insecure-listen`): tokens and values would cross the
/// network in clear text. With `tls`, every address is allowed.
pub fn check_listen(addr: SocketAddr, tls: bool, insecure: bool) -> Result<(), String> {
    if tls || addr.ip().is_loopback() || insecure {
        return Ok(());
    }
    Err(format!(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: bearer tokens and secret values \
         would cross the network unencrypted. Give a certificate and its key (--tls-cert, --tls-key), listen on \
         127.0.0.1 or [::1], or pass --insecure-listen to accept the risk (e.g. behind a TLS-terminating proxy)"
    ))
}

/// The server's certificate chain and private key, for [`serve`]: TLS 1.2
/// and 1.3 with rustls' safe defaults on the ring provider, HTTP/1.1 by
/// ALPN, no client certificates.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig { .. }")
    }
}

impl TlsConfig {
    /// Reads `cert` (PEM: the server's certificate first, then any
    /// intermediates) and `key` (PEM: one PKCS#8, PKCS#1 or SEC1 private
    /// key). Refuses a key that does not belong to the first certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--tls-cert {}: no CERTIFICATE in the file", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
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

/// A connection's byte stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`
/// completes; then stops accepting, lets in-flight requests finish for at
/// most `grace`, and returns. Idle kept-alive connections are closed at
/// once.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<ServeOutcome> {
    let router = app.router();
    let connections = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: the listener itself is fine.
                    tracing::warn!(target: "secrets_host::http", "accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let watcher = connections.watcher();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(stream) = open(tcp, peer, tls).await else { return };
            // The peer's address reaches the audit log as axum's
            // `ConnectInfo`.
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().call(req)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(target: "secrets_host::http", %peer, "connection: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!(target: "secrets_host::http", "shutting down: no new connections; finishing requests in flight");
    tokio::select! {
        () = connections.shutdown() => Ok(ServeOutcome::Drained),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(target: "secrets_host::http", "requests still in flight after {grace:?}; stopping anyway");
            Ok(ServeOutcome::GraceExpired)
        }
    }
}

/// The connection's stream: the TCP one, or TLS over it once the
/// handshake is done (`None` when it fails or takes too long).
async fn open(tcp: TcpStream, peer: SocketAddr, tls: Option<TlsConfig>) -> Option<Box<dyn Stream>> {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Some(Box::new(tcp)) };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(target: "secrets_host::http", %peer, "TLS handshake: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(target: "secrets_host::http", %peer, "TLS handshake: not done within {HANDSHAKE_TIMEOUT:?}");
            None
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
            assert!(check_listen(ok.parse().unwrap(), false, false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8787", "[::]:8787", "192.0.2.1:80"] {
            let err = check_listen(bad.parse().unwrap(), false, false).unwrap_err();
            assert!(err.contains("--insecure-listen") && err.contains("--tls-cert"), "{err}");
            assert!(check_listen(bad.parse().unwrap(), false, true).is_ok());
            assert!(check_listen(bad.parse().unwrap(), true, false).is_ok(), "TLS is allowed anywhere");
        }
    }
}
