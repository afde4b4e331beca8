//! Reading where a captured connection was going.
//!
//! iptables `REDIRECT` rewrites the destination to the proxy's listener; the kernel
//! remembers the original one, which `SO_ORIGINAL_DST` (IPv4) and
//! `IP6T_SO_ORIGINAL_DST` (IPv6) return. socket2 wraps both getsockopts, so no unsafe
//! code is needed here.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The destination the application dialled before iptables redirected it.
///
/// Careful: on a connection that was *not* redirected this is not an error whenever
/// conntrack tracks the namespace (always the case once `weft-proxy init` has written its
/// NAT rules): the kernel then returns the connection's own local address. Only without
/// conntrack does it answer ENOENT. [`captured_dst`] folds both cases into `None`.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let local = stream.local_addr()?;
    // A dual-stack `[::]` listener accepts IPv4 connections as IPv4-mapped addresses;
    // their NAT state lives in the IPv4 conntrack, which only the IPv4 option reads.
    let is_ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let original = if is_ipv4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })
}

/// Where a redirected connection was going, or `None` for a connection made to the
/// listener directly (explicitly, or from an address the rules leave alone).
///
/// A listener that forwards to the original destination must use this rather than
/// [`original_dst`]: treating a direct connection's own address as its destination
/// would forward it back to the listener itself.
pub fn captured_dst(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    match original_dst(stream) {
        Ok(original) if is_own_address(stream, original) => Ok(None),
        Ok(original) => Ok(Some(original)),
        // ENOENT: no conntrack entry, netfilter's NAT never saw the connection.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `dst` is the listener's own address: what the kernel reports as the
/// "original" destination of a connection that was not redirected. IPv4 peers of a
/// dual-stack listener show their local address as IPv4-mapped IPv6, hence the
/// canonical form.
pub fn is_own_address(stream: &TcpStream, dst: SocketAddr) -> bool {
    stream.local_addr().is_ok_and(|local| {
        SocketAddr::new(local.ip().to_canonical(), local.port())
            == SocketAddr::new(dst.ip().to_canonical(), dst.port())
    })
}
