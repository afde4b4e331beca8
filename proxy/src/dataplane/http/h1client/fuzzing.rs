//! The fuzz targets of the upstream client's parsers (`proxy/fuzz`): the
//! response head, and a chunked response body read by the real
//! [`ResponseBody`]. The committed corpus is replayed through the same
//! functions by `cargo test` (see [`crate::fuzzing`]).
//!
//! They panic (that is what a fuzzer finds) when a parser does not hold to
//! what the rest of the client relies on.

mod chunked;

use bytes::BytesMut;
use http::{header, StatusCode, Version};

use super::head::{content_length, parse_response, Framing, ResponseHead, MAX_HEAD};

pub use chunked::chunked_body;

/// Parses `data[1..]` as the front of what an upstream sent; bit 0 of `data[0]`
/// says whether the request was a HEAD.
pub fn response_head(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let mut buf = BytesMut::from(data);
    let mut spans = Vec::new();
    match parse_response(&mut buf, &mut spans, head_request) {
        Ok(Some(head)) => {
            let consumed = data.len() - buf.len();
            assert!(consumed > 0, "a head parsed from no bytes");
            assert_eq!(&buf[..], &data[consumed..], "the rest is not what followed");
            check_head(&head, head_request);
            for cut in [consumed / 2, consumed - 1] {
                if cut <= MAX_HEAD {
                    let mut partial = BytesMut::from(&data[..cut]);
                    let parsed = parse_response(&mut partial, &mut spans, head_request);
                    assert!(
                        matches!(parsed, Ok(None)),
                        "{cut} of {consumed} bytes: not waited for"
                    );
                    assert_eq!(partial.len(), cut, "bytes consumed while waiting");
                }
            }
        }
        Ok(None) => {
            assert_eq!(&buf[..], data, "bytes consumed while waiting");
            assert!(data.len() <= MAX_HEAD, "waiting past the head limit");
        }
        Err(_) => {}
    }
}

/// The framing a parsed head reports agrees with its fields (RFC 9112 section 6.3).
fn check_head(head: &ResponseHead, head_request: bool) {
    let headers = &head.headers;
    let bodyless = head_request
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match head.framing {
        Framing::Length(n) if bodyless => assert_eq!(n, 0, "a body where none may be"),
        Framing::Length(n) => {
            assert!(!chunked, "Content-Length framing with Transfer-Encoding");
            let lengths = headers.get_all(header::CONTENT_LENGTH);
            assert!(
                lengths.iter().all(|v| content_length(v) == Some(n)),
                "framed by {n} bytes, declared {:?}",
                lengths.iter().collect::<Vec<_>>()
            );
            assert!(lengths.iter().next().is_some(), "a length nobody declared");
        }
        Framing::Chunked => {
            assert!(!bodyless && chunked && head.version == Version::HTTP_11);
            assert!(
                !headers.contains_key(header::CONTENT_LENGTH),
                "Content-Length kept beside chunked framing"
            );
        }
        Framing::Close => {
            assert!(!bodyless);
            assert!(!head.keep_alive, "read to the close, yet kept alive");
        }
    }
    if head.version != Version::HTTP_11 {
        assert!(!head.keep_alive, "an HTTP/1.0 connection kept alive");
    }
}
