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
//! - `lock_timeout=SECS`: the longest any call waits for a lock another
//!   client holds (default 30): an instance's writer lock, or the
//!   store-wide schema lock; then it fails with [`VaultError::Unavailable`]
//!   saying so.
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
//! - **Schema versioning.** The schema carries a version number.
//!   Connecting first checks schema and keyring in a read-only snapshot
//!   without any lock; only when something must be written (a new store, a
//!   migration, the key check of a new generation) does it take a
//!   store-wide advisory lock (so replicas starting at once do not race),
//!   waiting at most `lock_timeout`. A schema newer than this build knows is
//!   refused.
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

use crate::backends::sealed::{
    self, KeyCheck, KeyCheckRows, Keyring, KeyringCheck, MASTER_KEY_ENV, RawTxn, Rotation, SealedTxn,
};
use crate::backends::{Access, Backend, Transaction, VaultError};

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Rows re-sealed (and row-locked) per transaction by rotate-all.
pub const ROTATE_BATCH: usize = 100;

/// How long a call waits for a lock unless the URL says `lock_timeout=`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per process unless the URL says `pool_size=N`.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// How long a call waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Used when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The key-check entries: this plaintext sealed for this vault key, one
/// entry per master key generation.
const KEY_CHECK: KeyCheck =
    KeyCheck { name: "secrets:postgres:key-check", plaintext: b"secrets postgres key check v1" };

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

/// What [`StoreConfig`](crate::backends::StoreConfig) parses a
/// `postgres://` URL into: the connection for the `postgres` crate and the
/// parameters this backend consumes.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The URL for the `postgres` crate: this backend's parameters removed.
    pub conn_url: String,
    /// The URL with passwords hidden, for messages.
    pub redacted: String,
    /// `key_file=`: the master key file, when `SECRETS_MASTER_KEY` is unset.
    pub key_file: Option<std::path::PathBuf>,
    /// `schema=`: the schema holding the tables (default: `search_path`).
    pub schema: Option<String>,
    /// `pool_size=`: connections per process.
    pub pool_size: usize,
    /// `lock_timeout=SECS`: the longest a call waits for a lock another
    /// client holds (an instance's writer lock, the schema lock).
    pub lock_timeout: Duration,
}

