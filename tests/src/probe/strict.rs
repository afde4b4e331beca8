//! A strict HTTP/1.1 request parser for the probe's recorder: what a proxy forwards
//! must be a message every reasonable server reads the same way, so anything RFC 9112
//! allows a recipient to be lenient about (bare LF, obs-fold, whitespace in a chunk
//! size, duplicate `Content-Length`, `Transfer-Encoding` other than plain `chunked`,
//! several `Host` fields) is an error here.

/// One request, as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Field names lowercased, values as sent.
    pub fields: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The values of every field called `name` (lowercase).
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request and the bytes it took.
    Complete(Request, usize),
    /// Not enough bytes yet.
    Incomplete,
    /// Not a strictly valid request: why.
    Invalid(String),
}

/// Larger heads are refused. Far above any proxy's limit: the head limit is the
/// proxy's to choose, the recorder only has to stay bounded.
const MAX_HEAD: usize = 1024 * 1024;
/// A body larger than this is refused (the probe never sends one).
const MAX_BODY: u64 = 16 * 1024 * 1024;

pub fn parse(buf: &[u8]) -> Parsed {
    match parse_inner(buf) {
        Ok(Some((request, used))) => Parsed::Complete(request, used),
        Ok(None) => Parsed::Incomplete,
        Err(why) => Parsed::Invalid(why),
    }
}

type Step<T> = Result<Option<T>, String>;

fn parse_inner(buf: &[u8]) -> Step<(Request, usize)> {
    let mut at = 0;
    let Some(line) = next_line(buf, &mut at)? else {
        return incomplete_head(buf);
    };
    let (method, target, http10) = request_line(line)?;
    let mut fields = Vec::new();
    loop {
        let Some(line) = next_line(buf, &mut at)? else {
            return incomplete_head(buf);
        };
        if line.is_empty() {
            break;
        }
        fields.push(field(line)?);
    }
    if at > MAX_HEAD {
        return Err(format!("head of {at} bytes"));
    }
    let request = Request {
        method,
        target,
        fields,
        body: Vec::new(),
    };
    let hosts = request.values("host").len();
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(format!("{hosts} Host fields"));
    }
    // RFC 9112 §6.1: an HTTP/1.0 recipient may not know chunked.
    if http10 && !request.values("transfer-encoding").is_empty() {
        return Err("Transfer-Encoding in HTTP/1.0".into());
    }
    let body = match framing(&request)? {
        Framing::Length(length) => {
            let end = at + length as usize;
            if buf.len() < end {
                return Ok(None);
            }
            let body = buf[at..end].to_vec();
            at = end;
            body
        }
        Framing::Chunked => match chunked(buf, &mut at)? {
            Some(body) => body,
            None => return Ok(None),
        },
    };
    Ok(Some((Request { body, ..request }, at)))
}

fn incomplete_head<T>(buf: &[u8]) -> Step<T> {
    if buf.len() > MAX_HEAD {
        return Err(format!("no end of head in {} bytes", buf.len()));
    }
    Ok(None)
}

/// The next line without its CRLF; a bare CR or LF anywhere in it is an error.
fn next_line<'a>(buf: &'a [u8], at: &mut usize) -> Step<&'a [u8]> {
    let rest = &buf[*at..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        if let Some(cr) = rest.iter().position(|&b| b == b'\r') {
            if cr + 1 < rest.len() {
                return Err("bare CR".into());
            }
        }
        return Ok(None);
    };
    if lf == 0 || rest[lf - 1] != b'\r' {
        return Err("bare LF".into());
    }
    let line = &rest[..lf - 1];
    if line.contains(&b'\r') {
        return Err("bare CR".into());
    }
    *at += lf + 1;
    Ok(Some(line))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// Method, target, and whether it is HTTP/1.0.
fn request_line(line: &[u8]) -> Result<(String, String, bool), String> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("request line {:?}", String::from_utf8_lossy(line)));
    };
    if !token(method) {
        return Err(format!("method {:?}", String::from_utf8_lossy(method)));
    }
    let visible = target.iter().all(|&b| (0x21..0x7f).contains(&b));
    let form = target.starts_with(b"/")
        || target.starts_with(b"http://")
        || target.starts_with(b"https://")
        || (target == b"*" && method == b"OPTIONS");
    if !visible || !form {
        return Err(format!("target {:?}", String::from_utf8_lossy(target)));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(format!("version {:?}", String::from_utf8_lossy(version)));
    }
    Ok((ascii(method), ascii(target), version == b"HTTP/1.0"))
}

fn ascii(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn field(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    if line.starts_with(b" ") || line.starts_with(b"\t") {
        return Err("obs-fold".into());
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(format!("field without colon {:?}", ascii(line)));
    };
    let name = &line[..colon];
    if !token(name) {
        return Err(format!("field name {:?}", ascii(name)));
    }
    let value = trim_ows(&line[colon + 1..]);
    let clean = value
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b) || b >= 0x80);
    if !clean {
        return Err(format!("control byte in field {:?}", ascii(name)));
    }
    Ok((ascii(name).to_ascii_lowercase(), value.to_vec()))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

enum Framing {
    Length(u64),
    Chunked,
}

fn framing(request: &Request) -> Result<Framing, String> {
    let lengths = request.values("content-length");
    let codings = request.values("transfer-encoding");
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Framing::Length(0)),
        ([], [coding]) if coding.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        ([], _) => Err(format!("Transfer-Encoding {codings:?}")),
        ([length], []) => {
            let digits = length.len() <= 15 && length.iter().all(u8::is_ascii_digit);
            let value = std::str::from_utf8(length)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|_| digits && !length.is_empty())
                .ok_or_else(|| format!("Content-Length {:?}", ascii(length)))?;
            if value > MAX_BODY {
                return Err(format!("Content-Length {value}"));
            }
            Ok(Framing::Length(value))
        }
        (_, []) => Err(format!("{} Content-Length fields", lengths.len())),
        _ => Err("both Content-Length and Transfer-Encoding".into()),
    }
}

/// A chunked body and its trailers; chunk sizes are bare hex digits, extensions
/// `;token` or `;token=token` without whitespace.
fn chunked(buf: &[u8], at: &mut usize) -> Step<Vec<u8>> {
    let mut body = Vec::new();
    let mut pos = *at;
    loop {
        let Some(line) = next_line(buf, &mut pos)? else {
            return Ok(None);
        };
        let (size, extensions) = match line.iter().position(|&b| b == b';') {
            Some(semi) => (&line[..semi], &line[semi..]),
            None => (line, &b""[..]),
        };
        let hex = !size.is_empty() && size.len() <= 8 && size.iter().all(u8::is_ascii_hexdigit);
        let size = std::str::from_utf8(size)
            .ok()
            .filter(|_| hex)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| format!("chunk size line {:?}", ascii(line)))?;
        for extension in extensions.split(|&b| b == b';').skip(1) {
            let (name, value) = match extension.iter().position(|&b| b == b'=') {
                Some(eq) => (&extension[..eq], &extension[eq + 1..]),
                None => (extension, &b"x"[..]),
            };
            if !token(name) || !token(value) {
                return Err(format!("chunk extension {:?}", ascii(extension)));
            }
        }
        if size == 0 {
            break;
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        let end = pos + size as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&buf[pos..end]);
        pos = end + 2;
    }
    loop {
        let Some(line) = next_line(buf, &mut pos)? else {
            return Ok(None);
        };
        if line.is_empty() {
            break;
        }
        field(line)?;
    }
    *at = pos;
    Ok(Some(body))
}

#[cfg(test)]
mod tests;
