//! The text forms of an instance's env secrets, shared by the CLI's
//! `inject --format` and the HTTP API's `/env?format=`.

use std::collections::BTreeMap;

use crate::SecretValue;

/// `NAME="value"` lines: inside double quotes, `\`, `"`, `$` and `` ` ``
/// are escaped with a backslash; everything else, newlines included, stands
/// as it is. bash and POSIX `sh` read it back exactly with `source`/`.`.
/// (Dotenv libraries differ on escapes: python-dotenv, for one, keeps the
/// backslash before `$`; use JSON for those.)
pub fn dotenv(env: &BTreeMap<String, SecretValue>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in env {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        for &b in value.expose() {
            if matches!(b, b'\\' | b'"' | b'$' | b'`') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
    }
    out
}
