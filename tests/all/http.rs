//! The HTTP API end to end: the real `secrets serve` on an ephemeral
//! loopback port over a temporary SQLite store, tokens made with the real
//! `secrets token` commands, and a real HTTP client (ureq).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::tls_bundle;

const BIN: &str = env!("CARGO_BIN_EXE_secrets");
const MASTER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// One compiled-component cache for the whole test process.
fn cache_home() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

/// A fresh SQLite store and the CLI on it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        Store { dir: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--store")
            .arg(format!("sqlite:{}", self.dir.path().join("secrets.db").display()))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", cache_home())
            .env("SECRETS_MASTER_KEY", MASTER_KEY);
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "{args:?}: {:?}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// A new token: (token, id).
    fn token(&self, tenant: &str, role: &str, ttl: Option<&str>) -> (String, String) {
        let mut args = vec!["--tenant", tenant, "token", "create", "--role", role, "--name", "test"];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let o = self.cli(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let token = String::from_utf8(o.stdout).unwrap().trim_end().to_owned();
        let err = String::from_utf8(o.stderr).unwrap();
        let id = err.strip_prefix("created token ").unwrap().split(' ').next().unwrap().to_owned();
        (token, id)
    }

    fn serve(&self, env: &[(&str, &str)]) -> Server {
        let mut c = self.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        for (k, v) in env {
            c.env(k, v);
        }
        Server::start(c)
    }
}

/// An answer, read whole.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Everything the client saw, for leak checks.
    fn everything(&self) -> String {
        let headers: String = self.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        format!("{} {headers}{}", self.status, self.text())
    }

    /// The error body without its request id (which differs per request).
    fn error_shape(&self) -> (u16, Option<String>, Value) {
        let mut body = self.json();
        let id = body.as_object_mut().unwrap().remove("request_id").unwrap();
        assert_eq!(id.as_str(), self.header("x-request-id"), "the body's request id is the header's");
        (self.status, self.header("www-authenticate").map(str::to_owned), body)
    }
}

