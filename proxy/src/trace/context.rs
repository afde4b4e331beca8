//! Trace context on the wire: reading a caller's from a request's headers and
//! writing the forwarded request's, in the format it came in.
//!
//! - W3C Trace Context: `traceparent` (`00-<trace id>-<parent id>-<flags>`) and
//!   `tracestate`, which is passed on untouched. A traceparent that does not parse
//!   as the specification says (wrong length, upper-case hex, an all-zero id,
//!   version `ff`, or two of them) is ignored, as is the tracestate beside it: the
//!   request starts a new trace.
//! - B3 (Zipkin), read only when there is no traceparent: the single `b3` header
//!   (`<trace id>-<span id>[-<sampled>[-<parent id>]]`, or a bare decision `0`,
//!   `1`, `d`) and the multi `X-B3-*` headers. A 64-bit trace id stays 64-bit.
//!
//! Pure functions over a header map; nothing here allocates but the header values
//! it writes.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// The header format a caller's context came in, which the forwarded request keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// A caller's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub format: Format,
    /// Zero when the caller sent only a sampling decision (B3 allows that).
    pub trace_id: u128,
    /// Whether the trace id is B3's 64-bit kind (written back as 16 hex digits).
    pub short_trace_id: bool,
    /// The caller's span, this hop's parent; zero when it sent none.
    pub span_id: u64,
    /// The caller's decision; `None`: it made none (B3 without a sampled flag).
    pub sampled: Option<bool>,
}

impl Incoming {
    /// Whether the context names a trace this hop can join.
    pub fn has_ids(&self) -> bool {
        self.trace_id != 0 && self.span_id != 0
    }
}

