//! Kubernetes ServiceAccount tokens as proof of identity (DESIGN.md decisions 6, 13).
//!
//! A sidecar presents the projected token its kubelet mints for audience [`AUDIENCE`]
//! (short-lived, bound to its Pod); the control plane asks the API server whether it is
//! valid with a `TokenReview` naming that audience, and issues the SPIFFE ID of the
//! ServiceAccount the API server names. The API server refuses a token for another
//! audience, an expired one, and one whose Pod or ServiceAccount is gone; its reason
//! is passed on to the proxy.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The audience Weft's projected tokens are minted for: a token for the API server
/// (or any other audience) cannot be replayed to obtain a mesh certificate.
pub const AUDIENCE: &str = "weft";

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub namespace: String,
    pub service_account: String,
    /// For the log: the Pod the token is bound to, when it is.
    pub pod: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server refused the token: {0}")]
    Refused(String),
    #[error("the token's user {0:?} is not a ServiceAccount")]
    NotServiceAccount(String),
    #[error("the token review failed: {0}")]
    Unavailable(String),
}

pub struct Reviewer {
    client: Client,
}

impl Reviewer {
    pub fn new(client: Client) -> Reviewer {
        Reviewer { client }
    }

    pub async fn review(&self, token: &str) -> Result<Account, ReviewError> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let reviewed = reviews
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".to_owned());
            return Err(ReviewError::Refused(reason));
        }
        // The API server checked the audience; an authenticator that ignores audiences
        // answers without any, and such an answer is not good enough.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
        {
            return Err(ReviewError::Refused(format!(
                "the token is not for audience {AUDIENCE:?}"
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let pod = user
            .extra
            .as_ref()
            .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name"))
            .and_then(|names| names.first().cloned());
        account(&username, pod)
    }
}

/// `system:serviceaccount:<namespace>:<name>` to an [`Account`].
fn account(username: &str, pod: Option<String>) -> Result<Account, ReviewError> {
    let not_one = || ReviewError::NotServiceAccount(username.to_owned());
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(not_one)?;
    let (namespace, service_account) = rest.split_once(':').ok_or_else(not_one)?;
    if namespace.is_empty() || service_account.is_empty() || service_account.contains(':') {
        return Err(not_one());
    }
    Ok(Account {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_are_accounts() {
        let web = account("system:serviceaccount:shop:web", Some("web-1".into()))
            .expect("a ServiceAccount");
        assert_eq!(web.namespace, "shop");
        assert_eq!(web.service_account, "web");
        for user in [
            "admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:web:extra",
            "system:node:worker-1",
        ] {
            assert!(
                matches!(account(user, None), Err(ReviewError::NotServiceAccount(_))),
                "{user}"
            );
        }
    }
}
