//! Network namespaces as test "pods": each test makes its own, joined by veth pairs, with
//! private addresses that exist only inside them, and removes them on drop, even when the
//! test panics.
//!
//! Nothing here touches the host's own namespace: links are created directly inside the
//! test namespaces (`ip -n A link add ... peer ... netns B`), so interface names such as
//! `eth0` never clash between tests, and no route or rule of the host changes. Use
//! addresses from 10.203.0.0/16: no other part of the project uses that range.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and `ip` from iproute2; tests that use it
//! fail, naming what is missing, instead of passing silently.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// Every namespace the tests create starts with this, followed by the creating process's
/// pid, which is how leftovers of a killed run are recognised and removed.
pub const PREFIX: &str = "weft-t-";

static NEXT: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

/// One network namespace, deleted (with every process still in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with only `lo`, which is up. `tag` makes the name readable in
    /// `ip netns list` while a test runs.
    pub fn new(tag: &str) -> Netns {
        require_root("network namespaces");
        SWEEP.call_once(remove_leftovers);
        let name = format!(
            "{PREFIX}{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`, which also
    /// gives it this namespace's view of /sys).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    /// Runs `program args` inside the namespace to completion.
    pub fn run(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref().to_owned();
        self.command(&program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program:?} in {}: {e}", self.name))
    }

    /// Runs `program args` inside the namespace, panics unless it succeeds, returns stdout.
    pub fn check(&self, program: impl AsRef<OsStr>, args: &[&str]) -> String {
        let program = program.as_ref().to_owned();
        let output = self.run(&program, args);
        assert!(
            output.status.success(),
            "{program:?} {args:?} in {} failed ({}):\n{}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip -n <this> args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Adds `cidr` (e.g. "10.203.0.3/24") to `device` inside this namespace.
    pub fn add_address(&self, device: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", device]);
    }

    /// Routes everything not otherwise routed out of `device`, as a pod's default route
    /// does; needed for virtual IPs, which no interface owns, to reach the OUTPUT chain.
    pub fn default_route(&self, device: &str) {
        self.ip(&["route", "add", "default", "dev", device]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Joins `a` and `b` with a veth pair named `device` on both sides, each end with its
/// address (CIDR notation, e.g. "10.203.0.1/24") and up.
pub fn connect(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str, device: &str) {
    a.ip(&[
        "link", "add", device, "type", "veth", "peer", "name", device, "netns", &b.name,
    ]);
    for (netns, cidr) in [(a, a_cidr), (b, b_cidr)] {
        netns.add_address(device, cidr);
        netns.ip(&["link", "set", device, "up"]);
    }
}

/// A layer-2 segment joining several pods, like the node network pods share: a bridge
/// in a namespace of its own, each pod attached by a veth pair whose pod end is `eth0`.
/// Dropping it (its namespace) removes every veth, and so the pods' `eth0`s too.
#[derive(Debug)]
pub struct Lan {
    netns: Netns,
    ports: AtomicUsize,
}

impl Lan {
    pub fn new() -> Lan {
        let netns = Netns::new("lan");
        netns.ip(&["link", "add", "br0", "type", "bridge"]);
        netns.ip(&["link", "set", "br0", "up"]);
        Lan {
            netns,
            ports: AtomicUsize::new(0),
        }
    }

    /// Gives `pod` an `eth0` on this segment with address `cidr` (e.g. "10.203.0.1/24").
    pub fn attach(&self, pod: &Netns, cidr: &str) {
        let port = format!("port{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.netns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ]);
        self.netns
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        pod.add_address("eth0", cidr);
        pod.ip(&["link", "set", "eth0", "up"]);
    }
}

impl Default for Lan {
    fn default() -> Lan {
        Lan::new()
    }
}

/// Panics, saying what to do, unless this process may create namespaces and iptables
/// rules. `what` names the test's need in the message.
pub fn require_root(what: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "{what} need root (effective uid is {euid}): run the e2e tests as root, e.g. in CI \
         or a privileged container"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("setpriv", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "{what} need `{tool}`: install the {package} package (apt-get install -y {package})"
        );
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e} (install iproute2)"));
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kills the processes still inside the namespace (they would keep it alive), then
/// deletes it. Errors are ignored: this runs in Drop, possibly while panicking.
fn delete(name: &str) {
    let pids = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Removes namespaces left by test processes that no longer exist (killed before their
/// destructors ran). Namespaces of live processes, other test runs included, stay.
fn remove_leftovers() {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(name);
        }
    }
}

/// Runs `f` on a thread of its own that has first moved into the network namespace
/// `name` (one that `ip netns add` made): sockets `f` creates belong to that namespace
/// and stay there when returned to a thread outside it. No process is started.
pub fn within<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let path = format!("/run/netns/{name}");
    let ns = std::fs::File::open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsFd;
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
