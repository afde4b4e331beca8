//! The background probe of an endpoint that could not be reached: it tries a TCP
//! connect to the endpoint, soon and then every half second at most
//! ([`reachability::probe_delay`]), and puts the endpoint back in rotation the
//! moment one succeeds. One probe per endpoint at a time (the endpoint's
//! [`Reachability`](crate::resilience::reachability::Reachability) starts it on the
//! transition only).
//!
//! The probe holds the endpoint weakly: when no snapshot lists the endpoint any
//! more and no request uses it, the probe ends. It also ends when a request got
//! through first (a request may still try an endpoint out of rotation when no
//! other is left).
//!
//! A bare TCP connect is the test because a refused or timed-out connect is what
//! took the endpoint out; an endpoint that accepts TCP but fails the TLS handshake
//! comes back, fails the next handshake and goes out again, one request moved
//! each time.

use std::sync::{Arc, Weak};

use tokio::net::TcpStream;

use crate::balance;
use crate::resilience::reachability;

use super::endpoint::Endpoint;

/// Starts probing `endpoint`, which has just been marked unreachable.
pub fn spawn(endpoint: &Arc<Endpoint>) {
    let weak = Arc::downgrade(endpoint);
    tokio::spawn(run(weak));
}

async fn run(endpoint: Weak<Endpoint>) {
    let mut round = 0;
    loop {
        tokio::time::sleep(reachability::probe_delay(round)).await;
        round = round.saturating_add(1);
        let (address, timeout) = match endpoint.upgrade() {
            Some(e) if e.reachability.is_unreachable() => (e.address, e.connect_timeout()),
            _ => return,
        };
        // The endpoint is not held while connecting, so that removing it from the
        // mesh is not delayed by a probe.
        let connected = tokio::time::timeout(timeout, TcpStream::connect(address)).await;
        if matches!(connected, Ok(Ok(_))) {
            if let Some(e) = endpoint.upgrade() {
                back_in_rotation(&e);
            }
            return;
        }
    }
}

/// The endpoint accepts connections again: back in rotation, with its latency
/// estimate forgotten (it describes the process that went away).
pub fn back_in_rotation(endpoint: &Endpoint) {
    if endpoint.reachability.regain() {
        endpoint.load.forget(balance::now());
        tracing::debug!(endpoint = %endpoint.address, "endpoint reachable again");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn an_endpoint_comes_back_soon_after_it_accepts_again() {
        // A port that refuses: bound, then closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        drop(listener);
        let endpoint = Endpoint::new(address, None, 1, 4);
        assert!(endpoint.reachability.lose());
        spawn(&endpoint);
        // Refused for a while: the probe keeps it out.
        let refused_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < refused_until {
            assert!(endpoint.reachability.is_unreachable());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("rebind");
        let accepted = Instant::now();
        let deadline = accepted + Duration::from_secs(5);
        while endpoint.reachability.is_unreachable() {
            assert!(Instant::now() < deadline, "still out of rotation");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Within the probe's longest pause, plus scheduling slack.
        assert!(
            accepted.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            accepted.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_ends_with_its_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        drop(listener);
        let endpoint = Endpoint::new(address, None, 1, 4);
        endpoint.reachability.lose();
        let weak = Arc::downgrade(&endpoint);
        let probe_task = tokio::spawn(run(weak));
        drop(endpoint);
        tokio::time::timeout(Duration::from_secs(5), probe_task)
            .await
            .expect("the probe ended")
            .expect("no panic");
    }
}
