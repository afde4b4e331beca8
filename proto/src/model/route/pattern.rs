//! Regular expressions of route matches, compiled once when a route is validated.
//!
//! The `regex` crate runs in time linear in the input whatever the pattern (no
//! backtracking), so a request cannot make a route's pattern slow; its syntax is
//! RE2's, which the Gateway API lists among the dialects an implementation may pick.
//! A pattern must match the whole value (path, header or query value, gRPC service
//! or method), as Envoy's `safe_regex` does, so `/api/.*` means what it reads as.

use std::fmt;

use crate::model::Invalid;

/// A compiled pattern's upper bound on memory: a route's pattern is at most 1024
/// characters, but repetitions (`(a{1000}){1000}`) can still compile to a huge
/// program; such a pattern is refused with its field named.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled pattern, compared by its source text.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    text: regex::Regex,
    bytes: regex::bytes::Regex,
}

impl Pattern {
    /// Compiles `source`, anchored at both ends; `field` names it in the error.
    pub fn new(field: &str, source: &str) -> Result<Pattern, Invalid> {
        let anchored = format!("^(?:{source})$");
        let invalid = |e: regex::Error| {
            let reason = match e {
                regex::Error::CompiledTooBig(_) => "compiles to too large a program".to_owned(),
                other => other.to_string(),
            };
            Invalid::new(
                field,
                format!("{source:?} is not a regular expression (RE2 syntax): {reason}"),
            )
        };
        let text = regex::RegexBuilder::new(&anchored)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(invalid)?;
        let bytes = regex::bytes::RegexBuilder::new(&anchored)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(invalid)?;
        Ok(Pattern {
            source: source.to_owned(),
            text,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, value: &str) -> bool {
        self.text.is_match(value)
    }

    /// For header values, which need not be UTF-8.
    pub fn matches_bytes(&self, value: &[u8]) -> bool {
        self.bytes.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_pattern_matches_whole_values_only() {
        let pattern = Pattern::new("value", "/api/v[0-9]+").expect("valid");
        assert!(pattern.matches("/api/v2"));
        assert!(!pattern.matches("/api/v2/users"));
        assert!(!pattern.matches("x/api/v2"));
        // An alternation stays inside the anchors.
        let either = Pattern::new("value", "a|b").expect("valid");
        assert!(either.matches("a") && either.matches("b") && !either.matches("ab"));
        assert!(either.matches_bytes(b"b") && !either.matches_bytes(b"\xffb"));
    }

    #[test]
    fn a_bad_or_huge_pattern_names_its_field() {
        let error = Pattern::new("spec.rules[0].matches[0].path.value", "/a(").expect_err("bad");
        assert_eq!(error.field, "spec.rules[0].matches[0].path.value");
        let error = Pattern::new("f", "(a{1000}){1000}").expect_err("huge");
        assert!(error.reason.contains("too large"), "{error}");
    }

    #[test]
    fn a_pattern_catastrophic_for_backtracking_runs_in_linear_time() {
        // (a+)+$ against a run of a's and one b takes exponential time in a
        // backtracking engine; here it is one pass.
        let pattern = Pattern::new("f", "(a+)+").expect("valid");
        let input = format!("{}b", "a".repeat(100_000));
        let start = Instant::now();
        assert!(!pattern.matches(&input));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
