//! Latency of the exported calls through the component on every store the
//! environment offers, and the round trips they cost on PostgreSQL: the
//! figures of BENCHMARKS.md. Ratios are measured in one run, so they hold
//! on a noisy machine where absolute figures drift.
//!
//! `cargo bench -p secrets-host --bench calls` (release build). Stores:
//! `memory:` and a temporary SQLite file always; PostgreSQL when
//! `SECRETS_TEST_POSTGRES_URL` is set, OpenBao when `SECRETS_TEST_OPENBAO_URL`
//! and `SECRETS_TEST_OPENBAO_TOKEN` are (`source .ci/postgres.sh &&
//! start_postgres`, `source .ci/openbao.sh && start_openbao`).
//! `BENCH_ITERATIONS` (default 300) sets the samples per row;
//! `BENCH_ONLY=tax,growth,stores` runs only those tables (default: all).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::cell::RefCell;

use secrets_host::backends::StoreConfig;
use secrets_host::backends::postgres::PostgresBackend;
use secrets_host::{
    Access, Allocation, Backend, Limits, MemoryBackend, Sandbox, SandboxEngine, Scope, SecretType, Secrets, SetRequest,
    Transaction,
};

/// Median and 99th percentile of `samples` runs of `f`.
fn time(samples: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..samples.min(20) {
        f();
    }
    let mut t: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[(t.len() * 99 / 100).min(t.len() - 1)])
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// An instance named `i{n}` holding `n` env keys, one version each.
fn populate(s: &Secrets, scope: &Scope, n: usize) {
    for i in 0..n {
        s.set(scope, SetRequest::new(&format!("i{n}"), &format!("KEY_{i:03}"), SecretType::Env, format!("value-{i:03}")))
            .unwrap();
    }
}

struct Row {
    call: String,
    median: Duration,
    p99: Duration,
    round_trips: Option<u64>,
}

fn bench_store(name: &str, sandbox: &Arc<Sandbox>, backend: Arc<dyn Backend>, pg: Option<&PostgresBackend>) -> Vec<Row> {
    let samples: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let s = Secrets::with_sandbox(sandbox.clone(), backend, Limits::default());
    let tenant = format!("bench-{}-{}", std::process::id(), name.split(':').next().unwrap_or(name));
    let scope = Scope::tenant(&tenant).unwrap();
    for n in [1, 10, 20, 100] {
        populate(&s, &scope, n);
    }
    let trips = |f: &dyn Fn()| {
        pg.map(|pg| {
            f();
            let before = pg.round_trips();
            f();
            pg.round_trips() - before
        })
    };
    let mut rows = Vec::new();
    let mut row = |call: &str, f: &dyn Fn()| {
        let (median, p99) = time(samples, f);
        rows.push(Row { call: call.to_owned(), median, p99, round_trips: trips(f) });
    };
    row("get", &|| drop(s.get(&scope, "i20", "KEY_003").unwrap()));
    row("list (20 keys)", &|| drop(s.list(&scope, "i20").unwrap()));
    row("inject (1 env key)", &|| drop(s.inject(&scope, "i1").unwrap()));
    row("inject (10 env keys)", &|| drop(s.inject(&scope, "i10").unwrap()));
    row("inject (20 env keys)", &|| drop(s.inject(&scope, "i20").unwrap()));
    row("inject (100 env keys)", &|| drop(s.inject(&scope, "i100").unwrap()));
    let counter = std::cell::Cell::new(0u32);
    row("set", &|| {
        counter.set(counter.get() + 1);
        s.set(&scope, SetRequest::new("i1", "KEY_000", SecretType::Env, format!("v{}", counter.get()))).unwrap();
    });
    rows
}

/// `get` calls per second with `threads` threads calling at once.
fn throughput(s: &Secrets, scope: &Scope, threads: usize, calls_per_thread: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|t| {
        for _ in 0..threads {
            t.spawn(|| {
                for _ in 0..calls_per_thread {
                    s.get(scope, "i20", "KEY_003").unwrap();
                }
            });
        }
    });
    (threads * calls_per_thread) as f64 / start.elapsed().as_secs_f64()
}

/// A bare keep-alive client of the OpenBao test server: the requests our
/// backend sends, without the sandbox, the backend or its JSON handling.
struct RawKv {
    agent: ureq::Agent,
    /// `http://host:port/v1/MOUNT`.
    api: String,
    token: String,
    /// Where this run's entries live inside the mount.
    prefix: String,
}

