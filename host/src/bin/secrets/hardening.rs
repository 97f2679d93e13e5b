//! What the CLI does to its own process so that other processes of the same
//! user (a workload started by `secrets run`, above all) cannot read the
//! store's credentials out of it.
//!
//! # Does not protect
//! Files the user can read stay readable by the user's other processes: the
//! SQLite database and its key file beside it, a `token_file=`. Keep the
//! master key in `SECRETS_MASTER_KEY` (from a secret manager) and run
//! workloads as another user to keep them out of its reach. Root reads
//! everything.

/// Marks the process non-dumpable: no core dumps, and ptrace,
/// `/proc/PID/mem`, `/proc/PID/environ` and `/proc/PID/fd` refused to other
/// processes of the same user (the files become root's). A child loses the
/// mark at `execve`, so the workload is unaffected.
#[allow(unsafe_code, reason = "prctl(2) with constant arguments")]
pub fn make_non_dumpable() {
    // SAFETY: PR_SET_DUMPABLE takes plain integers and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r != 0 {
        eprintln!("warning: cannot mark the process non-dumpable: {}", std::io::Error::last_os_error());
    }
}

/// Removes `vars` from this process's environment and overwrites their
/// values in place: `/proc/PID/environ` shows the environment block the
/// process was started with, which removing a variable does not change.
/// Call it before starting any thread that reads the environment.
#[allow(unsafe_code, reason = "overwrites C strings of the process environment in place")]
pub fn scrub_environment(vars: &[String]) {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: `environ` is the NUL-terminated array of NUL-terminated
    // strings libc keeps; nothing else in this process changes it while we
    // run (no thread touches the environment yet). We write only within
    // the bytes of each value, before its terminating NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if let Some(eq) = text.iter().position(|&b| b == b'=')
                && vars.iter().any(|v| v.as_bytes() == &text[..eq])
            {
                let value = (*entry).add(eq + 1);
                std::ptr::write_bytes(value, 0, text.len() - eq - 1);
            }
            entry = entry.add(1);
        }
        for var in vars {
            std::env::remove_var(var);
        }
    }
}
