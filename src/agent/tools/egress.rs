//! Where webhook tools and webhook deliveries may connect: public addresses
//! only, unless the operator allows private ones (`--webhook-allow-private
//! true` for tools) or lists some (`--egress-allow 127.0.0.1/32,…`, for
//! both: those networks are reachable, every other non-public one is not).
//!
//! A webhook URL is chosen by any holder of a `tools:write` key, and the
//! gateway (or worker) calls it from inside the deployment's network, so
//! without a filter a tenant could make weir POST to its own store, Redis,
//! a cloud metadata endpoint or anything else on the private network (SSRF).
//!
//! The check is made on the addresses actually connected to, not on the URL
//! text: host names go through [`PublicOnly`], a DNS resolver that drops
//! non-public addresses (so a name that resolves to 127.0.0.1, or is
//! re-pointed there after a first check, cannot be reached: no DNS rebinding
//! window), and IP literals, which reqwest connects to without resolving, are
//! checked by [`check_url`] before the request. Redirects are not followed:
//! a public webhook answering `307 Location: http://10.0.0.5/` would
//! otherwise lead the client to an IP literal nobody checked.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address a webhook may reach by default: not loopback,
/// private, link-local, carrier-grade NAT, unique-local, multicast,
/// unspecified or otherwise reserved. IPv4-mapped IPv6 addresses are judged
/// by their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || a >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || ip.to_ipv4().is_some_and(|v4| !public_v4(v4))) // IPv4-compatible ::a.b.c.d
}

/// Whether `ip` may be reached: public, or inside one of `allow`.
pub fn is_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let plain = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    is_public(ip) || allow.iter().any(|n| n.contains(&ip) || n.contains(&plain))
}

/// Refuses a URL whose host is a non-public IP literal (names are checked
/// when they resolve, by [`PublicOnly`]).
pub fn check_url(url: &reqwest::Url) -> Result<(), String> {
    check_url_allowing(url, &[])
}

/// [`check_url`], letting the networks of `allow` through.
pub fn check_url_allowing(url: &reqwest::Url, allow: &[IpNet]) -> Result<(), String> {
    // The URL parser has already normalised IPv4 spellings such as
    // `2130706433` or `0x7f.1` to dotted form; IPv6 hosts come bracketed.
    let host = url.host_str().unwrap_or_default();
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if is_allowed(ip, allow) {
        Ok(())
    } else {
        Err(blocked(&ip.to_string()))
    }
}

fn blocked(host: &str) -> String {
    format!(
        "webhook address {host} is not public; the operator can allow it with --egress-allow (or, for webhook tools, --webhook-allow-private true)"
    )
}

/// A DNS resolver that only hands out public addresses (and those of its
/// allow-list).
#[derive(Debug, Clone, Default)]
pub struct PublicOnly {
    pub allow: Arc<[IpNet]>,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_allowed(a.ip(), &allow))
                .collect();
            if public.is_empty() && !found.is_empty() {
                return Err(blocked(&host).into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// How webhook tools (and webhook deliveries) are called: the client, and
/// which private addresses are allowed (unless all are, the client
/// resolves through [`PublicOnly`] and IP literals are checked before each
/// call with [`Webhooks::check`]).
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub client: reqwest::Client,
    pub allow_private: bool,
    /// Non-public networks reachable anyway (`--egress-allow`).
    pub allow: Arc<[IpNet]>,
}

impl Webhooks {
    pub fn new(allow_private: bool, allow: &[IpNet]) -> Self {
        let allow: Arc<[IpNet]> = allow.into();
        Self {
            client: client(allow_private, &allow),
            allow_private,
            allow,
        }
    }

    /// Refuses a URL whose host is an IP literal this client may not reach.
    pub fn check(&self, url: &reqwest::Url) -> Result<(), String> {
        match self.allow_private {
            true => Ok(()),
            false => check_url_allowing(url, &self.allow),
        }
    }
}

/// The client webhook tools are called with: the guard on unless
/// `allow_private`; no redirects either way (a tool's URL is the tool).
fn client(allow_private: bool, allow: &Arc<[IpNet]>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true);
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly {
            allow: allow.clone(),
        }));
    }
    b.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "webhook HTTP client failed to build; using defaults");
        reqwest::Client::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} should pass");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_and_names_are_left_to_the_resolver() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&url("http://127.0.0.1:9/hook")).is_err());
        assert!(check_url(&url("http://[::1]/hook")).is_err());
        assert!(check_url(&url("http://169.254.169.254/latest/meta-data")).is_err());
        assert!(
            check_url(&url("http://2130706433/hook")).is_err(),
            "decimal 127.0.0.1"
        );
        assert!(
            check_url(&url("http://0x7f.1/hook")).is_err(),
            "hex 127.0.0.1"
        );
        assert!(check_url(&url("https://8.8.8.8/hook")).is_ok());
        assert!(check_url(&url("https://hooks.example.com/x")).is_ok());
        let e = check_url(&url("http://10.0.0.5/")).unwrap_err();
        assert!(e.contains("--egress-allow"), "{e}");
    }

    #[test]
    fn the_allow_list_opens_its_networks_only() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(check_url_allowing(&url("http://127.0.0.1:9/hook"), &allow).is_ok());
        assert!(check_url_allowing(&url("http://127.0.0.2:9/hook"), &allow).is_err());
        assert!(check_url_allowing(&url("http://10.0.0.5/"), &allow).is_err());
        assert!(is_allowed("::ffff:127.0.0.1".parse().unwrap(), &allow));
        let hooks = Webhooks::new(false, &allow);
        assert!(hooks.check(&url("http://127.0.0.1/")).is_ok());
        assert!(hooks.check(&url("http://192.168.1.1/")).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_names_that_resolve_only_to_private_addresses() {
        let name: Name = "localhost".parse().unwrap();
        let err = match PublicOnly::default().resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("not public"), "{err}");
    }
}
