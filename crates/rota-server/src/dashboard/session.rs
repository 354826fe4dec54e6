//! Who is looking at the dashboard, and whether their action may go through.
//!
//! A token (any scope) reads the pages; actions need `admin`. The login page turns a
//! token into the `rota_session` cookie (HttpOnly, SameSite=Strict, path `/`); a bearer
//! header works too (scripts, benchmarks). With no tokens configured the dashboard is
//! open, as the API is (the server then only binds loopback).
//!
//! Every action is a POST that must come from this origin (`Sec-Fetch-Site: same-origin`,
//! or else an `Origin` that names this host) and carry the CSRF token: the SHA-256 of the
//! session's token under a fixed label (with auth off, of a secret drawn at start-up), so a
//! page of another site can neither read it nor make one up.

use axum::http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::auth::Scope;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "rota_session";

/// Whoever a request comes from.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name ("open" with auth off).
    pub name: String,
    /// What they may do.
    pub scope: Scope,
    /// The CSRF token of their session.
    pub csrf: String,
}

impl Viewer {
    /// Whether they may act (retry, cancel, pause, …).
    pub fn can_act(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No session or token: log in.
    NotLoggedIn,
    /// The cookie or header names no token this server accepts.
    UnknownToken,
    /// The action needs an admin token.
    NotAdmin(String),
    /// The request came from another site.
    CrossSite(String),
    /// The CSRF token was missing or wrong.
    BadCsrf,
}

impl Refusal {
    /// What to tell the person.
    pub fn message(&self) -> String {
        match self {
            Refusal::NotLoggedIn => "log in with a token to see the dashboard".into(),
            Refusal::UnknownToken => {
                "that token is not one this server accepts; log in again".into()
            }
            Refusal::NotAdmin(name) => format!(
                "token {name:?} may look but not act: actions need an admin token (rota token new --scope admin)"
            ),
            Refusal::CrossSite(from) => format!(
                "refused: this action came from another site ({from}); actions are taken from the dashboard's own pages only"
            ),
            Refusal::BadCsrf => {
                "refused: the form's CSRF token is missing or stale; reload the page and try again"
                    .into()
            }
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotLoggedIn | Refusal::UnknownToken => 401,
            _ => 403,
        }
    }
}

/// The CSRF token of a session whose secret is `secret` (the token, or the process's
/// secret with auth off).
pub fn csrf_of(secret: &str) -> String {
    let digest = Sha256::digest(format!("rota-csrf:{secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The token a request presents: its session cookie, or a bearer header.
fn presented(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
        .filter(|t| !t.is_empty())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::auth::bearer_token)
        })
}

/// Who is asking.
pub fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Refusal> {
    let auth = &state.config.auth;
    if !auth.enabled() {
        return Ok(Viewer {
            name: "open".into(),
            scope: Scope::Admin,
            csrf: csrf_of(&state.dashboard.secret),
        });
    }
    let token = presented(headers).ok_or(Refusal::NotLoggedIn)?;
    let entry = auth.find(token).ok_or(Refusal::UnknownToken)?;
    Ok(Viewer {
        name: entry.name.clone(),
        scope: entry.scope,
        csrf: csrf_of(token),
    })
}

/// Whether a request was sent by a page of this origin: `Sec-Fetch-Site` when the browser
/// sends it, else the `Origin` against `Host`. A request with neither (not a browser's) is
/// left to the CSRF token.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" => Ok(()),
            other => Err(Refusal::CrossSite(format!("Sec-Fetch-Site: {other}"))),
        };
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        return match origin_host {
            Some(h) if !host.is_empty() && h.eq_ignore_ascii_case(host) => Ok(()),
            _ => Err(Refusal::CrossSite(format!("Origin: {origin}"))),
        };
    }
    Ok(())
}

/// Lets an action through: an admin, from this origin, with the session's CSRF token
/// (`form_csrf`, or the `X-CSRF-Token` header htmx sends).
pub fn authorize_action(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    form_csrf: Option<&str>,
) -> Result<Viewer, Refusal> {
    debug_assert_eq!(method, Method::POST);
    same_origin(headers)?;
    let viewer = viewer(state, headers)?;
    let sent = form_csrf.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    let matches = sent.is_some_and(|s| {
        s.len() == viewer.csrf.len()
            && s.bytes()
                .zip(viewer.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !matches {
        return Err(Refusal::BadCsrf);
    }
    if !viewer.can_act() {
        return Err(Refusal::NotAdmin(viewer.name));
    }
    Ok(viewer)
}

/// The `Set-Cookie` that starts a session with `token`.
pub fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` that ends it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_trusts_fetch_metadata_then_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        for site in ["cross-site", "same-site", "none"] {
            let h = HeaderMap::from_iter([(
                axum::http::HeaderName::from_static("sec-fetch-site"),
                HeaderValue::from_str(site).unwrap(),
            )]);
            assert!(same_origin(&h).is_err(), "{site}");
        }
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:7788"),
            ("host", "127.0.0.1:7788")
        ]))
        .is_ok());
        assert!(same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:7788")
        ]))
        .is_err());
        assert!(same_origin(&headers(&[("origin", "null"), ("host", "h")])).is_err());
        assert!(
            same_origin(&HeaderMap::new()).is_ok(),
            "left to the CSRF token"
        );
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = headers(&[("cookie", "a=1; rota_session=rota_abc ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("rota_abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_ne!(csrf_of("rota_abc"), csrf_of("rota_abd"));
        assert_eq!(csrf_of("x").len(), 64);
    }
}
