//! The records the logic keeps in the vault beside the values: a key's
//! version history, an instance's index and the tenant's instances.
//!
//! Written as format 3: the byte `0x03`, then the record in postcard (a
//! compact binary serde format: varints, no field names) through the
//! `Wire*` structs below, whose field order is the format, then the
//! record's **inline values**. Reading one is several times cheaper than
//! JSON; the hot calls go further and read or change the stored bytes in
//! place (`stored_key`, `stored_index`), which holds them to exactly this
//! encoding.
//!
//! Inline values save reads: a key record carries the value of its current
//! version and an index entry the value of its key's current version, so
//! `get` is one vault read and `inject`/`mounts` one read of the index
//! (each value is still stored under its own vault key too, for the
//! version history and for readers of older records). A record carries
//! them only while it stays within [`INLINE_CEILING`] bytes: entries in
//! key order, each value that still fits, so a large instance's index
//! is as small as it would be without them, plus one byte (the cloud
//! stores hold at most 64 KiB per entry). A reader uses an inline value only when it is
//! tagged with the version the record calls current, and reads the value's
//! own entry otherwise.
//!
//! Format 2 (the same bytes without inline values, tag `0x02`) and format
//! 1 (JSON, which always starts with `{`) are still read, so stores written
//! before keep working; a record moves to format 3 when it is next written.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{Error, SecretMeta, SecretType};

/// The format records are written in.
pub const FORMAT: u32 = 3;
/// The first byte of a format-3 record (a JSON record starts with `{`).
pub(crate) const BINARY_TAG: u8 = 3;
/// The first byte of a format-2 record: format 3 without inline values.
const BINARY_TAG_2: u8 = 2;
/// Largest record that carries inline values: half of what a cloud store
/// holds per entry, so inlining never makes a record too large to store.
pub const INLINE_CEILING: usize = 32 * 1024;

/// The value of a record's current version, kept in the record (see the
/// module documentation). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Inline {
    pub version: u32,
    pub value: Vec<u8>,
}

impl core::fmt::Debug for Inline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Inline {{ version: {}, value: <{} bytes redacted> }}", self.version, self.value.len())
    }
}

impl Inline {
    /// The value when it is `version`'s.
    pub fn of(inline: &Option<Inline>, version: u32) -> Option<&[u8]> {
        inline.as_ref().filter(|i| i.version == version).map(|i| i.value.as_slice())
    }
}

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
    /// The current version's value, when the record carries it.
    #[serde(skip)]
    pub value: Option<Inline>,
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
    /// The current version's value, when the index carries it.
    #[serde(skip)]
    pub value: Option<Inline>,
}

impl IndexEntry {
    pub fn new(kind: SecretType, current: VersionRecord) -> Self {
        IndexEntry { kind, current, deleting: None, value: None }
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

/// A record kept in the vault: its binary body ([`Record::Wire`], the
/// same in formats 2 and 3), its inline values (format 3), and its format-1
/// (JSON) form through serde.
pub trait Record: Sized + serde::de::DeserializeOwned {
    /// The body as read.
    type Wire: serde::de::DeserializeOwned;
    /// The body as written: the same bytes as [`Record::Wire`], borrowing
    /// from the record instead of copying it.
    type WireOut<'a>: Serialize
    where
        Self: 'a;
    fn to_wire(&self) -> Self::WireOut<'_>;
    fn from_wire(wire: Self::Wire) -> Result<Self, &'static str>;
    /// The inline values that may be written, by position, in the order
    /// they are offered room.
    fn inline_values(&self) -> Vec<(u32, &Inline)> {
        Vec::new()
    }
    /// Puts back the inline values read, by position (increasing).
    fn attach_inline(&mut self, inline: Vec<(u32, Inline)>) -> Result<(), &'static str> {
        if inline.is_empty() { Ok(()) } else { Err("inline values in a record that holds none") }
    }
}

/// An inline value as written (borrowed).
#[derive(Serialize)]
pub(crate) struct WireInlineOut<'a> {
    pub(crate) position: u32,
    pub(crate) version: u32,
    #[serde(with = "serde_bytes")]
    pub(crate) value: &'a [u8],
}

