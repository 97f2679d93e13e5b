//! `secrets`: the command-line front end of the secrets subsystem, in the
//! style of `doppler run` / `op run`. Runs on the embedded SQLite store by
//! default; first use creates the store and its master key.

mod args;
mod format;
mod hardening;
mod run;
#[cfg(feature = "http")]
mod serve;
mod token;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use secrets_host::backends::{StoreConfig, VaultError, store_config};
use secrets_host::{Error, Scope, SecretMeta, SetRequest, cache, limits};

use args::{Cli, Command, Format, KeyringCommand};

/// An error for the user: one line on stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    pub fn error(message: impl Into<String>) -> Self {
        CliError { code: 1, message: message.into() }
    }
}

/// Exit code of an unavailable store: try again later.
const EXIT_UNAVAILABLE: u8 = 5;

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::NotFound => 3,
            Error::Conflict(_) | Error::VersionMismatch(_) => 4,
            Error::Vault(VaultError::Unavailable(_)) => EXIT_UNAVAILABLE,
            _ => 1,
        };
        CliError { code, message: e.to_string() }
    }
}

impl From<VaultError> for CliError {
    fn from(e: VaultError) -> Self {
        Error::Vault(e).into()
    }
}

/// How messages name a secret.
fn secret_name(key: &str, instance: &str) -> String {
    format!("secret {key:?} in instance {instance:?}")
}

/// The columns of `list` and `versions`.
const META_HEADER: &[&str] = &["KEY", "TYPE", "VERSION", "CREATED", "SIZE", "STATE"];

/// Adds what was looked for to a bare "not found".
fn not_found(what: String) -> impl FnOnce(Error) -> CliError {
    move |e| match e {
        Error::NotFound => CliError { code: 3, message: format!("{what} not found") },
        other => other.into(),
    }
}

fn init_logging(serving: bool) {
    // Logs only when asked for (RUST_LOG=debug, =trace, ...), on stderr.
    // Spans leave out every argument that carries a secret.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            // One line per call when it ends, with its fields and timing.
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .try_init();
    } else if serving {
        // A server logs one line per request (never a value or a token).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("secrets_host=info"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    } else {
        // Otherwise the host's warnings only (a lock waited for, a store
        // read as a snapshot), one short line each.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("secrets_host=warn"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .try_init();
    }
}

