//! The probe's client side: sends a case's bytes over a raw socket, and reads what
//! comes back as a list of responses (leniently: it reports, the recorder judges).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Step;

/// One response as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_lengths: usize,
    pub chunked: bool,
    pub body: Vec<u8>,
}

/// What one connection saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub responses: Vec<Response>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
    /// From the start of the silence the case ends with (its last step) to the close.
    pub closed_after: Option<Duration>,
    /// Everything received, for the stray-response check.
    pub raw: Vec<u8>,
    /// Bytes after the last whole response that do not make one.
    pub garbage: bool,
}

/// How long the reader waits: for more responses once `want` arrived, and for
/// anything at all otherwise.
pub struct Patience {
    pub settle: Duration,
    pub quiet: Duration,
    /// Set for cases that end in a stall: wait this long for the close.
    pub close_within: Option<Duration>,
    /// With `close_within`: a response ends the wait as a close does.
    pub want_only: bool,
}

/// Runs the steps and reads what comes back. The connection is returned still
/// open (if the proxy has not closed it): the caller checks the upstream side
/// first, as the client's own close would end the request there.
pub fn exchange(
    addr: SocketAddr,
    steps: &[Step],
    want: usize,
    patience: &Patience,
) -> (Seen, Option<TcpStream>) {
    let mut seen = Seen::default();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        seen.closed = true;
        return (seen, None);
    };
    let _ = stream.set_nodelay(true);
    let mut silence_from = Instant::now();
    for step in steps {
        match step {
            Step::Send(bytes) => {
                if stream.write_all(bytes).is_err() {
                    break;
                }
            }
            Step::Await(count) => {
                read_until(
                    &mut stream,
                    &mut seen,
                    *count,
                    patience.settle,
                    patience.quiet,
                );
                if seen.closed {
                    break;
                }
            }
            Step::Drip(bytes, interval) => {
                // A drip is silence as far as the proxy's timers go: the
                // close is due within the timeout of its start.
                silence_from = Instant::now();
                for byte in bytes {
                    if stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    read_until(&mut stream, &mut seen, usize::MAX, *interval, *interval);
                    if seen.closed {
                        break;
                    }
                }
                continue;
            }
        }
        silence_from = Instant::now();
    }
    match patience.close_within {
        Some(limit) => {
            let left = limit.saturating_sub(silence_from.elapsed());
            let want = if patience.want_only { want } else { usize::MAX };
            read_until(&mut stream, &mut seen, want, Duration::ZERO, left);
        }
        None => read_until(
            &mut stream,
            &mut seen,
            want,
            patience.settle,
            patience.quiet,
        ),
    }
    if seen.closed {
        seen.closed_after = Some(silence_from.elapsed());
    }
    seen.garbage = !parse_responses(&seen.raw).1.is_empty();
    (seen, Some(stream))
}

/// Reads until the connection closes, or `want` responses arrived and nothing more
/// came for `settle`, or nothing at all came for `quiet`.
fn read_until(
    stream: &mut TcpStream,
    seen: &mut Seen,
    want: usize,
    settle: Duration,
    quiet: Duration,
) {
    let mut chunk = [0u8; 16 * 1024];
    let mut last = Instant::now();
    loop {
        let (responses, _) = parse_responses(&seen.raw);
        seen.responses = responses;
        let wait = if seen.responses.len() >= want {
            settle
        } else {
            quiet
        };
        let left = wait.saturating_sub(last.elapsed());
        if left.is_zero() || seen.closed {
            return;
        }
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut chunk) {
            Ok(0) => seen.closed = true,
            Ok(n) => {
                seen.raw.extend_from_slice(&chunk[..n]);
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => seen.closed = true,
        }
    }
}

/// The whole responses at the start of `raw`, and what is left.
pub fn parse_responses(mut raw: &[u8]) -> (Vec<Response>, &[u8]) {
    let mut responses = Vec::new();
    while let Some((response, used)) = parse_response(raw) {
        raw = &raw[used..];
        if response.status >= 200 {
            responses.push(response);
        }
    }
    (responses, raw)
}

fn parse_response(raw: &[u8]) -> Option<(Response, usize)> {
    let end = find(raw, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut content_lengths = 0;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_lengths += 1;
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let bodyless = status < 200 || status == 204 || status == 304;
    let (body, used) = if bodyless {
        (Vec::new(), end)
    } else if chunked {
        dechunk(&raw[end..]).map(|(body, used)| (body, end + used))?
    } else {
        let length = length.unwrap_or(0);
        if raw.len() < end + length {
            return None;
        }
        (raw[end..end + length].to_vec(), end + length)
    };
    let response = Response {
        status,
        content_lengths,
        chunked,
        body,
    };
    Some((response, used))
}

fn dechunk(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find(&raw[at..], b"\r\n")? + at;
        let line = std::str::from_utf8(&raw[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = find(&raw[at..], b"\r\n")? + at;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if raw.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
