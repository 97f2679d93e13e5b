//! Crashes: writer processes killed with SIGKILL at random moments, round
//! after round, on SQLite and on PostgreSQL. Afterwards every version a
//! writer saw acknowledged is readable with its own value, and the versions
//! are gapless (1..=N: a version is never lost or skipped).
//!
//! The writers are this test binary run again (`crash::crash_writer`, with
//! `SECRETS_TEST_CRASH_WRITER` set), printing `ack <version> <value>` after
//! each acknowledged set. On PostgreSQL these run against the durable
//! server `.ci/postgres.sh` starts (fsync and synchronous_commit on), and
//! [`restart_server_under_writers`] crashes and restarts that server
//! (immediate shutdown, crash recovery) under writers that keep retrying.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secrets_host::backends::StoreConfig;
use secrets_host::{Backend, Limits, Scope, SecretType, SetRequest};

use crate::conformance::unique;

const CHILD_ENV: &str = "SECRETS_TEST_CRASH_WRITER";
const CHILD_TEST: &str = "crash::crash_writer";
/// Rounds of kills per backend.
pub const ROUNDS: u32 = 20;
const WRITERS: usize = 2;
pub const MASTER_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// Versions kept: more than a round can write, so none is pruned.
fn limits() -> Limits {
    Limits { max_versions_per_key: 1000, ..Limits::default() }
}

/// A small deterministic generator, so a failing round can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A writer process and the acknowledgements it printed so far.
struct Writer {
    label: String,
    child: Child,
    acks: Arc<Mutex<Vec<String>>>,
    /// The errors of the calls it retried.
    retries: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

/// What a writer does when a call fails.
#[derive(Clone, Copy)]
enum OnError {
    /// Panic: the store should never fail.
    Panic,
    /// Say so on stderr and try again: the server is being restarted.
    Retry,
}

fn spawn_writer(store: &str, cache: &std::path::Path, tenant: &str, key: &str, label: &str, on_error: OnError) -> Writer {
    let mode = match on_error {
        OnError::Panic => "panic",
        OnError::Retry => "retry",
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--include-ignored", "--test-threads=1"])
        .env(CHILD_ENV, format!("{store}|{}|{tenant}|{key}|{label}|{mode}", cache.display()))
        .env("SECRETS_MASTER_KEY", MASTER_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-run the test binary as a writer");
    let acks = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(Mutex::new(Vec::new()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (seen, failed) = (acks.clone(), retries.clone());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(ack) = line.strip_prefix("ack ") {
                seen.lock().unwrap().push(ack.to_owned());
            } else if let Some(error) = line.strip_prefix("retry ") {
                failed.lock().unwrap().push(error.to_owned());
            }
        }
    });
    Writer { label: label.to_owned(), child, acks, retries, reader }
}

/// Runs the rounds against `store` (a URL the writers open with
/// `SECRETS_MASTER_KEY`) and checks each with `open`, the parent's own
/// view of the same store. Returns the acknowledged sets in all.
pub fn kill_writers_at_random(store: &str, open: impl Fn() -> Arc<dyn Backend>) -> usize {
    let tenant = unique("crash");
    // One compiled-component cache for all writers: only the first compiles.
    let cache = tempfile::tempdir().unwrap();
    let scope = Scope::tenant(&tenant).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut acknowledged = 0;
    for round in 0..ROUNDS {
        let key = format!("K{round}");
        let writers: Vec<Writer> = (0..WRITERS)
            .map(|w| spawn_writer(store, cache.path(), &tenant, &key, &format!("r{round}w{w}"), OnError::Panic))
            .collect();
        // Once they write (the component loaded, the store open), kill them
        // at a random moment: 0 to 400 ms later, often mid-call.
        wait_for_acks(&writers, 1, &format!("round {round}"));
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 400));
        let acks = kill_all(writers, &format!("round {round}"));
        let n = check_acks(&open, &scope, &key, &acks, &format!("round {round}"));
        acknowledged += acks.len();
        eprintln!("crash round {round}: {} acknowledged, {n} stored", acks.len());
    }
    assert!(acknowledged >= ROUNDS as usize, "the writers hardly wrote: {acknowledged} acknowledged sets");
    acknowledged
}

