//! The mutating admission webhook: HTTPS (the certificate from [`super::certificate`]),
//! `POST /inject` with an `AdmissionReview` of a Pod being created, answered with the
//! JSON patch of [`super::manifests::patch`]: the same code as `weftctl inject`.
//!
//! A pod that cannot be injected as it is (a bad annotation) is refused with the
//! reason, which `kubectl` and the ReplicaSet's events show; anything that is not a
//! Pod creation is allowed unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::certificate::ServingCert;
use super::manifests;
use super::pod::{Outcome, Target};
use super::settings::Settings;

/// The API server sends at most a 3 MiB object; more is not an admission review.
const MAX_BODY: usize = 8 << 20;
/// A client that stalls its handshake or request holds a task no longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the webhook needs per request.
pub struct Injector {
    pub settings: watch::Receiver<Arc<Settings>>,
    pub control_plane_namespace: String,
}

/// Serves the webhook on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<ServingCert>,
    injector: Arc<Injector>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "webhook accept");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        // An answer goes out in more than one write; with Nagle on, the second waited
        // for the API server's delayed ACK (tens of ms per admission).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "webhook connection: TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        tokio::spawn(async move {
            let serve = async {
                let tls = acceptor.accept(stream).await?;
                let service = service_fn(move |request| {
                    let injector = injector.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(request, &injector).await) }
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(CONNECTION_TIMEOUT, serve).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "webhook connection"),
                Err(_) => tracing::debug!(%peer, "webhook connection timed out"),
            }
        });
    }
}

async fn handle(request: Request<Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    if request.method() != Method::POST || request.uri().path() != "/inject" {
        return plain(StatusCode::NOT_FOUND, "POST /inject only\n");
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("reading the body: {error}\n"),
            )
        }
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {error}\n"),
            )
        }
    };
    let admission: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(admission) => admission,
        Err(error) => return plain(StatusCode::BAD_REQUEST, &format!("{error}\n")),
    };
    let started = Instant::now();
    let settings = injector.settings.borrow().clone();
    let response = admit(&admission, &settings, &injector.control_plane_namespace);
    tracing::debug!(
        uid = admission.uid,
        micros = started.elapsed().as_micros() as u64,
        "admission"
    );
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "")),
        Err(error) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
    }
}

/// The answer to one admission request.
pub fn admit(
    request: &AdmissionRequest<DynamicObject>,
    settings: &Settings,
    control_plane_namespace: &str,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.kind.kind != "Pod" || request.operation != Operation::Create {
        return response;
    }
    let Some(object) = &request.object else {
        return response;
    };
    let pod = match serde_json::to_value(object) {
        Ok(pod) => pod,
        Err(error) => return response.deny(error),
    };
    let target = Target {
        namespace: request.namespace.as_deref().unwrap_or("default"),
        control_plane_namespace,
    };
    let name = object
        .metadata
        .name
        .as_deref()
        .or(object.metadata.generate_name.as_deref())
        .unwrap_or("?");
    match manifests::patch(&pod, &target, settings) {
        Ok((outcome, patch)) => {
            match &outcome {
                Outcome::Injected => tracing::info!(namespace = target.namespace, name, "injected"),
                Outcome::Reordered => tracing::info!(
                    namespace = target.namespace,
                    name,
                    "proxy moved back in front"
                ),
                Outcome::Skipped(why) => {
                    tracing::debug!(namespace = target.namespace, name, %why, "not injected")
                }
            }
            if patch.0.is_empty() {
                return response;
            }
            match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(error) => response.deny(error),
            }
        }
        Err(error) => {
            tracing::info!(namespace = target.namespace, name, %error, "refused");
            response.deny(error)
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(namespace: &str, pod: serde_json::Value) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false,
            }
        }))
        .expect("present in the fixture");
        review.try_into().expect("an admission request")
    }

    fn web() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web"}]},
        })
    }

    #[test]
    fn a_pod_creation_is_answered_with_the_patch_that_injects_it() {
        let request = review("shop", web());
        let response = admit(&request, &Settings::default(), "weft");
        assert!(response.allowed);
        let patch: json_patch::Patch =
            serde_json::from_slice(response.patch.as_ref().expect("a patch")).expect("valid JSON");
        let mut pod = web();
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        let inits: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .expect("the patch applies")
            .iter()
            .map(|c| c["name"].as_str().expect("present in the fixture"))
            .collect();
        assert_eq!(inits, ["weft-init", "weft-proxy"]);
    }

    #[test]
    fn skipped_pods_are_allowed_unchanged_and_bad_ones_refused() {
        let response = admit(&review("kube-system", web()), &Settings::default(), "weft");
        assert!(response.allowed && response.patch.is_none());

        let mut bad = web();
        bad["metadata"]["annotations"] =
            serde_json::json!({"weft.io/exclude-outbound-cidrs": "not-a-cidr"});
        let response = admit(&review("shop", bad), &Settings::default(), "weft");
        assert!(!response.allowed);
        assert!(
            response.result.message.contains("exclude-outbound-cidrs"),
            "{}",
            response.result.message
        );
    }
}
