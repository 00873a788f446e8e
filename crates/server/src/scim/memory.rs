//! An in-memory [`ScimBackend`] for tests, applying the rules the real backend must: user
//! ids are Redoubt user names (1-64 of `a-z0-9._-`), `userName` unique, members must be
//! existing users, tokens compared by hash in constant time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{GroupRef, MemberRef, Meta, ScimBackend, ScimError, ScimGroup, ScimUser};

#[derive(Debug, Default)]
struct Data {
    users: BTreeMap<String, ScimUser>,
    groups: BTreeMap<String, ScimGroup>,
    /// Bumped by every write: versions and group ids.
    counter: u64,
}

/// Users, groups and tokens in memory.
#[derive(Debug)]
pub(crate) struct MemoryBackend {
    /// (token name, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
    data: Mutex<Data>,
}

/// The rule for Redoubt user names.
pub(crate) fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn now() -> String {
    crate::directory::rfc3339(crate::unix_now())
}

impl MemoryBackend {
    /// A backend accepting the given (name, token) pairs.
    pub(crate) fn new(tokens: &[(&str, &str)]) -> Self {
        Self {
            tokens: tokens
                .iter()
                .map(|(name, token)| ((*name).to_owned(), hash(token)))
                .collect(),
            data: Mutex::default(),
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Data {
    fn next_version(&mut self) -> String {
        self.counter += 1;
        format!("W/\"{}\"", self.counter)
    }

    /// A user as returned: with its groups.
    fn user_out(&self, user: &ScimUser) -> ScimUser {
        let groups = self
            .groups
            .values()
            .filter(|g| g.members.iter().any(|m| m.value == user.id))
            .map(|g| GroupRef {
                value: g.id.clone(),
                display: Some(g.display_name.clone()),
            })
            .collect();
        ScimUser {
            groups,
            ..user.clone()
        }
    }

    /// A group as returned: members' display names filled.
    fn group_out(&self, group: &ScimGroup) -> ScimGroup {
        let members = group
            .members
            .iter()
            .map(|m| MemberRef {
                value: m.value.clone(),
                display: self.users.get(&m.value).and_then(|u| u.display_name.clone()),
            })
            .collect();
        ScimGroup {
            members,
            ..group.clone()
        }
    }

    fn check_user_name(&self, name: &str, except_id: Option<&str>) -> Result<(), ScimError> {
        if !valid_user_name(name) {
            return Err(ScimError::invalid_value(
                "userName must be 1-64 characters of lowercase letters, digits, '.', '_' and '-'",
            ));
        }
        let taken = self
            .users
            .values()
            .any(|u| Some(u.id.as_str()) != except_id && (u.user_name == name || u.id == name));
        if taken {
            return Err(ScimError::uniqueness("userName is taken"));
        }
        Ok(())
    }

    fn check_members(&self, group: &ScimGroup) -> Result<(), ScimError> {
        match group.members.iter().find(|m| !self.users.contains_key(&m.value)) {
            Some(m) => Err(ScimError::invalid_value(format!(
                "member {} is not a user",
                m.value
            ))),
            None => Ok(()),
        }
    }

    fn check_version(current: &Meta, expected: &str) -> Result<(), ScimError> {
        if !expected.is_empty() && expected != current.version {
            return Err(ScimError::precondition_failed("the resource has changed"));
        }
        Ok(())
    }
}

impl ScimBackend for MemoryBackend {
    async fn authenticate(&self, bearer: &str) -> Option<String> {
        let presented = hash(bearer);
        let mut found = None;
        for (name, stored) in &self.tokens {
            if redoubt_proto::constant_time_eq(stored, &presented) {
                found = Some(name.clone());
            }
        }
        found
    }

    async fn list_users(&self) -> Result<Vec<ScimUser>, ScimError> {
        let data = self.data();
        Ok(data.users.values().map(|u| data.user_out(u)).collect())
    }

    async fn get_user(&self, id: &str) -> Result<Option<ScimUser>, ScimError> {
        let data = self.data();
        Ok(data.users.get(id).map(|u| data.user_out(u)))
    }

    async fn create_user(&self, _token: &str, user: ScimUser) -> Result<ScimUser, ScimError> {
        let mut data = self.data();
        data.check_user_name(&user.user_name, None)?;
        let created = now();
        let meta = Meta {
            created: created.clone(),
            last_modified: created,
            version: data.next_version(),
        };
        let user = ScimUser {
            id: user.user_name.clone(),
            groups: Vec::new(),
            meta,
            ..user
        };
        data.users.insert(user.id.clone(), user.clone());
        Ok(data.user_out(&user))
    }

    async fn replace_user(&self, _token: &str, id: &str, user: ScimUser) -> Result<ScimUser, ScimError> {
        let mut data = self.data();
        let current = data
            .users
            .get(id)
            .ok_or_else(|| ScimError::not_found("no such user"))?
            .meta
            .clone();
        Data::check_version(&current, &user.meta.version)?;
        data.check_user_name(&user.user_name, Some(id))?;
        let meta = Meta {
            created: current.created,
            last_modified: now(),
            version: data.next_version(),
        };
        let user = ScimUser {
            id: id.to_owned(),
            groups: Vec::new(),
            meta,
            ..user
        };
        data.users.insert(id.to_owned(), user.clone());
        Ok(data.user_out(&user))
    }

    async fn delete_user(&self, _token: &str, id: &str) -> Result<(), ScimError> {
        let mut data = self.data();
        data.users
            .remove(id)
            .ok_or_else(|| ScimError::not_found("no such user"))?;
        for group in data.groups.values_mut() {
            group.members.retain(|m| m.value != id);
        }
        Ok(())
    }

    async fn list_groups(&self) -> Result<Vec<ScimGroup>, ScimError> {
        let data = self.data();
        Ok(data.groups.values().map(|g| data.group_out(g)).collect())
    }

    async fn get_group(&self, id: &str) -> Result<Option<ScimGroup>, ScimError> {
        let data = self.data();
        Ok(data.groups.get(id).map(|g| data.group_out(g)))
    }

    async fn create_group(&self, _token: &str, group: ScimGroup) -> Result<ScimGroup, ScimError> {
        let mut data = self.data();
        data.check_members(&group)?;
        let version = data.next_version();
        let created = now();
        let id = format!("g{:08}", data.counter);
        let meta = Meta {
            created: created.clone(),
            last_modified: created,
            version,
        };
        let group = ScimGroup {
            id: id.clone(),
            meta,
            ..group
        };
        data.groups.insert(id, group.clone());
        Ok(data.group_out(&group))
    }

    async fn replace_group(&self, _token: &str, id: &str, group: ScimGroup) -> Result<ScimGroup, ScimError> {
        let mut data = self.data();
        let current = data
            .groups
            .get(id)
            .ok_or_else(|| ScimError::not_found("no such group"))?
            .meta
            .clone();
        Data::check_version(&current, &group.meta.version)?;
        data.check_members(&group)?;
        let meta = Meta {
            created: current.created,
            last_modified: now(),
            version: data.next_version(),
        };
        let group = ScimGroup {
            id: id.to_owned(),
            meta,
            ..group
        };
        data.groups.insert(id.to_owned(), group.clone());
        Ok(data.group_out(&group))
    }

    async fn delete_group(&self, _token: &str, id: &str) -> Result<(), ScimError> {
        let mut data = self.data();
        data.groups
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| ScimError::not_found("no such group"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names() {
        assert_eq!(crate::directory::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(crate::directory::rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert!(valid_user_name("a.b_c-1"));
        assert!(!valid_user_name("Alice"));
        assert!(!valid_user_name("a@b"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name(&"a".repeat(65)));
    }
}
