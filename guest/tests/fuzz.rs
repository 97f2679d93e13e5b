//! Property-based fuzzing of every parser that sees untrusted bytes: TLS
//! bundles (PEM, DER, keys), registry JSON, and the records read back from
//! the vault. Nightly (and so `cargo fuzz`) is not available here, so this
//! is proptest on stable: random and mutated inputs must never panic, and
//! what is accepted must be what the rules say.
//!
//! CI runs proptest's default case count per property; a longer run:
//! `PROPTEST_CASES=100000 cargo test --release -p secrets-guest --test fuzz`.

use proptest::prelude::*;
use secrets_guest::records::{IndexEntry, IndexRecord, KeyRecord, VersionRecord};
use secrets_guest::{Error, SecretType, VaultError, records, registry, stored_index, stored_key, tls};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn valid_bundle() -> Vec<u8> {
    let mut v = fixture("rsa-cert.pem");
    v.extend(fixture("rsa-pkcs1-key.pem"));
    v
}

/// Byte-level mutations of a valid input: flips, cuts, insertions.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>(), 0u8..4), 1..8).prop_map(move |edits| {
        let mut v = base.clone();
        for (at, byte, op) in edits {
            let at = at.min(v.len().saturating_sub(1));
            match op {
                0 if !v.is_empty() => v[at] ^= byte | 1,
                1 => v.truncate(at),
                2 => v.insert(at, byte),
                _ if !v.is_empty() => {
                    v.remove(at);
                }
                _ => {}
            }
        }
        v
    })
}

