//! The probe's upstream: a plain std `TcpListener` that keeps every byte each
//! connection brings, reads them with the [`strict`] parser, and
//! answers each request. The answer is a fixed small response unless the
//! request's last path segment names a misbehaviour ([`Reply`]), so one recorder
//! serves every case, in front of any proxy.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::strict::{self, Parsed, Request};

/// The body of the recorder's normal answer.
pub const OK_BODY: &[u8] = b"ok";
/// The body of the responses nobody asked for: seen by a client, it proves a
/// response went to the wrong request.
pub const STRAY_BODY: &[u8] = b"stray-7f3a9c";

/// How the recorder answers, chosen by the request target's last path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// Never answers; keeps reading.
    Stall,
    /// The answer and a second, unsolicited response in the same write.
    Stray,
    /// The answer, then an unsolicited response once the proxy has had time to
    /// pool the connection.
    StrayLate,
    /// A response the proxy must not forward as it is, nor keep the connection of.
    Bad(&'static [u8]),
    /// A response a proxy may normalise (one `Content-Length` left, ...).
    Odd(&'static [u8]),
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const STRAY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nstray-7f3a9c";

/// The segments that pick a misbehaviour, with what the recorder does.
pub const REPLIES: &[(&str, Reply)] = &[
    ("up-stall", Reply::Stall),
    ("up-stray", Reply::Stray),
    ("up-stray-late", Reply::StrayLate),
    (
        "up-chunk-space",
        Reply::Bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nok\r\n0\r\n\r\n"),
    ),
    (
        "up-chunk-ff",
        Reply::Bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\x0c2\r\nok\r\n0\r\n\r\n"),
    ),
    (
        "up-chunk-cr",
        Reply::Bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\r\nok\r\n0\r\n\r\n"),
    ),
    (
        "up-chunk-overflow",
        Reply::Bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\nok\r\n0\r\n\r\n"),
    ),
    (
        "up-diff-cl",
        Reply::Bad(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
    ),
    ("up-big-head", Reply::Bad(&[])),
    (
        "up-dup-cl",
        Reply::Odd(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
    ),
    (
        "up-cl-te",
        Reply::Odd(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ),
    (
        "up-100",
        Reply::Odd(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ),
];

impl Reply {
    pub fn for_target(target: &str) -> Reply {
        let path = target.split(['?', '#']).next().unwrap_or("");
        let last = path.rsplit('/').next().unwrap_or("");
        REPLIES
            .iter()
            .find(|(name, _)| *name == last)
            .map_or(Reply::Ok, |(_, reply)| *reply)
    }
}

/// A response head over 64 KiB, sent in one write.
fn big_head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    for i in 0..1100 {
        head.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "f".repeat(48)).as_bytes());
    }
    head.extend_from_slice(b"\r\nok");
    head
}

/// What one upstream connection brought.
#[derive(Debug, Clone)]
pub struct Connection {
    pub opened: Instant,
    /// When the proxy closed it (EOF or an error on read).
    pub closed: Option<Instant>,
    pub requests: Vec<Request>,
    /// The probe tags (see [`super::tags`]) of the request it is in the middle
    /// of: one partly received, or one the recorder never answered.
    pub busy_with: BTreeSet<u32>,
    /// Bytes the strict parser refused, and why.
    pub invalid: Option<(String, Vec<u8>)>,
    /// A request arrived after this connection carried a response the proxy
    /// should have dropped it for (the tag of that response's request).
    pub reused_after: Option<u32>,
}

#[derive(Default)]
struct Log {
    connections: Vec<Connection>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Recorder {
    pub fn start() -> std::io::Result<Recorder> {
        Recorder::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Listens on `addr`; every connection is served by a thread of its own.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Recorder> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let index = {
                    let mut log = lock(&shared);
                    log.connections.push(Connection {
                        opened: Instant::now(),
                        closed: None,
                        requests: Vec::new(),
                        busy_with: BTreeSet::new(),
                        invalid: None,
                        reused_after: None,
                    });
                    log.connections.len() - 1
                };
                let log = shared.clone();
                std::thread::spawn(move || serve(stream, index, &log));
            }
        });
        Ok(Recorder { addr, log })
    }

    /// A copy of everything recorded so far.
    pub fn connections(&self) -> Vec<Connection> {
        lock(&self.log).connections.clone()
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn serve(mut stream: TcpStream, index: usize, log: &Mutex<Log>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // The tag of the request whose answer should have retired this connection.
    let mut retired_by: Option<u32> = None;
    loop {
        match strict::parse(&buf) {
            Parsed::Complete(request, used) => {
                buf.drain(..used);
                let tag = super::tags(request.target.as_bytes()).into_iter().next();
                let reply = Reply::for_target(&request.target);
                {
                    let mut log = lock(log);
                    let connection = &mut log.connections[index];
                    if let (Some(bad), None) = (retired_by, connection.reused_after) {
                        connection.reused_after = Some(bad);
                    }
                    connection.requests.push(request);
                    connection.busy_with = match reply {
                        Reply::Stall => tag.into_iter().collect(),
                        _ => super::tags(&buf),
                    };
                }
                let retire = answer(&mut stream, reply, buf.is_empty());
                if retire {
                    retired_by = retired_by.or(tag).or(Some(u32::MAX));
                }
                continue;
            }
            Parsed::Invalid(why) => {
                let mut log = lock(log);
                let connection = &mut log.connections[index];
                connection.invalid = Some((why, buf));
                connection.closed = Some(Instant::now());
                return;
            }
            Parsed::Incomplete => {}
        }
        let read = stream.read(&mut chunk);
        let mut log = lock(log);
        let connection = &mut log.connections[index];
        match read {
            Ok(0) | Err(_) => {
                connection.closed = Some(Instant::now());
                return;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if connection.busy_with.is_empty() {
                    connection.busy_with = super::tags(&buf[..buf.len().min(8192)]);
                }
            }
        }
    }
}

/// Writes the answer; true when the proxy must not use the connection again.
/// `idle`: nothing of a next request has arrived yet (a late stray response is
/// only sent then, so that the proxy can tell it is unsolicited).
fn answer(stream: &mut TcpStream, reply: Reply, idle: bool) -> bool {
    match reply {
        Reply::Ok => stream.write_all(OK).is_err(),
        Reply::Stall => false,
        Reply::Stray => {
            let _ = stream.write_all(&[OK, STRAY].concat());
            true
        }
        Reply::StrayLate => {
            let _ = stream.write_all(OK);
            // Pacing, not waiting for a condition: the stray must come after the
            // proxy has read the answer and while the connection sits idle.
            std::thread::sleep(Duration::from_millis(50));
            if idle && !has_pending(stream) {
                let _ = stream.write_all(STRAY);
                return true;
            }
            false
        }
        Reply::Bad(bytes) => {
            let bytes = if bytes.is_empty() {
                big_head()
            } else {
                bytes.to_vec()
            };
            let _ = stream.write_all(&bytes);
            true
        }
        Reply::Odd(bytes) => stream.write_all(bytes).is_err(),
    }
}

fn has_pending(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let pending = match stream.peek(&mut byte) {
        Ok(n) => n > 0,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    pending
}
