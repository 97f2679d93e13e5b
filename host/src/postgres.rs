//! The PostgreSQL backend: one database shared by several host replicas,
//! values encrypted at rest.
//!
//! # URL
//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DB?PARAMS` (or `postgresql://`).
//! Every parameter of the `postgres` crate is accepted (`sslmode`,
//! `connect_timeout`, `application_name`, `options`, ...), plus these,
//! which this backend consumes before connecting:
//! - `key_file=PATH`: the master key file (see [`Keyring::load_or_create`]),
//!   used when `SECRETS_MASTER_KEY` is not set. One of the two is required:
//!   every replica must use the same keys, so no per-host key file is ever
//!   created silently.
//! - `schema=NAME`: keep the tables in this schema (created if missing);
//!   lower-case letters, digits and `_`. Default: the connection's
//!   `search_path` (usually `public`).
//! - `pool_size=N`: at most N connections per process (default 10).
//!
//! This build connects without TLS (`sslmode=require` fails): reach the
//! server over loopback, a Unix socket or a tunnel.
//!
//! # Guarantees
//! - **Atomic per call.** Every transaction is one PostgreSQL transaction
//!   on one connection: all of a call's writes commit together or not at
//!   all. A transaction dropped without commit is rolled back; a
//!   transaction in which any statement failed never reports a successful
//!   commit (PostgreSQL would silently turn that COMMIT into a ROLLBACK).
//! - **Writers on one instance serialise across processes.** A write
//!   transaction takes `pg_advisory_xact_lock` on a 64-bit hash of its
//!   lock scope (tenant and instance) before its first read, at READ
//!   COMMITTED, so each writer sees everything the previous one committed:
//!   replicas of the host never lose a version. Hash collisions only
//!   serialise more coarsely. Read transactions take no lock and read one
//!   consistent snapshot (REPEATABLE READ, READ ONLY).
//! - **Encrypted at rest, in the same format as SQLite.** Values are sealed
//!   by [`SealedTxn`] with the [`Keyring`] (XChaCha20-Poly1305, associated
//!   data binding the vault key and key generation), so a ciphertext moved
//!   to another row or tenant fails to open with [`VaultError::Corrupt`].
//! - **Wrong keys fail at connect.** The store keeps one key-check entry
//!   per master key generation, written under the newest generation the
//!   first time a keyring holding it connects. Connecting verifies every
//!   key check whose generation the keyring holds, and refuses a keyring
//!   that shares no generation with the store, one whose key does not open
//!   the check of its generation, or one lacking a generation that entries
//!   are still sealed under (run rotate-all before retiring a generation).
//! - **Schema versioning.** The schema carries a version number; connecting
//!   migrates it forward under an advisory lock (so replicas starting at
//!   once do not race) and refuses a schema newer than this build knows.
//! - **Key rotation.** [`Backend::rotate_all`] checks the keyring again,
//!   then re-seals every row under an older generation, in batches of
//!   [`ROTATE_BATCH`] rows, each batch its own transaction; rows being
//!   written meanwhile are skipped and retried, never overwritten with
//!   stale plaintext. Key checks of older generations are kept: a keyring
//!   that still lists such a generation must hold its right key.
//!
//! # Not protected
//! Vault keys (hex-encoded tenant, instance and key names), row counts,
//! value sizes and write times are visible to anyone who can read the
//! database. Whoever can write to it can delete rows or put back an older
//! ciphertext of the same entry (a rollback that authentication cannot
//! detect). The master key protects nothing from a process that holds it.
//! The connection itself is not encrypted by this build.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::{Client, Config, GenericClient, NoTls, Statement};
use sha2::{Digest, Sha256};

use crate::crypto::{Keyring, MASTER_KEY_ENV, sealed_generation};
use crate::sealed::{RawTxn, SealedTxn};
use crate::store_url::redact_url;
use crate::vault::{Access, Backend, Transaction, VaultError};

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Rows re-sealed per transaction by [`Backend::rotate_all`].
pub const ROTATE_BATCH: i64 = 100;

/// Connections per process unless the URL says `pool_size=N`.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// How long a call waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Used when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The key-check entries: this plaintext sealed for this vault key, one
/// entry per master key generation.
const KEY_CHECK_KEY: &str = "secrets:postgres:key-check";
const KEY_CHECK_PLAIN: &[u8] = b"secrets postgres key check v1";

