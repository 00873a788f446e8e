//! The calendar and contacts server's HTTP client: hyper's HTTP/1.1 client connection over
//! the connector's own TCP (and rustls) stream, one request per connection
//! (`Connection: close`), Basic authentication, redirects not followed (a 3xx is answered
//! like any other status). Everything read from the network is bounded (hyper's head
//! limits [`HEAD_BYTES_MAX`] and [`HEADERS_MAX`], the body [`BODY_BYTES_MAX`]) and every
//! exchange is timed out ([`EXCHANGE_TIMEOUT`]; connecting alone in 15 s).
//!
//! The service account's password lives only in the `Authorization` header this module
//! builds (marked sensitive); no error, log line or `Debug` output carries it.

use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use redoubt_proto::{DavServerSettings, HostPort};

use crate::stream::MailStream;

/// Largest response body accepted.
pub(crate) const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest status line plus headers (and chunked trailers) accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most header lines accepted in one response.
const HEADERS_MAX: usize = 128;
/// Longest one exchange (connect, TLS, request, whole response) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The connection failed, timed out, or the server spoke something other than HTTP:
    /// nothing can be said about the request's effect.
    #[error("{0}")]
    Connection(String),
    /// The request itself cannot be sent (a path or header with forbidden characters).
    #[error("{0}")]
    Request(String),
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value, if it is there and readable as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The server named by the settings' URL, with the service account's credentials.
pub(crate) struct Client {
    tls: bool,
    server: HostPort,
    /// `Host` header value.
    host: String,
    /// `Basic <base64(user:password)>`, marked sensitive.
    authorization: HeaderValue,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.tls)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client and the URL's path (ending in `/`).
    pub(crate) fn new(settings: &DavServerSettings) -> Result<(Self, String), String> {
        let (tls, server, path) = settings.parse_url()?;
        let host_name = if server.host.contains(':') {
            format!("[{}]", server.host)
        } else {
            server.host.clone()
        };
        let default_port = if tls { 443 } else { 80 };
        let host = if server.port == default_port {
            host_name
        } else {
            format!("{host_name}:{}", server.port)
        };
        let credentials = format!("{}:{}", settings.user, settings.password);
        let basic = format!("Basic {}", data_encoding::BASE64.encode(credentials.as_bytes()));
        // Not the value in the error: it holds the password.
        let mut authorization = HeaderValue::from_str(&basic)
            .map_err(|_| "the service account's user or password has control characters".to_owned())?;
        authorization.set_sensitive(true);
        let client = Self {
            tls,
            server,
            host,
            authorization,
        };
        Ok((client, path))
    }

    /// `scheme://host[:port]`, to tell one server from another.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.host)
    }

    /// Sends one request and reads the whole response.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let request = self.request(method, path, headers, body)?;
        match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Connection(format!(
                "{method} {path}: no complete answer within {EXCHANGE_TIMEOUT:?}"
            ))),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(HttpError::Request(format!("bad method {method:?}")));
        }
        // Printable ASCII only: what goes on the request line is exactly what was asked.
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpError::Request(format!("bad request path {path:?}")));
        }
        let bad = || HttpError::Request(format!("bad request {method} {path:?}"));
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(|_| bad())?)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, self.authorization.clone())
            .header(hyper::header::USER_AGENT, "redoubt-connector")
            .header(hyper::header::CONNECTION, "close")
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|_| bad())?;
        for (name, value) in headers {
            let bad_header = || HttpError::Request(format!("bad header {name:?}"));
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad_header())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad_header())?;
            request.headers_mut().append(name, value);
        }
        Ok(request)
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Response, HttpError> {
        let io = |e: std::io::Error| HttpError::Connection(format!("{}: {e}", self.server));
        let tcp = MailStream::connect(&self.server).await.map_err(io)?;
        let stream = if self.tls {
            MailStream::tls(&self.server, tcp).await.map_err(io)?
        } else {
            MailStream::Plain(tcp)
        };
        exchange_on(stream, request).await
    }
}

/// One request and its whole response over `stream`, which is closed after.
async fn exchange_on<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_headers(HEADERS_MAX)
        .max_header_size(HEAD_BYTES_MAX)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(protocol)?;
        drop(sender);
        let (parts, body) = response.into_parts();
        if body_too_large(&parts.headers) {
            return Err(too_large());
        }
        let body = Limited::new(body, BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    too_large()
                } else {
                    HttpError::Connection(format!("the calendar server's answer was cut short: {e}"))
                }
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_vec(),
        })
    };
    // The connection is driven here, not by a spawned task, so it ends with the exchange
    // (or its timeout) and no socket outlives it.
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        result = &mut exchange => result,
        // Done or failed: the exchange has its answer or its error already.
        _ = &mut connection => exchange.await,
    }
}

/// Whether the answer announces a body larger than accepted (refused before reading it).
fn body_too_large(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > BODY_BYTES_MAX as u64)
}

fn protocol(error: hyper::Error) -> HttpError {
    HttpError::Connection(format!("the calendar server's answer is not HTTP/1.1: {error}"))
}

