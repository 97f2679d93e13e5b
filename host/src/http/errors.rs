//! Every error of the API, and the one place that maps the host's errors to
//! status codes.
//!
//! | cause | status | `code` |
//! |---|---|---|
//! | malformed request: path tricks, query, JSON syntax | 400 | `bad-request` |
//! | missing, malformed, unknown, expired or revoked token | 401 (all alike) | `unauthorized` |
//! | a token of the right tenant without the role | 403 | `forbidden` |
//! | missing key or instance, or another tenant's | 404 | `not-found` |
//! | a key's type change | 409 | `conflict` |
//! | `If-Match` / `If-None-Match: *` of a PUT not met (check-and-set) | 412 | `precondition-failed` |
//! | body or value over the limit | 413 | `too-large` |
//! | body not `application/json` | 415 | `unsupported-media-type` |
//! | input breaking a rule (the message names the field) | 422 | `invalid-argument`, `limit-exceeded` |
//! | the token's request rate exceeded | 429 (+ `Retry-After`) | `rate-limited` |
//! | store unreachable or not answering | 503 (+ `Retry-After`) | `unavailable` |
//! | the audit log cannot be written | 503 (+ `Retry-After`) | `audit-unavailable` |
//! | store answered with an error or a corrupt entry | 502 | `store-error` |
//! | sandbox trap (or another failure of the host) | 500 | `internal` |
//!
//! A handler returns an [`ApiError`]; its response carries the error as a
//! response extension and an empty body, and the request middleware
//! (`request.rs`) writes the body `{"errors":[...],"code":"...",
//! "request_id":"..."}`, which is how the request id gets in. Responses
//! axum makes itself (an unknown route, a wrong method) get the same body
//! there. Messages never carry a value or a token: the host's error texts
//! name fields and rules only, and store and sandbox details go to the log,
//! not to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::backends::VaultError;
use crate::error::Error;
use crate::tokens::{Operation, Role, TokenError};

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// What went wrong, one message per problem; never a value or a token.
    pub(crate) errors: &'a [String],
    /// A short, stable name of the case (`not-found`, `forbidden`, ...).
    pub(crate) code: &'a str,
    /// The request's id, as in `X-Request-Id`.
    pub(crate) request_id: &'a str,
}

/// What a failed request answers.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A short, stable name of the case.
    pub code: &'static str,
    /// What the client is told, one message per problem.
    pub errors: Vec<String>,
    /// What only the server's log is told (store and sandbox details).
    pub detail: Option<String>,
    /// The `Retry-After` of a 429 or 503, in seconds (503s without one
    /// get 1).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, errors: vec![message.into()], detail: None, retry_after: None }
    }

    /// 400: a request that is not well formed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// 422: input that breaks a rule; each message names its field.
    pub fn invalid(errors: Vec<String>) -> ApiError {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid-argument", errors, detail: None, retry_after: None }
    }

    /// 401, the same whatever was wrong with the token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    /// 403: the token's role does not allow the operation.
    pub fn forbidden(role: Role, op: Operation) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("a {role} token may not {}", op.as_str()))
    }

    /// 404 with a message naming what was looked for.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message)
    }

    /// 415.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Content-Type must be application/json")
    }

    /// 500 for a failure of the host itself; `detail` goes to the log.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            errors: vec!["internal error; nothing was changed (quote the request id)".into()],
            detail: Some(detail.into()),
            retry_after: None,
        }
    }

    /// 412: a check-and-set's precondition does not hold.
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", message)
    }

    /// 429: the token made more requests than its rate allows; try again
    /// in `retry_after` seconds.
    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests with this token; try again after Retry-After seconds",
            )
        }
    }

    /// 503: no call slot came free within `waited`; try again in a second.
    pub fn busy(waited: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the server is busy (no call slot free within {waited:?}); try again after Retry-After seconds"),
            )
        }
    }

    /// 503: the audit log cannot be written, so the request is not carried
    /// out (or its values are withheld); `detail` goes to the log.
    pub fn audit_unavailable(message: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", message)
        }
    }

    /// Replaces the message of a 404 (the host's is a bare "not found").
    pub fn when_not_found(mut self, message: impl FnOnce() -> String) -> ApiError {
        if self.status == StatusCode::NOT_FOUND {
            self.errors = vec![message()];
        }
        self
    }

    /// The error axum answered by itself with `status` (no route, wrong
    /// method, a body over the limit, ...), in our format.
    pub fn from_status(status: StatusCode) -> ApiError {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        match status {
            StatusCode::NOT_FOUND => ApiError::not_found("no such route"),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(status, "method-not-allowed", reason),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large("the request body is over the limit"),
            s if s.is_server_error() => ApiError::internal(reason),
            _ => ApiError::new(status, "bad-request", reason),
        }
    }
}

