//! The output formats of `inject`, each read back byte-exact by its reader.

use std::collections::BTreeMap;

use secrets_host::SecretValue;

/// `NAME="value"` lines, as `. file` reads them back: see
/// [`secrets_host::env_format::dotenv`].
pub use secrets_host::env_format::dotenv;

/// `export NAME='value'`: single quotes keep every byte literal; a quote
/// inside is written `'\''`. Safe to `eval`.
pub fn shell(env: &BTreeMap<String, SecretValue>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in env {
        out.extend_from_slice(b"export ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        for &b in value.expose() {
            if b == b'\'' {
                out.extend_from_slice(b"'\\''");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"'\n");
    }
    out
}

/// `{"NAME": "value", ...}` with names sorted.
pub fn json(env: &BTreeMap<String, SecretValue>) -> Vec<u8> {
    let map: BTreeMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.expose_str().expect("env values are UTF-8"))).collect();
    let mut out = serde_json::to_vec_pretty(&map).expect("strings serialize");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> BTreeMap<String, SecretValue> {
        BTreeMap::from([("K".to_string(), SecretValue::from(v))])
    }

    #[test]
    fn escapes() {
        assert_eq!(dotenv(&env(r#"a"b$c`d\e"#)), b"K=\"a\\\"b\\$c\\`d\\\\e\"\n");
        assert_eq!(shell(&env("it's")), b"export K='it'\\''s'\n");
        assert_eq!(json(&env("x")), b"{\n  \"K\": \"x\"\n}\n");
    }
}
