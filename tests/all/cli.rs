//! End-to-end tests of the `secrets` binary, run as a user would: a real
//! SQLite store in a temporary directory, values through stdin, output read
//! back by bash.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_secrets");

/// One compiled-component cache for the whole test process.
fn cache_home() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

/// A fresh store (its own data directory) and a way to run the CLI on it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data/secrets/secrets.db")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CACHE_HOME", cache_home())
            .env("XDG_RUNTIME_DIR", self.dir.path());
        c
    }

    /// Gives `c` exactly the environment the CLI runs with here, for
    /// commands that start it in turn (a shell, `unshare`).
    fn environment(&self, c: &mut Command) {
        c.env_clear();
        for (k, v) in self.cmd(&[]).get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self.cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let o = self.run(args, stdin);
        assert!(o.status.success(), "{args:?}: {:?}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        o.stdout
    }

    fn ok_text(&self, args: &[&str], stdin: &[u8]) -> String {
        String::from_utf8(self.ok(args, stdin)).unwrap()
    }

    fn fails(&self, args: &[&str], stdin: &[u8], code: i32) -> String {
        let o = self.run(args, stdin);
        assert_eq!(o.status.code(), Some(code), "{args:?}: stdout {:?} stderr {}", o.stdout, String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(o.stdout.is_empty(), "errors go to stderr only");
        err
    }
}

#[test]
fn first_use_creates_the_store_and_a_private_key_file() {
    let env = Env::new();
    assert_eq!(env.ok_text(&["set", "web", "DB_URL", "--type", "env"], b"postgres://db"), "DB_URL v1 (env)\n");
    assert!(env.db().exists());
    let key_file = PathBuf::from(format!("{}.key", env.db().display()));
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn binary_values_round_trip_through_stdin_and_files() {
    let env = Env::new();
    let all: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    env.ok(&["set", "web", "blob.bin", "--type", "file"], &all);
    assert_eq!(env.ok(&["get", "web", "blob.bin"], b""), all);
    let path = env.dir.path().join("value");
    std::fs::write(&path, b"from a file\n\0end").unwrap();
    env.ok(&["set", "web", "blob.bin", "--type", "file", "--from-file", path.to_str().unwrap()], b"ignored");
    assert_eq!(env.ok(&["get", "web", "blob.bin"], b""), b"from a file\n\0end");
    assert_eq!(env.ok(&["get", "web", "blob.bin", "--version", "1"], b""), all);
}

#[test]
fn versions_and_check_and_set() {
    let env = Env::new();
    for (i, v) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(env.ok_text(&["set", "web", "K", "--type", "env"], v.as_bytes()), format!("K v{} (env)\n", i + 1));
    }
    assert_eq!(env.ok(&["get", "web", "K", "--version", "2"], b""), b"b");
    let versions: serde_json::Value = serde_json::from_slice(&env.ok(&["versions", "web", "K", "--json"], b"")).unwrap();
    let numbers: Vec<u64> = versions.as_array().unwrap().iter().map(|m| m["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let err = env.fails(&["set", "web", "K", "--type", "env", "--if-version", "2"], b"d", 4);
    assert!(err.starts_with("error: ") && err.contains("version 3"), "{err}");
    assert_eq!(env.ok_text(&["set", "web", "K", "--type", "env", "--if-version", "3"], b"d"), "K v4 (env)\n");
    env.fails(&["set", "web", "NEW", "--type", "env", "--if-version", "1"], b"x", 4);
    env.ok(&["set", "web", "NEW", "--type", "env", "--if-version", "0"], b"x");
}

#[test]
fn errors_are_one_line_with_documented_exit_codes() {
    let env = Env::new();
    let err = env.fails(&["get", "web", "MISSING"], b"", 3);
    assert_eq!(err, "error: secret \"MISSING\" in instance \"web\" not found\n");
    let err = env.fails(&["set", "web", "1BAD", "--type", "env"], b"v", 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("key \"1BAD\" is not a valid environment variable name (env keys match [A-Za-z_][A-Za-z0-9_]*)"), "{err}");
    // Usage errors, including a value passed as an argument.
    env.fails(&["set", "web", "K", "--type", "env", "the-value"], b"", 2);
    env.fails(&["set", "web", "K"], b"", 2);
    env.fails(&["frobnicate"], b"", 2);
    let err = env.fails(&["--store", "mysql://x", "list", "web"], b"", 1);
    assert!(err.contains("unknown store URL"), "{err}");
    env.fails(&["delete", "web", "MISSING"], b"", 3);
    let big = vec![b'x'; 65537];
    let err = env.fails(&["set", "web", "big", "--type", "file"], &big, 1);
    assert!(err.contains("65536"), "{err}");
}

#[test]
fn list_versions_and_inject_json_never_print_non_env_values() {
    let env = Env::new();
    let canary = "canary-8c1f-must-not-print";
    env.ok(&["set", "web", "API_TOKEN", "--type", "env"], b"env-value");
    env.ok(&["set", "web", "notes.txt", "--type", "file"], canary.as_bytes());
    let reg = format!(r#"{{"auths":{{"ghcr.io":{{"username":"u","password":"{canary}"}}}}}}"#);
    env.ok(&["set", "web", "ghcr", "--type", "registry"], reg.as_bytes());
    let mut outputs = vec![
        env.ok_text(&["list", "web"], b""),
        env.ok_text(&["list", "web", "--json"], b""),
        env.ok_text(&["versions", "web", "notes.txt"], b""),
        env.ok_text(&["versions", "web", "ghcr", "--json"], b""),
    ];
    for format in ["json", "dotenv", "shell"] {
        outputs.push(env.ok_text(&["inject", "web", "--format", format], b""));
    }
    for o in &outputs {
        assert!(!o.contains(canary), "{o}");
    }
    let list = &outputs[0];
    assert!(list.starts_with("KEY"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("notes.txt") && l.contains(" file ") && l.contains(&format!(" {} ", canary.len())) && l.ends_with(" live")), "{list}");
    let json: serde_json::Value = serde_json::from_str(&outputs[1]).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert!(outputs[4].contains("env-value"), "inject prints env values by design");
}

/// Soft delete, undelete, destroy and rollback from the command line, and
/// `versions` showing each version's state.
#[test]
fn version_lifecycle_commands() {
    let env = Env::new();
    for v in [b"one".as_slice(), b"two", b"three"] {
        env.ok(&["set", "web", "DB", "--type", "env"], v);
    }
    env.ok(&["set", "api", "K", "--type", "env"], b"k");
    assert_eq!(env.ok_text(&["instances"], b""), "api\nweb\n");
    assert_eq!(env.ok_text(&["instances", "--json"], b"").split_whitespace().collect::<String>(), r#"["api","web"]"#);

    // Soft-deleting the current version: get is not found (3), inject
    // leaves it out, versions shows it deleted.
    assert_eq!(env.ok_text(&["delete", "web", "DB", "--versions", "3"], b""), "deleted versions 3 of DB (undelete brings them back)\n");
    env.fails(&["get", "web", "DB"], b"", 3);
    assert_eq!(env.ok_text(&["inject", "web"], b""), "");
    let versions = env.ok_text(&["versions", "web", "DB"], b"");
    assert!(versions.lines().nth(3).is_some_and(|l| l.starts_with("DB") && l.contains(" deleted 20")), "{versions}");
    env.ok(&["undelete", "web", "DB", "--versions", "3"], b"");
    assert_eq!(env.ok(&["get", "web", "DB"], b""), b"three");

    // Destroy: gone for good; undelete and rollback of it are conflicts (4).
    assert_eq!(env.ok_text(&["destroy", "web", "DB", "--versions", "1"], b""), "destroyed versions 1 of DB\n");
    env.fails(&["get", "web", "DB", "--version", "1"], b"", 3);
    let err = env.fails(&["undelete", "web", "DB", "--versions", "1"], b"", 4);
    assert!(err.contains("destroyed"), "{err}");
    env.fails(&["rollback", "web", "DB", "1"], b"", 4);
    let json: serde_json::Value = serde_json::from_str(&env.ok_text(&["versions", "web", "DB", "--json"], b"")).unwrap();
    assert_eq!(json[0]["destroyed"], true);
    assert!(json[1].get("destroyed").is_none() && json[1].get("deleted_at").is_none(), "{json}");

    // Rollback: version 2's value as version 4.
    assert_eq!(env.ok_text(&["rollback", "web", "DB", "2"], b""), "DB v4 (env), the value of v2\n");
    assert_eq!(env.ok(&["get", "web", "DB"], b""), b"two");
    // Unknown versions are not found; a bad list is a usage error.
    env.fails(&["delete", "web", "DB", "--versions", "9"], b"", 3);
    env.fails(&["delete", "web", "DB", "--versions", "x"], b"", 2);
    env.fails(&["destroy", "web", "DB"], b"", 2);

    // The purge still removes the key, and the instance once it is empty.
    env.ok(&["delete", "web", "DB"], b"");
    assert_eq!(env.ok_text(&["instances"], b""), "api\n");
}

const TRICKY: &str = "it's \"quoted\" $HOME `date` \\n # not a comment\nsecond line\ttab\n";

fn tricky_env() -> Env {
    let env = Env::new();
    env.ok(&["set", "web", "TRICKY", "--type", "env"], TRICKY.as_bytes());
    env.ok(&["set", "web", "PLAIN", "--type", "env"], b"plain");
    env.ok(&["set", "web", "EMPTY", "--type", "env", "--allow-empty"], b"");
    env
}

fn bash(script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("bash")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn dotenv_output_is_read_back_byte_exact_by_bash() {
    let env = tricky_env();
    let dotenv = env.ok(&["inject", "web", "--format", "dotenv"], b"");
    let got = bash(r#"set -a; source /dev/stdin; printf '%s|%s|%s' "$TRICKY" "$PLAIN" "${EMPTY-unset}""#, &dotenv);
    assert_eq!(String::from_utf8(got).unwrap(), format!("{TRICKY}|plain|"));
}

#[test]
fn shell_output_is_eval_safe_and_byte_exact() {
    let env = tricky_env();
    let shell = env.ok(&["inject", "web", "--format", "shell"], b"");
    let got = bash(r#"eval "$(cat)"; printf '%s|%s' "$TRICKY" "$PLAIN""#, &shell);
    assert_eq!(String::from_utf8(got).unwrap(), format!("{TRICKY}|plain"));
}

#[test]
fn json_output_parses_to_the_same_values() {
    let env = tricky_env();
    let json: serde_json::Value = serde_json::from_slice(&env.ok(&["inject", "web", "--format", "json"], b"")).unwrap();
    assert_eq!(json["TRICKY"], TRICKY);
    assert_eq!(json["PLAIN"], "plain");
    assert_eq!(json.as_object().unwrap().len(), 3);
}

#[test]
fn run_passes_env_and_files_then_cleans_up_and_returns_the_exit_code() {
    let env = Env::new();
    env.ok(&["set", "web", "GREETING", "--type", "env"], b"hello $USER");
    env.ok(&["set", "web", "app.conf", "--type", "file"], b"x=1\n");
    env.ok(&["set", "web", "ghcr", "--type", "registry"], br#"{"auths":{"ghcr.io":{"auth":"dTpw"}}}"#);
    let script = r#"printf '%s\n' "$GREETING"; cat "$SECRETS_DIR/app.conf"; stat -c '%a' "$SECRETS_DIR" "$SECRETS_DIR/app.conf";
                    test -f "$DOCKER_CONFIG/config.json" && echo docker; echo "$SECRETS_DIR" > "$HOME/dir"; exit 7"#;
    let o = env.run(&["run", "web", "--", "bash", "-c", script], b"");
    assert_eq!(o.status.code(), Some(7), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "hello $USER\nx=1\n700\n400\ndocker\n");
    let dir = std::fs::read_to_string(env.dir.path().join("dir")).unwrap();
    assert!(!Path::new(dir.trim()).exists(), "the mount directory is removed");
    assert!(dir.starts_with(env.dir.path().to_str().unwrap()), "under XDG_RUNTIME_DIR: {dir}");
}

#[test]
fn run_cleans_up_when_the_child_is_killed_by_a_signal() {
    let env = Env::new();
    env.ok(&["set", "web", "f", "--type", "file"], b"x");
    let mount = env.dir.path().join("mnt");
    let o = env.run(&["run", "web", "--mount-dir", mount.to_str().unwrap(), "--", "bash", "-c", "test -f \"$SECRETS_DIR/f\" && kill -KILL $$"], b"");
    assert_eq!(o.status.code(), Some(128 + 9));
    assert!(!mount.exists());
}

#[test]
fn run_forwards_sigterm_to_the_child_and_cleans_up() {
    let env = Env::new();
    env.ok(&["set", "web", "f", "--type", "file"], b"x");
    let mount = env.dir.path().join("mnt");
    let marker = env.dir.path().join("got-term");
    let script = format!("trap 'echo term > {}; exit 5' TERM; touch {}/ready; while true; do sleep 0.05; done", marker.display(), env.dir.path().display());
    let mut child = env
        .cmd(&["run", "web", "--mount-dir", mount.to_str().unwrap(), "--", "bash", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.dir.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "child never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(mount.join("f").exists());
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code, reason = "kill(2) of our own child")]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM)
    };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "the child's own exit code");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "term\n");
    assert!(!mount.exists());
}

#[test]
fn two_processes_share_one_store_without_losing_versions() {
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"0");
    let script = |n: usize| format!("for i in $(seq 1 {n}); do printf v | {BIN} set web K --type env >/dev/null || exit 1; done");
    let writer = || {
        let vars = env.cmd(&[]).get_envs().map(|(k, v)| (k.to_owned(), v.unwrap().to_owned())).collect::<Vec<_>>();
        Command::new("bash").args(["-c", &script(15)]).env_clear().envs(vars).spawn().unwrap()
    };
    let (mut a, mut b) = (writer(), writer());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let versions: serde_json::Value = serde_json::from_slice(&env.ok(&["versions", "web", "K", "--json"], b"")).unwrap();
    let numbers: Vec<u64> = versions.as_array().unwrap().iter().map(|m| m["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=31).collect::<Vec<u64>>());
}

#[test]
fn tenants_are_separate_and_rotate_reports_counts() {
    let env = Env::new();
    env.ok(&["--tenant", "a", "set", "web", "K", "--type", "env"], b"a-value");
    env.ok(&["--tenant", "a", "set", "web", "K", "--type", "env"], b"a-value2");
    env.fails(&["--tenant", "b", "get", "web", "K"], b"", 3);
    assert_eq!(env.ok_text(&["--tenant", "a", "rotate", "web", "K"], b""), "K: re-encrypted 2 versions\n");
    env.ok(&["--tenant", "a", "set", "web", "L", "--type", "file"], b"l");
    assert_eq!(env.ok_text(&["--tenant", "a", "rotate", "web", "--all"], b""), "K: re-encrypted 2 versions\nL: re-encrypted 1 version\n");
    env.fails(&["--tenant", "a", "rotate", "web"], b"", 2);
    assert_eq!(env.ok_text(&["--tenant", "a", "delete", "web", "K"], b""), "deleted K\n");
    env.fails(&["--tenant", "a", "get", "web", "K"], b"", 3);
}

#[test]
fn keyring_add_then_rotate_all_keeps_everything_readable() {
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"v1");
    let out = env.ok_text(&["keyring", "add"], b"");
    assert!(out.starts_with("added master key generation 2"), "{out}");
    assert_eq!(env.ok(&["get", "web", "K"], b""), b"v1");
    let out = env.ok_text(&["keyring", "rotate-all"], b"");
    assert!(out.starts_with("re-encrypted "), "{out}");
    assert_eq!(env.ok(&["get", "web", "K"], b""), b"v1");
}

#[test]
fn a_warm_start_loads_the_cached_component() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    // A cache of its own: other tests' processes, started before the shared
    // cache existed, may still rename their freshly compiled file into it.
    let cache = env.dir.path().join("cache");
    let run = |args: &[&str]| env.cmd(args).env("XDG_CACHE_HOME", &cache).stdin(Stdio::null()).output().unwrap();
    let o = env.cmd(&["set", "web", "K", "--type", "env"]).env("XDG_CACHE_HOME", &cache).stdin(Stdio::piped()).spawn().unwrap();
    let o = {
        let mut o = o;
        o.stdin.take().unwrap().write_all(b"v").unwrap();
        o.wait_with_output().unwrap()
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let snapshot = || {
        let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(cache.join("secrets"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .map(|e| (e.path(), e.metadata().unwrap().ino()))
            .collect();
        files.sort();
        files
    };
    let before = snapshot();
    assert_eq!(before.len(), 1, "one compiled component is cached: {before:?}");
    let o = run(&["get", "web", "K"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    // A miss would compile again and rename a new file into place.
    assert_eq!(snapshot(), before, "the cached file was loaded, not rewritten");
}

#[test]
fn run_does_not_hand_the_store_credentials_to_the_child() {
    let env = Env::new();
    let store = format!("sqlite:{}", env.db().display());
    let with_creds = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("SECRETS_MASTER_KEY", "11".repeat(32)).env("SECRETS_STORE", &store).env("BAO_TOKEN", "bao-root").env("VAULT_TOKEN", "vault-root");
        c
    };
    let mut set = with_creds(&["set", "web", "A", "--type", "env"]).stdin(Stdio::piped()).spawn().unwrap();
    set.stdin.take().unwrap().write_all(b"a-value").unwrap();
    assert!(set.wait().unwrap().success());
    let script = r#"printf '%s|%s|%s|%s|%s' "$A" "${SECRETS_MASTER_KEY-unset}" "${SECRETS_STORE-unset}" "${BAO_TOKEN-unset}" "${VAULT_TOKEN-unset}""#;
    let o = with_creds(&["run", "web", "--", "bash", "-c", script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "a-value|unset|unset|unset|unset");
}

#[test]
fn an_existing_mount_dir_must_be_private_and_is_left_as_it_was() {
    let env = Env::new();
    env.ok(&["set", "web", "ghcr", "--type", "registry"], br#"{"auths":{"ghcr.io":{"auth":"dTpw"}}}"#);
    let mount = env.dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = env.fails(&["run", "web", "--mount-dir", mount.to_str().unwrap(), "--", "true"], b"", 1);
    assert!(err.contains("private"), "{err}");
    std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = env.run(&["run", "web", "--mount-dir", mount.to_str().unwrap(), "--", "test", "-f", &format!("{}/.docker/config.json", mount.display())], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(mount.exists(), "a directory we did not create stays");
    assert_eq!(std::fs::read_dir(&mount).unwrap().count(), 0, "but everything we made in it is gone");
}

/// An unreachable store is its own exit code (5: try again later), with
/// one line naming the store, never its password.
#[test]
fn an_unavailable_store_exits_5() {
    let env = Env::new();
    let port = {
        // A port nothing listens on: bound, then released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = format!("postgres://app:hunter2@127.0.0.1:{port}/db?connect_timeout=5");
    let o = env
        .cmd(&["--store", &store, "list", "web"])
        .env("SECRETS_MASTER_KEY", "11".repeat(32))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: vault: storage unavailable:") && err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A store that answers but refuses (a bad URL) is not "try again".
    env.fails(&["--store", "postgres://h/db?pool_size=0", "list", "web"], b"", 1);
}

// ---------------------------------------------------------------------------
// Found by adversarial testing (each failed before its fix).

/// A same-user child cannot read the store's credentials out of `run`'s
/// own process: they are scrubbed from its environment block, and the
/// process is non-dumpable (its /proc files are not the user's).
#[test]
fn run_scrubs_the_store_credentials_from_its_own_environment() {
    let env = Env::new();
    let master = "ab".repeat(32);
    let with_creds = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("SECRETS_MASTER_KEY", &master).env("BAO_TOKEN", "bao-token-canary");
        c
    };
    let mut set = with_creds(&["set", "web", "A", "--type", "env"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    set.stdin.take().unwrap().write_all(b"a-value").unwrap();
    assert!(set.wait().unwrap().success());
    // Root reads /proc/PID/environ of a non-dumpable process too: what it
    // finds there must be scrubbed.
    let script = r#"tr '\0' '\n' < /proc/$PPID/environ; echo "A=$A""#;
    let o = with_creds(&["run", "web", "--", "sh", "-c", script]).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("A=a-value"), "the child ran: {out}");
    assert!(!out.contains(&master) && !out.contains("bao-token-canary"), "credentials in the parent's environ:\n{out}");
}

/// Run as an unprivileged user (when the tests run as root and setpriv is
/// there): the child cannot even open the parent's /proc/PID/environ.
#[test]
fn run_is_non_dumpable_for_an_unprivileged_user() {
    if secrets_host::cache::effective_uid() != 0 || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("needs root and setpriv to switch to an unprivileged user; not checked");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let script = r#"if cat /proc/$PPID/environ >/dev/null 2>&1; then echo readable; else echo denied; fi"#;
    let o = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .args(["--store", "memory:", "run", "web", "--", "sh", "-c", script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env("BAO_TOKEN", "bao-token-canary")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "denied", "{err}");
}

/// `--help` never prints the store URL's password from SECRETS_STORE.
#[test]
fn help_hides_the_store_url() {
    let env = Env::new();
    let o = env.cmd(&["set", "--help"]).env("SECRETS_STORE", "postgres://app:Hunter2@db/app").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("--store"), "{text}");
    assert!(!text.contains("Hunter2") && !text.contains("postgres://app"), "{text}");
}

/// `keyring add` never creates a key file beside an existing store.
#[test]
fn keyring_add_refuses_a_missing_key_file() {
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"v");
    let key_file = PathBuf::from(format!("{}.key", env.db().display()));
    std::fs::remove_file(&key_file).unwrap();
    let err = env.fails(&["keyring", "add"], b"", 1);
    assert!(err.contains("does not exist") && err.contains(&key_file.display().to_string()), "{err}");
    assert!(!key_file.exists(), "no new key file");
}

/// With neither HOME nor XDG_DATA_HOME the default store has no place:
/// refused, naming what to set, with nothing created in the working
/// directory.
#[test]
fn no_home_means_no_default_store() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["list", "web"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("XDG_DATA_HOME") && err.contains("HOME") && err.contains("--store"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created in the working directory");
}

/// A device, a FIFO or a directory is refused as a SQLite store before
/// anything is created beside it.
#[test]
fn sqlite_store_must_be_a_regular_file() {
    let env = Env::new();
    let fifo = env.dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let dir = env.dir.path().join("a-dir");
    std::fs::create_dir(&dir).unwrap();
    for (path, kind) in [(Path::new("/dev/null"), "a device"), (fifo.as_path(), "a FIFO"), (dir.as_path(), "a directory")] {
        let store = format!("sqlite:{}", path.display());
        let err = env.fails(&["--store", &store, "list", "web"], b"", 1);
        assert!(err.contains(kind) && err.contains("regular file"), "{store}: {err}");
        for suffix in [".key", "-journal", "-wal", "-shm"] {
            let beside = PathBuf::from(format!("{}{suffix}", path.display()));
            assert!(!beside.exists(), "{} was created", beside.display());
        }
    }
}

/// A SECRETS_MASTER_KEY that is not text is refused, not ignored (which
/// used to create a key file instead).
#[test]
fn a_master_key_that_is_not_text_is_refused() {
    use std::os::unix::ffi::OsStringExt;
    let env = Env::new();
    let key = std::ffi::OsString::from_vec(vec![0xff; 64]);
    let o = env.cmd(&["list", "web"]).env("SECRETS_MASTER_KEY", key).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("SECRETS_MASTER_KEY") && err.contains("not text"), "{err}");
    assert!(!env.db().exists() && !PathBuf::from(format!("{}.key", env.db().display())).exists());
}

/// Spawns `set` with a stdin that stays open and never delivers a value:
/// the call must end on its own (it checks before reading).
fn set_without_reading(env: &Env, args: &[&str]) -> Output {
    let mut child = env.cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} waited for a value it would refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `set` checks the arguments and the key's state before reading the
/// value, and never repeats a value given on the command line.
#[test]
fn set_checks_before_reading_and_never_echoes_a_value_argument() {
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"v1");
    for (args, code, needle) in [
        (&["set", "web", "1BAD", "--type", "env"][..], 1, "not a valid environment variable name"),
        (&["set", "web", "K", "--type", "file"], 4, "holds a env secret"),
        (&["set", "web", "K", "--type", "env", "--if-version", "7"], 4, "at version 1"),
        (&["set", "web", "NEW", "--type", "env", "--if-version", "1"], 4, "at version 0"),
        (&["set", "bad/instance", "K", "--type", "env"], 1, "instance id"),
    ] {
        let o = set_without_reading(&env, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    for args in [
        &["set", "web-1", "API_KEY=sk_live_x", "--type", "env"][..],
        &["set", "web-1", "API_KEY", "--type", "env", "sk_live_x"],
        &["set", "web-1", "API_KEY", "sk_live_x", "--type", "env"],
        &["set", "web-1", "API_KEY", "--type", "env", "-sk_live_x"],
        &["set", "web-1", "API_KEY", "--type", "env", "--sk_live_x"],
    ] {
        let o = set_without_reading(&env, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("not stored") && !err.contains("sk_live_x"), "{args:?}: {err}");
    }
    assert_eq!(env.ok(&["get", "web", "K"], b""), b"v1", "nothing was stored");
}

/// An empty or closed stdin stores nothing unless --allow-empty says so.
#[test]
fn an_empty_value_needs_allow_empty() {
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"v1");
    let err = env.fails(&["set", "web", "K", "--type", "env"], b"", 1);
    assert!(err.contains("empty") && err.contains("--allow-empty"), "{err}");
    assert_eq!(env.ok(&["get", "web", "K"], b""), b"v1", "the current version is untouched");
    assert_eq!(env.ok_text(&["set", "web", "K", "--type", "env", "--allow-empty"], b""), "K v2 (env)\n");
    assert_eq!(env.ok(&["get", "web", "K"], b""), b"");
}

/// `rotate --all` is one call: keys deleted and added meanwhile cannot
/// stop it half-way with "not found".
#[test]
fn rotate_all_is_not_stopped_by_a_concurrent_delete() {
    let env = Env::new();
    for key in ["A", "B", "C"] {
        env.ok(&["set", "web", key, "--type", "env"], b"v");
    }
    // The other writer runs in this process on the same file, so it sets
    // and deletes far faster than a CLI process starts.
    use secrets_host::backends::{StoreConfig, sqlite::SqliteBackend};
    use secrets_host::{Scope, SecretType, SetRequest};
    let StoreConfig::Sqlite(config) = StoreConfig::parse(&format!("sqlite:{}", env.db().display())).unwrap() else {
        unreachable!()
    };
    let other = crate::common::service(std::sync::Arc::new(SqliteBackend::from_config(&config).unwrap()));
    let scope = Scope::tenant("default").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("K{}", i % 8);
                other.set(&scope, SetRequest::new("web", &key, SecretType::Env, "v")).unwrap();
                other.delete(&scope, "web", &key).unwrap();
                // A gap for the CLI: SQLite's busy handler does not queue
                // writers fairly, and a tight loop would starve it.
                std::thread::sleep(Duration::from_millis(3));
                i += 1;
            }
        });
        for _ in 0..12 {
            let o = env.run(&["rotate", "web", "--all"], b"");
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if !o.status.success() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("rotate --all failed: {err}");
            }
            let out = String::from_utf8(o.stdout).unwrap();
            assert!(["A:", "B:", "C:"].iter().all(|k| out.contains(k)), "{out}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// `run` details: a relative --mount-dir becomes an absolute SECRETS_DIR;
/// directories left by a SIGKILLed `run` are removed by the next one; an
/// empty instance is warned about (as by inject); an environment over the
/// kernel's limit is named as such.
#[test]
fn run_details() {
    let env = Env::new();
    env.ok(&["set", "web", "f.conf", "--type", "file"], b"x");
    let mut c = env.cmd(&["run", "web", "--mount-dir", "m", "--", "sh", "-c", "printf %s \"$SECRETS_DIR\""]);
    let o = c.current_dir(env.dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(PathBuf::from(String::from_utf8(o.stdout).unwrap()), env.dir.path().join("m"));

    // A leftover of a dead `run`: a pid that exited, under the runtime dir.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let stale = env.dir.path().join(format!("secrets-run-{pid}-0011223344556677"));
    std::fs::create_dir(&stale).unwrap();
    let alive = env.dir.path().join(format!("secrets-run-{}-0011223344556677", std::process::id()));
    std::fs::create_dir(&alive).unwrap();
    env.ok(&["run", "web", "--", "true"], b"");
    assert!(!stale.exists(), "the dead run's directory is removed");
    assert!(alive.exists(), "a live process's directory is kept");

    let o = env.run(&["run", "nothing-here", "--", "true"], b"");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: instance \"nothing-here\" has no secrets"));
    let o = env.run(&["inject", "nothing-here"], b"");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: instance \"nothing-here\" has no secrets"));
    let o = env.run(&["inject", "web"], b"");
    assert!(o.status.success() && o.stderr.is_empty(), "no warning for an instance with file secrets only");

    // ARG_MAX is a quarter of the stack limit (at least 128 KiB): with a
    // 1 MiB stack, five 60 KiB env secrets are too many.
    let big = vec![b'v'; 60 << 10];
    for i in 0..5 {
        env.ok(&["set", "big", &format!("V{i}"), "--type", "env"], &big);
    }
    let secrets = format!("ulimit -s 1024 && exec {BIN} run big -- true");
    let mut sh = Command::new("bash");
    sh.args(["-c", &secrets]);
    env.environment(&mut sh);
    let o = sh.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("environment is too large") && err.contains("bytes"), "{err}");
}

/// A canary in every secret type goes through every command, errors
/// included, with logs at their most verbose: it appears only where the
/// value is meant to go (`get` of that key, the env of `inject` and `run`).
#[test]
fn canaries_appear_only_where_the_value_is_meant_to_go() {
    let env = Env::new();
    let canary = |kind: &str| format!("CANARY{kind}7f3a9c");
    let key_pem = String::from_utf8(crate::common::fixture("rsa-pkcs1-key.pem")).unwrap();
    // The private key's canary: a run of its base64 body.
    let tls_canary = key_pem.lines().nth(5).unwrap().to_string();
    let registry = format!(r#"{{"auths":{{"ghcr.io":{{"username":"u","password":"{}"}}}}}}"#, canary("reg"));
    let tls = crate::common::tls_bundle("rsa-cert.pem", "rsa-pkcs1-key.pem");
    let traced = |args: &[&str], stdin: &[u8]| {
        let mut c = env.cmd(args);
        c.env("RUST_LOG", "trace").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let all = [canary("env"), canary("file"), canary("reg"), tls_canary.clone()];
    // (args, stdin, canaries allowed on stdout)
    let cases: Vec<(Vec<&str>, Vec<u8>, Vec<String>)> = vec![
        (vec!["set", "web", "ENV_K", "--type", "env"], canary("env").into_bytes(), vec![]),
        (vec!["set", "web", "f.conf", "--type", "file"], canary("file").into_bytes(), vec![]),
        (vec!["set", "web", "ghcr", "--type", "registry"], registry.clone().into_bytes(), vec![]),
        (vec!["set", "web", "cert", "--type", "tls"], tls.clone(), vec![]),
        // Refused values that carry a canary.
        (vec!["set", "web", "BAD", "--type", "env"], format!("{}\0", canary("env")).into_bytes(), vec![]),
        (vec!["set", "web", "bad-reg", "--type", "registry"], format!("{{\"{}\":1}}", canary("reg")).into_bytes(), vec![]),
        (vec!["set", "web", "bad-tls", "--type", "tls"], format!("-----BEGIN {}-----", tls_canary).into_bytes(), vec![]),
        (vec!["set", "web", "ENV_K", "--type", "file"], canary("file").into_bytes(), vec![]),
        (vec!["list", "web"], vec![], vec![]),
        (vec!["list", "web", "--json"], vec![], vec![]),
        (vec!["versions", "web", "ghcr"], vec![], vec![]),
        (vec!["versions", "web", "cert", "--json"], vec![], vec![]),
        (vec!["get", "web", "ENV_K"], vec![], vec![canary("env")]),
        (vec!["get", "web", "cert"], vec![], vec![tls_canary.clone()]),
        (vec!["get", "web", "missing"], vec![], vec![]),
        (vec!["inject", "web"], vec![], vec![canary("env")]),
        (vec!["inject", "web", "--format", "json"], vec![], vec![canary("env")]),
        (vec!["inject", "web", "--format", "shell"], vec![], vec![canary("env")]),
        (vec!["run", "web", "--", "true"], vec![], vec![]),
        (vec!["rotate", "web", "--all"], vec![], vec![]),
        (vec!["rotate", "web", "ghcr"], vec![], vec![]),
        (vec!["keyring", "add"], vec![], vec![]),
        (vec!["keyring", "rotate-all"], vec![], vec![]),
        (vec!["delete", "web", "f.conf"], vec![], vec![]),
    ];
    for (args, stdin, allowed) in &cases {
        let o = traced(args, stdin);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        for c in &all {
            assert!(!err.contains(c.as_str()), "{args:?}: stderr holds {c}:\n{err}");
            if !allowed.contains(c) {
                assert!(!out.contains(c.as_str()), "{args:?}: stdout holds {c}:\n{out}");
            }
        }
        for c in allowed {
            assert!(out.contains(c.as_str()), "{args:?}: the value is where it should be");
        }
    }
    // The logs were on: the calls' spans were written, with their fields.
    let o = traced(&["get", "web", "ENV_K"], b"");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#"get{tenant="default" instance="web" key="ENV_K"}"#), "{err}");
}

/// A read-only data directory can still be read (`get`, `list`, `inject`,
/// `run`), while a write says why it cannot. Needs root to make a
/// read-only bind mount in a mount namespace of its own (`unshare`).
#[test]
fn a_read_only_data_directory_can_be_read() {
    if secrets_host::cache::effective_uid() != 0 || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("needs root and unshare for a read-only bind mount; not checked");
        return;
    }
    let env = Env::new();
    env.ok(&["set", "web", "K", "--type", "env"], b"v1");
    let data = env.db().parent().unwrap().to_owned();
    let in_read_only = |args: &str| {
        let script = format!(
            "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {BIN} {args}",
            d = data.display()
        );
        let mut c = Command::new("/usr/bin/unshare");
        c.args(["-m", "sh", "-c", &script]);
        env.environment(&mut c);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let o = in_read_only("get web K");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"v1");
    for args in ["list web", "inject web", "versions web K", "run web -- true"] {
        let o = in_read_only(args);
        assert!(o.status.success(), "{args}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = in_read_only("rotate web K");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    assert!(!data.join("secrets.db-shm").exists(), "nothing was created beside the store");
}

/// On a full disk a write says so (not "disk I/O error") and exits 5, and
/// reads go on. Needs root to mount a small tmpfs in a mount namespace of
/// its own (`unshare`).
#[test]
fn a_full_disk_is_named_and_reads_go_on() {
    if secrets_host::cache::effective_uid() != 0 || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("needs root and unshare for a small tmpfs; not checked");
        return;
    }
    let env = Env::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=400k tmpfs {d} || exit 99
         printf v | {BIN} set web K --type env >/dev/null || exit 98
         dd if=/dev/zero of={d}/fill bs=1k count=10000 2>/dev/null
         printf w | {BIN} set web K --type env 2>&1 >/dev/null; echo \"set-rc=$?\"
         {BIN} get web K; echo \" get-rc=$?\"",
        d = data.display()
    );
    let mut c = Command::new("/usr/bin/unshare");
    c.args(["-m", "sh", "-c", &script]);
    env.environment(&mut c);
    let o = c.stdin(Stdio::null()).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("is full") && out.contains("set-rc=5"), "{out}");
    assert!(out.contains("v get-rc=0"), "the value is still read: {out}");
}
