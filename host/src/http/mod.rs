//! The HTTP API (`secrets serve`): an authenticated front of [`Secrets`]
//! for a control plane, a deploy agent or an operator. Feature `http`.
//!
//! | route | operation | roles |
//! |---|---|---|
//! | `PUT /v1/instances/{instance}/secrets/{key}` | set: `{"type":..,"value":..}` or `{"type":..,"value_base64":..}`; 201 for version 1, else 200; metadata + `ETag: "vN"`; `If-Match: "vN"` (check-and-set) or `If-None-Match: *` (must not exist), else 412 | write |
//! | `GET /v1/instances/{instance}/secrets` | list: `{"secrets":[meta...]}` | read, write |
//! | `GET /v1/instances/{instance}/secrets/{key}` | current metadata + `versions` | read, write |
//! | `GET /v1/instances/{instance}/secrets/{key}/value[?version=N]` | `{"key","version","type","value"\|"value_base64"}` + `ETag`; the raw bytes with `Accept: application/octet-stream`; 304 (no value) on a matching `If-None-Match` | read, write |
//! | `DELETE /v1/instances/{instance}/secrets/{key}` | the purge: every version; 204 | write |
//! | `POST /v1/instances/{instance}/secrets/{key}/rotate` | `{"rotated": n}` | write |
//! | `POST /v1/instances/{instance}/secrets/{key}/delete-versions`, `.../undelete`, `.../destroy` | `{"versions":[N,..]}`: soft delete, restore, remove values for good; 204 | write |
//! | `POST /v1/instances/{instance}/secrets/{key}/rollback` | `{"version":N}`: N's value as a new version; its metadata + `ETag` | write |
//! | `GET /v1/instances` | `{"instances":[..]}`: the tenant's instances with secrets | read, write |
//! | `GET /v1/instances/{instance}/env[?format=json\|dotenv]` | the env secrets | read, write, inject |
//! | `GET /v1/instances/{instance}/mounts` | `{"mounts":[{"path","mode","contents_base64"}]}` | read, write, inject |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (a read transaction on the store) | no token |
//! | `GET /metrics` | Prometheus text format ([`metrics`]: no tenant, instance, key or token in a label) | no token |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of every route here ([`openapi`]); not audited | no token |
//! | `/v1/secret/{data,metadata,delete,undelete,destroy}/...`, `/v1/auth/token/lookup-self`, `/v1/sys/health`, `/v1/sys/internal/ui/mounts/...` | Vault KV v2 compatibility ([`vault_api`]): Vault's envelope, errors and statuses, `X-Vault-Token`; not in the OpenAPI document | as the native routes; the two `sys` probes without a token |
//!
//! An instance without any secret is a 404 on `list`, `env` and `mounts`
//! (as is any instance of another tenant): a typo never looks like an
//! instance without secrets. Status codes and the error body are in
//! [`errors`].
//!
//! # Threat model
//! - **Callers** present `Authorization: Bearer <token>`; tokens are
//!   created with `secrets token create` and kept in the store as SHA-256
//!   hashes only ([`crate::tokens`]). Each token has one tenant and one
//!   role. The tenant comes from the token, never from the request, and
//!   every call runs in that tenant's [`Scope`]: another tenant's instance
//!   is indistinguishable from a missing one (404), and no request can
//!   write into another tenant's keys.
//! - Every request reads its token from the store (no cache), so a
//!   revocation is effective on the next request, on every replica of a
//!   shared store. Bad tokens of every kind get one identical 401.
//! - **Input** is checked before the sandbox sees it: path segments (encoded
//!   slashes, `..`, control characters, length, the name rules), query
//!   parameters (unknown ones refused), the body (content type, size limit,
//!   unknown fields, exactly one value field, base64). The component then
//!   applies its own rules.
//! - **Values** leave only in the bodies of `/value`, `/env` and `/mounts`;
//!   never in a header, an error, or the log (one line per request: method,
//!   route template, status, duration, request id, token id). Tokens never
//!   appear in the log or in errors; only their ids do. Every response is
//!   `Cache-Control: no-store`.
//! - **Load**: sandbox and store calls run on tokio's blocking pool, at
//!   most `max_concurrent_calls` at once (a semaphore; the rest wait, at
//!   most `max_call_wait`, then 503 `busy`), so the async runtime never
//!   blocks; token checks have slots of their own; a trap is a 500 with the request id
//!   and the server keeps serving. With a rate limit, each token gets N
//!   requests per second in this process ([`ratelimit`]; 429 beyond).
//! - **Audit** ([`audit`]): with an audit log, every `/v1` request but the
//!   OpenAPI document gets an outcome line, and requests that return values
//!   or write get an intent line before their call; when the audit log
//!   cannot be written, such a request is refused (503) before anything is
//!   read or written, and values are withheld when their outcome line fails.
//! - **Check-and-set**: `If-Match`/`If-None-Match: *` become the
//!   component's `if_version`, compared inside the write transaction (no
//!   race between the check and the write); a mismatch is the host's
//!   [`Error::VersionMismatch`](crate::Error::VersionMismatch), answered 412.
//!
//! - **Transport**: TLS (rustls, [`TlsConfig`]) on any address; plain
//!   HTTP only on loopback unless the operator says `--insecure-listen`
//!   (e.g. behind a TLS-terminating proxy on the same host). A client
//!   gets [`server::HANDSHAKE_TIMEOUT`] for its handshake and
//!   [`server::HEADER_TIMEOUT`] for a request's headers.
//!
//! # Does not protect (yet)
//! - No client certificates (mutual TLS), no certificate reload without a
//!   restart, no HTTP/2.
//! - A client that sends its headers and then its body slowly holds a
//!   connection (not a call slot) until it is done. Rate limits are per
//!   process (N replicas allow N times the rate) and count only verified
//!   tokens.
//! - Whoever can write the store can add tokens (it can also read every
//!   secret with the master key); whoever can only read it sees token
//!   metadata and hashes, never a usable token.
//! - Copies of values in HTTP buffers (hyper's, serde_json's) are not
//!   zeroized; the parsed value itself is ([`crate::SecretValue`]).
//!
//! # Layout
//! - `mod.rs`: [`App`] (the shared state) and [`ApiConfig`].
//! - `handlers.rs`: the routes and their documentation; `openapi.rs`: the
//!   OpenAPI document, assembled; `input.rs`: path, query, header and body
//!   checks; `auth.rs`: bearer tokens, rate limits and roles; `errors.rs`:
//!   the status mapping; `request.rs`: request id, error bodies, the
//!   outcome audit line, the log line; `audit.rs`: the audit log;
//!   `ratelimit.rs`: token buckets; `metrics.rs`: `/metrics`;
//!   `vault_api.rs`: the Vault KV v2-compatible routes (not in the OpenAPI
//!   document, which describes the native API);
//!   `server.rs`: listening, TLS, loopback rule, graceful shutdown.
//!
//! [`Secrets`]: crate::Secrets
//! [`Scope`]: crate::Scope

