//! Query parameters (RFC 7644 §3.4.2, §3.4.3, §3.9): filter, pagination and the
//! `attributes`/`excludedAttributes` projection, from a URL query or a `SearchRequest`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, FILTER_BYTES_MAX, Filter, get_ci, parse_filter};
use super::schema::{ResourceKind, Returned};

const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::invalid_value(detail)
}

/// Decodes `application/x-www-form-urlencoded` pairs (the query string).
pub(crate) fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, ScimError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, ScimError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid("the query string has an invalid escape"))?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid("the query string is not UTF-8"))
}

fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `attributes` or `excludedAttributes` (RFC 7644 §3.9). Names the schema lacks are kept
/// and simply match nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Projection {
    pub attributes: Vec<AttrPath>,
    pub excluded: Vec<AttrPath>,
}

fn parse_names(list: &str) -> Result<Vec<AttrPath>, ScimError> {
    if list.len() > FILTER_BYTES_MAX {
        return Err(invalid(format!(
            "an attribute list is at most {FILTER_BYTES_MAX} bytes"
        )));
    }
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| AttrPath::parse(n).ok_or_else(|| invalid(format!("invalid attribute name {n:?}"))))
        .collect()
}

fn names_from_json(value: Option<&Value>) -> Result<Vec<AttrPath>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let names: Vec<&str> = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| invalid("attribute names must be strings"))
                })
                .collect::<Result<_, _>>()?;
            parse_names(&names.join(","))
        }
        Some(Value::String(s)) => parse_names(s),
        Some(_) => Err(invalid("attributes must be an array of strings")),
    }
}

impl Projection {
    fn new(attributes: Vec<AttrPath>, excluded: Vec<AttrPath>) -> Result<Self, ScimError> {
        if !attributes.is_empty() && !excluded.is_empty() {
            return Err(invalid(
                "attributes and excludedAttributes are mutually exclusive",
            ));
        }
        Ok(Self { attributes, excluded })
    }

    /// From the URL query of any request returning a resource.
    pub(crate) fn from_query(pairs: &[(String, String)]) -> Result<Self, ScimError> {
        Self::new(
            parse_names(query_param(pairs, "attributes").unwrap_or(""))?,
            parse_names(query_param(pairs, "excludedAttributes").unwrap_or(""))?,
        )
    }

    /// Which sub-attributes of each top-level attribute `paths` name: `None` for all.
    fn by_attribute(
        paths: &[AttrPath],
        kind: ResourceKind,
    ) -> BTreeMap<&'static str, Option<Vec<&'static str>>> {
        let mut named: BTreeMap<&'static str, Option<Vec<&'static str>>> = BTreeMap::new();
        for path in paths {
            if path
                .urn
                .as_deref()
                .is_some_and(|u| !u.eq_ignore_ascii_case(kind.schema()))
            {
                continue;
            }
            let Some(def) = kind.attr(&path.attr) else {
                continue;
            };
            match path.sub.as_deref().map(|s| def.sub_attr(s)) {
                None => {
                    named.insert(def.name, None);
                }
                Some(None) => {}
                Some(Some(sub)) => {
                    if let Some(subs) = named.entry(def.name).or_insert_with(|| Some(Vec::new())) {
                        subs.push(sub.name);
                    }
                }
            }
        }
        named
    }

    /// Keeps in `doc` (canonical JSON of a `kind`) what the projection asks for; `schemas`
    /// and attributes returned `always` stay.
    pub(crate) fn apply(&self, mut doc: Map<String, Value>, kind: ResourceKind) -> Map<String, Value> {
        let always =
            |key: &str| key == "schemas" || kind.attr(key).is_some_and(|a| a.returned == Returned::Always);
        if !self.attributes.is_empty() {
            let named = Self::by_attribute(&self.attributes, kind);
            doc.retain(|key, value| match named.get(key.as_str()) {
                _ if always(key) => true,
                None => false,
                Some(None) => true,
                Some(Some(subs)) => {
                    keep_subs(value, |k| subs.contains(&k));
                    true
                }
            });
        }
        if !self.excluded.is_empty() {
            let named = Self::by_attribute(&self.excluded, kind);
            doc.retain(|key, value| match named.get(key.as_str()) {
                _ if always(key) => true,
                None => true,
                Some(None) => false,
                Some(Some(subs)) => {
                    keep_subs(value, |k| !subs.contains(&k));
                    true
                }
            });
        }
        doc
    }
}

