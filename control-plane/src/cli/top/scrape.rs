//! Fetching one proxy's `/metrics` (or another admin page, as `explain` reads
//! `/config_dump`): a plain HTTP/1.1 GET on a fresh connection, bounded in time and
//! size so that one stuck proxy cannot stall a frame.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A proxy's exposition is a few hundred KiB at most; anything past this is not one.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The text of `http://{target}/metrics`, or why it could not be had.
pub async fn scrape(target: &str, timeout: Duration) -> Result<String, String> {
    fetch(target, "/metrics", timeout).await
}

/// The text of `http://{target}{path}`, or why it could not be had.
pub async fn fetch(target: &str, path: &str, timeout: Duration) -> Result<String, String> {
    match tokio::time::timeout(timeout, get(target, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// An HTTP/1.1 connection to a proxy's admin `target`, and the task driving it.
pub(crate) async fn connect(
    target: &str,
) -> Result<(SendRequest<Empty<Bytes>>, AbortOnDrop), String> {
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok((sender, driver))
}

async fn get(target: &str, path: &str) -> Result<String, String> {
    // The driver is aborted when this future ends, done or dropped by the
    // timeout, so the socket never outlives the scrape.
    let (mut sender, _driver) = connect(target).await?;
    let request = http::Request::get(path)
        .header(http::header::HOST, target)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading {path}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("GET {path} answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| format!("{path} is not UTF-8"))
}

/// A connection's task, aborted (its socket closed) when this is dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