impl RawKv {
    fn from_env() -> Option<RawKv> {
        let url = std::env::var("SECRETS_TEST_OPENBAO_URL").ok()?;
        let token = std::env::var("SECRETS_TEST_OPENBAO_TOKEN").ok()?;
        let rest = url.split_once("://")?.1;
        let (host, mount) = rest.split_once('/')?;
        let mount = mount.split('?').next()?.trim_end_matches('/');
        Some(RawKv {
            agent: ureq::Agent::new_with_defaults(),
            api: format!("http://{host}/v1/{mount}"),
            token,
            prefix: format!("bench-raw-{}", std::process::id()),
        })
    }

    fn write(&self, entry: &str, body: serde_json::Value) -> u16 {
        let url = format!("{}/data/{}/{entry}", self.api, self.prefix);
        match self.agent.post(&url).header("X-Vault-Token", &self.token).send_json(body) {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(code)) => code,
            Err(e) => panic!("raw KV write of {entry}: {e}"),
        }
    }

    fn read(&self, entry: &str) {
        let url = format!("{}/data/{}/{entry}", self.api, self.prefix);
        self.agent.get(&url).header("X-Vault-Token", &self.token).call().unwrap().into_body().read_to_vec().unwrap();
    }

    fn keep_one_version(&self, entry: &str) {
        let url = format!("{}/metadata/{}/{entry}", self.api, self.prefix);
        self.agent.post(&url).header("X-Vault-Token", &self.token).send_json(serde_json::json!({"max_versions": 1})).unwrap();
    }

    fn delete_all(&self, entry: &str) {
        let url = format!("{}/metadata/{}/{entry}", self.api, self.prefix);
        self.agent.delete(&url).header("X-Vault-Token", &self.token).call().unwrap();
    }
}

/// One KV v2 read with a keep-alive client: the floor of any OpenBao call.
fn raw_openbao_read(samples: usize) -> Option<Duration> {
    let kv = RawKv::from_env()?;
    kv.write("read", serde_json::json!({"data": {"v": "value"}}));
    let (median, _) = time(samples, || kv.read("read"));
    Some(median)
}

