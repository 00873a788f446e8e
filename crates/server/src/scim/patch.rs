//! PATCH (RFC 7644 §3.5.2): operations applied to a resource's canonical JSON, which the
//! router then reads back with `from_json`, so a patched resource is checked exactly like
//! a PUT body.
//!
//! Interoperability beyond the RFC, for what identity providers send:
//! - `op` is case-insensitive (Entra sends "Replace", "Add", "Remove").
//! - booleans may be strings ("True", "False"), as Entra sends `active`.
//! - `remove` on a multi-valued attribute with a `value` removes only the listed values
//!   (Entra: `{"op":"Remove","path":"members","value":[{"value":"id"}]}`).
//! - `add`/`replace` whose path filters on `attr eq "literal"` and matches nothing adds a
//!   value carrying that literal (Entra: `emails[type eq "work"].value` for a user with no
//!   work address) instead of failing with `noTarget`.
//! - without a path, each key of the `value` object is itself a path (Entra and Okta send
//!   `{"active": false}`, some send `"name.givenName"` keys).
//! - RFC 7643 attributes Redoubt does not keep, and the enterprise extension, are ignored
//!   (see `schema::IGNORED_USER`); unknown attributes fail with `invalidPath`.

use serde_json::{Map, Value};

use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, CompValue, CompareOp, Filter, Scope, get_ci, parse_patch_path};
use super::resource::as_bool;
use super::schema::{Attr, Kind, Mutability, ResourceKind};

/// The most operations one PATCH request may carry; more is answered 413, as RFC 7644
/// §3.7.4 does for bulk requests over `maxOperations`.
pub(crate) const PATCH_OPERATIONS_MAX: usize = 100;

const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One operation as sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Operation {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// A parsed `PatchOp` request body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatchRequest {
    pub operations: Vec<Operation>,
}

fn syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

impl PatchRequest {
    /// Reads a `PatchOp` body, bounding the number of operations.
    pub(crate) fn parse(body: &Value) -> Result<Self, ScimError> {
        let map = body
            .as_object()
            .ok_or_else(|| syntax("the body must be a JSON object"))?;
        if let Some(schemas) = get_ci(map, "schemas") {
            let listed = schemas.as_array().is_some_and(|l| {
                l.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_SCHEMA)))
            });
            if !listed {
                return Err(syntax(format!("schemas must include {PATCH_SCHEMA}")));
            }
        }
        let ops = get_ci(map, "Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| syntax("Operations must be an array"))?;
        if ops.len() > PATCH_OPERATIONS_MAX {
            return Err(ScimError::too_large(format!(
                "a PATCH carries at most {PATCH_OPERATIONS_MAX} operations"
            )));
        }
        let operations = ops.iter().map(Operation::parse).collect::<Result<_, _>>()?;
        Ok(Self { operations })
    }

    /// How many member values the request names, for the per-request bound.
    pub(crate) fn member_values(&self) -> usize {
        let count = |v: &Value| v.as_array().map_or(1, Vec::len);
        self.operations
            .iter()
            .map(|op| match (&op.path, &op.value) {
                (Some(p), Some(v)) if p.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("members")) => {
                    count(v)
                }
                (None, Some(Value::Object(m))) => get_ci(m, "members").map_or(0, count),
                _ => 0,
            })
            .sum()
    }

    /// Applies every operation in order to `doc`, the resource's canonical JSON. On error
    /// `doc` is partly changed: the caller discards it.
    pub(crate) fn apply(&self, doc: &mut Map<String, Value>, kind: ResourceKind) -> Result<(), ScimError> {
        for op in &self.operations {
            apply_op(doc, kind, op.op, op.path.as_deref(), op.value.as_ref())?;
        }
        Ok(())
    }
}

