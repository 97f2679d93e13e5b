//! A Vault / OpenBao **KV v2**-compatible API beside the native one, so
//! that existing Vault clients (the `vault` and `bao` CLIs, hvac, External
//! Secrets Operator's Vault provider, ...) work against `secrets serve`.
//!
//! # Mapping
//! - One mount, `secret` (as on Vault's dev server). A KV path
//!   `<instance>/<key>` is one of our secrets; one KV version is one of
//!   our versions. Any other depth of path is a 400 saying so.
//! - A version's `data` is `{"value": "...", "type": "env|file|registry|tls"}`:
//!   `value` is required and a string (binary values go through the native
//!   API); `type` is optional and defaults to the key's existing type, else
//!   `env`; a new key whose name is not a valid variable name and has no
//!   `type` is a 400 saying to pass `type=file`. Any other field in `data`
//!   (or in the body, or in `options` but `cas`) is refused with 400,
//!   never dropped. Reads answer the same two fields.
//! - `LIST` (the method, or `GET ?list=true`) of the mount's root lists the
//!   tenant's instances (`name/`), of `<instance>/` its keys. Names only.
//!
//! | route | methods | operation (role) |
//! |---|---|---|
//! | `/v1/secret/data/{path}` | `GET` (`?version=N`, 0 = current) | value (read) |
//! | | `POST`, `PUT` (`options.cas`) ; `PATCH` (merge of `data`, `options.cas`) | set (write) |
//! | | `DELETE`: soft-deletes the current version | delete-versions (write) |
//! | `/v1/secret/metadata/{path}` | `GET` | metadata (read) |
//! | | `LIST`, `GET ?list=true` | list, or instances at the root (read) |
//! | | `DELETE`: the key with all its versions (purge) | delete (write) |
//! | `/v1/secret/delete/{path}` | `POST`, `PUT` `{"versions":[..]}` | delete-versions (write) |
//! | `/v1/secret/undelete/{path}` | `POST`, `PUT` `{"versions":[..]}` | undelete (write) |
//! | `/v1/secret/destroy/{path}` | `POST`, `PUT` `{"versions":[..]}` | destroy (write) |
//! | `/v1/auth/token/lookup-self` | `GET` | lookup-self (every role): the token's id, tenant and role, never the token |
//! | `/v1/sys/internal/ui/mounts/{path}` | `GET`: `secret/` is KV version 2 | no token |
//! | `/v1/sys/health` | `GET`: 200 when the store answers | no token |
//!
//! Tokens are the native API's (`X-Vault-Token` or `Authorization: Bearer`,
//! see [`super::auth`]); a bad token is a 403 `permission denied` as on
//! Vault, an `inject` token is refused every KV route (403). The tenant
//! comes from the token: another tenant's path is a 404.
//!
//! Answers are in Vault's envelope (`request_id`, `lease_id`, `renewable`,
//! `lease_duration`, `data`, `wrap_info`, `warnings`, `auth`); errors are
//! `{"errors":[...]}` (the request middleware writes them for every path
//! under `/v1/secret`, `/v1/sys/` and `/v1/auth/`), with Vault's statuses:
//! input errors, a check-and-set mismatch (`check-and-set parameter did not
//! match the current version`), a type change and broken rules are 400; a
//! read of a deleted or destroyed version is a 404 whose body holds the
//! version's metadata, as Vault's.
//!
//! Not supported, refused rather than ignored: other mounts, metadata
//! writes (`max_versions`, `cas_required`, `delete_version_after`,
//! `custom_metadata`), response wrapping, leases. Differences from Vault
//! that a client may notice: deleting, undeleting or destroying versions
//! of a missing key or a version that is not retained is a 404 (Vault
//! answers 204); the `DELETE` of `data/` finds the current version and
//! soft-deletes it in two transactions (a write in between is not
//! deleted, its predecessor is); `custom_metadata` shows the key's `type`.
//!
//! Audit: every handler names its operation through
//! [`Authorized`] like the native ones, so each request gets its
//! audit lines; the health and mount probes are not audited.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use percent_encoding::percent_decode_str;
use secrets_guest::validate;
use serde_json::{Map, Value, json};

use super::App;
use super::auth::{Authorized, Permission, op};
use super::errors::ApiError;
use super::input::{query, version_number};
use super::request::{ErrorBodyOverride, RequestContext};
use crate::error::Error;
use crate::types::{SecretMeta, SecretType, SecretValue, SetRequest};

