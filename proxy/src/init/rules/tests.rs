//! Rule generation, checked as text and against a small model of `iptables-restore
//! --noflush`, so idempotence and cleanup are proven without root. The real iptables in
//! network namespaces is exercised by the e2e tests (`tests/tests/capture.rs`).

use std::collections::BTreeSet;

use super::*;
use crate::init::config::{Capture, Cidr, Scope};

fn capture() -> Capture {
    Capture {
        outbound_port: 15001,
        inbound_port: 15006,
        admin_port: 15020,
        proxy_uid: 1337,
        proxy_gid: None,
        exclude_outbound_ports: BTreeSet::new(),
        exclude_outbound_cidrs: Vec::new(),
        include_outbound_cidrs: Scope::All,
        exclude_inbound_ports: BTreeSet::new(),
        include_inbound_ports: Scope::All,
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter()
        .map(|c| c.parse().expect("valid test CIDR"))
        .collect()
}

fn lines(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(Rule::to_string).collect()
}

#[test]
fn default_rules_are_exactly_these() {
    let expected = [
        "-A WEFT_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 15001 -j RETURN",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 15006 -j RETURN",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A WEFT_INBOUND -p tcp -j WEFT_INBOUND_REDIRECT",
        "-A WEFT_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A WEFT_OUTBOUND ! -d 127.0.0.0/8 -o lo -m owner --uid-owner 1337 -j WEFT_INBOUND",
        "-A WEFT_OUTBOUND -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A WEFT_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
        "-A WEFT_OUTBOUND -d 127.0.0.0/8 -j RETURN",
        "-A WEFT_OUTBOUND -j WEFT_OUTBOUND_REDIRECT",
        "-A PREROUTING -p tcp -j WEFT_INBOUND",
        "-A OUTPUT -p tcp -j WEFT_OUTBOUND",
    ];
    assert_eq!(lines(&capture_rules(&capture(), Family::V4)), expected);
}

#[test]
fn exclusions_return_before_the_redirect() {
    let mut c = capture();
    c.exclude_outbound_ports = [9090, 22].into();
    c.exclude_outbound_cidrs = cidrs(&["10.96.0.0/12", "fd00::/8"]);
    c.exclude_inbound_ports = [7072].into();
    let text = lines(&capture_rules(&c, Family::V4));
    let position = |rule: &str| {
        text.iter()
            .position(|l| l == rule)
            .unwrap_or_else(|| panic!("{rule:?} missing from {text:#?}"))
    };
    let redirect_out = position("-A WEFT_OUTBOUND -j WEFT_OUTBOUND_REDIRECT");
    for rule in [
        "-A WEFT_OUTBOUND -p tcp -m tcp --dport 22 -j RETURN",
        "-A WEFT_OUTBOUND -p tcp -m tcp --dport 9090 -j RETURN",
        "-A WEFT_OUTBOUND -d 10.96.0.0/12 -j RETURN",
    ] {
        assert!(position(rule) < redirect_out, "{rule} after the redirect");
    }
    let redirect_in = position("-A WEFT_INBOUND -p tcp -j WEFT_INBOUND_REDIRECT");
    assert!(position("-A WEFT_INBOUND -p tcp -m tcp --dport 7072 -j RETURN") < redirect_in);
    assert!(
        !text.iter().any(|l| l.contains("fd00::")),
        "an IPv6 CIDR leaked into the IPv4 rules: {text:#?}"
    );
}

#[test]
fn included_lists_replace_the_catch_all_redirects() {
    let mut c = capture();
    c.include_outbound_cidrs = Scope::Only(cidrs(&["10.203.0.0/16", "fd00::/8"]));
    // 15020 is the admin port: excluded even when listed.
    c.include_inbound_ports = Scope::Only(vec![8080, 15020]);
    let v4 = lines(&capture_rules(&c, Family::V4));
    assert!(v4.contains(&"-A WEFT_OUTBOUND -d 10.203.0.0/16 -j WEFT_OUTBOUND_REDIRECT".into()));
    assert!(!v4.contains(&"-A WEFT_OUTBOUND -j WEFT_OUTBOUND_REDIRECT".into()));
    let inbound_redirects: Vec<&String> = v4
        .iter()
        .filter(|l| l.starts_with("-A WEFT_INBOUND ") && l.ends_with("-j WEFT_INBOUND_REDIRECT"))
        .collect();
    assert_eq!(
        inbound_redirects,
        ["-A WEFT_INBOUND -p tcp -m tcp --dport 8080 -j WEFT_INBOUND_REDIRECT"]
    );
    let v6 = lines(&capture_rules(&c, Family::V6));
    assert!(v6.contains(&"-A WEFT_OUTBOUND -d fd00::/8 -j WEFT_OUTBOUND_REDIRECT".into()));
    assert!(!v6.iter().any(|l| l.contains("10.203.")));
}

#[test]
fn a_family_without_included_cidrs_redirects_nothing_outbound() {
    let mut c = capture();
    c.include_outbound_cidrs = Scope::Only(cidrs(&["10.0.0.0/8"]));
    let v6 = lines(&capture_rules(&c, Family::V6));
    assert!(
        !v6.iter().any(|l| l.ends_with("-j WEFT_OUTBOUND_REDIRECT")),
        "{v6:#?}"
    );
}

#[test]
fn proxy_gid_is_exempt_like_the_uid() {
    let mut c = capture();
    c.proxy_gid = Some(1338);
    let text = lines(&capture_rules(&c, Family::V6));
    for rule in [
        "-A WEFT_OUTBOUND ! -d ::1/128 -o lo -m owner --gid-owner 1338 -j WEFT_INBOUND",
        "-A WEFT_OUTBOUND -o lo -m owner ! --gid-owner 1338 -j RETURN",
        "-A WEFT_OUTBOUND -m owner --gid-owner 1338 -j RETURN",
        "-A WEFT_OUTBOUND -d ::1/128 -j RETURN",
    ] {
        assert!(text.contains(&rule.to_owned()), "{rule} missing: {text:#?}");
    }
}

#[test]
fn jumps_are_recognised_by_their_target_only() {
    assert!(jumps_to_weft("-p tcp -j WEFT_OUTBOUND"));
    assert!(jumps_to_weft("-g WEFT_OLD"));
    assert!(!jumps_to_weft("-p tcp -j REDIRECT --to-ports 15001"));
    assert!(!jumps_to_weft(
        "-m comment --comment \"see -j WEFT_OUTBOUND\" -j ACCEPT"
    ));
}

#[test]
fn dry_run_prints_one_restore_transaction_per_family() {
    let text = crate::init::dry_run(&capture(), true);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            "# weft-proxy init: IPv4 rules, applied with `iptables-restore --noflush`",
            "# weft-proxy init: IPv6 rules, applied with `ip6tables-restore --noflush`",
        ]
    );
    assert_eq!(text.matches("*nat\n").count(), 2);
    assert_eq!(text.matches("COMMIT\n").count(), 2);
    assert_eq!(text.matches(":WEFT_OUTBOUND - [0:0]\n").count(), 2);
    assert!(!text.contains("-D "), "a fresh pod has nothing to delete");
    assert!(text.contains("! -d ::1/128 -o lo"));
}

