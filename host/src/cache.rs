//! An on-disk cache of the compiled component, so a CLI start does not
//! recompile it (compiling takes ~100x longer than loading).
//!
//! The file name is a SHA-256 over wasmtime's compatibility hash (its
//! version and every engine setting that affects code) and the component's
//! bytes: a new build, a new wasmtime or other settings miss the cache. The
//! file holds a SHA-256 of its payload, checked before wasmtime sees it, so a
//! truncated or corrupt file is rebuilt, never run. Files are written to a
//! temporary name and renamed into place, so concurrent starts never see a
//! half-written file. The cache directory must be private to the user
//! (mode 0700): one that others can write to is not used, since whoever
//! writes the cache chooses the machine code the host runs. For the same
//! reason files are created 0600 whatever the umask, and a file owned by
//! another user or writable by group or others is never loaded (it is
//! compiled again and replaced).
//!
//! Why not wasmtime's own cache (`Config::cache`)? It stores compiled code
//! of core modules for any engine, in a shared, configurable location, and
//! trusts its files; this one holds exactly one artifact (our component for
//! our engine configuration), refuses a directory other users can write,
//! and checks a SHA-256 of every file before wasmtime maps it as code.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::component::COMPONENT_SHA256;
use crate::error::Error;
use crate::sandbox::{Sandbox, SandboxEngine};

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

/// The sandbox, from the cache in `dir` when valid, else compiled (and the
/// cache written). Never fails because of the cache: at worst it compiles.
#[allow(unsafe_code, reason = "loads machine code it checked (digest, private directory)")]
pub fn load(dir: Option<&Path>) -> Result<(Sandbox, CacheOutcome, Option<String>), Error> {
    let engine = SandboxEngine::new()?;
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
    if private_file(&path)
        && let Ok(bytes) = fs::read(&path)
        && bytes.len() > 32
        && Sha256::digest(&bytes[32..])[..] == bytes[..32]
        // SAFETY: the payload is exactly what `serialize` wrote for this
        // engine's compatibility hash and component (checked by the file
        // name and the digest), in a directory only we can write.
        && let Ok(sandbox) = unsafe { Sandbox::deserialize(engine.clone(), &bytes[32..]) }
    {
        return Ok((sandbox, CacheOutcome::Hit, None));
    }
    let sandbox = Sandbox::compile(engine)?;
    match write_atomically(&path, &sandbox.serialize()?) {
        Ok(()) => Ok((sandbox, CacheOutcome::Compiled, None)),
        Err(e) => Ok((sandbox, CacheOutcome::Uncached, Some(format!("{}: {e}", path.display())))),
    }
}

fn write_atomically(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), hex::encode(nonce)));
    let result = (|| {
        // 0600 whatever the umask: whoever can write it chooses our code.
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&Sha256::digest(payload))?;
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
        let (_, first, _) = load(Some(&dir)).unwrap();
        assert_eq!(first, CacheOutcome::Compiled);
        let (_, second, _) = load(Some(&dir)).unwrap();
        assert_eq!(second, CacheOutcome::Hit);
        let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let mut bytes = fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        let (_, third, _) = load(Some(&dir)).unwrap();
        assert_eq!(third, CacheOutcome::Compiled, "a corrupt file is rebuilt");
        assert_eq!(load(Some(&dir)).unwrap().1, CacheOutcome::Hit);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "created private");
        // A cache file others may write is never loaded: rebuilt, private.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(load(Some(&dir)).unwrap().1, CacheOutcome::Compiled, "a group/world-writable file is rebuilt");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // Nor one owned by another user (only root can make one here).
        if effective_uid() == 0 {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            assert_eq!(load(Some(&dir)).unwrap().1, CacheOutcome::Compiled, "another user's file is rebuilt");
        }
        assert_eq!(load(Some(&dir)).unwrap().1, CacheOutcome::Hit);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(load(Some(&dir)).unwrap().1, CacheOutcome::Uncached, "a shared directory is not trusted");
        fs::remove_dir_all(&dir).unwrap();
    }
}
