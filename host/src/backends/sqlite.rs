//! The embedded SQLite backend, encrypted at rest: the default store
//! (`sqlite:PATH`).
//!
//! # What it guarantees
//! - **Atomicity per call.** Every exported call is one SQLite transaction:
//!   a write call runs in `BEGIN IMMEDIATE` and lands on `COMMIT` or not at
//!   all; a transaction dropped without commit is rolled back. Read calls run
//!   in a deferred transaction and see one consistent snapshot.
//! - **Writers serialise across threads and processes.** In-process writers
//!   queue on a mutex; other processes sharing the file wait on SQLite's
//!   write lock (`busy_timeout`, [`BUSY_TIMEOUT`]). WAL mode lets readers run
//!   alongside the writer. Durability: `synchronous = FULL`.
//! - **Encryption at rest.** Values are sealed by [`SealedTxn`] with the
//!   master keyring (XChaCha20-Poly1305, associated data binding the full
//!   vault key and the key generation): a ciphertext that is modified, or
//!   moved to another row, fails to open with [`VaultError::Corrupt`]; wrong
//!   plaintext is never returned.
//! - **Wrong keys fail at open.** A key-check entry is sealed under each
//!   generation when it is first used; opening with a key that does not
//!   match it, or a keyring lacking a generation that entries still use, is
//!   refused with a message that says so.
//! - **Versioned schema.** `PRAGMA user_version` numbers the schema;
//!   migrations run in order on open; a file from a newer build is refused.
//!
//! # What it does not protect
//! - **Key names are visible**: the `entries.key` column holds vault keys in
//!   the clear, i.e. hex-encoded tenant, instance and key names, plus
//!   version numbers, value sizes (ciphertext length) and timing of writes.
//! - **The key file next to the database** (`<db file>.key`, mode 0600)
//!   protects only against the database file leaking alone (a copied file,
//!   a backup without the key file). Anyone who can read both, e.g. the same
//!   user account or root, can decrypt everything. Keep the key in
//!   `SECRETS_MASTER_KEY` (from a secret manager or KMS) to separate them.
//! - **Rollback of the whole file**: an attacker who can write the file can
//!   restore an older copy (older values authenticate fine) or delete rows.
//!   Integrity is per entry, not for the store as a whole.
//! - Deleted ciphertext may linger in the WAL until a checkpoint
//!   (`secure_delete` zeroes freed pages in the main file).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::backends::sealed::{
    self, KeyCheck, KeyCheckRows, Keyring, KeyringCheck, MASTER_KEY_ENV, RawTxn, Rotation, SealedTxn,
};
use crate::backends::{Access, Backend, Transaction, VaultError};

/// How long a writer waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a writer waits for the writers queued before it in this
/// process (each holds the lock for one call).
const WRITER_WAIT: Duration = Duration::from_secs(30);
/// Idle connections kept for reuse; more are opened under load and closed
/// after their transaction.
const MAX_IDLE: usize = 8;
/// Entries re-sealed per write transaction by `rotate_all`: SQLite has one
/// write lock, so other writers wait for each batch.
const ROTATE_BATCH: usize = 200;
/// Why a read-only open was refused: the store must be written first.
const NEEDS_A_WRITE: &str =
    "needs a schema upgrade or the key check of a new master key generation, which only a write can add";
/// What a `file:` URI must escape in a path.
const URI_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'%').add(b'?').add(b'#').add(b'"').add(b'<').add(b'>');
/// `PRAGMA application_id` of a secrets store ("SCRT"): tells our files
/// from other applications' SQLite databases.
const APPLICATION_ID: i32 = 0x5343_5254;
/// The key-check entries: sealed for a vault key no key of the host can
/// be (it starts with a NUL), and kept in their own table anyway.
const KEY_CHECK: KeyCheck = KeyCheck { name: "\0secrets-sqlite-key-check", plaintext: b"secrets sqlite key check" };

/// Schema migrations; `MIGRATIONS[n]` takes `user_version` n to n + 1.
/// Append only: never edit a released migration.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: entries, the generation index rotate-all walks, key checks.
    "CREATE TABLE entries (
         key TEXT PRIMARY KEY NOT NULL,
         value BLOB NOT NULL,
         generation INTEGER NOT NULL
     );
     CREATE INDEX entries_by_generation ON entries (generation);
     CREATE TABLE key_checks (
         generation INTEGER PRIMARY KEY NOT NULL,
         sealed BLOB NOT NULL
     );",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Where a SQLite store lives: what [`StoreConfig`](crate::backends::StoreConfig)
