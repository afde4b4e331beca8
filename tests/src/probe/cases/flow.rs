//! Whole exchanges: valid controls, pipelines, a misbehaving upstream, and
//! slow or stalled peers.

use std::time::Duration;

use super::super::{Expect, Step, Timeout};
use super::{get, post, req, request, tagged, Builder, SMUGGLED};

/// Valid requests every proxy must pass: they keep the harness honest.
pub(super) fn controls(b: &mut Builder) {
    b.forwarded("get", &request("GET", "", b""), vec![get("/a")]);
    b.forwarded(
        "post-length",
        &request("POST", "Content-Length: 5\r\n", b"hello"),
        vec![post("/a", b"hello")],
    );
    b.forwarded(
        "post-chunked",
        &request(
            "POST",
            "Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
        ),
        vec![post("/a", b"hello")],
    );
    b.forwarded(
        "chunk-extension",
        &request(
            "POST",
            "Transfer-Encoding: chunked\r\n",
            b"5;name=value\r\nhello\r\n0\r\n\r\n",
        ),
        vec![post("/a", b"hello")],
    );
    b.forwarded(
        "chunked-trailer",
        &request(
            "POST",
            "Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
        ),
        vec![post("/a", b"hello")],
    );
    b.forwarded(
        "value-ows",
        b"GET /$TAG/a HTTP/1.1\r\nHost:  h.test \t\r\nX-A:\tb \r\n\r\n",
        vec![get("/a")],
    );
    b.forwarded(
        "large-length-body",
        &request("POST", "Content-Length: 100000\r\n", &[b'x'; 100_000]),
        vec![post("/a", &[b'x'; 100_000])],
    );
    b.forwarded(
        "body-holding-a-request",
        &request(
            "POST",
            &format!("Content-Length: {}\r\n", SMUGGLED.len()),
            SMUGGLED.as_bytes(),
        ),
        vec![post("/a", SMUGGLED.as_bytes())],
    );
    b.forwarded(
        "absolute-form",
        b"GET http://h.test/$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
        vec![get("/a")],
    );
    b.forwarded(
        "te-uppercase",
        &request(
            "POST",
            "Transfer-Encoding: CHUNKED\r\n",
            b"2\r\nhi\r\n0\r\n\r\n",
        ),
        vec![post("/a", b"hi")],
    );
    b.forwarded(
        "expect-continue",
        &request(
            "POST",
            "Expect: 100-continue\r\nContent-Length: 2\r\n",
            b"hi",
        ),
        vec![post("/a", b"hi")],
    );
    b.forwarded(
        "get-with-body",
        &request("GET", "Content-Length: 2\r\n", b"hi"),
        vec![req("GET", "/a", b"hi")],
    );
}

pub(super) fn pipelines(b: &mut Builder) {
    let two = "GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\nPOST /$TAG/b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhiPOST /$TAG/c HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nho\r\n0\r\n\r\n";
    b.forwarded(
        "pipeline-three",
        two.as_bytes(),
        vec![get("/a"), post("/b", b"hi"), post("/c", b"ho")],
    );
    let many: String = (0..50)
        .map(|i| format!("GET /$TAG/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n"))
        .collect();
    b.forwarded(
        "pipeline-fifty",
        many.as_bytes(),
        (0..50).map(|i| get(&format!("/{i}"))).collect(),
    );
    let tail = format!("0\r\n\r\n{SMUGGLED}");
    let bytes = format!(
        "GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\nPOST /$TAG/b HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{tail}",
        tail.len()
    );
    b.either(
        "pipeline-then-cl-te",
        bytes.as_bytes(),
        vec![vec![get("/a"), post("/b", b"")]],
    );
    let bytes = "GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\nGET /$TAG/b HTTP/1.1\r\nHost : h.test\r\n\r\nGET /$TAG/c HTTP/1.1\r\nHost: h.test\r\n\r\n";
    b.either(
        "pipeline-then-bad-field",
        bytes.as_bytes(),
        vec![vec![get("/a")]],
    );
    let bytes = "GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\n\r\nGET /$TAG/b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhelloGET /$TAG/c HTTP/1.1\r\nHost: h.test\r\n\r\n";
    b.either(
        "pipeline-then-differing-cl",
        bytes.as_bytes(),
        vec![vec![get("/a")]],
    );
    let bytes = "GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\nGET /$TAG/b HTTP/1.1\r\nHost: h.test\r\n\r\n";
    b.add(
        "after-connection-close",
        vec![Step::Send(bytes.as_bytes().to_vec())],
        Expect::RefusedOrForwarded,
        vec![vec![get("/a")]],
        true,
    );
    // A proxy must not drop a framing field because Connection names it, after
    // framing the request with it.
    for (name, fields, body) in [
        (
            "connection-names-cl",
            "Connection: Content-Length\r\nContent-Length: 5\r\n",
            "hello".to_owned(),
        ),
        (
            "connection-names-te",
            "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n".to_owned(),
        ),
    ] {
        let mut bytes = request("POST", fields, body.as_bytes());
        bytes.extend_from_slice(b"GET /$TAG/b HTTP/1.1\r\nHost: h.test\r\n\r\n");
        b.either(name, &bytes, vec![vec![post("/a", b"hello"), get("/b")]]);
    }
    b.either(
        "connection-names-host",
        b"GET /$TAG/a HTTP/1.1\r\nHost: h.test\r\nConnection: Host\r\n\r\n",
        vec![vec![get("/a")]],
    );
    // The same smuggling bytes sent a few at a time.
    let tail = format!("0\r\n\r\n{SMUGGLED}");
    let bytes = request(
        "POST",
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            tail.len()
        ),
        tail.as_bytes(),
    );
    // Tagged first: a piece boundary may fall inside the placeholder.
    let bytes = tagged(&bytes, &b.tag());
    let steps = bytes.chunks(7).map(|c| Step::Send(c.to_vec())).collect();
    b.add(
        "cl-te-in-pieces",
        steps,
        Expect::RefusedOrForwarded,
        vec![vec![post("/a", b"")]],
        true,
    );
    let steps = vec![
        Step::Send(request("POST", "Transfer-Encoding: chunked\r\n", b"")),
        Step::Send(b"5\r\nhel".to_vec()),
        Step::Send(b"lo\r\n0\r\n\r\nGET /$TAG/b HTTP/1.1\r\nHost: h.test\r\n\r\n".to_vec()),
    ];
    b.add(
        "chunked-in-pieces-then-get",
        steps,
        Expect::Forwarded,
        vec![vec![post("/a", b"hello"), get("/b")]],
        false,
    );
}

