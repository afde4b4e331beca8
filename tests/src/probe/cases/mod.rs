//! The case library. Bytes are written with `$TAG` where the case's tag goes
//! (`t042` for case 42, as long as the placeholder, so lengths computed before
//! tagging stay right), and every request target starts `/$TAG/`; the readings are
//! the requests a recipient may find in the bytes under RFC 9112 (where it lets a
//! recipient choose, each choice is a reading; where it says reject, none).

mod flow;
mod framing;
mod head;

use super::{Case, Expect, Req, Step};
use flow::{controls, pipelines, stalls, upstream_misbehaviour};
use framing::{both_framings, chunk_sizes, content_lengths, transfer_encodings};
use head::{hosts, lines_and_bytes, request_lines, sizes};

pub(super) const HOST: &str = "h.test";

pub(super) fn tagged(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(4).position(|w| w == b"$TAG") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(tag.as_bytes());
        rest = &rest[at + 4..];
    }
    out.extend_from_slice(rest);
    out
}

/// A request of a reading: `target` relative to the case's tag (`/a` is `/$TAG/a`).
pub(super) fn req(method: &str, target: &str, body: &[u8]) -> Req {
    Req {
        method: method.into(),
        target: format!("/$TAG{target}"),
        body: body.to_vec(),
        host: HOST.into(),
    }
}

pub(super) fn get(target: &str) -> Req {
    req("GET", target, b"")
}

pub(super) fn post(target: &str, body: &[u8]) -> Req {
    req("POST", target, body)
}

pub(super) struct Builder {
    cases: Vec<Case>,
}

impl Builder {
    /// The tag the next case gets.
    pub(super) fn tag(&self) -> String {
        format!("t{:03}", self.cases.len())
    }

    pub(super) fn add(
        &mut self,
        name: &str,
        steps: Vec<Step>,
        expect: Expect,
        readings: Vec<Vec<Req>>,
        must_close: bool,
    ) {
        let tag = self.tag();
        debug_assert_eq!(tag.len(), "$TAG".len());
        let steps = steps
            .into_iter()
            .map(|step| match step {
                Step::Send(b) => Step::Send(tagged(&b, &tag)),
                Step::Drip(b, every) => Step::Drip(tagged(&b, &tag), every),
                other => other,
            })
            .collect();
        let readings = readings
            .into_iter()
            .map(|reading| {
                reading
                    .into_iter()
                    .map(|r| Req {
                        target: r.target.replace("$TAG", &tag),
                        body: tagged(&r.body, &tag),
                        ..r
                    })
                    .collect()
            })
            .collect();
        self.cases.push(Case {
            name: name.into(),
            tag: self.cases.len() as u32,
            steps,
            readings,
            expect,
            must_close,
        });
    }

    /// One send; `readings` as given.
    pub(super) fn one(
        &mut self,
        name: &str,
        bytes: &[u8],
        expect: Expect,
        readings: Vec<Vec<Req>>,
    ) {
        self.add(
            name,
            vec![Step::Send(bytes.to_vec())],
            expect,
            readings,
            false,
        );
    }

    pub(super) fn forwarded(&mut self, name: &str, bytes: &[u8], reading: Vec<Req>) {
        self.one(name, bytes, Expect::Forwarded, vec![reading]);
    }

    pub(super) fn refused(&mut self, name: &str, bytes: &[u8]) {
        self.one(name, bytes, Expect::Refused, vec![]);
    }

    pub(super) fn either(&mut self, name: &str, bytes: &[u8], readings: Vec<Vec<Req>>) {
        self.one(name, bytes, Expect::RefusedOrForwarded, readings);
    }

    /// Both framing fields: Transfer-Encoding wins, and the connection closes.
    pub(super) fn both(&mut self, name: &str, bytes: &[u8], reading: Vec<Req>) {
        let steps = vec![Step::Send(bytes.to_vec())];
        self.add(name, steps, Expect::RefusedOrForwarded, vec![reading], true);
    }
}

/// `METHOD /$TAG/a HTTP/1.1` with Host and `fields`, then `body` as given.
pub(super) fn request(method: &str, fields: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("{method} /$TAG/a HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub(super) fn with_field(field: &[u8]) -> Vec<u8> {
    let mut bytes = format!("GET /$TAG/a HTTP/1.1\r\nHost: {HOST}\r\n").into_bytes();
    bytes.extend_from_slice(field);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes
}

pub(super) const SMUGGLED: &str = "GET /$TAG/smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n";

pub fn all() -> Vec<Case> {
    let mut b = Builder { cases: Vec::new() };
    controls(&mut b);
    both_framings(&mut b);
    transfer_encodings(&mut b);
    content_lengths(&mut b);
    chunk_sizes(&mut b);
    lines_and_bytes(&mut b);
    request_lines(&mut b);
    hosts(&mut b);
    sizes(&mut b);
    pipelines(&mut b);
    upstream_misbehaviour(&mut b);
    stalls(&mut b);
    b.cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_named_once_and_tags_every_target_it_sends() {
        let cases = all();
        assert!(cases.len() >= 100, "{} cases", cases.len());
        let mut names = std::collections::BTreeSet::new();
        for (index, case) in cases.iter().enumerate() {
            assert!(names.insert(case.name.clone()), "{} twice", case.name);
            assert_eq!(case.tag as usize, index, "{}", case.name);
            let tag = format!("/t{index:03}/");
            let bytes = case.bytes();
            assert!(
                super::super::client::find(&bytes, b"$TAG").is_none(),
                "{}",
                case.name
            );
            for reading in &case.readings {
                for req in reading {
                    assert!(
                        req.target.starts_with(&tag),
                        "{}: {}",
                        case.name,
                        req.target
                    );
                }
            }
        }
    }
}