/// parses `sqlite:PATH` into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file (relative paths are taken from the working
    /// directory when the store is opened).
    pub path: PathBuf,
    /// Open an existing store for reading only: no file, journal or key is
    /// created and nothing is written, so a read-only data directory can
    /// still be read. A store that does not exist yet is created as usual.
    pub read_only: bool,
}

impl SqliteConfig {
    /// The key file the store uses when `SECRETS_MASTER_KEY` is unset:
    /// `<db file>.key` beside the database.
    pub fn key_file(&self) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(".key");
        PathBuf::from(name)
    }
}

/// A SQLite file store. `Send + Sync`; share it with an `Arc`.
pub struct SqliteBackend {
    shared: Arc<Shared>,
}

/// What the backend and its open transactions share.
struct Shared {
    path: PathBuf,
    /// `sqlite:<path>`, for messages.
    store: Arc<str>,
    keyring: Arc<Keyring>,
    /// Idle connections: a transaction owns its connection and hands it
    /// back here when it ends, so boxed transactions are `'static`.
    idle: Mutex<Vec<Connection>>,
    /// In-process writer queue (SQLite's own lock covers other processes).
    writer: Arc<Mutex<()>>,
    /// Opened for reading only.
    read_only: bool,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<SqliteBackend>();
};

impl SqliteBackend {
    /// Opens the store `config` names. The master keyring comes from
    /// `SECRETS_MASTER_KEY`, else from the key file `<PATH>.key` next to the
    /// database, created with mode 0600 for a new store.
    pub fn from_config(config: &SqliteConfig) -> Result<Self, VaultError> {
        let path = &config.path;
        let key_file = config.key_file();
        // Before anything is created: a device, a FIFO or a directory is no
        // store, and must not get a key file or a journal beside it.
        regular_or_absent(path, "the store")?;
        regular_or_absent(&key_file, "the master key file")?;
        let read_only = config.read_only && fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let keyring = match Keyring::from_env()? {
            Some(keyring) => keyring,
            // A fresh key would make an existing store unreadable and leave
            // a misleading key file behind: name the real problem instead.
            None if !key_file.exists() && fs::metadata(path).is_ok_and(|m| m.len() > 0) => {
                return Err(VaultError::Rejected(format!(
                    "the store sqlite:{} exists but its master key file {} is missing: restore the key file or set {MASTER_KEY_ENV}",
                    path.display(),
                    key_file.display()
                )));
            }
            None if read_only => Keyring::load_or_create(&key_file)?,
            None => {
                create_parent(path)?;
                Keyring::load_or_create(&key_file)?
            }
        };
        if !read_only {
            return Self::open(path, keyring);
        }
        match Self::open_read_only(path, keyring.clone()) {
            // The store needs a write first (a new key generation's check,
            // a migration): make it, where the directory allows.
            Err(VaultError::Rejected(m)) if m.contains(NEEDS_A_WRITE) => Self::open(path, keyring),
            other => other,
        }
    }

    /// Opens an existing store for reading only (see
    /// [`SqliteConfig::read_only`]): write transactions are refused, and a
    /// store that needs a migration or a new key check is refused with a
    /// message saying a write command must run first.
    pub fn open_read_only(path: &Path, keyring: Keyring) -> Result<Self, VaultError> {
        Self::open_with(path, keyring, true)
    }

    /// Opens (creating if needed) the store at `path` with `keyring`:
    /// migrates the schema and checks that the keyring matches the store.
    pub fn open(path: &Path, keyring: Keyring) -> Result<Self, VaultError> {
        Self::open_with(path, keyring, false)
    }