impl Operation {
    fn parse(value: &Value) -> Result<Self, ScimError> {
        let map = value
            .as_object()
            .ok_or_else(|| syntax("an operation must be an object"))?;
        let op = match get_ci(map, "op").and_then(Value::as_str) {
            Some(s) if s.eq_ignore_ascii_case("add") => OpKind::Add,
            Some(s) if s.eq_ignore_ascii_case("replace") => OpKind::Replace,
            Some(s) if s.eq_ignore_ascii_case("remove") => OpKind::Remove,
            _ => return Err(syntax("op must be add, replace or remove")),
        };
        let path = match get_ci(map, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidPath,
                    "path must be a string",
                ));
            }
        };
        let value = get_ci(map, "value").cloned();
        if op != OpKind::Remove && value.is_none() {
            return Err(syntax("add and replace need a value"));
        }
        Ok(Self { op, path, value })
    }
}

/// Where a path points once resolved against the schema.
enum Target {
    /// An attribute Redoubt does not keep: the operation changes nothing.
    Ignored,
    Attr {
        attr: &'static Attr,
        sub: Option<&'static Attr>,
        filter: Option<Filter>,
    },
}

fn invalid_path(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidPath, detail)
}

fn resolve(kind: ResourceKind, text: &str) -> Result<Target, ScimError> {
    let parsed = parse_patch_path(text)?;
    let AttrPath { urn, attr, sub } = parsed.path;
    if let Some(urn) = &urn {
        if kind.is_ignored_extension(urn) {
            return Ok(Target::Ignored);
        }
        if !urn.eq_ignore_ascii_case(kind.schema()) {
            return Err(invalid_path(format!("unknown schema {urn}")));
        }
    }
    let Some(def) = kind.attr(&attr) else {
        return if kind.is_ignored(&attr) {
            Ok(Target::Ignored)
        } else {
            Err(invalid_path(format!("unknown attribute {attr}")))
        };
    };
    if def.mutability == Mutability::ReadOnly {
        return Err(ScimError::bad_request(
            ScimType::Mutability,
            format!("{} is read-only", def.name),
        ));
    }
    if parsed.filter.is_some() && !def.multi {
        return Err(invalid_path(format!("{} is not multi-valued", def.name)));
    }
    let sub_def = match &sub {
        None => None,
        Some(_) if def.kind != Kind::Complex => {
            return Err(invalid_path(format!("{} has no sub-attributes", def.name)));
        }
        // RFC 7643 sub-attributes Redoubt does not keep (name.formatted, emails.display,
        // members.type) are ignored like the attributes above.
        Some(s) => match def.sub_attr(s) {
            None => return Ok(Target::Ignored),
            Some(d) if d.mutability != Mutability::ReadWrite => {
                return Err(ScimError::bad_request(
                    ScimType::Mutability,
                    format!("{}.{} cannot be changed", def.name, d.name),
                ));
            }
            Some(d) => Some(d),
        },
    };
    Ok(Target::Attr {
        attr: def,
        sub: sub_def,
        filter: parsed.filter,
    })
}

fn apply_op(
    doc: &mut Map<String, Value>,
    kind: ResourceKind,
    op: OpKind,
    path: Option<&str>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(path) = path else {
        return apply_without_path(doc, kind, op, value);
    };
    let Target::Attr { attr, sub, filter } = resolve(kind, path)? else {
        return Ok(());
    };
    // Setting null is removing (RFC 7644 §3.5.2.3 leaves it open; clients mean "unset").
    let (op, value) = match value {
        Some(Value::Null) if op != OpKind::Remove => (OpKind::Remove, None),
        v => (op, v),
    };
    if op == OpKind::Remove && attr.required && sub.is_none() && filter.is_none() {
        return Err(ScimError::invalid_value(format!("{} is required", attr.name)));
    }
    match (attr.multi, filter) {
        (false, _) => apply_single(doc, attr, sub, op, value),
        (true, None) => apply_multi(doc, attr, sub, op, value),
        (true, Some(filter)) => {
            let mut items = take_items(doc, attr.name);
            let result = change_filtered(&mut items, attr, sub, &filter, op, value);
            put_items(doc, attr.name, items);
            result
        }
    }
}

