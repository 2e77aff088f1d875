//! A2A at the HTTP level (`oneshot` requests to `app`): the agent card, JSON-RPC errors for
//! malformed requests (and that none starts a task), SendMessage → GetTask → ListTasks →
//! CancelTask, the stream of SendStreamingMessage, push notifications refused. The runner is
//! not started, so tasks stay SUBMITTED until canceled; the end-to-end tests with the real
//! Python client and running tasks are in crates/warden/tests/a2a.rs.

#[path = "support/postgres.rs"]
mod postgres_cluster;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_agent::model::Usage;
use warden_agent::run::{ApprovalBox, PendingApproval, RunOutcome, RunStatus};
use warden_sandbox::{Driver, Template};
use warden_server::a2a::{A2aConfig, A2aServer};
use warden_server::tasks::model::Timestamp;
use warden_server::tasks::runner::{AgentRun, RunnerConfig, TaskAgent, Tasks};
use warden_server::tasks::store::TaskQuery;
use warden_server::tasks::store_sql::SqlTaskStore;
use warden_server::tasks::{TaskStatus, TaskStore};
use warden_server::testing::FakeDriver;
use warden_server::{AppState, Auth, Store, app};

const REPO: &str = "https://git.example/org/app.git";

fn token() -> String {
    "b2".repeat(32)
}

/// Never runs: the runner is not started in these tests.
struct NoAgent;

#[async_trait]
impl TaskAgent for NoAgent {
    async fn run(&self, _run: AgentRun) -> RunOutcome {
        RunOutcome {
            status: RunStatus::Failed,
            result: String::new(),
            error: Some("not in these tests".into()),
            turns: 0,
            usage: Usage::default(),
            cost_usd: None,
        }
    }
}

struct Harness {
    state: AppState,
    db: SqlTaskStore,
    /// The runner's `agent-runs` directory, where approvals wait.
    runs: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn harness(cfg: A2aConfig) -> Harness {
    harness_on(cfg, None).await
}

/// On SQLite in a temporary directory, or on the PostgreSQL database `url`.
async fn harness_on(cfg: A2aConfig, url: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_memory().await.unwrap();
    let fake = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
    fake.put_template(Template {
        name: "default".into(),
        policy: toml::from_str("[network]\nmode = \"proxy\"\nallow_domains = [\"git.example\"]\n")
            .unwrap(),
        shutdown_after: None,
        idle_timeout: None,
        workspace_quota: None,
    })
    .await
    .unwrap();
    let db = SqlTaskStore::open(url, dir.path()).await.unwrap();
    let tasks = Tasks::new(
        Arc::new(db.clone()),
        fake.clone(),
        Arc::new(NoAgent),
        RunnerConfig::new("test", dir.path().join("agent-runs")),
    );
    let a2a = A2aServer::new(cfg, tasks.clone(), db.clone(), true).unwrap();
    let driver: Arc<dyn Driver> = fake;
    let state = AppState::new(driver, store, Auth::Token(token()))
        .with_tasks(tasks)
        .with_a2a(a2a);
    Harness {
        state,
        db,
        runs: dir.path().join("agent-runs"),
        _dir: dir,
    }
}

fn with_repo() -> A2aConfig {
    A2aConfig {
        repo: Some(REPO.into()),
        ..A2aConfig::default()
    }
}

impl Harness {
    async fn raw(&self, req: Request<Body>) -> Response {
        app(self.state.clone()).oneshot(req).await.unwrap()
    }

