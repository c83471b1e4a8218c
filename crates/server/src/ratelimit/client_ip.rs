//! The client's address: the socket peer's, unless the peer is a trusted proxy, in which case
//! the address that proxy reports (`X-Forwarded-For` or `Forwarded`, as configured), walking
//! the reported hops from the right past every trusted proxy.
//!
//! A forwarding header is believed only from a trusted peer, and only up to the first hop not
//! itself a trusted proxy: everything to the left of that hop was written by the client and
//! may be anything. A spoofed header from an untrusted peer therefore changes nothing.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`.
    ///
    /// # Errors
    /// When the address or the prefix length is not valid; the message says which.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length over {max}"))?,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `address` lies in this block.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which header a trusted proxy reports the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The trusted proxies and the header they write.
#[derive(Debug, Clone)]
pub struct ClientIpSource {
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The header they write; the other one is ignored.
    pub header: ForwardedHeader,
}

impl Default for ClientIpSource {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }
}

impl ClientIpSource {
    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|block| block.contains(address))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut nearest = peer;
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        // Several header lines form one list, in order; hops are walked from the right.
        for line in headers.get_all(name).iter().rev() {
            let Ok(line) = line.to_str() else {
                return nearest;
            };
            for hop in line.rsplit(',') {
                let parsed = match self.header {
                    ForwardedHeader::XForwardedFor => parse_hop(hop),
                    ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
                };
                // A hop that is not an address (`unknown`, an obfuscated name, garbage) ends
                // the walk: the proxy that reported it is the nearest known address.
                let Some(hop) = parsed else {
                    return nearest;
                };
                if !self.is_trusted(hop) {
                    return hop;
                }
                nearest = hop;
            }
        }
        nearest
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, or
/// `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (address, _) = rest.split_once(']')?;
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|address| IpAddr::V6(address).to_canonical());
    }
    let (address, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn source(proxies: &[&str], header: ForwardedHeader) -> ClientIpSource {
        ClientIpSource {
            trusted_proxies: proxies
                .iter()
                .map(|text| Cidr::parse(text).unwrap())
                .collect(),
            header,
        }
    }

    fn headers(name: &'static str, lines: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name, HeaderValue::from_static(line));
        }
        headers
    }

    #[test]
    fn blocks_parse_and_contain_their_addresses() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains(ip("10.200.3.4")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers");
        let single = Cidr::parse("192.0.2.7").unwrap();
        assert!(single.contains(ip("192.0.2.7")));
        assert!(!single.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let source = source(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let spoofed = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(
            source.client_ip(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_is_walked_past_to_the_rightmost_untrusted_hop() {
        let source = source(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // The client claims 1.1.1.1; the first proxy saw 203.0.113.9; a second proxy is 10.0.0.2.
        let forwarded = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            source.client_ip(ip("10.0.0.1"), &forwarded),
            ip("203.0.113.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            source.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Only proxies: the leftmost.
        let internal = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.2"]);
        assert_eq!(source.client_ip(ip("10.0.0.1"), &internal), ip("10.9.9.9"));
        // Garbage stops the walk at the proxy that reported it.
        let garbage = headers("x-forwarded-for", &["1.1.1.1, nonsense"]);
        assert_eq!(source.client_ip(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
        // Ports and brackets are accepted.
        let ported = headers("x-forwarded-for", &["[2001:db8::7]:443"]);
        assert_eq!(source.client_ip(ip("10.0.0.1"), &ported), ip("2001:db8::7"));
        // The other header is not looked at.
        let other = headers("forwarded", &["for=198.51.100.1"]);
        assert_eq!(source.client_ip(ip("10.0.0.1"), &other), ip("10.0.0.1"));
    }

    #[test]
    fn the_forwarded_header_is_read_when_configured() {
        let source = source(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let forwarded = headers(
            "forwarded",
            &[r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.3"#],
        );
        assert_eq!(
            source.client_ip(ip("10.0.0.1"), &forwarded),
            ip("2001:db8:cafe::17")
        );
        let hidden = headers("forwarded", &["for=_hidden"]);
        assert_eq!(source.client_ip(ip("10.0.0.1"), &hidden), ip("10.0.0.1"));
    }
}
