//! Anomaly detection on refresh: a refresh whose network or user agent is unlike the one the
//! session was created with, which is what a refresh token stolen and replayed elsewhere looks
//! like.
//!
//! The rule is a pure comparison of the session's recorded address and device (browser
//! family, operating system) with those of the refreshing request; [`detect`] makes it, and
//! the service acts on the answer as the [`AnomalyPolicy`] says. Networks are compared by
//! prefix (an IPv4 /16, an IPv6 /48), so a home router's new lease or a phone moving between
//! cells of one carrier stays quiet, while a refresh from another provider or country does
//! not. A signal the session never recorded (no `device.ip` or user agent at creation) is not
//! compared; a request that hides one the session has (no `User-Agent`) counts as a change.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::device;
use crate::session::Session;

/// The IPv4 prefix length two addresses must share to count as one network.
pub const IPV4_NETWORK_PREFIX: u8 = 16;
/// The IPv6 prefix length two addresses must share to count as one network.
pub const IPV6_NETWORK_PREFIX: u8 = 48;

/// What sessiond does about an anomalous refresh (`SESSIOND_ANOMALY_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnomalyPolicy {
    /// Nothing: no comparison is made and nothing is written.
    Allow,
    /// The refresh succeeds; a `security.anomaly` audit event (severity `warning`) is written,
    /// and published to the user's event streams.
    #[default]
    Notify,
    /// As `Notify`, then the session is revoked (reason `anomaly`) and the refresh refused.
    Revoke,
}

impl AnomalyPolicy {
    /// The configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Notify => "notify",
            Self::Revoke => "revoke",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "allow" => Some(Self::Allow),
            "notify" => Some(Self::Notify),
            "revoke" => Some(Self::Revoke),
            _ => None,
        }
    }
}

/// Something about a request that can differ from its session's (`SESSIOND_ANOMALY_CHECKS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// The client's network: its address's /16 (IPv4) or /48 (IPv6).
    Network,
    /// The browser family of its user agent.
    Browser,
    /// The operating system of its user agent.
    Os,
}

impl Signal {
    /// Every signal, in the order details list them.
    pub const ALL: [Self; 3] = [Self::Network, Self::Browser, Self::Os];

    /// The configuration and audit name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Browser => "browser",
            Self::Os => "os",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|signal| signal.as_str() == name)
    }
}

/// How anomalies are looked for and acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalySettings {
    /// What to do about one.
    pub policy: AnomalyPolicy,
    /// Which signals are compared.
    pub checks: Vec<Signal>,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            policy: AnomalyPolicy::default(),
            checks: Signal::ALL.to_vec(),
        }
    }
}

/// Where a refresh comes from: the client's address (as the edge resolved it, trusted proxies
/// considered) and its `User-Agent`. Either may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

/// One signal that changed: what the session recorded and what the request shows. Networks
/// are shown as prefixes (`203.0.0.0/16`), never as whole addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Which signal.
    pub signal: Signal,
    /// The session's.
    pub before: Option<String>,
    /// The request's.
    pub after: Option<String>,
}

/// The signals in which a request differs from its session; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// What changed, in [`Signal::ALL`] order.
    pub changes: Vec<Change>,
}

impl Anomaly {
    /// The `details` of its audit event: `changed` (the signal names) and, per signal, its
    /// `before` and `after`; `action` says what was done (`notified` or `revoked`).
    pub fn details(&self, action: &str) -> Map<String, Value> {
        let mut details = Map::new();
        details.insert(
            "changed".into(),
            Value::from(
                self.changes
                    .iter()
                    .map(|change| change.signal.as_str())
                    .collect::<Vec<_>>(),
            ),
        );
        for change in &self.changes {
            let mut pair = Map::new();
            pair.insert("before".into(), Value::from(change.before.clone()));
            pair.insert("after".into(), Value::from(change.after.clone()));
            details.insert(change.signal.as_str().into(), Value::Object(pair));
        }
        details.insert("action".into(), Value::from(action));
        details
    }
}

/// The network an address belongs to: the first two octets of an IPv4 address (a /16), the
/// first three segments of an IPv6 one (a /48). IPv4 addresses mapped into IPv6
/// (`::ffff:a.b.c.d`) count as IPv4. Two addresses share a network when these are equal, which
/// [`detect`] compares before writing anything out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    V4([u8; 2]),
    V6([u16; 3]),
}

