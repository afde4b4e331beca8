//! Authorization policies: which client identities may call a service.
//!
//! The matching rules live here, next to the validation, so that the control plane
//! (which refuses a bad pattern) and the proxy (which enforces) read the same code.

use std::fmt;

use super::{validate_label, Invalid, ResourceName, SpiffeId, TrustDomain};
use crate::v1;

/// An entry of a policy's allow list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityPattern {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`: one workload identity.
    Exact(SpiffeId),
    /// `spiffe://<td>/ns/<ns>/*`: every identity of a namespace.
    Namespace {
        trust_domain: TrustDomain,
        namespace: String,
    },
    /// `spiffe://<td>/*`: every identity of a trust domain.
    TrustDomain(TrustDomain),
}

impl IdentityPattern {
    /// Parses one allow-list entry. Wildcards stand only for whole trailing path
    /// segments: `ns/shop*` or `*/sa/orders` would read as globs that match more (or
    /// less) than an operator expects, so they are refused rather than guessed at.
    pub fn parse(text: &str) -> Result<IdentityPattern, Invalid> {
        let invalid = |reason: &str| Invalid::new("", format!("{text:?}: {reason}"));
        let Some(rest) = text.strip_prefix("spiffe://") else {
            return Err(invalid(
                "is not a SPIFFE ID or pattern (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, spiffe://<trust-domain>/ns/<namespace>/*, spiffe://<trust-domain>/*)",
            ));
        };
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let trust_domain = TrustDomain::new(domain).map_err(|e| invalid(&e.reason))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["*"] => Ok(IdentityPattern::TrustDomain(trust_domain)),
            ["ns", namespace, "*"] => {
                validate_label("namespace", namespace).map_err(|e| invalid(&e.to_string()))?;
                Ok(IdentityPattern::Namespace {
                    trust_domain,
                    namespace: (*namespace).to_owned(),
                })
            }
            ["ns", _, "sa", _] if !path.contains('*') => SpiffeId::parse(text)
                .map(IdentityPattern::Exact)
                .map_err(|e| invalid(&e.reason)),
            _ => Err(invalid(
                "a pattern is /ns/<namespace>/sa/<service-account>, /ns/<namespace>/* or /*",
            )),
        }
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            IdentityPattern::Exact(exact) => exact == id,
            IdentityPattern::Namespace {
                trust_domain,
                namespace,
            } => *trust_domain == id.trust_domain && *namespace == id.namespace,
            IdentityPattern::TrustDomain(trust_domain) => *trust_domain == id.trust_domain,
        }
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityPattern::Exact(id) => id.fmt(f),
            IdentityPattern::Namespace {
                trust_domain,
                namespace,
            } => write!(f, "spiffe://{trust_domain}/ns/{namespace}/*"),
            IdentityPattern::TrustDomain(trust_domain) => write!(f, "spiffe://{trust_domain}/*"),
        }
    }
}

/// What a policy does with a caller its allow list does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DefaultAction {
    #[default]
    Deny,
    Allow,
}

impl DefaultAction {
    pub fn parse(text: &str) -> Option<DefaultAction> {
        match text.to_ascii_lowercase().as_str() {
            "" | "deny" => Some(DefaultAction::Deny),
            "allow" => Some(DefaultAction::Allow),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAction::Deny => "deny",
            DefaultAction::Allow => "allow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub name: ResourceName,
    /// The protected service.
    pub service: ResourceName,
    /// A port of the service; `None` protects every port.
    pub port: Option<u16>,
    pub allow: Vec<IdentityPattern>,
    pub default_action: DefaultAction,
}

impl AuthorizationPolicy {
    /// Whether the policy's allow list names the caller; a caller without an identity
    /// (plaintext) is named by none.
    pub fn lists(&self, caller: Option<&SpiffeId>) -> bool {
        caller.is_some_and(|id| self.allow.iter().any(|pattern| pattern.matches(id)))
    }

    pub fn to_proto(&self) -> v1::AuthorizationPolicy {
        v1::AuthorizationPolicy {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            service: self.service.to_string(),
            port: self.port.map(u32::from).unwrap_or(0),
            allow: self.allow.iter().map(|p| p.to_string()).collect(),
            default_action: self.default_action.as_str().to_owned(),
        }
    }
}

impl TryFrom<&v1::AuthorizationPolicy> for AuthorizationPolicy {
    type Error = Invalid;

    fn try_from(msg: &v1::AuthorizationPolicy) -> Result<Self, Invalid> {
        let name = ResourceName::new(&msg.namespace, &msg.name)?;
        let service = match msg.service.split_once('/') {
            Some((namespace, service)) => ResourceName::new(namespace, service),
            None if msg.service.is_empty() => {
                Err(Invalid::new("", "names no service (namespace/name)"))
            }
            None => ResourceName::new(&msg.namespace, &msg.service),
        }
        .map_err(|e| e.within("service"))?;
        let port = match msg.port {
            0 => None,
            port => Some(u16::try_from(port).map_err(|_| {
                Invalid::new(
                    "port",
                    format!("{port} is not a port (1-65535, or 0 for all)"),
                )
            })?),
        };
        let mut allow = Vec::with_capacity(msg.allow.len());
        for (i, text) in msg.allow.iter().enumerate() {
            let pattern =
                IdentityPattern::parse(text).map_err(|e| e.within(format!("allow[{i}]")))?;
            allow.push(pattern);
        }
        let default_action = DefaultAction::parse(&msg.default_action).ok_or_else(|| {
            Invalid::new(
                "default_action",
                format!("{:?} is not allow or deny", msg.default_action),
            )
        })?;
        Ok(AuthorizationPolicy {
            name,
            service,
            port,
            allow,
            default_action,
        })
    }
}

impl AsRef<AuthorizationPolicy> for AuthorizationPolicy {
    fn as_ref(&self) -> &AuthorizationPolicy {
        self
    }
}

/// The outcome for one caller of the policies that apply to a service port; `P` is
/// whatever the caller keeps a policy in (with its counters, on a proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<P> {
    /// No policy applies: the service is open.
    Open,
    /// Allowed, by this policy: the first that lists the caller or, when none does
    /// and every one defaults to allow, the first of them.
    Allowed(P),
    /// Denied, by the first policy whose default is deny.
    Denied(P),
}

/// Decides for one caller among the policies that apply, given in name order so that
/// the policy a decision is counted under is the same on every proxy.
pub fn decide<P, I>(applicable: I, caller: Option<&SpiffeId>) -> Decision<P>
where
    P: AsRef<AuthorizationPolicy>,
    I: IntoIterator<Item = P>,
{
    let mut first_allow = None;
    let mut first_deny = None;
    for policy in applicable {
        if policy.as_ref().lists(caller) {
            return Decision::Allowed(policy);
        }
        match policy.as_ref().default_action {
            DefaultAction::Allow => first_allow = first_allow.or(Some(policy)),
            DefaultAction::Deny => first_deny = first_deny.or(Some(policy)),
        }
    }
    match (first_deny, first_allow) {
        (Some(deny), _) => Decision::Denied(deny),
        (None, Some(allow)) => Decision::Allowed(allow),
        (None, None) => Decision::Open,
    }
}

#[cfg(test)]
mod tests;
