//! AWS credentials, in the SDK's order for the sources implemented here:
//! a `profile=` of the store URL (only that profile); else the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! else web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
//! exchanged with STS `AssumeRoleWithWebIdentity`, as on EKS); else the
//! static keys of profile `AWS_PROFILE` (or `default`) in
//! `~/.aws/credentials` / `~/.aws/config` (`AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`). **Not implemented**: the EC2 instance metadata
//! service, ECS/EKS container credentials (`AWS_CONTAINER_CREDENTIALS_*`),
//! SSO, `credential_process` and profiles that assume a role
//! (`role_arn` / `source_profile`): such a host needs one of the sources
//! above. No key or token ever shows in a message or in `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::backends::{VaultError, rejected};

/// Environment variables that hold AWS credentials: what a workload started
/// by `secrets run` must not inherit.
pub const CREDENTIAL_ENVS: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// A set of AWS keys.
#[derive(Clone)]
pub struct AwsKeys {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: SecretString,
    pub(crate) session_token: Option<SecretString>,
}

impl AwsKeys {
    /// Keys given in code.
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        AwsKeys {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: SecretString::from(secret_access_key.to_owned()),
            session_token: session_token.map(|t| SecretString::from(t.to_owned())),
        }
    }
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is not secret (it appears in every signed request);
        // shown shortened all the same.
        let id: String = self.access_key_id.chars().take(4).collect();
        write!(f, "AwsKeys({id}…, secret hidden{})", if self.session_token.is_some() { ", session token hidden" } else { "" })
    }
}

/// Where the credentials come from.
#[derive(Clone, Debug)]
pub enum AwsCredentials {
    /// The order in the module documentation.
    Default,
    /// These keys.
    Keys(AwsKeys),
}

enum Source {
    Fixed(AwsKeys),
    WebIdentity { role_arn: String, token_file: PathBuf, session_name: String, sts: String },
}

pub(crate) struct Provider {
    source: Source,
    what: String,
    cached: Mutex<Option<(AwsKeys, Instant)>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Provider {
    pub(crate) fn resolve(
        credentials: &AwsCredentials,
        profile: Option<&str>,
        region: &str,
        endpoint: Option<&str>,
    ) -> Result<Provider, VaultError> {
        let fixed = |keys: AwsKeys, what: String| Provider { source: Source::Fixed(keys), what, cached: Mutex::new(None) };
        if let AwsCredentials::Keys(keys) = credentials {
            return Ok(fixed(keys.clone(), "keys given in code".into()));
        }
        if let Some(name) = profile {
            return profile_keys(name)?.map(|k| fixed(k, format!("profile {name}"))).ok_or_else(|| {
                rejected(format!("the AWS profile {name:?} (profile=) has no aws_access_key_id / aws_secret_access_key in ~/.aws/credentials or ~/.aws/config (profiles that assume a role, SSO and credential_process are not supported)"))
            });
        }
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            let keys = AwsKeys {
                access_key_id: id,
                secret_access_key: SecretString::from(secret),
                session_token: env("AWS_SESSION_TOKEN").map(SecretString::from),
            };
            return Ok(fixed(keys, "the environment (AWS_ACCESS_KEY_ID)".into()));
        }
        if let (Some(token_file), Some(role_arn)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
            let sts = endpoint.map(str::to_owned).unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
            let what = format!("web identity (role {role_arn})");
            let session_name = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| format!("secrets-host-{}", std::process::id()));
            return Ok(Provider {
                source: Source::WebIdentity { role_arn, token_file: PathBuf::from(token_file), session_name, sts },
                what,
                cached: Mutex::new(None),
            });
        }
        let name = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        if let Some(keys) = profile_keys(&name)? {
            return Ok(fixed(keys, format!("profile {name}")));
        }
        Err(rejected(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or a profile with static keys (instance metadata, container credentials, SSO and credential_process are not supported by this backend)",
        ))
    }

    /// What the credentials are, for messages.
    pub(crate) fn describe(&self) -> &str {
        &self.what
    }

    pub(crate) fn keys(&self, agent: &ureq::Agent) -> Result<AwsKeys, VaultError> {
        match &self.source {
            Source::Fixed(keys) => Ok(keys.clone()),
            Source::WebIdentity { role_arn, token_file, session_name, sts } => {
                let mut cached = self.cached.lock();
                if let Some((keys, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(keys.clone());
                }
                let (keys, lifetime) = assume_role(agent, role_arn, token_file, session_name, sts)?;
                *cached = Some((keys.clone(), Instant::now() + lifetime));
                Ok(keys)
            }
        }
    }

    pub(crate) fn forget(&self) {
        *self.cached.lock() = None;
    }
}

