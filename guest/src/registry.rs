//! Validation of `registry` secrets: Docker `config.json` documents holding
//! registry credentials, and merging several of them into one file.
//!
//! Only the `auths` map is accepted: `credsStore` and `credHelpers` would make
//! Docker run a helper program. Error messages may name registries and field
//! names but never usernames, passwords, auth strings or tokens.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

/// Longest registry name accepted, in bytes.
const MAX_REGISTRY_LEN: usize = 255;

/// Fields an `auths` entry may carry.
const ALLOWED_FIELDS: &[&str] = &[
    "auth",
    "username",
    "password",
    "email",
    "identitytoken",
    "registrytoken",
];

/// Validate one Docker config document.
pub fn check(value: &[u8]) -> Result<(), String> {
    parse(value).map(|_| ())
}

/// Merge several validated Docker config documents into one `config.json` (bytes, JSON). Later documents win for a registry present in several. Output: {"auths": {...}} with registries in sorted order.
///
/// Each document is checked again, so invalid input gives an error. An
/// entry is taken whole from the last document naming its registry (fields
/// are not mixed between documents). The output is compact JSON, with the
/// fields of each entry sorted too. At least one document is required.
pub fn merge(documents: &[&[u8]]) -> Result<Vec<u8>, String> {
    if documents.is_empty() {
        return Err("registry merge needs at least one document".to_string());
    }
    let mut auths: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (index, document) in documents.iter().enumerate() {
        let entries =
            parse(document).map_err(|e| format!("registry document {}: {e}", index + 1))?;
        auths.extend(entries);
    }
    let mut out = BTreeMap::new();
    out.insert("auths", auths);
    serde_json::to_vec(&out).map_err(|_| "registry config could not be serialised".to_string())
}

/// A name fit to quote in an error message: escaped, and cut short.
fn quoted(name: &str) -> String {
    const MAX_CHARS: usize = 64;
    if name.chars().count() > MAX_CHARS {
        let head: String = name.chars().take(MAX_CHARS).collect();
        format!("{:?}...", head)
    } else {
        format!("{name:?}")
    }
}

/// Docker `config.json` keys that may be named in messages. Anything else
/// is described, not quoted: a misplaced secret must not reach an error.
const KNOWN_CONFIG_KEYS: &[&str] = &[
    "credsStore", "credHelpers", "proxies", "HttpHeaders", "psFormat", "imagesFormat", "detachKeys",
    "experimental", "stackOrchestrator", "kubernetes", "currentContext", "plugins", "aliases", "features",
];
/// Fields of an `auths` entry that Docker knows but this store does not accept.
const KNOWN_ENTRY_FIELDS: &[&str] = &["serveraddress", "identityToken", "registryToken"];

/// A config key or field, quoted when it is a known Docker name, else
/// described without its text.
fn named(name: &str, known: &[&str]) -> String {
    if known.contains(&name) { format!("{name:?}") } else { "(an unrecognised name, not shown)".to_string() }
}

/// Check a document and return its `auths` entries with all-string fields.
fn parse(value: &[u8]) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let text = core::str::from_utf8(value)
        .map_err(|_| "registry value must be UTF-8 JSON text".to_string())?;
    // serde_json's error messages quote no input, only line and column.
    let document: Value = serde_json::from_str(text)
        .map_err(|e| format!("registry value is not valid JSON ({})", position(&e)))?;
    let Value::Object(top) = document else {
        return Err("registry value must be a JSON object".to_string());
    };
    for key in top.keys() {
        if key != "auths" {
            return Err(format!(
                "registry config key {} is not allowed: only \"auths\" is supported (credential stores and helpers would make Docker run a program)",
                named(key, KNOWN_CONFIG_KEYS)
            ));
        }
    }
    let auths = match top.get("auths") {
        None => return Err("registry config must have an \"auths\" object".to_string()),
        Some(Value::Object(auths)) => auths,
        Some(_) => return Err("registry config \"auths\" must be an object".to_string()),
    };
    if auths.is_empty() {
        return Err("registry config \"auths\" must hold at least one registry".to_string());
    }

    let mut entries = BTreeMap::new();
    for (registry, entry) in auths {
        check_registry_name(registry)?;
        let fields = check_entry(registry, entry)?;
        entries.insert(registry.clone(), fields);
    }
    Ok(entries)
}

