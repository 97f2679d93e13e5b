//! The instance index as stored: read and changed without decoding it.
//!
//! Decoding an index builds a map with an allocation or two per entry, in
//! proportion to the instance's keys (about 170 ns per entry natively,
//! several times that in the sandbox), and encoding it again as much. The
//! hot calls need far less: `list` wants each key's current version,
//! `inject` and `mounts` the current values, `set` changes one entry. [`IndexView`] walks the stored bytes without
//! allocating per entry, and [`upsert`] copies them around the one entry
//! it replaces or inserts. A view lists exactly what decoding would, and
//! the upsert's output decodes to exactly what decoding, inserting and
//! encoding give; for an index this crate wrote it is the same bytes too
//! (postcard also reads varints padded with extra `0x80` bytes, which the
//! upsert copies as they are and encoding would not write). Property and
//! fuzz tests check both, inline values and their ceiling included.
//!
//! Both decline, returning `None`, wherever decoding would fail or would
//! do more: a record in an older format, bytes postcard would refuse (a
//! key that is not UTF-8, a varint too long for its type, an unknown tag),
//! or an index with entries a delete marked (settling those needs the
//! decoded index). The caller then takes the full path, which also reports
//! corrupt records. They read and write postcard's encoding themselves
//! (varints with postcard's limits per type, length-prefixed bytes, `0`/`1`
//! tags): that is what made them cheap.

use crate::model::SecretType;
use crate::records::{self, BINARY_TAG, IndexEntry, VersionRecord, WireEntryOut};

/// A reader of postcard's encoding, just enough to walk index entries: a
/// serde pass per entry cost more than the rest of a set together.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// An unsigned varint (LEB128) as postcard reads one for an integer
    /// of `bits` bits: at most `bits / 7 + 1` bytes, the last of them
    /// holding no more bits than are left (postcard refuses the rest).
    #[inline(always)]
    fn varint(&mut self, bits: u32) -> Option<u64> {
        let first = self.byte()?;
        if first < 0x80 {
            return Some(u64::from(first));
        }
        let max_bytes = bits.div_ceil(7);
        let mut value = u64::from(first & 0x7f);
        for i in 1..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                let last_bits = bits - 7 * (max_bytes - 1);
                if i == max_bytes - 1 && u32::from(b) >= 1 << last_bits {
                    return None;
                }
                return Some(value);
            }
        }
        None
    }

    /// A `u32` (also the zigzag of nothing smaller: versions, sizes,
    /// positions).
    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.varint(32).map(|v| v as u32)
    }

    /// A `u64`, or an `i64` zigzag-encoded (times).
    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.varint(64)
    }

    /// A length (`usize`: sequences, strings, bytes), as wide as the
    /// platform's, as postcard reads it.
    #[inline(always)]
    pub(crate) fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint(usize::BITS)?).ok()
    }

    #[inline(always)]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    /// An `Option` or `bool` tag.
    #[inline(always)]
    pub(crate) fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
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

/// One version (`records::WireVersion`), read as decoding reads it.
#[inline(always)]
pub(crate) fn version_record(cursor: &mut Cursor) -> Option<VersionRecord> {
    let version = cursor.u32()?;
    let created_at = cursor.u64()?;
    let size = cursor.u32()?;
    // Postcard writes signed integers zigzag-encoded.
    let not_after = match cursor.flag()? {
        true => {
            let z = cursor.u64()?;
            Some((z >> 1) as i64 ^ -((z & 1) as i64))
        }
        false => None,
    };
    let deleted_at = match cursor.flag()? {
        true => Some(cursor.u64()?),
        false => None,
    };
    let destroyed = cursor.flag()?;
    Some(VersionRecord { version, created_at, size, not_after, deleted_at, destroyed })
}

