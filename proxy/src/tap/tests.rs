use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::event::{rfc3339, Event};
use super::filter::{Bucket, Filter, DEFAULT_MAX_RPS};
use super::{Hub, MAX_TAPS};

fn event<'a>(service: &'a str, method: &'a str, path: &'a str) -> Event<'a> {
    Event {
        time: String::new(),
        direction: "outbound",
        source: None,
        service,
        endpoint: None,
        method,
        authority: "",
        path,
        status: 200,
        grpc_status: None,
        latency_ms: 1.0,
        retries: 0,
        route: "",
        tls: false,
    }
}

#[test]
fn a_query_becomes_a_filter_and_every_problem_is_named() {
    let filter = Filter::parse(
        "namespace=shop&service=web&path=%2Fapi%2Fv1&method=get&max_rps=5&sample=0.5",
    )
    .expect("valid");
    assert_eq!(
        filter,
        Filter {
            namespace: Some("shop".into()),
            service: Some("web".into()),
            path: Some("/api/v1".into()),
            method: Some("GET".into()),
            max_rps: 5,
            sample: 0.5,
        }
    );
    assert_eq!(Filter::parse("").expect("valid").max_rps, DEFAULT_MAX_RPS);
    let problems = Filter::parse("max_rps=0&sample=2&colour=red").expect_err("invalid");
    assert_eq!(problems.lines().count(), 3, "{problems}");
}

#[test]
fn a_filter_takes_what_it_names_and_nothing_else() {
    let filter = Filter::parse("service=web&path=/api&method=GET").expect("valid");
    assert!(filter.matches(&event("shop/web", "GET", "/api/items")));
    assert!(!filter.matches(&event("shop/web", "GET", "/health")));
    assert!(!filter.matches(&event("shop/web", "POST", "/api/items")));
    assert!(!filter.matches(&event("shop/webs", "GET", "/api/items")));
    let namespaced = Filter::parse("namespace=shop&service=shop/web").expect("valid");
    assert!(namespaced.matches(&event("shop/web", "GET", "/")));
    assert!(!namespaced.matches(&event("other/web", "GET", "/")));
}

#[test]
fn the_bucket_holds_a_second_of_rate_and_refills_with_time() {
    let start = Instant::now();
    let mut bucket = Bucket::new(2);
    assert!(bucket.take(start) && bucket.take(start));
    assert!(!bucket.take(start));
    assert!(bucket.take(start + Duration::from_millis(500)));
    assert!(!bucket.take(start + Duration::from_millis(500)));
    // A long pause refills one second's worth, no more.
    let later = start + Duration::from_secs(60);
    assert!(bucket.take(later) && bucket.take(later));
    assert!(!bucket.take(later));
}

#[test]
fn the_count_follows_subscriptions_and_is_bounded() {
    let hub = Arc::new(Hub::new());
    assert!(!hub.is_tapped());
    let taps: Vec<_> = (0..MAX_TAPS)
        .map(|_| hub.subscribe(Filter::default()).expect("room"))
        .collect();
    assert!(hub.is_tapped());
    assert!(hub.subscribe(Filter::default()).is_err());
    drop(taps);
    assert!(!hub.is_tapped());
    assert!(hub.subscribe(Filter::default()).is_ok());
}

#[test]
fn an_event_reaches_the_subscribers_that_want_it_within_their_rate() {
    let hub = Arc::new(Hub::new());
    let mut api = hub
        .subscribe(Filter::parse("path=/api&max_rps=1").expect("valid"))
        .expect("room");
    let mut all = hub.subscribe(Filter::default()).expect("room");
    hub.publish(&event("shop/web", "GET", "/api/a"));
    hub.publish(&event("shop/web", "GET", "/api/b"));
    hub.publish(&event("shop/web", "GET", "/other"));
    let line = api.events.try_recv().expect("the first /api event");
    let json: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
    assert_eq!(json["path"], "/api/a");
    assert!(line.ends_with(b"\n"));
    // The second is over max_rps=1, the third not under /api.
    assert!(api.events.try_recv().is_err());
    for path in ["/api/a", "/api/b", "/other"] {
        let line = all.events.try_recv().expect("every event");
        let json: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(json["path"], path);
    }
}

#[test]
fn times_are_rfc3339_utc() {
    let at = UNIX_EPOCH + Duration::from_millis(1_796_456_401_123);
    assert_eq!(rfc3339(at), "2026-12-05T07:40:01.123Z");
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
}
