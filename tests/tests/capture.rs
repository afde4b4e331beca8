//! Transparent capture with the real `weft-proxy init` and real iptables, in network
//! namespaces joined by a veth pair (docs/capture.md). Which connections are captured is
//! observed, not inferred: `weft-netns-probe` listeners answer with the label of the
//! listener that got the connection and the original destination the proxy would read.
//!
//! Everything except the dry-run and usage checks needs root; without it these tests fail
//! saying so. Build the binaries first: `cargo build --workspace --bins`. The same rules
//! with the real proxies and control plane: `capture_mesh.rs`.

mod common;

use std::process::Command;

use weft_e2e::netns::{self, Netns};
use weft_e2e::{bin, Proc};

use common::*;

fn init_command() -> Command {
    let mut command = Command::new(bin("weft-proxy"));
    command.arg("init");
    command
}

/// The nat table's lines that belong to Weft (chain declarations, rules in Weft chains,
/// jumps into them), sorted, as `tool` (iptables-save or ip6tables-save) shows them.
fn saved_weft_lines(netns: &Netns, tool: &str) -> Vec<String> {
    let mut lines: Vec<String> = netns
        .check(tool, &["-t", "nat"])
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("WEFT_"))
        .map(|l| l.replace(" - [0:0]", ""))
        .collect();
    lines.sort();
    lines
}

/// The same lines from the dry-run output of one family's transaction.
fn generated_weft_lines(dry_run: &str, family_header: &str) -> Vec<String> {
    let mut lines: Vec<String> = dry_run
        .split("# weft-proxy init: ")
        .find(|block| block.starts_with(family_header))
        .unwrap_or_else(|| panic!("no {family_header} block in:\n{dry_run}"))
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with(':'))
        .map(|l| l.replace(" - [0:0]", ""))
        .collect();
    lines.sort();
    lines
}

const INIT_FLAGS: &[&str] = &[
    "--proxy-uid",
    PROXY_UID,
    "--proxy-gid",
    PROXY_GID,
    "--exclude-outbound-ports",
    "9090",
    "--exclude-outbound-cidrs",
    "10.203.0.3/32",
    "--exclude-inbound-ports",
    "7072",
];

#[test]
fn dry_run_prints_the_rules_without_privileges() {
    let output = init_command()
        .args(INIT_FLAGS)
        .args(["--ipv6", "--dry-run"])
        // Nothing on PATH: a dry run must not need iptables at all.
        .env("PATH", "/nonexistent")
        .output()
        .expect("run weft-proxy init");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    for line in [
        "-A PREROUTING -p tcp -j WEFT_INBOUND",
        "-A OUTPUT -p tcp -j WEFT_OUTBOUND",
        "-A WEFT_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A WEFT_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 7072 -j RETURN",
        "-A WEFT_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
        "-A WEFT_OUTBOUND -m owner --gid-owner 1338 -j RETURN",
        "-A WEFT_OUTBOUND -p tcp -m tcp --dport 9090 -j RETURN",
        "-A WEFT_OUTBOUND -d 10.203.0.3/32 -j RETURN",
        "-A WEFT_OUTBOUND -d 127.0.0.0/8 -j RETURN",
        "-A WEFT_OUTBOUND -d ::1/128 -j RETURN",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }
    assert_eq!(out.matches("COMMIT").count(), 2, "one per family:\n{out}");
}

#[test]
fn invalid_flags_are_all_reported_with_exit_64() {
    let output = init_command()
        .args(["--outbound-port", "x", "--exclude-inbound-ports", "0"])
        .output()
        .expect("run weft-proxy init");
    assert_eq!(output.status.code(), Some(64));
    let stderr = text(&output.stderr);
    for flag in ["--outbound-port", "--proxy-uid", "--exclude-inbound-ports"] {
        assert!(stderr.contains(flag), "{flag} not reported:\n{stderr}");
    }
}

