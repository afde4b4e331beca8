//! Join tokens: what lets a proxy obtain a certificate for one identity.
//!
//! A token reads `weft.<id>.<secret>`: the id (48 bits, hex) is public and names the
//! token in `weftctl token list/revoke`; the secret (256 random bits, hex) is shown
//! once at creation. The store keeps the SHA-256 of the whole token, so a copy of the
//! store does not hold usable tokens. A plain hash is enough: the secret has 256 bits
//! of entropy, so there is nothing to brute-force that a slow hash would protect.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_proto::model::{validate_label, Invalid};
use weft_proto::v1;

use crate::store::{Store, StoreError};

const PREFIX: &str = "weft";
const SECRET_PREFIX: &str = "token/";
/// A token without a --ttl lives a day: long enough to start a workload, short enough
/// that a leaked one does not stay useful.
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 3600;
pub const MAX_TTL_SECONDS: u64 = 366 * 24 * 3600;

/// A token as stored: never its secret. No `Debug`-printed secret can leak from here
/// because there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the whole token, lowercase hex.
    pub hash: String,
    pub namespace: String,
    pub service_account: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

impl TokenRecord {
    pub fn to_proto(&self) -> v1::Token {
        v1::Token {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
        }
    }
}

/// Why a token was refused. The messages name the token's public id at most.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a weft join token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("token {0} is revoked")]
    Revoked(String),
    #[error("token {id} expired at {expires_at} (Unix seconds)")]
    Expired { id: String, expires_at: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored token {0} is corrupt")]
    Corrupt(String),
}

pub struct Tokens {
    store: Arc<dyn Store>,
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Tokens {
        Tokens { store }
    }

    /// Creates a token; returns its record and the token text (the only copy).
    pub async fn create(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_seconds: u64,
        now: i64,
    ) -> Result<(TokenRecord, String), TokensError> {
        validate_label("namespace", namespace)?;
        validate_label("service_account", service_account)?;
        let ttl = match ttl_seconds {
            0 => DEFAULT_TTL_SECONDS,
            ttl if ttl > MAX_TTL_SECONDS => {
                return Err(Invalid::new(
                    "ttl_seconds",
                    format!("{ttl} is more than a year ({MAX_TTL_SECONDS})"),
                )
                .into())
            }
            ttl => ttl,
        };
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let id = hex(&id);
        let token = format!("{PREFIX}.{id}.{}", hex(&secret));
        let record = TokenRecord {
            id: id.clone(),
            hash: hash(&token),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            revoked: false,
        };
        self.put(&record).await?;
        Ok((record, token))
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, TokensError> {
        let mut records = Vec::new();
        for (key, value) in self.store.list_secrets(SECRET_PREFIX).await? {
            records.push(decode(&key, &value)?);
        }
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    /// Marks a token revoked (kept, so that `list` shows it and a use says why it
    /// failed); `None` when there is no such token.
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenRecord>, TokensError> {
        let key = format!("{SECRET_PREFIX}{id}");
        let Some(value) = self.store.get_secret(&key).await? else {
            return Ok(None);
        };
        let mut record = decode(&key, &value)?;
        record.revoked = true;
        self.put(&record).await?;
        Ok(Some(record))
    }

    /// The record of a valid token.
    pub async fn verify(&self, token: &str, now: i64) -> Result<TokenRecord, TokensError> {
        let id = parse_id(token).ok_or(TokenError::Malformed)?;
        let key = format!("{SECRET_PREFIX}{id}");
        let value = self
            .store
            .get_secret(&key)
            .await?
            .ok_or(TokenError::Unknown)?;
        let record = decode(&key, &value)?;
        check(&record, token, now)?;
        Ok(record)
    }

    async fn put(&self, record: &TokenRecord) -> Result<(), TokensError> {
        let value =
            serde_json::to_vec(record).map_err(|_| TokensError::Corrupt(record.id.clone()))?;
        self.store
            .put_secret(&format!("{SECRET_PREFIX}{}", record.id), value)
            .await?;
        Ok(())
    }
}

fn decode(key: &str, value: &[u8]) -> Result<TokenRecord, TokensError> {
    serde_json::from_slice(value).map_err(|_| TokensError::Corrupt(key.to_owned()))
}

/// The public id of a well-formed token.
fn parse_id(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    let (prefix, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    let hex_of = |text: &str, len: usize| {
        text.len() == len
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (parts.next().is_none() && prefix == PREFIX && hex_of(id, 12) && hex_of(secret, 64))
        .then_some(id)
}

/// Checks a stored record against the presented token at `now`.
fn check(record: &TokenRecord, token: &str, now: i64) -> Result<(), TokenError> {
    // Compared in constant time, so response timing says nothing about how much of
    // a guessed token's hash was right.
    let presented = hash(token);
    let same = presented.len() == record.hash.len()
        && presented
            .bytes()
            .zip(record.hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::Unknown);
    }
    if record.revoked {
        return Err(TokenError::Revoked(record.id.clone()));
    }
    if now >= record.expires_at {
        return Err(TokenError::Expired {
            id: record.id.clone(),
            expires_at: record.expires_at,
        });
    }
    Ok(())
}

pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_the_token_shape_parses() {
        let secret = "0".repeat(64);
        assert_eq!(
            parse_id(&format!("weft.0123456789ab.{secret}")),
            Some("0123456789ab")
        );
        for bad in [
            String::new(),
            format!("weft.0123456789ab.{secret}.x"),
            format!("wefx.0123456789ab.{secret}"),
            format!("weft.0123456789AB.{secret}"),
            format!("weft.0123456789a.{secret}"),
            "weft.0123456789ab.00".to_owned(),
        ] {
            assert_eq!(parse_id(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_token_works_until_it_expires_or_is_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let tokens = Tokens::new(store.clone());
        let now = 1_000_000;
        let (record, token) = tokens
            .create("shop", "orders", 60, now)
            .await
            .expect("create");
        assert_eq!(record.expires_at, now + 60);

        // Only the hash is stored.
        let stored = store.list_secrets("token/").await.expect("list");
        let text = String::from_utf8_lossy(&stored[0].1).into_owned();
        let secret = token.rsplit('.').next().expect("secret");
        assert!(!text.contains(secret), "the secret was stored: {text}");

        let verified = tokens.verify(&token, now + 59).await.expect("valid");
        assert_eq!(verified.service_account, "orders");
        assert!(matches!(
            tokens.verify(&token, now + 60).await,
            Err(TokensError::Token(TokenError::Expired { .. }))
        ));
        // Right id, wrong secret.
        let forged = format!("weft.{}.{}", record.id, "f".repeat(64));
        assert!(matches!(
            tokens.verify(&forged, now).await,
            Err(TokensError::Token(TokenError::Unknown))
        ));

        tokens
            .revoke(&record.id)
            .await
            .expect("revoke")
            .expect("exists");
        assert!(matches!(
            tokens.verify(&token, now).await,
            Err(TokensError::Token(TokenError::Revoked(_)))
        ));
        assert!(tokens.list().await.expect("list")[0].revoked);
        assert!(tokens
            .revoke("000000000000")
            .await
            .expect("revoke")
            .is_none());
        assert!(tokens.create("shop", "Orders", 60, now).await.is_err());
        assert!(tokens
            .create("shop", "orders", MAX_TTL_SECONDS + 1, now)
            .await
            .is_err());
    }
}