/// The caller's context: W3C's when a traceparent is present (a broken one counts
/// as none, and B3 is not consulted), else B3's.
///
/// One pass over the headers rather than a lookup per name: each lookup hashes
/// its name, and six of them were most of what tracing cost a request.
pub fn read(headers: &HeaderMap) -> Option<Incoming> {
    let mut found = Found::default();
    for (name, value) in headers {
        let slot = match name.as_str() {
            "traceparent" => {
                if found.traceparent.is_some() {
                    // Two traceparents are as good as none.
                    return None;
                }
                &mut found.traceparent
            }
            "b3" => &mut found.b3,
            "x-b3-traceid" => &mut found.trace_id,
            "x-b3-spanid" => &mut found.span_id,
            "x-b3-sampled" => &mut found.sampled,
            "x-b3-flags" => &mut found.flags,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    if let Some(traceparent) = found.traceparent {
        return self::traceparent(traceparent.as_bytes());
    }
    if let Some(single) = found.b3 {
        return b3_single(single.as_bytes());
    }
    b3_multi(&found)
}

/// The context headers of one request, the first value of each.
#[derive(Default)]
struct Found<'a> {
    traceparent: Option<&'a HeaderValue>,
    b3: Option<&'a HeaderValue>,
    trace_id: Option<&'a HeaderValue>,
    span_id: Option<&'a HeaderValue>,
    sampled: Option<&'a HeaderValue>,
    flags: Option<&'a HeaderValue>,
}

/// Parses a traceparent as Trace Context level 1 says: version 00 is exactly 55
/// characters; a later version may be longer, followed by `-` and more fields this
/// version does not know (ignored).
pub fn traceparent(value: &[u8]) -> Option<Incoming> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = lower_hex(&value[0..2])?;
    match version {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = lower_hex(&value[3..35])?;
    let span_id = u64::try_from(lower_hex(&value[36..52])?).ok()?;
    let flags = lower_hex(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Incoming {
        format: Format::W3c,
        trace_id,
        short_trace_id: false,
        span_id,
        sampled: Some(flags & 1 == 1),
    })
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]` or a bare decision.
fn b3_single(value: &[u8]) -> Option<Incoming> {
    let decision_only = |sampled| Incoming {
        format: Format::B3Single,
        trace_id: 0,
        short_trace_id: false,
        span_id: 0,
        sampled: Some(sampled),
    };
    match value {
        b"0" => return Some(decision_only(false)),
        b"1" | b"d" => return Some(decision_only(true)),
        _ => {}
    }
    let mut fields = value.split(|b| *b == b'-');
    let (trace_id, short_trace_id) = b3_trace_id(fields.next()?)?;
    let span_id = b3_span_id(fields.next()?)?;
    let sampled = match fields.next() {
        None => None,
        Some(b"0") => Some(false),
        Some(b"1" | b"d") => Some(true),
        Some(_) => return None,
    };
    if let Some(parent) = fields.next() {
        b3_span_id(parent)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Incoming {
        format: Format::B3Single,
        trace_id,
        short_trace_id,
        span_id,
        sampled,
    })
}

fn b3_multi(found: &Found<'_>) -> Option<Incoming> {
    let debug = found.flags.is_some_and(|v| v.as_bytes() == b"1");
    let sampled = match found.sampled.map(HeaderValue::as_bytes) {
        _ if debug => Some(true),
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        _ => None,
    };
    let ids = match (found.trace_id, found.span_id) {
        (Some(trace), Some(span)) => {
            Some((b3_trace_id(trace.as_bytes())?, b3_span_id(span.as_bytes())?))
        }
        _ => None,
    };
    let ((trace_id, short_trace_id), span_id) = match (ids, sampled) {
        (Some(ids), _) => ids,
        (None, Some(_)) => ((0, false), 0),
        (None, None) => return None,
    };
    Some(Incoming {
        format: Format::B3Multi,
        trace_id,
        short_trace_id,
        span_id,
        sampled,
    })
}

fn b3_trace_id(hex: &[u8]) -> Option<(u128, bool)> {
    let id = match hex.len() {
        16 | 32 => any_hex(hex)?,
        _ => return None,
    };
    (id != 0).then_some((id, hex.len() == 16))
}

fn b3_span_id(hex: &[u8]) -> Option<u64> {
    let id = match hex.len() {
        16 => u64::try_from(any_hex(hex)?).ok()?,
        _ => return None,
    };
    (id != 0).then_some(id)
}

/// Hex digits, lower case only (W3C refuses upper case).
fn lower_hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(v))
    })
}

/// Hex digits of either case (B3 writers are not all strict).
fn any_hex(digits: &[u8]) -> Option<u128> {
    let lowered: [u8; 32] =
        std::array::from_fn(|i| digits.get(i).map_or(0, u8::to_ascii_lowercase));
    lower_hex(&lowered[..digits.len()])
}

/// What the forwarded request carries for this hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub format: Format,
    pub trace_id: u128,
    pub short_trace_id: bool,
    /// This hop's span: the next hop's parent.
    pub span_id: u64,
    /// The caller's span (B3 names it as the parent); zero at a trace's root.
    pub parent_id: u64,
    pub sampled: bool,
}

/// Writes `out` into the request's headers in its format. A W3C context keeps
/// the tracestate; one that replaces a broken traceparent drops the tracestate
/// beside it, which belonged to the broken one.
pub fn write(headers: &mut HeaderMap, out: &Outgoing, replaced_broken: bool) {
    match out.format {
        Format::W3c => {
            headers.insert(TRACEPARENT, header(&traceparent_text(out)));
            if replaced_broken {
                headers.remove(TRACESTATE);
            }
        }
        Format::B3Single => {
            let mut text = [0u8; 32 + 1 + 16 + 2 + 1 + 16];
            let mut n = write_trace_id(&mut text, out);
            text[n] = b'-';
            n += 1;
            n += hex_into(&mut text[n..], u128::from(out.span_id), 16);
            text[n] = b'-';
            text[n + 1] = if out.sampled { b'1' } else { b'0' };
            n += 2;
            if out.parent_id != 0 {
                text[n] = b'-';
                n += 1;
                n += hex_into(&mut text[n..], u128::from(out.parent_id), 16);
            }
            headers.insert(B3, header(&text[..n]));
        }
        Format::B3Multi => {
            let mut text = [0u8; 32];
            let n = write_trace_id(&mut text, out);
            headers.insert(B3_TRACE_ID, header(&text[..n]));
            hex_into(&mut text, u128::from(out.span_id), 16);
            headers.insert(B3_SPAN_ID, header(&text[..16]));
            match out.parent_id {
                0 => headers.remove(B3_PARENT_SPAN_ID),
                parent => {
                    hex_into(&mut text, u128::from(parent), 16);
                    headers.insert(B3_PARENT_SPAN_ID, header(&text[..16]))
                }
            };
            let sampled = if out.sampled { "1" } else { "0" };
            headers.insert(B3_SAMPLED, HeaderValue::from_static(sampled));
        }
    }
}

/// `00-{trace id}-{span id}-{flags}`.
pub fn traceparent_text(out: &Outgoing) -> [u8; 55] {
    let mut text = [b'-'; 55];
    text[0] = b'0';
    text[1] = b'0';
    hex_into(&mut text[3..35], out.trace_id, 32);
    hex_into(&mut text[36..52], u128::from(out.span_id), 16);
    text[53] = b'0';
    text[54] = if out.sampled { b'1' } else { b'0' };
    text
}

fn write_trace_id(text: &mut [u8], out: &Outgoing) -> usize {
    let digits = if out.short_trace_id { 16 } else { 32 };
    hex_into(text, out.trace_id, digits)
}

/// Writes the low `digits` hex digits of `value` into the start of `text`.
fn hex_into(text: &mut [u8], value: u128, digits: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in text[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[((value >> shift) & 0xf) as usize];
    }
    digits
}

fn header(text: &[u8]) -> HeaderValue {
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests;