/// Keeps the sub-attributes `keep` accepts in a complex value or in each of its values.
fn keep_subs(value: &mut Value, keep: impl Fn(&str) -> bool) {
    match value {
        Value::Object(obj) => obj.retain(|k, _| keep(k)),
        Value::Array(items) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.retain(|k, _| keep(k));
            }
        }
        _ => {}
    }
}

/// A list or search request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListParams {
    pub filter: Option<Filter>,
    /// 1-based.
    pub start_index: usize,
    pub count: usize,
    pub projection: Projection,
}

fn index(value: Option<&Value>, name: &str) -> Result<Option<i64>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} must be an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{name} must be an integer"))),
        Some(_) => Err(invalid(format!("{name} must be an integer"))),
    }
}

impl ListParams {
    /// `startIndex` below 1 reads as 1 and a negative `count` as 0 (RFC 7644 §3.4.2.4);
    /// `count` is at most `count_max`, which is also the page size when none is asked.
    fn new(
        filter: Option<&str>,
        start_index: Option<i64>,
        count: Option<i64>,
        projection: Projection,
        count_max: usize,
    ) -> Result<Self, ScimError> {
        let filter = filter
            .filter(|f| !f.trim().is_empty())
            .map(parse_filter)
            .transpose()?;
        let start_index = usize::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
        let count = count.map_or(count_max, |c| {
            usize::try_from(c.max(0)).unwrap_or(usize::MAX).min(count_max)
        });
        Ok(Self {
            filter,
            start_index,
            count,
            projection,
        })
    }

    /// From a GET's URL query.
    pub(crate) fn from_query(pairs: &[(String, String)], count_max: usize) -> Result<Self, ScimError> {
        let number = |name: &str| {
            query_param(pairs, name)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| invalid(format!("{name} must be an integer")))
                })
                .transpose()
        };
        Self::new(
            query_param(pairs, "filter"),
            number("startIndex")?,
            number("count")?,
            Projection::from_query(pairs)?,
            count_max,
        )
    }

    /// From a `POST .../.search` body (RFC 7644 §3.4.3).
    pub(crate) fn from_search(body: &Value, count_max: usize) -> Result<Self, ScimError> {
        let map = body.as_object().ok_or_else(|| {
            ScimError::bad_request(ScimType::InvalidSyntax, "the body must be a JSON object")
        })?;
        if let Some(schemas) = get_ci(map, "schemas") {
            let listed = schemas.as_array().is_some_and(|l| {
                l.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_SCHEMA)))
            });
            if !listed {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    format!("schemas must include {SEARCH_SCHEMA}"),
                ));
            }
        }
        let filter = match get_ci(map, "filter") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) => Some(f.as_str()),
            Some(_) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidFilter,
                    "filter must be a string",
                ));
            }
        };
        Self::new(
            filter,
            index(get_ci(map, "startIndex"), "startIndex")?,
            index(get_ci(map, "count"), "count")?,
            Projection::new(
                names_from_json(get_ci(map, "attributes"))?,
                names_from_json(get_ci(map, "excludedAttributes"))?,
            )?,
            count_max,
        )
    }

    /// The page of `matched` (already filtered and ordered) this request asks for.
    pub(crate) fn page<T>(&self, matched: Vec<T>) -> (usize, Vec<T>) {
        let total = matched.len();
        let page = matched
            .into_iter()
            .skip(self.start_index - 1)
            .take(self.count)
            .collect();
        (total, page)
    }

    /// A `ListResponse` for a page starting at this request's `startIndex`.
    pub(crate) fn response(&self, total: usize, resources: Vec<Value>) -> Value {
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": self.start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        })
    }
}

