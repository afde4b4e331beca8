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
/// On a connection that was not redirected the kernel answers ENOENT; callers treat
/// that as "not captured" (an explicit connection to the listener).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let local = stream.local_addr()?;
    let original = if local.is_ipv6() {
        socket.original_dst_v6()?
    } else {
        socket.original_dst_v4()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })
}
