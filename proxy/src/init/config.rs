//! Flags and `WEFT_*` variables of `weft-proxy init`, validated once into [`InitConfig`].
//!
//! Same contract as the proxy's own [`crate::config`]: clap only collects strings, then
//! [`InitConfig::from_args`] checks every value and returns all the problems at once, so an
//! operator fixing an init container's manifest sees every mistake in one run (exit 64).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use clap::Parser;
use serde::Serialize;

/// Default ports, the same as the proxy's listener defaults in [`crate::config::Args`]
/// (a unit test keeps the two in step).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
pub const DEFAULT_ADMIN_PORT: u16 = 15020;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "weft-proxy init",
    bin_name = "weft-proxy init",
    version,
    about = "Write the pod's iptables rules that send its TCP traffic through the Weft proxy"
)]
pub struct InitArgs {
    /// Port of the proxy's outbound listener; the app's outgoing TCP is redirected there.
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = DEFAULT_OUTBOUND_PORT.to_string())]
    pub outbound_port: String,
    /// Port of the proxy's inbound listener; TCP arriving at the pod is redirected there.
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = DEFAULT_INBOUND_PORT.to_string())]
    pub inbound_port: String,
    /// Port of the proxy's admin listener; never redirected.
    #[arg(long, env = "WEFT_ADMIN_PORT", default_value_t = DEFAULT_ADMIN_PORT.to_string())]
    pub admin_port: String,
    /// UID the proxy runs as; its own traffic is never captured (required, not 0).
    #[arg(long, env = "WEFT_PROXY_UID")]
    pub proxy_uid: Option<String>,
    /// GID whose traffic is never captured either (optional).
    #[arg(long, env = "WEFT_PROXY_GID")]
    pub proxy_gid: Option<String>,
    /// Destination ports the app reaches directly, bypassing the proxy (comma-separated).
    #[arg(long, env = "WEFT_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<String>,
    /// Destination CIDRs (or single IPs) the app reaches directly (comma-separated).
    #[arg(long, env = "WEFT_EXCLUDE_OUTBOUND_CIDRS", value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Capture outbound traffic only to these CIDRs; `*` (the default) captures all.
    #[arg(
        long,
        env = "WEFT_INCLUDE_OUTBOUND_CIDRS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub include_outbound_cidrs: Vec<String>,
    /// Pod ports that receive traffic directly, bypassing the proxy (comma-separated).
    #[arg(long, env = "WEFT_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<String>,
    /// Capture inbound traffic only to these pod ports; `*` (the default) captures all.
    #[arg(
        long,
        env = "WEFT_INCLUDE_INBOUND_PORTS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub include_inbound_ports: Vec<String>,
    /// Also write the IPv6 rules with ip6tables (off by default: IPv4 only).
    #[arg(long, env = "WEFT_CAPTURE_IPV6")]
    pub ipv6: bool,
    /// Print the rules in iptables-restore format and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain `init` added (IPv4, and IPv6 where ip6tables exists).
    #[arg(long, visible_alias = "remove")]
    pub cleanup: bool,
}

/// What `init` does this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Write the rules for this capture, replacing any earlier Weft rules.
    Apply(Capture),
    /// Remove whatever Weft added; needs no ports or UIDs.
    Cleanup,
}

/// The validated configuration of one `init` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitConfig {
    pub action: Action,
    pub dry_run: bool,
    pub ipv6: bool,
}

/// Which traffic the rules send to the proxy: the input of [`super::rules`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capture {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    pub exclude_outbound_ports: BTreeSet<u16>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    pub include_outbound_cidrs: Scope<Cidr>,
    pub exclude_inbound_ports: BTreeSet<u16>,
    pub include_inbound_ports: Scope<u16>,
}

/// "Everything" or an explicit list: `*` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Scope<T> {
    All,
    Only(Vec<T>),
}

