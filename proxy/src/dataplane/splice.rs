//! Zero-copy forwarding of opaque TCP with splice(2): socket to pipe to socket,
//! the bytes never entering user space.
//!
//! Each direction owns a pipe. A round moves whatever the source socket has (up to
//! the pipe's capacity) into the empty pipe, then drains the pipe into the other
//! socket before reading again. Because the pipe is always empty when reading and
//! holds data when writing, an EAGAIN always refers to the socket, so tokio's
//! readiness (`try_io`) is cleared for the right reason and a stall cannot be
//! mistaken for a full pipe. rustix wraps the syscalls, so no unsafe code.
//!
//! Half-close: EOF from one side shuts down writing on the other, and the opposite
//! direction carries on until its own EOF.
//!
//! Pipes are reused: making two and closing them costs six syscalls, a visible
//! share of a short connection. Each worker thread keeps a few empty pipes; a pipe
//! goes back only when its direction finished cleanly (so it is empty).

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per round; the default pipe capacity on Linux (16 pages).
const ROUND: usize = 64 * 1024;

/// Empty pipes kept per worker thread.
const POOLED_PIPES: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// The two pipes of one connection.
pub struct Pipes {
    a_to_b: Option<Pipe>,
    b_to_a: Option<Pipe>,
}

impl Pipes {
    /// Fails only when the process is out of file descriptors; the caller then
    /// copies through user space instead.
    pub fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            a_to_b: Some(Pipe::take()?),
            b_to_a: Some(Pipe::take()?),
        })
    }

    /// Copies both ways until both directions saw EOF (or one failed). `sent_to_b`
    /// and `sent_to_a` count what was delivered, also when it ends with an error.
    pub async fn copy_bidirectional(
        mut self,
        a: &TcpStream,
        b: &TcpStream,
        sent_to_b: &mut u64,
        sent_to_a: &mut u64,
    ) -> io::Result<()> {
        let (Some(a_to_b), Some(b_to_a)) = (self.a_to_b.take(), self.b_to_a.take()) else {
            return Ok(());
        };
        tokio::try_join!(
            a_to_b.forward_then_recycle(a, b, sent_to_b),
            b_to_a.forward_then_recycle(b, a, sent_to_a),
        )?;
        Ok(())
    }
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.with(|pool| pool.borrow_mut().pop()) {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Forwards one direction; on a clean end the pipe is empty and is pooled
    /// (on an error it may hold bytes, so it is closed instead).
    async fn forward_then_recycle(
        self,
        from: &TcpStream,
        to: &TcpStream,
        sent: &mut u64,
    ) -> io::Result<()> {
        self.forward(from, to, sent).await?;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_PIPES {
                pool.push(self);
            }
        });
        Ok(())
    }

    async fn forward(&self, from: &TcpStream, to: &TcpStream, sent: &mut u64) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            let filled = loop {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    Ok(splice(from, None, &self.write, None, ROUND, flags)?)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if filled == 0 {
                // The peer finished sending: pass the FIN on, keep the other way open.
                return match SockRef::from(to).shutdown(Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                    _ => Ok(()),
                };
            }
            let mut left = filled;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    Ok(splice(&self.read, None, to, None, left, flags)?)
                }) {
                    Ok(n) => {
                        left -= n;
                        *sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
