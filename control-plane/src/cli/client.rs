//! The connection to the control plane's Admin API, and the errors `weftctl` reports.
//!
//! The channel connects eagerly, so an unreachable control plane is reported once,
//! naming the address, instead of as an opaque transport error on the first call.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use weft_proto::v1::admin_client::AdminClient;

/// How long to wait for the TCP (and HTTP/2) connection to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds every call, so a wedged control plane cannot hang a script forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid control plane address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot reach the control plane at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The server's answer; its message already names the resource and field.
    #[error("{}", .0.message())]
    Server(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
}

/// Accepts `host:port` and `http://host:port`, returns the URI to dial.
pub fn endpoint_uri(address: &str) -> Result<String, CliError> {
    let invalid = |reason: &str| CliError::Address {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let address = address.trim();
    let rest = match address.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?}: the Admin API is plain gRPC (http://)"
            )))
        }
        None => address,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected host:port or http://host:port"));
    }
    // The port is required: a default would hide a typo'd address behind port 80.
    let port = authority
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|_| !authority.ends_with(']'));
    match port.map(str::parse::<u16>) {
        Some(Ok(_)) => Ok(format!("http://{authority}")),
        _ => Err(invalid("expected host:port or http://host:port")),
    }
}

pub async fn connect(address: &str) -> Result<AdminClient<Channel>, CliError> {
    let uri = endpoint_uri(address)?;
    let unreachable = |reason: String| CliError::Unreachable {
        address: address.to_owned(),
        reason,
    };
    let channel = Endpoint::from_shared(uri)
        .map_err(|e| CliError::Address {
            address: address.to_owned(),
            reason: error_chain(&e),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(AdminClient::new(channel))
}

/// "transport error: tcp connect error: Connection refused (os error 111)": a transport
/// error's own message says little; its causes say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_http_urls_are_accepted() {
        for (input, uri) in [
            ("127.0.0.1:15010", "http://127.0.0.1:15010"),
            ("http://127.0.0.1:15010", "http://127.0.0.1:15010"),
            ("http://cp.weft.svc:15010/", "http://cp.weft.svc:15010"),
            ("localhost:1", "http://localhost:1"),
            ("[::1]:15010", "http://[::1]:15010"),
            (" 10.0.0.1:80 ", "http://10.0.0.1:80"),
        ] {
            assert_eq!(endpoint_uri(input).expect(input), uri);
        }
    }

    #[test]
    fn addresses_without_a_port_or_with_another_scheme_are_rejected() {
        for input in [
            "",
            "127.0.0.1",
            "http://127.0.0.1",
            "[::1]",
            "host:port",
            "host:70000",
            "https://cp:15010",
            "http://cp:15010/admin",
        ] {
            let error = endpoint_uri(input).expect_err(input);
            assert!(error.to_string().contains(input.trim()), "{error}");
        }
    }
}
