use super::*;
use crate::cli::top::diff::increases;
use crate::cli::top::parse::parse;

/// A proxy of `shop/orders` after it served `requests`: `ok` 200s (half of them
/// over mTLS), `errors` 503s, one gRPC call answered UNAVAILABLE, all within 2 ms.
fn orders_proxy(requests: u32, ok: u32, errors: u32) -> Vec<Sample> {
    let half = requests / 2;
    let text = format!(
        r#"weft_requests_total{{direction="inbound",service="shop/orders",tls="true",route=""}} {half}
weft_requests_total{{direction="inbound",service="shop/orders",tls="false",route=""}} {rest}
weft_requests_total{{direction="outbound",service="shop/users",route=""}} 1000
weft_responses_total{{direction="inbound",service="shop/orders",tls="true",route="",status_code="200",grpc_status=""}} {ok}
weft_responses_total{{direction="inbound",service="shop/orders",tls="true",route="",status_code="503",grpc_status=""}} {errors}
weft_responses_total{{direction="inbound",service="shop/orders",tls="true",route="",status_code="200",grpc_status="14"}} 1
weft_responses_total{{direction="outbound",service="shop/users",route="",status_code="500",grpc_status=""}} 1000
weft_request_errors_total{{direction="inbound",service="shop/orders",tls="true",route="",error="connect"}} {errors}
weft_request_duration_seconds_bucket{{direction="inbound",service="shop/orders",tls="true",route="",le="0.001"}} {half}
weft_request_duration_seconds_bucket{{direction="inbound",service="shop/orders",tls="true",route="",le="0.002"}} {requests}
weft_request_duration_seconds_bucket{{direction="inbound",service="shop/orders",tls="true",route="",le="+Inf"}} {requests}
weft_endpoints{{service="shop/orders",state="healthy"}} 2
weft_endpoints{{service="shop/users",state="healthy"}} 1
weft_endpoints{{service="shop/users",state="unhealthy"}} 4
weft_endpoints{{service="other/cart",state="healthy"}} 3
"#,
        rest = requests - half,
    );
    parse(&text).expect("parses")
}

#[test]
fn golden_metrics_of_the_inbound_side() {
    let before = orders_proxy(100, 90, 9);
    let after = orders_proxy(300, 240, 59);
    let window = Window {
        source: "shop/orders",
        seconds: 2.0,
        increases: increases(&before, &after),
    };
    let rows = aggregate(&[window], &[&after], None);
    let services: Vec<&str> = rows.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(services, ["other/cart", "shop/orders", "shop/users"]);
    let orders = &rows[1];
    assert_eq!(orders.endpoints, 2);
    assert_eq!(orders.rps, 100.0);
    // 150 OK out of 200 responses (50 were 503, not counted again as errors);
    // the gRPC failure did not grow.
    assert_eq!(orders.success, Some(0.75));
    assert_eq!(orders.tls, Some(0.5));
    let (p50, p99) = (orders.p50_ms.expect("p50"), orders.p99_ms.expect("p99"));
    assert!((p50 - 1.0).abs() < 1e-9, "{p50}");
    assert!(p50 <= p99 && p99 <= 2.0, "{p99}");
    // Outbound series say nothing about the service's own side.
    let users = &rows[2];
    assert_eq!((users.endpoints, users.rps), (1, 0.0));
    assert_eq!((users.success, users.tls, users.p50_ms), (None, None, None));
}

#[test]
fn targets_add_up_and_endpoints_take_the_highest_view() {
    let before = orders_proxy(100, 100, 0);
    let after = orders_proxy(200, 200, 0);
    let mut fewer = orders_proxy(200, 200, 0);
    for sample in &mut fewer {
        if sample.name == "weft_endpoints" {
            sample.value = 1.0;
        }
    }
    let windows = [
        Window {
            source: "shop/orders",
            seconds: 1.0,
            increases: increases(&before, &after),
        },
        Window {
            source: "shop/orders",
            seconds: 2.0,
            increases: increases(&before, &fewer),
        },
    ];
    let rows = aggregate(&windows, &[&after, &fewer], Some("shop"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].service, "shop/orders");
    assert_eq!(rows[0].rps, 150.0);
    assert_eq!(rows[0].endpoints, 2);
    assert_eq!(rows[0].success, Some(1.0));
}

