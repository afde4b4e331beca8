//! What HTTPRoute and GRPCRoute validate alike: parents, hostnames, rule names,
//! backends, filters, and the Gateway API's limits on list sizes (which also bound
//! the work a request's route selection does).

use super::filter::{Filter, RouteKind};
use super::hostname::{validate_dns_name, Hostname};
use super::refs::{BackendRef, ParentRef};
use crate::model::{Invalid, ResourceName};
use crate::v1;

/// A route of either kind: what it attaches to, the hosts it serves, its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<R> {
    pub name: ResourceName,
    pub parents: Vec<ParentRef>,
    /// Empty: every host.
    pub hostnames: Vec<Hostname>,
    /// At least one.
    pub rules: Vec<R>,
    /// Milliseconds since the Unix epoch; 0: unknown. Older routes win ties.
    pub creation_timestamp_ms: u64,
}

/// The [`RouteMessage`] of an `HTTPRoute` or `GRPCRoute` message, whose fields are
/// named alike.
macro_rules! route_message {
    ($msg:expr) => {
        $crate::model::route::common::RouteMessage {
            namespace: &$msg.namespace,
            name: &$msg.name,
            parent_refs: &$msg.parent_refs,
            hostnames: &$msg.hostnames,
            rules: &$msg.rules,
            creation_timestamp_ms: $msg.creation_timestamp_ms,
        }
    };
}
pub(crate) use route_message;

/// A rule's matches as stored: none when the rule has only the default match (as
/// it was most likely written), so that `get` prints what was applied.
pub fn matches_to_proto<M: Default + PartialEq, P>(
    matches: &[M],
    to_proto: impl Fn(&M) -> P,
) -> Vec<P> {
    match matches {
        [only] if *only == M::default() => Vec::new(),
        matches => matches.iter().map(to_proto).collect(),
    }
}

/// The fields every route message has, whatever its kind.
pub struct RouteMessage<'m, M> {
    pub namespace: &'m str,
    pub name: &'m str,
    pub parent_refs: &'m [v1::ServiceRef],
    pub hostnames: &'m [String],
    pub rules: &'m [M],
    pub creation_timestamp_ms: u64,
}

impl<R> Route<R> {
    /// Converts a route message; `matches` counts a rule message's matches (a rule
    /// without any counts as one), `rule` converts one rule given the names of the
    /// rules before it.
    pub fn from_message<M>(
        msg: RouteMessage<'_, M>,
        matches: impl Fn(&M) -> usize,
        rule: impl Fn(&M, &[Option<String>]) -> Result<R, Invalid>,
        rule_name: impl Fn(&R) -> Option<String>,
    ) -> Result<Route<R>, Invalid> {
        let name = ResourceName::new(msg.namespace, msg.name)?;
        let parents = parents(msg.parent_refs, msg.namespace)?;
        let hostnames = hostnames(msg.hostnames)?;
        if msg.rules.is_empty() {
            return Err(Invalid::new("spec.rules", "needs at least one rule"));
        }
        at_most("spec.rules", msg.rules.len(), MAX_RULES)?;
        let total: usize = msg.rules.iter().map(|r| matches(r).max(1)).sum();
        if total > MAX_MATCHES {
            return Err(Invalid::new(
                "spec.rules",
                format!("{total} matches in all; a route takes at most {MAX_MATCHES}"),
            ));
        }
        let mut rules = Vec::with_capacity(msg.rules.len());
        let mut names = Vec::with_capacity(msg.rules.len());
        for (i, message) in msg.rules.iter().enumerate() {
            let converted =
                rule(message, &names).map_err(|e| e.within(format!("spec.rules[{i}]")))?;
            names.push(rule_name(&converted));
            rules.push(converted);
        }
        Ok(Route {
            name,
            parents,
            hostnames,
            rules,
            creation_timestamp_ms: msg.creation_timestamp_ms,
        })
    }

    /// The parent and hostname fields of the route's message.
    pub fn proto_refs(&self) -> (Vec<v1::ServiceRef>, Vec<String>) {
        (
            self.parents.iter().map(ParentRef::to_proto).collect(),
            self.hostnames
                .iter()
                .map(|h| h.as_str().to_owned())
                .collect(),
        )
    }
}

