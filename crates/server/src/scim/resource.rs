//! Users and Groups as the backend keeps them, and their SCIM JSON forms (RFC 7643 §4).
//!
//! Rendering ([`ScimUser::to_json`]) always yields canonical attribute names, which the
//! filter, PATCH and projection code rely on. Reading ([`ScimUser::from_json`]) matches
//! names case-insensitively (RFC 7643 §2.1), ignores read-only and unsupported attributes
//! (RFC 7644 §3.3: "readOnly ... SHALL be ignored"), and rejects values of the wrong type.

use serde_json::{Map, Value, json};

use super::error::{ScimError, ScimType};
use super::schema::{self, ResourceKind};

/// Resource metadata the backend keeps (RFC 7643 §3.1). Ignored in what the layer passes
/// to `create_*`/`replace_*` except `version` (see [`super::ScimBackend`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// When the resource was made, RFC 3339 (`2026-01-02T03:04:05Z`).
    pub created: String,
    /// When the resource last changed, RFC 3339.
    pub last_modified: String,
    /// A weak entity tag that changes whenever the resource does, e.g. `W/"3"`; sent as
    /// `meta.version` and the `ETag` header, compared with `If-Match`/`If-None-Match`.
    pub version: String,
}

/// An email address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimEmail {
    pub value: String,
    /// The SCIM `type` ("work", "home", "other" or anything the client sent).
    pub kind: Option<String>,
    /// At most one address of a user is primary.
    pub primary: bool,
}

/// A group a user belongs to; filled by the backend, read-only to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRef {
    /// The group's id.
    pub value: String,
    /// The group's displayName.
    pub display: Option<String>,
}

/// A member of a group. Members are users only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberRef {
    /// The member user's id.
    pub value: String,
    /// The user's displayName: filled by the backend when it returns a group, ignored in
    /// what clients send (read-only).
    pub display: Option<String>,
}

/// A SCIM user as Redoubt keeps it. `id` is Redoubt's user name, stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimUser {
    /// Chosen by the backend on creation; empty in what the layer passes to `create_user`.
    pub id: String,
    pub external_id: Option<String>,
    pub user_name: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub emails: Vec<ScimEmail>,
    pub active: bool,
    /// Read-only, filled by the backend; ignored in what the layer passes to it.
    pub groups: Vec<GroupRef>,
    pub meta: Meta,
}

/// A SCIM group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimGroup {
    /// Chosen by the backend on creation; empty in what the layer passes to `create_group`.
    pub id: String,
    pub external_id: Option<String>,
    pub display_name: String,
    /// No two with the same `value`.
    pub members: Vec<MemberRef>,
    pub meta: Meta,
}

/// `base_url/Users/id`: the `meta.location` and `$ref` of a resource.
pub(crate) fn location(base_url: &str, kind: ResourceKind, id: &str) -> String {
    format!("{base_url}/{}/{}", kind.endpoint(), encode_segment(id))
}

/// Percent-encodes all but RFC 3986 unreserved characters, for ids in URLs.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn meta_json(meta: &Meta, kind: ResourceKind, location: String) -> Value {
    json!({
        "resourceType": kind.name(),
        "created": meta.created,
        "lastModified": meta.last_modified,
        "location": location,
        "version": meta.version,
    })
}

/// A reference to another resource: a user's group or a group's member.
fn ref_json(base_url: &str, kind: ResourceKind, id: &str, display: &Option<String>) -> Value {
    let mut map = Map::new();
    map.insert("value".into(), id.into());
    map.insert("$ref".into(), location(base_url, kind, id).into());
    insert_opt(&mut map, "display", display);
    Value::Object(map)
}

fn insert_opt(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        map.insert(key.into(), Value::String(v.clone()));
    }
}

