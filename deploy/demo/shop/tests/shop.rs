//! The whole shop as real processes on 127.0.0.1, no mesh in between.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{
    call, free_addr, read_summary, start, start_logged, start_server, summary_path, url, Proc,
    Relay,
};

/// The four services, each one process.
struct Shop {
    users: SocketAddr,
    products: SocketAddr,
    cart: SocketAddr,
    orders: SocketAddr,
    servers: Vec<Proc>,
}

impl Shop {
    /// Starts the four services; orders calls users at `users_for_orders` (a relay) or
    /// directly.
    fn start(users_for_orders: impl FnOnce(SocketAddr) -> String) -> Shop {
        // Each server binds a port of its own choosing and says which: a port picked
        // here and bound later could be taken meanwhile (by the relay below, say).
        let (users_server, users) = start_server(&["users", "--replica", "users-1"]);
        let (products_server, products) = start_server(&["products", "--replica", "products-1"]);
        let (cart_server, cart) =
            start_server(&["cart", "--replica", "cart-1", "--products", &url(products)]);
        let (orders_server, orders) = start_server(&[
            "orders",
            "--replica",
            "orders-1",
            "--users",
            &users_for_orders(users),
            "--products",
            &url(products),
        ]);
        let servers = vec![users_server, products_server, cart_server, orders_server];
        Shop {
            users,
            products,
            cart,
            orders,
            servers,
        }
    }
}

/// Runs the shopper to its end and returns its JSON summary.
fn shop_for(
    seconds: &str,
    rate: &str,
    users: &str,
    products: &str,
    orders: &str,
    cart: &str,
) -> Value {
    let path = summary_path();
    let mut shopper = start(&[
        "shopper",
        "--users",
        users,
        "--products",
        products,
        "--orders",
        orders,
        "--cart",
        cart,
        "--rate",
        rate,
        "--duration",
        seconds,
        "--summary",
        path.to_str().expect("utf-8 path"),
    ]);
    // The duration plus at most 5 s to finish the journeys in flight, plus slack.
    let status = shopper.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "shopper exited with {status}");
    read_summary(&path)
}

#[test]
fn shopper_journeys_cross_all_four_services() {
    let mut shop = Shop::start(url);
    let summary = shop_for(
        "3",
        "20",
        &url(shop.users),
        &url(shop.products),
        &url(shop.orders),
        &url(shop.cart),
    );

    let journeys = &summary["journeys"];
    assert!(
        journeys["ok"].as_u64() > Some(0),
        "no journey went through: {summary}"
    );
    assert_eq!(journeys["failed"].as_u64(), Some(0), "{summary}");
    for service in ["users", "products", "cart", "orders"] {
        let calls = &summary["calls"][service];
        assert!(
            calls["ok"].as_u64() > Some(0),
            "{service} got no calls: {summary}"
        );
        assert_eq!(calls["failed"].as_u64(), Some(0), "{service}: {summary}");
    }
    // Every journey checks out once, on the one orders replica.
    assert_eq!(
        summary["orders_by_replica"],
        serde_json::json!({ "orders-1": journeys["ok"] }),
        "{summary}"
    );
    assert!(
        summary["first_success_unix_ms"].as_u64().is_some(),
        "{summary}"
    );

    // products answers the standard gRPC health check, as a prober would ask it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for service in ["", "shop.v1.Products"] {
        let status = runtime.block_on(async {
            use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
            let channel = tonic::transport::Endpoint::from_shared(url(shop.products))?
                .connect()
                .await?;
            let mut client = HealthClient::new(channel);
            let request = HealthCheckRequest {
                service: service.into(),
            };
            Ok::<_, Box<dyn std::error::Error>>(client.check(request).await?.into_inner().status)
        });
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        assert_eq!(status.ok(), Some(serving), "health of {service:?}");
    }

    // Closes the health client's connection, which a stopping products waits for.
    drop(runtime);

    // Every server stops on SIGTERM and exits 0.
    for server in &shop.servers {
        server.terminate();
    }
    for server in &mut shop.servers {
        let status = server.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "a server exited with {status} on SIGTERM");
    }
}

