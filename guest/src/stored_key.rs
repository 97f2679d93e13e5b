//! The current version of a key record as stored, read without decoding
//! the history before it.
//!
//! `get` needs the key's type, its current version and the value the
//! record carries, but decoding the record materializes every retained
//! version (up to max-versions-per-key of them), so a key with a long
//! history read slower. [`current`] steps over the older versions in
//! place, checking each as decoding would. It reads exactly what decoding
//! reads (property and fuzz tests check that) and declines, returning
//! `None`, a record in an older format or one postcard would refuse; the
//! caller then decodes, which also reports corrupt records.

use crate::model::SecretType;
use crate::records::{self, BINARY_TAG, VersionRecord};
use crate::stored_index::{Cursor, version_record};

/// A key record's type, current version and, when the record carries it
/// for that version, the current value.
pub struct Current<'a> {
    pub kind: SecretType,
    pub version: VersionRecord,
    pub value: Option<&'a [u8]>,
}

/// The current version of the format-3 key record `record`, or `None` when
/// the full path must read it.
pub fn current(record: &[u8]) -> Option<Current<'_>> {
    let (&BINARY_TAG, body) = record.split_first()? else { return None };
    let mut cursor = Cursor { bytes: body, at: 0 };
    let kind = records::kind_of(cursor.byte()?).ok()?;
    let count = cursor.len()?;
    let mut last = None;
    for i in 0..count {
        last = Some(version_record(&mut cursor)?).filter(|_| i + 1 == count);
    }
    let current = last?;
    let value = match cursor.len()? {
        0 => None,
        1 => {
            if cursor.u32()? != 0 {
                return None;
            }
            let version = cursor.u32()?;
            let len = cursor.len()?;
            let value = cursor.take(len)?;
            (version == current.version).then_some(value)
        }
        _ => return None,
    };
    if cursor.at != body.len() {
        return None;
    }
    Some(Current { kind, version: current, value })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::records::{FORMAT, Inline, KeyRecord, decode, encode};

    proptest! {
        #[test]
        fn it_reads_what_decoding_reads(
            kind in 0usize..4,
            versions in proptest::collection::vec(
                (1u32..1000, any::<u64>(), any::<u32>(), proptest::option::of(any::<i64>()), proptest::option::of(any::<u64>()), any::<bool>()),
                1..30,
            ),
            value in proptest::option::of((0u32..2, 0usize..300)),
        ) {
            let kinds = [SecretType::Env, SecretType::File, SecretType::Registry, SecretType::Tls];
            let versions: Vec<VersionRecord> = versions
                .into_iter()
                .map(|(version, created_at, size, not_after, deleted_at, destroyed)| VersionRecord {
                    version, created_at, size, not_after, deleted_at, destroyed,
                })
                .collect();
            let last = versions.last().unwrap().version;
            let record = KeyRecord {
                format: FORMAT,
                kind: kinds[kind],
                versions,
                value: value.map(|(skew, len)| Inline { version: last + skew, value: vec![3; len] }),
            };
            let bytes = encode(&record);
            let decoded: KeyRecord = decode("key", &bytes).unwrap();
            let seen = current(&bytes).expect("a format-3 record");
            prop_assert_eq!(seen.kind, decoded.kind);
            prop_assert_eq!(&seen.version, decoded.current().unwrap());
            prop_assert_eq!(seen.value, Inline::of(&decoded.value, decoded.current().unwrap().version));
        }
    }

    #[test]
    fn it_declines_what_needs_the_full_path() {
        let record = KeyRecord { format: FORMAT, kind: SecretType::Env, versions: vec![VersionRecord::new(1, 2, 3, None)], value: None };
        let bytes = encode(&record);
        assert!(current(&bytes).is_some());
        assert!(current(&bytes[..bytes.len() - 1]).is_none());
        assert!(current(&[&bytes[..], &[0]].concat()).is_none());
        assert!(current(&[&[2], &bytes[1..]].concat()).is_none());
        assert!(current(br#"{"format":1}"#).is_none());
        // No versions: the full path reports that record as corrupt.
        let empty = KeyRecord { versions: vec![], ..record };
        assert!(current(&encode(&empty)).is_none());
    }
}
