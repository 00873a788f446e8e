//! The SCIM endpoints (RFC 7644 §3, §4) over a [`ScimBackend`].

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::discovery;
use super::error::{SCIM_JSON, ScimError, ScimType};
use super::filter::Scope;
use super::limit::Buckets;
use super::patch::PatchRequest;
use super::query::{ListParams, Projection, list_all, parse_query};
use super::resource::{ScimGroup, ScimUser, location, member_count};
use super::schema::ResourceKind;
use super::{ScimBackend, ScimConfig};

/// The longest bearer token looked at; longer ones fail authentication unread.
const BEARER_BYTES_MAX: usize = 1024;

struct Shared<B> {
    backend: Arc<B>,
    config: ScimConfig,
    per_token: Buckets,
    failed_auth: Buckets,
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
        per_token: Buckets::new(limits.token_requests_per_second, limits.token_requests_burst),
        failed_auth: Buckets::new(limits.failed_auth_per_second, limits.failed_auth_burst),
        config,
        write_lock: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config::<B>))
        .route("/ResourceTypes", get(resource_types::<B>))
        .route("/ResourceTypes/{id}", get(resource_type::<B>))
        .route("/Schemas", get(schemas::<B>))
        .route("/Schemas/{id}", get(schema::<B>))
        .route("/Users", collection::<B>(ResourceKind::User))
        .route("/Users/.search", search::<B>(&[ResourceKind::User]))
        .route("/Users/{id}", member::<B>(ResourceKind::User))
        .route("/Groups", collection::<B>(ResourceKind::Group))
        .route("/Groups/.search", search::<B>(&[ResourceKind::Group]))
        .route("/Groups/{id}", member::<B>(ResourceKind::Group))
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
    if let Err(retry_s) = s.per_token.take(&name, now) {
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

#[derive(Debug)]
enum Resource {
    User(ScimUser),
    Group(ScimGroup),
}

impl Resource {
    fn id(&self) -> &str {
        match self {
            Resource::User(u) => &u.id,
            Resource::Group(g) => &g.id,
        }
    }

    fn version(&self) -> &str {
        match self {
            Resource::User(u) => &u.meta.version,
            Resource::Group(g) => &g.meta.version,
        }
    }

    fn set_version(&mut self, version: &str) {
        let meta = match self {
            Resource::User(u) => &mut u.meta,
            Resource::Group(g) => &mut g.meta,
        };
        version.clone_into(&mut meta.version);
    }

    fn to_json(&self, base_url: &str) -> Map<String, Value> {
        match self {
            Resource::User(u) => u.to_json(base_url),
            Resource::Group(g) => g.to_json(base_url),
        }
    }

    /// Reads a request body of `kind`; a user's `active` defaults to `current`'s, or true.
    fn parse(kind: ResourceKind, doc: &Value, current: Option<&Resource>) -> Result<Self, ScimError> {
        Ok(match kind {
            ResourceKind::User => {
                let active = match current {
                    Some(Resource::User(u)) => u.active,
                    _ => true,
                };
                Resource::User(ScimUser::from_json(doc, active)?)
            }
            ResourceKind::Group => Resource::Group(ScimGroup::from_json(doc)?),
        })
    }
}

async fn fetch_all<B: ScimBackend>(backend: &B, kind: ResourceKind) -> Result<Vec<Resource>, ScimError> {
    let mut all: Vec<Resource> = match kind {
        ResourceKind::User => backend
            .list_users()
            .await?
            .into_iter()
            .map(Resource::User)
            .collect(),
        ResourceKind::Group => backend
            .list_groups()
            .await?
            .into_iter()
            .map(Resource::Group)
            .collect(),
    };
    all.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(all)
}

async fn fetch<B: ScimBackend>(backend: &B, kind: ResourceKind, id: &str) -> Result<Resource, ScimError> {
    let found = match kind {
        ResourceKind::User => backend.get_user(id).await?.map(Resource::User),
        ResourceKind::Group => backend.get_group(id).await?.map(Resource::Group),
    };
    found.ok_or_else(|| ScimError::not_found(format!("no {} with this id", kind.name())))
}

async fn store<B: ScimBackend>(
    backend: &B,
    token: &str,
    id: Option<&str>,
    resource: Resource,
) -> Result<Resource, ScimError> {
    Ok(match (resource, id) {
        (Resource::User(u), None) => Resource::User(backend.create_user(token, u).await?),
        (Resource::User(u), Some(id)) => Resource::User(backend.replace_user(token, id, u).await?),
        (Resource::Group(g), None) => Resource::Group(backend.create_group(token, g).await?),
        (Resource::Group(g), Some(id)) => Resource::Group(backend.replace_group(token, id, g).await?),
    })
}

/// A resource as a response: projected, with its `ETag`.
fn resource_response(
    status: StatusCode,
    kind: ResourceKind,
    resource: &Resource,
    projection: &Projection,
    base_url: &str,
) -> Response {
    let doc = projection.apply(resource.to_json(base_url), kind);
    let mut response = scim_response(status, &Value::Object(doc));
    if let Ok(etag) = HeaderValue::from_str(resource.version())
        && !resource.version().is_empty()
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Whether an `If-Match`/`If-None-Match` list names `version`. Weak comparison: SCIM
/// versions are weak ETags (RFC 7644 §3.14).
fn etag_listed(list: &str, version: &str) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    list.split(',')
        .any(|t| t.trim() == "*" || (!version.is_empty() && weak(t) == weak(version)))
}

/// Fails with 412 when an `If-Match` header does not name `current`'s version.
fn check_if_match(headers: &HeaderMap, current: &Resource) -> Result<bool, ScimError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(false);
    };
    let list = value
        .to_str()
        .map_err(|_| ScimError::precondition_failed("If-Match is not readable"))?;
    if etag_listed(list, current.version()) {
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

/// Filters, orders and pages the resources of `kinds`.
async fn list_response<B: ScimBackend>(
    s: &Shared<B>,
    kinds: &[ResourceKind],
    params: &ListParams,
) -> Result<Response, ScimError> {
    let mut matched = Vec::new();
    for &kind in kinds {
        for resource in fetch_all(s.backend.as_ref(), kind).await? {
            let doc = resource.to_json(&s.config.base_url);
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

fn collection<B: ScimBackend>(kind: ResourceKind) -> MethodRouter<Arc<Shared<B>>> {
    get(move |State(s): St<B>, RawQuery(query): RawQuery| async move {
        let params = ListParams::from_query(&parse_query(query.as_deref())?, s.config.limits.count_max)?;
        list_response(&s, &[kind], &params).await
    })
    .post(
        move |State(s): St<B>,
              Extension(caller): Extension<Caller>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Body| { create(s, caller, query, headers, body, kind) },
    )
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

fn member<B: ScimBackend>(kind: ResourceKind) -> MethodRouter<Arc<Shared<B>>> {
    get(
        move |State(s): St<B>, Path(id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| {
            read_one(s, id, query, headers, kind)
        },
    )
    .put(
        move |State(s): St<B>,
              Extension(caller): Extension<Caller>,
              Path(id): Path<String>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Body| { replace(s, caller, id, query, headers, body, kind) },
    )
    .patch(
        move |State(s): St<B>,
              Extension(caller): Extension<Caller>,
              Path(id): Path<String>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Body| { patch(s, caller, id, query, headers, body, kind) },
    )
    .delete(
        move |State(s): St<B>,
              Extension(caller): Extension<Caller>,
              Path(id): Path<String>,
              headers: HeaderMap| { delete(s, caller, id, headers, kind) },
    )
}

async fn create<B: ScimBackend>(
    s: Arc<Shared<B>>,
    caller: Caller,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
    check_members(member_count(&doc), s.config.limits.members_per_request_max)?;
    let new = Resource::parse(kind, &doc, None)?;
    let created = store(s.backend.as_ref(), &caller.token, None, new).await?;
    tracing::info!(token = %caller.token, resource = kind.name(), id = %created.id(), "scim: created");
    let base_url = &s.config.base_url;
    let mut response = resource_response(StatusCode::CREATED, kind, &created, &projection, base_url);
    if let Ok(here) = HeaderValue::from_str(&location(base_url, kind, created.id())) {
        response.headers_mut().insert(header::LOCATION, here);
    }
    Ok(response)
}

async fn read_one<B: ScimBackend>(
    s: Arc<Shared<B>>,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let resource = fetch(s.backend.as_ref(), kind, &id).await?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| etag_listed(list, resource.version()));
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(etag) = HeaderValue::from_str(resource.version()) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        return Ok(response);
    }
    Ok(resource_response(
        StatusCode::OK,
        kind,
        &resource,
        &projection,
        &s.config.base_url,
    ))
}

async fn replace<B: ScimBackend>(
    s: Arc<Shared<B>>,
    caller: Caller,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
    check_members(member_count(&doc), s.config.limits.members_per_request_max)?;
    let _write = s.write_lock.lock().await;
    let current = fetch(s.backend.as_ref(), kind, &id).await?;
    let conditional = check_if_match(&headers, &current)?;
    let mut new = Resource::parse(kind, &doc, Some(&current))?;
    new.set_version(if conditional { current.version() } else { "" });
    let stored = store(s.backend.as_ref(), &caller.token, Some(&id), new).await?;
    tracing::info!(token = %caller.token, resource = kind.name(), id = %id, "scim: replaced");
    Ok(resource_response(
        StatusCode::OK,
        kind,
        &stored,
        &projection,
        &s.config.base_url,
    ))
}

async fn patch<B: ScimBackend>(
    s: Arc<Shared<B>>,
    caller: Caller,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let projection = Projection::from_query(&parse_query(query.as_deref())?)?;
    let doc = read_json(&headers, body, s.config.limits.request_bytes_max).await?;
    let request = PatchRequest::parse(&doc)?;
    check_members(request.member_values(), s.config.limits.members_per_request_max)?;
    let _write = s.write_lock.lock().await;
    let current = fetch(s.backend.as_ref(), kind, &id).await?;
    check_if_match(&headers, &current)?;
    let mut patched = current.to_json(&s.config.base_url);
    request.apply(&mut patched, kind)?;
    let mut new = Resource::parse(kind, &Value::Object(patched), Some(&current))?;
    new.set_version(current.version());
    let stored = store(s.backend.as_ref(), &caller.token, Some(&id), new).await?;
    tracing::info!(token = %caller.token, resource = kind.name(), id = %id, "scim: patched");
    Ok(resource_response(
        StatusCode::OK,
        kind,
        &stored,
        &projection,
        &s.config.base_url,
    ))
}

async fn delete<B: ScimBackend>(
    s: Arc<Shared<B>>,
    caller: Caller,
    id: String,
    headers: HeaderMap,
    kind: ResourceKind,
) -> Result<Response, ScimError> {
    let _write = s.write_lock.lock().await;
    if headers.contains_key(header::IF_MATCH) {
        let current = fetch(s.backend.as_ref(), kind, &id).await?;
        check_if_match(&headers, &current)?;
    }
    match kind {
        ResourceKind::User => s.backend.delete_user(&caller.token, &id).await?,
        ResourceKind::Group => s.backend.delete_group(&caller.token, &id).await?,
    }
    tracing::info!(token = %caller.token, resource = kind.name(), id = %id, "scim: deleted");
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