// === A model of `iptables-restore --noflush` over the nat table ===

/// A fresh pod's table plus one rule somebody else owns, which Weft must never touch.
fn foreign_table() -> NatTable {
    NatTable {
        chains: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "OTHER"]
            .map(String::from)
            .to_vec(),
        rules: vec![
            ("OUTPUT".into(), "-p udp -j OTHER".into()),
            ("OTHER".into(), "-j RETURN".into()),
        ],
    }
}

/// Applies restore input the way iptables does, failing where it would.
fn restore(table: &mut NatTable, input: &str) -> Result<(), String> {
    let has_chain = |t: &NatTable, c: &str| t.chains.iter().any(|x| x == c);
    for line in input.lines().filter(|l| !l.starts_with('#')) {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        match command {
            "*nat" | "COMMIT" => {}
            declared if declared.starts_with(':') => {
                let chain = declared.trim_start_matches(':');
                // With --noflush a declared chain is created, or flushed if it exists.
                if has_chain(table, chain) {
                    table.rules.retain(|(c, _)| c != chain);
                } else {
                    table.chains.push(chain.to_owned());
                }
            }
            "-A" if has_chain(table, chain) => {
                table.rules.push((chain.to_owned(), spec.to_owned()));
            }
            "-D" => {
                let i = table
                    .rules
                    .iter()
                    .position(|(c, s)| c == chain && s == spec)
                    .ok_or(format!("-D of a missing rule: {line}"))?;
                table.rules.remove(i);
            }
            "-F" if has_chain(table, chain) => table.rules.retain(|(c, _)| c != chain),
            "-X" => {
                let referenced = table
                    .rules
                    .iter()
                    .any(|(c, s)| c == chain || s.split_whitespace().any(|t| t == chain));
                if !has_chain(table, chain) || referenced {
                    return Err(format!("cannot delete chain: {line}"));
                }
                table.chains.retain(|c| c != chain);
            }
            _ => return Err(format!("rejected: {line}")),
        }
    }
    Ok(())
}

