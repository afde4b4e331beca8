//! `shopper`: the traffic generator. Starts `--rate` shopping journeys a second, each
//! a user going through the whole shop, and counts what worked.
//!
//! A journey: register (POST users) -> list products (gRPC) -> add two products to the
//! cart -> read the cart -> check out (POST orders, create + pay + confirm) -> read the
//! user back. It stops at the first call that fails and counts as failed.
//!
//! On the end of `--duration`, SIGTERM or Ctrl-C it stops starting journeys, waits up
//! to 5 s for those in flight, prints a summary and writes it as JSON with `--summary`.
//! It exits 0 even when journeys failed: judging the numbers is the caller's job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use rand::seq::IndexedRandom;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::http::{Answer, CallError, Upstream, IDEMPOTENCY_KEY, RETRYABLE};
use crate::products::ProductsApi;
use crate::users::User;

/// How long the shopper waits for journeys in flight when it stops.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The services, in the order the summary lists them.
const SERVICES: [&str; 4] = ["users", "products", "cart", "orders"];

#[derive(clap::Args)]
pub struct Config {
    #[arg(long, value_parser = crate::parse_url)]
    pub users: String,
    #[arg(long, value_parser = crate::parse_url)]
    pub products: String,
    #[arg(long, value_parser = crate::parse_url)]
    pub orders: String,
    #[arg(long, value_parser = crate::parse_url)]
    pub cart: String,
    /// Journeys started per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until SIGTERM / Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_seconds)]
    pub duration: Option<Duration>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Most journeys in flight at once; one more counts as failed ("overloaded").
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// One client per upstream, shared by every journey (pooled connections).
struct Shop {
    users: Upstream,
    products: ProductsApi,
    cart: Upstream,
    orders: Upstream,
    tally: Mutex<Tally>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    ok: u64,
    failed: u64,
}

impl Count {
    fn add(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }

    fn json(self) -> serde_json::Value {
        serde_json::json!({ "ok": self.ok, "failed": self.failed })
    }
}

#[derive(Default)]
struct Tally {
    journeys: Count,
    /// Per (service, operation), e.g. ("cart", "add").
    calls: BTreeMap<(&'static str, &'static str), Count>,
    /// When the first journey went through end to end: how long the shop took to work.
    first_success: Option<SystemTime>,
    /// Checkouts per orders replica (their `x-served-by`), to watch the balancing.
    orders_by_replica: BTreeMap<String, u64>,
}

/// A call that did not give the answer a journey needs.
struct Failure {
    call: String,
    detail: String,
}

impl Shop {
    fn record(&self, service: &'static str, operation: &'static str, ok: bool) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.calls.entry((service, operation)).or_default().add(ok);
    }

    /// Counts an HTTP call; Ok when it answered `expected`.
    fn check(
        &self,
        service: &'static str,
        operation: &'static str,
        expected: StatusCode,
        result: Result<Answer, CallError>,
    ) -> Result<Answer, Failure> {
        let failure = |detail| Failure {
            call: format!("{service}.{operation}"),
            detail,
        };
        let outcome = match result {
            Ok(answer) if answer.status == expected => Ok(answer),
            Ok(answer) => Err(failure(format!("{} {}", answer.status, answer.excerpt()))),
            Err(e) => Err(failure(e.to_string())),
        };
        self.record(service, operation, outcome.is_ok());
        outcome
    }

    async fn journey(&self, number: u64) -> Result<(), Failure> {
        let name = serde_json::json!({ "name": format!("shopper-{number}") });
        let answer = self.users.post("/users", &name, &[]).await;
        let answer = self.check("users", "register", StatusCode::CREATED, answer)?;
        let user: User = answer.json().map_err(|e| Failure {
            call: "users.register".into(),
            detail: e.to_string(),
        })?;

        let listed = self.products.list().await;
        self.record("products", "list", listed.is_ok());
        let (catalog, _) = listed.map_err(|e| Failure {
            call: "products.list".into(),
            detail: e.to_string(),
        })?;
        let picks: Vec<String> = {
            let in_stock: Vec<_> = catalog.iter().filter(|p| p.stock > 0).collect();
            in_stock
                .choose_multiple(&mut rand::rng(), 2)
                .map(|p| p.id.clone())
                .collect()
        };

        // Adding is not safe to repeat (it adds the quantity again): no retryable header.
        let cart_path = format!("/carts/{}", user.id);
        for product in &picks {
            let body = serde_json::json!({ "product": product, "quantity": 1 });
            let answer = self
                .cart
                .post(&format!("{cart_path}/items"), &body, &[])
                .await;
            self.check("cart", "add", StatusCode::CREATED, answer)?;
        }
        self.check(
            "cart",
            "get",
            StatusCode::OK,
            self.cart.get(&cart_path).await,
        )?;

        // One call creates, pays and confirms: each orders replica keeps its own orders,
        // so a separate pay call could land on the other replica and find nothing.
        // Checkout is a POST, but the idempotency key makes a repeat return the first
        // order, so the mesh may retry it even after it was sent.
        let key = format!("{number}-{:016x}", rand::random::<u64>());
        let order = serde_json::json!({
            "user": user.id,
            "items": picks.iter().map(|p| Item { product: p, quantity: 1 }).collect::<Vec<_>>(),
            "checkout": true,
        });
        let headers = [(IDEMPOTENCY_KEY, key.as_str()), (RETRYABLE, "true")];
        let answer = self.orders.post("/orders", &order, &headers).await;
        let answer = self.check("orders", "checkout", StatusCode::CREATED, answer)?;
        let status = answer.json::<OrderStatus>().map(|o| o.status);
        if status.as_deref().ok() != Some("confirmed") {
            return Err(Failure {
                call: "orders.checkout".into(),
                detail: format!("order not confirmed: {}", answer.excerpt()),
            });
        }
        let replica = answer.served_by().unwrap_or("unknown").to_owned();

        let path = format!("/users/{}", user.id);
        self.check("users", "get", StatusCode::OK, self.users.get(&path).await)?;

        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        *tally.orders_by_replica.entry(replica).or_default() += 1;
        tally.first_success.get_or_insert_with(SystemTime::now);
        Ok(())
    }

