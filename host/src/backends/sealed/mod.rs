//! Encryption at rest for the SQL backends (SQLite, PostgreSQL), and the
//! master-key checks they share.
//!
//! A SQL backend supplies rows; this module owns everything about keys:
//! - [`SealedTxn`] turns a backend's [`RawTxn`] (get, put, remove rows of
//!   sealed bytes inside its own transaction) into a [`Transaction`] that
//!   seals on store, opens on retrieve and re-seals on rotate, and refuses a
//!   row whose generation column disagrees with its authenticated header
//!   (that column steers rotation and the keyring check, so a wrong one
//!   would hide an entry from both).
//! - [`check_keyring`] refuses, when a store is opened, a keyring that does
//!   not match it: a held generation whose key does not open the store's key
//!   check of that generation, no generation in common with the store, or
//!   entries sealed under generations the keyring lacks.
//! - [`rotate_all`] re-seals every entry under the newest generation in
//!   batches, each its own write transaction.
//! - [`fence`] stops a writer whose keyring predates the store's newest
//!   generation (it started before `keyring add`): it would seal entries
//!   that rotate-all has already passed. Writers in flight when a new
//!   generation's key check is written are waited for (SQLite's write lock;
//!   PostgreSQL's schema lock, which writers hold in shared mode).
//!
//! # Does not protect
//! Key names, row counts, value sizes and write times stay visible to
//! whoever reads the database; whoever can write it can delete rows or put
//! back an older ciphertext of the same entry (integrity is per entry, not
//! per store). The master key protects nothing from a process that holds it.

pub mod keyring;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

pub use keyring::{Keyring, MASTER_KEY_ENV, SEALED_FORMAT, sealed_generation};

use crate::backends::{Transaction, Vault, VaultError};

/// A row as [`RawTxn`] reads it: the sealed bytes and its generation column.
pub type RawRow = (Vec<u8>, i64);

/// Rows of sealed entries inside one database transaction. Dropping it
/// without `commit` must roll the transaction back.
pub trait RawTxn: Send {
    /// The sealed bytes under `key` and the generation column of its row.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>, VaultError>;
    /// [`RawTxn::get`] of each key, in order; a backend that can answer in
    /// one request does.
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<RawRow>>, VaultError> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Inserts or replaces; `generation` is stored beside the row so that
    /// rotation and the keyring check can find entries by generation.
    fn put(&mut self, key: &str, sealed: &[u8], generation: u32) -> Result<(), VaultError>;
    /// Removes the row of `key`, if any.
    fn remove(&mut self, key: &str) -> Result<(), VaultError>;
    /// Commits the database transaction.
    fn commit(self: Box<Self>) -> Result<(), VaultError>;
}

/// The sealed bytes of a row, after checking its generation column against
/// the header the AEAD authenticates.
fn checked(key: &str, sealed: Vec<u8>, column: i64) -> Result<Vec<u8>, VaultError> {
    let header = sealed_generation(&sealed)
        .map_err(|_| VaultError::Corrupt(format!("entry {key} is not in the sealed format")))?;
    if i64::from(header) != column {
        return Err(VaultError::Corrupt(format!(
            "entry {key} is sealed under generation {header} but its row says {column}"
        )));
    }
    Ok(sealed)
}

/// [`checked`] for a row that may be missing.
fn checked_row(key: &str, row: Option<RawRow>) -> Result<Option<Vec<u8>>, VaultError> {
    row.map(|(sealed, column)| checked(key, sealed, column)).transpose()
}

/// A [`RawTxn`] with encryption at rest: a [`Transaction`]. `store` names
/// the store in every error that does not name it yet.
pub struct SealedTxn<R> {
    raw: Box<R>,
    keyring: Arc<Keyring>,
    store: Arc<str>,
    /// Entries to re-seal at commit: read together then (one request on
    /// PostgreSQL) instead of one read per `rotate`.
    rotations: BTreeSet<String>,
}

impl<R: RawTxn> SealedTxn<R> {
    /// Wraps `raw`, sealing with `keyring`; `store` is the store's
    /// description for messages.
    pub fn new(raw: R, keyring: Arc<Keyring>, store: Arc<str>) -> Self {
        SealedTxn { raw: Box::new(raw), keyring, store, rotations: BTreeSet::new() }
    }

    fn named<T>(&self, r: Result<T, VaultError>) -> Result<T, VaultError> {
        r.map_err(|e| name_store(e, &self.store))
    }

    /// Re-seals the entries `rotate` named that still exist, under the
    /// newest generation, same plaintext.
    fn apply_rotations(&mut self) -> Result<(), VaultError> {
        let keys: Vec<String> = std::mem::take(&mut self.rotations).into_iter().collect();
        if keys.is_empty() {
            return Ok(());
        }
        let rows = self.raw.get_many(&keys)?;
        for (key, row) in keys.iter().zip(rows) {
            if let Some(sealed) = checked_row(key, row)? {
                let resealed = reseal(&self.keyring, key, &sealed)?;
                self.raw.put(key, &resealed, self.keyring.newest())?;
            }
        }
        Ok(())
    }

    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        checked_row(key, self.raw.get(key)?)
    }
}

