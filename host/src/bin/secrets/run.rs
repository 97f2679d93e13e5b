//! `secrets run`: start a command with the instance's secrets.
//!
//! Env secrets go into the child's environment; file, tls and registry
//! secrets are written into a private directory (0700, files 0400) under
//! `$XDG_RUNTIME_DIR` or `/dev/shm` (memory-backed, so nothing reaches a
//! disk) and named by `SECRETS_DIR` (and `DOCKER_CONFIG` when registry
//! secrets exist). SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the
//! child. When the child exits, or is killed by a signal, the files are
//! removed and `secrets` exits with the child's code (128+N for signal N).
//! Only a SIGKILL of `secrets` itself leaves the files behind; the next
//! `run` removes such directories of dead processes.
//!
//! The child does not inherit the store's own credentials
//! (`SECRETS_MASTER_KEY`, `SECRETS_STORE`, `BAO_TOKEN`, `VAULT_TOKEN`, the
//! store URL's `token_env` variable): a workload gets its instance's
//! secrets, never the keys to everyone's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use secrets_host::{Mount, Scope, Secrets, StoreConfig};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::CliError;
use crate::args::RunArgs;

/// A directory of mounted secrets, removed on drop.
struct MountDir {
    path: PathBuf,
    /// We made the directory, so we remove it whole; otherwise only the
    /// files and subdirectories we made.
    created: bool,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            for f in &self.files {
                let _ = fs::remove_file(f);
            }
            for d in self.dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

fn default_base() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute() && p.is_dir());
    let shm = Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir());
    runtime.or(shm).unwrap_or_else(std::env::temp_dir)
}

fn io(what: &Path, e: std::io::Error) -> CliError {
    CliError::error(format!("{}: {e}", what.display()))
}

/// The prefix of the directories `run` makes under the default base:
/// `secrets-run-<pid>-<random>`.
const RUN_DIR_PREFIX: &str = "secrets-run-";

/// Removes directories that earlier `run`s left under `base` because they
/// were killed with SIGKILL: ours (same owner), and whose process is gone.
fn clean_stale_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == secrets_host::cache::effective_uid());
        if ours && !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this pid exists (`kill(pid, 0)`).
#[allow(unsafe_code, reason = "kill(2) with signal 0 sends nothing")]
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn prepare_dir(requested: Option<&Path>) -> Result<MountDir, CliError> {
    let private = |p: &Path| fs::DirBuilder::new().mode(0o700).create(p);
    // The child gets the path in SECRETS_DIR: make it absolute, so it means
    // the same wherever the child changes directory.
    let requested = match requested {
        Some(p) => Some(std::path::absolute(p).map_err(|e| io(p, e))?),
        None => None,
    };
    let requested = requested.as_deref();
    match requested {
        Some(p) if p.exists() => {
            let meta = fs::metadata(p).map_err(|e| io(p, e))?;
            if meta.uid() != secrets_host::cache::effective_uid() || meta.permissions().mode() & 0o077 != 0 {
                return Err(CliError::error(format!(
                    "--mount-dir {} must be owned by you and private (chmod 700)",
                    p.display()
                )));
            }
            if fs::read_dir(p).map_err(|e| io(p, e))?.next().is_some() {
                return Err(CliError::error(format!("--mount-dir {} is not empty", p.display())));
            }
            Ok(MountDir { path: p.to_owned(), created: false, files: vec![], dirs: vec![] })
        }
        Some(p) => {
            private(p).map_err(|e| io(p, e))?;
            Ok(MountDir { path: p.to_owned(), created: true, files: vec![], dirs: vec![] })
        }
        None => {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| CliError::error(format!("no randomness: {e}")))?;
            let base = default_base();
            clean_stale_dirs(&base);
            let p = base.join(format!("{RUN_DIR_PREFIX}{}-{}", std::process::id(), hex::encode(nonce)));
            private(&p).map_err(|e| io(&p, e))?;
            Ok(MountDir { path: p, created: true, files: vec![], dirs: vec![] })
        }
    }
}

