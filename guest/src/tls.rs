//! Validation of `tls` secrets: a PEM bundle holding a certificate chain
//! (leaf first) and the leaf's private key.
//!
//! Everything here is pure Rust and works the same natively and in
//! WebAssembly. Error messages name the rule that failed and never contain
//! any part of the value: no base64, no key bytes, and PEM labels only when
//! they look like a label (a malformed BEGIN line could otherwise swallow key
//! material into the "label").

use der::Decode;
use der::asn1::{ObjectIdentifier, OctetStringRef};

/// What validation learned about a TLS bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// leaf certificate's notAfter, unix seconds
    pub not_after: i64,
}

/// The bundle split for mounting: certificate chain PEM (leaf first) and
/// private key PEM, LF line endings.
pub struct TlsParts {
    pub certificates_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
}

const LABEL_CERTIFICATE: &str = "CERTIFICATE";
const LABEL_PKCS8: &str = "PRIVATE KEY";
const LABEL_PKCS1: &str = "RSA PRIVATE KEY";
const LABEL_SEC1: &str = "EC PRIVATE KEY";
const LABEL_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";

const SUPPORTED: &str = "RSA, ECDSA P-256, ECDSA P-384, Ed25519";

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// Validate a TLS bundle: PEM blocks of the allowed kinds, at least one
/// X.509 certificate, exactly one unencrypted private key, and that key
/// matching the leaf (first) certificate.
pub fn check(value: &[u8]) -> Result<TlsInfo, String> {
    let bundle = parse_bundle(value)?;

    let mut certificates = Vec::with_capacity(bundle.certificates.len());
    for (index, block) in bundle.certificates.iter().enumerate() {
        let certificate = x509_cert::Certificate::from_der(block.contents()).map_err(|_| {
            format!(
                "tls certificate {} (counting the leaf as 1) is not a valid X.509 certificate",
                index + 1
            )
        })?;
        certificates.push(certificate);
    }
    let leaf = &certificates[0];

    let leaf_key = leaf_public_key(&leaf.tbs_certificate.subject_public_key_info)?;
    let private_key = private_public_key(&bundle.key, &leaf_key)?;
    if !leaf_key.matches(&private_key) {
        return Err("tls private key does not match the leaf certificate".to_string());
    }

    let not_after = leaf
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    let not_after = i64::try_from(not_after)
        .map_err(|_| "tls leaf certificate notAfter is out of range".to_string())?;
    Ok(TlsInfo { not_after })
}

/// Split a bundle into the certificate chain (in the order given, leaf
/// first) and the private key, each re-encoded as PEM with LF line endings.
/// Meant for values that passed [`check`]; other input gives an error, never
/// a panic.
pub fn split(value: &[u8]) -> Result<TlsParts, String> {
    let bundle = parse_bundle(value)?;
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    let mut certificates_pem = String::new();
    for block in &bundle.certificates {
        let clean = pem::Pem::new(LABEL_CERTIFICATE, block.contents());
        certificates_pem.push_str(&pem::encode_config(&clean, config));
    }
    let key = pem::Pem::new(bundle.key.tag(), bundle.key.contents());
    let private_key_pem = pem::encode_config(&key, config);
    Ok(TlsParts {
        certificates_pem: certificates_pem.into_bytes(),
        private_key_pem: private_key_pem.into_bytes(),
    })
}

/// The PEM blocks of a bundle, sorted by kind.
struct Bundle {
    /// In order of appearance; never empty.
    certificates: Vec<pem::Pem>,
    /// The one private key block (tag PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY).
    key: pem::Pem,
}

