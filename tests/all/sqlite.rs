//! The SQLite backend on real files: the conformance suite, tamper
//! detection, encryption at rest, key files and generations, several
//! backends (as several processes would) on one file, schema versions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use secrets_host::backends::sealed::{Keyring, MASTER_KEY_ENV};
use secrets_host::backends::StoreConfig;
use secrets_host::backends::sqlite::{SCHEMA_VERSION, SqliteBackend};
use secrets_host::{Access, Backend, Error, Limits, Scope, SecretType, SetRequest, VaultError};
use crate::conformance::unique;
use crate::common::{service, service_with};
use crate::conformance_tests;
use tempfile::TempDir;

/// A new store file per conformance case, in one directory kept for the
/// whole test process (statics are never dropped: the files outlive every
/// test).
fn fresh_backend() -> Arc<dyn Backend> {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let db = dir.join(format!("case-{}.db", N.fetch_add(1, Ordering::Relaxed)));
    Arc::new(SqliteBackend::open(&db, Keyring::load_or_create(&key_file(&db)).unwrap()).unwrap())
}

conformance_tests!(fresh_backend());

fn key_file(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.key", db.display()))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The vault-key prefix of one secret key (all its versions and its meta).
fn key_prefix(tenant: &str, instance: &str, key: &str) -> String {
    format!("t/{}/i/{}/k/{}/", hex(tenant), hex(instance), hex(key))
}

fn value_key(tenant: &str, instance: &str, key: &str, version: u32) -> String {
    format!("{}v/{version}", key_prefix(tenant, instance, key))
}

/// The key record, which carries the current value (what `get` reads).
fn record_key(tenant: &str, instance: &str, key: &str) -> String {
    format!("{}meta", key_prefix(tenant, instance, key))
}

/// `(key, generation)` of every row, straight from the file.
fn rows(db: &Path) -> Vec<(String, u32)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT key, generation FROM entries ORDER BY key").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

fn generations_under(db: &Path, prefix: &str) -> Vec<u32> {
    let gens: Vec<u32> = rows(db).into_iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, g)| g).collect();
    assert!(!gens.is_empty(), "no rows under {prefix}");
    gens
}

fn raw_value(db: &Path, key: &str) -> Vec<u8> {
    Connection::open(db).unwrap().query_row("SELECT value FROM entries WHERE key = ?1", [key], |r| r.get(0)).unwrap()
}

fn set_raw_value(db: &Path, key: &str, value: &[u8]) {
    let n = Connection::open(db)
        .unwrap()
        .execute("UPDATE entries SET value = ?2 WHERE key = ?1", rusqlite::params![key, value])
        .unwrap();
    assert_eq!(n, 1, "{key} exists");
}

fn retrieve(backend: &SqliteBackend, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
    backend.begin(Access::Read, "test")?.retrieve(key)
}

fn open(db: &Path, keyring: Keyring) -> Arc<SqliteBackend> {
    Arc::new(SqliteBackend::open(db, keyring).unwrap())
}

/// A store in a temporary directory with a fixed key.
fn store(dir: &TempDir) -> (PathBuf, Arc<SqliteBackend>) {
    let db = dir.path().join("secrets.db");
    let backend = open(&db, Keyring::single([9; 32]));
    (db, backend)
}

fn set(s: &secrets_host::Secrets, scope: &Scope, key: &str, value: &str) -> u32 {
    s.set(scope, SetRequest::new("web", key, SecretType::Env, value)).unwrap().version
}

fn get(s: &secrets_host::Secrets, scope: &Scope, key: &str) -> String {
    String::from_utf8(s.get(scope, "web", key).unwrap().value.expose().to_vec()).unwrap()
}