    fn open_with(path: &Path, keyring: Keyring, read_only: bool) -> Result<Self, VaultError> {
        let path = std::path::absolute(path)
            .map_err(|e| VaultError::Rejected(format!("sqlite path {}: {e}", path.display())))?;
        regular_or_absent(&path, "the store")?;
        let store: Arc<str> = format!("sqlite:{}", path.display()).into();
        if !read_only {
            create_parent(&path)?;
            // Create the file private before SQLite does; SQLite gives the
            // -wal and -shm files the mode of the database file.
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(VaultError::Unavailable(format!("{store}: cannot create the database file: {e}")));
                }
            }
        }
        let shared = Arc::new(Shared {
            path,
            store,
            keyring: Arc::new(keyring),
            idle: Mutex::new(Vec::new()),
            writer: Arc::new(Mutex::new(())),
            read_only,
        });
        let conn = shared.connect()?;
        initialise(&conn, &shared.keyring, &shared.store, read_only)?;
        shared.give_back(conn);
        Ok(SqliteBackend { shared })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A raw transaction on a pooled connection: `BEGIN IMMEDIATE` for
    /// writes (after this process's earlier writers), deferred for reads.
    fn begin_raw(&self, access: Access) -> Result<RawConn, VaultError> {
        let shared = &self.shared;
        if shared.read_only && access == Access::Write {
            return Err(VaultError::Rejected(format!("{}: the store was opened for reading only", shared.store)));
        }
        let writer = match access {
            Access::Write => Some(shared.writer.try_lock_arc_for(WRITER_WAIT).ok_or_else(|| {
                VaultError::Unavailable(format!(
                    "{}: waited {}s for this process's other writers",
                    shared.store,
                    WRITER_WAIT.as_secs()
                ))
            })?),
            Access::Read => None,
        };
        let conn = shared.take()?;
        // Built before BEGIN so that any failure from here on hands the
        // connection back in a clean state (see `Drop`).
        let raw = RawConn { conn: Some(conn), shared: shared.clone(), access, _writer: writer };
        let begin = match access {
            Access::Write => "BEGIN IMMEDIATE",
            Access::Read => "BEGIN DEFERRED",
        };
        raw.conn().execute_batch(begin).map_err(|e| db_error(&shared.store, "begin a transaction", e))?;
        if access == Access::Write {
            // Under the write lock: a generation added meanwhile is seen.
            let newest: Option<i64> = raw
                .conn()
                .query_row("SELECT max(generation) FROM key_checks", [], |r| r.get(0))
                .map_err(|e| db_error(&shared.store, "read the key checks", e))?;
            sealed::fence(newest, &shared.keyring, &shared.store)?;
        }
        Ok(raw)
    }
}

impl Backend for SqliteBackend {
    fn begin(&self, access: Access, _lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        // SQLite has one write lock per file, so writers serialise on the
        // whole store: coarser than the lock scope, which is allowed.
        let raw = self.begin_raw(access)?;
        Ok(Box::new(SealedTxn::new(raw, self.shared.keyring.clone(), self.shared.store.clone())))
    }

    fn describe(&self) -> String {
        self.shared.store.to_string()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        sealed::rotate_all(self, &self.shared.keyring, &self.shared.store, ROTATE_BATCH, progress)
    }
}

impl Rotation for SqliteBackend {
    fn check_keyring(&self) -> Result<(), VaultError> {
        let conn = self.shared.take()?;
        let checked = initialise(&conn, &self.shared.keyring, &self.shared.store, self.shared.read_only);
        self.shared.give_back(conn);
        checked
    }

    fn count_older(&self, newest: u32) -> Result<u64, VaultError> {
        self.begin_raw(Access::Read)?.count_older(newest)
    }

    fn rotate_batch(
        &self,
        newest: u32,
        limit: usize,
        reseal: sealed::Reseal<'_>,
    ) -> Result<u64, VaultError> {
        // BEGIN IMMEDIATE holds the store's write lock: no row is skipped.
        let mut raw = self.begin_raw(Access::Write)?;
        let rows = raw.older_entries(newest, limit)?;
        for (key, sealed) in &rows {
            let resealed = reseal(key, sealed).map_err(|e| sealed::name_store(e, &self.shared.store))?;
            raw.put(key, &resealed, newest)?;
        }
        Box::new(raw).commit()?;
        Ok(rows.len() as u64)
    }
}