#[test]
fn a_restarted_proxy_counts_from_zero() {
    let before = orders_proxy(1000, 900, 100);
    let restarted = orders_proxy(10, 8, 2);
    let window = Window {
        source: "shop/orders",
        seconds: 1.0,
        increases: increases(&before, &restarted),
    };
    let rows = aggregate(&[window], &[&restarted], Some("shop"));
    assert_eq!(rows[0].rps, 10.0);
    assert_eq!(rows[0].success, Some(0.8));
}

#[test]
fn edges_are_each_caller_s_outbound_view() {
    let before = orders_proxy(100, 90, 9);
    let after = orders_proxy(300, 240, 59);
    let cart_before = parse(
        r#"weft_requests_total{direction="outbound",service="shop/orders",route=""} 10
weft_responses_total{direction="outbound",service="shop/orders",route="",status_code="200",grpc_status=""} 10
weft_requests_total{direction="outbound",service="",route=""} 5
"#,
    )
    .expect("parses");
    let cart_after = parse(
        r#"weft_requests_total{direction="outbound",service="shop/orders",route=""} 30
weft_responses_total{direction="outbound",service="shop/orders",route="",status_code="200",grpc_status=""} 29
weft_responses_total{direction="outbound",service="shop/orders",route="",status_code="502",grpc_status=""} 1
weft_requests_total{direction="outbound",service="",route=""} 50
"#,
    )
    .expect("parses");
    // orders' own proxy: its calls to users grew by nothing here.
    let mut orders_now = after.clone();
    for sample in &mut orders_now {
        if sample.label("direction") == "outbound" {
            sample.value += 40.0;
        }
    }
    let windows = [
        Window {
            source: "shop/orders",
            seconds: 2.0,
            increases: increases(&before, &orders_now),
        },
        Window {
            source: "shop/cart",
            seconds: 2.0,
            increases: increases(&cart_before, &cart_after),
        },
    ];
    let found = edges(&windows, Some("shop"));
    let pairs: Vec<(&str, &str)> = found
        .iter()
        .map(|e| (e.source.as_str(), e.destination.as_str()))
        .collect();
    // Passthrough (no service) is no edge; inbound series are none either.
    assert_eq!(
        pairs,
        [("shop/cart", "shop/orders"), ("shop/orders", "shop/users")]
    );
    assert_eq!(found[0].rps, 10.0);
    // 20 responses, one 502 (cart_before had no 502 series: it grew from 0).
    assert_eq!(found[0].success, Some(0.95));
    assert_eq!(found[1].rps, 20.0);
    assert_eq!(found[1].success, Some(0.0));
    assert!(edges(&windows, Some("other")).is_empty());
}

#[test]
fn identities_name_who_called_a_service_and_who_answered_an_edge() {
    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";
    let scrape = |n: u32| {
        parse(&format!(
            r#"weft_requests_total{{direction="inbound",service="shop/orders",tls="true",route="",client_identity="{WEB}"}} {n}
weft_requests_total{{direction="inbound",service="shop/orders",tls="true",route="",client_identity="overflow"}} 7
weft_requests_total{{direction="outbound",service="shop/orders",route=""}} {n}
weft_responses_total{{direction="outbound",service="shop/orders",route="",status_code="200",grpc_status="",dst_identity="{ORDERS}"}} {n}
weft_responses_total{{direction="outbound",service="shop/orders",route="",status_code="503",grpc_status="",dst_identity=""}} 1
"#
        ))
        .expect("parses")
    };
    let (before, after) = (scrape(10), scrape(30));
    let window = Window {
        source: "shop/web",
        seconds: 2.0,
        increases: increases(&before, &after),
    };
    let rows = aggregate(std::slice::from_ref(&window), &[&after], None);
    // Only identities whose series grew: `overflow` sent nothing in the window.
    assert_eq!(rows[0].client_identities, [WEB]);
    let found = edges(&[window], None);
    assert_eq!(found.len(), 1);
    // The proxy's own answers (empty identity) name no one.
    assert_eq!(found[0].dst_identities, [ORDERS]);
}