    /// POSTs `body` (a string as is, else JSON) to /a2a with the token.
    async fn post(&self, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::post("/a2a")
            .header("authorization", format!("Bearer {}", token()))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.raw(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self.post(&body.to_string(), &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        json_of(resp).await
    }

    async fn result(&self, method: &str, params: Value) -> Value {
        let v = self.rpc(method, params).await;
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    async fn error(&self, method: &str, params: Value) -> (i64, String) {
        let v = self.rpc(method, params).await;
        let e = &v["error"];
        assert!(e.is_object(), "{method} should fail: {v}");
        (
            e["code"].as_i64().unwrap(),
            e["message"].as_str().unwrap().to_string(),
        )
    }

    async fn task_count(&self) -> usize {
        self.db
            .list(&TaskQuery {
                limit: 500,
                ..TaskQuery::default()
            })
            .await
            .unwrap()
            .tasks
            .len()
    }

    async fn send(&self, text: &str, extra: Value) -> Value {
        let mut message = json!({
            "messageId": format!("m-{}", rand_id()),
            "role": "ROLE_USER",
            "parts": [{"text": text}],
        });
        if let Value::Object(o) = extra {
            for (k, v) in o {
                message[k] = v;
            }
        }
        self.result(
            "SendMessage",
            json!({"message": message, "configuration": {"returnImmediately": true}}),
        )
        .await["task"]
            .clone()
    }
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn json_of(resp: Response) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

#[tokio::test]
async fn the_card_is_public_and_names_the_endpoint_and_skills() {
    let skills = tempfile::tempdir().unwrap();
    let skill_dir = skills.path().join(".claude/skills/release-notes");
    std::fs::create_dir_all(&skill_dir).unwrap();
    std::fs::write(
        skill_dir.join("SKILL.md"),
        "---\nname: release-notes\ndescription: Writes release notes from the git log.\n---\nBody\n",
    )
    .unwrap();
    let h = harness(A2aConfig {
        name: Some("app-fixer".into()),
        description: Some("Fixes app".into()),
        skills_dir: Some(skills.path().to_path_buf()),
        ..with_repo()
    })
    .await;
    let resp = h
        .raw(
            Request::get("/.well-known/agent-card.json")
                .header("host", "warden.test:7070")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let card = json_of(resp).await;
    assert_eq!(card["name"], "app-fixer");
    assert_eq!(card["description"], "Fixes app");
    assert_eq!(
        card["supportedInterfaces"],
        json!([{"url": "http://warden.test:7070/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}])
    );
    assert_eq!(card["capabilities"]["streaming"], true);
    assert_eq!(card["capabilities"]["pushNotifications"], false);
    let ids: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["repository-task", "release-notes"]);
    assert_eq!(
        card["skills"][1]["description"],
        "Writes release notes from the git log."
    );
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    assert!(!card.to_string().contains(&token()));
    // It parses as the SDK's type.
    serde_json::from_value::<a2a::AgentCard>(card).unwrap();

    // The JSON-RPC endpoint is not public.
    let resp = h
        .raw(
            Request::post("/a2a")
                .body(Body::from(
                    r#"{"jsonrpc":"2.0","id":1,"method":"ListTasks"}"#,
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_requests_get_their_json_rpc_error_and_start_nothing() {
    let h = harness(A2aConfig::default()).await;
    let msg =
        |parts: Value| json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": parts}});
    let raw_cases: Vec<(&str, i64, &str)> = vec![
        ("{\"jsonrpc\": \"2.0\", ", -32700, "not JSON"),
        (
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"GetTask\"}]",
            -32600,
            "batch",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"SendMessage"}"#,
            -32600,
            "`id`",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"SendMessage"}"#,
            -32600,
            "`jsonrpc`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send"}"#,
            -32601,
            "message/send",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":"go"}"#,
            -32602,
            "params",
        ),
    ];
    for (body, code, needle) in raw_cases {
        let resp = h.post(body, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{body}");
        let v = json_of(resp).await;
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{body}: {m}");
    }
    let cases: Vec<(&str, Value, i64, &str)> = vec![
        (
            "SendMessage",
            json!({}),
            -32602,
            "params: missing field `message`",
        ),
        (
            "SendMessage",
            msg(json!([{"text": "go"}])),
            -32602,
            "message.metadata.repo",
        ),
        (
            "SendMessage",
            msg(json!([{"bogus": 1}])),
            -32602,
            "params.message.parts",
        ),
        (
            "SendMessage",
            json!({"message": {"messageId": "m1", "role": "ROLE_ROBOT", "parts": [{"text": "x"}]}}),
            -32602,
            "params.message.role",
        ),
        (
            "SendMessage",
            msg(json!([{"text": "go"}, {"data": {"repo": REPO, "colour": "red"}}])),
            -32602,
            "message.parts[1].data",
        ),
        (
            "SendMessage",
            msg(json!([{"text": "go"}, {"data": {"repo": "ssh://git.example/a.git"}}])),
            -32602,
            "repo",
        ),
        (
            "SendMessage",
            msg(json!([{"text": "go"}, {"data": {"repo": REPO, "template": "missing"}}])),
            -32602,
            "template",
        ),
        (
            "SendMessage",
            msg(json!([{"raw": "aGk=", "mediaType": "image/png"}])),
            -32005,
            "files are not supported",
        ),
        ("GetTask", json!({}), -32602, "`id`"),
        ("GetTask", json!({"id": "task-nope"}), -32001, "task-nope"),
        (
            "GetTask",
            json!({"id": "task-nope", "historyLength": -1}),
            -32602,
            "historyLength",
        ),
        (
            "CancelTask",
            json!({"id": "task-nope"}),
            -32001,
            "task-nope",
        ),
        (
            "SubscribeToTask",
            json!({"id": "task-nope"}),
            -32001,
            "task-nope",
        ),
        ("ListTasks", json!({"pageSize": 1000}), -32602, "pageSize"),
        (
            "ListTasks",
            json!({"pageToken": "garbage"}),
            -32602,
            "pageToken",
        ),
        (
            "ListTasks",
            json!({"status": "TASK_STATE_BORED"}),
            -32602,
            "params.status",
        ),
        (
            "CreateTaskPushNotificationConfig",
            json!({"taskId": "t", "url": "https://x"}),
            -32003,
            "push notification",
        ),
        (
            "GetTaskPushNotificationConfig",
            json!({}),
            -32003,
            "push notification",
        ),
        ("GetExtendedAgentCard", json!({}), -32007, "extended"),
    ];
    for (method, params, code, needle) in cases {
        let (c, m) = h.error(method, params.clone()).await;
        assert_eq!(c, code, "{method} {params}: {m}");
        assert!(
            m.contains(needle),
            "{method} {params}: `{m}` should mention {needle}"
        );
    }
    // A version this server does not speak.
    let resp = h
        .post(
            r#"{"jsonrpc":"2.0","id":"v","method":"ListTasks"}"#,
            &[("A2A-Version", "0.3")],
        )
        .await;
    let v = json_of(resp).await;
    assert_eq!(v["id"], "v");
    assert_eq!(v["error"]["code"], -32009);
    assert_eq!(v["error"]["data"][0]["reason"], "VERSION_NOT_SUPPORTED");
    // None of it made a task.
    assert_eq!(h.task_count().await, 0);
}

#[tokio::test]
async fn send_get_list_and_cancel() {
    send_get_list_and_cancel_on(&harness(with_repo()).await).await;
}

#[tokio::test]
async fn send_get_list_and_cancel_on_postgres() {
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("a2a").await;
    send_get_list_and_cancel_on(&harness_on(with_repo(), Some(&url)).await).await;
}

async fn send_get_list_and_cancel_on(h: &Harness) {
    let t = h.send("Fix the typo", json!({"contextId": "ctx-a"})).await;
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("task-"), "{t}");
    assert_eq!(t["contextId"], "ctx-a");
    assert_eq!(t["status"]["state"], "TASK_STATE_SUBMITTED");
    assert_eq!(t["history"][0]["parts"][0]["text"], "Fix the typo");
    assert_eq!(t["metadata"]["warden"]["repo"], REPO);
    // The warden task is the same task.
    let stored = h.db.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.spec.task, "Fix the typo");
    assert_eq!(stored.spec.repo, REPO);

    // A data part names another repository and branch; the context is new.
    let other = h
        .send(
            "Bump the version",
            json!({"parts": [{"text": "Bump the version"}, {"data": {"repo": "https://git.example/org/lib.git", "baseBranch": "dev"}}]}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    assert_ne!(other["contextId"], "ctx-a");
    let stored = h.db.get(&other_id).await.unwrap().unwrap();
    assert_eq!(stored.spec.repo, "https://git.example/org/lib.git");
    assert_eq!(stored.spec.base_branch.as_deref(), Some("dev"));

    // The same message again (a retry) is the same task.
    let retry = h
        .result(
            "SendMessage",
            json!({"message": {"messageId": "fixed-id", "role": "ROLE_USER", "parts": [{"text": "once"}]},
                   "configuration": {"returnImmediately": true}}),
        )
        .await;
    let again = h
        .result(
            "SendMessage",
            json!({"message": {"messageId": "fixed-id", "role": "ROLE_USER", "parts": [{"text": "once"}]},
                   "configuration": {"returnImmediately": true}}),
        )
        .await;
    assert_eq!(retry["task"]["id"], again["task"]["id"]);
    assert_eq!(h.task_count().await, 3);
    // Counted as submitted, once each.
    let resp = h
        .raw(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {}", token()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.lines()
            .any(|l| l == "warden_serve_tasks_submitted_total 3"),
        "{text}"
    );

    let got = h
        .result("GetTask", json!({"id": id, "historyLength": 0}))
        .await;
    assert_eq!(got["status"]["state"], "TASK_STATE_SUBMITTED");
    assert!(got.get("history").is_none(), "{got}");

    // ListTasks: newest first, filters, pages.
    let all = h.result("ListTasks", json!({})).await;
    assert_eq!(all["totalSize"], 3);
    assert_eq!(all["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(all["nextPageToken"], "");
    let by_ctx = h.result("ListTasks", json!({"contextId": "ctx-a"})).await;
    assert_eq!(by_ctx["totalSize"], 1);
    assert_eq!(by_ctx["tasks"][0]["id"], id.as_str());
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .result("ListTasks", json!({"pageSize": 2, "pageToken": token}))
            .await;
        assert_eq!(page["pageSize"], 2);
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_string());
        }
        token = page["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 3);
    let all_ids: Vec<String> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, all_ids);

    // A message on a task that does not wait for input is refused.
    let (code, m) = h
        .error(
            "SendMessage",
            json!({"message": {"messageId": "m-x", "taskId": id, "role": "ROLE_USER", "parts": [{"text": "approve"}]}}),
        )
        .await;
    assert_eq!(code, -32004, "{m}");
    assert!(m.contains("not waiting for input"), "{m}");

    // Cancel: CANCELED, then not cancelable, and filtered by state.
    let c = h.result("CancelTask", json!({"id": id})).await;
    assert_eq!(c["status"]["state"], "TASK_STATE_CANCELED");
    let (code, m) = h.error("CancelTask", json!({"id": id})).await;
    assert_eq!(code, -32002, "{m}");
    let canceled = h
        .result("ListTasks", json!({"status": "TASK_STATE_CANCELED"}))
        .await;
    assert_eq!(canceled["totalSize"], 1);
    assert_eq!(canceled["tasks"][0]["id"], id.as_str());
    let (code, _) = h.error("SubscribeToTask", json!({"id": id})).await;
    assert_eq!(code, -32004);
    let (code, _) = h
        .error(
            "SendMessage",
            json!({"message": {"messageId": "m-y", "taskId": id, "role": "ROLE_USER", "parts": [{"text": "again"}]}}),
        )
        .await;
    assert_eq!(code, -32004);
}

/// The data of each SSE event of `body`.
fn sse_data(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_stream_follows_the_task_to_its_end() {
    let h = harness(with_repo()).await;
    let body = json!({"jsonrpc": "2.0", "id": "s1", "method": "SendStreamingMessage",
        "params": {"message": {"messageId": "m-s", "role": "ROLE_USER", "parts": [{"text": "Stream it"}]}}});
    let resp = h.post(&body.to_string(), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.into_body();
    // The first event is the task.
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.frame())
            .await
            .expect("the first event")
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    let first = &sse_data(&text)[0];
    assert_eq!(first["id"], "s1");
    let id = first["result"]["task"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        first["result"]["task"]["status"]["state"],
        "TASK_STATE_SUBMITTED"
    );
    // Cancel it from another request; the stream says so and ends.
    let c = h.result("CancelTask", json!({"id": id})).await;
    assert_eq!(c["status"]["state"], "TASK_STATE_CANCELED");
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("the stream to end after the final state")
        .unwrap()
        .to_bytes();
    let events = sse_data(&String::from_utf8_lossy(&rest));
    let last = events.last().expect("a status update");
    assert_eq!(last["id"], "s1");
    assert_eq!(last["result"]["statusUpdate"]["taskId"], id.as_str());
    assert_eq!(
        last["result"]["statusUpdate"]["status"]["state"],
        "TASK_STATE_CANCELED"
    );
    // Each event parses as the SDK's StreamResponse.
    for e in &events {
        serde_json::from_value::<a2a::StreamResponse>(e["result"].clone()).unwrap();
    }
}

#[test]
fn config_errors_name_the_field() {
    let parse = |t: &str| warden_server::config::parse(t).map(|c| c.a2a);
    let c = parse(
        "[a2a]\nname = \"n\"\nrepo = \"https://git.example/a.git\"\nsend_wait = \"5s\"\n\
         [a2a.peers.reviewer]\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.send_wait(), Duration::from_secs(5));
    assert_eq!(c.peers["reviewer"].url, "http://127.0.0.1:9");
    for (text, needle) in [
        ("[a2a]\ncolour = 1\n", "colour"),
        ("[a2a]\nrepo = \"git@host:a.git\"\n", "`repo`"),
        ("[a2a]\npublic_url = \"ftp://x\"\n", "`public_url`"),
        ("[a2a]\nsend_wait = \"soon\"\n", "`send_wait`"),
        ("[a2a.peers.Bad]\nurl = \"http://x\"\n", "Bad"),
        ("[a2a.peers.p]\nurl = \"http://u:p@x\"\n", "`url`"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

/// A task whose agent waits for an approval, as the runner leaves it: claimed, status
/// WAITING_APPROVAL, the call published in its run's approval box.
async fn waiting_task(h: &Harness, call_id: &str) -> (String, ApprovalBox) {
    let t = h.send("Touch it", json!({})).await;
    let id = t["id"].as_str().unwrap().to_string();
    let now = Timestamp::now();
    let mut task =
        h.db.claim_next("test", now, Timestamp(now.0 + 60_000))
            .await
            .unwrap()
            .expect("the queued task");
    assert_eq!(task.id, id);
    task.status = TaskStatus::WaitingApproval;
    task.updated_at = Timestamp::now();
    h.db.update_owned(&task, Timestamp(now.0 + 60_000))
        .await
        .unwrap()
        .expect("still owned");
    let approvals = ApprovalBox::new(&h.runs.join(&id));
    approvals
        .publish(&PendingApproval {
            run_id: id.clone(),
            call_id: call_id.into(),
            tool: "Bash".into(),
            call: "Bash(touch approved.txt)".into(),
            input: json!({"command": "touch approved.txt"}),
            basis: "ask rule Bash(touch:*)".into(),
            requested_at: "2026-01-01T00:00:00Z".into(),
            deadline: "2099-01-01T00:00:00Z".into(),
        })
        .unwrap();
    (id, approvals)
}

#[tokio::test]
async fn an_approval_is_input_required_and_the_next_message_answers_it() {
    let h = harness(with_repo()).await;
    let (id, approvals) = waiting_task(&h, "toolu_1").await;
    let t = h.result("GetTask", json!({"id": id})).await;
    assert_eq!(t["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{t}");
    let asked = t["status"]["message"]["parts"][0]["text"].as_str().unwrap();
    assert!(asked.contains("Bash(touch approved.txt)"), "{asked}");
    assert_eq!(
        t["status"]["message"]["parts"][1]["data"]["pendingApprovals"][0]["callId"],
        "toolu_1"
    );
    let listed = h
        .result("ListTasks", json!({"status": "TASK_STATE_INPUT_REQUIRED"}))
        .await;
    assert_eq!(listed["totalSize"], 1);

    let answer = |parts: Value, mid: &str| {
        json!({"message": {"messageId": mid, "taskId": id, "role": "ROLE_USER", "parts": parts},
               "configuration": {"returnImmediately": true}})
    };
    // Answers that are not answers change nothing.
    for (parts, code, needle) in [
        (json!([{"text": "maybe"}]), -32602, "approve"),
        (
            json!([{"data": {"decision": "perhaps"}}]),
            -32602,
            "decision",
        ),
        (
            json!([{"data": {"decision": "approve", "callId": "toolu_9"}}]),
            -32602,
            "toolu_9",
        ),
    ] {
        let (c, m) = h.error("SendMessage", answer(parts, "m-bad")).await;
        assert_eq!(c, code, "{m}");
        assert!(m.contains(needle), "{m}");
        assert_eq!(approvals.take_answer("toolu_1"), None);
    }
    let (c, m) = h
        .error(
            "SendMessage",
            json!({"message": {"messageId": "m-ctx", "taskId": id, "contextId": "other", "role": "ROLE_USER",
                               "parts": [{"text": "approve"}]}}),
        )
        .await;
    assert_eq!(c, -32602, "{m}");
    assert!(m.contains("contextId"), "{m}");

    // A data part denies, with a reason; the run finds the answer where it waits.
    let r = h
        .result(
            "SendMessage",
            answer(
                json!([{"data": {"decision": "deny", "reason": "not that file", "callId": "toolu_1"}}]),
                "m-deny",
            ),
        )
        .await;
    assert_eq!(r["task"]["id"], id.as_str());
    let a = approvals.take_answer("toolu_1").expect("an answer");
    assert!(!a.approved);
    assert_eq!(a.reason.as_deref(), Some("not that file"));
    assert_eq!(a.by, "a2a");
    // It is answered: nothing is pending any more, so a second answer is refused.
    let (c, m) = h
        .error(
            "SendMessage",
            answer(json!([{"text": "approve"}]), "m-late"),
        )
        .await;
    assert_eq!(c, -32004, "{m}");
    // The answer is in the task's history.
    let t = h.result("GetTask", json!({"id": id})).await;
    let texts: Vec<Value> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["parts"][0].clone())
        .collect();
    assert_eq!(texts[0]["text"], "Touch it");
    assert_eq!(texts[1]["data"]["decision"], "deny");
    assert_eq!(texts.len(), 2);

    // A text "approve" answers the next call.
    approvals
        .publish(&PendingApproval {
            run_id: id.clone(),
            call_id: "toolu_2".into(),
            tool: "Bash".into(),
            call: "Bash(touch b)".into(),
            input: json!({"command": "touch b"}),
            basis: "ask rule".into(),
            requested_at: "2026-01-01T00:01:00Z".into(),
            deadline: "2099-01-01T00:00:00Z".into(),
        })
        .unwrap();
    h.result(
        "SendMessage",
        answer(json!([{"text": "Approve, go ahead"}]), "m-ok"),
    )
    .await;
    let a = approvals.take_answer("toolu_2").expect("an answer");
    assert!(a.approved);
    assert_eq!(a.reason.as_deref(), Some("go ahead"));
}