/// Migration `i` moves the schema from version `i` to `i + 1`.
/// `{entries}`, `{key_check}` and `{key_checks}` are replaced by the
/// (qualified) table names. Append only: never edit a released migration.
const MIGRATIONS: &[&str] = &[
    // 1: entries and the key check.
    "CREATE TABLE IF NOT EXISTS {entries} (
         key TEXT PRIMARY KEY,
         value BYTEA NOT NULL,
         generation INTEGER NOT NULL
     );
     CREATE INDEX IF NOT EXISTS secrets_entries_generation ON {entries} (generation);
     CREATE TABLE IF NOT EXISTS {key_check} (
         id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
         value BYTEA NOT NULL,
         generation INTEGER NOT NULL
     );",
    // 2: one key check per generation; the single key check of version 1
    // becomes the check of the generation it was sealed under.
    "CREATE TABLE IF NOT EXISTS {key_checks} (
         generation INTEGER PRIMARY KEY,
         value BYTEA NOT NULL
     );
     INSERT INTO {key_checks} (generation, value) SELECT generation, value FROM {key_check}
         ON CONFLICT (generation) DO NOTHING;
     DROP TABLE IF EXISTS {key_check};",
];

/// A PostgreSQL backend: a pool of connections and the keyring.
pub struct PostgresBackend {
    pool: Arc<Pool>,
    keyring: Arc<Keyring>,
}

/// The parts of a store URL this backend consumes, and the rest.
struct ParsedUrl {
    /// The URL for the `postgres` crate: our parameters removed.
    conn_url: String,
    /// For messages: the original URL, passwords hidden.
    redacted: String,
    key_file: Option<std::path::PathBuf>,
    schema: Option<String>,
    pool_size: usize,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<ParsedUrl, VaultError> {
        let redacted = redact(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(VaultError::Rejected(format!(
                "{redacted} is not a PostgreSQL URL (postgres://... or postgresql://...)"
            )));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let (mut key_file, mut schema, mut pool_size) = (None, None, DEFAULT_POOL_SIZE);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "key_file" => {
                    let path = percent_decode(value)
                        .map_err(|m| VaultError::Rejected(format!("{redacted}: key_file: {m}")))?;
                    if path.is_empty() {
                        return Err(VaultError::Rejected(format!("{redacted}: key_file is empty")));
                    }
                    key_file = Some(std::path::PathBuf::from(path));
                }
                "schema" => {
                    let name =
                        percent_decode(value).map_err(|m| VaultError::Rejected(format!("{redacted}: schema: {m}")))?;
                    let valid = !name.is_empty()
                        && name.len() <= 63
                        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !valid {
                        return Err(VaultError::Rejected(format!(
                            "{redacted}: schema {name:?} must be 1 to 63 lower-case letters, digits or _, not starting with a digit"
                        )));
                    }
                    schema = Some(name);
                }
                "pool_size" => {
                    pool_size = match value.parse::<usize>() {
                        Ok(n) if (1..=1000).contains(&n) => n,
                        _ => {
                            return Err(VaultError::Rejected(format!(
                                "{redacted}: pool_size must be a number from 1 to 1000"
                            )));
                        }
                    };
                }
                _ => kept.push(pair),
            }
        }
        let conn_url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        Ok(ParsedUrl { conn_url, redacted, key_file, schema, pool_size })
    }
}

/// `redact_url` and also any `password=` query parameter.
fn redact(url: &str) -> String {
    let url = redact_url(url);
    match url.split_once('?') {
        None => url,
        Some((base, query)) => {
            let query: Vec<&str> =
                query.split('&').map(|p| if p.starts_with("password=") { "password=***" } else { p }).collect();
            format!("{base}?{}", query.join("&"))
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_owned())
}

/// A 64-bit advisory lock key for `name`.
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap())
}

/// The SQL text of one backend, with its table names filled in.
struct Sql {
    schema: Option<String>,
    entries: String,
    version: String,
    /// The single key check of schema version 1 (migration 2 removes it).
    key_check: String,
    /// The key checks, one per generation.
    key_checks: String,
    get: String,
    put: String,
    remove: String,
}

