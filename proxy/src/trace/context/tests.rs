use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

#[test]
fn a_valid_traceparent_names_trace_parent_and_decision() {
    let incoming = read(&headers(&[("traceparent", VALID)])).expect("valid");
    assert_eq!(incoming.format, Format::W3c);
    assert_eq!(incoming.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(incoming.span_id, 0x00f067aa0ba902b7);
    assert_eq!(incoming.sampled, Some(true));
    let unsampled = VALID.replace("-01", "-00");
    assert_eq!(
        traceparent(unsampled.as_bytes()).map(|i| i.sampled),
        Some(Some(false))
    );
    // Only bit 0 is the sampled flag.
    let other_flags = VALID.replace("-01", "-02");
    assert_eq!(
        traceparent(other_flags.as_bytes()).map(|i| i.sampled),
        Some(Some(false))
    );
}

#[test]
fn invalid_traceparents_are_ignored_as_the_specification_says() {
    let bad = [
        // upper-case hex
        VALID.to_uppercase(),
        // all-zero trace id, all-zero parent id
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(),
        // version ff is forbidden; version 00 must be exactly 55 characters
        VALID.replacen("00", "ff", 1),
        format!("{VALID}-extra"),
        // too short, wrong separators, not hex
        VALID[..54].to_owned(),
        VALID.replace('-', "_"),
        VALID.replacen('4', "g", 1),
        String::new(),
    ];
    for value in bad {
        assert_eq!(traceparent(value.as_bytes()), None, "{value:?}");
    }
    // Two traceparents are as good as none, and B3 is not consulted then.
    let two = headers(&[
        ("traceparent", VALID),
        ("traceparent", VALID),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]);
    assert_eq!(read(&two), None);
}

#[test]
fn a_later_version_may_carry_more_fields() {
    let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
    assert!(traceparent(future.as_bytes()).is_some());
    let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
    assert_eq!(traceparent(glued.as_bytes()), None);
}

#[test]
fn traceparent_wins_over_b3() {
    let both = headers(&[
        ("traceparent", VALID),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]);
    assert_eq!(read(&both).map(|i| i.format), Some(Format::W3c));
}

#[test]
fn b3_single_in_its_forms() {
    let full = read(&headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )]))
    .expect("valid");
    assert_eq!(full.format, Format::B3Single);
    assert_eq!(full.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert_eq!(full.span_id, 0xe457b5a2e4d86bd1);
    assert_eq!(full.sampled, Some(true));
    let short = read(&headers(&[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1")])).expect("valid");
    assert!(short.short_trace_id);
    assert_eq!(short.sampled, None);
    let deny = read(&headers(&[("b3", "0")])).expect("a decision");
    assert_eq!((deny.sampled, deny.has_ids()), (Some(false), false));
    let debug = read(&headers(&[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-d")])).expect("valid");
    assert_eq!(debug.sampled, Some(true));
    for bad in [
        "a3ce-e457b5a2e4d86bd1-1",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1-x",
        "junk",
    ] {
        assert_eq!(read(&headers(&[("b3", bad)])), None, "{bad}");
    }
}

#[test]
fn b3_multi_in_its_forms() {
    let full = read(&headers(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]))
    .expect("valid");
    assert_eq!(full.format, Format::B3Multi);
    assert_eq!(full.sampled, Some(true));
    let debug = read(&headers(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-flags", "1"),
    ]))
    .expect("valid");
    assert_eq!(debug.sampled, Some(true));
    let decision = read(&headers(&[("x-b3-sampled", "0")])).expect("a decision");
    assert_eq!((decision.sampled, decision.has_ids()), (Some(false), false));
    assert_eq!(read(&headers(&[("x-b3-spanid", "e457b5a2e4d86bd1")])), None);
    assert_eq!(read(&HeaderMap::new()), None);
}

#[test]
fn each_format_is_written_back_in_kind() {
    let out = Outgoing {
        format: Format::W3c,
        trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
        short_trace_id: false,
        span_id: 0x1122334455667788,
        parent_id: 0x00f067aa0ba902b7,
        sampled: true,
    };
    let mut map = headers(&[("traceparent", VALID), ("tracestate", "vendor=1")]);
    write(&mut map, &out, false);
    assert_eq!(
        map[TRACEPARENT],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-1122334455667788-01"
    );
    assert_eq!(map[TRACESTATE], "vendor=1");
    // What is written reads back as the same context.
    let again = read(&map).expect("valid");
    assert_eq!((again.trace_id, again.span_id), (out.trace_id, out.span_id));
    write(&mut map, &out, true);
    assert!(map.get(TRACESTATE).is_none());

    let mut map = HeaderMap::new();
    let single = Outgoing {
        format: Format::B3Single,
        short_trace_id: true,
        trace_id: 0xa3ce929d0e0e4736,
        ..out
    };
    write(&mut map, &single, false);
    assert_eq!(
        map[B3],
        "a3ce929d0e0e4736-1122334455667788-1-00f067aa0ba902b7"
    );
    let root = Outgoing {
        parent_id: 0,
        sampled: false,
        ..single
    };
    write(&mut map, &root, false);
    assert_eq!(map[B3], "a3ce929d0e0e4736-1122334455667788-0");

    let mut map = headers(&[("x-b3-parentspanid", "0000000000000001")]);
    write(
        &mut map,
        &Outgoing {
            format: Format::B3Multi,
            ..out
        },
        false,
    );
    assert_eq!(map[B3_TRACE_ID], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(map[B3_SPAN_ID], "1122334455667788");
    assert_eq!(map[B3_PARENT_SPAN_ID], "00f067aa0ba902b7");
    assert_eq!(map[B3_SAMPLED], "1");
}
