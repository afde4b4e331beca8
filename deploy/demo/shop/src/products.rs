//! `products`: the catalog, served over gRPC (`shop.v1.Products`, HTTP/2 without TLS;
//! the sidecars add mTLS between pods) with the standard `grpc.health.v1` service next
//! to it. Also the client cart and orders use to call it.
//!
//! The catalog is fixed and the same on every replica, so any replica can answer any
//! call and the mesh may balance freely between them. Stock is not decremented by
//! orders: with two replicas each holding its own copy it would drift apart, and the
//! demo is about the calls, not about inventory.

use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

use crate::proto::products_client::ProductsClient;
use crate::proto::products_server::{self, ProductsServer};
use crate::proto::{self as pb};

/// A catalog entry, the domain type the services work with (the proto message is
/// converted at the edge).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: u32,
}

/// The seeded catalog. One item is sold out so a caller can see the 409 path.
pub fn catalog() -> Vec<Product> {
    let item = |id: &str, name: &str, price_cents, stock| Product {
        id: id.into(),
        name: name.into(),
        price_cents,
        stock,
    };
    vec![
        item("espresso-beans", "Espresso beans, 1 kg", 2450, 500),
        item("pour-over-kettle", "Pour-over kettle", 5900, 120),
        item("ceramic-mug", "Ceramic mug", 1200, 800),
        item("hand-grinder", "Hand grinder", 8900, 60),
        item("paper-filters", "Paper filters, 100", 650, 1000),
        item("espresso-machine", "Espresso machine", 49900, 0),
    ]
}

/// The catalog entry with this id.
pub fn find(catalog: &[Product], id: &str) -> Option<Product> {
    catalog.iter().find(|p| p.id == id).cloned()
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        pb::Product {
            id: p.id,
            name: p.name,
            price_cents: p.price_cents,
            stock: p.stock,
        }
    }
}

impl From<pb::Product> for Product {
    fn from(p: pb::Product) -> Self {
        Product {
            id: p.id,
            name: p.name,
            price_cents: p.price_cents,
            stock: p.stock,
        }
    }
}

/// The gRPC service: the catalog and the name of this replica.
struct Catalog {
    products: Vec<Product>,
    replica: String,
}

#[tonic::async_trait]
impl products_server::Products for Catalog {
    async fn list_products(
        &self,
        _request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Ok(Response::new(pb::ListProductsResponse {
            products: self.products.iter().cloned().map(Into::into).collect(),
            served_by: self.replica.clone(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = request.into_inner().id;
        let product = find(&self.products, &id)
            .ok_or_else(|| Status::not_found(format!("no product {id:?}")))?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product.into()),
            served_by: self.replica.clone(),
        }))
    }
}

/// Serves the catalog and its health until SIGTERM or Ctrl-C; then lets calls in flight
/// finish for at most [`crate::SHUTDOWN_GRACE`]. The bound matters: tonic's graceful
/// shutdown otherwise waits for every client to close its connection, and a caller's
/// idle pooled connection would keep a stopped replica alive.
pub async fn serve(listener: TcpListener, replica: String) -> anyhow::Result<()> {
    let shutdown = crate::shutdown_signal();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProductsServer<Catalog>>().await;
    let catalog = Catalog {
        products: catalog(),
        replica,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health_service)
        .add_service(ProductsServer::new(catalog))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return Ok(served?),
        () = shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(crate::SHUTDOWN_GRACE, server).await {
        Ok(served) => served?,
        Err(_) => tracing::warn!(
            "calls still open after {:?}, closing them",
            crate::SHUTDOWN_GRACE
        ),
    }
    Ok(())
}

/// How a call to `products` went wrong, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no product {0:?}")]
    NotFound(String),
    #[error("products: {0}")]
    Upstream(String),
}

impl LookupError {
    /// The HTTP answer of a service whose request named this product: 422 for a
    /// product that does not exist, 502 when `products` could not be asked.
    pub fn reply(self) -> crate::http::Reply {
        match self {
            LookupError::NotFound(id) => crate::http::error(
                hyper::StatusCode::UNPROCESSABLE_ENTITY,
                format!("no product {id:?}"),
            ),
            LookupError::Upstream(e) => crate::http::upstream_error("products", e),
        }
    }
}

/// The client side: one lazily connected channel per upstream, shared by every call
/// (HTTP/2 multiplexes them on one connection).
#[derive(Clone)]
pub struct ProductsApi {
    client: ProductsClient<Channel>,
}

impl ProductsApi {
    /// `url` is `http://HOST:PORT`. Nothing connects until the first call, so a caller
    /// may start before products does.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| anyhow::anyhow!("bad products URL {url:?}: {e}"))?
            .timeout(crate::http::CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(ProductsApi {
            client: ProductsClient::new(channel),
        })
    }

    /// The whole catalog and the replica that served it.
    pub async fn list(&self) -> Result<(Vec<Product>, String), LookupError> {
        let response = self
            .client
            .clone()
            .list_products(retryable(pb::ListProductsRequest {}))
            .await
            .map_err(|s| LookupError::Upstream(describe(&s)))?
            .into_inner();
        let products = response.products.into_iter().map(Into::into).collect();
        Ok((products, response.served_by))
    }

    /// One product.
    pub async fn get(&self, id: &str) -> Result<Product, LookupError> {
        let response = self
            .client
            .clone()
            .get_product(retryable(pb::GetProductRequest { id: id.to_owned() }))
            .await
            .map_err(|status| match status.code() {
                Code::NotFound => LookupError::NotFound(id.to_owned()),
                _ => LookupError::Upstream(describe(&status)),
            })?
            .into_inner();
        response
            .product
            .map(Into::into)
            .ok_or_else(|| LookupError::Upstream("a reply without a product".into()))
    }
}

/// Both calls only read, so they are safe to repeat: tell the mesh (the gRPC form of
/// the `weft-retryable` header is the same metadata key).
/// A call marked safe to repeat, carrying the trace context of the request being
/// handled (if any).
fn retryable<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    let mut headers = std::mem::take(metadata).into_headers();
    crate::propagate::inject(&mut headers);
    *metadata = tonic::metadata::MetadataMap::from_headers(headers);
    metadata.insert(
        "weft-retryable",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lookups() {
        let catalog = catalog();
        assert_eq!(catalog.len(), 6);
        let mug = find(&catalog, "ceramic-mug").expect("the mug is in the catalog");
        assert_eq!(mug.price_cents, 1200);
        assert_eq!(find(&catalog, "teapot"), None);
        // Ids are unique, or lookups would be ambiguous.
        let mut ids: Vec<_> = catalog.iter().map(|p| &p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), catalog.len());
    }

    #[test]
    fn reads_carry_the_retryable_metadata() {
        let request = retryable(pb::GetProductRequest::default());
        let value = request.metadata().get("weft-retryable");
        assert_eq!(value.and_then(|v| v.to_str().ok()), Some("true"));
    }

    #[test]
    fn proto_round_trip_keeps_every_field() {
        for product in catalog() {
            let message: pb::Product = product.clone().into();
            assert_eq!(Product::from(message), product);
        }
    }
}
