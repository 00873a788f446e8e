//! IT policy: the settings an organisation makes its devices enforce.
//!
//! An admin writes partial [`PolicySettings`] at three scopes: the organisation default,
//! a directory group, a user. A device's effective [`Policy`] takes each setting from the
//! most specific scope that sets it: user, then groups, then default, then the built-in
//! value. When several of the user's groups set the same setting, the strictest value
//! wins (a longer passcode, a shorter lock delay, attachments off), as in common MDM
//! products, so joining a group can never weaken a device.
//!
//! The server signs each device's effective policy ([`PolicyBody`]); the device checks the
//! signature with the organisation key before applying it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AuditorKeys, DeviceId, GroupName, OrgId, Signable, UserName};

fn stricter_true(a: bool, b: bool) -> bool {
    a || b
}

fn stricter_false(a: bool, b: bool) -> bool {
    a && b
}

fn larger<T: Ord>(a: T, b: T) -> T {
    a.max(b)
}

fn smaller<T: Ord>(a: T, b: T) -> T {
    a.min(b)
}

/// For settings where 0 means "off": any limit is stricter than none.
fn smaller_nonzero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, other) | (other, 0) => other,
        (a, b) => a.min(b),
    }
}

fn any_bool(_: &bool) -> Result<(), String> {
    Ok(())
}

fn any_keys(_: &AuditorKeys) -> Result<(), String> {
    Ok(())
}

/// Requiring auditors is stricter than not; between two lists the first stays.
fn auditors_required(a: AuditorKeys, b: AuditorKeys) -> AuditorKeys {
    if a.is_empty() { b } else { a }
}

fn within<T: PartialOrd + fmt::Display + Copy>(low: T, high: T) -> impl Fn(&T) -> Result<(), String> {
    move |value| {
        if *value >= low && *value <= high {
            Ok(())
        } else {
            Err(format!("must be between {low} and {high}"))
        }
    }
}

macro_rules! policy_settings {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty = $default:expr, strictest: $strictest:expr, check: $check:expr;
    )*) => {
        /// Settings at one scope; `None` means "not set here". Unknown fields are refused.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct PolicySettings {
            $($(#[$doc])* pub $name: Option<$ty>,)*
        }

        /// The settings a device enforces, every one resolved.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Policy {
            $($(#[$doc])* pub $name: $ty,)*
        }

        impl Default for Policy {
            fn default() -> Self {
                Self { $($name: $default,)* }
            }
        }

        impl PolicySettings {
            /// Every setting's name, as written in policy files.
            pub const NAMES: &[&str] = &[$(stringify!($name),)*];

            /// Checks every value that is set; the error names the setting.
            pub fn validate(&self) -> Result<(), String> {
                $(
                    if let Some(value) = &self.$name {
                        ($check)(value).map_err(|why| format!("{}: {why}", stringify!($name)))?;
                    }
                )*
                Ok(())
            }

            /// Whether no setting is set.
            pub fn is_empty(&self) -> bool {
                $(self.$name.is_none())&&*
            }

            /// The settings that are set, as (name, value) text.
            pub fn entries(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $(
                    if let Some(value) = &self.$name {
                        out.push((stringify!($name), value.to_string()));
                    }
                )*
                out
            }
        }

        impl Policy {
            /// Resolves the effective policy from the scopes that apply to one user, and
            /// says where each setting came from.
            pub fn resolve(
                default: Option<&PolicySettings>,
                groups: &[(GroupName, PolicySettings)],
                user: Option<(&UserName, &PolicySettings)>,
            ) -> (Policy, Vec<SettingOrigin>) {
                let built_in = Policy::default();
                let mut policy = built_in.clone();
                let mut origins = Vec::new();
                $(
                    let mut chosen: Option<($ty, PolicySource)> = None;
                    if let Some((name, settings)) = user
                        && let Some(value) = settings.$name
                    {
                        chosen = Some((value, PolicySource::User(name.clone())));
                    }
                    if chosen.is_none() {
                        for (group, settings) in groups {
                            if let Some(value) = settings.$name {
                                chosen = Some(match chosen {
                                    None => (value, PolicySource::Group(group.clone())),
                                    Some((current, source)) => {
                                        let strictest = ($strictest)(current, value);
                                        if strictest == current {
                                            (current, source)
                                        } else {
                                            (strictest, PolicySource::Group(group.clone()))
                                        }
                                    }
                                });
                            }
                        }
                    }
                    if chosen.is_none()
                        && let Some(value) = default.and_then(|d| d.$name)
                    {
                        chosen = Some((value, PolicySource::Default));
                    }
                    let (value, source) = chosen.unwrap_or((built_in.$name, PolicySource::BuiltIn));
                    policy.$name = value;
                    origins.push(SettingOrigin {
                        setting: stringify!($name).to_owned(),
                        value: value.to_string(),
                        source,
                    });
                )*
                (policy, origins)
            }
        }
    };
}

policy_settings! {
    /// Whether the device's local data must be locked with a passcode.
    passcode_required: bool = false, strictest: stricter_true, check: any_bool;
    /// Shortest passcode accepted, in characters.
    passcode_min_length: u32 = 6, strictest: larger, check: within(4, 64);
    /// Seconds without input before an open app locks and asks for the passcode; 0 = never.
    inactivity_lock_seconds: u32 = 0, strictest: smaller_nonzero, check: within(0, 86_400);
    /// Wrong passcodes in a row after which the device erases its local profile; 0 = never.
    wipe_after_failed_passcodes: u32 = 0, strictest: smaller_nonzero, check: within(0, 100);
    /// Whether attachments may be sent and fetched.
    attachments_allowed: bool = true, strictest: stricter_false, check: any_bool;
    /// Largest attachment, in bytes (the server's own limit also applies).
    attachment_bytes_max: u64 = 100 * 1024 * 1024, strictest: smaller, check: within(1, 1u64 << 40);
    /// Days after which messages disappear from every device; 0 = keep.
    message_retention_days: u32 = 0, strictest: smaller_nonzero, check: within(0, 36_500);
    /// Most enrolled (not revoked) devices a user may have.
    devices_per_user_max: u32 = 10, strictest: smaller, check: within(1, 1000);
    /// Whether a user's new device must be approved from one of their existing devices
    /// before it gets any service.
    new_device_approval: bool = false, strictest: stricter_true, check: any_bool;
    /// Days of mail the connector pushes to devices when it first syncs a folder.
    mail_sync_days: u32 = 30, strictest: smaller, check: within(1, 3650);
    /// Bytes of a mail's text pushed at first; the rest is fetched on demand.
    mail_preview_bytes: u32 = 2048, strictest: smaller, check: within(256, 32_768);
    /// Whether a user's existing device sends a newly enrolled device of the same user the
    /// conversation history, end-to-end encrypted.
    history_transfer: bool = true, strictest: stricter_false, check: any_bool;
    /// Days of history sent to a user's new device.
    history_transfer_days: u32 = 365, strictest: smaller, check: within(1, 36_500);
    /// Most days of history a conversation may share with members added later
    /// (`group create --share-history`); 0 forbids sharing.
    group_history_sharing_max_days: u32 = 365, strictest: smaller, check: within(0, 36_500);
    /// Ed25519 keys (64 hex digits each, at most 4) of key-directory auditors (`redoubt kt
    /// audit`): when set, a device adds devices to conversations only while one of them has
    /// countersigned the directory within `kt_auditor_max_lag_s`.
    kt_auditor_keys: AuditorKeys = AuditorKeys::default(), strictest: auditors_required, check: any_keys;
    /// Oldest an auditor's countersignature may be, in seconds, when `kt_auditor_keys` is set.
    kt_auditor_max_lag_s: u32 = 86_400, strictest: smaller, check: within(1, 31_536_000);
}

/// Where a policy document applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyScope {
    /// Every user.
    Default,
    /// Members of a directory group.
    Group(GroupName),
    /// One user.
    User(UserName),
}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyScope::Default => f.write_str("default"),
            PolicyScope::Group(group) => write!(f, "group {group}"),
            PolicyScope::User(user) => write!(f, "user {user}"),
        }
    }
}

