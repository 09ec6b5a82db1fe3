//! Bearer-token authentication for every API request, and the start-up rule for when the
//! token may be left out.
//!
//! Browsers cannot add headers to an `EventSource` or an `<audio src>`, so the event stream
//! and recording audio also accept the token as `?token=`; every other path takes only the
//! header, so a token in a URL cannot unlock a control.

use std::net::SocketAddr;

use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiState};

/// Checks the token rule at start-up: the API may run without a token only when it
/// listens on a loopback address, where only local users can reach it.
pub fn check_token_policy(listen: SocketAddr, token: &Option<String>) -> Result<(), String> {
    if normalise_token(token.clone()).is_some() || listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "the HTTP API listens on {listen}, which is not a loopback address, so it needs a bearer token"
        ))
    }
}

/// An empty or blank token means "no token".
pub(crate) fn normalise_token(token: Option<String>) -> Option<String> {
    token.filter(|t| !t.trim().is_empty())
}

/// Rejects requests without the configured bearer token.
pub(crate) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string)
        .or_else(|| {
            allows_query_token(request.uri().path())
                .then(|| query_token(request.uri()))
                .flatten()
        });
    match given.as_deref() {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::Unauthorized { invalid: true }.into_response(),
        None => ApiError::Unauthorized { invalid: false }.into_response(),
    }
}

/// Paths a browser loads without being able to set headers.
fn allows_query_token(path: &str) -> bool {
    if path == "/api/events" {
        return true;
    }
    path.strip_prefix("/api/recordings/")
        .and_then(|rest| rest.strip_suffix("/audio"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `token` query parameter, percent-decoded; an empty one counts as absent.
fn query_token(uri: &Uri) -> Option<String> {
    Query::<TokenQuery>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_policy() {
        let some = Some("s3cret".to_string());
        let blank = Some("  ".to_string());
        for (addr, token, ok) in [
            ("127.0.0.1:8080", &None, true),
            ("[::1]:8080", &None, true),
            ("127.0.0.1:8080", &blank, true),
            ("0.0.0.0:8080", &None, false),
            ("[::]:8080", &None, false),
            ("192.0.2.10:8080", &blank, false),
            ("0.0.0.0:8080", &some, true),
            ("192.0.2.10:8080", &some, true),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                check_token_policy(addr, token).is_ok(),
                ok,
                "{addr} {token:?}"
            );
        }
    }

    #[test]
    fn query_tokens_only_where_browsers_need_them() {
        assert!(allows_query_token("/api/events"));
        assert!(allows_query_token("/api/recordings/rec-1/audio"));
        for p in [
            "/api/recordings",
            "/api/recordings/rec-1",
            "/api/recordings//audio",
            "/api/recordings/a/b/audio",
            "/api/calls/x/hangup",
            "/metrics",
            "/api/events/x",
        ] {
            assert!(!allows_query_token(p), "{p}");
        }
        let uri: Uri = "/api/events?types=a&token=a%20b%2Bc".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("a b+c"));
        let uri: Uri = "/api/events?token=".parse().unwrap();
        assert_eq!(query_token(&uri), None);
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
