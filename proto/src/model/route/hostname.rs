//! Host names of routes and filters, as the Gateway API defines them: RFC 1123 DNS
//! names, lower case, no IP addresses; a route's may start with a `*.` label.

use crate::model::Invalid;

/// A route's host name: `orders.shop` or `*.shop`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname {
    /// As written (validated lower case), with the `*.` of a wildcard.
    text: String,
}

impl Hostname {
    pub fn parse(text: &str) -> Result<Hostname, Invalid> {
        let name = text.strip_prefix("*.").unwrap_or(text);
        validate_dns_name(name).map_err(|reason| Invalid::new("", format!("{text:?} {reason}")))?;
        Ok(Hostname {
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_wildcard(&self) -> bool {
        self.text.starts_with("*.")
    }

    /// Whether a request's host (see [`request_host`]) is this one, ignoring case.
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not
    /// `example.com`.
    pub fn matches(&self, host: &str) -> bool {
        match self.text.strip_prefix('*') {
            // `suffix` keeps its dot, so at least one label comes before it.
            Some(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            None => host.eq_ignore_ascii_case(&self.text),
        }
    }

    /// The Gateway API's precedence between hostnames that match one request: the
    /// most characters of a non-wildcard hostname, then of any hostname.
    pub fn specificity(&self) -> (usize, usize) {
        let length = self.text.len();
        if self.is_wildcard() {
            (0, length)
        } else {
            (length, length)
        }
    }
}

/// A precise host name (no wildcard), as redirects and rewrites take.
pub fn validate_precise_hostname(text: &str) -> Result<(), Invalid> {
    validate_dns_name(text).map_err(|reason| Invalid::new("", format!("{text:?} {reason}")))
}

/// RFC 1123: labels of lower-case letters, digits and `-`, not starting or ending
/// with `-`, at most 63 characters each and 253 in all; not an IP address.
pub(super) fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address; a host name is required");
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        if !valid {
            return Err("must be a lower-case DNS name (labels of a-z, 0-9 and '-', optionally after a leading '*.')");
        }
    }
    Ok(())
}

/// The host a request names, as routes compare it: the Host or :authority without
/// its port or a trailing dot.
pub fn request_host(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_by_suffix_with_at_least_one_more_label() {
        let wildcard = Hostname::parse("*.example.com").expect("valid");
        assert!(wildcard.matches("a.example.com"));
        assert!(wildcard.matches("a.b.example.com"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("aexample.com"));
        let exact = Hostname::parse("example.com").expect("valid");
        assert!(exact.matches("example.com") && !exact.matches("a.example.com"));
        assert!(exact.matches("Example.COM") && wildcard.matches("A.Example.Com"));
        assert!(exact.specificity() > wildcard.specificity());
    }

    #[test]
    fn bad_hostnames_are_refused() {
        for text in [
            "",
            "Example.com",
            "10.0.0.1",
            "a..b",
            "-a.b",
            "*",
            "a.*.b",
            "*.*.a",
            "a_b",
        ] {
            assert!(Hostname::parse(text).is_err(), "{text:?}");
        }
        assert!(validate_precise_hostname("*.a").is_err());
    }

    #[test]
    fn request_hosts_lose_their_port_and_trailing_dot() {
        assert_eq!(request_host("orders.shop:8080"), "orders.shop");
        assert_eq!(request_host("orders.shop."), "orders.shop");
        assert_eq!(request_host("orders.shop"), "orders.shop");
        assert_eq!(request_host("[::1]:80"), "[::1]");
    }
}
