//! Just enough XML for WebDAV answers: a namespace-aware reader that builds a small tree,
//! and the `multistatus` of PROPFIND read from it.
//!
//! It takes elements, attributes (only `xmlns` declarations matter), text, CDATA, the
//! predefined and numeric entities, comments and processing instructions. A DOCTYPE is
//! refused (no entity definitions, so no entity expansion), and so is nesting deeper than
//! [`DEPTH_MAX`]; the input itself is bounded by the HTTP client.

/// Deepest element nesting accepted.
const DEPTH_MAX: usize = 64;

pub(crate) const DAV: &str = "DAV:";
pub(crate) const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub(crate) const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub(crate) const CALENDARSERVER: &str = "http://calendarserver.org/ns/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML at byte {at}: {why}")]
pub(crate) struct XmlError {
    at: usize,
    why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub ns: String,
    pub name: String,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub(crate) fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub(crate) fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    pub(crate) fn all<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.is(ns, name))
    }

    pub(crate) fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// The text of this element and everything inside it.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Element(element) => element.collect_text(out),
            }
        }
    }
}

/// Parses a whole document; its root element.
pub(crate) fn parse(input: &str) -> Result<Element, XmlError> {
    let mut parser = Parser {
        s: input,
        pos: 0,
        scopes: Vec::new(),
    };
    parser.skip_str("\u{feff}");
    parser.misc()?;
    if !parser.rest().starts_with('<') {
        return parser.fail("no root element");
    }
    let root = parser.element(0)?;
    parser.misc()?;
    if parser.pos != input.len() {
        return parser.fail("content after the root element");
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    /// Namespace declarations in force: (prefix, URI), innermost last; "" is the default.
    scopes: Vec<(String, String)>,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn fail<T>(&self, why: &'static str) -> Result<T, XmlError> {
        Err(XmlError { at: self.pos, why })
    }

    fn skip_str(&mut self, prefix: &str) -> bool {
        if self.rest().starts_with(prefix) {
            self.pos += prefix.len();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
    }

    /// Skips past `end`, which must come.
    fn skip_past(&mut self, end: &str, why: &'static str) -> Result<&'a str, XmlError> {
        match self.rest().find(end) {
            Some(at) => {
                let rest = self.rest();
                self.pos += at + end.len();
                Ok(&rest[..at])
            }
            None => self.fail(why),
        }
    }

    /// Whitespace, comments and processing instructions (the XML declaration too).
    fn misc(&mut self) -> Result<(), XmlError> {
        loop {
            self.skip_space();
            if self.skip_str("<?") {
                self.skip_past("?>", "unterminated processing instruction")?;
            } else if self.skip_str("<!--") {
                self.skip_past("-->", "unterminated comment")?;
            } else if self.rest().starts_with("<!") {
                return self.fail("DOCTYPE and declarations are not accepted");
            } else {
                return Ok(());
            }
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<' | '"' | '\''))
            .unwrap_or(rest.len());
        if end == 0 {
            return self.fail("a name was expected");
        }
        self.pos += end;
        Ok(&rest[..end])
    }

    fn resolve(&self, prefix: &str) -> Result<String, XmlError> {
        if prefix == "xml" {
            return Ok("http://www.w3.org/XML/1998/namespace".into());
        }
        match self.scopes.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, uri)) => Ok(uri.clone()),
            None if prefix.is_empty() => Ok(String::new()),
            None => self.fail("undeclared namespace prefix"),
        }
    }

    /// An element starting at `<`, with everything inside it.
    fn element(&mut self, depth: usize) -> Result<Element, XmlError> {
        if depth >= DEPTH_MAX {
            return self.fail("nested too deeply");
        }
        self.skip_str("<");
        let raw_name = self.name()?.to_owned();
        let declared = self.scopes.len();
        let self_closing = loop {
            self.skip_space();
            if self.skip_str("/>") {
                break true;
            }
            if self.skip_str(">") {
                break false;
            }
            let attribute = self.name()?.to_owned();
            self.skip_space();
            if !self.skip_str("=") {
                return self.fail("an attribute without a value");
            }
            self.skip_space();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return self.fail("an unquoted attribute value"),
            };
            self.pos += 1;
            let raw = self.skip_past(if quote == '"' { "\"" } else { "'" }, "unterminated attribute")?;
            if raw.contains('<') {
                return self.fail("'<' in an attribute value");
            }
            let value = unescape(raw).ok_or(XmlError {
                at: self.pos,
                why: "bad entity in an attribute",
            })?;
            if attribute == "xmlns" {
                self.scopes.push((String::new(), value));
            } else if let Some(prefix) = attribute.strip_prefix("xmlns:") {
                self.scopes.push((prefix.to_owned(), value));
            }
        };
        let (prefix, local) = raw_name.split_once(':').unwrap_or(("", raw_name.as_str()));
        let mut element = Element {
            ns: self.resolve(prefix)?,
            name: local.to_owned(),
            children: Vec::new(),
        };
        if !self_closing {
            self.content(&mut element, &raw_name, depth)?;
        }
        self.scopes.truncate(declared);
        Ok(element)
    }

    fn content(&mut self, element: &mut Element, raw_name: &str, depth: usize) -> Result<(), XmlError> {
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return self.fail("unterminated element");
            }
            if self.skip_str("</") {
                if self.name()? != raw_name {
                    return self.fail("mismatched end tag");
                }
                self.skip_space();
                if !self.skip_str(">") {
                    return self.fail("bad end tag");
                }
                return Ok(());
            }
            if self.skip_str("<!--") {
                self.skip_past("-->", "unterminated comment")?;
            } else if self.skip_str("<![CDATA[") {
                let text = self.skip_past("]]>", "unterminated CDATA")?.to_owned();
                push_text(element, &text);
            } else if self.skip_str("<?") {
                self.skip_past("?>", "unterminated processing instruction")?;
            } else if rest.starts_with("<!") {
                return self.fail("declarations are not accepted inside elements");
            } else if rest.starts_with('<') {
                let child = self.element(depth + 1)?;
                element.children.push(Node::Element(child));
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = unescape(&rest[..end]).ok_or(XmlError {
                    at: self.pos,
                    why: "bad entity",
                })?;
                self.pos += end;
                push_text(element, &text);
            }
        }
    }
}

