//! The records the logic keeps in the vault beside the values: a key's
//! version history and an instance's index. Both are JSON with a format
//! number, so a later release can migrate them.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Soft-deleted at (unix ms): the value is kept but reads as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
    /// The value was removed for good.
    #[serde(default, skip_serializing_if = "is_false")]
    pub destroyed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl VersionRecord {
    /// A live version, set at `created_at`.
    pub fn new(version: u32, created_at: u64, size: u32, not_after: Option<i64>) -> Self {
        VersionRecord { version, created_at, size, not_after, deleted_at: None, destroyed: false }
    }

    /// Whether its value may be read: neither deleted nor destroyed.
    pub fn readable(&self) -> bool {
        self.deleted_at.is_none() && !self.destroyed
    }
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

    pub fn find_mut(&mut self, version: u32) -> Option<&mut VersionRecord> {
        self.versions.iter_mut().find(|v| v.version == version)
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

/// The tenant's instances that hold keys (written when an instance gains
/// its first key or loses its last one, and by any set of an instance it
/// does not list yet).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstancesRecord {
    pub format: u32,
    pub instances: BTreeSet<String>,
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
        deleted_at: v.deleted_at,
        destroyed: v.destroyed,
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
        VersionRecord::new(n, n as u64, 1, None)
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

    #[test]
    fn lifecycle_fields_are_written_only_when_set_and_old_records_read() {
        let live = v(1);
        assert_eq!(String::from_utf8(encode(&live)).unwrap(), r#"{"version":1,"created_at":1,"size":1}"#);
        let gone = VersionRecord { deleted_at: Some(7), destroyed: true, ..v(1) };
        let back: VersionRecord = decode("key", &encode(&gone)).unwrap();
        assert_eq!(back, gone);
        assert!(!back.readable() && v(1).readable());
        // A record written before the lifecycle existed reads as live.
        let old: KeyRecord =
            decode("key", br#"{"format":1,"kind":"env","versions":[{"version":1,"created_at":5,"size":3}]}"#).unwrap();
        assert!(old.current().unwrap().readable());
    }
}
