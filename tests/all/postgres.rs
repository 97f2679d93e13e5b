//! The PostgreSQL backend against a real server: the conformance suite,
//! writers in two processes, encryption at rest, key checks, migrations,
//! rotation and connection handling.
//!
//! Needs `SECRETS_TEST_POSTGRES_URL` (`bash .ci/run` sets it, or
//! `source .ci/postgres.sh && start_postgres`). Each test works in a schema
//! of its own, dropped at its end; the conformance suite shares one schema.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use secrets_host::backends::sealed::{Keyring, MASTER_KEY_ENV, sealed_generation};
use secrets_host::backends::postgres::{PostgresBackend, PostgresConfig, SCHEMA_VERSION};
use secrets_host::backends::StoreConfig;
use secrets_host::{Access, Backend, Limits, Scope, SecretType, SetRequest, VaultError};
use crate::conformance::unique;
use crate::conformance_tests;

const URL_ENV: &str = "SECRETS_TEST_POSTGRES_URL";

/// The server's URL; missing is a failure, never a skip.
fn base_url() -> String {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{URL_ENV} is not set: the PostgreSQL tests need a server. Run `bash .ci/run`, or \
             `source .ci/postgres.sh && start_postgres` before `cargo test`, or set \
             {URL_ENV}=postgres://USER@HOST:PORT/DB"
        ),
    }
}

/// `url` with `params` appended to its query.
pub(crate) fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn key_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// The keyring of the shared test data.
fn test_keyring() -> Keyring {
    Keyring::from_spec(&key_hex(0x42)).unwrap()
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&base_url(), postgres::NoTls).expect("connect to the test server")
}

/// A schema for one test, dropped (with its tables) when the test ends.
pub(crate) struct TestSchema {
    name: String,
}

impl TestSchema {
    /// Names a schema; the backend creates it on first connect.
    pub(crate) fn new(label: &str) -> TestSchema {
        TestSchema { name: format!("t_{}", unique(label).replace('-', "_")) }
    }

    pub(crate) fn url(&self) -> String {
        with_params(&base_url(), &format!("schema={}", self.name))
    }

    fn table(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.name)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Never panics: it may run while a test unwinds.
        let Ok(url) = std::env::var(URL_ENV) else { return };
        if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// What `StoreConfig` parses a PostgreSQL URL into.
fn pg_config(url: &str) -> PostgresConfig {
    match StoreConfig::parse(url) {
        Ok(StoreConfig::Postgres(config)) => config,
        other => panic!("{url} is not a PostgreSQL store URL: {other:?}"),
    }
}

fn connect(url: &str, keyring: Keyring) -> Arc<PostgresBackend> {
    Arc::new(PostgresBackend::connect(&pg_config(url), keyring).unwrap_or_else(|e| panic!("connect: {e}")))
}

fn store_all(backend: &PostgresBackend, entries: &[(String, Vec<u8>)]) {
    let mut t = backend.begin(Access::Write, "test").unwrap();
    for (k, v) in entries {
        t.store(k, v).unwrap();
    }
    t.commit().unwrap();
}

fn retrieve(backend: &PostgresBackend, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
    backend.begin(Access::Read, "test").unwrap().retrieve(key)
}

fn conformance_backend() -> Arc<dyn Backend> {
    static BACKEND: OnceLock<Arc<PostgresBackend>> = OnceLock::new();
    BACKEND.get_or_init(|| connect(&with_params(&base_url(), "schema=secrets_conformance"), test_keyring())).clone()
}

conformance_tests!(conformance_backend());

// ---------------------------------------------------------------------------
// Two host processes on one database.

/// Tells a re-executed test binary to act as one writer process:
/// `schema|tenant|sets|label|rendezvous-dir`.
const CHILD_ENV: &str = "SECRETS_TEST_POSTGRES_WRITER";
const CHILD_TEST: &str = "postgres::postgres_writer_process";
const SETS_PER_PROCESS: u32 = 20;

/// Two processes, each with its own backend, pool and sandbox, connect to a
/// fresh schema at the same time (racing to create it) and then set the
/// same key concurrently: versions come out exactly 1..=2N, each value once.
#[test]
fn two_processes_never_lose_a_version() {
    let schema = TestSchema::new("procs");
    let tenant = unique("procs");
    let rendezvous = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|label| {
            let spec = format!("{}|{tenant}|{SETS_PER_PROCESS}|{label}|{}", schema.name, rendezvous.path().display());
            let child = Command::new(&exe)
                .args(["--exact", CHILD_TEST, "--nocapture", "--include-ignored", "--test-threads=1"])
                .env(CHILD_ENV, spec)
                .env(URL_ENV, base_url())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("re-run the test binary");
            (label, child)
        })
        .collect();
    for (label, child) in children {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "writer {label} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("writer {label}: {SETS_PER_PROCESS} sets done")),
            "writer {label} did not run its sets:\n{stdout}\n{stderr}"
        );
    }

    let s = crate::common::service(connect(&schema.url(), test_keyring()));
    let scope = Scope::tenant(&tenant).unwrap();
    let versions: Vec<u32> = s.versions(&scope, "web", "K").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, (1..=2 * SETS_PER_PROCESS).collect::<Vec<_>>());
    let values: BTreeSet<String> = versions
        .iter()
        .map(|&v| String::from_utf8(s.get_version(&scope, "web", "K", v).unwrap().value.expose().to_vec()).unwrap())
        .collect();
    let expected: BTreeSet<String> =
        ["a", "b"].iter().flat_map(|l| (0..SETS_PER_PROCESS).map(move |i| format!("{l}-{i}"))).collect();
    assert_eq!(values, expected);
}

