//! Everything a request brings, checked before any call of [`Secrets`]:
//! path segments, query parameters, the body of a set and the headers that
//! change what a request does (`If-Match`, `If-None-Match`, `Accept`).
//!
//! Path segments arrive percent-decoded. A segment holding a `/` or `\`
//! (an encoded slash), `..`, a control character or more bytes than the
//! longest name is refused with 400 without being repeated; then the
//! component's own rules for instance ids and keys run here too (natively),
//! so a bad name is a 422 naming the field before the sandbox sees it.
//!
//! [`Secrets`]: crate::Secrets

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{HeaderMap, header, request::Parts};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;
use secrets_guest::validate;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::errors::ApiError;
use super::request::RequestContext;
use crate::error::Error;
use crate::types::{SecretType, SecretValue};

/// Structural checks of one decoded path segment.
fn segment(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.contains('/') || value.contains('\\') {
        return Err(ApiError::bad_request(format!("{field}: an encoded slash is not allowed in a path segment")));
    }
    if value.contains("..") {
        return Err(ApiError::bad_request(format!("{field}: `..` is not allowed in a path segment")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{field}: control characters are not allowed in a path segment")));
    }
    if value.len() > max {
        return Err(ApiError::bad_request(format!("{field}: path segment over {max} bytes")));
    }
    Ok(())
}

fn rule(result: Result<(), secrets_guest::Error>) -> Result<(), ApiError> {
    result.map_err(|e| ApiError::from(Error::from(e)))
}

fn param<'a>(params: &'a RawPathParams, name: &str) -> Result<&'a str, ApiError> {
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::internal(format!("route without the path parameter {name}")))
}

async fn raw_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::bad_request("the path is not valid UTF-8 once percent-decoded"))
}

fn instance_of(params: &RawPathParams) -> Result<String, ApiError> {
    let instance = param(params, "instance")?;
    segment("instance", instance, validate::MAX_INSTANCE_ID_BYTES)?;
    rule(validate::instance_id(instance))?;
    Ok(instance.to_owned())
}

/// The `{instance}` of the path, checked.
#[derive(Debug, IntoParams)]
#[into_params(names("instance"), parameter_in = Path)]
pub struct InstancePath(
    /// The instance id.
    pub String,
);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let instance = instance_of(&params)?;
        if let Some(ctx) = parts.extensions.get::<RequestContext>() {
            ctx.set_target(&instance, None);
        }
        Ok(InstancePath(instance))
    }
}

/// The `{instance}` and `{key}` of the path, checked.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The instance id.
    pub instance: String,
    /// The key.
    pub key: String,
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        let instance = instance_of(&params)?;
        let key = param(&params, "key")?;
        segment("key", key, validate::MAX_KEY_BYTES)?;
        rule(validate::key(key))?;
        if let Some(ctx) = parts.extensions.get::<RequestContext>() {
            ctx.set_target(&instance, Some(key));
        }
        Ok(KeyPath { instance, key: key.to_owned() })
    }
}

/// A route that takes no query parameters: any is refused (400), so that
/// e.g. `DELETE ...?version=2` never deletes more than the caller meant.
#[derive(Debug)]
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        query(parts.uri.query(), &[])?;
        Ok(NoQuery)
    }
}

/// The one value of header `name`, if any; two are refused.
fn single(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(&name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!("{name}: give it once")));
    }
    let value = value.to_str().map_err(|_| ApiError::bad_request(format!("{name}: not visible ASCII")))?;
    Ok(Some(value.trim()))
}

/// A version number as the API writes them: decimal digits, N ≥ 1, no
/// sign and no leading zero (so each version has one spelling).
pub fn version_number(digits: &str) -> Option<u32> {
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The version of an entity tag of ours, `"vN"`.
fn our_etag(tag: &str) -> Option<u32> {
    version_number(tag.strip_prefix("\"v")?.strip_suffix('"')?)
}

/// The check-and-set of a PUT, from its headers, as
/// [`SetRequest::if_version`](crate::SetRequest::if_version):
/// `If-Match: "vN"` → `Some(N)`, `If-None-Match: *` (the key must not
/// exist) → `Some(0)`, neither → `None`. Anything else (both, a list, a
/// weak tag, `If-Match: *`, a tag that is not ours) is refused with 400
/// rather than half understood: a client relying on a precondition must
/// never have it ignored.
pub fn set_precondition(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    let if_match = single(headers, header::IF_MATCH)?;
    let if_none_match = single(headers, header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request("give If-Match or If-None-Match, not both")),
        (Some(tag), None) => our_etag(tag).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "If-Match: must be one entity tag \"vN\" (N >= 1, as an ETag of this API); for a key that must not \
                 exist yet use If-None-Match: *",
            )
        }),
        (None, Some("*")) => Ok(Some(0)),
        (None, Some(_)) => Err(ApiError::bad_request("If-None-Match: on a PUT only * is supported (the key must not exist)")),
    }
}

