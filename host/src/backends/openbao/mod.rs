//! The OpenBao / HashiCorp Vault backend: entries live in a KV version 2
//! secrets engine, reached over its HTTP API.
//!
//! # Store URL
//!
//! `openbao+http://HOST:PORT/MOUNT?token_env=BAO_TOKEN&prefix=cp-secrets`
//! (also `openbao+https://`, `vault+http://`, `vault+https://`).
//!
//! | part | meaning |
//! |---|---|
//! | scheme | `+http` or `+https` (rustls, Mozilla's roots, or `ca_file=`) |
//! | `MOUNT` | the path of a KV **v2** mount, one or more segments (`secret`, `teams/a/kv`) |
//! | `token_env=NAME` | the token is in environment variable `NAME` |
//! | `token_file=PATH` | the token is the content of file `PATH` (trimmed) |
//! | (neither) | the token is in `BAO_TOKEN`, else `VAULT_TOKEN` |
//! | `prefix=PATH` | where this store's entries live inside the mount (default `cp-secrets`) |
//! | `namespace=NS` | sent as `X-Vault-Namespace` |
//! | `ca_file=PATH` | PEM roots to trust instead of Mozilla's (https only) |
//! | `lock_ttl=SECS`, `lock_timeout=SECS`, `timeout=SECS` | see *Transactions*; per-request timeout |
//!
//! A token inside the URL is refused. Connecting checks the token
//! (`auth/token/lookup-self`) and that the mount exists and is KV v2
//! (`sys/internal/ui/mounts/<mount>`), and fails with
//! [`VaultError::Rejected`] (bad token, policy, mount) or
//! [`VaultError::Unavailable`] (server not reachable, sealed). The token
//! never appears in a message, in [`Backend::describe`] or in `Debug`.
//!
//! The token's policy needs `create, read, update, delete, list` on
//! `MOUNT/data/PREFIX/*` and `MOUNT/metadata/PREFIX/*`, and the default
//! policy's `auth/token/lookup-self`.
//!
//! # Layout in KV
//!
//! - A vault key (`t/<hex>/i/<hex>/k/<hex>/v/3`) becomes the KV path
//!   `PREFIX/e/<key>`: each `/`-separated segment made only of ASCII
//!   letters, digits and `-` is kept as it is; any other segment (empty,
//!   `.`, `..`, other characters) becomes `_` followed by its bytes in hex.
//!   Kept segments never start with `_`, so distinct keys always map to
//!   distinct paths, and every path is valid. The keys the secrets logic
//!   builds are hex and ASCII words, so in practice they appear verbatim.
//! - The value is stored as KV data `{"v": "<base64>"}`.
//! - Lock entries live apart, at `PREFIX/lock/<lock scope, encoded the same way>`.
//! - Each entry's metadata is set to `max_versions = 1` before its first
//!   write (and when it is rotated), so KV keeps no older ciphertext of it:
//!   not even the value of a write that died unacknowledged, which its
//!   retry rewrites. Entries a transaction read are known to exist and are
//!   written in one request. Deleting an
//!   entry deletes its metadata, which removes every version.
//!
//! # Transactions: weaker than SQL
//!
//! OpenBao has no multi-key transactions, so:
//!
//! - A **write** transaction first takes a lock for its lock scope: a mutex
//!   in this process, then a lock entry in KV created with check-and-set
//!   `cas = 0` (it succeeds only if the entry is absent), holding a random
//!   owner id and the holder's lease (`lock_ttl`, default 30 s). No writer
//!   compares clocks: a waiter takes a lock over (`cas = <its version>`, so
//!   exactly one waiter wins) only after it has seen the entry unchanged
//!   (same owner, same KV version) for the holder's lease, measured by its
//!   own monotonic clock from the first answer that showed it. A writer
//!   that cannot get the lock within `lock_timeout` (default 60 s) fails
//!   with [`VaultError::Unavailable`] and writes nothing. Serialisation
//!   between processes relies entirely on that lock entry: anything that
//!   writes under the prefix without it (a person with the `bao` CLI,
//!   another program) is not serialised.
//! - Stores, deletes and rotations are **buffered** in memory; reads inside
//!   the transaction see the buffer first (the last pending write of a key
//!   wins), then KV. A batched read
//!   ([`Vault::retrieve_many`](crate::backends::Vault::retrieve_many)) reads the
//!   keys the buffer does not answer concurrently, up to 8 requests in
//!   flight over keep-alive connections. Dropping the transaction discards
//!   the buffer and releases the lock: nothing was written.
//! - **Commit** first makes sure the lock is still held. Once a third of
//!   the lease has gone by since the lock was taken or last renewed, it
//!   renews it: it reads the entry, checks that it still holds its owner
//!   id and version (a released entry is numbered from 1 again, so the
//!   version alone could be a newer lock's), and rewrites it with
//!   check-and-set on that version; this fails, writing nothing, if
//!   another writer took the lock over. A younger lease needs no renewal
//!   (two requests saved): nobody can have taken it over, since a takeover
//!   waits a whole lease after the last renewal was sent, and the commit
//!   renews it as it goes (below). Then it sets `max_versions = 1` on the
//!   entries it will create, all at once (metadata only, which no read
//!   sees), and applies the writes one by one, **every one, in the order
//!   they were issued** (except that a run of rotations, which change no
//!   plaintext, goes out concurrently), then releases the lock: it deletes
//!   the lock entry's metadata, after reading it to check that it is still
//!   ours unless less than half the lease has gone by (then it is known to
//!   be, with the margin every write has). The holder counts its lease
//!   from just before it sent its last renewal, on its own monotonic
//!   clock; a waiter can see that renewal only after it landed, so it
//!   cannot take over sooner than a lease after that instant. A commit
//!   renews again once a third of the lease has gone by, and starts no
//!   write once half of it has (a renewal that slow fails the commit): the
//!   other half is the margin for a request in flight. So a commit may
//!   outlast `lock_ttl`, and a holder that is slow between its reads and
//!   its commit loses nothing but the call.
//! - The **release** runs on a background thread: a call returns without
//!   waiting for it. Other writers of the scope in this process wait until
//!   the entry is gone (the process-local mutex is handed on only then).
//!   Dropping the last clone of the backend waits for the releases still
//!   running (at most two request timeouts), so a one-shot process such as
//!   the `secrets` CLI leaves no lock behind; a process that exits without
//!   dropping it may leave a lock entry, which blocks the scope until a
//!   waiter has seen it unchanged for its lease. Once the last clone is
//!   gone, transactions still open release synchronously.
//! - Commit is therefore **not atomic**: a crash, a network failure or an
//!   error half-way through leaves the writes before it applied and those
//!   after it not (and may leave the metadata of entries it had not
//!   written yet: they hold no version, read as absent, and the next write
//!   of the entry uses them). The secrets logic issues its writes so that no prefix of
//!   them leaves a record pointing at a missing value, and every version a
//!   reader finds is readable:
//!   - **set**: value, then key record, then index; deletes of pruned
//!     versions last. After a half-applied set `get` may already show the
//!     new version while `list`/`inject` still show the old one, until the
//!     next write to that key; pruned values it did not delete stay in KV,
//!     referenced by nothing.
//!   - **delete**: a mark on the key's index entry, then the removal of the
//!     key record (the commit point), then the values, then the index
//!     entry. Before the commit point `get`, `versions` and `list` all show
//!     the key; after it none does (`list` reads the key record of a marked
//!     entry: one more request per marked entry, none unless a delete was
//!     cut short). What is left (values, the mark) is removed by a repeated
//!     delete of the key, which then succeeds, or by the next set or
//!     delete in the instance; until then the deleted values stay in KV,
//!     unreadable through this backend but readable with the `bao` CLI.
//! - Read transactions take no lock, refuse writes ([`VaultError::Rejected`])
//!   and may see a commit in progress (again, the write order keeps what
//!   they read consistent).
//! - A lock whose holder crashed blocks its scope until a waiter has seen
//!   it unchanged for its lease: up to the holder's `lock_ttl` after the
//!   waiter arrived, whenever the holder crashed. The lease is as good as monotonic clocks
//!   and request latencies: a holder paused (suspended VM, stopped
//!   process) in the middle of a request, or a write request that reaches
//!   the server more than half a lease after it was sent, can still land
//!   after another writer took over; KV has no fencing tokens to refuse
//!   it. Keep `lock_ttl` well above request latencies (a lease below about
//!   twice a request's latency cannot commit at all).
//!
//! # Rotation
//!
//! OpenBao encrypts everything it stores with its barrier keyring; this
//! backend adds no encryption of its own (values are stored as the secrets
//! logic hands them, base64-encoded, and OpenBao encrypts them at rest).
//! [`Vault::rotate`] rewrites the entry: a new KV version with the same
//! plaintext, which OpenBao encrypts under the barrier's **current** key
//! term; with `max_versions = 1` KV deletes the older version (copies in
//! the storage layer's own history, such as raft snapshots or backups, are
//! out of this backend's reach).
//! So the operator's procedure to retire old key material is: rotate the
//! barrier key (`bao operator rotate`, i.e. `sys/rotate`, which needs
//! `sudo` and affects the whole OpenBao, so this backend never calls it),
//! then rotate entries, per key or all at once with
//! [`Backend::rotate_all`], which lists every entry under the prefix and
//! rewrites each with check-and-set on its current version (an entry
//! changed or deleted meanwhile is left alone: it was written under the
//! current term anyway, or is gone). OpenBao itself keeps old key terms in
//! its keyring to read old data; that is out of this backend's reach.
//!
//! # Other limits
//!
//! - Values cross the network base64-encoded in JSON; this module zeroizes
//!   its own buffers, but not those inside the HTTP and TLS libraries.
//! - Each operation is one or more HTTP requests: much slower than SQL.
//!   A `set` of an existing key sends eight: take the lock, two reads
//!   (key record and index), `max_versions` of the new value entry, three
//!   writes (value, key record, index), release; the caller waits for six
//!   or seven round trips in a row (the reads go out together when the
//!   secrets logic batches them, the release runs in the background). A
//!   `set` of a new key sends nine (`max_versions` of two new entries,
//!   together); a `delete` of a key with N versions seven plus N; a
//!   `rotate` of a key with N versions nine plus 3N (read, `max_versions`,
//!   rewrite per entry, the entries 8 at a time); `get`, `versions`
//!   and `list` one, `inject` and `mounts` one (the key record carries
//!   its current value, the index every current value, as long as they
//!   fit in 32 KiB), plus one per value they could not carry, read
//!   concurrently.
//!   `requests_per_call_are_pinned` in `tests/all/openbao.rs` pins these
//!   counts, and [`OpenBaoBackend::requests`] counts them at run time.
//! - Plain stores are written without check-and-set, so a mount configured
//!   with `cas_required = true` refuses them: use a mount without it.
//! - A writer that keeps re-taking a lock in a loop can delay another
//!   process's writer (no queue, only polling with backoff) up to
//!   `lock_timeout`.
//! - Some OpenBao storage backends (the `file` one) cannot hold a path
//!   segment longer than 255 bytes; the hex of a tenant name longer than 127
//!   bytes would be one. Integrated storage (raft) and memory have no limit.