/// An IPv4 or IPv6 network, host bits cleared so it prints as iptables-save shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from((u128::from(v6) & mask).to_be_bytes())
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl InitConfig {
    /// Checks every value and returns all the problems, one line each.
    pub fn from_args(args: InitArgs) -> Result<InitConfig, Vec<String>> {
        let mut errors = Vec::new();
        // A cleanup removes whatever is there, so it ignores the capture flags rather
        // than failing on, say, a missing --proxy-uid in a teardown script.
        let action = if args.cleanup {
            Action::Cleanup
        } else {
            Action::Apply(parse_capture(&args, &mut errors))
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(InitConfig {
            action,
            dry_run: args.dry_run,
            ipv6: args.ipv6,
        })
    }
}

fn parse_capture(args: &InitArgs, errors: &mut Vec<String>) -> Capture {
    let mut port = |flag: &str, value: &str| -> u16 {
        parse_port(value).unwrap_or_else(|e| {
            errors.push(format!("--{flag}: {e}"));
            0
        })
    };
    let outbound_port = port("outbound-port", &args.outbound_port);
    let inbound_port = port("inbound-port", &args.inbound_port);
    let admin_port = port("admin-port", &args.admin_port);
    let proxy_ports = [
        ("outbound-port", outbound_port),
        ("inbound-port", inbound_port),
        ("admin-port", admin_port),
    ];
    for (i, (a, pa)) in proxy_ports.iter().enumerate() {
        for (b, pb) in &proxy_ports[i + 1..] {
            if *pa != 0 && pa == pb {
                errors.push(format!("--{a} and --{b} must differ (both are {pa})"));
            }
        }
    }

    let proxy_uid = match args.proxy_uid.as_deref().map(parse_id) {
        None => {
            errors.push(
                "--proxy-uid: required: the UID the proxy runs as, whose own traffic \
                 must not be captured"
                    .to_owned(),
            );
            0
        }
        // Root is refused: every process running as root (often the app itself) would
        // then bypass the mesh without anyone noticing.
        Some(Ok(0)) => {
            errors.push(
                "--proxy-uid: 0 (root) is refused: all root processes would bypass \
                 the proxy; run the proxy as a dedicated UID"
                    .to_owned(),
            );
            0
        }
        Some(Ok(uid)) => uid,
        Some(Err(e)) => {
            errors.push(format!("--proxy-uid: {e}"));
            0
        }
    };
    let proxy_gid = args.proxy_gid.as_deref().map(|text| {
        parse_id(text).unwrap_or_else(|e| {
            errors.push(format!("--proxy-gid: {e}"));
            0
        })
    });

    let exclude_outbound_ports = parse_ports(
        "exclude-outbound-ports",
        &args.exclude_outbound_ports,
        errors,
    );
    let exclude_inbound_ports =
        parse_ports("exclude-inbound-ports", &args.exclude_inbound_ports, errors);
    let exclude_outbound_cidrs = parse_cidrs(
        "exclude-outbound-cidrs",
        &args.exclude_outbound_cidrs,
        errors,
    );
    let include_outbound_cidrs = parse_scope(&args.include_outbound_cidrs, |values| {
        parse_cidrs("include-outbound-cidrs", values, errors)
    });
    let include_inbound_ports = parse_scope(&args.include_inbound_ports, |values| {
        parse_ports("include-inbound-ports", values, errors)
            .into_iter()
            .collect()
    });
    Capture {
        outbound_port,
        inbound_port,
        admin_port,
        proxy_uid,
        proxy_gid,
        exclude_outbound_ports,
        exclude_outbound_cidrs,
        include_outbound_cidrs,
        exclude_inbound_ports,
        include_inbound_ports,
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} is not a port (1-65535)"))
}

/// A numeric UID or GID: names would need the pod image's user database.
fn parse_id(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        // (uid_t)-1 means "no change" to the kernel; xt_owner cannot match it.
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| format!("{text:?} is not a numeric id"))
}

fn parse_ports(flag: &str, values: &[String], errors: &mut Vec<String>) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for value in values.iter().filter(|v| !v.trim().is_empty()) {
        match parse_port(value) {
            Ok(p) => {
                ports.insert(p);
            }
            Err(e) => errors.push(format!("--{flag}: {e}")),
        }
    }
    ports
}