/// The `If-None-Match` of a GET: whether it matches the version `version`
/// (weak comparison, RFC 9110 §13.1.2). `*` matches any; tags that are not
/// ours match nothing; a header that is not a list of entity tags is a 400.
pub fn none_match(headers: &HeaderMap, version: u32) -> Result<bool, ApiError> {
    let mut matched = false;
    for value in headers.get_all(header::IF_NONE_MATCH) {
        let value = value.to_str().map_err(|_| ApiError::bad_request("if-none-match: not visible ASCII"))?;
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                matched = true;
                continue;
            }
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            if opaque.len() < 2 || !opaque.starts_with('"') || !opaque.ends_with('"') || opaque[1..opaque.len() - 1].contains('"') {
                return Err(ApiError::bad_request("If-None-Match: must be * or a list of entity tags (\"vN\")"));
            }
            matched |= our_etag(opaque) == Some(version);
        }
    }
    Ok(matched)
}

/// Whether the `Accept` header prefers the raw bytes
/// (`application/octet-stream`) to JSON: octet-stream must be named with
/// a weight above 0 and not below JSON's (named, or through a wildcard).
/// JSON otherwise, whatever else is asked for.
pub fn wants_raw(headers: &HeaderMap) -> bool {
    let mut raw: Option<f32> = None;
    let mut json: Option<(u8, f32)> = None; // (specificity, weight)
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let json_specificity = match media.as_str() {
                "application/octet-stream" => {
                    raw = Some(raw.map_or(weight, |w: f32| w.max(weight)));
                    continue;
                }
                "application/json" => 2,
                "application/*" => 1,
                "*/*" => 0,
                _ => continue,
            };
            if json.is_none_or(|(s, _)| json_specificity > s) {
                json = Some((json_specificity, weight));
            }
        }
    }
    match (raw, json) {
        (Some(r), Some((_, j))) => r > 0.0 && r >= j,
        (Some(r), None) => r > 0.0,
        (None, _) => false,
    }
}

/// A parameter name as messages may show it: short and plain, else not at all.
fn shown(name: &str) -> String {
    if !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        format!("{name:?}")
    } else {
        "(name not shown)".into()
    }
}

/// The query's parameters, each of `allowed` at most once; anything else
/// is refused.
pub fn query(raw: Option<&str>, allowed: &[&'static str]) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| ApiError::bad_request("the query is not valid UTF-8 once percent-decoded"))
        };
        let name = decode(name)?;
        let Some(known) = allowed.iter().copied().find(|a| *a == name) else {
            return Err(ApiError::bad_request(format!("unknown query parameter {}", shown(&name))));
        };
        if out.iter().any(|(n, _)| *n == known) {
            return Err(ApiError::bad_request(format!("query parameter {known:?} given twice")));
        }
        out.push((known, decode(value)?));
    }
    Ok(out)
}

/// The body of `PUT .../secrets/{key}`: `{"type": ..., "value": ...}` or
/// `{"type": ..., "value_base64": ...}`.
#[derive(Debug)]
pub struct SetBody {
    /// The secret's type.
    pub kind: SecretType,
    /// The value, decoded.
    pub value: SecretValue,
}

/// The body's two shapes, for the OpenAPI document: what [`set_body`]
/// accepts, and nothing else.
impl PartialSchema for SetBody {
    fn schema() -> RefOr<Schema> {
        let shape = |field: &str, description: &str| {
            ObjectBuilder::new()
                .property("type", Ref::from_schema_name(SecretType::name()))
                .property(field, ObjectBuilder::new().schema_type(Type::String).description(Some(description)))
                .required("type")
                .required(field)
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        };
        OneOfBuilder::new()
            .item(shape("value", "The value as text."))
            .item(shape("value_base64", "The value in base64 (standard alphabet, padded), for bytes."))
            .description(Some("The secret's type and its value: exactly one of `value` and `value_base64`."))
            .into()
    }
}

