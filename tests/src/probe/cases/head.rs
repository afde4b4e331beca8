//! The request head: line ends, whitespace and control bytes, the request line,
//! Host, and sizes past the limits.

use super::super::Expect;
use super::{get, req, request, with_field, Builder};

/// Line ends, whitespace and control bytes in the head.
pub(super) fn lines_and_bytes(b: &mut Builder) {
    let get_a = || vec![vec![get("/a")]];
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end.
    b.either(
        "bare-lf",
        b"GET /$TAG/a HTTP/1.1\nHost: h.test\n\n",
        get_a(),
    );
    b.either(
        "bare-lf-fields",
        b"GET /$TAG/a HTTP/1.1\r\nHost: h.test\nX: y\n\r\n",
        get_a(),
    );
    b.either("bare-cr-in-value", &with_field(b"X: a\rb"), get_a());
    b.either(
        "bare-cr-line-end",
        b"GET /$TAG/a HTTP/1.1\rHost: h.test\r\r\n\r\n",
        get_a(),
    );
    b.either("nul-in-value", &with_field(b"X: a\x00b"), get_a());
    b.refused("nul-in-name", &with_field(b"X\x00Y: b"));
    b.either("control-in-value", &with_field(b"X: a\x01b"), get_a());
    b.either("del-in-value", &with_field(b"X: a\x7fb"), get_a());
    b.either("obs-text-in-value", &with_field(b"X: caf\xe9"), get_a());
    b.refused("utf8-in-name", &with_field("Caf\u{e9}: b".as_bytes()));
    b.refused("space-before-colon", &with_field(b"X-A : b"));
    b.refused("tab-before-colon", &with_field(b"X-A\t: b"));
    b.refused(
        "host-space-before-colon",
        b"GET /$TAG/a HTTP/1.1\r\nHost : h.test\r\n\r\n",
    );
    b.refused("empty-name", &with_field(b": b"));
    b.refused("space-in-name", &with_field(b"X A: b"));
    b.refused("no-colon", &with_field(b"X-A b"));
    b.refused("at-in-name", &with_field(b"X@A: b"));
    b.either("obs-fold", &with_field(b"X: a\r\n b"), get_a());
    b.either(
        "obs-fold-first-line",
        b"GET /$TAG/a HTTP/1.1\r\n X: a\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.either(
        "leading-crlf",
        b"\r\nGET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.either(
        "leading-crlfs",
        b"\r\n\r\n\r\n\r\nGET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.either(
        "leading-space",
        b" GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
}

pub(super) fn request_lines(b: &mut Builder) {
    let get_a = || vec![vec![get("/a")]];
    b.either(
        "lowercase-method",
        b"get /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        vec![vec![req("get", "/a", b"")]],
    );
    b.either(
        "unknown-method",
        b"PROBE /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        vec![vec![req("PROBE", "/a", b"")]],
    );
    b.refused(
        "method-bad-char",
        b"G(T /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused("method-empty", b" /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n");
    b.either(
        "double-space",
        b"GET  /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.either(
        "tab-separator",
        b"GET\t/$TAG/a\tHTTP/1.1\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.refused(
        "target-with-space",
        b"GET /$TAG/a b HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "target-with-nul",
        b"GET /$TAG/a\x00 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "target-with-del",
        b"GET /$TAG/a\x7f HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "target-with-8bit",
        b"GET /$TAG/a\xff HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "target-relative",
        b"GET $TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused("target-star-get", b"GET * HTTP/1.1\r\nHost: h.test\r\n\r\n");
    b.either(
        "version-1.2",
        b"GET /$TAG/a HTTP/1.2\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
    b.refused(
        "version-2.0",
        b"GET /$TAG/a HTTP/2.0\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "version-lowercase",
        b"GET /$TAG/a http/1.1\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "version-1.10",
        b"GET /$TAG/a HTTP/1.10\r\nHost: h.test\r\n\r\n",
    );
    b.refused(
        "version-trailing-junk",
        b"GET /$TAG/a HTTP/1.1x\r\nHost: h.test\r\n\r\n",
    );
    b.refused("version-missing", b"GET /$TAG/a\r\nHost: h.test\r\n\r\n");
    b.refused(
        "version-9.9",
        b"GET /$TAG/a HTTP/9.9\r\nHost: h.test\r\n\r\n",
    );
    b.either(
        "http10-with-host",
        b"GET /$TAG/a HTTP/1.0\r\nHost: h.test\r\n\r\n",
        get_a(),
    );
}

/// RFC 9112 §3.2: exactly one Host in HTTP/1.1 (400 otherwise), and an
/// absolute-form target's authority replaces it.
pub(super) fn hosts(b: &mut Builder) {
    b.one(
        "host-missing",
        b"GET /$TAG/a HTTP/1.1\r\n\r\n",
        Expect::RefusedWith(400),
        vec![],
    );
    b.one(
        "host-twice-equal",
        b"GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\nHost: h.test\r\n\r\n",
        Expect::RefusedWith(400),
        vec![],
    );
    b.one(
        "host-twice-differing",
        b"GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\nHost: other.test\r\n\r\n",
        Expect::RefusedWith(400),
        vec![],
    );
    b.refused(
        "host-with-space",
        b"GET /$TAG/a HTTP/1.1\r\nHost: h test\r\n\r\n",
    );
    // The authority's host, whatever the Host field said.
    let other = |path: &str| vec![vec![get(path)]];
    b.either(
        "absolute-form-other-host",
        b"GET http://h.test/$TAG/a HTTP/1.1\r\nHost: other.test\r\n\r\n",
        other("/a"),
    );
    b.either(
        "absolute-form-no-host",
        b"GET http://h.test/$TAG/a HTTP/1.1\r\n\r\n",
        other("/a"),
    );
    b.either(
        "absolute-form-userinfo",
        b"GET http://u@h.test/$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        other("/a"),
    );
}

/// Heads past the limits: refused (431, 414 or 400) or closed, never forwarded.
pub(super) fn sizes(b: &mut Builder) {
    let long_target = format!(
        "GET /$TAG/{} HTTP/1.1\r\nHost: h.test\r\n\r\n",
        "a".repeat(100_000)
    );
    b.refused("request-line-100k", long_target.as_bytes());
    let field = format!("X-Big: {}", "b".repeat(600_000));
    b.refused("head-600k", &with_field(field.as_bytes()));
    let many: String = (0..500).map(|i| format!("X-F{i}: v\r\n")).collect();
    b.refused("fields-500", &request("GET", &many, b""));
    let field = format!("X-Big: {}", "b".repeat(70_000));
    b.either(
        "head-70k",
        &with_field(field.as_bytes()),
        vec![vec![get("/a")]],
    );
}
