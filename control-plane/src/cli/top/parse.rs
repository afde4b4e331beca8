//! A small reader of the Prometheus text exposition format (version 0.0.4), enough
//! for what `weftctl top` scrapes from a proxy's `/metrics`: samples with their
//! labels and values. Comments (`# HELP`, `# TYPE`) and timestamps are skipped.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written; names are unique within a sample.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, `""` when absent (as PromQL treats it).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Why a line could not be read; the line number counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Every sample of an exposition, or the first line that is not one.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("a sample needs a value")?;
    let value = parse_value(value)?;
    // An optional timestamp (milliseconds); nothing may follow it.
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{timestamp:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

/// Reads `name="value",...}` (the opening brace already consumed); returns the
/// labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("a label needs =\"value\"")?;
        let name = text[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let after = text[eq + 1..].trim_start();
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label {name:?} is not quoted"))?;
        let (value, rest) = unescape(quoted)
            .ok_or_else(|| format!("the value of label {name:?} is not terminated"))?;
        if labels.iter().any(|(k, _): &(String, String)| k == name) {
            return Err(format!("label {name:?} appears twice"));
        }
        labels.push((name.to_owned(), value));
        text = rest.trim_start();
        if let Some(rest) = text.strip_prefix(',') {
            text = rest;
        } else if !text.starts_with('}') {
            return Err("labels must be separated by ,".to_owned());
        }
    }
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n` unescaped;
/// returns it and the text after the quote, `None` if the quote never comes.
fn unescape(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                // `\\`, `\"`; any other escaped character stands for itself.
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Floats as Go's `strconv.ParseFloat` writes them, plus `+Inf`, `-Inf`, `NaN`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("{text:?} is not a number")),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_special_values() {
        let text = r#"# HELP weft_requests_total HTTP requests received.
# TYPE weft_requests_total counter
weft_requests_total{direction="inbound",service="shop/orders",tls="true",route=""} 42
weft_request_duration_seconds_bucket{le="+Inf",service="a"} 7 1700000000000
weft_build_info{version="0.1.0"} 1
weft_up 1e3
weft_odd{path="a\"b\\c\nd", x = "y" ,} NaN
weft_neg -Inf
"#;
        let samples = parse(text).expect("parses");
        assert_eq!(samples.len(), 6);
        assert_eq!(samples[0].name, "weft_requests_total");
        assert_eq!(samples[0].label("service"), "shop/orders");
        assert_eq!(samples[0].label("tls"), "true");
        assert_eq!(samples[0].label("missing"), "");
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1].label("le"), "+Inf");
        assert_eq!(samples[1].value, 7.0);
        assert_eq!(samples[3].value, 1000.0);
        assert_eq!(samples[4].label("path"), "a\"b\\c\nd");
        assert_eq!(samples[4].label("x"), "y");
        assert!(samples[4].value.is_nan());
        assert_eq!(samples[5].value, f64::NEG_INFINITY);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it_not_a_panic() {
        for (text, reason) in [
            ("ok 1\nweft_x{a=\"b\" 1", "separated"),
            ("ok 1\nweft_x{a=\"b} 1", "not terminated"),
            ("ok 1\nweft_x{a=b} 1", "not quoted"),
            ("ok 1\nweft_x", "needs a value"),
            ("ok 1\nweft_x{} one", "not a number"),
            ("ok 1\n9x 1", "metric name"),
            ("ok 1\nweft_x{a=\"1\",a=\"2\"} 1", "twice"),
            ("ok 1\nweft_x 1 2 3", "after the timestamp"),
            ("ok 1\nweft_x{a=\"\\", "not terminated"),
        ] {
            let error = parse(text).expect_err(text);
            assert_eq!(error.line, 2, "{text}");
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
    }
}
