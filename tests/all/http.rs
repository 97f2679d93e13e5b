//! The HTTP API end to end: the real `secrets serve` on an ephemeral
//! loopback port over a temporary SQLite store, tokens made with the real
//! `secrets token` commands, and a real HTTP client (ureq).

use std::collections::BTreeSet;
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

/// A store (a fresh SQLite one unless told otherwise) and the CLI on it.
/// The Vault API's tests use it too.
pub(crate) struct Store {
    pub(crate) dir: tempfile::TempDir,
    url: String,
}

impl Store {
    pub(crate) fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("secrets.db").display());
        Store { dir, url }
    }

    /// The store at `url` (its key from SECRETS_MASTER_KEY).
    fn at(url: String) -> Store {
        Store { dir: tempfile::tempdir().unwrap(), url }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--store")
            .arg(&self.url)
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
    pub(crate) fn token(&self, tenant: &str, role: &str, ttl: Option<&str>) -> (String, String) {
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
        self.serve_with(&[], env)
    }

    /// `secrets serve` with more arguments.
    fn serve_with(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut c = self.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        c.args(args);
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
    log: Arc<Mutex<String>>,
    client: Client,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// An HTTP client of one server.
struct Client {
    base: String,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .proxy(None)
        .build()
        .into()
}

/// Starts `command` (a `secrets serve` on a loopback port) with its stderr
/// collected: (the child, the log so far, the base URL it printed).
pub(crate) fn spawn_listening(mut command: Command) -> (Child, Arc<Mutex<String>>, String) {
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
    assert!(base.starts_with("http://127.0.0.1:") || base.starts_with("https://127.0.0.1:"), "{base}");
    (child, log, base)
}

impl Server {
    fn start(command: Command) -> Server {
        Server::start_with(command, agent())
    }

    /// A server whose clients use `agent` (e.g. one that trusts a test CA).
    fn start_with(command: Command, agent: ureq::Agent) -> Server {
        let (child, log, base) = spawn_listening(command);
        Server { child: Some(child), log, client: Client { base, agent } }
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

impl Client {
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
    signal(child, libc::SIGTERM);
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code, reason = "kill(2) of our own child")]
    unsafe {
        libc::kill(child.id() as i32, signal)
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
    for (key, body) in [("API_KEY", json!({"type": "env", "value": CANARY})), ("conf", json!({"type": "file", "value": "x"}))] {
        let r = server.call("PUT", &format!("/v1/instances/web/secrets/{key}"), w, Some(&body));
        assert_eq!(r.status, 201, "setting {key}: {}", r.text());
    }
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
        ("version with a leading zero", "GET", "/secrets/KEEP/value?version=01".into(), None, 400),
        ("signed version", "GET", "/secrets/KEEP/value?version=%2B1".into(), None, 400),
        ("unknown query", "GET", "/secrets/KEEP/value?versoin=1".into(), None, 400),
        ("bad env format", "GET", "/env?format=yaml".into(), None, 400),
        // Routes without parameters refuse any: none is silently ignored.
        ("query on PUT", "PUT", "/secrets/KEEP?if_version=0".into(), json_body(r#"{"type":"env","value":"v"}"#), 400),
        ("query on DELETE", "DELETE", "/secrets/KEEP?version=2".into(), None, 400),
        ("query on rotate", "POST", "/secrets/KEEP/rotate?version=1".into(), None, 400),
        ("query on list", "GET", "/secrets?prefix=K".into(), None, 400),
        ("query on metadata", "GET", "/secrets/KEEP?version=1".into(), None, 400),
        ("query on mounts", "GET", "/mounts?format=tar".into(), None, 400),
    ];
    // Preconditions this API does not give are refused, never ignored.
    for headers in [
        vec![("If-Match", "*")],
        vec![("If-Match", "W/\"v1\"")],
        vec![("If-Match", "v1")],
        vec![("If-Match", "\"v0\"")],
        vec![("If-Match", "\"v1\", \"v2\"")],
        vec![("If-None-Match", "\"v1\"")],
        vec![("If-Match", "\"v1\""), ("If-None-Match", "*")],
    ] {
        let r = server.raw("PUT", "/v1/instances/web/secrets/KEEP", w, json_body(r#"{"type":"env","value":"v"}"#), &headers);
        assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("bad-request")), "{headers:?}: {}", r.text());
        assert!(r.json()["errors"][0].as_str().unwrap().contains("Match"), "{}", r.text());
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

    // SIGINT (Ctrl-C) stops it the same way.
    let mut server = store.serve(&[]);
    assert_eq!(server.call("GET", "/healthz", None, None).status, 200);
    let mut child = server.child.take().unwrap();
    signal(&child, libc::SIGINT);
    assert_eq!(wait(&mut child, Duration::from_secs(60)).code(), Some(0));
    std::thread::sleep(Duration::from_millis(50));
    assert!(server.log().trim_end().ends_with("stopped"), "{}", server.log());

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
fn a_request_that_finds_no_call_slot_in_time_is_busy_and_tokens_are_still_checked() {
    let store = Store::new();
    let (token, _) = store.token("acme", "write", None);
    let t = Some(token.as_str());
    let server = store.serve_with(&["--max-concurrent-calls", "1", "--max-call-wait", "1s"], &[]);
    assert_eq!(server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&json!({"type": "env", "value": "v"}))).status, 201);

    // One PUT holds the only call slot, stuck behind the store's write lock.
    let lock = hold_write_lock(&store);
    let stuck = {
        let agent = server.agent.clone();
        let url = format!("{}/v1/instances/web/secrets/K", server.base);
        let token = token.clone();
        std::thread::spawn(move || {
            agent
                .put(url)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(r#"{"type":"env","value":"v2"}"#)
                .map(|r| r.status().as_u16())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Tokens are checked on slots of their own: a bad token is still told
    // 401 at once, not queued behind the stuck call.
    let started = Instant::now();
    let r = server.call("GET", "/v1/instances/web/secrets", Some(&format!("sec_{}", "0".repeat(64))), None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());
    // A good one waits for a call slot for --max-call-wait, then gets 503
    // busy with Retry-After; nothing was read.
    let started = Instant::now();
    let r = server.call("GET", "/v1/instances/web/secrets/K/value", t, None);
    let waited = started.elapsed();
    assert_eq!((r.status, r.json()["code"].as_str(), r.header("retry-after")), (503, Some("busy"), Some("1")), "{}", r.text());
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(!r.text().contains("\"v\""));
    let metrics = server.call("GET", "/metrics", None, None).text();
    assert!(metrics.contains("secrets_call_slot_timeouts_total 1\n"), "{metrics}");

    // Once the slot is free, calls go through again.
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(stuck.join().unwrap().unwrap(), 200);
    let r = server.call("GET", "/v1/instances/web/secrets/K/value", t, None);
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("v2")));
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

/// Soft delete, undelete, destroy, rollback and the instance list through
/// the API: what reads see, roles, tenants, and bad bodies that change
/// nothing.
#[test]
fn version_lifecycle_routes() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let (read, _) = store.token("acme", "read", None);
    let (other, _) = store.token("globex", "write", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    let key = "/v1/instances/web/secrets/DB";
    for v in ["one", "two", "three"] {
        assert!(server.call("PUT", key, w, Some(&json!({"type": "env", "value": v}))).status < 300);
    }
    let post = |path: &str, token: Option<&str>, body: Value| server.call("POST", &format!("{key}/{path}"), token, Some(&body));
    let value = || server.call("GET", &format!("{key}/value"), w, None);
    let versions = || server.call("GET", key, w, None).json()["versions"].clone();

    // Soft delete of the current version.
    assert_eq!(post("delete-versions", w, json!({"versions": [3]})).status, 204);
    assert_eq!(value().status, 404);
    assert_eq!(server.call("GET", "/v1/instances/web/env", w, None).json(), json!({}));
    assert!(versions()[2]["deleted_at"].is_u64(), "{}", versions());
    assert_eq!(post("undelete", w, json!({"versions": [3]})).status, 204);
    assert_eq!(value().json()["value"], "three");

    // Destroy, and the conflicts it leaves.
    assert_eq!(post("destroy", w, json!({"versions": [1]})).status, 204);
    assert_eq!(versions()[0]["destroyed"], true);
    assert_eq!(server.call("GET", &format!("{key}/value?version=1"), w, None).status, 404);
    let r = post("undelete", w, json!({"versions": [1]}));
    assert_eq!((r.status, r.json()["code"].as_str()), (409, Some("conflict")), "{}", r.text());
    assert_eq!(post("rollback", w, json!({"version": 1})).status, 409);

    // Rollback: a new version with version 2's value; metadata, no value.
    let r = post("rollback", w, json!({"version": 2}));
    assert_eq!((r.status, r.header("etag")), (200, Some("\"v4\"")), "{}", r.text());
    assert_eq!(r.json()["version"], 4);
    assert!(r.json().get("value").is_none());
    assert_eq!(value().json()["value"], "two");
    assert_eq!(post("rollback", w, json!({"version": 9})).status, 404);

    // Instances of the tenant; none for another one.
    assert!(server.call("PUT", "/v1/instances/api/secrets/K", w, Some(&json!({"type": "env", "value": "k"}))).status < 300);
    assert_eq!(server.call("GET", "/v1/instances", Some(&read), None).json(), json!({"instances": ["api", "web"]}));
    assert_eq!(server.call("GET", "/v1/instances", Some(&other), None).json(), json!({"instances": []}));

    // Roles and tenants: read may not change versions; another tenant's
    // key is not found; neither changes anything.
    let before = versions();
    assert_eq!(post("delete-versions", Some(&read), json!({"versions": [4]})).status, 403);
    assert_eq!(post("destroy", Some(&other), json!({"versions": [4]})).status, 404);
    assert_eq!(post("rollback", Some(&other), json!({"version": 2})).status, 404);
    // Bad bodies change nothing either.
    for (body, status) in [
        (json!({"versions": []}), 422),
        (json!({"versions": [0]}), 422),
        (json!({"versions": "4"}), 422),
        (json!({"versions": [4], "force": true}), 422),
        (json!({"versions": [4, 99]}), 404),
        (json!([4]), 422),
    ] {
        let r = post("destroy", w, body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
    }
    let r = server.raw("POST", &format!("{key}/destroy"), w, Some(("text/plain", b"{\"versions\":[4]}".to_vec())), &[]);
    assert_eq!(r.status, 415);
    for body in [json!({"version": "2"}), json!({"version": 0}), json!({}), json!({"version": 2, "value": "x"})] {
        assert_eq!(post("rollback", w, body.clone()).status, 422, "{body}");
    }
    assert_eq!(versions(), before, "nothing changed");
}

/// Two `secrets serve` on one PostgreSQL store: each sees the other's
/// writes, versions stay 1..N under concurrent PUTs through both, and a
/// revoked token is refused by both.
#[test]
fn two_replicas_on_one_postgres_store() {
    let schema = crate::postgres::TestSchema::new("http-replicas");
    let store = Store::at(schema.url());
    let (token, id) = store.token("acme", "write", None);
    let t = Some(token.as_str());
    let (a, b) = (store.serve(&[]), store.serve(&[]));
    let put = |server: &Server, value: &str| {
        server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&json!({"type": "env", "value": value})))
    };
    let value = |server: &Server| server.call("GET", "/v1/instances/web/secrets/K/value", t, None).json();

    // Writes through either are seen by both.
    assert_eq!(put(&a, "from-a").status, 201);
    assert_eq!(value(&b)["value"], "from-a");
    assert_eq!(put(&b, "from-b").status, 200);
    assert_eq!((value(&a)["value"].as_str(), value(&a)["version"].as_u64()), (Some("from-b"), Some(2)));

    // Concurrent PUTs through both: every one acknowledged with its own
    // version, and the versions are exactly 3..=N+2.
    const WRITERS_PER_SERVER: usize = 3;
    const PUTS_EACH: usize = 6;
    let acknowledged: Vec<(u64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = [&a, &b]
            .into_iter()
            .flat_map(|server| (0..WRITERS_PER_SERVER).map(move |w| (server, w)))
            .enumerate()
            .map(|(n, (server, _))| {
                let put = &put;
                s.spawn(move || {
                    (0..PUTS_EACH)
                        .map(|i| {
                            let v = format!("w{n}-{i}");
                            let r = put(server, &v);
                            assert_eq!(r.status, 200, "{}", r.text());
                            (r.json()["version"].as_u64().unwrap(), v)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let total = 2 * WRITERS_PER_SERVER * PUTS_EACH;
    let mut versions: Vec<u64> = acknowledged.iter().map(|(v, _)| *v).collect();
    versions.sort_unstable();
    assert_eq!(versions, (3..3 + total as u64).collect::<Vec<_>>());
    let meta = b.call("GET", "/v1/instances/web/secrets/K", t, None).json();
    let listed: Vec<u64> = meta["versions"].as_array().unwrap().iter().map(|m| m["version"].as_u64().unwrap()).collect();
    assert_eq!(listed, (1..3 + total as u64).collect::<Vec<_>>());
    // Each acknowledged version holds the value that was written as it.
    for (version, written) in acknowledged.iter().step_by(5) {
        let r = a.call("GET", &format!("/v1/instances/web/secrets/K/value?version={version}"), t, None);
        assert_eq!(r.json()["value"].as_str(), Some(written.as_str()), "version {version}");
    }

    // A revoked token is refused by both replicas at once (no cache).
    store.cli_ok(&["token", "revoke", &id]);
    for server in [&a, &b] {
        assert_eq!(server.call("GET", "/v1/instances/web/secrets", t, None).status, 401);
    }
}

/// A store that stops answering makes requests 503 `unavailable` (with
/// no value, and `/readyz` says so) until it answers again.
#[test]
fn an_unavailable_store_is_a_503_until_it_answers_again() {
    use crate::postgres::{server_addr, via, with_params};
    let schema = crate::postgres::TestSchema::new("http-unavailable");
    let proxy = crate::fault_proxy::FaultProxy::start(server_addr());
    let store = Store::at(with_params(&via(&schema.url(), proxy.addr()), "timeout=1&lock_timeout=1"));
    let (token, _) = store.token("acme", "write", None);
    let t = Some(token.as_str());
    let server = store.serve(&[]);
    let r = server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 201, "{}", r.text());

    proxy.freeze();
    for (method, path) in [("GET", "/v1/instances/web/secrets/K/value"), ("GET", "/v1/instances/web/env"), ("GET", "/readyz")] {
        let started = Instant::now();
        let r = server.raw(method, path, t, None, &[]);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(10), "{path}: {:?}", started.elapsed());
        assert!(!r.text().contains(CANARY), "{path}: {}", r.text());
        if path != "/readyz" {
            assert_eq!(r.json()["code"], "unavailable", "{}", r.text());
        }
    }

    proxy.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = server.call("GET", "/v1/instances/web/secrets/K/value", t, None);
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some(CANARY)), "{}", r.text());
    assert_eq!(server.call("GET", "/readyz", None, None).status, 200);
}

/// `--audit-log -`: the audit lines go to stderr, beside the log, and
/// hold no value.
#[test]
fn the_audit_log_can_go_to_stderr() {
    let store = Store::new();
    let (token, id) = store.token("acme", "write", None);
    let t = Some(token.as_str());
    let server = store.serve_with(&["--audit-log", "-"], &[]);
    assert_eq!(server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&json!({"type": "env", "value": CANARY}))).status, 201);
    assert_eq!(server.call("GET", "/v1/instances/web/secrets/K/value", t, None).status, 200);
    let (status, log) = server.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    let lines: Vec<Value> = log.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let events: Vec<(&str, &str, Option<u64>)> = lines
        .iter()
        .map(|l| (l["event"].as_str().unwrap(), l["method"].as_str().unwrap(), l["status"].as_u64()))
        .collect();
    assert_eq!(
        events,
        [("intent", "PUT", None), ("outcome", "PUT", Some(201)), ("intent", "GET", None), ("outcome", "GET", Some(200))],
        "{log}"
    );
    assert!(lines.iter().all(|l| l["token_id"] == id.as_str() && l["key"] == "K"), "{log}");
    assert!(!log.contains(CANARY) && !log.contains(&token), "{log}");
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
    assert!(rows.as_array().unwrap().iter().all(|r| r["last_used_ms"].is_null()), "{listed}");

    // A token's use through the server shows in `list` (to the minute).
    let server = store.serve(&[]);
    assert_eq!(server.call("GET", "/v1/instances/web/secrets", Some(&t1), None).status, 404);
    drop(server);
    let rows: Value = serde_json::from_str(&store.cli_ok(&["token", "list", "--json"])).unwrap();
    let used = |id: &str| rows.as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["last_used_ms"].clone();
    assert!(used(&id1).as_u64().is_some_and(|ms| ms >= row["created_ms"].as_u64().unwrap()), "{rows}");
    assert!(used(&id2).is_null(), "{rows}");
    let table = store.cli_ok(&["token", "list"]);
    assert!(table.lines().next().unwrap().ends_with("LAST USED"), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&id2) && l.ends_with("never")), "{table}");

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

/// The versions of a key, through the API.
fn versions_of(server: &Client, token: &str, instance: &str, key: &str) -> Vec<u64> {
    let r = server.call("GET", &format!("/v1/instances/{instance}/secrets/{key}"), Some(token), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

/// `n` PUTs of `path` at once (released together by a barrier), each with
/// its own value and `headers`; their answers, by value index.
fn concurrent_puts(server: &Client, token: &str, path: &str, n: usize, headers: &[(&str, &str)]) -> Vec<Resp> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let body = serde_json::to_vec(&json!({"type": "env", "value": format!("writer-{i}")})).unwrap();
                    barrier.wait();
                    server.raw("PUT", path, Some(token), Some(("application/json", body)), headers)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn check_and_set_races_have_exactly_one_winner() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    let path = "/v1/instances/web/secrets/K";
    assert_eq!(server.call("PUT", path, w, Some(&json!({"type": "env", "value": "base"}))).status, 201);

    // 8 PUTs with the same If-Match: one 200, seven 412, versions 1 and 2.
    const N: usize = 8;
    let answers = concurrent_puts(&server, &write, path, N, &[("If-Match", "\"v1\"")]);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), N - 1, "{statuses:?}");
    let winner = statuses.iter().position(|s| *s == 200).unwrap();
    assert_eq!(answers[winner].header("etag"), Some("\"v2\""));
    for r in answers.iter().filter(|r| r.status == 412) {
        assert_eq!(r.json()["code"].as_str(), Some("precondition-failed"));
        assert_eq!(r.json()["errors"], json!(["key \"K\" is at version 2, the request expected version 1"]));
        assert!(r.header("etag").is_none());
    }
    assert_eq!(versions_of(&server, &write, "web", "K"), [1, 2], "gapless");
    let r = server.call("GET", &format!("{path}/value"), w, None);
    assert_eq!(r.json()["value"].as_str(), Some(format!("writer-{winner}").as_str()), "the winner's value");

    // 8 PUTs of a new key with If-None-Match: *: one 201, seven 412.
    let answers = concurrent_puts(&server, &write, "/v1/instances/web/secrets/NEW", N, &[("If-None-Match", "*")]);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), N - 1, "{statuses:?}");
    assert_eq!(versions_of(&server, &write, "web", "NEW"), [1]);

    // Without a precondition every PUT lands: versions 1..=8, no gap, no
    // duplicate.
    let answers = concurrent_puts(&server, &write, "/v1/instances/web/secrets/FREE", N, &[]);
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
    assert_eq!(versions_of(&server, &write, "web", "FREE"), (1..=N as u64).collect::<Vec<_>>());

    // Sequentially: the current version wins, an old one or a missing key
    // is 412, a type change on the right version is still 409, and none of
    // the refusals stored anything.
    let json_body = |v: &Value| Some(("application/json", serde_json::to_vec(v).unwrap()));
    let env = json!({"type": "env", "value": "v"});
    let r = server.raw("PUT", path, w, json_body(&env), &[("If-Match", "\"v2\"")]);
    assert_eq!((r.status, r.header("etag")), (200, Some("\"v3\"")), "{}", r.text());
    let r = server.raw("PUT", path, w, json_body(&env), &[("If-Match", "\"v2\"")]);
    assert_eq!(r.status, 412, "{}", r.text());
    let r = server.raw("PUT", path, w, json_body(&env), &[("If-None-Match", "*")]);
    assert_eq!((r.status, r.json()["errors"].clone()), (412, json!(["key \"K\" is at version 3, the request expected version 0"])));
    let r = server.raw("PUT", "/v1/instances/web/secrets/MISSING", w, json_body(&env), &[("If-Match", "\"v1\"")]);
    assert_eq!(r.status, 412, "{}", r.text());
    let r = server.raw("PUT", path, w, json_body(&json!({"type": "file", "value": "v"})), &[("If-Match", "\"v3\"")]);
    assert_eq!((r.status, r.json()["code"].as_str()), (409, Some("conflict")), "{}", r.text());
    assert_eq!(versions_of(&server, &write, "web", "K"), [1, 2, 3]);
    assert_eq!(server.call("GET", "/v1/instances/web/secrets/MISSING", w, None).status, 404);
    // Where check-and-set is not supported, a precondition is refused, not ignored.
    for (method, route) in [("DELETE", path.to_string()), ("POST", format!("{path}/rotate"))] {
        for header in [("If-Match", "\"v3\""), ("If-None-Match", "*")] {
            let r = server.raw(method, &route, w, None, &[header]);
            assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("bad-request")), "{method} {header:?}");
        }
    }
    assert_eq!(versions_of(&server, &write, "web", "K"), [1, 2, 3], "still there");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn value_not_modified_and_raw_bytes() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    let binary: Vec<u8> = [CANARY.as_bytes(), &[0xff, 0x00, 0xfe, b'\n']].concat();
    let path = "/v1/instances/web/secrets/blob.bin";
    let r = server.call("PUT", path, w, Some(&json!({"type": "file", "value_base64": b64(&binary)})));
    assert_eq!(r.status, 201);
    let value = format!("{path}/value");

    // A matching If-None-Match: 304, the ETag, no body (no value).
    for tag in ["\"v1\"", "W/\"v1\"", "\"v7\", \"v1\"", "*"] {
        let r = server.raw("GET", &value, w, None, &[("If-None-Match", tag)]);
        assert_eq!((r.status, r.header("etag"), r.header("cache-control")), (304, Some("\"v1\""), Some("no-store")), "{tag}");
        assert!(r.body.is_empty(), "{tag}");
        assert!(!r.everything().contains(CANARY));
    }
    // Another version's tag: the value.
    let r = server.raw("GET", &value, w, None, &[("If-None-Match", "\"v2\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value_base64"].as_str(), Some(b64(&binary).as_str()));
    // After a new version, the old tag no longer matches the current one;
    // it still matches ?version=1.
    let r = server.call("PUT", path, w, Some(&json!({"type": "file", "value": "second"})));
    assert_eq!(r.status, 200);
    let r = server.raw("GET", &value, w, None, &[("If-None-Match", "\"v1\"")]);
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("second")));
    let r = server.raw("GET", &format!("{value}?version=1"), w, None, &[("If-None-Match", "\"v1\"")]);
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    // A header that is not a list of tags is a 400; a missing key stays 404.
    let r = server.raw("GET", &value, w, None, &[("If-None-Match", "v2")]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = server.raw("GET", "/v1/instances/web/secrets/nope/value", w, None, &[("If-None-Match", "*")]);
    assert_eq!(r.status, 404);

    // Accept: application/octet-stream: the bytes as they are.
    let raw = |path: &str, accept: &str| server.raw("GET", path, w, None, &[("Accept", accept)]);
    let r = raw(&format!("{value}?version=1"), "application/octet-stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, binary, "byte for byte");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!((r.header("etag"), r.header("cache-control")), (Some("\"v1\""), Some("no-store")));
    assert_eq!(raw(&value, "application/octet-stream, */*;q=0.1").body, b"second");
    // JSON when JSON is asked for, preferred, or nothing in particular.
    for accept in ["application/json", "*/*", "application/json, application/octet-stream;q=0.5", "text/html"] {
        let r = raw(&value, accept);
        assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")), "{accept}");
        assert_eq!(r.json()["value"].as_str(), Some("second"));
    }
    // Raw and a matching tag: still 304 without a body.
    let r = server.raw("GET", &value, w, None, &[("Accept", "application/octet-stream"), ("If-None-Match", "\"v2\"")]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    // Errors stay JSON whatever is accepted.
    let r = raw("/v1/instances/web/secrets/nope/value", "application/octet-stream");
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("not-found")));
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(!log.contains(CANARY));
}