impl Shared {
    fn connect(&self) -> Result<Connection, VaultError> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e| db_error(&self.store, &what, e)
        };
        if self.read_only {
            return self.connect_read_only();
        }
        // No URI flag: the path is a file name, never `file:` options.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(err("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err("set busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(store = %self.store, journal_mode = %mode, "WAL mode unavailable; readers will wait for writers");
        }
        for (pragma, value) in
            [("synchronous", "FULL"), ("secure_delete", "ON"), ("foreign_keys", "ON"), ("trusted_schema", "OFF")]
        {
            conn.pragma_update(None, pragma, value).map_err(err(&format!("set {pragma}")))?;
        }
        Ok(conn)
    }

    /// A read-only connection: no journal mode change, nothing created. A
    /// WAL store whose directory is read-only cannot get its `-shm` file,
    /// without which SQLite will not read it; then, since no connection has
    /// it open (the file is removed by the last one to close), it is read
    /// as an immutable snapshot.
    fn connect_read_only(&self) -> Result<Connection, VaultError> {
        let err = |what: &'static str| move |e| db_error(&self.store, what, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(err("open for reading"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err("set busy_timeout"))?;
        let probe = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0));
        let conn = match probe {
            // No -shm file can be made: a read-only directory (CANTOPEN)
            // or a full disk (IOERR).
            Err(e) if matches!(e.sqlite_error_code(), Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure)) => {
                // A connection that has the store open keeps a -shm of at
                // least 32 KiB (the WAL index); a shorter one is what a
                // failed open left.
                let shm = PathBuf::from(format!("{}-shm", self.path.display()));
                if fs::metadata(&shm).is_ok_and(|m| m.len() >= 32 * 1024) {
                    return Err(db_error(&self.store, "open for reading", e));
                }
                tracing::warn!(
                    store = %self.store,
                    "no -shm file can be made beside the store (read-only directory or full disk): reading it as an immutable snapshot"
                );
                let uri = format!(
                    "file:{}?immutable=1",
                    percent_encoding::utf8_percent_encode(&self.path.to_string_lossy(), URI_PATH)
                );
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(err("open an immutable snapshot"))?
            }
            Err(e) => return Err(db_error(&self.store, "open for reading", e)),
            Ok(_) => conn,
        };
        for (pragma, value) in [("trusted_schema", "OFF"), ("query_only", "ON")] {
            conn.pragma_update(None, pragma, value).map_err(|e| db_error(&self.store, "set a pragma", e))?;
        }
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, VaultError> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(conn);
        }
        self.connect()
    }

    /// Keeps a connection for reuse if it is outside any transaction and
    /// the pool has room; otherwise closes it.
    fn give_back(&self, conn: Connection) {
        if conn.is_autocommit() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

/// Creates the schema or migrates it, and checks the keyring against the
/// store. A first, read-only pass avoids taking the write lock on every
/// open; only when something must be written (a new store, a migration, the
/// key check of a new generation) does a second pass run under
/// `BEGIN IMMEDIATE`, which re-checks everything.
fn initialise(conn: &Connection, keyring: &Keyring, store: &str, read_only: bool) -> Result<(), VaultError> {
    for write in [false, true] {
        if write && read_only {
            return Err(VaultError::Rejected(format!(
                "{store} {NEEDS_A_WRITE}: run a write command (e.g. `secrets set`) with write access to the store first"
            )));
        }
        let begin = if write { "BEGIN IMMEDIATE" } else { "BEGIN DEFERRED" };
        conn.execute_batch(begin).map_err(|e| db_error(store, "begin the schema check", e))?;
        let result = prepare(conn, keyring, store, write);
        let end = if matches!(result, Ok(true)) && write { "COMMIT" } else { "ROLLBACK" };
        let ended = conn.execute_batch(end).map_err(|e| db_error(store, "end the schema check", e));
        if result? {
            return ended;
        }
        ended?;
    }
    Err(VaultError::Other(format!("{store}: the schema check did not complete")))
}

/// One pass of [`initialise`]; `Ok(false)` when it needs to write but may
/// not.
fn prepare(conn: &Connection, keyring: &Keyring, store: &str, write: bool) -> Result<bool, VaultError> {
    let err = |what: &'static str| move |e| db_error(store, what, e);
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err("read the schema version"))?;
    let app_id: i32 =
        conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(err("read the application id"))?;
    if app_id != APPLICATION_ID && (app_id != 0 || version != 0) {
        return Err(VaultError::Rejected(format!("{store} is not a secrets store (application_id {app_id:#x})")));
    }
    if version > SCHEMA_VERSION {
        return Err(VaultError::Rejected(format!(
            "{store} has schema version {version}, newer than this build understands ({SCHEMA_VERSION}): upgrade secrets"
        )));
    }
    if version < SCHEMA_VERSION {
        if !write {
            return Ok(false);
        }
        if version == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(err("read the schema"))?;
            if tables > 0 {
                return Err(VaultError::Rejected(format!(
                    "{store} is a SQLite database of another application; refusing to add the secrets schema to it"
                )));
            }
        }
        for (n, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(migration)
                .map_err(|e| db_error(store, &format!("migrate the schema to version {}", n + 1), e))?;
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(err("set the application id"))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err("set the schema version"))?;
    }
    match sealed::check_keyring(&mut KeyCheckTable { conn, store }, keyring, KEY_CHECK, store)? {
        KeyringCheck::Matches => Ok(true),
        KeyringCheck::NeedsKeyCheck if !write => Ok(false),
        KeyringCheck::NeedsKeyCheck => {
            sealed::write_key_check(&mut KeyCheckTable { conn, store }, keyring, KEY_CHECK)?;
            Ok(true)
        }
    }
}

