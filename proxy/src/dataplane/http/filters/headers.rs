//! RequestHeaderModifier and ResponseHeaderModifier: the Gateway API's `set`, `add`
//! and `remove`, on the request before it is forwarded or on the response the
//! client gets.
//!
//! Validation lets each name appear once across the three lists and keeps the
//! headers that frame a message away from them, so the order of the three does
//! not matter and no modification can change how the next hop reads the body.

use http::HeaderMap;
use weft_proto::model::route::HeaderModifier;

/// `set` replaces every value of its header, `add` appends to the values there
/// are, `remove` removes them all.
///
/// An added value is a field line of its own rather than joined to the existing
/// one with a comma: RFC 9110 section 5.3 makes the two equivalent, except for
/// `Set-Cookie`, which a response modifier may add and which must never be joined.
pub(super) fn modify(headers: &mut HeaderMap, modifier: &HeaderModifier) {
    for (name, value) in &modifier.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &modifier.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &modifier.remove {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn pair(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    }

    #[test]
    fn set_replaces_add_appends_and_remove_removes_every_value() {
        let mut headers = HeaderMap::new();
        headers.append("x-set", HeaderValue::from_static("old-1"));
        headers.append("x-set", HeaderValue::from_static("old-2"));
        headers.insert("x-add", HeaderValue::from_static("there"));
        headers.append("x-gone", HeaderValue::from_static("1"));
        headers.append("x-gone", HeaderValue::from_static("2"));
        headers.insert("x-kept", HeaderValue::from_static("kept"));
        let modifier = HeaderModifier {
            set: vec![pair("x-set", "new"), pair("x-new", "fresh")],
            add: vec![pair("x-add", "more"), pair("x-added", "only")],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        modify(&mut headers, &modifier);
        assert_eq!(values(&headers, "x-set"), ["new"]);
        assert_eq!(values(&headers, "x-new"), ["fresh"]);
        assert_eq!(values(&headers, "x-add"), ["there", "more"]);
        assert_eq!(values(&headers, "x-added"), ["only"]);
        assert!(values(&headers, "x-gone").is_empty());
        assert_eq!(values(&headers, "x-kept"), ["kept"]);
    }

    #[test]
    fn added_cookies_stay_separate_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("set-cookie", HeaderValue::from_static("a=1; Path=/"));
        let modifier = HeaderModifier {
            add: vec![pair("set-cookie", "b=2; Path=/")],
            ..HeaderModifier::default()
        };
        modify(&mut headers, &modifier);
        assert_eq!(
            values(&headers, "set-cookie"),
            ["a=1; Path=/", "b=2; Path=/"]
        );
    }

    #[test]
    fn removing_or_setting_an_absent_header_is_harmless() {
        let mut headers = HeaderMap::new();
        let modifier = HeaderModifier {
            set: vec![pair("x-set", "v")],
            remove: vec![HeaderName::from_static("x-absent")],
            ..HeaderModifier::default()
        };
        modify(&mut headers, &modifier);
        assert_eq!(headers.len(), 1);
        assert_eq!(values(&headers, "x-set"), ["v"]);
    }
}