/// The audit log's lines.
fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn the_audit_log_says_who_did_what_and_never_holds_a_value() {
    let store = Store::new();
    let (write, write_id) = store.token("acme", "write", None);
    let (read, read_id) = store.token("acme", "read", None);
    let audit = store.dir.path().join("audit.log");
    let server = store.serve_with(&["--audit-log", audit.to_str().unwrap()], &[("RUST_LOG", "trace")]);
    let (w, r_) = (Some(write.as_str()), Some(read.as_str()));
    let key = "/v1/instances/web/secrets/API_KEY";
    let canary_b64 = b64(CANARY.as_bytes());

    // (response, event count expected, audit fields expected)
    let mut seen: Vec<(Resp, usize, Value)> = Vec::new();
    let put_route = "/v1/instances/{instance}/secrets/{key}";
    let value_route = "/v1/instances/{instance}/secrets/{key}/value";
    let r = server.call("PUT", key, w, Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 201);
    seen.push((r, 2, json!({"method": "PUT", "route": put_route, "token_id": write_id, "tenant": "acme", "instance": "web", "key": "API_KEY", "version": 1, "outcome": "ok", "status": 201})));
    let body = serde_json::to_vec(&json!({"type": "env", "value": CANARY})).unwrap();
    let r = server.raw("PUT", key, w, Some(("application/json", body)), &[("If-Match", "\"v7\"")]);
    assert_eq!(r.status, 412);
    seen.push((r, 2, json!({"method": "PUT", "key": "API_KEY", "if_version": 7, "outcome": "precondition-failed", "status": 412})));
    let r = server.call("GET", &format!("{key}/value"), r_, None);
    assert_eq!(r.status, 200);
    seen.push((r, 2, json!({"method": "GET", "route": value_route, "token_id": read_id, "version": 1, "outcome": "ok", "status": 200})));
    let r = server.raw("GET", &format!("{key}/value"), r_, None, &[("If-None-Match", "\"v1\"")]);
    assert_eq!(r.status, 304);
    seen.push((r, 2, json!({"route": value_route, "version": 1, "outcome": "not-modified", "status": 304})));
    let r = server.call("GET", "/v1/instances/web/secrets/nope/value?version=3", r_, None);
    assert_eq!(r.status, 404);
    seen.push((r, 2, json!({"key": "nope", "version": 3, "outcome": "not-found", "status": 404})));
    let r = server.call("GET", "/v1/instances/web/env", r_, None);
    assert_eq!(r.status, 200);
    seen.push((r, 2, json!({"route": "/v1/instances/{instance}/env", "instance": "web", "key": null, "outcome": "ok"})));
    let r = server.call("GET", "/v1/instances/web/secrets", r_, None);
    assert_eq!(r.status, 200);
    seen.push((r, 1, json!({"route": "/v1/instances/{instance}/secrets", "outcome": "ok", "status": 200})));
    let r = server.call("PUT", key, r_, Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 403);
    seen.push((r, 1, json!({"token_id": read_id, "outcome": "forbidden", "status": 403, "instance": null})));
    let r = server.call("GET", &format!("{key}/value"), Some(&format!("sec_{}", "0".repeat(64))), None);
    assert_eq!(r.status, 401);
    seen.push((r, 1, json!({"token_id": null, "tenant": null, "outcome": "unauthorized", "status": 401})));
    let r = server.call("DELETE", key, w, None);
    assert_eq!(r.status, 204);
    seen.push((r, 2, json!({"method": "DELETE", "key": "API_KEY", "outcome": "ok", "status": 204})));
    // Not audited: health, readiness, metrics, the OpenAPI document, unknown paths.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v2/nothing"] {
        server.call("GET", path, None, None);
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), seen.iter().map(|(_, n, _)| n).sum::<usize>(), "{lines:#?}");
    for (resp, count, expected) in &seen {
        let id = resp.header("x-request-id").unwrap();
        let mine: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == id).collect();
        assert_eq!(mine.len(), *count, "{expected}: {mine:#?}");
        let outcome = mine.last().unwrap();
        assert_eq!(outcome["event"], "outcome");
        if *count == 2 {
            assert_eq!(mine[0]["event"], "intent", "the intent comes first");
            assert!(mine[0].get("status").is_none() && mine[0].get("outcome").is_none());
            assert_eq!((&mine[0]["token_id"], &mine[0]["route"]), (&outcome["token_id"], &outcome["route"]));
        }
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&outcome[field], value, "{field} of {expected}: {outcome}");
        }
        assert!(outcome["remote"].as_str().unwrap().starts_with("127.0.0.1:"), "{outcome}");
        assert!(outcome["time"].as_str().unwrap().ends_with('Z') && outcome["duration_ms"].is_number());
    }
    // Never a value or a token; the file is the owner's only.
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [CANARY, &canary_b64, &write[4..], &read[4..]] {
        assert!(!text.contains(secret), "the audit log holds {secret}");
    }
    assert!(!log.contains(CANARY), "the trace log holds the canary");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn audit_fails_closed_when_its_log_cannot_be_written() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    // Values stored through the CLI, so nothing needs the server to write.
    for (key, kind) in [("API_KEY", "env"), ("conf", "file")] {
        let mut c = store.cmd(&["--tenant", "acme", "set", "web", key, "--type", kind]);
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(CANARY.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }

    // Every write to /dev/full fails with ENOSPC.
    let server = store.serve_with(&["--audit-log", "/dev/full"], &[]);
    let w = Some(write.as_str());
    for path in ["/v1/instances/web/secrets/API_KEY/value", "/v1/instances/web/env", "/v1/instances/web/env?format=dotenv", "/v1/instances/web/mounts"] {
        let r = server.call("GET", path, w, None);
        assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("audit-unavailable")), "{path}: {}", r.text());
        assert!(r.json()["errors"][0].as_str().unwrap().contains("audit log"));
        assert!(!r.everything().contains(CANARY), "{path}");
    }
    for (method, path, body) in [
        ("PUT", "/v1/instances/web/secrets/API_KEY", Some(json!({"type": "env", "value": "new"}))),
        ("PUT", "/v1/instances/web/secrets/NEW", Some(json!({"type": "env", "value": "new"}))),
        ("DELETE", "/v1/instances/web/secrets/API_KEY", None),
        ("POST", "/v1/instances/web/secrets/API_KEY/rotate", None),
    ] {
        let r = server.call(method, path, w, body.as_ref());
        assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("audit-unavailable")), "{method} {path}: {}", r.text());
    }
    // Metadata is not fail-closed (its outcome line is best effort).
    let r = server.call("GET", "/v1/instances/web/secrets", w, None);
    assert_eq!(r.status, 200);
    let metrics = server.call("GET", "/metrics", None, None).text();
    let failures = metrics.lines().find_map(|l| l.strip_prefix("secrets_audit_write_failures_total ")).unwrap();
    assert!(failures.parse::<u32>().unwrap() >= 9, "{metrics}");
    let (status, log) = server.stop();
    assert!(status.success());
    assert!(log.contains("audit log: No space left on device"), "{log}");
    assert!(!log.contains(CANARY));

    // Nothing was written: API_KEY is at version 1 with its value, NEW does not exist.
    let o = store.cli_ok(&["--tenant", "acme", "versions", "web", "API_KEY", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&o).unwrap().as_array().unwrap().len(), 1);
    assert_eq!(store.cli_ok(&["--tenant", "acme", "get", "web", "API_KEY"]), CANARY);
    assert_eq!(store.cli(&["--tenant", "acme", "versions", "web", "NEW"]).status.code(), Some(3));

    // A path that cannot be opened stops the server before it listens.
    let o = store.cli(&["serve", "--listen", "127.0.0.1:0", "--audit-log", "/nonexistent/dir/audit.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--audit-log /nonexistent/dir/audit.log"));
}