/// The mesh may retry a call after it was sent only when the caller says it is safe:
/// reads and the keyed checkout say so, registering a user and adding to a cart do not.
#[test]
fn only_calls_safe_to_repeat_are_marked_retryable() {
    let users_relay = std::cell::OnceCell::new();
    let shop = Shop::start(|users| {
        let relay = users_relay.get_or_init(|| Relay::start(users));
        url(relay.addr)
    });
    let users_relay = users_relay.get().expect("started");
    let orders_relay = Relay::start(shop.orders);
    let cart_relay = Relay::start(shop.cart);
    let summary = shop_for(
        "1",
        "10",
        &url(users_relay.addr),
        &url(shop.products),
        &url(orders_relay.addr),
        &url(cart_relay.addr),
    );
    let ok = summary["journeys"]["ok"].as_u64().unwrap_or(0);
    assert!(ok > 0, "{summary}");
    assert_eq!(summary["journeys"]["failed"].as_u64(), Some(0), "{summary}");

    let retryable = |head: &String| head.contains("\r\nweft-retryable: true\r\n");
    // users: GETs from the shopper and from orders, POSTs from the shopper.
    let users_heads = users_relay.heads();
    let (gets, posts): (Vec<_>, Vec<_>) = users_heads.iter().partition(|h| h.starts_with("get "));
    assert!(gets.len() as u64 >= 2 * ok, "{users_heads:?}");
    assert!(gets.iter().all(|h| retryable(h)), "{gets:?}");
    assert_eq!(posts.len() as u64, ok, "{users_heads:?}");
    assert!(posts.iter().all(|h| !retryable(h)), "{posts:?}");

    let cart_heads = cart_relay.heads();
    for head in &cart_heads {
        assert_eq!(retryable(head), head.starts_with("get "), "{head}");
    }

    // Checkout: retryable, with a key of its own per journey.
    let orders_heads = orders_relay.heads();
    assert_eq!(orders_heads.len() as u64, ok, "{orders_heads:?}");
    let mut keys: Vec<&str> = orders_heads
        .iter()
        .inspect(|h| assert!(h.starts_with("post /orders ") && retryable(h), "{h}"))
        .filter_map(|h| h.lines().find_map(|l| l.strip_prefix("idempotency-key: ")))
        .collect();
    assert_eq!(
        keys.len() as u64,
        ok,
        "every checkout has a key: {orders_heads:?}"
    );
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len() as u64, ok, "keys are unique: {orders_heads:?}");
}

/// With nothing to talk to, every journey fails, each failure is counted, and the
/// shopper still exits 0 with a summary: judging it is the orchestrator's job.
#[test]
fn failures_are_counted_and_the_shopper_still_exits_zero() {
    let nowhere = url(free_addr());
    let summary = shop_for("1", "10", &nowhere, &nowhere, &nowhere, &nowhere);
    assert_eq!(summary["journeys"]["ok"].as_u64(), Some(0), "{summary}");
    assert!(
        summary["journeys"]["failed"].as_u64() > Some(0),
        "{summary}"
    );
    // A journey starts by registering, so that is the call that fails.
    assert_eq!(
        summary["calls"]["users"]["failed"], summary["journeys"]["failed"],
        "{summary}"
    );
    assert_eq!(
        summary["calls"]["orders"]["ok"].as_u64(),
        Some(0),
        "{summary}"
    );
    assert_eq!(
        summary["orders_by_replica"],
        serde_json::json!({}),
        "{summary}"
    );
    assert!(summary["first_success_unix_ms"].is_null(), "{summary}");
}

