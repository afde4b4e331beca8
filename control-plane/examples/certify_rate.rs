//! How many `Identity.Certify` calls per second a control plane serves.
//!
//! `cargo run --example certify_rate -- 127.0.0.1:15010 [REQUESTS] [CONCURRENCY]`
//! against a running control plane: creates a join token through Admin, then sends
//! REQUESTS Certify calls (default 2000) over CONCURRENCY connections (default 8), all
//! with one pre-made CSR so that only the server's work is measured.

use std::time::Instant;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use weft_proto::v1;
use weft_proto::v1::admin_client::AdminClient;
use weft_proto::v1::identity_client::IdentityClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let address = format!(
        "http://{}",
        args.get(1).map_or("127.0.0.1:15010", String::as_str)
    );
    let requests: usize = args.get(2).map_or(Ok(2000), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(8), |a| a.parse())?;

    let mut admin = AdminClient::connect(address.clone()).await?;
    let created = admin
        .create_token(v1::CreateTokenRequest {
            namespace: "bench".into(),
            service_account: "certify".into(),
            ttl_seconds: 600,
        })
        .await?
        .into_inner();
    let trust_domain = admin
        .get_ca(v1::GetCaRequest {})
        .await?
        .into_inner()
        .trust_domain;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = format!("spiffe://{trust_domain}/ns/bench/sa/certify");
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    let csr = params.serialize_request(&key)?.der().to_vec();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = IdentityClient::connect(address.clone()).await?;
        let request = v1::CertifyRequest {
            token: created.secret.clone(),
            csr: csr.clone(),
        };
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                client.certify(request.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{requests} Certify calls over {concurrency} connections in {:.2} s: {:.0} calls/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
