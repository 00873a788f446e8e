//! The SCIM endpoints (RFC 7644 §3, §4) over a [`ScimBackend`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, post};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::discovery;
use super::error::{SCIM_JSON, ScimError, ScimType};
use super::filter::Scope;
use super::patch::PatchRequest;
use super::query::{ListParams, Projection, list_all, parse_query};
use super::resource::{Meta, ScimGroup, ScimUser, location, member_count};
use super::schema::ResourceKind;
use super::{ScimBackend, ScimConfig};
use crate::rate_limit::RateLimiter;

/// The longest bearer token looked at; longer ones fail authentication unread.
const BEARER_BYTES_MAX: usize = 1024;

struct Shared<B> {
    backend: Arc<B>,
    config: ScimConfig,
    per_token: RateLimiter<String>,
    failed_auth: RateLimiter<String>,
    /// Held across every read-modify-write, so concurrent PATCHes do not lose updates.
    write_lock: tokio::sync::Mutex<()>,
}

type St<B> = State<Arc<Shared<B>>>;

/// The authenticated client: the token's name, for the backend's audit log.
#[derive(Debug, Clone)]
struct Caller {
    token: String,
}

/// The SCIM endpoints, to be nested at `/scim/v2` (`config.base_url` is that URL).
pub(crate) fn router<B: ScimBackend>(backend: Arc<B>, config: ScimConfig) -> Router {
    let limits = &config.limits;
    let shared = Arc::new(Shared {
        backend,
        per_token: RateLimiter::new(limits.token_requests_per_second, limits.token_requests_burst),
        failed_auth: RateLimiter::new(limits.failed_auth_per_second, limits.failed_auth_burst),
        config,
        write_lock: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config::<B>))
        .route("/ResourceTypes", get(resource_types::<B>))
        .route("/ResourceTypes/{id}", get(resource_type::<B>))
        .route("/Schemas", get(schemas::<B>))
        .route("/Schemas/{id}", get(schema::<B>))
        .route("/Users", collection::<B, ScimUser>())
        .route("/Users/.search", search::<B>(&[ResourceKind::User]))
        .route("/Users/{id}", member::<B, ScimUser>())
        .route("/Groups", collection::<B, ScimGroup>())
        .route("/Groups/.search", search::<B>(&[ResourceKind::Group]))
        .route("/Groups/{id}", member::<B, ScimGroup>())
        .route("/.search", search::<B>(&ResourceKind::ALL))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate::<B>))
        .with_state(shared)
}

async fn not_found() -> ScimError {
    ScimError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(405, None, "method not allowed on this endpoint")
}

/// Runs before every endpoint: a valid token within its rate, or 401/429.
async fn authenticate<B: ScimBackend>(State(s): St<B>, mut request: Request, next: Next) -> Response {
    let bearer = bearer_token(request.headers());
    let name = match &bearer {
        Some(token) => s.backend.authenticate(token).await,
        None => None,
    };
    let now = Instant::now();
    let Some(name) = name else {
        if let Err(retry_s) = s.failed_auth.take("", now) {
            return ScimError::too_many_requests(retry_s).into_response();
        }
        tracing::info!(token_presented = bearer.is_some(), "scim: authentication failed");
        return ScimError::new(401, None, "a valid bearer token is required").into_response();
    };
    if let Err(retry_s) = s.per_token.take(name.as_str(), now) {
        tracing::warn!(token = %name, "scim: rate limited");
        return ScimError::too_many_requests(retry_s).into_response();
    }
    request.extensions_mut().insert(Caller { token: name });
    next.run(request).await
}

fn bearer_token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= BEARER_BYTES_MAX)
        .then(|| Zeroizing::new(token.to_owned()))
}

fn scim_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

// Discovery.

async fn service_provider_config<B: ScimBackend>(State(s): St<B>) -> Response {
    let body = discovery::service_provider_config(&s.config.base_url, s.config.limits.count_max);
    scim_response(StatusCode::OK, &body)
}

async fn resource_types<B: ScimBackend>(State(s): St<B>) -> Response {
    let all = ResourceKind::ALL.map(|k| discovery::resource_type(&s.config.base_url, k));
    scim_response(StatusCode::OK, &list_all(all.into()))
}