/// An inline value as read.
#[derive(Deserialize)]
struct WireInlineIn {
    position: u32,
    version: u32,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

/// Bytes an inline value may take beyond its own: its position, version
/// and length as varints.
pub(crate) const INLINE_OVERHEAD: usize = 15;

/// The record in format 3.
pub fn encode<T: Record>(record: &T) -> Vec<u8> {
    let out = postcard::to_extend(&record.to_wire(), vec![BINARY_TAG]).expect("records are plain data");
    let offered = record.inline_values().into_iter().map(|(position, i)| (position, i.version, i.value.as_slice()));
    let chosen: Vec<WireInlineOut> = fitting_inline(out.len(), offered)
        .into_iter()
        .map(|(position, version, value)| WireInlineOut { position, version, value })
        .collect();
    postcard::to_extend(&chosen, out).expect("records are plain data")
}

/// The inline values (position, version, value) a record whose body takes
/// `body_len` bytes carries: each one offered, in the order offered, that
/// still fits under [`INLINE_CEILING`]. The one rule for `encode` and for
/// `stored_index::upsert`, which must write the same bytes.
pub(crate) fn fitting_inline<'a>(
    body_len: usize,
    offered: impl IntoIterator<Item = (u32, u32, &'a [u8])>,
) -> Vec<(u32, u32, &'a [u8])> {
    // Room for the section's own length (a varint of at most 5 bytes).
    let mut room = INLINE_CEILING.saturating_sub(body_len + 5);
    let mut chosen = Vec::new();
    for (position, version, value) in offered {
        let size = value.len() + INLINE_OVERHEAD;
        if size <= room {
            room -= size;
            chosen.push((position, version, value));
        }
    }
    chosen
}

/// A record in format 3, 2 or 1.
pub fn decode<T: Record>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    let unreadable = |e: &dyn core::fmt::Display| Error::corrupt(format!("{what} record is unreadable: {e}"));
    let body = |rest| -> Result<(T, &[u8]), Error> {
        let (wire, left) = postcard::take_from_bytes::<T::Wire>(rest).map_err(|e| unreadable(&e))?;
        Ok((T::from_wire(wire).map_err(|e| unreadable(&e))?, left))
    };
    let (record, left) = match bytes.split_first() {
        Some((&BINARY_TAG, rest)) => {
            let (mut record, left) = body(rest)?;
            let (inline, left) = postcard::take_from_bytes::<Vec<WireInlineIn>>(left).map_err(|e| unreadable(&e))?;
            if inline.windows(2).any(|w| w[0].position >= w[1].position) {
                return Err(unreadable(&"inline values out of order"));
            }
            let inline = inline.into_iter().map(|i| (i.position, Inline { version: i.version, value: i.value })).collect();
            record.attach_inline(inline).map_err(|e| unreadable(&e))?;
            (record, left)
        }
        Some((&BINARY_TAG_2, rest)) => body(rest)?,
        Some((b'{', _)) => return serde_json::from_slice(bytes).map_err(|e| unreadable(&e)),
        _ => return Err(unreadable(&"neither format 3, 2 nor JSON")),
    };
    if !left.is_empty() {
        return Err(unreadable(&"bytes after its end"));
    }
    Ok(record)
}

pub(crate) fn kind_code(kind: SecretType) -> u8 {
    match kind {
        SecretType::Env => 0,
        SecretType::File => 1,
        SecretType::Registry => 2,
        SecretType::Tls => 3,
    }
}

pub(crate) fn kind_of(code: u8) -> Result<SecretType, &'static str> {
    Ok(match code {
        0 => SecretType::Env,
        1 => SecretType::File,
        2 => SecretType::Registry,
        3 => SecretType::Tls,
        _ => return Err("unknown secret type"),
    })
}

