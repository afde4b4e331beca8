//! Resource names: `<namespace>/<name>`, each part a DNS label as in Kubernetes.

use std::fmt;

use super::Invalid;

/// The identity of a resource within its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName {
    pub namespace: String,
    pub name: String,
}

impl ResourceName {
    pub fn new(namespace: &str, name: &str) -> Result<Self, Invalid> {
        validate_label("namespace", namespace)?;
        validate_label("name", name)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `namespace/name`; a bare `name` is in namespace `default`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text.split_once('/') {
            Some((namespace, name)) => Self::new(namespace, name),
            None => Self::new("default", text),
        }
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A DNS label (RFC 1123): 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn validate_label(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(Invalid::new(
            field,
            format!("{value:?} is longer than 63 characters"),
        ));
    }
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let bytes = value.as_bytes();
    let edges_alphanumeric =
        bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !valid_chars || !edges_alphanumeric {
        return Err(Invalid::new(
            field,
            format!("{value:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"),
        ));
    }
    Ok(())
}
