//! Leadership among the control plane's replicas, held in a `coordination.k8s.io`
//! Lease, for the duties that must be done once: writing the CRDs' status.
//!
//! Everything a proxy is served is computed by every replica alike; only writes back
//! to the API server need one writer, or two replicas would fight over
//! `lastTransitionTime`. The holder renews every [`RENEW`]; another replica takes the
//! Lease when it has not been renewed for [`DURATION`]. Every write is conditional on
//! the resourceVersion just read, so two replicas never both believe they took it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

pub const NAME: &str = "weft-control-plane";
const DURATION: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);

/// Keeps trying to lead as `identity`; the receiver says whether this replica leads.
pub fn run(client: Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (leading, rx) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        loop {
            let now = leading_now(&leases, &identity).await;
            match now {
                Ok(now) => {
                    if *leading.borrow() != now {
                        tracing::info!(identity, leading = now, "lease");
                    }
                    leading.send_replace(now);
                }
                Err(error) => {
                    // Lost contact: stop acting as leader before another may have taken over.
                    tracing::warn!(%error, "lease not renewed");
                    leading.send_replace(false);
                }
            }
            tokio::time::sleep(RENEW).await;
        }
    });
    rx
}

/// One round: take, renew or respect the Lease. `Ok(true)` when this replica holds it.
async fn leading_now(leases: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let mine = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: acquired.or_else(|| Some(now.clone())),
        renew_time: Some(now.clone()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = leases.get_opt(NAME).await? else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(NAME.to_owned()),
                ..Default::default()
            },
            spec: Some(mine(None, 0)),
        };
        return match leases.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    let next = if holder == identity {
        mine(spec.acquire_time.clone(), transitions)
    } else {
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(DURATION);
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let expired = match renewed {
            None => true,
            Some(renewed) => {
                let age = Timestamp::now().duration_since(renewed);
                age.as_secs_f64() > duration.as_secs_f64()
            }
        };
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        mine(None, transitions + 1)
    };
    lease.spec = Some(next);
    match leases.replace(NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        // Another replica wrote it first: it holds the Lease this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
