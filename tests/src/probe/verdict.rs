//! The verdict on one case: what the recorder got for it and what its client saw,
//! held against the case's readings and [`Expect`], and the rules every case keeps.

use super::client::{self, Seen};
use super::recorder::{Connection, Recorder, OK_BODY, STRAY_BODY};
use super::{strict, tags, Case, Expect, Outcome, Req, Timeouts};

/// What a case's run left to judge.
pub(super) struct Observed {
    pub seen: Seen,
    pub live: bool,
    pub upstream_open: usize,
}

/// The requests the recorder got for case `tag`, and the problems it saw.
fn recorded(tag: u32, connections: &[Connection]) -> (Vec<&strict::Request>, Vec<String>) {
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for connection in connections {
        for request in &connection.requests {
            if tags(request.target.as_bytes()).contains(&tag) {
                requests.push(request);
            }
        }
        if let Some((why, bytes)) = &connection.invalid {
            if tags(bytes).contains(&tag) {
                problems.push(format!(
                    "upstream got what a strict server refuses ({why}): {}",
                    escape(&bytes[..bytes.len().min(300)])
                ));
            }
        }
        if connection.reused_after == Some(tag) {
            problems.push("the upstream connection was used again after a response that should have retired it".into());
        }
    }
    (requests, problems)
}

/// Requests and connection problems the recorder cannot pin on any case.
pub fn unattributed(recorder: &Recorder) -> Vec<String> {
    let mut problems = Vec::new();
    for connection in recorder.connections() {
        for request in &connection.requests {
            if tags(request.target.as_bytes()).is_empty() {
                problems.push(format!(
                    "untagged request {} {}",
                    request.method, request.target
                ));
            }
        }
        if let Some((why, bytes)) = &connection.invalid {
            if tags(bytes).is_empty() {
                problems.push(format!(
                    "untagged invalid bytes ({why}): {}",
                    escape(&bytes[..bytes.len().min(300)])
                ));
            }
        }
        if connection.reused_after == Some(u32::MAX) {
            problems.push("a connection was reused after an untagged bad response".into());
        }
    }
    problems
}

fn matches(request: &strict::Request, req: &Req) -> bool {
    let host = request.values("host");
    request.method == req.method
        && origin_form(&request.target) == req.target
        && request.body == req.body
        && host.first().is_some_and(|h| *h == req.host.as_bytes())
}

fn origin_form(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => target,
    }
}

/// Whether `requests` can all be found, each once, in `reading`.
fn within(requests: &[&strict::Request], reading: &[Req]) -> bool {
    let mut used = vec![false; reading.len()];
    requests.iter().all(|request| {
        let found = reading
            .iter()
            .enumerate()
            .position(|(i, req)| !used[i] && matches(request, req));
        found.map(|i| used[i] = true).is_some()
    })
}

pub(super) fn judge(
    case: &Case,
    observed: Observed,
    connections: &[Connection],
    timeouts: &Timeouts,
) -> Outcome {
    let (requests, mut problems) = recorded(case.tag, connections);
    let seen = observed.seen;
    let forwarded = requests.len();
    if !requests.is_empty() && !case.readings.iter().any(|r| within(&requests, r)) {
        problems.push(format!(
            "forwarded what the client did not send as one request: {}",
            describe(&requests)
        ));
    }
    if client::find(&seen.raw, STRAY_BODY).is_some() {
        problems.push("a stray upstream response reached the client".into());
    }
    if seen.responses.len() > case.most_requests() + 1 {
        problems.push(format!(
            "{} responses to at most {} requests",
            seen.responses.len(),
            case.most_requests()
        ));
    }
    if !observed.live {
        problems.push("the proxy did not answer /live after this case".into());
    }
    let ok = |r: &client::Response| (200..300).contains(&r.status);
    let answered = seen.responses.iter().filter(|r| ok(r)).count();
    // A client's malformed request is the client's error: never a 2xx, and
    // never a 5xx that blames the upstream either.
    let refusal = |seen: &Seen| {
        seen.responses.iter().all(|r| is_refusal(r.status))
            && (seen.closed || !seen.responses.is_empty())
    };
    match case.expect {
        Expect::Forwarded => {
            let want = case.readings.first().map_or(0, Vec::len);
            if forwarded != want || answered != want {
                problems.push(format!("want {want} forwarded and answered, got {forwarded} forwarded, {answered} answered"));
            }
            if seen.responses.iter().any(|r| ok(r) && r.body != OK_BODY) {
                problems.push("a 2xx with another body than the upstream's".into());
            }
        }
        Expect::Refused => {
            if forwarded > 0 || !refusal(&seen) {
                problems.push("not refused".into());
            }
        }
        Expect::RefusedWith(status) => {
            if forwarded > 0 || seen.responses.first().map(|r| r.status) != Some(status) {
                problems.push(format!("not refused with {status}"));
            }
        }
        Expect::RefusedOrForwarded => {
            if answered != forwarded {
                problems.push(format!("{answered} 2xx for {forwarded} forwarded"));
            }
            // A 502 after the recorder refused what it got is that problem again.
            let blamed = seen
                .responses
                .iter()
                .find(|r| !ok(r) && !is_refusal(r.status));
            if let (Some(response), true) = (blamed, problems.is_empty()) {
                problems.push(format!(
                    "refused with {}, which blames the upstream for the client's request",
                    response.status
                ));
            }
        }
        Expect::BadGateway => {
            if answered > 0 || !(seen.closed || seen.responses.iter().any(|r| r.status >= 500)) {
                problems.push("a broken upstream response was passed on".into());
            }
        }
        Expect::Normalised => {
            let fine = seen.responses.iter().all(|r| {
                r.status == 502
                    || (r.status == 200
                        && r.body == OK_BODY
                        && r.content_lengths <= 1
                        && !(r.chunked && r.content_lengths > 0))
            });
            if seen.responses.is_empty() || !fine {
                problems.push("the odd upstream response was not normalised".into());
            }
        }
        Expect::ClosedWithin(timeout) | Expect::GatewayTimeout(timeout) => {
            let limit = timeouts.of(timeout);
            let gave_up = seen.closed_after.is_some_and(|after| after <= limit)
                || (matches!(case.expect, Expect::GatewayTimeout(_))
                    && seen.responses.iter().any(|r| r.status >= 500));
            if !gave_up {
                problems.push(format!(
                    "the client connection was still open {limit:?} into the stall"
                ));
            }
            if observed.upstream_open > 0 {
                problems.push(format!(
                    "{} upstream connection(s) still held the stalled request",
                    observed.upstream_open
                ));
            }
        }
    }
    if case.must_close && !seen.closed && answered > 0 {
        problems.push("the connection stayed open after a response that must close it".into());
    }
    Outcome {
        seen,
        forwarded,
        problems,
    }
}

