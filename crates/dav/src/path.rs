//! Request paths from what a DAV server sends: hrefs made paths (escaped, bounded, no
//! `..`), segments encoded, paths compared with their escapes decoded.

use std::fmt::Write as _;

/// Longest href kept.
pub const HREF_BYTES_MAX: usize = 1024;

/// One path segment, percent-encoded (RFC 3986 `pchar`s stay as they are).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A path with its percent-escapes decoded (bytes, for comparing).
pub fn decode_path(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether two paths name the same collection (escapes decoded, trailing `/` ignored).
pub fn same_path(a: &str, b: &str) -> bool {
    let (a, b) = (decode_path(a), decode_path(b));
    a.strip_suffix(b"/").unwrap_or(&a) == b.strip_suffix(b"/").unwrap_or(&b)
}

/// Whether a member's href (absolute or not) names the collection at `path`.
pub fn is_collection(href: &str, path: &str) -> bool {
    normalize_href(href).is_some_and(|href| same_path(&href, path))
}

/// Whether `href` is strictly inside the collection `collection` (ending in `/`).
pub fn inside(href: &str, collection: &str) -> bool {
    let (href, collection) = (decode_path(href), decode_path(collection));
    href.len() > collection.len() && href.starts_with(&collection) && !href.contains(&b'\0')
}

/// An href as a request path: an absolute URL's path, non-ASCII and spaces escaped;
/// `None` if it is not a path or too long.
pub fn normalize_href(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let path = match raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => raw,
    };
    if !path.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    (out.len() <= HREF_BYTES_MAX && !decode_path(&out).split(|b| *b == b'/').any(|s| s == b".."))
        .then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn paths_are_encoded_compared_and_contained() {
        assert_eq!(encode_segment("alice@corp.test"), "alice@corp.test");
        assert_eq!(encode_segment("a b/c%d?é"), "a%20b%2Fc%25d%3F%C3%A9");
        assert!(same_path(
            "/alice%40corp.test/calendar/",
            "/alice@corp.test/calendar"
        ));
        assert!(!same_path(
            "/alice%40corp.test/calendar/",
            "/bob@corp.test/calendar/"
        ));
        assert!(is_collection(
            "https://dav.example.com/alice%40corp.test/calendar",
            "/alice@corp.test/calendar/"
        ));
        assert!(inside(
            "/alice%40corp.test/calendar/x.ics",
            "/alice@corp.test/calendar/"
        ));
        assert!(!inside(
            "/alice%40corp.test/calendar/",
            "/alice@corp.test/calendar/"
        ));
        assert!(!inside(
            "/bob@corp.test/calendar/x.ics",
            "/alice@corp.test/calendar/"
        ));
        assert!(!inside(
            "/alice@corp.test/calendarx/x.ics",
            "/alice@corp.test/calendar/"
        ));
        assert_eq!(decode_path("%4"), b"%4");
        assert_eq!(decode_path("%zz%41"), b"%zzA");
    }

    #[test]
    fn hrefs_become_request_paths() {
        assert_eq!(
            normalize_href(" /alice%40corp.test/calendar/a.ics "),
            Some("/alice%40corp.test/calendar/a.ics".into())
        );
        assert_eq!(
            normalize_href("https://dav.example.com:8443/c/a b é.ics"),
            Some("/c/a%20b%20%C3%A9.ics".into())
        );
        assert_eq!(normalize_href("http://host"), Some("/".into()));
        assert_eq!(normalize_href("relative/a.ics"), None);
        assert_eq!(normalize_href("/c/../../etc/x"), None);
        assert_eq!(normalize_href("/c/%2e%2e/x"), None);
        assert_eq!(normalize_href(&format!("/{}", "a".repeat(HREF_BYTES_MAX))), None);
        assert_eq!(normalize_href("/c/\r\nX: y"), Some("/c/%0D%0AX:%20y".into()));
    }
}