/// The orchestrator stops an open-ended shopper with SIGTERM: it still prints and
/// writes its summary and exits 0.
#[test]
fn sigterm_stops_the_shopper_with_its_summary() {
    let nowhere = url(free_addr());
    let path = summary_path();
    let mut shopper = start_logged(&[
        "shopper",
        "--users",
        &nowhere,
        "--products",
        &nowhere,
        "--orders",
        &nowhere,
        "--cart",
        &nowhere,
        "--summary",
        path.to_str().expect("utf-8 path"),
    ]);
    // Its first log line (a failed journey) says it is running, handlers installed.
    let log = shopper.0.stderr.take().expect("stderr piped");
    let (lines, logged) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let first = logged.recv_timeout(Duration::from_secs(10));
    assert!(
        first.is_ok_and(|l| l.contains("failed")),
        "no failure logged"
    );

    shopper.terminate();
    let status = shopper.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "shopper exited with {status} on SIGTERM");
    let summary = read_summary(&path);
    assert!(
        summary["journeys"]["failed"].as_u64() > Some(0),
        "{summary}"
    );
}

/// Each way a request can go wrong gets its own status, through real processes.
#[test]
fn orders_and_cart_answer_each_failure_with_its_own_status() {
    let mut shop = Shop::start(url);
    let (users, cart, orders) = (shop.users, shop.cart, shop.orders);
    let (status, user) = call(users, "POST", "/users", &[], r#"{"name":"ada"}"#);
    assert_eq!(status, 201, "{user}");
    let id = &user["id"];

    // cart: unknown product, sold out, nonsense quantity, removing what is not there.
    let add = |body: &str| call(cart, "POST", &format!("/carts/{id}/items"), &[], body).0;
    assert_eq!(add(r#"{"product":"teapot","quantity":1}"#), 422);
    assert_eq!(add(r#"{"product":"espresso-machine","quantity":1}"#), 409);
    assert_eq!(add(r#"{"product":"ceramic-mug","quantity":0}"#), 400);
    assert_eq!(add(r#"{"product":"ceramic-mug","quantity":2}"#), 201);
    let (status, view) = call(cart, "GET", &format!("/carts/{id}"), &[], "");
    assert_eq!(
        (status, &view["total_cents"]),
        (200, &serde_json::json!(2400))
    );
    let remove = |product: &str| {
        let path = format!("/carts/{id}/items/{product}");
        call(cart, "DELETE", &path, &[], "").0
    };
    assert_eq!(remove("ceramic-mug"), 204);
    assert_eq!(remove("ceramic-mug"), 404);

    // orders: unknown user or product, short stock, then the state machine over HTTP.
    let order = |user: &serde_json::Value, product: &str| {
        format!(r#"{{"user":{user},"items":[{{"product":"{product}","quantity":1}}]}}"#)
    };
    let create =
        |body: &str, headers: &[(&str, &str)]| call(orders, "POST", "/orders", headers, body);
    assert_eq!(
        create(&order(&serde_json::json!(999), "ceramic-mug"), &[]).0,
        422
    );
    assert_eq!(create(&order(id, "teapot"), &[]).0, 422);
    assert_eq!(create(&order(id, "espresso-machine"), &[]).0, 409);
    let (status, created) = create(&order(id, "ceramic-mug"), &[]);
    assert_eq!(
        (status, &created["status"]),
        (201, &serde_json::json!("created"))
    );
    let step = |what: &str| {
        call(
            orders,
            "POST",
            &format!("/orders/{}/{what}", created["id"]),
            &[],
            "",
        )
        .0
    };
    assert_eq!(step("confirm"), 409, "confirming an unpaid order");
    assert_eq!(step("pay"), 200);
    assert_eq!(step("pay"), 409, "paying twice");
    assert_eq!(step("confirm"), 200);
    assert_eq!(call(orders, "GET", "/orders/999", &[], "").0, 404);

    // The same key twice is one order.
    let key = [("idempotency-key", "journey-1")];
    let (_, first) = create(&order(id, "ceramic-mug"), &key);
    let (status, again) = create(&order(id, "ceramic-mug"), &key);
    assert_eq!((status, &again["id"]), (201, &first["id"]), "{again}");

    // With users gone, orders answers 502 and names the upstream.
    shop.servers[0].terminate();
    assert!(shop.servers[0].wait_exit(Duration::from_secs(5)).success());
    let (status, error) = create(&order(id, "ceramic-mug"), &[]);
    assert_eq!(
        (status, &error["upstream"]),
        (502, &serde_json::json!("users")),
        "{error}"
    );
}