/// `Debug` shows the redacted URL only.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted)
            .field("key_file", &self.key_file)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
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
            get: format!("SELECT value, generation FROM {entries} WHERE key = $1"),
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
    described: Arc<str>,
    max: usize,
    /// How long any lock wait may last (`lock_timeout`).
    lock_timeout: Duration,
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

    /// A new connection, with this store's bound on lock waits.
    fn connect_client(&self) -> Result<Client, VaultError> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.error("connecting", &e))?;
        client
            .batch_execute(&format!("SET lock_timeout = {}", self.lock_timeout.as_millis()))
            .map_err(|e| self.error("setting lock_timeout", &e))?;
        Ok(client)
    }

    /// The schema version the store records (its table exists); a schema
    /// newer than this build knows is refused.
    fn schema_version(&self, client: &mut impl GenericClient) -> Result<i32, VaultError> {
        let version: i32 = client
            .query_opt(&format!("SELECT version FROM {} WHERE id", self.sql.version), &[])
            .map_err(|e| self.error("checking the schema", &e))?
            .map(|row| row.get(0))
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(VaultError::Rejected(format!(
                "{}: the database schema is at version {version}, newer than this build knows ({SCHEMA_VERSION}); \
                 upgrade the secrets host before connecting it to this store",
                self.described
            )));
        }
        Ok(version)
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
                if code == "55P03" {
                    return VaultError::Unavailable(format!(
                        "{}: {what}: another client held the lock for {} s (lock_timeout=); it may be stuck",
                        self.described,
                        self.lock_timeout.as_secs_f64()
                    ));
                }
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
    /// Opens the store `config` names, with the master keyring from
    /// `SECRETS_MASTER_KEY` or else from the URL's `key_file=PATH` (created
    /// on first use). With neither, fails: replicas sharing the database
    /// must share the key.
    pub fn from_config(config: &PostgresConfig) -> Result<Self, VaultError> {
        let keyring = match (Keyring::from_env()?, &config.key_file) {
            (Some(keyring), _) => keyring,
            (None, Some(path)) => Keyring::load_or_create(path)?,
            (None, None) => {
                return Err(VaultError::Rejected(format!(
                    "{}: a PostgreSQL store needs the master key that every replica shares: set {MASTER_KEY_ENV} \
                     (64 hex characters, or 1:<hex>,2:<hex>) or add key_file=PATH to the store URL",
                    config.redacted
                )));
            }
        };
        Self::connect(config, keyring)
    }

    /// Opens the store `config` names with an explicit keyring (its
    /// `key_file` is ignored). Creates or migrates the schema, and checks the
    /// keyring against the store's key checks and the generations its
    /// entries are sealed under.
    pub fn connect(config: &PostgresConfig, keyring: Keyring) -> Result<Self, VaultError> {
        let described = config.redacted.clone();
        let mut pg: Config = config.conn_url.parse().map_err(|e: postgres::Error| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            VaultError::Rejected(format!("{described}: {e}{cause}"))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = Arc::new(Pool {
            config: pg,
            sql: Sql::new(config.schema.clone()),
            described: described.into(),
            max: config.pool_size,
            lock_timeout: config.lock_timeout,
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
        // Usually everything is in place: then nothing is written and no
        // store-wide lock is taken, so a stalled client holding that lock
        // cannot stop anyone else's start.
        if self.ready(&mut client)? {
            return Ok(());
        }
        // A connection of its own for the locked pass: this one has looked
        // the tables up, and its catalog cache would not see tables another
        // replica creates while we wait for the lock.
        drop(client);
        let mut client = pool.connect_client()?;
        let mut txn = client.transaction().map_err(|e| pool.error("starting the schema migration", &e))?;
        let err = |e: postgres::Error| pool.error("checking the schema", &e);
        // Bounded by the connection's lock_timeout.
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&sql.migrate_lock()])
            .map_err(|e| pool.error("waiting for the store-wide schema lock", &e))?;

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
        let version = pool.schema_version(&mut txn)?;
        for i in version as usize..MIGRATIONS.len() {
            txn.batch_execute(&sql.migration(i))
                .map_err(|e| pool.error(&format!("migrating the schema to version {}", i + 1), &e))?;
        }
        if version < SCHEMA_VERSION {
            txn.execute(&format!("UPDATE {} SET version = $1 WHERE id", sql.version), &[&SCHEMA_VERSION])
                .map_err(err)?;
        }

        let rows = &mut KeyCheckTable { client: &mut txn, sql, pool };
        if sealed::check_keyring(rows, &self.keyring, KEY_CHECK, &pool.described)? == KeyringCheck::NeedsKeyCheck {
            sealed::write_key_check(rows, &self.keyring, KEY_CHECK)?;
        }
        txn.commit().map_err(|e| pool.error("committing the schema migration", &e))?;
        drop(client);
        Ok(())
    }

    /// Whether the store is set up for this build and this keyring, read in
    /// a read-only snapshot without any lock: the schema at this build's
    /// version, and the keyring matching the store with the key check of
    /// its newest generation in place. A wrong keyring or a newer schema is
    /// refused here already.
    fn ready(&self, client: &mut Client) -> Result<bool, VaultError> {
        let pool = &self.pool;
        let sql = &pool.sql;
        let err = |e: postgres::Error| pool.error("checking the schema", &e);
        let mut txn = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(err)?;
        let ready = (|| {
            let exists: bool =
                txn.query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql.version]).map_err(err)?.get(0);
            if !exists {
                return Ok(false);
            }
            if pool.schema_version(&mut txn)? < SCHEMA_VERSION {
                return Ok(false);
            }
            let rows = &mut KeyCheckTable { client: &mut txn, sql, pool };
            Ok(sealed::check_keyring(rows, &self.keyring, KEY_CHECK, &pool.described)? == KeyringCheck::Matches)
        })();
        // Ended here, not on drop (which defers the ROLLBACK): the locked
        // pass that may follow must start a transaction of its own, with a
        // fresh snapshot.
        txn.rollback().map_err(err)?;
        ready
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

}

/// The key-check table and the generation column of the entries, inside a
/// transaction, for the shared keyring check.
struct KeyCheckTable<'a, C> {
    client: &'a mut C,
    sql: &'a Sql,
    pool: &'a Pool,
}

