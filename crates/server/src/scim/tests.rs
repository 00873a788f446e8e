//! The SCIM endpoints end to end, through `router` over the in-memory backend: what an
//! identity provider sees (statuses, headers, error bodies, limits).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, header};
use serde_json::Value;

use super::error::SCIM_JSON;
use super::memory::MemoryBackend;
use super::schema::USER_SCHEMA;
use super::{ScimConfig, ScimLimits, router};
use serde_json::json;
use tower::ServiceExt;

const BASE: &str = "https://chat.example.org/scim/v2";
const TOKEN: &str = "tok-1";

fn app_with(limits: ScimLimits) -> Router {
    let backend = Arc::new(MemoryBackend::new(&[("okta", TOKEN)]));
    router(
        backend,
        ScimConfig {
            base_url: BASE.into(),
            limits,
        },
    )
}

fn app() -> Router {
    app_with(ScimLimits::default())
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/scim+json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn call(app: &Router, method: Method, uri: &str, body: Option<Value>) -> Reply {
    send(app, method, uri, Some(TOKEN), body, &[]).await
}

fn assert_scim_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.headers[header::CONTENT_TYPE], SCIM_JSON);
    assert_eq!(
        reply.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(reply.body["status"], status.to_string());
    assert_eq!(reply.body["scimType"].as_str(), scim_type, "{}", reply.body);
}

async fn create_user(app: &Router, name: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/Users",
        Some(json!({"schemas": [USER_SCHEMA], "userName": name})),
    )
    .await
}

