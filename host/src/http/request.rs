//! What happens around every request: a fresh request id (returned in
//! `X-Request-Id` and in every error body), the error body in the format
//! of the API (Vault's `{"errors":[...]}` on the Vault-compatible routes,
//! see [`super::vault_api`]), headers that keep responses out of caches and
//! sniffers, the outcome line of the audit log, the request counter, and
//! one log line when the request ends.
//!
//! The log line holds the method, the route template (never the path
//! itself), the status, the duration, the request id and the token id of
//! an authenticated caller: never a value, a token or a header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::App;
use super::audit::{self, AuditLine};
use super::errors::{ApiError, ErrorBody};
use crate::tokens::Operation;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Who called, once the token is verified (for the log and the audit).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's id (never the token).
    pub token_id: String,
    /// The token's tenant.
    pub tenant: String,
}

/// What the request is found to be about as it goes (for the audit).
#[derive(Debug, Default)]
struct Facts {
    caller: Option<Caller>,
    operation: Option<Operation>,
    instance: Option<String>,
    key: Option<String>,
    version: Option<u32>,
    if_version: Option<u32>,
}

/// The request's context, in its extensions: its id, method, route
/// template and peer, and what is learnt about it on the way (the caller,
/// the operation, the instance and key once checked, the version).
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Random per request; 24 hex characters.
    pub id: Arc<str>,
    method: Method,
    route: Option<Arc<str>>,
    remote: Option<SocketAddr>,
    vault: bool,
    facts: Arc<Mutex<Facts>>,
}

/// A body an error response of the Vault-compatible routes keeps instead
/// of `{"errors":[...]}` (Vault answers the read of a deleted version 404
/// with the version's metadata). Metadata only, never a value.
#[derive(Debug, Clone)]
pub(crate) struct ErrorBodyOverride(pub(crate) Vec<u8>);

fn request_id() -> Arc<str> {
    let mut bytes = [0u8; 12];
    match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes).into(),
        // Practically unreachable; ids then only need to be distinct.
        Err(_) => {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            format!("local-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).into()
        }
    }
}

impl RequestContext {
    fn new(method: Method, route: Option<Arc<str>>, remote: Option<SocketAddr>, vault: bool) -> RequestContext {
        RequestContext { id: request_id(), method, route, remote, vault, facts: Arc::default() }
    }

    /// Whether the request is one of the Vault-compatible API
    /// ([`super::vault_api`]): Vault's error body, `X-Vault-Token`, and 403
    /// `permission denied` for a bad token.
    pub fn is_vault(&self) -> bool {
        self.vault
    }

    /// Records the authenticated caller.
    pub fn set_caller(&self, caller: Caller) {
        self.facts.lock().caller = Some(caller);
    }

    /// The authenticated caller, if the request got that far.
    pub fn caller(&self) -> Option<Caller> {
        self.facts.lock().caller.clone()
    }

    /// Records the operation of the route.
    pub fn set_operation(&self, operation: Operation) {
        self.facts.lock().operation = Some(operation);
    }

    /// The route's operation, once the request reached its handler.
    pub fn operation(&self) -> Option<Operation> {
        self.facts.lock().operation
    }

    /// Records the instance (and key) of the path, once checked.
    pub fn set_target(&self, instance: &str, key: Option<&str>) {
        let mut facts = self.facts.lock();
        facts.instance = Some(instance.to_owned());
        facts.key = key.map(str::to_owned);
    }

    /// Records the version asked for, read or written.
    pub fn set_version(&self, version: u32) {
        self.facts.lock().version = Some(version);
    }

    /// Records a check-and-set's expected version.
    pub fn set_if_version(&self, version: u32) {
        self.facts.lock().if_version = Some(version);
    }

    /// Whether the request's answer may carry values or it writes: it has
    /// an intent line in the audit log, written before its call.
    pub(crate) fn needs_intent(&self) -> bool {
        self.operation().is_some_and(|op| op.returns_values() || op.writes())
    }

    /// An audit line of the request as known now.
    pub(crate) fn audit_line(&self, event: &'static str) -> AuditLine {
        let facts = self.facts.lock();
        AuditLine {
            time: audit::now(),
            event,
            request_id: self.id.to_string(),
            token_id: facts.caller.as_ref().map(|c| c.token_id.clone()),
            tenant: facts.caller.as_ref().map(|c| c.tenant.clone()),
            method: self.method.to_string(),
            route: self.route.as_deref().unwrap_or("-").to_owned(),
            instance: facts.instance.clone(),
            key: facts.key.clone(),
            version: facts.version,
            if_version: facts.if_version,
            outcome: None,
            status: None,
            remote: self.remote.map(|r| r.to_string()),
            duration_ms: None,
        }
    }
}