impl ToSchema for SetBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((SecretType::name().into_owned(), SecretType::schema()));
    }
}

const TYPES: &str = "env, file, registry or tls";

/// A JSON object body (`Content-Type: application/json`, else 415).
fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    let parsed: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        // Syntax errors name a position, never the input; other kinds of
        // serde messages may quote it, so they are not shown.
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(format!("body: malformed JSON: {e}"))
        } else {
            ApiError::bad_request("body: malformed JSON")
        }
    })?;
    match parsed {
        serde_json::Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::invalid(vec!["body: must be a JSON object".into()])),
    }
}

/// A version number in a JSON body: an integer from 1 to 2^32 - 1.
fn json_version(value: &serde_json::Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 1)
}

/// Most versions one lifecycle request may name (the component's hard
/// maximum of retained versions per key).
pub const MAX_VERSIONS_PER_REQUEST: usize = 1000;

/// The body of `delete-versions`, `undelete` and `destroy`:
/// `{"versions": [N, ...]}`, 1..=1000 version numbers.
pub fn versions_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u32>, ApiError> {
    let mut fields = json_object(headers, body)?;
    let rule = format!("versions: required, a list of 1 to {MAX_VERSIONS_PER_REQUEST} version numbers (integers from 1)");
    let mut errors: Vec<String> = fields
        .keys()
        .filter(|name| name.as_str() != "versions")
        .map(|name| format!("unknown field {}; the only field is versions", shown(name)))
        .collect();
    let versions = match fields.remove("versions") {
        Some(serde_json::Value::Array(items)) if (1..=MAX_VERSIONS_PER_REQUEST).contains(&items.len()) => {
            items.iter().map(json_version).collect::<Option<Vec<u32>>>()
        }
        _ => None,
    };
    if versions.is_none() {
        errors.push(rule);
    }
    match versions {
        Some(versions) if errors.is_empty() => Ok(versions),
        _ => Err(ApiError::invalid(errors)),
    }
}

/// The body of `rollback`: `{"version": N}`.
pub fn rollback_body(headers: &HeaderMap, body: &[u8]) -> Result<u32, ApiError> {
    let mut fields = json_object(headers, body)?;
    let mut errors: Vec<String> = fields
        .keys()
        .filter(|name| name.as_str() != "version")
        .map(|name| format!("unknown field {}; the only field is version", shown(name)))
        .collect();
    let version = fields.remove("version").as_ref().and_then(json_version);
    if version.is_none() {
        errors.push("version: required, the version number to roll back to (an integer from 1)".into());
    }
    match version {
        Some(version) if errors.is_empty() => Ok(version),
        _ => Err(ApiError::invalid(errors)),
    }
}

