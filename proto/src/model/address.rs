//! `host:port` addresses that a peer announces for others to dial (a proxy's
//! admin endpoint), checked before anyone stores or shows them.

use std::net::SocketAddr;

use super::service::validate_hostname;
use super::Invalid;

/// Checks `value` is `IP:port` (`[v6]:port` for IPv6) or `hostname:port`, with a
/// port in 1-65535.
pub fn validate_host_port(field: &str, value: &str) -> Result<(), Invalid> {
    let bad = |why: &str| Invalid::new(field, format!("{value:?} is not host:port ({why})"));
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(bad("port 0")),
            _ => Ok(()),
        };
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(bad("the port must be 1-65535")),
    }
    validate_hostname(host).map_err(|_| bad("the host is neither an IP address nor a DNS name"))
}

#[cfg(test)]
mod tests {
    use super::validate_host_port;

    #[test]
    fn accepts_ips_and_names_with_a_port() {
        for ok in [
            "127.0.0.1:15020",
            "[::1]:9",
            "proxy-0.shop:15020",
            "localhost:1",
        ] {
            assert!(validate_host_port("f", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_dialled() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "host:99999",
            ":80",
            "a b:80",
            "::1:80",
        ] {
            let e = validate_host_port("admin_address", bad).expect_err(bad);
            assert_eq!(e.field, "admin_address");
            assert!(e.reason.contains("host:port"), "{e}");
        }
    }
}
