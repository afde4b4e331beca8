//! The `Store` of Kubernetes mode: the API server holds everything, this replica only
//! caches it (DESIGN.md decision 7).
//!
//! - Services and their EndpointSlices (and Pods, for identities) are read through
//!   reflectors and turned into weft Services and Endpoints at each view rebuild
//!   ([`super::translate`]).
//! - Weft's own kinds are CRDs ([`super::policy`]): read the same way, validated with
//!   the rules `weftctl apply` uses; `apply` and `delete` write the CRD objects.
//! - Routes are the Gateway API's HTTPRoute and GRPCRoute ([`super::gateway`]), read
//!   the same way; `weftctl apply` of a route is refused with a pointer to kubectl:
//!   the objects are the Gateway API's, and other meshes' tools write them too.
//! - Secrets: the CA lives in one Secret in the control plane's namespace. Creating it
//!   is the API server's create, which fails for all but one of several replicas
//!   starting at once: the others read what the winner wrote.
//! - Registrations: proxies still say which workload they front, but on Kubernetes the
//!   EndpointSlices are the source of endpoints, so a registration is only counted
//!   (its generation), never served.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Api, Client};
use prost::Message;
use tokio::sync::watch;
use weft_proto::model;
use weft_proto::resource::Kind;

use super::gateway::Routes;
use super::policy::{self, Policies};
use super::translate::{self, Pods};
use super::watch::{self as watching, resource_version};
use crate::store::{Contents, Outcome, Record, Store, StoreError, Write};

/// The Secret that holds the mesh CA (its key never leaves the control plane's namespace).
pub const CA_SECRET: &str = "weft-ca";
/// The key of [`crate::identity::Ca`]'s secret, and the data key it gets in [`CA_SECRET`].
const CA_KEY: &str = "ca";

/// What Kubernetes mode needs to know besides the API server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The control plane's own namespace: its CA Secret and its Lease.
    pub namespace: String,
    /// The DNS suffix of Services (`cluster.local`).
    pub cluster_domain: String,
    pub trust_domain: String,
}

pub struct KubeStore {
    client: Client,
    settings: Settings,
    services: Cache<KubeService>,
    slices: Cache<EndpointSlice>,
    pods: Cache<Pod>,
    policies: Policies,
    routes: Routes,
    revision: watch::Sender<u64>,
    /// What the control plane publishes itself (the trust bundle), kept in memory:
    /// every replica derives it from the CA Secret.
    published: Mutex<BTreeMap<(Kind, String), Record>>,
    /// The CA Secret's resourceVersion as last written or read: the trust bundle's
    /// version, the same on every replica.
    ca_version: AtomicU64,
    generations: AtomicU64,
}

impl KubeStore {
    /// Starts every watch and returns once each has listed its objects: a first view
    /// built earlier would tell proxies that endpoints had gone.
    pub async fn start(client: Client, settings: Settings) -> Result<Arc<KubeStore>, StoreError> {
        let (revision, _) = watch::channel(0);
        let services = watching::start(
            Api::<KubeService>::all(client.clone()),
            (),
            revision.clone(),
            "services",
            slim_service,
        );
        let slices = watching::start(
            Api::<EndpointSlice>::all(client.clone()),
            (),
            revision.clone(),
            "endpointslices",
            slim_slice,
        );
        let pods = watching::start(
            Api::<Pod>::all(client.clone()),
            (),
            revision.clone(),
            "pods",
            slim_pod,
        );
        let policies = Policies::start(client.clone(), revision.clone());
        let routes = Routes::start(client.clone(), revision.clone()).await;
        let store = Arc::new(KubeStore {
            client,
            settings,
            services,
            slices,
            pods,
            policies,
            routes,
            revision,
            published: Mutex::new(BTreeMap::new()),
            ca_version: AtomicU64::new(0),
            generations: AtomicU64::new(0),
        });
        store.wait_until_listed().await?;
        Ok(store)
    }

