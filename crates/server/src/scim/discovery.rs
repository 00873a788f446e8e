//! The discovery documents (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes` and
//! `/Schemas`, all rendered from the table in [`super::schema`].

use serde_json::{Map, Value, json};

use super::schema::{Attr, Kind, Mutability, ResourceKind, Returned};

const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// What the service supports. `count_max` is the page size limit, published as
/// `filter.maxResults`.
pub(crate) fn service_provider_config(base_url: &str, count_max: usize) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": count_max},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A provisioning token issued by a Redoubt administrator, sent as \
                            'Authorization: Bearer <token>'.",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base_url}/ServiceProviderConfig"),
        },
    })
}

/// The resource type whose `id` is `id` (case-sensitive, as ids are).
pub(crate) fn resource_type_by_id(id: &str) -> Option<ResourceKind> {
    ResourceKind::ALL.into_iter().find(|k| k.name() == id)
}

/// One `ResourceType` document.
pub(crate) fn resource_type(base_url: &str, kind: ResourceKind) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": format!("/{}", kind.endpoint()),
        "description": kind.description(),
        "schema": kind.schema(),
        "schemaExtensions": [],
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base_url}/ResourceTypes/{}", kind.name()),
        },
    })
}

/// The resource type whose schema is `urn` (case-insensitive, as URNs are).
pub(crate) fn schema_by_id(urn: &str) -> Option<ResourceKind> {
    ResourceKind::ALL
        .into_iter()
        .find(|k| k.schema().eq_ignore_ascii_case(urn))
}

/// One `Schema` document: exactly the attributes Redoubt keeps.
pub(crate) fn schema(base_url: &str, kind: ResourceKind) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": kind.schema(),
        "name": kind.name(),
        "description": kind.description(),
        "attributes": kind.attrs().iter().map(attribute).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Schema",
            "location": format!("{base_url}/Schemas/{}", kind.schema()),
        },
    })
}

fn attribute(attr: &Attr) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), attr.name.into());
    let kind = match attr.kind {
        Kind::String => "string",
        Kind::Boolean => "boolean",
        Kind::DateTime => "dateTime",
        Kind::Reference => "reference",
        Kind::Complex => "complex",
    };
    map.insert("type".into(), kind.into());
    map.insert("multiValued".into(), attr.multi.into());
    map.insert("description".into(), attr.description.into());
    map.insert("required".into(), attr.required.into());
    if attr.kind != Kind::Complex && attr.kind != Kind::Boolean {
        map.insert("caseExact".into(), attr.case_exact.into());
    }
    let mutability = match attr.mutability {
        Mutability::ReadOnly => "readOnly",
        Mutability::ReadWrite => "readWrite",
        Mutability::Immutable => "immutable",
    };
    map.insert("mutability".into(), mutability.into());
    let returned = match attr.returned {
        Returned::Always => "always",
        Returned::Default => "default",
    };
    map.insert("returned".into(), returned.into());
    if attr.kind != Kind::Complex {
        map.insert(
            "uniqueness".into(),
            if attr.unique { "server" } else { "none" }.into(),
        );
    }
    if !attr.canonical.is_empty() {
        map.insert("canonicalValues".into(), json!(attr.canonical));
    }
    if attr.kind == Kind::Reference {
        map.insert("referenceTypes".into(), json!(attr.reference_types));
    }
    if attr.kind == Kind::Complex {
        map.insert(
            "subAttributes".into(),
            attr.sub.iter().map(attribute).collect::<Vec<_>>().into(),
        );
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_schema_lists_exactly_the_supported_attributes() {
        let doc = schema("https://h/scim/v2", ResourceKind::User);
        let names: Vec<&str> = doc["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["userName", "name", "displayName", "emails", "active", "groups"]
        );
        let groups = &doc["attributes"][5];
        assert_eq!(groups["mutability"], "readOnly");
        assert_eq!(groups["subAttributes"][1]["referenceTypes"], json!(["Group"]));
        assert_eq!(doc["attributes"][0]["uniqueness"], "server");
        assert_eq!(doc["attributes"][0]["caseExact"], false);
    }

    #[test]
    fn lookups() {
        assert_eq!(
            schema_by_id("URN:ietf:params:scim:schemas:core:2.0:group"),
            Some(ResourceKind::Group)
        );
        assert_eq!(resource_type_by_id("User"), Some(ResourceKind::User));
        assert_eq!(resource_type_by_id("user"), None);
    }
}