impl ScimUser {
    /// The full representation, canonical names, unset attributes left out.
    pub(crate) fn to_json(&self, base_url: &str) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("schemas".into(), json!([schema::USER_SCHEMA]));
        map.insert("id".into(), self.id.clone().into());
        insert_opt(&mut map, "externalId", &self.external_id);
        map.insert("userName".into(), self.user_name.clone().into());
        if self.given_name.is_some() || self.family_name.is_some() {
            let mut name = Map::new();
            insert_opt(&mut name, "givenName", &self.given_name);
            insert_opt(&mut name, "familyName", &self.family_name);
            map.insert("name".into(), Value::Object(name));
        }
        insert_opt(&mut map, "displayName", &self.display_name);
        if !self.emails.is_empty() {
            let emails = self.emails.iter().map(|e| {
                let mut m = Map::new();
                m.insert("value".into(), e.value.clone().into());
                insert_opt(&mut m, "type", &e.kind);
                m.insert("primary".into(), e.primary.into());
                Value::Object(m)
            });
            map.insert("emails".into(), Value::Array(emails.collect()));
        }
        map.insert("active".into(), self.active.into());
        if !self.groups.is_empty() {
            let groups = self
                .groups
                .iter()
                .map(|g| ref_json(base_url, ResourceKind::Group, &g.value, &g.display));
            map.insert("groups".into(), Value::Array(groups.collect()));
        }
        let here = location(base_url, ResourceKind::User, &self.id);
        map.insert("meta".into(), meta_json(&self.meta, ResourceKind::User, here));
        map
    }

    /// Reads the writable attributes of a request body. `id`, `groups` and `meta` come
    /// out empty; `active` is `active_default` when the body has none.
    pub(crate) fn from_json(doc: &Value, active_default: bool) -> Result<Self, ScimError> {
        let map = resource_object(doc, ResourceKind::User)?;
        let mut user = ScimUser {
            id: String::new(),
            external_id: None,
            user_name: String::new(),
            display_name: None,
            given_name: None,
            family_name: None,
            emails: Vec::new(),
            active: active_default,
            groups: Vec::new(),
            meta: Meta::default(),
        };
        let mut has_user_name = false;
        for (key, value) in map {
            let Some(attr) = ResourceKind::User.attr(key) else {
                continue;
            };
            match attr.name {
                "externalId" => user.external_id = opt_string(value, "externalId")?,
                "userName" => {
                    if let Some(name) = opt_string(value, "userName")? {
                        user.user_name = name;
                        has_user_name = true;
                    }
                }
                "displayName" => user.display_name = opt_string(value, "displayName")?,
                "name" => (user.given_name, user.family_name) = read_name(value)?,
                "emails" => user.emails = read_emails(value)?,
                "active" if !value.is_null() => {
                    user.active =
                        as_bool(value).ok_or_else(|| ScimError::invalid_value("active must be a boolean"))?;
                }
                _ => {} // id, meta, groups: read-only, ignored.
            }
        }
        if !has_user_name {
            return Err(ScimError::invalid_value("userName is required"));
        }
        Ok(user)
    }
}

impl ScimGroup {
    /// The full representation, canonical names, unset attributes left out.
    pub(crate) fn to_json(&self, base_url: &str) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("schemas".into(), json!([schema::GROUP_SCHEMA]));
        map.insert("id".into(), self.id.clone().into());
        insert_opt(&mut map, "externalId", &self.external_id);
        map.insert("displayName".into(), self.display_name.clone().into());
        if !self.members.is_empty() {
            let members = self
                .members
                .iter()
                .map(|m| ref_json(base_url, ResourceKind::User, &m.value, &m.display));
            map.insert("members".into(), Value::Array(members.collect()));
        }
        let here = location(base_url, ResourceKind::Group, &self.id);
        map.insert("meta".into(), meta_json(&self.meta, ResourceKind::Group, here));
        map
    }

    /// Reads the writable attributes of a request body; `id` and `meta` come out empty.
    pub(crate) fn from_json(doc: &Value) -> Result<Self, ScimError> {
        let map = resource_object(doc, ResourceKind::Group)?;
        let mut group = ScimGroup {
            id: String::new(),
            external_id: None,
            display_name: String::new(),
            members: Vec::new(),
            meta: Meta::default(),
        };
        let mut has_display_name = false;
        for (key, value) in map {
            let Some(attr) = ResourceKind::Group.attr(key) else {
                continue;
            };
            match attr.name {
                "externalId" => group.external_id = opt_string(value, "externalId")?,
                "displayName" => {
                    if let Some(name) = opt_string(value, "displayName")? {
                        group.display_name = name;
                        has_display_name = true;
                    }
                }
                "members" => group.members = read_members(value)?,
                _ => {}
            }
        }
        if !has_display_name {
            return Err(ScimError::invalid_value("displayName is required"));
        }
        Ok(group)
    }
}

/// The number of member values in a request body, for the per-request bound.
pub(crate) fn member_count(doc: &Value) -> usize {
    let Some(map) = doc.as_object() else { return 0 };
    map.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("members"))
        .map(|(_, v)| v.as_array().map_or(1, Vec::len))
        .sum()
}

/// Checks the body is an object and, when it says, that it is of this resource type.
fn resource_object(doc: &Value, kind: ResourceKind) -> Result<&Map<String, Value>, ScimError> {
    let map = doc
        .as_object()
        .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "the body must be a JSON object"))?;
    if let Some(schemas) = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
        .map(|(_, v)| v)
    {
        let listed = schemas.as_array().is_some_and(|list| {
            list.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(kind.schema())))
        });
        if !listed {
            return Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("schemas must include {}", kind.schema()),
            ));
        }
    }
    Ok(map)
}

/// A boolean, or Entra's string forms ("True", "false").
pub(crate) fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A string attribute; null and "" are unset.
fn opt_string(value: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ScimError::invalid_value(format!("{name} must be a string"))),
    }
}

