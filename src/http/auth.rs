//! Bearer tokens with roles. Only a SHA-256 hash of each token is stored: tokens are 256 random
//! bits, so a fast hash is enough (a slow password hash protects low-entropy secrets).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use chrono::NaiveDateTime;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::db::models::{ApiToken, NewApiToken};
use crate::db::DbConnection;
use crate::domain::Role;

const TOKEN_PREFIX: &str = "cg_";

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token with `role`; returns the token itself, which is shown once and never stored.
pub fn create_token(
    conn: &mut DbConnection,
    role: Role,
    label: Option<&str>,
    now: NaiveDateTime,
) -> diesel::QueryResult<String> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let id = format!("tok_{}", uuid::Uuid::now_v7().simple());
    ApiToken::insert(
        conn,
        &NewApiToken {
            id: &id,
            token_hash: &hash_token(&token),
            role: role.as_str(),
            label,
            created_at: now,
        },
    )?;
    Ok(token)
}

/// Recently seen token hashes, so that every API call does not cost a database read.
/// Entries expire after `TTL`: a revoked token stops working within that time.
#[derive(Debug, Default)]
pub struct TokenCache(RwLock<HashMap<String, (Caller, Instant)>>);

impl TokenCache {
    const TTL: Duration = Duration::from_secs(60);

    fn get(&self, hash: &str) -> Option<Caller> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, hash: String, caller: Caller) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        }
        map.insert(hash, (caller, Instant::now()));
    }
}

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role is one of `roles` (or admin).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role.allows(roles) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                needed: roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                held: self.role.to_string(),
            })
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Authenticated already by the route's role check (`routes::require_role`).
        if let Some(caller) = actix_web::HttpMessage::extensions(req)
            .get::<Caller>()
            .cloned()
        {
            return Box::pin(async move { Ok(caller) });
        }
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110): `bearer` and `BEARER` are Bearer too.
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token
                .filter(|t| t.starts_with(TOKEN_PREFIX))
                .ok_or(ApiError::Unauthorized)?;
            let state =
                state.ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("no app state")))?;
            let hash = hash_token(&token);
            if let Some(caller) = state.tokens.get(&hash) {
                return Ok(caller);
            }
            let lookup = hash.clone();
            let row = state
                .db(move |conn, _| Ok(ApiToken::active_by_hash(conn, &lookup)?))
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let role = row
                .role
                .parse::<Role>()
                .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("token {}: {e}", row.id)))?;
            let caller = Caller {
                token_id: row.id,
                role,
            };
            state.tokens.put(hash, caller.clone());
            Ok(caller)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_not_the_token() {
        let h = hash_token("cg_abc");
        assert_eq!(h, hash_token("cg_abc"));
        assert_eq!(h.len(), 64);
        assert!(!h.contains("abc"));
    }

    #[test]
    fn roles_are_enforced() {
        let caller = Caller {
            token_id: "t".into(),
            role: Role::Finance,
        };
        assert!(caller.require(&[Role::Finance, Role::Support]).is_ok());
        let err = caller.require(&[Role::Service]).unwrap_err();
        assert!(err.to_string().contains("service"));
    }
}
