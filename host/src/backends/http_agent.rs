//! The ureq agent of every HTTP backend (OpenBao, AWS, GCP): one
//! configuration ([`config`]), and host name resolution that answers an
//! IP literal in place and looks a name up once per [`NAME_TTL`].
//!
//! ureq looks up the host of every request, before it looks for a pooled
//! keep-alive connection, and with a timeout in force (ours always is) it
//! does so on a thread started for that lookup. So every request to
//! `127.0.0.1` started a thread: on this project's 2-core test machine,
//! with OpenBao busy on the other core, that was a good part of the time a
//! `set` spent outside OpenBao's own requests (see BENCHMARKS.md).
//!
//! A name still goes through ureq's resolver (its lookup thread bounds a
//! hung DNS server by the request's timeout); its answer is reused for
//! [`NAME_TTL`]. That changes nothing a pooled connection would not:
//! ureq keeps a keep-alive connection to the address it first reached for
//! longer than that. Failed lookups are not kept.
//!
//! Uses ureq's `unversioned` resolver interface, which may change in a
//! minor release of ureq; `Cargo.lock` pins the one this is built for.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backends::batch::MAX_IN_FLIGHT;
use ureq::config::{Config, ConfigBuilder};
use ureq::typestate::AgentScope;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// How long a name's addresses are reused.
pub(crate) const NAME_TTL: Duration = Duration::from_secs(10);
/// Names kept at once; the backends talk to one or two hosts.
const MAX_NAMES: usize = 16;

/// Idle keep-alive connections kept to a host: a few calls' batches at
/// once (ureq keeps 3 by default, so a batch of 8 would open 5 new
/// connections every time).
const IDLE_CONNECTIONS: usize = 4 * MAX_IN_FLIGHT;

/// What every HTTP backend sets: statuses as answers (each backend maps
/// them to its errors), `timeout` per request, no redirects (a credential
/// is never sent elsewhere), [`IDLE_CONNECTIONS`], `user_agent`.
pub(crate) fn config(user_agent: &str, timeout: Duration) -> ConfigBuilder<AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .max_idle_connections(IDLE_CONNECTIONS)
        .max_idle_connections_per_host(IDLE_CONNECTIONS)
        .user_agent(user_agent)
}

/// A ureq agent with `config` that resolves through [`CachingResolver`].
pub(crate) fn agent(config: Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        CachingResolver::new(DefaultResolver::default()),
    )
}

/// IP literals in place, names through `R` and reused for a while.
pub(crate) struct CachingResolver<R> {
    names: R,
    ttl: Duration,
    /// `host:port` → its addresses and when they were looked up.
    known: Mutex<HashMap<String, (ResolvedSocketAddrs, Instant)>>,
}

impl<R> fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<R: Resolver> CachingResolver<R> {
    pub(crate) fn new(names: R) -> Self {
        Self::with_ttl(names, NAME_TTL)
    }

    fn with_ttl(names: R, ttl: Duration) -> Self {
        CachingResolver {
            names,
            ttl,
            known: Mutex::new(HashMap::new()),
        }
    }
}

/// The host (brackets of an IPv6 literal removed) and port of `uri`, the
/// port defaulting by scheme.
fn host_and_port(uri: &Uri) -> Option<(&str, u16)> {
    let authority = uri.authority()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })?;
    let host = authority.host();
    Some((
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host),
        port,
    ))
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some((host, port)) = host_and_port(uri) else {
            return self.names.resolve(uri, config, timeout);
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            if config
                .ip_family()
                .keep_wanted(std::iter::once(addr))
                .next()
                .is_some()
            {
                let mut addrs = self.empty();
                addrs.push(addr);
                return Ok(addrs);
            }
            // Not of the wanted family: ureq's resolver says so.
            return self.names.resolve(uri, config, timeout);
        }
        let key = format!("{host}:{port}");
        if let Some((addrs, at)) = self.known.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(addrs.clone());
        }
        let addrs = self.names.resolve(uri, config, timeout)?;
        let mut known = self.known.lock();
        if known.len() >= MAX_NAMES {
            known.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if known.len() >= MAX_NAMES {
                known.clear();
            }
        }
        known.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ureq::config::IpFamily;

    use super::*;

    /// Answers every name with 10.0.0.1 (port kept) and counts its calls.
    #[derive(Debug, Default, Clone)]
    struct Counting(Arc<AtomicUsize>);

    impl Resolver for Counting {
        fn resolve(
            &self,
            uri: &Uri,
            _: &Config,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let (host, port) = host_and_port(uri).ok_or(ureq::Error::HostNotFound)?;
            if host == "nowhere.invalid" {
                return Err(ureq::Error::HostNotFound);
            }
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from(([10, 0, 0, 1], port)));
            Ok(addrs)
        }
    }

    fn resolve(
        r: &CachingResolver<Counting>,
        config: &Config,
        uri: &str,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = uri.parse().unwrap();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::NotHappening,
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        r.resolve(&uri, config, timeout).map(|a| a.to_vec())
    }

    #[test]
    fn ip_literals_are_answered_without_a_lookup() {
        let counting = Counting::default();
        let r = CachingResolver::new(counting.clone());
        let config = Config::default();
        for (uri, addr) in [
            ("http://127.0.0.1:8200/v1/x", "127.0.0.1:8200"),
            ("https://[::1]:8443/v1/x", "[::1]:8443"),
            ("https://192.0.2.7/v1/x", "192.0.2.7:443"),
            ("http://192.0.2.7/v1/x", "192.0.2.7:80"),
        ] {
            assert_eq!(resolve(&r, &config, uri).unwrap(), [addr.parse::<SocketAddr>().unwrap()], "{uri}");
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_literal_of_an_unwanted_family_goes_to_the_resolver() {
        let counting = Counting::default();
        let r = CachingResolver::new(counting.clone());
        let config = Config::builder().ip_family(IpFamily::Ipv4Only).build();
        resolve(&r, &config, "http://[::1]:8200/").unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_name_is_looked_up_once_per_ttl_and_failures_are_not_kept() {
        let counting = Counting::default();
        let r = CachingResolver::new(counting.clone());
        let config = Config::default();
        let first = resolve(&r, &config, "https://vault.example:8200/v1/a").unwrap();
        assert_eq!(first, ["10.0.0.1:8200".parse().unwrap()]);
        assert_eq!(
            resolve(&r, &config, "https://vault.example:8200/v1/b").unwrap(),
            first
        );
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        // Another port is another entry.
        resolve(&r, &config, "https://vault.example:9200/").unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
        assert!(resolve(&r, &config, "https://nowhere.invalid/").is_err());
        assert!(resolve(&r, &config, "https://nowhere.invalid/").is_err());
        assert_eq!(counting.0.load(Ordering::SeqCst), 4);

        // Expired: looked up again.
        let counting = Counting::default();
        let r = CachingResolver::with_ttl(counting.clone(), Duration::ZERO);
        resolve(&r, &config, "https://vault.example/").unwrap();
        resolve(&r, &config, "https://vault.example/").unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let r = CachingResolver::new(Counting::default());
        let config = Config::default();
        for i in 0..100 {
            resolve(&r, &config, &format!("https://host{i}.example/")).unwrap();
        }
        assert!(r.known.lock().len() <= MAX_NAMES);
    }
}