#[tokio::test]
async fn every_endpoint_needs_a_valid_token() {
    let app = app();
    for uri in [
        "/ServiceProviderConfig",
        "/Schemas",
        "/ResourceTypes/User",
        "/Users",
        "/Groups/x",
        "/nowhere",
    ] {
        for token in [None, Some("wrong")] {
            let reply = send(&app, Method::GET, uri, token, None, &[]).await;
            assert_scim_error(&reply, 401, None);
            assert!(
                reply.headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
    }
    let reply = send(
        &app,
        Method::GET,
        "/Users",
        None,
        None,
        &[("authorization", &format!("Basic {TOKEN}"))],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        call(&app, Method::GET, "/ServiceProviderConfig", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn failed_authentications_and_busy_tokens_are_rate_limited() {
    let limits = ScimLimits {
        failed_auth_burst: 2,
        token_requests_burst: 3,
        ..ScimLimits::default()
    };
    let app = app_with(limits);
    assert_eq!(
        send(&app, Method::GET, "/Users", Some("bad"), None, &[])
            .await
            .status,
        401
    );
    assert_eq!(
        send(&app, Method::GET, "/Users", None, None, &[]).await.status,
        401
    );
    let reply = send(&app, Method::GET, "/Users", Some("bad"), None, &[]).await;
    assert_scim_error(&reply, 429, None);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    // A valid token is still served while failures are being refused.
    for _ in 0..3 {
        assert_eq!(call(&app, Method::GET, "/Users", None).await.status, 200);
    }
    let reply = call(&app, Method::GET, "/Users", None).await;
    assert_scim_error(&reply, 429, None);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_scim_errors() {
    let app = app();
    assert_scim_error(&call(&app, Method::GET, "/Nope", None).await, 404, None);
    assert_scim_error(&call(&app, Method::GET, "/Users/nobody", None).await, 404, None);
    assert_scim_error(&call(&app, Method::GET, "/Schemas/urn:x", None).await, 404, None);
    assert_scim_error(
        &call(&app, Method::DELETE, "/ServiceProviderConfig", None).await,
        405,
        None,
    );
    assert_scim_error(&call(&app, Method::GET, "/Users/.search", None).await, 405, None);
}

#[tokio::test]
async fn create_read_replace_delete_a_user() {
    let app = app();
    let created = create_user(&app, "alice").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers[header::CONTENT_TYPE], SCIM_JSON);
    assert_eq!(created.headers[header::LOCATION], format!("{BASE}/Users/alice"));
    assert_eq!(created.body["meta"]["location"], format!("{BASE}/Users/alice"));
    assert_eq!(created.body["active"], true);
    let etag = created.headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(created.body["meta"]["version"], etag);

    assert_scim_error(&create_user(&app, "alice").await, 409, Some("uniqueness"));
    assert_scim_error(
        &create_user(&app, "Alice@Example.org").await,
        400,
        Some("invalidValue"),
    );

    let read = send(
        &app,
        Method::GET,
        "/Users/alice",
        Some(TOKEN),
        None,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(read.status, 304);
    let put = json!({"userName": "alice", "displayName": "Alice", "active": false});
    let stale = send(
        &app,
        Method::PUT,
        "/Users/alice",
        Some(TOKEN),
        Some(put.clone()),
        &[("if-match", "W/\"0\"")],
    )
    .await;
    assert_scim_error(&stale, 412, None);
    let replaced = send(
        &app,
        Method::PUT,
        "/Users/alice",
        Some(TOKEN),
        Some(put),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(
        (
            replaced.body["displayName"].clone(),
            replaced.body["active"].clone()
        ),
        (json!("Alice"), json!(false))
    );
    assert_ne!(replaced.headers[header::ETAG], etag.as_str());
    // A PUT without active keeps the current value rather than re-activating.
    let kept = call(
        &app,
        Method::PUT,
        "/Users/alice",
        Some(json!({"userName": "alice"})),
    )
    .await;
    assert_eq!(kept.body["active"], false);

    assert_eq!(call(&app, Method::DELETE, "/Users/alice", None).await.status, 204);
    assert_scim_error(&call(&app, Method::GET, "/Users/alice", None).await, 404, None);
    assert_scim_error(&call(&app, Method::DELETE, "/Users/alice", None).await, 404, None);
}

#[tokio::test]
async fn bodies_are_bounded_and_typed() {
    let small = app_with(ScimLimits {
        request_bytes_max: 64,
        ..ScimLimits::default()
    });
    let big = json!({"userName": "a".repeat(100)});
    assert_scim_error(&call(&small, Method::POST, "/Users", Some(big)).await, 413, None);
    let app = app();
    let reply = send(
        &app,
        Method::POST,
        "/Users",
        Some(TOKEN),
        None,
        &[("content-type", "text/plain")],
    )
    .await;
    assert_scim_error(&reply, 415, None);
    let request = axum::http::Request::post("/Users")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()[header::CONTENT_TYPE], SCIM_JSON);
}

#[tokio::test]
async fn list_filters_pages_and_projects() {
    let app = app();
    for name in ["u3", "u1", "u2", "x1"] {
        assert_eq!(create_user(&app, name).await.status, 201);
    }
    let page = call(
        &app,
        Method::GET,
        "/Users?filter=userName%20sw%20%22U%22&startIndex=2&count=1&attributes=userName",
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["totalResults"], 3);
    assert_eq!(page.body["itemsPerPage"], 1);
    assert_eq!(page.body["startIndex"], 2);
    assert_eq!(
        page.body["Resources"],
        json!([{"schemas": [USER_SCHEMA], "id": "u2", "userName": "u2"}])
    );
    let bad = call(&app, Method::GET, "/Users?filter=userName%20eq", None).await;
    assert_scim_error(&bad, 400, Some("invalidFilter"));
    let search = call(
        &app,
        Method::POST,
        "/.search",
        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "id eq \"x1\""})),
    )
    .await;
    assert_eq!(search.body["totalResults"], 1, "{}", search.body);
}

#[tokio::test]
async fn entra_patches_users_and_group_members() {
    let app = app();
    for name in ["alice", "bob"] {
        create_user(&app, name).await;
    }
    let ops =
        |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let reply = call(
        &app,
        Method::PATCH,
        "/Users/alice",
        Some(ops(json!([
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "alice@example.org"},
        {"op": "Replace", "path": "title", "value": "Boss"}]))),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["active"], false);
    assert_eq!(
        reply.body["emails"],
        json!([{"value": "alice@example.org", "type": "work", "primary": false}])
    );

    let group = call(
        &app,
        Method::POST,
        "/Groups",
        Some(json!({"displayName": "Staff", "members": [{"value": "alice"}]})),
    )
    .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let uri = format!("/Groups/{}", group.body["id"].as_str().unwrap());
    let added = call(
        &app,
        Method::PATCH,
        &uri,
        Some(ops(
            json!([{"op": "Add", "path": "members", "value": [{"value": "bob"}]}]),
        )),
    )
    .await;
    assert_eq!(added.body["members"].as_array().unwrap().len(), 2);
    let user = call(&app, Method::GET, "/Users/bob", None).await;
    assert_eq!(user.body["groups"][0]["display"], "Staff");
    let removed = call(
        &app,
        Method::PATCH,
        &uri,
        Some(ops(
            json!([{"op": "Remove", "path": "members", "value": [{"value": "alice"}]}]),
        )),
    )
    .await;
    assert_eq!(
        removed.body["members"],
        json!([{"value": "bob", "$ref": format!("{BASE}/Users/bob")}])
    );
    let lean = call(
        &app,
        Method::GET,
        &format!("{uri}?excludedAttributes=members"),
        None,
    )
    .await;
    assert!(lean.body.get("members").is_none());
    let filtered = call(
        &app,
        Method::GET,
        "/Groups?filter=members%5Bvalue%20eq%20%22bob%22%5D",
        None,
    )
    .await;
    assert_eq!(filtered.body["totalResults"], 1);

    let stranger = call(
        &app,
        Method::PATCH,
        &uri,
        Some(ops(
            json!([{"op": "add", "path": "members", "value": [{"value": "eve"}]}]),
        )),
    )
    .await;
    assert_scim_error(&stranger, 400, Some("invalidValue"));
    let read_only = call(
        &app,
        Method::PATCH,
        "/Users/bob",
        Some(ops(json!([{"op": "add", "path": "groups", "value": []}]))),
    )
    .await;
    assert_scim_error(&read_only, 400, Some("mutability"));
}

#[tokio::test]
async fn member_and_operation_counts_are_bounded() {
    let app = app_with(ScimLimits {
        members_per_request_max: 2,
        ..ScimLimits::default()
    });
    let members: Vec<Value> = (0..3).map(|i| json!({"value": format!("u{i}")})).collect();
    let post = call(
        &app,
        Method::POST,
        "/Groups",
        Some(json!({"displayName": "G", "members": members})),
    )
    .await;
    assert_scim_error(&post, 413, None);
    let group = call(&app, Method::POST, "/Groups", Some(json!({"displayName": "G"}))).await;
    let uri = format!("/Groups/{}", group.body["id"].as_str().unwrap());
    let patch = json!({"Operations": [{"op": "add", "path": "members", "value": members}]});
    assert_scim_error(&call(&app, Method::PATCH, &uri, Some(patch)).await, 413, None);
    let ops: Vec<Value> = (0..101)
        .map(|_| json!({"op": "replace", "path": "displayName", "value": "G"}))
        .collect();
    assert_scim_error(
        &call(&app, Method::PATCH, &uri, Some(json!({"Operations": ops}))).await,
        413,
        None,
    );
}

#[tokio::test]
async fn discovery_documents_describe_the_service() {
    let app = app();
    let spc = call(&app, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(spc.body["filter"], json!({"supported": true, "maxResults": 200}));
    assert_eq!(spc.body["etag"]["supported"], true);
    let types = call(&app, Method::GET, "/ResourceTypes", None).await;
    assert_eq!(types.body["totalResults"], 2);
    assert_eq!(types.body["Resources"][1]["endpoint"], "/Groups");
    let schema = call(
        &app,
        Method::GET,
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
        None,
    )
    .await;
    assert_eq!(schema.body["attributes"][1]["name"], "members");
}
