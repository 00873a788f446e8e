//! The attributes Redoubt supports, as one table (RFC 7643 §7). Discovery publishes it,
//! filters read `caseExact` from it, PATCH checks paths and mutability against it and
//! `attributes`/`excludedAttributes` resolve names through it; so what is advertised is
//! exactly what is served.

/// The core User schema.
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema.
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension: not stored, its attributes are accepted and ignored.
pub(crate) const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// An attribute's data type (RFC 7643 §2.3); only the ones Redoubt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Boolean,
    DateTime,
    Reference,
    Complex,
}

/// When a client may set an attribute (RFC 7643 §7, `mutability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
}

/// When an attribute is returned (RFC 7643 §7, `returned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returned {
    Always,
    Default,
}

/// One attribute or sub-attribute definition.
#[derive(Debug)]
pub(crate) struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    /// `uniqueness: server` when true, `none` otherwise.
    pub unique: bool,
    pub canonical: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub: &'static [Attr],
    pub description: &'static str,
}

impl Attr {
    const fn new(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Self {
            name,
            kind,
            multi: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            unique: false,
            canonical: &[],
            reference_types: &[],
            sub: &[],
            description,
        }
    }
    const fn string(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::String, description)
    }
    const fn complex(name: &'static str, sub: &'static [Attr], description: &'static str) -> Self {
        Self {
            sub,
            ..Self::new(name, Kind::Complex, description)
        }
    }
    const fn multi(self) -> Self {
        Self { multi: true, ..self }
    }
    const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }
    const fn case_exact(self) -> Self {
        Self {
            case_exact: true,
            ..self
        }
    }
    const fn read_only(self) -> Self {
        Self {
            mutability: Mutability::ReadOnly,
            ..self
        }
    }
    const fn immutable(self) -> Self {
        Self {
            mutability: Mutability::Immutable,
            ..self
        }
    }
    const fn always(self) -> Self {
        Self {
            returned: Returned::Always,
            ..self
        }
    }
    const fn unique(self) -> Self {
        Self { unique: true, ..self }
    }
    const fn canonical(self, canonical: &'static [&'static str]) -> Self {
        Self { canonical, ..self }
    }
    const fn references(self, reference_types: &'static [&'static str]) -> Self {
        Self {
            reference_types,
            case_exact: true,
            ..self
        }
    }

    /// The sub-attribute `name`, case-insensitively (RFC 7643 §2.1).
    pub(crate) fn sub_attr(&self, name: &str) -> Option<&'static Attr> {
        find(self.sub, name)
    }
}

