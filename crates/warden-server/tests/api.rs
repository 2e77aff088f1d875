//! The API over the fake driver: every route, errors, auth, the router contract, the store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_agent::run::{Answer, ApprovalBox, PendingApproval};
use warden_sandbox::{Driver, Endpoint};
use warden_server::testing::FakeDriver;
use warden_server::{AppState, Auth, Store, app};

fn token() -> String {
    "a1".repeat(32)
}

struct Harness {
    state: AppState,
    fake: Arc<FakeDriver>,
}

async fn harness() -> Harness {
    harness_with_timeout(Duration::from_secs(5)).await
}

async fn harness_with_timeout(t: Duration) -> Harness {
    let store = Store::in_memory().await.unwrap();
    let fake = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
    let driver: Arc<dyn Driver> = fake.clone();
    let state = AppState::with_router_timeout(driver, store, Auth::Token(token()), t);
    Harness { state, fake }
}

impl Harness {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let resp = self.raw(method, path, body, &[]).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", token()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(Value::String(s)) => Body::from(s),
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap()
    }

    async fn setup(&self) -> String {
        let (s, _) = self.call("PUT", "/v1/templates/py", Some(json!({}))).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = self
            .call("POST", "/v1/sandboxes", Some(json!({"template": "py"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }
}

async fn body_text(resp: Response) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn healthz_needs_no_token_and_the_rest_does() {
    let h = harness().await;
    let resp = app(h.state.clone())
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, r#"{"status":"ok"}"#);
    for (path, auth) in [
        ("/v1/templates", None),
        ("/metrics", None),
        ("/v1/sandboxes", Some("Bearer wrong")),
        ("/v1/nope", None),
        (
            "/execute",
            Some(format!("Bearer {}", "a1".repeat(31)).leak() as &str),
        ),
    ] {
        let mut req = Request::get(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = app(h.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
        assert_eq!(v["code"], "UNAUTHENTICATED", "{path}");
    }
    // A router-contract request without the token: 401 in the router's shape.
    let resp = app(h.state.clone())
        .oneshot(
            Request::get("/execute")
                .header("x-sandbox-id", "s")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert!(v["detail"].as_str().unwrap().contains("bearer token"));
}

#[tokio::test]
async fn templates_crud_and_errors() {
    let h = harness().await;
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"shutdown_after": "30m", "policy": {"profile": "default"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "py");
    assert_eq!(v["shutdown_after"], "30m");
    let (s, v) = h.call("GET", "/v1/templates/py", None).await;
    assert_eq!((s, v["name"].clone()), (StatusCode::OK, json!("py")));
    let (s, v) = h.call("GET", "/v1/templates", None).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (s, v) = h.call("GET", "/v1/templates/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({"code": "NOT_FOUND", "message": "template `nope` not found"})
    );
    // Bad bodies name the field.
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"shutdown_afterr": "1m"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "INVALID_ARGUMENT");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `shutdown_afterr`"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"idle_timeout": "soon"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("`idle_timeout`"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"workspace_quota": "big"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("`workspace_quota`"),
        "{v}"
    );
    let (s, v) = h
        .call("PUT", "/v1/templates/py", Some(json!({"name": "other"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("differs"), "{v}");
    let (s, _) = h
        .call("PUT", "/v1/templates/Bad_Name", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(Value::String("{not json".into())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = h
        .call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"policy": {"filesystem": {"workspace": "/x"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("policy.filesystem.workspace"),
        "{v}"
    );
    // In use by a pool: conflict.
    let (s, _) = h
        .call(
            "PUT",
            "/v1/pools/warm",
            Some(json!({"template": "py", "replicas": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("DELETE", "/v1/templates/py", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["code"], "CONFLICT");
    let (s, _) = h.call("DELETE", "/v1/pools/warm", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", "/v1/templates/py", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", "/v1/templates/py", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(h.state.store().templates().await.unwrap().is_empty());
}

#[tokio::test]
async fn pools_crud_and_claims() {
    let h = harness().await;
    let (s, v) = h
        .call("PUT", "/v1/pools/warm", Some(json!({"template": "nope"})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "template `nope` not found");
    let (s, v) = h
        .call(
            "PUT",
            "/v1/pools/warm",
            Some(json!({"template": "py", "replicas": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("`replicas`"), "{v}");
    h.call("PUT", "/v1/templates/py", Some(json!({}))).await;
    let (s, v) = h
        .call(
            "PUT",
            "/v1/pools/warm",
            Some(json!({"template": "py", "replicas": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"name": "warm", "template": "py", "replicas": 1, "ready": 1, "starting": 0})
    );
    let (s, v) = h.call("GET", "/v1/pools/warm", None).await;
    assert_eq!((s, v["ready"].clone()), (StatusCode::OK, json!(1)));
    let (s, v) = h.call("GET", "/v1/pools", None).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (s, _) = h.call("GET", "/v1/pools/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unclaimed members are hidden unless all=true.
    let (_, v) = h.call("GET", "/v1/sandboxes", None).await;
    assert_eq!(v.as_array().unwrap().len(), 0);
    let (_, v) = h.call("GET", "/v1/sandboxes?all=true", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["pool_member"], true);
    // First claim is warm, the second (pool refilled) too; metrics count them.
    let (s, v) = h
        .call(
            "POST",
            "/v1/sandboxes",
            Some(json!({"pool": "warm", "shutdown_after": "10m"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["launch"], "warm");
    assert_eq!(v["pool_member"], false);
    let (_, v) = h.call("GET", "/v1/sandboxes?pool=warm", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = h
        .call("POST", "/v1/sandboxes", Some(json!({"pool": "nope"})))
        .await;
    assert_eq!(
        (s, v["message"].clone()),
        (StatusCode::NOT_FOUND, json!("pool `nope` not found"))
    );
    let resp = h.raw("GET", "/metrics", None, &[]).await;
    let text = body_text(resp).await;
    assert!(
        text.contains("warden_serve_claims_total{launch=\"warm\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_serve_pool_ready{pool=\"warm\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_serve_pool_replicas{pool=\"warm\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_serve_sandboxes{phase=\"ready\"} 2"),
        "{text}"
    );
    assert!(text.contains("warden_serve_http_requests_total{route=\"/v1/pools/{name}\",method=\"PUT\",status=\"200\"}"), "{text}");
    assert!(
        text.contains("warden_serve_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let (s, _) = h.call("DELETE", "/v1/pools/warm", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", "/v1/pools/warm", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sandboxes_lifecycle() {
    let h = harness().await;
    let id = h.setup().await;
    let (s, v) = h.call("POST", "/v1/sandboxes", Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("exactly one of `template`"),
        "{v}"
    );
    let (s, _) = h
        .call(
            "POST",
            "/v1/sandboxes",
            Some(json!({"template": "py", "pool": "p"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .call(
            "POST",
            "/v1/sandboxes",
            Some(json!({"template": "py", "labelz": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `labelz`"),
        "{v}"
    );
    let (s, v) = h
        .call("POST", "/v1/sandboxes", Some(json!({"template": "nope"})))
        .await;
    assert_eq!(
        (s, v["message"].clone()),
        (StatusCode::NOT_FOUND, json!("template `nope` not found"))
    );
    let (s, v) = h.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(
        (s, v["phase"].clone(), v["launch"].clone()),
        (StatusCode::OK, json!("ready"), json!("cold"))
    );
    let (_, v) = h
        .call("GET", "/v1/sandboxes?template=py&phase=ready", None)
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, v) = h.call("GET", "/v1/sandboxes?phase=suspended", None).await;
    assert_eq!(v.as_array().unwrap().len(), 0);
    let (s, v) = h.call("GET", "/v1/sandboxes?phase=sleeping", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("starting, ready, suspended"),
        "{v}"
    );
    let (s, v) = h.call("GET", "/v1/sandboxes?colour=red", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");
    // Suspend: exec and files refuse until resumed.
    let (s, v) = h
        .call("POST", &format!("/v1/sandboxes/{id}/suspend"), None)
        .await;
    assert_eq!(
        (s, v["phase"].clone()),
        (StatusCode::OK, json!("suspended"))
    );
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["true"]})),
        )
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT"))
    );
    let (s, _) = h
        .call("POST", &format!("/v1/sandboxes/{id}/suspend"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = h
        .call("POST", &format!("/v1/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!((s, v["phase"].clone()), (StatusCode::OK, json!("ready")));
    // Timeout.
    let (s, v) = h
        .call(
            "PUT",
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"shutdown_at": null})),
        )
        .await;
    assert_eq!((s, v["shutdown_at"].clone()), (StatusCode::OK, Value::Null));
    let (s, v) = h
        .call(
            "PUT",
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"shutdown_at": "2030-01-02T03:04:05Z"})),
        )
        .await;
    assert_eq!(
        (s, v["shutdown_at"].clone()),
        (StatusCode::OK, json!("2030-01-02T03:04:05.000Z"))
    );
    let (s, v) = h
        .call(
            "PUT",
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(json!({"shutdown_after": "30m"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["shutdown_at"].is_string());
    for (body, needle) in [
        (json!({"shutdown_after": "later"}), "`shutdown_after`"),
        (json!({"shutdown_at": "tomorrow"}), "`shutdown_at`"),
        (
            json!({"shutdown_at": null, "shutdown_after": "1m"}),
            "exactly one",
        ),
        (json!({"ttl": 3}), "unknown field `ttl`"),
    ] {
        let (s, v) = h
            .call("PUT", &format!("/v1/sandboxes/{id}/timeout"), Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let (s, _) = h
        .call(
            "PUT",
            "/v1/sandboxes/nope/timeout",
            Some(json!({"shutdown_after": "1m"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for action in ["suspend", "resume"] {
        let (s, v) = h
            .call("POST", &format!("/v1/sandboxes/nope/{action}"), None)
            .await;
        assert_eq!(
            (s, v["message"].clone()),
            (StatusCode::NOT_FOUND, json!("sandbox `nope` not found"))
        );
    }
    let (s, _) = h.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("GET", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], format!("sandbox `{id}` not found"));
    let (s, _) = h.call("DELETE", &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // No route under /v1: our 404; a wrong method: 405.
    let (s, v) = h.call("GET", "/v1/nope", None).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::NOT_FOUND, json!("NOT_FOUND"))
    );
    let (s, _) = h.call("PATCH", "/v1/templates/py", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn exec_json_and_sse() {
    let h = harness().await;
    let id = h.setup().await;
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["echo", "hi", "there"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["stdout"].clone(), v["exit_code"].clone()),
        (json!("hi there\n"), json!(0))
    );
    let (_, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": "cat", "stdin": "in"})),
        )
        .await;
    assert_eq!(v["stdout"], "cat\n");
    let (_, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["cat"], "stdin": "in"})),
        )
        .await;
    assert_eq!(v["stdout"], "in");
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["x"], "timeout": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `timeout`"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["x"], "tty": true})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("WebSocket"), "{v}");
    let (s, _) = h
        .call(
            "POST",
            "/v1/sandboxes/nope/exec",
            Some(json!({"command": ["true"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec?stream=ws"),
            Some(json!({"command": ["true"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let resp = h
        .raw(
            "POST",
            &format!("/v1/sandboxes/{id}/exec?stream=sse"),
            Some(json!({"command": ["echo", "streamed"]})),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = body_text(resp).await;
    assert!(
        text.contains("event: started\ndata: {\"type\":\"started\",\"pid\":42}"),
        "{text}"
    );
    assert!(
        text.contains("event: stdout\ndata: {\"type\":\"stdout\",\"data\":\"streamed\\n\"}"),
        "{text}"
    );
    assert!(
        text.contains("event: exit\ndata: {\"type\":\"exit\",\"exit_code\":0"),
        "{text}"
    );
    let resp = h
        .raw(
            "POST",
            &format!("/v1/sandboxes/{id}/exec?stream=sse"),
            Some(json!({"command": ["cat"], "stdin": "abc"})),
            &[],
        )
        .await;
    let text = body_text(resp).await;
    assert!(text.contains("\"data\":\"abc\""), "{text}");
}

#[tokio::test]
async fn files() {
    let h = harness().await;
    h.call(
        "PUT",
        "/v1/templates/small",
        Some(json!({"workspace_quota": 10})),
    )
    .await;
    let id = h.setup().await;
    let f = |p: &str| format!("/v1/sandboxes/{id}/files/{p}");
    let resp = h
        .raw(
            "PUT",
            &f("a.txt?mode=0600"),
            Some(Value::String("hello".into())),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = h.raw("GET", &f("a.txt"), None, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(body_text(resp).await, "hello");
    assert_eq!(
        h.raw("HEAD", &f("a.txt"), None, &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        h.raw("HEAD", &f("b.txt"), None, &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    let (s, v) = h.call("GET", &f("b.txt"), None).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::NOT_FOUND, json!("NOT_FOUND"))
    );
    let (s, _) = h.call("PUT", &f("d/e?type=directory"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let resp = h
        .raw("PUT", &f("d/e/x"), Some(Value::String("x".into())), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, v) = h.call("GET", &f("."), None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "d"]);
    assert_eq!(v["entries"][1]["type"], "directory");
    let (s, v) = h.call("DELETE", &f("d"), None).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT"))
    );
    let (s, _) = h.call("DELETE", &f("d?recursive=true"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", &f("d"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call("GET", &f("..%2Fetc%2Fpasswd"), None).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, json!("PERMISSION_DENIED")),
        "{v}"
    );
    let (s, v) = h.call("PUT", &f("x?mode=rw"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("`mode`"), "{v}");
    let (s, _) = h.call("PUT", &f("x?type=fifo"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("GET", "/v1/sandboxes/nope/files/a", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Over the template's quota: 413.
    let (_, v) = h
        .call("POST", "/v1/sandboxes", Some(json!({"template": "small"})))
        .await;
    let small = v["id"].as_str().unwrap();
    let resp = h
        .raw(
            "PUT",
            &format!("/v1/sandboxes/{small}/files/big"),
            Some(Value::String("x".repeat(11))),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["code"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn events_are_kept_and_streamed() {
    let h = harness().await;
    let recorder = h.state.spawn_event_recorder();
    let id = h.setup().await;
    h.call("POST", &format!("/v1/sandboxes/{id}/suspend"), None)
        .await;
    let mut kept = Value::Null;
    for _ in 0..50 {
        let (s, v) = h
            .call(
                "GET",
                &format!("/v1/events?follow=false&sandbox={id}&since=2000-01-01T00:00:00Z"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        if v.as_array().unwrap().len() >= 2 {
            kept = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = kept
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "suspended"]);
    let (s, v) = h.call("GET", "/v1/events?since=yesterday", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("`since`"), "{v}");
    // SSE: the kept ones first, then live ones.
    let resp = h
        .raw(
            "GET",
            &format!("/v1/events?sandbox={id}&since=2000-01-01T00:00:00Z"),
            None,
            &[],
        )
        .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    h.call("POST", &format!("/v1/sandboxes/{id}/resume"), None)
        .await;
    let mut text = String::new();
    while !text.contains("event: resumed") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let created = text.find("event: created").unwrap();
    let suspended = text.find("event: suspended").unwrap();
    assert!(
        created < suspended && suspended < text.find("event: resumed").unwrap(),
        "{text}"
    );
    recorder.abort();
}

// ---- the router contract ----

/// A backend on a unix socket that answers with what it received.
async fn echo_backend(dir: &std::path::Path) -> std::path::PathBuf {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::routing::any;
    let path = dir.join("runtime.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let router = axum::Router::new()
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let Message::Text(t) = msg {
                            let _ = socket.send(Message::Text(format!("echo:{t}").into())).await;
                        }
                    }
                })
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .fallback(|req: axum::extract::Request| async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let headers: serde_json::Map<String, Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
                .collect();
            (
                StatusCode::IM_A_TEAPOT,
                axum::Json(json!({
                    "method": parts.method.as_str(),
                    "uri": parts.uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                })),
            )
        });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    path
}

#[tokio::test]
async fn router_validation_and_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness_with_timeout(Duration::from_millis(300)).await;
    let id = h.setup().await;
    let sock = echo_backend(dir.path()).await;
    h.fake.set_endpoint(&id, 8888, Endpoint::Unix(sock.clone()));
    h.fake.set_endpoint(&id, 8080, Endpoint::Unix(sock));
    let detail = |v: &Value| v["detail"].as_str().unwrap().to_string();
    async fn call(h: &Harness, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = h
            .raw("POST", path, Some(Value::String("payload".into())), headers)
            .await;
        let s = resp.status();
        (s, serde_json::from_str(&body_text(resp).await).unwrap())
    }
    // Without X-Sandbox-ID outside /v1: the router's 400.
    let (s, v) = call(&h, "/execute", &[]).await;
    assert_eq!(
        (s, detail(&v)),
        (
            StatusCode::BAD_REQUEST,
            "X-Sandbox-ID header is required.".into()
        )
    );
    for (headers, status, message) in [
        (
            vec![("x-sandbox-id", "Bad_ID")],
            400,
            "Invalid sandbox ID format.".to_string(),
        ),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-namespace", "Bad.NS")],
            400,
            "Invalid namespace format.".into(),
        ),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-port", "99999")],
            400,
            "Invalid port format.".into(),
        ),
        (
            vec![
                ("x-sandbox-id", "s"),
                ("x-sandbox-pod-ip", "169.254.169.254"),
            ],
            400,
            "Invalid target IP address.".into(),
        ),
        (
            vec![("x-sandbox-id", "nope")],
            502,
            "Could not connect to the backend sandbox: nope".into(),
        ),
        (
            vec![
                ("x-sandbox-id", id.as_str()),
                ("x-sandbox-namespace", "other"),
            ],
            502,
            format!("Could not connect to the backend sandbox: {id}"),
        ),
        (
            vec![("x-sandbox-id", id.as_str()), ("x-sandbox-port", "9999")],
            502,
            format!("Could not connect to the backend sandbox: {id}"),
        ),
    ] {
        let (s, v) = call(&h, "/execute", &headers).await;
        assert_eq!((s.as_u16(), detail(&v)), (status, message), "{headers:?}");
    }
    // Forwarded: path and query kept, body passed, credentials and Host stripped,
    // X-Forwarded-* set (client-sent ones replaced), any path (even under /v1) routed.
    for path in ["/execute?x=1", "/v1/files/a%20b?mode=0644"] {
        let (s, v) = call(
            &h,
            path,
            &[
                ("x-sandbox-id", id.as_str()),
                ("x-sandbox-port", "8080"),
                ("host", "warden.example:7070"),
                ("x-forwarded-for", "6.6.6.6"),
                ("cookie", "c=1"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::IM_A_TEAPOT, "{v}");
        assert_eq!(v["uri"], path);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["body"], "payload");
        let hd = &v["headers"];
        assert!(hd.get("authorization").is_none(), "{hd}");
        assert_eq!(hd["host"], "localhost");
        assert_eq!(hd["x-forwarded-host"], "warden.example:7070");
        assert_eq!(hd["x-forwarded-proto"], "http");
        assert!(
            hd.get("x-forwarded-for").is_none(),
            "no peer in oneshot: {hd}"
        );
        assert_eq!(hd["x-sandbox-id"], id.as_str());
        assert_eq!(hd["cookie"], "c=1");
    }
    // A backend that never answers: 504.
    let (s, v) = call(&h, "/slow", &[("x-sandbox-id", id.as_str())]).await;
    assert_eq!(
        (s, detail(&v)),
        (
            StatusCode::GATEWAY_TIMEOUT,
            format!("Timed out waiting for the backend sandbox: {id}")
        )
    );
    let text = body_text(h.raw("GET", "/metrics", None, &[]).await).await;
    assert!(
        text.contains("route=\"sandbox-router\",method=\"POST\",status=\"418\""),
        "{text}"
    );
}

/// Serves the app on a real TCP port (WebSocket upgrades need a real connection).
async fn serve_tcp(state: AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warden_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn router_proxies_websockets_and_sets_forwarded_for() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let dir = tempfile::tempdir().unwrap();
    let h = harness().await;
    let id = h.setup().await;
    let sock = echo_backend(dir.path()).await;
    h.fake.set_endpoint(&id, 8888, Endpoint::Unix(sock));
    let addr = serve_tcp(h.state.clone()).await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-sandbox-id", id.parse().unwrap());
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token()).parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("ping".into())).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::Text("echo:ping".into()));
    // Without the token the upgrade is refused.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-sandbox-id", id.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // Over a real connection the peer address is forwarded.
    let client =
        warden_server::client::Client::new(&format!("http://{addr}"), Some(token())).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/x")
                .header("host", addr.to_string())
                .header("x-sandbox-id", id.as_str())
                .header("authorization", format!("Bearer {}", token()))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
    drop(client);
}

#[tokio::test]
async fn exec_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let h = harness().await;
    let id = h.setup().await;
    let addr = serve_tcp(h.state.clone()).await;
    let client =
        warden_server::client::Client::new(&format!("http://{addr}"), Some(token())).unwrap();
    let mut ws = client.exec_ws(&id).await.unwrap();
    ws.send(Message::Text(
        r#"{"command": ["cat"], "tty": true, "cols": 80, "rows": 24}"#.into(),
    ))
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        Message::Text(r#"{"type":"started","pid":42}"#.into())
    );
    ws.send(Message::Binary(b"hello".to_vec().into()))
        .await
        .unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(msg, Message::Binary(b"\x01hello".to_vec().into()));
    ws.send(Message::Text(
        r#"{"type":"resize","cols":100,"rows":40}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(b"\x01resize 100x40\n".to_vec().into())
    );
    ws.send(Message::Text(r#"{"type":"bogus"}"#.into()))
        .await
        .unwrap();
    let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert!(
        t.contains("\"type\":\"error\"") && t.contains("resize"),
        "{t}"
    );
    ws.send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
        panic!()
    };
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(
        (v["type"].clone(), v["exit_code"].clone()),
        (json!("exit"), json!(0))
    );
    // A bad first message and an unknown sandbox end with an error event.
    let mut ws = client.exec_ws(&id).await.unwrap();
    ws.send(Message::Text(r#"{"cmd": "x"}"#.into()))
        .await
        .unwrap();
    let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert!(t.contains("INVALID_ARGUMENT") && t.contains("cmd"), "{t}");
    let mut ws = client.exec_ws("nope").await.unwrap();
    ws.send(Message::Text(r#"{"command": ["true"]}"#.into()))
        .await
        .unwrap();
    let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert!(
        t.contains("NOT_FOUND") && t.contains("sandbox `nope` not found"),
        "{t}"
    );
    // Exit codes pass through.
    let mut ws = client.exec_ws(&id).await.unwrap();
    ws.send(Message::Text(r#"{"command": ["exit", "3"]}"#.into()))
        .await
        .unwrap();
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.contains("exit")
        {
            code = serde_json::from_str::<Value>(&t).unwrap()["exit_code"].as_i64();
            break;
        }
    }
    assert_eq!(code, Some(3));
}

// ---- the store ----

#[tokio::test]
async fn store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox_ids, claimed) = {
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.journal_mode().await.unwrap(), "wal");
        let driver = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
        let config =
            warden_server::config::parse("[templates.cfg]\nshutdown_after = \"2h\"\n").unwrap();
        warden_server::bootstrap(driver.as_ref(), &store, Some(&config))
            .await
            .unwrap();
        let state = AppState::new(driver.clone(), store.clone(), Auth::Disabled);
        let h = Harness {
            state,
            fake: driver.clone(),
        };
        h.call(
            "PUT",
            "/v1/templates/py",
            Some(json!({"idle_timeout": "5m"})),
        )
        .await;
        h.call(
            "PUT",
            "/v1/pools/warm",
            Some(json!({"template": "py", "replicas": 2})),
        )
        .await;
        let (_, v) = h
            .call(
                "POST",
                "/v1/sandboxes",
                Some(json!({"pool": "warm", "labels": {"a": "b"}})),
            )
            .await;
        let claimed = v["id"].as_str().unwrap().to_string();
        let mut ids: Vec<String> = driver.list().await.into_iter().map(|s| s.id).collect();
        ids.sort();
        store.close().await;
        (ids, claimed)
    };
    let store = Store::open(dir.path()).await.unwrap();
    let driver = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
    warden_server::bootstrap(driver.as_ref(), &store, None)
        .await
        .unwrap();
    let names: Vec<String> = driver
        .templates()
        .await
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["cfg", "py"]);
    let py = driver
        .templates()
        .await
        .into_iter()
        .find(|t| t.name == "py")
        .unwrap();
    assert_eq!(py.idle_timeout, Some(Duration::from_secs(300)));
    let pools = driver.pools().await;
    assert_eq!((pools[0].name.as_str(), pools[0].replicas), ("warm", 2));
    let mut ids: Vec<String> = driver.list().await.into_iter().map(|s| s.id).collect();
    ids.sort();
    assert_eq!(ids, sandbox_ids);
    let info = driver.get(&claimed).await.unwrap();
    assert_eq!(info.labels["a"], "b");
    assert!(!info.pool_member);
    // Events are kept with their order.
    let e = warden_sandbox::SandboxEvent {
        time: std::time::SystemTime::now(),
        sandbox: "x".into(),
        kind: "k".into(),
        message: "m".into(),
    };
    store.put_event(&e).await.unwrap();
    let kept = store.events(None, Some("x"), 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].kind, "k");
}

#[tokio::test]
async fn bad_config_names_the_field_and_no_auth_needs_loopback() {
    let e =
        warden_server::config::parse("[pools.p]\ntemplate = \"t\"\nreplicas = -1\n").unwrap_err();
    assert!(e.contains("pools.p") && e.contains("replicas"), "{e}");
    let err = warden_server::check_listen("0.0.0.0:7070".parse().unwrap(), true).unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("loopback"));
    warden_server::check_listen("127.0.0.1:7070".parse().unwrap(), true).unwrap();
    warden_server::check_listen("[::1]:7070".parse().unwrap(), true).unwrap();
    warden_server::check_listen("0.0.0.0:7070".parse().unwrap(), false).unwrap();
    // A pool whose template is missing refuses to start (exit 64).
    let store = Store::in_memory().await.unwrap();
    let driver = FakeDriver::new(None);
    let config = warden_server::config::parse("[pools.p]\ntemplate = \"missing\"\n").unwrap();
    let err = warden_server::bootstrap(&driver, &store, Some(&config))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 64, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

// ---- approvals of `warden agent` runs ----

fn pending(run: &str, call: &str, requested_at: &str) -> PendingApproval {
    PendingApproval {
        run_id: run.into(),
        call_id: call.into(),
        tool: "Bash".into(),
        call: "Bash(git push origin main)".into(),
        input: json!({"command": "git push origin main"}),
        basis: "Bash(git push *)".into(),
        requested_at: requested_at.into(),
        deadline: "2030-01-01T00:10:00Z".into(),
    }
}

#[tokio::test]
async fn approvals_are_listed_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("agent-runs");
    let abc = ApprovalBox::new(&runs.join("run-abc"));
    let later = pending("run-abc", "toolu_02", "2030-01-01T00:00:09Z");
    let earlier = pending("run-def", "toolu_01", "2030-01-01T00:00:01Z");
    abc.publish(&later).unwrap();
    ApprovalBox::new(&runs.join("run-def"))
        .publish(&earlier)
        .unwrap();
    let mut h = harness().await;
    h.state = h.state.clone().with_agent_runs(&runs);

    // Listed oldest first, each as the run published it.
    let (s, v) = h.call("GET", "/v1/approvals", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([
            serde_json::to_value(&earlier).unwrap(),
            serde_json::to_value(&later).unwrap()
        ])
    );

    // Approve: the answer file is written for the waiting run, given by `api`.
    let (s, v) = h
        .call(
            "POST",
            "/v1/approvals/run-abc/toolu_02",
            Some(json!({"approved": true, "reason": "ok for this branch"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        abc.take_answer("toolu_02"),
        Some(Answer {
            approved: true,
            reason: Some("ok for this branch".into()),
            by: "api".into(),
        })
    );
    // Deny without a reason.
    let (s, _) = h
        .call(
            "POST",
            "/v1/approvals/run-def/toolu_01",
            Some(json!({"approved": false})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        ApprovalBox::new(&runs.join("run-def")).take_answer("toolu_01"),
        Some(Answer {
            approved: false,
            reason: None,
            by: "api".into(),
        })
    );

    // A call that is not pending: 404 naming the run and the call.
    for path in [
        "/v1/approvals/run-abc/toolu_99",
        "/v1/approvals/run-nope/toolu_02",
    ] {
        let (s, v) = h.call("POST", path, Some(json!({"approved": true}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(v["code"], "NOT_FOUND");
        let msg = v["message"].as_str().unwrap();
        let (run, call) = path["/v1/approvals/".len()..].split_once('/').unwrap();
        assert!(
            msg.contains(&format!("`{run}`")) && msg.contains(&format!("`{call}`")),
            "{msg}"
        );
    }

    // A bad body: 400 naming the field.
    for (body, field) in [
        (json!({"approved": "yes"}), "`approved`"),
        (json!({"reason": "no"}), "`approved`"),
        (json!({"approved": true, "by": "me"}), "`by`"),
        (json!({"approved": true, "reason": 3}), "`reason`"),
    ] {
        let (s, v) = h
            .call("POST", "/v1/approvals/run-abc/toolu_02", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "INVALID_ARGUMENT");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let (s, v) = h
        .call(
            "POST",
            "/v1/approvals/run-abc/toolu_02",
            Some(Value::String(String::new())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Without the token: 401 for both routes, and nothing answered.
    abc.close("toolu_02");
    abc.publish(&later).unwrap();
    for (method, path) in [
        ("GET", "/v1/approvals"),
        ("POST", "/v1/approvals/run-abc/toolu_02"),
    ] {
        let resp = app(h.state.clone())
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::from(r#"{"approved": true}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert_eq!(abc.take_answer("toolu_02"), None);
}

#[tokio::test]
async fn approvals_never_leave_the_runs_directory() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("agent-runs");
    std::fs::create_dir_all(&runs).unwrap();
    // Pending approvals where a run id climbing out of `runs` would find them.
    let parent = ApprovalBox::new(dir.path());
    parent
        .publish(&pending("x", "c", "2030-01-01T00:00:00Z"))
        .unwrap();
    let victim = ApprovalBox::new(&dir.path().join("victim"));
    victim
        .publish(&pending("x", "c", "2030-01-01T00:00:00Z"))
        .unwrap();
    let mut h = harness().await;
    h.state = h.state.clone().with_agent_runs(&runs);
    for path in [
        "/v1/approvals/../c",
        "/v1/approvals/%2E%2E/c",
        "/v1/approvals/..%2Fvictim/c",
        "/v1/approvals/agent-runs%2F..%2F..%2Fvictim/c",
        "/v1/approvals/../victim/c",
        "/v1/approvals/%2Fetc/c",
        "/v1/approvals/.hidden/c",
    ] {
        let (s, v) = h.call("POST", path, Some(json!({"approved": true}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(v["code"], "NOT_FOUND", "{path}: {v}");
    }
    assert_eq!(parent.take_answer("c"), None);
    assert_eq!(victim.take_answer("c"), None);
    // Nothing under `runs` is pending.
    let (s, v) = h.call("GET", "/v1/approvals", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn without_a_runs_directory_nothing_is_pending() {
    let h = harness().await;
    let (s, v) = h.call("GET", "/v1/approvals", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (s, v) = h
        .call(
            "POST",
            "/v1/approvals/run-abc/toolu_01",
            Some(json!({"approved": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["message"].as_str().unwrap().contains("`run-abc`"), "{v}");
}