mod client;
pub(crate) mod config;
mod lock;
mod txn;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::{Condvar, Mutex};
use zeroize::{Zeroize, Zeroizing};

pub use config::OpenBaoConfig;

use client::{Client, Envelope, MountInfo, ValueData};
use lock::HeldLock;
use txn::OpenBaoTxn;

use crate::backends::batch::{all, concurrently};
use crate::backends::{Access, Backend, Transaction, VaultError};

/// Where entries live inside the mount unless the URL says `prefix=`.
pub const DEFAULT_PREFIX: &str = "cp-secrets";
/// How long a lock entry is valid before others may take it over.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a writer waits for a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variables tried, in order, when the URL names no token.
pub const DEFAULT_TOKEN_ENVS: [&str; 2] = ["BAO_TOKEN", "VAULT_TOKEN"];

/// Largest response body read (a 64 KiB value is ~88 KB of base64).
const MAX_BODY: u64 = 16 << 20;
/// The name of the threads that send a batch's requests.
const THREAD_NAME: &str = "openbao-request";
const BACKOFF_MIN: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(50);


fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn plain_segment(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A vault key (or lock scope) as a relative KV path: plain segments kept,
/// any other segment as `_<hex>`. Injective, and always a valid path.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if plain_segment(seg) {
            out.push_str(seg);
        } else {
            out.push('_');
            out.push_str(&hex::encode(seg));
        }
    }
    out
}