fn error_body(error: &ApiError, ctx: &RequestContext) -> Body {
    if ctx.vault {
        return Body::from(serde_json::to_vec(&serde_json::json!({ "errors": error.errors })).unwrap_or_default());
    }
    let body = ErrorBody { errors: &error.errors, code: error.code, request_id: &ctx.id };
    Body::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Whether a request goes to the audit log: those of routes that act on
/// secrets (their handlers name an operation before anything else, even
/// before the token is checked), not the operational endpoints (health,
/// readiness, metrics, the API's description) nor unknown paths. Decided
/// by what the handler is, not by its path, so nesting the router
/// elsewhere changes nothing.
fn audited(ctx: &RequestContext) -> bool {
    ctx.operation().is_some()
}

/// Writes the outcome line of a request. `Err` only when the answer
/// carries values and must not leave (see `audit.rs`).
async fn audit_outcome(
    app: &App,
    ctx: &RequestContext,
    status: StatusCode,
    error: Option<&ApiError>,
    start: Instant,
) -> Result<(), ApiError> {
    let Some(log) = app.inner.config.audit.clone() else { return Ok(()) };
    let mut line = ctx.audit_line("outcome");
    line.outcome = Some(match (error, status) {
        (Some(e), _) => e.code.to_owned(),
        (None, StatusCode::NOT_MODIFIED) => "not-modified".to_owned(),
        (None, _) => "ok".to_owned(),
    });
    line.status = Some(status.as_u16());
    line.duration_ms = Some((start.elapsed().as_secs_f64() * 1e4).round() / 10.0);
    let written = tokio::task::spawn_blocking(move || log.write(&line))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("the audit writer panicked: {e}"))));
    let Err(e) = written else { return Ok(()) };
    app.inner.metrics.audit_failure();
    let carries_values = status.is_success() && ctx.operation().is_some_and(Operation::returns_values);
    if carries_values {
        return Err(ApiError::audit_unavailable(
            "the audit log cannot be written; the values were withheld",
            format!("audit log: {e}; the answer was replaced by a 503"),
        ));
    }
    tracing::error!(target: "secrets_host::http", request_id = %ctx.id, "audit log: {e}; the outcome line of this request is missing");
    Ok(())
}

/// The middleware of every route (and of the fallback).
pub(crate) async fn around(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route: Option<Arc<str>> = req.extensions().get::<MatchedPath>().map(|p| p.as_str().into());
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let vault = super::vault_api::is_vault_path(req.uri().path());
    let ctx = RequestContext::new(method.clone(), route.clone(), remote, vault);
    req.extensions_mut().insert(ctx.clone());

    let mut response = next.run(req).await;

    let status = response.status();
    let mut kept = response.extensions_mut().remove::<ErrorBodyOverride>();
    let mut error = response
        .extensions_mut()
        .remove::<ApiError>()
        .or_else(|| (status.is_client_error() || status.is_server_error()).then(|| ApiError::from_status(status)));
    if audited(&ctx)
        && let Err(withheld) = audit_outcome(&app, &ctx, error.as_ref().map_or(status, |e| e.status), error.as_ref(), start).await
    {
        // The values are dropped here, unsent.
        response = withheld.clone().into_response();
        response.extensions_mut().remove::<ApiError>();
        error = Some(withheld);
        kept = None;
    }
    if let Some(error) = &error {
        *response.status_mut() = error.status;
        *response.body_mut() = match kept {
            Some(ErrorBodyOverride(body)) if ctx.vault => Body::from(body),
            _ => error_body(error, &ctx),
        };
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&ctx.id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    // Responses may carry values: no cache keeps them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));

    let status = response.status();
    app.inner.metrics.request(route.as_ref(), &method, status.as_u16());
    let token = ctx.caller().map_or_else(|| "-".to_owned(), |c| c.token_id);
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "secrets_host::http",
        method = %method,
        route = %route.as_deref().unwrap_or("-"),
        status = status.as_u16(),
        duration_ms = format_args!("{duration_ms:.1}"),
        request_id = %ctx.id,
        token,
        "request"
    );
    if let Some(detail) = error.and_then(|e| e.detail) {
        if status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(target: "secrets_host::http", request_id = %ctx.id, "{detail}");
        } else {
            tracing::warn!(target: "secrets_host::http", request_id = %ctx.id, "{detail}");
        }
    }
    response
}
