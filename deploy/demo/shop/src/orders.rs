//! `orders`: creates, pays and confirms orders (HTTP/1.1 + JSON). Calls `users` over
//! HTTP/1.1 and `products` over gRPC, so it is the shop's busiest hop.
//!
//! ```text
//! POST /orders {"user","items":[{"product","quantity"}],"checkout":bool}
//!                         -> 201 order | 422 unknown user/product | 409 short stock | 502 upstream
//! POST /orders/{id}/pay      -> 200 order | 409 wrong state | 404
//! POST /orders/{id}/confirm  -> 200 order | 409 wrong state | 404
//! GET  /orders/{id}          -> 200 order | 404
//! GET  /health               -> 200
//! ```
//!
//! Each replica keeps its own orders in memory, and two replicas run behind one
//! address: a later `POST /orders/{id}/pay` may well land on the other replica, which
//! answers 404. That is why the shopper checks out in one call (`"checkout": true`):
//! create, pay and confirm happen on the replica that took the order.
//!
//! An `Idempotency-Key` header makes `POST /orders` safe to repeat: the replica answers
//! a repeated key with the order the first request made. The mesh may then retry the
//! POST (the caller marks it `weft-retryable`) when a replica dies mid-request, without
//! a second order on a replica that did get the first one.

use std::collections::HashMap;
use std::sync::Mutex;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::{self, Handler, Reply, ShopRequest, Upstream, IDEMPOTENCY_KEY};
use crate::products::ProductsApi;
use crate::users::User;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Paid,
    Confirmed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Paid => "paid",
            Status::Confirmed => "confirmed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub product: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    pub id: u64,
    pub user: u64,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub status: Status,
    /// Every status the order went through, oldest first.
    pub history: Vec<Status>,
}

/// A move the order's current status does not allow (paying twice, confirming unpaid).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("order is {from}, cannot move to {to}")]
pub struct WrongState {
    pub from: Status,
    pub to: Status,
}

impl Order {
    /// created -> paid -> confirmed, nothing else.
    fn advance(&mut self, to: Status) -> Result<(), WrongState> {
        let allowed = matches!(
            (self.status, to),
            (Status::Created, Status::Paid) | (Status::Paid, Status::Confirmed)
        );
        if !allowed {
            return Err(WrongState {
                from: self.status,
                to,
            });
        }
        self.status = to;
        self.history.push(to);
        Ok(())
    }

    pub fn pay(&mut self) -> Result<(), WrongState> {
        self.advance(Status::Paid)
    }

    pub fn confirm(&mut self) -> Result<(), WrongState> {
        self.advance(Status::Confirmed)
    }
}

/// This replica's orders and the idempotency keys it has seen.
#[derive(Debug, Default)]
pub struct Book {
    orders: HashMap<u64, Order>,
    /// Key -> the order its first request created. Kept for the life of the process:
    /// the demo runs for minutes, and a real service would expire keys after a day.
    by_key: HashMap<String, u64>,
    last_id: u64,
}

/// What `Book::place` did.
#[derive(Debug, PartialEq)]
pub enum Placed {
    New(Order),
    /// The key was seen before: this is the order its first request made.
    Repeat(Order),
}

impl Book {
    /// Records a new order (already validated), checked out at once when asked, unless
    /// `key` was seen before. Creation and checkout happen under one lock, so two
    /// concurrent requests with one key cannot both create.
    pub fn place(
        &mut self,
        key: Option<&str>,
        user: u64,
        items: Vec<Item>,
        total_cents: i64,
        checkout: bool,
    ) -> Placed {
        if let Some(order) = key
            .and_then(|k| self.by_key.get(k))
            .and_then(|id| self.orders.get(id))
        {
            return Placed::Repeat(order.clone());
        }
        self.last_id += 1;
        let mut order = Order {
            id: self.last_id,
            user,
            items,
            total_cents,
            status: Status::Created,
            history: vec![Status::Created],
        };
        if checkout {
            // A fresh order is `created`, so both moves are allowed.
            let _ = order.pay().and_then(|()| order.confirm());
        }
        if let Some(key) = key {
            self.by_key.insert(key.to_owned(), order.id);
        }
        self.orders.insert(order.id, order.clone());
        Placed::New(order)
    }

    /// Applies `step` to order `id`: None when this replica does not hold it.
    pub fn update(
        &mut self,
        id: u64,
        step: fn(&mut Order) -> Result<(), WrongState>,
    ) -> Option<Result<Order, WrongState>> {
        let order = self.orders.get_mut(&id)?;
        Some(step(order).map(|()| order.clone()))
    }