/// The one KV v2 mount.
pub const MOUNT: &str = "secret";

/// Whether a request path belongs to this API (and gets Vault's error body).
pub(crate) fn is_vault_path(path: &str) -> bool {
    path == "/v1/secret" || ["/v1/secret/", "/v1/sys/", "/v1/auth/"].iter().any(|p| path.starts_with(p))
}

/// The routes: each answers every method and dispatches itself (Vault's
/// `LIST` is not a method axum routes by name).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<App>)> {
    vec![
        ("/v1/secret/data/{*path}", any(data)),
        ("/v1/secret/metadata", any(metadata)),
        ("/v1/secret/metadata/", any(metadata)),
        ("/v1/secret/metadata/{*path}", any(metadata)),
        ("/v1/secret/delete/{*path}", any(delete)),
        ("/v1/secret/undelete/{*path}", any(undelete)),
        ("/v1/secret/destroy/{*path}", any(destroy)),
        ("/v1/auth/token/lookup-self", any(lookup_self)),
        ("/v1/sys/internal/ui/mounts/{*path}", any(ui_mounts)),
        ("/v1/sys/health", any(health)),
    ]
}

/// The routes as a router, for `handlers::router` to merge (under the
/// same middleware).
pub(crate) fn router() -> Router<App> {
    routes().into_iter().fold(Router::new(), |router, (path, handler)| router.route(path, handler))
}

// ---------------------------------------------------------------- shapes

