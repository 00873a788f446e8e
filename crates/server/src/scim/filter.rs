//! SCIM filters and attribute paths (RFC 7644 §3.4.2.2 and §3.5.2): parsing, with bounds
//! on length and nesting, and evaluation against a resource's canonical JSON.
//!
//! No maintained Rust crate parses this grammar within the server's dependencies, so this
//! is a small recursive-descent parser; string literals are decoded by `serde_json`, as
//! the RFC defines them as JSON strings. `and` binds tighter than `or`; `not` and
//! parentheses bind tightest. Operators and keywords are case-insensitive, as are
//! attribute names; string comparison follows each attribute's `caseExact`.

use serde_json::{Map, Value};

use super::error::{ScimError, ScimType};
use super::resource::as_bool;
use super::schema::{Attr, ResourceKind};

/// The longest filter (and PATCH path) accepted, in bytes.
pub(crate) const FILTER_BYTES_MAX: usize = 2_048;
/// The deepest nesting of parentheses, `not` and `[...]` accepted.
pub(crate) const FILTER_DEPTH_MAX: usize = 10;

/// `[urn:...:]attr[.sub]` as written; names are matched case-insensitively later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttrPath {
    /// The schema URN prefix, when written.
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses `[urn:...:]attr[.sub]`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (urn, rest) = if text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:") {
            let split = text.rfind(':')?;
            (Some(text[..split].to_owned()), &text[split + 1..])
        } else {
            (None, text)
        };
        let mut parts = rest.split('.');
        let attr = parts.next().filter(|a| valid_name(a))?.to_owned();
        let sub = match parts.next() {
            Some(s) if valid_name(s) => Some(s.to_owned()),
            Some(_) => return None,
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { urn, attr, sub })
    }
}

