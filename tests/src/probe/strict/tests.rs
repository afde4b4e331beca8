use super::*;

fn complete(bytes: &[u8]) -> (Request, usize) {
    match parse(bytes) {
        Parsed::Complete(request, used) => (request, used),
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn invalid(bytes: &[u8]) -> String {
    match parse(bytes) {
        Parsed::Invalid(why) => why,
        other => panic!("accepted {:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn reads_a_length_and_a_chunked_request_back_to_back() {
    let wire = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
GET /b HTTP/1.1\r\nhost: h\r\ntransfer-encoding: Chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: v\r\n\r\n";
    let (first, used) = complete(wire);
    assert_eq!(
        (first.method.as_str(), first.target.as_str()),
        ("POST", "/a")
    );
    assert_eq!(first.body, b"abc");
    let (second, rest) = complete(&wire[used..]);
    assert_eq!(second.body, b"hi");
    assert_eq!(used + rest, wire.len());
}

#[test]
fn every_prefix_of_a_valid_request_is_incomplete() {
    let wire =
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for end in 0..wire.len() {
        assert_eq!(parse(&wire[..end]), Parsed::Incomplete, "prefix {end}");
    }
    complete(wire);
}

#[test]
fn refuses_what_a_lenient_server_might_read_differently() {
    let head = |fields: &str| format!("GET /a HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
    for fields in [
        "Content-Length: 1\r\nContent-Length: 1\r\n",
        "Content-Length: +1\r\n",
        "Content-Length: 0x1\r\n",
        "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Host: other\r\n",
        "X: a\r\n b\r\n",
        "X : a\r\n",
        "X: a\0b\r\n",
    ] {
        invalid(head(fields).as_bytes());
    }
    invalid(b"GET /a HTTP/1.1\nHost: h\n\n");
    invalid(b"GET /a HTTP/1.1\r\nHost: h\rX: y\r\n\r\n");
    invalid(b"GET  /a HTTP/1.1\r\nHost: h\r\n\r\n");
    invalid(b"GET /a HTTP/1.2\r\nHost: h\r\n\r\n");
    invalid(b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    invalid(b"GET /a HTTP/1.1\r\n\r\n");
}

#[test]
fn refuses_lenient_chunk_sizes() {
    for size in [
        " 3",
        "3 ",
        "\x0c3",
        "-3",
        "+3",
        "0x3",
        "fffffffffffffffff3",
        "3 ;x",
    ] {
        let wire = format!(
            "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        );
        invalid(wire.as_bytes());
    }
    invalid(
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    );
}
