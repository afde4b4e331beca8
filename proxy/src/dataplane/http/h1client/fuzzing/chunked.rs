//! A chunked response body through the real [`ResponseBody`], compared with a
//! strict reading of RFC 9112 section 7.1.
//!
//! The body reads from a [`Connection`] whose buffer the harness fills, piece by
//! piece; its socket is a duplicate of one end of a loopback connection whose
//! other end never writes, so a read past the fed bytes waits, as on the wire.

use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hyper::body::Body;

use super::super::head::Framing;
use super::super::{Connection, ResponseBody};
use crate::dataplane::endpoint::Endpoint;
use crate::dataplane::io::Conn;

/// Inputs up to this size decode the same whether fed whole or in pieces (a
/// longer size line or trailer section may fail only in pieces, by design:
/// its bound applies to what is buffered while it is incomplete).
const SPLIT_INVARIANT: usize = 1024;
/// Trailer fields a section may hold (the parser's bound).
const MAX_TRAILERS: usize = 100;

/// Decodes `data[1..]` as a chunked body, fed whole and in pieces of
/// `data[0] % 32 + 1` bytes, and checks both against [`strict`].
pub fn chunked_body(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    RIG.with(|rig| {
        let whole = rig.decode(std::iter::once(body));
        let pieces = rig.decode(body.chunks(usize::from(step % 32) + 1));
        for decoded in [&whole, &pieces] {
            assert!(
                decoded.data.len() <= body.len(),
                "more data than bytes read"
            );
        }
        match strict(body) {
            Strict::Complete {
                data,
                trailers,
                rest,
            } => {
                for decoded in [&whole, &pieces] {
                    assert_eq!(decoded.end, End::Ended, "a valid body did not end");
                    assert_eq!(decoded.data, data, "data differs");
                    assert_eq!(decoded.trailers, trailers, "trailers differ");
                }
                assert_eq!(
                    whole.pooled,
                    rest == 0,
                    "pooled with {rest} bytes after the body"
                );
            }
            Strict::Incomplete { data } => {
                for decoded in [&whole, &pieces] {
                    assert_eq!(decoded.end, End::Waiting, "a valid prefix did not wait");
                    assert_eq!(decoded.data, data, "data differs");
                }
            }
            // The reader is more lenient than the grammar; it just must not panic.
            Strict::Invalid => {}
        }
        if body.len() <= SPLIT_INVARIANT {
            assert_eq!(whole.end, pieces.end, "fed in pieces, ends differently");
            assert_eq!(whole.data, pieces.data, "fed in pieces, data differs");
            assert_eq!(whole.trailers, pieces.trailers);
        }
    });
}

thread_local! {
    static RIG: Rig = Rig::new();
}

/// What each decode needs and is costly to make: a runtime to register sockets
/// with, a quiet socket, and an endpoint whose pool takes the connection back.
struct Rig {
    runtime: tokio::runtime::Runtime,
    socket: TcpStream,
    /// Kept open, and never written to.
    _peer: TcpStream,
    endpoint: Arc<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The body ended (after its trailers, if any).
    Ended,
    Failed,
    /// More bytes are needed.
    Waiting,
}

struct Decoded {
    data: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    end: End,
    /// The connection went back to the pool.
    pooled: bool,
}

impl Rig {
    fn new() -> Rig {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("local address");
        let socket = TcpStream::connect(address).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        socket.set_nonblocking(true).expect("non-blocking");
        Rig {
            runtime,
            socket,
            _peer: peer,
            endpoint: Endpoint::new(address, None, 1, 1),
        }
    }

    fn decode<'a>(&self, pieces: impl Iterator<Item = &'a [u8]>) -> Decoded {
        let mut decoded = Decoded {
            data: Vec::new(),
            trailers: Vec::new(),
            end: End::Waiting,
            pooled: false,
        };
        {
            let _runtime = self.runtime.enter();
            let socket = self.socket.try_clone().expect("a duplicate socket");
            let socket = tokio::net::TcpStream::from_std(socket).expect("registered");
            let connection = Connection::new(Conn::Plain(socket), None);
            let mut body = ResponseBody::new(
                connection,
                Framing::Chunked,
                true,
                None,
                self.endpoint.clone(),
            );
            let mut cx = Context::from_waker(Waker::noop());
            'fed: for piece in pieces {
                let Some(connection) = body.connection.as_mut() else {
                    break;
                };
                connection.buf.extend_from_slice(piece);
                loop {
                    match Pin::new(&mut body).poll_frame(&mut cx) {
                        Poll::Pending => break,
                        Poll::Ready(None) => {
                            decoded.end = End::Ended;
                            break 'fed;
                        }
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => decoded.data.extend_from_slice(&data),
                            Err(frame) => {
                                let Ok(trailers) = frame.into_trailers() else {
                                    panic!("a frame neither data nor trailers");
                                };
                                decoded.trailers = trailers
                                    .iter()
                                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                                    .collect();
                                decoded.trailers.sort();
                            }
                        },
                        Poll::Ready(Some(Err(_))) => {
                            decoded.end = End::Failed;
                            break 'fed;
                        }
                    }
                }
            }
            decoded.pooled = self.endpoint.clients.http1.checkout().is_some();
        }
        // Sockets dropped above are released when the driver next turns.
        self.runtime.block_on(tokio::task::yield_now());
        decoded
    }
}

/// What a strict reading of the chunked coding (RFC 9112 section 7.1, with
/// the parser's bounds) makes of a body.
#[derive(Debug)]
enum Strict {
    /// `rest`: bytes after the body's end.
    Complete {
        data: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
        rest: usize,
    },
    /// A prefix of a valid body; `data` is what it holds so far.
    Incomplete {
        data: Vec<u8>,
    },
    Invalid,
}