/// `add`/`replace` without a path: every key of the value object is a path.
fn apply_without_path(
    doc: &mut Map<String, Value>,
    kind: ResourceKind,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == OpKind::Remove {
        return Err(ScimError::bad_request(ScimType::NoTarget, "remove needs a path"));
    }
    let Some(Value::Object(map)) = value else {
        return Err(ScimError::invalid_value(
            "without a path, the value must be an object",
        ));
    };
    for (key, v) in map {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
            || kind.is_ignored_extension(key)
        {
            continue;
        }
        if key.eq_ignore_ascii_case(kind.schema()) {
            apply_without_path(doc, kind, op, Some(v))?;
            continue;
        }
        apply_op(doc, kind, op, Some(key), Some(v))?;
    }
    Ok(())
}

/// Normalises one value of `attr` (not a whole multi-valued array): booleans from their
/// string forms, complex values to canonical sub-attribute names with read-only and
/// unknown ones dropped. Type errors are left to `from_json`, which names the attribute.
fn coerce(attr: &Attr, value: &Value) -> Result<Value, ScimError> {
    match attr.kind {
        Kind::Boolean => as_bool(value)
            .map(Value::Bool)
            .ok_or_else(|| ScimError::invalid_value(format!("{} must be a boolean", attr.name))),
        Kind::Complex => {
            let map = value
                .as_object()
                .ok_or_else(|| ScimError::invalid_value(format!("{} must be an object", attr.name)))?;
            let mut out = Map::new();
            for (k, v) in map {
                if let Some(sub) = attr.sub_attr(k).filter(|s| s.mutability != Mutability::ReadOnly) {
                    out.insert(sub.name.into(), coerce(sub, v)?);
                }
            }
            Ok(Value::Object(out))
        }
        _ => Ok(value.clone()),
    }
}

fn coerce_all(attr: &Attr, value: Option<&Value>) -> Result<Vec<Value>, ScimError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|i| coerce(attr, i)).collect(),
        Some(v) => Ok(vec![coerce(attr, v)?]),
    }
}

fn need(value: Option<&Value>) -> Result<&Value, ScimError> {
    value.ok_or_else(|| syntax("add and replace need a value"))
}

fn apply_single(
    doc: &mut Map<String, Value>,
    attr: &Attr,
    sub: Option<&Attr>,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match (sub, op) {
        (None, OpKind::Remove) => {
            doc.remove(attr.name);
        }
        (None, OpKind::Add) if attr.kind == Kind::Complex => {
            let new = coerce(attr, need(value)?)?;
            let mut obj = take_object(doc, attr.name);
            if let Value::Object(fields) = new {
                obj.extend(fields);
            }
            put_object(doc, attr.name, obj);
        }
        (None, _) => {
            doc.insert(attr.name.into(), coerce(attr, need(value)?)?);
        }
        (Some(sub), OpKind::Remove) => {
            let mut obj = take_object(doc, attr.name);
            obj.remove(sub.name);
            put_object(doc, attr.name, obj);
        }
        (Some(sub), _) => {
            let v = coerce(sub, need(value)?)?;
            let mut obj = take_object(doc, attr.name);
            obj.insert(sub.name.into(), v);
            put_object(doc, attr.name, obj);
        }
    }
    Ok(())
}

