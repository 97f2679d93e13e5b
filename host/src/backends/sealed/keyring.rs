//! Encryption at rest for the database backends (SQLite, PostgreSQL).
//!
//! Every value is sealed with XChaCha20-Poly1305 under the newest master key
//! generation, with a fresh random 192-bit nonce per write. The associated
//! data binds the format version, the key generation and the full vault key
//! (which starts with the tenant prefix), so a ciphertext copied to another
//! row, another tenant or another generation fails to open. Opening never
//! returns wrong plaintext: it authenticates or it fails with
//! [`VaultError::Corrupt`].
//!
//! Sealed layout: `[format: 1 byte = 1][generation: u32 BE][nonce: 24][ciphertext ‖ tag: 16]`.
//!
//! Master keys form a keyring of numbered generations. They come from
//! `SECRETS_MASTER_KEY` (64 hex characters, generation 1; or a list
//! `1:<hex>,2:<hex>`), or else from a key file created on first use with
//! mode 0600 (one `<generation> <hex>` line per generation). A key file that
//! others can read, or that lists a generation twice, is refused. Adding a
//! generation holds an exclusive `flock` on the file from reading the newest
//! generation to the synced append; readers take a shared one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::backends::VaultError;

/// The environment variable holding the master key(s).
pub const MASTER_KEY_ENV: &str = "SECRETS_MASTER_KEY";
/// Format byte of sealed entries.
pub const SEALED_FORMAT: u8 = 1;
const HEADER: usize = 1 + 4 + 24;
const TAG: usize = 16;

/// The master keys, by generation. `Debug` shows generations, never keys.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("generations", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

fn parse_key(hex_key: &str) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key.trim(), &mut key[..])
        .map_err(|_| VaultError::Rejected("a master key must be 64 hexadecimal characters (32 bytes)".into()))?;
    Ok(key)
}

fn parse_generation(s: &str) -> Result<u32, VaultError> {
    match s.trim().parse::<u32>() {
        Ok(g) if g > 0 => Ok(g),
        _ => Err(VaultError::Rejected(format!("master key generation {s:?} is not a positive number"))),
    }
}

impl Keyring {
    /// A keyring of one generation (1).
    pub fn single(key: [u8; 32]) -> Keyring {
        Keyring { keys: BTreeMap::from([(1, Zeroizing::new(key))]) }
    }

    /// Parses `SECRETS_MASTER_KEY`'s forms: `<hex>` or `1:<hex>,2:<hex>,...`.
    pub fn from_spec(spec: &str) -> Result<Keyring, VaultError> {
        let mut keys = BTreeMap::new();
        if !spec.contains(':') {
            keys.insert(1, parse_key(spec)?);
        } else {
            for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                let (generation, key) = part
                    .split_once(':')
                    .ok_or_else(|| VaultError::Rejected("master key list entries are <generation>:<hex>".into()))?;
                if keys.insert(parse_generation(generation)?, parse_key(key)?).is_some() {
                    return Err(VaultError::Rejected(format!("master key generation {generation} is listed twice")));
                }
            }
        }
        if keys.is_empty() {
            return Err(VaultError::Rejected("no master key given".into()));
        }
        Ok(Keyring { keys })
    }

    /// The keyring `SECRETS_MASTER_KEY` holds, `None` when it is unset. A
    /// value that is not UTF-8 is refused, never taken for "unset" (which
    /// would silently create a key file instead).
    pub fn from_env() -> Result<Option<Keyring>, VaultError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(spec) => Keyring::from_spec(&spec).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(VaultError::Rejected(format!(
                "{MASTER_KEY_ENV} is set but is not text: it must be 64 hexadecimal characters (or 1:<hex>,2:<hex>)"
            ))),
        }
    }

    /// The keyring from `SECRETS_MASTER_KEY` if set, else from `key_file`
    /// (created with one fresh generation when missing).
    pub fn from_env_or_file(key_file: &Path) -> Result<Keyring, VaultError> {
        match Keyring::from_env()? {
            Some(keyring) => Ok(keyring),
            None => Keyring::load_or_create(key_file),
        }
    }

    /// Reads a key file; creates it (mode 0600, one random generation) if it
    /// does not exist. Refuses a file readable or writable by others, and a
    /// generation listed twice. Reads under a shared `flock`, so never
    /// half of a line [`Keyring::add_generation`] is appending.
    pub fn load_or_create(path: &Path) -> Result<Keyring, VaultError> {
        let mut file = open_key_file(path, false)?;
        lock_key_file(&file, path, libc::LOCK_SH)?;
        read_key_file(&mut file, path)
    }

    /// Appends a fresh random generation to a key file (creating the file
    /// first if it does not exist) and returns its number. Data sealed under
    /// older generations stays readable; rotate entries to move them onto
    /// the new one. Reading the newest generation, appending and syncing
    /// happen under an exclusive `flock` on the file, so concurrent adds
    /// (in this process or others) each get their own number.
    pub fn add_generation(path: &Path) -> Result<u32, VaultError> {
        let mut file = open_key_file(path, true)?;
        lock_key_file(&file, path, libc::LOCK_EX)?;
        let ring = read_key_file(&mut file, path)?;
        let generation = ring.newest().checked_add(1).ok_or_else(|| {
            VaultError::Rejected(format!("master key file {}: no generation after {}", path.display(), ring.newest()))
        })?;
        #[cfg(test)]
        tests::pause_before_append();
        let key = random_key()?;
        let line = Zeroizing::new(format!("{generation} {}\n", hex::encode(&key[..])));
        // Opened for append: the line lands at the end whatever the read
        // position. The lock goes with the descriptor, after the sync.
        file.write_all(line.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| io_error(path, e))?;
        Ok(generation)
    }

    /// The newest generation: what [`Keyring::seal`] uses.
    pub fn newest(&self) -> u32 {
        *self.keys.keys().next_back().expect("a keyring is never empty")
    }

    /// The generations held, oldest first.
    pub fn generations(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn cipher(&self, generation: u32) -> Result<XChaCha20Poly1305, VaultError> {
        let key = self.keys.get(&generation).ok_or_else(|| {
            VaultError::Corrupt(format!("entry is sealed under master key generation {generation}, which the keyring does not hold"))
        })?;
        Ok(XChaCha20Poly1305::new(key[..].into()))
    }

    /// Encrypts `plaintext` for the entry `vault_key` under the newest
    /// generation.
    pub fn seal(&self, vault_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let generation = self.newest();
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Other(format!("no randomness for a nonce: {e}")))?;
        let mut out = Vec::with_capacity(HEADER + plaintext.len() + TAG);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&generation.to_be_bytes());
        out.extend_from_slice(&nonce);
        let aad = associated_data(generation, vault_key);
        let ct = self
            .cipher(generation)?
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| VaultError::Other("encryption failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts an entry sealed for `vault_key`; fails with
    /// [`VaultError::Corrupt`] on any mismatch.
    pub fn open(&self, vault_key: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let generation = sealed_generation(sealed)?;
        let aad = associated_data(generation, vault_key);
        self.cipher(generation)?
            .decrypt(XNonce::from_slice(&sealed[5..HEADER]), Payload { msg: &sealed[HEADER..], aad: &aad })
            .map_err(|_| {
                VaultError::Corrupt(format!(
                    "entry {vault_key} failed authentication (tampered with, moved from another entry, or a different master key)"
                ))
            })
    }
}