pub mod audit;
pub mod auth;
pub mod errors;
mod handlers;
pub mod input;
mod metrics;
mod openapi;
pub mod ratelimit;
pub mod request;
pub mod server;
pub mod vault_api;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::sync::Semaphore;

use crate::backends::VaultError;
use crate::secrets::Secrets;
use crate::tokens::{TokenError, TokenStore};
pub use audit::AuditLog;
pub use errors::ApiError;
use metrics::Metrics;
use ratelimit::RateLimiter;
use request::RequestContext;
pub use server::{ServeOutcome, TlsConfig, check_listen, serve, shutdown_signal};

/// The method and path template of every route [`App::router`] serves
/// (a `GET` route answers `HEAD` too). The OpenAPI document describes
/// exactly these.
pub fn routes() -> Vec<(Method, &'static str)> {
    handlers::routes().into_iter().map(|(method, path, _)| (method, path)).collect()
}

/// Default of [`ApiConfig::max_concurrent_calls`].
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

/// Default of [`ApiConfig::max_call_wait`].
pub const DEFAULT_MAX_CALL_WAIT: Duration = Duration::from_secs(10);

/// Default of [`ApiConfig::body_limit`]: a 64 KiB value in base64 (87,384
/// bytes) with room for the rest of the JSON.
pub const DEFAULT_BODY_LIMIT: usize = 96 * 1024;