/// Static keys of a profile, from the credentials file, then the config file.
fn profile_keys(name: &str) -> Result<Option<AwsKeys>, VaultError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let files = [
        (env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).or_else(|| home.clone().map(|h| h.join(".aws/credentials"))), name.to_owned()),
        (
            env("AWS_CONFIG_FILE").map(PathBuf::from).or_else(|| home.map(|h| h.join(".aws/config"))),
            if name == "default" { "default".to_owned() } else { format!("profile {name}") },
        ),
    ];
    for (path, section) in files {
        let Some(path) = path else { continue };
        let Ok(text) = std::fs::read_to_string(&path).map(Zeroizing::new) else { continue };
        let values = ini_section(&text, &section);
        let get = |k: &str| values.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) {
            return Ok(Some(AwsKeys {
                access_key_id: id,
                secret_access_key: SecretString::from(secret),
                session_token: get("aws_session_token").map(SecretString::from),
            }));
        }
    }
    Ok(None)
}

/// The `key = value` pairs of `[section]` in an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// The text of `<tag>...</tag>` in an XML answer.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

fn assume_role(
    agent: &ureq::Agent,
    role_arn: &str,
    token_file: &std::path::Path,
    session_name: &str,
    sts: &str,
) -> Result<(AwsKeys, Duration), VaultError> {
    let token = Zeroizing::new(std::fs::read_to_string(token_file).map_err(|e| {
        rejected(format!("cannot read the web identity token file {} (AWS_WEB_IDENTITY_TOKEN_FILE): {}", token_file.display(), e.kind()))
    })?);
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let body = Zeroizing::new(format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
        enc(role_arn),
        enc(session_name),
        enc(token.trim())
    ));
    let mut reply = agent
        .post(sts)
        .content_type("application/x-www-form-urlencoded")
        .send(body.as_bytes())
        .map_err(|e| VaultError::Unavailable(format!("cannot reach AWS STS at {sts}: {e}")))?;
    let status = reply.status().as_u16();
    let text = Zeroizing::new(
        reply.body_mut().with_config().limit(1 << 20).read_to_string().map_err(|e| VaultError::Unavailable(format!("AWS STS at {sts}: {e}")))?,
    );
    if status != 200 {
        let code = xml_text(&text, "Code").unwrap_or("");
        let err = format!("AWS STS at {sts} refused AssumeRoleWithWebIdentity for {role_arn} (HTTP {status} {code})");
        return Err(if status >= 500 || code.contains("Throttl") { VaultError::Unavailable(err) } else { rejected(err) });
    }
    let (Some(id), Some(secret), token) =
        (xml_text(&text, "AccessKeyId"), xml_text(&text, "SecretAccessKey"), xml_text(&text, "SessionToken"))
    else {
        return Err(VaultError::Other(format!("AWS STS at {sts} answered without credentials")));
    };
    let keys = AwsKeys {
        access_key_id: id.to_owned(),
        secret_access_key: SecretString::from(secret.to_owned()),
        session_token: token.map(|t| SecretString::from(t.to_owned())),
    };
    // STS gives an hour by default; renewed after 50 minutes.
    Ok((keys, Duration::from_secs(50 * 60)))
}

impl AwsKeys {
    pub(crate) fn identity(&self) -> aws_smithy_runtime_api::client::identity::Identity {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_owned(),
            self.session_token.as_ref().map(|t| t.expose_secret().to_owned()),
            None,
            "secrets-host",
        )
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_and_xml_fields() {
        let ini = "[default]\naws_access_key_id = A\n[profile x]\naws_access_key_id=B\naws_secret_access_key = s\n";
        assert_eq!(ini_section(ini, "profile x"), vec![("aws_access_key_id".into(), "B".into()), ("aws_secret_access_key".into(), "s".into())]);
        assert_eq!(xml_text("<a><AccessKeyId>K</AccessKeyId></a>", "AccessKeyId"), Some("K"));
        let keys = AwsKeys::new("AKIDCANARY", "canary-secret", Some("canary-token"));
        let shown = format!("{keys:?} {:?}", AwsCredentials::Keys(keys.clone()));
        assert!(!shown.contains("canary"), "{shown}");
    }
}