/// The generation an entry is sealed under.
pub fn sealed_generation(sealed: &[u8]) -> Result<u32, VaultError> {
    if sealed.len() < HEADER + TAG || sealed[0] != SEALED_FORMAT {
        return Err(VaultError::Corrupt("entry is not in the sealed format".into()));
    }
    Ok(u32::from_be_bytes(sealed[1..5].try_into().unwrap()))
}

fn associated_data(generation: u32, vault_key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + vault_key.len());
    aad.extend_from_slice(b"cp-secrets\0");
    aad.push(SEALED_FORMAT);
    aad.extend_from_slice(&generation.to_be_bytes());
    aad.extend_from_slice(vault_key.as_bytes());
    aad
}

fn random_key() -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut key[..]).map_err(|e| VaultError::Other(format!("no randomness for a master key: {e}")))?;
    Ok(key)
}

/// Opens a key file, creating it first if it does not exist; `append`
/// opens it for appending too.
fn open_key_file(path: &Path, append: bool) -> Result<fs::File, VaultError> {
    if !path.exists() {
        create_key_file(path)?;
    }
    fs::OpenOptions::new().read(true).append(append).open(path).map_err(|e| io_error(path, e))
}

/// Takes a `flock` (`LOCK_SH` or `LOCK_EX`) on an open key file; it is
/// released when the file is closed.
#[allow(unsafe_code, reason = "flock on a descriptor the File owns")]
fn lock_key_file(file: &fs::File, path: &Path, operation: libc::c_int) -> Result<(), VaultError> {
    loop {
        // SAFETY: flock on a descriptor this `File` owns for the call.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(VaultError::Unavailable(format!("{}: cannot lock: {e}", path.display())));
        }
    }
}

/// Parses an open key file from its start, after checking its mode.
fn read_key_file(file: &mut fs::File, path: &Path) -> Result<Keyring, VaultError> {
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Rejected(format!(
            "master key file {} has mode {mode:o}; it must not be accessible by group or others (chmod 600)",
            path.display()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text)).map_err(|e| io_error(path, e))?;
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (generation, key) = line.split_once(char::is_whitespace).ok_or_else(|| {
            VaultError::Rejected(format!("master key file {}: lines are `<generation> <hex>`", path.display()))
        })?;
        let generation = parse_generation(generation)?;
        if keys.insert(generation, parse_key(key)?).is_some() {
            return Err(VaultError::Rejected(format!(
                "master key file {}: master key generation {generation} is listed twice",
                path.display()
            )));
        }
    }
    if keys.is_empty() {
        return Err(VaultError::Rejected(format!("master key file {} holds no key", path.display())));
    }
    Ok(Keyring { keys })
}