/// A running `secrets serve`, stopped (SIGTERM) when dropped.
struct Server {
    child: Option<Child>,
    base: String,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Server {
    fn start(mut command: Command) -> Server {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            let found = log.lock().unwrap().lines().find_map(|l| l.strip_prefix("listening on ").map(str::to_owned));
            if let Some(base) = found {
                break base;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the server exited with {status}: {}", log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the server never listened: {}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .into();
        Server { child: Some(child), base, log, agent }
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
        self.raw(method, path, token, body, &[])
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut builder = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some((content_type, bytes)) => {
                if !content_type.is_empty() {
                    builder = builder.header("Content-Type", content_type);
                }
                self.agent.run(builder.body(bytes).unwrap())
            }
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.body_mut().with_config().limit(1 << 20).read_to_vec().unwrap();
        let resp = Resp { status: response.status().as_u16(), headers, body };
        assert!(resp.header("x-request-id").is_some_and(|id| id.len() == 24), "{resp:?}");
        if resp.status >= 400 {
            let body = resp.json();
            assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()), "{}", resp.text());
            assert!(body["code"].is_string() && body["request_id"].is_string(), "{}", resp.text());
        }
        resp
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and everything the server wrote.
    fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        sigterm(&child);
        let status = wait(&mut child, Duration::from_secs(60));
        // The reader thread ends at EOF; give it a moment to append.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code, reason = "kill(2) of our own child")]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM)
    };
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const CANARY: &str = "canary-http-5e1d0b";

#[test]
fn every_endpoint_and_values_only_where_asked_for() {
    let store = Store::new();
    let (write, write_id) = store.token("acme", "write", None);
    let server = store.serve(&[("RUST_LOG", "trace")]);
    let w = Some(write.as_str());
    let mut leak_checked: Vec<(String, Resp)> = Vec::new();
    let mut record = |label: &str, r: &Resp| leak_checked.push((label.to_owned(), r.clone()));

    // Health needs no token.
    let r = server.call("GET", "/healthz", None, None);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = server.call("GET", "/readyz", None, None);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ready"})));

    // PUT: 201 for a new key, 200 for a new version; metadata and an ETag, no value.
    let env_value = format!("postgres://app:{CANARY}@db/app");
    let r = server.call("PUT", "/v1/instances/web/secrets/DATABASE_URL", w, Some(&json!({"type": "env", "value": env_value})));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let meta = r.json();
    assert_eq!((meta["key"].as_str(), meta["version"].as_u64(), meta["type"].as_str()), (Some("DATABASE_URL"), Some(1), Some("env")));
    assert_eq!(meta["size"].as_u64(), Some(env_value.len() as u64));
    assert!(meta.get("value").is_none() && meta.get("value_base64").is_none());
    record("put 1", &r);
    let r = server.call("PUT", "/v1/instances/web/secrets/DATABASE_URL", w, Some(&json!({"type": "env", "value": format!("{env_value}-2")})));
    assert_eq!((r.status, r.header("etag")), (200, Some("\"v2\"")), "{}", r.text());
    record("put 2", &r);
    let binary: Vec<u8> = [CANARY.as_bytes(), &[0xff, 0x00, 0xfe]].concat();
    let r = server.call("PUT", "/v1/instances/web/secrets/blob.bin", w, Some(&json!({"type": "file", "value_base64": b64(&binary)})));
    assert_eq!(r.status, 201, "{}", r.text());
    record("put file", &r);
    let registry = format!(r#"{{"auths":{{"ghcr.io":{{"username":"u","password":"{CANARY}"}}}}}}"#);
    let r = server.call("PUT", "/v1/instances/web/secrets/ghcr", w, Some(&json!({"type": "registry", "value": registry})));
    assert_eq!(r.status, 201, "{}", r.text());
    record("put registry", &r);
    let tls = String::from_utf8(tls_bundle("ed25519-cert.pem", "ed25519-key.pem")).unwrap();
    let r = server.call("PUT", "/v1/instances/web/secrets/site", w, Some(&json!({"type": "tls", "value": tls})));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.json()["not_after"].is_i64());
    record("put tls", &r);

    // List: metadata of every key, no value.
    let r = server.call("GET", "/v1/instances/web/secrets", w, None);
    assert_eq!(r.status, 200);
    let list = r.json();
    let keys: Vec<&str> = list["secrets"].as_array().unwrap().iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["DATABASE_URL", "blob.bin", "ghcr", "site"]);
    record("list", &r);

