//! One suite for the master-key checks of every encrypted backend (SQLite
//! and PostgreSQL): the sealed-entry layer owns them, so both must behave
//! the same. A backend's test module invokes [`sealed_tests!`] with a
//! [`Harness`] that opens a fresh store and reaches into its rows.

use std::sync::Arc;

use secrets_host::backends::sealed::Keyring;
use secrets_host::{Access, Backend, VaultError};

/// A fresh store of one backend, reopened with different keyrings, and raw
/// access to its rows (to play the attacker or the broken replica).
pub trait Harness: Sync {
    /// Opens the store with `keyring` (the same store every time).
    fn open(&self, keyring: Keyring) -> Result<Arc<dyn Backend>, VaultError>;
    /// Overwrites the generation column of the entry `key`.
    fn set_generation_column(&self, key: &str, generation: i64);
    /// The sealed bytes of the key check of `generation`.
    fn key_check(&self, generation: i64) -> Vec<u8>;
    /// Overwrites the sealed bytes of the key check of `generation`.
    fn set_key_check(&self, generation: i64, sealed: &[u8]);
}

/// Expands to one `#[test]` per case for the harness `$make`.
#[macro_export]
macro_rules! sealed_tests {
    ($make:expr) => {
        $crate::sealed_tests!(@cases $make;
            wrong_key_is_refused_and_changes_nothing, renumbered_key_is_refused,
            a_missing_generation_in_use_is_refused, a_row_whose_generation_disagrees_is_corrupt,
            a_writer_with_an_older_keyring_is_fenced,
            a_key_check_sealed_under_another_generation_is_refused, rotate_all_moves_everything_to_the_newest);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                $crate::sealed::$case(&$make);
            }
        )*
    };
}

