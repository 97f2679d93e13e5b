//! Builds the secrets component before the host that embeds it.
//!
//! Runs a nested `cargo build -p secrets-guest --target wasm32-unknown-unknown
//! --release` with its own target directory (so it never waits on the outer
//! build's lock), then encodes the core module as a component with
//! `wit-component`. The result is `$OUT_DIR/secrets_plugin.wasm`, which
//! `component.rs` embeds, with its SHA-256 beside it (so the compiled-code
//! cache need not hash the component on every start).
//!
//! The same build makes the test-only hostile component (`tests/hostile/`),
//! which the host's tests load in place of the real one; its path reaches
//! them as `SECRETS_HOSTILE_COMPONENT`. Nothing of it is embedded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().expect("host/ lives in the workspace").to_path_buf();
    for watched in ["guest/src", "guest/Cargo.toml", "guest/testdata", "wit", "Cargo.lock", "tests/hostile"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SECRETS_GUEST_WASM");

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let out = out_dir.join("secrets_plugin.wasm");
    let given = env::var_os("SECRETS_GUEST_WASM").map(PathBuf::from);
    // An already-built core module (e.g. from a CI cache) is used as it is.
    let crates: &[&str] = if given.is_some() { &["secrets-hostile"] } else { &["secrets-guest", "secrets-hostile"] };
    let built = build_guests(&root, crates);
    let core = given.unwrap_or_else(|| built.join("secrets_guest.wasm"));
    let component = encode(&core);
    use sha2::Digest;
    fs::write(out.with_extension("sha256"), sha2::Sha256::digest(&component)).unwrap();
    fs::write(&out, component).unwrap();

    let hostile = out_dir.join("hostile.wasm");
    fs::write(&hostile, encode(&built.join("secrets_hostile.wasm"))).unwrap();
    println!("cargo:rustc-env=SECRETS_HOSTILE_COMPONENT={}", hostile.display());
}

/// A core module encoded as a component.
fn encode(core: &Path) -> Vec<u8> {
    let module = fs::read(core).unwrap_or_else(|e| panic!("reading {}: {e}", core.display()));
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|enc| enc.validate(true).encode())
        .unwrap_or_else(|e| panic!("encoding {} as a component: {e:?}", core.display()))
}

/// Builds `crates` for wasm32 in release mode; returns where their `.wasm`
/// files are.
fn build_guests(root: &Path, crates: &[&str]) -> PathBuf {
    check_wasm_target();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("guest");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--quiet", "--release", "--locked", "--target", WASM_TARGET])
        .args(crates.iter().flat_map(|c| ["-p", c]))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags are for the host, not the guest.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the guest component");
    if !status.success() {
        panic!("building {crates:?} for {WASM_TARGET} failed; see the errors above");
    }
    target_dir.join(WASM_TARGET).join("release")
}

/// Fails early, naming the fix, when the wasm target's standard library is
/// not installed.
fn check_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().ok();
    let sysroot = sysroot.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot {
        let lib = Path::new(&sysroot).join("lib/rustlib").join(WASM_TARGET).join("lib");
        if !lib.is_dir() {
            panic!(
                "\n\nThe Rust target {WASM_TARGET} is not installed; the secrets component is built for it.\n\
                 Fix: rustup target add {WASM_TARGET}\n\n"
            );
        }
    }
}
