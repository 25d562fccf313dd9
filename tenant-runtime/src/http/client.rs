//! Who is asking, for limits: the address the outermost trusted proxy saw, never an
//! `X-Forwarded-For` entry the client could have written itself.
//!
//! Each proxy appends the address it received the request from, so the chain
//! `X-Forwarded-For entries..., peer` is trustworthy only from the right: with N trusted
//! proxies the client is the entry N places left of the peer. A chain shorter than that (a
//! request that did not pass every proxy) falls back to its leftmost entry, and an entry that
//! is not an IP address to the peer.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::state::AppState;

/// The client's address as limits count it (see [`client_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(pub String);

impl FromRequestParts<AppState> for ClientId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let address = client_address(&parts.headers, peer, state.config.trusted_proxies);
        Ok(Self(
            address.map_or_else(|| "unknown".to_owned(), client_key),
        ))
    }
}

/// The address `trusted_proxies` hops left of the peer in the forwarding chain.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    let Some(peer) = peer else {
        // Only in-process callers have no peer; nothing they send is trusted.
        return None;
    };
    if trusted_proxies == 0 {
        return Some(peer);
    }
    // Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3).
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if forwarded.is_empty() {
        return Some(peer);
    }
    let index = forwarded.len().saturating_sub(trusted_proxies);
    Some(
        forwarded
            .get(index)
            .and_then(|hop| parse_hop(hop))
            .unwrap_or(peer),
    )
}

/// A hop as proxies write it: an address, perhaps with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(with_port) = hop.parse::<SocketAddr>() {
        return Some(with_port.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// What limits count per client: an IPv4 address, or an IPv6 address's /64 network (one
/// subscriber's line gets a whole /64, so single addresses would cost a scalper nothing).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let network = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{network}/64")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(xff: &[&str], trusted: usize) -> Option<String> {
        let mut headers = HeaderMap::new();
        for line in xff {
            headers.append("x-forwarded-for", line.parse().expect("header"));
        }
        client_address(&headers, Some("10.0.0.9".parse().expect("ip")), trusted).map(client_key)
    }

    #[test]
    fn the_client_is_the_address_the_outermost_trusted_proxy_saw() {
        // The router appended 203.0.113.7; everything left of it came from the client.
        assert_eq!(
            chain(&["1.1.1.1, 203.0.113.7"], 1).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            chain(&["1.1.1.1", "203.0.113.7"], 1).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            chain(&["6.6.6.6, 203.0.113.7, 10.1.1.1"], 2).as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn without_trusted_proxies_or_forwarding_the_peer_is_the_client() {
        assert_eq!(chain(&["203.0.113.7"], 0).as_deref(), Some("10.0.0.9"));
        assert_eq!(chain(&[], 1).as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn a_short_chain_falls_back_to_its_first_hop_and_garbage_to_the_peer() {
        assert_eq!(chain(&["203.0.113.7"], 3).as_deref(), Some("203.0.113.7"));
        assert_eq!(chain(&["not-an-ip"], 1).as_deref(), Some("10.0.0.9"));
        assert_eq!(chain(&["1.1.1.1, "], 1).as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn hops_with_ports_and_ipv6_networks_are_understood() {
        assert_eq!(
            chain(&["203.0.113.7:4711"], 1).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            chain(&["[2001:db8:1:2:aaaa::1]:443"], 1).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            chain(&["2001:db8:1:2:ffff::9"], 1),
            chain(&["2001:db8:1:2::1"], 1),
            "one /64 is one client"
        );
        assert_eq!(
            chain(&["::ffff:192.0.2.1"], 1).as_deref(),
            Some("192.0.2.1")
        );
    }
}
