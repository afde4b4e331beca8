//! The fuzz target of the request-head parser (`proxy/fuzz`), kept here because
//! the parser is private to [`super`]; the committed corpus is replayed through
//! the same function by `cargo test` (see [`crate::fuzzing`]).
//!
//! Panics (that is what a fuzzer finds) when the parser does not hold to what
//! [`super::serve`] relies on.

use bytes::BytesMut;
use http::{header, Method, Version};

use super::{parse_request, Head, NotServed, Parsed, ReceivedBody, MAX_HEAD};
use crate::dataplane::http::h1client::{decimal, has_token};

/// Parses `data` as the front of what a client sent, and checks the outcome.
pub fn request_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut spans = Vec::new();
    match parse_request(&mut buf, &mut spans) {
        Ok(Parsed::Request(head)) => {
            let consumed = data.len() - buf.len();
            assert!(consumed > 0, "a request served from no bytes");
            assert_eq!(&buf[..], &data[consumed..], "the rest is not what followed");
            check_served(&head, &data[..consumed]);
            // Had the request come in pieces, each piece would have been
            // waited on, not served or handed over differently.
            for cut in [consumed / 2, consumed - 1] {
                if cut <= MAX_HEAD {
                    let mut partial = BytesMut::from(&data[..cut]);
                    let parsed = parse_request(&mut partial, &mut spans);
                    assert!(
                        matches!(parsed, Ok(Parsed::Incomplete { .. })),
                        "{cut} of {consumed} bytes: not waited for"
                    );
                    assert_eq!(partial.len(), cut, "bytes consumed while waiting");
                }
            }
        }
        // Waiting for more, or left to hyper: nothing may be consumed.
        Ok(Parsed::Incomplete { .. }) | Err(NotServed::Other) => {
            assert_eq!(&buf[..], data, "bytes consumed")
        }
        // The head was read and the connection is refused: no more bytes are read.
        Err(NotServed::Invalid) => assert!(buf.len() < data.len(), "the bad head was kept"),
    }
}

/// What a request served here must be: HTTP/1.1, no CONNECT, no framing or
/// protocol switch left for hyper, and a body that is exactly the bytes its
/// `Content-Length` announced, at the end of `bytes` (the head and body read).
fn check_served(head: &Head, bytes: &[u8]) {
    let request = &head.request;
    let headers = request.headers();
    assert_eq!(request.version(), Version::HTTP_11);
    assert_ne!(request.method(), Method::CONNECT);
    for name in [header::TRANSFER_ENCODING, header::UPGRADE, header::EXPECT] {
        assert!(!headers.contains_key(&name), "{name} served here");
    }
    let body: &[u8] = match request.body() {
        ReceivedBody::Empty => &[],
        ReceivedBody::Whole(Some(body)) => body,
        _ => panic!("a body that was not read whole"),
    };
    assert!(
        bytes.ends_with(body),
        "the body is not the bytes after the head"
    );
    assert!(body.len() < bytes.len(), "no head before the body");
    for length in headers.get_all(header::CONTENT_LENGTH) {
        assert_eq!(
            decimal(length.as_bytes()),
            Some(body.len() as u64),
            "Content-Length {length:?} for a body of {}",
            body.len()
        );
    }
    let close = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"close"));
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"trailers"));
    assert_eq!(head.close, close, "Connection: close");
    assert_eq!(head.trailers, trailers, "TE: trailers");
    assert_eq!(head.head_request, request.method() == Method::HEAD);
}