    async fn wait_until_listed(&self) -> Result<(), StoreError> {
        let all = async {
            self.services.wait_until_ready().await?;
            self.slices.wait_until_ready().await?;
            self.pods.wait_until_ready().await?;
            self.policies.wait_until_ready().await?;
            self.routes.wait_until_ready().await
        };
        let mut all = std::pin::pin!(all);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), &mut all).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(StoreError::Unavailable(e.to_string())),
                // The watches log why (no RBAC, CRDs not installed); keep waiting.
                Err(_) => tracing::warn!("still waiting for the first list of every watched kind"),
            }
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn ca_only(key: &str) -> Result<(), StoreError> {
        if key == CA_KEY {
            Ok(())
        } else {
            Err(StoreError::Unsupported(format!(
                "{key:?}: on Kubernetes the control plane keeps only its CA; proxies prove who they are with ServiceAccount tokens, not join tokens"
            )))
        }
    }

    fn note_ca(&self, secret: &Secret) {
        self.ca_version
            .store(resource_version(secret), Ordering::Relaxed);
    }

    /// Every weft Service and Endpoints, built from the caches now.
    fn mesh(&self) -> Vec<Record> {
        let mut slices: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
        for slice in self.slices.state() {
            let labels = slice.metadata.labels.as_ref();
            let Some(service) = labels.and_then(|l| l.get(translate::SERVICE_NAME_LABEL)) else {
                continue;
            };
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            slices
                .entry((namespace, service.clone()))
                .or_default()
                .push(slice);
        }
        let pods = PodCache {
            pods: &self.pods,
            trust_domain: &self.settings.trust_domain,
        };
        let mut records = Vec::new();
        for kube_service in self.services.state() {
            let mut message = match translate::service(&kube_service, &self.settings.cluster_domain)
            {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(unservable) => {
                    tracing::warn!(%unservable, "not served");
                    continue;
                }
            };
            let mut version = resource_version(kube_service.as_ref());
            if let Some(policy) =
                self.policies
                    .service_policy(&message.namespace, &message.name, &message)
            {
                policy.spec.apply_to(&mut message);
                version = version.max(policy.version);
            }
            if let Err(invalid) = model::Service::try_from(&message) {
                tracing::warn!(service = %format!("{}/{}", message.namespace, message.name), %invalid, "not served");
                continue;
            }
            let key = (message.namespace.clone(), message.name.clone());
            let of_service: Vec<&EndpointSlice> = slices
                .get(&key)
                .map(|s| s.iter().map(|s| s.as_ref()).collect())
                .unwrap_or_default();
            let endpoints = translate::endpoints(&message, &of_service, &pods);
            let endpoints_version = of_service
                .iter()
                .map(|s| resource_version(*s))
                .max()
                .unwrap_or(version);
            let name = format!("{}/{}", message.namespace, message.name);
            records.push(Record {
                kind: Kind::Endpoints,
                name: name.clone(),
                version: endpoints_version,
                body: endpoints.encode_to_vec(),
            });
            records.push(Record {
                kind: Kind::Service,
                name,
                version,
                body: message.encode_to_vec(),
            });
        }
        records
    }
}

struct PodCache<'a> {
    pods: &'a Cache<Pod>,
    trust_domain: &'a str,
}

impl Pods for PodCache<'_> {
    fn identity(&self, namespace: &str, name: &str) -> Option<String> {
        let pod = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        translate::pod_identity(&pod, self.trust_domain)
    }
}

fn slim_service(service: &mut KubeService) {
    service.metadata.managed_fields = None;
    service.status = None;
}

fn slim_slice(slice: &mut EndpointSlice) {
    slice.metadata.managed_fields = None;
    slice.metadata.annotations = None;
}

/// A Pod as cached: its name, namespace, ServiceAccount and container names (which tell
/// whether it runs Weft's sidecar). The rest of a Pod is most of its size, and a cache
/// of 10,000 whole Pods would be most of the control plane's memory.
fn slim_pod(pod: &mut Pod) {
    let names = |containers: &[k8s_openapi::api::core::v1::Container]| {
        containers
            .iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name.clone(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        service_account_name: spec.service_account_name.clone(),
        containers: names(&spec.containers),
        init_containers: spec.init_containers.as_deref().map(names),
        ..Default::default()
    });
    pod.status = None;
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        resource_version: pod.metadata.resource_version.take(),
        uid: pod.metadata.uid.take(),
        ..Default::default()
    };
}