fn applied(table: &NatTable, capture: &Capture) -> NatTable {
    let mut next = table.clone();
    restore(&mut next, &apply_ruleset(capture, Family::V4, table)).expect("apply");
    next
}

/// The table's rules in iptables-save's order: chain by chain.
fn saved(table: &NatTable) -> Vec<String> {
    table
        .chains
        .iter()
        .flat_map(|chain| {
            table
                .rules
                .iter()
                .filter(move |(c, _)| c == chain)
                .map(|(c, s)| format!("-A {c} {s}"))
        })
        .collect()
}

#[test]
fn applying_twice_leaves_exactly_one_set() {
    let once = applied(&foreign_table(), &capture());
    let twice = applied(&once, &capture());
    assert_eq!(saved(&once), saved(&twice));
    let jumps: Vec<_> = twice.weft_jumps().collect();
    assert_eq!(jumps.len(), 2, "{jumps:?}");
    assert_eq!(twice.weft_chains().count(), CHAINS.len());
    assert!(saved(&twice).contains(&"-A OUTPUT -p udp -j OTHER".to_owned()));
}

#[test]
fn the_second_run_deletes_the_jumps_it_rewrites() {
    let once = applied(&foreign_table(), &capture());
    let text = apply_ruleset(&capture(), Family::V4, &once);
    assert!(text.contains("-D PREROUTING -p tcp -j WEFT_INBOUND\n"));
    assert!(text.contains("-D OUTPUT -p tcp -j WEFT_OUTBOUND\n"));
}

#[test]
fn a_new_config_replaces_the_old_one_entirely() {
    let mut other = capture();
    other.outbound_port = 16001;
    other.exclude_outbound_ports = [22].into();
    let reconfigured = applied(&applied(&foreign_table(), &capture()), &other);
    assert_eq!(
        saved(&reconfigured),
        saved(&applied(&foreign_table(), &other))
    );
}

#[test]
fn cleanup_restores_the_table_and_removes_older_layouts() {
    let mut table = applied(&foreign_table(), &capture());
    // What an older version might have left: its own chain and a jump into it.
    restore(
        &mut table,
        "*nat\n:WEFT_OLD - [0:0]\n-A WEFT_OLD -j WEFT_INBOUND\n-A PREROUTING -j WEFT_OLD\nCOMMIT\n",
    )
    .expect("seed an old layout");
    let cleanup = cleanup_ruleset(&table).expect("something to remove");
    restore(&mut table, &cleanup).expect("cleanup");
    assert_eq!(table, foreign_table());
    assert_eq!(cleanup_ruleset(&table), None, "a clean table needs nothing");
}

#[test]
fn apply_removes_chains_of_an_older_layout() {
    let mut table = foreign_table();
    restore(
        &mut table,
        "*nat\n:WEFT_OLD - [0:0]\n-A OUTPUT -j WEFT_OLD\nCOMMIT\n",
    )
    .expect("seed an old layout");
    let table = applied(&table, &capture());
    assert_eq!(saved(&table), saved(&applied(&foreign_table(), &capture())));
    assert!(!table.chains.iter().any(|c| c == "WEFT_OLD"));
}

#[test]
fn the_save_output_parses_back_to_the_table() {
    let save = "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n\
                -A INPUT -j DROP\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                :WEFT_OUTBOUND - [0:0]\n-A OUTPUT -p tcp -j WEFT_OUTBOUND\nCOMMIT\n";
    let table = NatTable::parse(save);
    assert_eq!(table.chains, ["PREROUTING", "OUTPUT", "WEFT_OUTBOUND"]);
    assert_eq!(
        table.rules,
        [("OUTPUT".to_owned(), "-p tcp -j WEFT_OUTBOUND".to_owned())]
    );
}