fn too_large() -> HttpError {
    HttpError::Connection(format!(
        "the calendar server's answer is larger than {BODY_BYTES_MAX} bytes"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn client() -> Client {
        let settings = DavServerSettings {
            url: "http://127.0.0.1:5232/dav/".into(),
            user: "svc".into(),
            password: "s3cret-pw".into(),
        };
        Client::new(&settings).unwrap().0
    }

    /// Sends a request over an in-memory pipe whose far end answers `answer` (then
    /// closes), and returns the answer read and the request the far end saw.
    async fn exchange_with(method: &str, answer: Vec<u8>) -> (Result<Response, HttpError>, String) {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            // The far end may be gone already (an answer refused early).
            let _ = far.write_all(&answer).await;
            let _ = far.shutdown().await;
            String::from_utf8_lossy(&request).into_owned()
        });
        let request = client().request(method, "/dav/a%40b/x.ics", &[("If-None-Match", "*")], b"abc");
        let result = tokio::time::timeout(Duration::from_secs(20), exchange_on(near, request.unwrap()))
            .await
            .expect("an exchange ends");
        (result, server.await.unwrap())
    }

    #[tokio::test]
    async fn content_length_chunked_and_close_framed_bodies() {
        let (r, request) = exchange_with(
            "PUT",
            b"HTTP/1.1 207 Multi-Status\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
                .to_vec(),
        )
        .await;
        let r = r.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (207, &b"hello"[..]));
        assert_eq!(r.header("CONTENT-TYPE"), Some("text/xml"));
        let request = request.to_ascii_lowercase();
        assert!(
            request.starts_with("put /dav/a%40b/x.ics http/1.1\r\n"),
            "{request}"
        );
        for line in [
            "host: 127.0.0.1:5232\r\n",
            "connection: close\r\n",
            "content-length: 3\r\n",
            "if-none-match: *\r\n",
        ] {
            assert!(request.contains(line), "{line:?} in {request}");
        }
        let basic = data_encoding::BASE64
            .encode(b"svc:s3cret-pw")
            .to_ascii_lowercase();
        assert!(request.contains(&format!("authorization: basic {basic}\r\n")));

        let (r, _) = exchange_with(
            "GET",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(r.unwrap().body, b"hello world");

        let (r, _) = exchange_with(
            "GET",
            b"HTTP/1.0 200 OK\r\nETag: \"x\"\r\n\r\nuntil the end".to_vec(),
        )
        .await;
        let r = r.unwrap();
        assert_eq!(
            (r.body.as_slice(), r.header("etag")),
            (&b"until the end"[..], Some("\"x\""))
        );

        let (r, _) = exchange_with(
            "PUT",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        )
        .await;
        let r = r.unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));

        let (r, _) = exchange_with("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec()).await;
        assert!(r.unwrap().body.is_empty());

        // Redirects are not followed: the caller sees the 3xx.
        let (r, _) = exchange_with(
            "GET",
            b"HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.test/\r\nContent-Length: 0\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(r.unwrap().status, 301);
    }

    #[tokio::test]
    async fn malformed_or_oversized_answers_are_refused() {
        let big_announced = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        let mut chunk_big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunk_big.extend_from_slice(format!("{:x}\r\n", BODY_BYTES_MAX + 1).as_bytes());
        chunk_big.extend(std::iter::repeat_n(b'a', BODY_BYTES_MAX + 1));
        let mut close_big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        close_big.extend(std::iter::repeat_n(b'a', BODY_BYTES_MAX + 1));
        let long_header = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
        let many_headers = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(HEADERS_MAX + 1));
        for (bad, too_large) in [
            (&b""[..], false),
            (b"SSH-2.0-OpenSSH\r\n\r\n", false),
            (b"HTTP/1.1 2000 OK\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", false),
            (big_announced.as_bytes(), true),
            (&chunk_big, true),
            (&close_big, true),
            (long_header.as_bytes(), false),
            (many_headers.as_bytes(), false),
        ] {
            let (result, _) = exchange_with("GET", bad.to_vec()).await;
            let what = String::from_utf8_lossy(&bad[..bad.len().min(100)]).into_owned();
            let error = result.expect_err(&what).to_string();
            assert!(!error.contains("s3cret"), "{error}");
            if too_large {
                assert!(error.contains("larger than"), "{what}: {error}");
            }
        }
    }

    #[test]
    fn requests_never_carry_line_breaks_and_the_password_stays_out_of_debug() {
        let client = client();
        assert_eq!(client.origin(), "http://127.0.0.1:5232");
        assert!(!format!("{client:?}").contains("s3cret"));
        let request = client
            .request("PUT", "/dav/x.ics", &[("If-None-Match", "*")], b"")
            .unwrap();
        assert!(
            !format!("{request:?}").contains("s3cret"),
            "sensitive header hidden"
        );
        assert!(client.request("GET", "/a b", &[], b"").is_err());
        assert!(client.request("GET", "/a\r\nX: y", &[], b"").is_err());
        assert!(client.request("GET", "/a", &[("X", "1\r\nY: 2")], b"").is_err());
        assert!(client.request("GET", "/a", &[("X\r\nY", "1")], b"").is_err());
        assert!(client.request("get", "/a", &[], b"").is_err());

        let https = DavServerSettings {
            url: "https://dav.example.com".into(),
            user: "svc".into(),
            password: "pw".into(),
        };
        let (client, base) = Client::new(&https).unwrap();
        assert_eq!(
            (client.origin().as_str(), base.as_str()),
            ("https://dav.example.com", "/")
        );
    }
}
