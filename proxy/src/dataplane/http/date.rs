//! The `Date` header the HTTP/2 server adds to a response that has none (RFC 9110
//! section 6.6.1: a recipient with a clock that forwards a response without one
//! adds it), as hyper's servers do. The text changes once a second, so each
//! worker thread keeps the last one made.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    /// The second the value was made for, and the value.
    static LAST: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// The current time as a `Date` header value.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((made, value)) if *made == second => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                *last = Some((second, value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_an_imf_fixdate() {
        let value = super::now();
        let text = value.to_str().expect("ascii");
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
