//! What the tests of the cloud backends (`awssm`, `gcpsm`) share: limit
//! checks, the killed-lock-holder test, and small local HTTP fakes for what
//! the emulators cannot do (throttle, refuse credentials, issue tokens).
//! The fakes stand in only for those answers; everything else goes to the
//! real emulator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrets_host::{Access, Backend, Scope, SecretType, SetRequest, VaultError};

use crate::conformance::unique;

/// 64 KiB fits; one byte more is refused when it is buffered, with
/// nothing written; the empty value round-trips.
pub fn limits_are_enforced_by_the_backend(backend: Arc<dyn Backend>) {
    let key = format!("t/{}/limit", unique("k").replace('-', ""));
    let mut t = backend.begin(Access::Write, "limits").unwrap();
    t.store(&key, &vec![7u8; 65536]).unwrap();
    let err = t.store(&format!("{key}2"), &vec![7u8; 65537]).unwrap_err();
    assert!(matches!(err, VaultError::Rejected(ref m) if m.contains("65536")), "{err:?}");
    t.commit().unwrap();
    let mut r = backend.begin(Access::Read, "limits").unwrap();
    assert_eq!(r.retrieve(&key).unwrap().map(|v| v.len()), Some(65536));
    assert_eq!(r.retrieve(&format!("{key}2")).unwrap(), None, "nothing stored");
}

/// The requests `backend` sends (as `requests` counts them) for: a set of
/// a new key, a set of an existing key, get, list, and inject with one env
/// key. Printed, for the README's table.
pub fn requests_per_call(backend: Arc<dyn Backend>, requests: &dyn Fn() -> u64) -> (u64, u64, u64, u64, u64) {
    let s = crate::common::service(backend);
    let scope = Scope::tenant(&unique("req")).unwrap();
    let count = |f: &dyn Fn()| {
        let before = requests();
        f();
        requests() - before
    };
    let new_key = count(&|| drop(s.set(&scope, SetRequest::new("web", "A", SecretType::Env, "1")).unwrap()));
    let existing = count(&|| drop(s.set(&scope, SetRequest::new("web", "A", SecretType::Env, "2")).unwrap()));
    let get = count(&|| drop(s.get(&scope, "web", "A").unwrap()));
    let list = count(&|| drop(s.list(&scope, "web").unwrap()));
    let inject = count(&|| drop(s.inject(&scope, "web").unwrap()));
    eprintln!("requests: set of a new key {new_key}, of an existing key {existing}, get {get}, list {list}, inject {inject}");
    (new_key, existing, get, list, inject)
}

/// Makes a backend whose requests go to the given endpoint URL.
pub type Connect<'a> = dyn Fn(&str) -> Result<Arc<dyn Backend>, VaultError> + 'a;

/// Behind a fake that throttles (ThrottlingException, HTTP 429) three
/// times before passing requests on to the emulator at `endpoint`, a
/// backend made by `connect` (given the fake's URL) backs off and is
/// served; behind one that always throttles it fails "unavailable" after
/// 6 attempts, its message containing `needle`, within a bound.
pub fn throttling_is_retried_with_backoff_and_a_bound(
    endpoint: &str,
    needle: &str,
    connect: &Connect<'_>,
) {
    let fake = Throttler::start(endpoint, 3);
    let started = Instant::now();
    let b = connect(&fake.url()).unwrap();
    assert_eq!(fake.throttled(), 3, "the connection check was throttled three times, then served");
    assert!(started.elapsed() >= Duration::from_millis(150), "it backed off");
    let s = crate::common::service(b);
    let scope = Scope::tenant(&unique("throttle")).unwrap();
    s.set(&scope, SetRequest::new("web", "K", SecretType::Env, "v")).unwrap();
    let fake = Throttler::start(endpoint, u32::MAX);
    let started = Instant::now();
    let err = connect(&fake.url()).expect_err("always throttled: refused");
    assert!(matches!(err, VaultError::Unavailable(ref m) if m.contains(needle) && m.contains("6 attempts")), "{err:?}");
    assert_eq!(fake.throttled(), 6);
    assert!(started.elapsed() < Duration::from_secs(30), "bounded: {:?}", started.elapsed());
}

const HOLDER_ENV: &str = "SECRETS_TEST_LOCK_HOLDER";

