//! Who may talk to the API from a browser: the `Host`, `Origin` and `Content-Type` checks.
//!
//! Orbit's agents run commands on the owner's machine, so a web page the owner visits must not
//! be able to drive a server that listens on loopback without a token. Three browser rules
//! make that hold:
//!
//! - A page can make the browser send a "simple" cross-origin POST (`text/plain`, no
//!   preflight) but never one with `Content-Type: application/json`; requests with a body
//!   must therefore say `application/json` (415 otherwise).
//! - A browser names the page's origin in `Origin` on every cross-origin request it makes;
//!   one that is not the server's own is refused (403).
//! - A DNS-rebound name reaches the server with the attacker's name in `Host`, which is
//!   the only trace it leaves; a `Host` that is not one of the server's own names is refused
//!   (403).
//!
//! Clients that are not browsers (curl, scripts) send no `Origin` and pass all three.

use std::net::SocketAddr;

use actix_web::http::header::{self, HeaderMap};

use crate::{ApiError, Code};

/// The `Host` values the server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any host. Only for a server listening on every address (`0.0.0.0`), which cannot know
    /// the names it is reached by and needs a token anyway.
    Any,
    /// Only these authorities (`name:port` or `name`), in lower case.
    Only(Vec<String>),
}

impl AllowedHosts {
    /// The hosts of a server listening on `addr` (its real port), plus `extra` names
    /// (`--allowed-host`), each taken with and without the port.
    ///
    /// A loopback server answers to `localhost`, `127.0.0.1` and `[::1]` on its port; a
    /// server on one address answers to that address; a server on every address answers to
    /// any host unless `extra` names some, then to those and the loopback names.
    pub fn for_address(addr: SocketAddr, extra: &[String]) -> Self {
        let port = addr.port();
        if addr.ip().is_unspecified() && extra.is_empty() {
            return Self::Any;
        }
        let mut names: Vec<String> = Vec::new();
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            names.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
        }
        if !addr.ip().is_unspecified() {
            names.push(match addr.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
        let mut hosts = Vec::new();
        for name in extra {
            let name = name.trim().to_ascii_lowercase();
            // A bare IPv6 address is written in brackets in `Host`.
            let name =
                if name.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{name}]") } else { name };
            let has_port = name.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
            if has_port {
                hosts.push(name);
            } else {
                // A name given without a port is also allowed without one: a proxy in front
                // may pass its own `Host`.
                hosts.push(name.clone());
                names.push(name);
            }
        }
        for name in names {
            // Clients leave the port out of `Host` when it is their scheme's default.
            if port == 80 || port == 443 {
                hosts.push(name.clone());
            }
            hosts.push(format!("{name}:{port}"));
        }
        hosts.sort();
        hosts.dedup();
        Self::Only(hosts)
    }

    /// Whether a request with `Host: host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(hosts) => hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)),
        }
    }
}

/// Why this request is refused, if it is: a foreign host or origin (403), a body that is not
/// JSON (415). Checked for every request by `middleware::gate`.
pub fn refusal(allowed: &AllowedHosts, headers: &HeaderMap) -> Option<ApiError> {
    // HTTP/1.1 clients always send Host; a request without one (HTTP/1.0) cannot come from a
    // browser, so it has nothing to prove.
    let host = headers.get(header::HOST).map(|v| v.to_str().unwrap_or_default());
    if let Some(host) = host
        && !allowed.allows(host)
    {
        return Some(ApiError::new(
            Code::ForbiddenHost,
            "this server does not answer to the host this request names; add it with --allowed-host",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")));
        let same_origin = authority.is_some_and(|authority| {
            allowed.allows(authority) && host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
        });
        if !same_origin {
            return Some(ApiError::new(
                Code::CrossOrigin,
                "requests from another origin are refused",
            ));
        }
    }
    if has_body(headers) && !is_json(headers) {
        return Some(ApiError::new(
            Code::UnsupportedMediaType,
            "request bodies must be JSON, sent with Content-Type: application/json",
        ));
    }
    None
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|len| len > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_and_bare_ipv6_names_are_understood() {
        let hosts = AllowedHosts::for_address("127.0.0.1:80".parse().unwrap(), &["fe80::1".into()]);
        for host in ["localhost", "localhost:80", "127.0.0.1", "[::1]", "[fe80::1]", "[fe80::1]:80"]
        {
            assert!(hosts.allows(host), "{host}");
        }
        let hosts = AllowedHosts::for_address("127.0.0.1:3001".parse().unwrap(), &[]);
        assert!(!hosts.allows("localhost"), "a port-less Host means port 80");
    }

    #[test]
    fn a_loopback_server_answers_to_its_loopback_names_on_its_port() {
        let hosts = AllowedHosts::for_address("127.0.0.1:3001".parse().unwrap(), &[]);
        for host in ["localhost:3001", "127.0.0.1:3001", "[::1]:3001", "LOCALHOST:3001"] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["evil.example:3001", "localhost:3002", "localhost", "127.0.0.1"] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn extra_names_are_taken_with_and_without_the_port() {
        let hosts =
            AllowedHosts::for_address("10.0.0.5:80".parse().unwrap(), &["orbit.lan".into()]);
        for host in ["orbit.lan", "orbit.lan:80", "10.0.0.5:80"] {
            assert!(hosts.allows(host), "{host}");
        }
        assert!(!hosts.allows("localhost:80"), "not loopback");
        assert_eq!(
            AllowedHosts::for_address("0.0.0.0:80".parse().unwrap(), &[]),
            AllowedHosts::Any
        );
    }
}