#[test]
fn rate_limits_are_per_token() {
    let store = Store::new();
    let (a, _) = store.token("acme", "read", None);
    let (b, _) = store.token("acme", "read", None);
    let server = store.serve_with(&["--rate-limit", "2"], &[]);
    let path = "/v1/instances/web/secrets";
    // A burst of 2, then 429 with Retry-After; the other token is unaffected.
    let started = Instant::now();
    let statuses: Vec<u16> = (0..3).map(|_| server.call("GET", path, Some(&a), None).status).collect();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(450), "too slow to test a rate of 2/s: {took:?}");
    assert_eq!(statuses, [404, 404, 429], "404: the instance has no secrets; counted all the same");
    let r = server.call("GET", path, Some(&a), None);
    assert_eq!((r.status, r.header("retry-after"), r.json()["code"].as_str()), (429, Some("1"), Some("rate-limited")));
    assert_eq!(server.call("GET", path, Some(&b), None).status, 404);
    // Unauthenticated endpoints are not limited.
    for _ in 0..5 {
        assert_eq!(server.call("GET", "/healthz", None, None).status, 200);
    }
    // After the Retry-After, the token is served again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(server.call("GET", path, Some(&a), None).status, 404);
    let metrics = server.call("GET", "/metrics", None, None).text();
    assert!(metrics.contains("secrets_http_requests_total{route=\"/v1/instances/{instance}/secrets\",method=\"GET\",status=\"429\"} 2"), "{metrics}");
    let (status, _) = server.stop();
    assert!(status.success());
    let o = store.cli(&["serve", "--rate-limit", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn metrics_count_requests_and_calls_without_naming_anyone() {
    let store = Store::new();
    let (write, write_id) = store.token("tenant-7c1e", "write", None);
    let server = store.serve(&[]);
    let w = Some(write.as_str());
    let path = "/v1/instances/inst-52ab/secrets/KEY_93F0";
    assert_eq!(server.call("PUT", path, w, Some(&json!({"type": "env", "value": CANARY}))).status, 201);
    for _ in 0..3 {
        assert_eq!(server.call("GET", &format!("{path}/value"), w, None).status, 200);
    }
    assert_eq!(server.call("GET", "/v1/instances/inst-52ab/secrets/nope", w, None).status, 404);
    assert_eq!(server.call("GET", "/no/such/route", None, None).status, 404);
    assert_eq!(server.raw("PATCH", "/metrics", None, None, &[]).status, 405);
    let r = server.call("GET", "/metrics", None, None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{r:?}");
    let text = r.text();
    for line in [
        "secrets_http_requests_total{route=\"/v1/instances/{instance}/secrets/{key}\",method=\"PUT\",status=\"201\"} 1",
        "secrets_http_requests_total{route=\"/v1/instances/{instance}/secrets/{key}/value\",method=\"GET\",status=\"200\"} 3",
        "secrets_http_requests_total{route=\"/v1/instances/{instance}/secrets/{key}\",method=\"GET\",status=\"404\"} 1",
        "secrets_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "secrets_http_requests_total{route=\"/metrics\",method=\"PATCH\",status=\"405\"} 1",
        "secrets_call_duration_seconds_count{call=\"get\"} 3",
        "secrets_call_duration_seconds_count{call=\"set\"} 1",
        "secrets_call_duration_seconds_bucket{call=\"get\",le=\"+Inf\"} 3",
        "secrets_call_duration_seconds_count{call=\"verify-token\"} 5",
        "secrets_sandbox_traps_total 0",
        "secrets_calls_in_flight 0",
        "secrets_call_slots 64",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    for name in ["tenant-7c1e", "inst-52ab", "KEY_93F0", &write_id, &write[4..], CANARY, "/no/such/route"] {
        assert!(!text.contains(name), "{name} in the metrics");
    }
    let (status, _) = server.stop();
    assert!(status.success());
}

/// `secrets_host::http` served in this process, for what the binary cannot
/// be made to do: run a hostile component, or an audit sink that fails on
/// cue.
struct InProcess {
    client: Client,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::ops::Deref for InProcess {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl InProcess {
    fn start(app: secrets_host::http::App) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(secrets_host::http::serve(
            listener,
            None,
            app,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        InProcess { client: Client { base, agent: agent() }, runtime: Some(runtime), stop: Some(stop) }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A token made directly in `backend`.
fn token_in(backend: &Arc<dyn secrets_host::Backend>, tenant: &str, role: secrets_host::tokens::Role) -> String {
    let tokens = secrets_host::tokens::TokenStore::new(backend.clone());
    let req = secrets_host::tokens::NewToken { tenant: secrets_host::Scope::tenant(tenant).unwrap(), role, name: None, ttl: None };
    tokens.create(req).unwrap().0.expose().to_owned()
}

#[test]
fn a_trap_is_a_500_with_the_request_id_and_the_server_keeps_serving() {
    use secrets_host::{Limits, MemoryBackend, Sandbox, Secrets};
    let hostile = Arc::new(Sandbox::from_file(Path::new(env!("SECRETS_HOSTILE_COMPONENT"))).unwrap());
    let backend: Arc<dyn secrets_host::Backend> = Arc::new(MemoryBackend::new());
    let secrets = Secrets::with_sandbox(hostile, backend.clone(), Limits::default()).with_call_timeout(Duration::from_millis(500));
    let token = token_in(&backend, "acme", secrets_host::tokens::Role::Write);
    let app = secrets_host::http::App::new(secrets, secrets_host::tokens::TokenStore::new(backend), Default::default());
    let server = InProcess::start(app);
    let t = Some(token.as_str());
    let body = json!({"type": "env", "value": CANARY});
    // The hostile component loops on instance "loop": stopped, 500.
    for _ in 0..2 {
        let r = server.call("PUT", "/v1/instances/loop/secrets/K", t, Some(&body));
        assert_eq!(r.status, 500, "{}", r.text());
        let error = r.json();
        assert_eq!(error["code"].as_str(), Some("internal"));
        assert_eq!(error["request_id"].as_str(), r.header("x-request-id"));
        assert!(!r.everything().contains(CANARY) && !r.everything().contains("wasm"), "{}", r.text());
    }
    // And keeps serving: health, and the component's answer elsewhere.
    assert_eq!(server.call("GET", "/healthz", None, None).status, 200);
    let r = server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&body));
    assert_eq!(r.status, 404, "{}", r.text());
    let metrics = server.call("GET", "/metrics", None, None).text();
    assert!(metrics.lines().any(|l| l == "secrets_sandbox_traps_total 2"), "{metrics}");
    assert!(metrics.contains("secrets_http_requests_total{route=\"/v1/instances/{instance}/secrets/{key}\",method=\"PUT\",status=\"500\"} 2"));
}

/// An audit sink that keeps intent lines and fails on outcome lines.
#[derive(Clone, Default)]
struct OutcomesFail(Arc<Mutex<Vec<u8>>>);

impl Write for OutcomesFail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if String::from_utf8_lossy(buf).contains("\"event\":\"outcome\"") {
            return Err(std::io::Error::other("the audit disk is gone"));
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn values_are_withheld_when_their_outcome_line_fails_and_writes_stand() {
    use secrets_host::MemoryBackend;
    use secrets_host::http::{ApiConfig, App, AuditLog};
    let backend: Arc<dyn secrets_host::Backend> = Arc::new(MemoryBackend::new());
    let secrets = crate::common::service(backend.clone());
    let token = token_in(&backend, "acme", secrets_host::tokens::Role::Write);
    let sink = OutcomesFail::default();
    let config = ApiConfig { audit: Some(Arc::new(AuditLog::to_writer(Box::new(sink.clone())))), ..ApiConfig::default() };
    let server = InProcess::start(App::new(secrets, secrets_host::tokens::TokenStore::new(backend), config));
    let t = Some(token.as_str());

    // A write's outcome line is written after its commit: the write stands
    // and its answer is the true one (its intent line is in the log).
    let r = server.call("PUT", "/v1/instances/web/secrets/API_KEY", t, Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 201, "{}", r.text());
    let put_id = r.header("x-request-id").unwrap().to_owned();
    // Values are withheld.
    for path in ["/v1/instances/web/secrets/API_KEY/value", "/v1/instances/web/env", "/v1/instances/web/mounts"] {
        let r = server.call("GET", path, t, None);
        assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("audit-unavailable")), "{path}: {}", r.text());
        assert!(r.json()["errors"][0].as_str().unwrap().contains("withheld"));
        assert!(!r.everything().contains(CANARY), "{path}");
        assert!(r.header("etag").is_none());
    }
    // Answers without values are not.
    assert_eq!(server.call("GET", "/v1/instances/web/secrets", t, None).status, 200);
    let r = server.raw("GET", "/v1/instances/web/secrets/API_KEY/value", t, None, &[("If-None-Match", "\"v1\"")]);
    assert_eq!(r.status, 304);
    let intents = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = intents.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "intents of the PUT, the 3 reads and the 304: {intents}");
    assert_eq!((lines[0]["request_id"].as_str(), lines[0]["event"].as_str()), (Some(put_id.as_str()), Some("intent")));
    assert!(!intents.contains(CANARY));
}

/// A CA, and a certificate for 127.0.0.1 and localhost it signed: the PEM
/// of the CA certificate, the server's chain and the server's key.
fn test_ca_and_server_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key)).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// An agent that trusts only the CA in `ca_pem`.
fn agent_trusting(ca_pem: &str) -> ureq::Agent {
    let roots: Vec<_> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|item| match item.unwrap() {
            ureq::tls::PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    assert_eq!(roots.len(), 1);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .proxy(None)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
        .build()
        .into()
}

#[test]
fn tls_serves_https_and_nothing_in_clear_text() {
    let store = Store::new();
    let (token, _) = store.token("acme", "write", None);
    let (ca, cert, key) = test_ca_and_server_cert();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert_file, key_file) = (path("cert.pem", &cert), path("key.pem", &key));

    let mut c = store.cmd(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert_file, "--tls-key", &key_file]);
    c.env("RUST_LOG", "trace");
    let server = Server::start_with(c, agent_trusting(&ca));
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let t = Some(token.as_str());

    // A client that trusts the CA sets and reads a secret over TLS.
    let r = server.call("PUT", "/v1/instances/web/secrets/K", t, Some(&json!({"type": "env", "value": CANARY})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = server.call("GET", "/v1/instances/web/secrets/K/value", t, None);
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some(CANARY)));

    // A client that does not trust it gets no answer, and neither does
    // one that speaks plain HTTP to the TLS port.
    let url = format!("{}/v1/instances/web/secrets/K/value", server.base);
    let untrusting = agent().get(&url).header("Authorization", format!("Bearer {token}")).call();
    assert!(untrusting.is_err(), "{untrusting:?}");
    let plain = agent().get(url.replacen("https://", "http://", 1)).header("Authorization", format!("Bearer {token}")).call();
    let plain = plain.map(|mut r| (r.status(), r.body_mut().read_to_string().unwrap_or_default()));
    assert!(plain.as_ref().is_err() || plain.as_ref().is_ok_and(|(_, body)| !body.contains(CANARY)), "{plain:?}");
    // The server still serves after both.
    assert_eq!(server.call("GET", "/healthz", None, None).status, 200);
    let (status, log) = server.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains(CANARY) && !log.contains(&token), "{log}");

    // Bad certificate or key files stop the server before it listens,
    // with the option named.
    let (_, other_cert, _) = test_ca_and_server_cert();
    let mismatched = path("other.pem", &other_cert);
    let empty = path("empty.pem", "");
    for (cert, key, expect) in [
        (mismatched.as_str(), key_file.as_str(), "--tls-cert/--tls-key"),
        (empty.as_str(), key_file.as_str(), "--tls-cert"),
        (cert_file.as_str(), empty.as_str(), "--tls-key"),
        (cert_file.as_str(), "/nonexistent/key.pem", "--tls-key"),
        (key_file.as_str(), key_file.as_str(), "--tls-cert"),
    ] {
        let o = store.cli(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{cert} {key}: {err}");
        assert!(err.contains(expect) && !err.contains("listening"), "{cert} {key}: {err}");
    }
    // A certificate needs its key, and TLS and --insecure-listen exclude
    // each other.
    for args in [
        &["serve", "--tls-cert", cert_file.as_str()][..],
        &["serve", "--tls-cert", cert_file.as_str(), "--tls-key", key_file.as_str(), "--insecure-listen"][..],
    ] {
        let o = store.cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Every property name in `node`, at any depth, following `$ref`s into the
/// document's schemas; `seen` collects the names of the schemas followed.
fn property_names(doc: &Value, node: &Value, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{target}"));
                let schema = &doc["components"]["schemas"][name];
                assert!(schema.is_object(), "{target} is not in the document");
                if seen.insert(name.to_owned()) {
                    property_names(doc, schema, seen, out);
                }
            }
            if let Some(properties) = map.get("properties").and_then(Value::as_object) {
                out.extend(properties.keys().cloned());
            }
            map.values().for_each(|v| property_names(doc, v, seen, out));
        }
        Value::Array(items) => items.iter().for_each(|v| property_names(doc, v, seen, out)),
        _ => {}
    }
}

/// The schema a `$ref` names, or the node itself.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(target) => &doc["components"]["schemas"][target.strip_prefix("#/components/schemas/").unwrap()],
        None => node,
    }
}