#[test]
fn swapped_ciphertexts_are_rejected_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    let s = service(backend.clone());
    let tenant = unique("swap");
    let scope = Scope::tenant(&tenant).unwrap();
    set(&s, &scope, "A", "alpha-value");
    set(&s, &scope, "B", "bravo-value");
    assert_eq!(retrieve(&backend, &value_key(&tenant, "web", "A", 1)).unwrap().as_deref(), Some(&b"alpha-value"[..]));
    let (ka, kb) = (record_key(&tenant, "web", "A"), record_key(&tenant, "web", "B"));
    let (va, vb) = (raw_value(&db, &ka), raw_value(&db, &kb));

    set_raw_value(&db, &ka, &vb);
    set_raw_value(&db, &kb, &va);
    for key in [&ka, &kb] {
        let err = retrieve(&backend, key).unwrap_err();
        let VaultError::Corrupt(msg) = &err else { panic!("{key}: {err:?}") };
        assert!(msg.contains(key.as_str()) && msg.contains(&backend.describe()), "{msg}");
        assert!(!msg.contains("alpha") && !msg.contains("bravo"), "{msg}");
    }
    let err = s.get(&scope, "web", "A").unwrap_err();
    assert!(
        matches!(&err, Error::Vault(e @ VaultError::Corrupt(m)) if e.to_string().contains("corrupt") && !m.contains("bravo")),
        "{err:?}"
    );
    assert!(matches!(s.get(&scope, "web", "B"), Err(Error::Vault(_))));

    // Swapped back, both read again: the failure was the swap.
    set_raw_value(&db, &ka, &va);
    set_raw_value(&db, &kb, &vb);
    assert_eq!(get(&s, &scope, "A"), "alpha-value");
    assert_eq!(get(&s, &scope, "B"), "bravo-value");
}

#[test]
fn flipped_bits_and_forged_generations_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    let s = service(backend.clone());
    let tenant = unique("flip");
    let scope = Scope::tenant(&tenant).unwrap();
    set(&s, &scope, "K", "kilo-value");
    let k = record_key(&tenant, "web", "K");
    let good = raw_value(&db, &k);
    // Format byte, generation, nonce, ciphertext, tag.
    for i in [0, 4, 12, 30, good.len() / 2 + 15, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        set_raw_value(&db, &k, &bad);
        let err = retrieve(&backend, &k).unwrap_err();
        assert!(matches!(&err, VaultError::Corrupt(m) if m.contains(&k)), "byte {i}: {err:?}");
        assert!(matches!(s.get(&scope, "web", "K"), Err(Error::Vault(_))), "byte {i}");
    }
    set_raw_value(&db, &k, &good);
    assert_eq!(get(&s, &scope, "K"), "kilo-value");

    // A generation column that disagrees with the sealed header would hide
    // the row from rotate-all: it is corruption too.
    let conn = Connection::open(&db).unwrap();
    conn.execute("UPDATE entries SET generation = 7 WHERE key = ?1", [&k]).unwrap();
    let err = retrieve(&backend, &k).unwrap_err();
    assert!(matches!(&err, VaultError::Corrupt(m) if m.contains("generation")), "{err:?}");
    conn.execute("UPDATE entries SET generation = 1 WHERE key = ?1", [&k]).unwrap();
    assert_eq!(get(&s, &scope, "K"), "kilo-value");
}

#[test]
fn values_never_reach_the_files_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    let s = service(backend.clone());
    let tenant = unique("canary");
    let scope = Scope::tenant(&tenant).unwrap();
    let canary = "canary-5be1c0de-plaintext-must-not-hit-disk";
    set(&s, &scope, "TOKEN", canary);
    set(&s, &scope, "TOKEN", &format!("{canary}-v2"));
    s.set(&scope, SetRequest::new("web", "cfg.json", SecretType::File, canary.as_bytes().to_vec())).unwrap();
    assert_eq!(get(&s, &scope, "TOKEN"), format!("{canary}-v2"));

    let files = |label: &str| {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = fs::read(&path) {
                for needle in [canary.to_owned(), hex(canary)] {
                    assert!(!contains(&bytes, needle.as_bytes()), "{label}: {} holds the canary", path.display());
                }
                all.extend(bytes);
            }
        }
        all
    };
    // While open the entries sit in the WAL; they are in the files at all
    // (as their names, which are not secret) so the search is not vacuous.
    assert!(PathBuf::from(format!("{}-wal", db.display())).exists(), "WAL mode");
    assert!(contains(&files("open"), hex(&tenant).as_bytes()));
    drop(s);
    drop(backend);
    assert!(contains(&files("closed"), hex(&tenant).as_bytes()));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opens like the store URL `sqlite:PATH` does; through `StoreConfig` itself