/// A `ListResponse` holding all of `resources` (discovery endpoints).
pub(crate) fn list_all(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<ListParams, ScimError> {
        ListParams::from_query(&parse_query(Some(query))?, 200)
    }

    #[test]
    fn query_strings_decode() {
        let pairs = parse_query(Some("filter=userName%20eq%20%22a+b%22&count=5&&x")).unwrap();
        assert_eq!(pairs[0], ("filter".into(), "userName eq \"a b\"".into()));
        assert_eq!(pairs[2], ("x".into(), String::new()));
        assert!(parse_query(Some("a=%zz")).is_err());
        assert!(parse_query(Some("a=%ff")).is_err(), "not UTF-8");
        assert!(parse_query(Some("a=%2")).is_err());
    }

    #[test]
    fn pagination_edges() {
        let items: Vec<u32> = (1..=10).collect();
        assert_eq!(params("").unwrap().page(items.clone()), (10, items.clone()));
        assert_eq!(
            params("startIndex=0&count=3").unwrap().page(items.clone()),
            (10, vec![1, 2, 3])
        );
        assert_eq!(
            params("startIndex=-5&count=2").unwrap().page(items.clone()),
            (10, vec![1, 2])
        );
        assert_eq!(
            params("startIndex=9&count=5").unwrap().page(items.clone()),
            (10, vec![9, 10])
        );
        assert_eq!(params("startIndex=11").unwrap().page(items.clone()), (10, vec![]));
        assert_eq!(
            params("startIndex=99999999999999").unwrap().page(items.clone()),
            (10, vec![])
        );
        assert_eq!(params("count=0").unwrap().page(items.clone()), (10, vec![]));
        assert_eq!(params("count=-1").unwrap().page(items.clone()), (10, vec![]));
        assert_eq!(params("count=100000").unwrap().count, 200);
        assert_eq!(params("COUNT=4").unwrap().count, 4, "parameter names ignore case");
        assert!(params("count=x").is_err());
        assert!(params("startIndex=1.5").is_err());
        let response = params("startIndex=3").unwrap().response(10, vec![json!({})]);
        assert_eq!(
            (response["startIndex"].clone(), response["itemsPerPage"].clone()),
            (json!(3), json!(1))
        );
    }

    #[test]
    fn search_bodies() {
        let body = json!({"schemas": [SEARCH_SCHEMA], "filter": "userName pr", "startIndex": 2, "count": "1",
            "attributes": ["userName", "emails.value"]});
        let p = ListParams::from_search(&body, 200).unwrap();
        assert!(p.filter.is_some());
        assert_eq!((p.start_index, p.count, p.projection.attributes.len()), (2, 1, 2));
        assert!(ListParams::from_search(&json!({"schemas": ["x"]}), 200).is_err());
        assert!(ListParams::from_search(&json!({"filter": 3}), 200).is_err());
        assert!(
            ListParams::from_search(&json!({"attributes": ["a"], "excludedAttributes": ["b"]}), 200).is_err()
        );
    }

    #[test]
    fn projection_keeps_always_returned_and_named_sub_attributes() {
        let doc = json!({"schemas": ["s"], "id": "a", "userName": "a", "displayName": "A",
            "emails": [{"value": "x", "type": "work"}], "name": {"givenName": "G", "familyName": "F"}, "meta": {}})
        .as_object()
        .cloned()
        .unwrap();
        let pairs = parse_query(Some("attributes=DISPLAYNAME,emails.value,urn:ietf:params:scim:schemas:core:2.0:User:name.givenName,nope")).unwrap();
        let out = Projection::from_query(&pairs)
            .unwrap()
            .apply(doc.clone(), ResourceKind::User);
        assert_eq!(
            Value::Object(out),
            json!({"schemas": ["s"], "id": "a", "displayName": "A", "emails": [{"value": "x"}], "name": {"givenName": "G"}})
        );
        let pairs = parse_query(Some("excludedAttributes=id,emails,name.familyName,meta")).unwrap();
        let out = Projection::from_query(&pairs)
            .unwrap()
            .apply(doc, ResourceKind::User);
        assert_eq!(
            Value::Object(out),
            json!({"schemas": ["s"], "id": "a", "userName": "a", "displayName": "A", "name": {"givenName": "G"}})
        );
        assert!(
            Projection::from_query(&parse_query(Some("attributes=a&excludedAttributes=b")).unwrap()).is_err()
        );
        assert!(Projection::from_query(&parse_query(Some("attributes=a..b")).unwrap()).is_err());
    }
}
