//! `set`'s new index, spliced from the stored bytes instead of decoded.
//!
//! A set changes one entry of its instance's index, but decoding every
//! entry into a map and encoding them all again costs time in proportion
//! to the instance's keys (about 250 µs natively at 1,000 keys, several
//! times that in the sandbox). [`upsert`] walks the encoded entries
//! without allocating per entry and copies them around the one it replaces
//! or inserts, so the cost is a scan and a copy. Its output is exactly
//! the bytes that decoding, inserting and [`records::encode`] give (a
//! property test checks that, inline values and their ceiling included).
//! It declines, returning `None`, whenever it cannot be sure of that: a
//! record in an older format, bytes it cannot parse, or an index with
//! entries a delete marked (settling them needs the decoded index). The
//! caller then takes the full path, which also reports corrupt records.
//! It reads and writes postcard's encoding itself (varints, length-prefixed
//! bytes, `0`/`1` tags): that is what made it cheap.

use crate::records::{self, BINARY_TAG, INLINE_CEILING, INLINE_OVERHEAD, IndexEntry, WireEntryOut};

/// A reader of postcard's encoding, just enough to walk index entries: a
/// serde pass per entry cost more than the rest of a set together.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// An unsigned varint (LEB128, at most 10 bytes), as postcard writes
    /// lengths and integers.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        let first = self.byte()?;
        if first < 0x80 {
            return Some(u64::from(first));
        }
        self.at -= 1;
        self.long_varint()
    }

    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Steps over a varint without decoding it.
    #[inline(always)]
    fn skip_varint(&mut self) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().take(10).position(|b| b & 0x80 == 0)?;
        self.at += len + 1;
        Some(())
    }

    #[inline(always)]
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    /// An `Option` or `bool` tag.
    #[inline(always)]
    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// One index entry (`records::WireEntry`): its key, and whether a
    /// delete marked it.
    fn entry(&mut self) -> Option<(&'a [u8], bool)> {
        let len = self.varint()?;
        let key = self.take(len)?;
        self.byte()?; // kind
        for _ in 0..3 {
            self.skip_varint()?; // version, created_at, size
        }
        for _ in 0..2 {
            if self.flag()? {
                self.skip_varint()?; // not_after, deleted_at
            }
        }
        self.flag()?; // destroyed
        let marked = self.flag()?;
        Some((key, marked))
    }
}

#[inline(always)]
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The index after [`upsert`].
pub struct Upserted {
    /// The new record, in format 3.
    pub bytes: Vec<u8>,
    /// Keys in the index before the change.
    pub keys_before: usize,
}