async fn resource_type<B: ScimBackend>(
    State(s): St<B>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let kind =
        discovery::resource_type_by_id(&id).ok_or_else(|| ScimError::not_found("no such resource type"))?;
    Ok(scim_response(
        StatusCode::OK,
        &discovery::resource_type(&s.config.base_url, kind),
    ))
}

async fn schemas<B: ScimBackend>(State(s): St<B>) -> Response {
    let all = ResourceKind::ALL.map(|k| discovery::schema(&s.config.base_url, k));
    scim_response(StatusCode::OK, &list_all(all.into()))
}

async fn schema<B: ScimBackend>(State(s): St<B>, Path(id): Path<String>) -> Result<Response, ScimError> {
    let kind = discovery::schema_by_id(&id).ok_or_else(|| ScimError::not_found("no such schema"))?;
    Ok(scim_response(
        StatusCode::OK,
        &discovery::schema(&s.config.base_url, kind),
    ))
}

// Resources: users and groups behind one interface.

/// What the endpoints need of a resource type: its kind, its backend calls and its JSON,
/// so one handler serves users and groups alike.
trait Resource: Sized + Send + Sync + 'static {
    const KIND: ResourceKind;

    fn id(&self) -> &str;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    fn to_json(&self, base_url: &str) -> Map<String, Value>;
    /// Reads a request body; what it leaves unset that the client cannot clear (a user's
    /// `active`) is kept from `current`.
    fn parse(doc: &Value, current: Option<&Self>) -> Result<Self, ScimError>;

    fn list<B: ScimBackend>(backend: &B) -> impl Future<Output = Result<Vec<Self>, ScimError>> + Send;
    fn get<B: ScimBackend>(
        backend: &B,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, ScimError>> + Send;
    fn create<B: ScimBackend>(
        backend: &B,
        token: &str,
        new: Self,
    ) -> impl Future<Output = Result<Self, ScimError>> + Send;
    fn replace<B: ScimBackend>(
        backend: &B,
        token: &str,
        id: &str,
        new: Self,
    ) -> impl Future<Output = Result<Self, ScimError>> + Send;
    fn delete<B: ScimBackend>(
        backend: &B,
        token: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), ScimError>> + Send;
}

/// The parts of a [`Resource`] impl that differ only in names: the fields every resource
/// has and the backend methods of its kind.
macro_rules! resource_calls {
    ($list:ident, $get:ident, $create:ident, $replace:ident, $delete:ident) => {
        fn id(&self) -> &str {
            &self.id
        }
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn meta_mut(&mut self) -> &mut Meta {
            &mut self.meta
        }
        fn to_json(&self, base_url: &str) -> Map<String, Value> {
            // The inherent method: inherent items win over trait items in a path.
            Self::to_json(self, base_url)
        }

        fn list<B: ScimBackend>(backend: &B) -> impl Future<Output = Result<Vec<Self>, ScimError>> + Send {
            backend.$list()
        }
        fn get<B: ScimBackend>(
            backend: &B,
            id: &str,
        ) -> impl Future<Output = Result<Option<Self>, ScimError>> + Send {
            backend.$get(id)
        }
        fn create<B: ScimBackend>(
            backend: &B,
            token: &str,
            new: Self,
        ) -> impl Future<Output = Result<Self, ScimError>> + Send {
            backend.$create(token, new)
        }
        fn replace<B: ScimBackend>(
            backend: &B,
            token: &str,
            id: &str,
            new: Self,
        ) -> impl Future<Output = Result<Self, ScimError>> + Send {
            backend.$replace(token, id, new)
        }
        fn delete<B: ScimBackend>(
            backend: &B,
            token: &str,
            id: &str,
        ) -> impl Future<Output = Result<(), ScimError>> + Send {
            backend.$delete(token, id)
        }
    };
}

impl Resource for ScimUser {
    const KIND: ResourceKind = ResourceKind::User;

    resource_calls!(list_users, get_user, create_user, replace_user, delete_user);

    fn parse(doc: &Value, current: Option<&Self>) -> Result<Self, ScimError> {
        ScimUser::from_json(doc, current.is_none_or(|u| u.active))
    }
}

impl Resource for ScimGroup {
    const KIND: ResourceKind = ResourceKind::Group;

    resource_calls!(list_groups, get_group, create_group, replace_group, delete_group);

