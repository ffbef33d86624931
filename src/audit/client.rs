//! Who the client is: the socket peer, or, when the peer is a proxy the
//! operator trusts (`--trusted-proxies`), the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy.
//!
//! Right-most, not left-most: every proxy appends the address it received
//! the request from, so only the entries added by trusted proxies can be
//! believed; whatever a client wrote into the header itself is further
//! left. This is nginx's `real_ip_recursive on` and Go's and Rails'
//! trusted-proxy rule.

use std::{net::IpAddr, str::FromStr};

use http::HeaderMap;
use ipnet::IpNet;

/// The address the connection came from, put in every request's extensions
/// by the accept loop (`crate::http::serve`). IPv4-mapped IPv6 addresses
/// (a dual-stack listener) are given as plain IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

impl Peer {
    pub fn new(addr: IpAddr) -> Self {
        Self(addr.to_canonical())
    }
}

/// A `--trusted-proxies` entry: a CIDR block (`10.0.0.0/8`, `fd00::/8`) or
/// one address (`192.0.2.1`, read as `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(pub IpNet);

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|a| Self(IpNet::from(a)))
            .map_err(|_| {
                format!("`{s}` is not a CIDR block (10.0.0.0/8, fd00::/8) or an IP address")
            })
    }
}

/// The proxies whose `X-Forwarded-For` is believed. Empty (the default):
/// the header is ignored and the peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: &[ProxyNet]) -> Self {
        Self(nets.iter().map(|n| n.0).collect())
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&addr))
    }

    /// The client's address for a request from `peer` with `headers`
    /// (module doc). `None` when the peer is unknown (a request that did
    /// not come through the accept loop). When every forwarded address is
    /// trusted too, the left-most one is the client; an entry that is not
    /// an address stops the walk at the last address reached.
    pub fn client(&self, peer: Option<Peer>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut addr = peer?.0;
        if self.0.is_empty() || !self.trusts(addr) {
            return Some(addr);
        }
        // Several header lines are one list, in order (RFC 9110, 5.3).
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
            let Some(hop) = parse_hop(entry) else {
                break;
            };
            addr = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        Some(addr)
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(a) = entry.parse::<IpAddr>() {
        return Some(a.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let nets: Vec<ProxyNet> = list.iter().map(|s| s.parse().expect("net")).collect();
        TrustedProxies::new(&nets)
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().expect("header"));
        }
        h
    }

    fn peer(s: &str) -> Option<Peer> {
        Some(Peer::new(s.parse().expect("ip")))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        let h = xff(&["198.51.100.7"]);
        assert_eq!(none.client(peer("10.0.0.1"), &h), ip("10.0.0.1"));
        assert_eq!(none.client(None, &h), None);
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_the_header() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = xff(&["198.51.100.7"]);
        assert_eq!(p.client(peer("203.0.113.5"), &h), ip("203.0.113.5"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // A client that wrote its own header: its entry is left of the real one.
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.1.1.1", "192.0.2.1"]);
        assert_eq!(p.client(peer("10.0.0.2"), &h), ip("198.51.100.7"));
        // All trusted: the left-most.
        let h = xff(&["10.9.9.9, 192.0.2.1"]);
        assert_eq!(p.client(peer("10.0.0.2"), &h), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(
            p.client(peer("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ports_mapped_addresses_and_junk() {
        let p = proxies(&["10.0.0.0/8", "::1/128"]);
        let h = xff(&["[2001:db8::9]:443, 198.51.100.7:80"]);
        assert_eq!(p.client(peer("::1"), &h), ip("198.51.100.7"));
        let h = xff(&["198.51.100.7, ::ffff:10.0.0.3"]);
        assert_eq!(p.client(peer("::ffff:10.0.0.2"), &h), ip("198.51.100.7"));
        // Junk stops the walk at the last address reached.
        let h = xff(&["198.51.100.7, unknown, 10.0.0.3"]);
        assert_eq!(p.client(peer("10.0.0.2"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn entries_parse_as_blocks_or_addresses() {
        assert_eq!(
            "10.1.2.3/8".parse::<ProxyNet>().expect("net").0,
            "10.0.0.0/8".parse::<IpNet>().expect("net")
        );
        assert_eq!(
            " 192.0.2.1 ".parse::<ProxyNet>().expect("addr").0,
            "192.0.2.1/32".parse::<IpNet>().expect("net")
        );
        assert!("10.0.0.0/33".parse::<ProxyNet>().is_err());
        assert!("example.com".parse::<ProxyNet>().is_err());
    }
}