fn parse_cidrs(flag: &str, values: &[String], errors: &mut Vec<String>) -> Vec<Cidr> {
    let mut cidrs = BTreeSet::new();
    for value in values.iter().filter(|v| !v.trim().is_empty()) {
        match value.trim().parse::<Cidr>() {
            Ok(c) => {
                cidrs.insert(c);
            }
            Err(e) => errors.push(format!("--{flag}: {e}")),
        }
    }
    cidrs.into_iter().collect()
}

/// `*` anywhere in the list means everything; anything else is an explicit list.
fn parse_scope<T>(values: &[String], parse: impl FnOnce(&[String]) -> Vec<T>) -> Scope<T> {
    if values.iter().any(|v| v.trim() == "*") {
        Scope::All
    } else {
        Scope::Only(parse(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InitArgs {
        let mut argv = vec!["weft-proxy init"];
        argv.extend_from_slice(extra);
        InitArgs::parse_from(argv)
    }

    #[test]
    fn defaults_match_the_proxy_listeners() {
        let proxy = crate::config::Args::parse_from(["weft-proxy"]);
        let port = |addr: &str| addr.rsplit_once(':').map(|(_, p)| p.to_owned());
        assert_eq!(
            port(&proxy.outbound),
            Some(DEFAULT_OUTBOUND_PORT.to_string())
        );
        assert_eq!(port(&proxy.inbound), Some(DEFAULT_INBOUND_PORT.to_string()));
        assert_eq!(port(&proxy.admin), Some(DEFAULT_ADMIN_PORT.to_string()));
    }

    #[test]
    fn every_invalid_value_is_reported() {
        let errors = InitConfig::from_args(args(&[
            "--outbound-port",
            "0",
            "--inbound-port",
            "15020",
            "--exclude-outbound-ports",
            "22,x",
            "--exclude-outbound-cidrs",
            "10.0.0.0/33,fd00::/64",
            "--include-inbound-ports",
            "70000",
        ]))
        .expect_err("invalid");
        let expected = [
            "--outbound-port",
            "--inbound-port and --admin-port must differ",
            "--proxy-uid: required",
            "--exclude-outbound-ports: \"x\"",
            "--exclude-outbound-cidrs: \"10.0.0.0/33\"",
            "--include-inbound-ports: \"70000\"",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(start),
                "{error:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn root_is_refused_as_the_proxy_uid() {
        let errors = InitConfig::from_args(args(&["--proxy-uid", "0"])).expect_err("root");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("refused"), "{errors:?}");
    }

    #[test]
    fn lists_are_deduplicated_and_cidrs_normalised() {
        let config = InitConfig::from_args(args(&[
            "--proxy-uid",
            "1337",
            "--proxy-gid",
            "1338",
            "--exclude-outbound-ports",
            "9090,22,9090",
            "--exclude-outbound-cidrs",
            "10.1.2.3/8,192.168.0.7,fd00::1/8",
            "--include-inbound-ports",
            "8080,80",
        ]))
        .expect("valid");
        let Action::Apply(capture) = config.action else {
            panic!("expected apply, got {:?}", config.action);
        };
        assert_eq!(capture.proxy_gid, Some(1338));
        assert_eq!(
            capture.exclude_outbound_ports.iter().collect::<Vec<_>>(),
            [&22, &9090]
        );
        let cidrs: Vec<String> = capture
            .exclude_outbound_cidrs
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "192.168.0.7/32", "fd00::/8"]);
        assert_eq!(capture.include_outbound_cidrs, Scope::All);
        assert_eq!(capture.include_inbound_ports, Scope::Only(vec![80, 8080]));
    }

    #[test]
    fn cleanup_needs_no_capture_flags() {
        let config = InitConfig::from_args(args(&["--remove"])).expect("valid");
        assert_eq!(config.action, Action::Cleanup);
    }

    #[test]
    fn cidr_edges() {
        let cidr = |t: &str| t.parse::<Cidr>().map(|c| c.to_string());
        assert_eq!(cidr("0.0.0.0/0"), Ok("0.0.0.0/0".to_owned()));
        assert_eq!(cidr("::/0"), Ok("::/0".to_owned()));
        assert_eq!(cidr("::1"), Ok("::1/128".to_owned()));
        assert!(cidr("fd00::/129").is_err());
        assert!(cidr("example.com/8").is_err());
    }
}
