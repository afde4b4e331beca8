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

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per round; the default pipe capacity on Linux (16 pages).
const ROUND: usize = 64 * 1024;

/// The two pipes of one connection.
pub struct Pipes {
    a_to_b: Pipe,
    b_to_a: Pipe,
}

impl Pipes {
    /// Fails only when the process is out of file descriptors; the caller then
    /// copies through user space instead.
    pub fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            a_to_b: Pipe::new()?,
            b_to_a: Pipe::new()?,
        })
    }

    /// Copies both ways until both directions saw EOF (or one failed). `sent_to_b`
    /// and `sent_to_a` count what was delivered, also when it ends with an error.
    pub async fn copy_bidirectional(
        &self,
        a: &TcpStream,
        b: &TcpStream,
        sent_to_b: &mut u64,
        sent_to_a: &mut u64,
    ) -> io::Result<()> {
        tokio::try_join!(
            self.a_to_b.forward(a, b, sent_to_b),
            self.b_to_a.forward(b, a, sent_to_a),
        )?;
        Ok(())
    }
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { read, write })
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