    fn parse(doc: &Value, _current: Option<&Self>) -> Result<Self, ScimError> {
        ScimGroup::from_json(doc)
    }
}

/// Every resource of `R` as JSON, ordered by `id`.
async fn documents<B: ScimBackend, R: Resource>(s: &Shared<B>) -> Result<Vec<Map<String, Value>>, ScimError> {
    let mut all = R::list(s.backend.as_ref()).await?;
    all.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(all.iter().map(|r| r.to_json(&s.config.base_url)).collect())
}

async fn fetch<B: ScimBackend, R: Resource>(backend: &B, id: &str) -> Result<R, ScimError> {
    R::get(backend, id)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no {} with this id", R::KIND.name())))
}

/// A resource as a response: projected, with its `ETag`.
fn resource_response<B: ScimBackend, R: Resource>(
    s: &Shared<B>,
    status: StatusCode,
    resource: &R,
    projection: &Projection,
) -> Response {
    let doc = projection.apply(resource.to_json(&s.config.base_url), R::KIND);
    let mut response = scim_response(status, &Value::Object(doc));
    let version = &resource.meta().version;
    if !version.is_empty() {
        insert_etag(&mut response, version);
    }
    response
}

fn insert_etag(response: &mut Response, version: &str) {
    if let Ok(etag) = HeaderValue::from_str(version) {
        response.headers_mut().insert(header::ETAG, etag);
    }
}

/// Whether an `If-Match`/`If-None-Match` list names `version`. Weak comparison: SCIM
/// versions are weak ETags (RFC 7644 §3.14).
fn etag_listed(list: &str, version: &str) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    list.split(',')
        .any(|t| t.trim() == "*" || (!version.is_empty() && weak(t) == weak(version)))
}

/// Fails with 412 when an `If-Match` header does not name `current`'s version.
fn check_if_match(headers: &HeaderMap, current: &Meta) -> Result<bool, ScimError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(false);
    };
    let list = value
        .to_str()
        .map_err(|_| ScimError::precondition_failed("If-Match is not readable"))?;
    if etag_listed(list, &current.version) {
        Ok(true)
    } else {
        Err(ScimError::precondition_failed(
            "the resource has changed (If-Match)",
        ))
    }
}

/// Reads a JSON request body within `limit` bytes.
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ScimError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !media.eq_ignore_ascii_case(SCIM_JSON) && !media.eq_ignore_ascii_case("application/json") {
            return Err(ScimError::new(
                415,
                None,
                "Content-Type must be application/scim+json or application/json",
            ));
        }
    }
    let too_large = || ScimError::too_large(format!("a request body is at most {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ScimError::bad_request(ScimType::InvalidSyntax, "the body is not valid JSON"))
}

fn check_members(count: usize, max: usize) -> Result<(), ScimError> {
    if count > max {
        return Err(ScimError::too_large(format!(
            "a request names at most {max} members"
        )));
    }
    Ok(())
}

/// Logs a change by the token's name; bodies are never logged.
fn audit(caller: &Caller, kind: ResourceKind, id: &str, done: &str) {
    tracing::info!(token = %caller.token, resource = kind.name(), id = %id, "scim: {done}");
}

/// Filters, orders and pages the resources of `kinds`.
async fn list_response<B: ScimBackend>(
    s: &Shared<B>,
    kinds: &[ResourceKind],
    params: &ListParams,
) -> Result<Response, ScimError> {
    let mut matched = Vec::new();
    for &kind in kinds {
        let docs = match kind {
            ResourceKind::User => documents::<B, ScimUser>(s).await?,
            ResourceKind::Group => documents::<B, ScimGroup>(s).await?,
        };
        for doc in docs {
            if params
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&doc, Scope::Resource(kind)))
            {
                matched.push((kind, doc));
            }
        }
    }
    let (total, page) = params.page(matched);
    let resources = page
        .into_iter()
        .map(|(kind, doc)| Value::Object(params.projection.apply(doc, kind)))
        .collect();
    Ok(scim_response(StatusCode::OK, &params.response(total, resources)))
}

fn collection<B: ScimBackend, R: Resource>() -> MethodRouter<Arc<Shared<B>>> {
    get(list::<B, R>).post(create::<B, R>)
}