/// when `SECRETS_MASTER_KEY` is unset (tests never set it: they share the
/// process environment).
fn open_like_url(db: &Path) -> Result<SqliteBackend, VaultError> {
    if std::env::var(MASTER_KEY_ENV).is_err() {
        match StoreConfig::parse(&format!("sqlite:{}", db.display()))? {
            StoreConfig::Sqlite(config) => SqliteBackend::from_config(&config),
            other => panic!("not a sqlite store: {other:?}"),
        }
    } else {
        SqliteBackend::open(db, Keyring::load_or_create(&key_file(db))?)
    }
}

#[test]
fn key_file_sits_next_to_the_db_private_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/deeper/secrets.db");
    let backend = Arc::new(open_like_url(&db).unwrap());
    let key = key_file(&db);
    assert!(key.is_file(), "key file {} next to the database", key.display());
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&db).unwrap().permissions().mode() & 0o077, 0, "database file is private");
    assert_eq!(backend.describe(), format!("sqlite:{}", db.display()));
    let s = service(backend.clone());
    let scope = Scope::tenant(&unique("keyfile")).unwrap();
    set(&s, &scope, "A", "a-value");
    drop((s, backend));

    let s = service(Arc::new(open_like_url(&db).unwrap()));
    assert_eq!(get(&s, &scope, "A"), "a-value", "the same key file opens the store again");
    drop(s);

    if std::env::var(MASTER_KEY_ENV).is_err() {
        // A missing key file is named, not silently replaced by a new key.
        let moved = dir.path().join("moved.key");
        fs::rename(&key, &moved).unwrap();
        let err = open_like_url(&db).err().unwrap();
        assert!(
            matches!(&err, VaultError::Rejected(m) if m.contains("missing") && m.contains(&key.display().to_string())),
            "{err:?}"
        );
        assert!(!key.exists(), "no new key file was written");
        fs::rename(&moved, &key).unwrap();
    }

    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let err = open_like_url(&db).err().unwrap();
    assert!(matches!(&err, VaultError::Rejected(m) if m.contains("chmod 600")), "{err:?}");
}