/// Writes one mount; its path must stay inside the directory.
fn write_mount(dir: &mut MountDir, mount: &Mount) -> Result<(), CliError> {
    let rel = Path::new(&mount.path);
    if mount.path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(CliError::error(format!("refusing mount path {:?}", mount.path)));
    }
    let path = dir.path.join(rel);
    let mut parent = dir.path.clone();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        parent.push(part);
        if !parent.exists() {
            fs::DirBuilder::new().mode(0o700).create(&parent).map_err(|e| io(&parent, e))?;
            dir.dirs.push(parent.clone());
        }
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&path).map_err(|e| io(&path, e))?;
    dir.files.push(path.clone());
    f.write_all(mount.contents.expose()).map_err(|e| io(&path, e))
}

#[allow(unsafe_code, reason = "kill(2) to forward signals to the child")]
pub fn run(secrets: &Secrets, scope: &Scope, store: &StoreConfig, args: RunArgs) -> Result<i32, CliError> {
    // Registered before any file is written, so no signal can kill us
    // between writing the secrets and cleaning them up.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| CliError::error(format!("cannot handle signals: {e}")))?;
    let resolved = secrets.resolve(scope, &args.instance)?;
    let (env, mounts) = (resolved.env, resolved.mounts);
    if env.is_empty() && mounts.is_empty() {
        // Every type becomes env or a file: the instance has no secrets.
        eprintln!(
            "warning: instance {:?} has no secrets (tenant {:?}); starting the command without any",
            args.instance,
            scope.name()
        );
    }
    let mut dir = prepare_dir(args.mount_dir.as_deref())?;
    for m in &mounts {
        write_mount(&mut dir, m)?;
    }
    drop(mounts);
    if let Some(sig) = signals.pending().next() {
        return Ok(128 + sig);
    }

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for var in store.credential_vars() {
        cmd.env_remove(var);
    }
    for (name, value) in &env {
        cmd.env(name, value.expose_str().expect("env values are UTF-8"));
    }
    cmd.env("SECRETS_DIR", &dir.path);
    let docker = dir.path.join(".docker");
    if docker.join("config.json").exists() {
        cmd.env("DOCKER_CONFIG", &docker);
    }

    let handle = signals.handle();
    let mut child = cmd.spawn().map_err(|e| {
        if e.raw_os_error() == Some(libc::E2BIG) {
            too_big(&cmd)
        } else {
            CliError::error(format!("cannot run {:?}: {e}", args.command[0]))
        }
    })?;
    drop(cmd);
    drop(env);
    let pid = child.id() as libc::pid_t;
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            // SAFETY: kill has no memory-safety preconditions. The child is
            // not reaped until this thread has stopped (see below), so the
            // pid cannot have been reused by another process.
            unsafe { libc::kill(pid, sig) };
        }
    });
    // Wait for the child to exit without reaping it, stop forwarding, and
    // only then reap it: a signal can never reach a recycled pid.
    wait_without_reaping(pid);
    handle.close();
    let _ = forwarder.join();
    let status = child.wait().map_err(|e| CliError::error(format!("waiting for the command: {e}")));
    drop(dir);
    let status = status?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The error for an `execve` refused with E2BIG: what is too large, and
/// the limit.
#[allow(unsafe_code, reason = "sysconf(3) has no memory-safety preconditions")]
fn too_big(cmd: &Command) -> CliError {
    use std::os::unix::ffi::OsStrExt;
    // As the kernel counts: each string with its NUL, plus a pointer each.
    let pointer = std::mem::size_of::<usize>();
    let mut env_bytes = 0usize;
    for (name, value) in std::env::vars_os().filter(|(n, _)| !cmd.get_envs().any(|(m, _)| m == n)) {
        env_bytes += name.len() + value.len() + 2 + pointer;
    }
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            env_bytes += name.len() + value.len() + 2 + pointer;
        }
    }
    let arg_bytes: usize =
        std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.as_bytes().len() + 1 + pointer).sum();
    // SAFETY: sysconf only reads a constant.
    let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    CliError::error(format!(
        "the environment is too large to start {:?}: {env_bytes} bytes of environment and {arg_bytes} of arguments, \
         over the kernel's limit ({arg_max} bytes in all, and 131072 for any one variable); mount large secrets as \
         files (--type file) instead of env",
        cmd.get_program()
    ))
}

/// Blocks until the child has exited, leaving it a zombie to reap.
#[allow(unsafe_code, reason = "waitid with a zeroed siginfo_t")]
fn wait_without_reaping(pid: libc::pid_t) {
    loop {
        // SAFETY: `info` is a valid, zeroed siginfo_t for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}