/// Takes the object at `key` out of `doc` (empty when absent or not an object).
fn take_object(doc: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match doc.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Takes the values of a multi-valued attribute out of `doc`.
fn take_items(doc: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match doc.remove(key) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Puts a complex value back; an empty one is left out, as unassigned (RFC 7643 §2.5).
fn put_object(doc: &mut Map<String, Value>, key: &str, map: Map<String, Value>) {
    if !map.is_empty() {
        doc.insert(key.into(), Value::Object(map));
    }
}

/// Puts values back; none is left out, as unassigned (RFC 7643 §2.5).
fn put_items(doc: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        doc.insert(key.into(), Value::Array(items));
    }
}

fn is_primary(item: &Value) -> bool {
    item.get("primary") == Some(&Value::Bool(true))
}

/// At most one primary value: the one just set wins (RFC 7643 §2.4).
fn keep_one_primary(items: &mut [Value], winner: usize) {
    for (i, item) in items.iter_mut().enumerate() {
        if i != winner
            && let Some(obj) = item.as_object_mut()
            && obj.get("primary") == Some(&Value::Bool(true))
        {
            obj.insert("primary".into(), Value::Bool(false));
        }
    }
}

/// Two values are the same when their `value` sub-attributes are, or, without one, when
/// they are equal (RFC 7644 §3.5.2.1: adding an existing value changes nothing).
fn same_value(attr: &Attr, a: &Value, b: &Value) -> bool {
    let case_exact = attr.sub_attr("value").is_some_and(|s| s.case_exact);
    match (
        a.get("value").and_then(Value::as_str),
        b.get("value").and_then(Value::as_str),
    ) {
        (Some(x), Some(y)) if attr.name == "members" => {
            if case_exact {
                x == y
            } else {
                x.eq_ignore_ascii_case(y)
            }
        }
        _ => a == b,
    }
}

fn apply_multi(
    doc: &mut Map<String, Value>,
    attr: &'static Attr,
    sub: Option<&Attr>,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let mut items = take_items(doc, attr.name);
    match (sub, op) {
        (None, OpKind::Add) => {
            for item in coerce_all(attr, value)? {
                if !items.iter().any(|i| same_value(attr, i, &item)) {
                    let primary = is_primary(&item);
                    items.push(item);
                    if primary {
                        let last = items.len() - 1;
                        keep_one_primary(&mut items, last);
                    }
                }
            }
        }
        (None, OpKind::Replace) => items = coerce_all(attr, value)?,
        (None, OpKind::Remove) => match value {
            Some(v) => {
                let gone = coerce_all(attr, Some(v))?;
                items.retain(|i| !gone.iter().any(|g| same_value(attr, i, g)));
            }
            None => items.clear(),
        },
        (Some(sub), OpKind::Remove) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.remove(sub.name);
            }
            items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
        }
        (Some(sub), _) => {
            let v = coerce(sub, need(value)?)?;
            if items.is_empty() {
                items.push(Value::Object(Map::new()));
            }
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.insert(sub.name.into(), v.clone());
            }
        }
    }
    put_items(doc, attr.name, items);
    Ok(())
}

/// The value a filter of the form `sub eq "literal"` describes, for adding one that
/// matched nothing.
fn implied_value(attr: &Attr, filter: &Filter) -> Option<Map<String, Value>> {
    let Filter::Compare {
        path,
        op: CompareOp::Eq,
        value: CompValue::Str(literal),
    } = filter
    else {
        return None;
    };
    if path.urn.is_some() || path.sub.is_some() {
        return None;
    }
    let sub = attr
        .sub_attr(&path.attr)
        .filter(|s| s.mutability != Mutability::ReadOnly)?;
    let mut item = Map::new();
    item.insert(sub.name.into(), Value::String(literal.clone()));
    Some(item)
}