/// A version in formats 2 and 3 (field order is the format).
#[derive(Serialize, Deserialize)]
pub struct WireVersion {
    version: u32,
    created_at: u64,
    size: u32,
    not_after: Option<i64>,
    deleted_at: Option<u64>,
    destroyed: bool,
}

impl From<&VersionRecord> for WireVersion {
    fn from(v: &VersionRecord) -> Self {
        WireVersion {
            version: v.version,
            created_at: v.created_at,
            size: v.size,
            not_after: v.not_after,
            deleted_at: v.deleted_at,
            destroyed: v.destroyed,
        }
    }
}

impl From<WireVersion> for VersionRecord {
    fn from(w: WireVersion) -> Self {
        VersionRecord {
            version: w.version,
            created_at: w.created_at,
            size: w.size,
            not_after: w.not_after,
            deleted_at: w.deleted_at,
            destroyed: w.destroyed,
        }
    }
}

/// A key record's body in formats 2 and 3.
#[derive(Serialize, Deserialize)]
pub struct WireKey {
    kind: u8,
    versions: Vec<WireVersion>,
}

impl Record for KeyRecord {
    type Wire = WireKey;
    type WireOut<'a> = WireKey;
    fn to_wire(&self) -> WireKey {
        WireKey { kind: kind_code(self.kind), versions: self.versions.iter().map(WireVersion::from).collect() }
    }
    fn from_wire(w: WireKey) -> Result<Self, &'static str> {
        Ok(KeyRecord {
            format: FORMAT,
            kind: kind_of(w.kind)?,
            versions: w.versions.into_iter().map(Into::into).collect(),
            value: None,
        })
    }
    fn inline_values(&self) -> Vec<(u32, &Inline)> {
        self.value.iter().map(|v| (0, v)).collect()
    }
    fn attach_inline(&mut self, inline: Vec<(u32, Inline)>) -> Result<(), &'static str> {
        let mut inline = inline.into_iter();
        match (inline.next(), inline.next()) {
            (None, _) => {}
            (Some((0, value)), None) => self.value = Some(value),
            _ => return Err("an inline value at a position a key record does not have"),
        }
        Ok(())
    }
}

/// An index entry in formats 2 and 3.
#[derive(Deserialize)]
pub struct WireEntry {
    key: String,
    kind: u8,
    current: WireVersion,
    deleting: Option<Vec<u32>>,
}

/// [`WireEntry`] as written, borrowed from the index.
#[derive(Serialize)]
pub struct WireEntryOut<'a> {
    pub(crate) key: &'a str,
    pub(crate) kind: u8,
    pub(crate) current: WireVersion,
    pub(crate) deleting: Option<&'a [u32]>,
}

/// An index's body in formats 2 and 3: its entries in key order.
#[derive(Deserialize)]
pub struct WireIndex {
    keys: Vec<WireEntry>,
}

/// [`WireIndex`] as written.
#[derive(Serialize)]
pub struct WireIndexOut<'a> {
    keys: Vec<WireEntryOut<'a>>,
}

impl Record for IndexRecord {
    type Wire = WireIndex;
    type WireOut<'a> = WireIndexOut<'a>;
    fn to_wire(&self) -> WireIndexOut<'_> {
        let keys = self
            .keys
            .iter()
            .map(|(key, e)| WireEntryOut {
                key,
                kind: kind_code(e.kind),
                current: (&e.current).into(),
                deleting: e.deleting.as_deref(),
            })
            .collect();
        WireIndexOut { keys }
    }
    fn from_wire(w: WireIndex) -> Result<Self, &'static str> {
        // Written in key order: checking that order (which also refuses a
        // key twice) lets the map be built in one pass, without a search
        // per entry.
        if w.keys.windows(2).any(|pair| pair[0].key >= pair[1].key) {
            return Err("index entries out of order, or a key twice in the index");
        }
        let keys = w
            .keys
            .into_iter()
            .map(|e| {
                let entry = IndexEntry { kind: kind_of(e.kind)?, current: e.current.into(), deleting: e.deleting, value: None };
                Ok((e.key, entry))
            })
            .collect::<Result<BTreeMap<_, _>, &'static str>>()?;
        Ok(IndexRecord { format: FORMAT, keys })
    }
    fn inline_values(&self) -> Vec<(u32, &Inline)> {
        self.keys.values().enumerate().filter_map(|(i, e)| Some((i as u32, e.value.as_ref()?))).collect()
    }
    fn attach_inline(&mut self, inline: Vec<(u32, Inline)>) -> Result<(), &'static str> {
        let mut entries = self.keys.values_mut().enumerate();
        for (position, value) in inline {
            let (_, entry) = entries
                .find(|(i, _)| *i as u32 == position)
                .ok_or("an inline value past the last entry")?;
            entry.value = Some(value);
        }
        Ok(())
    }
}