fn main() -> ExitCode {
    // Before anything is read: no core dumps, no ptrace or /proc/PID/mem,
    // environ or fd access for other processes of the same user.
    hardening::make_non_dumpable();
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        // clap repeats an unknown argument; it may be a secret typed on the
        // command line (`set ... --type env -s3cret`): say so without it.
        Err(e) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
            eprintln!(
                "error: unexpected argument (not shown: if it was a value, it was not stored; `set` reads values \
                 from stdin or --from-file)\n\nFor more information, try '--help'."
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Whether --tenant (or SECRETS_TENANT) was given, not defaulted.
    let tenant_given = matches.value_source("tenant").is_some_and(|s| s != ValueSource::DefaultValue);
    #[cfg(feature = "http")]
    init_logging(matches!(cli.command, Command::Serve(_)));
    #[cfg(not(feature = "http"))]
    init_logging(false);
    match run_cli(cli, tenant_given) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Refuses what looks like a value given on the command line, without
/// repeating it (it is already in the shell history; not in our output).
fn refuse_values_in_arguments(key: &str, extra: &[std::ffi::OsString]) -> Result<(), CliError> {
    const HOW: &str = "`set` reads the value from stdin or --from-file only";
    if key.contains('=') {
        return Err(CliError {
            code: 2,
            message: format!(
                "the key looks like KEY=VALUE: a value looked like it was given on the command line and was not \
                 stored; {HOW} (e.g. `printf %s \"$VALUE\" | secrets set INSTANCE KEY --type env`)"
            ),
        });
    }
    if !extra.is_empty() {
        return Err(CliError {
            code: 2,
            message: format!(
                "unexpected argument after the key: a value looked like it was given on the command line and was \
                 not stored; {HOW}"
            ),
        });
    }
    Ok(())
}

/// The checks of `set` that need no value, run before reading one, so an
/// interactive user is not asked for a secret the call would refuse.
fn check_before_reading(
    secrets: &secrets_host::Secrets,
    scope: &Scope,
    (instance, key): (&str, &str),
    kind: secrets_host::SecretType,
    if_version: Option<u32>,
) -> Result<(), CliError> {
    use secrets_guest::validate;
    validate::instance_id(instance).map_err(Error::from)?;
    validate::key(key).map_err(Error::from)?;
    if kind == secrets_host::SecretType::Env {
        validate::env_name(key).map_err(Error::from)?;
    }
    let (current, held) = match secrets.versions(scope, instance, key) {
        Ok(metas) => metas.last().map(|m| (m.version, Some(m.kind))).unwrap_or((0, None)),
        Err(Error::NotFound) => (0, None),
        Err(e) => return Err(e.into()),
    };
    if let Some(expected) = if_version
        && expected != current
    {
        return Err(Error::VersionMismatch(format!(
            "key {key:?} is at version {current}, the request expected version {expected}"
        ))
        .into());
    }
    if let Some(held) = held
        && held != kind
    {
        return Err(Error::Conflict(format!("key {key:?} holds a {held} secret; delete it before setting it as {kind}"))
            .into());
    }
    Ok(())
}

fn read_value(from_file: Option<PathBuf>, key: &str) -> Result<Vec<u8>, CliError> {
    // One byte more than any accepted value, so oversize input is reported
    // by the component's limit check without reading all of it.
    let cap = u64::from(limits::HARD_MAX_VALUE_BYTES) + 1;
    let mut value = Vec::new();
    match from_file {
        Some(path) => fs_err(&path, std::fs::File::open(&path).and_then(|f| f.take(cap).read_to_end(&mut value)))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("enter the value of {key} (it is not echoed to other users, but is shown here), then Ctrl-D on a new line; or pipe it in, or use --from-file");
            }
            fs_err(
                std::path::Path::new("stdin"),
                std::io::stdin().lock().take(cap).read_to_end(&mut value),
            )?
        }
    };
    Ok(value)
}

fn fs_err<T>(path: &std::path::Path, r: std::io::Result<T>) -> Result<T, CliError> {
    r.map_err(|e| CliError::error(format!("{}: {e}", path.display())))
}

fn created(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Prints rows with each column padded to its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    for row in std::iter::once(head).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn meta_rows(metas: &[SecretMeta]) -> Vec<Vec<String>> {
    metas
        .iter()
        .map(|m| {
            let state = match (m.destroyed, m.deleted_at) {
                (true, _) => "destroyed".to_owned(),
                (false, Some(at)) => format!("deleted {}", created(at)),
                (false, None) => "live".to_owned(),
            };
            vec![m.key.clone(), m.kind.to_string(), m.version.to_string(), created(m.created_at), m.size.to_string(), state]
        })
        .collect()
}

/// "1,2,3" for messages.
fn version_list(versions: &[u32]) -> String {
    versions.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn out(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::error(format!("stdout: {e}"))),
        _ => Ok(()),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| CliError::error(e.to_string()))?;
    text.push(b'\n');
    out(&text)
}

