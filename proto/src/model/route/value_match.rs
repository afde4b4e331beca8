//! Conditions on a header's or a query parameter's value, shared by HTTPRoute and
//! GRPCRoute matches.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::common::{at_most, MAX_CONDITIONS};
use super::pattern::Pattern;
use crate::model::Invalid;
use crate::v1;

/// The Gateway API's limits on a match's value.
const MAX_HEADER_VALUE: usize = 4096;
const MAX_QUERY_VALUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatcher {
    Exact(String),
    RegularExpression(Pattern),
}

impl ValueMatcher {
    fn parse(kind: &str, value: &str, max: usize) -> Result<ValueMatcher, Invalid> {
        if value.is_empty() || value.len() > max {
            return Err(Invalid::new(
                "value",
                format!("must be 1 to {max} characters"),
            ));
        }
        match kind {
            "" | "Exact" => Ok(ValueMatcher::Exact(value.to_owned())),
            "RegularExpression" => {
                Pattern::new("value", value).map(ValueMatcher::RegularExpression)
            }
            other => Err(Invalid::new(
                "type",
                format!("{other:?} is not Exact or RegularExpression"),
            )),
        }
    }

    fn to_proto(&self, name: &str) -> v1::ValueMatch {
        let (kind, value) = match self {
            ValueMatcher::Exact(value) => ("Exact", value.as_str()),
            ValueMatcher::RegularExpression(pattern) => ("RegularExpression", pattern.as_str()),
        };
        v1::ValueMatch {
            r#type: kind.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(exact) => exact == value,
            ValueMatcher::RegularExpression(pattern) => pattern.matches(value),
        }
    }

    fn matches_header(&self, value: &HeaderValue) -> bool {
        match self {
            ValueMatcher::Exact(exact) => exact.as_bytes() == value.as_bytes(),
            ValueMatcher::RegularExpression(pattern) => pattern.matches_bytes(value.as_bytes()),
        }
    }
}

/// A header condition: the header is present and one of its values matches (a
/// repeated header is not joined, which would allocate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatcher,
}

impl HeaderMatch {
    pub fn from_proto(msg: &v1::ValueMatch) -> Result<HeaderMatch, Invalid> {
        let name = HeaderName::from_bytes(msg.name.as_bytes()).map_err(|_| {
            Invalid::new("name", format!("{:?} is not an HTTP header name", msg.name))
        })?;
        let value = ValueMatcher::parse(&msg.r#type, &msg.value, MAX_HEADER_VALUE)?;
        if let ValueMatcher::Exact(exact) = &value {
            // A value no request can carry would make a match that never matches.
            HeaderValue::from_str(exact).map_err(|_| {
                Invalid::new("value", format!("{exact:?} is not an HTTP header value"))
            })?;
        }
        Ok(HeaderMatch { name, value })
    }

    pub fn to_proto(&self) -> v1::ValueMatch {
        self.value.to_proto(self.name.as_str())
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|value| self.value.matches_header(value))
    }
}

/// A match's header conditions: at most 16, each header once.
pub fn header_matches(list: &[v1::ValueMatch]) -> Result<Vec<HeaderMatch>, Invalid> {
    at_most("headers", list.len(), MAX_CONDITIONS)?;
    let mut headers: Vec<HeaderMatch> = Vec::with_capacity(list.len());
    for (i, header) in list.iter().enumerate() {
        let field = format!("headers[{i}]");
        let header = HeaderMatch::from_proto(header).map_err(|e| e.within(&field))?;
        if headers.iter().any(|h| h.name == header.name) {
            return Err(Invalid::new(
                format!("{field}.name"),
                format!("header {} is matched twice", header.name),
            ));
        }
        headers.push(header);
    }
    Ok(headers)
}

/// A query parameter condition on the first occurrence of the parameter (as the
/// Gateway API recommends), its value percent-decoded (`+` as a space, as forms
/// send it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatcher,
}

impl QueryMatch {
    pub fn from_proto(msg: &v1::ValueMatch) -> Result<QueryMatch, Invalid> {
        let valid_name = !msg.name.is_empty()
            && msg.name.len() <= 256
            && msg
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(Invalid::new(
                "name",
                format!(
                    "{:?} is not a query parameter name (1-256 of A-Z a-z 0-9 !#$%&'*+-.^_`|~)",
                    msg.name
                ),
            ));
        }
        let value = ValueMatcher::parse(&msg.r#type, &msg.value, MAX_QUERY_VALUE)?;
        Ok(QueryMatch {
            name: msg.name.clone(),
            value,
        })
    }

    pub fn to_proto(&self) -> v1::ValueMatch {
        self.value.to_proto(&self.name)
    }

    /// `query` is the request target's part after `?`, still encoded.
    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(raw) = query.and_then(|q| first_value(q, &self.name)) else {
            return false;
        };
        if !raw.bytes().any(|b| b == b'%' || b == b'+') {
            return self.value.matches(raw);
        }
        // Only an encoded value costs a decoded copy.
        self.value.matches(&percent_decode(raw))
    }
}

/// The raw value of the first `name=value` pair named `name` (a bare `name` has the
/// empty value).
fn first_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                // A stray '%' stands for itself.
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(kind: &str, value: &str) -> QueryMatch {
        QueryMatch::from_proto(&v1::ValueMatch {
            r#type: kind.into(),
            name: "q".into(),
            value: value.into(),
        })
        .expect("valid")
    }

    #[test]
    fn query_params_match_the_first_occurrence_decoded() {
        let exact = query("Exact", "a b");
        assert!(exact.matches(Some("x=1&q=a%20b&q=c")));
        assert!(exact.matches(Some("q=a+b")));
        assert!(!exact.matches(Some("q=c&q=a%20b")), "only the first counts");
        assert!(!exact.matches(Some("qq=a%20b")) && !exact.matches(None));
        let regex = query("RegularExpression", "v[0-9]+");
        assert!(regex.matches(Some("q=v12")) && !regex.matches(Some("q=v12x")));
        assert_eq!(percent_decode("100%25%2"), "100%%2");
    }

    #[test]
    fn headers_match_any_of_their_values() {
        let header = HeaderMatch::from_proto(&v1::ValueMatch {
            r#type: String::new(),
            name: "X-Version".into(),
            value: "v2".into(),
        })
        .expect("valid");
        assert_eq!(header.name.as_str(), "x-version");
        let mut headers = HeaderMap::new();
        headers.append("x-version", HeaderValue::from_static("v1"));
        assert!(!header.matches(&headers));
        headers.append("x-version", HeaderValue::from_static("v2"));
        assert!(header.matches(&headers));
    }

    #[test]
    fn bad_names_values_and_types_name_their_field() {
        let bad = |kind: &str, name: &str, value: &str| {
            HeaderMatch::from_proto(&v1::ValueMatch {
                r#type: kind.into(),
                name: name.into(),
                value: value.into(),
            })
            .expect_err("invalid")
            .field
        };
        assert_eq!(bad("", ":path", "x"), "name");
        assert_eq!(bad("", "x", ""), "value");
        assert_eq!(bad("", "x", "a\nb"), "value");
        assert_eq!(bad("Prefix", "x", "a"), "type");
        assert_eq!(bad("RegularExpression", "x", "(a"), "value");
    }
}