/// The upstream misbehaves (see [`super::recorder::REPLIES`]).
pub(super) fn upstream_misbehaviour(b: &mut Builder) {
    let one = |segment: &str| {
        format!("GET /$TAG/{segment} HTTP/1.1\r\nHost: h.test\r\n\r\n").into_bytes()
    };
    for segment in ["up-stray", "up-stray-late"] {
        let steps = vec![
            Step::Send(one(segment)),
            Step::Await(1),
            Step::Send(one("after")),
            Step::Await(2),
            Step::Send(one("after2")),
        ];
        b.add(
            segment,
            steps,
            Expect::Forwarded,
            vec![vec![
                get(&format!("/{segment}")),
                get("/after"),
                get("/after2"),
            ]],
            false,
        );
    }
    for segment in [
        "up-chunk-space",
        "up-chunk-ff",
        "up-chunk-cr",
        "up-chunk-overflow",
        "up-diff-cl",
        "up-big-head",
    ] {
        b.one(
            segment,
            &one(segment),
            Expect::BadGateway,
            vec![vec![get(&format!("/{segment}"))]],
        );
    }
    for segment in ["up-dup-cl", "up-cl-te", "up-100"] {
        b.one(
            segment,
            &one(segment),
            Expect::Normalised,
            vec![vec![get(&format!("/{segment}"))]],
        );
    }
}

/// Slow and stalled peers: each must be cut off within its timeout.
pub(super) fn stalls(b: &mut Builder) {
    let every = Duration::from_millis(100);
    let head = b"GET /$TAG/slow HTTP/1.1\r\nHost: h.test\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec();
    b.add(
        "slowloris",
        vec![Step::Drip(head.clone(), every)],
        Expect::ClosedWithin(Timeout::Idle),
        vec![vec![get("/slow")]],
        false,
    );
    // The same after a chunked request moved the connection to another server path.
    let steps = vec![
        Step::Send(request(
            "POST",
            "Transfer-Encoding: chunked\r\n",
            b"2\r\nhi\r\n0\r\n\r\n",
        )),
        Step::Await(1),
        Step::Drip(head, every),
    ];
    b.add(
        "slowloris-after-chunked",
        steps,
        Expect::ClosedWithin(Timeout::Idle),
        vec![vec![post("/a", b"hi"), get("/slow")]],
        false,
    );
    b.add(
        "stalled-head",
        vec![Step::Send(b"GET /$TAG/a HTTP/1.1\r\nHost: h.te".to_vec())],
        Expect::ClosedWithin(Timeout::Idle),
        vec![],
        false,
    );
    for (name, fields, sent) in [
        (
            "stalled-body-large",
            "Content-Length: 100000\r\n",
            &b"0123456789"[..],
        ),
        (
            "stalled-body-small",
            "Content-Length: 1000\r\n",
            &b"0123456789"[..],
        ),
        (
            "stalled-body-chunked",
            "Transfer-Encoding: chunked\r\n",
            &b"a\r\n0123456789\r\n"[..],
        ),
    ] {
        b.add(
            name,
            vec![Step::Send(request("POST", fields, sent))],
            Expect::ClosedWithin(Timeout::RequestBody),
            vec![],
            false,
        );
    }
    b.add(
        "stalled-upstream",
        vec![Step::Send(
            b"GET /$TAG/up-stall HTTP/1.1\r\nHost: h.test\r\n\r\n".to_vec(),
        )],
        Expect::GatewayTimeout(Timeout::ResponseIdle),
        vec![vec![get("/up-stall")]],
        false,
    );
    b.add(
        "stalled-upstream-post",
        vec![Step::Send(
            b"POST /$TAG/up-stall HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        )],
        Expect::GatewayTimeout(Timeout::ResponseIdle),
        vec![vec![post("/up-stall", b"hi")]],
        false,
    );
}