fn run_cli(cli: Cli, tenant_given: bool) -> Result<u8, CliError> {
    let url = match cli.store.clone() {
        Some(url) => url,
        None => store_config::default_url()?,
    };
    let store = StoreConfig::parse(&url)?;
    // Commands that only read open the store read-only.
    let reads = matches!(
        cli.command,
        Command::Get { .. }
            | Command::List { .. }
            | Command::Versions { .. }
            | Command::Inject { .. }
            | Command::Run(_)
            | Command::Instances { .. }
            | Command::Token(args::TokenCommand::List { .. })
    );
    let store = if reads { store.for_reading() } else { store };
    let scope = Scope::tenant(&cli.tenant)?;
    if let Command::Keyring(KeyringCommand::Add) = cli.command {
        return keyring_add(&store);
    }
    let backend = store.open()?;
    // The store holds its keys and tokens now: scrub them from our own
    // environment, where a child (`run`) or a same-user process reading
    // /proc/PID/environ would otherwise find them.
    hardening::scrub_environment(&store.credential_vars());
    if let Command::Keyring(KeyringCommand::RotateAll) = cli.command {
        let mut last = 0;
        let n = backend.rotate_all(&mut |done, total| {
            if done == total || done >= last + 100 {
                last = done;
                eprintln!("re-encrypted {done}/{total}");
            }
        })?;
        out(format!("re-encrypted {n} entries under the newest master key\n").as_bytes())?;
        return Ok(0);
    }
    let command = match cli.command {
        Command::Token(command) => {
            let tokens = secrets_host::tokens::TokenStore::new(backend);
            return token::run(&tokens, command, tenant_given.then_some(&scope));
        }
        command => command,
    };
    let cache_dir = cache::default_dir();
    // A server runs many calls: pooled instances. A one-shot command runs
    // one or two, and setting up a pool would cost it more than it saves.
    let allocation = match command {
        Command::Serve(..) => secrets_host::Allocation::Pooled,
        _ => secrets_host::Allocation::OnDemand,
    };
    let (sandbox, _, why) = cache::load(cache_dir.as_deref(), allocation)?;
    if let Some(why) = why {
        eprintln!("warning: compiled-component cache not used ({why})");
    }
    let secrets = secrets_host::Secrets::with_sandbox(sandbox.into(), backend.clone(), secrets_host::Limits::default());

    match command {
        Command::Set { instance, key, kind, from_file, if_version, allow_empty, extra } => {
            refuse_values_in_arguments(&key, &extra)?;
            check_before_reading(&secrets, &scope, (&instance, &key), kind.into(), if_version)?;
            let value = read_value(from_file, &key)?;
            if value.is_empty() && !allow_empty {
                return Err(CliError::error(format!(
                    "refusing to store an empty value for {key:?} (stdin was empty or closed); pass --allow-empty to store one"
                )));
            }
            let mut req = SetRequest::new(&instance, &key, kind.into(), value);
            req.if_version = if_version;
            let meta = secrets.set(&scope, req)?;
            out(format!("{} v{} ({})\n", meta.key, meta.version, meta.kind).as_bytes())?;
        }
        Command::Get { instance, key, version } => {
            let what = secret_name(&key, &instance);
            let secret = match version {
                Some(v) => secrets
                    .get_version(&scope, &instance, &key, v)
                    .map_err(not_found(format!("version {v} of {what}")))?,
                None => secrets.get(&scope, &instance, &key).map_err(not_found(what))?,
            };
            out(secret.value.expose())?;
        }
        Command::List { instance, json: as_json } => {
            let metas = secrets.list(&scope, &instance)?;
            if as_json {
                json(&metas)?;
            } else if metas.is_empty() {
                eprintln!("no secrets in instance {instance:?}");
            } else {
                out(table(META_HEADER, meta_rows(&metas)).as_bytes())?;
            }
        }
        Command::Versions { instance, key, json: as_json } => {
            let metas = secrets
                .versions(&scope, &instance, &key)
                .map_err(not_found(secret_name(&key, &instance)))?;
            if as_json {
                json(&metas)?;
            } else {
                out(table(META_HEADER, meta_rows(&metas)).as_bytes())?;
            }
        }
        Command::Inject { instance, format } => {
            let env = secrets.inject(&scope, &instance)?;
            if env.is_empty() && secrets.list(&scope, &instance)?.is_empty() {
                eprintln!("warning: instance {instance:?} has no secrets (tenant {:?}); is its name right?", scope.name());
            }
            out(&match format {
                Format::Dotenv => format::dotenv(&env),
                Format::Shell => format::shell(&env),
                Format::Json => format::json(&env),
            })?;
        }
        Command::Run(args) => {
            let code = run::run(&secrets, &scope, &store, args)?;
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        Command::Delete { instance, key, versions } if versions.is_empty() => {
            secrets
                .delete(&scope, &instance, &key)
                .map_err(not_found(secret_name(&key, &instance)))?;
            out(format!("deleted {key}\n").as_bytes())?;
        }
        Command::Delete { instance, key, versions } => {
            secrets
                .delete_versions(&scope, &instance, &key, &versions)
                .map_err(not_found(format!("versions {} of {}", version_list(&versions), secret_name(&key, &instance))))?;
            out(format!("deleted versions {} of {key} (undelete brings them back)\n", version_list(&versions)).as_bytes())?;
        }
        Command::Undelete { instance, key, versions } => {
            secrets
                .undelete(&scope, &instance, &key, &versions)
                .map_err(not_found(format!("versions {} of {}", version_list(&versions), secret_name(&key, &instance))))?;
            out(format!("undeleted versions {} of {key}\n", version_list(&versions)).as_bytes())?;
        }
        Command::Destroy { instance, key, versions } => {
            secrets
                .destroy(&scope, &instance, &key, &versions)
                .map_err(not_found(format!("versions {} of {}", version_list(&versions), secret_name(&key, &instance))))?;
            out(format!("destroyed versions {} of {key}\n", version_list(&versions)).as_bytes())?;
        }
        Command::Rollback { instance, key, version } => {
            let meta = secrets
                .rollback(&scope, &instance, &key, version)
                .map_err(not_found(format!("version {version} of {}", secret_name(&key, &instance))))?;
            out(format!("{} v{} ({}), the value of v{version}\n", meta.key, meta.version, meta.kind).as_bytes())?;
        }
        Command::Instances { json: as_json } => {
            let instances = secrets.instances(&scope)?;
            if as_json {
                json(&instances)?;
            } else if instances.is_empty() {
                eprintln!("no instances with secrets in tenant {:?}", scope.name());
            } else {
                out(instances.iter().map(|i| format!("{i}\n")).collect::<String>().as_bytes())?;
            }
        }
        Command::Rotate { instance, key, all } => {
            let rotated = match key {
                Some(key) if !all => {
                    let n = secrets
                        .rotate(&scope, &instance, &key)
                        .map_err(not_found(secret_name(&key, &instance)))?;
                    vec![(key, n)]
                }
                // One call: a key deleted meanwhile cannot stop it half-way.
                _ => secrets.rotate_instance(&scope, &instance)?,
            };
            for (key, n) in rotated {
                out(format!("{key}: re-encrypted {n} version{}\n", if n == 1 { "" } else { "s" }).as_bytes())?;
            }
        }
        #[cfg(feature = "http")]
        Command::Serve(args) => return serve::run(secrets, backend, args),
        Command::Keyring(_) | Command::Token(_) => unreachable!("handled above"),
    }
    Ok(0)
}

fn keyring_add(store: &StoreConfig) -> Result<u8, CliError> {
    use secrets_host::backends::sealed::{Keyring, MASTER_KEY_ENV};
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return Err(CliError::error(format!(
            "the master key comes from {MASTER_KEY_ENV}; add a generation there (1:<hex>,2:<hex>)"
        )));
    }
    let key_file = match store.key_file() {
        // Never create one here: a new key would make an existing store
        // unreadable (and opening the store refuses it too).
        Some(path) if !path.exists() => {
            return Err(CliError::error(format!(
                "the master key file {} does not exist: restore it from your backup, or open the store once to \
                 create it; `keyring add` only adds a generation to an existing key file",
                path.display()
            )));
        }
        Some(path) => path,
        None if store.has_master_key() => {
            return Err(CliError::error(
                "this postgres store takes its key from SECRETS_MASTER_KEY; add `key_file=PATH` to use a key file",
            ));
        }
        None => {
            return Err(CliError::error("`keyring add` manages the key file of a sqlite: or postgres: (key_file=) store"));
        }
    };
    let generation = Keyring::add_generation(&key_file)?;
    out(format!(
        "added master key generation {generation} to {}; run `secrets keyring rotate-all` to re-encrypt existing entries\n",
        key_file.display()
    )
    .as_bytes())?;
    Ok(0)
}
