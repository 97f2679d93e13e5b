//! `secrets serve` against OpenBao over HTTP: the same client loop, the
//! same keep-alive HTTP client, in one run, at concurrency 1 and 8.
//!
//! `cargo bench -p secrets-host --bench http` (release build). Needs a
//! running OpenBao (`source .ci/openbao.sh && start_openbao`, which exports
//! `SECRETS_TEST_OPENBAO_URL` and `SECRETS_TEST_OPENBAO_TOKEN`); without it
//! only our rows are printed. `BENCH_SECONDS` (default 2) sets how long
//! each row runs.
//!
//! Ours runs the release `secrets serve` on a temporary SQLite store (the
//! default store: encrypted, every write fsynced), without an audit log,
//! as OpenBao's dev server runs without an audit device. Rows:
//! - read: our `GET …/value` and our KV v2 route `GET /v1/secret/data/…`
//!   against OpenBao's KV v2 read of the same shape;
//! - write: our `PUT …/secrets/{key}` and KV v2 `POST /v1/secret/data/…`
//!   against OpenBao's KV v2 write; each client thread writes its own key;
//! - and, after the table, the floor: our `GET /healthz` (no token, no
//!   store, no sandbox) against OpenBao's `GET /v1/sys/health`, which is
//!   what the same client, connection and server stack cost alone.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_secrets");

/// An HTTP endpoint and how to authenticate to it.
#[derive(Clone)]
struct Target {
    base: String,
    header: (&'static str, String),
}

/// One request of a row: method, path (thread number substituted for
/// `{t}`), JSON body.
#[derive(Clone, Copy)]
struct Shape {
    method: &'static str,
    path: &'static str,
    body: Option<fn() -> serde_json::Value>,
}

/// Requests per second `threads` clients (one keep-alive connection
/// each) complete in `seconds`.
fn rate(target: &Target, shape: Shape, threads: usize, seconds: f64) -> f64 {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (done, target) = (&done, target.clone());
            s.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let url = format!("{}{}", target.base, shape.path.replace("{t}", &t.to_string()));
                let mut n = 0;
                while Instant::now() < until {
                    let status = match (shape.method, shape.body) {
                        ("GET", _) => agent.get(&url).header(target.header.0, &target.header.1).call(),
                        ("PUT", Some(body)) => agent.put(&url).header(target.header.0, &target.header.1).send_json(body()),
                        ("POST", Some(body)) => agent.post(&url).header(target.header.0, &target.header.1).send_json(body()),
                        _ => unreachable!(),
                    }
                    .map(|mut r| {
                        let _ = r.body_mut().read_to_vec();
                        r.status().as_u16()
                    })
                    .unwrap_or_else(|e| panic!("{} {url}: {e}", shape.method));
                    assert!((200..300).contains(&status), "{} {url}: HTTP {status}", shape.method);
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `secrets serve` on a fresh SQLite store, killed when dropped.
struct Ours {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ours() -> Ours {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("secrets.db").display());
    let cmd = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--store").arg(&store).arg("--tenant").arg("bench").args(args);
        c.env("HOME", dir.path()).env("XDG_CACHE_HOME", dir.path().join("cache")).env_remove("SECRETS_STORE");
        c
    };
    let out = cmd(&["token", "create", "--role", "write"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut child = cmd(&["serve", "--listen", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the server printed where it listens").unwrap();
        if let Some(base) = line.strip_prefix("listening on ") {
            break base.to_owned();
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ours { child, base, token, _dir: dir }
}

/// OpenBao's address, KV v2 mount and root token, from the test variables.
fn openbao() -> Option<(Target, String)> {
    let url = std::env::var("SECRETS_TEST_OPENBAO_URL").ok()?;
    let token = std::env::var("SECRETS_TEST_OPENBAO_TOKEN").ok()?;
    let rest = url.split_once("://")?.1;
    let (host, mount) = rest.split_once('/')?;
    let mount = mount.split('?').next()?.trim_end_matches('/').to_owned();
    Some((Target { base: format!("http://{host}"), header: ("X-Vault-Token", token) }, mount))
}

fn value() -> serde_json::Value {
    json!({"type": "env", "value": "postgres://app:s3cret@db:5432/app"})
}

fn kv_value() -> serde_json::Value {
    json!({"data": {"value": "postgres://app:s3cret@db:5432/app"}})
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let server = ours();
    let us = Target { base: server.base.clone(), header: ("Authorization", format!("Bearer {}", server.token)) };
    let bao = openbao();
    // The key every read row reads, and each writer thread's own key.
    let put = |target: &Target, shape: Shape| rate(target, shape, 1, 0.05);
    let ours_get = Shape { method: "GET", path: "/v1/instances/web/secrets/DATABASE_URL/value", body: None };
    let ours_kv_get = Shape { method: "GET", path: "/v1/secret/data/web/DATABASE_URL", body: None };
    let ours_put = Shape { method: "PUT", path: "/v1/instances/web/secrets/W{t}", body: Some(value) };
    let ours_kv_put = Shape { method: "POST", path: "/v1/secret/data/web/K{t}", body: Some(kv_value) };
    put(&us, Shape { method: "PUT", path: "/v1/instances/web/secrets/DATABASE_URL", body: Some(value) });
    let mount = bao.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
    let prefix = format!("bench-http-{}", std::process::id());
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let bao_get = Shape { method: "GET", path: leak(format!("/v1/{mount}/data/{prefix}/DATABASE_URL")), body: None };
    let bao_put = Shape { method: "POST", path: leak(format!("/v1/{mount}/data/{prefix}/K{{t}}")), body: Some(kv_value) };
    if let Some((bao, _)) = &bao {
        put(bao, Shape { method: "POST", path: leak(format!("/v1/{mount}/data/{prefix}/DATABASE_URL")), body: Some(kv_value) });
    }

    // A short warm-up run, then the measured one.
    let measured = |target: &Target, shape: Shape, threads: usize| {
        rate(target, shape, threads, seconds / 10.0);
        rate(target, shape, threads, seconds)
    };
    println!("| request | concurrency | secrets serve | OpenBao | ratio |");
    println!("|---|---|---|---|---|");
    let rows: [(&str, Shape, Shape); 4] = [
        ("read: `GET …/value` vs KV v2 read", ours_get, bao_get),
        ("read: our KV v2 route vs KV v2 read", ours_kv_get, bao_get),
        ("write: `PUT …/secrets/{key}` vs KV v2 write", ours_put, bao_put),
        ("write: our KV v2 route vs KV v2 write", ours_kv_put, bao_put),
    ];
    for (name, mine, theirs) in rows {
        for threads in [1, 8] {
            let a = measured(&us, mine, threads);
            match &bao {
                Some((bao, _)) => {
                    let b = measured(bao, theirs, threads);
                    println!("| {name} | {threads} | {a:.0}/s | {b:.0}/s | {:.2}× |", a / b);
                }
                None => println!("| {name} | {threads} | {a:.0}/s | — | — |"),
            }
        }
    }
    let ours_floor = Shape { method: "GET", path: "/healthz", body: None };
    let bao_floor = Shape { method: "GET", path: "/v1/sys/health", body: None };
    for threads in [1, 8] {
        let a = measured(&us, ours_floor, threads);
        let b = bao.as_ref().map(|(bao, _)| measured(bao, bao_floor, threads));
        let theirs = b.map_or("—".to_owned(), |b| format!("{b:.0}/s"));
        println!("floor at concurrency {threads}: our GET /healthz {a:.0}/s, OpenBao's GET /v1/sys/health {theirs}");
    }
}