/// Server crashes: writers keep setting one key (retrying failed calls)
/// while `restart` crashes and restarts the server `restarts` times, each
/// at a random moment once the writers have had a set acknowledged since
/// the previous one. Then every acknowledged version is checked as above.
/// Returns the acknowledged sets and the failed calls the writers retried.
pub fn restart_server_under_writers(
    store: &str,
    restart: &std::path::Path,
    restarts: u32,
    open: impl Fn() -> Arc<dyn Backend>,
) -> (usize, usize) {
    let tenant = unique("restart");
    let cache = tempfile::tempdir().unwrap();
    let scope = Scope::tenant(&tenant).unwrap();
    let key = "K";
    let writers: Vec<Writer> =
        (0..WRITERS).map(|w| spawn_writer(store, cache.path(), &tenant, key, &format!("w{w}"), OnError::Retry)).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..restarts {
        let before: usize = writers.iter().map(|w| w.acks.lock().unwrap().len()).sum();
        wait_for_acks(&writers, before + 1, &format!("restart {round}"));
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 300));
        let out = Command::new(restart).output().expect("run the server's restart script");
        assert!(out.status.success(), "restart {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let before: usize = writers.iter().map(|w| w.acks.lock().unwrap().len()).sum();
    wait_for_acks(&writers, before + 1, "after the last restart");
    let retried = writers.iter().map(|w| w.retries.lock().unwrap().len()).sum();
    let acks = kill_all(writers, "restarts");
    let n = check_acks(&open, &scope, key, &acks, "restarts");
    assert!(acks.len() >= restarts as usize, "the writers hardly wrote: {} acknowledged sets", acks.len());
    eprintln!("{restarts} server restarts: {} acknowledged, {n} stored, {retried} failed calls retried", acks.len());
    (acks.len(), retried)
}

/// Waits (at most two minutes) until the writers have `total` acknowledged sets in all.
fn wait_for_acks(writers: &[Writer], total: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while writers.iter().map(|w| w.acks.lock().unwrap().len()).sum::<usize>() < total {
        assert!(Instant::now() < deadline, "{what}: the writers acknowledged no set for two minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs the writers; their acknowledgements by version, each once.
fn kill_all(writers: Vec<Writer>, what: &str) -> BTreeMap<u32, String> {
    let mut acks = BTreeMap::new();
    for mut w in writers {
        w.child.kill().unwrap(); // SIGKILL
        w.child.wait().unwrap();
        w.reader.join().unwrap();
        let mut err = String::new();
        w.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(!err.contains("panicked"), "writer {} failed:\n{err}", w.label);
        for line in w.acks.lock().unwrap().iter() {
            let (version, value) = line.split_once(' ').unwrap();
            let previous = acks.insert(version.parse().unwrap(), value.to_owned());
            assert!(previous.is_none(), "{what}: version {version} acknowledged twice");
        }
    }
    acks
}

/// Versions of `key` are gapless and every acknowledged one holds its own
/// value; returns how many are stored.
fn check_acks(open: &impl Fn() -> Arc<dyn Backend>, scope: &Scope, key: &str, acks: &BTreeMap<u32, String>, what: &str) -> u32 {
    let s = crate::common::service_with(open(), limits());
    let versions: Vec<u32> = match s.versions(scope, "web", key) {
        Ok(metas) => metas.iter().map(|m| m.version).collect(),
        Err(secrets_host::Error::NotFound) => vec![],
        Err(e) => panic!("{what}: {e}"),
    };
    let n = versions.len() as u32;
    assert_eq!(versions, (1..=n).collect::<Vec<_>>(), "{what}: versions are gapless");
    for (version, value) in acks {
        let got = s
            .get_version(scope, "web", key, *version)
            .unwrap_or_else(|e| panic!("{what}: acknowledged version {version} is gone: {e}"));
        assert_eq!(got.value.expose(), value.as_bytes(), "{what}: version {version}");
    }
    n
}

/// Not a test: the writer process (run with `SECRETS_TEST_CRASH_WRITER`).
#[test]
#[ignore = "helper process of the crash tests, which run it with SECRETS_TEST_CRASH_WRITER set"]
fn crash_writer() {
    use std::io::Write;
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("{CHILD_TEST} is a helper of the crash tests; alone it does nothing");
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [store, cache, tenant, key, label, mode] = parts[..] else { panic!("bad {CHILD_ENV}: {spec}") };
    let retry = mode == "retry";
    let backend = loop {
        match StoreConfig::parse(store).and_then(|c| c.open()) {
            Ok(backend) => break backend,
            Err(e) if retry => {
                eprintln!("retry: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let (sandbox, _, _) = secrets_host::cache::load(Some(std::path::Path::new(cache)), secrets_host::Allocation::OnDemand).unwrap();
    let s = secrets_host::Secrets::with_sandbox(Arc::new(sandbox), backend, limits());
    let scope = Scope::tenant(tenant).unwrap();
    let mut stdout = std::io::stdout().lock();
    for i in 0.. {
        let value = format!("{label}-{i}");
        match s.set(&scope, SetRequest::new("web", key, SecretType::Env, value.as_str())) {
            Ok(meta) => writeln!(stdout, "ack {} {value}", meta.version).unwrap(),
            Err(e) if retry => {
                writeln!(stdout, "retry {e}").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("set: {e}"),
        }
        stdout.flush().unwrap();
        if i % 7 == 3
            && let Err(e) = s.rotate(&scope, "web", key)
        {
            assert!(retry, "rotate: {e}");
            writeln!(stdout, "retry {e}").unwrap();
        }
    }
}
