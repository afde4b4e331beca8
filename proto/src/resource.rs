//! Resource kinds, their type URLs, and decoding of a `google.protobuf.Any` body into
//! a validated domain value.
//!
//! The discovery stream and the store treat bodies as opaque bytes keyed by type URL
//! and name; only the edges (an admin write, a proxy applying a push) decode them here.
//! Adding a resource type means a variant in [`Kind`] and [`Body`], nothing in the
//! stream mechanism.

use std::fmt;

use prost::Message;
use prost_types::Any;

use crate::model::{self, Invalid, ResourceName};
use crate::v1;

const TYPE_PREFIX: &str = "type.googleapis.com/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Endpoints,
    /// Published by the control plane's CA, never applied by operators.
    TrustBundle,
    AuthorizationPolicy,
    /// The Gateway API's HTTPRoute, attached to services (GAMMA).
    HttpRoute,
    /// The Gateway API's GRPCRoute, attached to services (GAMMA).
    GrpcRoute,
}

impl Kind {
    /// In the order a mesh is applied and pushed: routes after the services they
    /// attach to.
    pub const ALL: [Kind; 6] = [
        Kind::Service,
        Kind::Endpoints,
        Kind::TrustBundle,
        Kind::AuthorizationPolicy,
        Kind::HttpRoute,
        Kind::GrpcRoute,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Service => "type.googleapis.com/weft.v1.Service",
            Kind::Endpoints => "type.googleapis.com/weft.v1.Endpoints",
            Kind::TrustBundle => "type.googleapis.com/weft.v1.TrustBundle",
            Kind::AuthorizationPolicy => "type.googleapis.com/weft.v1.AuthorizationPolicy",
            Kind::HttpRoute => "type.googleapis.com/weft.v1.HTTPRoute",
            Kind::GrpcRoute => "type.googleapis.com/weft.v1.GRPCRoute",
        }
    }

    /// The name used in YAML documents (`kind: Service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::TrustBundle => "TrustBundle",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
        }
    }

    pub fn from_type_url(type_url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == type_url)
    }

    /// Accepts the YAML kind and the usual CLI spellings (`service`, `svc`, `endpoints`,
    /// `ep`, `authz`, `httproutes`, `grpcroutes`).
    pub fn parse(text: &str) -> Option<Kind> {
        match text.to_ascii_lowercase().as_str() {
            "service" | "services" | "svc" => Some(Kind::Service),
            "endpoints" | "endpoint" | "ep" => Some(Kind::Endpoints),
            "trustbundle" | "trustbundles" | "trust-bundle" | "tb" => Some(Kind::TrustBundle),
            "authorizationpolicy" | "authorizationpolicies" | "authz" | "authzpolicy" => {
                Some(Kind::AuthorizationPolicy)
            }
            "httproute" | "httproutes" => Some(Kind::HttpRoute),
            "grpcroute" | "grpcroutes" => Some(Kind::GrpcRoute),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded and validated resource body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Service(model::Service),
    Endpoints(model::Endpoints),
    TrustBundle(model::TrustBundle),
    AuthorizationPolicy(model::AuthorizationPolicy),
    HttpRoute(model::HttpRoute),
    GrpcRoute(model::GrpcRoute),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Service(_) => Kind::Service,
            Body::Endpoints(_) => Kind::Endpoints,
            Body::TrustBundle(_) => Kind::TrustBundle,
            Body::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Body::HttpRoute(_) => Kind::HttpRoute,
            Body::GrpcRoute(_) => Kind::GrpcRoute,
        }
    }

    pub fn name(&self) -> &ResourceName {
        match self {
            Body::Service(s) => &s.name,
            Body::Endpoints(e) => &e.name,
            Body::TrustBundle(b) => &b.name,
            Body::AuthorizationPolicy(p) => &p.name,
            Body::HttpRoute(r) => &r.name,
            Body::GrpcRoute(r) => &r.name,
        }
    }

    pub fn to_any(&self) -> Any {
        match self {
            Body::Service(s) => to_any(Kind::Service, &s.to_proto()),
            Body::Endpoints(e) => to_any(Kind::Endpoints, &e.to_proto()),
            Body::TrustBundle(b) => to_any(Kind::TrustBundle, &b.to_proto()),
            Body::AuthorizationPolicy(p) => to_any(Kind::AuthorizationPolicy, &p.to_proto()),
            Body::HttpRoute(r) => to_any(Kind::HttpRoute, &r.to_proto()),
            Body::GrpcRoute(r) => to_any(Kind::GrpcRoute, &r.to_proto()),
        }
    }

    /// The encoded message of the body's kind, as stored and streamed.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Body::Service(s) => s.to_proto().encode_to_vec(),
            Body::Endpoints(e) => e.to_proto().encode_to_vec(),
            Body::TrustBundle(b) => b.to_proto().encode_to_vec(),
            Body::AuthorizationPolicy(p) => p.to_proto().encode_to_vec(),
            Body::HttpRoute(r) => r.to_proto().encode_to_vec(),
            Body::GrpcRoute(r) => r.to_proto().encode_to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing resource body")]
    MissingBody,
    #[error("unknown resource type {0:?}")]
    UnknownType(String),
    #[error("malformed {kind} body: {reason}")]
    Malformed { kind: Kind, reason: String },
    #[error("{kind} {name}: {invalid}")]
    Invalid {
        kind: Kind,
        name: String,
        invalid: Invalid,
    },
}