/// Adds the store to a message that does not name it yet (the keyring's
/// errors know the entry, not the database).
pub fn name_store(e: VaultError, store: &str) -> VaultError {
    e.map_message(|m| if m.contains(store) { m } else { format!("{m} ({store})") })
}

impl<R: RawTxn> Vault for SealedTxn<R> {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        // Sealed under the newest generation already.
        self.rotations.remove(key);
        let r = self.keyring.seal(key, value).and_then(|sealed| self.raw.put(key, &sealed, self.keyring.newest()));
        self.named(r)
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let r = match self.read(key) {
            Ok(Some(sealed)) => self.keyring.open(key, &sealed).map(Some),
            other => other,
        };
        self.named(r)
    }

    fn retrieve_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        let r = self.raw.get_many(keys).and_then(|rows| {
            keys.iter()
                .zip(rows)
                .map(|(key, row)| checked_row(key, row)?.map(|sealed| self.keyring.open(key, &sealed)).transpose())
                .collect()
        });
        self.named(r)
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.rotations.remove(key);
        let r = self.raw.remove(key);
        self.named(r)
    }

    /// Deferred to commit (`apply_rotations`): reads in
    /// between see the same plaintext either way.
    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        self.rotations.insert(key.to_owned());
        Ok(())
    }
}

impl<R: RawTxn> Transaction for SealedTxn<R> {
    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        let store = self.store.clone();
        self.apply_rotations().and_then(|()| self.raw.commit()).map_err(|e| name_store(e, &store))
    }
}

/// The entry `key` sealed again under the newest generation, same plaintext.
pub fn reseal(keyring: &Keyring, key: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let plain = Zeroizing::new(keyring.open(key, sealed)?);
    keyring.seal(key, &plain)
}

// ---------------------------------------------------------------------------
// Key checks

/// The key-check entry of a backend: `plaintext` sealed for the vault key
/// `name`, one per master key generation. Each backend keeps its own
/// constants, so stores written by earlier releases keep opening.
#[derive(Debug, Clone, Copy)]
pub struct KeyCheck {
    /// The vault key the entries are sealed for (never one the host builds).
    pub name: &'static str,
    /// What a key-check entry decrypts to.
    pub plaintext: &'static [u8],
}

/// What the keyring check reads and writes, inside one transaction of the
/// backend.
pub trait KeyCheckRows {
    /// Every key-check row: (generation column, sealed bytes).
    fn key_checks(&mut self) -> Result<Vec<(i64, Vec<u8>)>, VaultError>;
    /// The distinct generation columns of the entries.
    fn generations_in_use(&mut self) -> Result<Vec<i64>, VaultError>;
    /// How many entries are sealed under `generation`.
    fn count_under(&mut self, generation: i64) -> Result<u64, VaultError>;
    /// Adds the key-check row of `generation`.
    fn add_key_check(&mut self, generation: u32, sealed: &[u8]) -> Result<(), VaultError>;
}

/// What [`check_keyring`] found when the keyring matches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringCheck {
    /// Nothing to write.
    Matches,
    /// It matches, but the store has no key check for the keyring's newest
    /// generation yet: [`write_key_check`] adds it (in a write transaction).
    NeedsKeyCheck,
}

/// "generation 1" or "generations 1, 2".
pub fn generation_list(generations: &[u32]) -> String {
    let list: Vec<String> = generations.iter().map(u32::to_string).collect();
    let plural = if list.len() == 1 { "" } else { "s" };
    format!("generation{plural} {}", list.join(", "))
}

/// Refuses a keyring that does not match the store `store` (its
/// description, for messages): a held generation whose key-check entry is
/// not sealed under that generation or does not open, no generation in
/// common with the store, or entries sealed under generations the keyring
/// lacks. Writes nothing.
pub fn check_keyring(
    rows: &mut dyn KeyCheckRows,
    keyring: &Keyring,
    check: KeyCheck,
    store: &str,
) -> Result<KeyringCheck, VaultError> {
    let held = keyring.generations();
    let checks = rows.key_checks()?;
    for (column, sealed) in &checks {
        let Some(generation) = u32::try_from(*column).ok().filter(|g| held.contains(g)) else { continue };
        let opens = sealed_generation(sealed).ok() == Some(generation)
            && keyring.open(check.name, sealed).ok().as_deref() == Some(check.plaintext);
        if !opens {
            return Err(VaultError::Corrupt(format!(
                "{store}: wrong master key: the master key does not match this store: the keyring's key of \
                 generation {generation} does not open the store's key check for generation {generation}; use the \
                 {MASTER_KEY_ENV} or key file the store was created with (and its replicas share)"
            )));
        }
    }
    let store_gens: Vec<u32> = checks.iter().filter_map(|(g, _)| u32::try_from(*g).ok()).collect();
    if !store_gens.is_empty() && !store_gens.iter().any(|g| held.contains(g)) {
        return Err(VaultError::Corrupt(format!(
            "{store}: wrong master key: the master key does not match this store: the store has key checks for \
             {}, the keyring holds {} ({store_gens:?} vs {held:?}); use the {MASTER_KEY_ENV} or key file the store \
             was created with",
            generation_list(&store_gens),
            generation_list(&held)
        )));
    }
    let mut missing = Vec::new();
    for column in rows.generations_in_use()? {
        if u32::try_from(column).is_ok_and(|g| held.contains(&g)) {
            continue;
        }
        let count = rows.count_under(column)?;
        missing.push(format!("{count} {} under generation {column}", if count == 1 { "entry" } else { "entries" }));
    }
    if !missing.is_empty() {
        // Not corruption: a configuration that retired a generation too soon.
        return Err(VaultError::Rejected(format!(
            "{store}: entries under retired master key generations: the keyring holds {}, and the store has \
             entries sealed under others ({}); put the missing generations back in {MASTER_KEY_ENV} or the key \
             file, and run `secrets keyring rotate-all` (with every generation) before retiring a generation",
            generation_list(&held),
            missing.join(", ")
        )));
    }
    let newest = i64::from(keyring.newest());
    Ok(if checks.iter().any(|(g, _)| *g == newest) { KeyringCheck::Matches } else { KeyringCheck::NeedsKeyCheck })
}