/// Not a test: the writer process that `two_processes_never_lose_a_version`
/// starts twice (with `SECRETS_TEST_POSTGRES_WRITER` set).
#[test]
#[ignore = "helper process of two_processes_never_lose_a_version, which runs it with SECRETS_TEST_POSTGRES_WRITER set"]
fn postgres_writer_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("{CHILD_TEST} is a helper of two_processes_never_lose_a_version; alone it does nothing");
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [schema, tenant, sets, label, dir] = parts[..] else { panic!("bad {CHILD_ENV}: {spec}") };
    let sets: u32 = sets.parse().unwrap();
    let url = with_params(&base_url(), &format!("schema={schema}"));
    let backend = connect(&url, test_keyring());
    let limits = Limits { max_versions_per_key: 1000, ..Limits::default() };
    let s = crate::common::service_with(backend, limits);
    let scope = Scope::tenant(tenant).unwrap();
    // Compile the component before the rendezvous, so both start together.
    crate::common::sandbox();
    let dir = Path::new(dir);
    std::fs::write(dir.join(format!("ready-{label}")), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(dir).unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "writer {label}: the other writer never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = Vec::new();
    for i in 0..sets {
        let req = SetRequest::new("web", "K", SecretType::Env, format!("{label}-{i}"));
        got.push(s.set(&scope, req).unwrap().version);
    }
    println!("writer {label}: {sets} sets done, versions {got:?}");
}

// ---------------------------------------------------------------------------
// Encryption at rest and the master key.

/// Row bytes never contain a stored value, are in the sealed format under
/// the generation recorded beside them, and open to the value.
#[test]
fn values_are_encrypted_at_rest() {
    let schema = TestSchema::new("rest");
    let backend = connect(&schema.url(), test_keyring());
    let canary = "canary-5d1e-plaintext-must-not-be-stored";
    let scope = Scope::tenant(&unique("rest")).unwrap();
    crate::common::service(backend.clone())
        .set(&scope, SetRequest::new("web", "TOKEN", SecretType::Env, canary))
        .unwrap();
    let raw_key = "t/72617721/raw";
    store_all(&backend, &[(raw_key.to_owned(), canary.as_bytes().to_vec())]);

    let rows =
        admin().query(&format!("SELECT key, value, generation FROM {}", schema.table("secrets_entries")), &[]).unwrap();
    assert!(rows.len() >= 2, "entries were written");
    let hex_canary = canary.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut found_raw = false;
    for row in rows {
        let (key, value, generation): (String, Vec<u8>, i32) = (row.get(0), row.get(1), row.get(2));
        assert!(!value.windows(canary.len()).any(|w| w == canary.as_bytes()), "{key} holds the plaintext");
        assert!(!value.windows(hex_canary.len()).any(|w| w == hex_canary.as_bytes()), "{key} holds hex plaintext");
        assert_eq!(sealed_generation(&value).unwrap(), generation as u32, "{key}");
        assert_eq!(generation, 1);
        if key == raw_key {
            found_raw = true;
            assert_eq!(test_keyring().open(&key, &value).unwrap(), canary.as_bytes());
        }
    }
    assert!(found_raw);
}

/// A ciphertext moved to another row does not open there.
#[test]
fn swapped_ciphertexts_are_corrupt() {
    let schema = TestSchema::new("swap");
    let backend = connect(&schema.url(), test_keyring());
    let (a, b) = ("t/61/i/77/a", "t/61/i/77/b");
    store_all(&backend, &[(a.into(), b"value-a".to_vec()), (b.into(), b"value-b".to_vec())]);
    assert_eq!(retrieve(&backend, a).unwrap().as_deref(), Some(&b"value-a"[..]));

    let table = schema.table("secrets_entries");
    let mut db = admin();
    let n = db
        .execute(
            &format!(
                "UPDATE {table} t SET value = o.value FROM {table} o
                 WHERE (t.key, o.key) IN (($1, $2), ($2, $1))"
            ),
            &[&a, &b],
        )
        .unwrap();
    assert_eq!(n, 2);
    for k in [a, b] {
        match retrieve(&backend, k) {
            Err(VaultError::Corrupt(m)) => assert!(!m.contains("value-"), "{m}"),
            other => panic!("{k}: expected Corrupt, got {other:?}"),
        }
    }
}