impl Sql {
    fn new(schema: Option<String>) -> Sql {
        let qualify = |table: &str| match &schema {
            Some(s) => format!("\"{s}\".{table}"),
            None => table.to_owned(),
        };
        let entries = qualify("secrets_entries");
        Sql {
            get: format!("SELECT value FROM {entries} WHERE key = $1"),
            put: format!(
                "INSERT INTO {entries} (key, value, generation) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, generation = EXCLUDED.generation"
            ),
            remove: format!("DELETE FROM {entries} WHERE key = $1"),
            version: qualify("secrets_schema_version"),
            key_check: qualify("secrets_key_check"),
            key_checks: qualify("secrets_key_checks"),
            entries,
            schema,
        }
    }

    fn migration(&self, i: usize) -> String {
        MIGRATIONS[i]
            .replace("{entries}", &self.entries)
            .replace("{key_checks}", &self.key_checks)
            .replace("{key_check}", &self.key_check)
    }

    /// The advisory lock that schema changes and key-check writes take.
    fn migrate_lock(&self) -> i64 {
        lock_key(&format!("secrets:migrate:{}", self.lock_namespace()))
    }

    /// What advisory locks of this store are named after.
    fn lock_namespace(&self) -> &str {
        self.schema.as_deref().unwrap_or("")
    }
}

/// A pooled connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    put: Statement,
    remove: Statement,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections in existence: idle, lent out, or being opened.
    open: usize,
}

/// A small blocking connection pool.
struct Pool {
    config: Config,
    sql: Sql,
    described: String,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

impl Pool {
    /// A connection, and whether it was reused (it may have gone stale).
    fn get(&self) -> Result<(Conn, bool), VaultError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = self.state.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok((conn, true));
                }
                state.open -= 1;
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.open_conn() {
                    Ok(conn) => Ok((conn, false)),
                    Err(e) => {
                        self.discard();
                        Err(e)
                    }
                };
            }
            if self.freed.wait_until(&mut state, deadline).timed_out() {
                return Err(VaultError::Unavailable(format!(
                    "{}: all {} pooled connections stayed busy for {} s (raise pool_size=)",
                    self.described,
                    self.max,
                    POOL_WAIT.as_secs()
                )));
            }
        }
    }

    /// Gives a connection back, or forgets it if it is broken.
    fn put(&self, conn: Conn) {
        if conn.client.is_closed() {
            self.discard();
            return;
        }
        self.state.lock().idle.push(conn);
        self.freed.notify_one();
    }

    /// Forgets a lent-out connection (it is dropped, and so closed, by the caller).
    fn discard(&self) {
        self.state.lock().open -= 1;
        self.freed.notify_one();
    }

    fn connect_client(&self) -> Result<Client, VaultError> {
        self.config.connect(NoTls).map_err(|e| self.error("connecting", &e))
    }

    fn open_conn(&self) -> Result<Conn, VaultError> {
        let mut client = self.connect_client()?;
        let mut prepare = |sql: &str| client.prepare(sql).map_err(|e| self.error("preparing statements", &e));
        let (get, put, remove) = (prepare(&self.sql.get)?, prepare(&self.sql.put)?, prepare(&self.sql.remove)?);
        Ok(Conn { client, get, put, remove })
    }

    /// A [`VaultError`] for a failed database operation; never quotes a
    /// parameter, a row or a password.
    fn error(&self, what: &str, e: &postgres::Error) -> VaultError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                let msg = format!("{}: {what}: {} {code}: {}", self.described, db.severity(), db.message());
                // Connection problems, resource exhaustion, shutdowns, lock
                // timeouts, serialisation failures and deadlocks: try again.
                let transient = ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) || code == "55P03";
                if transient { VaultError::Unavailable(msg) } else { VaultError::Other(msg) }
            }
            None => {
                let cause = std::error::Error::source(e).map(|c| format!(": {c}")).unwrap_or_default();
                VaultError::Unavailable(format!("{}: {what}: {e}{cause}", self.described))
            }
        }
    }
}

impl PostgresBackend {
    /// Opens the store a `postgres://` or `postgresql://` URL names, with the
    /// master keyring from `SECRETS_MASTER_KEY` or else from the URL's
    /// `key_file=PATH` (created on first use). With neither, fails: replicas
    /// sharing the database must share the key.
    pub fn from_url(url: &str) -> Result<Self, VaultError> {
        let parsed = ParsedUrl::parse(url)?;
        let keyring = match (std::env::var(MASTER_KEY_ENV), &parsed.key_file) {
            (Ok(spec), _) => Keyring::from_spec(&spec)?,
            (Err(_), Some(path)) => Keyring::load_or_create(path)?,
            (Err(_), None) => {
                return Err(VaultError::Rejected(format!(
                    "{}: a PostgreSQL store needs the master key that every replica shares: set {MASTER_KEY_ENV} \
                     (64 hex characters, or 1:<hex>,2:<hex>) or add key_file=PATH to the store URL",
                    parsed.redacted
                )));
            }
        };
        Self::open(parsed, keyring)
    }