/// The store's failures: 503 when it could not be reached (try again),
/// 502 when it answered with an error or a corrupt entry.
impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> ApiError {
        let detail = Some(format!("vault: {e}"));
        match e {
            VaultError::Unavailable(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                errors: vec!["the store is unavailable; try again later".into()],
                detail,
                retry_after: None,
            },
            _ => ApiError {
                status: StatusCode::BAD_GATEWAY,
                code: "store-error",
                errors: vec![format!("the store failed ({}); nothing was changed", e.kind())],
                detail,
                retry_after: None,
            },
        }
    }
}

/// The host's errors ([`Error`]), case by case.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::NotFound => ApiError::not_found("not found"),
            Error::InvalidArgument(m) => ApiError::invalid(vec![m]),
            Error::LimitExceeded(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit-exceeded", m),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Error::VersionMismatch(m) => ApiError::precondition_failed(m),
            Error::Vault(v) => v.into(),
            trap @ Error::Trap { .. } => ApiError::internal(trap.to_string()),
            Error::Sandbox(m) => ApiError::internal(format!("sandbox: {m}")),
        }
    }
}

/// Token failures: every kind of bad token is the same 401.
impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        match e {
            TokenError::Malformed | TokenError::Unknown | TokenError::Expired => ApiError::unauthorized(),
            TokenError::NotFound(_) => ApiError::not_found("no such token"),
            TokenError::InvalidArgument(m) => ApiError::invalid(vec![m]),
            TokenError::Store(v) => v.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match (self.retry_after, self.status) {
            (Some(s), _) => Some(s),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The body is written by the request middleware, which knows the
        // request id.
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |e: Error| ApiError::from(e).status.as_u16();
        assert_eq!(status(Error::NotFound), 404);
        assert_eq!(status(Error::InvalidArgument("k".into())), 422);
        assert_eq!(status(Error::LimitExceeded("k".into())), 422);
        assert_eq!(status(Error::Conflict("k".into())), 409);
        assert_eq!(status(Error::VersionMismatch("k".into())), 412);
        assert_eq!(status(Error::Vault(VaultError::Unavailable("x".into()))), 503);
        assert_eq!(status(Error::Vault(VaultError::Corrupt("x".into()))), 502);
        assert_eq!(status(Error::Trap { call: "set", message: "x".into() }), 500);
        for e in [TokenError::Malformed, TokenError::Unknown, TokenError::Expired] {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code, a.errors), (401, "unauthorized", vec!["a valid bearer token is required".to_string()]));
        }
    }

    #[test]
    fn store_details_stay_in_the_log() {
        let e = ApiError::from(Error::Vault(VaultError::Unavailable("sqlite:/srv/db: busy".into())));
        assert!(!e.errors.concat().contains("/srv/db"));
        assert!(e.detail.unwrap().contains("/srv/db"));
        let e = ApiError::from(Error::Trap { call: "set", message: "wasm backtrace".into() });
        assert!(!e.errors.concat().contains("backtrace"));
    }
}
