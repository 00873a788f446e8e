//! A small HTTP/1.1 client for the calendar and contacts server: one request per
//! connection (`Connection: close`), Basic authentication, bodies framed by
//! Content-Length, chunked, or the end of the connection. Everything read from the network
//! is bounded ([`BODY_BYTES_MAX`], [`HEAD_BYTES_MAX`]) and every exchange is timed out.
//!
//! The service account's password lives only in the `Authorization` header this module
//! builds; no error, log line or `Debug` output carries it.

use std::time::Duration;

use redoubt_proto::{DavServerSettings, HostPort};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

/// A response: status, headers (names lower-cased) and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The server named by the settings' URL, with the service account's credentials.
pub(crate) struct Client {
    tls: bool,
    server: HostPort,
    /// `Host` header value.
    host: String,
    /// `Basic <base64(user:password)>`.
    authorization: String,
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
        let client = Self {
            tls,
            server,
            host,
            authorization: format!("Basic {}", base64(credentials.as_bytes())),
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
        let request = self.request_head(method, path, headers, body.len())?;
        match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(&request, body, method == "HEAD")).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Connection(format!(
                "{method} {path}: no complete answer within {EXCHANGE_TIMEOUT:?}"
            ))),
        }
    }

    fn request_head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: usize,
    ) -> Result<String, HttpError> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(HttpError::Request(format!("bad method {method:?}")));
        }
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpError::Request(format!("bad request path {path:?}")));
        }
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nUser-Agent: redoubt-connector\r\nConnection: close\r\nContent-Length: {body_len}\r\n",
            self.host, self.authorization
        );
        for (name, value) in headers {
            let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if name.is_empty() || !clean(name) || name.contains(':') || !clean(value) {
                return Err(HttpError::Request(format!("bad header {name:?}")));
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        Ok(head)
    }

    async fn exchange(&self, head: &str, body: &[u8], is_head: bool) -> Result<Response, HttpError> {
        let io = |e: std::io::Error| HttpError::Connection(format!("{}: {e}", self.server));
        let tcp = MailStream::connect(&self.server).await.map_err(io)?;
        let mut stream = if self.tls {
            MailStream::tls(&self.server, tcp).await.map_err(io)?
        } else {
            MailStream::Plain(tcp)
        };
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        stream.write_all(&request).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        read_response(&mut BufReader::new(stream), is_head).await
    }
}

/// Reads one response (skipping interim 1xx ones) from `reader`.
pub(crate) async fn read_response<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    is_head: bool,
) -> Result<Response, HttpError> {
    let mut head_left = HEAD_BYTES_MAX;
    let (status, headers) = loop {
        let status_line = read_line(reader, &mut head_left).await?;
        let status = parse_status(&status_line)?;
        let headers = read_headers(reader, &mut head_left).await?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, headers);
    };
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(response);
    }
    let chunked = response.header("transfer-encoding").is_some_and(|te| {
        te.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    response.body = if chunked {
        read_chunked(reader, &mut head_left).await?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| protocol(format!("bad Content-Length {length:?}")))?;
        if length > BODY_BYTES_MAX {
            return Err(too_large());
        }
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|e| protocol(format!("body cut short: {e}")))?;
        body
    } else {
        let mut body = Vec::new();
        (&mut *reader)
            .take(BODY_BYTES_MAX as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|e| protocol(format!("reading the body: {e}")))?;
        if body.len() > BODY_BYTES_MAX {
            return Err(too_large());
        }
        body
    };
    Ok(response)
}

fn protocol(why: String) -> HttpError {
    HttpError::Connection(format!("the calendar server's answer is not HTTP/1.1: {why}"))
}

fn too_large() -> HttpError {
    HttpError::Connection(format!(
        "the calendar server's answer is larger than {BODY_BYTES_MAX} bytes"
    ))
}

/// One line (without its CRLF or LF), charged against `left`.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, left: &mut usize) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(*left as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| protocol(format!("reading: {e}")))?;
    if read == 0 {
        return Err(protocol("the connection closed early".into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(protocol("header lines too long or cut short".into()));
    }
    *left -= read;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| protocol("a header line is not UTF-8".into()))
}

fn parse_status(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(protocol(format!("bad status line {:?}", truncate(line, 80))));
    }
    code.parse()
        .map_err(|_| protocol(format!("bad status line {:?}", truncate(line, 80))))
}