/// The fence of a write transaction: refuses to seal anything when the
/// store already has the key check of a generation newer than the
/// keyring's newest (`store_newest`, read inside the transaction). Such a
/// writer started before `keyring add` and would seal under a generation
/// that rotate-all is about to retire.
pub fn fence(store_newest: Option<i64>, keyring: &Keyring, store: &str) -> Result<(), VaultError> {
    match store_newest {
        Some(newest) if newest > i64::from(keyring.newest()) => Err(VaultError::Rejected(format!(
            "{store}: the store has master key generation {newest}, newer than this process's keyring (newest \
             {}): it was added after this process started; restart it with the current key file or \
             {MASTER_KEY_ENV}",
            keyring.newest()
        ))),
        _ => Ok(()),
    }
}

/// Writes the key check of the keyring's newest generation (what
/// [`KeyringCheck::NeedsKeyCheck`] asks for). `Keyring::seal` seals under
/// the newest generation only, so older generations got theirs when they
/// were newest.
pub fn write_key_check(rows: &mut dyn KeyCheckRows, keyring: &Keyring, check: KeyCheck) -> Result<(), VaultError> {
    let sealed = keyring.seal(check.name, check.plaintext)?;
    rows.add_key_check(keyring.newest(), &sealed)
}

// ---------------------------------------------------------------------------
// Rotation

/// Opens an entry's sealed bytes and seals them again under the newest
/// generation: what [`Rotation::rotate_batch`] applies to every row.
pub type Reseal<'a> = &'a dyn Fn(&str, &[u8]) -> Result<Vec<u8>, VaultError>;

/// What [`rotate_all`] needs of a backend.
pub trait Rotation {
    /// Runs the backend's open-time keyring check again (writing the key
    /// check of the newest generation if missing): rotation moves
    /// everything onto that generation, so it must be the store's.
    fn check_keyring(&self) -> Result<(), VaultError>;
    /// How many entries are sealed under generations older than `newest`.
    fn count_older(&self, newest: u32) -> Result<u64, VaultError>;
    /// In one write transaction of its own: takes up to `limit` entries
    /// sealed under generations older than `newest` (skipping rows other
    /// writers hold, where the database can), replaces each with
    /// `reseal(key, sealed)` under `newest`, and commits. Returns how many.
    fn rotate_batch(
        &self,
        newest: u32,
        limit: usize,
        reseal: Reseal<'_>,
    ) -> Result<u64, VaultError>;
}

/// How long [`rotate_all`] waits for rows that writers hold.
const ROTATE_WAIT: Duration = Duration::from_secs(60);

/// Re-seals every entry under the keyring's newest generation, in batches
/// of `batch` entries (each its own write transaction, so other writers
/// get the lock between batches); calls `progress(done, total)` as it goes and
/// returns how many entries it re-sealed. A failure keeps the batches
/// before it. Rows that writers hold are retried, never overwritten with
/// stale plaintext.
pub fn rotate_all(
    backend: &dyn Rotation,
    keyring: &Keyring,
    store: &str,
    batch: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, VaultError> {
    backend.check_keyring()?;
    let newest = keyring.newest();
    let total = backend.count_older(newest)?;
    progress(0, total);
    let reseal = |key: &str, sealed: &[u8]| reseal(keyring, key, sealed);
    let mut done = 0u64;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let n = backend.rotate_batch(newest, batch, &reseal)?;
        if n > 0 {
            done += n;
            waiting_since = None;
            // Writers with an older keyring may add entries meanwhile.
            progress(done, total.max(done));
            continue;
        }
        // Nothing unlocked is left: finished, unless writers hold rows.
        if backend.count_older(newest)? == 0 {
            return Ok(done);
        }
        let since = *waiting_since.get_or_insert_with(Instant::now);
        if since.elapsed() > ROTATE_WAIT {
            return Err(VaultError::Unavailable(format!(
                "{store}: entries under older key generations stayed locked by writers for {}s; run rotation again",
                ROTATE_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