/// The format-3 index `index` with `key`'s entry set to `entry` (inserted
/// in key order, or replacing the old one), or `None` when the full path
/// must do it (see the module documentation).
pub fn upsert(index: &[u8], key: &str, entry: &IndexEntry) -> Option<Upserted> {
    let (&BINARY_TAG, body) = index.split_first()? else { return None };
    if entry.deleting.is_some() {
        return None;
    }
    let mut cursor = Cursor { bytes: body, at: 0 };
    let count = u32::try_from(cursor.varint()?).ok()?;
    let entries_start = cursor.at;
    // (position, where its bytes start, where they end, whether it exists)
    let mut at = None;
    for position in 0..count {
        let start = cursor.at;
        let (k, marked) = cursor.entry()?;
        if marked {
            return None;
        }
        if at.is_none() && k >= key.as_bytes() {
            let exists = k == key.as_bytes();
            at = Some((position, start, if exists { cursor.at } else { start }, exists));
        }
    }
    let entries_end = cursor.at;
    let (position, start, end, exists) = at.unwrap_or((count, entries_end, entries_end, false));
    // The stored inline values: (position, version, value), in order.
    let n = cursor.varint()?;
    let mut inline = Vec::with_capacity(usize::try_from(n).ok()?.min(count as usize));
    for _ in 0..n {
        let p = u32::try_from(cursor.varint()?).ok()?;
        let version = u32::try_from(cursor.varint()?).ok()?;
        let len = cursor.varint()?;
        let value = cursor.take(len)?;
        if p >= count || inline.last().is_some_and(|(last, _, _)| *last >= p) {
            return None;
        }
        inline.push((p, version, value));
    }
    if cursor.at != body.len() {
        return None;
    }

    let mut out = Vec::with_capacity(index.len() + key.len() + 64 + entry.value.as_ref().map_or(0, |v| v.value.len()));
    out.push(BINARY_TAG);
    put_varint(&mut out, u64::from(count + u32::from(!exists)));
    out.extend_from_slice(&body[entries_start..start]);
    let wire = WireEntryOut { key, kind: records::kind_code(entry.kind), current: (&entry.current).into(), deleting: None };
    let mut out = postcard::to_extend(&wire, out).ok()?;
    out.extend_from_slice(&body[end..entries_end]);

    // The inline values in position order: the stored ones (shifted past
    // an inserted entry, the replaced entry's dropped), the new one at its
    // place; then the same first-come room rule as `records::encode`.
    let new = entry.value.as_ref().map(|v| (position, v.version, v.value.as_slice()));
    let split = inline.partition_point(|(p, _, _)| *p < position);
    let after = inline[split..].iter().filter(|(p, _, _)| !(exists && *p == position));
    let shift = u32::from(!exists);
    let candidates = inline[..split].iter().copied().chain(new).chain(after.map(|(p, v, value)| (p + shift, *v, *value)));
    let mut room = INLINE_CEILING.saturating_sub(out.len() + 5);
    let mut chosen = Vec::new();
    for (position, version, value) in candidates {
        let size = value.len() + INLINE_OVERHEAD;
        if size <= room {
            room -= size;
            chosen.push((position, version, value));
        }
    }
    put_varint(&mut out, chosen.len() as u64);
    for (position, version, value) in chosen {
        put_varint(&mut out, u64::from(position));
        put_varint(&mut out, u64::from(version));
        put_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
    }
    Some(Upserted { bytes: out, keys_before: count as usize })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::SecretType;
    use crate::records::{FORMAT, IndexRecord, Inline, VersionRecord, decode, encode};

    fn entry(version: u32, value: Option<usize>) -> IndexEntry {
        IndexEntry {
            value: value.map(|len| Inline { version, value: vec![b'v'; len] }),
            ..IndexEntry::new(SecretType::Env, VersionRecord::new(version, 7, 3, None))
        }
    }

    /// The full path: decode, insert, encode.
    fn full(index: &[u8], key: &str, e: &IndexEntry) -> Vec<u8> {
        let mut decoded: IndexRecord = decode("index", index).unwrap();
        decoded.keys.insert(key.to_owned(), e.clone());
        encode(&decoded)
    }

    proptest! {
        #[test]
        fn upsert_writes_what_the_full_path_writes(
            entries in proptest::collection::btree_map("[a-e]{1,3}", (1u32..300, proptest::option::of(0usize..3000)), 0..40),
            key in "[a-e]{1,3}",
            version in 1u32..300,
            len in proptest::option::of(0usize..6000),
        ) {
            let index = IndexRecord {
                format: FORMAT,
                keys: entries.iter().map(|(k, (v, len))| (k.clone(), entry(*v, *len))).collect(),
            };
            let bytes = encode(&index);
            let e = entry(version, len);
            let up = upsert(&bytes, &key, &e).expect("a format-3 index without marks");
            prop_assert_eq!(up.keys_before, index.keys.len());
            prop_assert_eq!(up.bytes, full(&bytes, &key, &e));
        }
    }

    #[test]
    fn it_declines_what_needs_the_full_path() {
        let mut index = IndexRecord { format: FORMAT, ..Default::default() };
        index.keys.insert("A".into(), entry(1, Some(3)));
        let bytes = encode(&index);
        assert!(upsert(&bytes, "B", &entry(1, Some(1))).is_some());
        // Truncated, extended, or not format 3.
        assert!(upsert(&bytes[..bytes.len() - 1], "B", &entry(1, None)).is_none());
        assert!(upsert(&[&bytes[..], &[0]].concat(), "B", &entry(1, None)).is_none());
        assert!(upsert(&[&[2], &bytes[1..]].concat(), "B", &entry(1, None)).is_none());
        assert!(upsert(b"{}", "B", &entry(1, None)).is_none());
        // An entry a delete marked.
        index.keys.insert("M".into(), IndexEntry { deleting: Some(vec![1]), ..entry(1, None) });
        assert!(upsert(&encode(&index), "B", &entry(1, None)).is_none());
    }
}