/// Writes a new key file atomically: a private temporary file, then a hard
/// link that fails if another process created the file first.
fn create_key_file(path: &Path) -> Result<(), VaultError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let key = random_key()?;
    // Unique per process and per call: threads of one process may race too.
    static CREATES: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), CREATES.fetch_add(1, Ordering::Relaxed)));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(b"# secrets master keys: <generation> <hex>. Back this file up; without it the store cannot be read.\n")?;
        f.write_all(Zeroizing::new(format!("1 {}\n", hex::encode(&key[..]))).as_bytes())?;
        f.sync_all()
    };
    let result = write().and_then(|_| match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::Unavailable(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    thread_local! {
        /// How long this thread's `add_generation` waits between reading the
        /// newest generation and appending: widens the window a lost lock
        /// would leave open, so the concurrency test fails without it.
        static PAUSE_BEFORE_APPEND: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    pub(super) fn pause_before_append() {
        let pause = PAUSE_BEFORE_APPEND.with(Cell::get);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }

    fn ring() -> Keyring {
        Keyring::single([7; 32])
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let r = ring();
        let a = r.seal("t/61/x", b"secret").unwrap();
        let b = r.seal("t/61/x", b"secret").unwrap();
        assert_ne!(a, b, "fresh nonce per write");
        assert_eq!(r.open("t/61/x", &a).unwrap(), b"secret");
    }

    #[test]
    fn moved_or_tampered_entries_fail() {
        let r = ring();
        let sealed = r.seal("t/61/x", b"secret").unwrap();
        assert!(matches!(r.open("t/62/x", &sealed), Err(VaultError::Corrupt(_))));
        for i in [0, 3, 10, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(matches!(r.open("t/61/x", &bad), Err(VaultError::Corrupt(_))), "byte {i}");
        }
        assert!(matches!(Keyring::single([8; 32]).open("t/61/x", &sealed), Err(VaultError::Corrupt(_))));
    }

    #[test]
    fn generations() {
        let old = Keyring::from_spec(&hex::encode([1u8; 32])).unwrap();
        let sealed = old.seal("k", b"v").unwrap();
        let both = Keyring::from_spec(&format!("1:{},2:{}", hex::encode([1u8; 32]), hex::encode([2u8; 32]))).unwrap();
        assert_eq!(both.newest(), 2);
        assert_eq!(both.open("k", &sealed).unwrap(), b"v");
        assert_eq!(sealed_generation(&both.seal("k", b"v").unwrap()).unwrap(), 2);
        assert!(Keyring::from_spec("abc").is_err());
        let only2 = Keyring::from_spec(&format!("2:{}", hex::encode([2u8; 32]))).unwrap();
        assert!(matches!(only2.open("k", &sealed), Err(VaultError::Corrupt(m)) if m.contains("generation 1")));
    }

    #[test]
    fn key_file_is_private_and_refused_when_not() {
        let dir = std::env::temp_dir().join(format!("secrets-keyfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("store.db.key");
        let a = Keyring::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Keyring::load_or_create(&path).unwrap();
        assert_eq!(b.open("k", &a.seal("k", b"v").unwrap()).unwrap(), b"v");
        assert_eq!(Keyring::add_generation(&path).unwrap(), 2);
        assert_eq!(Keyring::load_or_create(&path).unwrap().generations(), vec![1, 2]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Keyring::load_or_create(&path), Err(VaultError::Rejected(m)) if m.contains("chmod 600")));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn private_file(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("store.db.key");
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap().write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn duplicate_generation_in_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (hex::encode([1u8; 32]), hex::encode([2u8; 32]));
        let path = private_file(dir.path(), &format!("# keys\n1 {a}\n2 {b}\n2 {a}\n"));
        let err = Keyring::load_or_create(&path).unwrap_err();
        assert!(matches!(&err, VaultError::Rejected(m) if m.contains("generation 2 is listed twice")), "{err:?}");
        assert!(!err.to_string().contains(&a) && !err.to_string().contains(&b), "no key in the message");
        // add_generation reads the file the same way: it refuses rather than
        // append after a keyring it cannot trust.
        assert!(matches!(Keyring::add_generation(&path), Err(VaultError::Rejected(m)) if m.contains("listed twice")));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 4, "nothing appended");
    }

    #[test]
    fn concurrent_add_generation_gives_distinct_numbers() {
        const N: u32 = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db.key");
        assert_eq!(Keyring::load_or_create(&path).unwrap().generations(), vec![1]);
        let start = Arc::new(Barrier::new(N as usize));
        let threads: Vec<_> = (0..N)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    PAUSE_BEFORE_APPEND.with(|p| p.set(Duration::from_millis(20)));
                    start.wait();
                    Keyring::add_generation(&path).unwrap()
                })
            })
            .collect();
        let mut added: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        added.sort();
        assert_eq!(added, (2..=N + 1).collect::<Vec<_>>(), "each add got its own generation");
        // The file holds every generation once (a duplicate would be refused).
        assert_eq!(Keyring::load_or_create(&path).unwrap().generations(), (1..=N + 1).collect::<Vec<_>>());
    }
}