async fn read_headers<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    left: &mut usize,
) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = read_line(reader, left).await?;
        if line.is_empty() {
            return Ok(headers);
        }
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: part of the previous header's value.
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                None => return Err(protocol("a folded first header".into())),
            }
        }
        if headers.len() >= HEADERS_MAX {
            return Err(protocol("too many headers".into()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| protocol(format!("bad header line {:?}", truncate(&line, 80))))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

async fn read_chunked<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    left: &mut usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, left).await?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| protocol(format!("bad chunk size {:?}", truncate(&line, 40))))?;
        if size == 0 {
            // Trailers, up to the empty line.
            read_headers(reader, left).await?;
            return Ok(body);
        }
        if size > BODY_BYTES_MAX - body.len() {
            return Err(too_large());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .await
            .map_err(|e| protocol(format!("chunk cut short: {e}")))?;
        let end = read_line(reader, left).await?;
        if !end.is_empty() {
            return Err(protocol("a chunk longer than its size".into()));
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Standard base64 with padding (RFC 4648), for Basic authentication.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reading from any byte source, for tests.
#[cfg(test)]
async fn parse(bytes: &[u8], is_head: bool) -> Result<Response, HttpError> {
    read_response(&mut BufReader::new(bytes), is_head).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("redoubt-master:pw", "cmVkb3VidC1tYXN0ZXI6cHc="),
        ] {
            assert_eq!(base64(input.as_bytes()), output, "{input:?}");
        }
    }

    #[tokio::test]
    async fn content_length_chunked_and_close_framed_bodies() {
        let r = parse(
            b"HTTP/1.1 207 Multi-Status\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            false,
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (207, &b"hello"[..]));
        assert_eq!(r.header("CONTENT-TYPE"), Some("text/xml"));

        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n",
            false,
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"hello world");

        let r = parse(b"HTTP/1.0 200 OK\nETag: \"x\"\n\nuntil the end", false)
            .await
            .unwrap();
        assert_eq!(
            (r.body.as_slice(), r.header("etag")),
            (&b"until the end"[..], Some("\"x\""))
        );

        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));

        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .await
            .unwrap();
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn malformed_or_oversized_answers_are_refused() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        let mut chunk_big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunk_big.extend_from_slice(format!("{:x}\r\n", BODY_BYTES_MAX + 1).as_bytes());
        let long_header = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
        let many_headers = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(HEADERS_MAX + 1));
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            big.as_bytes(),
            &chunk_big,
            long_header.as_bytes(),
            many_headers.as_bytes(),
        ] {
            assert!(
                parse(bad, false).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(&bad[..bad.len().min(100)])
            );
        }
    }

    #[test]
    fn requests_never_carry_line_breaks_and_the_password_stays_out_of_debug() {
        let settings = DavServerSettings {
            url: "http://127.0.0.1:5232/dav/".into(),
            user: "svc".into(),
            password: "s3cret-pw".into(),
        };
        let (client, base) = Client::new(&settings).unwrap();
        assert_eq!(base, "/dav/");
        assert_eq!(client.origin(), "http://127.0.0.1:5232");
        assert!(!format!("{client:?}").contains("s3cret"));
        let head = client
            .request_head("PUT", "/dav/a%40b/x.ics", &[("If-None-Match", "*")], 3)
            .unwrap();
        assert!(head.starts_with("PUT /dav/a%40b/x.ics HTTP/1.1\r\nHost: 127.0.0.1:5232\r\n"));
        assert!(head.contains(&format!("Authorization: Basic {}\r\n", base64(b"svc:s3cret-pw"))));
        assert!(head.ends_with("Content-Length: 3\r\nIf-None-Match: *\r\n\r\n"));
        assert!(client.request_head("GET", "/a b", &[], 0).is_err());
        assert!(client.request_head("GET", "/a\r\nX: y", &[], 0).is_err());
        assert!(
            client
                .request_head("GET", "/a", &[("X", "1\r\nY: 2")], 0)
                .is_err()
        );
        assert!(client.request_head("get", "/a", &[], 0).is_err());

        let https = DavServerSettings {
            url: "https://dav.example.com".into(),
            ..settings
        };
        let (client, base) = Client::new(&https).unwrap();
        assert_eq!(
            (client.origin().as_str(), base.as_str()),
            ("https://dav.example.com", "/")
        );
    }
}