/// The inverse of [`encode_key`].
#[cfg(test)]
fn decode_key(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg.strip_prefix('_') {
            Some(h) => out.push_str(std::str::from_utf8(&hex::decode(h).ok()?).ok()?),
            None if plain_segment(seg) => out.push_str(seg),
            None => return None,
        }
    }
    Some(out)
}

struct Inner {
    client: Client,
    config: OpenBaoConfig,
    /// Process-local writer mutexes, one per lock scope in use.
    local_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Lock entries being released in the background.
    releases: Mutex<Releases>,
    /// Notified when a background release ends.
    released: Condvar,
    /// Test hook: commits stop with an error before this many writes.
    cut_commits_after: AtomicUsize,
}

/// The background releases of lock entries (see [`lock`]).
struct Releases {
    /// Whether a handle of the backend is alive: once the last one is
    /// dropped, locks are released synchronously.
    open: bool,
    /// Releases started and not finished.
    in_flight: usize,
}

/// The OpenBao / Vault KV v2 backend; clones share the connection pool and
/// the process-local locks. Dropping the last clone waits (boundedly) for
/// the lock entries still being released in the background.
#[derive(Clone)]
pub struct OpenBaoBackend {
    inner: Arc<Inner>,
    _last: Arc<LastHandle>,
}