/// Where an effective setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicySource {
    BuiltIn,
    Default,
    Group(GroupName),
    User(UserName),
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::BuiltIn => f.write_str("built-in"),
            PolicySource::Default => f.write_str("default"),
            PolicySource::Group(group) => write!(f, "group {group}"),
            PolicySource::User(user) => write!(f, "user {user}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingOrigin {
    pub setting: String,
    pub value: String,
    pub source: PolicySource,
}

/// A device's effective policy as the organisation signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBody {
    pub org_id: OrgId,
    pub user: UserName,
    pub device_id: DeviceId,
    /// The organisation's policy version: it grows with every change that can alter any
    /// device's policy. A device acknowledges it; it never applies an older one.
    pub version: u64,
    pub issued_at_unix_s: i64,
    pub policy: Policy,
}

impl Signable for PolicyBody {
    const LABEL: &'static [u8] = b"redoubt/policy/v1\0";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).unwrap()
    }

    #[test]
    fn precedence_user_then_groups_then_default_then_built_in() {
        let alice = UserName::parse("alice").unwrap();
        let default = PolicySettings {
            passcode_required: Some(true),
            passcode_min_length: Some(8),
            devices_per_user_max: Some(3),
            ..Default::default()
        };
        let groups = vec![
            (
                group("finance"),
                PolicySettings {
                    passcode_min_length: Some(10),
                    attachments_allowed: Some(false),
                    inactivity_lock_seconds: Some(600),
                    ..Default::default()
                },
            ),
            (
                group("traders"),
                PolicySettings {
                    passcode_min_length: Some(12),
                    attachments_allowed: Some(true),
                    inactivity_lock_seconds: Some(0),
                    ..Default::default()
                },
            ),
        ];
        let user = PolicySettings {
            devices_per_user_max: Some(5),
            ..Default::default()
        };
        let (policy, origins) = Policy::resolve(Some(&default), &groups, Some((&alice, &user)));
        assert_eq!(policy.devices_per_user_max, 5);
        assert!(policy.passcode_required);
        assert_eq!(
            policy.passcode_min_length, 12,
            "strictest group wins over default"
        );
        assert!(!policy.attachments_allowed, "attachments off is stricter");
        assert_eq!(
            policy.inactivity_lock_seconds, 600,
            "a limit is stricter than none"
        );
        assert_eq!(policy.message_retention_days, 0);
        let source = |name: &str| origins.iter().find(|o| o.setting == name).unwrap().source.clone();
        assert_eq!(source("devices_per_user_max"), PolicySource::User(alice));
        assert_eq!(
            source("passcode_min_length"),
            PolicySource::Group(group("traders"))
        );
        assert_eq!(
            source("attachments_allowed"),
            PolicySource::Group(group("finance"))
        );
        assert_eq!(source("passcode_required"), PolicySource::Default);
        assert_eq!(source("message_retention_days"), PolicySource::BuiltIn);
        assert_eq!(origins.len(), PolicySettings::NAMES.len());
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = PolicySettings {
            passcode_min_length: Some(2),
            ..Default::default()
        };
        let error = bad.validate().unwrap_err();
        assert!(error.starts_with("passcode_min_length:"), "{error}");
        assert!(PolicySettings::default().validate().is_ok());
    }
}
