//! SCIM 2.0 provisioning (RFC 7643 schema, RFC 7644 protocol), so an identity provider
//! (Entra ID, Okta, Keycloak) can create, update, deactivate and delete Redoubt users and
//! groups.
//!
//! This module is the HTTP layer only: [`router`] serves the SCIM endpoints over any
//! [`ScimBackend`], which owns storage, token checks and the rules of Redoubt names. It is
//! meant to be nested at `/scim/v2`, with [`ScimConfig::base_url`] the public URL of that
//! prefix.
//!
//! Code map (dependencies point down):
//! - `router`: endpoints, authentication, rate limits, body limits, ETags.
//! - `patch`, `query`, `discovery`: PATCH operations; filter/pagination/projection
//!   parameters; the discovery documents.
//! - `resource`: [`ScimUser`] and [`ScimGroup`] and their JSON forms.
//! - `filter`: the filter and path grammar and its evaluation.
//! - `schema`: the one table of supported attributes, which discovery publishes and
//!   everything else reads; `error`: [`ScimError`] and its wire form. Rate limits are the
//!   server's token buckets (`crate::rate_limit`), keyed by token name.
//!
//! Invariants:
//! - Every endpoint, discovery included, requires `Authorization: Bearer`; nothing is
//!   served before the backend has named the token.
//! - Every error, 401/404/405/413/429 included, is a SCIM `Error` body with
//!   `Content-Type: application/scim+json`.
//! - Tokens and request bodies are never logged; logs name the token by its name.
//! - Read-modify-write (PATCH, and PUT/DELETE with `If-Match`) runs under one lock per
//!   router, so two PATCHes of one group through one server do not lose a member. Across
//!   the nodes of a cluster the backend must compare `meta.version` (see
//!   [`ScimBackend::replace_user`]) to get the same guarantee.

mod discovery;
mod error;
mod filter;
#[cfg(test)]
pub(crate) mod memory;
mod patch;
mod query;
mod resource;
mod router;
mod schema;
#[cfg(test)]
mod tests;

use std::future::Future;

pub(crate) use error::ScimError;
pub(crate) use resource::{GroupRef, MemberRef, Meta, ScimEmail, ScimGroup, ScimUser};
pub(crate) use router::router;

/// How the SCIM endpoints are served.
#[derive(Debug, Clone)]
pub(crate) struct ScimConfig {
    /// The public URL the router is nested at, without trailing slash, e.g.
    /// `https://chat.example.org:8443/scim/v2`. `meta.location`, `Location` headers and
    /// `$ref` values are built from it.
    pub base_url: String,
    pub limits: ScimLimits,
}

/// Bounds on what one client may ask. The defaults suit Entra ID, whose provisioning
/// service sends bursts of a few hundred requests and expects at least 25 requests per
/// second to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimLimits {
    /// Largest request body; more is answered 413. Default 1 MiB.
    pub request_bytes_max: usize,
    /// Largest page of a list or search (`count`), published as `filter.maxResults`.
    /// Default 200.
    pub count_max: usize,
    /// Most member values one request may name: in a POST/PUT body's `members`, or summed
    /// over a PATCH's operations on `members`; more is answered 413. A group may hold
    /// more; it is filled in several requests. Default 1,000.
    pub members_per_request_max: usize,
    /// Requests per second each token may make on average; more is answered 429 with
    /// `Retry-After`. Default 50.
    pub token_requests_per_second: u32,
    /// Requests a token may make at once after being idle. Default 1,000.
    pub token_requests_burst: u32,
    /// Failed authentications per second, all clients together, before failures are
    /// answered 429 instead of 401. Default 2.
    pub failed_auth_per_second: u32,
    /// Failed authentications at once after a quiet period. Default 20.
    pub failed_auth_burst: u32,
}

impl Default for ScimLimits {
    fn default() -> Self {
        Self {
            request_bytes_max: 1024 * 1024,
            count_max: 200,
            members_per_request_max: 1_000,
            token_requests_per_second: 50,
            token_requests_burst: 1_000,
            failed_auth_per_second: 2,
            failed_auth_burst: 20,
        }
    }
}