/// The `key_checks` table and the generation column of `entries`, for the
/// shared keyring check.
struct KeyCheckTable<'a> {
    conn: &'a Connection,
    store: &'a str,
}

impl KeyCheckRows for KeyCheckTable<'_> {
    fn key_checks(&mut self) -> Result<Vec<(i64, Vec<u8>)>, VaultError> {
        self.conn
            .prepare("SELECT generation, sealed FROM key_checks ORDER BY generation")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| db_error(self.store, "read the key checks", e))
    }

    fn generations_in_use(&mut self) -> Result<Vec<i64>, VaultError> {
        // Distinct generations by index seeks (a loose index scan).
        let mut used = Vec::new();
        let mut after = i64::MIN;
        while let Some(generation) = self
            .conn
            .query_row(
                "SELECT generation FROM entries WHERE generation > ?1 ORDER BY generation LIMIT 1",
                [after],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| db_error(self.store, "read the entry generations", e))?
        {
            used.push(generation);
            after = generation;
        }
        Ok(used)
    }

    fn count_under(&mut self, generation: i64) -> Result<u64, VaultError> {
        self.conn
            .query_row("SELECT count(*) FROM entries WHERE generation = ?1", [generation], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| db_error(self.store, "count entries by generation", e))
    }

    fn add_key_check(&mut self, generation: u32, sealed: &[u8]) -> Result<(), VaultError> {
        self.conn
            .execute("INSERT INTO key_checks (generation, sealed) VALUES (?1, ?2)", rusqlite::params![generation, sealed])
            .map(drop)
            .map_err(|e| db_error(self.store, "write the key check", e))
    }
}

/// Rows of one transaction on a connection it owns (so the boxed
/// transaction is `'static`). Drop rolls back unless committed, then hands
/// the connection back to the pool; the writer lock is released last.
struct RawConn {
    conn: Option<Connection>,
    shared: Arc<Shared>,
    access: Access,
    _writer: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl RawConn {
    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("the connection is held until drop")
    }

    fn err(&self, what: String) -> impl FnOnce(rusqlite::Error) -> VaultError + '_ {
        move |e| db_error(&self.shared.store, &what, e)
    }

    /// A read call cannot write: refusing here keeps a read transaction
    /// from ever taking the write lock.
    fn writable(&self, key: &str) -> Result<(), VaultError> {
        match self.access {
            Access::Write => Ok(()),
            Access::Read => {
                Err(VaultError::Rejected(format!("{}: write of {key} in a read-only transaction", self.shared.store)))
            }
        }
    }

    fn count_older(&self, newest: u32) -> Result<u64, VaultError> {
        self.conn()
            .query_row("SELECT count(*) FROM entries WHERE generation < ?1", [newest], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err("count entries to rotate".into()))
    }

    fn older_entries(&self, newest: u32, limit: usize) -> Result<Vec<(String, Vec<u8>)>, VaultError> {
        self.conn()
            .prepare("SELECT key, value FROM entries WHERE generation < ?1 LIMIT ?2")
            .and_then(|mut s| {
                s.query_map(rusqlite::params![newest, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
            })
            .map_err(self.err("list entries to rotate".into()))
    }
}

impl RawTxn for RawConn {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>, VaultError> {
        self.conn()
            .prepare_cached("SELECT value, generation FROM entries WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(self.err(format!("read entry {key}")))
    }

    fn put(&mut self, key: &str, sealed: &[u8], generation: u32) -> Result<(), VaultError> {
        self.writable(key)?;
        self.conn()
            .prepare_cached(
                "INSERT INTO entries (key, value, generation) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, generation = excluded.generation",
            )
            .and_then(|mut s| s.execute(rusqlite::params![key, sealed, generation]))
            .map_err(self.err(format!("write entry {key}")))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable(key)?;
        self.conn()
            .prepare_cached("DELETE FROM entries WHERE key = ?1")
            .and_then(|mut s| s.execute([key]))
            .map_err(self.err(format!("delete entry {key}")))?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        // On failure the transaction is still open; drop rolls it back.
        self.conn().execute_batch("COMMIT").map_err(self.err("commit".into()))
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            // Closing the connection rolls back whatever is left.
            tracing::warn!(store = %self.shared.store, error = %e, "rollback failed; closing the connection");
            return;
        }
        self.shared.give_back(conn);
    }
}

/// A SQLite error as a [`VaultError`] naming the store and the operation.
/// SQLite's messages name tables and columns, never bound values.
fn db_error(store: &str, what: &str, e: rusqlite::Error) -> VaultError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => VaultError::Unavailable(format!(
            "{store}: {what}: the database stayed locked by another writer for more than {}s",
            BUSY_TIMEOUT.as_secs()
        )),
        // SQLite says "disk I/O error" when it cannot grow a file on a full
        // disk: name the cause.
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull)
            if let Some(dir) = store.strip_prefix("sqlite:").and_then(|p| Path::new(p).parent())
                && disk_is_full(dir) =>
        {
            VaultError::Unavailable(format!("{store}: {what}: the disk holding {} is full ({e})", dir.display()))
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport,
        ) => VaultError::Unavailable(format!("{store}: {what}: {e}")),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            VaultError::Corrupt(format!("{store}: {what}: {e}"))
        }
        _ => VaultError::Other(format!("{store}: {what}: {e}")),
    }
}

