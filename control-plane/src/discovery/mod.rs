//! The Discovery service: one delta stream per proxy.
//!
//! The handler checks the proxy's Hello and hands the stream to [`stream::run`], which
//! registers its workload ([`registration`]) and pushes the difference between the
//! view and what the proxy holds every time either changes.

mod diff;
pub mod registration;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::model::{self, validate_label};
use weft_proto::v1;

pub use diff::{diff, Diff, Held, Interest};

use crate::registry::Registry;
use crate::view::View;
use registration::Registrar;

/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DiscoveryService {
    pub view: watch::Receiver<Arc<View>>,
    pub registry: Arc<Registry>,
    pub registrar: Registrar,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<v1::DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::discovery_server::Discovery for DiscoveryService {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<v1::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))??;
        let hello = match first.and_then(|m| m.request) {
            Some(v1::discovery_request::Request::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        let node = hello
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("hello.node: missing"))?;
        validate_node(&node).map_err(|e| Status::invalid_argument(format!("hello.node.{e}")))?;

        let (tx, rx) = mpsc::channel(1);
        let context = stream::Context {
            view: self.view.clone(),
            registry: self.registry.clone(),
            registrar: self.registrar.clone(),
        };
        tokio::spawn(stream::run(context, hello, node, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A node needs an id; a workload, when it names a service, must make valid endpoints.
fn validate_node(node: &v1::Node) -> Result<(), model::Invalid> {
    if node.id.is_empty() {
        return Err(model::Invalid::new("id", "must not be empty"));
    }
    if !node.admin_address.is_empty() {
        model::validate_host_port("admin_address", &node.admin_address)?;
    }
    let Some(workload) = node.workload.as_ref().filter(|w| !w.service.is_empty()) else {
        return Ok(());
    };
    let within = |e: model::Invalid| e.within("workload");
    validate_label("namespace", &workload.namespace).map_err(within)?;
    validate_label("service", &workload.service).map_err(within)?;
    if workload.ports.is_empty() {
        return Err(within(model::Invalid::new(
            "ports",
            "at least one port is needed",
        )));
    }
    if !matches!(
        workload.health.as_str(),
        "" | "healthy" | "unhealthy" | "draining"
    ) {
        return Err(within(model::Invalid::new(
            "health",
            format!(
                "unknown state {:?} (expected healthy, unhealthy or draining)",
                workload.health
            ),
        )));
    }
    for (i, port) in workload.ports.iter().enumerate() {
        let endpoint = v1::Endpoint {
            address: workload.address.clone(),
            port: port.port,
            port_name: port.name.clone(),
            weight: workload.weight,
            identity: workload.identity.clone(),
            ..Default::default()
        };
        model::Endpoint::try_from(&endpoint).map_err(|e| {
            let field = match e.field.as_str() {
                "address" | "weight" | "identity" => e.field.clone(),
                _ => format!("ports[{i}].{}", e.field),
            };
            model::Invalid::new(format!("workload.{field}"), e.reason)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(admin_address: &str) -> v1::Node {
        v1::Node {
            id: "web-0".into(),
            admin_address: admin_address.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_announced_admin_address_must_be_host_and_port() {
        assert!(validate_node(&node("")).is_ok());
        assert!(validate_node(&node("10.0.0.7:15020")).is_ok());
        assert!(validate_node(&node("web-0.shop:15020")).is_ok());
        let error = validate_node(&node("10.0.0.7")).expect_err("no port");
        assert_eq!(error.field, "admin_address");
        assert!(error.reason.contains("not host:port"), "{error}");
    }
}