/// Decodes and validates a body.
pub fn decode(any: &Any) -> Result<Body, DecodeError> {
    let kind = Kind::from_type_url(&any.type_url)
        .ok_or_else(|| DecodeError::UnknownType(any.type_url.clone()))?;
    let malformed = |e: prost::DecodeError| DecodeError::Malformed {
        kind,
        reason: e.to_string(),
    };
    let invalid = |namespace: &str, name: &str, invalid: Invalid| DecodeError::Invalid {
        kind,
        name: format!("{namespace}/{name}"),
        invalid,
    };
    match kind {
        Kind::Service => {
            let msg = v1::Service::decode(any.value.as_slice()).map_err(malformed)?;
            model::Service::try_from(&msg)
                .map(Body::Service)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
        Kind::Endpoints => {
            let msg = v1::Endpoints::decode(any.value.as_slice()).map_err(malformed)?;
            model::Endpoints::try_from(&msg)
                .map(Body::Endpoints)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
        Kind::TrustBundle => {
            let msg = v1::TrustBundle::decode(any.value.as_slice()).map_err(malformed)?;
            model::TrustBundle::try_from(&msg)
                .map(Body::TrustBundle)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
        Kind::AuthorizationPolicy => {
            let msg = v1::AuthorizationPolicy::decode(any.value.as_slice()).map_err(malformed)?;
            model::AuthorizationPolicy::try_from(&msg)
                .map(Body::AuthorizationPolicy)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
        Kind::HttpRoute => {
            let msg = v1::HttpRoute::decode(any.value.as_slice()).map_err(malformed)?;
            model::HttpRoute::try_from(&msg)
                .map(Body::HttpRoute)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
        Kind::GrpcRoute => {
            let msg = v1::GrpcRoute::decode(any.value.as_slice()).map_err(malformed)?;
            model::GrpcRoute::try_from(&msg)
                .map(Body::GrpcRoute)
                .map_err(|e| invalid(&msg.namespace, &msg.name, e))
        }
    }
}

/// Decodes a resource envelope's body and checks that the envelope's name matches it.
pub fn decode_resource(resource: &v1::Resource) -> Result<Body, DecodeError> {
    let any = resource.body.as_ref().ok_or(DecodeError::MissingBody)?;
    let body = decode(any)?;
    let name = body.name().to_string();
    if !resource.name.is_empty() && resource.name != name {
        return Err(DecodeError::Invalid {
            kind: body.kind(),
            name: resource.name.clone(),
            invalid: Invalid::new(
                "name",
                format!(
                    "envelope name {:?} differs from the body's {name:?}",
                    resource.name
                ),
            ),
        });
    }
    Ok(body)
}

pub fn to_any(kind: Kind, message: &impl Message) -> Any {
    Any {
        type_url: kind.type_url().to_owned(),
        value: message.encode_to_vec(),
    }
}

/// The short type name of a type URL (`weft.v1.Service`), for logs and tables.
pub fn short_type(type_url: &str) -> &str {
    type_url.strip_prefix(TYPE_PREFIX).unwrap_or(type_url)
}
