//! Validation of everything a caller sends, before anything is stored.
//!
//! Each rejection is an [`Error::InvalidArgument`] or [`Error::LimitExceeded`]
//! that names the field and the rule, and never quotes a secret value.

use crate::limits::Limits;
use crate::model::{Error, SecretType};
use crate::{registry, tls};

/// Longest instance id, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = 128;
/// Longest key, in bytes (a file name's limit on common file systems).
pub const MAX_KEY_BYTES: usize = 255;

/// The character rule shared by instance ids and keys, for messages.
pub const NAME_RULE: &str = "letters, digits, '_', '-' and '.', starting with a letter, digit or '_', without '..'";
/// The rule for env keys, for messages.
pub const ENV_RULE: &str = "[A-Za-z_][A-Za-z0-9_]*";

fn check_name(field: &str, name: &str, max: usize) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} must not be empty")));
    }
    if name.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{field} is {} bytes long; the limit is {max}",
            name.len()
        )));
    }
    let first = name.as_bytes()[0];
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !ok_chars || !(first.is_ascii_alphanumeric() || first == b'_') || name.contains("..") {
        return Err(Error::InvalidArgument(format!("{field} {name:?} is not allowed ({NAME_RULE})")));
    }
    Ok(())
}

/// Instance ids: 1..=128 bytes of [`NAME_RULE`].
pub fn instance_id(id: &str) -> Result<(), Error> {
    check_name("instance id", id, MAX_INSTANCE_ID_BYTES)
}

/// Keys of any type: 1..=255 bytes of [`NAME_RULE`], so every key is usable
/// as a file name and none is `.`, `..` or hidden.
pub fn key(key: &str) -> Result<(), Error> {
    check_name("key", key, MAX_KEY_BYTES)
}

/// Keys of env secrets must also be environment variable names.
pub fn env_name(key: &str) -> Result<(), Error> {
    let b = key.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "key {key:?} is not a valid environment variable name (env keys match {ENV_RULE})"
        )))
    }
}

/// What validating a value learned (stored in the metadata).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ValueFacts {
    pub not_after: Option<i64>,
}

/// Checks a key and value for a secret of type `kind` under `limits`.
pub fn secret(kind: SecretType, key_name: &str, value: &[u8], limits: &Limits) -> Result<ValueFacts, Error> {
    key(key_name)?;
    if value.len() > limits.max_value_bytes as usize {
        return Err(Error::LimitExceeded(format!(
            "value is {} bytes; max-value-bytes is {}",
            value.len(),
            limits.max_value_bytes
        )));
    }
    match kind {
        SecretType::Env => {
            env_name(key_name)?;
            let text = core::str::from_utf8(value)
                .map_err(|_| Error::InvalidArgument("env value must be valid UTF-8".into()))?;
            if text.contains('\0') {
                return Err(Error::InvalidArgument("env value must not contain NUL".into()));
            }
            Ok(ValueFacts::default())
        }
        SecretType::File => Ok(ValueFacts::default()),
        SecretType::Registry => {
            registry::check(value).map_err(Error::InvalidArgument)?;
            Ok(ValueFacts::default())
        }
        SecretType::Tls => {
            let info = tls::check(value).map_err(Error::InvalidArgument)?;
            Ok(ValueFacts { not_after: Some(info.not_after) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(r: Result<(), Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    #[test]
    fn names_accept_the_documented_set() {
        for ok in ["a", "web-1", "db.primary", "_x", "A_B-9.c", &"x".repeat(128)] {
            instance_id(ok).unwrap();
        }
        key(&"k".repeat(255)).unwrap();
    }

    #[test]
    fn names_reject_everything_else() {
        assert!(invalid(instance_id("")).contains("must not be empty"));
        assert!(invalid(instance_id(&"x".repeat(129))).contains("limit is 128"));
        assert!(invalid(key(&"x".repeat(256))).contains("limit is 255"));
        for bad in ["a/b", "..", ".", "a..b", ".hidden", "-x", "a\0b", "a\nb", "a b", "é", "a\\b"] {
            let m = invalid(key(bad));
            assert!(m.contains("not allowed"), "{bad:?}: {m}");
        }
    }

    #[test]
    fn env_names() {
        env_name("DATABASE_URL").unwrap();
        env_name("_x1").unwrap();
        for bad in ["1BAD", "A-B", "A.B", ""] {
            assert!(invalid(env_name(bad)).contains("environment variable name"));
        }
    }

    #[test]
    fn env_values_and_size_limit() {
        let limits = Limits::default();
        secret(SecretType::Env, "A", b"postgres://u:p@h/db", &limits).unwrap();
        secret(SecretType::Env, "A", b"", &limits).unwrap();
        assert!(matches!(secret(SecretType::Env, "A", b"\xff", &limits), Err(Error::InvalidArgument(m)) if m.contains("UTF-8")));
        assert!(matches!(secret(SecretType::Env, "A", b"a\0b", &limits), Err(Error::InvalidArgument(m)) if m.contains("NUL")));
        let at = vec![b'x'; 65536];
        secret(SecretType::File, "f", &at, &limits).unwrap();
        let over = vec![b'x'; 65537];
        assert!(matches!(secret(SecretType::File, "f", &over, &limits), Err(Error::LimitExceeded(m)) if m.contains("max-value-bytes is 65536")));
        let small = Limits { max_value_bytes: 10, ..limits };
        assert!(matches!(secret(SecretType::File, "f", &[0; 11], &small), Err(Error::LimitExceeded(_))));
    }

    #[test]
    fn file_values_are_any_bytes() {
        secret(SecretType::File, "blob.bin", &[0, 255, 10, 13], &Limits::default()).unwrap();
    }
}