/// Shared by the clones of a backend (not by its transactions or
/// background threads): dropped with the last clone.
struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.releases.lock().open = false;
        self.0.wait_for_releases();
    }
}

impl fmt::Debug for OpenBaoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenBaoBackend({})", self.describe())
    }
}

impl OpenBaoBackend {
    /// Connects with `config`: resolves the token, then checks it
    /// (`lookup-self`) and that the mount is a KV v2 mount.
    pub fn connect(config: OpenBaoConfig) -> Result<Self, VaultError> {
        let token = config.resolve_token()?;
        let client = Client::new(&config, token)?;
        let inner = Inner {
            client,
            config,
            local_locks: Mutex::new(HashMap::new()),
            releases: Mutex::new(Releases { open: true, in_flight: 0 }),
            released: Condvar::new(),
            cut_commits_after: AtomicUsize::new(usize::MAX),
        };
        inner.check()?;
        let inner = Arc::new(inner);
        Ok(OpenBaoBackend { _last: Arc::new(LastHandle(inner.clone())), inner })
    }

    /// The HTTP requests this backend (and its clones) sent to the server
    /// so far, answered or not, the two of [`connect`](Self::connect)'s
    /// checks included: for tests and metrics. A lock release finishing in
    /// the background counts once it is sent
    /// ([`finish_releases`](Self::finish_releases) waits for it).
    pub fn requests(&self) -> u64 {
        self.inner.client.requests()
    }