#[test]
fn wrong_master_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    let empty_db = dir.path().join("empty.db");
    drop(open(&empty_db, Keyring::single([9; 32])));
    let s = service(backend.clone());
    set(&s, &Scope::tenant(&unique("wrong")).unwrap(), "A", "a-value");
    drop((s, backend));

    // With entries, and on a store that holds none yet (the key check).
    for path in [&db, &empty_db] {
        let err = SqliteBackend::open(path, Keyring::single([8; 32])).err().unwrap();
        let VaultError::Corrupt(msg) = &err else { panic!("{err:?}") };
        assert!(msg.contains("master key does not match") && msg.contains(&path.display().to_string()), "{msg}");
        // The right key still opens it: the failed open changed nothing.
        SqliteBackend::open(path, Keyring::single([9; 32])).unwrap();
    }
    // The right key under another generation number is not the store's key.
    let renumbered = Keyring::from_spec(&format!("2:{}", hex_bytes(&[9; 32]))).unwrap();
    let err = SqliteBackend::open(&db, renumbered).err().unwrap();
    assert!(
        matches!(&err, VaultError::Corrupt(m) if m.contains("master key does not match") && m.contains("[1]")),
        "{err:?}"
    );
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of one generation, from its `<generation> <hex>` line.
fn key_line(key_file: &Path, generation: u32) -> String {
    let text = fs::read_to_string(key_file).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{generation} "))).expect("generation in key file");
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn key_generations_rotate_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secrets.db");
    let keys = key_file(&db);
    let tenant = unique("gen");
    let scope = Scope::tenant(&tenant).unwrap();
    let bulk: Vec<String> = (0..450).map(|i| format!("t/{}/bulk/{i}", hex(&tenant))).collect();
    {
        let backend = open(&db, Keyring::load_or_create(&keys).unwrap());
        let s = service(backend.clone());
        set(&s, &scope, "A", "a1");
        set(&s, &scope, "A", "a2");
        set(&s, &scope, "B", "b1");
        let mut t = backend.begin(Access::Write, "bulk").unwrap();
        for (i, k) in bulk.iter().enumerate() {
            t.store(k, format!("bulk-{i}").as_bytes()).unwrap();
        }
        t.commit().unwrap();
    }
    assert!(rows(&db).iter().all(|(_, g)| *g == 1));

    assert_eq!(Keyring::add_generation(&keys).unwrap(), 2);
    let backend = open(&db, Keyring::load_or_create(&keys).unwrap());
    let s = service(backend.clone());
    assert_eq!(get(&s, &scope, "A"), "a2", "old data stays readable");
    assert_eq!(s.get_version(&scope, "web", "A", 1).unwrap().value.expose(), b"a1");
    set(&s, &scope, "C", "c1");
    assert_eq!(generations_under(&db, &key_prefix(&tenant, "web", "C")), vec![2, 2], "new writes use generation 2");

    // Rotating one key moves exactly its rows (and the index it updates).
    assert_eq!(s.rotate(&scope, "web", "A").unwrap(), 2);
    assert_eq!(generations_under(&db, &key_prefix(&tenant, "web", "A")), vec![2, 2, 2]);
    assert_eq!(generations_under(&db, &key_prefix(&tenant, "web", "B")), vec![1, 1]);
    assert_eq!(generations_under(&db, &format!("t/{}/i/{}/index", hex(&tenant), hex("web"))), vec![2]);
    assert_eq!(generations_under(&db, &bulk[0]), vec![1]);

    let older = rows(&db).iter().filter(|(_, g)| *g < 2).count() as u64;
    // B's two rows, the bulk rows, and the tenant's instances.
    assert_eq!(older, 2 + 450 + 1);
    let mut calls = Vec::new();
    assert_eq!(backend.rotate_all(&mut |done, total| calls.push((done, total))).unwrap(), older);
    assert_eq!(calls.first(), Some(&(0, older)));
    assert_eq!(calls.last(), Some(&(older, older)));
    assert!(calls.len() >= 3, "in several batches: {calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "progress advances: {calls:?}");
    assert!(rows(&db).iter().all(|(_, g)| *g == 2), "no row under generation 1 is left");
    let mut again = Vec::new();
    assert_eq!(backend.rotate_all(&mut |d, t| again.push((d, t))).unwrap(), 0);
    assert_eq!(again, vec![(0, 0)]);
    assert_eq!(get(&s, &scope, "B"), "b1");
    drop((s, backend));

    // Generation 1 retired: a keyring of generation 2 alone reads it all.
    let only2 = Keyring::from_spec(&format!("2:{}", key_line(&keys, 2))).unwrap();
    let backend = open(&db, only2);
    let s = service(backend.clone());
    assert_eq!(get(&s, &scope, "A"), "a2");
    assert_eq!(s.get_version(&scope, "web", "A", 1).unwrap().value.expose(), b"a1");
    assert_eq!(get(&s, &scope, "B"), "b1");
    assert_eq!(get(&s, &scope, "C"), "c1");
    for (i, k) in bulk.iter().enumerate() {
        assert_eq!(retrieve(&backend, k).unwrap(), Some(format!("bulk-{i}").into_bytes()));
    }
    drop((s, backend));
    // Generation 1 alone cannot read entries of generation 2: refused at open.
    let only1 = Keyring::from_spec(&format!("1:{}", key_line(&keys, 1))).unwrap();
    let err = SqliteBackend::open(&db, only1).err().unwrap();
    assert!(matches!(&err, VaultError::Rejected(m) if m.contains("under generation 2")), "{err:?}");
}

#[test]
fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    let scope = Scope::tenant(&unique("persist")).unwrap();
    let s = service(backend.clone());
    set(&s, &scope, "A", "one");
    set(&s, &scope, "A", "two");
    s.set(&scope, SetRequest::new("web", "f.bin", SecretType::File, vec![0u8, 255, 7])).unwrap();
    drop((s, backend));
    let s = service(open(&db, Keyring::single([9; 32])));
    assert_eq!(get(&s, &scope, "A"), "two");
    assert_eq!(s.versions(&scope, "web", "A").unwrap().len(), 2);
    assert_eq!(s.get(&scope, "web", "f.bin").unwrap().value.expose(), &[0u8, 255, 7][..]);
}