/// The tenant's instances in formats 2 and 3.
#[derive(Deserialize)]
pub struct WireInstances {
    instances: Vec<String>,
}

/// [`WireInstances`] as written.
#[derive(Serialize)]
pub struct WireInstancesOut<'a> {
    instances: Vec<&'a str>,
}

impl Record for InstancesRecord {
    type Wire = WireInstances;
    type WireOut<'a> = WireInstancesOut<'a>;
    fn to_wire(&self) -> WireInstancesOut<'_> {
        WireInstancesOut { instances: self.instances.iter().map(String::as_str).collect() }
    }
    fn from_wire(w: WireInstances) -> Result<Self, &'static str> {
        let n = w.instances.len();
        let instances: BTreeSet<String> = w.instances.into_iter().collect();
        if instances.len() != n {
            return Err("an instance twice in the list");
        }
        Ok(InstancesRecord { format: FORMAT, instances })
    }
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
        let mut r = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![], value: None };
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
        idx.keys.insert("B".into(), IndexEntry { deleting: Some(vec![1, 2]), ..IndexEntry::new(SecretType::Env, v(2)) });
        let back: IndexRecord = decode("index", &encode(&idx)).unwrap();
        assert_eq!(back, idx);
        let gone = VersionRecord { deleted_at: Some(7), destroyed: true, ..v(1) };
        let key = KeyRecord { format: FORMAT, kind: SecretType::File, versions: vec![v(1), gone, v(3)], value: None };
        assert_eq!(decode::<KeyRecord>("key", &encode(&key)).unwrap(), key);
        let instances = InstancesRecord { format: FORMAT, instances: ["a".into(), "b".into()].into() };
        assert_eq!(decode::<InstancesRecord>("instances", &encode(&instances)).unwrap(), instances);
        assert!(matches!(decode::<IndexRecord>("index", b"{"), Err(Error::Vault(VaultError::Corrupt(_)))));
    }

    #[test]
    fn format_3_is_small_and_refuses_what_is_not_one() {
        let key = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: (1..=100).map(v).collect(), value: None };
        let bytes = encode(&key);
        assert_eq!(bytes[0], BINARY_TAG);
        assert!(bytes.len() < 100 * 10, "{} bytes for 100 versions", bytes.len());
        // Truncated, extended, an unknown type, an empty or foreign record:
        // each one an error, never a panic or a wrong record.
        let mut refused = vec![bytes[..bytes.len() - 1].to_vec(), [&bytes[..], &[0]].concat(), vec![], vec![9, 0]];
        let mut bad_kind = bytes.clone();
        bad_kind[1] = 7;
        refused.push(bad_kind);
        for bytes in refused {
            assert!(matches!(decode::<KeyRecord>("key", &bytes), Err(Error::Vault(VaultError::Corrupt(_)))), "{bytes:?}");
        }
        // An index holding one key twice (the entry repeated under a count
        // of two) is refused too, not merged.
        let one = IndexRecord { format: FORMAT, keys: [("A".to_owned(), IndexEntry::new(SecretType::Env, v(1)))].into() };
        let mut twice = encode(&one);
        assert_eq!(twice[1], 1, "the entry count");
        assert_eq!(twice.pop(), Some(0), "no inline values");
        let entry = twice[2..].to_vec();
        twice[1] = 2;
        twice.extend(entry);
        twice.push(0);
        let err = decode::<IndexRecord>("index", &twice).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    fn inline(version: u32, len: usize) -> Option<Inline> {
        Some(Inline { version, value: vec![b'x'; len] })
    }

    #[test]
    fn inline_values_round_trip_and_never_print() {
        let key = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![v(1), v(2)], value: inline(2, 5) };
        assert_eq!(decode::<KeyRecord>("key", &encode(&key)).unwrap(), key);
        let mut index = IndexRecord { format: FORMAT, ..Default::default() };
        index.keys.insert("A".into(), IndexEntry { value: inline(2, 3), ..IndexEntry::new(SecretType::Env, v(2)) });
        index.keys.insert("B".into(), IndexEntry::new(SecretType::File, v(1)));
        index.keys.insert("C".into(), IndexEntry { value: inline(1, 0), ..IndexEntry::new(SecretType::Tls, v(1)) });
        assert_eq!(decode::<IndexRecord>("index", &encode(&index)).unwrap(), index);
        // A value is used only as the version it was stored for.
        assert_eq!(Inline::of(&key.value, 2), Some(&b"xxxxx"[..]));
        assert_eq!(Inline::of(&key.value, 1), None);
        let printed = format!("{key:?} {index:?}");
        assert!(!printed.contains("xxx") && printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn inline_values_stay_within_the_ceiling_in_key_order() {
        // 100 values of 1 KiB: those that fit, first come first served.
        let mut index = IndexRecord { format: FORMAT, ..Default::default() };
        for k in 0..100u32 {
            index.keys.insert(format!("K{k:03}"), IndexEntry { value: inline(1, 1024), ..IndexEntry::new(SecretType::Env, v(1)) });
        }
        let bytes = encode(&index);
        assert!(bytes.len() <= INLINE_CEILING, "{} bytes", bytes.len());
        let back: IndexRecord = decode("index", &bytes).unwrap();
        let kept: Vec<bool> = back.keys.values().map(|e| e.value.is_some()).collect();
        let n = kept.iter().filter(|k| **k).count();
        assert!((25..32).contains(&n), "{n} inline values kept");
        assert!(kept[..n].iter().all(|k| *k) && !kept[n..].iter().any(|k| *k), "{kept:?}");
        // An index already past the ceiling without them carries none: it
        // is as large as it would be without inline values, plus one byte.
        let mut big = IndexRecord { format: FORMAT, ..Default::default() };
        for k in 0..200u32 {
            let name = format!("{k:03}{}", "n".repeat(200));
            big.keys.insert(name, IndexEntry { value: inline(1, 1), ..IndexEntry::new(SecretType::Env, v(1)) });
        }
        let bytes = encode(&big);
        assert!(bytes.len() > INLINE_CEILING);
        let bare = IndexRecord { keys: big.keys.iter().map(|(k, e)| (k.clone(), IndexEntry { value: None, ..e.clone() })).collect(), ..big };
        assert_eq!(bytes, encode(&bare));
        // A key record whose value does not fit keeps its history only.
        let key = KeyRecord { format: FORMAT, kind: SecretType::File, versions: vec![v(1)], value: inline(1, INLINE_CEILING) };
        assert_eq!(decode::<KeyRecord>("key", &encode(&key)).unwrap().value, None);
    }

    #[test]
    fn format_2_records_are_still_read_without_inline_values() {
        // Format 2 is format 3's body under tag 2, with no inline section.
        let key = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![v(1), v(4)], value: None };
        let old = postcard::to_extend(&key.to_wire(), vec![BINARY_TAG_2]).unwrap();
        assert_eq!(decode::<KeyRecord>("key", &old).unwrap(), key);
        let mut index = IndexRecord { format: FORMAT, ..Default::default() };
        index.keys.insert("A".into(), IndexEntry { deleting: Some(vec![3]), ..IndexEntry::new(SecretType::Env, v(3)) });
        let old = postcard::to_extend(&index.to_wire(), vec![BINARY_TAG_2]).unwrap();
        assert_eq!(decode::<IndexRecord>("index", &old).unwrap(), index);
        // Format 2 bytes followed by anything are refused.
        assert!(decode::<IndexRecord>("index", &[&old[..], &[0]].concat()).is_err());
    }

    #[test]
    fn inline_sections_that_do_not_fit_the_record_are_corrupt() {
        let mut index = IndexRecord { format: FORMAT, ..Default::default() };
        index.keys.insert("A".into(), IndexEntry::new(SecretType::Env, v(1)));
        let body = postcard::to_extend(&index.to_wire(), vec![BINARY_TAG]).unwrap();
        let with = |inline: &[(u32, u32)]| {
            let section: Vec<WireInlineOut> =
                inline.iter().map(|(position, version)| WireInlineOut { position: *position, version: *version, value: b"v" }).collect();
            postcard::to_extend(&section, body.clone()).unwrap()
        };
        assert!(decode::<IndexRecord>("index", &with(&[(0, 1)])).unwrap().keys["A"].value.is_some());
        for bad in [&[(1, 1)][..], &[(0, 1), (0, 1)], &[(0, 1), (1, 1)]] {
            let err = decode::<IndexRecord>("index", &with(bad)).unwrap_err();
            assert!(matches!(err, Error::Vault(VaultError::Corrupt(_))), "{bad:?}: {err}");
        }
        let key = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![v(1)], value: None };
        let body = postcard::to_extend(&key.to_wire(), vec![BINARY_TAG]).unwrap();
        let section = [WireInlineOut { position: 1, version: 1, value: b"v" }];
        assert!(decode::<KeyRecord>("key", &postcard::to_extend(&section[..], body).unwrap()).is_err());
        let instances = InstancesRecord { format: FORMAT, instances: ["a".into()].into() };
        let body = postcard::to_extend(&instances.to_wire(), vec![BINARY_TAG]).unwrap();
        let section = [WireInlineOut { position: 0, version: 1, value: b"v" }];
        assert!(decode::<InstancesRecord>("instances", &postcard::to_extend(&section[..], body).unwrap()).is_err());
    }

    #[test]
    fn format_1_json_records_are_still_read() {
        // Records as releases up to format 1 wrote them, lifecycle fields
        // absent (read as live) or present.
        let old: KeyRecord =
            decode("key", br#"{"format":1,"kind":"env","versions":[{"version":1,"created_at":5,"size":3}]}"#).unwrap();
        assert!(old.current().unwrap().readable());
        assert_eq!(old.versions, vec![VersionRecord::new(1, 5, 3, None)]);
        let gone: KeyRecord = decode(
            "key",
            br#"{"format":1,"kind":"tls","versions":[{"version":2,"created_at":5,"size":3,"not_after":9,"deleted_at":7,"destroyed":true}]}"#,
        )
        .unwrap();
        assert_eq!(gone.kind, SecretType::Tls);
        assert_eq!(gone.versions[0], VersionRecord { deleted_at: Some(7), destroyed: true, ..VersionRecord::new(2, 5, 3, Some(9)) });
        let index: IndexRecord = decode(
            "index",
            br#"{"format":1,"keys":{"A":{"kind":"file","version":3,"created_at":1,"size":2,"deleting":[1,2]}}}"#,
        )
        .unwrap();
        assert_eq!(index.keys["A"], IndexEntry { deleting: Some(vec![1, 2]), ..IndexEntry::new(SecretType::File, VersionRecord::new(3, 1, 2, None)) });
        let instances: InstancesRecord = decode("instances", br#"{"format":1,"instances":["web"]}"#).unwrap();
        assert_eq!(instances.instances.len(), 1);
        // Written again, each is format 3 and reads back the same.
        assert_eq!(decode::<KeyRecord>("key", &encode(&gone)).unwrap().versions, gone.versions);
        assert_eq!(decode::<IndexRecord>("index", &encode(&index)).unwrap().keys, index.keys);
    }
}