    pub fn get(&self, id: u64) -> Option<&Order> {
        self.orders.get(&id)
    }
}

#[derive(Deserialize)]
struct NewOrder {
    user: u64,
    items: Vec<Item>,
    #[serde(default)]
    checkout: bool,
}

pub struct Orders {
    users: Upstream,
    products: ProductsApi,
    // A std Mutex: the upstream calls happen before it is taken, never while it is held.
    book: Mutex<Book>,
}

impl Orders {
    pub fn new(users: Upstream, products: ProductsApi) -> Self {
        Orders {
            users,
            products,
            book: Mutex::new(Book::default()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn create(&self, request: &ShopRequest) -> Reply {
        let new: NewOrder = match request.json() {
            Ok(new) => new,
            Err(reply) => return *reply,
        };
        if new.items.is_empty() || new.items.iter().any(|i| i.quantity == 0) {
            return http::error(
                StatusCode::BAD_REQUEST,
                "an order needs items, each with a quantity of at least 1",
            );
        }
        let key = match request.headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(_)) => {
                return http::error(StatusCode::BAD_REQUEST, "Idempotency-Key must be text")
            }
        };
        // A repeat needs no validation: answer it before calling anyone.
        if let Some(order) = key.and_then(|k| {
            let book = self.book();
            book.by_key.get(k).and_then(|id| book.get(*id)).cloned()
        }) {
            return http::json(StatusCode::CREATED, &order);
        }

        match self.users.get(&format!("/users/{}", new.user)).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                // Check the answer is a user, so a misrouted call cannot pass for one.
                if let Err(e) = answer.json::<User>() {
                    return http::upstream_error("users", e);
                }
            }
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
                return http::error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("no user {}", new.user),
                )
            }
            Ok(answer) => {
                return http::upstream_error(
                    "users",
                    format!("{} {}", answer.status, answer.excerpt()),
                )
            }
            Err(e) => return http::upstream_error("users", e),
        }

        let mut total_cents: i64 = 0;
        for item in &new.items {
            let product = match self.products.get(&item.product).await {
                Ok(product) => product,
                Err(e) => return e.reply(),
            };
            if product.stock < item.quantity {
                return http::error(
                    StatusCode::CONFLICT,
                    format!("only {} of {:?} in stock", product.stock, product.id),
                );
            }
            let line_cents = product.price_cents.saturating_mul(i64::from(item.quantity));
            total_cents = total_cents.saturating_add(line_cents);
        }

        // Only a created order is remembered under its key: a request that failed above
        // made nothing, so repeating it is safe as it is.
        match self
            .book()
            .place(key, new.user, new.items, total_cents, new.checkout)
        {
            Placed::New(order) | Placed::Repeat(order) => http::json(StatusCode::CREATED, &order),
        }
    }

    fn step(&self, id: &str, step: fn(&mut Order) -> Result<(), WrongState>) -> Reply {
        let Ok(id) = id.parse() else {
            return http::error(StatusCode::NOT_FOUND, "no such order");
        };
        match self.book().update(id, step) {
            Some(Ok(order)) => http::json(StatusCode::OK, &order),
            Some(Err(wrong)) => http::error(StatusCode::CONFLICT, wrong.to_string()),
            None => http::error(StatusCode::NOT_FOUND, "no such order on this replica"),
        }
    }
}

impl Handler for Orders {
    async fn handle(&self, request: ShopRequest) -> Reply {
        let (method, path) = request.route();
        match (method, path.as_slice()) {
            (&Method::GET, ["health"]) => http::empty(StatusCode::OK),
            (&Method::POST, ["orders"]) => self.create(&request).await,
            (&Method::POST, ["orders", id, "pay"]) => self.step(id, Order::pay),
            (&Method::POST, ["orders", id, "confirm"]) => self.step(id, Order::confirm),
            (&Method::GET, ["orders", id]) => {
                let order = id.parse().ok().and_then(|id| self.book().get(id).cloned());
                match order {
                    Some(order) => http::json(StatusCode::OK, &order),
                    None => http::error(StatusCode::NOT_FOUND, "no such order on this replica"),
                }
            }
            _ => http::error(StatusCode::NOT_FOUND, "no such route"),
        }
    }
}

#[cfg(test)]
mod tests;