    /// Waits until every lock entry this backend started releasing in the
    /// background is released (at most two request timeouts and a second;
    /// `false` if that ran out). Dropping the last clone of the backend
    /// does the same; this is for a caller that keeps it, e.g. a test that
    /// then looks at KV.
    pub fn finish_releases(&self) -> bool {
        self.inner.wait_for_releases()
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &OpenBaoConfig {
        &self.inner.config
    }

    /// The KV path (relative to the mount, as in `MOUNT/data/<path>`) where
    /// the entry of `key` lives.
    pub fn entry_path(&self, key: &str) -> String {
        self.inner.entry_path(key)
    }

    /// The KV path of the lock entry of `lock_scope`.
    pub fn lock_path(&self, lock_scope: &str) -> String {
        self.inner.lock_path(lock_scope)
    }

    /// For fault tests only: every later commit of this backend (and its
    /// clones) applies its first `writes` writes, then fails with
    /// [`VaultError::Unavailable`] as if the connection had dropped; `None`
    /// restores normal commits.
    #[doc(hidden)]
    pub fn cut_commits_after(&self, writes: Option<usize>) {
        self.inner.cut_commits_after.store(writes.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

impl Inner {
    fn entry_path(&self, key: &str) -> String {
        format!("{}/e/{}", self.config.prefix, encode_key(key))
    }

    fn lock_path(&self, scope: &str) -> String {
        format!("{}/lock/{}", self.config.prefix, encode_key(scope))
    }

    fn describe(&self) -> String {
        format!("{}://{}/{}", self.config.scheme, self.config.authority, self.config.mount)
    }

    fn check(&self) -> Result<(), VaultError> {
        let c = &self.client;
        let reply = c.send("GET", "auth/token/lookup-self", None)?;
        match reply.status {
            200 => {}
            403 => {
                return Err(VaultError::Rejected(format!(
                    "OpenBao at {} refused the token: it is invalid, expired or revoked (or its policies do not allow auth/token/lookup-self)",
                    c.address
                )));
            }
            _ => return Err(c.status_error(&reply, "the token check (auth/token/lookup-self)")),
        }
        let mount = &self.config.mount;
        let reply = c.send("GET", &format!("sys/internal/ui/mounts/{mount}"), None)?;
        match reply.status {
            200 => {}
            403 | 404 | 400 => {
                return Err(VaultError::Rejected(format!(
                    "OpenBao at {} has no mount {mount:?} that this token may use: create a KV v2 mount there (`bao secrets enable -path={mount} kv-v2`) or grant the token's policy access to it",
                    c.address
                )));
            }
            _ => return Err(c.status_error(&reply, &format!("the mount check of {mount:?}"))),
        }
        let info =
            serde_json::from_slice::<Envelope<MountInfo>>(&reply.body).ok().and_then(|e| e.data).ok_or_else(|| {
                VaultError::Other(format!("OpenBao at {} answered the mount check with unexpected JSON", c.address))
            })?;
        let found = info.path.trim_end_matches('/');
        if found != mount {
            let rest = mount.strip_prefix(found).unwrap_or("").trim_start_matches('/');
            return Err(VaultError::Rejected(format!(
                "{mount:?} is not a mount but a path inside the mount {found:?}: use .../{found}?prefix={rest}"
            )));
        }
        let version = info.options.as_ref().and_then(|o| o.get("version")).map(String::as_str).unwrap_or("1");
        if !(info.kind == "kv" || info.kind == "generic") || version != "2" {
            return Err(VaultError::Rejected(format!(
                "the mount {mount:?} is a {} (version {version}) mount; this backend needs a KV version 2 mount",
                info.kind
            )));
        }
        Ok(())
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let path = self.entry_path(key);
        match self.client.kv_read::<ValueData>(&path)? {
            None => Ok(None),
            Some((mut data, _)) => {
                let value = BASE64.decode(data.v.as_bytes());
                data.v.zeroize();
                value.map(Some).map_err(|_| VaultError::Corrupt(format!("the value at {path} is not base64")))
            }
        }
    }

    /// Writes an entry. Unless the transaction saw it exist (so this
    /// backend created it, `max_versions` first), `max_versions = 1` is set
    /// before the data: KV then never keeps an older version beside the new
    /// one, not even the value of a write that died before it was
    /// acknowledged (its retry rewrites the same entry).
    fn store(&self, key: &str, value: &[u8], seen: bool) -> Result<(), VaultError> {
        let path = self.entry_path(key);
        if !seen {
            self.client.kv_keep_one_version(&path)?;
        }
        let data = ValueData { v: BASE64.encode(value) };
        let written = self.client.kv_write(&path, &data, None);
        let _ = Zeroizing::new(data.v);
        written.map(drop)
    }

    /// Rewrites an entry with the same plaintext: a new version encrypted
    /// under OpenBao's current barrier key term; the older version is
    /// removed (`max_versions = 1`). `false` if the entry does not exist.
    fn rewrite(&self, path: &str) -> Result<bool, VaultError> {
        let Some((data, version)) = self.client.kv_read::<ValueData>(path)? else { return Ok(false) };
        let data = Zeroizing::new(data.v);
        self.client.kv_keep_one_version(path)?;
        let value = ValueData { v: data.to_string() };
        let written = self.client.kv_write(path, &value, Some(version));
        let _ = Zeroizing::new(value.v);
        // A failed check-and-set means someone wrote or deleted the entry
        // meanwhile: it is under the current term already, or gone.
        Ok(written?.is_some())
    }

    /// The values of `keys` (distinct), read from KV concurrently.
    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        all(concurrently(keys.len(), THREAD_NAME, |i| self.retrieve(keys[i])))
    }

    /// Waits until no lock entry is being released in the background,
    /// boundedly: a release is at most two requests.
    fn wait_for_releases(&self) -> bool {
        let deadline = Instant::now() + 2 * self.config.request_timeout + Duration::from_secs(1);
        let mut releases = self.releases.lock();
        while releases.in_flight > 0 {
            if self.released.wait_until(&mut releases, deadline).timed_out() {
                tracing::warn!(
                    in_flight = releases.in_flight,
                    "gave up waiting for OpenBao lock entries being released; they expire by themselves"
                );
                return false;
            }
        }
        true
    }

    fn local_lock(&self, scope: &str) -> Arc<Mutex<()>> {
        self.local_locks.lock().entry(scope.to_owned()).or_default().clone()
    }

    fn forget_local_lock(&self, scope: &str) {
        let mut locks = self.local_locks.lock();
        if locks.get(scope).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(scope);
        }
    }
}

impl Backend for OpenBaoBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let lock = match access {
            Access::Write => Some(HeldLock::acquire(&self.inner, lock_scope)?),
            Access::Read => None,
        };
        Ok(Box::new(OpenBaoTxn { inner: self.inner.clone(), ops: Vec::new(), lock, seen: Default::default() }))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Rewrites every entry under the prefix so it is encrypted under
    /// OpenBao's current barrier key term (run `bao operator rotate` first).
    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        let mut paths = Vec::new();
        self.inner.client.kv_list_all(&format!("{}/e/", self.inner.config.prefix), &mut paths)?;
        let total = paths.len() as u64;
        let mut rotated = 0;
        progress(0, total);
        for (i, path) in paths.iter().enumerate() {
            if self.inner.rewrite(path)? {
                rotated += 1;
            }
            progress(i as u64 + 1, total);
        }
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_is_injective_valid_and_reversible() {
        assert_eq!(encode_key("t/6162/i/77/k/4b/v/3"), "t/6162/i/77/k/4b/v/3");
        let keys = [
            "a", "a/b", "a//b", "/a", "a/", "", ".", "..", "a/../b", "_61", "a b", "ü", "a%2fb", "a/_", "-", "A-b",
            "a\u{0}b", "x/y/z",
        ];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let p = encode_key(k);
            assert!(seen.insert(p.clone()), "collision for {k:?}: {p}");
            assert_eq!(decode_key(&p).as_deref(), Some(k), "{p}");
            for seg in p.split('/') {
                assert!(!seg.is_empty() && seg != "." && seg != "..", "{k:?} -> {p}");
                assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{k:?} -> {p}");
            }
        }
    }
}