/// Why the strict reading stopped.
enum Stop {
    Short,
    Bad,
}

fn strict(input: &[u8]) -> Strict {
    let mut data = Vec::new();
    let mut at = 0;
    match strict_body(input, &mut at, &mut data) {
        Ok(trailers) => Strict::Complete {
            data,
            trailers,
            rest: input.len() - at,
        },
        Err(Stop::Short) => Strict::Incomplete { data },
        Err(Stop::Bad) => Strict::Invalid,
    }
}

fn strict_body(
    input: &[u8],
    at: &mut usize,
    data: &mut Vec<u8>,
) -> Result<Vec<(String, Vec<u8>)>, Stop> {
    loop {
        let size = size_line(input, at)?;
        if size == 0 {
            break;
        }
        let available = (input.len() - *at) as u64;
        let take = size.min(available) as usize;
        data.extend_from_slice(&input[*at..*at + take]);
        *at += take;
        if (take as u64) < size {
            return Err(Stop::Short);
        }
        line_end(input, at)?;
    }
    let start = *at;
    let mut trailers = Vec::new();
    loop {
        if *at - start > SPLIT_INVARIANT {
            return Err(Stop::Bad);
        }
        if input.get(*at) == Some(&b'\r') || *at == input.len() {
            line_end(input, at)?;
            trailers.sort();
            return Ok(trailers);
        }
        if trailers.len() == MAX_TRAILERS {
            return Err(Stop::Bad);
        }
        trailers.push(trailer_field(input, at)?);
    }
}

/// `1*15HEXDIG *( ";" ext ) CRLF`, the whole line at most [`SPLIT_INVARIANT`]
/// bytes.
fn size_line(input: &[u8], at: &mut usize) -> Result<u64, Stop> {
    let start = *at;
    let mut size = 0u64;
    let mut digits = 0;
    while let Some(&b) = input.get(*at) {
        let Some(value) = (b as char).to_digit(16) else {
            break;
        };
        digits += 1;
        if digits > 15 {
            return Err(Stop::Bad);
        }
        size = size * 16 + u64::from(value);
        *at += 1;
    }
    let Some(&next) = input.get(*at) else {
        return Err(Stop::Short);
    };
    if digits == 0 {
        return Err(Stop::Bad);
    }
    if next == b';' {
        while let Some(&b) = input.get(*at) {
            if b == b'\r' {
                break;
            }
            if !(b == b'\t' || (b' '..=b'~').contains(&b)) {
                return Err(Stop::Bad);
            }
            *at += 1;
        }
    }
    let ended = line_end(input, at);
    if *at - start > SPLIT_INVARIANT {
        return Err(Stop::Bad);
    }
    ended.map(|()| size)
}

/// `name ":" OWS value OWS CRLF`, with a token for name and visible ASCII in
/// the value.
fn trailer_field(input: &[u8], at: &mut usize) -> Result<(String, Vec<u8>), Stop> {
    let start = *at;
    while let Some(&b) = input.get(*at) {
        if !is_token(b) {
            break;
        }
        *at += 1;
    }
    let name = String::from_utf8_lossy(&input[start..*at]).to_ascii_lowercase();
    match input.get(*at) {
        None => return Err(Stop::Short),
        Some(b':') if !name.is_empty() => *at += 1,
        Some(_) => return Err(Stop::Bad),
    }
    let value_start = *at;
    while let Some(&b) = input.get(*at) {
        if b == b'\r' {
            break;
        }
        if !(b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(Stop::Bad);
        }
        *at += 1;
    }
    let value = input[value_start..*at].trim_ascii().to_vec();
    line_end(input, at)?;
    Ok((name, value))
}

fn line_end(input: &[u8], at: &mut usize) -> Result<(), Stop> {
    match input.get(*at..*at + 2) {
        Some(b"\r\n") => {
            *at += 2;
            Ok(())
        }
        Some(_) => Err(Stop::Bad),
        None if input[*at..].iter().all(|&b| b == b'\r') => Err(Stop::Short),
        None => Err(Stop::Bad),
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(data: &[u8]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let decoded = RIG.with(|rig| rig.decode(std::iter::once(data)));
        (decoded.data, decoded.trailers)
    }

    #[test]
    fn a_body_with_extensions_and_trailers_reads_as_the_grammar_does() {
        let body = b"5;name=value\r\nhello\r\n1\r\n \r\n0\r\nX-Sum:  abc \r\nx-b: 1\r\n\r\n";
        let Strict::Complete {
            data,
            trailers,
            rest,
        } = strict(body)
        else {
            panic!("not a valid body");
        };
        assert_eq!((data.as_slice(), rest), (&b"hello "[..], 0));
        let expected = vec![
            ("x-b".to_owned(), b"1".to_vec()),
            ("x-sum".to_owned(), b"abc".to_vec()),
        ];
        assert_eq!(trailers, expected);
        assert_eq!(frames(body), (data, expected));
        chunked_body(b"\x025\r\nhe");
    }

    #[test]
    fn the_grammar_is_strict() {
        for body in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"5\n",
            b"g\r\n",
            b"0\r\nx y: 1\r\n\r\n",
        ] {
            assert!(matches!(strict(body), Strict::Invalid), "{body:?}");
        }
        for body in [
            &b""[..],
            b"5",
            b"5\r",
            b"5\r\nhel",
            b"0\r\nx: 1\r\n",
            b"0\r\n\r",
        ] {
            assert!(
                matches!(strict(body), Strict::Incomplete { .. }),
                "{body:?}"
            );
        }
    }
}