    /// The `key_file=` path a store URL names, if any: where `from_url`
    /// reads the keyring when `SECRETS_MASTER_KEY` is not set (for tools
    /// that add a generation to it).
    pub fn key_file(url: &str) -> Result<Option<std::path::PathBuf>, VaultError> {
        Ok(ParsedUrl::parse(url)?.key_file)
    }

    /// Opens the store at `url` with an explicit keyring (a `key_file`
    /// parameter is ignored). Creates or migrates the schema, and checks the
    /// keyring against the store's key checks and the generations its
    /// entries are sealed under.
    pub fn connect(url: &str, keyring: Keyring) -> Result<Self, VaultError> {
        Self::open(ParsedUrl::parse(url)?, keyring)
    }

    fn open(parsed: ParsedUrl, keyring: Keyring) -> Result<Self, VaultError> {
        let described = parsed.redacted;
        let mut config: Config = parsed.conn_url.parse().map_err(|e: postgres::Error| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            VaultError::Rejected(format!("{described}: {e}{cause}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = Arc::new(Pool {
            config,
            sql: Sql::new(parsed.schema),
            described,
            max: parsed.pool_size,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
        });
        let backend = PostgresBackend { pool, keyring: Arc::new(keyring) };
        backend.migrate()?;
        Ok(backend)
    }

    /// Creates or upgrades the schema and checks the keyring (writing the
    /// key check of its newest generation if the store has none), in one
    /// transaction under a store-wide advisory lock.
    fn migrate(&self) -> Result<(), VaultError> {
        let pool = &self.pool;
        let sql = &pool.sql;
        let mut client = pool.connect_client()?;
        let mut txn = client.transaction().map_err(|e| pool.error("starting the schema migration", &e))?;
        let err = |e: postgres::Error| pool.error("checking the schema", &e);
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&sql.migrate_lock()]).map_err(err)?;

