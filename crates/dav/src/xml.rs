//! WebDAV answers read with quick-xml's namespace-aware reader into a small tree, and the
//! `multistatus` of PROPFIND read from it.
//!
//! Elements, text, CDATA, the predefined and numeric entities; comments and processing
//! instructions skipped. A DOCTYPE is refused (no entity definitions, so no entity
//! expansion, and quick-xml never fetches anything), and so is nesting deeper than
//! [`DEPTH_MAX`] or more namespace declarations in scope than quick-xml's limit (128); the
//! input itself is bounded by the HTTP client.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Deepest element nesting accepted.
const DEPTH_MAX: usize = 64;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub const CALENDARSERVER: &str = "http://calendarserver.org/ns/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML at byte {at}: {why}")]
pub struct XmlError {
    at: u64,
    why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    pub fn all<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.is(ns, name))
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// The text of this element and everything inside it.
    pub fn text(&self) -> String {
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
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(input);
    // Every well-formedness check quick-xml has; end tags must match their start.
    reader.config_mut().enable_all_checks(true);
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let at = reader.buffer_position();
        let fail = |why: String| XmlError { at, why };
        let (ns, event) = reader.read_resolved_event().map_err(|e| fail(e.to_string()))?;
        let ns = match ns {
            ResolveResult::Bound(ns) => Some(ns.into_inner().to_owned()),
            ResolveResult::Unbound => Some(String::new()),
            ResolveResult::Unknown(_) => None,
        };
        let empty = matches!(event, Event::Empty(_));
        let text = match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(fail("content after the root element".into()));
            }
            Event::Start(start) | Event::Empty(start) => {
                if open.len() >= DEPTH_MAX {
                    return Err(fail("nested too deeply".into()));
                }
                let ns = ns.ok_or_else(|| fail("undeclared namespace prefix".into()))?;
                // Only `xmlns` attributes matter (quick-xml reads those), but a malformed
                // attribute makes a malformed document.
                for attribute in start.attributes() {
                    attribute.map_err(|e| fail(e.to_string()))?;
                }
                let name = start.local_name().into_inner();
                let element = Element {
                    ns,
                    name: name.to_owned(),
                    children: Vec::new(),
                };
                open.push(element);
                if empty {
                    close(&mut open, &mut root);
                }
                continue;
            }
            Event::End(_) => {
                close(&mut open, &mut root);
                continue;
            }
            Event::Text(text) => text.xml10_content().into_owned(),
            Event::CData(data) => data.xml10_content().into_owned(),
            Event::GeneralRef(reference) => match reference.resolve_char_ref() {
                Ok(Some(c)) => c.to_string(),
                Ok(None) => resolve_predefined_entity(&reference)
                    .ok_or_else(|| fail("an entity other than the predefined ones".into()))?
                    .to_owned(),
                Err(e) => return Err(fail(e.to_string())),
            },
            // No DTD, so no entity definitions and no entity expansion.
            Event::DocType(_) => return Err(fail("DOCTYPE is not accepted".into())),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
            Event::Eof => break,
        };
        match open.last_mut() {
            Some(element) => push_text(element, &text),
            None if text.trim_matches(['\u{feff}', ' ', '\t', '\r', '\n']).is_empty() => {}
            None => return Err(fail("text outside the root element".into())),
        }
    }
    if !open.is_empty() {
        return Err(XmlError {
            at: reader.buffer_position(),
            why: "unterminated element".into(),
        });
    }
    root.ok_or(XmlError {
        at: 0,
        why: "no root element".into(),
    })
}

/// Ends the innermost open element: into its parent, or it is the root.
fn close(open: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(element) = open.pop() {
        match open.last_mut() {
            Some(parent) => parent.children.push(Node::Element(element)),
            None => *root = Some(element),
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

/// One `response` of a `multistatus`, with the properties found (status 200).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// As the server wrote it (trimmed).
    pub href: String,
    pub etag: Option<String>,
    pub ctag: Option<String>,
    pub sync_token: Option<String>,
    /// The `resourcetype` children: (namespace, name).
    pub types: Vec<(String, String)>,
}

impl Member {
    pub fn has_type(&self, ns: &str, name: &str) -> bool {
        self.types.iter().any(|(n, t)| n == ns && t == name)
    }
}

/// The members of a `207 Multi-Status` body; responses with a non-2xx status of their own
/// are left out.
pub fn multistatus(body: &str) -> Result<Vec<Member>, XmlError> {
    let root = parse(body)?;
    if !root.is(DAV, "multistatus") {
        return Err(XmlError {
            at: 0,
            why: "not a DAV:multistatus".into(),
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

    #[test]
    fn doctypes_entities_and_namespace_floods_are_refused() {
        let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
            <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
            <d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>&lol2;</d:href></d:response></d:multistatus>";
        let external = "<!DOCTYPE d:multistatus [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
            <d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>&xxe;</d:href></d:response></d:multistatus>";
        let no_dtd =
            "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>&xxe;</d:href></d:response></d:multistatus>";
        let late = "<d:multistatus xmlns:d=\"DAV:\"/><!DOCTYPE x>";
        let floods: String = (0..200).map(|i| format!(" xmlns:p{i}=\"u{i}\"")).collect();
        let flood = format!("<d:multistatus xmlns:d=\"DAV:\"{floods}/>");
        for bad in [laughs, external, no_dtd, late, flood.as_str()] {
            let error = multistatus(bad).expect_err(bad);
            assert!(!error.to_string().contains("passwd"), "{error}");
        }
        let deep = format!(
            "<d:multistatus xmlns:d=\"DAV:\">{}{}</d:multistatus>",
            "<d:prop>".repeat(DEPTH_MAX),
            "</d:prop>".repeat(DEPTH_MAX)
        );
        assert!(
            multistatus(&deep)
                .unwrap_err()
                .to_string()
                .contains("nested too deeply")
        );
    }
}
