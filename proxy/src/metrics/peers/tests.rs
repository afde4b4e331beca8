use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusBuilder;

use super::*;
use crate::metrics::ServiceMetrics;

fn id(n: usize) -> String {
    format!("spiffe://weft.local/ns/shop/sa/caller-{n}")
}

/// The lines of a render that name `metric` and contain every one of `parts`.
fn lines<'a>(render: &'a str, metric: &str, parts: &[&str]) -> Vec<&'a str> {
    render
        .lines()
        .filter(|l| l.starts_with(metric) && parts.iter().all(|p| l.contains(p)))
        .collect()
}

#[test]
fn the_first_sixteen_identities_get_slots_of_their_own_then_they_share_overflow() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let mut slots = PeerSlots::new(Direction::Inbound, "shop/orders");
        let own: Vec<Peer> = (0..MAX_IDENTITIES).map(|n| slots.slot(&id(n))).collect();
        for (n, peer) in own.iter().enumerate() {
            assert_eq!(peer.slot, n);
            assert_eq!(peer.label(), id(n));
        }
        // Seen before: the same slot, however full the table.
        assert_eq!(slots.slot(&id(3)), own[3]);
        let late = [
            slots.slot(&id(16)),
            slots.slot(&id(17)),
            slots.slot(&id(16)),
        ];
        for peer in &late {
            assert_eq!(peer.slot, MAX_IDENTITIES);
            assert_eq!(peer.label(), OVERFLOW);
        }
        assert!(late.iter().all(|p| p.slot < SLOTS));
    });
    let render = handle.render();
    let counted = lines(
        &render,
        OVERFLOWED,
        &["direction=\"inbound\"", "service=\"shop/orders\""],
    );
    assert_eq!(counted.len(), 1, "{render}");
    assert!(counted[0].ends_with(" 3"), "{render}");
}

#[test]
fn outbound_responses_and_durations_carry_the_answering_identity_requests_do_not() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let service = ServiceMetrics::new(Direction::Outbound, "shop/users".into());
        let mut slots = PeerSlots::new(Direction::Outbound, "shop/users");
        let peer = slots.slot(&id(0));
        let answered = service.for_peer(&peer);
        assert!(Arc::ptr_eq(answered, service.for_peer(&peer)));
        service.requests.increment(1);
        answered.response(200, None);
        answered.duration.record(0.01);
        // The proxy's own answer: no endpoint, no identity.
        service.response(503, None);
        service.error(0, "no_endpoint");
    });
    let render = handle.render();
    let dst = format!("dst_identity=\"{}\"", id(0));
    assert_eq!(
        lines(
            &render,
            "weft_responses_total",
            &["status_code=\"200\"", &dst]
        )
        .len(),
        1,
        "{render}"
    );
    assert_eq!(
        lines(
            &render,
            "weft_responses_total",
            &["status_code=\"503\"", "dst_identity=\"\""]
        )
        .len(),
        1,
        "{render}"
    );
    assert!(!lines(&render, "weft_request_duration_seconds_count", &[&dst]).is_empty());
    let requests = lines(&render, "weft_requests_total", &["shop/users"]);
    assert_eq!(requests.len(), 1, "{render}");
    assert!(!requests[0].contains("dst_identity"), "{render}");
    let errors = lines(&render, "weft_request_errors_total", &["shop/users"]);
    assert!(
        !errors.is_empty() && !errors[0].contains("dst_identity"),
        "{render}"
    );
}

#[test]
fn inbound_requests_responses_and_durations_carry_the_client_identity() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let service = ServiceMetrics::inbound("shop/users".into(), true);
        let mut slots = PeerSlots::new(Direction::Inbound, "shop/users");
        let caller = service.for_peer(&slots.slot(&id(1)));
        caller.requests.increment(2);
        caller.response(200, Some(0));
        caller.duration.record(0.002);
        caller.error(1, "denied");
    });
    let render = handle.render();
    let client = format!("client_identity=\"{}\"", id(1));
    for metric in [
        "weft_requests_total",
        "weft_responses_total",
        "weft_request_duration_seconds_count",
        "weft_request_errors_total",
    ] {
        assert_eq!(
            lines(&render, metric, &[&client, "tls=\"true\""]).len(),
            1,
            "{metric} in {render}"
        );
    }
}