/// Vault's response envelope around `data`.
fn envelope(ctx: &RequestContext, data: Value) -> Value {
    json!({
        "request_id": &*ctx.id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn ok(ctx: &RequestContext, data: Value) -> Response {
    json_response(StatusCode::OK, &envelope(ctx, data))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond.
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

fn kind_name(kind: SecretType) -> Value {
    serde_json::to_value(kind).unwrap_or(Value::Null)
}

/// One version's metadata as in Vault's `data/` answers.
fn version_metadata(m: &SecretMeta) -> Value {
    json!({
        "created_time": rfc3339(m.created_at),
        "custom_metadata": null,
        "deletion_time": m.deleted_at.map(rfc3339).unwrap_or_default(),
        "destroyed": m.destroyed,
        "version": m.version,
    })
}

/// A key's metadata as in Vault's `metadata/` answer, from its retained
/// versions (oldest first, never empty).
fn key_metadata(versions: &[SecretMeta], max_versions: u32) -> Value {
    let (Some(first), Some(last)) = (versions.first(), versions.last()) else { return Value::Null };
    let map: Map<String, Value> = versions
        .iter()
        .map(|v| {
            let entry = json!({
                "created_time": rfc3339(v.created_at),
                "deletion_time": v.deleted_at.map(rfc3339).unwrap_or_default(),
                "destroyed": v.destroyed,
            });
            (v.version.to_string(), entry)
        })
        .collect();
    json!({
        "cas_required": false,
        "created_time": rfc3339(first.created_at),
        "current_metadata_version": 0,
        "current_version": last.version,
        "custom_metadata": {"type": kind_name(last.kind)},
        "delete_version_after": "0s",
        "max_versions": max_versions,
        "metadata_cas_required": false,
        "oldest_version": first.version,
        "updated_time": rfc3339(last.created_at),
        "versions": map,
    })
}

// ---------------------------------------------------------------- errors

/// The host's error with Vault's statuses: what the native API answers
/// 409, 412 or 422 is a 400 here, and a check-and-set mismatch says so in
/// Vault's words first.
fn kv_error(e: Error) -> ApiError {
    let mismatch = matches!(e, Error::VersionMismatch(_));
    let mut error = ApiError::from(e);
    if mismatch {
        error.errors.insert(0, "check-and-set parameter did not match the current version".into());
    }
    if matches!(error.status, StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED | StatusCode::UNPROCESSABLE_ENTITY) {
        error.status = StatusCode::BAD_REQUEST;
    }
    error
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn unsupported_operation() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "unsupported operation")
}

fn not_found(t: &Target) -> ApiError {
    ApiError::not_found(format!("no secret at {MOUNT}/{}/{}", t.instance, t.key))
}

/// A name as messages may show it: short and plain, else not at all.
fn shown(name: &str) -> String {
    if !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        format!("{name:?}")
    } else {
        "(name not shown)".into()
    }
}

// ---------------------------------------------------------------- input

/// The `<instance>/<key>` of a KV path.
#[derive(Debug, Clone)]
struct Target {
    instance: String,
    key: String,
}

/// The decoded segments of the KV path after `/{MOUNT}/{what}` (a
/// trailing slash allowed), each checked like the native API's path
/// segments.
fn segments(parts: &Parts, what: &str) -> Result<Vec<String>, ApiError> {
    let path = parts.uri.path();
    let marker = format!("/{MOUNT}/{what}");
    let rest = path.split_once(marker.as_str()).map_or("", |(_, rest)| rest);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let max = validate::MAX_INSTANCE_ID_BYTES.max(validate::MAX_KEY_BYTES);
    rest.split('/')
        .map(|raw| {
            let s = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("the path is not valid UTF-8 once percent-decoded"))?;
            if s.is_empty() {
                return Err(bad("path: an empty segment (`//`) is not allowed"));
            }
            if s.contains('/') || s.contains('\\') {
                return Err(bad("path: an encoded slash is not allowed in a path segment"));
            }
            if s.contains("..") {
                return Err(bad("path: `..` is not allowed in a path segment"));
            }
            if s.chars().any(char::is_control) {
                return Err(bad("path: control characters are not allowed in a path segment"));
            }
            if s.len() > max {
                return Err(bad(format!("path: segment over {max} bytes")));
            }
            Ok(s.into_owned())
        })
        .collect()
}

fn rule(result: Result<(), secrets_guest::Error>) -> Result<(), ApiError> {
    result.map_err(|e| kv_error(Error::from(e)))
}

fn instance_rule(instance: &str) -> Result<(), ApiError> {
    rule(validate::instance_id(instance))
}

/// The path as `<instance>/<key>`, checked, recorded for the audit.
fn target_of(segments: Vec<String>, ctx: &RequestContext) -> Result<Target, ApiError> {
    let Ok([instance, key]) = <[String; 2]>::try_from(segments) else {
        return Err(bad(format!(
            "a path under {MOUNT}/ is <instance>/<key> here (one secret of one instance); other depths are not supported"
        )));
    };
    instance_rule(&instance)?;
    rule(validate::key(&key))?;
    ctx.set_target(&instance, Some(&key));
    Ok(Target { instance, key })
}

fn target(parts: &Parts, what: &str, ctx: &RequestContext) -> Result<Target, ApiError> {
    target_of(segments(parts, what)?, ctx)
}

/// Authenticates and authorises the request for `P` (the first thing a
/// handler does, as with the native extractor).
async fn authorize<P: Permission>(parts: &mut Parts, app: &App) -> Result<Authorized<P>, ApiError> {
    Authorized::<P>::from_request_parts(parts, app).await
}

/// The body, within the body limit, as a JSON object. Vault clients do not
/// all send a `Content-Type`; any is taken.
async fn body_object(parts: Parts, body: Body, app: &App) -> Result<Map<String, Value>, ApiError> {
    let bytes = Bytes::from_request(Request::from_parts(parts, body), app)
        .await
        .map_err(|rejection| ApiError::from_status(rejection.status()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            bad(format!("failed to parse JSON input: {e}"))
        } else {
            bad("failed to parse JSON input")
        }
    })?;
    match parsed {
        Value::Object(map) => Ok(map),
        _ => Err(bad("the body must be a JSON object")),
    }
}

fn only_fields(map: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "{what}: unknown field {} (this server takes {}); nothing was written",
            shown(unknown),
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// `options.cas`: a number, or digits in a string, or absent.
fn cas_of(body: &Map<String, Value>) -> Result<Option<u32>, ApiError> {
    let options = match body.get("options") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("options: must be an object")),
    };
    only_fields(options, &["cas"], "options")?;
    let cas = match options.get("cas") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Some(_) => None,
    };
    cas.and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| bad("error parsing check-and-set parameter"))
}

const TYPES: &str = "env, file, registry or tls";

fn type_of(value: &Value) -> Result<SecretType, ApiError> {
    let bad_type = || bad(format!("data.type: must be one of {TYPES}"));
    match value {
        Value::String(_) => serde_json::from_value(value.clone()).map_err(|_| bad_type()),
        _ => Err(bad_type()),
    }
}

/// What a write's `data` holds.
struct DataFields {
    value: Option<SecretValue>,
    kind: Option<SecretType>,
}