/// How the API runs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Calls of the sandbox or the store running at once; more wait. Token
    /// checks (and `/readyz`) have as many slots again, of their own, so
    /// a flood of made-up tokens cannot starve callers with real ones, nor
    /// slow calls keep tokens from being checked.
    pub max_concurrent_calls: usize,
    /// How long a request waits for a slot before it is answered 503
    /// `busy` with `Retry-After: 1`.
    pub max_call_wait: Duration,
    /// Largest request body, in bytes (413 above).
    pub body_limit: usize,
    /// Requests per second and token, in bursts of as many (429 above);
    /// `None`: unlimited. Counted in this process only ([`ratelimit`]).
    pub rate_limit: Option<NonZeroU32>,
    /// Where the audit lines go; `None`: no audit log ([`audit`]).
    pub audit: Option<Arc<AuditLog>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_call_wait: DEFAULT_MAX_CALL_WAIT,
            body_limit: DEFAULT_BODY_LIMIT,
            rate_limit: None,
            audit: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) secrets: Secrets,
    pub(crate) tokens: TokenStore,
    pub(crate) config: ApiConfig,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) metrics: Metrics,
    calls: Arc<Semaphore>,
    checks: Arc<Semaphore>,
}

/// What a call returned, as far as the metrics care: whether it trapped.
pub(crate) trait CallResult {
    /// Whether the sandbox trapped.
    fn trapped(&self) -> bool {
        false
    }
}

impl<T> CallResult for Result<T, crate::Error> {
    fn trapped(&self) -> bool {
        matches!(self, Err(crate::Error::Trap { .. }))
    }
}

impl<T> CallResult for Result<T, TokenError> {}
impl<T> CallResult for Result<T, VaultError> {}

/// The API's state: the service, the tokens, the call limit. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("secrets", &self.inner.secrets).field("config", &self.inner.config).finish()
    }
}

impl App {
    /// The API over `secrets`, with tokens kept in `tokens` (normally the
    /// same store).
    pub fn new(secrets: Secrets, tokens: TokenStore, config: ApiConfig) -> App {
        let calls = Arc::new(Semaphore::new(config.max_concurrent_calls.max(1)));
        let checks = Arc::new(Semaphore::new(config.max_concurrent_calls.max(1)));
        let limiter = config.rate_limit.map(RateLimiter::new);
        App { inner: Arc::new(Inner { secrets, tokens, config, limiter, metrics: Metrics::default(), calls, checks }) }
    }

    /// The routes, with their middleware, ready for [`serve`] (or to nest
    /// in a larger router).
    pub fn router(self) -> axum::Router {
        handlers::router(self)
    }

    /// Runs a blocking call (sandbox or store), named `name` in the
    /// metrics, on the blocking pool, at most `max_concurrent_calls` at
    /// once; a request that waits longer than `max_call_wait` for a slot
    /// is answered 503 `busy`. A call keeps its slot until it ends, even
    /// when the client has gone.
    ///
    /// With an audit log, the call of a request that returns values or
    /// writes (`ctx`) is preceded by its intent line, on the same thread;
    /// when that line cannot be written, `f` is not called and the answer
    /// is a 503.
    pub(crate) async fn call<R: CallResult + Send + 'static>(
        &self,
        ctx: Option<&RequestContext>,
        name: &'static str,
        f: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let intent = match (ctx, &self.inner.config.audit) {
            (Some(ctx), Some(log)) if ctx.needs_intent() => Some((log.clone(), ctx.audit_line("intent"))),
            _ => None,
        };
        self.run(&self.inner.calls, intent, name, f).await
    }

    /// Like [`App::call`], for checking a token or the store, on slots of
    /// their own.
    pub(crate) async fn check<R: CallResult + Send + 'static>(
        &self,
        name: &'static str,
        f: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        self.run(&self.inner.checks, None, name, f).await
    }

    async fn run<R: CallResult + Send + 'static>(
        &self,
        slots: &Arc<Semaphore>,
        intent: Option<(Arc<AuditLog>, audit::AuditLine)>,
        name: &'static str,
        f: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let wait = self.inner.config.max_call_wait;
        let permit = match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
            Ok(permit) => permit.map_err(|_| ApiError::internal("call slots closed"))?,
            Err(_) => {
                self.inner.metrics.busy();
                return Err(ApiError::busy(wait));
            }
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Some((log, line)) = intent
                && let Err(e) = log.write(&line)
            {
                inner.metrics.audit_failure();
                return Err(ApiError::audit_unavailable(
                    "the audit log cannot be written; the request was not carried out",
                    format!("audit log: {e}; {name} not called"),
                ));
            }
            let start = Instant::now();
            let result = f(&inner);
            inner.metrics.call(name, start.elapsed(), result.trapped());
            Ok(result)
        })
        .await
        .map_err(|e| ApiError::internal(format!("a call panicked: {e}")))?
    }

    /// The metrics, in the Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        self.inner.metrics.render(self.inner.config.max_concurrent_calls.max(1), self.inner.calls.available_permits())
    }
}