impl<C: GenericClient> KeyCheckRows for KeyCheckTable<'_, C> {
    fn key_checks(&mut self) -> Result<Vec<(i64, Vec<u8>)>, VaultError> {
        let rows = self
            .client
            .query(&format!("SELECT generation, value FROM {} ORDER BY generation", self.sql.key_checks), &[])
            .map_err(|e| self.pool.error("reading the key checks", &e))?;
        Ok(rows.iter().map(|row| (i64::from(row.get::<_, i32>(0)), row.get(1))).collect())
    }

    fn generations_in_use(&mut self) -> Result<Vec<i64>, VaultError> {
        // A loose index scan: PostgreSQL's DISTINCT would read the whole index.
        let rows = self
            .client
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
                    entries = self.sql.entries
                ),
                &[],
            )
            .map_err(|e| self.pool.error("reading the generations entries use", &e))?;
        Ok(rows.iter().map(|row| i64::from(row.get::<_, i32>(0))).collect())
    }

    fn count_under(&mut self, generation: i64) -> Result<u64, VaultError> {
        let generation = i32::try_from(generation).unwrap_or(i32::MAX);
        let count: i64 = self
            .client
            .query_one(&format!("SELECT count(*) FROM {} WHERE generation = $1", self.sql.entries), &[&generation])
            .map_err(|e| self.pool.error("counting entries by generation", &e))?
            .get(0);
        Ok(count as u64)
    }

    fn add_key_check(&mut self, generation: u32, sealed: &[u8]) -> Result<(), VaultError> {
        let generation = generation_column(generation)?;
        self.client
            .execute(
                &format!("INSERT INTO {} (generation, value) VALUES ($1, $2)", self.sql.key_checks),
                &[&generation, &sealed],
            )
            .map(drop)
            .map_err(|e| self.pool.error("writing the key check", &e))
    }
}

impl Rotation for PostgresBackend {
    /// The open-time check again: it writes the newest generation's key
    /// check (under the schema lock) if the store lacks it.
    fn check_keyring(&self) -> Result<(), VaultError> {
        self.migrate()
    }

    fn count_older(&self, newest: u32) -> Result<u64, VaultError> {
        let newest = generation_column(newest)?;
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY")?;
        let entries = &self.pool.sql.entries;
        let row = txn.run("counting entries to rotate", |c| {
            c.client.query_one(&format!("SELECT count(*) FROM {entries} WHERE generation < $1"), &[&newest])
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn rotate_batch(
        &self,
        newest: u32,
        limit: usize,
        reseal: sealed::Reseal<'_>,
    ) -> Result<u64, VaultError> {
        let newest = generation_column(newest)?;
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED")?;
        let sql = &self.pool.sql;
        // SKIP LOCKED: rows that a writer holds are left for a later batch,
        // so rotation never waits on (or deadlocks with) a writer, and never
        // writes back a value a writer has just replaced.
        let select = format!(
            "SELECT key, value FROM {} WHERE generation < $1 ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED",
            sql.entries
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = txn.run("selecting entries to rotate", |c| c.client.query(&select, &[&newest, &limit]))?;
        let update = format!("UPDATE {} SET value = $2, generation = $3 WHERE key = $1", sql.entries);
        for row in &rows {
            let key: String = row.get(0);
            let sealed: Vec<u8> = row.get(1);
            let resealed = reseal(&key, &sealed).map_err(|e| sealed::name_store(e, &self.pool.described))?;
            txn.run("re-sealing an entry", |c| c.client.execute(&update, &[&key, &resealed, &newest]))?;
        }
        Box::new(txn).commit()?;
        Ok(rows.len() as u64)
    }
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
            // The schema lock in shared mode fences key-check writes: a new
            // generation's check waits for the writers in flight, and every
            // writer after it sees the check (see `sealed::fence`).
            Access::Write => {
                let key = lock_key(&format!("secrets:write:{}:{lock_scope}", self.pool.sql.lock_namespace()));
                format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock_shared({}); \
                     SELECT pg_advisory_xact_lock({key})",
                    self.pool.sql.migrate_lock()
                )
            }
        };
        let mut txn = self.start(&begin)?;
        if access == Access::Write {
            let checks = &self.pool.sql.key_checks;
            let newest = txn.run("reading the key checks", |c| {
                c.client.query_one(&format!("SELECT max(generation) FROM {checks}"), &[])
            })?;
            sealed::fence(newest.get::<_, Option<i32>>(0).map(i64::from), &self.keyring, &self.pool.described)?;
        }
        Ok(Box::new(SealedTxn::new(txn, self.keyring.clone(), self.pool.described.clone())))
    }

    fn describe(&self) -> String {
        self.pool.described.to_string()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        sealed::rotate_all(self, &self.keyring, &self.pool.described, ROTATE_BATCH, progress)
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
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>, VaultError> {
        let row = self.run("reading an entry", |c| c.client.query_opt(&c.get, &[&key]))?;
        Ok(row.map(|r| (r.get(0), i64::from(r.get::<_, i32>(1)))))
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
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("t/61/77"), lock_key("t/62/77"));
    }
}
