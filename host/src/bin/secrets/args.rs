//! The command line contract. Scripts rely on these names and flags.

use std::path::PathBuf;

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
    /// Delete a key with all its versions.
    Delete { instance: String, key: String },
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