/// Parses a set's body. Every problem is reported (one message each,
/// naming the field); none repeats a value.
pub fn set_body(headers: &HeaderMap, body: &[u8], max_value_bytes: usize) -> Result<SetBody, ApiError> {
    let mut fields = json_object(headers, body)?;
    let mut errors = Vec::new();
    for name in fields.keys() {
        if !matches!(name.as_str(), "type" | "value" | "value_base64") {
            errors.push(format!("unknown field {}; the fields are type, value and value_base64", shown(name)));
        }
    }
    let kind = match fields.remove("type") {
        None => {
            errors.push(format!("type: required ({TYPES})"));
            None
        }
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "env" => Some(SecretType::Env),
            "file" => Some(SecretType::File),
            "registry" => Some(SecretType::Registry),
            "tls" => Some(SecretType::Tls),
            _ => {
                errors.push(format!("type: must be {TYPES}"));
                None
            }
        },
        Some(_) => {
            errors.push(format!("type: must be a string ({TYPES})"));
            None
        }
    };
    let value = match (fields.remove("value"), fields.remove("value_base64")) {
        (Some(_), Some(_)) => {
            errors.push("value, value_base64: give exactly one of them".into());
            None
        }
        (None, None) => {
            errors.push("value or value_base64: required".into());
            None
        }
        (Some(serde_json::Value::String(s)), None) => Some(SecretValue::from(s)),
        (Some(_), None) => {
            errors.push("value: must be a string (use value_base64 for bytes)".into());
            None
        }
        (None, Some(serde_json::Value::String(s))) => {
            let decoded = BASE64.decode(s.as_bytes()).map(SecretValue::new);
            drop(SecretValue::from(s));
            match decoded {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push("value_base64: not valid base64 (standard alphabet, padded)".into());
                    None
                }
            }
        }
        (None, Some(_)) => {
            errors.push("value_base64: must be a string".into());
            None
        }
    };
    match (kind, value) {
        (Some(kind), Some(value)) if errors.is_empty() => {
            if value.len() > max_value_bytes {
                return Err(ApiError::too_large(format!(
                    "value: {} bytes; the limit is {max_value_bytes}",
                    value.len()
                )));
            }
            Ok(SetBody { kind, value })
        }
        _ => Err(ApiError::invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        h
    }

    fn err(body: &str) -> ApiError {
        set_body(&json_headers(), body.as_bytes(), 65536).unwrap_err()
    }

    #[test]
    fn bodies() {
        let b = set_body(&json_headers(), br#"{"type":"env","value":"v"}"#, 65536).unwrap();
        assert_eq!((b.kind, b.value.expose()), (SecretType::Env, &b"v"[..]));
        let b = set_body(&json_headers(), br#"{"type":"file","value_base64":"AAEC/w=="}"#, 65536).unwrap();
        assert_eq!(b.value.expose(), &[0, 1, 2, 255]);
        assert_eq!(set_body(&HeaderMap::new(), b"{}", 65536).unwrap_err().status.as_u16(), 415);
        assert_eq!(err("{").status.as_u16(), 400);
        assert_eq!(err("[1]").status.as_u16(), 422);
        let e = err(r#"{"type":"env","value":"v","extra":1}"#);
        assert_eq!((e.status.as_u16(), e.errors.len()), (422, 1));
        assert!(e.errors[0].contains("\"extra\""), "{:?}", e.errors);
        assert!(err(r#"{"type":"env","value":"v","value_base64":"dg=="}"#).errors[0].contains("exactly one"));
        assert!(err(r#"{"type":"env","value":5}"#).errors[0].starts_with("value:"));
        assert!(err(r#"{"type":"x","value_base64":"!!"}"#).errors.len() == 2);
        let e = set_body(&json_headers(), br#"{"type":"file","value":"12345"}"#, 4).unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
    }

    /// The body's OpenAPI schema against the parser: every documented shape
    /// with every documented type is taken, and the shapes name the
    /// parser's fields, no more.
    #[test]
    fn the_documented_bodies_are_taken() {
        let schema = serde_json::to_value(SetBody::schema()).unwrap();
        let types = serde_json::to_value(SecretType::schema()).unwrap();
        let mut fields = std::collections::BTreeSet::new();
        for shape in schema["oneOf"].as_array().unwrap() {
            assert_eq!(shape["additionalProperties"], false, "{shape}");
            let required: Vec<&str> = shape["required"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
            let properties: Vec<&String> = shape["properties"].as_object().unwrap().keys().collect();
            assert_eq!(properties.len(), required.len(), "{shape}");
            fields.extend(required.iter().copied());
            for kind in types["enum"].as_array().unwrap() {
                // "YQ==" is text, and base64 too.
                let body: serde_json::Map<String, serde_json::Value> =
                    required.iter().map(|f| (f.to_string(), if *f == "type" { kind.clone() } else { "YQ==".into() })).collect();
                let body = serde_json::to_vec(&body).unwrap();
                assert!(set_body(&json_headers(), &body, 65536).is_ok(), "{}", String::from_utf8_lossy(&body));
            }
        }
        assert_eq!(fields.into_iter().collect::<Vec<_>>(), ["type", "value", "value_base64"]);
    }

    #[test]
    fn messages_never_quote_values() {
        let canary = "canary-3f9a";
        for body in [
            format!(r#"{{"type":"{canary}","value":"x"}}"#),
            format!(r#"{{"type":"env","value_base64":"{canary}"}}"#),
            format!(r#"{{"type":"env","{canary}-{canary}-{canary}-{canary}":"x"}}"#),
            format!(r#""{canary}""#),
            format!(r#"{{"type":"env","value":"{canary}""#),
        ] {
            let e = set_body(&json_headers(), body.as_bytes(), 65536).unwrap_err();
            assert!(!format!("{e:?}").contains(canary), "{e:?}");
        }
    }

    #[test]
    fn queries() {
        assert_eq!(query(Some("version=3"), &["version"]).unwrap(), vec![("version", "3".to_string())]);
        assert_eq!(query(None, &["version"]).unwrap(), vec![]);
        assert_eq!(query(Some("version="), &["version"]).unwrap(), vec![("version", String::new())]);
        assert!(query(Some("version=1&version=2"), &["version"]).is_err());
        assert!(query(Some("other=1"), &["version"]).is_err());
        assert!(query(Some("%ff=1"), &["version"]).is_err());
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn preconditions_of_a_put() {
        let pre = |pairs: &[(header::HeaderName, &str)]| set_precondition(&headers(pairs)).map_err(|e| e.status.as_u16());
        assert_eq!(pre(&[]), Ok(None));
        assert_eq!(pre(&[(header::IF_MATCH, "\"v3\"")]), Ok(Some(3)));
        assert_eq!(pre(&[(header::IF_MATCH, " \"v12\" ")]), Ok(Some(12)));
        assert_eq!(pre(&[(header::IF_NONE_MATCH, "*")]), Ok(Some(0)));
        for bad in ["*", "\"v0\"", "W/\"v3\"", "\"v3\", \"v4\"", "v3", "\"3\"", "\"v03\"", "\"v-1\"", "\"v99999999999\"", ""] {
            assert_eq!(pre(&[(header::IF_MATCH, bad)]), Err(400), "{bad:?}");
        }
        assert_eq!(pre(&[(header::IF_NONE_MATCH, "\"v1\"")]), Err(400));
        assert_eq!(pre(&[(header::IF_MATCH, "\"v1\""), (header::IF_NONE_MATCH, "*")]), Err(400));
        assert_eq!(pre(&[(header::IF_MATCH, "\"v1\""), (header::IF_MATCH, "\"v1\"")]), Err(400));
    }

    #[test]
    fn none_match_of_a_get() {
        let m = |v: &str, version| none_match(&headers(&[(header::IF_NONE_MATCH, v)]), version).map_err(|e| e.status.as_u16());
        assert_eq!(none_match(&HeaderMap::new(), 1).ok(), Some(false));
        assert_eq!(m("\"v2\"", 2), Ok(true));
        assert_eq!(m("\"v2\"", 3), Ok(false));
        assert_eq!(m("W/\"v2\"", 2), Ok(true), "weak comparison");
        assert_eq!(m("\"x\", \"v1\",\"v2\"", 1), Ok(true));
        assert_eq!(m("\"other\"", 1), Ok(false));
        assert_eq!(m("*", 7), Ok(true));
        assert_eq!(m("v2", 2), Err(400));
        assert_eq!(m("\"v2", 2), Err(400));
    }

    #[test]
    fn accept() {
        let raw = |v: &str| wants_raw(&headers(&[(header::ACCEPT, v)]));
        assert!(!wants_raw(&HeaderMap::new()));
        assert!(raw("application/octet-stream"));
        assert!(raw("Application/Octet-Stream"));
        assert!(raw("application/octet-stream, */*;q=0.5"));
        assert!(raw("application/octet-stream;q=0.9, */*;q=0.1"));
        assert!(!raw("application/octet-stream;q=0"));
        assert!(!raw("application/json, application/octet-stream;q=0.5"));
        assert!(raw("application/json;q=0.5, application/octet-stream"));
        assert!(!raw("*/*"));
        assert!(!raw("text/html"));
        assert!(!raw("application/json"));
    }

    #[test]
    fn segments() {
        for bad in ["a/b", "a\\b", "..", "a..b", "a\nb", &"x".repeat(129)] {
            assert_eq!(segment("instance", bad, 128).unwrap_err().status.as_u16(), 400, "{bad:?}");
        }
        assert!(segment("instance", "web-1", 128).is_ok());
    }
}
