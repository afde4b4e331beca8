//! URLRewrite and RequestRedirect on the data path (HTTPRoute only): a rewrite
//! changes the request's path or host before it is forwarded; a redirect answers
//! the request itself with a `Location` and forwards nothing.
//!
//! What the new path and `Location` are is the route model's to say
//! ([`PathModifier::apply`](weft_proto::model::route::PathModifier::apply),
//! [`RequestRedirect::location`]); this module reads the request and writes the
//! result into it.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use weft_proto::model::route::{
    request_host, PathMatch, RedirectFrom, RequestRedirect, UrlRewrite,
};

use super::super::body::ProxyBody;
use super::super::headers;
use super::super::routing::Matched;

/// Why a rewrite or redirect could not be carried out. Validation keeps paths and
/// hostnames to characters a request target takes, so only a request that names
/// no host at all (HTTP/1.0 without `Host`) meets one in practice.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unrewritable {
    #[error("the rewritten path {0:?} is not a request target")]
    Path(String),
    #[error("the rewritten host {0:?} is not an authority")]
    Host(String),
    #[error("the redirect's Location {0:?} is not a header value")]
    Location(String),
    #[error("the request names no host to redirect to")]
    NoHost,
}

/// The match a rewrite of a rule without a PathPrefix match replaces nothing of.
const NO_PREFIX: PathMatch = PathMatch::Exact(String::new());

/// Applies a URLRewrite: the path (its query kept), and the host wherever the
/// request names it (`:authority` and `Host`).
pub(super) fn rewrite<B>(
    request: &mut Request<B>,
    rewrite: &UrlRewrite,
    matched: Option<&PathMatch>,
) -> Result<(), Unrewritable> {
    if let Some(modifier) = &rewrite.path {
        let uri = request.uri();
        let path = modifier.apply(uri.path(), matched.unwrap_or(&NO_PREFIX));
        let target = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let path_and_query =
            PathAndQuery::try_from(target.as_str()).map_err(|_| Unrewritable::Path(target))?;
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        *request.uri_mut() = Uri::from_parts(parts)
            .map_err(|_| Unrewritable::Path(request.uri().path().to_owned()))?;
    }
    if let Some(hostname) = &rewrite.hostname {
        let invalid = || Unrewritable::Host(hostname.clone());
        let value = HeaderValue::from_str(hostname).map_err(|_| invalid())?;
        let had_authority = request.uri().authority().is_some();
        if had_authority {
            let mut parts = request.uri().clone().into_parts();
            parts.authority = Some(Authority::try_from(hostname.as_str()).map_err(|_| invalid())?);
            *request.uri_mut() = Uri::from_parts(parts).map_err(|_| invalid())?;
        }
        // An HTTP/1 request names its host in `Host`; an HTTP/2 one in
        // `:authority`, and in `Host` only if its client sent one too.
        if !had_authority || request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, value);
        }
    }
    Ok(())
}

/// Answers a request with the redirect: its status and `Location`, no body.
pub(super) fn redirect<B>(
    request: &Request<B>,
    redirect: &RequestRedirect,
    rule: &Matched,
) -> Response<ProxyBody> {
    match location(request, redirect, rule) {
        Ok(location) => {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() =
                StatusCode::from_u16(redirect.status_code).unwrap_or(StatusCode::FOUND);
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Err(error) => refuse(error),
    }
}

fn location<B>(
    request: &Request<B>,
    redirect: &RequestRedirect,
    rule: &Matched,
) -> Result<HeaderValue, Unrewritable> {
    let uri = request.uri();
    let host = headers::authority(request).map_or("", request_host);
    if host.is_empty() && redirect.hostname.is_none() {
        return Err(Unrewritable::NoHost);
    }
    let from = RedirectFrom {
        // The mesh's clients speak plain HTTP to their proxy unless the request
        // says otherwise.
        scheme: match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => "https",
            _ => "http",
        },
        host,
        port: rule.port,
        path: uri.path(),
        query: uri.query(),
    };
    let location = redirect.location(&from, rule.path_match().unwrap_or(&NO_PREFIX));
    HeaderValue::from_str(&location).map_err(|_| Unrewritable::Location(location))
}

/// The answer when a rewrite or redirect cannot be carried out: 500, as for a rule
/// whose backend is missing, and the reason in `weft-proxy-error` as the rescue
/// table gives it.
pub(super) fn refuse(error: Unrewritable) -> Response<ProxyBody> {
    tracing::debug!(%error, "route filter failed");
    let message = error.to_string();
    let mut response = Response::new(ProxyBody::full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("weft-proxy-error", value);
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;
