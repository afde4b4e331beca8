//! The pod's nat rules, as a pure function from [`Capture`] (and what `iptables-save`
//! showed) to `iptables-restore` text. Nothing here runs a command, so all of it is
//! unit-tested without privileges.
//!
//! # The rules
//! Two jumps from the built-in chains enter Weft's own chains:
//! ```text
//! PREROUTING -p tcp -> WEFT_INBOUND  -> RETURN for the proxy's ports and excluded ports
//!                                    -> WEFT_INBOUND_REDIRECT (REDIRECT to the inbound port)
//! OUTPUT     -p tcp -> WEFT_OUTBOUND -> proxy UID/GID to the pod's own address: WEFT_INBOUND
//!                                    -> RETURN: other loopback traffic, the proxy UID/GID,
//!                                       127.0.0.0/8 (::1), excluded ports and CIDRs
//!                                    -> WEFT_OUTBOUND_REDIRECT (REDIRECT to the outbound port)
//! ```
//! Loopback, decided as istio-init does: an app reaching itself (over 127.0.0.1 or its own
//! pod address, both of which leave through `lo`) is not captured, since no policy or mTLS
//! applies inside one pod and capturing it would gain nothing. The proxy reaching the pod's
//! own address is the other case: the outbound proxy picked this very pod as the endpoint,
//! so the connection is sent through WEFT_INBOUND and arrives at the inbound listener like
//! one from another pod, keeping the inbound side's authorization and metrics.
//!
//! # Idempotence
//! `iptables-restore --noflush` with `:CHAIN` lines creates-or-flushes Weft's chains, so
//! rewriting them never duplicates a rule. The jumps from PREROUTING and OUTPUT live in
//! chains Weft does not own, so every existing jump into a `WEFT_` chain, as read from
//! `iptables-save`, is deleted in the same transaction before the new ones are appended.
//! The table is replaced atomically: no packet sees a half-written set.

use std::fmt;

use super::config::{Capture, Cidr, Scope};

/// Every chain Weft owns starts with this; cleanup removes all of them.
pub const CHAIN_PREFIX: &str = "WEFT_";
pub const INBOUND: &str = "WEFT_INBOUND";
pub const INBOUND_REDIRECT: &str = "WEFT_INBOUND_REDIRECT";
pub const OUTBOUND: &str = "WEFT_OUTBOUND";
pub const OUTBOUND_REDIRECT: &str = "WEFT_OUTBOUND_REDIRECT";
/// Declared in this order; the order is cosmetic (iptables-save sorts them).
pub const CHAINS: [&str; 4] = [INBOUND, INBOUND_REDIRECT, OUTBOUND, OUTBOUND_REDIRECT];

/// IPv4 rules go to iptables, IPv6 rules to ip6tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.is_ipv6() == (self == Family::V6)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One `-A CHAIN ...` line, its matches written in the order iptables-save prints them,
/// so that the generated text and the saved table can be compared line for line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub spec: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.spec)
    }
}

/// The matches a Weft rule may use, rendered in iptables-save's canonical order.
#[derive(Default)]
struct Spec {
    dst: Option<(bool, String)>,
    out_lo: bool,
    tcp: bool,
    dport: Option<u16>,
    owner: Option<(bool, Owner)>,
}

#[derive(Clone, Copy)]
enum Owner {
    Uid(u32),
    Gid(u32),
}

impl Spec {
    fn tcp() -> Spec {
        Spec {
            tcp: true,
            ..Spec::default()
        }
    }

    fn dport(port: u16) -> Spec {
        Spec {
            tcp: true,
            dport: Some(port),
            ..Spec::default()
        }
    }

    fn dst(cidr: impl ToString) -> Spec {
        Spec {
            dst: Some((false, cidr.to_string())),
            ..Spec::default()
        }
    }

    fn render(&self, target: &str) -> String {
        let mut out = Vec::new();
        if let Some((negated, cidr)) = &self.dst {
            out.push(format!("{}-d {cidr}", if *negated { "! " } else { "" }));
        }
        if self.out_lo {
            out.push("-o lo".to_owned());
        }
        if self.tcp {
            out.push("-p tcp".to_owned());
        }
        if let Some(port) = self.dport {
            out.push(format!("-m tcp --dport {port}"));
        }
        if let Some((negated, owner)) = self.owner {
            let not = if negated { "! " } else { "" };
            out.push(match owner {
                Owner::Uid(uid) => format!("-m owner {not}--uid-owner {uid}"),
                Owner::Gid(gid) => format!("-m owner {not}--gid-owner {gid}"),
            });
        }
        out.push(format!("-j {target}"));
        out.join(" ")
    }

    fn rule(self, chain: &'static str, target: &str) -> Rule {
        Rule {
            chain,
            spec: self.render(target),
        }
    }
}

/// Weft's rules for one address family: its own chains' rules, then the two jumps.
pub fn capture_rules(capture: &Capture, family: Family) -> Vec<Rule> {
    let mut rules = inbound_rules(capture);
    rules.extend(outbound_rules(capture, family));
    rules.push(Spec::tcp().rule("PREROUTING", INBOUND));
    rules.push(Spec::tcp().rule("OUTPUT", OUTBOUND));
    rules
}

