//! Connection accounting: an accepted stream that counts its bytes and reports
//! them, with the open/close counts, to its service's TCP metrics.
//!
//! Bytes are summed in plain fields and added to the shared counters when the
//! connection closes, so the hot path touches no atomics per read or write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::ServiceMetrics;

/// An accepted connection, counted while it lives.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    received: u64,
    sent: u64,
    metrics: Arc<ServiceMetrics>,
}

impl Counted {
    pub fn new(inner: TcpStream, metrics: Arc<ServiceMetrics>) -> Counted {
        metrics.tcp.opened.increment(1);
        metrics.tcp.open.increment(1.0);
        Counted {
            inner,
            received: 0,
            sent: 0,
            metrics,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
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