#[test]
fn missing_iptables_is_named_with_exit_69() {
    let output = init_command()
        .args(["--proxy-uid", PROXY_UID])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run weft-proxy init");
    assert_eq!(output.status.code(), Some(69), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("iptables not found: install the iptables package"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn init_twice_leaves_one_set_and_cleanup_removes_it() {
    let pod = Netns::new("idem");
    // Somebody else's rule, which neither init nor cleanup may touch.
    pod.check(
        "iptables",
        &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN"],
    );
    let dry_run = text(
        &init_command()
            .args(INIT_FLAGS)
            .args(["--ipv6", "--dry-run"])
            .output()
            .expect("dry run")
            .stdout,
    );

    init(&pod, &[INIT_FLAGS, &["--ipv6"]].concat());
    let second = init(&pod, &[INIT_FLAGS, &["--ipv6"]].concat());
    assert!(second.contains("replacing earlier Weft rules"), "{second}");
    assert_eq!(
        saved_weft_lines(&pod, "iptables-save"),
        generated_weft_lines(&dry_run, "IPv4"),
        "the IPv4 table should hold exactly the generated set"
    );
    assert_eq!(
        saved_weft_lines(&pod, "ip6tables-save"),
        generated_weft_lines(&dry_run, "IPv6"),
        "the IPv6 table should hold exactly the generated set"
    );

    // A run without --ipv6 takes the IPv6 rules away again.
    init(&pod, INIT_FLAGS);
    assert_eq!(
        saved_weft_lines(&pod, "ip6tables-save"),
        Vec::<String>::new()
    );

    init(&pod, &["--cleanup"]);
    assert_eq!(
        saved_weft_lines(&pod, "iptables-save"),
        Vec::<String>::new()
    );
    let nat = pod.check("iptables-save", &["-t", "nat"]);
    assert!(nat.contains("-A OUTPUT -p udp -j RETURN"), "{nat}");
    let again = init(&pod, &["--remove"]);
    assert!(again.contains("no Weft rules to remove"), "{again}");
}

#[test]
fn without_net_admin_init_says_what_is_needed() {
    let pod = Netns::new("noadm");
    let proxy = bin("weft-proxy");
    let output = run_as(
        &pod,
        APP,
        &proxy.to_string_lossy(),
        &["init", "--proxy-uid", PROXY_UID],
    );
    assert_eq!(output.status.code(), Some(77), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(
            "needs CAP_NET_ADMIN (run as root or add the capability to the init container)"
        ),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        saved_weft_lines(&pod, "iptables-save"),
        Vec::<String>::new()
    );
}

/// Two pods on one veth: `app` (10.203.0.1) with Weft's rules, `peer` (10.203.0.2 and
/// 10.203.0.3) without, each with probe listeners standing in for the proxy and apps.
struct Pods {
    // Declared first so they are killed before their namespaces go.
    _probes: Vec<Proc>,
    _logs: tempfile::TempDir,
    app: Netns,
    peer: Netns,
}

impl Pods {
    fn new(extra_init: &[&str], ipv6: bool, app_listeners: &[&str]) -> Pods {
        let app = Netns::new("app");
        let peer = Netns::new("peer");
        netns::connect(&app, "10.203.0.1/24", &peer, "10.203.0.2/24", "eth0");
        peer.add_address("eth0", "10.203.0.3/24");
        if ipv6 {
            // nodad: usable at once, instead of after duplicate address detection.
            app.ip(&["addr", "add", "fd00:203::1/64", "dev", "eth0", "nodad"]);
            peer.ip(&["addr", "add", "fd00:203::2/64", "dev", "eth0", "nodad"]);
        }
        init(&app, &[INIT_FLAGS, extra_init].concat());
        let logs = tempfile::tempdir().expect("temp dir");
        let probes = vec![
            serve(&app, "app-probe", app_listeners, logs.path()),
            serve(
                &peer,
                "peer-probe",
                &["peer-8080=[::]:8080", "peer-9090=[::]:9090"],
                logs.path(),
            ),
        ];
        Pods {
            _probes: probes,
            _logs: logs,
            app,
            peer,
        }
    }
}

const V4_LISTENERS: &[&str] = &[
    "outbound=127.0.0.1:15001",
    "inbound=0.0.0.0:15006",
    "admin=0.0.0.0:15020",
    "app-local=127.0.0.1:7070",
    "app=0.0.0.0:7071",
    "excluded=0.0.0.0:7072",
];

#[test]
fn outbound_connections_are_captured_except_the_exempt_ones() {
    let pods = Pods::new(&[], false, V4_LISTENERS);
    let app = &pods.app;
    let cases = [
        (APP, "10.203.0.2:8080", "outbound orig=10.203.0.2:8080"),
        (PROXY, "10.203.0.2:8080", "peer-8080 orig=none"),
        (PROXY_GROUP_ONLY, "10.203.0.2:8080", "peer-8080 orig=none"),
        (APP, "10.203.0.2:9090", "peer-9090 orig=none"),
        (APP, "10.203.0.3:8080", "peer-8080 orig=none"),
        (APP, "127.0.0.1:7070", "app-local orig=none"),
        // The app reaching itself through its pod address: not captured (docs/capture.md).
        (APP, "10.203.0.1:7071", "app orig=none"),
        // The proxy reaching its own pod: sent through the inbound listener.
        (PROXY, "10.203.0.1:8080", "inbound orig=10.203.0.1:8080"),
        (PROXY, "10.203.0.1:15020", "admin orig=none"),
    ];
    for (ids, addr, expected) in cases {
        assert_eq!(
            dial(app, ids, addr).summary(),
            expected,
            "{ids:?} -> {addr}"
        );
    }
}

#[test]
fn inbound_connections_are_captured_except_admin_and_excluded_ports() {
    let pods = Pods::new(&[], false, V4_LISTENERS);
    let peer = &pods.peer;
    let cases = [
        ("10.203.0.1:8080", "inbound orig=10.203.0.1:8080"),
        ("10.203.0.1:15020", "admin orig=none"),
        ("10.203.0.1:7072", "excluded orig=none"),
        // Dialled explicitly, the inbound port is reached as itself, not as app traffic.
        ("10.203.0.1:15006", "inbound orig=none"),
    ];
    for (addr, expected) in cases {
        assert_eq!(dial(peer, None, addr).summary(), expected, "peer -> {addr}");
    }
}

#[test]
fn ipv6_is_captured_with_ip6tables() {
    // A dual-stack inbound listener, as a proxy capturing both families would bind.
    let pods = Pods::new(
        &["--ipv6"],
        true,
        &[
            "outbound=127.0.0.1:15001",
            "outbound6=[::1]:15001",
            "inbound=[::]:15006",
        ],
    );
    assert_eq!(
        dial(&pods.app, APP, "[fd00:203::2]:8080").summary(),
        "outbound6 orig=[fd00:203::2]:8080"
    );
    assert_eq!(
        dial(&pods.app, PROXY, "[fd00:203::2]:8080").summary(),
        "peer-8080 orig=none"
    );
    assert_eq!(
        dial(&pods.peer, None, "[fd00:203::1]:8080").summary(),
        "inbound orig=[fd00:203::1]:8080"
    );
    // IPv4 into the same dual-stack listener: an IPv4-mapped socket, IPv4 conntrack.
    assert_eq!(
        dial(&pods.peer, None, "10.203.0.1:8080").summary(),
        "inbound orig=10.203.0.1:8080"
    );
    assert_eq!(
        dial(&pods.peer, None, "[fd00:203::1]:15006").summary(),
        "inbound orig=none"
    );
}