/// Whether `a < b` in byte order, 8 bytes at a time: `memcmp` in the
/// sandbox compares a byte per step, and this check runs on every entry.
#[inline(always)]
fn ascending(a: &[u8], b: &[u8]) -> bool {
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        let (x, y) = (u64::from_be_bytes(x.try_into().unwrap()), u64::from_be_bytes(y.try_into().unwrap()));
        if x != y {
            return x < y;
        }
    }
    let done = a.len().min(b.len()) / 8 * 8;
    a[done..] < b[done..]
}

/// One entry of a stored index, borrowed from it.
pub struct EntryView<'a> {
    pub key: &'a str,
    pub kind: SecretType,
    /// The current version.
    pub current: VersionRecord,
    /// Where the entry's bytes start and end in the body.
    span: (usize, usize),
}

/// A format-3 index without delete marks, read in place.
pub struct IndexView<'a> {
    body: &'a [u8],
    /// Where the entries start and end in the body.
    entries: (usize, usize),
    pub keys: Vec<EntryView<'a>>,
    /// The inline values: (position, version, value), by position.
    pub inline: Vec<(u32, u32, &'a [u8])>,
}

impl<'a> IndexView<'a> {
    /// The view of `index`, or `None` when the full path must read it.
    pub fn parse(index: &'a [u8]) -> Option<IndexView<'a>> {
        let (&BINARY_TAG, body) = index.split_first()? else { return None };
        let mut cursor = Cursor { bytes: body, at: 0 };
        let count = u32::try_from(cursor.len()?).ok()?;
        let entries_start = cursor.at;
        let mut keys = Vec::with_capacity((count as usize).min(body.len()));
        for _ in 0..count {
            let start = cursor.at;
            let len = cursor.len()?;
            // Checked as decoding checks it: a key that is not UTF-8 is
            // corruption, which the full path reports.
            let key = std::str::from_utf8(cursor.take(len)?).ok()?;
            let kind = records::kind_of(cursor.byte()?).ok()?;
            let current = version_record(&mut cursor)?;
            if cursor.flag()? {
                return None; // marked by a delete
            }
            if keys.last().is_some_and(|last: &EntryView| !ascending(last.key.as_bytes(), key.as_bytes())) {
                return None; // out of order: the full path reports it
            }
            keys.push(EntryView { key, kind, current, span: (start, cursor.at) });
        }
        let entries_end = cursor.at;
        let n = cursor.len()?;
        let mut inline: Vec<(u32, u32, &[u8])> = Vec::with_capacity(n.min(keys.len()));
        for _ in 0..n {
            let position = cursor.u32()?;
            let version = cursor.u32()?;
            let len = cursor.len()?;
            let value = cursor.take(len)?;
            if position >= count || inline.last().is_some_and(|(last, _, _)| *last >= position) {
                return None;
            }
            inline.push((position, version, value));
        }
        if cursor.at != body.len() {
            return None;
        }
        Some(IndexView { body, entries: (entries_start, entries_end), keys, inline })
    }

    /// Each entry with its current value when the index carries it.
    pub fn entries_with_values(&self) -> impl Iterator<Item = (&EntryView<'a>, Option<&'a [u8]>)> + '_ {
        let mut inline = self.inline.iter().peekable();
        self.keys.iter().enumerate().map(move |(position, entry)| {
            while inline.next_if(|(p, _, _)| (*p as usize) < position).is_some() {}
            let value = inline
                .next_if(|(p, _, _)| *p as usize == position)
                .filter(|(_, version, _)| *version == entry.current.version)
                .map(|(_, _, value)| *value);
            (entry, value)
        })
    }
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
    if entry.deleting.is_some() {
        return None;
    }
    let view = IndexView::parse(index)?;
    let count = view.keys.len() as u32;
    let found = view.keys.binary_search_by(|e| e.key.cmp(key));
    let (position, exists) = match found {
        Ok(p) => (p as u32, true),
        Err(p) => (p as u32, false),
    };
    let (entries_start, entries_end) = view.entries;
    let (start, end) = match found {
        Ok(p) => view.keys[p].span,
        Err(p) => view.keys.get(p).map_or((entries_end, entries_end), |e| (e.span.0, e.span.0)),
    };
    let (body, inline) = (view.body, &view.inline);

