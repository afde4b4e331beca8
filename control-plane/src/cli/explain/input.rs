//! What `explain` is asked about: who calls ([`Source`]) and the request
//! ([`Request`]), read from the command line as curl takes a URL, `-X` and `-H`.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;
use weft_proto::model::route::GrpcRequest;
use weft_proto::model::{SpiffeId, TrustDomain};

/// Why `explain` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("source {0:?}: expected NAMESPACE/SERVICE_ACCOUNT, a SPIFFE ID, or NAMESPACE for a caller without an identity")]
    Source(String),
    #[error("destination {0:?}: expected http://HOST[:PORT]/PATH or grpc://HOST[:PORT]/package.Service/Method")]
    Destination(String),
    #[error("header {0:?}: expected NAME:VALUE")]
    Header(String),
    #[error("method {0:?} is not an HTTP method")]
    Method(String),
}

/// Who sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Consumer routes are chosen by this namespace.
    pub namespace: String,
    /// The identity its certificate carries; `None`: a plaintext caller.
    pub identity: Option<SpiffeId>,
}

impl Source {
    /// `NAMESPACE/SERVICE_ACCOUNT` (in `trust_domain`), a SPIFFE ID, or a bare
    /// `NAMESPACE` for a caller without an identity.
    pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<Source, ExplainError> {
        let bad = || ExplainError::Source(text.to_owned());
        if text.starts_with("spiffe://") {
            let id = SpiffeId::parse(text).map_err(|_| bad())?;
            return Ok(Source {
                namespace: id.namespace.clone(),
                identity: Some(id),
            });
        }
        match text.split_once('/') {
            Some((namespace, account)) => {
                let id =
                    SpiffeId::new(trust_domain.clone(), namespace, account).map_err(|_| bad())?;
                Ok(Source {
                    namespace: namespace.to_owned(),
                    identity: Some(id),
                })
            }
            None => {
                weft_proto::model::validate_label("namespace", text).map_err(|_| bad())?;
                Ok(Source {
                    namespace: text.to_owned(),
                    identity: None,
                })
            }
        }
    }
}

/// HTTP or a gRPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Grpc,
}

/// The request to explain.
#[derive(Debug, Clone)]
pub struct Request {
    pub scheme: Scheme,
    /// `host[:port]`, as the Host or `:authority`.
    pub authority: String,
    pub port: Option<u16>,
    pub path: String,
    pub query: Option<String>,
    pub method: Method,
    pub headers: HeaderMap,
}

impl Request {
    /// Reads `http://host[:port]/path?query` or `grpc://host[:port]/pkg.Service/Method`,
    /// with `-X` and `-H name:value` as curl takes them.
    pub fn parse(
        url: &str,
        method: Option<&str>,
        headers: &[String],
    ) -> Result<Request, ExplainError> {
        let bad = || ExplainError::Destination(url.to_owned());
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (Scheme::Grpc, rest)
        } else {
            return Err(bad());
        };
        let (authority, path_and_query) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad());
        }
        let port = match authority.rsplit_once(':') {
            Some((_, port)) if !authority.ends_with(']') => {
                Some(port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => None,
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (path_and_query, None),
        };
        if scheme == Scheme::Grpc && GrpcRequest::from_path(path, None, &HeaderMap::new()).is_none()
        {
            return Err(bad());
        }
        let method = match (method, scheme) {
            (Some(m), _) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| ExplainError::Method(m.to_owned()))?
            }
            (None, Scheme::Http) => Method::GET,
            (None, Scheme::Grpc) => Method::POST,
        };
        let mut map = HeaderMap::new();
        for header in headers {
            let bad = || ExplainError::Header(header.clone());
            let (name, value) = header.split_once(':').ok_or_else(bad)?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
            map.append(name, value);
        }
        Ok(Request {
            scheme,
            authority: authority.to_owned(),
            port,
            path: path.to_owned(),
            query,
            method,
            headers: map,
        })
    }
}
