//! Identifiers and names, valid by construction: every constructor and the decoder check
//! the same rules, so code holding one never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// Why a name or identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error(
        "user name must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    UserName,
    #[error(
        "group name must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    GroupName,
    #[error("{what} must be 1 to {max} characters with no control characters")]
    Text { what: &'static str, max: usize },
    #[error("identifier must be {expected} hexadecimal digits")]
    Hex { expected: usize },
}

/// A user's login name: `alice`, `j.smith`, `ops-bot`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    pub const BYTES_MAX: usize = 64;

    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid_first = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_rest = text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if valid_first && valid_rest && text.len() <= Self::BYTES_MAX {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdError::UserName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(&value)
    }
}

impl From<UserName> for String {
    fn from(value: UserName) -> Self {
        value.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A directory group of users (`finance`, `field-staff`): a scope for policies. Not an
/// MLS conversation. Same rules as [`UserName`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        UserName::parse(text)
            .map(|name| Self(name.0))
            .map_err(|_| IdError::GroupName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GroupName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(&value)
    }
}

impl From<GroupName> for String {
    fn from(value: GroupName) -> Self {
        value.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

fn check_text(text: &str, what: &'static str, max: usize) -> Result<(), IdError> {
    let chars = text.chars().count();
    if chars == 0 || chars > max || text.chars().any(char::is_control) || text.trim() != text {
        return Err(IdError::Text { what, max });
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const CHARS_MAX: usize = $max;

            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_text(text, $what, $max)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                check_text(&value, $what, $max)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

text_type!(
    /// A person's display name: "Alice Liddell".
    DisplayName, "display name", 128
);
text_type!(
    /// A device's human label: "admin laptop", "Alice's phone".
    DeviceName, "device name", 64
);

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $bytes:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Bytes<$bytes>);

        impl $name {
            /// Parses the hexadecimal form that `Display` prints.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                Bytes::from_hex(text)
                    .map(Self)
                    .ok_or(IdError::Hex { expected: 2 * $bytes })
            }

            pub fn as_bytes(&self) -> &[u8; $bytes] {
                &self.0 .0
            }
        }

        impl From<[u8; $bytes]> for $name {
            fn from(value: [u8; $bytes]) -> Self {
                Self(Bytes(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.to_hex())
            }
        }
    };
}

hex_id!(
    /// The organisation's identifier, chosen at random when the server is initialised.
    OrgId, 16
);
hex_id!(
    /// A device's identifier, chosen at random by the server at enrolment.
    DeviceId, 16
);
hex_id!(
    /// An MLS group's id, chosen at random by the device that creates the group.
    GroupId, 32
);
hex_id!(
    /// An attachment's encrypted blob, named at random by the server.
    BlobId, 16
);
hex_id!(
    /// Names one activation code so the server can count wrong secrets against it. Not secret.
    ActivationCodeId, 8
);

impl DeviceId {
    /// The sender of log entries the organisation itself writes (its external proposals to
    /// remove a device). No enrolled device has this id.
    pub const ORGANISATION: DeviceId = DeviceId(Bytes([0; 16]));
}

/// What a user may do beyond using their own devices. Roles live on the server and are
/// checked on every request; the copy in a certificate is informative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Role {
    /// Everything: users, devices, groups, policy, roles and the audit log.
    Admin,
    /// Day-to-day support: add users and devices, list them, lock, unlock and wipe devices.
    /// Not policy, roles, groups or revocation.
    Helpdesk,
    /// Reads and verifies the audit log; changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: &[Role] = &[Role::Admin, Role::Helpdesk, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Helpdesk => "helpdesk",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "helpdesk" => Some(Role::Helpdesk),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for good in ["alice", "j.smith", "ops-bot", "a", "0day", "x_y"] {
            assert!(UserName::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Alice", "-lead", ".dot", "al ice", "ålice", long.as_str()] {
            assert_eq!(UserName::parse(bad), Err(IdError::UserName), "{bad}");
        }
    }

    #[test]
    fn text_names() {
        assert!(DisplayName::parse("Alice Liddell").is_ok());
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse(" padded").is_err());
        assert!(DisplayName::parse("bell\u{7}").is_err());
        assert!(DeviceName::parse(&"x".repeat(64)).is_ok());
        assert!(DeviceName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn hex_ids_round_trip() {
        let id = DeviceId::from([0xab; 16]);
        assert_eq!(DeviceId::parse(&id.to_string()), Ok(id));
        assert!(DeviceId::parse("abc").is_err());
    }
}