        // DDL only when something is missing, so that a role without CREATE
        // rights can use a store that is already set up.
        let exists: bool = txn.query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql.version]).map_err(err)?.get(0);
        if !exists {
            if let Some(schema) = &sql.schema {
                let has: bool = txn
                    .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[schema])
                    .map_err(err)?
                    .get(0);
                if !has {
                    txn.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).map_err(err)?;
                }
            }
            txn.batch_execute(&format!(
                "CREATE TABLE {} (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), version INTEGER NOT NULL);
                 INSERT INTO {} (id, version) VALUES (TRUE, 0);",
                sql.version, sql.version
            ))
            .map_err(err)?;
        }
        let version: i32 = txn
            .query_opt(&format!("SELECT version FROM {} WHERE id", sql.version), &[])
            .map_err(err)?
            .map(|row| row.get(0))
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(VaultError::Rejected(format!(
                "{}: the database schema is at version {version}, newer than this build knows ({SCHEMA_VERSION}); \
                 upgrade the secrets host before connecting it to this store",
                pool.described
            )));
        }
        for i in version as usize..MIGRATIONS.len() {
            txn.batch_execute(&sql.migration(i))
                .map_err(|e| pool.error(&format!("migrating the schema to version {}", i + 1), &e))?;
        }
        if version < SCHEMA_VERSION {
            txn.execute(&format!("UPDATE {} SET version = $1 WHERE id", sql.version), &[&SCHEMA_VERSION])
                .map_err(err)?;
        }

        self.check_keyring(&mut txn)?;
        txn.commit().map_err(|e| pool.error("committing the schema migration", &e))?;
        drop(client);
        Ok(())
    }

    /// Starts a transaction on a pooled connection; a reused connection that
    /// turns out to be dead is replaced (nothing has happened on it yet).
    fn start(&self, begin_sql: &str) -> Result<PgTxn, VaultError> {
        loop {
            let (mut conn, reused) = self.pool.get()?;
            match conn.client.batch_execute(begin_sql) {
                Ok(()) => return Ok(PgTxn { conn: Some(conn), pool: self.pool.clone(), failed: false }),
                Err(e) => {
                    // Gone while idle: closed, a transport error, or the
                    // server's goodbye (admin shutdown, connection failure).
                    let gone = conn.client.is_closed()
                        || e.as_db_error().is_none()
                        || e.code().is_some_and(|c| {
                            let c = c.code();
                            c.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c)
                        });
                    self.pool.discard();
                    drop(conn);
                    if !(reused && gone) {
                        return Err(self.pool.error("beginning a transaction", &e));
                    }
                }
            }
        }
    }

    /// Re-seals one batch of rows under older generations; returns how many.
    fn rotate_batch(&self) -> Result<u64, VaultError> {
        let newest = generation_column(self.keyring.newest())?;
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED")?;
        let conn = txn.conn.as_mut().expect("a started transaction has a connection");
        let sql = &self.pool.sql;
        // SKIP LOCKED: rows that a writer holds are left for a later batch,
        // so rotation never waits on (or deadlocks with) a writer, and never
        // writes back a value a writer has just replaced.
        let select = format!(
            "SELECT key, value FROM {} WHERE generation < $1 ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED",
            sql.entries
        );
        let rows = conn.client.query(&select, &[&newest, &ROTATE_BATCH]).map_err(|e| {
            txn.failed = true;
            self.pool.error("selecting entries to rotate", &e)
        })?;
        let update = format!("UPDATE {} SET value = $2, generation = $3 WHERE key = $1", sql.entries);
        for row in &rows {
            let key: String = row.get(0);
            let sealed: Vec<u8> = row.get(1);
            let plain = zeroize::Zeroizing::new(self.keyring.open(&key, &sealed)?);
            let resealed = self.keyring.seal(&key, &plain)?;
            conn.client.execute(&update, &[&key, &resealed, &newest]).map_err(|e| {
                txn.failed = true;
                self.pool.error("re-sealing an entry", &e)
            })?;
        }
        Box::new(txn).commit()?;
        Ok(rows.len() as u64)
    }

    fn count_older(&self, newest: i32) -> Result<u64, VaultError> {
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY")?;
        let conn = txn.conn.as_mut().expect("a started transaction has a connection");
        let count: i64 = conn
            .client
            .query_one(&format!("SELECT count(*) FROM {} WHERE generation < $1", self.pool.sql.entries), &[&newest])
            .map_err(|e| self.pool.error("counting entries to rotate", &e))?
            .get(0);
        Ok(count as u64)
    }

    /// Refuses a keyring that does not match the store: a held generation
    /// whose key check does not open, no generation in common with the
    /// store, or entries sealed under generations the keyring lacks. Then
    /// writes the key check of the keyring's newest generation if the store
    /// has none. The caller holds the migrate lock inside a transaction.
    fn check_keyring(&self, client: &mut impl GenericClient) -> Result<(), VaultError> {
        let pool = &self.pool;
        let (sql, store) = (&pool.sql, &pool.described);
        let err = |what: &'static str| move |e: postgres::Error| pool.error(what, &e);
        let held = self.keyring.generations();
        let checks: Vec<(i32, Vec<u8>)> = client
            .query(&format!("SELECT generation, value FROM {} ORDER BY generation", sql.key_checks), &[])
            .map_err(err("reading the key checks"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let store_gens: Vec<u32> = checks.iter().filter_map(|(g, _)| u32::try_from(*g).ok()).collect();

        for (generation, sealed) in &checks {
            let Some(generation) = u32::try_from(*generation).ok().filter(|g| held.contains(g)) else { continue };
            // A check must be sealed under its own generation, and open.
            let opens = sealed_generation(sealed).ok() == Some(generation)
                && self.keyring.open(KEY_CHECK_KEY, sealed).ok().as_deref() == Some(KEY_CHECK_PLAIN);
            if !opens {
                return Err(VaultError::Corrupt(format!(
                    "{store}: wrong master key: the keyring's key of generation {generation} does not open the \
                     store's key check for generation {generation}; use the {MASTER_KEY_ENV} or key file that the \
                     store's replicas share"
                )));
            }
        }
        if !store_gens.is_empty() && !store_gens.iter().any(|g| held.contains(g)) {
            return Err(VaultError::Corrupt(format!(
                "{store}: wrong master key: the store has key checks for {}, the keyring holds {}; use the \
                 {MASTER_KEY_ENV} or key file that the store was created with",
                generation_list(&store_gens),
                generation_list(&held)
            )));
        }

        // The distinct generations entries use, by index seeks (a loose
        // index scan: PostgreSQL's DISTINCT would read the whole index).
        let used = client
            .query(
                &format!(
                    "WITH RECURSIVE used (generation) AS (
                         (SELECT generation FROM {entries} ORDER BY generation LIMIT 1)
                         UNION ALL
                         SELECT (SELECT e.generation FROM {entries} e WHERE e.generation > used.generation
                                 ORDER BY e.generation LIMIT 1)
                         FROM used WHERE used.generation IS NOT NULL
                     )
                     SELECT generation FROM used WHERE generation IS NOT NULL",
                    entries = sql.entries
                ),
                &[],
            )
            .map_err(err("reading the generations entries use"))?;
        let mut missing = Vec::new();
        for row in &used {
            let generation: i32 = row.get(0);
            if u32::try_from(generation).is_ok_and(|g| held.contains(&g)) {
                continue;
            }
            let count: i64 = client
                .query_one(&format!("SELECT count(*) FROM {} WHERE generation = $1", sql.entries), &[&generation])
                .map_err(err("counting entries by generation"))?
                .get(0);
            missing.push(format!(
                "{count} {} under generation {generation}",
                if count == 1 { "entry" } else { "entries" }
            ));
        }
        if !missing.is_empty() {
            return Err(VaultError::Corrupt(format!(
                "{store}: the keyring lacks master key generations still in use: it holds {}, and the store has \
                 entries sealed under others ({}); put the missing generations back in {MASTER_KEY_ENV} or the key \
                 file, and run `secrets keyring rotate-all` (with every generation) before retiring a generation",
                generation_list(&held),
                missing.join(", ")
            )));
        }

        let newest = generation_column(self.keyring.newest())?;
        if !checks.iter().any(|(g, _)| *g == newest) {
            // Keyring::seal seals under the newest generation, so that is the
            // one a check is written for; older generations got theirs when
            // they were newest.
            let sealed = self.keyring.seal(KEY_CHECK_KEY, KEY_CHECK_PLAIN)?;
            client
                .execute(
                    &format!("INSERT INTO {} (generation, value) VALUES ($1, $2)", sql.key_checks),
                    &[&newest, &sealed],
                )
                .map_err(err("writing the key check"))?;
        }
        Ok(())
    }

    /// [`Self::check_keyring`] in a transaction of its own: rotation re-seals
    /// everything under the newest generation, so it first makes sure the
    /// keyring still matches the store and that generation has a key check.
    fn recheck_keyring(&self) -> Result<(), VaultError> {
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED")?;
        let conn = txn.conn.as_mut().expect("a started transaction has a connection");
        let checked = conn
            .client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&self.pool.sql.migrate_lock()])
            .map_err(|e| self.pool.error("locking the key checks", &e))
            .and_then(|_| self.check_keyring(&mut conn.client));
        // On an error, dropping the transaction rolls it back.
        checked?;
        Box::new(txn).commit()
    }
}

