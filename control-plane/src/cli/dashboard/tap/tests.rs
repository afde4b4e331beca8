use http_body_util::BodyExt;

use super::*;

fn target(admin: &str, workload: &str) -> Target {
    Target {
        id: admin.to_owned(),
        admin: admin.to_owned(),
        workload: workload.to_owned(),
    }
}

/// The whole stream, as the page would read it.
async fn text(events: Events) -> String {
    let body = http_body_util::StreamBody::new(events)
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn the_query_chooses_listed_proxies_and_carries_the_filters() {
    let query =
        Query::parse("namespace=shop&to=shop%2Forders&path=%2Fapi+v1&method=get&x=1&service=");
    assert_eq!(query.namespace.as_deref(), Some("shop"));
    assert_eq!(query.service, None);
    assert_eq!(
        query.filter.query(),
        "/tap?service=shop/orders&path=/api%20v1&method=GET&max_rps=20"
    );
    let targets = [
        target("10.0.0.2:15020", "shop/web"),
        target("10.0.0.1:15020", "shop/orders"),
        target("10.0.0.3:15020", "blog/web"),
    ];
    assert_eq!(query.chosen(&targets), ["10.0.0.1:15020", "10.0.0.2:15020"]);
    assert_eq!(
        Query::parse("service=web").chosen(&targets),
        ["10.0.0.2:15020", "10.0.0.3:15020"]
    );
    assert_eq!(
        Query::parse("proxy=10.0.0.3%3A15020").chosen(&targets),
        ["10.0.0.3:15020"]
    );
    // Only a listed proxy: the page cannot send the dashboard elsewhere.
    assert!(Query::parse("proxy=192.0.2.1:80")
        .chosen(&targets)
        .is_empty());
    assert_eq!(decode("%zz%4"), "%zz%4");
}

#[tokio::test]
async fn events_are_server_sent_one_per_request_and_the_stream_ends_with_its_proxies() {
    let (sender, received) = mpsc::channel(8);
    let query = Query::default();
    let mut events = Events::start(Vec::new(), &query, None);
    events.received = received;
    events.open = 2;
    events.opening = Some(event("open", &json!({ "proxies": [] })));
    let line = |text: &str| Bytes::from(format!("{text}\n"));
    for message in [
        Message::Line("a:1".into(), line(r#"{"method":"GET","status":200}"#)),
        Message::Line("a:1".into(), line("not json")),
        Message::Ended("b:2".into(), Err("403 Forbidden".into())),
        Message::Ended("a:1".into(), Ok(())),
    ] {
        sender.send(message).await.expect("send");
    }
    assert_eq!(
        text(events).await,
        "event: open\ndata: {\"proxies\":[]}\n\n\
         data: {\"event\":{\"method\":\"GET\",\"status\":200},\"proxy\":\"a:1\"}\n\n\
         event: ended\ndata: {\"error\":\"403 Forbidden\",\"proxy\":\"b:2\"}\n\n\
         event: ended\ndata: {\"error\":\"\",\"proxy\":\"a:1\"}\n\n\
         event: done\ndata: {}\n\n"
    );
}

#[tokio::test]
async fn with_no_proxy_to_tap_the_stream_says_so_and_ends() {
    let events = Events::start(Vec::new(), &Query::default(), None);
    assert_eq!(
        text(events).await,
        "event: open\ndata: {\"proxies\":[]}\n\nevent: done\ndata: {}\n\n"
    );
}
