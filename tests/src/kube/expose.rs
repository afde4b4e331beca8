//! Pods' addresses made reachable from the host's loopback, where the API server and
//! the test itself run: the API server calls an admission webhook served by a pod
//! (a `clientConfig.url` on 127.0.0.1, as nothing routes a Service's ClusterIP here),
//! and `weftctl` on the host reaches the control plane's pods.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::daemon::Daemon;
use super::kubelet::Kubelet;

/// A loopback address forwarding to pods on the kubelet's LAN; stops on drop.
#[derive(Debug)]
pub struct Exposed {
    pub addr: SocketAddr,
    _forward: Daemon,
}

/// Listens on a free 127.0.0.1 port and forwards each connection to the first of
/// `targets` that accepts (starting from the next one each time), dialling from the
/// LAN. `log` is the forwarder's log file.
pub fn expose(kubelet: &Kubelet, targets: &[SocketAddr], log: &Path) -> Result<Exposed> {
    let mut command = Command::new(crate::bin("weft-netns-forward"));
    command.args([
        "--netns",
        kubelet.client_netns().name(),
        "--dial-inside",
        "--listen",
        "127.0.0.1:0",
    ]);
    for target in targets {
        command.args(["--to", &target.to_string()]);
    }
    let mut forward = Daemon::spawn("weft-netns-forward (to pods)", &mut command, log)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
            let addr = addr.trim().parse().context("the forwarder's address")?;
            return Ok(Exposed {
                addr,
                _forward: forward,
            });
        }
        if !forward.is_running() || Instant::now() > deadline {
            bail!("weft-netns-forward did not start:\n{}", forward.tail(20));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
