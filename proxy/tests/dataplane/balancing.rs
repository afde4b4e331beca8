//! Load balancing through the real proxy: per-request distribution over one
//! keep-alive connection, weights, P2C against a slow endpoint, and endpoint churn
//! under load without a single failed request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_proto::v1;

use crate::support::mesh::{service, snapshot, Svc};
use crate::support::upstream::HttpUpstream;
use crate::support::{Client, Proxy};

async fn upstreams(names: &[&str]) -> Vec<HttpUpstream> {
    let mut started = Vec::new();
    for name in names {
        started.push(HttpUpstream::start(name).await);
    }
    started
}

async fn tally(client: &mut Client, requests: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..requests {
        let reply = client.get("x", "/").await;
        assert_eq!(reply.status, 200);
        *seen.entry(reply.upstream().to_owned()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_is_even_per_request_on_one_connection() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let mut svc = service("lb-rr", "http1").policy("round_robin");
    for u in &ups {
        svc = svc.endpoint(u.addr);
    }
    let proxy = Proxy::start(snapshot(&[svc]), &["--upstream", "shop/lb-rr=127.0.0.1:0"]).await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let seen = tally(&mut client, 300).await;
    for name in ["a", "b", "c"] {
        let n = seen.get(name).copied().unwrap_or(0);
        assert!((95..=105).contains(&n), "{seen:?}");
    }
}

#[tokio::test]
async fn weights_are_honoured() {
    let ups = upstreams(&["heavy", "light"]).await;
    for policy in ["weighted", "round_robin", "random"] {
        let name = format!("lb-weighted-{}", policy.replace('_', "-"));
        let svc = service(&name, "http1")
            .policy(policy)
            .weighted(ups[0].addr, 3)
            .weighted(ups[1].addr, 1);
        let flag = format!("shop/{name}=127.0.0.1:0");
        let proxy = Proxy::start(snapshot(&[svc]), &["--upstream", &flag]).await;
        let mut client = Client::connect(proxy.upstreams[0]).await;
        let seen = tally(&mut client, 2000).await;
        let ratio = seen["heavy"] as f64 / seen["light"] as f64;
        assert!((2.5..3.5).contains(&ratio), "{policy}: {seen:?}");
    }
}

#[tokio::test]
async fn p2c_steers_away_from_a_slow_endpoint() {
    let mut ups = upstreams(&["fast-1", "fast-2"]).await;
    ups.push(HttpUpstream::start_slow("slow", Duration::from_millis(40)).await);
    let mut svc = service("lb-p2c", "http1");
    for u in &ups {
        svc = svc.endpoint(u.addr);
    }
    let proxy = Proxy::start(snapshot(&[svc]), &["--upstream", "shop/lb-p2c=127.0.0.1:0"]).await;
    let addr = proxy.upstreams[0];
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            tally(&mut client, 100).await
        }));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (name, n) in task.await.expect("client task") {
            *seen.entry(name).or_insert(0) += n;
        }
    }
    let slow = seen.get("slow").copied().unwrap_or(0);
    // Round robin would send it 133 of 400.
    assert!(slow < 25, "{seen:?}");
}

#[tokio::test]
async fn p2c_does_not_favour_an_endpoint_that_fails_fast() {
    // "broken" answers 503 at once, "healthy" 200 after 5 ms. Retries and outlier
    // detection are off, so only the balancer keeps requests away from "broken".
    let healthy = HttpUpstream::start_slow("healthy", Duration::from_millis(5)).await;
    let broken = HttpUpstream::start("broken").await;
    let svc = service("lb-p2c-failing", "http1")
        .endpoint(healthy.addr)
        .endpoint(broken.addr)
        .with(|s| {
            s.retries = Some(v1::Retries {
                max_retries: Some(0),
                ..Default::default()
            });
            s.outlier_detection = Some(v1::OutlierDetection {
                consecutive_failures: Some(0),
                ..Default::default()
            });
        });
    let proxy = Proxy::start(
        snapshot(&[svc]),
        &["--upstream", "shop/lb-p2c-failing=127.0.0.1:0"],
    )
    .await;
    let addr = proxy.upstreams[0];
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for _ in 0..100 {
                let reply = client.get("x", "/fail-if/broken").await;
                assert!([200, 503].contains(&reply.status), "{reply:?}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let failed = broken.requests.load(Ordering::SeqCst);
    let served = healthy.requests.load(Ordering::SeqCst);
    assert_eq!(failed + served, 400);
    // Counting a 503 as 0.1 ms made "broken" the cheapest choice and it took most
    // requests; round robin would send it 200 of 400.
    assert!(failed < 40, "broken got {failed}, healthy {served}");
}

#[tokio::test]
async fn endpoint_churn_under_load_fails_no_request() {
    let ups = upstreams(&["u0", "u1", "u2", "u3", "u4"]).await;
    let with = |indices: &[usize]| -> Svc {
        let mut svc = service("lb-churn", "http1");
        for i in indices {
            svc = svc.endpoint(ups[*i].addr);
        }
        svc
    };
    let sets: [&[usize]; 6] = [
        &[0, 1, 2],
        &[1, 2, 3],
        &[3, 4],
        &[0, 4],
        &[0, 1, 2, 3, 4],
        &[2],
    ];
    let proxy = Proxy::start(
        snapshot(&[with(sets[0])]),
        &["--upstream", "shop/lb-churn=127.0.0.1:0"],
    )
    .await;
    let addr = proxy.upstreams[0];
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut failures = 0;
            for _ in 0..300 {
                if client.get("x", "/").await.status != 200 {
                    failures += 1;
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    for (step, set) in sets.iter().enumerate().skip(1) {
        let threshold = step * 1200 / sets.len();
        crate::support::wait_until("client progress", Duration::from_secs(20), || async {
            done.load(Ordering::SeqCst) >= threshold
        })
        .await;
        proxy.publish(snapshot(&[with(set)]));
    }
    for client in clients {
        assert_eq!(
            client.await.expect("client task"),
            0,
            "failed requests during churn"
        );
    }
    // The last set is the only one served now.
    let mut client = Client::connect(addr).await;
    let seen = tally(&mut client, 20).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["u2"], "{seen:?}");
}
