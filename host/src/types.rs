//! The façade's types. Secret values live in [`SecretValue`]: zeroized on
//! drop, `[REDACTED]` in `Debug`, and skipped by serde (like the seed's
//! `json:"-"`), so they never reach logs or serialized output by accident.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroize;
use serde::{Deserialize, Serialize};

pub use secrets_guest::SecretType;

/// A secret value. Read it with [`SecretValue::expose`].
pub struct SecretValue(SecretBox<[u8]>);

impl SecretValue {
    /// Wraps `bytes`, which are zeroized when the value is dropped.
    pub fn new(mut bytes: Vec<u8>) -> Self {
        // One allocation, the bytes' own: a `Vec` boxed again would cost a
        // second one per value (an `inject` of 100 keys makes 100). A
        // `Vec` with spare capacity is copied rather than shrunk, because
        // shrinking may move the bytes and free the old buffer unzeroized.
        let boxed: Box<[u8]> = if bytes.len() == bytes.capacity() {
            bytes.into_boxed_slice()
        } else {
            let copy = Box::from(bytes.as_slice());
            bytes.zeroize();
            copy
        };
        SecretValue(SecretBox::new(boxed))
    }

    /// The bytes; call it only where the value is meant to go.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The value as text, when it is UTF-8 (env values always are).
    pub fn expose_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(self.expose())
    }

    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for SecretValue {
    fn default() -> Self {
        SecretValue::new(Vec::new())
    }
}

impl Clone for SecretValue {
    fn clone(&self) -> Self {
        SecretValue::new(self.expose().to_vec())
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(v: Vec<u8>) -> Self {
        SecretValue::new(v)
    }
}

impl From<&[u8]> for SecretValue {
    fn from(v: &[u8]) -> Self {
        SecretValue::new(v.to_vec())
    }
}

impl From<&str> for SecretValue {
    fn from(v: &str) -> Self {
        SecretValue::new(v.as_bytes().to_vec())
    }
}

impl From<String> for SecretValue {
    fn from(v: String) -> Self {
        SecretValue::new(v.into_bytes())
    }
}

/// What is known about one version of a secret; never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct SecretMeta {
    /// The instance the secret belongs to.
    pub instance_id: String,
    /// The secret's key (its name in the instance).
    pub key: String,
    /// How the secret reaches the instance.
    #[serde(rename = "type")]
    pub kind: SecretType,
    /// This version's number, from 1.
    #[cfg_attr(feature = "http", schema(minimum = 1))]
    pub version: u32,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Value length in bytes.
    pub size: u32,
    /// tls only: the leaf certificate's not-after, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "http", schema(nullable = false))]
    pub not_after: Option<i64>,
    /// When the version was soft-deleted (unix ms); it reads as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
    /// Whether its value was destroyed for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroyed: bool,
}

/// One version of a secret with its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Secret {
    /// What is known about the version.
    #[serde(flatten)]
    pub meta: SecretMeta,
    /// The value; never serialized.
    #[serde(skip)]
    pub value: SecretValue,
}

/// A request to set a secret.
#[derive(Debug, Clone, Serialize)]
pub struct SetRequest {
    /// The instance the secret belongs to.
    pub instance_id: String,
    /// The secret's key.
    pub key: String,
    /// The new value; never serialized.
    #[serde(skip)]
    pub value: SecretValue,
    /// How the secret reaches the instance (fixed once the key exists).
    #[serde(rename = "type")]
    pub kind: SecretType,
    /// Check-and-set: the version that must be current (0: must not exist).
    pub if_version: Option<u32>,
}

impl SetRequest {
    /// A set of `value` under `key` of `instance_id`, without check-and-set.
    pub fn new(instance_id: &str, key: &str, kind: SecretType, value: impl Into<SecretValue>) -> Self {
        SetRequest {
            instance_id: instance_id.to_owned(),
            key: key.to_owned(),
            value: value.into(),
            kind,
            if_version: None,
        }
    }

    /// Makes the set a check-and-set on `version` (0: must not exist yet).
    pub fn if_version(mut self, version: u32) -> Self {
        self.if_version = Some(version);
        self
    }
}

/// A file that a file, tls or registry secret becomes in the container.
/// A file a container start mounts: from a file, tls or registry secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// Relative to the secrets directory.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// The file's contents; never serialized.
    #[serde(skip)]
    pub contents: SecretValue,
}

#[cfg(test)]
mod tests {
    use super::SecretValue;

    #[test]
    fn a_value_keeps_its_bytes_whatever_the_vec_spared() {
        let exact = b"s3cr3t".to_vec();
        let mut roomy = Vec::with_capacity(64);
        roomy.extend_from_slice(b"s3cr3t");
        for bytes in [exact, roomy, Vec::new()] {
            let expected = bytes.clone();
            let value = SecretValue::new(bytes);
            assert_eq!((value.expose(), value.len()), (expected.as_slice(), expected.len()));
        }
    }
}