/// Storage and authentication behind the SCIM endpoints.
///
/// What the layer passes in has been parsed and checked against the SCIM schema (types,
/// required attributes, at most one primary email, no duplicate members); the backend
/// checks what only it can know and answers with [`ScimError`]s the client will see:
/// - 400 `invalidValue` ([`ScimError::invalid_value`]) for a `userName` that is not a
///   Redoubt user name (1-64 characters of `a-z0-9._-`) or a member that is not a user;
/// - 409 `uniqueness` ([`ScimError::uniqueness`]) for a `userName` already taken;
/// - 404 ([`ScimError::not_found`]) for an `id` that does not exist;
/// - 412 ([`ScimError::precondition_failed`]) when `meta.version` does not match, if the
///   backend compares it;
/// - 500 ([`ScimError::internal`]) when storage fails, after logging the cause.
///
/// In what the layer passes in, `id` (except as the `id` argument), `meta.created`,
/// `meta.last_modified`, `ScimUser::groups` and `MemberRef::display` are empty and to be
/// ignored: the backend owns them. What it returns must be complete: `meta` filled, a
/// user's `groups` and each member's `display` as the backend knows them.
///
/// `token` is the name [`ScimBackend::authenticate`] returned, for the audit log.
pub(crate) trait ScimBackend: Send + Sync + 'static {
    /// Name of the token if `bearer` is a valid, unrevoked token. Compare hashes of the
    /// token in constant time; keep it cheap (no password hashing), as it runs before any
    /// rate limit can tell clients apart.
    fn authenticate(&self, bearer: &str) -> impl Future<Output = Option<String>> + Send;

    /// Every user. The layer filters, orders by `id` and pages.
    fn list_users(&self) -> impl Future<Output = Result<Vec<ScimUser>, ScimError>> + Send;
    fn get_user(&self, id: &str) -> impl Future<Output = Result<Option<ScimUser>, ScimError>> + Send;
    /// Creates a user and chooses its `id` (the Redoubt user name).
    fn create_user(
        &self,
        token: &str,
        user: ScimUser,
    ) -> impl Future<Output = Result<ScimUser, ScimError>> + Send;
    /// Replaces every writable attribute of user `id` (PUT, and PATCH after the layer has
    /// applied the operations). `user.meta.version` is the version the change was computed
    /// from, or empty when the client gave none: a backend that can compare-and-swap
    /// answers 412 when it is no longer current. `userName` may change (the tester and
    /// some identity providers rename users); `id` does not.
    fn replace_user(
        &self,
        token: &str,
        id: &str,
        user: ScimUser,
    ) -> impl Future<Output = Result<ScimUser, ScimError>> + Send;
    /// Deletes user `id`, and its memberships.
    fn delete_user(&self, token: &str, id: &str) -> impl Future<Output = Result<(), ScimError>> + Send;

    /// Every group. The layer filters, orders by `id` and pages.
    fn list_groups(&self) -> impl Future<Output = Result<Vec<ScimGroup>, ScimError>> + Send;
    fn get_group(&self, id: &str) -> impl Future<Output = Result<Option<ScimGroup>, ScimError>> + Send;
    /// Creates a group and chooses its `id`.
    fn create_group(
        &self,
        token: &str,
        group: ScimGroup,
    ) -> impl Future<Output = Result<ScimGroup, ScimError>> + Send;
    /// Replaces a group's writable attributes, members included (all of them: the backend
    /// diffs if it stores memberships one by one). `meta.version` as for users.
    fn replace_group(
        &self,
        token: &str,
        id: &str,
        group: ScimGroup,
    ) -> impl Future<Output = Result<ScimGroup, ScimError>> + Send;
    fn delete_group(&self, token: &str, id: &str) -> impl Future<Output = Result<(), ScimError>> + Send;
}
