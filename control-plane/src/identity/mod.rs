//! Mesh identity on the control plane: the CA, join tokens, and the Identity service
//! proxies call to turn a token and a CSR into a certificate (DESIGN.md decision 6).
//!
//! # Layout
//! - [`ca`]: roots, the signing key, rotation, and the trust bundle resource.
//! - [`token`]: join tokens (created, listed, revoked, verified; stored hashed).
//! - [`csr`]: what a CSR must ask for to be signed.
//! - [`review`]: Kubernetes ServiceAccount tokens, checked with a TokenReview.

pub mod ca;
pub mod csr;
pub mod review;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use weft_proto::model::SpiffeId;
use weft_proto::v1;

pub use ca::{Ca, CaError, CaFiles, CaSource};
pub use token::{TokenError, Tokens, TokensError};

pub struct IdentityService {
    pub ca: Arc<Ca>,
    pub proof: Proof,
}

/// What a proxy's bootstrap token is checked against.
pub enum Proof {
    /// Join tokens made by `weftctl token create` (hosts).
    JoinTokens(Arc<Tokens>),
    /// Projected ServiceAccount tokens (Kubernetes).
    ServiceAccounts(review::Reviewer),
}

/// Who presented a valid token: the identity to issue, and a name for the log.
struct Proven {
    namespace: String,
    service_account: String,
    by: String,
}

impl Proof {
    async fn check(&self, token: &str) -> Result<Proven, Status> {
        match self {
            Proof::JoinTokens(tokens) => {
                let token = tokens.verify(token, unix_now()).await?;
                Ok(Proven {
                    namespace: token.namespace,
                    service_account: token.service_account,
                    by: format!("token {}", token.id),
                })
            }
            Proof::ServiceAccounts(reviewer) => {
                let account = reviewer.review(token).await.map_err(|e| match e {
                    review::ReviewError::Unavailable(_) => Status::unavailable(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                })?;
                Ok(Proven {
                    by: match &account.pod {
                        Some(pod) => format!("pod {}/{pod}", account.namespace),
                        None => format!("serviceaccount {}", account.service_account),
                    },
                    namespace: account.namespace,
                    service_account: account.service_account,
                })
            }
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The edge: each failure becomes the gRPC status a proxy can act on (retrying an
/// UNAVAILABLE, giving up with a clear log line on the others).
impl From<TokensError> for Status {
    fn from(e: TokensError) -> Status {
        match e {
            TokensError::Token(e) => Status::unauthenticated(e.to_string()),
            TokensError::Invalid(e) => Status::invalid_argument(e.to_string()),
            TokensError::Store(e) => e.status(),
            TokensError::Corrupt(e) => Status::internal(format!("stored token {e} is corrupt")),
        }
    }
}

impl From<CaError> for Status {
    fn from(e: CaError) -> Status {
        match e {
            CaError::Precondition(message) => Status::failed_precondition(message),
            CaError::Store(e) => e.status(),
            e => Status::internal(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl v1::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::CertifyResponse>, Status> {
        let request = request.into_inner();
        let token = self.proof.check(&request.token).await?;
        let id = SpiffeId::new(
            self.ca.trust_domain().clone(),
            &token.namespace,
            &token.service_account,
        )
        .map_err(|e| Status::internal(format!("{}: {e}", token.by)))?;
        let checked = csr::check(&request.csr, &id).map_err(|e| match e {
            csr::CsrError::Malformed(_) => Status::invalid_argument(e.to_string()),
            csr::CsrError::NotAllowed(_) => {
                tracing::warn!(by = %token.by, spiffe_id = %id, reason = %e, "refused a CSR");
                Status::permission_denied(e.to_string())
            }
        })?;
        let issued = self.ca.sign(&checked.public_key, &id)?;
        tracing::info!(spiffe_id = %id, serial = %issued.serial, by = %token.by, not_after = issued.not_after, "issued a certificate");
        Ok(Response::new(v1::CertifyResponse {
            certificate_chain: issued.chain.iter().map(|c| c.to_vec()).collect(),
            trust_bundle: Some(ca::bundle_message(
                self.ca.trust_domain(),
                &issued.roots_pem,
            )),
            spiffe_id: id.to_string(),
            not_after: issued.not_after,
        }))
    }
}

/// Parses `90s`, `15m`, `24h`, `7d`, `500ms`: what operators type for TTLs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    let duration = match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(format!(
            "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }?;
    if duration.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests;
