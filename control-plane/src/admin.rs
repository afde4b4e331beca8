//! The Admin gRPC service: apply, get, list, delete, the connected proxies, join
//! tokens and the CA.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_proto::resource::Kind;
use weft_proto::v1;

use crate::apply::Applier;
use crate::identity::{unix_now, Ca, Tokens};
use crate::inject::certificate::{self, ServingCert};
use crate::registry::Registry;
use crate::store::{Record, Store};
use crate::view::View;

pub struct AdminService {
    pub applier: Arc<Applier>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub ca: Arc<Ca>,
    pub tokens: Arc<Tokens>,
    /// The view served to proxies, for `List` with `served`.
    pub view: ServedView,
    /// The injection webhook, in Kubernetes mode.
    pub webhook: Option<WebhookInfo>,
}

/// The view served to proxies, read as of the store's latest write: a `List` with
/// `served` right after an `Apply` sees what it applied.
pub struct ServedView {
    pub view: watch::Receiver<Arc<View>>,
    /// The store revision the view maintainer last rebuilt from.
    pub considered: watch::Receiver<u64>,
    /// The store's current revision.
    pub revision: watch::Receiver<u64>,
}

/// How long a served `List` waits for the view to catch up with the store (its
/// rebuild is debounced by tens of milliseconds).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

impl ServedView {
    /// The served resources of `kind`, once the view is at least as recent as the
    /// store was when asked (or after [`CATCH_UP`], as it then is).
    async fn list(&self, kind: Kind) -> Vec<v1::Resource> {
        let wanted = *self.revision.borrow();
        let mut considered = self.considered.clone();
        let caught_up = considered.wait_for(|revision| *revision >= wanted);
        if tokio::time::timeout(CATCH_UP, caught_up).await.is_err() {
            tracing::warn!(
                wanted,
                "the served view did not catch up with the store in time"
            );
        }
        let view = self.view.borrow().of(kind);
        view.iter()
            .map(|(name, entry)| v1::Resource {
                name: name.to_string(),
                version: entry.version,
                body: Some(entry.body.as_ref().clone()),
            })
            .collect()
    }
}

/// What `GetWebhook` describes.
#[derive(Clone)]
pub struct WebhookInfo {
    pub configuration: String,
    pub cert: Arc<ServingCert>,
}

fn kind_of(type_url: &str) -> Result<Kind, Status> {
    Kind::from_type_url(type_url)
        .or_else(|| Kind::parse(type_url))
        .ok_or_else(|| Status::invalid_argument(format!("unknown resource type {type_url:?}")))
}

fn to_resource(record: Record) -> v1::Resource {
    v1::Resource {
        name: record.name,
        version: record.version,
        body: Some(prost_types::Any {
            type_url: record.kind.type_url().to_owned(),
            value: record.body,
        }),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn apply(
        &self,
        request: Request<v1::ApplyRequest>,
    ) -> Result<Response<v1::ApplyResponse>, Status> {
        let request = request.into_inner();
        if request.resources.is_empty() {
            return Err(Status::invalid_argument("no resources to apply"));
        }
        let results = self.applier.apply(&request.resources).await?;
        Ok(Response::new(v1::ApplyResponse { results }))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::Resource>, Status> {
        let request = request.into_inner();
        let kind = kind_of(&request.type_url)?;
        let name = weft_proto::model::ResourceName::parse(&request.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .to_string();
        match self.store.get(kind, &name).await.map_err(unavailable)? {
            Some(record) => Ok(Response::new(to_resource(record))),
            None => Err(Status::not_found(format!("{kind} {name} not found"))),
        }
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let request = request.into_inner();
        let kind = kind_of(&request.type_url)?;
        if request.served {
            let resources = self.view.list(kind).await;
            return Ok(Response::new(v1::ListResponse { resources }));
        }
        let records = self.store.list(kind).await.map_err(unavailable)?;
        Ok(Response::new(v1::ListResponse {
            resources: records.into_iter().map(to_resource).collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let request = request.into_inner();
        let kind = kind_of(&request.type_url)?;
        let name = weft_proto::model::ResourceName::parse(&request.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .to_string();
        match self.applier.delete(kind, &name).await? {
            Some(version) => Ok(Response::new(v1::DeleteResponse { version })),
            None => Err(Status::not_found(format!("{kind} {name} not found"))),
        }
    }

    async fn list_proxies(
        &self,
        _request: Request<v1::ListProxiesRequest>,
    ) -> Result<Response<v1::ListProxiesResponse>, Status> {
        Ok(Response::new(v1::ListProxiesResponse {
            proxies: self.registry.statuses(),
            control_plane_build: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        let (record, secret) = self
            .tokens
            .create(
                &request.namespace,
                &request.service_account,
                request.ttl_seconds,
                unix_now(),
            )
            .await?;
        tracing::info!(token = %record.id, namespace = %record.namespace, service_account = %record.service_account, expires_at = record.expires_at, "join token created");
        Ok(Response::new(v1::CreateTokenResponse {
            token: Some(record.to_proto()),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let tokens = self.tokens.list().await?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.iter().map(|t| t.to_proto()).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::Token>, Status> {
        let id = request.into_inner().id;
        match self.tokens.revoke(&id).await? {
            Some(record) => {
                tracing::info!(token = %record.id, "join token revoked");
                Ok(Response::new(record.to_proto()))
            }
            None => Err(Status::not_found(format!("token {id:?} not found"))),
        }
    }

    async fn get_ca(
        &self,
        _request: Request<v1::GetCaRequest>,
    ) -> Result<Response<v1::CaStatus>, Status> {
        Ok(Response::new(self.ca.status()))
    }

    async fn rotate_ca(
        &self,
        _request: Request<v1::RotateCaRequest>,
    ) -> Result<Response<v1::CaStatus>, Status> {
        Ok(Response::new(self.ca.rotate().await?))
    }

    async fn finish_ca_rotation(
        &self,
        _request: Request<v1::FinishCaRotationRequest>,
    ) -> Result<Response<v1::CaStatus>, Status> {
        Ok(Response::new(self.ca.finish_rotation().await?))
    }

    async fn get_webhook(
        &self,
        _request: Request<v1::GetWebhookRequest>,
    ) -> Result<Response<v1::WebhookStatus>, Status> {
        let Some(webhook) = &self.webhook else {
            return Err(Status::failed_precondition(
                "no injection webhook: the control plane runs without --kubernetes or --webhook-listen",
            ));
        };
        let described = webhook.cert.describe().unwrap_or_default();
        Ok(Response::new(v1::WebhookStatus {
            configuration: webhook.configuration.clone(),
            certificate_chain: described.chain_pem,
            names: described.names,
            not_after: described.not_after,
            ca_bundle: certificate::ca_bundle(&self.ca),
        }))
    }
}