fn parse_bundle(value: &[u8]) -> Result<Bundle, String> {
    let text = core::str::from_utf8(value)
        .map_err(|_| "tls value must be PEM text (UTF-8)".to_string())?;
    // The pem crate's own error messages may quote header lines or labels,
    // which can hold key material when the framing is broken: map them to
    // fixed sentences.
    let blocks = pem::parse_many(text).map_err(|e| {
        match e {
            pem::PemError::MismatchedTags(..) => {
                "tls value has a PEM block whose BEGIN and END labels differ"
            }
            pem::PemError::InvalidData(_) => {
                "tls value has a PEM block whose content is not valid base64"
            }
            pem::PemError::InvalidHeader(_) => {
                "tls value has a PEM block with a malformed header line"
            }
            pem::PemError::NotUtf8(_) => "tls value must be PEM text (UTF-8)",
            _ => "tls value has a malformed PEM block",
        }
        .to_string()
    })?;
    if blocks.is_empty() {
        return Err("tls value holds no PEM blocks".to_string());
    }

    let mut certificates = Vec::new();
    let mut keys = Vec::new();
    for block in blocks {
        let tag = block.tag();
        if tag == LABEL_ENCRYPTED || is_legacy_encrypted(&block) {
            return Err(
                "tls private key is encrypted; encrypted keys are not supported because a container cannot use them without a passphrase"
                    .to_string(),
            );
        }
        match tag {
            LABEL_CERTIFICATE => certificates.push(block),
            LABEL_PKCS8 | LABEL_PKCS1 | LABEL_SEC1 => keys.push(block),
            other => {
                return Err(match printable_label(other) {
                    Some(label) => format!(
                        "tls value holds a PEM block of unsupported kind \"{label}\" (allowed: CERTIFICATE, PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY)"
                    ),
                    None => "tls value holds a PEM block with a malformed label".to_string(),
                });
            }
        }
    }
    if certificates.is_empty() {
        return Err("tls value must hold at least one CERTIFICATE block, found 0".to_string());
    }
    if keys.len() != 1 {
        return Err(format!(
            "tls value must hold exactly one private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), found {}",
            keys.len()
        ));
    }
    let key = keys.pop().expect("one key");
    Ok(Bundle { certificates, key })
}

/// Traditional OpenSSL encryption: `Proc-Type: 4,ENCRYPTED` / `DEK-Info` headers.
fn is_legacy_encrypted(block: &pem::Pem) -> bool {
    block.headers().iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("DEK-Info")
            || (name.eq_ignore_ascii_case("Proc-Type")
                && value.to_ascii_uppercase().contains("ENCRYPTED"))
    })
}

/// A label fit to quote in an error: short, upper-case letters, digits,
/// spaces and dashes only.
fn printable_label(label: &str) -> Option<&str> {
    let plausible = !label.is_empty()
        && label.len() <= 48
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'-');
    plausible.then_some(label)
}

/// A public key in comparable form.
enum PublicKey {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Ed25519([u8; 32]),
}

impl PublicKey {
    fn matches(&self, other: &PublicKey) -> bool {
        match (self, other) {
            (
                PublicKey::Rsa {
                    modulus: n1,
                    exponent: e1,
                },
                PublicKey::Rsa {
                    modulus: n2,
                    exponent: e2,
                },
            ) => n1 == n2 && e1 == e2,
            (PublicKey::P256(a), PublicKey::P256(b)) => a == b,
            (PublicKey::P384(a), PublicKey::P384(b)) => a == b,
            (PublicKey::Ed25519(a), PublicKey::Ed25519(b)) => a == b,
            _ => false,
        }
    }

