//! Who may talk to `redoubt web`: the browser that opened the one-time URL, on this
//! machine, from the page itself.
//!
//! - The URL's token is good once; it buys an HttpOnly, SameSite=Strict session cookie.
//! - The Host header must name the loopback address we listen on (DNS rebinding: a page
//!   of another site whose name resolves to 127.0.0.1 sends its own name).
//! - An Origin header must be ours; a request that changes anything must carry one
//!   (a cross-site form or fetch sends the other site's origin).
//! - Every answer carries a strict Content-Security-Policy and no-store.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use redoubt_proto::{Bytes, constant_time_eq};
use serde::Deserialize;

use super::ApiError;

pub(crate) const COOKIE: &str = "redoubt_web";

/// Sessions a browser may hold at once (each login token makes one).
const SESSIONS_MAX: usize = 16;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) struct Guard {
    /// The Host values we answer to: 127.0.0.1:PORT, localhost:PORT, [::1]:PORT.
    hosts: Vec<String>,
    /// The login token not yet used, if any.
    token: Mutex<Option<[u8; 32]>>,
    /// Session cookie values handed out.
    sessions: Mutex<Vec<[u8; 32]>>,
}

impl Guard {
    /// A guard for a server listening on `addr`, with a fresh login token.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let port = addr.port();
        let hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            addr.to_string(),
        ];
        Self {
            hosts,
            token: Mutex::new(Some(random())),
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// The URL that logs a browser in (once).
    pub(crate) fn login_url(&self) -> String {
        let token = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| Bytes(t).to_hex());
        format!(
            "http://{}/login?token={}",
            self.hosts[0],
            token.unwrap_or_default()
        )
    }

    /// Exchanges the login token for a new session; `None` when it is wrong or used.
    fn redeem(&self, offered: &str) -> Option<String> {
        let offered = Bytes::<32>::from_hex(offered)?;
        let mut token = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !token.is_some_and(|t| constant_time_eq(&t, &offered.0)) {
            return None;
        }
        *token = None;
        let session = random();
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions.len() >= SESSIONS_MAX {
            sessions.remove(0);
        }
        sessions.push(session);
        Some(Bytes(session).to_hex())
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(offered) = cookie(headers, COOKIE).and_then(Bytes::<32>::from_hex) else {
            return false;
        };
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.iter().any(|s| constant_time_eq(s, &offered.0))
    }

    /// Host and Origin: `None` when the request may go on.
    fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Option<&'static str> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| self.hosts.iter().any(|ours| ours == h)) {
            return Some("the Host header does not name this web app's loopback address");
        }
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        match origin {
            Some(origin) => {
                let ours = origin
                    .strip_prefix("http://")
                    .is_some_and(|rest| self.hosts.iter().any(|h| h == rest));
                (!ours).then_some("requests from another origin are refused")
            }
            None if !matches!(*method, Method::GET | Method::HEAD) => {
                Some("a request that changes something must come from the page (no Origin header)")
            }
            None => None,
        }
    }
}

/// Checks Host, Origin and the session cookie (except for `/login`), and adds the
/// security headers to every answer.
pub(crate) async fn check(
    State(guard): State<std::sync::Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let refusal = if let Some(why) = guard.check_origin(request.method(), request.headers()) {
        Some(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why))
    } else if request.uri().path() != "/login" && !guard.has_session(request.headers()) {
        Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no session: open the URL `redoubt web` printed",
        ))
    } else {
        None
    };
    let mut response = match refusal {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// `GET /login?token=T`: the one-time token becomes a session cookie.
pub(crate) async fn login(
    State(guard): State<std::sync::Arc<Guard>>,
    Query(login): Query<Login>,
) -> Response {
    match guard.redeem(&login.token) {
        Some(session) => {
            let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this login link was used already or is wrong: restart `redoubt web` for a new one",
        )
        .into_response(),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn random() -> [u8; 32] {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_good_once_and_makes_a_session() {
        let guard = Guard::new("127.0.0.1:8123".parse().unwrap());
        let url = guard.login_url();
        let token = url.split("token=").nth(1).unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:8123/login?token="));
        assert_eq!(guard.redeem("0000"), None);
        assert_eq!(guard.redeem(&"0".repeat(64)), None);
        let session = guard.redeem(&token).expect("first use");
        assert_eq!(guard.redeem(&token), None, "second use refused");
        let with = headers(&[(header::COOKIE, &format!("a=b; {COOKIE}={session}"))]);
        assert!(guard.has_session(&with));
        assert!(!guard.has_session(&headers(&[(header::COOKIE, &format!("{COOKIE}=00"))])));
        assert!(!guard.has_session(&HeaderMap::new()));
    }

    #[test]
    fn host_and_origin_must_be_ours() {
        let guard = Guard::new("127.0.0.1:8123".parse().unwrap());
        let ok = headers(&[(header::HOST, "127.0.0.1:8123")]);
        assert_eq!(guard.check_origin(&Method::GET, &ok), None);
        let local = headers(&[
            (header::HOST, "localhost:8123"),
            (header::ORIGIN, "http://localhost:8123"),
        ]);
        assert_eq!(guard.check_origin(&Method::POST, &local), None);
        // DNS rebinding: another name that resolves here.
        let rebound = headers(&[(header::HOST, "evil.example:8123")]);
        assert!(guard.check_origin(&Method::GET, &rebound).is_some());
        let other_port = headers(&[(header::HOST, "127.0.0.1:9999")]);
        assert!(guard.check_origin(&Method::GET, &other_port).is_some());
        let cross = headers(&[
            (header::HOST, "127.0.0.1:8123"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(guard.check_origin(&Method::GET, &cross).is_some());
        let https = headers(&[
            (header::HOST, "127.0.0.1:8123"),
            (header::ORIGIN, "https://127.0.0.1:8123"),
        ]);
        assert!(guard.check_origin(&Method::POST, &https).is_some());
        // A write without an Origin is refused; a read is not.
        assert!(guard.check_origin(&Method::POST, &ok).is_some());
        assert!(guard.check_origin(&Method::DELETE, &ok).is_some());
    }
}