#[test]
fn two_backends_on_one_file_never_lose_a_version() {
    const BACKENDS: u32 = 2;
    const THREADS: u32 = 4;
    const SETS: u32 = 10;
    let dir = tempfile::tempdir().unwrap();
    let (db, first) = store(&dir);
    let second = open(&db, Keyring::single([9; 32]));
    let limits = Limits { max_versions_per_key: 1000, ..Limits::default() };
    let services = [service_with(first, limits), service_with(second, limits)];
    let scope = Scope::tenant(&unique("procs")).unwrap();
    let handles: Vec<_> = (0..BACKENDS * THREADS)
        .map(|t| {
            let (s, scope) = (services[(t % BACKENDS) as usize].clone(), scope.clone());
            thread::spawn(move || (0..SETS).map(|i| set(&s, &scope, "K", &format!("{t}-{i}"))).collect::<Vec<u32>>())
        })
        .collect();
    let mut got: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    got.sort();
    let all: Vec<u32> = (1..=BACKENDS * THREADS * SETS).collect();
    assert_eq!(got, all);
    for s in &services {
        let versions: Vec<u32> = s.versions(&scope, "web", "K").unwrap().iter().map(|m| m.version).collect();
        assert_eq!(versions, all);
    }
}

#[test]
fn write_transactions_serialise_across_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (db, first) = store(&dir);
    let second = open(&db, Keyring::single([9; 32]));
    let mut held = first.begin(Access::Write, "x").unwrap();
    held.store("t/61/k", b"first").unwrap();
    let started = Instant::now();
    let waiter = thread::spawn(move || {
        let mut t = second.begin(Access::Write, "x").unwrap();
        let waited = started.elapsed();
        let seen = t.retrieve("t/61/k").unwrap();
        t.store("t/61/k", b"second").unwrap();
        t.commit().unwrap();
        (waited, seen)
    });
    thread::sleep(Duration::from_millis(400));
    held.commit().unwrap();
    let (waited, seen) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(400), "the second writer waited for the first: {waited:?}");
    assert_eq!(seen.as_deref(), Some(&b"first"[..]), "and then saw its commit");
    assert_eq!(retrieve(&first, "t/61/k").unwrap().as_deref(), Some(&b"second"[..]));
}

#[test]
fn readers_keep_a_snapshot_and_do_not_block_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (db, first) = store(&dir);
    let second = open(&db, Keyring::single([9; 32]));
    let mut t = first.begin(Access::Write, "x").unwrap();
    t.store("t/61/k", b"old").unwrap();
    t.commit().unwrap();
    let mut reader = first.begin(Access::Read, "x").unwrap();
    assert_eq!(reader.retrieve("t/61/k").unwrap().as_deref(), Some(&b"old"[..]));
    let started = Instant::now();
    let mut t = second.begin(Access::Write, "x").unwrap();
    t.store("t/61/k", b"new").unwrap();
    t.commit().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the open reader did not block the writer");
    assert_eq!(reader.retrieve("t/61/k").unwrap().as_deref(), Some(&b"old"[..]), "one snapshot per read call");
    drop(reader);
    assert_eq!(retrieve(&first, "t/61/k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn future_schema_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, backend) = store(&dir);
    drop(backend);
    let conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let err = SqliteBackend::open(&db, Keyring::single([9; 32])).err().unwrap();
    let VaultError::Rejected(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("newer") && msg.contains(&db.display().to_string()), "{msg}");
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1, "the file was left as it was");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).unwrap();
    SqliteBackend::open(&db, Keyring::single([9; 32])).unwrap();
}

/// The shared master-key suite on SQLite.
mod sealed_suite {
    use super::*;

    struct SqliteHarness {
        _dir: TempDir,
        db: PathBuf,
    }

