//! The bindings are generated from `wit/` at compile time: rebuild when it
//! changes (cargo does not know the macro read those files).
fn main() {
    println!("cargo:rerun-if-changed=../../wit");
}
