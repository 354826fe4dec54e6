//! Bearer tokens with scopes.
//!
//! Tokens are 32 random bytes, written `rota_<64 hex digits>`. The server stores only their
//! SHA-256 hashes (from `rota.toml`), compares hashes in constant time, and never logs a
//! token. A token's scope decides what it may do: `read` reads (the API's `GET`s and the
//! dashboard's pages), `produce` enqueues and reads, `work` runs
//! jobs (fetch, heartbeat, complete, fail, hand back, progress) and reads, `admin` does
//! everything. With no tokens configured, auth is off and the server only binds loopback.
//!
//! A token may carry a request rate (`rate = "50/1s burst 100"` in its `[[token]]`): past it
//! the token's requests are answered 429 `rate_limited` with `Retry-After`, so one client
//! flooding a shared server cannot starve the others. Each node counts on its own.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rota_api::Problem;
use rota_core::Rate;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read only: every `GET` of the API and the dashboard's pages, no action.
    Read,
    /// Enqueue jobs and read.
    Produce,
    /// Run jobs and read.
    Work,
    /// Everything.
    Admin,
}

impl Scope {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Produce => "produce",
            Scope::Work => "work",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "produce" => Ok(Scope::Produce),
            "work" => Ok(Scope::Work),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}: expected read, produce, work or admin"
            )),
        }
    }
}

/// One configured token: its name, scope and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// A label for logs and configuration.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// Most requests it may make (none: no limit).
    pub rate: Option<Rate>,
}

impl TokenEntry {
    /// Reads `sha256:<64 hex digits>`.
    pub fn parse_hash(raw: &str) -> Result<[u8; 32], String> {
        let hex = raw.strip_prefix("sha256:").ok_or_else(|| {
            format!("hash {raw:?} must look like sha256:<64 hex digits> (made by `rota token new`)")
        })?;
        let bytes = decode_hex(hex)
            .ok_or_else(|| format!("hash {raw:?} must have 64 hex digits after sha256:"))?;
        bytes
            .try_into()
            .map_err(|_| format!("hash {raw:?} must have 64 hex digits after sha256:"))
    }
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Configured tokens; empty means auth is off.
    pub tokens: Vec<TokenEntry>,
}

impl Auth {
    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The entry matching `token`, comparing every hash in constant time.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        let hash = hash_token(token);
        let mut found = None;
        for entry in &self.tokens {
            if constant_time_eq(&entry.hash, &hash) {
                found = Some(entry);
            }
        }
        found
    }
}

/// Each rate-limited token's bucket, as the instant its next request is theoretically due
/// (see [`Rate::admit`]), by token name.
#[derive(Debug, Default)]
pub struct TokenBuckets(Mutex<HashMap<String, Timestamp>>);

impl TokenBuckets {
    /// Admits one request of `entry` at `now`, or says how many whole seconds to wait.
    pub fn admit(&self, entry: &TokenEntry, now: Timestamp) -> Result<(), u64> {
        let Some(rate) = entry.rate else {
            return Ok(());
        };
        let mut buckets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tat = buckets.get(&entry.name).copied();
        match rate.admit(tat, now) {
            Some(next) => {
                buckets.insert(entry.name.clone(), next);
                Ok(())
            }
            None => {
                let due = rate.next_admission(tat.unwrap_or(now));
                let wait = due.duration_since(now).as_secs_f64().max(0.0);
                Err((wait.ceil() as u64).max(1))
            }
        }
    }
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token and its configuration hash (`sha256:<hex>`).
pub fn generate_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("rota_{}", encode_hex(&bytes));
    let hash = format!("sha256:{}", encode_hex(&hash_token(&token)));
    Ok((token, hash))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The scope a request needs: reads need any token; running jobs needs `work`; enqueueing
/// needs `produce`; everything else (cancel, retry, dead jobs, queue changes) needs `admin`.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if method == Method::GET {
        return None;
    }
    let work = [
        "/v1/fetch",
        "/v1/heartbeat",
        "/v1/complete",
        "/v1/complete-and-fetch",
        "/v1/fail",
        "/v1/hand-back",
    ];
    if work.contains(&path)
        || (path.starts_with("/v1/jobs/")
            && (path.ends_with("/progress") || path.ends_with("/checkpoint")))
    {
        return Some(Scope::Work);
    }
    if path == "/v1/jobs" || path == "/v1/jobs/batch" {
        return Some(Scope::Produce);
    }
    Some(Scope::Admin)
}