    fn harness() -> SqliteHarness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sealed.db");
        SqliteHarness { _dir: dir, db }
    }

    impl crate::sealed::Harness for SqliteHarness {
        fn open(&self, keyring: Keyring) -> Result<Arc<dyn Backend>, VaultError> {
            Ok(Arc::new(SqliteBackend::open(&self.db, keyring)?))
        }
        fn set_generation_column(&self, key: &str, generation: i64) {
            let conn = Connection::open(&self.db).unwrap();
            let n = conn.execute("UPDATE entries SET generation = ?2 WHERE key = ?1", rusqlite::params![key, generation]);
            assert_eq!(n.unwrap(), 1);
        }
        fn key_check(&self, generation: i64) -> Vec<u8> {
            let conn = Connection::open(&self.db).unwrap();
            conn.query_row("SELECT sealed FROM key_checks WHERE generation = ?1", [generation], |r| r.get(0)).unwrap()
        }
        fn set_key_check(&self, generation: i64, sealed: &[u8]) {
            let conn = Connection::open(&self.db).unwrap();
            let n = conn.execute("UPDATE key_checks SET sealed = ?2 WHERE generation = ?1", rusqlite::params![generation, sealed]);
            assert_eq!(n.unwrap(), 1);
        }
    }

    crate::sealed_tests!(harness());
}

/// Writers SIGKILLed at random moments, 20 rounds: no acknowledged version
/// is lost, versions stay gapless (see crash.rs).
#[test]
fn killed_writers_lose_no_acknowledged_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let n = crate::crash::kill_writers_at_random(&format!("sqlite:{}", db.display()), || {
        Arc::new(SqliteBackend::open(&db, Keyring::from_spec(crate::crash::MASTER_KEY).unwrap()).unwrap())
    });
    eprintln!("sqlite: {} rounds, {n} acknowledged sets checked", crate::crash::ROUNDS);
}

/// A store written by release 0.1.0 (`fixtures/store-0.1.0.db`, how it was
/// made is in `fixtures/README.md`) is read by this build, value for value,
/// then written, rotated onto the newest key generation, and read again.
#[test]
fn a_store_of_release_0_1_0_is_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/all/fixtures/store-0.1.0.db"), &db).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
    let (k1, k2) = ("1".repeat(64), "2".repeat(64));
    let both = || Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap();
    let backend = open(&db, both());
    let s = service(backend.clone());
    let web = Scope::tenant("default").unwrap();
    let versions: Vec<u32> = s.versions(&web, "web", "API_KEY").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    for (v, value) in [(1, "sk_one"), (2, "sk_two"), (3, "sk_three"), (4, "sk_four")] {
        assert_eq!(s.get_version(&web, "web", "API_KEY", v).unwrap().value.expose(), value.as_bytes());
    }
    let listed: Vec<(String, SecretType)> = s.list(&web, "web").unwrap().into_iter().map(|m| (m.key, m.kind)).collect();
    assert_eq!(
        listed,
        vec![
            ("API_KEY".into(), SecretType::Env),
            ("app.conf".into(), SecretType::File),
            ("cert".into(), SecretType::Tls),
            ("ghcr".into(), SecretType::Registry)
        ]
    );
    assert_eq!(s.get(&web, "web", "app.conf").unwrap().value.expose(), b"listen = 8080\n");
    assert!(s.get(&web, "web", "cert").unwrap().meta.not_after.is_some());
    let mounts = s.mounts(&web, "web").unwrap();
    assert!(mounts.iter().any(|m| m.path == ".docker/config.json" && m.contents.expose_str().unwrap().contains("ghp_fixture")));
    assert_eq!(s.inject(&web, "web").unwrap()["API_KEY"].expose(), b"sk_four");
    let acme = Scope::tenant("acme").unwrap();
    assert_eq!(s.get(&acme, "api", "DB_URL").unwrap().value.expose(), b"postgres://acme@db/acme");

    // Written by this build, rotated onto generation 2, read with it alone.
    assert_eq!(s.set(&web, SetRequest::new("web", "API_KEY", SecretType::Env, "sk_five")).unwrap().version, 5);
    let moved = backend.rotate_all(&mut |_, _| {}).unwrap();
    assert_eq!(moved, 9, "the entries under generation 1");
    drop((s, backend));
    let s = service(open(&db, Keyring::from_spec(&format!("2:{k2}")).unwrap()));
    assert_eq!(s.get(&web, "web", "API_KEY").unwrap().value.expose(), b"sk_five");
    assert_eq!(s.get_version(&web, "web", "API_KEY", 1).unwrap().value.expose(), b"sk_one");
    assert_eq!(s.get(&acme, "api", "DB_URL").unwrap().value.expose(), b"postgres://acme@db/acme");
}
