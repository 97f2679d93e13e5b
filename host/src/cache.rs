//! An on-disk cache of the compiled component, so a CLI start does not
//! recompile it (compiling takes ~100x longer than loading).
//!
//! The file name is a SHA-256 over wasmtime's compatibility hash (its
//! version and every engine setting that affects code) and the component's
//! bytes: a new build, a new wasmtime or other settings miss the cache. A
//! second file beside it holds the BLAKE3 digest of the first, checked
//! before wasmtime sees it, so a truncated or corrupt file is rebuilt, never
//! run. A warm CLI start is mostly this load, so it is cheap: the file (~4
//! MB) is memory-mapped, both to hash it and by wasmtime to run it (no copy,
//! no heap pages), and BLAKE3 hashes several times faster than SHA-256.
//! Hashing 4 MB still took a fifth of a warm `secrets get`, so once a file
//! has passed the check the digest file also remembers what `stat` said of
//! it (device, inode, size, modification and change times): while those
//! are unchanged the file has not been written, truncated or replaced since
//! it was checked, and the hash is skipped. A check is remembered only for
//! a file unchanged for [`SETTLED`] (the kernel stamps changes with a
//! coarse clock; a write right after a check could leave the same times).
//! What that gives up: corruption no write caused (a failing disk under a
//! file system without checksums) is caught only once the file changes.
//! The digest guards against corruption, not against a writer: the private
//! directory and file checks below are what keep others out (so the file
//! being opened twice, to hash and to map, gives nobody else a window). Files are written to a
//! temporary name and renamed into place, so concurrent starts never see a
//! half-written file. The cache directory must be private to the user
//! (mode 0700): one that others can write to is not used, since whoever
//! writes the cache chooses the machine code the host runs. For the same
//! reason files are created 0600 whatever the umask, and a file owned by
//! another user or writable by group or others is never loaded (it is
//! compiled again and replaced).
//!
//! Each build writes its own file, so when a new one is written the files
//! of other builds that nothing has rewritten for [`PRUNE_AFTER`] are
//! removed (an upgrade would otherwise leave ~4 MB behind every time).
//! Only this cache's own regular files are touched (`component-*` payloads,
//! digests and temporaries of them, owned by us); a build still in use
//! whose file was removed compiles once and writes it again.
//!
//! Why not wasmtime's own cache (`Config::cache`)? It stores compiled code
//! of core modules for any engine, in a shared, configurable location, and
//! trusts its files; this one holds exactly one artifact (our component for
//! our engine configuration), refuses a directory other users can write,
//! and checks a digest of every file before wasmtime maps it as code.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::component::COMPONENT_SHA256;
use crate::error::Error;
use crate::sandbox::{Allocation, Sandbox, SandboxEngine};

/// The default cache directory: `$XDG_CACHE_HOME/secrets`, else
/// `~/.cache/secrets`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("secrets"))
}

/// What happened when loading the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid cache file.
    Hit,
    /// Compiled, and the cache file written.
    Compiled,
    /// Compiled; the cache could not be used (the reason is in the string
    /// returned alongside).
    Uncached,
}

/// Feeds a `Hash` value into SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only write() is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn cache_file(dir: &Path, engine: &SandboxEngine) -> PathBuf {
    let mut h = ShaHasher(Sha256::new());
    engine.engine().precompile_compatibility_hash().hash(&mut h);
    h.0.update(COMPONENT_SHA256);
    h.0.update(std::env::consts::ARCH.as_bytes());
    // The layout: the payload alone, its BLAKE3 digest beside it.
    h.0.update(b"payload+blake3 file");
    let key = hex::encode(&h.0.finalize()[..16]);
    dir.join(format!("component-{key}.cwasm"))
}

/// The user this process acts as.
#[allow(unsafe_code, reason = "a libc call without preconditions")]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a cache directory that is not ours alone.
fn check_private(dir: &Path) -> Result<(), String> {
    let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let uid = effective_uid();
    if meta.uid() != uid {
        return Err(format!("{} belongs to another user", dir.display()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!("{} is writable by group or others", dir.display()));
    }
    Ok(())
}

/// Whether `path` is a regular file of ours that only we can write.
fn private_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| {
        m.file_type().is_file() && m.uid() == effective_uid() && m.permissions().mode() & 0o022 == 0
    })
}

/// The sandbox on an engine allocating as `allocation` says, from the
/// cache in `dir` when valid, else compiled (and the cache written). Never fails because of the cache: at worst it compiles.
pub fn load(dir: Option<&Path>, allocation: Allocation) -> Result<(Sandbox, CacheOutcome, Option<String>), Error> {
    load_settled(dir, allocation, SETTLED)
}