/// The requests a `set` of an existing key waits for, in the order our
/// backend sends them, from a bare client: create the lock entry
/// (`cas = 0`), read the key record and the index (together, two
/// clients), `max_versions` of the new value entry, write the value, the
/// key record and the index, then delete the lock entry (the next `set` of
/// the scope waits for that). The floor of a back-to-back `set` on this
/// server, whatever the client does: the median of the whole sequence,
/// and the median of each step.
fn raw_openbao_set(samples: usize) -> Option<(Duration, Vec<(&'static str, Duration)>)> {
    const STEPS: [&str; 7] = ["lock", "reads", "max_versions", "value", "record", "index", "release"];
    let kv = RawKv::from_env()?;
    let second = RawKv::from_env()?;
    let record = serde_json::json!({"data": {"v": "r".repeat(400)}});
    let index = serde_json::json!({"data": {"v": "i".repeat(2000)}});
    // Like our entries: one KV version kept.
    kv.keep_one_version("record");
    kv.keep_one_version("index");
    kv.write("record", record.clone());
    kv.write("index", index.clone());
    let version = std::cell::Cell::new(0u32);
    let steps = RefCell::new(vec![Vec::new(); STEPS.len()]);
    let (median, _) = time(samples, || {
        version.set(version.get() + 1);
        let value = format!("v/{}", version.get());
        let mut at = Instant::now();
        let mut step = |i: usize| {
            steps.borrow_mut()[i].push(at.elapsed());
            at = Instant::now();
        };
        assert_eq!(kv.write("lock", serde_json::json!({"options": {"cas": 0}, "data": {"owner": "bench"}})), 200);
        step(0);
        std::thread::scope(|t| {
            t.spawn(|| second.read("index"));
            kv.read("record");
        });
        step(1);
        kv.keep_one_version(&value);
        step(2);
        kv.write(&value, serde_json::json!({"data": {"v": "dmFsdWU="}}));
        step(3);
        kv.write("record", record.clone());
        step(4);
        kv.write("index", index.clone());
        step(5);
        kv.delete_all("lock");
        step(6);
    });
    let steps = steps
        .into_inner()
        .into_iter()
        .zip(STEPS)
        .map(|(mut t, name)| {
            t.sort();
            (name, t[t.len() / 2])
        })
        .collect();
    Some((median, steps))
}

/// A transaction of the host's `memory:` store as the guest logic's vault:
/// the logic run natively, without the sandbox, on the same store.
struct NativeVault(RefCell<Box<dyn Transaction>>);

fn guest_error(e: secrets_host::VaultError) -> secrets_guest::VaultError {
    secrets_guest::VaultError::Other(e.to_string())
}

impl secrets_guest::Vault for &NativeVault {
    fn store(&self, key: &str, value: &[u8]) -> Result<(), secrets_guest::VaultError> {
        self.0.borrow_mut().store(key, value).map_err(guest_error)
    }
    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, secrets_guest::VaultError> {
        self.0.borrow_mut().retrieve(key).map_err(guest_error)
    }
    fn retrieve_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, secrets_guest::VaultError> {
        self.0.borrow_mut().retrieve_many(keys).map_err(guest_error)
    }
    fn delete(&self, key: &str) -> Result<(), secrets_guest::VaultError> {
        self.0.borrow_mut().delete(key).map_err(guest_error)
    }
    fn rotate(&self, key: &str) -> Result<(), secrets_guest::VaultError> {
        self.0.borrow_mut().rotate(key).map_err(guest_error)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The sandbox tax: each call natively (the guest logic in one
/// transaction of a `memory:` store) and through the component on the same
/// kind of store, in one run; and the component on pooled against
/// on-demand instances.
fn sandbox_tax(samples: usize) {
    let native_store = MemoryBackend::new();
    let native = |access: Access, f: &dyn Fn(&secrets_guest::Secrets<&NativeVault>)| {
        let vault = NativeVault(RefCell::new(native_store.begin(access, "bench").unwrap()));
        f(&secrets_guest::Secrets::new(&vault, secrets_guest::Limits::default(), now_ms));
        if access == Access::Write {
            vault.0.into_inner().commit().unwrap();
        }
    };
    let request = |key: &str, value: String| secrets_guest::SetRequest {
        instance_id: "i20".into(),
        key: key.into(),
        value: value.into_bytes(),
        kind: secrets_guest::SecretType::Env,
        if_version: None,
    };
    for i in 0..20 {
        native(Access::Write, &|s| drop(s.set(&request(&format!("KEY_{i:03}"), format!("value-{i:03}"))).unwrap()));
    }
    let counter = std::cell::Cell::new(0u32);
    let native_rows = [
        time(samples, || native(Access::Read, &|s| drop(s.get("i20", "KEY_003").unwrap()))).0,
        time(samples, || {
            counter.set(counter.get() + 1);
            native(Access::Write, &|s| drop(s.set(&request("KEY_000", format!("v{}", counter.get()))).unwrap()));
        })
        .0,
        time(samples, || native(Access::Read, &|s| drop(s.inject("i20").unwrap()))).0,
    ];

    // What the machine itself gives a second thread: native `get`s on
    // one shared store, 1 thread against 2.
    let native_throughput = |threads: usize| {
        let calls = 20_000;
        let start = Instant::now();
        std::thread::scope(|t| {
            for _ in 0..threads {
                t.spawn(|| {
                    for _ in 0..calls {
                        let vault = NativeVault(RefCell::new(native_store.begin(Access::Read, "bench").unwrap()));
                        let s = secrets_guest::Secrets::new(&vault, secrets_guest::Limits::default(), now_ms);
                        drop(s.get("i20", "KEY_003").unwrap());
                    }
                });
            }
        });
        (threads * calls) as f64 / start.elapsed().as_secs_f64()
    };
    native_throughput(1);
    let (native_one, native_two) = (native_throughput(1), native_throughput(2));

    let mut component_rows = Vec::new();
    for allocation in [Allocation::Pooled, Allocation::OnDemand] {
        let engine = SandboxEngine::with_allocation(allocation).unwrap();
        let sandbox = Arc::new(Sandbox::compile(engine).unwrap());
        let s = Secrets::with_sandbox(sandbox, Arc::new(MemoryBackend::new()), Limits::default());
        let scope = Scope::tenant("bench").unwrap();
        populate(&s, &scope, 20);
        let counter = std::cell::Cell::new(0u32);
        let rows = [
            time(samples, || drop(s.get(&scope, "i20", "KEY_003").unwrap())).0,
            time(samples, || {
                counter.set(counter.get() + 1);
                s.set(&scope, SetRequest::new("i20", "KEY_000", SecretType::Env, format!("v{}", counter.get()))).unwrap();
            })
            .0,
            time(samples, || drop(s.inject(&scope, "i20").unwrap())).0,
        ];
        throughput(&s, &scope, 1, 200);
        let one = throughput(&s, &scope, 1, 3000);
        let two = throughput(&s, &scope, 2, 3000);
        component_rows.push((allocation, rows, one, two));
    }
    println!("| call (memory:, 20 keys) | native logic | component, pooled | tax | component, on demand | tax |");
    println!("|---|---|---|---|---|---|");
    for (i, call) in ["get", "set", "inject (20 env keys)"].into_iter().enumerate() {
        let (pooled, on_demand) = (component_rows[0].1[i], component_rows[1].1[i]);
        let native = native_rows[i];
        let tax = |d: Duration| d.as_secs_f64() / native.as_secs_f64();
        println!(
            "| {call} | {} | {} | {:.1}× | {} | {:.1}× |",
            us(native),
            us(pooled),
            tax(pooled),
            us(on_demand),
            tax(on_demand)
        );
    }
    println!(
        "native get throughput (the machine's own scaling): 1 thread {native_one:.0}/s, 2 threads {native_two:.0}/s = {:.2}×",
        native_two / native_one
    );
    for (allocation, _, one, two) in &component_rows {
        println!("memory: get throughput, {allocation:?}: 1 thread {one:.0}/s, 2 threads {two:.0}/s = {:.2}×", two / one);
    }
    println!();
}

/// Issue 10's O(1) rows on `memory:`: reads must not grow with retained
/// versions or with the keys of the instance, writes not much; and a call
/// must not pay for a large call that ran before it in the same slot.
fn growth(samples: usize) {
    let s = Secrets::with_sandbox(
        Arc::new(Sandbox::new().unwrap()),
        Arc::new(MemoryBackend::new()),
        Limits::default(),
    );
    let scope = Scope::tenant("growth").unwrap();
    let set = |instance: &str, key: &str, value: String| {
        s.set(&scope, SetRequest::new(instance, key, SecretType::Env, value)).unwrap();
    };
    set("versions", "ONE", "v".into());
    for v in 0..100 {
        set("versions", "HUNDRED", format!("v{v}"));
    }
    for n in [10, 1000] {
        for i in 0..n {
            set(&format!("keys{n}"), &format!("KEY_{i:04}"), format!("value-{i}"));
        }
    }
    let get = |instance: &str, key: &str| time(samples, || drop(s.get(&scope, instance, key).unwrap())).0;
    let counter = std::cell::Cell::new(0u32);
    let write = |instance: &str| {
        time(samples, || {
            counter.set(counter.get() + 1);
            set(instance, "KEY_0003", format!("w{}", counter.get()));
        })
        .0
    };
    let mut rows = vec![
        ("get, 100 retained versions / 1", get("versions", "HUNDRED"), get("versions", "ONE"), 1.2),
        ("get, instance of 1,000 keys / 10", get("keys1000", "KEY_0003"), get("keys10", "KEY_0003"), 1.2),
        ("set, instance of 1,000 keys / 10", write("keys1000"), write("keys10"), 2.0),
    ];
    // One call that touches 2 MiB of its slot's memory must not tax the
    // calls after it (see `KEEP_RESIDENT_BYTES`): our own row.
    let before = get("keys10", "KEY_0003");
    for f in 0..32 {
        s.set(&scope, SetRequest::new("files", &format!("f{f}"), SecretType::File, vec![b'x'; 60 << 10])).unwrap();
    }
    drop(s.mounts(&scope, "files").unwrap());
    rows.push(("get after one mounts of 32 × 60 KiB / before it", get("keys10", "KEY_0003"), before, 1.5));
    println!("| growth (memory:) | large | small | ratio | target |");
    println!("|---|---|---|---|---|");
    for (name, large, small, target) in rows {
        let ratio = large.as_secs_f64() / small.as_secs_f64();
        println!("| {name} | {} | {} | {ratio:.2}× | ≤ {target}× |", us(large), us(small));
    }
    println!();
}

/// A store to measure: its name, the backend, and the PostgreSQL backend
/// again when it is one (for its round-trip counter).
type Store = (String, Arc<dyn Backend>, Option<Arc<PostgresBackend>>);

fn main() {
    // `cargo bench` passes `--bench`: nothing to parse.
    let samples: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |table: &str| only.is_empty() || only.split(',').any(|t| t.trim() == table);
    if wanted("tax") {
        sandbox_tax(samples);
    }
    if wanted("growth") {
        growth(samples);
    }
    if !wanted("stores") {
        return;
    }
    let sandbox = Arc::new(Sandbox::new().expect("the embedded component compiles"));
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<Store> = vec![
        ("memory:".into(), StoreConfig::parse("memory:").unwrap().open().unwrap(), None),
    ];
    // The SQLite store makes its key file beside the database.
    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    stores.push(("sqlite:".into(), StoreConfig::parse(&sqlite).unwrap().open().unwrap(), None));
    if let Ok(url) = std::env::var("SECRETS_TEST_POSTGRES_URL") {
        let url = format!("{url}?schema=bench_{}&key_file={}", std::process::id(), dir.path().join("pg.key").display());
        let StoreConfig::Postgres(config) = StoreConfig::parse(&url).unwrap() else { unreachable!() };
        let pg = Arc::new(PostgresBackend::from_config(&config).unwrap());
        stores.push(("postgres".into(), pg.clone(), Some(pg)));
    }
    if let (Ok(url), Ok(_)) = (std::env::var("SECRETS_TEST_OPENBAO_URL"), std::env::var("SECRETS_TEST_OPENBAO_TOKEN")) {
        let url = format!("{url}?token_env=SECRETS_TEST_OPENBAO_TOKEN&prefix=bench-{}", std::process::id());
        stores.push(("openbao".into(), StoreConfig::parse(&url).unwrap().open().unwrap(), None));
    }

    println!("| store | call | median | p99 | round trips |");
    println!("|---|---|---|---|---|");
    let mut inject_ratio = Vec::new();
    let mut openbao_get = None;
    let mut openbao_set = None;
    for (name, backend, pg) in &stores {
        let rows = bench_store(name, &sandbox, backend.clone(), pg.as_deref());
        for r in &rows {
            let trips = r.round_trips.map_or("—".into(), |n| n.to_string());
            println!("| {name} | {} | {} | {} | {trips} |", r.call, us(r.median), us(r.p99));
        }
        let median = |call: &str| rows.iter().find(|r| r.call == call).unwrap().median.as_secs_f64();
        inject_ratio.push((name.clone(), median("inject (100 env keys)") / median("inject (10 env keys)")));
        if name == "openbao" {
            openbao_get = Some(median("get"));
            openbao_set = Some(median("set"));
        }
    }
    println!();
    for (name, backend, _) in stores.iter().filter(|(name, _, _)| name == "memory:" || name == "sqlite:") {
        let s = Secrets::with_sandbox(sandbox.clone(), backend.clone(), Limits::default());
        let scope = Scope::tenant(&format!("bench-{}-{}", std::process::id(), name.trim_end_matches(':'))).unwrap();
        throughput(&s, &scope, 1, 200); // warm
        let one = throughput(&s, &scope, 1, 3000);
        let two = throughput(&s, &scope, 2, 3000);
        println!("{name} get throughput: 1 thread {one:.0}/s, 2 threads {two:.0}/s = {:.2}×", two / one);
    }
    for (name, ratio) in inject_ratio {
        println!("{name}: inject of 100 / inject of 10 = {ratio:.2}×");
    }
    if let (Some(get), Some(raw)) = (openbao_get, raw_openbao_read(300)) {
        println!(
            "openbao: get / one raw KV v2 read = {:.2}× ({} vs {})",
            get / raw.as_secs_f64(),
            us(Duration::from_secs_f64(get)),
            us(raw)
        );
    }
    if let (Some(set), Some((raw, steps))) = (openbao_set, raw_openbao_set(100)) {
        println!(
            "openbao: set / its requests from a bare client = {:.2}× ({} vs {})",
            set / raw.as_secs_f64(),
            us(Duration::from_secs_f64(set)),
            us(raw)
        );
        let steps: Vec<String> = steps.iter().map(|(name, d)| format!("{name} {}", us(*d))).collect();
        println!("openbao: bare set, median of each step: {}", steps.join(", "));
    }
}