    // Metadata: current + versions, ETag of the current one.
    let r = server.call("GET", "/v1/instances/web/secrets/DATABASE_URL", w, None);
    assert_eq!((r.status, r.header("etag")), (200, Some("\"v2\"")));
    let body = r.json();
    assert_eq!(body["version"].as_u64(), Some(2));
    let versions: Vec<u64> = body["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);
    record("metadata", &r);

    // Value: current, a version, an empty version (= current); bytes as base64.
    let r = server.call("GET", "/v1/instances/web/secrets/DATABASE_URL/value", w, None);
    assert_eq!((r.status, r.header("etag"), r.header("cache-control")), (200, Some("\"v2\""), Some("no-store")));
    assert_eq!(r.json(), json!({"key": "DATABASE_URL", "version": 2, "type": "env", "value": format!("{env_value}-2")}));
    let r = server.call("GET", "/v1/instances/web/secrets/DATABASE_URL/value?version=1", w, None);
    assert_eq!((r.json()["value"].as_str(), r.header("etag")), (Some(env_value.as_str()), Some("\"v1\"")));
    let r = server.call("GET", "/v1/instances/web/secrets/DATABASE_URL/value?version=", w, None);
    assert_eq!(r.json()["version"].as_u64(), Some(2));
    let r = server.call("GET", "/v1/instances/web/secrets/DATABASE_URL/value?version=7", w, None);
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("not-found")));
    let r = server.call("GET", "/v1/instances/web/secrets/blob.bin/value", w, None);
    assert_eq!(r.json(), json!({"key": "blob.bin", "version": 1, "type": "file", "value_base64": b64(&binary)}));

    // Env: JSON (default) and dotenv.
    let r = server.call("GET", "/v1/instances/web/env", w, None);
    assert_eq!((r.status, r.header("cache-control")), (200, Some("no-store")));
    assert_eq!(r.json(), json!({"DATABASE_URL": format!("{env_value}-2")}));
    let r = server.call("GET", "/v1/instances/web/env?format=dotenv", w, None);
    assert_eq!(r.text(), format!("DATABASE_URL=\"{env_value}-2\"\n"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));

    // Mounts: path, mode, contents in base64 (values: not leak-checked,
    // like /value and /env, but never in another response).
    let r = server.call("GET", "/v1/instances/web/mounts", w, None);
    assert_eq!(r.status, 200);
    let mounts = r.json()["mounts"].as_array().unwrap().clone();
    let paths: Vec<&str> = mounts.iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [".docker/config.json", "blob.bin", "site/tls.crt", "site/tls.key"]);
    assert_eq!(mounts[1]["contents_base64"].as_str(), Some(b64(&binary).as_str()));
    assert_eq!(mounts[1]["mode"].as_u64(), Some(0o400));

    // Rotate, then delete: 204, and it is gone.
    let r = server.call("POST", "/v1/instances/web/secrets/DATABASE_URL/rotate", w, None);
    assert_eq!((r.status, r.json()), (200, json!({"rotated": 2})));
    record("rotate", &r);
    let r = server.call("DELETE", "/v1/instances/web/secrets/blob.bin", w, None);
    assert_eq!((r.status, r.body.len()), (204, 0));
    record("delete", &r);
    let r = server.call("GET", "/v1/instances/web/secrets/blob.bin", w, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"], json!(["secret \"blob.bin\" not found in instance \"web\""]));
    record("metadata after delete", &r);
    let r = server.call("DELETE", "/v1/instances/web/secrets/blob.bin", w, None);
    assert_eq!(r.status, 404);

    // Errors that involve the canary's key: conflict, bad input.
    let r = server.call("PUT", "/v1/instances/web/secrets/DATABASE_URL", w, Some(&json!({"type": "file", "value": CANARY})));
    assert_eq!((r.status, r.json()["code"].as_str()), (409, Some("conflict")), "{}", r.text());
    record("conflict", &r);
    let r = server.call("PUT", "/v1/instances/web/secrets/BAD", w, Some(&json!({"type": "env", "value": CANARY, "extra": CANARY})));
    assert_eq!(r.status, 422);
    record("unknown field", &r);
    let r = server.call("PUT", "/v1/instances/web/secrets/BAD", w, Some(&json!({"type": CANARY, "value": CANARY})));
    assert_eq!(r.status, 422);
    record("bad type", &r);
    let r = server.call("PUT", "/v1/instances/web/secrets/ghcr", w, Some(&json!({"type": "registry", "value": format!("{{\"auths\":{{\"ghcr.io\":{{\"password\":\"{CANARY}\"}}}}}}")})));
    assert_eq!(r.status, 422, "{}", r.text());
    record("invalid registry", &r);
    let r = server.call("GET", "/v1/instances/nope/secrets", w, None);
    assert_eq!((r.status, r.json()["errors"].clone()), (404, json!(["instance \"nope\" has no secrets"])));
    let r = server.call("GET", "/nope", w, None);
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("not-found")));
    let r = server.call("PATCH", "/v1/instances/web/secrets/DATABASE_URL", w, None);
    assert_eq!((r.status, r.json()["code"].as_str()), (405, Some("method-not-allowed")));
    record("405", &r);

    // Latency of a value read (loopback, SQLite, one sandboxed call).
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(server.call("GET", "/v1/instances/web/secrets/DATABASE_URL/value", w, None).status, 200);
            start.elapsed()
        })
        .collect();
    times.sort();
    eprintln!("GET .../value: median {:?}, max {:?} over 30 requests (debug build, RUST_LOG=trace)", times[15], times[29]);

    for (label, r) in &leak_checked {
        assert!(!r.everything().contains(CANARY), "{label}: {}", r.everything());
        assert!(!r.everything().contains(&b64(&binary)), "{label}");
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("route=/v1/instances/{instance}/secrets/{key}/value") && log.contains("status=200"), "{log}");
    assert!(log.contains(&format!("token=\"{write_id}\"")) || log.contains(&format!("token={write_id}")), "the token id is logged");
    assert!(!log.contains(CANARY), "the server's trace log holds the canary");
    assert!(!log.contains(&write[4..]), "the server's log holds the token");
    assert!(!log.contains(&b64(&binary)));
}