fn search<B: ScimBackend>(kinds: &'static [ResourceKind]) -> MethodRouter<Arc<Shared<B>>> {
    post(
        move |State(s): St<B>, headers: HeaderMap, body: Body| async move {
            let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
            let params = ListParams::from_search(&doc, s.config.limits.count_max)?;
            list_response(&s, kinds, &params).await
        },
    )
}

fn member<B: ScimBackend, R: Resource>() -> MethodRouter<Arc<Shared<B>>> {
    get(read_one::<B, R>)
        .on(MethodFilter::PUT.or(MethodFilter::PATCH), update::<B, R>)
        .delete(delete::<B, R>)
}

async fn list<B: ScimBackend, R: Resource>(
    State(s): St<B>,
    RawQuery(query): RawQuery,
) -> Result<Response, ScimError> {
    let params = ListParams::from_query(&parse_query(query.as_deref())?, s.config.limits.count_max)?;
    list_response(&s, &[R::KIND], &params).await
}

async fn create<B: ScimBackend, R: Resource>(
    State(s): St<B>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
    check_members(member_count(&doc), s.config.limits.members_per_request_max)?;
    let new = R::parse(&doc, None)?;
    let created = R::create(s.backend.as_ref(), &caller.token, new).await?;
    audit(&caller, R::KIND, created.id(), "created");
    let mut response = resource_response(&s, StatusCode::CREATED, &created, &projection);
    if let Ok(here) = HeaderValue::from_str(&location(&s.config.base_url, R::KIND, created.id())) {
        response.headers_mut().insert(header::LOCATION, here);
    }
    Ok(response)
}

async fn read_one<B: ScimBackend, R: Resource>(
    State(s): St<B>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let resource: R = fetch(s.backend.as_ref(), &id).await?;
    let version = &resource.meta().version;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| etag_listed(list, version));
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert_etag(&mut response, version);
        return Ok(response);
    }
    Ok(resource_response(&s, StatusCode::OK, &resource, &projection))
}

/// PUT replaces a resource with the body; PATCH applies the body's operations to it.
/// Either way the whole new resource is stored, computed under the write lock.
async fn update<B: ScimBackend, R: Resource>(
    State(s): St<B>,
    Extension(caller): Extension<Caller>,
    method: Method,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
    let patch = (method == Method::PATCH)
        .then(|| PatchRequest::parse(&doc))
        .transpose()?;
    let members = patch
        .as_ref()
        .map_or_else(|| member_count(&doc), PatchRequest::member_values);
    check_members(members, s.config.limits.members_per_request_max)?;
    let _write = s.write_lock.lock().await;
    let current: R = fetch(s.backend.as_ref(), &id).await?;
    let conditional = check_if_match(&headers, current.meta())?;
    let doc = match &patch {
        None => doc,
        Some(request) => {
            let mut patched = current.to_json(&s.config.base_url);
            request.apply(&mut patched, R::KIND)?;
            Value::Object(patched)
        }
    };
    let mut new = R::parse(&doc, Some(&current))?;
    // The version the change was computed from, for the backend's compare-and-swap. A PUT
    // without If-Match replaces whatever is there, so it names none.
    let from = if conditional || patch.is_some() {
        current.meta().version.as_str()
    } else {
        ""
    };
    from.clone_into(&mut new.meta_mut().version);
    let stored = R::replace(s.backend.as_ref(), &caller.token, &id, new).await?;
    audit(
        &caller,
        R::KIND,
        &id,
        if patch.is_some() { "patched" } else { "replaced" },
    );
    Ok(resource_response(&s, StatusCode::OK, &stored, &projection))
}

async fn delete<B: ScimBackend, R: Resource>(
    State(s): St<B>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let _write = s.write_lock.lock().await;
    if headers.contains_key(header::IF_MATCH) {
        let current: R = fetch(s.backend.as_ref(), &id).await?;
        check_if_match(&headers, current.meta())?;
    }
    R::delete(s.backend.as_ref(), &caller.token, &id).await?;
    audit(&caller, R::KIND, &id, "deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        assert!(etag_listed("W/\"3\"", "W/\"3\""));
        assert!(etag_listed("\"3\"", "W/\"3\""));
        assert!(etag_listed("W/\"1\", W/\"3\"", "W/\"3\""));
        assert!(etag_listed("*", ""));
        assert!(!etag_listed("W/\"4\"", "W/\"3\""));
        assert!(!etag_listed("W/\"4\"", ""));
    }
}
