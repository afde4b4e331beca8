//! Makes a TCP address of one network namespace reachable from another: listens inside
//! the named namespace and, for each connection, connects out from the namespace it was
//! started in, copying bytes both ways. The played kubelet runs one per pod so that
//! processes in the pod reach the API server on the host's loopback.
//!
//! ```text
//! weft-netns-forward --netns NAME --listen 127.0.0.1:6443 --to 127.0.0.1:34567
//! ```
//! Prints `listening on ADDR` once the listener is bound.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut netns = None;
    let mut listen = None;
    let mut to = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--netns" => netns = Some(value),
            "--listen" => listen = Some(value.parse::<SocketAddr>()?),
            "--to" => to = Some(value.parse::<SocketAddr>()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let (Some(netns), Some(listen), Some(to)) = (netns, listen, to) else {
        bail!("usage: weft-netns-forward --netns NAME --listen ADDR --to ADDR");
    };
    // The listening socket is made inside the pod's namespace; this thread (and every
    // connection to `to`) stays in the namespace the process started in.
    let listener = weft_e2e::netns::within(&netns, || TcpListener::bind(listen))
        .with_context(|| format!("enter network namespace {netns}"))?
        .with_context(|| format!("listen on {listen} in {netns}"))?;
    println!("listening on {listen}");
    std::io::stdout().flush()?;
    for inbound in listener.incoming() {
        let Ok(inbound) = inbound else { continue };
        std::thread::spawn(move || {
            if let Ok(outbound) = TcpStream::connect(to) {
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