fn describe(requests: &[&strict::Request]) -> String {
    let one = |r: &&strict::Request| {
        let hosts: Vec<_> = r
            .values("host")
            .iter()
            .map(|h| String::from_utf8_lossy(h))
            .collect();
        let body = escape(&r.body[..r.body.len().min(80)]);
        format!("{} {} host={hosts:?} body={body}", r.method, r.target)
    };
    requests.iter().map(one).collect::<Vec<_>>().join("; ")
}

fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) || status == 501 || status == 505
}

/// Bytes as a Rust-like string literal, for reports.
pub fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

/// One line per case: name, what the client saw, requests forwarded, verdict.
pub fn summary(outcome: &Outcome) -> (String, String) {
    let mut saw: Vec<String> = outcome
        .seen
        .responses
        .iter()
        .map(|r| r.status.to_string())
        .collect();
    if outcome.seen.garbage {
        saw.push("partial".into());
    }
    saw.push(if outcome.seen.closed { "close" } else { "open" }.into());
    let verdict = if outcome.problems.is_empty() {
        "ok".to_owned()
    } else {
        format!("FAIL: {}", outcome.problems.join("; "))
    };
    (
        format!("{} fwd={}", saw.join(" "), outcome.forwarded),
        verdict,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(method: &str, target: &str, host: &str, body: &[u8]) -> strict::Request {
        strict::Request {
            method: method.into(),
            target: target.into(),
            fields: vec![("host".into(), host.as_bytes().to_vec())],
            body: body.to_vec(),
        }
    }

    fn sent(method: &str, target: &str, body: &[u8]) -> Req {
        Req {
            method: method.into(),
            target: target.into(),
            body: body.to_vec(),
            host: "h.test".into(),
        }
    }

    #[test]
    fn a_reading_takes_each_request_once_and_absolute_form_by_its_path() {
        let reading = [sent("GET", "/t001/a", b""), sent("POST", "/t001/b", b"hi")];
        let get = forwarded("GET", "http://h.test/t001/a", "h.test", b"");
        let post = forwarded("POST", "/t001/b", "h.test", b"hi");
        assert!(within(&[&post, &get], &reading));
        assert!(
            !within(&[&get, &get], &reading),
            "one GET sent, two forwarded"
        );
        let other_body = forwarded("POST", "/t001/b", "h.test", b"h");
        assert!(!within(&[&other_body], &reading));
        let other_host = forwarded("GET", "/t001/a", "other.test", b"");
        assert!(!within(&[&other_host], &reading));
    }

    #[test]
    fn tags_are_found_anywhere_in_bytes() {
        let found = tags(b"GET /t007/a HTTP/1.1\r\n\r\nPOST http://h/t012/b");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), [7, 12]);
        assert!(tags(b"/t12/ /tabc/ t123/").is_empty());
    }
}