/// Connecting with another master key, or without the generation the store
/// was created under, fails at connect with a clear error.
#[test]
fn wrong_master_key_is_refused_at_connect() {
    let schema = TestSchema::new("wrongkey");
    let right = Keyring::from_spec(&key_hex(0xa1)).unwrap();
    store_all(&connect(&schema.url(), right.clone()), &[("t/00/k".into(), b"v".to_vec())]);

    let wrong = Keyring::from_spec(&key_hex(0xb2)).unwrap();
    match PostgresBackend::connect(&pg_config(&schema.url()), wrong) {
        Err(VaultError::Corrupt(m)) => assert!(m.contains("wrong master key"), "{m}"),
        other => panic!("expected a wrong-key error, got {:?}", other.map(|b| b.describe())),
    }
    let renumbered = Keyring::from_spec(&format!("2:{}", key_hex(0xa1))).unwrap();
    match PostgresBackend::connect(&pg_config(&schema.url()), renumbered) {
        Err(VaultError::Corrupt(m)) => assert!(m.contains("wrong master key") && m.contains("generation 1"), "{m}"),
        other => panic!("expected a missing-generation error, got {:?}", other.map(|b| b.describe())),
    }
    let again = connect(&schema.url(), right);
    assert_eq!(retrieve(&again, "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// The generations the store has key checks for.
fn key_check_generations(schema: &TestSchema) -> Vec<i32> {
    admin()
        .query(&format!("SELECT generation FROM {} ORDER BY generation", schema.table("secrets_key_checks")), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `PostgresBackend::connect` must fail with `Corrupt`; returns the message.
fn refused(url: &str, keyring: Keyring) -> String {
    match PostgresBackend::connect(&pg_config(url), keyring) {
        Err(VaultError::Corrupt(m)) => m,
        other => panic!("expected a refusal at connect, got {:?}", other.map(|b| b.describe())),
    }
}

/// `PostgresBackend::connect` must refuse a keyring that retired a
/// generation still in use: `Rejected` (a configuration error, not
/// corruption); returns the message.
fn lacking(url: &str, keyring: Keyring) -> String {
    match PostgresBackend::connect(&pg_config(url), keyring) {
        Err(VaultError::Rejected(m)) => m,
        other => panic!("expected a refusal at connect, got {:?}", other.map(|b| b.describe())),
    }
}

/// A keyring lacking a generation that entries are sealed under is refused
/// at connect, naming the generation and what to do; until an entry uses
/// the new generation, the older keyring still connects.
#[test]
fn a_keyring_lacking_a_generation_in_use_is_refused() {
    let schema = TestSchema::new("lackgen");
    let (k1, k2) = (key_hex(0x31), key_hex(0x32));
    let gen1 = || Keyring::from_spec(&format!("1:{k1}")).unwrap();
    store_all(&connect(&schema.url(), gen1()), &[("t/00/old".into(), b"one".to_vec())]);
    assert_eq!(key_check_generations(&schema), vec![1]);

    let both = connect(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap());
    assert_eq!(key_check_generations(&schema), vec![1, 2], "a keyring with a newer generation adds its check");
    drop(connect(&schema.url(), gen1()));
    store_all(&both, &[("t/00/new-a".into(), b"two".to_vec()), ("t/00/new-b".into(), b"two".to_vec())]);

    let m = lacking(&schema.url(), gen1());
    assert!(
        m.contains("generation 2") && m.contains("2 entries under generation 2") && m.contains("rotate-all"),
        "{m}"
    );
    assert!(!m.contains("wrong master key"), "not a wrong key, a missing one: {m}");
    // The refusal wrote nothing; the full keyring still reads everything.
    assert_eq!(key_check_generations(&schema), vec![1, 2]);
    let again = connect(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap());
    assert_eq!(retrieve(&again, "t/00/old").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(retrieve(&again, "t/00/new-a").unwrap().as_deref(), Some(&b"two"[..]));
}

/// Once generation 2 has a key check, a keyring with the right number but
/// a wrong key for it (or for generation 1) is refused at connect.
#[test]
fn a_wrong_key_under_a_known_generation_is_refused() {
    let schema = TestSchema::new("typo");
    let (k1, k2, typo) = (key_hex(0x41), key_hex(0x42), key_hex(0x4f));
    store_all(&connect(&schema.url(), Keyring::from_spec(&k1).unwrap()), &[("t/00/k".into(), b"v".to_vec())]);
    drop(connect(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap()));
    assert_eq!(key_check_generations(&schema), vec![1, 2]);

    let m = refused(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{typo}")).unwrap());
    assert!(m.contains("wrong master key") && m.contains("generation 2"), "{m}");
    let m = refused(&schema.url(), Keyring::from_spec(&format!("1:{typo},2:{k2}")).unwrap());
    assert!(m.contains("wrong master key") && m.contains("generation 1"), "{m}");
    let m = refused(&schema.url(), Keyring::from_spec(&format!("2:{typo}")).unwrap());
    assert!(m.contains("wrong master key") && m.contains("generation 2"), "{m}");

    let right = connect(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap());
    assert_eq!(retrieve(&right, "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// rotate_all moves every row to the newest generation in batches;
/// before, a keyring holding only that generation is refused, afterwards it
/// connects and reads everything.
#[test]
fn rotate_all_moves_every_row_to_the_newest_generation() {
    let schema = TestSchema::new("rotate");
    let (k1, k2) = (key_hex(0x11), key_hex(0x22));
    let old = connect(&schema.url(), Keyring::from_spec(&k1).unwrap());
    let entries: Vec<(String, Vec<u8>)> =
        (0..250).map(|i| (format!("t/00/rot/{i:03}"), format!("value-{i}").into_bytes())).collect();
    store_all(&old, &entries);
    let scope = Scope::tenant(&unique("rotate")).unwrap();
    crate::common::service(old)
        .set(&scope, SetRequest::new("web", "K", SecretType::Env, "through-the-component"))
        .unwrap();
    let table = schema.table("secrets_entries");
    let mut db = admin();
    let rows: i64 = db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).unwrap().get(0);
    assert!(rows > 250);

    let both = connect(&schema.url(), Keyring::from_spec(&format!("1:{k1},2:{k2}")).unwrap());
    let m = lacking(&schema.url(), Keyring::from_spec(&format!("2:{k2}")).unwrap());
    assert!(m.contains(&format!("{rows} entries under generation 1")) && m.contains("rotate-all"), "{m}");
    let mut calls = Vec::new();
    let moved = both.rotate_all(&mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!(moved, rows as u64);
    assert_eq!(calls.last(), Some(&(moved, moved)), "{calls:?}");
    assert!(calls.len() >= 4, "initial call and at least three batches: {calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "progress goes forward: {calls:?}");

    for row in db.query(&format!("SELECT key, value, generation FROM {table}"), &[]).unwrap() {
        let (key, value, generation): (String, Vec<u8>, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((generation, sealed_generation(&value).unwrap()), (2, 2), "{key}");
    }
    assert_eq!(key_check_generations(&schema), vec![1, 2], "the newest generation has a key check");
    assert_eq!(both.rotate_all(&mut |_, _| {}).unwrap(), 0, "nothing left to rotate");

    let only_new = connect(&schema.url(), Keyring::from_spec(&format!("2:{k2}")).unwrap());
    for (k, v) in &entries {
        assert_eq!(retrieve(&only_new, k).unwrap().as_ref(), Some(v), "{k}");
    }
    let s = crate::common::service(only_new);
    assert_eq!(s.get(&scope, "web", "K").unwrap().value.expose(), b"through-the-component");
}

// ---------------------------------------------------------------------------
// Schema, URL and connections.

/// A schema newer than this build knows is refused, naming the versions.
#[test]
fn newer_schema_versions_are_refused() {
    let schema = TestSchema::new("newer");
    drop(connect(&schema.url(), test_keyring()));
    let newer = SCHEMA_VERSION + 1;
    admin().execute(&format!("UPDATE {} SET version = $1", schema.table("secrets_schema_version")), &[&newer]).unwrap();
    match PostgresBackend::connect(&pg_config(&schema.url()), test_keyring()) {
        Err(VaultError::Rejected(m)) => {
            assert!(m.contains("newer") && m.contains(&newer.to_string()), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|b| b.describe())),
    }
}

/// A store created by a build with schema version 1 (one key-check row)
/// migrates: its key check becomes generation 1's, still refusing a wrong
/// key, and its entries stay readable.
#[test]
fn version_1_stores_are_migrated() {
    let schema = TestSchema::new("v1");
    let key = Keyring::from_spec(&key_hex(0x51)).unwrap();
    let check = key.seal("secrets:postgres:key-check", b"secrets postgres key check v1").unwrap();
    let entry = key.seal("t/00/old", b"from-v1").unwrap();
    let (version, entries, old_check) =
        (schema.table("secrets_schema_version"), schema.table("secrets_entries"), schema.table("secrets_key_check"));
    let mut db = admin();
    // What the version-1 build created.
    db.batch_execute(&format!(
        "CREATE SCHEMA \"{name}\";
         CREATE TABLE {version} (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), version INTEGER NOT NULL);
         INSERT INTO {version} (id, version) VALUES (TRUE, 1);
         CREATE TABLE {entries} (key TEXT PRIMARY KEY, value BYTEA NOT NULL, generation INTEGER NOT NULL);
         CREATE INDEX secrets_entries_generation ON {entries} (generation);
         CREATE TABLE {old_check} (
             id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), value BYTEA NOT NULL, generation INTEGER NOT NULL
         );",
        name = schema.name
    ))
    .unwrap();
    db.execute(&format!("INSERT INTO {old_check} (id, value, generation) VALUES (TRUE, $1, 1)"), &[&check]).unwrap();
    db.execute(&format!("INSERT INTO {entries} (key, value, generation) VALUES ('t/00/old', $1, 1)"), &[&entry])
        .unwrap();

    let backend = connect(&schema.url(), key);
    let now: i32 = db.query_one(&format!("SELECT version FROM {version}"), &[]).unwrap().get(0);
    assert_eq!(now, SCHEMA_VERSION);
    let gone: bool = db.query_one("SELECT to_regclass($1) IS NULL", &[&old_check]).unwrap().get(0);
    assert!(gone, "the version-1 key-check table is dropped");
    let rows = db.query(&format!("SELECT generation, value FROM {}", schema.table("secrets_key_checks")), &[]).unwrap();
    let carried: Vec<(i32, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(carried, vec![(1, check)], "the key check is carried over, not re-created");
    assert_eq!(retrieve(&backend, "t/00/old").unwrap().as_deref(), Some(&b"from-v1"[..]));

    let m = refused(&schema.url(), Keyring::from_spec(&key_hex(0x5f)).unwrap());
    assert!(m.contains("wrong master key"), "{m}");
}

/// Replicas starting at once on an empty schema all connect; the schema and
/// the key check are created once.
#[test]
fn concurrent_first_connects_create_the_schema_once() {
    const N: usize = 6;
    let schema = TestSchema::new("first");
    let url = schema.url();
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresBackend::connect(&pg_config(&url), test_keyring())
            })
        })
        .collect();
    let backends: Vec<PostgresBackend> =
        handles.into_iter().map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("concurrent connect: {e}"))).collect();
    let mut db = admin();
    let versions: Vec<i32> = db
        .query(&format!("SELECT version FROM {}", schema.table("secrets_schema_version")), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![SCHEMA_VERSION]);
    let checks: i64 =
        db.query_one(&format!("SELECT count(*) FROM {}", schema.table("secrets_key_checks")), &[]).unwrap().get(0);
    assert_eq!(checks, 1);
    store_all(&backends[0], &[("t/00/shared".into(), b"v".to_vec())]);
    assert_eq!(retrieve(&backends[N - 1], "t/00/shared").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Opening from the store URL takes the key from the environment or `key_file=`, and with
/// neither refuses, naming both.
#[test]
fn from_url_needs_a_shared_key_source() {
    let schema = TestSchema::new("keysrc");
    let env_key = std::env::var_os(MASTER_KEY_ENV).is_some();
    if !env_key {
        match PostgresBackend::from_config(&pg_config(&schema.url())) {
            Err(VaultError::Rejected(m)) => assert!(m.contains(MASTER_KEY_ENV) && m.contains("key_file="), "{m}"),
            other => panic!("expected a refusal without a key, got {:?}", other.map(|b| b.describe())),
        }
    } else {
        eprintln!("{MASTER_KEY_ENV} is set in this environment: the no-key refusal is not checked");
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    let url = with_params(&schema.url(), &format!("key_file={}", key_file.display()));
    let backend = PostgresBackend::from_config(&pg_config(&url)).unwrap_or_else(|e| panic!("open with key_file: {e}"));
    store_all(&backend, &[("t/00/k".into(), b"v".to_vec())]);
    let again = PostgresBackend::from_config(&pg_config(&url)).unwrap();
    assert_eq!(retrieve(&again, "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
    if !env_key {
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
        let from_file = connect(&schema.url(), Keyring::load_or_create(&key_file).unwrap());
        assert_eq!(retrieve(&from_file, "t/00/k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}

/// An unreachable server is `Unavailable`; messages and `describe` never
/// show a password.
#[test]
fn connection_errors_are_unavailable_and_hide_passwords() {
    for url in [
        "postgres://someone:hunter2-pw@127.0.0.1:1/db?connect_timeout=5",
        "postgresql://someone@127.0.0.1:1/db?password=hunter2-pw&connect_timeout=5",
    ] {
        match PostgresBackend::connect(&pg_config(url), test_keyring()) {
            Err(VaultError::Unavailable(m)) => {
                assert!(m.contains("127.0.0.1:1") && !m.contains("hunter2"), "{m}")
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|b| b.describe())),
        }
    }
    // The test server trusts every connection, so a password is accepted
    // and ignored: describe() must still hide it.
    let schema = TestSchema::new("describe");
    let url = with_params(&schema.url(), "password=s3cret-pw");
    let described = connect(&url, test_keyring()).describe();
    assert!(described.starts_with("postgres") && !described.contains("s3cret-pw"), "{described}");
}

/// A pooled connection that the server dropped is replaced, not handed to
/// a call: with a pool of one, the next call still works.
#[test]
fn dead_pooled_connections_are_replaced() {
    let schema = TestSchema::new("stale");
    let app = schema.name.clone();
    let backend = connect(&with_params(&schema.url(), &format!("pool_size=1&application_name={app}")), test_keyring());
    store_all(&backend, &[("t/00/a".into(), b"1".to_vec())]);

    let mut db = admin();
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the pool holds an idle connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 =
            db.query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", &[&app]).unwrap().get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the terminated connection lingers");
        std::thread::sleep(Duration::from_millis(20));
    }

    store_all(&backend, &[("t/00/b".into(), b"2".to_vec())]);
    assert_eq!(retrieve(&backend, "t/00/a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(retrieve(&backend, "t/00/b").unwrap().as_deref(), Some(&b"2"[..]));
}

/// After a statement fails, PostgreSQL would turn COMMIT into a silent
/// ROLLBACK: commit must report the failure instead, and nothing lands. A
/// failed read aborts the transaction at once; a failed write (writes are
/// sent with COMMIT) fails the commit.
#[test]
fn a_failed_statement_makes_commit_fail() {
    let schema = TestSchema::new("aborted");
    let backend = connect(&schema.url(), test_keyring());
    let mut t = backend.begin(Access::Write, "test").unwrap();
    t.store("t/00/good", b"v").unwrap();
    // PostgreSQL text cannot hold NUL: the statement fails.
    assert!(t.retrieve("t/00/bad\0key").is_err());
    assert!(t.retrieve("t/00/good").is_err(), "an aborted transaction answers nothing");
    assert!(t.store("t/00/other", b"w").is_err(), "an aborted transaction takes no writes");
    assert!(t.commit().is_err(), "commit after a failed statement must fail");
    assert_eq!(retrieve(&backend, "t/00/good").unwrap(), None);

    let mut t = backend.begin(Access::Write, "test").unwrap();
    t.store("t/00/good", b"v").unwrap();
    t.store("t/00/bad\0key", b"x").unwrap();
    let err = t.commit().expect_err("a failed write fails the commit");
    assert!(err.to_string().contains("committing"), "{err}");
    assert_eq!(retrieve(&backend, "t/00/good").unwrap(), None, "nothing of it landed");
    // The connection went back to the pool in a usable state.
    store_all(&backend, &[("t/00/after".into(), b"w".to_vec())]);
    assert_eq!(retrieve(&backend, "t/00/after").unwrap().as_deref(), Some(&b"w"[..]));
}

/// Writers on one scope wait for each other even in separate backends
/// (separate pools, like separate processes): the second writer's read
/// sees the first writer's commit.
#[test]
fn writers_on_one_scope_wait_for_each_other() {
    let schema = TestSchema::new("lock");
    let (one, two) = (connect(&schema.url(), test_keyring()), connect(&schema.url(), test_keyring()));
    let mut first = one.begin(Access::Write, "t/00/scope").unwrap();
    // The lock is taken with the first request.
    assert_eq!(first.retrieve("t/00/counter").unwrap(), None);
    first.store("t/00/counter", b"1").unwrap();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let mut second = two.begin(Access::Write, "t/00/scope").unwrap();
        let seen = second.retrieve("t/00/counter").unwrap();
        second.commit().unwrap();
        (started.elapsed(), seen)
    });
    std::thread::sleep(Duration::from_millis(300));
    // Another scope is not blocked meanwhile.
    let mut other = one.begin(Access::Write, "t/00/other-scope").unwrap();
    other.store("t/00/x", b"x").unwrap();
    other.commit().unwrap();
    first.commit().unwrap();
    let (waited, seen) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(250), "the second writer did not wait: {waited:?}");
    assert_eq!(seen.as_deref(), Some(&b"1"[..]), "the second writer sees the first one's commit");
}

/// The shared master-key suite on PostgreSQL, a schema per case.
mod sealed_suite {
    use super::*;

    impl crate::sealed::Harness for TestSchema {
        fn open(&self, keyring: Keyring) -> Result<Arc<dyn Backend>, VaultError> {
            Ok(Arc::new(PostgresBackend::connect(&pg_config(&self.url()), keyring)?))
        }
        fn set_generation_column(&self, key: &str, generation: i64) {
            let sql = format!("UPDATE {} SET generation = $2 WHERE key = $1", self.table("secrets_entries"));
            assert_eq!(admin().execute(&sql, &[&key, &(generation as i32)]).unwrap(), 1);
        }
        fn key_check(&self, generation: i64) -> Vec<u8> {
            let sql = format!("SELECT value FROM {} WHERE generation = $1", self.table("secrets_key_checks"));
            admin().query_one(&sql, &[&(generation as i32)]).unwrap().get(0)
        }
        fn set_key_check(&self, generation: i64, sealed: &[u8]) {
            let sql = format!("UPDATE {} SET value = $2 WHERE generation = $1", self.table("secrets_key_checks"));
            assert_eq!(admin().execute(&sql, &[&(generation as i32), &sealed]).unwrap(), 1);
        }
    }

    crate::sealed_tests!(TestSchema::new("sealed"));
}

/// The durable server's URL (fsync and synchronous_commit on) with a schema
/// of its own; missing is a failure, never a skip.
fn durable_url(label: &str) -> String {
    let url = match std::env::var(DURABLE_URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("{DURABLE_URL_ENV} is not set: the crash tests need the durable server `.ci/postgres.sh` starts"),
    };
    // The settings that make an acknowledged commit survive a crash.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the durable test server");
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        let value: String = c.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0);
        assert_eq!(value, "on", "{setting} on the durable test server");
    }
    with_params(&url, &format!("schema=t_{}", unique(label).replace('-', "_")))
}

const DURABLE_URL_ENV: &str = "SECRETS_TEST_POSTGRES_DURABLE_URL";

/// Held by the tests on the durable server: one of them crashes it.
static DURABLE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const DURABLE_RESTART_ENV: &str = "SECRETS_TEST_POSTGRES_DURABLE_RESTART";

/// Writers SIGKILLed at random moments, 20 rounds, on the durable server: no
/// acknowledged version is lost, versions stay gapless (see crash.rs).
#[test]
fn killed_writers_lose_no_acknowledged_version() {
    let _one_at_a_time = DURABLE.lock().unwrap_or_else(|e| e.into_inner());
    let url = durable_url("crash");
    let n = crate::crash::kill_writers_at_random(&url, || {
        connect(&url, Keyring::from_spec(crate::crash::MASTER_KEY).unwrap())
    });
    eprintln!("postgres: {} rounds, {n} acknowledged sets checked", crate::crash::ROUNDS);
}

/// The durable server crashed (immediate shutdown: no checkpoint, crash
/// recovery at start) and restarted 5 times under two writers that retry:
/// every acknowledged version survives with its own value, versions stay
/// gapless, and the writers carry on through fresh connections.
#[test]
fn server_crashes_lose_no_acknowledged_version() {
    let _one_at_a_time = DURABLE.lock().unwrap_or_else(|e| e.into_inner());
    let url = durable_url("restart");
    let restart = std::env::var(DURABLE_RESTART_ENV)
        .unwrap_or_else(|_| panic!("{DURABLE_RESTART_ENV} is not set: `.ci/postgres.sh` writes that script"));
    let (acked, retried) = crate::crash::restart_server_under_writers(&url, Path::new(&restart), 5, || {
        connect(&url, Keyring::from_spec(crate::crash::MASTER_KEY).unwrap())
    });
    assert!(retried > 0, "no call failed: the restarts did not happen under the writers");
    eprintln!("postgres: 5 server crashes, {acked} acknowledged sets checked, {retried} failed calls retried");
}

// ---------------------------------------------------------------------------
// Faults: a stalled client must not freeze the store.

/// The store-wide schema lock, as the backend names it.
fn migrate_lock_key(schema: &TestSchema) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("secrets:migrate:{}", schema.name).as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap())
}

/// Runs `f` on a thread and fails if it takes longer than `limit` (the
/// thread is left behind: it is stuck, which is the failure).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("still waiting after {limit:?}"))
}

/// A client holding the store-wide schema lock (stalled in its start-up
/// check) freezes nobody: connecting to a store that is set up takes no
/// lock, and reads go on. A connect that must write (a new store) waits at
/// most `lock_timeout` and says what it waited for.
#[test]
fn a_stalled_client_holding_the_schema_lock_freezes_nobody() {
    let schema = TestSchema::new("stall");
    let scope = Scope::tenant(&unique("stall")).unwrap();
    crate::common::service(connect(&schema.url(), test_keyring()))
        .set(&scope, SetRequest::new("web", "K", SecretType::Env, "v"))
        .unwrap();
    let mut stalled = admin();
    let mut holding = stalled.transaction().unwrap();
    holding.execute("SELECT pg_advisory_xact_lock($1)", &[&migrate_lock_key(&schema)]).unwrap();

    let url = with_params(&schema.url(), "lock_timeout=2");
    let got = within(Duration::from_secs(20), {
        let (url, scope) = (url.clone(), scope.clone());
        move || {
            let s = crate::common::service(connect(&url, test_keyring()));
            s.get(&scope, "web", "K").unwrap().value.expose().to_vec()
        }
    });
    assert_eq!(got, b"v");

    let fresh = TestSchema::new("stallnew");
    let mut other = admin();
    let mut holding_new = other.transaction().unwrap();
    holding_new.execute("SELECT pg_advisory_xact_lock($1)", &[&migrate_lock_key(&fresh)]).unwrap();
    let started = Instant::now();
    let url = with_params(&fresh.url(), "lock_timeout=1.5");
    let err = within(Duration::from_secs(20), move || {
        PostgresBackend::connect(&pg_config(&url), test_keyring()).err().expect("refused while the lock is held")
    });
    let waited = started.elapsed();
    assert!(matches!(&err, VaultError::Unavailable(m) if m.contains("schema lock") && m.contains("lock_timeout")), "{err:?}");
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(15), "{waited:?}");
    holding_new.rollback().unwrap();
    holding.rollback().unwrap();
}

/// A writer waiting on an instance lock that a stuck client holds gives up
/// after `lock_timeout` with an error saying so.
#[test]
fn a_writer_behind_a_stuck_writer_gives_up_after_lock_timeout() {
    let schema = TestSchema::new("stuckw");
    let url = with_params(&schema.url(), "lock_timeout=1");
    let backend = connect(&url, test_keyring());
    let mut stuck = backend.begin(Access::Write, "t/00/same-instance").unwrap();
    // The lock is taken with the first request.
    assert_eq!(stuck.retrieve("t/00/x").unwrap(), None);
    let started = Instant::now();
    let mut second = backend.begin(Access::Write, "t/00/same-instance").unwrap();
    let err = second.retrieve("t/00/x").expect_err("the second writer gives up");
    assert!(matches!(&err, VaultError::Unavailable(m) if m.contains("lock_timeout")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop((stuck, second));
    backend.begin(Access::Write, "t/00/same-instance").unwrap().retrieve("t/00/x").unwrap();
}

// ---------------------------------------------------------------------------
// A server that stops answering.

/// `url` pointing at `addr` instead of the test server's host and port.
pub(crate) fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("the test URL names a user");
    let path = &rest[rest.find('/').expect("the test URL names a database")..];
    format!("{scheme_user}@{addr}{path}")
}

/// The test server's address.
pub(crate) fn server_addr() -> std::net::SocketAddr {
    let url = base_url();
    let host_port = url.split_once('@').unwrap().1.split('/').next().unwrap().to_owned();
    std::net::ToSocketAddrs::to_socket_addrs(&host_port).unwrap().next().unwrap()
}

/// A server that stops answering (SIGSTOPped, hung, or cut off without the
/// connection closing: a proxy stops forwarding) fails every call after
/// `timeout` (plus `lock_timeout` for a writer) with an error saying so,
/// new connections included; once it answers again, calls work again on
/// fresh connections.
#[test]
fn a_server_that_stops_answering_fails_calls_in_time() {
    let schema = TestSchema::new("silent");
    let proxy = crate::fault_proxy::FaultProxy::start(server_addr());
    let url = with_params(&via(&schema.url(), proxy.addr()), "timeout=1&lock_timeout=1");
    let backend = connect(&url, test_keyring());
    let scope = Scope::tenant(&unique("silent")).unwrap();
    let s = Arc::new(crate::common::service(backend));
    s.set(&scope, SetRequest::new("web", "K", SecretType::Env, "v1")).unwrap();
    s.list(&scope, "web").unwrap();

    proxy.freeze();
    type Call = fn(&secrets_host::Secrets, &Scope) -> Result<(), secrets_host::Error>;
    // A reader waits `timeout` (1 s); a writer `timeout` more for its lock
    // (unless it fails connecting: the pool's connection was left broken).
    let calls: [(&str, Call, Duration); 3] = [
        ("get", |s, scope| s.get(scope, "web", "K").map(drop), Duration::from_secs(1)),
        ("list", |s, scope| s.list(scope, "web").map(drop), Duration::from_secs(1)),
        ("set", |s, scope| s.set(scope, SetRequest::new("web", "K", SecretType::Env, "v2")).map(drop), Duration::from_secs(2)),
    ];
    for (name, call, most) in calls {
        let started = Instant::now();
        let err = within(Duration::from_secs(30), {
            let (s, scope) = (s.clone(), scope.clone());
            move || call(&s, &scope).err()
        })
        .unwrap_or_else(|| panic!("{name} succeeded against a silent server"));
        let waited = started.elapsed();
        let msg = err.to_string();
        assert!(msg.contains("did not answer in time") && msg.contains("timeout="), "{name}: {msg}");
        assert!(!msg.contains('\n'), "{name}: one line: {msg:?}");
        assert!(waited >= Duration::from_millis(900) && waited < most + Duration::from_secs(5), "{name}: {waited:?}");
    }
    // Connecting: the TCP handshake succeeds, the server's answer never comes.
    let started = Instant::now();
    let err = within(Duration::from_secs(30), {
        let url = url.clone();
        move || PostgresBackend::connect(&pg_config(&url), test_keyring()).err()
    })
    .expect("connecting to a silent server fails");
    assert!(matches!(&err, VaultError::Unavailable(m) if m.contains("connecting") && m.contains("did not answer in time")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());

    proxy.thaw();
    assert_eq!(s.get(&scope, "web", "K").unwrap().value.expose(), b"v1", "nothing was written while frozen");
    assert_eq!(s.set(&scope, SetRequest::new("web", "K", SecretType::Env, "v2")).unwrap().version, 2);
}

/// `timeout=` is parsed and bounded like the other durations.
#[test]
fn the_timeout_parameter_is_validated() {
    assert_eq!(pg_config("postgres://u@h/db?timeout=2.5").timeout, Duration::from_millis(2500));
    assert_eq!(pg_config("postgres://u@h/db").timeout, secrets_host::backends::postgres::DEFAULT_TIMEOUT);
    for bad in ["0", "-1", "x", "1e9"] {
        let err = StoreConfig::parse(&format!("postgres://u@h/db?timeout={bad}")).expect_err(bad);
        assert!(matches!(&err, VaultError::Rejected(m) if m.contains("timeout=")), "{bad}: {err:?}");
    }
}

// ---------------------------------------------------------------------------
// Round trips per call, counted (not timed).

/// The round trips (requests sent and waited for) each exported call costs
/// on a warm pool, for an instance of 20 env keys and one file: a
/// regression fails here. Reads send BEGIN with their first request and end
/// without waiting; writers send their writes with COMMIT.
#[test]
fn round_trips_per_call_are_pinned() {
    let schema = TestSchema::new("trips");
    let backend = connect(&schema.url(), test_keyring());
    let s = crate::common::service(backend.clone());
    let scope = Scope::tenant(&unique("trips")).unwrap();
    for i in 0..20 {
        s.set(&scope, SetRequest::new("web", &format!("K{i:02}"), SecretType::Env, format!("v{i}"))).unwrap();
    }
    s.set(&scope, SetRequest::new("web", "config.json", SecretType::File, "{}")).unwrap();
    let cost = |call: &dyn Fn()| {
        call(); // warm: the pool's connection exists
        let before = backend.round_trips();
        call();
        backend.round_trips() - before
    };
    let measured = [
        ("get", cost(&|| drop(s.get(&scope, "web", "K03").unwrap()))),
        ("versions", cost(&|| drop(s.versions(&scope, "web", "K03").unwrap()))),
        ("list", cost(&|| drop(s.list(&scope, "web").unwrap()))),
        ("inject (20 env keys)", cost(&|| drop(s.inject(&scope, "web").unwrap()))),
        ("mounts (1 file)", cost(&|| drop(s.mounts(&scope, "web").unwrap()))),
        ("set", cost(&|| drop(s.set(&scope, SetRequest::new("web", "K03", SecretType::Env, "new")).unwrap()))),
        ("rotate", cost(&|| assert!(s.rotate(&scope, "web", "K03").unwrap() > 0))),
    ];
    eprintln!("postgres round trips: {measured:?}");
    // The key record carries the current value and the index every
    // current value: reads are one query.
    let expected = [
        ("get", 1),
        ("versions", 1),
        ("list", 1),
        ("inject (20 env keys)", 1),
        ("mounts (1 file)", 1),
        ("set", 2),
        ("rotate", 3),
    ];
    assert_eq!(measured, expected);
    // A new key, and deleting it.
    let before = backend.round_trips();
    s.set(&scope, SetRequest::new("web", "NEW", SecretType::Env, "n")).unwrap();
    let set_new = backend.round_trips() - before;
    let before = backend.round_trips();
    s.delete(&scope, "web", "NEW").unwrap();
    let delete = backend.round_trips() - before;
    assert_eq!((set_new, delete), (2, 2), "set of a new key, delete");
    // Independent of the number of keys.
    for i in 20..100 {
        s.set(&scope, SetRequest::new("web", &format!("K{i:02}"), SecretType::Env, format!("v{i}"))).unwrap();
    }
    assert_eq!(cost(&|| assert_eq!(s.inject(&scope, "web").unwrap().len(), 100)), 1, "inject of 100 env keys");
}