/// Finds `name` among `attrs`, case-insensitively.
pub(crate) fn find(attrs: &'static [Attr], name: &str) -> Option<&'static Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

const META: &[Attr] = &[
    Attr::string("resourceType", "The name of the resource type.")
        .read_only()
        .case_exact(),
    Attr::new("created", Kind::DateTime, "When the resource was added.").read_only(),
    Attr::new(
        "lastModified",
        Kind::DateTime,
        "When the resource was last changed.",
    )
    .read_only(),
    Attr::new("location", Kind::Reference, "The URI of the resource.")
        .read_only()
        .references(&["uri"]),
    Attr::string("version", "The weak entity tag of the resource.")
        .read_only()
        .case_exact(),
];

/// Attributes every resource has (RFC 7643 §3.1). Not published in a schema's attribute
/// list, as the RFC defines them outside any schema.
pub(crate) const COMMON: &[Attr] = &[
    Attr::string("id", "The service provider's identifier of the resource.")
        .read_only()
        .always()
        .case_exact()
        .unique(),
    Attr::string(
        "externalId",
        "The provisioning client's identifier of the resource.",
    )
    .case_exact(),
    Attr::complex("meta", META, "Resource metadata.").read_only(),
];

const NAME: &[Attr] = &[
    Attr::string("givenName", "The given name of the User."),
    Attr::string("familyName", "The family name of the User."),
];

const EMAIL: &[Attr] = &[
    Attr::string("value", "The email address."),
    Attr::string("type", "A label for the address.").canonical(&["work", "home", "other"]),
    Attr::new(
        "primary",
        Kind::Boolean,
        "Whether this is the User's primary address.",
    ),
];

const USER_GROUP: &[Attr] = &[
    Attr::string("value", "The id of the Group.")
        .read_only()
        .case_exact(),
    Attr::new("$ref", Kind::Reference, "The URI of the Group.")
        .read_only()
        .references(&["Group"]),
    Attr::string("display", "The Group's displayName.").read_only(),
];

/// The User attributes Redoubt supports (RFC 7643 §4.1, a subset).
pub(crate) const USER: &[Attr] = &[
    Attr::string(
        "userName",
        "The Redoubt user name: 1-64 characters of a-z, 0-9, '.', '_' and '-'.",
    )
    .required()
    .unique(),
    Attr::complex("name", NAME, "The components of the User's name."),
    Attr::string("displayName", "The name of the User, suitable for display."),
    Attr::complex("emails", EMAIL, "Email addresses for the User.").multi(),
    Attr::new(
        "active",
        Kind::Boolean,
        "Whether the User may sign in. Always has a value: true when a creation request omits it.",
    )
    .required(),
    Attr::complex("groups", USER_GROUP, "The Groups the User is a direct member of.")
        .multi()
        .read_only(),
];

const MEMBER: &[Attr] = &[
    Attr::string("value", "The id of the member User.")
        .immutable()
        .case_exact(),
    Attr::new("$ref", Kind::Reference, "The URI of the member User.")
        .immutable()
        .references(&["User"]),
    Attr::string("display", "The member's displayName.").read_only(),
];

/// The Group attributes Redoubt supports (RFC 7643 §4.2). Members are Users only.
pub(crate) const GROUP: &[Attr] = &[
    Attr::string("displayName", "The name of the Group.").required(),
    Attr::complex("members", MEMBER, "The Users that are members of the Group.").multi(),
];

/// Attributes of RFC 7643 that Redoubt does not keep: a PATCH naming one changes nothing
/// instead of failing, so an identity provider's default attribute mappings (Entra sends
/// `title`, `phoneNumbers`, `addresses`, ... unless told otherwise) do not stop
/// provisioning. Bodies of POST and PUT ignore any attribute not in [`USER`]/[`GROUP`].
const IGNORED_USER: &[&str] = &[
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "password",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// The two resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub(crate) const ALL: [Self; 2] = [Self::User, Self::Group];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    /// The path segment of the collection, without slash.
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Self::User => "Users",
            Self::Group => "Groups",
        }
    }

    pub(crate) fn schema(self) -> &'static str {
        match self {
            Self::User => USER_SCHEMA,
            Self::Group => GROUP_SCHEMA,
        }
    }

    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::User => "A Redoubt user account.",
            Self::Group => "A group of Redoubt users.",
        }
    }

    /// The attributes the schema publishes.
    pub(crate) fn attrs(self) -> &'static [Attr] {
        match self {
            Self::User => USER,
            Self::Group => GROUP,
        }
    }

    /// A top-level attribute, common ones included, case-insensitively.
    pub(crate) fn attr(self, name: &str) -> Option<&'static Attr> {
        find(self.attrs(), name).or_else(|| find(COMMON, name))
    }

    /// Whether `name` is an RFC 7643 attribute of this type that Redoubt does not keep.
    pub(crate) fn is_ignored(self, name: &str) -> bool {
        match self {
            Self::User => IGNORED_USER.iter().any(|n| n.eq_ignore_ascii_case(name)),
            Self::Group => false,
        }
    }

    /// Whether `urn` names an extension whose attributes are accepted and ignored.
    pub(crate) fn is_ignored_extension(self, urn: &str) -> bool {
        self == Self::User && urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        assert_eq!(
            ResourceKind::User.attr("USERNAME").map(|a| a.name),
            Some("userName")
        );
        assert_eq!(
            ResourceKind::User.attr("externalid").map(|a| a.name),
            Some("externalId")
        );
        let emails = ResourceKind::User.attr("Emails").unwrap();
        assert_eq!(emails.sub_attr("VALUE").map(|a| a.name), Some("value"));
        assert!(ResourceKind::Group.attr("userName").is_none());
        assert!(ResourceKind::User.is_ignored("phonenumbers"));
        assert!(!ResourceKind::Group.is_ignored("title"));
    }
}