impl Network {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, _, _] = v4.octets();
                Self::V4([a, b])
            }
            IpAddr::V6(v6) => {
                let [a, b, c, ..] = v6.segments();
                Self::V6([a, b, c])
            }
        }
    }
}

/// The network `ip` belongs to, as text: `a.b.0.0/16` or `x:y:z::/48`. IPv4 addresses mapped
/// into IPv6 (`::ffff:a.b.c.d`) count as IPv4.
pub fn network_of(ip: IpAddr) -> String {
    match Network::of(ip) {
        Network::V4([a, b]) => format!("{a}.{b}.0.0/{IPV4_NETWORK_PREFIX}"),
        Network::V6([a, b, c]) => {
            let network = std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0);
            format!("{network}/{IPV6_NETWORK_PREFIX}")
        }
    }
}

/// How `origin` differs from what `session` recorded at creation, in the signals `checks`
/// names; `None` when it does not (or when nothing comparable is known).
pub fn detect(session: &Session, origin: &RequestOrigin, checks: &[Signal]) -> Option<Anomaly> {
    let mut changes = Vec::new();
    let (browser, os) = origin
        .user_agent
        .as_deref()
        .map_or((None, None), device::browser_and_os);
    for signal in Signal::ALL {
        if !checks.contains(&signal) {
            continue;
        }
        let (before, after) = match signal {
            Signal::Network => {
                // An address the session never had, or the edge cannot tell: nothing to compare.
                let Some(recorded) = session
                    .ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                let Some(current) = origin.ip else { continue };
                if Network::of(recorded) == Network::of(current) {
                    continue;
                }
                (Some(network_of(recorded)), Some(network_of(current)))
            }
            Signal::Browser => match &session.device.browser {
                Some(recorded) if Some(recorded) != browser.as_ref() => {
                    (Some(recorded.clone()), browser.clone())
                }
                _ => continue,
            },
            Signal::Os => match &session.device.os {
                Some(recorded) if Some(recorded) != os.as_ref() => {
                    (Some(recorded.clone()), os.clone())
                }
                _ => continue,
            },
        };
        changes.push(Change {
            signal,
            before,
            after,
        });
    }
    (!changes.is_empty()).then_some(Anomaly { changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::session::tests::session_at;
    use crate::time::Timestamp;

    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const FIREFOX_WINDOWS: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";

    fn session(ip: Option<&str>, user_agent: Option<&str>) -> Session {
        let mut session = session_at(Timestamp::from_unix_millis(0), &Policy::default());
        session.ip = ip.map(str::to_owned);
        let (browser, os) = user_agent.map_or((None, None), device::browser_and_os);
        session.device.browser = browser;
        session.device.os = os;
        session.user_agent = user_agent.map(str::to_owned);
        session
    }

    fn origin(ip: &str, user_agent: Option<&str>) -> RequestOrigin {
        RequestOrigin {
            ip: Some(ip.parse().expect("an address")),
            user_agent: user_agent.map(str::to_owned),
        }
    }

    fn changed(anomaly: Option<Anomaly>) -> Vec<Signal> {
        anomaly
            .map(|anomaly| anomaly.changes.iter().map(|change| change.signal).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_same_network_and_browser_is_no_anomaly() {
        let recorded = session(Some("203.0.113.7"), Some(FIREFOX_LINUX));
        let same = origin("203.0.200.1", Some(FIREFOX_LINUX));
        assert_eq!(detect(&recorded, &same, &Signal::ALL), None);
    }

    #[test]
    fn another_ipv4_slash_16_is_a_network_change_shown_as_prefixes() {
        let recorded = session(Some("203.0.113.7"), Some(FIREFOX_LINUX));
        let anomaly = detect(
            &recorded,
            &origin("203.1.113.7", Some(FIREFOX_LINUX)),
            &Signal::ALL,
        )
        .expect("an anomaly");
        assert_eq!(
            anomaly.changes,
            [Change {
                signal: Signal::Network,
                before: Some("203.0.0.0/16".into()),
                after: Some("203.1.0.0/16".into()),
            }]
        );
        let details = anomaly.details("notified");
        assert_eq!(details["changed"], serde_json::json!(["network"]));
        assert_eq!(details["network"]["after"], "203.1.0.0/16");
        assert_eq!(details["action"], "notified");
        assert!(!Value::Object(details).to_string().contains("203.1.113.7"));
    }

    #[test]
    fn ipv6_networks_are_compared_by_slash_48() {
        let recorded = session(Some("2001:db8:1:2::5"), None);
        assert_eq!(
            detect(&recorded, &origin("2001:db8:1:ffff::9", None), &Signal::ALL),
            None
        );
        let anomaly =
            detect(&recorded, &origin("2001:db8:2::5", None), &Signal::ALL).expect("anomaly");
        assert_eq!(
            anomaly.changes[0].before.as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(anomaly.changes[0].after.as_deref(), Some("2001:db8:2::/48"));
        // The same IPv4 address, seen through a dual-stack socket, is the same network.
        let v4 = session(Some("198.51.100.4"), None);
        assert_eq!(
            detect(&v4, &origin("::ffff:198.51.100.9", None), &Signal::ALL),
            None
        );
    }

    /// Networks compared as values agree with their text, for addresses of either family,
    /// mapped ones included, close enough to share networks.
    #[test]
    fn addresses_share_a_network_exactly_when_their_networks_read_alike() {
        use proptest::prelude::*;
        let address = || {
            prop_oneof![
                (0u8..3, 0u8..3, any::<u16>()).prop_map(|(a, b, rest)| {
                    let [c, d] = rest.to_be_bytes();
                    IpAddr::from([a, b, c, d])
                }),
                (0u8..3, 0u8..3, any::<u16>()).prop_map(|(a, b, rest)| {
                    let [c, d] = rest.to_be_bytes();
                    IpAddr::from(std::net::Ipv4Addr::new(a, b, c, d).to_ipv6_mapped())
                }),
                (0u16..3, 0u16..3, 0u16..3, any::<u16>())
                    .prop_map(|(a, b, c, d)| IpAddr::from([a, b, c, d, 0, 0, 0, 1])),
            ]
        };
        crate::proptesting::check((address(), address()), |(a, b)| {
            prop_assert_eq!(
                Network::of(a) == Network::of(b),
                network_of(a) == network_of(b)
            );
            Ok(())
        });
    }

    #[test]
    fn another_browser_family_or_os_is_an_anomaly() {
        let recorded = session(Some("203.0.113.7"), Some(FIREFOX_LINUX));
        assert_eq!(
            changed(detect(
                &recorded,
                &origin("203.0.113.7", Some(CHROME_LINUX)),
                &Signal::ALL
            )),
            [Signal::Browser]
        );
        assert_eq!(
            changed(detect(
                &recorded,
                &origin("203.0.113.7", Some(FIREFOX_WINDOWS)),
                &Signal::ALL
            )),
            [Signal::Os]
        );
        // A missing user agent hides the browser the session had: that is a change too.
        assert_eq!(
            changed(detect(
                &recorded,
                &origin("198.51.100.1", None),
                &Signal::ALL
            )),
            [Signal::Network, Signal::Browser, Signal::Os]
        );
    }

    #[test]
    fn only_the_configured_signals_are_compared() {
        let recorded = session(Some("203.0.113.7"), Some(FIREFOX_LINUX));
        let moved = origin("198.51.100.1", Some(CHROME_LINUX));
        assert_eq!(
            changed(detect(&recorded, &moved, &[Signal::Browser])),
            [Signal::Browser]
        );
        assert_eq!(detect(&recorded, &moved, &[]), None);
    }

    #[test]
    fn signals_the_session_never_recorded_are_not_compared() {
        let unknown = session(None, None);
        assert_eq!(
            detect(
                &unknown,
                &origin("198.51.100.1", Some(CHROME_LINUX)),
                &Signal::ALL
            ),
            None
        );
        let recorded = session(Some("203.0.113.7"), None);
        let no_address = RequestOrigin {
            ip: None,
            user_agent: None,
        };
        assert_eq!(detect(&recorded, &no_address, &Signal::ALL), None);
    }
}