/// Starts this test binary's `<label>_lock_holder_process` as a child that
/// takes the write lock of a scope with a 2 s lease and then waits; kills
/// it with SIGKILL; a writer of another backend (as another process would
/// be) gets the lock once the lease has run out on its own clock, not
/// before, and within a generous bound.
pub fn killed_holder_is_taken_over(_url: &str, label: &str, make: impl Fn(&str, Duration) -> Arc<dyn Backend>) {
    let prefix = unique("kill").replace('-', "");
    let scope = "t/6b696c6c/i/776562";
    let ttl = Duration::from_secs(2);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("{label}::{label}_lock_holder_process"), "--ignored", "--nocapture", "--test-threads=1"])
        .env(HOLDER_ENV, format!("{prefix}|{scope}|{}", ttl.as_millis()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        match lines.next() {
            Some(Ok(line)) if line.trim_end().ends_with("locked") => break,
            Some(Ok(_)) => continue,
            other => panic!("the holder exited before taking the lock: {other:?} {:?}", child.wait()),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let backend = make(&prefix, ttl);
    let started = Instant::now();
    let mut t = backend.begin(Access::Write, scope).expect("the stale lock is taken over");
    let waited = started.elapsed();
    // The waiter's clock starts when it first sees the lock: a whole lease
    // of waiting proves the killed holder's lock was there, and was not
    // taken over sooner.
    assert!(waited >= ttl, "taken over only after its lease: {waited:?}");
    assert!(waited < ttl * 10, "taken over within a bound: {waited:?}");
    t.store("t/6b696c6c/after", b"x").unwrap();
    t.commit().unwrap();
    assert_eq!(backend.begin(Access::Read, scope).unwrap().retrieve("t/6b696c6c/after").unwrap(), Some(b"x".to_vec()));
    eprintln!("{label}: a killed holder's lock (lease {ttl:?}) was taken over {waited:?} after the waiter started");
}

/// The child of [`killed_holder_is_taken_over`].
pub fn lock_holder_process(label: &str, make: impl Fn(&str, Duration) -> Arc<dyn Backend>) {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        eprintln!("{label}_lock_holder_process is a helper of the killed-holder test; alone it does nothing");
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [prefix, scope, ttl_ms] = parts[..] else { panic!("bad {HOLDER_ENV}: {spec}") };
    let backend = make(prefix, Duration::from_millis(ttl_ms.parse().unwrap()));
    let t = backend.begin(Access::Write, scope).unwrap();
    println!("locked");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(t);
}

/// One HTTP/1.1 request read from `stream`: head and body.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Answers the first `n` requests as throttled (HTTP 429, or AWS's
/// `ThrottlingException` for requests with an `X-Amz-Target`), then
/// forwards every connection to `upstream` byte for byte.
pub struct Throttler {
    port: u16,
    throttled: Arc<AtomicU32>,
}

impl Throttler {
    pub fn start(upstream: &str, n: u32) -> Throttler {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttled = Arc::new(AtomicU32::new(0));
        let count = throttled.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let Some((head, body)) = read_request(&mut client) else { continue };
                if count.load(Ordering::SeqCst) < n {
                    count.fetch_add(1, Ordering::SeqCst);
                    if head.to_ascii_lowercase().contains("x-amz-target:") {
                        let json = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                        respond(&mut client, 400, "application/x-amz-json-1.1", json);
                    } else {
                        let json = r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
                        respond(&mut client, 429, "application/json", json);
                    }
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(&upstream) else { continue };
                // Forward this request, then pipe both ways.
                let _ = server.write_all(head.as_bytes());
                let _ = server.write_all(b"\r\n");
                let _ = server.write_all(&body);
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut server);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Throttler { port, throttled }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests answered as throttled so far.
    pub fn throttled(&self) -> u32 {
        self.throttled.load(Ordering::SeqCst)
    }
}

/// Answers every request with `status` and a cloud-shaped error; keeps the
/// request heads.
pub struct Refuser {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Refuser {
    pub fn start(status: u16) -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let Some((head, _)) = read_request(&mut client) else { continue };
                let aws = head.to_ascii_lowercase().contains("x-amz-target:");
                seen.lock().unwrap().push(head);
                if aws {
                    let json = r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#;
                    respond(&mut client, status, "application/x-amz-json-1.1", json);
                } else {
                    let json = format!(r#"{{"error":{{"code":{status},"message":"denied","status":"PERMISSION_DENIED"}}}}"#);
                    respond(&mut client, status, "application/json", &json);
                }
            }
        });
        Refuser { port, heads }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether a request carried header `name` (lower case) with `value`.
    pub fn saw_header(&self, name: &str, value: &str) -> bool {
        self.heads.lock().unwrap().iter().any(|h| {
            h.lines().any(|l| l.split_once(':').is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value))
        })
    }

    /// Every request head received.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// An OAuth token endpoint: answers a JWT-bearer grant with `token`, keeps
/// the assertion.
pub struct TokenServer {
    port: u16,
    assertion: Arc<Mutex<String>>,
}

impl TokenServer {
    pub fn start(token: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let assertion = Arc::new(Mutex::new(String::new()));
        let kept = assertion.clone();
        let reply = format!(r#"{{"access_token":"{token}","expires_in":3600,"token_type":"Bearer"}}"#);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let Some((_, body)) = read_request(&mut client) else { continue };
                let form = String::from_utf8_lossy(&body).into_owned();
                let grant = form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
                if let Some(a) = form.split('&').find_map(|p| p.strip_prefix("assertion=")) {
                    *kept.lock().unwrap() = a.to_owned();
                }
                if grant { respond(&mut client, 200, "application/json", &reply) } else { respond(&mut client, 400, "application/json", "{}") }
            }
        });
        TokenServer { port, assertion }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn assertion(&self) -> String {
        self.assertion.lock().unwrap().clone()
    }
}

/// The claims of a JWT (unverified: the test checks what was sent).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    serde_json::from_slice(&claims).unwrap()
}
