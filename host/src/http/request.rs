//! What happens around every request: a fresh request id (returned in
//! `X-Request-Id` and in every error body), the error body in the one
//! format of the API, headers that keep responses out of caches and
//! sniffers, and one log line when the request ends.
//!
//! The log line holds the method, the route template (never the path
//! itself), the status, the duration, the request id and the token id of
//! an authenticated caller: never a value, a token or a header.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::errors::ApiError;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Who called, once the token is verified (for the log, later the audit).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's id (never the token).
    pub token_id: String,
    /// The token's tenant.
    pub tenant: String,
}

/// The request's context, in its extensions: its id, and the caller once
/// known.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Random per request; 24 hex characters.
    pub id: Arc<str>,
    caller: Arc<OnceLock<Caller>>,
}

impl RequestContext {
    fn new() -> RequestContext {
        let mut bytes = [0u8; 12];
        let id = match getrandom::fill(&mut bytes) {
            Ok(()) => hex::encode(bytes),
            // Practically unreachable; ids then only need to be distinct.
            Err(_) => {
                static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                format!("local-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            }
        };
        RequestContext { id: id.into(), caller: Arc::default() }
    }

    /// Records the authenticated caller.
    pub fn set_caller(&self, caller: Caller) {
        let _ = self.caller.set(caller);
    }

    /// The authenticated caller, if the request got that far.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.get()
    }
}

fn error_body(error: &ApiError, request_id: &str) -> Body {
    let body = serde_json::json!({ "errors": error.errors, "code": error.code, "request_id": request_id });
    Body::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The middleware of every route (and of the fallback).
pub(crate) async fn around(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let ctx = RequestContext::new();
    let method = req.method().clone();
    let route: Arc<str> = req.extensions().get::<MatchedPath>().map_or_else(|| "-".into(), |p| p.as_str().into());
    req.extensions_mut().insert(ctx.clone());

    let mut response = next.run(req).await;

    let status = response.status();
    let error = response
        .extensions_mut()
        .remove::<ApiError>()
        .or_else(|| (status.is_client_error() || status.is_server_error()).then(|| ApiError::from_status(status)));
    if let Some(error) = &error {
        *response.status_mut() = error.status;
        *response.body_mut() = error_body(error, &ctx.id);
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
    let token = ctx.caller().map_or("-", |c| c.token_id.as_str());
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "secrets_host::http",
        method = %method,
        route = %route,
        status = status.as_u16(),
        duration_ms = format_args!("{duration_ms:.1}"),
        request_id = %ctx.id,
        token,
        "request"
    );
    if let Some(detail) = error.and_then(|e| e.detail) {
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(target: "secrets_host::http", request_id = %ctx.id, "{detail}");
        } else {
            tracing::warn!(target: "secrets_host::http", request_id = %ctx.id, "{detail}");
        }
    }
    response
}