    fn finish_journey(&self, number: u64, outcome: Result<(), Failure>) {
        if let Err(failure) = &outcome {
            tracing::warn!(
                "journey {number} failed at {}: {}",
                failure.call,
                failure.detail
            );
        }
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.journeys.add(outcome.is_ok());
    }
}

#[derive(serde::Serialize)]
struct Item<'a> {
    product: &'a str,
    quantity: u32,
}

#[derive(Deserialize)]
struct OrderStatus {
    status: String,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    if !(config.rate > 0.0 && config.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number of journeys per second");
    }
    if config.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let shop = Arc::new(Shop {
        users: Upstream::new(&config.users),
        products: ProductsApi::new(&config.products)?,
        cart: Upstream::new(&config.cart),
        orders: Upstream::new(&config.orders),
        tally: Mutex::default(),
    });

    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut journeys = JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    // After a stall (a busy machine), carry on at the rate rather than burst to catch up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = async {
        match config.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(end);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);

    let mut number = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut end => break,
            () = &mut shutdown => break,
        }
        while journeys.try_join_next().is_some() {}
        number += 1;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let overloaded = Failure {
                call: "start".into(),
                detail: format!("overloaded: {} journeys in flight", config.concurrency),
            };
            shop.finish_journey(number, Err(overloaded));
            continue;
        };
        let shop = shop.clone();
        journeys.spawn(async move {
            let outcome = shop.journey(number).await;
            shop.finish_journey(number, outcome);
            drop(slot);
        });
    }

    let finished = tokio::time::timeout(FINISH_TIMEOUT, async {
        while journeys.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        let unfinished = journeys.len();
        journeys.abort_all();
        tracing::warn!(
            "{unfinished} journeys still in flight after {FINISH_TIMEOUT:?}, counted as failed"
        );
        let mut tally = shop.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.journeys.failed += unfinished as u64;
    }

    let elapsed = started.elapsed();
    let tally = shop.tally.lock().unwrap_or_else(|e| e.into_inner());
    print!("{}", human_summary(&tally, elapsed));
    if let Some(path) = &config.summary {
        let text = serde_json::to_string_pretty(&json_summary(&tally, elapsed))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn json_summary(tally: &Tally, elapsed: Duration) -> serde_json::Value {
    let mut calls = serde_json::Map::new();
    for service in SERVICES {
        let mut count = Count::default();
        for (_, c) in tally.calls.iter().filter(|((s, _), _)| *s == service) {
            count.ok += c.ok;
            count.failed += c.failed;
        }
        calls.insert(service.into(), count.json());
    }
    let operations: serde_json::Map<_, _> = tally
        .calls
        .iter()
        .map(|((service, operation), c)| (format!("{service}.{operation}"), c.json()))
        .collect();
    let first_success_unix_ms = tally.first_success.and_then(|t| {
        let since_epoch = t.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(since_epoch.as_millis()).ok()
    });
    serde_json::json!({
        "duration_seconds": elapsed.as_secs_f64(),
        "journeys": tally.journeys.json(),
        "calls": calls,
        "operations": operations,
        "first_success_unix_ms": first_success_unix_ms,
        "orders_by_replica": tally.orders_by_replica,
    })
}

fn human_summary(tally: &Tally, elapsed: Duration) -> String {
    let mut text = format!(
        "shopper: {} journeys ok, {} failed in {:.1} s\n",
        tally.journeys.ok,
        tally.journeys.failed,
        elapsed.as_secs_f64()
    );
    for ((service, operation), count) in &tally.calls {
        let call = format!("{service}.{operation}");
        text += &format!(
            "  {call:<18} {:>7} ok {:>5} failed\n",
            count.ok, count.failed
        );
    }
    let replicas: Vec<String> = tally
        .orders_by_replica
        .iter()
        .map(|(replica, n)| format!("{replica} {n}"))
        .collect();
    if !replicas.is_empty() {
        text += &format!("  orders by replica: {}\n", replicas.join(", "));
    }
    text
}