/// [`load`], remembering checks of files unchanged for `settled`.
#[allow(unsafe_code, reason = "loads machine code it checked (digest, private directory)")]
fn load_settled(
    dir: Option<&Path>,
    allocation: Allocation,
    settled: Duration,
) -> Result<(Sandbox, CacheOutcome, Option<String>), Error> {
    let engine = SandboxEngine::with_allocation(allocation)?;
    let Some(dir) = dir else {
        return Ok((Sandbox::compile(engine)?, CacheOutcome::Uncached, Some("no cache directory".into())));
    };
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        let why = format!("{}: {e}", dir.display());
        return Ok((Sandbox::compile(engine)?, CacheOutcome::Uncached, Some(why)));
    }
    if let Err(why) = check_private(dir) {
        return Ok((Sandbox::compile(engine)?, CacheOutcome::Uncached, Some(why)));
    }
    let path = cache_file(dir, &engine);
    let digest_path = digest_file(&path);
    if private_file(&path)
        && private_file(&digest_path)
        && verified(&path, &digest_path, settled)
        // SAFETY: the file is exactly what `serialize` wrote for this
        // engine's compatibility hash and component (checked by the file
        // name and the digest, or unchanged since it was), in a directory
        // only we can write.
        && let Ok(sandbox) = unsafe { Sandbox::deserialize_file(engine.clone(), &path) }
    {
        return Ok((sandbox, CacheOutcome::Hit, None));
    }
    let sandbox = Sandbox::compile(engine)?;
    let payload = sandbox.serialize()?;
    // The payload first: a reader that sees it with an older digest file
    // finds a mismatch and compiles, never runs an unchecked file.
    let written = write_atomically(&path, &payload)
        .and_then(|()| write_atomically(&digest_path, blake3::hash(&payload).as_bytes()));
    match written {
        Ok(()) => {
            prune(dir, &path, PRUNE_AFTER);
            Ok((sandbox, CacheOutcome::Compiled, None))
        }
        Err(e) => Ok((sandbox, CacheOutcome::Uncached, Some(format!("{}: {e}", path.display())))),
    }
}

