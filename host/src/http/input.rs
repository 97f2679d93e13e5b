//! Everything a request brings, checked before any call of [`Secrets`]:
//! path segments, query parameters and the body of a set.
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

use super::errors::ApiError;
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
#[derive(Debug)]
pub struct InstancePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = raw_params(parts, state).await?;
        Ok(InstancePath(instance_of(&params)?))
    }
}

/// The `{instance}` and `{key}` of the path, checked.
#[derive(Debug)]
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
        Ok(KeyPath { instance, key: key.to_owned() })
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

const TYPES: &str = "env, file, registry or tls";

/// Parses a set's body. Every problem is reported (one message each,
/// naming the field); none repeats a value.
pub fn set_body(headers: &HeaderMap, body: &[u8], max_value_bytes: usize) -> Result<SetBody, ApiError> {
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
    let serde_json::Value::Object(mut fields) = parsed else {
        return Err(ApiError::invalid(vec!["body: must be a JSON object".into()]));
    };
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

    #[test]
    fn segments() {
        for bad in ["a/b", "a\\b", "..", "a..b", "a\nb", &"x".repeat(129)] {
            assert_eq!(segment("instance", bad, 128).unwrap_err().status.as_u16(), 400, "{bad:?}");
        }
        assert!(segment("instance", "web-1", 128).is_ok());
    }
}