pub const MAX_PARENTS: usize = 32;
pub const MAX_HOSTNAMES: usize = 16;
pub const MAX_RULES: usize = 16;
/// Across all rules of a route.
pub const MAX_MATCHES: usize = 128;
pub const MAX_FILTERS: usize = 16;
pub const MAX_BACKENDS: usize = 16;
/// Headers or query parameters of one match.
pub const MAX_CONDITIONS: usize = 16;

pub fn at_most(field: &str, length: usize, max: usize) -> Result<(), Invalid> {
    if length > max {
        return Err(Invalid::new(field, format!("more than {max} entries")));
    }
    Ok(())
}

pub fn parents(refs: &[v1::ServiceRef], namespace: &str) -> Result<Vec<ParentRef>, Invalid> {
    if refs.is_empty() {
        return Err(Invalid::new(
            "spec.parentRefs",
            "names no service; a route applies to the services it attaches to",
        ));
    }
    at_most("spec.parentRefs", refs.len(), MAX_PARENTS)?;
    let mut parents: Vec<ParentRef> = Vec::with_capacity(refs.len());
    for (i, msg) in refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let parent = ParentRef::from_proto(msg, namespace).map_err(|e| e.within(&field))?;
        if parents.contains(&parent) {
            return Err(Invalid::new(field, "appears twice"));
        }
        parents.push(parent);
    }
    Ok(parents)
}

pub fn hostnames(list: &[String]) -> Result<Vec<Hostname>, Invalid> {
    at_most("spec.hostnames", list.len(), MAX_HOSTNAMES)?;
    let mut hostnames: Vec<Hostname> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let field = format!("spec.hostnames[{i}]");
        let hostname = Hostname::parse(text).map_err(|e| e.within(&field))?;
        if hostnames.contains(&hostname) {
            return Err(Invalid::new(field, format!("{text:?} appears twice")));
        }
        hostnames.push(hostname);
    }
    Ok(hostnames)
}

/// A rule's optional name: a DNS name, unique within its route.
pub fn rule_name(name: &str, earlier: &[Option<String>]) -> Result<Option<String>, Invalid> {
    if name.is_empty() {
        return Ok(None);
    }
    validate_dns_name(name).map_err(|reason| Invalid::new("name", format!("{name:?} {reason}")))?;
    if earlier.iter().flatten().any(|n| n == name) {
        return Err(Invalid::new(
            "name",
            format!("{name:?} names another rule too"),
        ));
    }
    Ok(Some(name.to_owned()))
}

pub fn backends(refs: &[v1::BackendRef], namespace: &str) -> Result<Vec<BackendRef>, Invalid> {
    at_most("backendRefs", refs.len(), MAX_BACKENDS)?;
    refs.iter()
        .enumerate()
        .map(|(i, msg)| {
            BackendRef::from_proto(msg, namespace)
                .map_err(|e| e.within(format!("backendRefs[{i}]")))
        })
        .collect()
}

/// A rule's filters, and the combinations the Gateway API forbids: a type other than
/// RequestMirror at most once, and not both a redirect and a rewrite.
pub fn filters(
    list: &[v1::RouteFilter],
    route: RouteKind,
    namespace: &str,
) -> Result<Vec<Filter>, Invalid> {
    at_most("filters", list.len(), MAX_FILTERS)?;
    let mut filters: Vec<Filter> = Vec::with_capacity(list.len());
    for (i, msg) in list.iter().enumerate() {
        let field = format!("filters[{i}]");
        let filter = Filter::from_proto(msg, route, namespace).map_err(|e| e.within(&field))?;
        let kind = filter.type_name();
        let repeatable = matches!(filter, Filter::RequestMirror(_));
        if !repeatable && filters.iter().any(|f| f.type_name() == kind) {
            return Err(Invalid::new(
                format!("{field}.type"),
                format!("a rule takes one {kind} filter"),
            ));
        }
        let redirect = |f: &Filter| matches!(f, Filter::RequestRedirect(_));
        let rewrite = |f: &Filter| matches!(f, Filter::UrlRewrite(_));
        if (redirect(&filter) && filters.iter().any(rewrite))
            || (rewrite(&filter) && filters.iter().any(redirect))
        {
            return Err(Invalid::new(
                format!("{field}.type"),
                "a rule takes a RequestRedirect or a URLRewrite, not both",
            ));
        }
        filters.push(filter);
    }
    Ok(filters)
}
