//! The two heads of an HTTP/1.1 exchange as bytes: the request head the proxy
//! writes (RFC 9112 section 3), and the response head it reads, with how the
//! response's body is delimited (section 6.3).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode, Version};

use super::Error;

/// Response header fields accepted, as hyper's default.
const MAX_HEADERS: usize = 100;
/// The largest response head (or trailer section) read before giving up.
pub const MAX_HEAD: usize = 64 * 1024;
/// Room asked for a request head before writing it: most fit.
const HEAD_RESERVE: usize = 1024;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sending {
    /// No body at all.
    #[default]
    Empty,
    /// `Content-Length`: the bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the body's length is not known.
    Chunked,
}

/// Writes the request head: origin-form target, the headers as they are (the
/// forwarder removed the hop-by-hop ones), and the framing header the body needs.
/// `known` is the body's exact length, if it is known before it is read. The head
/// is written into `out`, the connection's buffer: once the previous head was
/// sent and dropped, its memory serves again.
pub fn encode_request(
    parts: &Parts,
    known: Option<u64>,
    out: &mut BytesMut,
) -> Result<(Bytes, Sending), Error> {
    let declared = parts.headers.get(header::CONTENT_LENGTH);
    let sending = match declared {
        Some(value) => Sending::Length(content_length(value).ok_or(Error::RequestLength)?),
        None => match known {
            Some(0) => Sending::Empty,
            Some(n) => Sending::Length(n),
            None => Sending::Chunked,
        },
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    // The connection's buffer usually has room already; it grows if not.
    out.reserve(HEAD_RESERVE);
    let head = out;
    head.put_slice(parts.method.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(target.as_bytes());
    head.put_slice(b" HTTP/1.1\r\n");
    put_fields(head, &parts.headers);
    let has_length = declared.is_some();
    match sending {
        Sending::Chunked => head.put_slice(b"transfer-encoding: chunked\r\n"),
        Sending::Length(n) if !has_length => {
            head.put_slice(b"content-length: ");
            put_number(head, n, 10);
            head.put_slice(b"\r\n");
        }
        // A method that defines a body says it is empty (RFC 9110 section 8.6).
        Sending::Empty if defines_body(&parts.method) => head.put_slice(b"content-length: 0\r\n"),
        _ => {}
    }
    head.put_slice(b"\r\n");
    Ok((head.split().freeze(), sending))
}

/// Writes header fields as `name: value` lines (request heads and trailers).
pub fn put_fields(out: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

fn defines_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// A parsed response head.
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body was read.
    pub keep_alive: bool,
}

/// Where a header's name and value lie in a response head.
pub type Span = (usize, usize, usize, usize);

/// Parses a response head from the front of `buf`, removing it: `None` while the
/// head is incomplete. `head_request`: the response to a HEAD has no body.
/// `spans` is scratch space, kept by the connection so that parsing allocates
/// nothing.
pub fn parse_response(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    head_request: bool,
) -> Result<Option<ResponseHead>, Error> {
    // Uninitialised: filling 100 empty fields would cost more than the parse.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        // The limit holds however the head arrived: a read brings up to 256 KiB,
        // so a head over it may be complete in the buffer at the first look.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Malformed(e)),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Status(code))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    record_spans(buf, response.headers, spans);
    let head = buf.split_to(len).freeze();
    let mut headers = header_map(&head, spans)?;
    let (framing, keep_alive) = framing(status, version, &mut headers, head_request)?;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Records where each parsed field lies in `buf` (the buffer it was parsed from),
/// so that once the head is split off and frozen, values can share its bytes.
pub fn record_spans(buf: &[u8], parsed: &[httparse::Header<'_>], spans: &mut Vec<Span>) {
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(parsed.iter().map(|field| {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        (
            name,
            name + field.name.len(),
            value,
            value + field.value.len(),
        )
    }));
}

/// The header fields at `spans` in `head`, the values sharing its bytes.
pub fn header_map(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in spans {
        let name =
            HeaderName::from_bytes(&head[name_start..name_end]).map_err(|_| Error::HeaderName)?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| Error::HeaderValue)?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Writes `n` in ASCII digits of base `radix` (10 for lengths, 16 for chunk sizes).
pub fn put_number(out: &mut BytesMut, n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// The body's delimitation and whether the connection stays open after it
/// (RFC 9112 sections 6.3 and 9.3).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), Error> {
    let mut keep_alive = version == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"));
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length, which goes: the message was
        // framed one way only. Both at once can be a smuggling attempt, so the
        // connection is not used again (section 6.3, rule 3).
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .is_some_and(|v| last_token_is_chunked(v.as_bytes()));
        if chunked && version == Version::HTTP_11 {
            return Ok((Framing::Chunked, keep_alive));
        }
        return Ok((Framing::Close, false));
    }
    let mut length = None;
    let mut fields = 0;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = content_length(value).ok_or(Error::ResponseLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::ResponseLength);
        }
        length = Some(n);
        fields += 1;
    }
    // Equal values (`5` and `005`) agree on the framing, but passed on as they
    // came they would leave the next hop to decide again what they mean: one
    // field goes on (RFC 9110 section 8.6).
    if let (Some(n), 2..) = (length, fields) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    match length {
        Some(n) => Ok((Framing::Length(n), keep_alive)),
        None => Ok((Framing::Close, false)),
    }
}

/// A `Content-Length` value: digits only (one value; a list of equal values is
/// read by the caller as separate fields).
pub fn content_length(value: &HeaderValue) -> Option<u64> {
    decimal(value.as_bytes())
}

/// A length in ASCII digits, nothing else (no sign, no spaces).
pub fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn last_token_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Parses a trailer section (after the last chunk) from the front of `buf`,
/// removing it: `None` while incomplete.
pub fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, parsed) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) if len > MAX_HEAD => {
            return Err(Error::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Malformed(e)),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Error::HeaderName)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| Error::HeaderValue)?;
        trailers.append(name, value);
    }
    let _ = buf.split_to(len);
    Ok(Some(trailers))
}

/// The size on a chunk-size line (extensions ignored), if the line is complete:
/// the size and the line's length with its line end.
///
/// Strict, as HAProxy is: hex digits at the very start, then nothing but an
/// extension (`;`, after optional spaces or tabs: RFC 9112 section 7.1.1), then
/// CRLF. A size with other whitespace around it or a stray CR is one that another
/// parser may read differently, the stuff of response splitting.
pub fn parse_chunk_size(buf: &[u8]) -> Result<Option<(u64, usize)>, Error> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        // A size line longer than this is not a size line.
        return if buf.len() > 1024 {
            Err(Error::ChunkSize)
        } else {
            Ok(None)
        };
    };
    let line = buf[..end].strip_suffix(b"\r").ok_or(Error::ChunkSize)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Error::ChunkSize);
    }
    let extension = &line[digits..];
    if !extension.is_empty() {
        let start = extension.iter().position(|&b| b != b' ' && b != b'\t');
        let well_formed = start.is_some_and(|at| extension[at] == b';')
            && !extension
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        if !well_formed {
            return Err(Error::ChunkSize);
        }
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).ok_or(Error::ChunkSize)?;
        size = size * 16 + v as u64;
    }
    Ok(Some((size, end + 1)))
}
