//! The PostgreSQL backend: one database shared by several host replicas,
//! values encrypted at rest.
//!
//! # URL
//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DB?PARAMS` (or `postgresql://`).
//! Every parameter of the `tokio-postgres` crate is accepted (`sslmode`,
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
//! - `timeout=SECS`: the longest any call waits for the server to answer
//!   one request (default 30), connecting included, on top of
//!   `lock_timeout` for requests that may wait for a lock. The deadline is
//!   the client's own, so it holds when the server is stopped, hung or cut
//!   off without closing the connection (which no server-side timeout or
//!   TCP keepalive notices); the call fails with
//!   [`VaultError::Unavailable`] "the server did not answer in time", and
//!   that connection is closed, never reused.
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
//! - **Few round trips.** Requests are pipelined (tokio-postgres sends a
//!   request before the previous one's answer arrives): BEGIN (with a
//!   writer's locks and fence query) goes out with a call's first read; a
//!   batched read ([`Vault::retrieve_many`](crate::backends::Vault)) is one
//!   `WHERE key = ANY($1)` query; writes and rotations are buffered and sent
//!   with COMMIT; a read-only call ends with a ROLLBACK it does not wait
//!   for. [`PostgresBackend::round_trips`] counts them, and
//!   `tests/all/postgres.rs` pins the count of every call.
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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::{Condvar, Mutex};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement, ToStatement};

use crate::backends::sealed::{
    self, KeyCheck, KeyCheckRows, Keyring, KeyringCheck, MASTER_KEY_ENV, RawRow, RawTxn, Rotation, SealedTxn,
};
use crate::backends::{Access, Backend, Transaction, VaultError};

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Rows re-sealed (and row-locked) per transaction by rotate-all.
pub const ROTATE_BATCH: usize = 100;

/// How long a call waits for a lock unless the URL says `lock_timeout=`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a call waits for any answer of the server unless the URL says
/// `timeout=`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
/// `postgres://` URL into: the connection for the `tokio-postgres` crate and the
/// parameters this backend consumes.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The URL for the `tokio-postgres` crate: this backend's parameters removed.
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
    /// `timeout=SECS`: the longest a call waits for the server to answer one
    /// request (connecting included), on top of any lock wait.
    pub timeout: Duration,
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
            .field("timeout", &self.timeout)
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
    get_many: String,
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
            get_many: format!("SELECT key, value, generation FROM {entries} WHERE key = ANY($1)"),
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

/// How long a request may go unanswered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// `timeout`: the server only has to answer.
    Answer,
    /// `lock_timeout + timeout`: the request may wait for a lock, which the
    /// server bounds by `lock_timeout` (55P03).
    Lock,
}

/// Why a request failed: the server said so, or it did not answer in time.
enum Failure {
    Pg(tokio_postgres::Error),
    Silent(Duration),
}

/// What every connection of one store shares: the runtime that drives the
/// connections, the bounds on waits, and the store's name for messages.
struct Limits {
    /// Drives the connections' I/O and timers; the calling threads block on
    /// it, each request under a deadline.
    runtime: tokio::runtime::Handle,
    described: Arc<str>,
    lock_timeout: Duration,
    timeout: Duration,
    /// `timeout`, or the URL's `connect_timeout` if that is longer: bounds
    /// the whole connection handshake.
    connect_bound: Duration,
    /// Requests sent and waited for: see [`PostgresBackend::round_trips`].
    round_trips: AtomicU64,
}

impl Limits {
    fn deadline(&self, patience: Patience) -> Duration {
        match patience {
            Patience::Answer => self.timeout,
            Patience::Lock => self.lock_timeout + self.timeout,
        }
    }

    /// A [`VaultError`] for a failed database operation; never quotes a
    /// parameter, a row or a password.
    fn error(&self, what: &str, failure: &Failure) -> VaultError {
        let e = match failure {
            Failure::Silent(waited) => {
                return VaultError::Unavailable(format!(
                    "{}: {what}: the server did not answer in time ({:.0} s, timeout=); it may be stopped, overloaded or unreachable",
                    self.described,
                    waited.as_secs_f64()
                ));
            }
            Failure::Pg(e) => e,
        };
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
                let transient = ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class));
                if transient { VaultError::Unavailable(msg) } else { VaultError::Other(msg) }
            }
            None => {
                let cause = std::error::Error::source(e).map(|c| format!(": {c}")).unwrap_or_default();
                VaultError::Unavailable(format!("{}: {what}: {e}{cause}", self.described))
            }
        }
    }
}