/// "generation 1" or "generations 1, 2".
fn generation_list(generations: &[u32]) -> String {
    let list: Vec<String> = generations.iter().map(u32::to_string).collect();
    let plural = if list.len() == 1 { "" } else { "s" };
    format!("generation{plural} {}", list.join(", "))
}

fn generation_column(generation: u32) -> Result<i32, VaultError> {
    i32::try_from(generation)
        .map_err(|_| VaultError::Rejected(format!("master key generation {generation} is too large for the store")))
}

impl Backend for PostgresBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let begin = match access {
            Access::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
            // READ COMMITTED: every statement after the lock sees what the
            // previous holder committed (REPEATABLE READ would take its
            // snapshot before the lock was granted).
            Access::Write => {
                let key = lock_key(&format!("secrets:write:{}:{lock_scope}", self.pool.sql.lock_namespace()));
                format!("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({key})")
            }
        };
        Ok(Box::new(SealedTxn::new(self.start(&begin)?, self.keyring.clone())))
    }

    fn describe(&self) -> String {
        self.pool.described.clone()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        self.recheck_keyring()?;
        let newest = generation_column(self.keyring.newest())?;
        let total = self.count_older(newest)?;
        let mut done = 0u64;
        progress(done, total);
        let mut waits = 0u32;
        loop {
            let n = self.rotate_batch()?;
            if n > 0 {
                done += n;
                waits = 0;
                progress(done, total.max(done));
                continue;
            }
            // Nothing unlocked is left: finished, unless writers hold rows.
            if self.count_older(newest)? == 0 {
                break;
            }
            waits += 1;
            if waits > 600 {
                return Err(VaultError::Unavailable(format!(
                    "{}: entries under older key generations stayed locked by writers for a minute; run rotation again",
                    self.pool.described
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(done)
    }
}

/// One transaction on a pooled connection, begun with BEGIN and ended with
/// COMMIT, or ROLLBACK on drop.
struct PgTxn {
    /// `None` once committed.
    conn: Option<Conn>,
    pool: Arc<Pool>,
    /// A statement failed: PostgreSQL has aborted the transaction.
    failed: bool,
}

impl PgTxn {
    fn run<T>(&mut self, what: &str, f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>) -> Result<T, VaultError> {
        if self.failed {
            return Err(VaultError::Other(format!(
                "{}: {what}: the transaction was aborted by an earlier error",
                self.pool.described
            )));
        }
        let conn = self.conn.as_mut().expect("a live transaction has a connection");
        f(conn).map_err(|e| {
            self.failed = true;
            self.pool.error(what, &e)
        })
    }
}

impl RawTxn for PgTxn {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let row = self.run("reading an entry", |c| c.client.query_opt(&c.get, &[&key]))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn put(&mut self, key: &str, sealed: &[u8], generation: u32) -> Result<(), VaultError> {
        let generation = generation_column(generation)?;
        self.run("writing an entry", |c| c.client.execute(&c.put, &[&key, &sealed, &generation]))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), VaultError> {
        self.run("deleting an entry", |c| c.client.execute(&c.remove, &[&key]))?;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        if self.failed {
            // Drop rolls back.
            return Err(VaultError::Other(format!(
                "{}: not committed: a statement of the transaction failed, so it was rolled back",
                self.pool.described
            )));
        }
        let mut conn = self.conn.take().expect("a live transaction has a connection");
        match conn.client.batch_execute("COMMIT") {
            Ok(()) => {
                self.pool.put(conn);
                Ok(())
            }
            Err(e) => {
                // The outcome of a COMMIT whose answer was lost is unknown;
                // the connection is not reused either way.
                self.pool.discard();
                Err(self.pool.error("committing", &e))
            }
        }
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            match conn.client.batch_execute("ROLLBACK") {
                Ok(()) => self.pool.put(conn),
                Err(_) => self.pool.discard(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn backend_and_transactions_can_cross_threads() {
        assert_send_sync::<PostgresBackend>();
        assert_send_static::<PgTxn>();
    }

    #[test]
    fn our_parameters_are_stripped_and_passwords_redacted() {
        let p = ParsedUrl::parse(
            "postgres://u:hunter2@db:5432/x?key_file=%2Fetc%2Fsecrets.key&sslmode=disable&schema=app_1&pool_size=3&password=pw2",
        )
        .unwrap();
        assert_eq!(p.conn_url, "postgres://u:hunter2@db:5432/x?sslmode=disable&password=pw2");
        assert_eq!(p.key_file.as_deref(), Some(std::path::Path::new("/etc/secrets.key")));
        assert_eq!(
            PostgresBackend::key_file("postgres://h/db?key_file=k.key").unwrap().as_deref(),
            Some(std::path::Path::new("k.key"))
        );
        assert_eq!((p.schema.as_deref(), p.pool_size), (Some("app_1"), 3));
        assert!(!p.redacted.contains("hunter2") && !p.redacted.contains("pw2"), "{}", p.redacted);
        let p = ParsedUrl::parse("postgresql://h/db?schema=s").unwrap();
        assert_eq!(p.conn_url, "postgresql://h/db");
        for bad in ["postgres://h/db?schema=Bad", "postgres://h/db?schema=a;drop", "postgres://h/db?pool_size=0"] {
            assert!(matches!(ParsedUrl::parse(bad), Err(VaultError::Rejected(_))), "{bad}");
        }
        assert!(ParsedUrl::parse("mysql://h/db").is_err());
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("t/61/77"), lock_key("t/62/77"));
    }
}
