//! Routes: the Gateway API's HTTPRoute and GRPCRoute with its mesh (GAMMA)
//! semantics, validated, and compiled into the tables a proxy selects from.
//!
//! # Layout
//! - [`http`], [`grpc`]: the two route kinds, their rules and matches, converted from
//!   the weft.v1 messages (`TryFrom`); errors name the document's field
//!   (`spec.rules[1].matches[0].path.value`).
//! - `common`: [`Route`], the shape both kinds share, and what they validate alike
//!   (parents, hostnames, rule names, backends, filter combinations, list limits).
//! - `refs`: parents and backends, references to Weft services.
//! - `filter`: the Gateway API's filters; `filter/rewrite` the redirect and the URL
//!   rewrite, `filter/weft` Weft's own (`weft.io/Fault`, `weft.io/LocalRateLimit`).
//! - `resilience`: a rule's timeouts and retries, overriding its service's;
//!   `effective` the settings in force once they have.
//! - `value_match`, `pattern`, `hostname`, `duration`, `grpc_code`: the values
//!   matches and filters are made of; regular expressions compile here, once.
//! - `table`: the routes of a service compiled per port and group of callers in
//!   precedence order; `select` picks a request's rule without allocating.
//! - `backend`: the weighted choice of a rule's backend.
//!
//! The control plane (validation, and later `weftctl explain`) and the proxy (route
//! selection) use the same code.

mod backend;
mod common;
mod duration;
mod effective;
mod filter;
mod grpc;
mod grpc_code;
mod hostname;
mod http;
mod pattern;
mod refs;
mod resilience;
mod table;
#[cfg(test)]
mod tests;
mod value_match;

pub use backend::{pick_backend, Backends};
pub use common::Route;
pub use duration::{format_duration, parse_duration};
pub use effective::{Effective, InForce, IntoCondition, RetryCondition, RuleRetry};
pub use filter::{
    AbortStatus, Fault, FaultAbort, FaultDelay, Filter, HeaderModifier, LocalRateLimit,
    PathModifier, RateUnit, RedirectFrom, RequestMirror, RequestRedirect, Scheme, UrlRewrite,
};
pub use grpc::{GrpcMatch, GrpcRequest, GrpcRoute, GrpcRule, MethodMatch};
pub use grpc_code::GrpcCode;
pub use hostname::{request_host, Hostname};
pub use http::{HttpMatch, HttpRequest, HttpRoute, HttpRule, PathMatch};
pub use pattern::Pattern;
pub use refs::{BackendRef, ParentRef, MAX_WEIGHT};
pub use resilience::{RetryCode, RouteRetry, RouteTimeouts, Timeout};
pub use table::{
    CompiledRule, GrpcPrecedence, GrpcTable, HttpPrecedence, HttpTable, NameRank, PathRank,
    RouteRule, RouteTable, Selection, ServiceRoutes, Table,
};
pub use value_match::{HeaderMatch, QueryMatch, ValueMatcher};