/// The routes of one instance, each with what it needs.
fn routes(instance: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let base = format!("/v1/instances/{instance}");
    vec![
        ("PUT", format!("{base}/secrets/API_KEY"), Some(json!({"type": "env", "value": "from-b"}))),
        ("GET", format!("{base}/secrets"), None),
        ("GET", format!("{base}/secrets/API_KEY"), None),
        ("GET", format!("{base}/secrets/API_KEY/value"), None),
        ("GET", format!("{base}/secrets/API_KEY/value?version=1"), None),
        ("DELETE", format!("{base}/secrets/API_KEY"), None),
        ("POST", format!("{base}/secrets/API_KEY/rotate"), None),
        ("GET", format!("{base}/env"), None),
        ("GET", format!("{base}/env?format=dotenv"), None),
        ("GET", format!("{base}/mounts"), None),
    ]
}

#[test]
fn another_tenants_instance_is_a_missing_one() {
    let store = Store::new();
    let (a, _) = store.token("tenant-a", "write", None);
    let (b, _) = store.token("tenant-b", "write", None);
    let server = store.serve(&[]);
    let r = server.call("PUT", "/v1/instances/web/secrets/API_KEY", Some(&a), Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 201);
    server.call("PUT", "/v1/instances/web/secrets/cert.pem", Some(&a), Some(&json!({"type": "file", "value": CANARY})));

    // B: every read, delete and rotate of A's instance is a 404 exactly
    // like an instance that exists nowhere ("ghost" renamed to "web" in
    // the messages).
    for (method, path, body) in routes("web").into_iter().skip(1) {
        let r = server.call(method, &path, Some(&b), body.as_ref());
        let ghost = server.call(method, &path.replace("/web/", "/ghost/"), Some(&b), body.as_ref());
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(!r.everything().contains(CANARY));
        let (mut shape, mut ghost_shape) = (r.error_shape(), ghost.error_shape());
        shape.2["errors"] = json!(shape.2["errors"].to_string());
        ghost_shape.2["errors"] = json!(ghost_shape.2["errors"].to_string().replace("ghost", "web"));
        assert_eq!(shape, ghost_shape, "{method} {path}");
    }
    // B's PUT lands in B's own instance, not A's.
    let r = server.call("PUT", "/v1/instances/web/secrets/API_KEY", Some(&b), Some(&json!({"type": "env", "value": "from-b"})));
    assert_eq!((r.status, r.json()["version"].as_u64()), (201, Some(1)));
    let r = server.call("GET", "/v1/instances/web/secrets/API_KEY/value", Some(&a), None);
    assert_eq!((r.json()["value"].as_str(), r.json()["version"].as_u64()), (Some(CANARY), Some(1)));
    let r = server.call("GET", "/v1/instances/web/secrets", Some(&b), None);
    assert_eq!(r.json()["secrets"].as_array().unwrap().len(), 1, "B sees only its own key");
    let r = server.call("GET", "/v1/instances/web/env", Some(&b), None);
    assert_eq!(r.json(), json!({"API_KEY": "from-b"}));
    let r = server.call("DELETE", "/v1/instances/web/secrets/API_KEY", Some(&b), None);
    assert_eq!(r.status, 204);
    let r = server.call("GET", "/v1/instances/web/secrets/API_KEY/value", Some(&a), None);
    assert_eq!(r.json()["value"].as_str(), Some(CANARY), "B's delete did not touch A");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn roles_allow_what_they_say() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let (read, _) = store.token("acme", "read", None);
    let (inject, _) = store.token("acme", "inject", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    server.call("PUT", "/v1/instances/web/secrets/API_KEY", w, Some(&json!({"type": "env", "value": CANARY})));
    server.call("PUT", "/v1/instances/web/secrets/conf", w, Some(&json!({"type": "file", "value": "x"})));
    // (method, path, body, read's status, inject's status)
    let table: Vec<(&str, &str, Option<Value>, u16, u16)> = vec![
        ("GET", "/v1/instances/web/secrets", None, 200, 403),
        ("GET", "/v1/instances/web/secrets/API_KEY", None, 200, 403),
        ("GET", "/v1/instances/web/secrets/API_KEY/value", None, 200, 403),
        ("GET", "/v1/instances/web/env", None, 200, 200),
        ("GET", "/v1/instances/web/mounts", None, 200, 200),
        ("PUT", "/v1/instances/web/secrets/API_KEY", Some(json!({"type": "env", "value": "new"})), 403, 403),
        ("POST", "/v1/instances/web/secrets/API_KEY/rotate", None, 403, 403),
        ("DELETE", "/v1/instances/web/secrets/API_KEY", None, 403, 403),
    ];
    for (method, path, body, read_status, inject_status) in table {
        for (role, token, expected) in [("read", &read, read_status), ("inject", &inject, inject_status)] {
            let r = server.call(method, path, Some(token), body.as_ref());
            assert_eq!(r.status, expected, "{role} {method} {path}: {}", r.text());
            if expected == 403 {
                assert_eq!(r.json()["code"].as_str(), Some("forbidden"));
                assert!(!r.everything().contains(CANARY));
            }
        }
    }
    // A forbidden body is refused before it is even parsed.
    let r = server.raw("PUT", "/v1/instances/web/secrets/X", Some(&read), Some(("text/plain", b"{".to_vec())), &[]);
    assert_eq!(r.status, 403);
    // Nothing changed: still version 1, still there.
    let r = server.call("GET", "/v1/instances/web/secrets/API_KEY/value", w, None);
    assert_eq!((r.json()["version"].as_u64(), r.json()["value"].as_str()), (Some(1), Some(CANARY)));
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn every_bad_token_gets_the_same_401() {
    let store = Store::new();
    let (good, _) = store.token("acme", "write", None);
    let (short_lived, _) = store.token("acme", "write", Some("1s"));
    let (revoked, revoked_id) = store.token("acme", "write", None);
    let server = store.serve(&[]);
    let path = "/v1/instances/web/secrets";
    let body = json!({"type": "env", "value": "v"});
    assert_eq!(server.call("PUT", &format!("{path}/K"), Some(&good), Some(&body)).status, 201);
    assert_eq!(server.call("GET", path, Some(&revoked), None).status, 200);
    // Revoked through the CLI while the server runs: refused at once (no cache).
    store.cli_ok(&["token", "revoke", &revoked_id]);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let unknown = format!("sec_{}", "0".repeat(64));
    let mut shapes = Vec::new();
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        ("malformed", vec![("Authorization", "Bearer not-a-token".into())]),
        ("other scheme", vec![("Authorization", format!("Basic {good}"))]),
        ("no scheme", vec![("Authorization", good.clone())]),
        ("truncated", vec![("Authorization", format!("Bearer {}", &good[..good.len() - 1]))]),
        ("unknown", vec![("Authorization", format!("Bearer {unknown}"))]),
        ("expired", vec![("Authorization", format!("Bearer {short_lived}"))]),
        ("revoked", vec![("Authorization", format!("Bearer {revoked}"))]),
    ];
    for (what, headers) in &attempts {
        for (method, path, body) in [("GET", path.to_string(), None), ("PUT", format!("{path}/K"), Some(&body))] {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
            let r = server.raw(method, &path, None, body, &headers);
            assert_eq!(r.status, 401, "{what}: {}", r.text());
            shapes.push(r.error_shape());
        }
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:#?}");
    assert_eq!(shapes[0].1.as_deref(), Some("Bearer"));
    assert_eq!(shapes[0].2, json!({"errors": ["a valid bearer token is required"], "code": "unauthorized"}));
    // Nothing was written by any of them.
    let r = server.call("GET", "/v1/instances/web/secrets/K", Some(&good), None);
    assert_eq!(r.json()["version"].as_u64(), Some(1));
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(!log.contains(&short_lived[4..]) && !log.contains(&revoked[4..]) && !log.contains(&good[4..]));
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    let r = server.call("PUT", "/v1/instances/web/secrets/KEEP", w, Some(&json!({"type": "env", "value": "kept"})));
    assert_eq!(r.status, 201);
    // The largest value fits the body limit in base64 (and one byte more
    // is refused by the value limit, not the body limit).
    let largest = vec![0xffu8; 65536];
    let r = server.call("PUT", "/v1/instances/big/secrets/largest", w, Some(&json!({"type": "file", "value_base64": b64(&largest)})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.call("GET", "/v1/instances/big/secrets/largest/value", w, None);
    assert!(r.json()["value_base64"].as_str() == Some(b64(&largest).as_str()), "not UTF-8: base64");
    let r = server.call("PUT", "/v1/instances/big/secrets/largest", w, Some(&json!({"type": "file", "value_base64": b64(&[0xffu8; 65537])})));
    assert_eq!((r.status, r.json()["errors"].clone()), (413, json!(["value: 65537 bytes; the limit is 65536"])));
    let json_body = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    let long = "k".repeat(300);
    let big_b64 = b64(&vec![b'x'; 80 * 1024]);
    let oversize_value = "x".repeat(70 * 1024);
    // (what, method, path, body, status)
    type Row<'a> = (&'a str, &'a str, String, Option<(&'a str, Vec<u8>)>, u16);
    let table: Vec<Row> = vec![
        ("malformed JSON", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env","value":"#), 400),
        ("not an object", "PUT", "/secrets/NEW".into(), json_body(r#"["env","v"]"#), 422),
        ("unknown field", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env","value":"v","ttl":5}"#), 422),
        ("wrong type of value", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env","value":5}"#), 422),
        ("wrong type of type", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":["env"],"value":"v"}"#), 422),
        ("unknown type", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"secret","value":"v"}"#), 422),
        ("missing type", "PUT", "/secrets/NEW".into(), json_body(r#"{"value":"v"}"#), 422),
        ("no value", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env"}"#), 422),
        ("both values", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env","value":"v","value_base64":"dg=="}"#), 422),
        ("invalid base64", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"file","value_base64":"not base64!"}"#), 422),
        ("bad env name", "PUT", "/secrets/1NEW".into(), json_body(r#"{"type":"env","value":"v"}"#), 422),
        ("NUL in env value", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"env","value":"a\u0000b"}"#), 422),
        ("bad tls", "PUT", "/secrets/NEW".into(), json_body(r#"{"type":"tls","value":"not pem"}"#), 422),
        ("empty body", "PUT", "/secrets/NEW".into(), json_body(""), 400),
        ("text/plain", "PUT", "/secrets/NEW".into(), Some(("text/plain", br#"{"type":"env","value":"v"}"#.to_vec())), 415),
        ("no content type", "PUT", "/secrets/NEW".into(), Some(("", br#"{"type":"env","value":"v"}"#.to_vec())), 415),
        ("oversize body", "PUT", "/secrets/NEW".into(), json_body(&format!(r#"{{"type":"file","value_base64":"{big_b64}"}}"#)), 413),
        ("oversize value", "PUT", "/secrets/NEW".into(), json_body(&format!(r#"{{"type":"file","value":"{oversize_value}"}}"#)), 413),
        ("encoded slash in key", "PUT", "/secrets/a%2FNEW".into(), json_body(r#"{"type":"file","value":"v"}"#), 400),
        ("encoded backslash", "PUT", "/secrets/a%5CNEW".into(), json_body(r#"{"type":"file","value":"v"}"#), 400),
        ("encoded dot-dot key", "PUT", "/secrets/%2E%2E".into(), json_body(r#"{"type":"file","value":"v"}"#), 400),
        ("dot-dot inside key", "PUT", "/secrets/a..b".into(), json_body(r#"{"type":"file","value":"v"}"#), 400),
        ("over-long key", "PUT", format!("/secrets/{long}"), json_body(r#"{"type":"file","value":"v"}"#), 400),
        ("hidden key", "PUT", "/secrets/.env".into(), json_body(r#"{"type":"file","value":"v"}"#), 422),
        ("bad version", "GET", "/secrets/KEEP/value?version=0".into(), None, 400),
        ("non-numeric version", "GET", "/secrets/KEEP/value?version=x".into(), None, 400),
        ("unknown query", "GET", "/secrets/KEEP/value?versoin=1".into(), None, 400),
        ("bad env format", "GET", "/env?format=yaml".into(), None, 400),
    ];
    // Check-and-set is not supported yet: refused rather than ignored.
    for header in [("If-Match", "\"v1\""), ("If-None-Match", "*")] {
        let r = server.raw("PUT", "/v1/instances/web/secrets/KEEP", w, json_body(r#"{"type":"env","value":"v"}"#), &[header]);
        assert_eq!(r.status, 400, "{}", r.text());
    }
    for (what, method, path, body, status) in table {
        let r = server.raw(method, &format!("/v1/instances/web{path}"), w, body, &[]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let errors = r.json()["errors"].to_string();
        assert!(!errors.contains(&"x".repeat(64)) && !errors.contains("not base64"), "{what}: {errors}");
    }
    // Path tricks on the instance.
    for (what, instance, status) in [
        ("encoded slash", "a%2Fb".to_string(), 400),
        ("encoded dot-dot", "%2E%2E".to_string(), 400),
        ("over-long", "i".repeat(200), 400),
        ("bad characters", "we%20b".to_string(), 422),
    ] {
        let r = server.call("PUT", &format!("/v1/instances/{instance}/secrets/K"), w, Some(&json!({"type": "env", "value": "v"})));
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let r = server.call("GET", &format!("/v1/instances/{instance}/env"), w, None);
        assert_eq!(r.status, status, "{what}: {}", r.text());
    }
    // Nothing was stored: the instance holds KEEP v1 only, and no other
    // instance came to be.
    let r = server.call("GET", "/v1/instances/web/secrets", w, None);
    let metas = r.json()["secrets"].as_array().unwrap().clone();
    assert_eq!(metas.len(), 1, "{metas:?}");
    assert_eq!((metas[0]["key"].as_str(), metas[0]["version"].as_u64()), (Some("KEEP"), Some(1)));
    for instance in ["a", "b", "we"] {
        assert_eq!(server.call("GET", &format!("/v1/instances/{instance}/secrets"), w, None).status, 404);
    }
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn sigterm_stops_the_server_with_exit_0_and_plain_http_stays_on_loopback() {
    let store = Store::new();
    let (token, _) = store.token("acme", "read", None);
    let server = store.serve(&[]);
    assert_eq!(server.call("GET", "/readyz", None, None).status, 200);
    assert_eq!(server.call("GET", "/v1/instances/web/env", Some(&token), None).status, 404);
    let base = server.base.clone();
    let (status, log) = server.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutting down") && log.trim_end().ends_with("stopped"), "{log}");
    // One line per request, with route template, status, duration and request id.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" request ") || l.ends_with(" request")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[1].contains("method=GET") && lines[1].contains("route=/v1/instances/{instance}/env") && lines[1].contains("status=404"), "{log}");
    assert!(lines[1].contains("duration_ms=") && lines[1].contains("request_id="), "{log}");
    assert!(base.starts_with("http://127.0.0.1:"));

    // Plain HTTP elsewhere than loopback needs --insecure-listen.
    let o = store.cli(&["serve", "--listen", "0.0.0.0:0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not a loopback address") && err.contains("--insecure-listen"), "{err}");
    let o = store.cli(&["serve", "--listen", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Holds SQLite's write lock from outside, so a PUT through the server
/// waits in its call (readers, token checks included, go on).
fn hold_write_lock(store: &Store) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.dir.path().join("secrets.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[test]
fn sigterm_finishes_requests_in_flight_within_the_grace_period() {
    let store = Store::new();
    let (token, _) = store.token("acme", "write", None);
    let put = |server: &Server| {
        let agent = server.agent.clone();
        let url = format!("{}/v1/instances/web/secrets/K", server.base);
        let token = token.clone();
        std::thread::spawn(move || {
            agent
                .put(url)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(r#"{"type":"env","value":"v"}"#)
                .map(|r| r.status().as_u16())
        })
    };

    // A PUT in flight when SIGTERM comes is finished, then the server exits 0.
    let server = store.serve(&[]);
    let lock = hold_write_lock(&store);
    let in_flight = put(&server);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(server.child.as_ref().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.log().contains("shutting down"), "{}", server.log());
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(in_flight.join().unwrap().unwrap(), 201, "the request in flight was answered");
    let (status, log) = server.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.trim_end().ends_with("stopped") && !log.contains("in flight after"), "{log}");

    // One still stuck when the grace period ends is abandoned: exit 0 all
    // the same, after about --shutdown-timeout.
    let mut c = store.cmd(&["serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "1s"]);
    c.env("RUST_LOG", "secrets_host=info");
    let server = Server::start(c);
    let lock = hold_write_lock(&store);
    let stuck = put(&server);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (status, log) = server.stop();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    assert!(log.contains("still in flight"), "{log}");
    assert!(stuck.join().unwrap().is_err(), "the abandoned request got no answer");
    lock.execute_batch("ROLLBACK").unwrap();
    // Nothing of the abandoned PUT was committed: K is still at version 1.
    let o = store.cli_ok(&["--tenant", "acme", "versions", "web", "K", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&o).unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn token_commands() {
    let store = Store::new();
    // A token is minted only for a tenant someone named.
    let o = store.cli(&["token", "create", "--role", "read"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tenant"));
    let o = store.cli(&["--tenant", "a/b", "token", "create", "--role", "read"]);
    assert_eq!(o.status.code(), Some(1));

    let (t1, id1) = store.token("acme", "read", Some("30d"));
    let (t2, id2) = store.token("other", "inject", None);
    for t in [&t1, &t2] {
        assert!(t.len() == 68 && t.starts_with("sec_") && t[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
    }
    // `--tenant` after the subcommand works too.
    let o = store.cli(&["token", "create", "--role", "write", "--tenant", "third"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 1, "one line: the token");

    let table = store.cli_ok(&["token", "list"]);
    let listed = store.cli_ok(&["token", "list", "--json"]);
    for t in [&t1, &t2] {
        let hash = hex::encode(Sha256::digest(t.as_bytes()));
        for out in [&table, &listed] {
            assert!(!out.contains(&t[4..]) && !out.contains(&hash), "{out}");
        }
    }
    assert!(table.starts_with("ID") && table.contains(&id1) && table.contains(&id2), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&id2) && l.contains("other") && l.contains("inject") && l.contains("never")), "{table}");
    let rows: Value = serde_json::from_str(&listed).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["id"] == id1.as_str()).unwrap();
    assert_eq!((row["tenant"].as_str(), row["role"].as_str(), row["name"].as_str()), (Some("acme"), Some("read"), Some("test")));
    let thirty_days = 30 * 24 * 3600 * 1000;
    assert_eq!(row["expires_ms"].as_u64().unwrap() - row["created_ms"].as_u64().unwrap(), thirty_days);
    assert_eq!(row["expired"], json!(false));
    assert_eq!(rows.as_array().unwrap().len(), 3);

    // Revoke: by id; an unknown id is "not found" (3); a token pasted by
    // mistake is refused without being repeated.
    assert_eq!(store.cli_ok(&["token", "revoke", &id1]).lines().next().unwrap(), format!("revoked {id1} (tenant \"acme\", role read)"));
    let o = store.cli(&["token", "revoke", &id1]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let o = store.cli(&["token", "revoke", &t2]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&o.stderr).contains(&t2[4..]));
    let listed = store.cli_ok(&["token", "list", "--json"]);
    assert!(!listed.contains(&id1) && listed.contains(&id2));
    assert!(String::from_utf8_lossy(&store.cli(&["token", "list"]).stderr).is_empty());
    let empty = Store::new();
    let o = empty.cli(&["token", "list"]);
    assert!(o.status.success() && o.stdout.is_empty());
    let mut c = empty.cmd(&["token", "list", "--json"]);
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), "[]");
    let _ = std::io::stderr().flush();
}