/// `data` of a write (`value` required) or a patch (either field).
fn data_of(body: &Map<String, Value>, patch: bool) -> Result<DataFields, ApiError> {
    let data = match body.get("data") {
        None | Some(Value::Null) => return Err(bad("no data provided")),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(bad("data: must be an object")),
    };
    only_fields(data, &["value", "type"], "data")?;
    let value = match data.get("value") {
        Some(Value::String(s)) => Some(SecretValue::from(s.as_str())),
        None if patch => None,
        None => return Err(bad("data.value: required (this server keeps one value per path, in data.value)")),
        Some(Value::Null) if patch => return Err(bad("data.value: a value cannot be removed; delete the version instead")),
        Some(_) => return Err(bad("data.value: must be a string (binary values go through the native API)")),
    };
    let kind = match data.get("type") {
        None => None,
        Some(v) => Some(type_of(v)?),
    };
    Ok(DataFields { value, kind })
}

/// `{"versions": [...]}`: numbers or digits in strings, or one string of
/// comma-separated numbers, as Vault takes them.
fn versions_of(body: &Map<String, Value>) -> Result<Vec<u32>, ApiError> {
    only_fields(body, &["versions"], "body")?;
    let bad_versions = || bad("versions: must be a list of version numbers (1 or more)");
    let one = |v: &Value| -> Result<u32, ApiError> {
        match v {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0).ok_or_else(bad_versions),
            Value::String(s) => version_number(s.trim()).ok_or_else(bad_versions),
            _ => Err(bad_versions()),
        }
    };
    let versions = match body.get("versions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(one).collect::<Result<_, _>>()?,
        Some(Value::String(s)) => {
            s.split(',').filter(|p| !p.trim().is_empty()).map(|p| one(&Value::String(p.to_owned()))).collect::<Result<_, _>>()?
        }
        Some(n @ Value::Number(_)) => vec![one(n)?],
        Some(_) => return Err(bad_versions()),
    };
    if versions.is_empty() {
        return Err(bad("No version number provided"));
    }
    Ok(versions)
}

fn no_query(parts: &Parts) -> Result<(), ApiError> {
    query(parts.uri.query(), &[]).map(drop)
}

// ---------------------------------------------------------------- data/

async fn data(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    match parts.method {
        Method::GET | Method::HEAD => read(app, parts).await,
        Method::POST | Method::PUT => write(app, parts, body).await,
        Method::PATCH => patch(app, parts, body).await,
        Method::DELETE => delete_current(app, parts).await,
        _ => Err(unsupported_operation()),
    }
}

/// What a read found when there was no readable version.
enum Missing {
    /// The version exists, deleted or destroyed: its metadata.
    Gone(SecretMeta),
    /// No such key or version.
    Absent,
}

