//! Makes a TCP address of one network namespace reachable from another, one way or
//! the other:
//! - by default it listens inside the named namespace and connects out from the
//!   namespace it was started in: the played kubelet runs one per pod so that
//!   processes in the pod reach the API server on the host's loopback;
//! - with `--dial-inside` it listens where it was started and connects from inside
//!   the named namespace: the API server on the host's loopback reaches a webhook
//!   served by a pod.
//!
//! ```text
//! weft-netns-forward --netns NAME --listen 127.0.0.1:6443 --to 127.0.0.1:34567
//! weft-netns-forward --netns LAN --dial-inside --listen 127.0.0.1:0 --to 10.0.0.5:443 --to 10.0.0.6:443
//! ```
//! With several `--to`, each connection goes to the first that accepts, starting from
//! the next one each time. Prints `listening on ADDR` once the listener is bound.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut netns = None;
    let mut listen = None;
    let mut targets = Vec::new();
    let mut dial_inside = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--dial-inside" {
            dial_inside = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--netns" => netns = Some(value),
            "--listen" => listen = Some(value.parse::<SocketAddr>()?),
            "--to" => targets.push(value.parse::<SocketAddr>()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let (Some(netns), Some(listen), false) = (netns, listen, targets.is_empty()) else {
        bail!("usage: weft-netns-forward --netns NAME [--dial-inside] --listen ADDR --to ADDR...");
    };
    let listener = if dial_inside {
        TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?
    } else {
        // The listening socket is made inside the pod's namespace; this thread (and
        // every connection to `to`) stays in the namespace the process started in.
        weft_e2e::netns::within(&netns, || TcpListener::bind(listen))
            .with_context(|| format!("enter network namespace {netns}"))?
            .with_context(|| format!("listen on {listen} in {netns}"))?
    };
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let targets = Arc::new(targets);
    let next = Arc::new(AtomicUsize::new(0));
    let netns = Arc::new(netns);
    for inbound in listener.incoming() {
        let Ok(inbound) = inbound else { continue };
        let (targets, next, netns) = (targets.clone(), next.clone(), netns.clone());
        std::thread::spawn(move || {
            let first = next.fetch_add(1, Ordering::Relaxed);
            let connect = || {
                (0..targets.len())
                    .map(|i| targets[(first + i) % targets.len()])
                    .find_map(|to| TcpStream::connect(to).ok())
            };
            let outbound = if dial_inside {
                weft_e2e::netns::within(&netns, connect).ok().flatten()
            } else {
                connect()
            };
            if let Some(outbound) = outbound {
                // Relayed writes must not wait for a delayed ACK either side.
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                pipe(inbound, outbound);
            }
        });
    }
    Ok(())
}

/// Copies both ways until each side has closed its half.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(a, b2));
    copy(b, a2);
    let _ = up.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
