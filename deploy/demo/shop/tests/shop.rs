//! The whole shop as real processes on 127.0.0.1, no mesh in between: the shopper's
//! journeys must all go through, touching every service, and the servers must stop
//! cleanly on SIGTERM.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SHOP: &str = env!("CARGO_BIN_EXE_weft-shop");

/// A child process killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> Proc {
    let child = Command::new(SHOP)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("weft-shop starts");
    Proc(child)
}

/// A port nothing listens on right now (bind `:0`, let go).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    listener.local_addr().expect("bound address")
}

/// Polls `condition` until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(proc: &mut Proc, timeout: Duration) -> ExitStatus {
    let mut status = None;
    wait_for("the process to exit", timeout, || {
        status = proc.0.try_wait().expect("try_wait");
        status.is_some()
    });
    status.expect("exited")
}

#[test]
fn shopper_journeys_cross_all_four_services() {
    let users = free_addr();
    let products = free_addr();
    let cart = free_addr();
    let orders = free_addr();
    let url = |addr: SocketAddr| format!("http://{addr}");

    let mut users_proc = start(&[
        "users",
        "--listen",
        &users.to_string(),
        "--replica",
        "users-1",
    ]);
    let _products = start(&[
        "products",
        "--listen",
        &products.to_string(),
        "--replica",
        "products-1",
    ]);
    let _cart = start(&[
        "cart",
        "--listen",
        &cart.to_string(),
        "--replica",
        "cart-1",
        "--products",
        &url(products),
    ]);
    let _orders = start(&[
        "orders",
        "--listen",
        &orders.to_string(),
        "--replica",
        "orders-1",
        "--users",
        &url(users),
        "--products",
        &url(products),
    ]);
    for addr in [users, products, cart, orders] {
        wait_for(
            &format!("{addr} to listen"),
            Duration::from_secs(10),
            || TcpStream::connect(addr).is_ok(),
        );
    }

    let dir = std::env::temp_dir().join(format!("weft-shop-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let summary_path = dir.join("summary.json");
    let mut shopper = start(&[
        "shopper",
        "--users",
        &url(users),
        "--products",
        &url(products),
        "--orders",
        &url(orders),
        "--cart",
        &url(cart),
        "--rate",
        "20",
        "--duration",
        "3",
        "--summary",
        summary_path.to_str().expect("utf-8 path"),
    ]);
    // 3 s of traffic plus at most 5 s to finish the journeys in flight.
    let status = wait_exit(&mut shopper, Duration::from_secs(12));
    assert!(status.success(), "shopper exited with {status}");

    let text = std::fs::read_to_string(&summary_path).expect("summary written");
    let _ = std::fs::remove_dir_all(&dir);
    let summary: serde_json::Value = serde_json::from_str(&text).expect("summary is JSON");
    let journeys = &summary["journeys"];
    assert!(
        journeys["ok"].as_u64() > Some(0),
        "no journey went through: {text}"
    );
    assert_eq!(journeys["failed"].as_u64(), Some(0), "{text}");
    for service in ["users", "products", "cart", "orders"] {
        let calls = &summary["calls"][service];
        assert!(
            calls["ok"].as_u64() > Some(0),
            "{service} got no calls: {text}"
        );
        assert_eq!(calls["failed"].as_u64(), Some(0), "{service}: {text}");
    }
    // Every journey checks out once, on the one orders replica.
    assert_eq!(
        summary["orders_by_replica"],
        serde_json::json!({ "orders-1": journeys["ok"] }),
        "{text}"
    );
    assert!(
        summary["first_success_unix_ms"].as_u64().is_some(),
        "{text}"
    );

    // The servers stop on SIGTERM and exit 0.
    let pid = users_proc.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let status = wait_exit(&mut users_proc, Duration::from_secs(5));
    assert!(status.success(), "users exited with {status} on SIGTERM");
}