fn position(e: &serde_json::Error) -> String {
    format!("line {}, column {}", e.line(), e.column())
}

fn check_registry_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("registry name must not be empty".to_string());
    }
    if name.len() > MAX_REGISTRY_LEN {
        return Err(format!(
            "registry name {} is longer than {MAX_REGISTRY_LEN} bytes",
            quoted(name)
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "registry name {} must not contain whitespace or control characters",
            quoted(name)
        ));
    }
    Ok(())
}

fn check_entry(registry: &str, entry: &Value) -> Result<BTreeMap<String, String>, String> {
    let registry = quoted(registry);
    let Value::Object(object) = entry else {
        return Err(format!("registry {registry}: entry must be a JSON object"));
    };
    let mut fields = BTreeMap::new();
    for (field, value) in object {
        if !ALLOWED_FIELDS.contains(&field.as_str()) {
            return Err(format!(
                "registry {registry}: field {} is not allowed (allowed: {})",
                named(field, KNOWN_ENTRY_FIELDS),
                ALLOWED_FIELDS.join(", ")
            ));
        }
        let Value::String(text) = value else {
            return Err(format!(
                "registry {registry}: field \"{field}\" must be a string"
            ));
        };
        fields.insert(field.clone(), text.clone());
    }

    if let Some(auth) = fields.get("auth") {
        check_auth(auth).map_err(|rule| format!("registry {registry}: \"auth\" {rule}"))?;
        return Ok(fields);
    }
    let present = |name: &str| fields.get(name).is_some_and(|v| !v.is_empty());
    if !present("username") || !present("password") {
        return Err(format!(
            "registry {registry}: entry needs \"auth\" or both \"username\" and \"password\" as non-empty strings"
        ));
    }
    Ok(fields)
}