/// One connection: every request waits at most its [`Patience`]; one left
/// unanswered marks the connection broken (its state is unknown), so it is
/// closed instead of reused.
struct Session {
    client: Client,
    limits: Arc<Limits>,
    broken: AtomicBool,
}

impl Session {
    /// Opens a connection, with this store's bound on lock waits; the whole
    /// handshake is bounded too (a stopped server accepts TCP connections).
    fn open(config: &Config, limits: &Arc<Limits>) -> Result<Session, VaultError> {
        let connect = async {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away;
                // the client's next request reports that.
                let _ = connection.await;
            });
            Ok(client)
        };
        limits.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = block_on(&limits.runtime, limits.connect_bound, connect).map_err(|f| limits.error("connecting", &f))?;
        let session = Session { client, limits: limits.clone(), broken: AtomicBool::new(false) };
        session.batch_execute(
            "setting lock_timeout",
            Patience::Answer,
            &format!("SET lock_timeout = {}", limits.lock_timeout.as_millis()),
        )?;
        Ok(session)
    }

    /// Whether the connection can be reused.
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    fn wait<T>(
        &self,
        what: &str,
        patience: Patience,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, VaultError> {
        self.limits.round_trips.fetch_add(1, Ordering::Relaxed);
        block_on(&self.limits.runtime, self.limits.deadline(patience), request).map_err(|failure| {
            if matches!(failure, Failure::Silent(_)) {
                self.broken.store(true, Ordering::Relaxed);
            }
            self.limits.error(what, &failure)
        })
    }

    fn batch_execute(&self, what: &str, patience: Patience, sql: &str) -> Result<(), VaultError> {
        self.wait(what, patience, self.client.batch_execute(sql))
    }

    fn query<S: ?Sized + ToStatement>(
        &self,
        what: &str,
        patience: Patience,
        statement: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, VaultError> {
        self.wait(what, patience, self.client.query(statement, params))
    }

    fn query_one<S: ?Sized + ToStatement>(
        &self,
        what: &str,
        patience: Patience,
        statement: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, VaultError> {
        self.wait(what, patience, self.client.query_one(statement, params))
    }

    fn query_opt<S: ?Sized + ToStatement>(
        &self,
        what: &str,
        patience: Patience,
        statement: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, VaultError> {
        self.wait(what, patience, self.client.query_opt(statement, params))
    }

    fn execute<S: ?Sized + ToStatement>(
        &self,
        what: &str,
        patience: Patience,
        statement: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, VaultError> {
        self.wait(what, patience, self.client.execute(statement, params))
    }

    /// The schema version the store records (its table exists); a schema
    /// newer than this build knows is refused.
    fn schema_version(&self, sql: &Sql) -> Result<i32, VaultError> {
        let version: i32 = self
            .query_opt("checking the schema", Patience::Answer, &format!("SELECT version FROM {} WHERE id", sql.version), &[])?
            .map(|row| row.get(0))
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(VaultError::Rejected(format!(
                "{}: the database schema is at version {version}, newer than this build knows ({SCHEMA_VERSION}); \
                 upgrade the secrets host before connecting it to this store",
                self.limits.described
            )));
        }
        Ok(version)
    }
}

/// Runs `request` on `runtime`, giving up after `bound`.
fn block_on<T>(
    runtime: &tokio::runtime::Handle,
    bound: Duration,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    // The timer is made inside the runtime's context, where it must be.
    match runtime.block_on(async { tokio::time::timeout(bound, request).await }) {
        Ok(result) => result.map_err(Failure::Pg),
        Err(_) => Err(Failure::Silent(bound)),
    }
}

/// A pooled connection with its prepared statements.
struct Conn {
    session: Session,
    get: Statement,
    get_many: Statement,
    /// The newest key check's generation, for a writer's fence.
    fence: Statement,
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
    limits: Arc<Limits>,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
    /// Owns the runtime [`Limits`] has a handle of; shut down without
    /// waiting when the pool goes (it may be dropped inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.state.get_mut().idle.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Pool {
    fn described(&self) -> &str {
        &self.limits.described
    }

    /// A connection, and whether it was reused (it may have gone stale).
    fn get(&self) -> Result<(Conn, bool), VaultError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = self.state.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                if conn.session.usable() {
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
                    self.described(),
                    self.max,
                    POOL_WAIT.as_secs()
                )));
            }
        }
    }

    /// Gives a connection back, or forgets it if it is broken.
    fn put(&self, conn: Conn) {
        if !conn.session.usable() {
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

    /// A new connection outside the pool.
    fn session(&self) -> Result<Session, VaultError> {
        Session::open(&self.config, &self.limits)
    }

    fn open_conn(&self) -> Result<Conn, VaultError> {
        let session = self.session()?;
        let prepare = |sql: &str| session.wait("preparing statements", Patience::Answer, session.client.prepare(sql));
        let (get, get_many) = (prepare(&self.sql.get)?, prepare(&self.sql.get_many)?);
        let (put, remove) = (prepare(&self.sql.put)?, prepare(&self.sql.remove)?);
        let fence = prepare(&format!("SELECT max(generation) FROM {}", self.sql.key_checks))?;
        Ok(Conn { session, get, get_many, fence, put, remove })
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
        let mut pg: Config = config.conn_url.parse().map_err(|e: tokio_postgres::Error| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            VaultError::Rejected(format!("{described}: {e}{cause}"))
        })?;
        let connect_bound = pg.get_connect_timeout().map_or(config.timeout, |t| config.timeout.max(*t));
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT.min(config.timeout));
        }
        // One worker drives every connection of this store; calls block on it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("secrets-postgres")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| VaultError::Other(format!("{described}: starting the connection runtime: {e}")))?;
        let limits = Arc::new(Limits {
            runtime: runtime.handle().clone(),
            described: described.into(),
            lock_timeout: config.lock_timeout,
            timeout: config.timeout,
            connect_bound,
            round_trips: AtomicU64::new(0),
        });
        let pool = Arc::new(Pool {
            config: pg,
            sql: Sql::new(config.schema.clone()),
            limits,
            max: config.pool_size,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
            runtime: Some(runtime),
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
        // Usually everything is in place: then nothing is written and no
        // store-wide lock is taken, so a stalled client holding that lock
        // cannot stop anyone else's start.
        if self.ready(&pool.session()?)? {
            return Ok(());
        }
        // A connection of its own for the locked pass: the first one has
        // looked the tables up, and its catalog cache would not see tables
        // another replica creates while we wait for the lock.
        let session = pool.session()?;
        session.batch_execute("starting the schema migration", Patience::Answer, "BEGIN")?;
        // Dropping the session without COMMIT ends the transaction.
        self.migrate_locked(&session)?;
        session.batch_execute("committing the schema migration", Patience::Lock, "COMMIT")
    }

    fn migrate_locked(&self, session: &Session) -> Result<(), VaultError> {
        let sql = &self.pool.sql;
        const WHAT: &str = "checking the schema";
        // Bounded by the connection's lock_timeout.
        session.execute(
            "waiting for the store-wide schema lock",
            Patience::Lock,
            "SELECT pg_advisory_xact_lock($1)",
            &[&sql.migrate_lock()],
        )?;

        // DDL only when something is missing, so that a role without CREATE
        // rights can use a store that is already set up.
        let exists: bool =
            session.query_one(WHAT, Patience::Lock, "SELECT to_regclass($1) IS NOT NULL", &[&sql.version])?.get(0);
        if !exists {
            if let Some(schema) = &sql.schema {
                let has: bool = session
                    .query_one(
                        WHAT,
                        Patience::Lock,
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                        &[schema],
                    )?
                    .get(0);
                if !has {
                    session.batch_execute(WHAT, Patience::Lock, &format!("CREATE SCHEMA \"{schema}\""))?;
                }
            }
            session.batch_execute(
                WHAT,
                Patience::Lock,
                &format!(
                    "CREATE TABLE {} (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), version INTEGER NOT NULL);
                     INSERT INTO {} (id, version) VALUES (TRUE, 0);",
                    sql.version, sql.version
                ),
            )?;
        }
        let version = session.schema_version(sql)?;
        for i in version as usize..MIGRATIONS.len() {
            session.batch_execute(
                &format!("migrating the schema to version {}", i + 1),
                Patience::Lock,
                &sql.migration(i),
            )?;
        }
        if version < SCHEMA_VERSION {
            session.execute(
                WHAT,
                Patience::Lock,
                &format!("UPDATE {} SET version = $1 WHERE id", sql.version),
                &[&SCHEMA_VERSION],
            )?;
        }

        let rows = &mut KeyCheckTable { session, sql, patience: Patience::Lock };
        if sealed::check_keyring(rows, &self.keyring, KEY_CHECK, self.pool.described())? == KeyringCheck::NeedsKeyCheck
        {
            sealed::write_key_check(rows, &self.keyring, KEY_CHECK)?;
        }
        Ok(())
    }

    /// Whether the store is set up for this build and this keyring, read in
    /// a read-only snapshot without any lock: the schema at this build's
    /// version, and the keyring matching the store with the key check of
    /// its newest generation in place. A wrong keyring or a newer schema is
    /// refused here already.
    fn ready(&self, session: &Session) -> Result<bool, VaultError> {
        let sql = &self.pool.sql;
        const WHAT: &str = "checking the schema";
        session.batch_execute(WHAT, Patience::Answer, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let exists: bool =
            session.query_one(WHAT, Patience::Answer, "SELECT to_regclass($1) IS NOT NULL", &[&sql.version])?.get(0);
        if !exists || session.schema_version(sql)? < SCHEMA_VERSION {
            return Ok(false);
        }
        let rows = &mut KeyCheckTable { session, sql, patience: Patience::Answer };
        Ok(sealed::check_keyring(rows, &self.keyring, KEY_CHECK, self.pool.described())? == KeyringCheck::Matches)
    }

    /// A transaction on a pooled connection. Nothing is sent yet: `begin`
    /// (BEGIN, and a writer's locks) goes out with the first request, in
    /// the same round trip, and a writer's fence query with it.
    fn start(&self, begin: String, patience: Patience, fence: bool) -> Result<PgTxn, VaultError> {
        let (conn, reused) = self.pool.get()?;
        Ok(PgTxn {
            conn: Some(conn),
            reused,
            pool: self.pool.clone(),
            failed: false,
            patience,
            begin: Some(begin),
            fence: fence.then(|| self.keyring.clone()),
            writes: HashMap::new(),
        })
    }
}

/// The key-check table and the generation column of the entries, inside a
/// transaction, for the shared keyring check.
struct KeyCheckTable<'a> {
    session: &'a Session,
    sql: &'a Sql,
    patience: Patience,
}

