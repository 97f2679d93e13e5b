//! The records the logic keeps in the vault beside the values: a key's
//! version history and an instance's index. Both are JSON with a format
//! number, so a later release can migrate them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Error, SecretMeta, SecretType};

/// The format number written into every record.
pub const FORMAT: u32 = 1;

/// What is kept about one version (the value lives under its own vault key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u32,
    pub created_at: u64,
    pub size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

/// A key's history: its type and its retained versions, oldest first. The
/// last one is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub format: u32,
    pub kind: SecretType,
    pub versions: Vec<VersionRecord>,
}

impl KeyRecord {
    pub fn current(&self) -> Result<&VersionRecord, Error> {
        self.versions.last().ok_or_else(|| Error::corrupt("key record has no versions"))
    }

    pub fn find(&self, version: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// Appends `next`, then drops the oldest versions beyond `keep`; returns
    /// the dropped version numbers, whose values the caller deletes.
    pub fn push(&mut self, next: VersionRecord, keep: u32) -> Vec<u32> {
        self.versions.push(next);
        let excess = self.versions.len().saturating_sub(keep.max(1) as usize);
        self.versions.drain(..excess).map(|v| v.version).collect()
    }
}

/// An instance's index: the current version of every key, by key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IndexRecord {
    pub format: u32,
    pub keys: BTreeMap<String, IndexEntry>,
}

/// One key in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub kind: SecretType,
    #[serde(flatten)]
    pub current: VersionRecord,
    /// Set by a delete before it removes the key record: the versions whose
    /// values it deletes. While the record exists the key is still there;
    /// once it is gone, the entry only tells a later write which values are
    /// left to delete (see `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<Vec<u32>>,
}

impl IndexEntry {
    pub fn new(kind: SecretType, current: VersionRecord) -> Self {
        IndexEntry { kind, current, deleting: None }
    }
}

pub fn meta(instance_id: &str, key: &str, kind: SecretType, v: &VersionRecord) -> SecretMeta {
    SecretMeta {
        instance_id: instance_id.to_owned(),
        key: key.to_owned(),
        kind,
        version: v.version,
        created_at: v.created_at,
        size: v.size,
        not_after: v.not_after,
    }
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records are plain data")
}

pub fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("{what} record is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VaultError;

    fn v(n: u32) -> VersionRecord {
        VersionRecord { version: n, created_at: n as u64, size: 1, not_after: None }
    }

    #[test]
    fn push_prunes_oldest_beyond_keep() {
        let mut r = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![] };
        assert!(r.push(v(1), 2).is_empty());
        assert!(r.push(v(2), 2).is_empty());
        assert_eq!(r.push(v(3), 2), vec![1]);
        assert_eq!(r.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r.current().unwrap().version, 3);
        assert!(r.find(1).is_none());
    }

    #[test]
    fn records_round_trip() {
        let mut idx = IndexRecord { format: FORMAT, ..Default::default() };
        idx.keys.insert("A".into(), IndexEntry::new(SecretType::Tls, VersionRecord { not_after: Some(5), ..v(2) }));
        let back: IndexRecord = decode("index", &encode(&idx)).unwrap();
        assert_eq!(back, idx);
        assert!(!String::from_utf8(encode(&idx)).unwrap().contains("deleting"), "no mark, no field");
        idx.keys.insert("B".into(), IndexEntry { deleting: Some(vec![1, 2]), ..IndexEntry::new(SecretType::Env, v(2)) });
        let back: IndexRecord = decode("index", &encode(&idx)).unwrap();
        assert_eq!(back, idx);
        assert!(matches!(decode::<IndexRecord>("index", b"{"), Err(Error::Vault(VaultError::Corrupt(_)))));
    }
}