/// `auth` is standard base64 of `username:password`. Returns the broken rule.
fn check_auth(auth: &str) -> Result<(), &'static str> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| "is not valid standard base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "does not decode to UTF-8 text")?;
    match decoded.split_once(':') {
        None => Err("must encode \"username:password\" but has no ':'"),
        Some(("", _)) => Err("must encode \"username:password\" with a non-empty username"),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    const USER: &str = "octo-user-7f3a";
    const PASS: &str = "s3cr3t-pa55word-9b1c";

    fn auth_doc(registry: &str) -> String {
        format!(
            r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("{USER}:{PASS}"))
        )
    }

    /// Fails unless `check` rejects `doc` with an error containing `needle`
    /// and none of the secret strings.
    fn rejects(doc: &str, needle: &str) -> String {
        let err = check(doc.as_bytes()).expect_err(doc);
        assert!(
            err.contains(needle),
            "error {err:?} should contain {needle:?}"
        );
        let auth = b64(&format!("{USER}:{PASS}"));
        for secret in [USER, PASS, auth.as_str(), "tok-123456"] {
            assert!(!err.contains(secret), "error {err:?} leaks {secret:?}");
        }
        err
    }

    #[test]
    fn auth_form_ok() {
        assert_eq!(check(auth_doc("ghcr.io").as_bytes()), Ok(()));
        // an empty password is allowed, the username is not
        let doc = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("user:")
        );
        assert_eq!(check(doc.as_bytes()), Ok(()));
        // password may itself hold ':'
        let doc = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("user:a:b")
        );
        assert_eq!(check(doc.as_bytes()), Ok(()));
    }

    #[test]
    fn username_password_form_ok() {
        let doc = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"username": "{USER}", "password": "{PASS}", "email": "a@b.c"}}}}}}"#
        );
        assert_eq!(check(doc.as_bytes()), Ok(()));
    }

    #[test]
    fn optional_fields_ok() {
        let doc = format!(
            r#"{{"auths": {{"r.example:5000": {{"auth": "{}", "email": "", "identitytoken": "tok-123456", "registrytoken": "tok-123456", "username": "x", "password": "y"}}}}}}"#,
            b64("u:p")
        );
        assert_eq!(check(doc.as_bytes()), Ok(()));
    }

    #[test]
    fn not_json_rejected() {
        rejects("", "not valid JSON");
        rejects(
            &format!("{{\"auths\": {{\"r\": {{\"auth\": \"{PASS}\""),
            "not valid JSON",
        );
        let err = check(&[0xff, b'{', b'}']).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn non_object_rejected() {
        rejects("[]", "must be a JSON object");
        rejects(&format!("\"{PASS}\""), "must be a JSON object");
    }

    #[test]
    fn other_top_level_keys_rejected() {
        let err = rejects(
            r#"{"auths": {"r.example": {"auth": "dTpw"}}, "credsStore": "desktop"}"#,
            "\"credsStore\"",
        );
        assert!(err.contains("not allowed"), "{err}");
        rejects(
            r#"{"auths": {"r.example": {"auth": "dTpw"}}, "credHelpers": {"r.example": "x"}}"#,
            "\"credHelpers\"",
        );
        rejects(
            r#"{"auths": {"r.example": {"auth": "dTpw"}}, "proxies": {}}"#,
            "\"proxies\"",
        );
    }

    #[test]
    fn auths_required_object_nonempty() {
        rejects("{}", "must have an \"auths\" object");
        rejects(r#"{"auths": []}"#, "\"auths\" must be an object");
        rejects(r#"{"auths": {}}"#, "at least one registry");
    }

    #[test]
    fn registry_names_checked() {
        rejects(r#"{"auths": {"": {"auth": "dTpw"}}}"#, "must not be empty");
        let long = "r".repeat(256);
        let err = rejects(
            &format!(r#"{{"auths": {{"{long}": {{"auth": "dTpw"}}}}}}"#),
            "longer than 255 bytes",
        );
        assert!(err.len() < 200, "long name should be cut short: {err}");
        let ok = "r".repeat(255);
        assert_eq!(
            check(format!(r#"{{"auths": {{"{ok}": {{"auth": "dTpw"}}}}}}"#).as_bytes()),
            Ok(())
        );
        rejects(
            r#"{"auths": {"r example": {"auth": "dTpw"}}}"#,
            "whitespace or control",
        );
        rejects(
            r#"{"auths": {"r\texample": {"auth": "dTpw"}}}"#,
            "whitespace or control",
        );
        rejects(
            r#"{"auths": {"r\u0001example": {"auth": "dTpw"}}}"#,
            "whitespace or control",
        );
    }

    #[test]
    fn entry_must_be_object() {
        rejects(
            &format!(r#"{{"auths": {{"r.example": "{PASS}"}}}}"#),
            "entry must be a JSON object",
        );
    }

    #[test]
    fn unknown_field_rejected() {
        let err = rejects(
            r#"{"auths": {"r.example": {"auth": "dTpw", "serveraddress": "x"}}}"#,
            "\"serveraddress\"",
        );
        assert!(err.contains("\"r.example\""), "{err}");
    }

    #[test]
    fn non_string_field_rejected() {
        rejects(
            r#"{"auths": {"r.example": {"auth": 5}}}"#,
            "\"auth\" must be a string",
        );
        rejects(
            r#"{"auths": {"r.example": {"auth": "dTpw", "email": null}}}"#,
            "\"email\" must be a string",
        );
        rejects(
            &format!(
                r#"{{"auths": {{"r.example": {{"username": ["{USER}"], "password": "{PASS}"}}}}}}"#
            ),
            "\"username\" must be a string",
        );
    }

    #[test]
    fn credentials_required() {
        let needle = "needs \"auth\" or both \"username\" and \"password\"";
        rejects(r#"{"auths": {"r.example": {}}}"#, needle);
        rejects(
            r#"{"auths": {"r.example": {"identitytoken": "tok-123456"}}}"#,
            needle,
        );
        rejects(
            &format!(r#"{{"auths": {{"r.example": {{"username": "{USER}"}}}}}}"#),
            needle,
        );
        rejects(
            &format!(r#"{{"auths": {{"r.example": {{"password": "{PASS}"}}}}}}"#),
            needle,
        );
        rejects(
            &format!(r#"{{"auths": {{"r.example": {{"username": "", "password": "{PASS}"}}}}}}"#),
            needle,
        );
        rejects(
            &format!(r#"{{"auths": {{"r.example": {{"username": "{USER}", "password": ""}}}}}}"#),
            needle,
        );
    }

    #[test]
    fn bad_auth_rejected_even_with_username_password() {
        let with_up = |auth: &str| {
            format!(
                r#"{{"auths": {{"r.example": {{"auth": "{auth}", "username": "{USER}", "password": "{PASS}"}}}}}}"#
            )
        };
        // not base64 / not standard alphabet / missing padding
        rejects(&with_up(&format!("{PASS}!")), "not valid standard base64");
        // URL-safe alphabet ("u:p" followed by 0xfb 0xff)
        rejects(&with_up("dTpw-_8="), "not valid standard base64");
        assert_eq!(
            check(with_up("dTpw+/8=").as_bytes()).unwrap_err(),
            "registry \"r.example\": \"auth\" does not decode to UTF-8 text"
        );
        rejects(
            &with_up(b64(&format!("{USER}:{PASS}")).trim_end_matches('=')),
            "not valid standard base64",
        );
        rejects(&with_up(""), "no ':'");
        // not UTF-8
        let bad = base64::engine::general_purpose::STANDARD.encode([0xff, b':', b'p']);
        rejects(&with_up(&bad), "UTF-8");
        rejects(&with_up(&b64(USER)), "no ':'");
        rejects(&with_up(&b64(&format!(":{PASS}"))), "non-empty username");
    }

    #[test]
    fn merge_later_wins_and_sorted() {
        let first = format!(
            r#"{{"auths": {{"zeta.example": {{"auth": "{}"}}, "ghcr.io": {{"username": "old", "password": "old-pass", "email": "e@x"}}}}}}"#,
            b64("z:1")
        );
        let second = format!(
            r#"{{"auths": {{"ghcr.io": {{"username": "new", "password": "new-pass"}}, "alpha.example": {{"auth": "{}"}}}}}}"#,
            b64("a:2")
        );
        let merged = merge(&[first.as_bytes(), second.as_bytes()]).unwrap();
        let text = String::from_utf8(merged.clone()).unwrap();
        let expected = format!(
            r#"{{"auths":{{"alpha.example":{{"auth":"{}"}},"ghcr.io":{{"password":"new-pass","username":"new"}},"zeta.example":{{"auth":"{}"}}}}}}"#,
            b64("a:2"),
            b64("z:1")
        );
        assert_eq!(text, expected);
        // the result is itself a valid document
        assert_eq!(check(&merged), Ok(()));
        // order of documents decides the winner
        let merged = merge(&[second.as_bytes(), first.as_bytes()]).unwrap();
        let value: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(value["auths"]["ghcr.io"]["username"], "old");
        assert_eq!(value["auths"]["ghcr.io"]["email"], "e@x");
    }

    #[test]
    fn merge_single_and_errors() {
        let doc = auth_doc("ghcr.io");
        let merged = merge(&[doc.as_bytes()]).unwrap();
        assert_eq!(check(&merged), Ok(()));
        assert!(merge(&[]).is_err());
        let err = merge(&[doc.as_bytes(), br#"{"credsStore": "x"}"#]).unwrap_err();
        assert!(err.starts_with("registry document 2:"), "{err}");
    }
}