    let mut out = Vec::with_capacity(index.len() + key.len() + 64 + entry.value.as_ref().map_or(0, |v| v.value.len()));
    out.push(BINARY_TAG);
    put_varint(&mut out, u64::from(count + u32::from(!exists)));
    out.extend_from_slice(&body[entries_start..start]);
    let wire = WireEntryOut { key, kind: records::kind_code(entry.kind), current: (&entry.current).into(), deleting: None };
    let mut out = postcard::to_extend(&wire, out).ok()?;
    out.extend_from_slice(&body[end..entries_end]);

    // The inline values in position order: the stored ones (shifted past
    // an inserted entry, the replaced entry's dropped), the new one at its
    // place; then the room rule `records::encode` follows.
    let new = entry.value.as_ref().map(|v| (position, v.version, v.value.as_slice()));
    let split = inline.partition_point(|(p, _, _)| *p < position);
    let after = inline[split..].iter().filter(|(p, _, _)| !(exists && *p == position));
    let shift = u32::from(!exists);
    let candidates = inline[..split].iter().copied().chain(new).chain(after.map(|(p, v, value)| (p + shift, *v, *value)));
    let chosen = records::fitting_inline(out.len(), candidates);
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
        /// Long shared prefixes and bytes above 0x7f, where a chunked
        /// compare could go wrong.
        #[test]
        fn ascending_is_byte_order(
            prefix in proptest::collection::vec(prop_oneof![Just(b'K'), Just(0xC3u8), Just(0xFFu8)], 0..20),
            a in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0x80u8)], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0x80u8)], 0..12),
        ) {
            let (a, b) = ([prefix.as_slice(), &a].concat(), [prefix.as_slice(), &b].concat());
            prop_assert_eq!(ascending(&a, &b), a < b, "{:?} {:?}", a, b);
        }
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

    proptest! {
        #[test]
        fn a_view_reads_what_decoding_reads(
            entries in proptest::collection::btree_map(
                "[a-zé]{1,4}",
                (0u8..4, 1u32..300, any::<bool>(), any::<bool>(), proptest::option::of((0u32..3, 0usize..2000))),
                0..40,
            ),
        ) {
            let kinds = [SecretType::Env, SecretType::File, SecretType::Registry, SecretType::Tls];
            let index = IndexRecord {
                format: FORMAT,
                keys: entries
                    .iter()
                    .map(|(k, (kind, version, deleted, destroyed, value))| {
                        let current = VersionRecord {
                            deleted_at: deleted.then_some(5),
                            destroyed: *destroyed,
                            ..VersionRecord::new(*version, 9, 2, Some(-3))
                        };
                        // Some inline values are of another version: never used.
                        let value = value.map(|(skew, len)| Inline { version: version + skew, value: vec![7; len] });
                        (k.clone(), IndexEntry { value, ..IndexEntry::new(kinds[*kind as usize], current) })
                    })
                    .collect(),
            };
            let bytes = encode(&index);
            let decoded: IndexRecord = decode("index", &bytes).unwrap();
            let view = IndexView::parse(&bytes).expect("a format-3 index without marks");
            let seen: Vec<_> = view
                .entries_with_values()
                .map(|(e, value)| (e.key.to_owned(), e.kind, e.current.clone(), value.map(<[u8]>::to_vec)))
                .collect();
            let expected: Vec<_> = decoded
                .keys
                .iter()
                .map(|(k, e)| (k.clone(), e.kind, e.current.clone(), Inline::of(&e.value, e.current.version).map(<[u8]>::to_vec)))
                .collect();
            prop_assert_eq!(seen, expected);
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
        assert!(IndexView::parse(&encode(&index)).is_none());
    }
}
