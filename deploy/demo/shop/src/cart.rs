//! `cart`: each user's shopping cart (HTTP/1.1 + JSON). Calls `products` over gRPC to
//! check an item before adding it.
//!
//! ```text
//! POST   /carts/{user}/items {"product","quantity"} -> 201 cart | 422 unknown product | 409 short stock
//! GET    /carts/{user}                               -> 200 {"user","items":[..],"total_cents"}
//! DELETE /carts/{user}/items/{product}               -> 204 | 404
//! GET    /health                                     -> 200
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::{self, Handler, Reply, ShopRequest};
use crate::products::{Product, ProductsApi};

/// One line of a cart. The name and price are copied in when the item is added, so
/// reading a cart needs no call to `products`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub product: String,
    pub name: String,
    pub quantity: u32,
    pub price_cents: i64,
    pub line_cents: i64,
}

/// A user's cart, keyed by product id (a BTreeMap so items list in a stable order).
#[derive(Debug, Default)]
pub struct Cart {
    lines: BTreeMap<String, Line>,
}

/// Adding would put more in the cart than the catalog has in stock.
#[derive(Debug, PartialEq)]
pub struct ShortStock {
    pub wanted: u32,
    pub stock: u32,
}

impl Cart {
    /// Adds `quantity` of `product`, refusing more than its stock counting what is already
    /// in the cart.
    pub fn add(&mut self, product: &Product, quantity: u32) -> Result<(), ShortStock> {
        let already = self.lines.get(&product.id).map_or(0, |l| l.quantity);
        let wanted = already.saturating_add(quantity);
        if wanted > product.stock {
            return Err(ShortStock {
                wanted,
                stock: product.stock,
            });
        }
        self.lines.insert(
            product.id.clone(),
            Line {
                product: product.id.clone(),
                name: product.name.clone(),
                quantity: wanted,
                price_cents: product.price_cents,
                line_cents: product.price_cents.saturating_mul(i64::from(wanted)),
            },
        );
        Ok(())
    }

    /// Removes a product; false when it was not in the cart.
    pub fn remove(&mut self, product: &str) -> bool {
        self.lines.remove(product).is_some()
    }

    pub fn total_cents(&self) -> i64 {
        self.lines
            .values()
            .fold(0, |sum, l| sum.saturating_add(l.line_cents))
    }

    fn view(&self, user: &str) -> serde_json::Value {
        serde_json::json!({
            "user": user,
            "items": self.lines.values().collect::<Vec<_>>(),
            "total_cents": self.total_cents(),
        })
    }
}

#[derive(Deserialize)]
struct NewItem {
    product: String,
    quantity: u32,
}

pub struct Carts {
    products: ProductsApi,
    // A std Mutex: nothing awaits while it is held (the product is looked up before).
    carts: Mutex<HashMap<String, Cart>>,
}

impl Carts {
    pub fn new(products: ProductsApi) -> Self {
        Carts {
            products,
            carts: Mutex::new(HashMap::new()),
        }
    }

    async fn add(&self, user: &str, request: &ShopRequest) -> Reply {
        let item: NewItem = match request.json() {
            Ok(item) => item,
            Err(reply) => return *reply,
        };
        if item.quantity == 0 {
            return http::error(StatusCode::BAD_REQUEST, "quantity must be at least 1");
        }
        let product = match self.products.get(&item.product).await {
            Ok(product) => product,
            Err(e) => return e.reply(),
        };
        let mut carts = self.carts.lock().unwrap_or_else(|e| e.into_inner());
        let cart = carts.entry(user.to_owned()).or_default();
        match cart.add(&product, item.quantity) {
            Ok(()) => http::json(StatusCode::CREATED, &cart.view(user)),
            Err(short) => http::error(
                StatusCode::CONFLICT,
                format!(
                    "only {} of {:?} in stock, the cart would hold {}",
                    short.stock, product.id, short.wanted
                ),
            ),
        }
    }
}

impl Handler for Carts {
    async fn handle(&self, request: ShopRequest) -> Reply {
        let (method, path) = request.route();
        match (method, path.as_slice()) {
            (&Method::GET, ["health"]) => http::empty(StatusCode::OK),
            (&Method::POST, ["carts", user, "items"]) => self.add(user, &request).await,
            (&Method::GET, ["carts", user]) => {
                let carts = self.carts.lock().unwrap_or_else(|e| e.into_inner());
                // A user who never added anything has an empty cart, not a 404.
                let view = match carts.get(*user) {
                    Some(cart) => cart.view(user),
                    None => Cart::default().view(user),
                };
                http::json(StatusCode::OK, &view)
            }
            (&Method::DELETE, ["carts", user, "items", product]) => {
                let mut carts = self.carts.lock().unwrap_or_else(|e| e.into_inner());
                let removed = carts
                    .get_mut(*user)
                    .is_some_and(|cart| cart.remove(product));
                if removed {
                    http::empty(StatusCode::NO_CONTENT)
                } else {
                    http::error(StatusCode::NOT_FOUND, "not in the cart")
                }
            }
            _ => http::error(StatusCode::NOT_FOUND, "no such route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::{catalog, find};

    fn product(id: &str) -> Product {
        find(&catalog(), id).expect("in the catalog")
    }

    #[test]
    fn totals_add_up_across_lines_and_repeated_adds() {
        let mut cart = Cart::default();
        cart.add(&product("ceramic-mug"), 2).expect("in stock");
        cart.add(&product("paper-filters"), 1).expect("in stock");
        cart.add(&product("ceramic-mug"), 1).expect("in stock");
        assert_eq!(cart.lines["ceramic-mug"].quantity, 3);
        assert_eq!(cart.total_cents(), 3 * 1200 + 650);
        assert!(cart.remove("ceramic-mug"));
        assert!(!cart.remove("ceramic-mug"));
        assert_eq!(cart.total_cents(), 650);
    }

    #[test]
    fn stock_counts_what_is_already_in_the_cart() {
        let mut cart = Cart::default();
        let grinder = product("hand-grinder");
        cart.add(&grinder, grinder.stock)
            .expect("exactly the stock");
        assert_eq!(
            cart.add(&grinder, 1),
            Err(ShortStock {
                wanted: grinder.stock + 1,
                stock: grinder.stock
            })
        );
        assert_eq!(
            cart.add(&product("espresso-machine"), 1),
            Err(ShortStock {
                wanted: 1,
                stock: 0
            })
        );
        // A refused add leaves the cart as it was.
        assert_eq!(cart.total_cents(), 8900 * i64::from(grinder.stock));
    }
}