proptest! {
    #[test]
    fn tls_check_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = tls::check(&bytes);
        let _ = tls::split(&bytes);
    }

    #[test]
    fn tls_check_never_panics_on_mutated_bundles(bytes in mutated(valid_bundle())) {
        if tls::check(&bytes).is_ok() {
            // Whatever is accepted splits into its certificate and key.
            prop_assert!(tls::split(&bytes).is_ok());
        }
    }

    #[test]
    fn tls_check_never_panics_on_mutated_ec_and_ed25519_bundles(
        bytes in prop_oneof![
            mutated([fixture("p256-cert.pem"), fixture("p256-sec1-key.pem")].concat()),
            mutated([fixture("ed25519-cert.pem"), fixture("ed25519-key.pem")].concat()),
        ]
    ) {
        let _ = tls::check(&bytes);
    }

    #[test]
    fn registry_check_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = registry::check(&bytes);
    }

    #[test]
    fn registry_accepts_exactly_well_formed_auths(
        host in "[a-z0-9.:-]{0,20}",
        user in "[ -~]{0,12}",
        password in "[ -~]{0,12}",
    ) {
        let doc = serde_json::json!({"auths": {host.clone(): {"username": user, "password": password}}});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let ok = registry::check(&bytes).is_ok();
        // The documented rules: a non-empty registry name, and both parts.
        prop_assert_eq!(ok, !host.is_empty() && !user.is_empty() && !password.is_empty(), "{}", doc);
        if ok {
            prop_assert!(registry::merge(&[&bytes]).is_ok());
        }
    }

    #[test]
    fn registry_check_never_panics_on_mutated_documents(
        bytes in mutated(br#"{"auths":{"ghcr.io":{"auth":"dTpw","email":"a@b"}}}"#.to_vec())
    ) {
        let _ = registry::check(&bytes);
    }

    #[test]
    fn record_decoding_fails_cleanly_as_corrupt(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let errors = [
            records::decode::<KeyRecord>("key", &bytes).err(),
            records::decode::<IndexRecord>("index", &bytes).err(),
        ];
        for e in errors.into_iter().flatten() {
            prop_assert!(matches!(e, Error::Vault(VaultError::Corrupt(_))), "{:?}", e);
        }
    }

    #[test]
    fn record_decoding_never_panics_on_mutated_records(
        bytes in mutated(br#"{"format":1,"kind":"env","versions":[{"version":1,"created_at":5,"size":2}]}"#.to_vec())
    ) {
        let _ = records::decode::<KeyRecord>("key", &bytes);
    }

    #[test]
    fn records_mutated_decode_or_fail_as_corrupt(
        bytes in mutated(records::encode(&IndexRecord {
            format: records::FORMAT,
            keys: [
                ("A".to_owned(), IndexEntry::new(SecretType::Env, VersionRecord::new(3, 5, 2, None))),
                ("B".to_owned(), IndexEntry { deleting: Some(vec![1]), ..IndexEntry::new(SecretType::Tls, VersionRecord::new(1, 5, 2, Some(9))) }),
            ].into(),
        }))
    ) {
        for e in [records::decode::<IndexRecord>("index", &bytes).err(), records::decode::<KeyRecord>("key", &bytes).err()].into_iter().flatten() {
            prop_assert!(matches!(e, Error::Vault(VaultError::Corrupt(_))), "{:?}", e);
        }
    }

    /// The in-place readers (`stored_index`, `stored_key`) on mutated
    /// format-3 records: they decline or read, never panic; what they read
    /// is what decoding reads.
    #[test]
    fn in_place_readers_never_panic_on_mutated_records(
        bytes in mutated(records::encode(&IndexRecord {
            format: records::FORMAT,
            keys: [
                ("A".to_owned(), IndexEntry { value: Some(records::Inline { version: 3, value: b"va".to_vec() }), ..IndexEntry::new(SecretType::Env, VersionRecord::new(3, 5, 2, None)) }),
                ("B".to_owned(), IndexEntry::new(SecretType::Tls, VersionRecord::new(1, 5, 2, Some(-9)))),
            ].into(),
        })),
        key in "[A-C]",
    ) {
        if let Some(view) = stored_index::IndexView::parse(&bytes) {
            let decoded: IndexRecord = records::decode("index", &bytes).expect("a view implies a valid index");
            let seen: Vec<_> = view.entries_with_values().map(|(e, v)| (e.key.to_owned(), e.kind, e.current.clone(), v.map(<[u8]>::to_vec))).collect();
            let expected: Vec<_> = decoded
                .keys
                .iter()
                .map(|(k, e)| (k.clone(), e.kind, e.current.clone(), records::Inline::of(&e.value, e.current.version).map(<[u8]>::to_vec)))
                .collect();
            prop_assert_eq!(seen, expected);
        }
        let entry = IndexEntry {
            value: Some(records::Inline { version: 1, value: b"new".to_vec() }),
            ..IndexEntry::new(SecretType::Env, VersionRecord::new(1, 1, 1, None))
        };
        if let Some(up) = stored_index::upsert(&bytes, &key, &entry) {
            let mut decoded: IndexRecord = records::decode("index", &bytes).expect("an upsert implies a valid index");
            decoded.keys.insert(key.clone(), entry);
            prop_assert_eq!(up.bytes, records::encode(&decoded));
        }
        if let Some(current) = stored_key::current(&bytes) {
            let decoded: KeyRecord = records::decode("key", &bytes).expect("a current version implies a valid record");
            prop_assert_eq!(&current.version, decoded.current().unwrap());
        }
    }

    /// `stored_key::current` on mutated key records reads what decoding
    /// reads, or declines.
    #[test]
    fn the_in_place_key_reader_agrees_with_decoding_on_mutated_records(
        bytes in mutated(records::encode(&KeyRecord {
            format: records::FORMAT,
            kind: SecretType::File,
            versions: vec![
                VersionRecord::new(1, 1_700_000_000_000, 3, Some(-5)),
                VersionRecord { deleted_at: Some(7), ..VersionRecord::new(2, 1_700_000_000_001, 300, None) },
                VersionRecord::new(3, 1_700_000_000_002, 2, Some(1 << 40)),
            ],
            value: Some(records::Inline { version: 3, value: b"v3".to_vec() }),
        })),
    ) {
        if let Some(current) = stored_key::current(&bytes) {
            let decoded: KeyRecord = records::decode("key", &bytes).expect("a current version implies a valid record");
            let version = decoded.current().unwrap();
            prop_assert_eq!(current.kind, decoded.kind);
            prop_assert_eq!(&current.version, version);
            prop_assert_eq!(current.value, records::Inline::of(&decoded.value, version.version));
        }
    }
}