fn unauthorized(detail: &str) -> Response {
    let mut response =
        ApiError::from(Problem::new(401, "unauthorized", "Unauthorized", detail)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BEARER` work too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: checks the bearer token against the route's required scope.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let auth = &state.config.auth;
    // Health checks and metrics answer without a token, for load balancers and scrapers.
    let open = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    // The dashboard checks its own sessions (a cookie or a bearer token; see
    // `dashboard::session`).
    if crate::dashboard::owns(request.uri().path()) {
        return next.run(request).await;
    }
    if !auth.enabled() || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        return unauthorized(
            "send a token as `Authorization: Bearer <token>` (make one with `rota token new`)",
        );
    };
    let Some(entry) = auth.find(presented.trim()) else {
        return unauthorized("the bearer token is not one this server accepts");
    };
    if let Err(seconds) = state.token_buckets.admit(entry, state.clock.now()) {
        let rate = entry.rate.map(|r| r.to_string()).unwrap_or_default();
        return ApiError::from(
            Problem::new(
                429,
                "rate_limited",
                "Too many requests",
                format!(
                    "token {:?} is limited to {rate} requests (its rate in rota.toml); try again in {seconds} s",
                    entry.name
                ),
            )
            .with_retry_after(seconds),
        )
        .into_response();
    }
    if let Some(needed) = required_scope(request.method(), request.uri().path()) {
        if entry.scope != needed && entry.scope != Scope::Admin {
            return ApiError::from(Problem::new(
                403,
                "forbidden",
                "Forbidden",
                if needed == Scope::Admin {
                    format!(
                        "token {:?} has scope {}; this needs an admin token",
                        entry.name, entry.scope
                    )
                } else {
                    format!(
                        "token {:?} has scope {}; this needs a {needed} or an admin token",
                        entry.name, entry.scope
                    )
                },
            ))
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_match_their_hash_and_nothing_else() {
        let (token, hash) = generate_token().unwrap();
        let auth = Auth {
            tokens: vec![TokenEntry {
                name: "t".into(),
                scope: Scope::Work,
                hash: TokenEntry::parse_hash(&hash).unwrap(),
                rate: None,
            }],
        };
        assert_eq!(auth.find(&token).map(|e| e.scope), Some(Scope::Work));
        assert!(auth.find("rota_00").is_none());
        let (other, _) = generate_token().unwrap();
        assert_ne!(token, other);
    }

    /// A token with `10/1s burst 3`: three at once, then one every 100 ms, each refusal
    /// saying how long to wait; a token without a rate is never limited. The clock is
    /// moved by hand.
    #[test]
    fn a_rate_limited_token_gets_its_burst_then_its_rate() {
        let entry = |name: &str, rate: Option<&str>| TokenEntry {
            name: name.into(),
            scope: Scope::Produce,
            hash: [0; 32],
            rate: rate.map(|r| r.parse().unwrap()),
        };
        let limited = entry("flood", Some("10/1s burst 3"));
        let free = entry("calm", None);
        let buckets = TokenBuckets::default();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |ms: i64| start + jiff::SignedDuration::from_millis(ms);
        for _ in 0..3 {
            assert_eq!(buckets.admit(&limited, at(0)), Ok(()));
        }
        assert_eq!(buckets.admit(&limited, at(0)), Err(1), "the burst is spent");
        assert_eq!(buckets.admit(&limited, at(99)), Err(1));
        assert_eq!(
            buckets.admit(&limited, at(100)),
            Ok(()),
            "one more per 100 ms"
        );
        assert_eq!(buckets.admit(&limited, at(150)), Err(1));
        for _ in 0..1000 {
            assert_eq!(buckets.admit(&free, at(150)), Ok(()));
        }
        let slow = entry("slow", Some("1/1m"));
        assert_eq!(buckets.admit(&slow, at(0)), Ok(()));
        assert_eq!(
            buckets.admit(&slow, at(1_500)),
            Err(59),
            "whole seconds, rounded up"
        );
    }

    #[test]
    fn malformed_hashes_are_refused_with_the_expected_shape() {
        for bad in ["abc", "sha256:zz", "sha256:00"] {
            assert!(
                TokenEntry::parse_hash(bad).unwrap_err().contains("sha256:"),
                "{bad}"
            );
        }
    }

    /// The scheme is case-insensitive (issue 18: `bearer <token>` got 401).
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "BeArEr t0k"] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header}");
        }
        assert_eq!(bearer_token("Basic t0k"), None);
        assert_eq!(bearer_token("t0k"), None);
    }

    #[test]
    fn routes_need_the_documented_scopes() {
        assert_eq!(
            required_scope(&Method::POST, "/v1/jobs"),
            Some(Scope::Produce)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/fetch"),
            Some(Scope::Work)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/jobs/x/progress"),
            Some(Scope::Work)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/dead/retry"),
            Some(Scope::Admin)
        );
        assert_eq!(required_scope(&Method::GET, "/v1/jobs"), None);
    }
}
