//! Protocol detection: a look at a connection's first bytes (without consuming
//! them) to tell HTTP/2, HTTP/1 and anything else apart.
//!
//! Used where the protocol is not declared (passthrough, an unknown inbound port)
//! and to tell h2c from HTTP/1 on a port declared HTTP. HTTP/2 with prior knowledge
//! starts with the preface `PRI * HTTP/2.0`; no HTTP/1 method is `PRI`, so three
//! bytes decide it. HTTP/1 is an upper-case token then a space.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    /// Not HTTP, or nothing arrived before the timeout (a server-first protocol).
    Opaque,
}

/// The longest HTTP/1 method we wait for (`OPTIONS`, `CONNECT`, `PROPFIND`...).
const LONGEST_METHOD: usize = 16;

pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; LONGEST_METHOD + 1];
    let mut seen = 0;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Detected::Opaque,
        };
        if peeked == 0 {
            return Detected::Opaque;
        }
        if let Some(found) = classify(&buf[..peeked]) {
            return found;
        }
        if peeked == seen {
            // Peeking leaves the socket readable, so waiting for readiness would
            // spin; the rest of a split request line is at most a round trip away.
            if Instant::now() >= deadline {
                return Detected::Opaque;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen = peeked;
    }
}

/// `None` while the bytes so far could still start either.
fn classify(bytes: &[u8]) -> Option<Detected> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] == PREFACE[..n] {
        return (n >= 3).then_some(Detected::Http2);
    }
    for (i, byte) in bytes.iter().enumerate() {
        match byte {
            b'A'..=b'Z' | b'-' | b'_' if i < LONGEST_METHOD => continue,
            b' ' if i > 0 => return Some(Detected::Http1),
            _ => return Some(Detected::Opaque),
        }
    }
    (bytes.len() >= LONGEST_METHOD).then_some(Detected::Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(Detected::Http2));
        assert_eq!(classify(b"PR"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Detected::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(classify(b" GET"), Some(Detected::Opaque));
        assert_eq!(classify(&[b'A'; 40]), Some(Detected::Opaque));
    }

    #[tokio::test]
    async fn silence_is_opaque_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let found = detect(&server, Duration::from_millis(20)).await;
        assert_eq!(found, Detected::Opaque);
    }
}