async fn read(app: App, mut parts: Parts) -> Result<Response, ApiError> {
    let caller = authorize::<op::Value>(&mut parts, &app).await?;
    let ctx = caller.ctx.clone();
    let t = target(&parts, "data", &ctx)?;
    let mut version = None;
    for (_, v) in query(parts.uri.query(), &["version"])? {
        // Vault: absent, empty or 0 is the current version.
        if v.is_empty() || v == "0" {
            continue;
        }
        version = Some(version_number(&v).ok_or_else(|| bad("version: must be a non-negative integer"))?);
    }
    if let Some(v) = version {
        ctx.set_version(v);
    }
    let scope = caller.grant.scope;
    let (instance, key) = (t.instance.clone(), t.key.clone());
    let found = app
        .call(Some(&ctx), "get", move |inner| {
            let got = match version {
                Some(v) => inner.secrets.get_version(&scope, &instance, &key, v),
                None => inner.secrets.get(&scope, &instance, &key),
            };
            match got {
                Ok(secret) => Ok(Ok(secret)),
                // Deleted, destroyed, or not there: which one is in the metadata.
                Err(Error::NotFound) => match inner.secrets.versions(&scope, &instance, &key) {
                    Ok(all) => {
                        let meta = match version {
                            Some(v) => all.into_iter().find(|m| m.version == v),
                            None => all.into_iter().last(),
                        };
                        Ok(Err(meta.filter(|m| m.deleted_at.is_some() || m.destroyed).map_or(Missing::Absent, Missing::Gone)))
                    }
                    Err(Error::NotFound) => Ok(Err(Missing::Absent)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        })
        .await?
        .map_err(kv_error)?;
    let secret = match found {
        Ok(secret) => secret,
        Err(Missing::Absent) => return Err(not_found(&t)),
        Err(Missing::Gone(meta)) => {
            ctx.set_version(meta.version);
            // Vault's answer: 404 with the version's metadata and no data.
            let body = envelope(&ctx, json!({"data": null, "metadata": version_metadata(&meta)}));
            let state = if meta.destroyed { "destroyed" } else { "deleted" };
            let mut response =
                ApiError::not_found(format!("version {} of {MOUNT}/{}/{} is {state}", meta.version, t.instance, t.key)).into_response();
            response.extensions_mut().insert(ErrorBodyOverride(serde_json::to_vec(&body).unwrap_or_default()));
            return Ok(response);
        }
    };
    ctx.set_version(secret.meta.version);
    let Ok(text) = secret.value.expose_str() else {
        return Err(bad(format!(
            "version {} of {MOUNT}/{}/{} is not UTF-8 text; read it with the native API",
            secret.meta.version, t.instance, t.key
        )));
    };
    let data = json!({
        "data": {"value": text, "type": kind_name(secret.meta.kind)},
        "metadata": version_metadata(&secret.meta),
    });
    Ok(ok(&ctx, data))
}

/// The type a write without `data.type` gets: the key's, else `env` when
/// the key can be an env variable's name.
fn default_kind(inner: &super::Inner, scope: &crate::Scope, t: &Target) -> Result<SecretType, Error> {
    match inner.secrets.versions(scope, &t.instance, &t.key) {
        Ok(versions) => versions.last().map(|m| m.kind).ok_or(Error::NotFound),
        Err(Error::NotFound) => {
            if validate::env_name(&t.key).is_ok() {
                Ok(SecretType::Env)
            } else {
                Err(Error::InvalidArgument(format!(
                    "{MOUNT}/{}/{} is a new key whose name is not a valid environment variable name, so it cannot be an \
                     env secret: pass type=file (or registry or tls) in data, e.g. `bao kv put {MOUNT}/{}/{} value=@FILE type=file`",
                    t.instance, t.key, t.instance, t.key
                )))
            }
        }
        Err(e) => Err(e),
    }
}

/// A write or patch of `data/`: the caller (Set role), its target, the
/// check-and-set version (noted in the context) and the `data` fields.
async fn data_write(
    app: &App,
    mut parts: Parts,
    body: Body,
    patch: bool,
) -> Result<(Authorized<op::Set>, Target, Option<u32>, DataFields), ApiError> {
    let caller = authorize::<op::Set>(&mut parts, app).await?;
    let t = target(&parts, "data", &caller.ctx)?;
    no_query(&parts)?;
    let body = body_object(parts, body, app).await?;
    only_fields(&body, &["data", "options"], "body")?;
    let cas = cas_of(&body)?;
    let fields = data_of(&body, patch)?;
    if let Some(v) = cas {
        caller.ctx.set_if_version(v);
    }
    Ok((caller, t, cas, fields))
}

async fn write(app: App, parts: Parts, body: Body) -> Result<Response, ApiError> {
    let (caller, t, cas, DataFields { value, kind }) = data_write(&app, parts, body, false).await?;
    let ctx = caller.ctx.clone();
    let value = value.unwrap_or_default();
    let scope = caller.grant.scope;
    let meta = app
        .call(Some(&ctx), "set", move |inner| {
            let kind = match kind {
                Some(k) => k,
                None => default_kind(inner, &scope, &t)?,
            };
            let mut req = SetRequest::new(&t.instance, &t.key, kind, value);
            req.if_version = cas;
            inner.secrets.set(&scope, req)
        })
        .await?
        .map_err(kv_error)?;
    ctx.set_version(meta.version);
    Ok(ok(&ctx, version_metadata(&meta)))
}

/// A JSON merge patch of `data`: the current version's fields, with those
/// given replaced, written as the next version (on the version read: a
/// write in between makes it a check-and-set mismatch).
async fn patch(app: App, parts: Parts, body: Body) -> Result<Response, ApiError> {
    let (caller, t, cas, DataFields { value, kind }) = data_write(&app, parts, body, true).await?;
    let ctx = caller.ctx.clone();
    let scope = caller.grant.scope;
    let target = t.clone();
    let meta = app
        .call(Some(&ctx), "patch", move |inner| {
            let current = inner.secrets.get(&scope, &t.instance, &t.key)?;
            let version = current.meta.version;
            if let Some(expected) = cas
                && expected != version
            {
                return Err(Error::VersionMismatch(format!("{MOUNT}/{}/{} is at version {version}, not {expected}", t.instance, t.key)));
            }
            if let Some(k) = kind
                && k != current.meta.kind
            {
                return Err(Error::Conflict(format!(
                    "{MOUNT}/{}/{} holds a {} secret; delete it before setting it as {k}",
                    t.instance, t.key, current.meta.kind
                )));
            }
            let value = value.unwrap_or(current.value);
            let mut req = SetRequest::new(&t.instance, &t.key, current.meta.kind, value);
            req.if_version = Some(version);
            inner.secrets.set(&scope, req)
        })
        .await?
        .map_err(|e| kv_error(e).when_not_found(|| not_found(&target).errors.concat()))?;
    ctx.set_version(meta.version);
    Ok(ok(&ctx, version_metadata(&meta)))
}

/// Vault's `DELETE data/`: soft-deletes the current version.
async fn delete_current(app: App, mut parts: Parts) -> Result<Response, ApiError> {
    let caller = authorize::<op::DeleteVersions>(&mut parts, &app).await?;
    let ctx = caller.ctx.clone();
    let t = target(&parts, "data", &ctx)?;
    no_query(&parts)?;
    let scope = caller.grant.scope;
    let target = t.clone();
    let deleted = app
        .call(Some(&ctx), "delete-versions", move |inner| {
            let versions = inner.secrets.versions(&scope, &t.instance, &t.key)?;
            let current = versions.last().ok_or(Error::NotFound)?;
            if current.deleted_at.is_none() && !current.destroyed {
                inner.secrets.delete_versions(&scope, &t.instance, &t.key, &[current.version])?;
            }
            Ok::<_, Error>(current.version)
        })
        .await?
        .map_err(|e| kv_error(e).when_not_found(|| not_found(&target).errors.concat()))?;
    ctx.set_version(deleted);
    Ok(no_content())
}

// ------------------------------------------------- delete/ undelete/ destroy/

/// Which change of versions a route makes.
#[derive(Clone, Copy)]
enum Change {
    Delete,
    Undelete,
    Destroy,
}

async fn change<P: Permission>(app: App, req: Request, what: &'static str, change: Change) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    if !matches!(parts.method, Method::POST | Method::PUT) {
        return Err(unsupported_operation());
    }
    let caller = authorize::<P>(&mut parts, &app).await?;
    let ctx = caller.ctx.clone();
    let t = target(&parts, what, &ctx)?;
    no_query(&parts)?;
    let body = body_object(parts, body, &app).await?;
    let versions = versions_of(&body)?;
    if let [one] = versions[..] {
        ctx.set_version(one);
    }
    let scope = caller.grant.scope;
    let target = t.clone();
    let name = match change {
        Change::Delete => "delete-versions",
        Change::Undelete => "undelete",
        Change::Destroy => "destroy",
    };
    app.call(Some(&ctx), name, move |inner| {
        let s = &inner.secrets;
        match change {
            Change::Delete => s.delete_versions(&scope, &t.instance, &t.key, &versions),
            Change::Undelete => s.undelete(&scope, &t.instance, &t.key, &versions),
            Change::Destroy => s.destroy(&scope, &t.instance, &t.key, &versions),
        }
    })
    .await?
    .map_err(|e| {
        kv_error(e).when_not_found(|| format!("{} (or one of the versions is not retained)", not_found(&target).errors.concat()))
    })?;
    Ok(no_content())
}

async fn delete(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    change::<op::DeleteVersions>(app, req, "delete", Change::Delete).await
}

async fn undelete(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    change::<op::Undelete>(app, req, "undelete", Change::Undelete).await
}

async fn destroy(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    change::<op::Destroy>(app, req, "destroy", Change::Destroy).await
}

// ---------------------------------------------------------------- metadata/

async fn metadata(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = req.into_parts();
    let listing = parts.method.as_str() == "LIST"
        || (matches!(parts.method, Method::GET | Method::HEAD)
            && query(parts.uri.query(), &["list"])?.iter().any(|(_, v)| v == "true"));
    if listing {
        return list(app, parts).await;
    }
    match parts.method {
        Method::GET | Method::HEAD => {
            let caller = authorize::<op::Metadata>(&mut parts, &app).await?;
            let ctx = caller.ctx.clone();
            let t = target(&parts, "metadata", &ctx)?;
            no_query(&parts)?;
            let scope = caller.grant.scope;
            let target = t.clone();
            let versions = app
                .call(Some(&ctx), "versions", move |inner| inner.secrets.versions(&scope, &t.instance, &t.key))
                .await?
                .map_err(|e| kv_error(e).when_not_found(|| not_found(&target).errors.concat()))?;
            if let Some(last) = versions.last() {
                ctx.set_version(last.version);
            }
            let max_versions = app.inner.secrets.limits().max_versions_per_key;
            Ok(ok(&ctx, key_metadata(&versions, max_versions)))
        }
        Method::DELETE => {
            let caller = authorize::<op::Delete>(&mut parts, &app).await?;
            let ctx = caller.ctx.clone();
            let t = target(&parts, "metadata", &ctx)?;
            no_query(&parts)?;
            let scope = caller.grant.scope;
            let target = t.clone();
            app.call(Some(&ctx), "delete", move |inner| inner.secrets.delete(&scope, &t.instance, &t.key))
                .await?
                .map_err(|e| kv_error(e).when_not_found(|| not_found(&target).errors.concat()))?;
            Ok(no_content())
        }
        Method::POST | Method::PUT | Method::PATCH => {
            // Authenticated like a write, then refused: nothing here is
            // configurable per key.
            authorize::<op::Set>(&mut parts, &app).await?;
            Err(bad(
                "metadata writes are not supported by this server (max_versions, cas_required, delete_version_after and \
                 custom_metadata are fixed); nothing was changed",
            ))
        }
        _ => Err(unsupported_operation()),
    }
}

/// `LIST`: the tenant's instances at the root (as `name/`), an instance's
/// keys below it. Names only.
async fn list(app: App, mut parts: Parts) -> Result<Response, ApiError> {
    // Which operation depends on the depth; the path is read before the
    // token is checked only to know it (nothing is called yet).
    let depth = segments(&parts, "metadata").map(|s| s.len()).unwrap_or(1);
    if depth == 0 {
        let caller = authorize::<op::Instances>(&mut parts, &app).await?;
        let ctx = caller.ctx.clone();
        query(parts.uri.query(), &["list"])?;
        let scope = caller.grant.scope;
        let instances = app.call(Some(&ctx), "instances", move |inner| inner.secrets.instances(&scope)).await?.map_err(kv_error)?;
        if instances.is_empty() {
            return Err(ApiError::not_found(format!("no secrets under {MOUNT}/")));
        }
        let keys: Vec<String> = instances.into_iter().map(|i| format!("{i}/")).collect();
        return Ok(ok(&ctx, json!({"keys": keys})));
    }
    let caller = authorize::<op::List>(&mut parts, &app).await?;
    let ctx = caller.ctx.clone();
    let segments = segments(&parts, "metadata")?;
    query(parts.uri.query(), &["list"])?;
    let [instance] = &segments[..] else {
        return Err(ApiError::not_found(format!(
            "nothing to list under {MOUNT}/{}/: a path here is <instance>/<key>",
            segments.join("/")
        )));
    };
    instance_rule(instance)?;
    ctx.set_target(instance, None);
    let scope = caller.grant.scope;
    let name = instance.clone();
    let metas = app.call(Some(&ctx), "list", move |inner| inner.secrets.list(&scope, &name)).await?.map_err(kv_error)?;
    if metas.is_empty() {
        return Err(ApiError::not_found(format!("no secrets under {MOUNT}/{instance}/")));
    }
    let keys: Vec<&str> = metas.iter().map(|m| m.key.as_str()).collect();
    Ok(ok(&ctx, json!({"keys": keys})))
}

// ---------------------------------------------------------------- sys/, auth/

/// The caller's own token: its id (as `id` and `accessor`), tenant and
/// role; never the token itself.
async fn lookup_self(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = req.into_parts();
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::POST) {
        return Err(unsupported_operation());
    }
    let caller = authorize::<op::LookupSelf>(&mut parts, &app).await?;
    no_query(&parts)?;
    let grant = &caller.grant;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // Vault's token fields: seconds left, seconds it was created for, and
    // the expiry time; 0 and null for a token that does not expire.
    let ttl = grant.expires_ms.map_or(0, |e| e.saturating_sub(now_ms) / 1000);
    let creation_ttl = grant.expires_ms.map_or(0, |e| e.saturating_sub(grant.created_ms) / 1000);
    let expire_time = grant.expires_ms.map(rfc3339);
    let data = json!({
        "id": grant.token_id,
        "accessor": grant.token_id,
        "display_name": format!("token-{}", grant.token_id),
        "policies": [grant.role.as_str()],
        "meta": {"tenant": grant.scope.name(), "role": grant.role.as_str()},
        "path": "auth/token/create",
        "type": "service",
        "orphan": true,
        "renewable": false,
        "num_uses": 0,
        "ttl": ttl,
        "creation_ttl": creation_ttl,
        "creation_time": grant.created_ms / 1000,
        "explicit_max_ttl": creation_ttl,
        "expire_time": expire_time,
        "entity_id": "",
    });
    Ok(ok(&caller.ctx, data))
}

/// What the CLI asks before a `kv` command: which mount holds the path,
/// and its KV version. No token; nothing of a tenant in the answer.
async fn ui_mounts(State(_app): State<App>, req: Request) -> Result<Response, ApiError> {
    let (parts, _body) = req.into_parts();
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(unsupported_operation());
    }
    let path = parts.uri.path().split_once("/sys/internal/ui/mounts/").map_or("", |(_, p)| p);
    let first = path.split('/').next().unwrap_or("");
    if first != MOUNT {
        return Err(ApiError::not_found(format!("no mount at this path; this server serves KV version 2 at {MOUNT}/ only")));
    }
    let data = json!({
        "path": format!("{MOUNT}/"),
        "type": "kv",
        "description": "secrets: KV version 2 over instance secrets (<instance>/<key>)",
        "options": {"version": "2"},
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false},
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
    });
    let ctx = parts.extensions.get::<RequestContext>().cloned().ok_or_else(|| ApiError::internal("no request context"))?;
    Ok(ok(&ctx, data))
}