/// How long the cache file of another build must have gone unwritten
/// before writing a new one removes it.
pub const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes the cache files in `dir` other than `keep` (and its digest)
/// that were last written at least `older_than` ago: payloads, digests and
/// temporaries of this cache, regular files of ours. Returns how many.
fn prune(dir: &Path, keep: &Path, older_than: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let kept = [keep.to_path_buf(), digest_file(keep)];
    let ours = |name: &str| {
        name.starts_with("component-")
            && (name.ends_with(".cwasm") || name.ends_with(".cwasm.blake3") || name.contains(".tmp-"))
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if kept.contains(&path) || !entry.file_name().to_str().is_some_and(ours) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= older_than);
        if meta.file_type().is_file() && meta.uid() == effective_uid() && old && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How long a cache file must have stayed unchanged before a passed digest
/// check is remembered.
pub const SETTLED: Duration = Duration::from_secs(2);

/// What `stat` says of a file that any write, truncation or replacement of
/// it changes: device, inode, size, modification and change times.
fn stamp(m: &fs::Metadata) -> Vec<u8> {
    [m.dev() as i64, m.ino() as i64, m.size() as i64, m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Whether the file last changed at least `settled` ago.
fn unchanged_for(m: &fs::Metadata, settled: Duration) -> bool {
    let changed = UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec().clamp(0, 999_999_999) as u32);
    SystemTime::now().duration_since(changed).is_ok_and(|age| age >= settled)
}

/// Whether the cache file `path` holds what its digest file says: the
/// remembered `stat` of a passed check still matches, or its BLAKE3 digest
/// does (then the check is remembered if the file has settled).
fn verified(path: &Path, digest_path: &Path, settled: Duration) -> bool {
    let (Ok(meta), Ok(sidecar)) = (fs::symlink_metadata(path), fs::read(digest_path)) else { return false };
    let Some((digest, remembered)) = sidecar.split_at_checked(32) else { return false };
    let now = stamp(&meta);
    if remembered == now.as_slice() {
        return true;
    }
    let Ok(actual) = blake3::Hasher::new().update_mmap(path).map(|h| h.finalize()) else { return false };
    if actual.as_bytes()[..] != *digest {
        return false;
    }
    if unchanged_for(&meta, settled) {
        // Best effort: without it the next start hashes again.
        let _ = write_atomically(digest_path, &[digest, &now].concat());
    }
    true
}

/// Where the digest of the cache file `path` is kept.
fn digest_file(path: &Path) -> PathBuf {
    path.with_extension("cwasm.blake3")
}

fn write_atomically(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), hex::encode(nonce)));
    let result = (|| {
        // 0600 whatever the umask: whoever can write it chooses our code.
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(payload)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_written_then_hit_and_corruption_rebuilds() {
        let dir = std::env::temp_dir().join(format!("secrets-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (_, first, _) = load(Some(&dir), Allocation::Pooled).unwrap();
        assert_eq!(first, CacheOutcome::Compiled);
        let (_, second, _) = load(Some(&dir), Allocation::Pooled).unwrap();
        assert_eq!(second, CacheOutcome::Hit);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let [file, digest] = &files[..] else { panic!("a payload and its digest: {files:?}") };
        assert_eq!(digest_file(file), *digest);
        // Corruption anywhere, of either file, is rebuilt, never run.
        for (victim, at) in [(file, 0), (file, 1), (file, 2), (digest, 0)] {
            let mut bytes = fs::read(victim).unwrap();
            let i = [bytes.len() / 2, bytes.len() - 1, 4][at];
            bytes[i] ^= 0xff;
            fs::write(victim, &bytes).unwrap();
            assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Compiled, "{} corrupt at {i}: rebuilt", victim.display());
            assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Hit);
        }
        let mut truncated = fs::read(file).unwrap();
        truncated.truncate(truncated.len() - 4096);
        fs::write(file, &truncated).unwrap();
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Compiled, "a truncated file is rebuilt");
        fs::remove_file(digest).unwrap();
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Compiled, "a missing digest is rebuilt");
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Hit);
        let file = file.clone();
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "created private");
        // A cache file others may write is never loaded: rebuilt, private.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Compiled, "a group/world-writable file is rebuilt");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // Nor one owned by another user (only root can make one here).
        if effective_uid() == 0 {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Compiled, "another user's file is rebuilt");
        }
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Hit);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(load(Some(&dir), Allocation::Pooled).unwrap().1, CacheOutcome::Uncached, "a shared directory is not trusted");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Writing a new cache file removes other builds' files unwritten for
    /// a week, and nothing else: newer ones, other names, our own.
    #[test]
    fn a_new_cache_file_prunes_other_builds_old_files() {
        let dir = std::env::temp_dir().join(format!("secrets-cache-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let week_ago = SystemTime::now() - PRUNE_AFTER - Duration::from_secs(60);
        let make = |name: &str, old: bool| {
            let path = dir.join(name);
            let f = fs::File::create(&path).unwrap();
            if old {
                f.set_modified(week_ago).unwrap();
            }
            path
        };
        let stale = [
            make("component-00aa.cwasm", true),
            make("component-00aa.cwasm.blake3", true),
            make("component-00aa.tmp-1-ab", true),
            make("component-00aa.cwasm.tmp-1-ab", true),
        ];
        let kept = [
            make("component-11bb.cwasm", false),
            make("component-11bb.cwasm.blake3", false),
            make("notes.txt", true),
            make("component-22cc.wasm", true),
        ];
        fs::DirBuilder::new().create(dir.join("component-33dd.cwasm")).unwrap();
        assert_eq!(load(Some(&dir), Allocation::OnDemand).unwrap().1, CacheOutcome::Compiled);
        for path in &stale {
            assert!(!path.exists(), "{} pruned", path.display());
        }
        for path in &kept {
            assert!(path.exists(), "{} kept", path.display());
        }
        assert!(dir.join("component-33dd.cwasm").is_dir(), "a directory is not ours");
        // Our own file is kept however old it is: writing the cache again
        // (a miss) prunes around it.
        let ours = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cwasm") && p.is_file()).find(|p| !kept.contains(p)).unwrap();
        fs::File::options().write(true).open(&ours).unwrap().set_modified(week_ago).unwrap();
        fs::File::options().write(true).open(digest_file(&ours)).unwrap().set_modified(week_ago).unwrap();
        assert_eq!(prune(&dir, &ours, PRUNE_AFTER), 0);
        assert!(ours.exists() && digest_file(&ours).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A passed check is remembered in the digest file and skips the hash
    /// while the file is unchanged; any write to the file brings the hash
    /// back (and a corrupt file is rebuilt as before).
    #[test]
    fn a_passed_check_is_remembered_until_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("secrets-cache-stamp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // The kernel's change times are coarse: let each step cross a tick.
        let tick = || std::thread::sleep(Duration::from_millis(30));
        let load = |settled| load_settled(Some(&dir), Allocation::OnDemand, settled).unwrap().1;
        assert_eq!(load(Duration::ZERO), CacheOutcome::Compiled);
        let file = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "cwasm")).unwrap();
        let digest_path = digest_file(&file);
        assert_eq!(fs::read(&digest_path).unwrap().len(), 32, "nothing remembered yet");
        // Not settled: hashed, not remembered.
        tick();
        assert_eq!(load(Duration::from_secs(3600)), CacheOutcome::Hit);
        assert_eq!(fs::read(&digest_path).unwrap().len(), 32);
        // Settled: remembered.
        assert_eq!(load(Duration::ZERO), CacheOutcome::Hit);
        let sidecar = fs::read(&digest_path).unwrap();
        assert_eq!(sidecar.len(), 32 + 56);
        // The hash is skipped while the stamp matches: a wrong digest
        // beside a matching stamp still loads (this is what the stamp
        // trusts: the file was checked and has not changed since).
        let mut wrong = sidecar.clone();
        wrong[0] ^= 0xff;
        fs::write(&digest_path, &wrong).unwrap();
        fs::set_permissions(&digest_path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(Duration::ZERO), CacheOutcome::Hit);
        fs::write(&digest_path, &sidecar).unwrap();
        // A write to the file (same size, one byte flipped) changes its
        // times: hashed again, found corrupt, rebuilt.
        tick();
        let mut bytes = fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        assert_eq!(load(Duration::ZERO), CacheOutcome::Compiled);
        tick();
        assert_eq!(load(Duration::ZERO), CacheOutcome::Hit);
        fs::remove_dir_all(&dir).unwrap();
    }
}