    fn curve(&self) -> Option<ObjectIdentifier> {
        match self {
            PublicKey::P256(_) => Some(OID_P256),
            PublicKey::P384(_) => Some(OID_P384),
            _ => None,
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid {
        OID_RSA => "RSA".to_string(),
        OID_RSA_PSS => "RSASSA-PSS".to_string(),
        OID_EC_PUBLIC_KEY => "EC".to_string(),
        OID_DSA => "DSA".to_string(),
        OID_ED25519 => "Ed25519".to_string(),
        OID_ED448 => "Ed448".to_string(),
        OID_X25519 => "X25519".to_string(),
        OID_X448 => "X448".to_string(),
        other => format!("OID {other}"),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid {
        OID_P256 => "P-256".to_string(),
        OID_P384 => "P-384".to_string(),
        OID_P521 => "P-521".to_string(),
        OID_SECP256K1 => "secp256k1".to_string(),
        other => format!("OID {other}"),
    }
}

fn unsupported(whose: &str, what: &str) -> String {
    format!("tls {whose} algorithm {what} is not supported (supported: {SUPPORTED})")
}

/// The leaf certificate's public key.
fn leaf_public_key(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<PublicKey, String> {
    const WHOSE: &str = "leaf certificate key";
    let malformed = || "tls leaf certificate public key is malformed".to_string();
    let key_bytes = spki.subject_public_key.as_bytes().ok_or_else(malformed)?;
    match spki.algorithm.oid {
        OID_RSA => {
            let key = pkcs1::RsaPublicKey::from_der(key_bytes).map_err(|_| malformed())?;
            Ok(PublicKey::Rsa {
                modulus: strip_leading_zeros(key.modulus.as_bytes()),
                exponent: strip_leading_zeros(key.public_exponent.as_bytes()),
            })
        }
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(malformed)?;
            match curve {
                OID_P256 => p256::PublicKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P256)
                    .map_err(|_| malformed()),
                OID_P384 => p384::PublicKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P384)
                    .map_err(|_| malformed()),
                other => Err(unsupported(WHOSE, &format!("ECDSA {}", curve_name(other)))),
            }
        }
        OID_ED25519 => {
            let bytes: [u8; 32] = key_bytes.try_into().map_err(|_| malformed())?;
            Ok(PublicKey::Ed25519(bytes))
        }
        other => Err(unsupported(WHOSE, &algorithm_name(other))),
    }
}

/// The public key belonging to the private key block. `leaf` supplies the
/// curve when a SEC1 key omits its parameters.
fn private_public_key(block: &pem::Pem, leaf: &PublicKey) -> Result<PublicKey, String> {
    const WHOSE: &str = "private key";
    let malformed = || format!("tls private key is not a valid {} block", block.tag());
    match block.tag() {
        LABEL_PKCS1 => {
            let key = pkcs1::RsaPrivateKey::from_der(block.contents()).map_err(|_| malformed())?;
            rsa_public(&key)
        }
        LABEL_SEC1 => {
            let key = sec1::EcPrivateKey::from_der(block.contents()).map_err(|_| malformed())?;
            let curve = key
                .parameters
                .and_then(|p| p.named_curve())
                .or_else(|| leaf.curve())
                .ok_or_else(|| "tls EC private key does not name its curve".to_string())?;
            ec_public(curve, key.private_key).ok_or_else(malformed)?
        }
        LABEL_PKCS8 => {
            let info =
                pkcs8::PrivateKeyInfo::from_der(block.contents()).map_err(|_| malformed())?;
            match info.algorithm.oid {
                OID_RSA => {
                    let key = pkcs1::RsaPrivateKey::from_der(info.private_key)
                        .map_err(|_| malformed())?;
                    rsa_public(&key)
                }
                OID_EC_PUBLIC_KEY => {
                    let outer_curve = match info.algorithm.parameters {
                        Some(p) => {
                            Some(p.decode_as::<ObjectIdentifier>().map_err(|_| malformed())?)
                        }
                        None => None,
                    };
                    let key =
                        sec1::EcPrivateKey::from_der(info.private_key).map_err(|_| malformed())?;
                    let inner_curve = key.parameters.and_then(|p| p.named_curve());
                    let curve = match (outer_curve, inner_curve) {
                        (Some(a), Some(b)) if a != b => return Err(malformed()),
                        (Some(a), _) | (None, Some(a)) => a,
                        (None, None) => leaf.curve().ok_or_else(|| {
                            "tls EC private key does not name its curve".to_string()
                        })?,
                    };
                    ec_public(curve, key.private_key).ok_or_else(malformed)?
                }
                OID_ED25519 => {
                    let seed =
                        OctetStringRef::from_der(info.private_key).map_err(|_| malformed())?;
                    let seed: &[u8; 32] = seed.as_bytes().try_into().map_err(|_| malformed())?;
                    let signing = ed25519_dalek::SigningKey::from_bytes(seed);
                    Ok(PublicKey::Ed25519(signing.verifying_key().to_bytes()))
                }
                other => Err(unsupported(WHOSE, &algorithm_name(other))),
            }
        }
        // parse_bundle admits no other key label.
        _ => Err(malformed()),
    }
}

/// The public half of an RSA private key, after checking that the key is
/// one: p·q = n, d·e ≡ 1 modulo p−1 and q−1 (so modulo λ(n)), and the CRT
/// values d mod (p−1), d mod (q−1), q⁻¹ mod p. Matching n and e alone would
/// accept a key that signs nothing the certificate verifies.
fn rsa_public(key: &pkcs1::RsaPrivateKey<'_>) -> Result<PublicKey, String> {
    use num_bigint::BigUint;
    let int = |u: pkcs1::UintRef<'_>| BigUint::from_bytes_be(u.as_bytes());
    let (n, e, d) = (int(key.modulus), int(key.public_exponent), int(key.private_exponent));
    let (p, q) = (int(key.prime1), int(key.prime2));
    let one = BigUint::from(1u8);
    let two = BigUint::from(2u8);
    let consistent = p > two
        && q > two
        && &p * &q == n
        && {
            let (p1, q1) = (&p - &one, &q - &one);
            let de = &d * &e;
            &de % &p1 == one
                && &de % &q1 == one
                && int(key.exponent1) == &d % &p1
                && int(key.exponent2) == &d % &q1
                && (int(key.coefficient) * &q) % &p == one
        };
    if !consistent {
        return Err("tls RSA private key is inconsistent (its primes, exponents or CRT values do not belong together)".into());
    }
    Ok(PublicKey::Rsa {
        modulus: strip_leading_zeros(key.modulus.as_bytes()),
        exponent: strip_leading_zeros(key.public_exponent.as_bytes()),
    })
}

/// `None` when the scalar is invalid for the curve; `Some(Err)` when the
/// curve is unsupported.
fn ec_public(curve: ObjectIdentifier, scalar: &[u8]) -> Option<Result<PublicKey, String>> {
    match curve {
        OID_P256 => p256::SecretKey::from_slice(scalar)
            .ok()
            .map(|k| Ok(PublicKey::P256(k.public_key()))),
        OID_P384 => p384::SecretKey::from_slice(scalar)
            .ok()
            .map(|k| Ok(PublicKey::P384(k.public_key()))),
        other => Some(Err(unsupported(
            "private key",
            &format!("ECDSA {}", curve_name(other)),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../testdata/", $name, ".pem")).as_slice()
        };
    }

    fn bundle(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }

    /// A base64 line from the middle of a key fixture: it must never appear
    /// in an error message.
    fn key_line(key: &[u8]) -> String {
        let text = core::str::from_utf8(key).unwrap();
        let line = text
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with("-----") && !l.contains(':'))
            .unwrap();
        assert!(line.len() >= 40, "fixture line too short to be distinctive");
        line.to_string()
    }

    fn assert_err_contains(value: &[u8], needle: &str, key: &[u8]) -> String {
        let err = check(value).expect_err("check must fail");
        assert!(
            err.contains(needle),
            "error {err:?} should contain {needle:?}"
        );
        let secret = key_line(key);
        assert!(!err.contains(&secret), "error leaks key material: {err:?}");
        assert!(
            !err.contains(&secret[..16]),
            "error leaks key material: {err:?}"
        );
        err
    }

    // notAfter of the fixtures, from `openssl x509 -noout -enddate`:
    // "Nov  6 03:17:25 2126 GMT" for the self-signed leaves made with -days 36500.
    const NOT_AFTER_2126: i64 = 4_949_608_645;
    // chain-leaf-cert.pem: "Mar  4 03:17:35 2029 GMT" (UTCTime encoding)
    const NOT_AFTER_CHAIN_LEAF: i64 = 1_867_288_655;
    // expired-cert.pem: "Jan  2 03:04:05 2021 GMT"
    const NOT_AFTER_EXPIRED: i64 = 1_609_556_645;

    #[test]
    fn rsa_pkcs1_ok() {
        let v = bundle(&[fixture!("rsa-cert"), fixture!("rsa-pkcs1-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    /// A PKCS#1 key with the certificate's n and e but made-up private
    /// values (d = p = q = 1, or a real key with one CRT value changed) is
    /// refused: it matches by n and e, yet signs nothing that verifies.
    #[test]
    fn inconsistent_rsa_keys_are_refused() {
        use der::{Decode, Encode};
        let real = pem::parse(fixture!("rsa-pkcs1-key")).unwrap();
        let key = pkcs1::RsaPrivateKey::from_der(real.contents()).unwrap();
        let one = pkcs1::UintRef::new(&[1]).unwrap();
        let forged = pkcs1::RsaPrivateKey {
            private_exponent: one,
            prime1: one,
            prime2: one,
            exponent1: one,
            exponent2: one,
            coefficient: one,
            ..key.clone()
        };
        let mut bad_crt = key.exponent1.as_bytes().to_vec();
        *bad_crt.last_mut().unwrap() ^= 1;
        let bad_crt = pkcs1::RsaPrivateKey { exponent1: pkcs1::UintRef::new(&bad_crt).unwrap(), ..key.clone() };
        for (label, k) in [("d=p=q=1", forged), ("CRT exponent", bad_crt)] {
            let der = k.to_der().unwrap();
            let block = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der));
            let err = check(&bundle(&[fixture!("rsa-cert"), block.as_bytes()])).unwrap_err();
            assert!(err.contains("inconsistent"), "{label}: {err}");
        }
        // The unmodified key re-encoded the same way still passes.
        let block = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", key.to_der().unwrap()));
        assert!(check(&bundle(&[fixture!("rsa-cert"), block.as_bytes()])).is_ok());
    }

    #[test]
    fn rsa_pkcs8_ok() {
        let v = bundle(&[fixture!("rsa-cert"), fixture!("rsa-pkcs8-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn key_before_certificate_ok() {
        let v = bundle(&[fixture!("rsa-pkcs8-key"), fixture!("rsa-cert")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn p256_sec1_ok() {
        let v = bundle(&[fixture!("p256-cert"), fixture!("p256-sec1-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn p256_pkcs8_ok() {
        let v = bundle(&[fixture!("p256-cert"), fixture!("p256-pkcs8-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn p256_compressed_point_in_certificate_ok() {
        let v = bundle(&[fixture!("p256c-cert"), fixture!("p256c-sec1-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn p384_sec1_ok() {
        let v = bundle(&[fixture!("p384-cert"), fixture!("p384-sec1-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn p384_pkcs8_ok() {
        let v = bundle(&[fixture!("p384-cert"), fixture!("p384-pkcs8-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn ed25519_ok() {
        let v = bundle(&[fixture!("ed25519-cert"), fixture!("ed25519-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn chain_ok_and_not_after_is_the_leafs() {
        let v = bundle(&[
            fixture!("chain-leaf-cert"),
            fixture!("chain-intermediate-cert"),
            fixture!("chain-leaf-key"),
        ]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_CHAIN_LEAF
            })
        );
    }

    #[test]
    fn expired_certificate_is_accepted_and_reported() {
        let v = bundle(&[fixture!("expired-cert"), fixture!("expired-sec1-key")]);
        assert_eq!(
            check(&v),
            Ok(TlsInfo {
                not_after: NOT_AFTER_EXPIRED
            })
        );
    }

    #[test]
    fn crlf_line_endings_ok() {
        let v = bundle(&[fixture!("p256-cert"), fixture!("p256-sec1-key")]);
        let crlf = String::from_utf8(v).unwrap().replace('\n', "\r\n");
        assert_eq!(
            check(crlf.as_bytes()),
            Ok(TlsInfo {
                not_after: NOT_AFTER_2126
            })
        );
    }

    #[test]
    fn key_of_another_certificate_mismatch() {
        for (cert, key) in [
            (fixture!("rsa-cert"), fixture!("chain-leaf-key")),
            (fixture!("p256-cert"), fixture!("p256c-sec1-key")),
            (fixture!("p384-cert"), fixture!("p256-sec1-key")),
            (fixture!("ed25519-cert"), fixture!("rsa-pkcs8-key")),
            // the intermediate first makes it the leaf
            (
                &bundle(&[
                    fixture!("chain-intermediate-cert"),
                    fixture!("chain-leaf-cert"),
                ])[..],
                fixture!("chain-leaf-key"),
            ),
        ] {
            let v = bundle(&[cert, key]);
            let err = assert_err_contains(&v, "does not match", key);
            assert_eq!(err, "tls private key does not match the leaf certificate");
        }
    }

    #[test]
    fn two_keys_rejected() {
        let key = fixture!("rsa-pkcs1-key");
        let v = bundle(&[fixture!("rsa-cert"), key, fixture!("rsa-pkcs8-key")]);
        let err = assert_err_contains(&v, "exactly one private key", key);
        assert!(err.contains("found 2"), "{err}");
    }

    #[test]
    fn no_key_rejected() {
        let err = check(fixture!("rsa-cert")).unwrap_err();
        assert!(
            err.contains("exactly one private key") && err.contains("found 0"),
            "{err}"
        );
    }

    #[test]
    fn zero_certificates_rejected() {
        let key = fixture!("rsa-pkcs1-key");
        let err = assert_err_contains(key, "at least one CERTIFICATE", key);
        assert!(err.contains("found 0"), "{err}");
    }

    #[test]
    fn no_pem_blocks_rejected() {
        assert_eq!(check(b"").unwrap_err(), "tls value holds no PEM blocks");
        assert_eq!(
            check(b"just some text\n").unwrap_err(),
            "tls value holds no PEM blocks"
        );
    }

    #[test]
    fn not_utf8_rejected() {
        let err = check(&[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn encrypted_pkcs8_key_rejected() {
        let key = fixture!("p256-encrypted-pkcs8-key");
        let v = bundle(&[fixture!("p256-cert"), key]);
        let err = assert_err_contains(&v, "encrypted", key);
        assert!(err.contains("passphrase"), "{err}");
    }

    #[test]
    fn legacy_encrypted_key_rejected() {
        let key = fixture!("p256-encrypted-legacy-key");
        let v = bundle(&[fixture!("p256-cert"), key]);
        assert_err_contains(&v, "encrypted", key);
    }

    #[test]
    fn garbage_certificate_rejected() {
        let garbage = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", b"this is certainly not DER".to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let key = fixture!("rsa-pkcs1-key");
        let v = bundle(&[fixture!("rsa-cert"), garbage.as_bytes(), key]);
        let err = assert_err_contains(&v, "not a valid X.509 certificate", key);
        assert!(err.contains("certificate 2"), "{err}");
        let v = bundle(&[garbage.as_bytes(), key]);
        let err = assert_err_contains(&v, "not a valid X.509 certificate", key);
        assert!(err.contains("certificate 1"), "{err}");
    }

    #[test]
    fn invalid_base64_rejected() {
        let key = fixture!("rsa-pkcs1-key");
        let broken = String::from_utf8(bundle(&[fixture!("rsa-cert"), key]))
            .unwrap()
            .replacen("MII", "M*I", 2);
        assert_err_contains(broken.as_bytes(), "not valid base64", key);
    }

    #[test]
    fn garbage_key_rejected() {
        let garbage = pem::encode_config(
            &pem::Pem::new("EC PRIVATE KEY", b"nope".to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let v = bundle(&[fixture!("p256-cert"), garbage.as_bytes()]);
        assert_eq!(
            check(&v).unwrap_err(),
            "tls private key is not a valid EC PRIVATE KEY block"
        );
    }

    #[test]
    fn unknown_tag_rejected() {
        let key = fixture!("rsa-pkcs1-key");
        let other = pem::encode_config(
            &pem::Pem::new("X509 CRL", b"whatever".to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let v = bundle(&[fixture!("rsa-cert"), key, other.as_bytes()]);
        let err = assert_err_contains(&v, "unsupported kind \"X509 CRL\"", key);
        assert!(err.contains("allowed"), "{err}");
    }

    #[test]
    fn malformed_label_is_not_quoted() {
        // A BEGIN line without its closing dashes swallows the key body into
        // the "label": the error must not quote it.
        let key = fixture!("rsa-pkcs1-key");
        let text = core::str::from_utf8(key).unwrap().replacen(
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY",
            1,
        );
        for v in [
            bundle(&[fixture!("rsa-cert"), text.as_bytes()]),
            bundle(&[text.as_bytes(), fixture!("rsa-cert")]),
        ] {
            let err = check(&v).unwrap_err();
            assert!(
                !err.contains(&key_line(key)[..16]),
                "error leaks key material: {err:?}"
            );
        }
        assert_eq!(printable_label("X509 CRL"), Some("X509 CRL"));
        assert_eq!(printable_label("RSA PRIVATE KEY\nMIIEpAIBAAKCAQEA"), None);
        assert_eq!(printable_label("private key"), None);
        assert_eq!(printable_label(&"A".repeat(49)), None);
    }

    #[test]
    fn unsupported_algorithms_rejected() {
        for (cert, key, name) in [
            (
                fixture!("p521-cert"),
                fixture!("p521-sec1-key"),
                "ECDSA P-521",
            ),
            (fixture!("ed448-cert"), fixture!("ed448-key"), "Ed448"),
            (
                fixture!("rsapss-cert"),
                fixture!("rsapss-key"),
                "RSASSA-PSS",
            ),
        ] {
            let v = bundle(&[cert, key]);
            let err = assert_err_contains(&v, "is not supported", key);
            assert!(err.contains(name), "{err}");
            assert!(err.contains(SUPPORTED), "{err}");
        }
        // a supported certificate with an unsupported key
        let key = fixture!("p521-sec1-key");
        let v = bundle(&[fixture!("p256-cert"), key]);
        let err = assert_err_contains(
            &v,
            "private key algorithm ECDSA P-521 is not supported",
            key,
        );
        assert!(err.contains(SUPPORTED), "{err}");
    }

    #[test]
    fn split_reencodes_with_lf() {
        let key = fixture!("chain-leaf-key");
        let chain = bundle(&[
            fixture!("chain-leaf-cert"),
            fixture!("chain-intermediate-cert"),
        ]);
        // CRLF input with junk text between blocks
        let input = String::from_utf8(bundle(&[
            b"subject=leaf\n",
            fixture!("chain-leaf-cert"),
            key,
            b"\n# comment\n",
            fixture!("chain-intermediate-cert"),
        ]))
        .unwrap()
        .replace('\n', "\r\n");
        let parts = split(input.as_bytes()).unwrap();
        assert_eq!(parts.certificates_pem, chain);
        assert_eq!(parts.private_key_pem, key);
        assert!(!parts.certificates_pem.contains(&b'\r'));
        // the split parts check out when put back together
        assert_eq!(
            check(&bundle(&[&parts.certificates_pem, &parts.private_key_pem])),
            Ok(TlsInfo {
                not_after: NOT_AFTER_CHAIN_LEAF
            })
        );
    }

    #[test]
    fn split_keeps_key_label() {
        for key in [fixture!("rsa-pkcs1-key"), fixture!("rsa-pkcs8-key")] {
            let parts = split(&bundle(&[fixture!("rsa-cert"), key])).unwrap();
            assert_eq!(parts.private_key_pem, key);
            assert_eq!(parts.certificates_pem, fixture!("rsa-cert"));
        }
        let parts = split(&bundle(&[fixture!("p256-cert"), fixture!("p256-sec1-key")])).unwrap();
        assert!(
            parts
                .private_key_pem
                .starts_with(b"-----BEGIN EC PRIVATE KEY-----\n")
        );
    }

    #[test]
    fn split_rejects_bad_input_without_panicking() {
        assert!(split(b"").is_err());
        assert!(split(&[0xff]).is_err());
        assert!(split(fixture!("rsa-cert")).is_err());
        assert!(split(fixture!("rsa-pkcs1-key")).is_err());
        assert!(
            split(&bundle(&[
                fixture!("p256-cert"),
                fixture!("p256-encrypted-pkcs8-key")
            ]))
            .is_err()
        );
    }
}
