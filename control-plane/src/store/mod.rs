//! The control plane's storage, behind one trait so that the embedded store (the
//! default) and etcd (for several replicas) are interchangeable and pass one suite.
//!
//! What is stored: resources (kind, name, encoded body, version) and workload
//! registrations (node id, encoded workload, version, generation). Every committed
//! change bumps a single store-wide revision and stamps what it wrote with it, so
//! versions only ever increase, across restarts too. Bodies are opaque bytes here;
//! validation happens before a write reaches the store.
//!
//! A registration is written and removed by whoever holds the newest claim on it (a
//! discovery stream, the expiry of its grace period), possibly on another replica or
//! before a restart. Its generation names the write that claimed it, and every write
//! but a new claim is conditional on it: compare-and-set, compare-and-delete. A claim
//! that leaves the workload's bytes as they were changes nothing a proxy is served,
//! and moves no revision.
//!
//! Beside them, a small table of secrets (the CA's key, join-token hashes) keyed by
//! path-like strings (`ca`, `token/<id>`). Secrets are not part of the mesh's view:
//! writing one moves no revision and reaches no proxy. An etcd store keeps them under
//! its own prefix, where access can be restricted apart from the resources.

mod embedded;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use tokio::sync::watch;
use weft_proto::resource::Kind;

pub use embedded::EmbeddedStore;

/// A stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// `namespace/name`.
    pub name: String,
    pub version: u64,
    /// The encoded message of its kind (e.g. `weft.v1.Service`).
    pub body: Vec<u8>,
}

/// A workload registered by a proxy's discovery stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub node_id: String,
    /// The revision at which the workload's bytes last changed: views version
    /// endpoints by it, so a proxy that registers the same workload again (after a
    /// reconnect, a restart) moves no version and is sent nothing.
    pub version: u64,
    /// Taken by every write of the registration, unchanged bytes included, from a
    /// counter of its own that only grows: which claim the stored registration belongs
    /// to. A claim of unchanged bytes changes nothing any view shows, so it moves no
    /// revision.
    pub generation: u64,
    /// The encoded `weft.v1.Workload`.
    pub workload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub kind: Kind,
    pub name: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// The stored body was byte-identical; nothing was written.
    Unchanged,
}

/// Everything in the store at one revision.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    pub revision: u64,
    pub records: Vec<Record>,
    pub registrations: Vec<Registration>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// Something this store does not hold (join tokens, or endpoints written by hand,
    /// on Kubernetes): the caller's request, not the store, is at fault.
    #[error("{0}")]
    Unsupported(String),
}

impl StoreError {
    /// The status an admin or identity call answers with.
    pub fn status(&self) -> tonic::Status {
        match self {
            StoreError::Unsupported(message) => tonic::Status::failed_precondition(message),
            e => tonic::Status::unavailable(e.to_string()),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes every resource in one transaction. Returns, per write, what happened and
    /// the version the resource now has. The revision moves only if something changed.
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<(Outcome, u64)>, StoreError>;

    /// Deletes a resource; `Some(revision)` when it existed.
    async fn delete(&self, kind: Kind, name: &str) -> Result<Option<u64>, StoreError>;

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError>;

    /// Every resource of a kind, sorted by name.
    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError>;

    /// Claims a node's registration: creates or replaces it whatever is stored, and
    /// returns its new generation. Every claim takes a new generation, even with
    /// unchanged bytes (the version and the revision then stay).
    async fn register(&self, node_id: &str, workload: Vec<u8>) -> Result<u64, StoreError>;

    /// Replaces a node's registration only if it is still at `generation`; returns the
    /// new generation, or `None` when a newer claim replaced it or it is gone.
    async fn reregister(
        &self,
        node_id: &str,
        workload: Vec<u8>,
        generation: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// Removes a node's registration only if it is still at `generation`;
    /// `Some(revision)` when it was removed.
    async fn deregister(&self, node_id: &str, generation: u64) -> Result<Option<u64>, StoreError>;

    /// A consistent read of everything.
    async fn contents(&self) -> Result<Contents, StoreError>;

    /// The current revision, updated after every committed change.
    fn revision(&self) -> watch::Receiver<u64>;

    async fn get_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Creates or replaces a secret.
    async fn put_secret(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;

    /// Creates a secret unless one exists; returns the value that is stored afterwards.
    /// Two control planes starting together on one store thus agree on one CA.
    async fn create_secret(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    /// Every secret whose key starts with `prefix`, sorted by key.
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}
