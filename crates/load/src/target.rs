//! Parsing the `--url` and making sure it points at this machine.
//!
//! A load generator is a traffic cannon; pointed at the wrong host it is an attack. So the URL
//! is checked twice: its host must be a loopback name (`localhost`, `127.0.0.0/8`, `[::1]`)
//! and every address it resolves to must be a loopback address, unless `--allow-remote` says
//! otherwise. The check on resolved addresses catches a `localhost` that a hosts file maps
//! elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hyper::Uri;
use tokio::net::TcpStream;

/// The parts of `--url` the generator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// Host name or IP literal, without IPv6 brackets.
    pub(crate) host: String,
    /// Port, 80 when the URL has none.
    pub(crate) port: u16,
    /// The `Host` header value: the URL's authority without any user info.
    pub(crate) host_header: String,
    /// Path prefix before `/v1/...`, without a trailing slash (usually empty).
    pub(crate) base_path: String,
}

/// Parses an `http://host[:port][/prefix]` URL.
///
/// # Errors
///
/// When the URL does not parse, is not plain `http`, has no host, or has a query.
pub(crate) fn parse_base_url(url: &str) -> anyhow::Result<BaseUrl> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => bail!("--url {url:?}: https is not supported (no TLS); use http"),
        _ => bail!("--url {url:?} must start with http://"),
    }
    ensure!(uri.query().is_none(), "--url {url:?} must not have a query");
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .with_context(|| format!("--url {url:?} has no host"))?;
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let bracketed = if bare_host.contains(':') {
        format!("[{bare_host}]")
    } else {
        bare_host.clone()
    };
    let host_header = match uri.port_u16() {
        Some(port) => format!("{bracketed}:{port}"),
        None => bracketed,
    };
    Ok(BaseUrl {
        host: bare_host,
        port,
        host_header,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// Whether a URL host (brackets optional for IPv6) names this machine's loopback interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match bare.unwrap_or(host).parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => address.is_loopback(),
        Ok(IpAddr::V6(address)) => address.is_loopback(),
        Err(_) => false,
    }
}

/// Resolves the URL's host and returns the first address that accepts a TCP connection.
///
/// # Errors
///
/// When the host is not loopback (and `allow_remote` is false), does not resolve, resolves to
/// a non-loopback address (same condition), or no address accepts a connection in `timeout`.
pub(crate) async fn resolve_reachable(
    base: &BaseUrl,
    allow_remote: bool,
    timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    ensure!(
        allow_remote || is_loopback_host(&base.host),
        "refusing to load {:?}: not a loopback host (127.0.0.0/8, localhost, [::1]); \
         pass --allow-remote if you really mean it",
        base.host
    );
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((base.host.as_str(), base.port))
        .await
        .with_context(|| format!("resolving {}", base.host))?
        .collect();
    ensure!(
        !addresses.is_empty(),
        "{} resolves to no address",
        base.host
    );
    if !allow_remote
        && let Some(remote) = addresses.iter().find(|address| !address.ip().is_loopback())
    {
        bail!(
            "refusing to load {:?}: it resolves to {remote}, which is not loopback",
            base.host
        );
    }
    // `localhost` often resolves to both ::1 and 127.0.0.1 while the server listens on only
    // one of them; probing picks the one that answers instead of failing every worker.
    let mut failures = Vec::new();
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(_probe)) => return Ok(address),
            Ok(Err(error)) => failures.push(format!("{address}: {error}")),
            Err(_) => failures.push(format!("{address}: timed out")),
        }
    }
    bail!(
        "cannot connect to {}: {} (is sessiond running?)",
        base.host_header,
        failures.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "127.255.255.254",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host} is loopback");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for host in [
            "example.com",
            "localhost.example.com",
            "foo.localhost",
            "128.0.0.1",
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "[::2]",
            "[::ffff:10.0.0.1]",
            "127.1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host:?} is not loopback");
        }
    }

    #[test]
    fn a_plain_url_parses_into_host_port_and_empty_prefix() {
        let base = parse_base_url("http://127.0.0.1:8080").expect("valid url");
        assert_eq!(
            base,
            BaseUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                host_header: "127.0.0.1:8080".into(),
                base_path: String::new(),
            }
        );
        let with_slash = parse_base_url("http://127.0.0.1:8080/").expect("valid url");
        assert_eq!(with_slash.base_path, "");
    }

    #[test]
    fn ipv6_urls_keep_brackets_only_in_the_host_header() {
        let base = parse_base_url("http://[::1]:9000/api/").expect("valid url");
        assert_eq!(base.host, "::1");
        assert_eq!(base.host_header, "[::1]:9000");
        assert_eq!(base.base_path, "/api");
        assert!(is_loopback_host(&base.host));
    }

    #[test]
    fn a_missing_port_defaults_to_80_and_stays_out_of_the_host_header() {
        let base = parse_base_url("http://localhost").expect("valid url");
        assert_eq!(base.port, 80);
        assert_eq!(base.host_header, "localhost");
    }

    #[test]
    fn unsupported_urls_are_rejected() {
        for url in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "ftp://127.0.0.1",
            "http://127.0.0.1:8080/?x=1",
            "not a url",
        ] {
            assert!(parse_base_url(url).is_err(), "{url} should be rejected");
        }
    }

    #[tokio::test]
    async fn a_remote_host_is_refused_before_any_lookup() {
        let base = parse_base_url("http://192.0.2.1:8080").expect("valid url");
        let error = resolve_reachable(&base, false, Duration::from_millis(100))
            .await
            .expect_err("remote must be refused");
        assert!(error.to_string().contains("not a loopback host"), "{error}");
    }
}