/// Whether the filesystem holding `dir` has (nearly) no room left for us:
/// less than 64 KiB available.
#[allow(unsafe_code, reason = "statvfs(3) into a zeroed struct")]
fn disk_is_full(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `path` is NUL-terminated; `stat` is a valid, zeroed statvfs.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    (stat.f_bavail as u128) * (stat.f_frsize as u128) < 64 * 1024
}

/// Refuses a path that exists but is not a regular file (following links:
/// a link to a file is fine).
fn regular_or_absent(path: &Path, what: &str) -> Result<(), VaultError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = fs::metadata(path) else { return Ok(()) };
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(VaultError::Rejected(format!(
        "{what} sqlite:{} is {kind}: a SQLite store is a regular file (or a path that does not exist yet)",
        path.display()
    )))
}

/// Creates missing parent directories, private (0700) since they hold the
/// key file too.
fn create_parent(path: &Path) -> Result<(), VaultError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| VaultError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> (PathBuf, PathBuf) {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("secrets-sqlite-unit-{name}-{}-{nanos}", std::process::id()));
        (dir.join("nested/store.db"), dir)
    }

    #[test]
    fn transactions_commit_roll_back_and_reads_cannot_write() {
        let (db, dir) = temp_db("txn");
        let backend = SqliteBackend::open(&db, Keyring::single([3; 32])).unwrap();
        assert!(db.parent().unwrap().is_dir(), "parent directories are created");
        assert_eq!(backend.describe(), format!("sqlite:{}", db.display()));
        assert_eq!(SqliteConfig { path: db.clone(), read_only: false }.key_file(), db.with_file_name("store.db.key"));
        let mut t = backend.begin(Access::Write, "s").unwrap();
        t.store("t/61/k", b"v").unwrap();
        t.commit().unwrap();
        {
            let mut t = backend.begin(Access::Write, "s").unwrap();
            t.store("t/61/k", b"changed").unwrap();
        }
        let mut r = backend.begin(Access::Read, "s").unwrap();
        assert_eq!(r.retrieve("t/61/k").unwrap().as_deref(), Some(&b"v"[..]));
        let err = r.store("t/61/k", b"x").unwrap_err();
        assert!(
            matches!(&err, VaultError::Rejected(m) if m.contains("read-only") && m.contains(&backend.describe())),
            "{err:?}"
        );
        drop(r);
        // Every connection went back to the pool outside a transaction.
        assert!(backend.shared.idle.lock().iter().all(Connection::is_autocommit));
        let conn = Connection::open(&db).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!((version, mode.as_str()), (SCHEMA_VERSION, "wal"));
        drop(backend);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn other_applications_databases_are_left_alone() {
        let (db, dir) = temp_db("foreign");
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        Connection::open(&db).unwrap().execute_batch("CREATE TABLE photos (id INTEGER)").unwrap();
        let err = SqliteBackend::open(&db, Keyring::single([3; 32])).err().unwrap();
        assert!(matches!(&err, VaultError::Rejected(m) if m.contains("another application")), "{err:?}");
        fs::remove_dir_all(dir).unwrap();
    }
}
