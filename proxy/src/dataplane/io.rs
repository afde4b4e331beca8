//! Connections as the data path sees them: [`Conn`] (plaintext or mTLS, either
//! side) and [`Counted`], an accepted connection that counts its bytes and reports
//! them, with the open/close counts, to its service's TCP metrics.
//!
//! A plaintext `Conn` writes with `send`/`sendmsg` rather than tokio's
//! `write`/`writev`: those go through the VFS layer (`fdget_pos`, `vfs_writev`)
//! before reaching the socket, which showed as a few percent of the proxy's CPU per
//! HTTP request in profiles. A vectored write of one slice, or of a few small ones
//! (a response head and a short body), is copied together and sent with `send`:
//! `sendmsg`'s own work (copying in the message header and the iovec array)
//! was about 3% of the proxy's CPU per HTTP/1.1 request.
//!
//! Bytes are summed in plain fields and added to the shared counters when the
//! connection closes, so the hot path touches no atomics per read or write.
//!
//! [`Conn`] is a connection in plaintext or in mTLS (either side), so the HTTP and
//! TCP paths serve both without being generic over the stream type.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::ServiceMetrics;

/// A connection to or from another proxy, plaintext or TLS.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    /// Accepted by the inbound listener; boxed because TLS state is large.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Opened to an endpoint with an identity.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// The socket, when the bytes on it are the payload (so they may be spliced).
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(stream) => Some(stream),
            _ => None,
        }
    }
}

impl Conn {
    /// The peer's address and this side's, for access log lines (two syscalls,
    /// once per connection).
    pub fn addresses(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        let tcp = match self {
            Conn::Plain(stream) => stream,
            Conn::Server(stream) => stream.get_ref().0,
            Conn::Client(stream) => stream.get_ref().0,
        };
        tcp.peer_addr().ok().zip(tcp.local_addr().ok())
    }
}

impl From<TcpStream> for Conn {
    fn from(stream: TcpStream) -> Conn {
        Conn::Plain(stream)
    }
}

macro_rules! each {
    ($conn:expr, $stream:ident => $body:expr) => {
        match $conn {
            Conn::Plain($stream) => $body,
            Conn::Server($stream) => $body,
            Conn::Client($stream) => $body,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => poll_send(stream, cx, |s| s.send(buf)),
            other => each!(other, s => Pin::new(s).poll_write(cx, buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => poll_send(stream, cx, |s| send_vectored(s, bufs)),
            other => each!(other, s => Pin::new(s).poll_write_vectored(cx, bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(_) => true,
            other => each!(other, s => s.is_write_vectored()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// An accepted connection, counted while it lives.
#[derive(Debug)]
pub struct Counted {
    inner: Conn,
    received: u64,
    sent: u64,
    metrics: Arc<ServiceMetrics>,
}

impl Counted {
    pub fn new(inner: impl Into<Conn>, metrics: Arc<ServiceMetrics>) -> Counted {
        let inner = inner.into();
        metrics.tcp.opened.increment(1);
        metrics.tcp.open.increment(1.0);
        Counted {
            inner,
            received: 0,
            sent: 0,
            metrics,
        }
    }

    pub fn get_ref(&self) -> &Conn {
        &self.inner
    }

    /// Bytes from the peer, and to it, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.received, self.sent)
    }

    /// Adds bytes moved without going through this wrapper (spliced).
    pub fn add(&mut self, received: u64, sent: u64) {
        self.received += received;
        self.sent += sent;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let tcp = &self.metrics.tcp;
        tcp.received.increment(self.received);
        tcp.sent.increment(self.sent);
        tcp.closed.increment(1);
        tcp.open.decrement(1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.received += (buf.filled().len() - before) as u64;
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.sent += n as u64;
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.sent += n as u64;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Slices that together are at most this long are copied into one buffer and
/// sent with `send`; longer writes go out with `sendmsg` as they are.
const GATHER_LIMIT: usize = 4096;

thread_local! {
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_LIMIT));
}

fn send_vectored(socket: SockRef<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut slices = bufs.iter().filter(|b| !b.is_empty());
    let (first, second) = (slices.next(), slices.next());
    let Some(first) = first else {
        return Ok(0);
    };
    if second.is_none() {
        return socket.send(first);
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total > GATHER_LIMIT {
        return socket.send_vectored(bufs);
    }
    GATHER.with(|gather| {
        let mut gather = gather.borrow_mut();
        gather.clear();
        for buf in bufs {
            gather.extend_from_slice(buf);
        }
        socket.send(&gather)
    })
}

/// Runs a non-blocking send when the socket is writable, waiting for readiness
/// again (and only then) when the kernel answers EAGAIN.
fn poll_send(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    send: impl Fn(SockRef<'_>) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_io(Interest::WRITABLE, || send(SockRef::from(stream))) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Every way a vectored write is sent (one slice, small slices gathered into
    /// one `send`, slices too long to gather, empty slices among them) delivers
    /// the bytes in order.
    #[tokio::test]
    async fn vectored_writes_arrive_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut conn = Conn::from(connected.expect("connect"));
        let (mut peer, _) = accepted.expect("accept");
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec();
        let large: Vec<u8> = (0..3 * GATHER_LIMIT).map(|i| (i % 251) as u8).collect();
        let writes: Vec<Vec<&[u8]>> = vec![
            vec![b"", &head, b""],
            vec![&head, b"hello"],
            vec![&head, b"", &large],
            vec![],
        ];
        let mut expected = Vec::new();
        for slices in &writes {
            let mut left: Vec<u8> = slices.concat();
            expected.extend_from_slice(&left);
            // Partial writes are allowed: resend the rest as one slice.
            let bufs: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
            let n = conn.write_vectored(&bufs).await.expect("write");
            left.drain(..n);
            conn.write_all(&left).await.expect("write rest");
        }
        conn.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        assert!(got == expected, "the bytes arrived changed or out of order");
    }
}
