//! Who the client is, and the forwarding headers the backend gets. A peer
//! in `server.trusted_proxies` may tell the gateway who its client was
//! (`X-Forwarded-For`); any other peer may not: its `X-Forwarded-*`
//! headers are replaced with what the gateway saw (the peer's address, the
//! scheme of the listener, the `Host`) and its `Forwarded` is removed, so
//! a backend never reads a client's own claim there. The client address
//! that results is the one rate limits key on, the same for every protocol.

use http::header::{HeaderName, HeaderValue, FORWARDED, HOST};
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare
/// address is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        let (net, addr, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - u32::from(self.prefix);
        (net >> shift) == (addr >> shift)
    }
}

/// Whether `name` is a header that says whom a proxy forwarded the
/// request for (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`,
/// `X-Real-IP`): what the edge decides the client by, or rewrites.
pub fn is_forwarding(name: &HeaderName) -> bool {
    *name == X_FORWARDED_FOR
        || *name == X_FORWARDED_PROTO
        || *name == X_FORWARDED_HOST
        || *name == FORWARDED
        || *name == X_REAL_IP
}

/// Rewrites the forwarding headers of a request from `peer` and returns
/// the client's address.
pub fn apply(
    headers: &mut HeaderMap,
    peer: Option<SocketAddr>,
    trusted: &[Cidr],
    scheme: &'static str,
) -> Option<SocketAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer.ip()) {
        rewrite_untrusted(headers, peer, scheme);
        return Some(peer);
    }
    let chain = chain(headers);
    let client = client_in(&chain, peer, trusted);
    // An entry that is no address stays as `unknown`: dropped, it would
    // let a backend that walks the chain as the gateway does believe what
    // lies left of it.
    let mut list: Vec<String> = chain
        .iter()
        .map(|hop| hop.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()))
        .collect();
    list.push(peer.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static(scheme));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }
    Some(client)
}

/// The client's address by the same rule as [`apply`], without touching
/// the headers.
pub fn client(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted: &[Cidr],
) -> Option<SocketAddr> {
    let peer = peer?;
    if !trusted.iter().any(|c| c.contains(peer.ip())) {
        return Some(peer);
    }
    Some(client_in(&chain(headers), peer, trusted))
}

/// The hops `X-Forwarded-For` lists, in order: an address, with or without
/// a port (`203.0.113.9:1234`, `[2001:db8::1]:80`), or `None` for anything
/// else a proxy wrote there (`unknown`, an obfuscated name).
fn chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| {
            let a = a.trim();
            a.parse::<IpAddr>()
                .ok()
                .or_else(|| a.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .collect()
}

/// From a trusted proxy: the client is the nearest hop in the chain that
/// is not one of the trusted proxies. A hop that is no address ends the
/// walk there: what lies beyond it came through a proxy that did not say
/// who its client was, so the client is the nearest trusted hop before it.
fn client_in(chain: &[Option<IpAddr>], peer: SocketAddr, trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut nearest = peer.ip();
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip) => nearest = *ip,
            Some(ip) => return SocketAddr::new(*ip, 0),
            None => return SocketAddr::new(nearest, 0),
        }
    }
    // Every hop a trusted proxy: the first one is the client.
    match chain.first() {
        Some(Some(ip)) => SocketAddr::new(*ip, 0),
        _ => peer,
    }
}

fn rewrite_untrusted(headers: &mut HeaderMap, peer: SocketAddr, scheme: &'static str) {
    // An insert replaces every value the client sent under its name.
    headers.insert(X_FORWARDED_FOR, ip_value(peer.ip()));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    match headers.get(HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.remove(&FORWARDED);
    // nginx's convention for the client's address: no client may claim one.
    headers.remove(&X_REAL_IP);
}

/// The header value naming `ip`. Calls come in runs from one peer (a
/// connection's requests), so each thread keeps the
/// last value it made: a clone of it costs a reference count, not a
/// formatted string and a copy.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((seen, value)) = last.as_ref() {
            if *seen == ip {
                return value.clone();
            }
        }
        let value =
            HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        *last = Some((ip, value.clone()));
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_what_they_should() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    use crate::headers::map_of as headers;

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("host", "api.example"),
        ]);
        let peer: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        let client = apply(&mut h, Some(peer), &[], "http");
        assert_eq!(client, Some(peer));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_is_appended() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let client = apply(&mut h, Some(peer), &trusted, "https");
        assert_eq!(client.map(|c| c.ip()), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 1.2.3.4, 10.0.0.7, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk_and_a_port_is_dropped() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let client = |xff: &str| {
            client(&headers(&[("x-forwarded-for", xff)]), Some(peer), &trusted)
                .map(|c| c.ip().to_string())
                .unwrap()
        };
        // What a client wrote left of a proxy that named no address is
        // never believed.
        assert_eq!(client("6.6.6.6, unknown"), "10.0.0.2");
        assert_eq!(client("6.6.6.6, unknown, 10.0.0.7"), "10.0.0.7");
        assert_eq!(client("6.6.6.6, 203.0.113.9:1234"), "203.0.113.9");
        assert_eq!(client("6.6.6.6, [2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(client("garbage"), "10.0.0.2");
        assert_eq!(client("6.6.6.6, 203.0.113.9"), "203.0.113.9");
    }

    #[test]
    fn a_hop_that_is_no_address_reaches_the_backend_as_unknown() {
        let trusted = [Cidr::parse("127.0.0.0/8").unwrap()];
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        for (sent, forwarded) in [
            ("6.6.6.6, unknown", "6.6.6.6, unknown, 127.0.0.1"),
            ("6.6.6.6, _hidden", "6.6.6.6, unknown, 127.0.0.1"),
            (",6.6.6.6,", "unknown, 6.6.6.6, unknown, 127.0.0.1"),
            ("010.0.0.1", "unknown, 127.0.0.1"),
        ] {
            let mut h = headers(&[("x-forwarded-for", sent)]);
            let client = apply(&mut h, Some(peer), &trusted, "http");
            assert_eq!(client.map(|c| c.ip()), Some(peer.ip()), "{sent}");
            assert_eq!(h["x-forwarded-for"], forwarded, "{sent}");
        }
    }
}
