//! Test-only: a hostile component of the `secrets-plugin` world. The host's
//! tests load it in place of the real one to show that the sandbox stops
//! each attack with a clear error, rolls its writes back, and keeps serving
//! other tenants. `set` chooses the attack by its instance id:
//!
//! | instance | what the component does |
//! |---|---|
//! | `loop` | stores an entry, then loops for ever |
//! | `grow` | stores an entry, then allocates memory without bound |
//! | `recurse` | stores an entry, then recurses without bound |
//! | `flood` | stores an entry, then calls the vault without end |
//! | `big` | stores an entry larger than the host allows |
//! | `long-key` | stores under a key longer than the host allows, and ignores the error |
//! | `escape` | stores under keys built to land in another tenant's space |
//!
//! Every other export fails with `not-found`. Natively the crate is empty.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "wit-bindgen's generated exports")]
mod component {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "secrets-plugin",
    });

    use cp::secrets::vault;
    use exports::cp::secrets::secrets::{self as wit, Guest};

    struct Hostile;
    export!(Hostile);

    fn meta(req: &wit::SetRequest) -> wit::SecretMeta {
        wit::SecretMeta {
            instance_id: req.instance_id.clone(),
            key: req.key.clone(),
            kind: req.kind,
            version: 1,
            created_at: 0,
            size: 0,
            not_after: None,
            deleted_at: None,
            destroyed: false,
        }
    }

    #[allow(unconditional_recursion, reason = "the attack")]
    fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
        pad[(depth % 256) as usize] = depth as u8;
        recurse(std::hint::black_box(depth + 1), std::hint::black_box(pad)) + 1
    }

    impl Guest for Hostile {
        fn set(req: wit::SetRequest) -> Result<wit::SecretMeta, wit::Error> {
            let _ = vault::store("marker", b"written before the attack");
            match req.instance_id.as_str() {
                "loop" => loop {
                    std::hint::black_box(&req);
                },
                "grow" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "recurse" => {
                    let mut pad = [0u8; 256];
                    let n = recurse(0, &mut pad);
                    Err(wit::Error::Conflict(format!("returned from recursion {n}")))
                }
                "flood" => loop {
                    let _ = std::hint::black_box(vault::retrieve("marker"));
                },
                "big" => {
                    let _ = vault::store("big", &vec![7u8; 9 << 20]);
                    Ok(meta(&req))
                }
                "long-key" => {
                    // A breach of a per-call cap traps: there is no error
                    // value to ignore and carry on after.
                    let _ = vault::store(&"k".repeat(2000), b"v");
                    Ok(meta(&req))
                }
                "escape" => {
                    let victim = req.key.as_str(); // hex of the victim tenant
                    for key in [
                        format!("../../t/{victim}/i/776562/index"),
                        format!("/t/{victim}/i/776562/index"),
                        format!("t/{victim}/i/776562/index"),
                        format!("\0t/{victim}/i/776562/index"),
                    ] {
                        vault::store(&key, br#"{"format":1,"keys":{}}"#).map_err(|e| wit::Error::Vault(e))?;
                    }
                    Ok(meta(&req))
                }
                _ => Err(wit::Error::NotFound),
            }
        }

        fn get(_: String, _: String) -> Result<wit::Secret, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn get_version(_: String, _: String, _: u32) -> Result<wit::Secret, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn list(_: String) -> Result<Vec<wit::SecretMeta>, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn versions(_: String, _: String) -> Result<Vec<wit::SecretMeta>, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn inject(_: String) -> Result<Vec<(String, String)>, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn mounts(_: String) -> Result<Vec<wit::Mount>, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn delete(_: String, _: String) -> Result<(), wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn rotate(_: String, _: String) -> Result<u32, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn delete_versions(_: String, _: String, _: Vec<u32>) -> Result<(), wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn undelete(_: String, _: String, _: Vec<u32>) -> Result<(), wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn destroy(_: String, _: String, _: Vec<u32>) -> Result<(), wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn rollback(_: String, _: String, _: u32) -> Result<wit::SecretMeta, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn instances() -> Result<Vec<String>, wit::Error> {
            Err(wit::Error::NotFound)
        }

        fn rotate_instance(_: String) -> Result<Vec<(String, u32)>, wit::Error> {
            Err(wit::Error::NotFound)
        }
    }
}