fn push_text(element: &mut Element, text: &str) {
    if let Some(Node::Text(last)) = element.children.last_mut() {
        last.push_str(text);
    } else if !text.is_empty() {
        element.children.push(Node::Text(text.to_owned()));
    }
}

/// Replaces the predefined and numeric entities; `None` for an unknown or bad one.
fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('&') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(';')?;
        let entity = &after[..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// One `response` of a `multistatus`, with the properties found (status 200).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Member {
    /// As the server wrote it (trimmed).
    pub href: String,
    pub etag: Option<String>,
    pub ctag: Option<String>,
    pub sync_token: Option<String>,
    /// The `resourcetype` children: (namespace, name).
    pub types: Vec<(String, String)>,
}

impl Member {
    pub(crate) fn has_type(&self, ns: &str, name: &str) -> bool {
        self.types.iter().any(|(n, t)| n == ns && t == name)
    }
}

/// The members of a `207 Multi-Status` body; responses with a non-2xx status of their own
/// are left out.
pub(crate) fn multistatus(body: &str) -> Result<Vec<Member>, XmlError> {
    let root = parse(body)?;
    if !root.is(DAV, "multistatus") {
        return Err(XmlError {
            at: 0,
            why: "not a DAV:multistatus",
        });
    }
    let mut members = Vec::new();
    for response in root.all(DAV, "response") {
        let Some(href) = response.child(DAV, "href") else {
            continue;
        };
        if response
            .child(DAV, "status")
            .is_some_and(|status| !status_ok(&status.text()))
        {
            continue;
        }
        let mut member = Member {
            href: href.text().trim().to_owned(),
            ..Member::default()
        };
        for propstat in response.all(DAV, "propstat") {
            if !propstat
                .child(DAV, "status")
                .is_some_and(|status| status_ok(&status.text()))
            {
                continue;
            }
            for prop in propstat.all(DAV, "prop") {
                for value in prop.elements() {
                    let text = || Some(value.text().trim().to_owned()).filter(|t| !t.is_empty());
                    if value.is(DAV, "getetag") {
                        member.etag = text();
                    } else if value.is(CALENDARSERVER, "getctag") {
                        member.ctag = text();
                    } else if value.is(DAV, "sync-token") {
                        member.sync_token = text();
                    } else if value.is(DAV, "resourcetype") {
                        member.types = value.elements().map(|t| (t.ns.clone(), t.name.clone())).collect();
                    }
                }
            }
        }
        members.push(member);
    }
    Ok(members)
}

