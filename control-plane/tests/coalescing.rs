//! In-process: a burst of writes becomes a few pushes, not one per write; the health
//! service answers SERVING.

use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_control_plane::server::{self, Config};
use weft_proto::resource::{to_any, Kind};
use weft_proto::v1;
use weft_proto::v1::admin_client::AdminClient;
use weft_proto::v1::discovery_client::DiscoveryClient;
use weft_proto::v1::discovery_request::Request as Req;

fn config(dir: &std::path::Path, debounce_ms: u64) -> Config {
    // Parsed as flags, so that the defaults are the binary's own.
    let debounce_ms = debounce_ms.to_string();
    Config::parse_from([
        std::ffi::OsStr::new("weft-control-plane"),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--registration-grace-ms".as_ref(),
        "1000".as_ref(),
        "--debounce-ms".as_ref(),
        debounce_ms.as_ref(),
        "--log".as_ref(),
        "warn".as_ref(),
    ])
}

async fn start(debounce_ms: u64) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let config = config(dir.path(), debounce_ms);
    tokio::spawn(server::run(config, listener, std::future::pending()));
    (address, dir)
}

fn resource(kind: Kind, body: &impl prost::Message) -> v1::Resource {
    v1::Resource {
        name: String::new(),
        version: 0,
        body: Some(to_any(kind, body)),
    }
}

fn endpoints(port: u32) -> v1::Resource {
    resource(
        Kind::Endpoints,
        &v1::Endpoints {
            namespace: "shop".into(),
            name: "orders".into(),
            endpoints: vec![v1::Endpoint {
                address: "10.0.0.1".into(),
                port,
                ..Default::default()
            }],
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_coalesced_into_few_pushes() {
    let (address, _dir) = start(100).await;
    let mut admin = AdminClient::connect(address.clone()).await.expect("admin");
    let service = v1::Service {
        namespace: "shop".into(),
        name: "orders".into(),
        ports: vec![v1::ServicePort {
            name: String::new(),
            port: 80,
            protocol: "http1".into(),
        }],
        ..Default::default()
    };
    admin
        .apply(v1::ApplyRequest {
            resources: vec![resource(Kind::Service, &service), endpoints(1)],
        })
        .await
        .expect("apply");

    let mut discovery = DiscoveryClient::connect(address).await.expect("discovery");
    let (tx, rx) = mpsc::channel(16);
    tx.send(v1::DiscoveryRequest {
        request: Some(Req::Hello(v1::Hello {
            node: Some(v1::Node {
                id: "counter".into(),
                workload: None,
                build: "test".into(),
                admin_address: String::new(),
            }),
            known: vec![],
            subscriptions: vec![],
        })),
    })
    .await
    .expect("hello");
    let mut inbound = discovery
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();

    // 100 writes in a quick burst, each a new version of the same resource.
    let writes = 100u32;
    let burst = tokio::spawn(async move {
        for port in 2..=writes + 1 {
            admin
                .apply(v1::ApplyRequest {
                    resources: vec![endpoints(port)],
                })
                .await
                .expect("apply");
        }
    });

    let mut endpoint_pushes = 0;
    let last_port = loop {
        let response = tokio::time::timeout(Duration::from_secs(20), inbound.message())
            .await
            .expect("a push in time")
            .expect("stream ok")
            .expect("stream open");
        tx.send(v1::DiscoveryRequest {
            request: Some(Req::Ack(v1::Ack {
                nonce: response.nonce.clone(),
            })),
        })
        .await
        .expect("ack");
        if response.type_url != Kind::Endpoints.type_url() {
            continue;
        }
        endpoint_pushes += 1;
        let port = response
            .resources
            .first()
            .and_then(|r| r.body.as_ref())
            .and_then(|b| <v1::Endpoints as prost::Message>::decode(b.value.as_slice()).ok())
            .and_then(|e| e.endpoints.first().map(|e| e.port));
        if port == Some(writes + 1) {
            break port;
        }
    };
    burst.await.expect("burst finished");
    assert_eq!(last_port, Some(writes + 1));
    assert!(
        endpoint_pushes < writes as usize / 4,
        "{endpoint_pushes} pushes for {writes} writes"
    );
}

#[tokio::test]
async fn the_grpc_health_service_reports_serving() {
    let (address, _dir) = start(20).await;
    let channel = tonic::transport::Endpoint::from_shared(address)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "weft.v1.Admin", "weft.v1.Discovery"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn a_large_push_is_split_and_only_its_last_response_says_it_is_complete() {
    let (address, _dir) = start(10).await;
    let mut admin = AdminClient::connect(address.clone()).await.expect("admin");
    let services: Vec<v1::Resource> = (0..400)
        .map(|i| {
            resource(
                Kind::Service,
                &v1::Service {
                    namespace: "bulk".into(),
                    name: format!("service-{i}"),
                    ports: vec![v1::ServicePort {
                        name: String::new(),
                        port: 80,
                        protocol: "http2".into(),
                    }],
                    hostnames: vec![format!("service-{i}.bulk.svc.cluster.local")],
                    ..Default::default()
                },
            )
        })
        .collect();
    admin
        .apply(v1::ApplyRequest {
            resources: services,
        })
        .await
        .expect("apply");

    let mut discovery = DiscoveryClient::connect(address).await.expect("discovery");
    let (tx, rx) = mpsc::channel(16);
    tx.send(v1::DiscoveryRequest {
        request: Some(Req::Hello(v1::Hello {
            node: Some(v1::Node {
                id: "bulk".into(),
                workload: None,
                build: "test".into(),
                admin_address: String::new(),
            }),
            known: vec![],
            subscriptions: vec![v1::Subscription {
                type_url: Kind::Service.type_url().into(),
                subscribe: vec!["*".into()],
                unsubscribe: vec![],
            }],
        })),
    })
    .await
    .expect("hello");
    let mut inbound = discovery
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut received = 0;
    let mut responses = 0;
    loop {
        let response = tokio::time::timeout(Duration::from_secs(20), inbound.message())
            .await
            .expect("a push in time")
            .expect("stream ok")
            .expect("stream open");
        assert_eq!(
            response.type_url,
            Kind::Service.type_url(),
            "only services were subscribed"
        );
        // The stream may open before the view has the services: skip empty pushes.
        if response.resources.is_empty() && received == 0 {
            continue;
        }
        responses += 1;
        received += response.resources.len();
        tx.send(v1::DiscoveryRequest {
            request: Some(Req::Ack(v1::Ack {
                nonce: response.nonce.clone(),
            })),
        })
        .await
        .expect("ack");
        if !response.more {
            break;
        }
        assert!(
            received < 400,
            "`more` set on the response that completed the push"
        );
    }
    assert_eq!(received, 400);
    assert!(
        responses > 1,
        "a push of 400 services fits no single response"
    );
}
