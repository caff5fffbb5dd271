//! Bearer authentication, scopes, and the per-token rate limit.
//!
//! Tokens live in the control plane's database. A successful lookup may be reused for
//! [`CACHE_TTL`], keyed by the SHA-256 of the secret (never the secret itself), so a
//! revoked token stops working within that time. Failed lookups are never cached: a
//! token created a moment ago works at once.

use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderMap, header};
use runwarden_control::{Caller, Controller, Scope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a successful token lookup is reused.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(5);

/// Above this many entries, expired cache entries and full buckets are swept.
const SWEEP_AT: usize = 4096;

/// Successful lookups, by SHA-256 of the secret.
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
}

impl TokenCache {
    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| now.duration_since(*at) < CACHE_TTL)
            .map(|(c, _)| c.clone())
    }

    fn put(&self, key: [u8; 32], caller: Caller, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
        }
        entries.insert(key, (caller, now));
    }
}

/// One token bucket per token id.
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate_per_sec` tokens a second up to `burst`; a rate of 0 turns limiting off.
    pub(crate) fn new(rate_per_sec: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `token_id`'s bucket, or say how many whole seconds until one
    /// is available.
    pub(crate) fn check(&self, token_id: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            // A bucket that has refilled is the same as no bucket.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (level, at)| {
                *level + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (level, at) = buckets
            .entry(token_id.to_string())
            .or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *level) / self.rate).ceil() as u64).max(1))
        }
    }
}

/// The secret of an `Authorization: Bearer <secret>` header.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "no Authorization header: send `Authorization: Bearer <token>`",
            false,
        ));
    };
    let malformed = || {
        ApiError::unauthorized(
            "the Authorization header is not `Bearer <token>`: send the token after `Bearer `",
            false,
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, secret) = value.split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(malformed());
    }
    Ok(secret)
}

/// Authenticate the request, check that its token has at least `needed`, and take one
/// request from the token's rate limit.
pub(crate) async fn authorize(
    controller: &Controller,
    cache: &TokenCache,
    limiter: &RateLimiter,
    headers: &HeaderMap,
    needed: Scope,
) -> ApiResult<Caller> {
    let secret = bearer(headers)?;
    let key: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let caller = match cache.get(&key, Instant::now()) {
        Some(c) => c,
        None => {
            let found = controller
                .authenticate(secret)
                .await
                .map_err(|e| ApiError::internal("authenticating a token", &e))?;
            let Some(c) = found else {
                return Err(ApiError::unauthorized(
                    "the token is unknown or revoked: ask an administrator for a valid one",
                    true,
                ));
            };
            cache.put(key, c.clone(), Instant::now());
            c
        }
    };
    if caller.scope < needed {
        return Err(ApiError::forbidden(format!(
            "token {} has scope {}, this needs {}: use a token with scope {} or higher",
            caller.token_id,
            caller.scope.as_str(),
            needed.as_str(),
            needed.as_str()
        )));
    }
    limiter
        .check(&caller.token_id, Instant::now())
        .map_err(ApiError::rate_limited)?;
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refill_at_the_rate() {
        let l = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        assert_eq!(l.check("a", t0), Err(1));
        // Another token has its own bucket.
        assert_eq!(l.check("b", t0), Ok(()));
        // Half a second at 2/s refills one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check("a", t1), Ok(()));
        assert!(l.check("a", t1).is_err());
        // Never above the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.check("a", t2), Ok(()));
        }
        assert!(l.check("a", t2).is_err());
    }

    #[test]
    fn retry_after_covers_a_slow_rate() {
        let l = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert_eq!(l.check("a", t0), Err(1));
        let l = RateLimiter::new(0, 1);
        for _ in 0..10 {
            assert_eq!(l.check("a", t0), Ok(()), "rate 0 turns limiting off");
        }
    }

    #[test]
    fn cached_lookups_expire() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        let caller = Caller {
            token_id: "tok_1".into(),
            tenant: "t".into(),
            scope: Scope::Read,
        };
        c.put([1; 32], caller, t0);
        assert!(c.get(&[1; 32], t0 + Duration::from_secs(4)).is_some());
        assert!(c.get(&[1; 32], t0 + CACHE_TTL).is_none());
        assert!(c.get(&[2; 32], t0).is_none());
    }

    #[test]
    fn only_bearer_headers_carry_a_secret() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer rw_x".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "rw_x");
    }
}