impl KeyCheckRows for KeyCheckTable<'_> {
    fn key_checks(&mut self) -> Result<Vec<(i64, Vec<u8>)>, VaultError> {
        let rows = self.session.query(
            "reading the key checks",
            self.patience,
            &format!("SELECT generation, value FROM {} ORDER BY generation", self.sql.key_checks),
            &[],
        )?;
        Ok(rows.iter().map(|row| (i64::from(row.get::<_, i32>(0)), row.get(1))).collect())
    }

    fn generations_in_use(&mut self) -> Result<Vec<i64>, VaultError> {
        // A loose index scan: PostgreSQL's DISTINCT would read the whole index.
        let rows = self.session.query(
            "reading the generations entries use",
            self.patience,
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
        )?;
        Ok(rows.iter().map(|row| i64::from(row.get::<_, i32>(0))).collect())
    }

    fn count_under(&mut self, generation: i64) -> Result<u64, VaultError> {
        let generation = i32::try_from(generation).unwrap_or(i32::MAX);
        let count: i64 = self
            .session
            .query_one(
                "counting entries by generation",
                self.patience,
                &format!("SELECT count(*) FROM {} WHERE generation = $1", self.sql.entries),
                &[&generation],
            )?
            .get(0);
        Ok(count as u64)
    }

    fn add_key_check(&mut self, generation: u32, sealed: &[u8]) -> Result<(), VaultError> {
        let generation = generation_column(generation)?;
        self.session
            .execute(
                "writing the key check",
                self.patience,
                &format!("INSERT INTO {} (generation, value) VALUES ($1, $2)", self.sql.key_checks),
                &[&generation, &sealed],
            )
            .map(drop)
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
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY".into(), Patience::Answer, false)?;
        let sql = format!("SELECT count(*) FROM {} WHERE generation < $1", self.pool.sql.entries);
        let row = txn.run("counting entries to rotate", |c| {
            let sql = sql.clone();
            Box::pin(async move {
                let statement = c.session.client.prepare(&sql).await?;
                c.session.client.query_one(&statement, &[&newest]).await
            })
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn rotate_batch(&self, newest: u32, limit: usize, reseal: sealed::Reseal<'_>) -> Result<u64, VaultError> {
        let generation = generation_column(newest)?;
        let mut txn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED".into(), Patience::Lock, false)?;
        // SKIP LOCKED: rows that a writer holds are left for a later batch,
        // so rotation never waits on (or deadlocks with) a writer, and never
        // writes back a value a writer has just replaced.
        let select = format!(
            "SELECT key, value FROM {} WHERE generation < $1 ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED",
            self.pool.sql.entries
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = txn.run("selecting entries to rotate", |c| {
            let select = select.clone();
            Box::pin(async move {
                let statement = c.session.client.prepare(&select).await?;
                c.session.client.query(&statement, &[&generation, &limit]).await
            })
        })?;
        for row in &rows {
            let key: String = row.get(0);
            let sealed: Vec<u8> = row.get(1);
            let resealed = reseal(&key, &sealed).map_err(|e| sealed::name_store(e, self.pool.described()))?;
            // Sent with the COMMIT, in one round trip.
            txn.put(&key, &resealed, newest)?;
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
        let txn = match access {
            Access::Read => {
                self.start("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into(), Patience::Answer, false)?
            }
            // READ COMMITTED: every statement after the lock sees what the
            // previous holder committed (REPEATABLE READ would take its
            // snapshot before the lock was granted).
            // The schema lock in shared mode fences key-check writes: a new
            // generation's check waits for the writers in flight, and every
            // writer after it sees the check (see `sealed::fence`).
            // Every statement of a writer may wait for a lock (rotation
            // holds row locks), so all of them get `lock_timeout` on top.
            Access::Write => {
                let key = lock_key(&format!("secrets:write:{}:{lock_scope}", self.pool.sql.lock_namespace()));
                self.start(
                    format!(
                        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock_shared({}); \
                         SELECT pg_advisory_xact_lock({key})",
                        self.pool.sql.migrate_lock()
                    ),
                    Patience::Lock,
                    true,
                )?
            }
        };
        Ok(Box::new(SealedTxn::new(txn, self.keyring.clone(), self.pool.limits.described.clone())))
    }

    fn describe(&self) -> String {
        self.pool.described().to_owned()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        sealed::rotate_all(self, &self.keyring, self.pool.described(), ROTATE_BATCH, progress)
    }
}

impl PostgresBackend {
    /// Requests this backend has sent and waited for (connecting and
    /// preparing included): what a call costs in round trips. Requests sent
    /// without waiting (the ROLLBACK or COMMIT ending a read) are not
    /// counted: the next request on that connection queues behind them.
    pub fn round_trips(&self) -> u64 {
        self.pool.limits.round_trips.load(Ordering::Relaxed)
    }
}

/// One request of a transaction, borrowing its connection.
type Request<'c, T> = BoxFuture<'c, Result<T, tokio_postgres::Error>>;

/// A write buffered until commit: the sealed bytes and generation, or a
/// removal.
type Write = Option<(Vec<u8>, i32)>;

/// One transaction on a pooled connection. Requests are pipelined: BEGIN
/// (with a writer's locks and fence query) goes out with the first read,
/// and the writes, buffered meanwhile, go out with COMMIT. A transaction in
/// which any statement failed never reports a successful commit.
struct PgTxn {
    /// `None` once ended.
    conn: Option<Conn>,
    /// The connection came from the pool (so it may have died while idle).
    reused: bool,
    pool: Arc<Pool>,
    /// A statement failed: PostgreSQL has aborted the transaction.
    failed: bool,
    /// How long each of its statements may wait.
    patience: Patience,
    /// BEGIN (and a writer's locks), until sent with the first request.
    begin: Option<String>,
    /// A writer's keyring, checked against the store's newest key check
    /// (see `sealed::fence`) with the first request.
    fence: Option<Arc<Keyring>>,
    /// Writes by key, sent with COMMIT; reads see them first. Within one
    /// SQL transaction their order does not matter, only the last per key.
    writes: HashMap<String, Write>,
}

impl PgTxn {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("a live transaction has a connection")
    }

    fn aborted(&self) -> VaultError {
        VaultError::Other(format!("{}: the transaction was aborted by an earlier error", self.pool.described()))
    }

    /// Sends `request` (with BEGIN ahead of it if it is the first) and waits
    /// for its answer.
    fn run<T>(&mut self, what: &str, request: impl for<'c> Fn(&'c Conn) -> Request<'c, T>) -> Result<T, VaultError> {
        if self.failed {
            return Err(self.aborted());
        }
        let result = match self.begin.take() {
            Some(begin) => self.first(what, &begin, &request),
            None => self.conn().session.wait(what, self.patience, request(self.conn())),
        };
        result.inspect_err(|_| self.failed = true)
    }

    /// The first request, pipelined behind BEGIN and the fence query. A
    /// reused connection found dead is replaced and the whole tried again
    /// (nothing happened on it).
    fn first<T>(
        &mut self,
        what: &str,
        begin: &str,
        request: &impl for<'c> Fn(&'c Conn) -> Request<'c, T>,
    ) -> Result<T, VaultError> {
        loop {
            let conn = self.conn();
            let fence = self.fence.is_some();
            let pipelined = async {
                let (begun, newest, answer) = futures_util::future::join3(
                    conn.session.client.batch_execute(begin),
                    async move {
                        match fence {
                            true => Some(conn.session.client.query_one(&conn.fence, &[]).await),
                            false => None,
                        }
                    },
                    request(conn),
                )
                .await;
                begun?;
                let newest = newest.transpose()?.map(|row| row.get::<_, Option<i32>>(0));
                Ok((newest, answer))
            };
            match conn.session.wait("beginning a transaction", self.patience, pipelined) {
                Ok((newest, answer)) => {
                    if let (Some(keyring), Some(newest)) = (&self.fence, newest) {
                        sealed::fence(newest.map(i64::from), keyring, self.pool.described())?;
                    }
                    return answer.map_err(|e| self.pool.limits.error(what, &Failure::Pg(e)));
                }
                Err(e) => {
                    // Gone while idle (closed, or the server said goodbye):
                    // try another. Anything else, a request left unanswered
                    // included, is the caller's answer.
                    let gone = conn.session.client.is_closed() && !conn.session.broken.load(Ordering::Relaxed);
                    if !(self.reused && gone) {
                        return Err(e);
                    }
                    self.pool.discard();
                    self.conn = None;
                    let (conn, reused) = self.pool.get()?;
                    (self.conn, self.reused) = (Some(conn), reused);
                }
            }
        }
    }

    /// Ends the transaction without waiting: sends ROLLBACK and gives the
    /// connection back (its next request queues behind the ROLLBACK; if the
    /// connection died, that request finds out). Nothing sent yet: nothing
    /// to end.
    fn end_without_waiting(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.begin.is_none() {
            if !conn.session.usable() {
                self.pool.discard();
                return;
            }
            // The first poll sends the request; its answer is not awaited.
            let _ = conn.session.client.batch_execute("ROLLBACK").now_or_never();
        }
        self.pool.put(conn);
    }
}

impl RawTxn for PgTxn {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>, VaultError> {
        if self.failed {
            return Err(self.aborted());
        }
        if let Some(write) = self.writes.get(key) {
            return Ok(write.as_ref().map(|(sealed, generation)| (sealed.clone(), i64::from(*generation))));
        }
        // Owned: a request may be sent again on a fresh connection.
        let row = self.run("reading an entry", |c| {
            let key = key.to_owned();
            Box::pin(async move { c.session.client.query_opt(&c.get, &[&key]).await })
        })?;
        Ok(row.map(|r| (r.get(0), i64::from(r.get::<_, i32>(1)))))
    }

    /// One query for all the keys not written in this transaction.
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<RawRow>>, VaultError> {
        if self.failed {
            return Err(self.aborted());
        }
        let unwritten: Vec<String> =
            keys.iter().filter(|key| !self.writes.contains_key(key.as_str())).cloned().collect();
        let mut found: HashMap<String, (Vec<u8>, i64)> = HashMap::new();
        if !unwritten.is_empty() {
            let rows = self.run("reading entries", |c| {
                let unwritten = unwritten.clone();
                Box::pin(async move { c.session.client.query(&c.get_many, &[&unwritten]).await })
            })?;
            found = rows.into_iter().map(|r| (r.get(0), (r.get(1), i64::from(r.get::<_, i32>(2))))).collect();
        }
        Ok(keys
            .iter()
            .map(|key| match self.writes.get(key) {
                Some(write) => write.as_ref().map(|(sealed, generation)| (sealed.clone(), i64::from(*generation))),
                None => found.get(key).cloned(),
            })
            .collect())
    }

    fn put(&mut self, key: &str, sealed: &[u8], generation: u32) -> Result<(), VaultError> {
        if self.failed {
            return Err(self.aborted());
        }
        let generation = generation_column(generation)?;
        self.writes.insert(key.to_owned(), Some((sealed.to_vec(), generation)));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), VaultError> {
        if self.failed {
            return Err(self.aborted());
        }
        self.writes.insert(key.to_owned(), None);
        Ok(())
    }

    /// The writes and COMMIT in one round trip (with BEGIN ahead of them if
    /// nothing was read); a transaction without writes ends without waiting.
    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        if self.failed {
            // Drop rolls back.
            return Err(VaultError::Other(format!(
                "{}: not committed: a statement of the transaction failed, so it was rolled back",
                self.pool.described()
            )));
        }
        if self.writes.is_empty() {
            self.end_without_waiting();
            return Ok(());
        }
        if let Some(begin) = self.begin.take() {
            // Nothing read: BEGIN, the locks and the fence in their own
            // round trip (the fence must pass before anything is written).
            self.first("beginning a transaction", &begin, &|_| Box::pin(async { Ok(()) }))?;
        }
        let conn = self.conn.take().expect("a live transaction has a connection");
        let writes = std::mem::take(&mut self.writes);
        let pipelined = async {
            let requests = writes.iter().map(|(key, write)| -> Request<'_, u64> {
                let c = &conn;
                match write {
                    Some((sealed, generation)) => {
                        Box::pin(async move { c.session.client.execute(&c.put, &[key, sealed, generation]).await })
                    }
                    None => Box::pin(async move { c.session.client.execute(&c.remove, &[key]).await }),
                }
            });
            let (written, committed) =
                futures_util::future::join(futures_util::future::join_all(requests), conn.session.client.batch_execute("COMMIT"))
                    .await;
            // A failed write aborted the transaction, so that COMMIT rolled
            // it back: report the write.
            for result in written {
                result?;
            }
            committed
        };
        match conn.session.wait("committing", self.patience, pipelined) {
            Ok(()) => {
                self.pool.put(conn);
                Ok(())
            }
            Err(e) => {
                // Either a write failed (rolled back) or the answer to COMMIT
                // was lost (outcome unknown); the connection is not reused.
                self.pool.discard();
                Err(e)
            }
        }
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        // A connection left without an answer is closed, not asked to roll
        // back; the server rolls back when the connection goes.
        self.end_without_waiting();
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