fn unavailable(e: kube::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl Store for KubeStore {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<(Outcome, u64)>, StoreError> {
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let outcome = match write.kind {
                Kind::TrustBundle => {
                    let version = self.ca_version.load(Ordering::Relaxed);
                    let record = Record {
                        kind: write.kind,
                        name: write.name.clone(),
                        version,
                        body: write.body,
                    };
                    let mut published = self.published.lock().map_err(|_| {
                        StoreError::Unavailable("the published table is poisoned".to_owned())
                    })?;
                    let outcome = match published.get(&(write.kind, write.name.clone())) {
                        None => Outcome::Created,
                        Some(previous) if previous.body == record.body => Outcome::Unchanged,
                        Some(_) => Outcome::Updated,
                    };
                    published.insert((write.kind, write.name), record);
                    drop(published);
                    watching::bump(&self.revision, version);
                    (outcome, version)
                }
                Kind::Service | Kind::AuthorizationPolicy => {
                    policy::write(&self.client, write.kind, &write.name, &write.body).await?
                }
                Kind::Endpoints => {
                    return Err(StoreError::Unsupported(format!(
                    "Endpoints {}: on Kubernetes endpoints come from the Service's EndpointSlices",
                    write.name
                )))
                }
                Kind::HttpRoute | Kind::GrpcRoute => {
                    return Err(StoreError::Unsupported(format!(
                        "{} {}: on Kubernetes routes are the Gateway API's own objects ({}/{}); apply them with kubectl, with parentRefs naming a Service (group: \"\", kind: Service)",
                        write.kind, write.name, super::gateway::GROUP, super::gateway::VERSION
                    )))
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn delete(&self, kind: Kind, name: &str) -> Result<Option<u64>, StoreError> {
        match kind {
            Kind::Service | Kind::AuthorizationPolicy => {
                policy::delete(&self.client, kind, name).await
            }
            _ => Err(StoreError::Unsupported(format!(
                "{kind} {name}: not deleted through Weft on Kubernetes"
            ))),
        }
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError> {
        Ok(self
            .list(kind)
            .await?
            .into_iter()
            .find(|record| record.name == name))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError> {
        let mut records: Vec<Record> = self
            .contents()
            .await?
            .records
            .into_iter()
            .filter(|record| record.kind == kind)
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    async fn register(&self, _node_id: &str, _workload: Vec<u8>) -> Result<u64, StoreError> {
        Ok(self.generations.fetch_add(1, Ordering::Relaxed) + 1)
    }

    async fn reregister(
        &self,
        _node_id: &str,
        _workload: Vec<u8>,
        _generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.generations.fetch_add(1, Ordering::Relaxed) + 1))
    }

    async fn deregister(
        &self,
        _node_id: &str,
        _generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    async fn contents(&self) -> Result<Contents, StoreError> {
        let revision = *self.revision.borrow();
        let mut records = self.mesh();
        let services: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Service).collect();
        let authorizations = self.policies.authorization_records(&services);
        let routes = self.routes.records(&services);
        records.extend(authorizations);
        records.extend(routes);
        if let Ok(published) = self.published.lock() {
            records.extend(published.values().cloned());
        }
        Ok(Contents {
            revision,
            records,
            registrations: Vec::new(),
        })
    }

    fn revision(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    async fn get_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Self::ca_only(key)?;
        let Some(secret) = self
            .secrets()
            .get_opt(CA_SECRET)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        self.note_ca(&secret);
        Ok(secret_value(&secret))
    }

    async fn put_secret(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        Self::ca_only(key)?;
        let secrets = self.secrets();
        let mut secret = secrets.get(CA_SECRET).await.map_err(unavailable)?;
        secret.data = Some(BTreeMap::from([(CA_KEY.to_owned(), ByteString(value))]));
        // Replace, conditional on the resourceVersion just read: a concurrent rotation on
        // another replica makes this fail rather than be overwritten.
        let written = secrets
            .replace(CA_SECRET, &PostParams::default(), &secret)
            .await
            .map_err(unavailable)?;
        self.note_ca(&written);
        Ok(())
    }

    async fn create_secret(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Self::ca_only(key)?;
        let secrets = self.secrets();
        let fresh = Secret {
            metadata: ObjectMeta {
                name: Some(CA_SECRET.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/part-of".to_owned(),
                    "weft".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(CA_KEY.to_owned(), ByteString(value))])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &fresh).await {
            Ok(created) => {
                tracing::info!(secret = CA_SECRET, "created the mesh CA");
                self.note_ca(&created);
                secret_value(&created).ok_or_else(|| {
                    StoreError::Corrupt("the CA Secret we wrote has no data".to_owned())
                })
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = secrets.get(CA_SECRET).await.map_err(unavailable)?;
                self.note_ca(&existing);
                secret_value(&existing).ok_or_else(|| {
                    StoreError::Corrupt(format!("Secret {CA_SECRET} has no {CA_KEY:?} key"))
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if CA_KEY.starts_with(prefix) {
            return Ok(self
                .get_secret(CA_KEY)
                .await?
                .map(|value| vec![(CA_KEY.to_owned(), value)])
                .unwrap_or_default());
        }
        // No join tokens on Kubernetes: `weftctl token list` shows none.
        Ok(Vec::new())
    }
}

fn secret_value(secret: &Secret) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(CA_KEY))
        .map(|value| value.0.clone())
}
