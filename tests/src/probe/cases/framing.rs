//! Message framing: both length fields at once (CL.TE, TE.CL), obfuscated
//! Transfer-Encoding, malformed Content-Length and chunk sizes.

use super::super::{Expect, Step};
use super::{post, request, Builder, HOST, SMUGGLED};

/// CL.TE and TE.CL: with both fields, RFC 9112 §6.3 lets a recipient refuse or
/// read by Transfer-Encoding alone, and then close the connection.
pub(super) fn both_framings(b: &mut Builder) {
    let tail = format!("0\r\n\r\n{SMUGGLED}");
    let cl = tail.len();
    b.both(
        "cl-te",
        &request(
            "POST",
            &format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
            tail.as_bytes(),
        ),
        vec![post("/a", b"")],
    );
    b.both(
        "te-cl",
        &request(
            "POST",
            &format!("Transfer-Encoding: chunked\r\nContent-Length: {cl}\r\n"),
            tail.as_bytes(),
        ),
        vec![post("/a", b"")],
    );
    b.both(
        "cl-te-partial",
        &request(
            "POST",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\nG",
        ),
        vec![post("/a", b"")],
    );
    // TE.CL: a short Content-Length ends inside the chunked body.
    let chunk = "GPOST /$TAG/smuggled HTTP/1.1\r\nHost: h.test\r\nContent-Length: 15\r\n\r\nx=1";
    let body = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    b.both(
        "te-cl-short",
        &request(
            "POST",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            body.as_bytes(),
        ),
        vec![post("/a", chunk.as_bytes())],
    );
    for (name, field) in [
        ("cl-te-leading-space", "Transfer-Encoding:  chunked"),
        ("cl-te-trailing-space", "Transfer-Encoding: chunked "),
        ("cl-te-tab", "Transfer-Encoding:\tchunked"),
        ("cl-te-uppercase", "TRANSFER-ENCODING: CHUNKED"),
    ] {
        let fields = format!("Content-Length: {cl}\r\n{field}\r\n");
        b.both(
            name,
            &request("POST", &fields, tail.as_bytes()),
            vec![post("/a", b"")],
        );
    }
    // Not Transfer-Encoding at all: Content-Length frames the message.
    let fields = format!("Content-Length: {cl}\r\nTransfer_Encoding: chunked\r\n");
    b.either(
        "cl-te-underscore",
        &request("POST", &fields, tail.as_bytes()),
        vec![vec![post("/a", tail.as_bytes())]],
    );
    let fields = format!("Content-Length: {cl}\r\nTransfer-Encoding:\r\n chunked\r\n");
    b.add(
        "cl-te-obs-fold",
        vec![Step::Send(request("POST", &fields, tail.as_bytes()))],
        Expect::RefusedOrForwarded,
        vec![vec![post("/a", b"")], vec![post("/a", tail.as_bytes())]],
        true,
    );
    let fields =
        format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n");
    b.both(
        "cl-te-keep-alive",
        &request("POST", &fields, tail.as_bytes()),
        vec![post("/a", b"")],
    );
    b.both(
        "cl-te-http10",
        format!("POST /$TAG/a HTTP/1.0\r\nHost: {HOST}\r\nContent-Length: {cl}\r\nTransfer-Encoding: chunked\r\n\r\n{tail}").as_bytes(),
        vec![post("/a", b"")],
    );
}

