use std::time::Duration;

use super::*;

fn scraped(at: Instant, text: &str) -> Result<Scraped, String> {
    Ok(Scraped {
        at,
        samples: parse::parse(text).expect("parses"),
    })
}

fn web(requests: u32) -> String {
    format!(
        "weft_requests_total{{direction=\"inbound\",service=\"default/web\",tls=\"true\",route=\"\"}} {requests}\n\
         weft_responses_total{{direction=\"inbound\",service=\"default/web\",tls=\"true\",route=\"\",status_code=\"200\",grpc_status=\"\"}} {requests}\n\
         weft_endpoints{{service=\"default/web\",state=\"healthy\"}} 2\n"
    )
}

#[test]
fn the_first_round_has_no_rates_and_the_second_has() {
    let start = Instant::now();
    let mut top = Top::default();
    let first = top.frame(
        "t0".into(),
        vec![
            ("a:1".into(), scraped(start, &web(100))),
            ("b:1".into(), Err("connect: refused".into())),
        ],
        &BTreeMap::new(),
        None,
    );
    assert_eq!(first.services.len(), 1);
    assert_eq!(first.services[0].endpoints, 2);
    assert_eq!(first.services[0].rps, 0.0);
    assert_eq!(first.services[0].success, None);
    assert_eq!(first.unreachable[0].target, "b:1");

    let second = top.frame(
        "t1".into(),
        vec![(
            "a:1".into(),
            scraped(start + Duration::from_secs(2), &web(140)),
        )],
        &BTreeMap::new(),
        None,
    );
    let row = &second.services[0];
    assert_eq!(row.rps, 20.0);
    assert_eq!((row.success, row.tls), (Some(1.0), Some(1.0)));

    let text = render_table(&second);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE",
            "ENDPOINTS",
            "RPS",
            "SUCCESS",
            "P50",
            "P99",
            "TLS"
        ]
    );
    let cells: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        cells,
        ["default/web", "2", "20.0", "100.00%", "-", "-", "100%"]
    );

    // A target that left the round is forgotten: back, it starts over.
    top.frame("t2".into(), vec![], &BTreeMap::new(), None);
    let back = top.frame(
        "t3".into(),
        vec![(
            "a:1".into(),
            scraped(start + Duration::from_secs(3), &web(150)),
        )],
        &BTreeMap::new(),
        None,
    );
    assert_eq!(back.services[0].rps, 0.0);

    let json = serde_json::to_value(&second).expect("json");
    assert_eq!(json["services"][0]["service"], "default/web");
    assert_eq!(json["services"][0]["success"], 1.0);
    assert!(json["services"][0]["p50_ms"].is_null());
}

#[test]
fn the_footer_names_unreachable_targets() {
    let frame = Frame {
        edges: vec![],
        time: "t".into(),
        services: vec![],
        unreachable: vec![Unreachable {
            target: "10.0.0.9:15020".into(),
            error: "no answer within 500 ms".into(),
        }],
    };
    let text = render_table(&frame);
    assert!(text.contains("(no services)"), "{text}");
    assert!(
        text.contains("unreachable: 10.0.0.9:15020 (no answer within 500 ms)"),
        "{text}"
    );
}

#[test]
fn times_print_as_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
}