/// Applies `op` to the items of a multi-valued attribute that `filter` matches.
fn change_filtered(
    items: &mut Vec<Value>,
    attr: &'static Attr,
    sub: Option<&Attr>,
    filter: &Filter,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let hit: Vec<bool> = items
        .iter()
        .map(|i| {
            i.as_object()
                .is_some_and(|o| filter.matches(o, Scope::Complex(attr)))
        })
        .collect();
    if op == OpKind::Remove {
        match sub {
            None => {
                let mut hits = hit.iter();
                items.retain(|_| !hits.next().copied().unwrap_or(false));
            }
            Some(sub) => {
                for (item, _) in items.iter_mut().zip(&hit).filter(|(_, h)| **h) {
                    if let Some(obj) = item.as_object_mut() {
                        obj.remove(sub.name);
                    }
                }
                items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
            }
        }
        return Ok(());
    }
    let new_value = match sub {
        Some(sub) => coerce(sub, need(value)?)?,
        None => coerce(attr, need(value)?)?,
    };
    let mut targets: Vec<usize> = hit
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(i, _)| i)
        .collect();
    if targets.is_empty() {
        let item = implied_value(attr, filter)
            .ok_or_else(|| ScimError::bad_request(ScimType::NoTarget, "the filter matched no value"))?;
        items.push(Value::Object(item));
        targets.push(items.len() - 1);
    }
    for &i in &targets {
        let Some(item) = items.get_mut(i).and_then(Value::as_object_mut) else {
            continue;
        };
        match (sub, &new_value) {
            (Some(sub), v) => {
                item.insert(sub.name.into(), v.clone());
            }
            (None, Value::Object(fields)) if op == OpKind::Add => item.extend(fields.clone()),
            (None, Value::Object(fields)) => *item = fields.clone(),
            (None, _) => {}
        }
    }
    if let Some(&winner) = targets
        .iter()
        .rev()
        .find(|&&i| items.get(i).is_some_and(is_primary))
    {
        keep_one_primary(items, winner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "alice", "userName": "alice", "active": true,
            "name": {"givenName": "Alice", "familyName": "Liddell"},
            "emails": [{"value": "a@work.org", "type": "work", "primary": true},
                       {"value": "a@home.net", "type": "home", "primary": false}],
            "groups": [{"value": "g1"}]
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn group() -> Map<String, Value> {
        json!({"id": "g", "displayName": "G", "members": [{"value": "a"}, {"value": "b"}]})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn patch(doc: &mut Map<String, Value>, kind: ResourceKind, ops: Value) -> Result<(), ScimError> {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": ops});
        PatchRequest::parse(&body)?.apply(doc, kind)
    }

    #[test]
    fn entra_deactivation_with_capitalised_op_and_string_boolean() {
        let mut doc = user();
        patch(
            &mut doc,
            ResourceKind::User,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(doc["active"], false);
        patch(
            &mut doc,
            ResourceKind::User,
            json!([{"op": "replace", "value": {"active": "True"}}]),
        )
        .unwrap();
        assert_eq!(doc["active"], true);
    }

    #[test]
    fn members_add_is_idempotent_and_remove_takes_filters_or_values() {
        let mut doc = group();
        let g = ResourceKind::Group;
        patch(&mut doc, g, json!([{"op": "add", "path": "members", "value": [{"value": "b"}, {"value": "c", "display": "C"}]}]))
            .unwrap();
        assert_eq!(
            doc["members"],
            json!([{"value": "a"}, {"value": "b"}, {"value": "c"}])
        );
        patch(
            &mut doc,
            g,
            json!([{"op": "remove", "path": "members[value eq \"a\"]"}]),
        )
        .unwrap();
        patch(
            &mut doc,
            g,
            json!([{"op": "Remove", "path": "members", "value": [{"value": "c"}]}]),
        )
        .unwrap();
        assert_eq!(doc["members"], json!([{"value": "b"}]));
        // Removing what is not there changes nothing.
        patch(
            &mut doc,
            g,
            json!([{"op": "remove", "path": "members[value eq \"zz\"]"}]),
        )
        .unwrap();
        patch(&mut doc, g, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(!doc.contains_key("members"));
    }

    #[test]
    fn filtered_paths_change_only_matching_values() {
        let mut doc = user();
        let u = ResourceKind::User;
        patch(
            &mut doc,
            u,
            json!([{"op": "replace", "path": "emails[type eq \"home\"].value", "value": "new@home.net"}]),
        )
        .unwrap();
        assert_eq!(doc["emails"][1]["value"], "new@home.net");
        assert_eq!(doc["emails"][0]["value"], "a@work.org");
        // Making the home address primary demotes the work one.
        patch(
            &mut doc,
            u,
            json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
        )
        .unwrap();
        assert_eq!(
            (
                doc["emails"][0]["primary"].clone(),
                doc["emails"][1]["primary"].clone()
            ),
            (json!(false), json!(true))
        );
        // Entra: a work address for a user who has none is added.
        let mut doc = user();
        patch(
            &mut doc,
            u,
            json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
        )
        .unwrap();
        patch(
            &mut doc,
            u,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@x.org"}]),
        )
        .unwrap();
        assert_eq!(doc["emails"][1], json!({"type": "work", "value": "w@x.org"}));
        // A filter that matches nothing and implies no value fails.
        let err = patch(
            &mut doc,
            u,
            json!([{"op": "replace", "path": "emails[value co \"zz\"].type", "value": "x"}]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type(), Some(ScimType::NoTarget));
    }

    #[test]
    fn complex_single_add_merges_replace_overwrites() {
        let mut doc = user();
        let u = ResourceKind::User;
        patch(
            &mut doc,
            u,
            json!([{"op": "add", "path": "name", "value": {"givenName": "Al"}}]),
        )
        .unwrap();
        assert_eq!(doc["name"], json!({"givenName": "Al", "familyName": "Liddell"}));
        patch(
            &mut doc,
            u,
            json!([{"op": "replace", "path": "name", "value": {"givenName": "Bo"}}]),
        )
        .unwrap();
        assert_eq!(doc["name"], json!({"givenName": "Bo"}));
        patch(&mut doc, u, json!([{"op": "remove", "path": "name.givenName"}])).unwrap();
        assert!(!doc.contains_key("name"));
        patch(
            &mut doc,
            u,
            json!([{"op": "replace", "value": {"name.familyName": "X", "displayName": "D"}}]),
        )
        .unwrap();
        assert_eq!(
            (doc["name"]["familyName"].clone(), doc["displayName"].clone()),
            (json!("X"), json!("D"))
        );
    }

    #[test]
    fn read_only_unknown_and_required_paths() {
        let u = ResourceKind::User;
        let mut doc = user();
        let err = |ops: Value| patch(&mut user(), u, ops).unwrap_err();
        assert_eq!(
            err(json!([{"op": "replace", "path": "id", "value": "x"}])).scim_type(),
            Some(ScimType::Mutability)
        );
        assert_eq!(
            err(json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}])).scim_type(),
            Some(ScimType::Mutability)
        );
        assert_eq!(
            err(json!([{"op": "add", "path": "bogus", "value": 1}])).scim_type(),
            Some(ScimType::InvalidPath)
        );
        assert_eq!(
            err(json!([{"op": "remove", "path": "userName"}])).scim_type(),
            Some(ScimType::InvalidValue)
        );
        assert_eq!(
            err(json!([{"op": "remove"}])).scim_type(),
            Some(ScimType::NoTarget)
        );
        assert_eq!(
            err(json!([{"op": "delete", "path": "active"}])).scim_type(),
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            err(json!([{"op": "add", "path": "active"}])).scim_type(),
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            err(json!([{"op": "add", "path": "active", "value": "yes"}])).scim_type(),
            Some(ScimType::InvalidValue)
        );
        // Known attributes Redoubt does not keep are ignored.
        let before = doc.clone();
        patch(
            &mut doc,
            u,
            json!([{"op": "replace", "path": "title", "value": "Boss"},
                   {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "IT"},
                   {"op": "replace", "path": "name.formatted", "value": "A L"},
                   {"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": "x"}}}]),
        )
        .unwrap();
        assert_eq!(doc, before);
    }

    #[test]
    fn operation_count_is_bounded_and_members_counted() {
        let ops: Vec<Value> = (0..=PATCH_OPERATIONS_MAX)
            .map(|_| json!({"op": "remove", "path": "title"}))
            .collect();
        let err = PatchRequest::parse(&json!({"Operations": ops})).unwrap_err();
        assert_eq!(err.status(), 413);
        let req = PatchRequest::parse(&json!({"Operations": [
            {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"c\"]"},
            {"op": "add", "value": {"members": [{"value": "d"}]}}]}))
        .unwrap();
        assert_eq!(req.member_values(), 3);
    }

    #[test]
    fn null_value_unsets() {
        let mut doc = user();
        patch(
            &mut doc,
            ResourceKind::User,
            json!([{"op": "replace", "path": "emails", "value": null}]),
        )
        .unwrap();
        assert!(!doc.contains_key("emails"));
    }
}