/// Looks up a sub-attribute of a complex value case-insensitively.
fn sub<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn read_name(value: &Value) -> Result<(Option<String>, Option<String>), ScimError> {
    match value {
        Value::Null => Ok((None, None)),
        Value::Object(map) => Ok((
            sub(map, "givenName")
                .map(|v| opt_string(v, "name.givenName"))
                .transpose()?
                .flatten(),
            sub(map, "familyName")
                .map(|v| opt_string(v, "name.familyName"))
                .transpose()?
                .flatten(),
        )),
        _ => Err(ScimError::invalid_value("name must be an object")),
    }
}

/// A multi-valued attribute: an array, or null for none.
fn items<'a>(value: &'a Value, name: &str) -> Result<&'a [Value], ScimError> {
    match value {
        Value::Null => Ok(&[]),
        Value::Array(list) => Ok(list),
        _ => Err(ScimError::invalid_value(format!("{name} must be an array"))),
    }
}

fn read_emails(value: &Value) -> Result<Vec<ScimEmail>, ScimError> {
    let mut emails = Vec::new();
    for item in items(value, "emails")? {
        let map = item
            .as_object()
            .ok_or_else(|| ScimError::invalid_value("emails must hold objects"))?;
        let value = sub(map, "value")
            .map(|v| opt_string(v, "emails.value"))
            .transpose()?
            .flatten()
            .ok_or_else(|| ScimError::invalid_value("an email needs a value"))?;
        let kind = sub(map, "type")
            .map(|v| opt_string(v, "emails.type"))
            .transpose()?
            .flatten();
        let primary = match sub(map, "primary") {
            None | Some(Value::Null) => false,
            Some(v) => {
                as_bool(v).ok_or_else(|| ScimError::invalid_value("emails.primary must be a boolean"))?
            }
        };
        emails.push(ScimEmail { value, kind, primary });
    }
    if emails.iter().filter(|e| e.primary).count() > 1 {
        return Err(ScimError::invalid_value("at most one email may be primary"));
    }
    Ok(emails)
}

fn read_members(value: &Value) -> Result<Vec<MemberRef>, ScimError> {
    let mut members: Vec<MemberRef> = Vec::new();
    for item in items(value, "members")? {
        let map = item
            .as_object()
            .ok_or_else(|| ScimError::invalid_value("members must hold objects"))?;
        let value = sub(map, "value")
            .map(|v| opt_string(v, "members.value"))
            .transpose()?
            .flatten()
            .ok_or_else(|| ScimError::invalid_value("a member needs a value"))?;
        if !members.iter().any(|m| m.value == value) {
            members.push(MemberRef { value, display: None });
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_round_trips_through_json() {
        let user = ScimUser {
            id: "alice".into(),
            external_id: Some("E1".into()),
            user_name: "alice".into(),
            display_name: Some("Alice".into()),
            given_name: Some("Alice".into()),
            family_name: None,
            emails: vec![ScimEmail {
                value: "a@x.org".into(),
                kind: Some("work".into()),
                primary: true,
            }],
            active: false,
            groups: vec![GroupRef {
                value: "g1".into(),
                display: None,
            }],
            meta: Meta::default(),
        };
        let doc = Value::Object(user.to_json("https://h/scim/v2"));
        assert_eq!(doc["groups"][0]["$ref"], "https://h/scim/v2/Groups/g1");
        assert_eq!(doc["meta"]["location"], "https://h/scim/v2/Users/alice");
        let back = ScimUser::from_json(&doc, true).unwrap();
        assert_eq!(
            back,
            ScimUser {
                id: String::new(),
                groups: vec![],
                ..user
            }
        );
    }

    #[test]
    fn reading_ignores_case_read_only_and_unknown_attributes() {
        let doc = json!({"USERNAME": "bob", "Active": "False", "id": "x", "title": "Boss",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "IT"}});
        let user = ScimUser::from_json(&doc, true).unwrap();
        assert_eq!(
            (user.user_name.as_str(), user.active, user.id.as_str()),
            ("bob", false, "")
        );
    }

    #[test]
    fn reading_rejects_wrong_types_and_missing_required() {
        for doc in [
            json!({"userName": 3}),
            json!({}),
            json!({"userName": "a", "emails": {"value": "x"}}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "emails": [{"value": "x", "primary": true}, {"value": "y", "primary": true}]}),
            json!({"userName": "a", "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"]}),
            json!([]),
        ] {
            let err = ScimUser::from_json(&doc, true).unwrap_err();
            assert_eq!(err.status(), 400, "{doc}");
        }
    }

    #[test]
    fn group_members_are_deduplicated_and_counted() {
        let doc = json!({"displayName": "G", "members": [{"value": "a"}, {"value": "a", "display": "A"}, {"value": "b"}]});
        let group = ScimGroup::from_json(&doc).unwrap();
        assert_eq!(group.members.len(), 2);
        assert_eq!(member_count(&doc), 3);
    }

    #[test]
    fn ids_are_percent_encoded_in_locations() {
        assert_eq!(location("b", ResourceKind::Group, "a b/c"), "b/Groups/a%20b%2Fc");
    }
}