/// Whether a `HTTP/1.1 200 OK` status line says 2xx.
fn status_ok(line: &str) -> bool {
    line.split_whitespace()
        .nth(1)
        .is_some_and(|code| code.len() == 3 && code.starts_with('2'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn radicales_multistatus_is_read() {
        let body = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/"><response><href>/alice%40corp.test/calendar/</href><propstat><prop><getetag>"ca5d"</getetag><CS:getctag>"ca5d"</CS:getctag><sync-token>http://radicale.org/ns/sync/e3b0</sync-token><resourcetype><C:calendar /><collection /></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/alice%40corp.test/calendar/ev-1.ics</href><propstat><prop><getetag>"431a"</getetag><resourcetype /></prop><status>HTTP/1.1 200 OK</status></propstat><propstat><prop><CS:getctag /></prop><status>HTTP/1.1 404 Not Found</status></propstat></response></multistatus>"#;
        let members = multistatus(body).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].href, "/alice%40corp.test/calendar/");
        assert_eq!(members[0].ctag.as_deref(), Some("\"ca5d\""));
        assert_eq!(
            members[0].sync_token.as_deref(),
            Some("http://radicale.org/ns/sync/e3b0")
        );
        assert!(members[0].has_type(CALDAV, "calendar") && members[0].has_type(DAV, "collection"));
        assert_eq!(members[1].etag.as_deref(), Some("\"431a\""));
        assert!(members[1].types.is_empty());
        assert_eq!(members[1].ctag, None);
    }

    #[test]
    fn prefixes_entities_cdata_and_comments() {
        let body = "\u{feff}<?xml version=\"1.0\"?>\n<!-- hi -->\n<d:multistatus xmlns:d='DAV:'>\
            <d:response><d:href> /a/b%20c.vcf?x=1&amp;y=2 </d:href>\
            <d:status>HTTP/1.1 200 OK</d:status>\
            <d:propstat><d:status>HTTP/1.1 200 OK</d:status><d:prop>\
            <d:getetag><![CDATA[\"e&1\"]]></d:getetag>\
            <x:resourcetype xmlns:x=\"DAV:\"><card:addressbook xmlns:card=\"urn:ietf:params:xml:ns:carddav\"/><x:collection/></x:resourcetype>\
            </d:prop></d:propstat></d:response>\
            <d:response><d:href>/gone</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>\
            </d:multistatus>\n<!-- bye -->\n";
        let members = multistatus(body).unwrap();
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].href, "/a/b%20c.vcf?x=1&y=2");
        assert_eq!(members[0].etag.as_deref(), Some("\"e&1\""));
        assert!(members[0].has_type(CARDDAV, "addressbook"));

        let root = parse("<a xmlns=\"u\"><b>x &lt; &#65;&#x42; &quot;</b><c xmlns=\"\"/></a>").unwrap();
        assert_eq!(root.ns, "u");
        assert_eq!(root.child("u", "b").unwrap().text(), "x < AB \"");
        assert!(root.child("", "c").is_some(), "xmlns=\"\" undeclares the default");
    }

    #[test]
    fn malformed_and_hostile_documents_are_refused() {
        let deep = format!("{}{}", "<a>".repeat(DEPTH_MAX + 1), "</a>".repeat(DEPTH_MAX + 1));
        for bad in [
            "",
            "text",
            "<a>",
            "<a></b>",
            "<a><b></a></b>",
            "<a x=1/>",
            "<a x/>",
            "<a>&bogus;</a>",
            "<a>&#xFFFFFFFF;</a>",
            "<p:a/>",
            "<a/><b/>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            "<a><!ENTITY x \"y\"></a>",
            "<a><![CDATA[x</a>",
            deep.as_str(),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(multistatus("<a/>").is_err());
    }
}
