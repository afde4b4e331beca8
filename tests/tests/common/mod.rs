//! Helpers the capture test files share: `weft-proxy init` in a namespace, and the
//! `weft-netns-probe` listeners and clients standing in for proxies and apps.

// Each test file is its own crate and uses a subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use weft_e2e::netns::Netns;
use weft_e2e::{bin, wait_for, Proc};

/// The helper binary of this crate; cargo builds it before these tests.
pub const PROBE: &str = env!("CARGO_BIN_EXE_weft-netns-probe");
pub const PROXY_UID: &str = "1337";
pub const PROXY_GID: &str = "1338";
pub const APP_UID: &str = "1000";

/// (uid, gid) a client runs as; `None` is root.
pub type Ids = Option<(&'static str, &'static str)>;
pub const APP: Ids = Some((APP_UID, APP_UID));
pub const PROXY: Ids = Some((PROXY_UID, PROXY_UID));
pub const PROXY_GROUP_ONLY: Ids = Some((APP_UID, PROXY_GID));

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `weft-proxy init args...` inside `netns`, which must succeed; returns its stderr.
pub fn init(netns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["init"];
    full.extend_from_slice(args);
    let output = netns.run(bin("weft-proxy"), &full);
    assert!(
        output.status.success(),
        "weft-proxy {full:?} failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stderr)
}

/// Starts probe listeners (`LABEL=ADDR`) in `netns` and waits until all are bound.
pub fn serve(netns: &Netns, name: &str, listeners: &[&str], logs: &Path) -> Proc {
    let mut command = netns.command(PROBE);
    command.arg("serve").args(listeners);
    let probe = Proc::spawn(name, &mut command, logs);
    wait_for(
        &format!("{name} to listen"),
        Duration::from_secs(10),
        || probe.log_text().contains("ready").then_some(()),
    );
    probe
}

/// What a probe listener answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub label: String,
    /// The original destination, "none" when the connection was not redirected.
    pub orig: String,
    pub local: String,
    pub peer: String,
}

impl Answer {
    /// "LABEL orig=X": which listener got the connection, and whether it was redirected.
    pub fn summary(&self) -> String {
        format!("{} orig={}", self.label, self.orig)
    }
}

/// Runs `program args` in `netns` as `ids`, via setpriv so the kernel sees that UID
/// and GID on the sockets it opens.
pub fn run_as(netns: &Netns, ids: Ids, program: &str, args: &[&str]) -> Output {
    match ids {
        Some((uid, gid)) => {
            let mut full = vec!["--reuid", uid, "--regid", gid, "--clear-groups", program];
            full.extend_from_slice(args);
            netns.run("setpriv", &full)
        }
        None => netns.run(program, args),
    }
}

/// Connects from `netns` to `addr` as `ids` and returns what answered.
pub fn dial(netns: &Netns, ids: Ids, addr: &str) -> Answer {
    answer(netns, ids, &["connect", addr])
}

/// Sends `GET /` to `addr` from `netns` as `ids` and returns what answered (an
/// `http:` probe listener).
pub fn dial_http(netns: &Netns, ids: Ids, addr: &str) -> Answer {
    answer(netns, ids, &["get", addr, "/"])
}

fn answer(netns: &Netns, ids: Ids, args: &[&str]) -> Answer {
    let output = run_as(netns, ids, PROBE, args);
    assert!(
        output.status.success(),
        "probe {args:?} as {ids:?} in {} failed: {}",
        netns.name(),
        text(&output.stderr)
    );
    let line = text(&output.stdout);
    let mut fields = line.split_whitespace();
    let label = fields.next().unwrap_or_default().to_owned();
    let mut field = |key: &str| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the answer {line:?}"))
            .to_owned()
    };
    Answer {
        label,
        orig: field("orig="),
        local: field("local="),
        peer: field("peer="),
    }
}

/// The body of `GET path` at `addr`, from inside `netns` (a proxy's admin endpoints).
pub fn http_get(netns: &Netns, addr: &str, path: &str) -> Option<String> {
    let output = netns.run(PROBE, &["get", addr, path]);
    output.status.success().then(|| text(&output.stdout))
}