/// Vault's health probe: 200 when the store answers (a read transaction,
/// like `/readyz`). No token; any query is ignored (probes send many).
async fn health(State(app): State<App>, method: Method) -> Result<Response, ApiError> {
    if !matches!(method, Method::GET | Method::HEAD) {
        return Err(unsupported_operation());
    }
    app.check("check-store", |inner| inner.tokens.check_store()).await??;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "initialized": true,
            "sealed": false,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": now,
            "version": env!("CARGO_PKG_VERSION"),
            "cluster_name": "secrets",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_088_063_498), "2026-12-01T01:21:03.498Z");
        assert_eq!(rfc3339(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn versions_in_every_form_vault_takes() {
        let parse = |v: Value| versions_of(v.as_object().unwrap());
        assert_eq!(parse(json!({"versions": [1, 2]})).unwrap(), vec![1, 2]);
        assert_eq!(parse(json!({"versions": ["1", "3"]})).unwrap(), vec![1, 3]);
        assert_eq!(parse(json!({"versions": "1,2"})).unwrap(), vec![1, 2]);
        assert_eq!(parse(json!({"versions": 4})).unwrap(), vec![4]);
        for bad in [json!({"versions": []}), json!({}), json!({"versions": [0]}), json!({"versions": ["x"]}), json!({"versions": [1], "x": 1})] {
            assert_eq!(parse(bad.clone()).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn writes_refuse_what_they_would_drop() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert!(data_of(&body(json!({"data": {"value": "x", "other": "y"}})), false).is_err());
        assert!(data_of(&body(json!({"data": {"value": 1}})), false).is_err());
        assert!(data_of(&body(json!({"data": {"type": "file"}})), false).is_err());
        assert!(data_of(&body(json!({"data": {"value": "x", "type": "text"}})), false).is_err());
        assert!(data_of(&body(json!({})), false).is_err());
        assert!(data_of(&body(json!({"data": {"type": "file"}})), true).is_ok());
        assert_eq!(cas_of(&body(json!({"options": {"cas": 3}}))).unwrap(), Some(3));
        assert_eq!(cas_of(&body(json!({"options": {"cas": "0"}}))).unwrap(), Some(0));
        assert_eq!(cas_of(&body(json!({"options": {}}))).unwrap(), None);
        assert!(cas_of(&body(json!({"options": {"cas": -1}}))).is_err());
        assert!(cas_of(&body(json!({"options": {"cas": "x"}}))).is_err());
        assert!(cas_of(&body(json!({"options": {"max_versions": 1}}))).is_err());
    }
}
