//! Gateway API durations (GEP-2257): one to four `<number><unit>` pairs, each number
//! of 1-5 digits and each unit `h`, `m`, `s` or `ms`, summed (`1m30s`, `500ms`).
//! Printed in the GEP's canonical form: each unit at most once, largest first, zero
//! parts left out, and `0s` for zero.

use std::time::Duration;

use crate::model::Invalid;

/// The largest duration whose canonical form still parses: its hours fit in five
/// digits.
const MAX: Duration = Duration::from_secs(100_000 * 3600 - 1);

/// Parses a Gateway API duration; `field` names it in the error.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, Invalid> {
    let invalid = |why: &str| {
        Invalid::new(
            field,
            format!("{text:?} is not a Gateway API duration ({why}; e.g. 10s, 1m30s, 500ms)"),
        )
    };
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    let mut rest = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut pairs = 0;
    while !rest.is_empty() {
        pairs += 1;
        if pairs > 4 {
            return Err(invalid("more than four parts"));
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 5 {
            return Err(invalid("each part is a number of 1 to 5 digits and a unit"));
        }
        let number: u64 = rest[..digits]
            .iter()
            .fold(0, |n, d| n * 10 + u64::from(d - b'0'));
        rest = &rest[digits..];
        let (unit, length) = match rest {
            [b'm', b's', ..] => (Duration::from_millis(1), 2),
            [b'h', ..] => (Duration::from_secs(3600), 1),
            [b'm', ..] => (Duration::from_secs(60), 1),
            [b's', ..] => (Duration::from_secs(1), 1),
            _ => return Err(invalid("units are h, m, s and ms")),
        };
        rest = &rest[length..];
        // At most 4 * 99999 h: no overflow.
        total += unit * u32::try_from(number).unwrap_or(u32::MAX);
    }
    if total > MAX {
        return Err(invalid("longer than 99999h"));
    }
    Ok(total)
}

/// The canonical form of a duration [`parse_duration`] accepted.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (millis / 3_600_000, "h"),
        (millis / 60_000 % 60, "m"),
        (millis / 1000 % 60, "s"),
        (millis % 1000, "ms"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_gep_examples_parse() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("0s", ms(0)),
            ("0h0m0s", ms(0)),
            ("10s", ms(10_000)),
            ("500ms", ms(500)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("90s", ms(90_000)),
            ("99999ms", ms(99_999)),
        ] {
            assert_eq!(parse_duration("d", text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_durations_name_the_field() {
        for text in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "100000s",
            "1h1h1h1h1h",
            " 1s",
            "1S",
            "1us",
        ] {
            let error = parse_duration("spec.rules[0].timeouts.request", text).expect_err(text);
            assert_eq!(error.field, "spec.rules[0].timeouts.request", "{text}");
        }
    }

    #[test]
    fn the_canonical_form_puts_each_unit_once_largest_first() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(90_000)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(3_600_500)), "1h500ms");
    }

    proptest! {
        #[test]
        fn the_canonical_form_parses_back_to_the_same_duration(
            parts in proptest::collection::vec((0u32..100_000, 0usize..4), 1..=4)
        ) {
            let text: String = parts
                .iter()
                .map(|(n, unit)| format!("{n}{}", ["h", "m", "s", "ms"][*unit]))
                .collect();
            // Four parts of 99999h exceed the longest duration; that is refused.
            let parsed = parse_duration("d", &text);
            prop_assume!(parsed.is_ok());
            let parsed = parsed.expect("assumed");
            let canonical = format_duration(parsed);
            prop_assert_eq!(parse_duration("d", &canonical), Ok(parsed));
        }
    }
}