fn inbound_rules(capture: &Capture) -> Vec<Rule> {
    let mut rules = vec![Spec::tcp().rule(
        INBOUND_REDIRECT,
        &format!("REDIRECT --to-ports {}", capture.inbound_port),
    )];
    // The proxy's own ports are never rewritten: a peer that dials one explicitly must
    // reach it as such (with no original destination) rather than be looped into the
    // inbound listener as if it were app traffic.
    let mut exempt = capture.exclude_inbound_ports.clone();
    exempt.extend([
        capture.admin_port,
        capture.inbound_port,
        capture.outbound_port,
    ]);
    for port in &exempt {
        rules.push(Spec::dport(*port).rule(INBOUND, "RETURN"));
    }
    match &capture.include_inbound_ports {
        Scope::All => rules.push(Spec::tcp().rule(INBOUND, INBOUND_REDIRECT)),
        Scope::Only(ports) => {
            for port in ports.iter().filter(|p| !exempt.contains(p)) {
                rules.push(Spec::dport(*port).rule(INBOUND, INBOUND_REDIRECT));
            }
        }
    }
    rules
}

fn outbound_rules(capture: &Capture, family: Family) -> Vec<Rule> {
    let mut rules = vec![Spec::tcp().rule(
        OUTBOUND_REDIRECT,
        &format!("REDIRECT --to-ports {}", capture.outbound_port),
    )];
    let loopback = family.loopback();
    let owners =
        std::iter::once(Owner::Uid(capture.proxy_uid)).chain(capture.proxy_gid.map(Owner::Gid));
    for owner in owners {
        // The proxy dialling the pod's own (non-loopback) address: see the module docs.
        rules.push(
            Spec {
                dst: Some((true, loopback.to_owned())),
                out_lo: true,
                owner: Some((false, owner)),
                ..Spec::default()
            }
            .rule(OUTBOUND, INBOUND),
        );
        // Anyone else over lo (the app reaching itself) goes straight through.
        rules.push(
            Spec {
                out_lo: true,
                owner: Some((true, owner)),
                ..Spec::default()
            }
            .rule(OUTBOUND, "RETURN"),
        );
        // The proxy's own connections to other pods must not loop back into it.
        rules.push(
            Spec {
                owner: Some((false, owner)),
                ..Spec::default()
            }
            .rule(OUTBOUND, "RETURN"),
        );
    }
    rules.push(Spec::dst(loopback).rule(OUTBOUND, "RETURN"));
    for port in &capture.exclude_outbound_ports {
        rules.push(Spec::dport(*port).rule(OUTBOUND, "RETURN"));
    }
    for cidr in capture
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| family.holds(c))
    {
        rules.push(Spec::dst(cidr).rule(OUTBOUND, "RETURN"));
    }
    match &capture.include_outbound_cidrs {
        Scope::All => rules.push(Spec::default().rule(OUTBOUND, OUTBOUND_REDIRECT)),
        // A family with no included CIDR captures nothing: listing only IPv4 networks
        // says nothing about where IPv6 traffic should go.
        Scope::Only(cidrs) => {
            for cidr in cidrs.iter().filter(|c| family.holds(c)) {
                rules.push(Spec::dst(cidr).rule(OUTBOUND, OUTBOUND_REDIRECT));
            }
        }
    }
    rules
}

/// What `iptables-save -t nat` showed: the chains and rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    pub chains: Vec<String>,
    /// (chain, rule spec) for every `-A` line.
    pub rules: Vec<(String, String)>,
}

impl NatTable {
    /// Reads `iptables-save` output; lines outside the nat table are ignored.
    pub fn parse(save: &str) -> NatTable {
        let mut table = NatTable::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                in_nat = name == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(chain) = line.strip_prefix(':') {
                if let Some(name) = chain.split_whitespace().next() {
                    table.chains.push(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                if let Some((chain, spec)) = rule.split_once(' ') {
                    table.rules.push((chain.to_owned(), spec.to_owned()));
                }
            }
        }
        table
    }

    /// Chains Weft created (by name), in table order.
    pub fn weft_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(CHAIN_PREFIX))
    }

    /// Rules in chains Weft does not own that jump into one it does: the entry points.
    pub fn weft_jumps(&self) -> impl Iterator<Item = &(String, String)> {
        self.rules
            .iter()
            .filter(|(chain, spec)| !chain.starts_with(CHAIN_PREFIX) && jumps_to_weft(spec))
    }

    /// True when nothing of Weft's is in the table.
    pub fn is_clean(&self) -> bool {
        self.weft_chains().next().is_none() && self.weft_jumps().next().is_none()
    }
}

/// The target is the last `-j`/`-g`: matches come before it in iptables-save output, and
/// a comment that merely mentions `-j WEFT_` is quoted text earlier in the line.
fn jumps_to_weft(spec: &str) -> bool {
    let tokens: Vec<&str> = spec.split_whitespace().collect();
    tokens
        .iter()
        .rposition(|t| *t == "-j" || *t == "-g")
        .and_then(|i| tokens.get(i + 1))
        .is_some_and(|target| target.starts_with(CHAIN_PREFIX))
}

/// The `iptables-restore --noflush` input that makes `existing` hold exactly Weft's
/// current rules for `family`, whatever an earlier run (or an older version) left.
pub fn apply_ruleset(capture: &Capture, family: Family, existing: &NatTable) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (chain, spec) in existing.weft_jumps() {
        out.push_str(&format!("-D {chain} {spec}\n"));
    }
    // Chains of an older layout: flushed first, since one may still jump to another.
    let stale: Vec<&str> = existing
        .weft_chains()
        .filter(|c| !CHAINS.contains(c))
        .collect();
    for chain in &stale {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    for rule in capture_rules(capture, family) {
        out.push_str(&format!("{rule}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that removes everything of Weft's from
/// `existing`, or `None` when there is nothing to remove.
pub fn cleanup_ruleset(existing: &NatTable) -> Option<String> {
    if existing.is_clean() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for (chain, spec) in existing.weft_jumps() {
        out.push_str(&format!("-D {chain} {spec}\n"));
    }
    // Weft chains jump to each other, so all are emptied before any is deleted.
    for chain in existing.weft_chains() {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in existing.weft_chains() {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests;