fn names(values: &Value) -> BTreeSet<&str> {
    values.as_array().unwrap_or_else(|| panic!("not an array: {values}")).iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn the_openapi_document_describes_exactly_the_routes_served() {
    let store = Store::new();
    let audit = store.dir.path().join("audit.log");
    let server = store.serve_with(&["--audit-log", audit.to_str().unwrap()], &[]);

    // No token needed; a bad one changes nothing.
    let r = server.call("GET", "/v1/openapi.json", None, None);
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")), "{}", r.text());
    assert_eq!(server.call("GET", "/v1/openapi.json", Some("not-a-token"), None).json(), r.json());
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    // Every `$ref` resolves.
    property_names(&doc, &doc, &mut BTreeSet::new(), &mut BTreeSet::new());

    // The documented (method, path) pairs are exactly the router's.
    let methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            assert!(methods.contains(&method.as_str()), "{path}: {method} is not a method");
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> =
        secrets_host::http::routes().into_iter().map(|(m, p)| (m.as_str().to_owned(), p.to_owned())).collect();
    assert_eq!(documented, served, "documented vs served");

    // And the live server agrees: each documented pair is routed (401
    // exactly where a token is required), every other method on its path
    // is 405; paths next to them are 404.
    for path in paths.keys() {
        let concrete = path.replace("{instance}", "web").replace("{key}", "API_KEY");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let r = server.call(method, &concrete, None, None);
            match doc["paths"][path][method.to_lowercase()].as_object() {
                Some(op) => {
                    let secured = op.get("security") == Some(&json!([{"bearer": []}]));
                    assert_eq!(secured, path.starts_with("/v1/instances"), "{method} {path}: security");
                    assert_eq!(r.status, if secured { 401 } else { 200 }, "{method} {path}: {}", r.text());
                }
                None => assert_eq!(r.status, 405, "{method} {path} is not documented: {}", r.text()),
            }
        }
    }
    for path in ["/v1/openapi", "/v1/instances/web", "/v1/instances/web/secrets/API_KEY/versions", "/v1/instances/web/env/x"] {
        assert_eq!(server.call("GET", path, None, None).status, 404, "{path}");
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((&bearer["type"], &bearer["scheme"]), (&json!("http"), &json!("bearer")), "{bearer}");

    // Every status each route can give; every error with the error body,
    // and the headers that come with some.
    let secured = ["400", "401", "403", "422", "429", "500", "502", "503"];
    let key = "/v1/instances/{instance}/secrets/{key}";
    let expected: Vec<(&str, String, Vec<&str>)> = vec![
        ("get", "/healthz".into(), vec!["200"]),
        ("get", "/readyz".into(), vec!["200", "500", "502", "503"]),
        ("get", "/metrics".into(), vec!["200"]),
        ("get", "/v1/openapi.json".into(), vec!["200"]),
        ("get", "/v1/instances/{instance}/secrets".into(), vec!["200", "404"]),
        ("put", key.into(), vec!["200", "201", "409", "412", "413", "415"]),
        ("get", key.into(), vec!["200", "404"]),
        ("delete", key.into(), vec!["204", "404"]),
        ("get", format!("{key}/value"), vec!["200", "304", "404"]),
        ("post", format!("{key}/rotate"), vec!["200", "404"]),
        ("post", format!("{key}/delete-versions"), vec!["204", "404", "415"]),
        ("post", format!("{key}/undelete"), vec!["204", "404", "409", "415"]),
        ("post", format!("{key}/destroy"), vec!["204", "404", "415"]),
        ("post", format!("{key}/rollback"), vec!["200", "404", "409", "415"]),
        ("get", "/v1/instances".into(), vec!["200"]),
        ("get", "/v1/instances/{instance}/env".into(), vec!["200", "404"]),
        ("get", "/v1/instances/{instance}/mounts".into(), vec!["200", "404"]),
    ];
    assert_eq!(expected.len(), documented.len());
    for (method, path, mut statuses) in expected {
        let op = &doc["paths"][&path][method];
        if path.starts_with("/v1/instances") {
            statuses.extend(secured);
        }
        let listed: BTreeSet<&str> = op["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(listed, statuses.into_iter().collect::<BTreeSet<_>>(), "{method} {path}");
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
            let header = |name: &str| response["headers"].get(name).is_some();
            assert_eq!(header("Retry-After"), status == "429" || status == "503", "{method} {path} {status}: Retry-After");
            let etag = match (method, status.as_str()) {
                ("put", "200" | "201") => true,
                ("post", "200") => path == format!("{key}/rollback"),
                ("get", "200" | "304") => path == key || path == format!("{key}/value"),
                _ => false,
            };
            assert_eq!(header("ETag"), etag, "{method} {path} {status}: ETag");
        }
        // Path parameters: exactly the template's; the query and headers that matter.
        let params: BTreeSet<(&str, &str)> = op["parameters"]
            .as_array()
            .map_or(vec![], |p| p.iter().map(|p| (p["in"].as_str().unwrap(), p["name"].as_str().unwrap())).collect())
            .into_iter()
            .collect();
        let mut wanted: BTreeSet<(&str, &str)> = ["instance", "key"].into_iter().filter(|n| path.contains(&format!("{{{n}}}"))).map(|n| ("path", n)).collect();
        match (method, path.strip_prefix("/v1/instances/{instance}")) {
            ("put", Some("/secrets/{key}")) => wanted.extend([("header", "If-Match"), ("header", "If-None-Match")]),
            ("get", Some("/secrets/{key}/value")) => wanted.extend([("query", "version"), ("header", "If-None-Match")]),
            ("get", Some("/env")) => wanted.extend([("query", "format")]),
            _ => {}
        }
        assert_eq!(params, wanted, "{method} {path}");
    }
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(names(&error["required"]), BTreeSet::from(["errors", "code", "request_id"]));
    let env_params = doc["paths"]["/v1/instances/{instance}/env"]["get"]["parameters"].as_array().unwrap();
    let format = &env_params.iter().find(|p| p["name"] == "format").unwrap()["schema"];
    assert_eq!(names(&resolve(&doc, format)["enum"]), BTreeSet::from(["json", "dotenv"]));

    // The PUT body: {"type","value"} or {"type","value_base64"}, nothing else.
    let put = &doc["paths"][key]["put"];
    let body = resolve(&doc, &put["requestBody"]["content"]["application/json"]["schema"]);
    let shapes: BTreeSet<BTreeSet<&str>> = body["oneOf"].as_array().unwrap().iter().map(|s| names(&s["required"])).collect();
    assert_eq!(shapes, BTreeSet::from([BTreeSet::from(["type", "value"]), BTreeSet::from(["type", "value_base64"])]));
    assert!(body["oneOf"].as_array().unwrap().iter().all(|s| s["additionalProperties"] == json!(false)));
    // The value: JSON with value / value_base64, or the raw bytes.
    let value = &doc["paths"][format!("{key}/value")]["get"]["responses"]["200"]["content"];
    let value_json = resolve(&doc, &value["application/json"]["schema"]);
    assert!(value_json["properties"]["value"].is_object() && value_json["properties"]["value_base64"].is_object(), "{value_json}");
    assert!(value["application/octet-stream"].is_object(), "{value}");

    // Values only where asked for: no schema any other response or request
    // reaches has a field that holds a value; nor does any schema that only
    // /value, /env, /mounts and the PUT body do not reach.
    let value_fields = ["value", "value_base64", "contents_base64"];
    let mut carriers = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if let Some(body) = op.get("requestBody") {
                if (method.as_str(), path.as_str()) == ("put", key) {
                    property_names(&doc, body, &mut carriers, &mut BTreeSet::new());
                } else {
                    // The lifecycle calls take version numbers, never a value.
                    let lifecycle = ["delete-versions", "undelete", "destroy", "rollback"].map(|end| format!("{key}/{end}"));
                    assert!(method == "post" && lifecycle.contains(path), "a request body elsewhere: {method} {path}");
                    let mut fields = BTreeSet::new();
                    property_names(&doc, body, &mut BTreeSet::new(), &mut fields);
                    assert!(value_fields.iter().all(|f| !fields.contains(*f)), "{method} {path} body: {fields:?}");
                }
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                let (mut seen, mut fields) = (BTreeSet::new(), BTreeSet::new());
                property_names(&doc, response, &mut seen, &mut fields);
                if status == "200" && ["/value", "/env", "/mounts"].iter().any(|end| path.ends_with(end)) {
                    carriers.extend(seen);
                } else {
                    assert!(value_fields.iter().all(|f| !fields.contains(*f)), "{method} {path} {status}: {fields:?}");
                }
            }
        }
    }
    assert!(carriers.contains("ValueBody") && carriers.contains("SetBody"), "{carriers:?}");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if !carriers.contains(name) {
            let mut fields = BTreeSet::new();
            property_names(&doc, schema, &mut BTreeSet::new(), &mut fields);
            assert!(value_fields.iter().all(|f| !fields.contains(*f)), "{name}: {fields:?}");
        }
    }

    // Not audited, unlike the 401s above.
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    let lines = audit_lines(&audit);
    assert!(lines.iter().any(|l| l["status"] == 401), "{lines:#?}");
    assert!(lines.iter().all(|l| l["route"] != "/v1/openapi.json"), "{lines:#?}");
}