fn key(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn ring(spec: &[(u32, u8)]) -> Keyring {
    let list: Vec<String> = spec.iter().map(|(g, b)| format!("{g}:{}", key(*b))).collect();
    Keyring::from_spec(&list.join(",")).unwrap()
}

fn store(backend: &Arc<dyn Backend>, entries: &[(&str, &[u8])]) {
    let mut t = backend.begin(Access::Write, "sealed-suite").unwrap();
    for (k, v) in entries {
        t.store(k, v).unwrap();
    }
    t.commit().unwrap();
}

fn read(backend: &Arc<dyn Backend>, k: &str) -> Result<Option<Vec<u8>>, VaultError> {
    backend.begin(Access::Read, "sealed-suite").unwrap().retrieve(k)
}

fn refused(h: &dyn Harness, keyring: Keyring) -> String {
    match h.open(keyring) {
        Err(VaultError::Corrupt(m)) => m,
        Err(other) => panic!("expected a Corrupt refusal, got {other:?}"),
        Ok(b) => panic!("expected a refusal, but {} opened", b.describe()),
    }
}

/// Another key under the store's generation is refused at open, naming
/// the store; the refusal changes nothing.
pub fn wrong_key_is_refused_and_changes_nothing(h: &dyn Harness) {
    let right = h.open(ring(&[(1, 0x11)])).unwrap();
    store(&right, &[("t/00/k", b"v")]);
    let name = right.describe();
    drop(right);
    let m = refused(h, ring(&[(1, 0x22)]));
    assert!(m.contains("wrong master key") && m.contains("does not match") && m.contains(&name), "{m}");
    assert!(m.contains("generation 1"), "{m}");
    assert_eq!(read(&h.open(ring(&[(1, 0x11)])).unwrap(), "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// The right key under another generation number is not the store's key.
pub fn renumbered_key_is_refused(h: &dyn Harness) {
    store(&h.open(ring(&[(1, 0x11)])).unwrap(), &[("t/00/k", b"v")]);
    let m = refused(h, ring(&[(2, 0x11)]));
    assert!(m.contains("wrong master key") && m.contains("generation 1") && m.contains("[1]"), "{m}");
}

/// A keyring lacking a generation that entries are sealed under is
/// refused, naming the count and what to do; it is not a wrong key.
pub fn a_missing_generation_in_use_is_refused(h: &dyn Harness) {
    store(&h.open(ring(&[(1, 0x11)])).unwrap(), &[("t/00/old", b"one")]);
    store(&h.open(ring(&[(1, 0x11), (2, 0x22)])).unwrap(), &[("t/00/new", b"two")]);
    // A configuration error, not corruption: named as such.
    let m = match h.open(ring(&[(1, 0x11)])) {
        Err(VaultError::Rejected(m)) => m,
        other => panic!("expected a Rejected refusal, got {:?}", other.map(|b| b.describe())),
    };
    assert!(m.contains("1 entry under generation 2") && m.contains("rotate-all"), "{m}");
    assert!(m.contains("retired") && !m.contains("wrong master key") && !m.contains("corrupt"), "{m}");
    let both = h.open(ring(&[(1, 0x11), (2, 0x22)])).unwrap();
    assert_eq!(read(&both, "t/00/old").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(read(&both, "t/00/new").unwrap().as_deref(), Some(&b"two"[..]));
}

/// The generation column steers rotation and the keyring check: a row
/// whose column disagrees with its authenticated header is corrupt.
pub fn a_row_whose_generation_disagrees_is_corrupt(h: &dyn Harness) {
    let backend = h.open(ring(&[(1, 0x11)])).unwrap();
    store(&backend, &[("t/00/k", b"v")]);
    h.set_generation_column("t/00/k", 1); // unchanged: still reads
    assert_eq!(read(&backend, "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
    h.set_generation_column("t/00/k", 0);
    match read(&backend, "t/00/k") {
        Err(VaultError::Corrupt(m)) => assert!(m.contains("t/00/k") && m.contains("generation"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A key-check row must be sealed under its own generation: one copied
/// from another generation's row is refused even though it opens.
pub fn a_key_check_sealed_under_another_generation_is_refused(h: &dyn Harness) {
    let both = ring(&[(1, 0x11), (2, 0x22)]);
    drop(h.open(ring(&[(1, 0x11)])).unwrap());
    drop(h.open(both.clone()).unwrap());
    let first = h.key_check(1);
    h.set_key_check(2, &first);
    let m = refused(h, both);
    assert!(m.contains("wrong master key") && m.contains("generation 2"), "{m}");
}

/// rotate-all re-seals every entry under the newest generation, after
/// which the older generation can be retired.
pub fn rotate_all_moves_everything_to_the_newest(h: &dyn Harness) {
    let keys: Vec<String> = (0..7).map(|i| format!("t/00/k{i}")).collect();
    let old = h.open(ring(&[(1, 0x11)])).unwrap();
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    store(&old, &entries);
    drop(old);
    let both = h.open(ring(&[(1, 0x11), (2, 0x22)])).unwrap();
    let mut last = (0, 0);
    let n = both.rotate_all(&mut |done, total| last = (done, total)).unwrap();
    assert_eq!((n, last), (7, (7, 7)));
    assert_eq!(both.rotate_all(&mut |_, _| {}).unwrap(), 0, "nothing left under generation 1");
    drop(both);
    let only_new = h.open(ring(&[(2, 0x22)])).unwrap();
    for k in &keys {
        assert_eq!(read(&only_new, k).unwrap().as_deref(), Some(k.as_bytes()));
    }
}

/// A writer that started before a newer generation was added must not seal
/// under the older one: rotate-all would report success and leave its
/// entries behind. A transaction in flight when the generation is added is
/// waited for, so rotate-all moves what it wrote; one that begins after is
/// refused, naming the cause.
pub fn a_writer_with_an_older_keyring_is_fenced(h: &dyn Harness) {
    let old = h.open(ring(&[(1, 0x11)])).unwrap();
    store(&old, &[("t/00/a", b"a")]);
    // In flight while the new generation arrives.
    let mut in_flight = old.begin(Access::Write, "sealed-suite").unwrap();
    // Holding its locks from its first request on.
    assert_eq!(in_flight.retrieve("t/00/in-flight").unwrap(), None);
    in_flight.store("t/00/in-flight", b"b").unwrap();
    let both = std::thread::scope(|s| {
        let opening = s.spawn(|| h.open(ring(&[(1, 0x11), (2, 0x22)])).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!opening.is_finished(), "adding the generation waits for the writer in flight");
        in_flight.commit().unwrap();
        opening.join().unwrap()
    });
    // After it: refused, and nothing written.
    // At begin, or with its first request (where a backend takes its locks).
    let err = match old.begin(Access::Write, "sealed-suite") {
        Err(e) => e,
        Ok(mut t) => t.retrieve("t/00/a").expect_err("a writer with the older keyring is refused"),
    };
    assert!(matches!(&err, VaultError::Rejected(m) if m.contains("newer than this process's keyring")), "{err:?}");
    assert_eq!(both.rotate_all(&mut |_, _| {}).unwrap(), 2, "both entries of generation 1 moved");
    drop((old, both));
    let only_new = h.open(ring(&[(2, 0x22)])).unwrap();
    assert_eq!(read(&only_new, "t/00/in-flight").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(read(&only_new, "t/00/a").unwrap().as_deref(), Some(&b"a"[..]));
}
