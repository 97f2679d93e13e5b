//! `secrets run`: start a command with the instance's secrets.
//!
//! Env secrets go into the child's environment; file, tls and registry
//! secrets are written into a private directory (0700, files 0400) under
//! `$XDG_RUNTIME_DIR` or `/dev/shm` (memory-backed, so nothing reaches a
//! disk) and named by `SECRETS_DIR` (and `DOCKER_CONFIG` when registry
//! secrets exist). SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the
//! child. When the child exits, or is killed by a signal, the files are
//! removed and `secrets` exits with the child's code (128+N for signal N).
//! Only a SIGKILL of `secrets` itself leaves the files behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use secrets_host::{Mount, Scope, Secrets};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::CliError;
use crate::args::RunArgs;

/// A directory of mounted secrets, removed on drop.
struct MountDir {
    path: PathBuf,
    /// We made the directory, so we remove it whole; otherwise only the
    /// files we wrote.
    created: bool,
    written: Vec<PathBuf>,
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            for f in &self.written {
                let _ = fs::remove_file(f);
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

fn prepare_dir(requested: Option<&Path>) -> Result<MountDir, CliError> {
    let private = |p: &Path| fs::DirBuilder::new().mode(0o700).create(p);
    match requested {
        Some(p) if p.exists() => {
            if fs::read_dir(p).map_err(|e| io(p, e))?.next().is_some() {
                return Err(CliError::error(format!("--mount-dir {} is not empty", p.display())));
            }
            Ok(MountDir { path: p.to_owned(), created: false, written: vec![] })
        }
        Some(p) => {
            private(p).map_err(|e| io(p, e))?;
            Ok(MountDir { path: p.to_owned(), created: true, written: vec![] })
        }
        None => {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| CliError::error(format!("no randomness: {e}")))?;
            let p = default_base().join(format!("secrets-run-{}-{}", std::process::id(), hex::encode(nonce)));
            private(&p).map_err(|e| io(&p, e))?;
            Ok(MountDir { path: p, created: true, written: vec![] })
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
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| io(parent, e))?;
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&path).map_err(|e| io(&path, e))?;
    dir.written.push(path.clone());
    f.write_all(mount.contents.expose()).map_err(|e| io(&path, e))
}

pub fn run(secrets: &Secrets, scope: &Scope, args: RunArgs) -> Result<i32, CliError> {
    let secrets_of_instance = secrets.resolve(scope, &args.instance)?;
    let (env, mounts) = (secrets_of_instance.env, secrets_of_instance.mounts);
    let mut dir = prepare_dir(args.mount_dir.as_deref())?;
    for m in &mounts {
        write_mount(&mut dir, m)?;
    }
    drop(mounts);

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (name, value) in &env {
        cmd.env(name, value.expose_str().expect("env values are UTF-8"));
    }
    cmd.env("SECRETS_DIR", &dir.path);
    let docker = dir.path.join(".docker");
    if docker.join("config.json").exists() {
        cmd.env("DOCKER_CONFIG", &docker);
    }

    // Registered before the child starts, so no signal is lost or kills us
    // before the files are cleaned up.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| CliError::error(format!("cannot handle signals: {e}")))?;
    let handle = signals.handle();
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::error(format!("cannot run {:?}: {e}", args.command[0])))?;
    drop(cmd);
    drop(env);
    let pid = child.id() as libc::pid_t;
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // our child's, which we reap only after this thread stops.
            unsafe { libc::kill(pid, sig) };
        }
    });
    let status = child.wait().map_err(|e| CliError::error(format!("waiting for the command: {e}")));
    handle.close();
    let _ = forwarder.join();
    drop(dir);
    let status = status?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