/// Transfer-Encoding that is not plainly `chunked`: a request whose final coding
/// is not chunked cannot be framed (RFC 9112 §6.3: 400 and close); one with an
/// unknown coding gets 501.
pub(super) fn transfer_encodings(b: &mut Builder) {
    let tail = format!("0\r\n\r\n{SMUGGLED}");
    let cl = tail.len();
    for (name, field) in [
        ("te-xchunked", "Transfer-Encoding: xchunked"),
        (
            "te-chunked-identity",
            "Transfer-Encoding: chunked, identity",
        ),
        (
            "te-two-fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        ),
        (
            "te-chunked-twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        ),
        (
            "te-chunked-chunked-list",
            "Transfer-Encoding: chunked, chunked",
        ),
        ("te-quoted", "Transfer-Encoding: \"chunked\""),
        ("te-vertical-tab", "Transfer-Encoding: \x0bchunked"),
        ("te-nul", "Transfer-Encoding: chunked\x00"),
        ("te-space-before-colon", "Transfer-Encoding : chunked"),
        ("te-gzip", "Transfer-Encoding: gzip"),
        ("te-empty", "Transfer-Encoding:"),
        ("te-comma", "Transfer-Encoding: ,chunked"),
        ("te-semicolon", "Transfer-Encoding: chunked;q=1"),
        ("te-cr-chunked", "Transfer-Encoding: \rchunked"),
    ] {
        // Either a refusal, or (for a lenient but unambiguous reading) the
        // chunked body; never the Content-Length one with the smuggled GET.
        let fields = format!("Content-Length: {cl}\r\n{field}\r\n");
        b.add(
            name,
            vec![Step::Send(request("POST", &fields, tail.as_bytes()))],
            Expect::RefusedOrForwarded,
            vec![vec![post("/a", b"")]],
            true,
        );
    }
    b.refused(
        "te-identity-no-length",
        &request("POST", "Transfer-Encoding: identity\r\n", b"hello"),
    );
    b.refused(
        "te-gzip-no-length",
        &request("POST", "Transfer-Encoding: gzip\r\n", b"hello"),
    );
}

pub(super) fn content_lengths(b: &mut Builder) {
    let hello = || vec![vec![post("/a", b"hello")]];
    b.either(
        "cl-duplicate-equal",
        &request(
            "POST",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            b"hello",
        ),
        hello(),
    );
    b.either(
        "cl-duplicate-leading-zeros",
        &request(
            "POST",
            "Content-Length: 5\r\nContent-Length: 005\r\n",
            b"hello",
        ),
        hello(),
    );
    b.either(
        "cl-list-equal",
        &request("POST", "Content-Length: 5, 5\r\n", b"hello"),
        hello(),
    );
    b.forwarded(
        "cl-leading-zeros",
        &request("POST", "Content-Length: 005\r\n", b"hello"),
        vec![post("/a", b"hello")],
    );
    let differing = format!(
        "Content-Length: 5\r\nContent-Length: {}\r\n",
        5 + SMUGGLED.len()
    );
    let mut body = b"hello".to_vec();
    body.extend_from_slice(SMUGGLED.as_bytes());
    b.refused(
        "cl-duplicate-differing",
        &request("POST", &differing, &body),
    );
    b.refused(
        "cl-list-differing",
        &request("POST", "Content-Length: 5, 6\r\n", b"hello!"),
    );
    for (name, value) in [
        ("cl-plus", "+5"),
        ("cl-minus", "-5"),
        ("cl-hex", "0x5"),
        ("cl-trailing-letter", "5a"),
        ("cl-empty", ""),
        ("cl-exponent", "5e0"),
        ("cl-inner-space", "5 5"),
        ("cl-overflow", "18446744073709551621"),
        ("cl-huge", "99999999999999999999999999"),
        ("cl-nul", "5\x00"),
        ("cl-decimal-point", "5.0"),
    ] {
        let fields = format!("Content-Length: {value}\r\n");
        b.refused(
            name,
            &request(
                "POST",
                &fields,
                &[b"hello".as_slice(), SMUGGLED.as_bytes()].concat(),
            ),
        );
    }
    b.refused(
        "cl-space-before-colon",
        &request("POST", "Content-Length : 5\r\n", b"hello"),
    );
    b.either(
        "cl-obs-fold",
        &request("POST", "Content-Length:\r\n 5\r\n", b"hello"),
        hello(),
    );
    // A short length leaves "lo" as the start of a next request, never a whole one.
    b.either(
        "cl-shorter-than-body",
        &request("POST", "Content-Length: 3\r\n", b"hello"),
        vec![vec![post("/a", b"hel")]],
    );
}

/// Request chunk sizes: `1*HEXDIG`, optionally `;extensions` (RFC 9112 §7.1).
pub(super) fn chunk_sizes(b: &mut Builder) {
    let te = "Transfer-Encoding: chunked\r\n";
    for (name, size) in [
        ("chunk-leading-space", " 5"),
        ("chunk-form-feed", "\x0c5"),
        ("chunk-minus", "-5"),
        ("chunk-plus", "+5"),
        ("chunk-0x", "0x5"),
        ("chunk-overflow", "10000000000000005"),
        ("chunk-letter", "5g"),
        ("chunk-empty", ""),
        ("chunk-stray-cr", "5\r"),
        ("chunk-underscore", "0_5"),
    ] {
        let body = format!("{size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
        b.refused(name, &request("POST", te, body.as_bytes()));
    }
    // Lenient but unambiguous: a recipient may read 5, never anything else.
    for (name, size) in [
        ("chunk-trailing-space", "5 "),
        ("chunk-space-extension", "5 ;x=1"),
        ("chunk-leading-zeros", "0000000000000000005"),
    ] {
        let body = format!("{size}\r\nhello\r\n0\r\n\r\n");
        b.either(
            name,
            &request("POST", te, body.as_bytes()),
            vec![vec![post("/a", b"hello")]],
        );
    }
    let body = format!("3\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    b.refused("chunk-data-longer", &request("POST", te, body.as_bytes()));
    b.refused(
        "chunk-no-crlf-after-data",
        &request("POST", te, b"5\r\nhelloX0\r\n\r\n"),
    );
    b.either(
        "chunk-bare-lf-size",
        &request("POST", te, b"5\nhello\r\n0\r\n\r\n"),
        vec![vec![post("/a", b"hello")]],
    );
    b.either(
        "chunk-extension-quoted",
        &request("POST", te, b"5;x=\"a;b\"\r\nhello\r\n0\r\n\r\n"),
        vec![vec![post("/a", b"hello")]],
    );
    b.either(
        "chunk-extension-nul",
        &request("POST", te, b"5;x\x00\r\nhello\r\n0\r\n\r\n"),
        vec![vec![post("/a", b"hello")]],
    );
    let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(100_000));
    b.either(
        "chunk-extension-100k",
        &request("POST", te, long.as_bytes()),
        vec![vec![post("/a", b"hello")]],
    );
    // A request line where the trailer section should be: not a field.
    let body = format!("0\r\n{SMUGGLED}");
    b.refused(
        "chunk-last-then-request",
        &request("POST", te, body.as_bytes()),
    );
    b.either(
        "chunk-trailer-content-length",
        &request("POST", te, b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
        vec![vec![post("/a", b"hello")]],
    );
    b.either(
        "chunk-trailer-obs-fold",
        &request("POST", te, b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"),
        vec![vec![post("/a", b"hello")]],
    );
}