/// ATTRNAME of RFC 7643 §2.1, plus `$ref`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some('$') => name == "$ref",
        Some(c) if c.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        _ => false,
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Lt,
    Ge,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        const OPS: [(&str, CompareOp); 9] = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("lt", CompareOp::Lt),
            ("ge", CompareOp::Ge),
            ("le", CompareOp::Le),
        ];
        OPS.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, op)| *op)
    }
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CompValue {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    Present(AttrPath),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`.
    ValuePath {
        path: AttrPath,
        inner: Box<Filter>,
    },
}

/// A PATCH `path`: `attrPath`, or `attr[filter]` optionally followed by `.sub`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatchPath {
    pub path: AttrPath,
    pub filter: Option<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Str(String),
    Word(String),
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidFilter, detail)
}

fn tokenize(text: &str) -> Result<Vec<Token>, ScimError> {
    if text.len() > FILTER_BYTES_MAX {
        return Err(invalid(format!("a filter is at most {FILTER_BYTES_MAX} bytes")));
    }
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' | b')' | b'[' | b']' => {
                tokens.push(match c {
                    b'(' => Token::Open,
                    b')' => Token::Close,
                    b'[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err(invalid("unterminated string"));
                }
                i += 1;
                let literal: String = serde_json::from_str(&text[start..i])
                    .map_err(|_| invalid("a string is not a valid JSON string"))?;
                tokens.push(Token::Str(literal));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'[' | b']' | b'"'
                    )
                {
                    i += 1;
                }
                tokens.push(Token::Word(text[start..i].to_owned()));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), ScimError> {
        if self.next().as_ref() == Some(token) {
            Ok(())
        } else {
            Err(invalid(format!("expected {what}")))
        }
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > FILTER_DEPTH_MAX {
            return Err(invalid(format!("a filter nests at most {FILTER_DEPTH_MAX} deep")));
        }
        Ok(())
    }

    fn or(&mut self, in_brackets: bool) -> Result<Filter, ScimError> {
        let mut terms = vec![self.and(in_brackets)?];
        while self.peek_keyword("or") {
            self.pos += 1;
            terms.push(self.and(in_brackets)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Any(terms)
        })
    }

    fn and(&mut self, in_brackets: bool) -> Result<Filter, ScimError> {
        let mut terms = vec![self.unary(in_brackets)?];
        while self.peek_keyword("and") {
            self.pos += 1;
            terms.push(self.unary(in_brackets)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::All(terms)
        })
    }

    fn unary(&mut self, in_brackets: bool) -> Result<Filter, ScimError> {
        if self.peek_keyword("not") && self.tokens.get(self.pos + 1) == Some(&Token::Open) {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.group(in_brackets)?)));
        }
        if self.peek() == Some(&Token::Open) {
            return self.group(in_brackets);
        }
        self.attr_exp(in_brackets)
    }

    fn group(&mut self, in_brackets: bool) -> Result<Filter, ScimError> {
        self.enter()?;
        self.expect(&Token::Open, "(")?;
        let inner = self.or(in_brackets)?;
        self.expect(&Token::Close, ")")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn path(&mut self) -> Result<AttrPath, ScimError> {
        match self.next() {
            Some(Token::Word(w)) => AttrPath::parse(&w).ok_or_else(|| invalid("invalid attribute name")),
            _ => Err(invalid("expected an attribute name")),
        }
    }

    fn attr_exp(&mut self, in_brackets: bool) -> Result<Filter, ScimError> {
        let path = self.path()?;
        if self.peek() == Some(&Token::OpenBracket) {
            if in_brackets || path.sub.is_some() {
                return Err(invalid("a value filter cannot appear here"));
            }
            let inner = self.bracketed()?;
            return Ok(Filter::ValuePath {
                path,
                inner: Box::new(inner),
            });
        }
        let Some(Token::Word(op)) = self.next() else {
            return Err(invalid("expected an operator"));
        };
        if op.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op).ok_or_else(|| invalid("unknown operator"))?;
        let value = match self.next() {
            Some(Token::Str(s)) => CompValue::Str(s),
            Some(Token::Word(w)) if w == "true" => CompValue::Bool(true),
            Some(Token::Word(w)) if w == "false" => CompValue::Bool(false),
            Some(Token::Word(w)) if w == "null" => CompValue::Null,
            Some(Token::Word(w)) => CompValue::Num(
                serde_json::from_str::<f64>(&w).map_err(|_| invalid("invalid comparison value"))?,
            ),
            _ => return Err(invalid("expected a comparison value")),
        };
        let ordered_only = matches!(op, CompareOp::Gt | CompareOp::Lt | CompareOp::Ge | CompareOp::Le);
        let string_only = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
        match value {
            CompValue::Bool(_) | CompValue::Null if ordered_only || string_only => {
                return Err(invalid("this operator does not apply to booleans or null"));
            }
            CompValue::Num(_) if string_only => return Err(invalid("this operator applies to strings only")),
            _ => {}
        }
        Ok(Filter::Compare { path, op, value })
    }

    fn bracketed(&mut self) -> Result<Filter, ScimError> {
        self.enter()?;
        self.expect(&Token::OpenBracket, "[")?;
        let inner = self.or(true)?;
        self.expect(&Token::CloseBracket, "]")?;
        self.depth -= 1;
        Ok(inner)
    }
}

/// Parses a `filter` query parameter or `/.search` attribute.
pub(crate) fn parse_filter(text: &str) -> Result<Filter, ScimError> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        pos: 0,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return Err(invalid("empty filter"));
    }
    let filter = parser.or(false)?;
    if parser.pos != parser.tokens.len() {
        return Err(invalid("unexpected text after the filter"));
    }
    Ok(filter)
}

/// Parses a PATCH operation's `path` (RFC 7644 §3.5.2 `PATH`).
pub(crate) fn parse_patch_path(text: &str) -> Result<PatchPath, ScimError> {
    let bad =
        |e: ScimError| ScimError::bad_request(ScimType::InvalidPath, format!("invalid path: {}", e.detail()));
    let mut parser = Parser {
        tokens: tokenize(text).map_err(bad)?,
        pos: 0,
        depth: 0,
    };
    let mut path = parser.path().map_err(bad)?;
    let mut filter = None;
    if parser.peek() == Some(&Token::OpenBracket) {
        if path.sub.is_some() {
            return Err(bad(invalid(
                "a value filter follows an attribute, not a sub-attribute",
            )));
        }
        filter = Some(parser.bracketed().map_err(bad)?);
        if let Some(Token::Word(w)) = parser.peek() {
            let sub = w.strip_prefix('.').filter(|s| valid_name(s)).map(str::to_owned);
            path.sub = Some(sub.ok_or_else(|| bad(invalid("expected .subAttribute after ]")))?);
            parser.pos += 1;
        }
    }
    if parser.pos != parser.tokens.len() {
        return Err(bad(invalid("unexpected text after the path")));
    }
    Ok(PatchPath { path, filter })
}

/// What names in a filter are relative to: a resource, or the complex attribute of a
/// `[...]` value filter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    Resource(ResourceKind),
    Complex(&'static Attr),
}

impl Scope {
    /// The definition `path` names, if the schema has one.
    fn resolve(self, path: &AttrPath) -> Option<(&'static Attr, Option<&'static Attr>)> {
        let attr = match self {
            Scope::Resource(kind) => kind.attr(&path.attr)?,
            Scope::Complex(parent) => parent.sub_attr(&path.attr)?,
        };
        let sub = match &path.sub {
            Some(s) => Some(attr.sub_attr(s)?),
            None => None,
        };
        Some((attr, sub))
    }

    fn urn_ok(self, path: &AttrPath) -> bool {
        match (self, &path.urn) {
            (_, None) => true,
            (Scope::Resource(kind), Some(urn)) => urn.eq_ignore_ascii_case(kind.schema()),
            (Scope::Complex(_), Some(_)) => false,
        }
    }
}

/// Case-insensitive key lookup in a JSON object.
pub(crate) fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The values `path` designates in `obj`, and whether they compare case-exactly.
fn values_at<'a>(obj: &'a Map<String, Value>, path: &AttrPath, scope: Scope) -> (Vec<&'a Value>, bool) {
    if !scope.urn_ok(path) {
        return (Vec::new(), false);
    }
    let defined = scope.resolve(path);
    let Some(value) = get_ci(obj, &path.attr) else {
        return (Vec::new(), false);
    };
    let mut values = Vec::new();
    let case_exact = match (&path.sub, value) {
        (Some(sub), Value::Array(items)) => {
            values.extend(
                items
                    .iter()
                    .filter_map(|i| i.as_object().and_then(|o| get_ci(o, sub))),
            );
            defined.and_then(|(_, s)| s).is_some_and(|s| s.case_exact)
        }
        (Some(sub), Value::Object(o)) => {
            values.extend(get_ci(o, sub));
            defined.and_then(|(_, s)| s).is_some_and(|s| s.case_exact)
        }
        (Some(_), _) => false,
        // A multi-valued complex attribute compares by its `value` sub-attribute.
        (None, Value::Array(items)) => {
            values.extend(
                items
                    .iter()
                    .map(|i| i.as_object().and_then(|o| get_ci(o, "value")).unwrap_or(i)),
            );
            defined.is_some_and(|(a, _)| a.sub_attr("value").map_or(a.case_exact, |s| s.case_exact))
        }
        (None, v) => {
            values.push(v);
            defined.is_some_and(|(a, _)| a.case_exact)
        }
    };
    (values, case_exact)
}

fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => o.values().any(is_present),
        _ => true,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering = match (actual, expected) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = if case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => a.cmp(&b),
            }
        }
        (Value::Number(a), CompValue::Num(b)) => match a.as_f64().and_then(|a| a.partial_cmp(b)) {
            Some(o) => o,
            None => return false,
        },
        // Booleans, including Entra's "True"/"False" strings on either side.
        (a, b) => {
            let expected = match b {
                CompValue::Bool(b) => Some(*b),
                CompValue::Str(s) => as_bool(&Value::String(s.clone())),
                _ => None,
            };
            return op == CompareOp::Eq && as_bool(a).is_some() && as_bool(a) == expected;
        }
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Ne | CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// Whether some value at `path` compares true; `eq null` holds when none is present.
fn compare_at(
    obj: &Map<String, Value>,
    path: &AttrPath,
    op: CompareOp,
    value: &CompValue,
    scope: Scope,
) -> bool {
    let (values, case_exact) = values_at(obj, path, scope);
    match value {
        CompValue::Null => !values.into_iter().any(is_present),
        _ => values.into_iter().any(|v| compare(v, op, value, case_exact)),
    }
}

impl Filter {
    /// Whether `obj` (a canonical resource or, within `[...]`, one value) matches.
    pub(crate) fn matches(&self, obj: &Map<String, Value>, scope: Scope) -> bool {
        match self {
            Filter::All(terms) => terms.iter().all(|t| t.matches(obj, scope)),
            Filter::Any(terms) => terms.iter().any(|t| t.matches(obj, scope)),
            Filter::Not(inner) => !inner.matches(obj, scope),
            Filter::Present(path) => values_at(obj, path, scope).0.into_iter().any(is_present),
            // `ne` is `not eq`, so an absent attribute is "not equal" (and `ne null` is `pr`).
            Filter::Compare {
                path,
                op: CompareOp::Ne,
                value,
            } => !compare_at(obj, path, CompareOp::Eq, value, scope),
            Filter::Compare { path, op, value } => compare_at(obj, path, *op, value, scope),
            Filter::ValuePath { path, inner } => {
                let Some((attr, _)) = scope.resolve(path).filter(|_| scope.urn_ok(path)) else {
                    return false;
                };
                match get_ci(obj, &path.attr) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_object)
                        .any(|item| inner.matches(item, Scope::Complex(attr))),
                    Some(Value::Object(item)) => inner.matches(item, Scope::Complex(attr)),
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "alice",
            "externalId": "Ext-1",
            "userName": "alice",
            "displayName": "Alice Liddell",
            "name": {"givenName": "Alice"},
            "emails": [{"value": "Alice@Example.org", "type": "work", "primary": true},
                       {"value": "a@home.net", "type": "home", "primary": false}],
            "active": true,
            "meta": {"created": "2026-01-01T00:00:00Z", "resourceType": "User"}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn matches(filter: &str) -> bool {
        parse_filter(filter)
            .unwrap()
            .matches(&user(), Scope::Resource(ResourceKind::User))
    }

    #[test]
    fn comparisons_follow_case_exactness() {
        assert!(matches(r#"userName eq "ALICE""#)); // caseExact false
        assert!(!matches(r#"externalId eq "ext-1""#)); // caseExact true
        assert!(matches(r#"externalId eq "Ext-1""#));
        assert!(!matches(r#"id eq "Alice""#));
        assert!(matches(r#"emails.value co "example.ORG""#));
        assert!(matches(r#"displayName sw "alice""#));
        assert!(matches(r#"displayName ew "LIDDELL""#));
        assert!(matches(r#"meta.created gt "2025-12-31T00:00:00Z""#));
        assert!(matches(r#"emails eq "a@home.net""#));
    }

    #[test]
    fn names_operators_and_keywords_ignore_case() {
        assert!(matches(r#"USERNAME EQ "alice" AND Active Eq true"#));
        assert!(matches(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:name.givenName eq "alice""#
        ));
        assert!(!matches(
            r#"urn:ietf:params:scim:schemas:core:2.0:Group:displayName pr"#
        ));
    }

    #[test]
    fn logic_precedence_and_grouping() {
        assert!(matches(
            r#"userName eq "x" or userName eq "alice" and active eq true"#
        ));
        assert!(!matches(
            r#"(userName eq "x" or userName eq "alice") and active eq false"#
        ));
        assert!(matches(r#"not (userName eq "x")"#));
        assert!(matches(r#"not(userName eq "x")"#));
        assert!(!matches(r#"not (userName pr)"#));
    }

    #[test]
    fn presence_null_and_ne() {
        assert!(matches("name.givenName pr"));
        assert!(!matches("name.familyName pr"));
        assert!(matches("name.familyName eq null"));
        assert!(matches(r#"nickName ne "x""#));
        assert!(!matches("groups pr"));
    }

    #[test]
    fn value_paths_and_booleans() {
        assert!(matches(r#"emails[type eq "work" and value co "@example.org"]"#));
        assert!(!matches(r#"emails[type eq "home" and primary eq true]"#));
        assert!(matches(r#"active eq "True""#));
        assert!(matches(r#"emails[primary eq true]"#));
    }

    #[test]
    fn patch_paths() {
        let p = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(
            p.path,
            AttrPath {
                urn: None,
                attr: "emails".into(),
                sub: Some("value".into())
            }
        );
        assert!(p.filter.is_some());
        let p = parse_patch_path(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(p.path.sub, None);
        let p = parse_patch_path("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName").unwrap();
        assert_eq!(
            p.path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        for bad in [
            "",
            "a.b.c",
            "emails[",
            r#"emails[type eq "w"]x"#,
            "name.givenName[value pr]",
            "1abc",
            "a b",
        ] {
            assert_eq!(
                parse_patch_path(bad).unwrap_err().scim_type(),
                Some(ScimType::InvalidPath),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_filters_are_refused() {
        let deep = format!(
            "{}userName pr{}",
            "(".repeat(FILTER_DEPTH_MAX + 1),
            ")".repeat(FILTER_DEPTH_MAX + 1)
        );
        let nots = format!(
            "{}userName pr{}",
            "not (".repeat(FILTER_DEPTH_MAX + 1),
            ")".repeat(FILTER_DEPTH_MAX + 1)
        );
        let ok = format!(
            "{}userName pr{}",
            "(".repeat(FILTER_DEPTH_MAX),
            ")".repeat(FILTER_DEPTH_MAX)
        );
        assert!(parse_filter(&ok).is_ok());
        let long = format!(r#"userName eq "{}""#, "a".repeat(FILTER_BYTES_MAX));
        let many = vec![r#"userName eq "a""#; 100].join(" or ");
        assert!(parse_filter(&many).is_ok(), "long flat chains are fine");
        for bad in [
            deep.as_str(),
            nots.as_str(),
            long.as_str(),
            "",
            "   ",
            "userName",
            "userName eq",
            r#"userName eq "unterminated"#,
            r#"userName eq "\"#,
            r#"userName zz "a""#,
            r#"userName eq "a" and"#,
            r#"userName eq "a")"#,
            r#"(userName eq "a""#,
            r#"emails[value eq "a"[type eq "b"]]"#,
            r#"emails[type eq "a"]]"#,
            "active gt true",
            "userName co 3",
            "userName eq bare",
            "userName eq NaN",
            r#"userName eq "a" userName eq "b""#,
            "\u{0}",
            r#"userName eq "\ud800""#,
        ] {
            assert_eq!(
                parse_filter(bad).unwrap_err().scim_type(),
                Some(ScimType::InvalidFilter),
                "{bad:?}"
            );
        }
    }
}
