//! The command line contract. Scripts rely on these names and flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrets_host::SecretType;

const EXIT_CODES: &str = "\
Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 store unavailable (try again).
A value is never taken from the command line (it would leak into `ps` and
shell history): `set` reads it from stdin or --from-file.";

/// Store, version and inject secrets for container instances.
#[derive(Debug, Parser)]
#[command(name = "secrets", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Store URL: sqlite:PATH (default: $XDG_DATA_HOME/secrets/secrets.db),
    /// memory:, postgres://..., openbao+http(s)://HOST:PORT/MOUNT
    // hide_env_values: the URL may carry a password, and --help must not print it.
    #[arg(long, global = true, env = "SECRETS_STORE", hide_env_values = true, value_name = "URL")]
    pub store: Option<String>,

    /// Tenant the command acts for.
    #[arg(long, global = true, env = "SECRETS_TENANT", default_value = "default", value_name = "NAME")]
    pub tenant: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set a secret (a new version on an existing key). The value is read
    /// from stdin, byte for byte, or from --from-file.
    Set {
        instance: String,
        key: String,
        /// How the secret reaches the instance.
        #[arg(long = "type", value_enum)]
        kind: Kind,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// Check-and-set: fail with a conflict unless the current version is
        /// N (0: the key must not exist yet).
        #[arg(long, value_name = "N")]
        if_version: Option<u32>,
        /// Store an empty value (refused otherwise: an empty or closed stdin
        /// is more often a mistake than a secret).
        #[arg(long)]
        allow_empty: bool,
        /// Anything after the key: refused without being shown, since it is
        /// most likely a value typed on the command line.
        #[arg(hide = true, num_args = 0.., value_name = "VALUE")]
        extra: Vec<std::ffi::OsString>,
    },
    /// Print a secret's value (raw bytes, nothing else) to stdout.
    Get {
        instance: String,
        key: String,
        /// A retained older version instead of the current one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// List an instance's secrets: key, type, version, created, size. Never values.
    List {
        instance: String,
        #[arg(long)]
        json: bool,
    },
    /// List the retained versions of a key. Never values.
    Versions {
        instance: String,
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the env secrets of an instance (current versions).
    Inject {
        instance: String,
        #[arg(long, value_enum, default_value_t = Format::Dotenv)]
        format: Format,
    },
    /// Run a command with the instance's env secrets in its environment and
    /// its file, tls and registry secrets in a private directory ($SECRETS_DIR).
    Run(RunArgs),
    /// Delete a key with all its versions (the purge); with --versions,
    /// soft-delete only those versions (`undelete` brings them back).
    Delete {
        instance: String,
        key: String,
        /// Soft-delete these versions (e.g. 1,2): their values are kept but
        /// read as absent; a deleted current version is not injected.
        #[arg(long, value_delimiter = ',', value_name = "N,...")]
        versions: Vec<u32>,
    },
    /// Restore soft-deleted versions of a key.
    Undelete {
        instance: String,
        key: String,
        #[arg(long, value_delimiter = ',', value_name = "N,...", required = true)]
        versions: Vec<u32>,
    },
    /// Remove the values of versions of a key for good (metadata stays).
    Destroy {
        instance: String,
        key: String,
        #[arg(long, value_delimiter = ',', value_name = "N,...", required = true)]
        versions: Vec<u32>,
    },
    /// Write the value of an older version again, as the key's next version.
    Rollback { instance: String, key: String, version: u32 },
    /// List the tenant's instances that hold secrets.
    Instances {
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt a key's versions (or every key of the instance) under the
    /// store's newest master key.
    Rotate {
        instance: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        /// Every key of the instance.
        #[arg(long)]
        all: bool,
    },
    /// Manage the store's master keys (SQLite and PostgreSQL stores).
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Manage the bearer tokens of the HTTP API (`serve`). Tokens are kept
    /// in the store as hashes only.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the HTTP API on the store (HTTPS with --tls-cert/--tls-key;
    /// plain HTTP on loopback only).
    /// Stops on SIGTERM or SIGINT after finishing requests in flight.
    #[cfg(feature = "http")]
    Serve(ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for the tenant given with --tenant; prints it once,
    /// on stdout (only its hash is kept).
    Create {
        /// What the token allows: read (metadata, values, env, mounts),
        /// write (read + set, delete, rotate), inject (env and mounts only).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// How long the token is valid, e.g. 30d, 12h (default: until revoked).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// A label shown by `token list`.
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
    },
    /// List tokens: id, tenant, role, name, created, expires. Never a token.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (as `token list` shows it); every server
    /// on the store refuses it from its next request on.
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Read,
    Write,
    Inject,
}

impl From<RoleArg> for secrets_host::tokens::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Read => Self::Read,
            RoleArg::Write => Self::Write,
            RoleArg::Inject => Self::Inject,
        }
    }
}

#[cfg(feature = "http")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port; the bound
    /// address is printed on stderr). Without TLS, loopback addresses
    /// only, unless --insecure-listen.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Serve HTTPS with this certificate chain (PEM: the server's
    /// certificate first, then intermediates).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Calls of the sandbox or the store running at once; more requests wait.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_concurrent_calls: u32,
    /// How long a request waits for a call slot before it gets 503 busy
    /// (with Retry-After: 1).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_call_wait: Duration,
    /// Serve plain HTTP on a non-loopback address (tokens and values then
    /// cross the network unencrypted: only behind a TLS-terminating proxy).
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_listen: bool,
    /// How long to let requests in flight finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Append an audit log (JSON lines: who read or wrote which secret;
    /// never a value or a token) to PATH (created with mode 0600), or to
    /// stderr with `-`. Fails closed: a request that would return values or
    /// write is refused with 503 when its line cannot be written.
    #[arg(long, value_name = "PATH|-")]
    pub audit_log: Option<PathBuf>,
    /// fdatasync the audit log after every line (durable across a machine
    /// crash; slower).
    #[arg(long, requires = "audit_log")]
    pub audit_sync: bool,
    /// Requests per second allowed to each token, in bursts of as many;
    /// more get 429 with Retry-After. Counted per server process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Add a new master key generation to the SQLite store's key file; new
    /// writes use it, older entries stay readable.
    Add,
    /// Re-encrypt every entry of the store under the newest generation, so
    /// older generations can be retired.
    RotateAll,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub instance: String,
    /// Where to write file, tls and registry secrets (default: a fresh
    /// private directory under $XDG_RUNTIME_DIR or /dev/shm). Removed when
    /// the command exits.
    #[arg(long, value_name = "DIR")]
    pub mount_dir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Env,
    File,
    Registry,
    Tls,
}

impl From<Kind> for SecretType {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Env => SecretType::Env,
            Kind::File => SecretType::File,
            Kind::Registry => SecretType::Registry,
            Kind::Tls => SecretType::Tls,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// NAME="value" lines, read back byte-exact by bash and sh (`source`).
    Dotenv,
    /// One JSON object.
    Json,
    /// export NAME='value' lines, safe to eval.
    Shell,
}
